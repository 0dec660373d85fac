//! The client against small in-test servers that implement the worker
//! contract (or fail in chosen ways): failover between nodes, what a 409
//! after an unknown outcome means, renewals with logs, lease loss, and the
//! desired state gating claims.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jobs_client::{ClaimedJob, Finished, JobFailure, JobsClient, RetryPolicy, RunStats, WorkerConfig};
use serde_json::{json, Value};

/// How a fake node answers.
#[derive(Debug, Default)]
struct Fake {
    /// Every request: (path, body).
    seen: Vec<(String, Value)>,
    /// Answer every call with this status and error code.
    fail_with: Option<(u16, &'static str)>,
    /// Sleep this long before answering (longer than the client's timeout:
    /// the outcome is unknown to it).
    stall: Option<Duration>,
    /// Jobs handed out by the next claims.
    queue: Vec<ClaimedJob>,
    desired: &'static str,
    /// Renewals answer 409 lease_lost.
    lose_leases: bool,
    /// Renewals are never answered in time.
    stall_renewals: bool,
    /// Complete and fail answer 409 lease_lost.
    refuse_finish: bool,
    /// logs_accepted answered at most this many per call.
    accept_logs: Option<u32>,
}

type Shared = Arc<Mutex<Fake>>;

fn err(status: u16, code: &str) -> Response {
    let s = StatusCode::from_u16(status).expect("test statuses are valid");
    (s, Json(json!({"error": {"code": code, "message": "from the fake"}}))).into_response()
}

async fn handle(s: Shared, path: &str, body: Value) -> Response {
    let (stall, fail) = {
        let mut f = s.lock().unwrap();
        f.seen.push((path.to_string(), body.clone()));
        let stall = if f.stall_renewals && path == "/internal/worker/heartbeat" {
            Some(Duration::from_secs(30))
        } else {
            f.stall
        };
        (stall, f.fail_with)
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    if let Some((status, code)) = fail {
        return err(status, code);
    }
    let mut f = s.lock().unwrap();
    let sent_logs = body.get("logs").and_then(Value::as_array).map_or(0, Vec::len) as u32;
    let accepted = f.accept_logs.map_or(sent_logs, |cap| cap.min(sent_logs));
    match path {
        "/api/workers/heartbeat" => Json(json!({"desired_state": f.desired, "quarantined": false, "stale": false,
            "pool_desired_count": 0, "policy_version": null, "provider_modes": {}}))
        .into_response(),
        "/internal/worker/claim" => {
            let max = body["max_jobs"].as_u64().unwrap_or(1) as usize;
            let n = max.min(f.queue.len());
            let jobs: Vec<ClaimedJob> = f.queue.drain(..n).collect();
            Json(json!({ "jobs": jobs })).into_response()
        }
        "/internal/worker/heartbeat" if f.lose_leases => err(409, "lease_lost"),
        "/internal/worker/heartbeat" => {
            Json(json!({"job_id": body["job_id"], "lease_expires_at": "2026-01-01T00:01:00Z",
            "logs_accepted": accepted}))
            .into_response()
        }
        "/internal/worker/complete" | "/internal/worker/fail" if f.refuse_finish => err(409, "lease_lost"),
        "/internal/worker/complete" => {
            Json(json!({"job_id": body["job_id"], "state": "succeeded", "logs_accepted": accepted})).into_response()
        }
        "/internal/worker/fail" => {
            Json(json!({"job_id": body["job_id"], "state": "failed", "logs_accepted": accepted})).into_response()
        }
        _ => err(404, "not_found"),
    }
}

/// Start a fake node on loopback; its URL and its state.
async fn fake_node(f: Fake) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(f));
    let route = |p: &'static str| {
        post(move |State(s): State<Shared>, Json(body): Json<Value>| async move { handle(s, p, body).await })
    };
    let app = Router::new()
        .route("/api/workers/heartbeat", route("/api/workers/heartbeat"))
        .route("/internal/worker/claim", route("/internal/worker/claim"))
        .route("/internal/worker/heartbeat", route("/internal/worker/heartbeat"))
        .route("/internal/worker/complete", route("/internal/worker/complete"))
        .route("/internal/worker/fail", route("/internal/worker/fail"))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, shared)
}

