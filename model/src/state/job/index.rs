//! The jobs as the state holds them, with the indices derived from them:
//! what claims, the reaper, compaction, caps and stats read instead of
//! walking every job.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::*;

/// Key of a ready set: higher priority first, then FIFO by id.
pub type ReadyKey = (Reverse<i32>, JobId);

/// The jobs, what is replicated beside them, and their derived indices.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    /// Boxed: a B-tree node holds up to 11 values and is often half full,
    /// so a 360-byte `Job` inline would cost twice its size.
    pub by_id: BTreeMap<JobId, Box<Job>>,
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
    pub(super) pending: BTreeMap<String, BTreeSet<(u64, JobId)>>,
    /// Per queue, how far `pending` has been moved into `ready`: promotion
    /// is lazy (a claim promotes the queues it reads), so that a job
    /// operation does not touch every queue.
    pub(super) promoted: BTreeMap<String, u64>,
    /// Per (queue, pool), pending jobs promoted as claimable.
    pub(super) ready: BTreeMap<(String, Option<String>), BTreeSet<ReadyKey>>,
    /// Running jobs by `(expires_ms, id)`, for the reaper.
    pub(super) running: BTreeSet<(u64, JobId)>,
    /// Finished jobs by `(finished_ms, id)`, for compaction.
    pub(super) finished: BTreeSet<(u64, JobId)>,
    /// Jobs per queue and state (indexed by `JobState as usize`).
    pub(super) counts: BTreeMap<String, [u64; 6]>,
    /// Payload, result, error and progress bytes held, for [`MAX_HELD_BYTES`].
    pub(super) held_bytes: u64,
    /// Log bytes the log store holds for all jobs, for [`MAX_STORED_LOG_BYTES`].
    pub(super) log_bytes: u64,
}

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
    by_id: BTreeMap<JobId, Box<Job>>,
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
    by_id: &'a BTreeMap<JobId, Box<Job>>,
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
        self.log_bytes = 0;
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
            && fresh.log_bytes == self.log_bytes
    }

    pub fn get(&self, id: JobId) -> Option<&Job> {
        self.by_id.get(&id).map(|j| &**j)
    }

    /// Every job, oldest (lowest id) first; `.rev()` for newest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Job> + '_ {
        self.by_id.values().map(|j| &**j)
    }

    /// Jobs with ids in `range` (a cursor's page), oldest first.
    pub fn range(&self, range: impl std::ops::RangeBounds<JobId>) -> impl DoubleEndedIterator<Item = &Job> + '_ {
        self.by_id.range(range).map(|(_, j)| &**j)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Payload, result, error and progress bytes the jobs hold.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Log bytes the log store holds for all jobs.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Jobs of a queue in a state, from the index.
    pub fn count(&self, queue: &str, state: JobState) -> u64 {
        self.counts.get(queue).map_or(0, |c| c[state.index()])
    }

    /// Jobs in a state over all queues.
    pub fn count_all(&self, state: JobState) -> u64 {
        self.counts.values().map(|c| c[state.index()]).sum()
    }

    /// The earliest `run_after_ms` after `now_ms` among the pending jobs of
    /// `queues`: when a waiting claim that found nothing should look again.
    /// A range read of the pending index per queue, not a walk over the jobs.
    pub fn next_due(&self, queues: &[String], now_ms: u64) -> Option<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        queues
            .iter()
            .filter_map(|q| self.pending.get(q)?.range((Excluded((now_ms, JobId::MAX)), Unbounded)).next())
            .map(|(run_after, _)| *run_after)
            .min()
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
    pub(super) fn index(&mut self, id: JobId) {
        let Some(job) = self.by_id.get(&id) else { return };
        if let Some(k) = &job.idempotency_key {
            self.keys.insert(k.clone(), id);
        }
        self.counts.entry(job.queue.clone()).or_default()[job.state.index()] += 1;
        self.held_bytes += held(job);
        self.log_bytes += job.log_bytes;
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
    pub(super) fn unindex(&mut self, id: JobId) {
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
        self.log_bytes -= job.log_bytes;
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
    pub(super) fn update<T>(&mut self, id: JobId, f: impl FnOnce(&mut Job) -> T) -> Option<T> {
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
    pub(super) fn promote(&mut self, queue: &str) {
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
pub(super) fn held(job: &Job) -> u64 {
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    (job.payload.len() + text(&job.result) + text(&job.error) + text(&job.progress)) as u64
}

/// `text` cut to at most `max` bytes, at a char boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
