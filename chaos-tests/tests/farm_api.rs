//! Issue 21 across real nodes: the build farm under reference 003's paths on
//! a 3-node cluster, each write made through one node and read on another.
//! Hints CRUD (an invalid pattern is a 400, unknown ids 404), plan and
//! manifest versions (413 past 1 MiB), artifacts, the build queue (enqueue,
//! list, stats, clear, audited), a build that fails with a log matching a
//! hint (the event records the hint's id), history filters and its cursor
//! (limit 501 is a 400), build logs (tail, search), cache reports, config,
//! scopes (a read token cannot write, a worker token posts the plan, an
//! operator token cannot), metrics and the OpenAPI document.

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
        let mut req = self.http.request(m, format!("{url}{path}")).timeout(SECS(30));
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

    fn send(&self, url: &str, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(url, method, path, Some(token), Some(&body.to_string()))
    }

    fn post(&self, url: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(url, "POST", path, token, body)
    }

    fn get(&self, url: &str, path: &str, token: &str) -> (u16, Value) {
        self.call(url, "GET", path, Some(token), None)
    }
}

fn token(c: &TestCluster, via: u64, name: &str, scope: &str) -> String {
    let (code, body) = c.post(via, "/api/tokens", json!({"name": name, "scope": scope}));
    assert_eq!(code, 201, "{body}");
    body["secret"].as_str().unwrap().to_string()
}

