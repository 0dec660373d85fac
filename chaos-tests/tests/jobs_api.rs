//! Issue 20 across real nodes: the jobs API and the worker contract end to
//! end on a 3-node cluster, called through followers and the leader with
//! tokens of each scope. Enqueue (idempotent: 201 then 200 with the same
//! job), claim (dry run, fenced lease, paused worker, long poll), renew with
//! logs, complete; fail retryable, retried after its backoff, dead past
//! max_attempts; an outdated lease token gets 409 and changes nothing; the
//! reconcile route reaps an expired lease exactly once; bad input gets a JSON
//! 4xx and stores nothing; scopes refuse with 401/403; log lines are kept
//! and searchable; queue cap, clear and history paging.

use std::time::{Duration, Instant};

use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

struct Api {
    http: reqwest::blocking::Client,
}

impl Api {
    fn call(&self, url: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{url}{path}")).timeout(SECS(40));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let res = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn post(&self, url: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(url, "POST", path, Some(token), Some(&body.to_string()))
    }

    fn get(&self, url: &str, path: &str, token: &str) -> (u16, Value) {
        self.call(url, "GET", path, Some(token), None)
    }
}

fn token(c: &TestCluster, via: u64, name: &str, scope: &str, extra: Value) -> String {
    let mut body = json!({"name": name, "scope": scope});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (code, body) = c.post(via, "/api/tokens", body);
    assert_eq!(code, 201, "{body}");
    body["secret"].as_str().unwrap().to_string()
}

