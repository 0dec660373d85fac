//! A bounded write workload: K clients, each writing a strictly increasing
//! counter (a pool's desired count) to random live nodes, recording every
//! value the cluster acknowledged and every error by kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

/// What the workload saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Highest acknowledged counter per client.
    pub acked: BTreeMap<usize, u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// Acknowledgement times, for failover measurement.
    pub ack_times: Vec<Instant>,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    /// Start `clients` writers against the node URLs in `targets` (re-read on
    /// every request so a test can swap the set). Stops after `max` at most.
    pub fn start(targets: Arc<Mutex<Vec<String>>>, clients: usize, max: Duration) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let deadline = Instant::now() + max;
        let threads = (0..clients)
            .map(|k| {
                let (stop, record, targets) = (stop.clone(), record.clone(), targets.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(3))
                        .connect_timeout(Duration::from_millis(300))
                        .build()
                        .expect("http client");
                    let mut counter = 0u64;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && counter < 90_000 {
                        counter += 1;
                        let urls = targets.lock().expect("targets").clone();
                        if urls.is_empty() {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        let url = &urls[rand::thread_rng().gen_range(0..urls.len())];
                        let res = http
                            .post(format!("{url}/api/pools/w-{k}/scale"))
                            .bearer_auth(crate::cluster::TOKEN)
                            .json(&json!({"desired_count": counter}))
                            .send();
                        let mut r = record.lock().expect("record");
                        match res {
                            Ok(res) if res.status().is_success() => {
                                r.ok += 1;
                                r.acked.insert(k, counter);
                                r.ack_times.push(Instant::now());
                            }
                            Ok(res) => {
                                let code = res.json::<serde_json::Value>().ok().and_then(|v| v["error"]["code"].as_str().map(String::from));
                                *r.errors.entry(code.unwrap_or_else(|| "http".into())).or_default() += 1;
                            }
                            Err(e) => {
                                let kind = if e.is_timeout() { "timeout" } else if e.is_connect() { "connect" } else { "io" };
                                *r.errors.entry(kind.into()).or_default() += 1;
                            }
                        }
                        drop(r);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Workload { stop, record, threads }
    }

    pub fn snapshot(&self) -> Record {
        self.record.lock().expect("record").clone()
    }

    pub fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let r = self.record.lock().expect("record").clone();
        r
    }
}

/// First acknowledgement at or after `t`, as a duration since `t`.
pub fn first_ack_after(r: &Record, t: Instant) -> Option<Duration> {
    r.ack_times.iter().filter(|a| **a >= t).min().map(|a| a.duration_since(t))
}
