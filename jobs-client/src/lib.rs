//! The reference client of Engine Room's worker contract for jobs (issue 20):
//! a worker heartbeats its runtime (with `seq`) to learn its desired state,
//! claims jobs with a long poll, renews each lease with its log lines and
//! progress, and completes or fails it, moving to another node when one does
//! not answer. [`JobsClient`] has the single calls; [`JobsClient::run`] the
//! whole loop around a job handler.
//!
//! **Retries and what an answer means.** A call that meets a transport error,
//! a 408 or a 503 is retried on the next node (capped backoff, bounded tries,
//! [`RetryPolicy`]). Some failed tries may have been applied (a timeout, a cut
//! answer, `503 outcome_unknown`); others cannot have been (a refused
//! connection, `503 unavailable` or `overloaded`). That matters for
//! complete and fail: when a try that may have been applied is followed by a
//! `409 lease_lost`, the first try may have finished the job (its lease is
//! then gone, hence the 409) or the lease may really have been lost before
//! it. The client cannot tell, so it answers [`Finished::MaybeApplied`] and
//! never counts it as a success; a 409 with no such earlier try is a
//! definite [`Finished::LeaseLost`]. Claims retried after an unknown outcome
//! may leave jobs claimed by the lost try: nobody renews them, so the leader's
//! reaper re-queues them after the lease TTL (an attempt is counted). Renewals
//! retried after an unknown outcome may store their log lines twice (log
//! lines are at least once).

mod logs;
mod run;
mod transport;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use logs::{cut, LogBuffer, LogCaps, MAX_LINE_BYTES};
pub use run::{JobContext, JobFailure, RunStats, StatsSnapshot};
pub use transport::{Nodes, Refusal, RetryPolicy};

/// The server's cap on a progress note (1 KiB).
pub const MAX_PROGRESS_BYTES: usize = 1024;
/// The server's cap on a claim's long poll.
pub const MAX_WAIT_MS: u64 = 30_000;
/// The server's cap on jobs per claim.
pub const MAX_CLAIM: u32 = 100;
/// The server's cap on a failure's error text (4 KiB).
pub const MAX_ERROR_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("config: {0}")]
    Config(String),
    /// A definite refusal (4xx other than 408).
    #[error("{} {}: {}", refusal.status, refusal.code, refusal.message)]
    Refused { refusal: Refusal, earlier_maybe_applied: bool },
    /// No node answered within the tries.
    #[error("no node answered after {tries} tries; last: {last}")]
    Unavailable { tries: u32, last: String, maybe_applied: bool },
    #[error("{0}")]
    BadAnswer(String),
}

impl ClientError {
    /// 409 `lease_lost`: the token is no longer the job's current one.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, ClientError::Refused { refusal, .. } if refusal.status == 409 && refusal.code == "lease_lost")
    }

    /// The call may have been applied although it reports an error.
    pub fn maybe_applied(&self) -> bool {
        match self {
            ClientError::Refused { earlier_maybe_applied, .. } => *earlier_maybe_applied,
            ClientError::Unavailable { maybe_applied, .. } => *maybe_applied,
            _ => false,
        }
    }
}

/// Everything a worker is configured with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Node base URLs; calls start on the last one that answered.
    pub nodes: Vec<String>,
    pub token: String,
    pub worker_id: String,
    /// Sent in the runtime heartbeat; a job with a pool goes only to its workers.
    pub pool: Option<String>,
    /// Queues claimed from, in preference order (1..=16).
    pub queues: Vec<String>,
    /// Jobs run at once (1..=100); a claim asks for the free slots.
    pub concurrency: u32,
    /// Long poll of one claim, ≤ [`MAX_WAIT_MS`].
    pub wait_ms: u64,
    /// Lease renewal period (`WORKER_HEARTBEAT_INTERVAL_SECONDS`).
    pub renew_every: Duration,
    /// The lease TTL (`WORKER_LEASE_TTL_SECONDS`): a job whose lease was not
    /// renewed within it (by the local clock) is given up.
    pub lease_ttl: Duration,
    /// Runtime heartbeat period (desired state, metrics).
    pub heartbeat_every: Duration,
    pub retry: RetryPolicy,
    /// Per-request timeout (a claim adds its `wait_ms`).
    pub timeout: Duration,
    pub log_caps: LogCaps,
    /// `version` in the runtime heartbeat.
    pub version: String,
}