#[test]
fn the_worker_contract_end_to_end() {
    let started = Instant::now();
    // Short leases; the leader's own reaper waits an hour, so that the
    // reconcile route is what ends an expired lease here.
    let opts = Options::default()
        .env("WORKER_LEASE_TTL_SECONDS", "2")
        .env("WORKER_HEARTBEAT_INTERVAL_SECONDS", "1")
        .env("LEASE_REAPER_INTERVAL_SECONDS", "3600");
    let c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    let f = (1..=3).find(|n| *n != leader).unwrap();
    let (lu, fu) = (c.url(leader), c.url(f));
    c.eventually(SECS(20), "cluster format 5 (jobs)", || {
        (c.get(leader, "/api/history?entity=cluster:format").1["format_version"].as_u64()? >= 5).then_some(())
    });
    let api = Api { http: reqwest::blocking::Client::new() };
    let producer = token(&c, leader, "p", "producer", json!({}));
    let worker = token(&c, leader, "w", "worker", json!({}));
    let eu_worker = token(&c, leader, "w-eu", "worker", json!({"worker_prefix": "eu-"}));
    let reader = token(&c, leader, "r", "read", json!({}));
    let operator = token(&c, leader, "o", "operator", json!({}));
    c.eventually(SECS(10), "tokens on the follower", || {
        let known = |t: &String| api.get(&fu, "/api/v1/queue/stats", t).0 != 401;
        [&producer, &worker, &eu_worker, &reader, &operator].into_iter().all(known).then_some(())
    });

    // ---- scopes ----
    let job = json!({"queue": "q", "kind": "echo", "payload": {"n": 1}, "idempotency_key": "k-1"});
    assert_eq!(api.call(&fu, "POST", "/api/v1/jobs", None, Some(&job.to_string())).0, 401);
    for t in [&worker, &reader, &operator] {
        let (code, body) = api.post(&fu, "/api/v1/jobs", t, job.clone());
        assert_eq!(code, 403, "{body}");
    }
    let claim = json!({"worker_id": "w1", "queues": ["q"]});
    for t in [&producer, &reader, &operator] {
        assert_eq!(api.post(&fu, "/internal/worker/claim", t, claim.clone()).0, 403);
    }
    assert_eq!(api.get(&fu, "/api/v1/jobs", &producer).0, 403, "reads need read");
    assert_eq!(api.post(&fu, "/internal/admin/queue/reconcile", &producer, json!({})).0, 403);
    assert_eq!(api.call(&fu, "GET", "/health", None, None).0, 200, "/health is open");

    // ---- idempotent enqueue through a follower: 201, then 200 with the same job ----
    let (code, first) = api.post(&fu, "/api/v1/jobs", &producer, job.clone());
    assert_eq!(code, 201, "{first}");
    let id = first["job_id"].as_str().unwrap().to_string();
    assert_eq!(first["state"], "queued");
    assert_eq!(first["payload"], json!({"n": 1}));
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'), "RFC 3339: {first}");
    let (code, again) = api.post(&lu, "/api/v1/jobs", &producer, job.clone());
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["job_id"], first["job_id"]);

    // ---- bad input: a JSON 4xx, nothing stored ----
    let count =
        |c: &TestCluster| c.get(leader, "/api/v1/jobs?limit=500&consistent=true").1["jobs"].as_array().unwrap().len();
    let before = count(&c);
    assert_eq!(before, 1);
    let (code, body) = api.get(&fu, "/api/v1/jobs/999999", &reader);
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(api.get(&fu, "/api/v1/jobs/abc", &reader).0, 404);
    let (code, body) = api.call(&fu, "POST", "/api/v1/jobs", Some(&producer), Some("{\"queue\": "));
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_json")), "{body}");
    let (code, body) = api.post(&fu, "/api/v1/jobs", &producer, json!({"queue": "q", "kind": "k", "colour": 1}));
    assert_eq!(code, 400, "an unknown field: {body}");
    let (code, body) = api.post(&fu, "/api/v1/jobs", &producer, json!({"queue": "q q", "kind": "k"}));
    assert_eq!(code, 400, "a bad queue name: {body}");
    let (code, body) = api.post(&fu, "/api/v1/jobs", &producer, json!({"queue": "q", "kind": "k", "max_attempts": 0}));
    assert_eq!(code, 400, "{body}");
    let (code, body) =
        api.post(&fu, "/api/v1/jobs", &producer, json!({"queue": "q", "kind": "k", "run_after": "soon"}));
    assert_eq!(code, 400, "{body}");
    let big = json!({"queue": "q", "kind": "k", "payload": {"blob": "x".repeat(70 * 1024)}});
    let (code, body) = api.post(&fu, "/api/v1/jobs", &producer, big);
    assert_eq!((code, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    let (code, body) = api.get(&fu, "/api/v1/jobs?colour=red", &reader);
    assert_eq!(code, 400, "an unknown query parameter: {body}");
    assert_eq!(api.get(&fu, "/api/v1/jobs?state=sleeping", &reader).0, 400);
    let (code, body) = api.post(&fu, "/internal/worker/claim", &worker, json!({"worker_id": "w1", "queues": []}));
    assert_eq!(code, 400, "{body}");
    assert_eq!(count(&c), before, "refusals stored nothing");

    // ---- claim: dry run commits nothing; a claim leases the job ----
    let dry = json!({"worker_id": "w1", "queues": ["q"], "dry_run": true});
    let (code, body) = api.post(&fu, "/internal/worker/claim", &worker, dry);
    assert_eq!((code, body["jobs"].clone()), (200, json!([])), "{body}");
    assert_eq!(api.get(&lu, &format!("/api/v1/jobs/{id}?consistent=true"), &reader).1["state"], "queued");
    let (code, claimed) = api.post(&fu, "/internal/worker/claim", &worker, claim.clone());
    assert_eq!(code, 200, "{claimed}");
    let got = &claimed["jobs"][0];
    assert_eq!(got["job_id"], id.as_str());
    assert_eq!(got["payload"], json!({"n": 1}));
    assert_eq!(got["attempt"], 1);
    let lease = got["lease_token"].as_str().unwrap().to_string();
    let (_, running) = api.get(&lu, &format!("/api/v1/jobs/{id}?consistent=true"), &reader);
    assert_eq!(running["state"], "running");
    assert_eq!(running["lease"]["worker_id"], "w1");
    // A worker token bound to `eu-` cannot claim for another worker.
    let (code, body) =
        api.post(&fu, "/internal/worker/claim", &eu_worker, json!({"worker_id": "us-1", "queues": ["q"]}));
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    // ---- renew with logs; an outdated token gets 409 and changes nothing ----
    let renew =
        json!({"job_id": id, "worker_id": "w1", "lease_token": lease, "progress": "half", "logs": ["one", "two"]});
    let (code, body) = api.post(&fu, "/internal/worker/heartbeat", &worker, renew);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["logs_accepted"], 2);
    let forged = format!("{}-0000000000000000", lease.split('-').next().unwrap());
    for (path, extra) in [
        ("/internal/worker/heartbeat", json!({"logs": ["forged"]})),
        ("/internal/worker/complete", json!({"result": {"ok": false}})),
        ("/internal/worker/fail", json!({"error": "x", "retryable": false})),
    ] {
        let mut b = json!({"job_id": id, "worker_id": "w1", "lease_token": forged});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (code, body) = api.post(&fu, path, &worker, b);
        assert_eq!((code, body["error"]["code"].as_str()), (409, Some("lease_lost")), "{path}: {body}");
    }
    let (_, still) = api.get(&lu, &format!("/api/v1/jobs/{id}?consistent=true"), &reader);
    assert_eq!(
        (still["state"].as_str(), still["lease"]["lease_token"].as_str()),
        (Some("running"), Some(lease.as_str()))
    );
    assert_eq!(still["log_lines"], 2, "the forged renewal's line was not kept: {still}");
    assert_eq!(still["progress"], "half");

    // ---- complete; a second completion is refused ----
    let done = json!({"job_id": id, "worker_id": "w1", "lease_token": lease, "result": {"echo": 1}, "logs": ["three"]});
    let (code, body) = api.post(&fu, "/internal/worker/complete", &worker, done.clone());
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job"]["state"], "succeeded");
    assert_eq!(body["job"]["result"], json!({"echo": 1}));
    assert_eq!(api.post(&lu, "/internal/worker/complete", &worker, done).0, 409);

    // ---- complete with `next`: the worker's next jobs claimed in the same commit ----
    let mut ids = Vec::new();
    for n in 0..4 {
        let (code, body) =
            api.post(&fu, "/api/v1/jobs", &producer, json!({"queue": "qn", "kind": "echo", "payload": {"n": n}}));
        assert_eq!(code, 201, "{body}");
        ids.push(body["job_id"].as_str().unwrap().to_string());
    }
    let (code, body) = api.post(&fu, "/internal/worker/claim", &worker, json!({"worker_id": "w1", "queues": ["qn"]}));
    assert_eq!(code, 200, "{body}");
    let a = body["jobs"][0].clone();
    assert_eq!(a["job_id"], ids[0].as_str());
    let finish = |j: &Value, token: &str, next: Value| json!({"job_id": j["job_id"], "worker_id": "w1", "lease_token": token, "result": {"ok": true}, "next": next});
    let a_lease = a["lease_token"].as_str().unwrap();
    for bad in [json!({"queues": []}), json!({"queues": ["qn"], "max_jobs": 101}), json!({"queues": ["q n"]})] {
        let (code, body) = api.post(&fu, "/internal/worker/complete", &worker, finish(&a, a_lease, bad.clone()));
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (_, still) = api.get(&lu, &format!("/api/v1/jobs/{}?consistent=true", ids[0]), &reader);
    assert_eq!(still["state"], "running", "a refused next changed nothing: {still}");
    let (code, body) = api.post(
        &fu,
        "/internal/worker/complete",
        &worker,
        finish(&a, a_lease, json!({"queues": ["qn"], "max_jobs": 2})),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job"]["state"], "succeeded");
    let next: Vec<Value> = body["next"]["jobs"].as_array().unwrap().clone();
    let next_ids: Vec<&str> = next.iter().filter_map(|j| j["job_id"].as_str()).collect();
    assert_eq!(next_ids, [ids[1].as_str(), ids[2].as_str()], "{body}");
    for j in &next {
        let (_, v) = api.get(&lu, &format!("/api/v1/jobs/{}?consistent=true", j["job_id"].as_str().unwrap()), &reader);
        assert_eq!((v["state"].as_str(), v["lease"]["worker_id"].as_str()), (Some("running"), Some("w1")), "{v}");
        assert_eq!(v["lease"]["lease_token"], j["lease_token"]);
    }
    // A refused complete keeps its job as it was, and still answers the jobs
    // its `next` took (they are the worker's now).
    let (code, body) =
        api.post(&fu, "/internal/worker/complete", &worker, finish(&next[0], &forged, json!({"queues": ["qn"]})));
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("lease_lost")), "{body}");
    assert_eq!(body["next"]["jobs"][0]["job_id"], ids[3].as_str(), "{body}");
    let last = body["next"]["jobs"][0].clone();
    let (_, v) = api.get(&lu, &format!("/api/v1/jobs/{}?consistent=true", ids[1]), &reader);
    assert_eq!(v["state"], "running", "{v}");
    for j in [&next[0], &next[1], &last] {
        let (code, body) = api.post(
            &lu,
            "/internal/worker/complete",
            &worker,
            finish(j, j["lease_token"].as_str().unwrap(), json!({"queues": ["qn"]})),
        );
        assert_eq!((code, body["job"]["state"].as_str()), (200, Some("succeeded")), "{body}");
        assert_eq!(body["next"]["jobs"], json!([]), "nothing left to claim: {body}");
    }
    // The log store holds the accepted lines, on every node, in order.
    c.eventually(SECS(5), "the job's log lines on a follower", || {
        let (code, body) = api.get(&fu, &format!("/api/v1/jobs/{id}/logs"), &reader);
        let texts: Vec<&str> = body["lines"].as_array()?.iter().filter_map(|l| l["text"].as_str()).collect();
        (code == 200 && texts == ["one", "two", "three"]).then_some(())
    });
    let (code, body) = api.get(&lu, "/api/jobs/logs/search?q=TWO", &operator);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["lines"][0]["job_id"], id.as_str(), "{body}");
    assert_eq!(api.get(&lu, "/api/jobs/logs/search?q=two&extra=1", &operator).0, 400);

    // ---- fail retryable: retried after the backoff, dead past max_attempts ----
    let flaky =
        json!({"queue": "retry", "kind": "flaky", "max_attempts": 2, "backoff_base_ms": 1500, "backoff_max_ms": 1500});
    let (code, body) = api.post(&fu, "/api/v1/jobs", &producer, flaky);
    assert_eq!(code, 201, "{body}");
    let rid = body["job_id"].as_str().unwrap().to_string();
    let take = |queue: &str, wait_ms: u64| {
        let b = json!({"worker_id": "w2", "queues": [queue], "wait_ms": wait_ms});
        let (code, body) = api.post(&fu, "/internal/worker/claim", &worker, b);
        assert_eq!(code, 200, "{body}");
        body["jobs"].as_array().unwrap().clone()
    };
    let fail = |lease: &str| {
        let b = json!({"job_id": rid, "worker_id": "w2", "lease_token": lease, "error": "boom", "retryable": true});
        api.post(&fu, "/internal/worker/fail", &worker, b)
    };
    let first_try = take("retry", 0);
    assert_eq!(first_try.len(), 1);
    let (code, body) = fail(first_try[0]["lease_token"].as_str().unwrap());
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job"]["state"], "failed", "waiting for its retry: {body}");
    assert!(take("retry", 0).is_empty(), "not claimable before its backoff");
    let t = Instant::now();
    let second_try = take("retry", 10_000);
    assert_eq!(second_try.len(), 1, "claimed once the backoff passed (long poll woken by the due time)");
    assert!(t.elapsed() < SECS(5), "the retry came within its backoff and a bit: {:?}", t.elapsed());
    assert_eq!(second_try[0]["attempt"], 2);
    let (code, body) = fail(second_try[0]["lease_token"].as_str().unwrap());
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job"]["state"], "dead", "past max_attempts: {body}");
    assert_eq!(body["job"]["error"], "boom");
    let (code, body) = api.post(&fu, &format!("/api/v1/jobs/{rid}/requeue"), &operator, json!({}));
    assert_eq!((code, body["state"].as_str(), body["attempts"].as_u64()), (200, Some("queued"), Some(0)), "{body}");

    // ---- long poll: answered when a job arrives, not before ----
    let (lp_url, lp_worker) = (fu.clone(), worker.clone());
    let waiter = std::thread::spawn(move || {
        let api = Api { http: reqwest::blocking::Client::new() };
        let t = Instant::now();
        let b = json!({"worker_id": "w3", "queues": ["lp"], "wait_ms": 20_000});
        let (code, body) = api.post(&lp_url, "/internal/worker/claim", &lp_worker, b);
        (code, body, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let enqueued_at = Instant::now();
    let (code, body) = api.post(&lu, "/api/v1/jobs", &producer, json!({"queue": "lp", "kind": "k"}));
    assert_eq!(code, 201, "{body}");
    let (code, body, waited) = waiter.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(1), "{body}");
    assert!(waited >= Duration::from_millis(1_400), "it waited for the job: {waited:?}");
    let latency = enqueued_at.elapsed();
    assert!(latency < SECS(3), "woken by the enqueue, not by its deadline: {latency:?}");
    eprintln!("long poll answered {latency:?} after the enqueue");

    // ---- a paused worker gets nothing; another worker gets the job ----
    let beat = json!({"worker_id": "w-paused", "host": "h", "ip": "127.0.0.1", "version": "1", "status": "running", "process_state": "running"});
    assert_eq!(api.post(&fu, "/api/workers/heartbeat", &worker, beat).0, 200);
    let (code, body) = api.post(&lu, "/api/workers/w-paused/pause", &operator, json!({}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(api.post(&lu, "/api/v1/jobs", &producer, json!({"queue": "pq", "kind": "k"})).0, 201);
    c.eventually(SECS(5), "the pause on the follower", || {
        (c.get(f, "/api/workers/w-paused").1["desired_state"] == "paused").then_some(())
    });
    let (code, body) = api.post(
        &fu,
        "/internal/worker/claim",
        &worker,
        json!({"worker_id": "w-paused", "queues": ["pq"], "wait_ms": 500}),
    );
    assert_eq!((code, body["jobs"].clone()), (200, json!([])), "{body}");
    let (code, body) = api.post(&fu, "/internal/worker/claim", &worker, json!({"worker_id": "w4", "queues": ["pq"]}));
    assert_eq!((code, body["jobs"].as_array().map(Vec::len)), (200, Some(1)), "{body}");

    // ---- reconcile: an expired lease is re-queued once ----
    assert_eq!(api.post(&lu, "/api/v1/jobs", &producer, json!({"queue": "rq", "kind": "k", "max_attempts": 3})).0, 201);
    let (_, body) = api.post(&fu, "/internal/worker/claim", &worker, json!({"worker_id": "w5", "queues": ["rq"]}));
    let xid = body["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let xlease = body["jobs"][0]["lease_token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2_300));
    let (code, body) = api.post(&fu, "/internal/admin/queue/reconcile", &operator, json!({}));
    assert_eq!(code, 200, "{body}");
    let requeued: Vec<&str> =
        body["requeued"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert!(requeued.contains(&xid.as_str()), "{body}");
    let (code, body) = api.post(&lu, "/internal/admin/queue/reconcile", &operator, json!({}));
    assert_eq!(code, 200, "{body}");
    assert!(!body["requeued"].to_string().contains(&format!("\"{xid}\"")), "reaped once: {body}");
    let (_, reaped) = api.get(&lu, &format!("/api/v1/jobs/{xid}?consistent=true"), &reader);
    assert!(matches!(reaped["state"].as_str(), Some("queued" | "failed")), "{reaped}");
    assert_eq!(reaped["attempt_history"][0]["outcome"], "expired", "{reaped}");
    let late = json!({"job_id": xid, "worker_id": "w5", "lease_token": xlease, "result": {}});
    assert_eq!(api.post(&fu, "/internal/worker/complete", &worker, late).0, 409, "the expired lease is fenced off");

    // ---- queue operations ----
    // `pq` holds one pending job: w4's, whose lease the reconcile above
    // also ended (nobody renewed it). A cap of 2 leaves room for one more.
    let (code, _) = api.post(&fu, "/api/queue/pq/cap", &operator, json!({"max_queued": 2}));
    assert_eq!(code, 200);
    assert_eq!(api.post(&lu, "/api/v1/jobs", &producer, json!({"queue": "pq", "kind": "k"})).0, 201);
    let (code, body) = api.post(&lu, "/api/v1/jobs", &producer, json!({"queue": "pq", "kind": "k"}));
    assert_eq!((code, body["error"]["code"].as_str()), (429, Some("queue_full")), "{body}");
    let (code, _) = api.post(&fu, "/api/queue/clear", &operator, json!({"queue": "pq", "confirm": "nope"}));
    assert_eq!(code, 409, "a confirm that is not the queue's name clears nothing");
    let (code, body) = api.post(&fu, "/api/queue/clear", &operator, json!({"queue": "pq", "confirm": "pq"}));
    assert_eq!((code, body["cancelled"].as_u64()), (200, Some(2)), "{body}");
    let (_, audit) = c.get(leader, "/api/audit");
    assert!(audit.to_string().contains("queue.clear"), "clear is audited: {audit}");
    let (code, stats) = api.get(&fu, "/api/v1/queue/stats", &reader);
    assert_eq!(code, 200);
    assert!(
        stats["queues"].as_array().unwrap().iter().any(|q| q["queue"] == "q" && q["length"]["succeeded"] == 1),
        "{stats}"
    );

    // ---- batch enqueue: one entry, each job answered; invalid batches store nothing ----
    let jobs_before = count(&c);
    let batch = json!({"jobs": [
        {"queue": "b", "kind": "k", "payload": {"i": 1}},
        {"queue": "b", "kind": "k", "payload": {"i": 2}},
        {"queue": "q", "kind": "echo", "payload": {"n": 1}, "idempotency_key": "k-1"},
    ]});
    let (code, body) = api.post(&fu, "/api/v1/jobs/batch", &producer, batch);
    assert_eq!(code, 201, "{body}");
    let statuses: Vec<u64> =
        body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 200], "{body}");
    assert_eq!(body["results"][2]["job"]["job_id"], id.as_str(), "the repeat answers the existing job");
    let bad = json!({"jobs": [{"queue": "b", "kind": "k"}, {"queue": "b", "kind": "k", "max_attempts": 0}]});
    let (code, body) = api.post(&fu, "/api/v1/jobs/batch", &producer, bad);
    assert_eq!(code, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("jobs[1]"), "{body}");
    let too_many = json!({"jobs": vec![json!({"queue": "b", "kind": "k"}); 1_001]});
    assert_eq!(api.post(&fu, "/api/v1/jobs/batch", &producer, too_many).0, 400);
    let huge = json!({"jobs": vec![json!({"queue": "b", "kind": "k", "payload": {"blob": "x".repeat(60_000)}}); 80]});
    let (code, body) = api.post(&fu, "/api/v1/jobs/batch", &producer, huge);
    assert_eq!(code, 413, "past half the entry limit: {body}");
    assert_eq!(count(&c), jobs_before + 2, "only the valid batch stored its two new jobs");

    // ---- the CLI talks to a node like the other commands ----
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(chaos_tests::binary())
            .args(args)
            .env("ENGINE_URL", &fu)
            .env("CONTROL_PLANE_TOKEN", chaos_tests::cluster::TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let made = cli(&["jobs", "enqueue", "--queue", "cli", "--kind", "k", "--payload", "{\"a\":1}"]);
    let cli_id = made["job_id"].as_str().unwrap().to_string();
    assert_eq!(cli(&["jobs", "get", &cli_id])["payload"], json!({"a": 1}));
    assert_eq!(cli(&["jobs", "cancel", &cli_id, "--reason", "test"])["state"], "cancelled");
    assert_eq!(cli(&["jobs", "requeue", &cli_id])["state"], "queued");
    let listed = cli(&["jobs", "list", "--queue", "cli"]);
    assert_eq!(listed["jobs"][0]["job_id"], cli_id.as_str(), "{listed}");

    // ---- history paging is stable ----
    let (_, p1) = api.get(&fu, "/api/v1/jobs?limit=2", &reader);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = api.get(&fu, &format!("/api/v1/jobs?limit=2&cursor={cursor}"), &reader);
    let ids = |p: &Value| {
        p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (ids(&p1), ids(&p2));
    assert!(a.len() == 2 && !b.is_empty() && a[1] > b[0], "newest first, no overlap: {a:?} {b:?}");

    // ---- metrics ----
    let (code, text) = api.get(&lu, "/metrics", &reader);
    assert_eq!(code, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    for m in ["engine_room_jobs_by_state", "engine_room_job_events_total", "engine_room_job_claim_seconds"] {
        assert!(text.contains(m), "{m} missing");
    }
    assert!(started.elapsed() < SECS(60), "took {:?}", started.elapsed());
}
