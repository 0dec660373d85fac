//! Issue 21 point 6 across real nodes: the worker trigger as a leader
//! effect. A trigger posted to a real webhook receiver on loopback survives
//! the leader's death between its send and its record: the receiver sees
//! one idempotency key, at most twice, with `X-Worker-Token` and reference
//! 003's `{"action":"drain"}`, and the new leader records the outcome. The
//! local command gets the key as `ENGINE_IDEMPOTENCY_KEY`; a smoke run the
//! dry-run payload; bad input is a 4xx, a leader with no target records
//! `not_configured`; scopes hold.

use std::time::{Duration, Instant};

use chaos_tests::receivers::WebhookReceiver;
use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const WORKER_TOKEN: &str = "worker-token-for-the-drill-0123";

/// A call with an optional token and `Idempotency-Key`.
fn call(url: &str, method: &str, path: &str, token: Option<&str>, key: Option<&str>) -> (u16, Value) {
    let http = reqwest::blocking::Client::new();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(m, format!("{url}{path}")).timeout(SECS(10));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = res.status().as_u16();
    let text = res.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn wait_format_7(c: &TestCluster, via: u64) {
    c.eventually(SECS(20), "cluster format 7 (worker triggers)", || {
        (c.get(via, "/api/history?entity=cluster:format").1["format_version"].as_u64()? >= 7).then_some(())
    });
}

/// The trigger `id` as node `via` sees it, once `done` holds.
fn trigger_when(c: &TestCluster, via: u64, id: u64, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    c.eventually(limit, &format!("trigger {id} on node {via}"), || {
        let (code, t) = c.get(via, &format!("/worker/triggers/{id}"));
        (code == 200 && done(&t)).then_some(t)
    })
}

#[test]
fn a_trigger_survives_a_leader_kill_between_send_and_record() {
    let started = Instant::now();
    let hook = WebhookReceiver::start();
    // The first trigger arrives but is answered only after 10 s: its
    // sender is killed before it learns the answer, let alone records it.
    hook.hold_next_matching(1, "drain", SECS(10));
    let opts = Options::default()
        .env("WORKER_WEBHOOK_URL", &hook.url())
        .env("WORKER_TOKEN", WORKER_TOKEN)
        .env("WORKER_TRIGGER_TIMEOUT_SECONDS", "4");
    let mut c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    wait_format_7(&c, leader);
    let asked = Instant::now();
    let (code, t) =
        call(&c.url(follower), "POST", "/worker/trigger", Some(chaos_tests::cluster::TOKEN), Some("drill-1"));
    assert_eq!(code, 202, "{t}");
    assert_eq!(
        (t["key"].as_str(), t["kind"].as_str(), t["attempts"].as_u64()),
        (Some("drill-1"), Some("trigger"), Some(0))
    );
    assert!(matches!(t["state"].as_str(), Some("pending" | "sending")), "{t}");
    let id = t["id"].as_u64().unwrap();

    let first = c.eventually(SECS(10), "the held trigger arrives", || hook.deliveries().into_iter().next());
    let sender: u64 = first.header("x-engine-room-node").unwrap().parse().unwrap();
    assert_eq!(sender, leader, "only the leader sends");
    c.kill(sender);
    let killed_ms = chaos_tests::receivers::unix_ms();
    let new = c.wait_for_leader(SECS(10));
    assert_ne!(new, sender);
    let done = trigger_when(&c, new, id, SECS(30), |t| t["state"] != "pending" && t["state"] != "sending");
    std::thread::sleep(SECS(2));
    let got = hook.deliveries();
    let keys: std::collections::BTreeSet<_> =
        got.iter().map(|d| d.header("idempotency-key").map(String::from)).collect();
    assert_eq!(keys, [Some("drill-1".to_string())].into(), "one idempotency key: {got:?}");
    assert!((1..=2).contains(&got.len()), "at most one resend: {got:?}");
    for d in &got {
        assert_eq!(d.header("x-worker-token"), Some(WORKER_TOKEN));
        assert_eq!(d.json(), json!({"action": "drain"}), "reference 003's payload");
        assert_eq!(d.path, "/hooks/engine-room");
    }
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"].as_u64(), Some(got.len() as u64), "{done}");
    assert_eq!((done["outcome"]["code"].as_i64(), done["outcome"]["target"].as_str()), (Some(200), Some("webhook")));
    let resender: u64 = got.last().unwrap().header("x-engine-room-node").unwrap().parse().unwrap();
    assert_eq!(done["claimed_by"].as_u64(), Some(resender), "{done}");
    assert_ne!(resender, sender, "the dead leader cannot have sent again");

    // Asking again with the same key is the same trigger: nothing new is sent.
    let (code, again) =
        call(&c.url(new), "POST", "/worker/trigger", Some(chaos_tests::cluster::TOKEN), Some("drill-1"));
    assert_eq!((code, again["id"].as_u64(), again["state"].as_str()), (200, Some(id), Some("succeeded")), "{again}");
    std::thread::sleep(SECS(2));
    assert_eq!(hook.deliveries().len(), got.len(), "no second trigger");
    let (_, list) = c.get(new, "/worker/triggers");
    assert_eq!(list["triggers"].as_array().map(Vec::len), Some(1), "{list}");
    let (_, metrics) = call(&c.url(new), "GET", "/metrics", Some(chaos_tests::cluster::TOKEN), None);
    let text = metrics.as_str().unwrap_or_default();
    let line = format!(r#"engine_room_farm_triggers_total{{kind="trigger",outcome="succeeded",node_id="{new}"}} 1"#);
    assert!(text.contains(&line), "{text}");
    eprintln!(
        "FIGURE trigger across a leader kill: {} sends of key drill-1, resent by node {resender} {} ms after the kill, outcome recorded {} ms after the request",
        got.len(),
        got.last().unwrap().at_ms.saturating_sub(killed_ms),
        asked.elapsed().as_millis()
    );
    assert!(started.elapsed() < SECS(60), "bounded: {:?}", started.elapsed());
}

#[test]
fn the_local_command_smoke_runs_bad_input_and_scopes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    let script = dir.path().join("trigger.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$ENGINE_IDEMPOTENCY_KEY $ENGINE_TRIGGER_DRY_RUN $(cat)\" >> {}\n", seen.display()),
    )
    .unwrap();
    let opts = Options::default().env("WORKER_TRIGGER_COMMAND", &format!("sh {}", script.display()));
    let c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let (lu, fu) = (c.url(leader), c.url(follower));
    wait_format_7(&c, leader);
    let admin = Some(chaos_tests::cluster::TOKEN);

    // A trigger without a key gets a fresh one; the command sees it.
    let (code, t) = call(&fu, "POST", "/worker/trigger", admin, None);
    assert_eq!(code, 202, "{t}");
    let key = t["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("trg-"), "{key}");
    let done = trigger_when(&c, follower, t["id"].as_u64().unwrap(), SECS(15), |t| t["state"] == "succeeded");
    assert_eq!((done["outcome"]["target"].as_str(), done["outcome"]["code"].as_i64()), (Some("command"), Some(0)));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), format!("{key} 0 {{\"action\":\"drain\"}}\n"));

    // A smoke run: the dry-run payload.
    let (code, s) = call(&lu, "POST", "/worker/smoke", admin, Some("smoke-1"));
    assert_eq!((code, s["kind"].as_str()), (202, Some("smoke")), "{s}");
    trigger_when(&c, leader, s["id"].as_u64().unwrap(), SECS(15), |t| t["state"] == "succeeded");
    let lines = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(lines.lines().nth(1), Some("smoke-1 1 {\"action\":\"drain\",\"dry_run\":true}"), "{lines}");

    // Bad input: a 4xx, and nothing is sent.
    let (code, e) = call(&fu, "POST", "/worker/trigger", admin, Some("no spaces allowed"));
    assert_eq!((code, e["error"]["code"].as_str()), (400, Some("invalid_key")), "{e}");
    let (code, e) = call(&fu, "POST", "/worker/trigger", admin, Some("smoke-1"));
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("conflict")), "a smoke run's key: {e}");
    assert_eq!(call(&fu, "GET", "/worker/triggers?kind=reboot", admin, None).0, 400, "unknown kind");
    assert_eq!(call(&fu, "GET", "/worker/triggers?limit=201", admin, None).0, 400);
    assert_eq!(call(&fu, "GET", "/worker/triggers/999", admin, None).0, 404);
    assert_eq!(call(&fu, "GET", "/worker/triggers/x", admin, None).0, 404);
    assert_eq!(call(&fu, "POST", "/worker/reboot", admin, None).0, 404, "no such kind of trigger");
    let (_, list) = c.get(follower, "/worker/triggers?kind=smoke");
    assert_eq!(list["triggers"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap().lines().count(), 2, "nothing else ran");

    // Scopes: no token 401, a read token reads but cannot trigger.
    let (code, r) = c.post(leader, "/api/tokens", json!({"name": "r", "scope": "read"}));
    assert_eq!(code, 201, "{r}");
    let reader = r["secret"].as_str().unwrap().to_string();
    c.eventually(SECS(10), "the read token on the follower", || {
        (call(&fu, "GET", "/worker/triggers", Some(&reader), None).0 == 200).then_some(())
    });
    assert_eq!(call(&fu, "POST", "/worker/trigger", None, None).0, 401);
    let (code, e) = call(&fu, "POST", "/worker/smoke", Some(&reader), None);
    assert_eq!((code, e["error"]["code"].as_str()), (403, Some("forbidden")), "{e}");
    assert_eq!(call(&fu, "GET", "/worker/triggers", None, None).0, 401, "reads need a token by default");
    let (_, audit) = c.get(leader, "/api/audit");
    let audit = audit.to_string();
    assert!(audit.contains("farm.trigger") && audit.contains("farm.smoke"), "requests are audited");
    assert!(started.elapsed() < SECS(60), "bounded: {:?}", started.elapsed());
}

#[test]
fn a_leader_without_a_target_records_not_configured() {
    let c = TestCluster::start(1, Options::default().env("FARM_READS_OPEN", "true"));
    let leader = c.wait_for_leader(SECS(10));
    wait_format_7(&c, leader);
    let (code, t) = call(&c.url(leader), "POST", "/worker/trigger", Some(chaos_tests::cluster::TOKEN), None);
    assert_eq!(code, 202, "{t}");
    let done = trigger_when(&c, leader, t["id"].as_u64().unwrap(), SECS(10), |t| t["state"] != "pending");
    assert_eq!(done["state"], "not_configured", "{done}");
    assert!(done["outcome"]["detail"].as_str().unwrap().contains("WORKER_WEBHOOK_URL"), "{done}");
    let (code, list) = call(&c.url(leader), "GET", "/worker/triggers", None, None);
    assert_eq!((code, list["pending"].as_u64()), (200, Some(0)), "FARM_READS_OPEN opens the list: {list}");
}
