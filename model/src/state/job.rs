//! The jobs command family (cluster format 5): a replicated work queue with
//! fenced leases. Producers enqueue, workers claim, renew, complete and fail,
//! operators cancel, requeue, clear, pause and cap queues, and the leader
//! reaps expired leases and compacts finished jobs — all as `JobOp`s of one
//! `Command::Jobs`, each answered on its own.
//!
//! Job logs are not held here: apply only counts the lines a job accepted,
//! and the state-machine adapter stores them (raft-store's `job_logs`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

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
pub const MAX_ATTEMPT_RECORDS: usize = 20;
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

/// Key of a ready set: higher priority first, then FIFO by id.
pub type ReadyKey = (Reverse<i32>, JobId);

/// The jobs, what is replicated beside them, and their derived indices.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    pub by_id: BTreeMap<JobId, Job>,
    pub job_seq: u64,
    pub lease_seq: u64,
    /// Operator settings per queue (absent: not paused, default cap).
    pub queues: BTreeMap<String, QueueConfig>,
    /// Counters of the whole cluster.
    pub totals: JobCounters,
    /// Counters per known queue: a queue is known from its first job or
    /// setting until compaction finds it empty and unconfigured.
    pub queue_counters: BTreeMap<String, JobCounters>,
    /// The jobs' clock: the latest `at_ms` of any job operation. A pending
    /// job is claimable once its `run_after_ms` is at or before it.
    /// Replicated, so that which jobs are claimable never depends on a
    /// node's clock or on what its indices happen to hold.
    pub clock_ms: u64,
    // ---- derived, rebuilt by `reindex` ----
    /// Idempotency key → job (removed with the job).
    pub keys: BTreeMap<String, JobId>,
    /// Per queue, every pending job by `(run_after_ms, id)`.
    pending: BTreeMap<String, BTreeSet<(u64, JobId)>>,
    /// Per queue, how far `pending` has been moved into `ready`: promotion
    /// is lazy (a claim promotes the queues it reads), so that a job
    /// operation does not touch every queue.
    promoted: BTreeMap<String, u64>,
    /// Per (queue, pool), pending jobs promoted as claimable.
    ready: BTreeMap<(String, Option<String>), BTreeSet<ReadyKey>>,
    /// Running jobs by `(expires_ms, id)`, for the reaper.
    running: BTreeSet<(u64, JobId)>,
    /// Finished jobs by `(finished_ms, id)`, for compaction.
    finished: BTreeSet<(u64, JobId)>,
    /// Jobs per queue and state (indexed by `JobState as usize`).
    counts: BTreeMap<String, [u64; 6]>,
    /// Payload and result bytes held, for [`MAX_HELD_BYTES`].
    held_bytes: u64,
}

/// Payload and result bytes all jobs together may hold; with [`MAX_JOBS`]
/// this bounds the jobs' memory (see the module doc).
pub const MAX_HELD_BYTES: u64 = 1 << 30;
/// Queues the cluster knows at once.
pub const MAX_QUEUES: usize = 1_000;

/// Equal when the replicated parts are: the indices are derived, and
/// promotion into `ready` is lazy, so two equal states may hold different
/// (equally correct) indices.
impl PartialEq for Jobs {
    fn eq(&self, other: &Self) -> bool {
        self.by_id == other.by_id
            && self.job_seq == other.job_seq
            && self.lease_seq == other.lease_seq
            && self.queues == other.queues
            && self.totals == other.totals
            && self.queue_counters == other.queue_counters
            && self.clock_ms == other.clock_ms
    }
}

/// What format 5 adds to a snapshot (after format 4's section): the jobs and
/// what is not derived from them.
#[derive(Serialize, Deserialize)]
pub(crate) struct Section5 {
    by_id: BTreeMap<JobId, Job>,
    job_seq: u64,
    lease_seq: u64,
    queues: BTreeMap<String, QueueConfig>,
    totals: JobCounters,
    queue_counters: BTreeMap<String, JobCounters>,
    clock_ms: u64,
}

/// The same, borrowed for writing.
#[derive(Serialize)]
pub(crate) struct Section5Ref<'a> {
    by_id: &'a BTreeMap<JobId, Job>,
    job_seq: u64,
    lease_seq: u64,
    queues: &'a BTreeMap<String, QueueConfig>,
    totals: JobCounters,
    queue_counters: &'a BTreeMap<String, JobCounters>,
    clock_ms: u64,
}