/// A URL nobody listens on: connections are refused.
async fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn job(id: &str) -> ClaimedJob {
    ClaimedJob {
        job_id: id.to_string(),
        lease_token: format!("1-{id}"),
        lease_expires_at: "2026-01-01T00:01:00Z".into(),
        queue: "q".into(),
        kind: "k".into(),
        payload: json!({"n": 1}),
        attempt: 1,
        max_attempts: 3,
    }
}

fn config(nodes: Vec<String>) -> WorkerConfig {
    let mut c = WorkerConfig::new(nodes, "token".into(), "w-1".into(), vec!["q".into()]);
    c.retry =
        RetryPolicy { max_tries: 4, base_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50) };
    c.timeout = Duration::from_millis(300);
    c.renew_every = Duration::from_millis(100);
    c.lease_ttl = Duration::from_secs(2);
    c.heartbeat_every = Duration::from_millis(100);
    c.wait_ms = 50;
    c
}

fn count(s: &Shared, path: &str) -> usize {
    s.lock().unwrap().seen.iter().filter(|(p, _)| p == path).count()
}

#[tokio::test]
async fn a_call_moves_past_a_dead_node_and_a_503_to_one_that_answers() {
    let dead = dead_url().await;
    let (busy, busy_s) = fake_node(Fake { fail_with: Some((503, "unavailable")), ..Fake::default() }).await;
    let (good, good_s) = fake_node(Fake { queue: vec![job("7")], ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![dead, busy, good])).unwrap();
    let jobs = tokio::time::timeout(Duration::from_secs(10), client.claim(5, 0)).await.unwrap().unwrap();
    assert_eq!(jobs, vec![job("7")]);
    assert_eq!(count(&busy_s, "/internal/worker/claim"), 1);
    assert_eq!(count(&good_s, "/internal/worker/claim"), 1);
    // The node that answered is where the next call starts.
    assert_eq!(client.nodes().current(), 2);
    let again = client.claim(5, 0).await.unwrap();
    assert!(again.is_empty());
    assert_eq!(count(&busy_s, "/internal/worker/claim"), 1, "the 503 node was not asked again");
}

#[tokio::test]
async fn every_node_down_is_an_error_after_bounded_tries() {
    let client = JobsClient::new(config(vec![dead_url().await, dead_url().await])).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), client.claim(1, 0)).await.unwrap().unwrap_err();
    assert!(matches!(e, jobs_client::ClientError::Unavailable { tries: 4, maybe_applied: false, .. }), "{e}");
}

#[tokio::test]
async fn a_4xx_is_not_retried_elsewhere() {
    let (a, a_s) = fake_node(Fake { fail_with: Some((403, "forbidden")), ..Fake::default() }).await;
    let (b, b_s) = fake_node(Fake::default()).await;
    let client = JobsClient::new(config(vec![a, b])).unwrap();
    let e = client.claim(1, 0).await.unwrap_err();
    assert!(matches!(&e, jobs_client::ClientError::Refused { refusal, .. } if refusal.status == 403), "{e}");
    assert_eq!(count(&a_s, "/internal/worker/claim"), 1);
    assert_eq!(count(&b_s, "/internal/worker/claim"), 0);
}

#[tokio::test]
async fn complete_after_an_unknown_outcome_then_lease_lost_is_maybe_applied() {
    // The first node takes the complete and never answers in time (it may
    // have committed it); the second says the lease is gone.
    let (slow, slow_s) = fake_node(Fake { stall: Some(Duration::from_secs(5)), ..Fake::default() }).await;
    let (other, other_s) = fake_node(Fake { refuse_finish: true, ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![slow, other])).unwrap();
    let j = job("9");
    let r = tokio::time::timeout(Duration::from_secs(10), client.complete(&j, Some(&json!(1)), &[])).await.unwrap();
    assert_eq!(r.unwrap(), Finished::MaybeApplied);
    assert_eq!(count(&slow_s, "/internal/worker/complete"), 1);
    let body = &other_s.lock().unwrap().seen[0].1;
    assert_eq!(body["lease_token"], "1-9", "the retry presents the same token");
    assert_eq!(body["result"], 1);
}

