//! The jobs command family (cluster format 5): a replicated work queue with
//! fenced leases. Producers enqueue, workers claim, renew, complete and fail,
//! operators cancel, requeue, clear, pause and cap queues, and the leader
//! reaps expired leases and compacts finished jobs — all as `JobOp`s of one
//! `Command::Jobs`, each answered on its own.
//!
//! This file holds the types; `index` the jobs with their derived indices,
//! `apply` each operation's validation and apply, `tests` the unit tests.
//!
//! Job logs are not held here: apply only counts the lines a job accepted,
//! and the state-machine adapter stores them (raft-store's `job_logs`).
//!
//! **Memory.** A job with a small payload costs about 630 bytes of heap
//! beside its payload (measured by `tests/job_memory.rs`: 100,000 queued
//! jobs with 67-byte payloads and idempotency keys, a tenth of them running:
//! 632 bytes per job counted by the allocator, 766 in resident set with
//! malloc's own overhead). That is the `Job` (360 bytes, boxed), its entry
//! in `by_id`, its queue, kind and key strings, and its index entries. At
//! [`MAX_JOBS`] (1,000,000) that is about 0.75 GiB, plus the payloads,
//! results, errors and progress, which [`MAX_HELD_BYTES`] bounds at 1 GiB:
//! about 1.75 GiB in all. Attempt records add at most [`MAX_ATTEMPT_RECORDS`]
//! × (88 bytes + worker name + [`MAX_ATTEMPT_ERROR`]) to a job retried that
//! often (a pathological 1,000,000 such jobs: about 4 GiB more).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::command::CommandError;

/// A job's id, assigned by apply from `job_seq`; a decimal string in the API.
pub type JobId = u64;

/// Largest payload or result (JSON text), in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Queued jobs a queue holds unless its cap says otherwise.
pub const DEFAULT_MAX_QUEUED: u32 = 100_000;
/// Jobs the cluster holds in every state.
pub const MAX_JOBS: usize = 1_000_000;
/// Most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// Attempt records a job keeps (newest last).
pub const MAX_ATTEMPT_RECORDS: usize = 10;
/// Longest error an attempt record keeps (the job keeps its last error whole).
pub const MAX_ATTEMPT_ERROR: usize = 200;
/// Most jobs one claim takes.
pub const MAX_CLAIM: u32 = 100;
/// Most queues one claim names.
pub const MAX_CLAIM_QUEUES: usize = 16;
/// Log lines a job keeps.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Log bytes a job keeps.
pub const MAX_LOG_BYTES: u64 = 1024 * 1024;
/// Longest log line; the API cuts longer ones at a char boundary.
pub const MAX_LOG_LINE: usize = 4 * 1024;
/// Longest progress text.
pub const MAX_PROGRESS_BYTES: usize = 1024;
/// Longest error text.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// A group of job operations, applied in order, each answered on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobOps {
    pub ops: Vec<JobOp>,
}

/// One job operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum JobOp {
    Enqueue(NewJob),
    Claim(Claim),
    Renew(Renew),
    /// `Finish.error` is ignored.
    Complete(Finish),
    /// `Finish.result` is ignored; `Finish.retryable` decides on a retry.
    Fail(Finish),
    Cancel {
        job_id: JobId,
        reason: Option<String>,
    },
    /// From dead, failed or cancelled back to queued, attempts reset to 0.
    Requeue {
        job_id: JobId,
    },
    /// The leader's reaper: re-queue if that lease is still current and
    /// expired at `req.at_ms`.
    Reap {
        job_id: JobId,
        lease: LeaseToken,
    },
    /// Cancel every queued (and failed, waiting) job of the queue.
    ClearQueue {
        queue: String,
    },
    SetQueuePaused {
        queue: String,
        paused: bool,
    },
    /// `None` restores the default cap.
    SetQueueCap {
        queue: String,
        max_queued: Option<u32>,
    },
    /// The leader's compaction: drop finished jobs older than the cutoff,
    /// and the oldest past the count cap.
    Compact {
        finished_before_ms: u64,
        keep_finished: u32,
    },
}

/// A job to enqueue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    /// JSON text as sent (validated JSON by the API), at most [`MAX_PAYLOAD_BYTES`].
    pub payload: String,
    /// Higher first; ties by job id (FIFO).
    pub priority: i32,
    /// Only workers of this pool may claim it.
    pub pool: Option<String>,
    pub run_after_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// 1..=[`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    pub backoff: Backoff,
}

/// Retry delay: `min(max, base·2^(attempt-1))` with a deterministic jitter.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
}

/// Fencing token: `seq` grows with every claim of any job (the cluster-wide
/// `lease_seq`), `nonce` is 64 random bits drawn by the proposing node, so a
/// token cannot be guessed. API form: `{seq:x}-{nonce:016x}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseToken {
    pub seq: u64,
    pub nonce: u64,
}

impl std::fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{:016x}", self.seq, self.nonce)
    }
}

impl std::str::FromStr for LeaseToken {
    type Err = CommandError;

    /// The API form back; anything else is `Invalid`.
    fn from_str(s: &str) -> Result<Self, CommandError> {
        let bad = || CommandError::new(crate::ErrorKind::Invalid, "lease_token is not a lease token");
        let (seq, nonce) = s.split_once('-').ok_or_else(bad)?;
        let hex = |t: &str, max: usize| {
            if t.is_empty() || t.len() > max || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(t, 16).map_err(|_| bad())
        };
        Ok(LeaseToken { seq: hex(seq, 16)?, nonce: hex(nonce, 16)? })
    }
}

