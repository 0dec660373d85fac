//! Issue 3 acceptance across real nodes: a heartbeat on one node, a control on
//! another, the answer on a third; listing filters and consistent reads; pools
//! with live counts; stale-worker cleanup by the leader; bad input; metrics and
//! the OpenAPI document as every node serves them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chaos_tests::cluster::TOKEN;
use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The SPEC §3 heartbeat, plus fields the control plane does not know.
fn spec_beat(id: &str, pool: &str) -> Value {
    json!({"worker_id": id, "host": "vps-3", "ip": "203.0.113.7", "pool": pool,
     "version": "1.4.2", "status": "running", "process_state": "running",
     "metrics": {"processed": 1200, "errors": 14, "in_flight": 3},
     "stage_metrics": {"dns": {"ok": 1180, "fail": 20}},
     "smtp_metrics": {"2xx": 900, "4xx": 200, "5xx": 80, "timeout": 20},
     "provider_metrics": {"gmail": {"accepted": 500, "rejected": 40, "tempfail": 30, "unknown": 10}},
     "gpu": {"model": "none", "count": 0}, "region": "eu-west", "tags": ["a", "b"]})
}

fn beat(c: &TestCluster, via: u64, body: &Value) -> Value {
    let (code, answer) = c.post(via, "/api/workers/heartbeat", body.clone());
    assert_eq!(code, 200, "heartbeat via node {via}: {answer}");
    answer
}

fn control(c: &TestCluster, via: u64, id: &str, action: &str, reason: Option<&str>) -> (u16, Value) {
    let body = reason.map(|r| json!({"reason": r})).unwrap_or(json!({}));
    c.post(via, &format!("/api/workers/{id}/{action}"), body)
}

/// Three distinct nodes: (a, b, c) with `b` a follower when possible.
fn three(c: &TestCluster) -> (u64, u64, u64) {
    let leader = c.wait_for_leader(SECS(10));
    let f: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    (f[0], f[1], leader)
}

fn raw(c: &TestCluster, node: u64, method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let http = reqwest::blocking::Client::builder().timeout(SECS(8)).build().unwrap();
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(m, format!("{}{path}", c.url(node))).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.body(body).send().expect("node answers");
    let code = res.status().as_u16();
    (code, res.json().unwrap_or(Value::Null))
}

