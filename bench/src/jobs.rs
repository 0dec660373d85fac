//! `er-bench jobs`: the same job workload against Engine Room (through the
//! reference client, `jobs-client`) or a Postgres queue (`SELECT … FOR
//! UPDATE SKIP LOCKED`, through `tokio-postgres`): P producers enqueue jobs
//! one at a time, W workers claim and complete them, bounded by a job count
//! and a time limit. Each payload carries its producer's send time, so a
//! worker measures enqueue-to-claim latency (from the enqueue's send to the
//! claim's answer). `er-bench jobs-fill` enqueues many jobs in batches and
//! nobody claims them, for the memory figure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

/// Which queue the workload runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobsTarget {
    EngineRoom,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct JobsOptions {
    pub target: JobsTarget,
    /// Engine Room node URLs, or one Postgres connection string.
    pub urls: Vec<String>,
    pub token: String,
    pub producers: usize,
    pub workers: usize,
    /// Jobs enqueued in all.
    pub jobs: u64,
    /// The whole run stops at this time even if jobs remain.
    pub max_time: Duration,
    /// Jobs per claim.
    pub claim_batch: u32,
    /// A worker completes the last job of its batch and claims the next
    /// batch in one call (Engine Room: `next` on the complete, one Raft
    /// entry; Postgres: both statements in one transaction, one commit).
    pub complete_next: bool,
    /// A distinct queue name per run, so runs never see each other's jobs.
    pub queue: String,
}

/// A run's figures.
#[derive(Debug, Serialize)]
pub struct JobsSummary {
    pub target: String,
    pub producers: usize,
    pub workers: usize,
    pub enqueued: u64,
    pub completed: u64,
    pub errors: u64,
    /// From the first enqueue to the last completion.
    pub elapsed_s: f64,
    pub jobs_per_s: f64,
    pub enqueue_per_s: f64,
    pub claim_latency_ms: LatencyMs,
}

#[derive(Debug, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

struct Run {
    opts: JobsOptions,
    start: Instant,
    deadline: Instant,
    next: AtomicU64,
    enqueued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
    producers_done: AtomicBool,
    last_enqueue_us: AtomicU64,
    last_complete_us: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Run {
    fn us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline
            || (self.producers_done.load(Ordering::Relaxed)
                && self.completed.load(Ordering::Relaxed) >= self.enqueued.load(Ordering::Relaxed))
    }

    /// Take the next job number to enqueue, if any is left.
    fn take(&self) -> Option<u64> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.opts.jobs && Instant::now() < self.deadline).then_some(n)
    }

    fn claimed(&self, payload: &Value) {
        if let Some(sent) = payload.get("sent_us").and_then(Value::as_u64) {
            let us = self.us().saturating_sub(sent).max(1);
            let mut h = self.latency.lock().expect("histogram lock is never poisoned");
            let high = h.high();
            let _ = h.record(us.min(high));
        }
    }

    fn completed(&self, n: u64) {
        self.completed.fetch_add(n, Ordering::Relaxed);
        self.last_complete_us.fetch_max(self.us(), Ordering::Relaxed);
    }
}

fn payload(run: &Run, n: u64) -> Value {
    json!({"n": n, "sent_us": run.us(), "to": format!("user{n}@example.test")})
}

