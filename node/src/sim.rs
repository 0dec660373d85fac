//! Simulated workers for `engine-room dev`: they heartbeat to random nodes with
//! varied metrics, some error a lot, some fall silent for a while, and all obey
//! the desired state they are given back.

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
        "version": if n % 5 == 0 { "1.4.1" } else { "1.4.2" },
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
