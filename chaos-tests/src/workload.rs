//! A bounded workload that records everything the cluster acknowledged:
//! simulated workers heartbeating a strictly increasing `seq` (the ordering
//! field, mirrored in `metrics.seq` where the checks read it) to random nodes, and operators scaling pools with increasing counts and
//! quarantining/unquarantining workers with a unique reason per action.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

/// The nodes clients may talk to: `(node id, base url)`; tests swap entries
/// when membership changes.
pub type Targets = Arc<Mutex<Vec<(u64, String)>>>;

/// Pool the workload's workers heartbeat into.
pub const POOL: &str = "chaos";

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Threads sending heartbeats, each for `workers_per_thread` workers.
    pub heartbeat_threads: usize,
    pub workers_per_thread: usize,
    /// Threads sending operator actions (pool scale, quarantine toggles).
    pub operator_threads: usize,
    /// Pause between two requests of one thread.
    pub think: Duration,
    /// Hard bound on the run, whatever the test does.
    pub max: Duration,
    /// How long a client waits for an answer before it gives up.
    pub client_timeout: Duration,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            heartbeat_threads: 4,
            workers_per_thread: 4,
            operator_threads: 2,
            think: Duration::from_millis(5),
            max: Duration::from_secs(300),
            client_timeout: Duration::from_secs(4),
        }
    }
}

/// One acknowledged request.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub node: u64,
    pub start: Instant,
    pub end: Instant,
}

/// What the workload saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Highest acknowledged / highest sent heartbeat seq per worker.
    pub hb_acked: BTreeMap<String, u64>,
    pub hb_sent: BTreeMap<String, u64>,
    /// Highest acknowledged / highest sent desired count per pool.
    pub pool_acked: BTreeMap<String, u64>,
    pub pool_sent: BTreeMap<String, u64>,
    /// Acknowledged quarantine toggles: (worker, unique reason).
    pub actions_acked: Vec<(String, String)>,
    /// Acknowledged requests by kind, and failures by `kind/error`.
    pub ok: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<String, u64>,
    pub acks: Vec<Ack>,
}

impl Record {
    pub fn acked_total(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Time from `t` to the first acknowledgement of a request sent at or after `t`.
    pub fn first_ack_after(&self, t: Instant) -> Option<Duration> {
        self.acks.iter().filter(|a| a.start >= t).map(|a| a.end.duration_since(t)).min()
    }
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .expect("http client")
}

fn pick(targets: &Targets) -> Option<(u64, String)> {
    let t = targets.lock().expect("targets");
    (!t.is_empty()).then(|| t[rand::thread_rng().gen_range(0..t.len())].clone())
}

/// Worker `i` of heartbeat thread `k`.
pub fn worker_id(k: usize, i: usize) -> String {
    format!("chaos-w-{k}-{i}")
}

/// Send one request; `Ok(answer)` on 2xx, else the error label.
fn send(http: &reqwest::blocking::Client, url: &str, body: &Value) -> Result<Value, String> {
    match http.post(url).bearer_auth(crate::cluster::TOKEN).json(body).send() {
        Ok(res) if res.status().is_success() => Ok(res.json().unwrap_or(Value::Null)),
        Ok(res) => {
            let status = res.status().as_u16();
            let code = res.json::<Value>().ok().and_then(|v| v["error"]["code"].as_str().map(String::from));
            Err(format!("{status}:{}", code.unwrap_or_else(|| "http".into())))
        }
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) if e.is_connect() => Err("connect".into()),
        Err(_) => Err("io".into()),
    }
}