#[test]
fn heartbeat_control_and_answer_cross_three_nodes() {
    let c = TestCluster::start(3, Options::default());
    let (a, b, l) = three(&c);
    let answer = beat(&c, a, &spec_beat("w-17", "edge"));
    assert_eq!(
        answer,
        json!({"desired_state": "running", "quarantined": false, "pool_desired_count": 0,
                              "policy_version": null, "provider_modes": {}, "stale": false})
    );
    c.must_scale(b, "edge", 4);
    assert_eq!(beat(&c, l, &spec_beat("w-17", "edge"))["pool_desired_count"], 4);

    // Each control on node b, answered with the new state; the worker learns it
    // from its next heartbeat answer on the leader, then on node a.
    let steps: [(&str, &str, bool); 7] = [
        ("pause", "paused", false),
        ("drain", "draining", false),
        ("stop", "stopped", false),
        ("resume", "running", false),
        ("quarantine", "running", true),
        ("pause", "paused", true),
        ("unquarantine", "paused", false),
    ];
    let started = raft_now();
    for (i, (action, desired, quarantined)) in steps.iter().enumerate() {
        let reason = format!("step {i}: {action}");
        let (code, w) = control(&c, b, "w-17", action, Some(&reason));
        assert_eq!(code, 200, "{action}: {w}");
        assert_eq!((w["desired_state"].as_str(), w["quarantined"].as_bool()), (Some(*desired), Some(*quarantined)));
        let via = if i % 2 == 0 { l } else { a };
        let ans = beat(&c, via, &spec_beat("w-17", "edge"));
        assert_eq!(ans["desired_state"], *desired, "heartbeat answer on node {via} after {action}");
        assert_eq!(ans["quarantined"], *quarantined, "heartbeat answer on node {via} after {action}");
        assert_eq!(ans["pool_desired_count"], 4);
    }
    // Nonsense transitions are 409 with the reason; unknown workers 404.
    let (code, e) = control(&c, a, "w-17", "pause", None);
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("conflict")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("desired state is paused"), "{e}");
    let (code, e) = control(&c, l, "w-17", "unquarantine", None);
    assert_eq!(code, 409, "{e}");
    for via in [a, b, l] {
        let (code, e) = control(&c, via, "nobody", "pause", Some("x"));
        assert_eq!((code, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");
        assert_eq!(c.get(via, "/api/workers/nobody").0, 404);
    }
    let (code, e) = control(&c, a, "w-17", "explode", None);
    assert_eq!(code, 404, "unknown action: {e}");

    // Audit, read on node a: newest first, with action, subject, reason, node, time.
    let (_, audit) = c.get(a, "/api/audit?subject=w-17&consistent=true");
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let expected: Vec<String> = steps.iter().rev().map(|(a, _, _)| format!("worker.{a}")).collect();
    assert_eq!(actions, expected, "refused controls are not audited; newest first");
    for (i, e) in entries.iter().enumerate() {
        let step = steps.len() - 1 - i;
        assert_eq!(e["reason"], format!("step {step}: {}", steps[step].0));
        assert_eq!((e["subject"].as_str(), e["node"].as_u64()), (Some("w-17"), Some(b)), "{e}");
        assert!(e["at_ms"].as_u64().unwrap() >= started, "{e}");
        assert!(e["actor"].is_string(), "{e}");
    }
    assert!(entries.windows(2).all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()));

    // The worker record on every node: last heartbeat as sent, unknown fields in meta.
    for via in [a, b, l] {
        let (code, w) = c.get(via, "/api/workers/w-17?consistent=true");
        assert_eq!(code, 200);
        assert_eq!(w["meta"]["gpu"], json!({"model": "none", "count": 0}), "{w}");
        assert_eq!((w["meta"]["region"].as_str(), w["meta"]["tags"].clone()), (Some("eu-west"), json!(["a", "b"])));
        assert_eq!((w["heartbeat_state"].as_str(), w["runtime_match"].as_str()), (Some("healthy"), Some("unmatched")));
        assert_eq!(
            (w["host"].as_str(), w["ip"].as_str(), w["version"].as_str()),
            (Some("vps-3"), Some("203.0.113.7"), Some("1.4.2"))
        );
        assert_eq!(w["metrics"]["in_flight"], 3.0);
        assert_eq!(w["stage_metrics"]["dns"]["fail"], 20.0);
        assert_eq!(w["smtp_metrics"]["timeout"], 20.0);
        assert_eq!(w["provider_metrics"]["gmail"]["tempfail"], 30.0);
        assert_eq!((w["desired_state"].as_str(), w["quarantined"].as_bool()), (Some("paused"), Some(false)));
        assert_eq!(w["heartbeat_count"], 9);
    }
}

fn raft_now() -> u64 {
    chaos_tests::receivers::unix_ms()
}