/// One queue's numbers, from the indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueNumbers {
    pub queue: String,
    pub config: QueueConfig,
    /// Jobs by state (indexed like [`JobState::ALL`]).
    pub by_state: [u64; 6],
    /// The `run_after_ms` of the longest-waiting claimable job.
    pub oldest_ready_ms: Option<u64>,
    pub counters: JobCounters,
}

impl Jobs {
    pub(crate) fn section(&self) -> Section5Ref<'_> {
        Section5Ref {
            by_id: &self.by_id,
            job_seq: self.job_seq,
            lease_seq: self.lease_seq,
            queues: &self.queues,
            totals: self.totals,
            queue_counters: &self.queue_counters,
            clock_ms: self.clock_ms,
        }
    }

    pub(crate) fn from_section(s: Section5) -> Jobs {
        let mut jobs = Jobs {
            by_id: s.by_id,
            job_seq: s.job_seq,
            lease_seq: s.lease_seq,
            queues: s.queues,
            totals: s.totals,
            queue_counters: s.queue_counters,
            clock_ms: s.clock_ms,
            ..Jobs::default()
        };
        jobs.reindex();
        jobs
    }

    /// Rebuild the derived indices from the jobs.
    pub fn reindex(&mut self) {
        self.keys.clear();
        self.pending.clear();
        self.promoted.clear();
        self.ready.clear();
        self.running.clear();
        self.finished.clear();
        self.counts.clear();
        self.held_bytes = 0;
        let ids: Vec<JobId> = self.by_id.keys().copied().collect();
        for id in ids {
            self.index(id);
        }
    }

    /// Whether the live indices agree with rebuilt ones (for tests: the
    /// ready sets, promoted lazily, need only hold due, pending jobs).
    pub fn indices_agree(&self) -> bool {
        let mut fresh = self.clone();
        fresh.reindex();
        let ready_ok = self.ready.iter().all(|((q, pool), set)| {
            set.iter().all(|(p, id)| {
                self.by_id.get(id).is_some_and(|j| {
                    j.state.is_pending()
                        && j.run_after_ms <= self.clock_ms
                        && (&j.queue, &j.pool, j.priority) == (q, pool, p.0)
                })
            })
        });
        ready_ok
            && fresh.keys == self.keys
            && fresh.pending == self.pending
            && fresh.running == self.running
            && fresh.finished == self.finished
            && fresh.counts == self.counts
            && fresh.held_bytes == self.held_bytes
    }

    pub fn get(&self, id: JobId) -> Option<&Job> {
        self.by_id.get(&id)
    }

    /// Payload and result bytes the jobs hold.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Jobs of a queue in a state, from the index.
    pub fn count(&self, queue: &str, state: JobState) -> u64 {
        self.counts.get(queue).map_or(0, |c| c[state.index()])
    }

    /// Jobs in a state over all queues.
    pub fn count_all(&self, state: JobState) -> u64 {
        self.counts.values().map(|c| c[state.index()]).sum()
    }

    /// Queued and failed (waiting) jobs of a queue: what its cap counts.
    pub fn pending_in(&self, queue: &str) -> u64 {
        self.count(queue, JobState::Queued) + self.count(queue, JobState::Failed)
    }

    /// The cap on a queue's pending jobs.
    pub fn cap_of(&self, queue: &str) -> u32 {
        self.queues.get(queue).and_then(|c| c.max_queued).unwrap_or(DEFAULT_MAX_QUEUED)
    }

    /// Running jobs whose lease expired at `now_ms`, oldest expiry first, at
    /// most `limit`: what the leader's reaper proposes to reap.
    pub fn expired(&self, now_ms: u64, limit: usize) -> Vec<(JobId, LeaseToken)> {
        self.running
            .range(..=(now_ms, JobId::MAX))
            .filter_map(|(_, id)| Some((*id, self.by_id.get(id)?.lease.as_ref()?.token)))
            .take(limit)
            .collect()
    }

    /// How many finished jobs a `Compact` with these arguments would remove
    /// (before its per-operation bound), so the leader proposes one only
    /// when there is something to do.
    pub fn compactable(&self, finished_before_ms: u64, keep_finished: u32) -> usize {
        let old = self.finished.range(..(finished_before_ms, 0)).count();
        old.max(self.finished.len().saturating_sub(keep_finished as usize))
    }

    /// The numbers of every known queue, without walking the jobs.
    pub fn queue_numbers(&self) -> Vec<QueueNumbers> {
        self.queue_counters
            .iter()
            .map(|(q, counters)| QueueNumbers {
                queue: q.clone(),
                config: self.queues.get(q).cloned().unwrap_or_default(),
                by_state: self.counts.get(q).copied().unwrap_or_default(),
                oldest_ready_ms: self
                    .pending
                    .get(q)
                    .and_then(|p| p.first())
                    .map(|(t, _)| *t)
                    .filter(|t| *t <= self.clock_ms),
                counters: *counters,
            })
            .collect()
    }

    /// Add one job to the derived indices (it must not be in them).
    fn index(&mut self, id: JobId) {
        let Some(job) = self.by_id.get(&id) else { return };
        if let Some(k) = &job.idempotency_key {
            self.keys.insert(k.clone(), id);
        }
        self.counts.entry(job.queue.clone()).or_default()[job.state.index()] += 1;
        self.held_bytes += held(job);
        match job.state {
            JobState::Queued | JobState::Failed => {
                self.pending.entry(job.queue.clone()).or_default().insert((job.run_after_ms, id));
                if self.promoted.get(&job.queue).is_some_and(|p| job.run_after_ms <= *p) {
                    let key = (job.queue.clone(), job.pool.clone());
                    self.ready.entry(key).or_default().insert((Reverse(job.priority), id));
                }
            }
            JobState::Running => {
                if let Some(l) = &job.lease {
                    self.running.insert((l.expires_ms, id));
                }
            }
            JobState::Succeeded | JobState::Dead | JobState::Cancelled => {
                self.finished.insert((job.finished_ms.unwrap_or(job.updated_ms), id));
            }
        }
    }

    /// Take one job out of the derived indices, as [`Jobs::index`] put it in.
    fn unindex(&mut self, id: JobId) {
        let Some(job) = self.by_id.get(&id) else { return };
        if let Some(k) = &job.idempotency_key {
            self.keys.remove(k);
        }
        if let Some(c) = self.counts.get_mut(&job.queue) {
            c[job.state.index()] -= 1;
            if c.iter().all(|n| *n == 0) {
                self.counts.remove(&job.queue);
            }
        }
        self.held_bytes -= held(job);
        match job.state {
            JobState::Queued | JobState::Failed => {
                if let Some(p) = self.pending.get_mut(&job.queue) {
                    p.remove(&(job.run_after_ms, id));
                    if p.is_empty() {
                        self.pending.remove(&job.queue);
                    }
                }
                let key = (job.queue.clone(), job.pool.clone());
                if let Some(r) = self.ready.get_mut(&key) {
                    r.remove(&(Reverse(job.priority), id));
                    if r.is_empty() {
                        self.ready.remove(&key);
                    }
                }
            }
            JobState::Running => {
                if let Some(l) = &job.lease {
                    self.running.remove(&(l.expires_ms, id));
                }
            }
            JobState::Succeeded | JobState::Dead | JobState::Cancelled => {
                self.finished.remove(&(job.finished_ms.unwrap_or(job.updated_ms), id));
            }
        }
    }

    /// Change one job, keeping the indices in step. `f` must not change
    /// the job's id.
    fn update<T>(&mut self, id: JobId, f: impl FnOnce(&mut Job) -> T) -> Option<T> {
        if !self.by_id.contains_key(&id) {
            return None;
        }
        self.unindex(id);
        let job = self.by_id.get_mut(&id).expect("checked above");
        let out = f(job);
        self.index(id);
        Some(out)
    }

    /// Move a queue's pending jobs that are due by the clock into its ready sets.
    fn promote(&mut self, queue: &str) {
        let clock = self.clock_ms;
        let from = self.promoted.get(queue).copied();
        if from.is_some_and(|f| f >= clock) {
            return;
        }
        if let Some(pending) = self.pending.get(queue) {
            let lower = match from {
                Some(f) => std::ops::Bound::Excluded((f, JobId::MAX)),
                None => std::ops::Bound::Unbounded,
            };
            let due: Vec<JobId> =
                pending.range((lower, std::ops::Bound::Included((clock, JobId::MAX)))).map(|(_, id)| *id).collect();
            for id in due {
                let job = &self.by_id[&id];
                let key = (job.queue.clone(), job.pool.clone());
                self.ready.entry(key).or_default().insert((Reverse(job.priority), id));
            }
        }
        self.promoted.insert(queue.to_string(), clock);
    }
}

/// Payload and result bytes a job holds.
fn held(job: &Job) -> u64 {
    (job.payload.len() + job.result.as_ref().map_or(0, String::len)) as u64
}

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
#[cfg(test)]
mod tests;