#[tokio::test]
async fn lease_lost_without_an_unknown_outcome_is_definite() {
    // A refused connection and a 503 `unavailable` were not applied.
    let (busy, _) = fake_node(Fake { fail_with: Some((503, "unavailable")), ..Fake::default() }).await;
    let (other, _) = fake_node(Fake { refuse_finish: true, ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![dead_url().await, busy, other])).unwrap();
    let r = client.fail(&job("3"), "boom", true, &[]).await.unwrap();
    assert_eq!(r, Finished::LeaseLost);
    // 503 outcome_unknown may have been applied.
    let (unknown, _) = fake_node(Fake { fail_with: Some((503, "outcome_unknown")), ..Fake::default() }).await;
    let (other, _) = fake_node(Fake { refuse_finish: true, ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![unknown, other])).unwrap();
    assert_eq!(client.complete(&job("3"), None, &[]).await.unwrap(), Finished::MaybeApplied);
}

#[tokio::test]
async fn runtime_heartbeat_carries_an_increasing_seq_and_reads_desired_state() {
    let (url, s) = fake_node(Fake { desired: "draining", ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![url])).unwrap();
    let d1 = client.heartbeat("running", &Default::default()).await.unwrap();
    client.heartbeat("running", &Default::default()).await.unwrap();
    assert_eq!(d1.state, "draining");
    assert!(!d1.may_claim());
    let seen = s.lock().unwrap().seen.clone();
    let seqs: Vec<u64> = seen.iter().map(|(_, b)| b["seq"].as_u64().unwrap()).collect();
    assert!(seqs[1] > seqs[0], "{seqs:?}");
    assert_eq!(seen[0].1["worker_id"], "w-1");
}

