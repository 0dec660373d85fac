//! Simulated workers for `engine-room dev`: they heartbeat to random nodes with
//! varied metrics, some error a lot, some fall silent for a while, and all obey
//! the desired state they are given back. Simulated job workers (the
//! reference client) and a producer make jobs flow, fail, retry and die.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

/// Start `count` simulated workers against `urls` until the process ends.
pub fn spawn(count: usize, urls: Vec<String>, token: String) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        // The dev cluster is on this host; a proxy in the env is not for it.
        .no_proxy()
        .build()
        .expect("reqwest client with static options always builds");
    for n in 0..count {
        let (http, urls, token) = (http.clone(), urls.clone(), token.clone());
        tokio::spawn(async move { worker(n, http, urls, token).await });
    }
}

async fn worker(n: usize, http: reqwest::Client, urls: Vec<String>, token: String) {
    let id = format!("sim-{n:03}");
    let pool = ["default", "eu-west", "us-east"][n % 3];
    let error_prone = n % 7 == 3;
    let flaky = n % 11 == 5;
    let (mut processed, mut errors, mut desired) = (0u64, 0u64, "running".to_string());
    let mut beats = 0u64;
    loop {
        let pause_ms = { rand::thread_rng().gen_range(2_000..4_000) };
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        beats += 1;
        // Flaky workers go quiet for a minute every few minutes.
        if flaky && (beats / 20) % 3 == 2 {
            continue;
        }
        let working = desired == "running";
        let (status, in_flight) = match desired.as_str() {
            "running" => ("running", rand::thread_rng().gen_range(1..8)),
            "draining" => ("draining", 0),
            "paused" => ("paused", 0),
            _ => ("stopped", 0),
        };
        if working {
            let done: u64 = rand::thread_rng().gen_range(20..60);
            let err_rate = if error_prone { 0.25 } else { 0.02 };
            let failed = (done as f64 * err_rate * rand::thread_rng().gen_range(0.5..1.5)) as u64;
            processed += done;
            errors += failed;
        }
        let body = heartbeat(&id, n, pool, status, processed, errors, in_flight);
        let url = &urls[rand::thread_rng().gen_range(0..urls.len())];
        let res = http.post(format!("{url}/api/workers/heartbeat")).bearer_auth(&token).json(&body).send().await;
        if let Ok(res) = res {
            if let Ok(answer) = res.json::<Value>().await {
                if let Some(d) = answer.get("desired_state").and_then(Value::as_str) {
                    desired = d.to_string();
                }
            }
        }
    }
}

fn heartbeat(id: &str, n: usize, pool: &str, status: &str, processed: u64, errors: u64, in_flight: u64) -> Value {
    let ok = processed.saturating_sub(errors);
    json!({
        "worker_id": id,
        "host": format!("vps-{}", n / 4 + 1),
        "ip": format!("127.0.1.{}", n % 250 + 1),
        "pool": pool,
        "version": if n.is_multiple_of(5) { "1.4.1" } else { "1.4.2" },
        "status": status,
        "process_state": if status == "stopped" { "stopped" } else { "running" },
        "metrics": {"processed": processed, "errors": errors, "in_flight": in_flight},
        "stage_metrics": {"dns": {"ok": ok, "fail": errors / 3}, "smtp": {"ok": ok, "fail": errors - errors / 3}},
        "smtp_metrics": {"2xx": ok * 3 / 4, "4xx": ok / 6, "5xx": errors, "timeout": errors / 5},
        "provider_metrics": {
            "gmail": {"accepted": ok / 2, "rejected": errors / 2, "tempfail": ok / 20, "unknown": ok / 50},
            "outlook": {"accepted": ok / 3, "rejected": errors / 3, "tempfail": ok / 15, "unknown": ok / 40}
        },
        "agent": "engine-room-dev-sim",
        // Ordering field: wall-clock milliseconds keep rising across restarts.
        "seq": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    })
}

/// (queue, kind, run ms range, chance of a retryable failure, chance of a
/// permanent one).
type JobKind = (&'static str, &'static str, (u64, u64), f64, f64);

