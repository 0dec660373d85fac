//! Issue 20, point 10: jobs across faults. Producers enqueue with
//! idempotency keys, workers claim, renew and complete through the reference
//! client (`jobs-client`) against random nodes, while the leader is killed
//! again and again and a minority is partitioned. Afterwards: every
//! acknowledged enqueue exists exactly once; every job a worker completed
//! with an accepted answer is `succeeded`, by that completion (its lease
//! token is in the result); no completion with an outdated token was
//! accepted (one accepted completion per job); and once the workers have
//! drained the queue no job is lost, left queued or stuck `running`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobs_client::{ClaimedJob, Finished, JobsClient, NewJob, RetryPolicy, WorkerConfig};
use rand::seq::SliceRandom;
use serde_json::{json, Value};

use crate::cluster::{TestCluster, TOKEN};
use crate::scenarios::{Params, Report};

/// The queue the scenario uses.
pub const QUEUE: &str = "chaos-jobs";

/// What producers and workers saw.
#[derive(Debug, Default, Clone)]
pub struct JobsRecord {
    /// Acknowledged enqueues: idempotency key → job id.
    pub enqueued: BTreeMap<String, String>,
    /// When each acknowledged enqueue call was sent and answered.
    pub enqueue_acks: Vec<(Instant, Instant)>,
    /// Accepted completions: job id → lease tokens whose completion was accepted.
    pub completed: BTreeMap<String, Vec<String>>,
    /// Completions whose outcome the client could not know.
    pub maybe_completed: BTreeSet<String>,
    /// Retryable failures accepted (the first attempt of every tenth job).
    pub failed_once: BTreeSet<String>,
    pub lease_lost: u64,
    /// Completions sent after sleeping past the lease (every 25th job's
    /// first attempt), and how many of them were accepted (must be none).
    pub stale_sent: u64,
    pub stale_accepted: Vec<String>,
    pub claims: u64,
    pub errors: BTreeMap<String, u64>,
}