impl WorkerConfig {
    /// Defaults of the contract for one worker on `nodes`.
    pub fn new(nodes: Vec<String>, token: String, worker_id: String, queues: Vec<String>) -> Self {
        Self {
            nodes,
            token,
            worker_id,
            pool: None,
            queues,
            concurrency: 1,
            wait_ms: 20_000,
            renew_every: Duration::from_secs(20),
            lease_ttl: Duration::from_secs(60),
            heartbeat_every: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            log_caps: LogCaps::default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::Config(m.to_string()));
        if self.queues.is_empty() || self.queues.len() > 16 {
            return bad("queues: 1 to 16");
        }
        if !(1..=MAX_CLAIM).contains(&self.concurrency) {
            return bad("concurrency: 1 to 100");
        }
        if self.wait_ms > MAX_WAIT_MS {
            return bad("wait_ms: at most 30000");
        }
        if self.renew_every.is_zero() || self.renew_every >= self.lease_ttl {
            return bad("renew_every must be above zero and below the lease TTL");
        }
        if self.heartbeat_every.is_zero() {
            return bad("heartbeat_every must be above zero");
        }
        if self.worker_id.is_empty() || self.worker_id.len() > 128 {
            return bad("worker_id: 1 to 128 characters");
        }
        Ok(())
    }
}

/// A job as a claim hands it out.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ClaimedJob {
    pub job_id: String,
    pub lease_token: String,
    pub lease_expires_at: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub max_attempts: u32,
}

#[derive(Debug, Deserialize)]
struct ClaimAnswer {
    jobs: Vec<ClaimedJob>,
}

/// What the cluster wants of this worker, from its runtime heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `running`, `paused`, `draining` or `stopped`.
    pub state: String,
    pub quarantined: bool,
}

impl Desired {
    /// Claims are made only in this state.
    pub fn may_claim(&self) -> bool {
        self.state == "running" && !self.quarantined
    }
}

/// A renewed lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Renewed {
    pub lease_expires_at: Option<String>,
    /// Of the lines sent, how many the job's log took (from the front).
    pub logs_accepted: Option<u32>,
}

/// How a complete or fail ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// Recorded: the job's new state (`succeeded`, `failed`, `dead`).
    Accepted { state: String, logs_accepted: Option<u32> },
    /// 409 `lease_lost` with no earlier try that may have been applied: not
    /// recorded; the job was reaped, cancelled or claimed by another worker.
    LeaseLost,
    /// A try that may have been applied, then 409 `lease_lost`: the job may
    /// have been finished by this call or lost before it. Never a success.
    MaybeApplied,
}

/// A complete's or fail's answer as a [`Finished::Accepted`].
fn finished(v: &Value) -> Finished {
    let state = v.get("state").or_else(|| v.pointer("/job/state")).and_then(Value::as_str).unwrap_or("").to_string();
    let logs_accepted = v.get("logs_accepted").and_then(Value::as_u64).map(|n| n as u32);
    Finished::Accepted { state, logs_accepted }
}

/// A new job for [`JobsClient::enqueue`].
#[derive(Debug, Clone, Serialize, Default)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Makes a retried enqueue safe: the same key answers the existing job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_after: Option<String>,
}

/// The client: calls of the worker contract (and enqueue, for producers)
/// against a cluster's nodes.
#[derive(Debug)]
pub struct JobsClient {
    nodes: Nodes,
    cfg: WorkerConfig,
    /// The last runtime heartbeat's `seq` (wall-clock ms, kept increasing).
    seq: std::sync::atomic::AtomicU64,
}