#[test]
fn worker_list_filters_pages_and_consistent_reads() {
    let c = TestCluster::start(3, Options::default().env("ALERT_HEARTBEAT_GRACE_SECONDS", "4"));
    let (a, b, l) = three(&c);
    // One that goes stale first, then 12 fresh ones in two pools, written on node a.
    beat(&c, l, &json!({"worker_id": "old-1", "pool": "blue"}));
    std::thread::sleep(SECS(5));
    for i in 0..12 {
        let pool = if i % 3 == 0 { "blue" } else { "green" };
        beat(&c, a, &json!({"worker_id": format!("fw-{i:02}"), "pool": pool, "process_state": "running"}));
    }
    assert_eq!(control(&c, b, "fw-01", "pause", None).0, 200);
    assert_eq!(control(&c, b, "fw-02", "drain", None).0, 200);
    assert_eq!(control(&c, b, "fw-04", "quarantine", Some("flaky")).0, 200);
    // Read at once on node b with ?consistent=true: every write above is visible.
    let list = |q: &str| -> Value {
        let (code, v) = c.get(b, &format!("/api/workers?consistent=true&{q}"));
        assert_eq!(code, 200, "{q}: {v}");
        v
    };
    let ids = |v: &Value| -> Vec<String> {
        v["workers"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(list("")["total"], 13);
    assert_eq!(list("pool=blue")["total"], 5);
    assert_eq!(ids(&list("desired_state=paused")), ["fw-01"]);
    assert_eq!(ids(&list("desired_state=draining")), ["fw-02"]);
    assert_eq!(ids(&list("quarantined=true")), ["fw-04"]);
    assert_eq!(list("quarantined=false")["total"], 12);
    assert_eq!(ids(&list("heartbeat_state=stale")), ["old-1"]);
    assert_eq!(list("heartbeat_state=healthy&pool=green")["total"], 8);
    assert_eq!(list("heartbeat_state=none")["total"], 0);
    let stale = &list("heartbeat_state=stale")["workers"][0];
    assert!(stale["heartbeat_age_ms"].as_u64().unwrap() > 4_000, "{stale}");
    // Pages: disjoint, in order, covering everything.
    let mut seen = Vec::new();
    for offset in (0..13).step_by(5) {
        let page = list(&format!("limit=5&offset={offset}"));
        assert_eq!(
            (page["limit"].as_u64(), page["offset"].as_u64(), page["total"].as_u64()),
            (Some(5), Some(offset), Some(13))
        );
        seen.extend(ids(&page));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted.len()), (13, 13), "{seen:?}");
    assert_eq!(list("")["limit"], 100, "default page size");
    for bad in
        ["limit=0", "limit=100000", "desired_state=asleep", "heartbeat_state=sleepy", "quarantined=maybe", "offset=-1"]
    {
        let (code, v) = c.get(b, &format!("/api/workers?{bad}"));
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
}

#[test]
fn pools_create_edit_archive_default_and_live_counts() {
    let c = TestCluster::start(3, Options::default());
    let (a, b, l) = three(&c);
    let (code, p) = c.post(
        a,
        "/api/pools",
        json!({"name": "mx", "desired_count": 2, "min_count": 1, "max_count": 6,
        "profiles": {"gmail": "low_hit", "outlook": "warmup"}}),
    );
    assert_eq!(code, 200, "{p}");
    assert_eq!(c.post(b, "/api/pools", json!({"name": "mx"})).0, 409, "duplicate pool");
    assert_eq!(c.post(b, "/api/pools", json!({"name": "bad", "profiles": {"gmail": "turbo"}})).0, 400);
    // Each bound is well-formed; the pair conflicts (schema-valid, so not a 400).
    assert_eq!(c.post(b, "/api/pools", json!({"name": "bad", "min_count": 5, "max_count": 2})).0, 409);
    assert_eq!(c.post(b, "/api/pools", json!({"name": "no/slash"})).0, 400);
    let (code, p) =
        c.request(b, "PATCH", "/api/pools/mx", Some(&json!({"max_count": 8, "profiles": {"gmail": "standard"}})));
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (p["max_count"].as_u64(), p["min_count"].as_u64(), p["desired_count"].as_u64()),
        (Some(8), Some(1), Some(2))
    );
    assert_eq!(p["profiles"], json!({"gmail": "standard"}));
    assert_eq!(c.request(b, "PATCH", "/api/pools/ghost", Some(&json!({"max_count": 1}))).0, 404);
    // Default pool: a heartbeat that names no pool lands there.
    let (code, p) = c.post(l, "/api/pools/mx/default", json!({}));
    assert_eq!((code, p["is_default"].as_bool()), (200, Some(true)), "{p}");
    for i in 0..4 {
        beat(&c, [a, b, l][i % 3], &json!({"worker_id": format!("pw-{i}")}));
    }
    assert_eq!(control(&c, a, "pw-1", "pause", None).0, 200);
    assert_eq!(control(&c, a, "pw-2", "quarantine", None).0, 200);
    let (_, v) = c.get(b, "/api/pools?consistent=true");
    let mx = v["pools"].as_array().unwrap().iter().find(|p| p["name"] == "mx").unwrap().clone();
    assert_eq!(mx["workers"], json!({"total": 4, "healthy": 4, "running": 3, "paused": 1, "quarantined": 1}), "{mx}");
    assert_eq!(c.get(l, "/api/pools/mx").1["workers"]["total"], 4);
    // The default cannot be archived; an archived pool cannot be scaled.
    let (code, e) = c.post(a, "/api/pools/mx/archive", json!({}));
    assert_eq!(code, 409, "{e}");
    assert_eq!(c.post(a, "/api/pools", json!({"name": "spare"})).0, 200);
    assert_eq!(c.post(b, "/api/pools/spare/default", json!({})).0, 200);
    let (code, p) = c.post(l, "/api/pools/mx/archive", json!({}));
    assert_eq!((code, p["archived"].as_bool(), p["is_default"].as_bool()), (200, Some(true), Some(false)), "{p}");
    assert_eq!(c.post(a, "/api/pools/mx/archive", json!({})).0, 409, "already archived");
    assert_eq!(c.post(a, "/api/pools/mx/scale", json!({"desired_count": 3})).0, 409);
    assert_eq!(c.post(a, "/api/pools/mx/default", json!({})).0, 409);
    assert_eq!(c.post(b, "/api/pools/mx/unarchive", json!({})).0, 200);
    c.must_scale(a, "mx", 5);
    assert_eq!(beat(&c, l, &json!({"worker_id": "pw-0", "pool": "mx"}))["pool_desired_count"], 5);
    assert_eq!(c.pool_count(b, "mx"), Some(5));
    let (_, audit) = c.get(b, "/api/audit?subject=mx&consistent=true");
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["pool.scale", "pool.unarchive", "pool.archive", "pool.set_default", "pool.update", "pool.create"]
    );
}