/// Run the workload and report.
pub async fn run(opts: JobsOptions) -> Result<JobsSummary, String> {
    let run = Arc::new(Run {
        start: Instant::now(),
        deadline: Instant::now() + opts.max_time,
        next: AtomicU64::new(0),
        enqueued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        last_enqueue_us: AtomicU64::new(0),
        last_complete_us: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?),
        opts,
    });
    let (producers, workers) = match run.opts.target {
        JobsTarget::EngineRoom => er::start(&run)?,
        JobsTarget::Postgres => pg::start(&run).await?,
    };
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    let all_enqueued = futures_all(producers);
    tokio::pin!(all_enqueued);
    loop {
        tokio::select! {
            _ = &mut all_enqueued, if !run.producers_done.load(Ordering::Relaxed) => {
                run.producers_done.store(true, Ordering::Relaxed);
            }
            _ = progress.tick() => {
                eprintln!("  {:>5.1}s enqueued {} completed {} errors {}", run.start.elapsed().as_secs_f64(),
                    run.enqueued.load(Ordering::Relaxed), run.completed.load(Ordering::Relaxed), run.errors.load(Ordering::Relaxed));
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if run.over() {
            break;
        }
    }
    run.producers_done.store(true, Ordering::Relaxed);
    for w in workers {
        w.abort();
    }
    let h = run.latency.lock().expect("histogram lock is never poisoned").clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let completed = run.completed.load(Ordering::Relaxed);
    let enqueued = run.enqueued.load(Ordering::Relaxed);
    let elapsed = run.last_complete_us.load(Ordering::Relaxed) as f64 / 1e6;
    let enq_elapsed = run.last_enqueue_us.load(Ordering::Relaxed) as f64 / 1e6;
    Ok(JobsSummary {
        target: format!("{:?}", run.opts.target),
        producers: run.opts.producers,
        workers: run.opts.workers,
        enqueued,
        completed,
        errors: run.errors.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        jobs_per_s: if elapsed > 0.0 { completed as f64 / elapsed } else { 0.0 },
        enqueue_per_s: if enq_elapsed > 0.0 { enqueued as f64 / enq_elapsed } else { 0.0 },
        claim_latency_ms: LatencyMs { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), max: h.max() as f64 / 1000.0 },
    })
}

async fn futures_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

type Tasks = (Vec<tokio::task::JoinHandle<()>>, Vec<tokio::task::JoinHandle<()>>);

/// Engine Room through the reference client: enqueue with an idempotency
/// key, claim with a long poll, complete.
mod er {
    use super::*;
    use jobs_client::{JobsClient, NewJob, RetryPolicy, WorkerConfig};

    fn client(run: &Run, id: String) -> Result<Arc<JobsClient>, String> {
        let mut cfg =
            WorkerConfig::new(run.opts.urls.clone(), run.opts.token.clone(), id, vec![run.opts.queue.clone()]);
        cfg.retry = RetryPolicy { max_tries: 6, ..RetryPolicy::default() };
        cfg.concurrency = run.opts.claim_batch.clamp(1, jobs_client::MAX_CLAIM);
        JobsClient::new(cfg).map(Arc::new).map_err(|e| e.to_string())
    }