/// Run the loop until `until` holds or 10 s pass, then shut it down.
async fn run_until(
    client: JobsClient,
    handler_ms: u64,
    fail: bool,
    until: impl Fn(&RunStats) -> bool,
) -> Arc<RunStats> {
    let client = Arc::new(client);
    let stats = Arc::new(RunStats::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(client.run(
        move |job, ctx| async move {
            for i in 0..3 {
                ctx.log(&format!("{} line {i}", job.job_id));
            }
            ctx.progress("half way");
            tokio::time::sleep(Duration::from_millis(handler_ms)).await;
            if fail {
                Err(JobFailure { error: "exit 1".into(), retryable: true })
            } else {
                Ok(Some(json!({"ok": job.job_id})))
            }
        },
        stats.clone(),
        async move {
            let _ = rx.await;
        },
    ));
    let start = std::time::Instant::now();
    while !until(&stats) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("run stops after shutdown").unwrap();
    stats
}

#[tokio::test]
async fn run_claims_renews_with_logs_and_completes() {
    let (url, s) = fake_node(Fake { desired: "running", queue: vec![job("1"), job("2")], ..Fake::default() }).await;
    let mut cfg = config(vec![url]);
    cfg.concurrency = 2;
    let stats =
        run_until(JobsClient::new(cfg).unwrap(), 250, false, |st| st.succeeded.load(Ordering::Relaxed) == 2).await;
    assert_eq!(stats.snapshot().succeeded, 2);
    assert_eq!(stats.snapshot().claimed, 2);
    let seen = s.lock().unwrap().seen.clone();
    // One claim took both jobs (two free slots).
    let first_claim = seen.iter().find(|(p, _)| p == "/internal/worker/claim").unwrap();
    assert_eq!(first_claim.1["max_jobs"], 2);
    let renewals: Vec<&Value> =
        seen.iter().filter(|(p, b)| p == "/internal/worker/heartbeat" && b["job_id"] == "1").map(|(_, b)| b).collect();
    assert!(!renewals.is_empty(), "a 250 ms job renews every 100 ms");
    assert_eq!(renewals[0]["logs"], json!(["1 line 0", "1 line 1", "1 line 2"]));
    assert_eq!(renewals[0]["progress"], "half way");
    let complete = seen.iter().find(|(p, b)| p == "/internal/worker/complete" && b["job_id"] == "1").unwrap();
    assert_eq!(complete.1["result"], json!({"ok": "1"}));
    assert_eq!(complete.1["logs"], json!([]), "the lines went with the renewal");
}

#[tokio::test]
async fn a_failing_handler_fails_the_job_with_its_logs() {
    let (url, s) = fake_node(Fake { desired: "running", queue: vec![job("5")], ..Fake::default() }).await;
    let stats =
        run_until(JobsClient::new(config(vec![url])).unwrap(), 0, true, |st| st.failed.load(Ordering::Relaxed) == 1)
            .await;
    assert_eq!(stats.snapshot().failed, 1);
    let seen = s.lock().unwrap().seen.clone();
    let fail = seen.iter().find(|(p, _)| p == "/internal/worker/fail").unwrap();
    assert_eq!(fail.1["retryable"], true);
    assert_eq!(fail.1["error"], "exit 1");
    assert_eq!(fail.1["logs"], json!(["5 line 0", "5 line 1", "5 line 2"]));
}

#[tokio::test]
async fn a_lost_lease_stops_the_handler_and_nothing_is_reported() {
    let (url, s) =
        fake_node(Fake { desired: "running", queue: vec![job("4")], lose_leases: true, ..Fake::default() }).await;
    let stats = run_until(JobsClient::new(config(vec![url])).unwrap(), 5_000, false, |st| {
        st.lease_lost.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(stats.snapshot().lease_lost, 1);
    assert_eq!(stats.snapshot().succeeded, 0);
    assert_eq!(count(&s, "/internal/worker/complete"), 0, "a handler whose lease is gone reports nothing");
}

#[tokio::test]
async fn a_lease_not_renewed_within_its_ttl_is_given_up() {
    // Every renewal times out on every try: after the 2 s TTL the job is
    // dropped as lost, although no node ever said so.
    let (url, s) =
        fake_node(Fake { desired: "running", queue: vec![job("11")], stall_renewals: true, ..Fake::default() }).await;
    let t0 = std::time::Instant::now();
    let stats = run_until(JobsClient::new(config(vec![url])).unwrap(), 20_000, false, |st| {
        st.lease_lost.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(stats.snapshot().lease_lost, 1);
    assert!(t0.elapsed() < Duration::from_secs(5), "given up at the TTL, not after every retry: {:?}", t0.elapsed());
    assert_eq!(count(&s, "/internal/worker/complete"), 0);
}

#[tokio::test]
async fn no_claims_while_desired_state_is_not_running() {
    let (url, s) = fake_node(Fake { desired: "paused", queue: vec![job("8")], ..Fake::default() }).await;
    let client = JobsClient::new(config(vec![url])).unwrap();
    // After 500 ms of pause the operator resumes the worker.
    let claims_while_paused = Arc::new(AtomicU64::new(u64::MAX));
    let (s2, seen_paused) = (s.clone(), claims_while_paused.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut f = s2.lock().unwrap();
        let claims = f.seen.iter().filter(|(p, _)| p == "/internal/worker/claim").count();
        seen_paused.store(claims as u64, Ordering::Relaxed);
        assert!(f.seen.iter().filter(|(p, _)| p == "/api/workers/heartbeat").count() >= 3, "it kept heartbeating");
        f.desired = "running";
    });
    let stats = run_until(client, 0, false, |st| st.succeeded.load(Ordering::Relaxed) == 1).await.snapshot();
    assert_eq!(claims_while_paused.load(Ordering::Relaxed), 0, "no claim while paused");
    assert_eq!(stats.succeeded, 1, "claims resumed with the desired state");
}

#[tokio::test]
async fn the_server_log_cap_stops_further_lines() {
    let (url, s) =
        fake_node(Fake { desired: "running", queue: vec![job("6")], accept_logs: Some(1), ..Fake::default() }).await;
    run_until(JobsClient::new(config(vec![url])).unwrap(), 250, false, |st| st.succeeded.load(Ordering::Relaxed) == 1)
        .await;
    let seen = s.lock().unwrap().seen.clone();
    let sent: usize = seen
        .iter()
        .filter(|(p, _)| p.starts_with("/internal/worker/") && !p.ends_with("claim"))
        .map(|(_, b)| b["logs"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(sent, 3, "one batch of three; nothing after the server took only one");
}