#[test]
fn stale_workers_are_removed_by_the_leader() {
    let c = TestCluster::start(3, Options::default().env("STALE_WORKER_TTL_SECONDS", "3"));
    let (a, b, l) = three(&c);
    beat(&c, a, &json!({"worker_id": "silent"}));
    let t0 = Instant::now();
    // A worker that keeps heartbeating (through different nodes) stays.
    let removed = c.eventually(SECS(20), "silent worker removed", || {
        beat(&c, [b, l][t0.elapsed().as_millis() as usize / 500 % 2], &json!({"worker_id": "alive"}));
        (c.get(b, "/api/workers/silent?consistent=true").0 == 404).then(|| t0.elapsed())
    });
    assert!(removed >= Duration::from_millis(2_500), "removed before its TTL: {removed:?}");
    assert_eq!(c.get(a, "/api/workers/alive?consistent=true").0, 200);
    let (_, audit) = c.get(a, "/api/audit?subject=silent&consistent=true");
    let e = &audit["entries"][0];
    assert_eq!(
        (e["action"].as_str(), e["actor"].as_str()),
        (Some("worker.remove_stale"), Some("leader:stale-gc")),
        "{audit}"
    );
    eprintln!("FIGURE stale worker (TTL 3 s) removed {removed:?} after its last heartbeat");
}