    pub fn start(run: &Arc<Run>) -> Result<Tasks, String> {
        let mut producers = Vec::new();
        for p in 0..run.opts.producers {
            let (run, c) = (run.clone(), client(run, format!("bench-p-{p}"))?);
            producers.push(tokio::spawn(async move {
                while let Some(n) = run.take() {
                    let job = NewJob {
                        queue: run.opts.queue.clone(),
                        kind: "bench".into(),
                        payload: payload(&run, n),
                        idempotency_key: Some(format!("{}-{n}", run.opts.queue)),
                        max_attempts: Some(3),
                        ..NewJob::default()
                    };
                    match c.enqueue(&job).await {
                        Ok(_) => {
                            run.enqueued.fetch_add(1, Ordering::Relaxed);
                            run.last_enqueue_us.fetch_max(run.us(), Ordering::Relaxed);
                        }
                        Err(_) => {
                            run.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let mut workers = Vec::new();
        for w in 0..run.opts.workers {
            let (run, c) = (run.clone(), client(run, format!("bench-w-{w}"))?);
            workers.push(tokio::spawn(async move {
                let mut jobs = Vec::new();
                loop {
                    if jobs.is_empty() {
                        jobs = match c.claim(run.opts.claim_batch, 5_000).await {
                            Ok(j) => j,
                            Err(_) => {
                                run.errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        for j in &jobs {
                            run.claimed(&j.payload);
                        }
                    }
                    let (n, mut next) = (jobs.len(), Vec::new());
                    for (i, j) in std::mem::take(&mut jobs).into_iter().enumerate() {
                        let result = json!({"ok": true});
                        let done = if run.opts.complete_next && i + 1 == n {
                            match c.complete_next(&j, Some(&result), &[], run.opts.claim_batch).await {
                                Ok((finished, more)) => {
                                    for m in &more {
                                        run.claimed(&m.payload);
                                    }
                                    next = more;
                                    Ok(finished)
                                }
                                Err(e) => Err(e),
                            }
                        } else {
                            c.complete(&j, Some(&result), &[]).await
                        };
                        match done {
                            Ok(jobs_client::Finished::Accepted { .. }) => run.completed(1),
                            _ => {
                                run.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    jobs = next;
                }
            }));
        }
        Ok((producers, workers))
    }
}

/// Postgres: one connection per producer and worker; each statement is its
/// own transaction, durable at commit (`synchronous_commit=on`, set by the
/// script's server config). A claim that finds nothing sleeps 5 ms (there
/// is no long poll in plain SQL; LISTEN/NOTIFY would add a round trip per
/// enqueue).
mod pg {
    use super::*;

    pub const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS jobs (
            id bigserial PRIMARY KEY,
            queue text NOT NULL,
            kind text NOT NULL,
            payload jsonb NOT NULL,
            priority int NOT NULL DEFAULT 0,
            state text NOT NULL DEFAULT 'queued',
            attempts int NOT NULL DEFAULT 0,
            max_attempts int NOT NULL DEFAULT 3,
            idempotency_key text UNIQUE,
            run_after timestamptz NOT NULL DEFAULT now(),
            lease_token bigint,
            locked_by text,
            lease_expires_at timestamptz,
            result jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        );
        CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, id) WHERE state = 'queued';
        CREATE SEQUENCE IF NOT EXISTS lease_seq;";

    const ENQUEUE: &str = "INSERT INTO jobs (queue, kind, payload, max_attempts, idempotency_key)
        VALUES ($1, 'bench', $2::text::jsonb, 3, $3)
        ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";
    const CLAIM: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_by = $2,
            lease_expires_at = now() + interval '60 seconds', lease_token = nextval('lease_seq')
        WHERE id IN (SELECT id FROM jobs WHERE queue = $1 AND state = 'queued' AND run_after <= now()
            ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING id, payload::text, lease_token";
    // Fenced like Engine Room's: only the current lease holder completes.
    const COMPLETE: &str = "UPDATE jobs SET state = 'succeeded', result = $3::text::jsonb, finished_at = now(),
            lease_token = NULL, locked_by = NULL
        WHERE id = $1 AND lease_token = $2 AND state = 'running'";

    fn claimed(run: &Run, rows: &[tokio_postgres::Row]) {
        for row in rows {
            let body: String = row.get(1);
            run.claimed(&serde_json::from_str(&body).unwrap_or(Value::Null));
        }
    }

    async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn start(run: &Arc<Run>) -> Result<Tasks, String> {
        let url = run.opts.urls.first().cloned().ok_or("a Postgres connection string is needed")?;
        connect(&url).await?.batch_execute(SCHEMA).await.map_err(|e| e.to_string())?;
        let mut producers = Vec::new();
        for _ in 0..run.opts.producers {
            let (run, c) = (run.clone(), connect(&url).await?);
            let stmt = c.prepare(ENQUEUE).await.map_err(|e| e.to_string())?;
            producers.push(tokio::spawn(async move {
                while let Some(n) = run.take() {
                    let key = format!("{}-{n}", run.opts.queue);
                    let body = payload(&run, n).to_string();
                    match c.query(&stmt, &[&run.opts.queue, &body, &key]).await {
                        Ok(_) => {
                            run.enqueued.fetch_add(1, Ordering::Relaxed);
                            run.last_enqueue_us.fetch_max(run.us(), Ordering::Relaxed);
                        }
                        Err(_) => {
                            run.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let mut workers = Vec::new();
        for w in 0..run.opts.workers {
            let (run, mut c) = (run.clone(), connect(&url).await?);
            let claim = c.prepare(CLAIM).await.map_err(|e| e.to_string())?;
            let complete = c.prepare(COMPLETE).await.map_err(|e| e.to_string())?;
            let worker = format!("bench-w-{w}");
            workers.push(tokio::spawn(async move {
                let limit = run.opts.claim_batch as i64;
                let mut rows = Vec::new();
                loop {
                    if rows.is_empty() {
                        rows = match c.query(&claim, &[&run.opts.queue, &worker, &limit]).await {
                            Ok(r) => r,
                            Err(_) => {
                                run.errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        if rows.is_empty() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                        claimed(&run, &rows);
                    }
                    let (n, mut next) = (rows.len(), Vec::new());
                    for (i, row) in std::mem::take(&mut rows).into_iter().enumerate() {
                        let (id, token): (i64, i64) = (row.get(0), row.get(2));
                        let result = r#"{"ok": true}"#;
                        let done = if run.opts.complete_next && i + 1 == n {
                            // The complete and the next claim commit together.
                            async {
                                let tx = c.transaction().await?;
                                let done = tx.execute(&complete, &[&id, &token, &result]).await?;
                                let more = tx.query(&claim, &[&run.opts.queue, &worker, &limit]).await?;
                                tx.commit().await?;
                                Ok::<_, tokio_postgres::Error>((done, more))
                            }
                            .await
                            .map(|(done, more)| {
                                claimed(&run, &more);
                                next = more;
                                done
                            })
                        } else {
                            c.execute(&complete, &[&id, &token, &result]).await
                        };
                        match done {
                            Ok(1) => run.completed(1),
                            _ => {
                                run.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    rows = next;
                }
            }));
        }
        Ok((producers, workers))
    }
}

/// Enqueue `jobs` jobs in batches of up to 1,000 over `queues` queues
/// (each queue holds at most its cap, 100,000 by default), `producers` at
/// once; nothing claims them. Answers (enqueued, errors, seconds).
pub async fn fill(
    urls: Vec<String>,
    token: String,
    jobs: u64,
    queues: u64,
    producers: usize,
    prefix: String,
) -> Result<(u64, u64, f64), String> {
    use jobs_client::{JobsClient, NewJob, WorkerConfig};
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let batch = 1_000u64;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let cfg = WorkerConfig::new(urls.clone(), token.clone(), format!("bench-fill-{p}"), vec!["fill".into()]);
        let c = JobsClient::new(cfg).map_err(|e| e.to_string())?;
        let (next, done, errors, prefix) = (next.clone(), done.clone(), errors.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= jobs {
                    return;
                }
                let last = (first + batch).min(jobs);
                let q = format!("{prefix}-{}", (first / batch) % queues.max(1));
                let list: Vec<NewJob> = (first..last)
                    .map(|n| NewJob {
                        queue: q.clone(),
                        kind: "fill".into(),
                        payload: json!({"n": n, "to": format!("user{n}@example.test")}),
                        idempotency_key: Some(format!("{prefix}-{n}")),
                        ..NewJob::default()
                    })
                    .collect();
                match c.enqueue_batch(&list).await {
                    Ok(v) => {
                        let created = v.get("created").and_then(Value::as_u64).unwrap_or(0);
                        done.fetch_add(created, Ordering::Relaxed);
                        errors.fetch_add((last - first).saturating_sub(created), Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("batch at {first}: {e}");
                        errors.fetch_add(last - first, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok((done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), start.elapsed().as_secs_f64()))
}