impl Workload {
    pub fn start(targets: Targets, spec: Spec) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let deadline = Instant::now() + spec.max;
        let mut threads = Vec::new();
        for k in 0..spec.heartbeat_threads {
            let (stop, record, targets, spec) = (stop.clone(), record.clone(), targets.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                let http = client(spec.client_timeout);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    seq += 1;
                    for i in 0..spec.workers_per_thread {
                        let Some((node, url)) = pick(&targets) else { break };
                        let id = worker_id(k, i);
                        let body = json!({"worker_id": id, "host": "chaos-host", "ip": "127.0.0.1", "pool": POOL,
                            "version": "1", "status": "running", "process_state": "running",
                            "seq": seq, "metrics": {"seq": seq, "processed": seq, "errors": 0, "in_flight": 0}});
                        record.lock().expect("record").hb_sent.insert(id.clone(), seq);
                        let start = Instant::now();
                        let res = send(&http, &format!("{url}/api/workers/heartbeat"), &body);
                        let mut r = record.lock().expect("record");
                        match res {
                            Ok(_) => {
                                *r.ok.entry("heartbeat").or_default() += 1;
                                r.hb_acked.insert(id, seq);
                                r.acks.push(Ack { node, start, end: Instant::now() });
                            }
                            Err(e) => *r.errors.entry(format!("heartbeat/{e}")).or_default() += 1,
                        }
                    }
                    std::thread::sleep(spec.think);
                }
            }));
        }
        for k in 0..spec.operator_threads {
            let (stop, record, targets, spec) = (stop.clone(), record.clone(), targets.clone(), spec.clone());
            threads.push(std::thread::spawn(move || {
                let http = client(spec.client_timeout);
                let pool = format!("chaos-op-{k}");
                let mut n = 0u64;
                // Believed quarantine state of each worker this thread toggles.
                let mut quarantined: BTreeMap<String, bool> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    n += 1;
                    let Some((node, url)) = pick(&targets) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let start = Instant::now();
                    if n % 2 == 1 {
                        record.lock().expect("record").pool_sent.insert(pool.clone(), n);
                        let res = send(&http, &format!("{url}/api/pools/{pool}/scale"), &json!({"desired_count": n}));
                        let mut r = record.lock().expect("record");
                        match res {
                            Ok(_) => {
                                *r.ok.entry("scale").or_default() += 1;
                                r.pool_acked.insert(pool.clone(), n);
                                r.acks.push(Ack { node, start, end: Instant::now() });
                            }
                            Err(e) => *r.errors.entry(format!("scale/{e}")).or_default() += 1,
                        }
                    } else {
                        // Toggle a worker of heartbeat thread k (round robin over its workers).
                        let worker =
                            worker_id(k % spec.heartbeat_threads.max(1), (n as usize / 2) % spec.workers_per_thread);
                        let q = quarantined.get(&worker).copied().unwrap_or(false);
                        let action = if q { "unquarantine" } else { "quarantine" };
                        let reason = format!("chaos-{k}-{n}");
                        let res =
                            send(&http, &format!("{url}/api/workers/{worker}/{action}"), &json!({"reason": reason}));
                        let mut r = record.lock().expect("record");
                        match res {
                            Ok(_) => {
                                *r.ok.entry("control").or_default() += 1;
                                r.actions_acked.push((worker.clone(), reason));
                                r.acks.push(Ack { node, start, end: Instant::now() });
                                quarantined.insert(worker, !q);
                            }
                            // Unknown worker yet (its first heartbeat not in): try again later.
                            Err(e) if e.starts_with("404") => *r.errors.entry(format!("control/{e}")).or_default() += 1,
                            // An earlier unanswered toggle did commit: our belief was stale.
                            Err(e) if e.starts_with("409") => {
                                *r.errors.entry(format!("control/{e}")).or_default() += 1;
                                quarantined.insert(worker, !q);
                            }
                            Err(e) => *r.errors.entry(format!("control/{e}")).or_default() += 1,
                        }
                    }
                    std::thread::sleep(spec.think * 4);
                }
            }));
        }
        Workload { stop, record, threads }
    }

    pub fn snapshot(&self) -> Record {
        self.record.lock().expect("record").clone()
    }

    pub fn finish(mut self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Workload {
    /// A failed test must not leave load running against dead ports.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