/// Poll `f` on a node until it holds (reads on a follower trail its apply).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < SECS(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_build_farm_across_nodes() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    // Timed from here: the first start may build the binary.
    let started = Instant::now();
    let mut others = (1..=3).filter(|n| *n != leader);
    let (f1, f2) = (others.next().unwrap(), others.next().unwrap());
    let (lu, u1, u2) = (c.url(leader), c.url(f1), c.url(f2));
    c.eventually(SECS(20), "cluster format 6 (the build farm)", || {
        (c.get(leader, "/api/history?entity=cluster:format").1["format_version"].as_u64()? >= 6).then_some(())
    });
    let api = Api { http: reqwest::blocking::Client::new() };
    let reader = token(&c, leader, "r", "read");
    let operator = token(&c, leader, "o", "operator");
    let worker = token(&c, leader, "w", "worker");
    until("tokens on both followers", || {
        [&u1, &u2].iter().all(|u| [&reader, &operator].iter().all(|t| api.get(u, "/summary", t).0 == 200))
            && [&u1, &u2].iter().all(|u| api.get(u, "/summary", &worker).0 == 403)
    });

    // ---- scopes ----
    assert_eq!(api.call(&u1, "GET", "/summary", None, None).0, 401, "reads need a token by default");
    let hint = json!({"pattern": "(?i)cython\\.h: no such file", "recipe": {"env": {"CFLAGS": "-O1"}, "extra_requirements": ["cython<3"], "note": "pin cython"}});
    let (code, body) = api.post(&u1, "/hints", &reader, hint.clone());
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "read cannot write: {body}");
    assert_eq!(api.post(&u1, "/queue/enqueue", &reader, json!({"package": "a", "version": "1"})).0, 403);
    assert_eq!(api.post(&u1, "/plan", &operator, json!({"nodes": []})).0, 403, "the plan is the worker's");
    assert_eq!(api.post(&u1, "/hints", &worker, hint.clone()).0, 403, "hints are the operator's");

    // ---- hints: written on one node, read on another; bad input refused ----
    let (code, body) = api.post(&u1, "/hints", &operator, json!({"pattern": "(unclosed", "recipe": {}}));
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_hint")), "{body}");
    let (code, body) = api.post(&u1, "/hints", &operator, json!({"pattern": "x", "recipe": {"env": {"1X": "v"}}}));
    assert_eq!(code, 400, "{body}");
    let (code, created) = api.post(&u1, "/hints", &operator, hint.clone());
    assert_eq!(code, 201, "{created}");
    let hint_id = created["id"].as_u64().unwrap();
    let (code, spare) = api.post(&lu, "/hints", &operator, json!({"pattern": "never-matches-anything"}));
    assert_eq!(code, 201, "{spare}");
    let spare_id = spare["id"].as_u64().unwrap();
    until("the hints on the other follower", || {
        api.get(&u2, "/hints", &reader).1["hints"].as_array().is_some_and(|h| h.len() == 2)
    });
    let (code, body) =
        api.send(&u2, "PUT", &format!("/hints/{spare_id}"), &operator, json!({"pattern": "still-never"}));
    assert_eq!((code, body["pattern"].as_str()), (200, Some("still-never")), "{body}");
    assert_eq!(api.send(&u2, "PUT", "/hints/9999", &operator, json!({"pattern": "x"})).0, 404);
    assert_eq!(api.send(&u2, "PUT", "/hints/abc", &operator, json!({"pattern": "x"})).0, 404);
    assert_eq!(api.call(&u2, "DELETE", "/hints/9999", Some(&operator), None).0, 404);
    let (code, body) = api.call(&u1, "DELETE", &format!("/hints/{spare_id}"), Some(&operator), None);
    assert_eq!((code, body["deleted"].as_bool()), (200, Some(true)), "{body}");
    let (_, audit) = c.get(leader, "/api/audit");
    for action in ["hint.create", "hint.update", "hint.delete"] {
        assert!(audit.to_string().contains(action), "{action} is audited");
    }

    // ---- plan and manifest: versions, latest by default, 413 past 1 MiB ----
    let plan1 = json!({"nodes": ["numpy", "scipy"], "edges": [["numpy", "scipy"]]});
    let (code, body) = api.post(&u1, "/plan", &worker, plan1.clone());
    assert_eq!((code, body["version"].as_u64()), (201, Some(1)), "{body}");
    assert_eq!(body["sha256"].as_str().map(str::len), Some(64));
    let plan2 = json!({"nodes": ["numpy"], "edges": []});
    assert_eq!(api.post(&lu, "/plan", &worker, plan2.clone()).0, 201);
    until("plan version 2 on the other follower", || {
        let (code, body) = api.get(&u2, "/plan", &reader);
        code == 200 && body["version"] == 2 && body["document"] == plan2
    });
    let (code, body) = api.get(&u2, "/plan?version=1", &reader);
    assert_eq!((code, &body["document"]), (200, &plan1), "{body}");
    assert_eq!(body["versions"], json!([1, 2]));
    assert_eq!(api.get(&u2, "/plan?version=99", &reader).0, 404);
    assert_eq!(api.get(&u2, "/plan?version=x", &reader).0, 400);
    let big = json!({"blob": "x".repeat(1_100_000)});
    let (code, body) = api.post(&u1, "/plan", &worker, big);
    assert_eq!((code, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
    assert_eq!(api.post(&u1, "/plan", &worker, json!([1, 2])).0, 400, "a plan is a JSON object");
    assert_eq!(api.get(&lu, "/plan", &reader).1["version"], 2, "refusals stored nothing");
    let manifest = json!({"packages": [
        {"name": "numpy", "version": "1.26.4", "artifacts": ["wheels/numpy-1.26.4-cp312-manylinux.whl"]},
        {"name": "scipy", "version": "1.13.0", "url": "https://cache.example/scipy-1.13.0.whl"},
    ]});
    assert_eq!(api.post(&u2, "/manifest", &worker, manifest.clone()).0, 201);
    until("the manifest on the first follower", || api.get(&u1, "/manifest", &reader).1["document"] == manifest);
    let (code, body) = api.get(&u1, "/artifacts?package=numpy", &reader);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["artifacts"],
        json!([{"package": "numpy", "version": "1.26.4", "links": ["wheels/numpy-1.26.4-cp312-manylinux.whl"]}])
    );

    // ---- the build queue ----
    let (code, body) = api.post(&u1, "/queue/enqueue", &operator, json!({"package": "a/b", "version": "1"}));
    assert_eq!(code, 400, "{body}");
    let (code, body) = api.post(
        &u1,
        "/queue/enqueue",
        &operator,
        json!({"package": "numpy", "version": "1.26.4", "run_id": "run-1", "colour": 1}),
    );
    assert_eq!(code, 400, "an unknown field: {body}");
    let (code, job) = api.post(
        &u1,
        "/queue/enqueue",
        &operator,
        json!({"package": "numpy", "version": "1.26.4", "run_id": "run-1", "priority": 5}),
    );
    assert_eq!(code, 201, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_string();
    assert_eq!((job["queue"].as_str(), job["kind"].as_str()), (Some("build"), Some("build")));
    until("the build in the queue on the other follower", || {
        let (_, q) = api.get(&u2, "/queue", &reader);
        q["length"] == 1 && q["items"][0]["package"] == "numpy" && q["items"][0]["run_id"] == "run-1"
    });
    let (code, stats) = api.get(&u2, "/queue/stats", &reader);
    assert_eq!((code, stats["length"].as_u64()), (200, Some(1)), "{stats}");
    assert!(stats["oldest_age_seconds"].is_number() || stats["oldest_age_seconds"].is_null(), "{stats}");

    // ---- a build runs, logs, and fails with a log that matches the hint ----
    let (code, claimed) =
        api.post(&u2, "/internal/worker/claim", &worker, json!({"worker_id": "bw-1", "queues": ["build"]}));
    assert_eq!(code, 200, "{claimed}");
    assert_eq!(claimed["jobs"][0]["job_id"], job_id.as_str(), "{claimed}");
    let lease = claimed["jobs"][0]["lease_token"].as_str().unwrap().to_string();
    let lines = json!({"lines": ["collecting numpy", "building wheel", "fatal error: Cython.h: No such file or directory", "error: exit 1"]});
    let (code, body) = api.post(&u1, "/logs/numpy/1.26.4", &worker, lines);
    assert_eq!((code, body["first_line"].as_u64(), body["accepted"].as_u64()), (200, Some(0), Some(4)), "{body}");
    assert_eq!(api.post(&u1, "/logs/numpy/1.26.4", &reader, json!({"lines": ["x"]})).0, 403);
    assert_eq!(api.post(&u1, "/logs/numpy/1.26.4", &worker, json!({"lines": []})).0, 400);
    let fail = json!({"job_id": job_id, "worker_id": "bw-1", "lease_token": lease, "error": "wheel build failed", "retryable": false,
        "logs": ["fatal error: Cython.h: No such file or directory"]});
    let (code, body) = api.post(&u2, "/internal/worker/fail", &worker, fail);
    assert_eq!((code, body["job"]["state"].as_str()), (200, Some("dead")), "{body}");

    // ---- history, recent, summary: read on the leader ----
    until("the failed event on the leader", || {
        api.get(&lu, "/history?status=failed", &reader).1["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let (code, h) = api.get(&lu, "/history?package=numpy&version=1.26.4&run_id=run-1", &reader);
    assert_eq!(code, 200, "{h}");
    let kinds: Vec<&str> = h["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["failed", "started", "queued"], "newest first: {h}");
    let failed = &h["events"][0];
    assert_eq!(failed["hints"], json!([hint_id]), "the matching hint is on the event: {failed}");
    assert_eq!((failed["state"].as_str(), failed["worker"].as_str()), (Some("dead"), Some("bw-1")));
    assert!(failed["duration_ms"].is_u64(), "{failed}");
    assert_eq!(failed["error"], "wheel build failed");
    assert_eq!(api.get(&lu, "/history?status=started", &reader).1["events"].as_array().map(Vec::len), Some(1));
    assert!(api.get(&lu, "/history?package=scipy", &reader).1["events"].as_array().unwrap().is_empty());
    let (code, body) = api.get(&lu, "/history?limit=501", &reader);
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    assert_eq!(api.get(&lu, "/history?limit=0", &reader).0, 400);
    assert_eq!(api.get(&lu, "/history?status=sleeping", &reader).0, 400);
    assert_eq!(api.get(&lu, "/history?since=yesterday", &reader).0, 400);
    assert_eq!(api.get(&lu, "/history?colour=red", &reader).0, 400);
    let (_, p1) = api.get(&lu, "/history?limit=2", &reader);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = api.get(&lu, &format!("/history?limit=2&cursor={cursor}"), &reader);
    let seqs =
        |p: &Value| p["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    let (a, b) = (seqs(&p1), seqs(&p2));
    assert_eq!(a.len(), 2);
    assert!(!b.is_empty() && a[1] > b[0], "newest first, no overlap: {a:?} {b:?}");
    assert_eq!(api.get(&lu, "/recent?limit=1", &reader).1["events"][0]["kind"], "failed");
    assert_eq!(api.get(&lu, "/recent?limit=501", &reader).0, 400);
    let (code, summary) = api.get(&lu, "/summary", &reader);
    assert_eq!(code, 200, "{summary}");
    assert_eq!((summary["last_24h"]["failed"].as_u64(), summary["last_7d"]["started"].as_u64()), (Some(1), Some(1)));
    assert_eq!(summary["last_24h"]["success_rate"], 0.0);
    assert_eq!(summary["last_run"]["run_id"], "run-1");

    // ---- logs: read and searched on another node ----
    until("the build log on the leader", || api.get(&lu, "/logs/numpy/1.26.4", &reader).1["total_lines"] == 4);
    let (_, log) = api.get(&lu, "/logs/numpy/1.26.4?tail=2", &reader);
    let texts: Vec<&str> = log["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["fatal error: Cython.h: No such file or directory", "error: exit 1"], "{log}");
    let (_, range) = api.get(&lu, "/logs/numpy/1.26.4?from=1&limit=1", &reader);
    assert_eq!((range["lines"][0]["line"].as_u64(), range["next_from"].as_u64()), (Some(1), Some(2)), "{range}");
    assert_eq!(api.get(&lu, "/logs/nothing/1.0", &reader).0, 404);
    assert_eq!(api.get(&lu, "/logs/numpy/1.26.4?tail=5000", &reader).0, 400);
    let (code, found) = api.get(&lu, "/logs/search?q=CYTHON&package=numpy", &reader);
    assert_eq!(code, 200, "{found}");
    let hit = &found["hits"][0];
    assert_eq!(
        (hit["package"].as_str(), hit["version"].as_str(), hit["line"].as_u64()),
        (Some("numpy"), Some("1.26.4"), Some(2)),
        "{found}"
    );
    assert_eq!((hit["before"].as_str(), hit["after"].as_str()), (Some("building wheel"), Some("error: exit 1")));
    assert_eq!(api.get(&lu, "/logs/search?q=", &reader).0, 400);
    assert_eq!(api.get(&lu, "/logs/search", &reader).0, 400);

    // ---- clear (no confirmation field, audited) ----
    for v in ["1.0", "2.0"] {
        assert_eq!(api.post(&u2, "/queue/enqueue", &operator, json!({"package": "scipy", "version": v})).0, 201);
    }
    let (code, body) = api.call(&u1, "POST", "/queue/clear", Some(&operator), None);
    assert_eq!((code, body["cancelled"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(api.call(&u1, "POST", "/queue/clear", Some(&reader), None).0, 403);
    let (_, audit) = c.get(leader, "/api/audit");
    assert!(audit.to_string().contains("queue:build"), "the clear is audited: {audit}");
    until("the cancellations in the history", || {
        api.get(&lu, "/history?status=cancelled", &reader).1["events"].as_array().is_some_and(|e| e.len() == 2)
    });

    // ---- cache reports, config ----
    let (code, body) = api.post(&u1, "/cache/report", &worker, json!({"hits": 9, "misses": 1}));
    assert_eq!((code, body["hit_rate"].as_f64()), (200, Some(0.9)), "{body}");
    assert_eq!(api.post(&u1, "/cache/report", &operator, json!({"hits": 1, "misses": 1})).0, 403);
    assert_eq!(api.post(&u1, "/cache/report", &worker, json!({"hits": -1, "misses": 1})).0, 400);
    let cfg = json!({"strategy": "upgrade", "python": "3.12", "platform": "manylinux_2_28_x86_64", "index_url": "https://pypi.org/simple", "env": {"PIP_NO_CACHE_DIR": "1"}});
    let (code, body) = api.send(&u2, "PUT", "/config", &operator, cfg);
    assert_eq!((code, body["strategy"].as_str()), (200, Some("upgrade")), "{body}");
    assert_eq!(api.send(&u2, "PUT", "/config", &operator, json!({"strategy": "sideways"})).0, 400);
    until("the config and cache on the first follower", || {
        let (_, cfg) = api.get(&u1, "/config", &reader);
        let (_, sum) = api.get(&u1, "/summary", &reader);
        cfg["python"] == "3.12" && cfg["build_log_retention_days"] == 14 && sum["cache"]["hits"] == 9
    });

    // ---- metrics and the document ----
    let (code, text) = api.get(&lu, "/metrics", &reader);
    assert_eq!(code, 200);
    let text = text.as_str().unwrap_or_default().to_string();
    assert!(text.contains("engine_room_farm_builds{"), "builds by status");
    assert!(text.contains("engine_room_farm_queue_depth"), "queue depth");
    assert!(text.contains("engine_room_farm_cache_total{"), "cache hits and misses");
    let doc: Value = api.http.get(format!("{lu}/openapi.json")).send().unwrap().json().unwrap();
    for (path, method, scope) in [
        ("/summary", "get", "read"),
        ("/history", "get", "read"),
        ("/plan", "post", "worker"),
        ("/hints/{id}", "delete", "operator"),
        ("/logs/{name}/{version}", "post", "worker"),
        ("/queue/clear", "post", "operator"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(op["security"][0]["bearer"], json!([scope]), "{method} {path}: {op}");
    }
    assert!(started.elapsed() < SECS(90), "took {:?}", started.elapsed());
}