#[test]
fn bad_input_gets_a_json_4xx_stores_nothing_and_the_node_keeps_serving() {
    let c = TestCluster::start(3, Options::default());
    let (a, _b, l) = three(&c);
    let big = format!("{{\"worker_id\":\"big\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let absurd = "w".repeat(5_000);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"{not json".to_vec(), 400),
        (b"".to_vec(), 400),
        (b"[]".to_vec(), 400),
        (br#"{"host": "h"}"#.to_vec(), 400),
        (br#"{"worker_id": 17}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "metrics": {"processed": "lots"}}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "metrics": [1, 2]}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "ip": 7}"#.to_vec(), 400),
        (br#"{"worker_id": ""}"#.to_vec(), 400),
        (br#"{"worker_id": "   "}"#.to_vec(), 400),
        (br#"{"worker_id": "../../etc/passwd"}"#.to_vec(), 400),
        (r#"{"worker_id": "wörker"}"#.as_bytes().to_vec(), 400),
        (format!(r#"{{"worker_id": "{absurd}"}}"#).into_bytes(), 400),
        (br#"{"worker_id": "w", "seq": -1}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "seq": 1.5}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "seq": "7"}"#.to_vec(), 400),
        (br#"{"worker_id": "w", "seq": 18446744073709551616}"#.to_vec(), 400),
        (big.into_bytes(), 413),
        (vec![0xff, 0xfe, 0x00], 400),
    ];
    for via in [a, l] {
        for (body, want) in &cases {
            let (code, v) = raw(&c, via, "POST", "/api/workers/heartbeat", Some(TOKEN), body.clone());
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
            assert_eq!(code, *want, "node {via}, body {shown}: {v}");
            assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{shown}: {v}");
        }
        assert_eq!(raw(&c, via, "POST", "/api/workers/heartbeat", None, b"{}".to_vec()).0, 401);
        assert_eq!(raw(&c, via, "POST", "/api/workers/heartbeat", Some("wrong"), b"{}".to_vec()).0, 401);
        assert_eq!(raw(&c, via, "POST", "/api/workers/w/pause", Some(TOKEN), b"{\"reason\": 5}".to_vec()).0, 400);
    }
    // Nothing stored, and every node still serves reads and writes.
    for id in 1..=3 {
        assert_eq!(c.get(id, "/api/workers?consistent=true").1["total"], 0, "node {id}");
        assert_eq!(c.get(id, "/api/health/live").0, 200);
    }
    assert_eq!(beat(&c, a, &json!({"worker_id": "fine"}))["desired_state"], "running");
    assert_eq!(c.get(l, "/api/workers?consistent=true").1["total"], 1);
}

#[test]
fn metrics_and_openapi_on_every_node() {
    let c = TestCluster::start(3, Options::default());
    let (a, _b, _l) = three(&c);
    // 64 concurrent heartbeats to one follower: group commit packs them.
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..8 {
                    beat(c, a, &json!({"worker_id": format!("m-{t}-{i}"), "pool": "metrics"}));
                }
            });
        }
    });
    assert_eq!(control(&c, a, "m-0-0", "pause", None).0, 200);
    let http = reqwest::blocking::Client::new();
    let mut leaders = 0;
    for id in 1..=3 {
        assert_eq!(c.get(id, "/api/workers?consistent=true").1["total"], 64);
        let res = http.get(format!("{}/metrics", c.url(id))).send().unwrap();
        assert_eq!(res.status().as_u16(), 401, "metrics need the token");
        let text = http.get(format!("{}/metrics", c.url(id))).bearer_auth(TOKEN).send().unwrap().text().unwrap();
        for family in [
            "engine_room_raft_term",
            "engine_room_raft_is_leader",
            "engine_room_raft_last_log_index",
            "engine_room_raft_applied_index",
            "engine_room_raft_apply_lag",
            "engine_room_heartbeats_received_total",
            "engine_room_heartbeat_batch_size_bucket",
            "engine_room_heartbeat_commit_seconds_bucket",
            "engine_room_http_requests_total",
            "engine_room_http_request_seconds_bucket",
            "engine_room_workers_by_heartbeat_state",
            "engine_room_workers_by_desired_state",
            "engine_room_workers_quarantined",
        ] {
            assert!(text.contains(family), "node {id}: {family} missing");
        }
        let value_of = |prefix: &str, label: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(prefix) && l.contains(label))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("node {id}: no sample {prefix} {label}"))
        };
        let value = |prefix: &str| value_of(prefix, "");
        leaders += value("engine_room_raft_is_leader") as u32;
        assert!(value("engine_room_raft_term") >= 1.0);
        assert_eq!(value_of("engine_room_workers_by_heartbeat_state", r#"state="healthy""#), 64.0);
        assert_eq!(value_of("engine_room_workers_by_desired_state", r#"state="paused""#), 1.0);
        if id == a {
            assert_eq!(value("engine_room_heartbeats_received_total"), 64.0);
            let batches = value("engine_room_heartbeat_batch_size_count");
            assert!(batches < 64.0, "group commit: {batches} batches for 64 concurrent heartbeats");
            assert!(text.contains(r#"route="/api/workers/heartbeat""#) && text.contains(r#"status="200""#));
            eprintln!("FIGURE 64 heartbeats from 8 threads to one follower -> {batches} Raft entries");
        }
    }
    assert_eq!(leaders, 1, "exactly one node reports is_leader");

    // Same OpenAPI document everywhere, and every documented path is served.
    let docs: Vec<Value> = (1..=3).map(|id| c.get(id, "/openapi.json").1).collect();
    assert!(docs[0]["openapi"].as_str().unwrap().starts_with("3."));
    assert!(docs.iter().all(|d| *d == docs[0]));
    let paths: BTreeMap<String, Value> = serde_json::from_value(docs[0]["paths"].clone()).unwrap();
    let expected = [
        "/api/workers/heartbeat",
        "/api/workers",
        "/api/workers/{id}",
        "/api/workers/{id}/{action}",
        "/api/pools",
        "/api/pools/{pool}",
        "/api/pools/{pool}/scale",
        "/api/pools/{pool}/archive",
        "/api/pools/{pool}/unarchive",
        "/api/pools/{pool}/default",
        "/api/cluster/status",
        "/api/cluster/learners",
        "/api/cluster/promote",
        "/api/cluster/remove",
        "/api/cluster/snapshot",
        "/api/audit",
        "/api/incidents",
        "/api/incidents/{id}/ack",
        "/api/alerts",
        "/api/settings",
        "/api/slo",
        "/api/providers/health",
        "/api/providers/{provider}/mode",
        "/api/health/live",
        "/api/health/ready",
        "/metrics",
    ];
    for p in expected {
        assert!(paths.contains_key(p), "{p} missing from openapi.json");
    }
    for (path, ops) in &paths {
        let concrete = path
            .replace("{id}", "7")
            .replace("{action}", "nap")
            .replace("{pool}", "nopool")
            .replace("{provider}", "gmail");
        for (method, _) in ops.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            // A malformed body: nothing changes, but the router must know the route.
            let (code, v) = raw(&c, 3, &method.to_uppercase(), &concrete, Some(TOKEN), b"{".to_vec());
            let not_routed = v["error"]["message"] == "no such route" || code == 405;
            assert!(!not_routed && code != 0, "{method} {path} documented but not served: {code} {v}");
        }
    }
}