struct JobsLoad {
    stop_producing: Arc<AtomicBool>,
    stop_working: Arc<AtomicBool>,
    record: Arc<Mutex<JobsRecord>>,
    producers: Vec<std::thread::JoinHandle<()>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// A client config over the nodes in a random order (so calls spread over nodes).
fn config(urls: &[String], worker: &str) -> WorkerConfig {
    let mut nodes = urls.to_vec();
    nodes.shuffle(&mut rand::thread_rng());
    let mut cfg = WorkerConfig::new(nodes, TOKEN.to_string(), worker.to_string(), vec![QUEUE.to_string()]);
    cfg.concurrency = 2;
    cfg.wait_ms = 500;
    cfg.renew_every = Duration::from_millis(800);
    cfg.lease_ttl = Duration::from_secs(4);
    cfg.timeout = Duration::from_secs(4);
    cfg.retry = RetryPolicy { max_tries: 8, ..RetryPolicy::default() };
    cfg
}

fn count(rec: &Mutex<JobsRecord>, what: String) {
    *rec.lock().expect("record").errors.entry(what).or_default() += 1;
}

impl JobsLoad {
    fn start(urls: Vec<String>, producers: usize, workers: usize, max: Duration) -> JobsLoad {
        let stop_producing = Arc::new(AtomicBool::new(false));
        let stop_working = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(JobsRecord::default()));
        // Both are stopped by the scenario; these bounds are a safety net:
        // producers stop at `max` at the latest, workers after the longest
        // drain the scenario allows.
        let deadline = Instant::now() + max;
        let work_deadline = deadline + Duration::from_secs(660);
        let mut load = JobsLoad {
            stop_producing: stop_producing.clone(),
            stop_working: stop_working.clone(),
            record: record.clone(),
            producers: Vec::new(),
            workers: Vec::new(),
        };
        for k in 0..producers {
            let (stop, record, urls) = (stop_producing.clone(), record.clone(), urls.clone());
            load.producers.push(std::thread::spawn(move || {
                let rt = runtime();
                let client = JobsClient::new(config(&urls, &format!("chaos-producer-{k}"))).expect("client");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    n += 1;
                    let key = format!("chaos-{k}-{n}");
                    let job = NewJob {
                        queue: QUEUE.into(),
                        kind: "chaos".into(),
                        payload: json!({"key": key, "fail_first": n % 10 == 0, "stall_first": n % 25 == 7}),
                        idempotency_key: Some(key.clone()),
                        max_attempts: Some(25),
                        ..NewJob::default()
                    };
                    // A key is retried until it is acknowledged (an unknown
                    // outcome is resolved by the key), within the run.
                    loop {
                        let sent = Instant::now();
                        match rt.block_on(client.enqueue(&job)) {
                            Ok(v) => {
                                let id = v["job_id"].as_str().unwrap_or_default().to_string();
                                let mut r = record.lock().expect("record");
                                r.enqueued.insert(key.clone(), id);
                                r.enqueue_acks.push((sent, Instant::now()));
                                break;
                            }
                            Err(e) => count(&record, format!("enqueue/{}", short(&e.to_string()))),
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // Below what the workers finish, so the queue stays short.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }));
        }
        for k in 0..workers {
            let (stop, record, urls) = (stop_working.clone(), record.clone(), urls.clone());
            load.workers.push(std::thread::spawn(move || {
                let rt = runtime();
                let worker = format!("chaos-jobworker-{k}");
                let client = JobsClient::new(config(&urls, &worker)).expect("client");
                while !stop.load(Ordering::Relaxed) && Instant::now() < work_deadline {
                    // One job at a time: a stalled job must not hold another past its lease.
                    let jobs = match rt.block_on(client.claim(1, 500)) {
                        Ok(jobs) => jobs,
                        Err(e) => {
                            count(&record, format!("claim/{}", short(&e.to_string())));
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    record.lock().expect("record").claims += jobs.len() as u64;
                    for job in jobs {
                        work(&rt, &client, &job, &record);
                    }
                }
            }));
        }
        load
    }

    fn snapshot(&self) -> JobsRecord {
        self.record.lock().expect("record").clone()
    }

    fn stop_producers(&mut self) {
        self.stop_producing.store(true, Ordering::Relaxed);
        for t in self.producers.drain(..) {
            let _ = t.join();
        }
    }

    fn finish(mut self) -> JobsRecord {
        self.stop_producers();
        self.stop_working.store(true, Ordering::Relaxed);
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for JobsLoad {
    fn drop(&mut self) {
        self.stop_producing.store(true, Ordering::Relaxed);
        self.stop_working.store(true, Ordering::Relaxed);
    }
}

fn short(e: &str) -> String {
    e.split(':').next().unwrap_or(e).chars().take(40).collect()
}

/// Run one claimed job: a renewal with a log line, then complete (or, on
/// the first attempt of a `fail_first` job, a retryable failure).
fn work(rt: &tokio::runtime::Runtime, client: &JobsClient, job: &ClaimedJob, record: &Mutex<JobsRecord>) {
    let line = format!("worker {} took attempt {}", client.config().worker_id, job.attempt);
    match rt.block_on(client.renew(job, Some("half"), &[line])) {
        Ok(_) => {}
        Err(e) if e.is_lease_lost() => {
            record.lock().expect("record").lease_lost += 1;
            return;
        }
        Err(e) => count(record, format!("renew/{}", short(&e.to_string()))),
    }
    if job.payload["fail_first"] == true && job.attempt <= 1 {
        match rt.block_on(client.fail(job, "first attempts of this job fail", true, &[])) {
            Ok(Finished::Accepted { .. }) => {
                record.lock().expect("record").failed_once.insert(job.job_id.clone());
            }
            Ok(_) => record.lock().expect("record").lease_lost += 1,
            Err(e) => count(record, format!("fail/{}", short(&e.to_string()))),
        }
        return;
    }
    if job.payload["stall_first"] == true && job.attempt <= 1 {
        // A worker that stalls past its lease (4 s) without renewing: the
        // reaper re-queues the job, and this late completion must be refused.
        std::thread::sleep(Duration::from_secs(6));
        let result = json!({"worker": client.config().worker_id, "lease_token": job.lease_token, "stale": true});
        record.lock().expect("record").stale_sent += 1;
        match rt.block_on(client.complete(job, Some(&result), &[])) {
            Ok(Finished::Accepted { .. }) => {
                record.lock().expect("record").stale_accepted.push(format!("{} ({})", job.job_id, job.lease_token))
            }
            Ok(_) => record.lock().expect("record").lease_lost += 1,
            Err(e) => count(record, format!("stale complete/{}", short(&e.to_string()))),
        }
        return;
    }
    let result = json!({"worker": client.config().worker_id, "lease_token": job.lease_token});
    match rt.block_on(client.complete(job, Some(&result), &[])) {
        Ok(Finished::Accepted { .. }) => record
            .lock()
            .expect("record")
            .completed
            .entry(job.job_id.clone())
            .or_default()
            .push(job.lease_token.clone()),
        Ok(Finished::LeaseLost) => record.lock().expect("record").lease_lost += 1,
        Ok(Finished::MaybeApplied) => {
            record.lock().expect("record").maybe_completed.insert(job.job_id.clone());
        }
        Err(e) => {
            if e.maybe_applied() {
                record.lock().expect("record").maybe_completed.insert(job.job_id.clone());
            }
            count(record, format!("complete/{}", short(&e.to_string())))
        }
    }
}

/// Every job of the scenario's queue, read linearizably through node `id`.
fn all_jobs(c: &TestCluster, id: u64) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            Some(cur) => format!("/api/v1/jobs?queue={QUEUE}&limit=500&consistent=true&cursor={cur}"),
            None => format!("/api/v1/jobs?queue={QUEUE}&limit=500&consistent=true"),
        };
        let (code, v) = c.get(id, &path);
        if code != 200 {
            return Err(format!("GET {path} on node {id}: {code} {v}"));
        }
        out.extend(v["jobs"].as_array().cloned().unwrap_or_default());
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(out),
        }
    }
    Err("history paging did not end".into())
}

/// Check the record against the jobs in the cluster; a list of violations.
pub fn violations(rec: &JobsRecord, jobs: &[Value], drained: bool) -> Vec<String> {
    let mut v = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for j in jobs {
        if let Some(k) = j["idempotency_key"].as_str() {
            by_key.entry(k).or_default().push(j);
        }
        if let Some(id) = j["job_id"].as_str() {
            by_id.insert(id, j);
        }
    }
    for (k, js) in &by_key {
        if js.len() > 1 {
            v.push(format!("idempotency key {k} has {} jobs", js.len()));
        }
    }
    for (key, id) in &rec.enqueued {
        match by_key.get(key.as_str()).and_then(|js| js.first()) {
            None => v.push(format!("acknowledged enqueue {key} (job {id}) is missing")),
            Some(j) if j["job_id"].as_str() != Some(id) => {
                v.push(format!("enqueue {key} acknowledged job {id}, the cluster holds {}", j["job_id"]))
            }
            Some(_) => {}
        }
    }
    for (id, tokens) in &rec.completed {
        if tokens.len() > 1 {
            v.push(format!("job {id}: {} completions accepted ({tokens:?})", tokens.len()));
        }
        match by_id.get(id.as_str()) {
            None => v.push(format!("completed job {id} is missing")),
            Some(j) => {
                if j["state"] != "succeeded" {
                    v.push(format!("job {id} was completed (accepted) but is {}", j["state"]));
                }
                let by = j["result"]["lease_token"].as_str().unwrap_or_default();
                if !tokens.iter().any(|t| t == by) {
                    v.push(format!("job {id} holds the result of lease {by}, accepted completions were {tokens:?}"));
                }
            }
        }
    }
    for s in &rec.stale_accepted {
        v.push(format!("a completion sent after the lease expired was accepted: job {s}"));
    }
    if drained {
        for j in jobs {
            if j["state"] != "succeeded" {
                v.push(format!("job {} is {} after the queue drained: {j}", j["job_id"], j["state"]));
            }
        }
    }
    v
}

/// The scenario: kill the leader `max(4, leader_kills)` times and cut a
/// minority off once, under job load; then drain and check.
pub fn jobs_under_faults(p: &Params) -> Report {
    let t0 = Instant::now();
    let kills = p.leader_kills.max(4);
    let mut rep =
        Report { name: format!("jobs: leader kill x{kills} + minority partition"), nodes: 3, ..Report::default() };
    let mut c = TestCluster::start(
        3,
        crate::cluster::Options::default()
            .env("WORKER_LEASE_TTL_SECONDS", "4")
            .env("WORKER_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env("LEASE_REAPER_INTERVAL_SECONDS", "1"),
    );
    let leader = c.wait_for_leader(Duration::from_secs(15));
    // Jobs are format-5 commands: the leader raises the format once every
    // voter reports it knows it (every 5 s, and not while a voter is down).
    c.eventually(Duration::from_secs(30), "cluster format 5 (jobs)", || {
        (c.get(leader, "/api/history?entity=cluster:format").1["format_version"].as_u64()? >= 5).then_some(())
    });
    let urls: Vec<String> = c.nodes.keys().map(|id| c.url(*id)).collect();
    // The load is stopped explicitly after the kills; its own bound is only a
    // safety net, so it must outlast every kill (each one: an election, a
    // restart, the settle and fault waits), or a long drill's workers stop
    // before the drain.
    let per_kill = p.settle + p.fault + Duration::from_secs(20);
    let mut load = JobsLoad::start(urls, 3, 4, p.spec.max + per_kill * (kills as u32 + 1));
    std::thread::sleep(p.settle);
    for _ in 0..kills {
        let old = c.wait_for_leader(Duration::from_secs(15));
        let t = Instant::now();
        c.kill(old);
        // Failover: from the kill to the first enqueue sent after it and acknowledged.
        let waited = Instant::now();
        let failover = loop {
            let r = load.snapshot();
            if let Some(d) = r.enqueue_acks.iter().filter(|(sent, _)| *sent >= t).map(|(_, end)| *end - t).min() {
                break d;
            }
            if waited.elapsed() > Duration::from_secs(30) {
                panic!(
                    "no enqueue acknowledged within 30 s of killing leader {old}: {} enqueued, {} claims, {} completed, \
                     {} lease lost, errors {:?}",
                    r.enqueued.len(),
                    r.claims,
                    r.completed.len(),
                    r.lease_lost,
                    r.errors
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        rep.failovers.push(failover);
        std::thread::sleep(p.settle / 2);
        c.run_node(old);
        std::thread::sleep(p.settle / 2);
    }
    let leader = c.wait_for_leader(Duration::from_secs(15));
    let minority = *c.nodes.keys().find(|id| **id != leader).expect("a follower");
    let majority: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != minority).collect();
    let cut = c.cut(&[minority], &majority);
    std::thread::sleep(p.fault);
    drop(cut);
    std::thread::sleep(p.settle);
    // Drain: no more enqueues; the workers finish what is queued (retries and
    // reaped leases included). Bounded by progress rather than a fixed time,
    // since the backlog grows with the number of kills: it fails once no job
    // has finished for 30 s, or after 10 minutes in all.
    load.stop_producers();
    let drain = Instant::now();
    let (mut done_before, mut progress_at) = (0usize, Instant::now());
    loop {
        let jobs = c.leader().and_then(|l| all_jobs(&c, l).ok()).unwrap_or_default();
        if !jobs.is_empty() && jobs.iter().all(|j| j["state"] == "succeeded") {
            break;
        }
        let done = jobs.iter().filter(|j| j["state"] == "succeeded").count();
        if done > done_before {
            (done_before, progress_at) = (done, Instant::now());
        }
        let stalled = progress_at.elapsed() > Duration::from_secs(30);
        if stalled || drain.elapsed() > Duration::from_secs(600) {
            let mut states: BTreeMap<String, u64> = BTreeMap::new();
            for j in &jobs {
                *states.entry(j["state"].to_string()).or_default() += 1;
            }
            let stuck: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "succeeded").take(3).collect();
            let r = load.snapshot();
            panic!(
                "the queue did not drain ({} after {:.0} s): states {states:?}; e.g. {stuck:?}; workers: {} claims, \
                 {} completed, {} lease lost, errors {:?}",
                if stalled { "no job finished for 30 s" } else { "still going" },
                drain.elapsed().as_secs_f64(),
                r.claims,
                r.completed.len(),
                r.lease_lost,
                r.errors
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let rec = load.finish();
    let leader = c.wait_for_leader(Duration::from_secs(15));
    let jobs = all_jobs(&c, leader).expect("jobs through the leader");
    let mut found = violations(&rec, &jobs, true);
    // Every node holds the same jobs.
    let digest = |js: &[Value]| -> Vec<(String, String)> {
        js.iter().map(|j| (j["job_id"].as_str().unwrap_or("").to_string(), j["state"].to_string())).collect()
    };
    for id in c.nodes.keys().copied().collect::<Vec<_>>() {
        match all_jobs(&c, id) {
            Ok(js) if digest(&js) == digest(&jobs) => {}
            Ok(_) => found.push(format!("node {id} holds other jobs than the leader")),
            Err(e) => found.push(e),
        }
    }
    rep.acked = rec.enqueued.len() as u64 + rec.completed.len() as u64;
    rep.acked_by_kind.insert("enqueue".into(), rec.enqueued.len() as u64);
    rep.acked_by_kind.insert("complete".into(), rec.completed.len() as u64);
    rep.errors = rec.errors.clone();
    rep.lost = found.iter().filter(|f| f.contains("missing")).count() as u64;
    rep.notes.push(format!(
        "jobs: {} enqueues acknowledged, {} claims, {} completions accepted, {} maybe-applied, {} retryable failures, \
         {} lease-lost answers ({} completions sent past their lease, {} accepted); {} jobs in the cluster, all \
         succeeded: {}",
        rec.enqueued.len(),
        rec.claims,
        rec.completed.len(),
        rec.maybe_completed.len(),
        rec.failed_once.len(),
        rec.lease_lost,
        rec.stale_sent,
        rec.stale_accepted.len(),
        jobs.len(),
        jobs.iter().all(|j| j["state"] == "succeeded"),
    ));
    rep.notes.push(format!("cut node {minority} from {majority:?} for {:?}", p.fault));
    if rec.stale_sent == 0 {
        found.push("no completion was sent past its lease: fencing was not exercised".into());
    }
    rep.passed = found.is_empty();
    if !found.is_empty() {
        rep.failure = Some(format!("{} violations: {:?}", found.len(), &found[..found.len().min(10)]));
    }
    rep.elapsed = t0.elapsed();
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_catch_each_violation() {
        let job = |id: &str, key: &str, state: &str, token: &str| json!({"job_id": id, "idempotency_key": key, "state": state, "result": {"lease_token": token}});
        let mut rec = JobsRecord::default();
        rec.enqueued.insert("k1".into(), "1".into());
        rec.completed.insert("1".into(), vec!["t1".into()]);
        assert!(violations(&rec, &[job("1", "k1", "succeeded", "t1")], true).is_empty());
        assert_eq!(violations(&rec, &[], true).len(), 2, "missing enqueue and completion");
        assert_eq!(violations(&rec, &[job("1", "k1", "succeeded", "t0")], true).len(), 1, "an outdated lease's result");
        assert_eq!(violations(&rec, &[job("1", "k1", "running", "t1")], true).len(), 2, "not succeeded, not drained");
        let two = [job("1", "k1", "succeeded", "t1"), job("2", "k1", "succeeded", "t2")];
        assert_eq!(violations(&rec, &two, true).len(), 1, "one key, two jobs");
        rec.completed.insert("1".into(), vec!["t1".into(), "t2".into()]);
        assert_eq!(violations(&rec, &[job("1", "k1", "succeeded", "t1")], true).len(), 1, "two accepted completions");
    }
}