/// A worker asks for up to `max_jobs` jobs from `queues`, in preference order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub worker: String,
    /// 1..=[`MAX_CLAIM_QUEUES`] queues.
    pub queues: Vec<String>,
    /// 1..=[`MAX_CLAIM`].
    pub max_jobs: u32,
    pub lease_ms: u64,
    pub nonce: u64,
}

/// A lease renewal, with progress and log lines.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Renew {
    pub job_id: JobId,
    pub worker: String,
    pub lease: LeaseToken,
    pub lease_ms: u64,
    /// At most [`MAX_PROGRESS_BYTES`].
    pub progress: Option<String>,
    /// Appended lines, each at most [`MAX_LOG_LINE`] bytes.
    pub logs: Vec<String>,
}

/// A worker's outcome of its attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finish {
    pub job_id: JobId,
    pub worker: String,
    pub lease: LeaseToken,
    /// JSON text, at most [`MAX_PAYLOAD_BYTES`].
    pub result: Option<String>,
    /// At most [`MAX_ERROR_BYTES`].
    pub error: Option<String>,
    pub retryable: bool,
    pub logs: Vec<String>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    /// Failed, waiting for its retry at `run_after_ms`.
    Failed,
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Succeeded, dead or cancelled: nothing more happens unless an operator requeues it.
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }

    /// Queued or failed-waiting: claimable from its `run_after_ms`.
    pub fn is_pending(self) -> bool {
        matches!(self, JobState::Queued | JobState::Failed)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The current holder of a running job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub worker: String,
    pub token: LeaseToken,
    pub expires_ms: u64,
}

/// How one attempt ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum AttemptOutcome {
    Running,
    Succeeded,
    Failed { error: String, retryable: bool },
    Expired,
    Cancelled,
}

/// One claim of a job and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attempt {
    pub n: u32,
    pub worker: String,
    pub claimed_ms: u64,
    pub ended_ms: Option<u64>,
    pub outcome: AttemptOutcome,
}

/// A job as the cluster keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: String,
    pub priority: i32,
    pub pool: Option<String>,
    /// Claimable from then on (while queued or failed).
    pub run_after_ms: u64,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub state: JobState,
    /// Newest last, at most [`MAX_ATTEMPT_RECORDS`] kept.
    pub attempts: Vec<Attempt>,
    /// Attempts started (claims) since the last requeue.
    pub attempt_count: u32,
    /// Some while running.
    pub lease: Option<Lease>,
    pub result: Option<String>,
    pub error: Option<String>,
    pub progress: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    /// What the log store holds for it.
    pub log_lines: u32,
    pub log_bytes: u64,
}

/// The answer to one job operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum JobReply {
    /// `created: false`: an existing job with that idempotency key.
    Enqueued {
        job: Job,
        created: bool,
    },
    /// Each running with its lease; empty when nothing is claimable.
    Claimed {
        jobs: Vec<Job>,
    },
    Renewed {
        job_id: JobId,
        expires_ms: u64,
        logs_accepted: u32,
    },
    /// Complete or Fail: succeeded, failed (retry waiting) or dead.
    Finished {
        job: Job,
        logs_accepted: u32,
    },
    /// Cancel, Requeue.
    Changed {
        job: Job,
    },
    /// `None`: the lease is no longer current or not expired (nothing done).
    Reaped {
        job: Option<Job>,
    },
    Cleared {
        queue: String,
        cancelled: u32,
    },
    QueueSet {
        queue: String,
    },
    Compacted {
        removed: Vec<JobId>,
    },
}

/// An operator's settings of one queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueConfig {
    pub paused: bool,
    /// `None`: [`DEFAULT_MAX_QUEUED`].
    pub max_queued: Option<u32>,
}

/// Totals since the queue (or cluster) first saw a job; the API derives rates.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobCounters {
    pub claims: u64,
    pub completions: u64,
    pub failures: u64,
    pub expirations: u64,
    pub dead: u64,
}

/// Payload, result, error and progress bytes all jobs together may hold;
/// with [`MAX_JOBS`] this bounds the jobs' memory (see the module doc). An
/// enqueue past it is refused; a report past it is accepted without its
/// result or progress, and with its error cut to [`MAX_ATTEMPT_ERROR`].
pub const MAX_HELD_BYTES: u64 = 1 << 30;
/// Log bytes the log store holds for all jobs together: a job's lines past
/// it are not accepted (as past its own cap), so that the store, and the
/// snapshots that carry it, stay bounded.
pub const MAX_STORED_LOG_BYTES: u64 = 512 << 20;
/// Queues the cluster knows at once.
pub const MAX_QUEUES: usize = 1_000;

mod index;
pub use index::cut;
pub(crate) use index::Section5;
pub use index::{Jobs, QueueNumbers, ReadyKey};

/// A splitmix64 step: the deterministic source of retry jitter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Backoff {
    /// The delay before retry `attempt` (1-based) of job `id`:
    /// `min(max, base·2^(attempt-1))`, less or more by up to a fifth, drawn
    /// from a hash of (id, attempt) so every node computes the same.
    pub fn delay(&self, id: JobId, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(63);
        let raw = self.base_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        let span = raw / 5;
        let jitter = mix(id ^ (u64::from(attempt) << 48)) % (2 * span + 1);
        (raw - span + jitter).min(self.max_ms)
    }
}

mod apply;
pub use apply::{
    MAX_BACKOFF_MS, MAX_COMPACT, MAX_DELAY_MS, MAX_KEY_LEN, MAX_LEASE_MS, MAX_LOG_LINES_PER_OP, MAX_OPS,
    MAX_REASON_BYTES,
};
#[cfg(test)]
mod tests;