impl JobsClient {
    pub fn new(cfg: WorkerConfig) -> Result<Self, ClientError> {
        cfg.validate()?;
        let nodes = Nodes::new(cfg.nodes.clone(), cfg.token.clone(), cfg.retry, cfg.timeout)?;
        Ok(Self { nodes, cfg, seq: std::sync::atomic::AtomicU64::new(0) })
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The next heartbeat `seq`: wall-clock milliseconds, which rise across
    /// restarts, and never below the last one sent plus one.
    fn next_seq(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut prev = self.seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.seq.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// The runtime heartbeat (`POST /api/workers/heartbeat`): reports status
    /// and counters, answers the desired state.
    pub async fn heartbeat(&self, status: &str, metrics: &StatsSnapshot) -> Result<Desired, ClientError> {
        let body = json!({
            "worker_id": self.cfg.worker_id,
            "pool": self.cfg.pool,
            "version": self.cfg.version,
            "status": status,
            "process_state": if status == "stopped" { "stopped" } else { "running" },
            "metrics": {
                "processed": metrics.succeeded + metrics.failed,
                "errors": metrics.failed,
                "in_flight": metrics.in_flight,
                "lease_lost": metrics.lease_lost,
            },
            "agent": "engine-room-jobs-client",
            "seq": self.next_seq(),
        });
        #[derive(Deserialize)]
        struct Answer {
            desired_state: String,
            #[serde(default)]
            quarantined: bool,
            #[serde(default)]
            stale: bool,
        }
        let a: Answer = self.nodes.post("/api/workers/heartbeat", &body, Duration::ZERO).await?.value;
        if a.stale {
            tracing::warn!(worker = %self.cfg.worker_id, "runtime heartbeat answered stale: seq went backwards");
        }
        Ok(Desired { state: a.desired_state, quarantined: a.quarantined })
    }

    /// Claim up to `max_jobs` (1..=100), waiting up to `wait_ms` for one.
    pub async fn claim(&self, max_jobs: u32, wait_ms: u64) -> Result<Vec<ClaimedJob>, ClientError> {
        let body = json!({
            "worker_id": self.cfg.worker_id,
            "queues": self.cfg.queues,
            "max_jobs": max_jobs.clamp(1, MAX_CLAIM),
            "wait_ms": wait_ms.min(MAX_WAIT_MS),
            "pool": self.cfg.pool,
        });
        let wait = Duration::from_millis(wait_ms.min(MAX_WAIT_MS));
        Ok(self.nodes.post::<_, ClaimAnswer>("/internal/worker/claim", &body, wait).await?.value.jobs)
    }

    /// Check the credential without claiming (`dry_run`).
    pub async fn check(&self) -> Result<(), ClientError> {
        let body = json!({"worker_id": self.cfg.worker_id, "queues": self.cfg.queues, "max_jobs": 1,
            "wait_ms": 0, "dry_run": true, "pool": self.cfg.pool});
        self.nodes.post::<_, ClaimAnswer>("/internal/worker/claim", &body, Duration::ZERO).await.map(|_| ())
    }

    /// Renew a lease (`POST /internal/worker/heartbeat`) with log lines and progress.
    pub async fn renew(
        &self,
        job: &ClaimedJob,
        progress: Option<&str>,
        logs: &[String],
    ) -> Result<Renewed, ClientError> {
        let body = json!({
            "job_id": job.job_id,
            "worker_id": self.cfg.worker_id,
            "lease_token": job.lease_token,
            "progress": progress.map(|p| logs::cut(p, MAX_PROGRESS_BYTES)),
            "logs": logs,
        });
        let v: Value = self.nodes.post("/internal/worker/heartbeat", &body, Duration::ZERO).await?.value;
        Ok(Renewed {
            lease_expires_at: v.get("lease_expires_at").and_then(Value::as_str).map(str::to_string),
            logs_accepted: v.get("logs_accepted").and_then(Value::as_u64).map(|n| n as u32),
        })
    }

    /// Complete a job with `result` (JSON, or null).
    pub async fn complete(
        &self,
        job: &ClaimedJob,
        result: Option<&Value>,
        logs: &[String],
    ) -> Result<Finished, ClientError> {
        self.finish("/internal/worker/complete", &self.complete_body(job, result, logs)).await
    }

    fn complete_body(&self, job: &ClaimedJob, result: Option<&Value>, logs: &[String]) -> Value {
        json!({
            "job_id": job.job_id,
            "worker_id": self.cfg.worker_id,
            "lease_token": job.lease_token,
            "result": result,
            "logs": logs,
        })
    }

    /// Complete a job and claim up to `max_jobs` (1..=100) next ones in the
    /// same commit (no waiting: an empty list when nothing is claimable).
    /// The claimed jobs are this worker's whatever became of the complete,
    /// so they are answered with every [`Finished`]; an error means no
    /// answer came, and any job claimed then returns to the queue when its
    /// lease expires.
    pub async fn complete_next(
        &self,
        job: &ClaimedJob,
        result: Option<&Value>,
        logs: &[String],
        max_jobs: u32,
    ) -> Result<(Finished, Vec<ClaimedJob>), ClientError> {
        let mut body = self.complete_body(job, result, logs);
        body["next"] =
            json!({"queues": self.cfg.queues, "max_jobs": max_jobs.clamp(1, MAX_CLAIM), "pool": self.cfg.pool});
        self.finish_next("/internal/worker/complete", &body).await
    }

    async fn finish_next(&self, path: &str, body: &Value) -> Result<(Finished, Vec<ClaimedJob>), ClientError> {
        let next = |v: Option<&Value>| -> Vec<ClaimedJob> {
            v.and_then(|n| n.get("jobs")).and_then(|j| serde_json::from_value(j.clone()).ok()).unwrap_or_default()
        };
        match self.nodes.post::<_, Value>(path, body, Duration::ZERO).await {
            Ok(r) => Ok((finished(&r.value), next(r.value.get("next")))),
            Err(ClientError::Refused { refusal, earlier_maybe_applied }) if refusal.code == "lease_lost" => {
                let jobs = next(refusal.next.as_ref());
                Ok((if earlier_maybe_applied { Finished::MaybeApplied } else { Finished::LeaseLost }, jobs))
            }
            Err(e) => Err(e),
        }
    }

    /// Fail a job; `retryable` lets it run again (within its `max_attempts`).
    pub async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retryable: bool,
        logs: &[String],
    ) -> Result<Finished, ClientError> {
        let body = json!({
            "job_id": job.job_id,
            "worker_id": self.cfg.worker_id,
            "lease_token": job.lease_token,
            "error": logs::cut(error, MAX_ERROR_BYTES),
            "retryable": retryable,
            "logs": logs,
        });
        self.finish("/internal/worker/fail", &body).await
    }

    async fn finish(&self, path: &str, body: &Value) -> Result<Finished, ClientError> {
        match self.nodes.post::<_, Value>(path, body, Duration::ZERO).await {
            Ok(r) => Ok(finished(&r.value)),
            Err(e) if e.is_lease_lost() && e.maybe_applied() => Ok(Finished::MaybeApplied),
            Err(e) if e.is_lease_lost() => Ok(Finished::LeaseLost),
            Err(e) => Err(e),
        }
    }

    /// Enqueue one job (`POST /api/v1/jobs`, a producer token). Without an
    /// idempotency key a retry after an unknown outcome may enqueue twice.
    pub async fn enqueue(&self, job: &NewJob) -> Result<Value, ClientError> {
        Ok(self.nodes.post("/api/v1/jobs", job, Duration::ZERO).await?.value)
    }

    /// Enqueue up to 1,000 jobs in one call (`POST /api/v1/jobs/batch`).
    pub async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Value, ClientError> {
        Ok(self.nodes.post("/api/v1/jobs/batch", &json!({ "jobs": jobs }), Duration::ZERO).await?.value)
    }
}
