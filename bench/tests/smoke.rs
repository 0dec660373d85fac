//! CI smoke: the generator runs a tiny bounded load against the no-op server,
//! in-process and through the `er-bench` binary, and sees answers, no errors.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bench::{Endpoint, LoadOptions, Summary, Target};

fn options(url: &str, rate: Option<f64>) -> LoadOptions {
    LoadOptions {
        target: Target::Noop,
        endpoints: vec![Endpoint::parse(url).unwrap()],
        token: None,
        workers: 50,
        connections: 4,
        rate,
        duration: Duration::from_secs(5),
        requests: Some(400),
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(2),
        first_worker: 0,
        progress: false,
        tls: None,
    }
}

#[tokio::test]
async fn in_process_closed_loop_and_fixed_rate() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(bench::noop::serve(listener));

    let s = bench::run(options(&url, None), Arc::new(AtomicBool::new(false))).await.unwrap();
    assert_eq!((s.ok, s.errors_total), (400, 0), "{s:?}");
    assert!(s.throughput_rps > 0.0 && s.latency_ms.p99 > 0.0, "{s:?}");

    let s = bench::run(options(&url, Some(400.0)), Arc::new(AtomicBool::new(false))).await.unwrap();
    assert_eq!((s.ok, s.errors_total, s.mode.as_str()), (400, 0, "fixed-rate"), "{s:?}");
    assert!(s.measured_s > 0.8, "400 requests at 400/s take about a second: {s:?}");
    server.abort();
}

/// Kills the child on drop, so a failed assertion leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn binary_reports_json() {
    let exe = env!("CARGO_BIN_EXE_er-bench");
    let mut server = Child(
        Command::new(exe).args(["noop-server", "--threads", "1"]).stdout(Stdio::piped()).spawn().expect("start noop"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").expect("address line").to_string();

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let status = Command::new(exe)
        .args(["run", "--target", "noop", "--url", &url, "-c", "2", "--workers", "10", "--requests", "200"])
        .args(["--duration", "5", "--quiet", "--json"])
        .arg(&json)
        .status()
        .unwrap();
    assert!(status.success());
    let s: Summary = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((s.ok, s.errors_total), (200, 0), "{s:?}");
    assert!(s.throughput_rps > 0.0);
}