/// Queues and kinds the dev producer enqueues, with how their simulated
/// handler behaves.
const JOB_MIX: &[JobKind] = &[
    ("email", "email.send", (200, 1_500), 0.10, 0.0),
    ("reports", "report.build", (3_000, 8_000), 0.05, 0.0),
    ("images", "image.resize", (500, 2_000), 0.05, 0.05),
    // Always fails, retryably: retries with backoff, then dead.
    ("email", "email.bounce", (100, 300), 1.0, 0.0),
];

/// Start `workers` simulated job workers (the reference client's run loop)
/// and a producer enqueueing about `per_minute` jobs, so a newcomer sees jobs
/// flow, fail, retry and die.
pub fn spawn_jobs(workers: usize, per_minute: u32, urls: Vec<String>, token: String) {
    let queues: Vec<String> = ["email", "reports", "images"].map(String::from).to_vec();
    for n in 0..workers {
        let mut cfg =
            jobs_client::WorkerConfig::new(urls.clone(), token.clone(), format!("sim-job-{n:02}"), queues.clone());
        cfg.pool = Some("jobs".into());
        cfg.concurrency = 4;
        cfg.renew_every = Duration::from_secs(2);
        cfg.heartbeat_every = Duration::from_secs(5);
        let client = match jobs_client::JobsClient::new(cfg) {
            Ok(c) => std::sync::Arc::new(c),
            Err(e) => {
                eprintln!("simulated job worker {n}: {e}");
                return;
            }
        };
        let stats = std::sync::Arc::new(jobs_client::RunStats::default());
        tokio::spawn(client.run(simulated_job, stats, std::future::pending()));
    }
    if per_minute == 0 {
        return;
    }
    let mut cfg = jobs_client::WorkerConfig::new(urls, token, "sim-producer".into(), queues);
    cfg.retry.max_tries = 3;
    let Ok(producer) = jobs_client::JobsClient::new(cfg) else { return };
    let every = Duration::from_millis(60_000 / per_minute.max(1) as u64);
    tokio::spawn(async move {
        let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for i in 0u64.. {
            tokio::time::sleep(every).await;
            // Half email, then images, reports, and one in ten bound to die.
            let pick = match rand::thread_rng().gen_range(0..100) {
                0..50 => 0,
                50..65 => 1,
                65..90 => 2,
                _ => 3,
            };
            let (queue, kind, ..) = JOB_MIX[pick];
            let job = jobs_client::NewJob {
                queue: queue.into(),
                kind: kind.into(),
                payload: json!({"n": i, "to": format!("user{}@example.test", i % 97)}),
                priority: Some(if i % 10 == 0 { 5 } else { 0 }),
                idempotency_key: Some(format!("dev-{run}-{i}")),
                max_attempts: Some(3),
                run_after: None,
            };
            // A refused or unanswered enqueue is dropped; the next one follows.
            let _ = producer.enqueue(&job).await;
        }
    });
}

/// A simulated job: runs for a while, logs, reports progress, and fails as
/// its kind's mix says.
async fn simulated_job(
    job: jobs_client::ClaimedJob,
    ctx: jobs_client::JobContext,
) -> Result<Option<Value>, jobs_client::JobFailure> {
    let (_, _, (lo, hi), retry_p, fatal_p) =
        JOB_MIX.iter().find(|m| m.1 == job.kind).copied().unwrap_or(("", "", (200, 1_000), 0.05, 0.0));
    let (ms, roll) = {
        let mut rng = rand::thread_rng();
        (rng.gen_range(lo..hi), rng.gen::<f64>())
    };
    ctx.log(&format!("attempt {} of {}: {} {}", job.attempt, job.max_attempts, job.kind, job.payload));
    for step in 1..=4u64 {
        tokio::time::sleep(Duration::from_millis(ms / 4)).await;
        ctx.progress(&format!("{}%", step * 25));
        ctx.log(&format!("step {step} of 4 done"));
    }
    if roll < fatal_p {
        return Err(jobs_client::JobFailure { error: "payload rejected (simulated)".into(), retryable: false });
    }
    if roll < fatal_p + retry_p {
        return Err(jobs_client::JobFailure { error: "upstream timed out (simulated)".into(), retryable: true });
    }
    Ok(Some(json!({"took_ms": ms})))
}
