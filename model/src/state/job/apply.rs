//! Validation and apply of each job operation. Every operation checks
//! everything before it changes anything, so a refusal leaves the state as
//! it was; the other operations of the group go on.

use super::*;
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};
use crate::state::history::field;
use crate::state::{validate_name, ControlState, DesiredState};

/// Most operations in one `Command::Jobs` (a batch enqueue is up to 1,000;
/// the group commit of claims and reports adds more).
pub const MAX_OPS: usize = 10_000;
/// Longest lease a claim or renewal may ask for (the settings' bound on
/// `WORKER_LEASE_TTL_SECONDS`).
pub const MAX_LEASE_MS: u64 = 999_999_000;
/// Furthest ahead a job may be scheduled.
pub const MAX_DELAY_MS: u64 = 366 * 24 * 3_600_000;
/// Longest retry delay a backoff may set.
pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 3_600_000;
/// Longest idempotency key.
pub const MAX_KEY_LEN: usize = 256;
/// Longest reason an operator gives.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most log lines one renewal or finish carries.
pub const MAX_LOG_LINES_PER_OP: usize = 1_000;
/// Most jobs one `Compact` removes (the leader proposes more rounds).
pub const MAX_COMPACT: usize = 10_000;

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorKind::Invalid, message)
}

fn too_large(what: &str, max: usize) -> CommandError {
    CommandError::new(ErrorKind::TooLarge, format!("{what} is over {max} bytes"))
}

fn job_not_found(id: JobId) -> CommandError {
    CommandError::new(ErrorKind::NotFound, format!("job {id} not found"))
}

fn lease_lost(id: JobId) -> CommandError {
    CommandError::new(ErrorKind::LeaseLost, format!("job {id}: the lease is not (or no longer) yours"))
}

fn limit(message: String) -> CommandError {
    CommandError::new(ErrorKind::Limit, message)
}

fn check_text(what: &str, text: &str, max: usize) -> Result<(), CommandError> {
    if text.len() > max {
        return Err(too_large(what, max));
    }
    Ok(())
}

fn check_logs(logs: &[String]) -> Result<(), CommandError> {
    if logs.len() > MAX_LOG_LINES_PER_OP {
        return Err(invalid(format!("at most {MAX_LOG_LINES_PER_OP} log lines at once")));
    }
    if logs.iter().any(|l| l.len() > MAX_LOG_LINE) {
        return Err(invalid(format!("a log line is over {MAX_LOG_LINE} bytes")));
    }
    Ok(())
}

fn check_lease_ms(lease_ms: u64) -> Result<(), CommandError> {
    if lease_ms == 0 || lease_ms > MAX_LEASE_MS {
        return Err(invalid(format!("lease_ms must be 1-{MAX_LEASE_MS}")));
    }
    Ok(())
}

impl NewJob {
    fn validate(&self, at_ms: u64) -> Result<(), CommandError> {
        validate_name("queue", &self.queue)?;
        validate_name("kind", &self.kind)?;
        if let Some(p) = &self.pool {
            validate_name("pool", p)?;
        }
        check_text("payload", &self.payload, MAX_PAYLOAD_BYTES)?;
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(invalid(format!("max_attempts must be 1-{MAX_ATTEMPTS}")));
        }
        let b = self.backoff;
        if b.max_ms > MAX_BACKOFF_MS || b.base_ms > b.max_ms {
            return Err(invalid(format!("backoff needs base_ms <= max_ms <= {MAX_BACKOFF_MS}")));
        }
        if self.run_after_ms.is_some_and(|t| t > at_ms.saturating_add(MAX_DELAY_MS)) {
            return Err(invalid("run_after is more than a year ahead"));
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "idempotency_key must be 1-{MAX_KEY_LEN} bytes without control characters"
                )));
            }
        }
        Ok(())
    }
}

/// Who is claiming, as the worker runtime knows them.
pub(crate) struct Claimant {
    /// False for a worker whose desired state is not `running`, or quarantined.
    pub may_claim: bool,
    pub pool: Option<String>,
}

impl Jobs {
    /// Count a queue as known, within [`MAX_QUEUES`].
    fn know_queue(&mut self, queue: &str) -> Result<(), CommandError> {
        if !self.queue_counters.contains_key(queue) {
            if self.queue_counters.len() >= MAX_QUEUES {
                return Err(limit(format!("the cluster knows at most {MAX_QUEUES} queues")));
            }
            self.queue_counters.insert(queue.to_string(), JobCounters::default());
        }
        Ok(())
    }

    /// Advance the jobs' clock: by claims (so what is due by then is
    /// claimable) and by enqueues and requeues (so a job due now is
    /// claimable at once, whichever node's clock the claim comes with).
    fn tick(&mut self, at_ms: u64) {
        self.clock_ms = self.clock_ms.max(at_ms);
    }

    fn tally(&mut self, queue: &str, f: impl Fn(&mut JobCounters)) {
        f(&mut self.totals);
        if let Some(c) = self.queue_counters.get_mut(queue) {
            f(c);
        }
    }

    pub(crate) fn enqueue(&mut self, at_ms: u64, n: &NewJob) -> Result<JobReply, CommandError> {
        n.validate(at_ms)?;
        if let Some(job) = n.idempotency_key.as_ref().and_then(|k| self.keys.get(k)).and_then(|id| self.by_id.get(id)) {
            return Ok(JobReply::Enqueued { job: (**job).clone(), created: false });
        }
        if self.by_id.len() >= MAX_JOBS {
            return Err(limit(format!("the cluster holds at most {MAX_JOBS} jobs")));
        }
        let cap = self.cap_of(&n.queue);
        if self.pending_in(&n.queue) >= u64::from(cap) {
            return Err(limit(format!("queue {} is full: {cap} queued jobs", n.queue)));
        }
        if self.held_bytes + n.payload.len() as u64 > MAX_HELD_BYTES {
            return Err(limit(format!("the jobs hold {MAX_HELD_BYTES} bytes of payloads and results already")));
        }
        if !self.queue_counters.contains_key(&n.queue) && self.queue_counters.len() >= MAX_QUEUES {
            return Err(limit(format!("the cluster knows at most {MAX_QUEUES} queues")));
        }
        // Nothing can fail from here on.
        self.know_queue(&n.queue)?;
        self.tick(at_ms);
        self.job_seq += 1;
        let id = self.job_seq;
        let job = Job {
            id,
            queue: n.queue.clone(),
            kind: n.kind.clone(),
            payload: n.payload.clone(),
            priority: n.priority,
            pool: n.pool.clone(),
            run_after_ms: n.run_after_ms.unwrap_or(at_ms),
            idempotency_key: n.idempotency_key.clone(),
            max_attempts: n.max_attempts,
            backoff: n.backoff,
            state: JobState::Queued,
            attempts: Vec::new(),
            attempt_count: 0,
            lease: None,
            result: None,
            error: None,
            progress: None,
            created_ms: at_ms,
            updated_ms: at_ms,
            finished_ms: None,
            log_lines: 0,
            log_bytes: 0,
        };
        self.by_id.insert(id, Box::new(job.clone()));
        self.index(id);
        Ok(JobReply::Enqueued { job, created: true })
    }

    pub(crate) fn claim(&mut self, at_ms: u64, c: &Claim, who: &Claimant) -> Result<JobReply, CommandError> {
        validate_name("worker_id", &c.worker)?;
        if c.queues.is_empty() || c.queues.len() > MAX_CLAIM_QUEUES {
            return Err(invalid(format!("a claim names 1-{MAX_CLAIM_QUEUES} queues")));
        }
        for q in &c.queues {
            validate_name("queue", q)?;
        }
        if !(1..=MAX_CLAIM).contains(&c.max_jobs) {
            return Err(invalid(format!("max_jobs must be 1-{MAX_CLAIM}")));
        }
        check_lease_ms(c.lease_ms)?;
        self.tick(at_ms);
        let mut jobs = Vec::new();
        if !who.may_claim {
            return Ok(JobReply::Claimed { jobs });
        }
        for (i, q) in c.queues.iter().enumerate() {
            if c.queues[..i].contains(q) || self.queues.get(q).is_some_and(|cfg| cfg.paused) {
                continue;
            }
            self.promote(q);
            while jobs.len() < c.max_jobs as usize {
                let Some(id) = self.next_ready(q, who.pool.as_deref()) else { break };
                jobs.push(self.start(id, at_ms, c));
            }
        }
        Ok(JobReply::Claimed { jobs })
    }

    /// The first ready job of `queue` that a worker of `pool` may take.
    fn next_ready(&self, queue: &str, pool: Option<&str>) -> Option<JobId> {
        let key = |p: Option<&str>| (queue.to_string(), p.map(str::to_string));
        let any = self.ready.get(&key(None)).and_then(|r| r.first());
        let own = pool.and_then(|p| self.ready.get(&key(Some(p)))).and_then(|r| r.first());
        match (any, own) {
            (Some(a), Some(o)) => Some(a.min(o).1),
            (a, o) => a.or(o).map(|k| k.1),
        }
    }

    /// Start an attempt of a ready job under a new lease.
    fn start(&mut self, id: JobId, at_ms: u64, c: &Claim) -> Job {
        self.lease_seq += 1;
        let token = LeaseToken { seq: self.lease_seq, nonce: c.nonce };
        let queue = self.by_id[&id].queue.clone();
        self.tally(&queue, |n| n.claims += 1);
        self.update(id, |job| {
            job.state = JobState::Running;
            job.attempt_count += 1;
            job.attempts.reserve_exact(1);
            job.attempts.push(Attempt {
                n: job.attempt_count,
                worker: c.worker.clone(),
                claimed_ms: at_ms,
                ended_ms: None,
                outcome: AttemptOutcome::Running,
            });
            if job.attempts.len() > MAX_ATTEMPT_RECORDS {
                job.attempts.remove(0);
            }
            job.lease = Some(Lease { worker: c.worker.clone(), token, expires_ms: at_ms.saturating_add(c.lease_ms) });
            job.progress = None;
            job.updated_ms = at_ms;
            job.clone()
        })
        .expect("a ready job exists")
    }

    /// Whether `bytes` more fit within [`MAX_HELD_BYTES`].
    fn fits(&self, bytes: usize) -> bool {
        self.held_bytes + bytes as u64 <= MAX_HELD_BYTES
    }

    /// The job, if `worker` holds it under `lease` and the lease has not
    /// expired at `at_ms`.
    fn fenced(&self, id: JobId, worker: &str, lease: &LeaseToken, at_ms: u64) -> Result<&Job, CommandError> {
        let job = self.by_id.get(&id).ok_or_else(|| job_not_found(id))?;
        match &job.lease {
            Some(l)
                if job.state == JobState::Running
                    && l.token == *lease
                    && l.worker == worker
                    && l.expires_ms > at_ms =>
            {
                Ok(job)
            }
            _ => Err(lease_lost(id)),
        }
    }

    /// How many of `logs` (from the front) the job still has room for, and
    /// their bytes, within its caps and the store's.
    fn room(&self, job: &Job, logs: &[String]) -> (u32, u64) {
        let (mut lines, mut bytes) = (0u32, 0u64);
        for l in logs {
            let b = l.len() as u64;
            if job.log_lines + lines >= MAX_LOG_LINES
                || job.log_bytes + bytes + b > MAX_LOG_BYTES
                || self.log_bytes + bytes + b > MAX_STORED_LOG_BYTES
            {
                break;
            }
            lines += 1;
            bytes += b;
        }
        (lines, bytes)
    }

    pub(crate) fn renew(&mut self, at_ms: u64, r: &Renew) -> Result<JobReply, CommandError> {
        check_lease_ms(r.lease_ms)?;
        if let Some(p) = &r.progress {
            check_text("progress", p, MAX_PROGRESS_BYTES)?;
        }
        check_logs(&r.logs)?;
        let job = self.fenced(r.job_id, &r.worker, &r.lease, at_ms)?;
        let (lines, bytes) = self.room(job, &r.logs);
        let progress = r.progress.clone().filter(|p| self.fits(p.len()));
        let expires_ms = at_ms.saturating_add(r.lease_ms);
        self.update(r.job_id, |job| {
            if let Some(l) = &mut job.lease {
                l.expires_ms = expires_ms;
            }
            if progress.is_some() {
                job.progress = progress;
            }
            job.log_lines += lines;
            job.log_bytes += bytes;
            job.updated_ms = at_ms;
        });
        Ok(JobReply::Renewed { job_id: r.job_id, expires_ms, logs_accepted: lines })
    }

    pub(crate) fn complete(&mut self, at_ms: u64, f: &Finish) -> Result<JobReply, CommandError> {
        if let Some(r) = &f.result {
            check_text("result", r, MAX_PAYLOAD_BYTES)?;
        }
        check_logs(&f.logs)?;
        let job = self.fenced(f.job_id, &f.worker, &f.lease, at_ms)?;
        let (lines, bytes) = self.room(job, &f.logs);
        let queue = job.queue.clone();
        let result = f.result.clone().filter(|r| self.fits(r.len()));
        self.tally(&queue, |n| n.completions += 1);
        let job = self
            .update(f.job_id, |job| {
                end_attempt(job, at_ms, AttemptOutcome::Succeeded);
                job.state = JobState::Succeeded;
                job.result = result;
                job.finished_ms = Some(at_ms);
                job.log_lines += lines;
                job.log_bytes += bytes;
                job.clone()
            })
            .expect("fenced");
        Ok(JobReply::Finished { job, logs_accepted: lines })
    }

    pub(crate) fn fail(&mut self, at_ms: u64, f: &Finish) -> Result<JobReply, CommandError> {
        if let Some(e) = &f.error {
            check_text("error", e, MAX_ERROR_BYTES)?;
        }
        check_logs(&f.logs)?;
        let job = self.fenced(f.job_id, &f.worker, &f.lease, at_ms)?;
        let (lines, bytes) = self.room(job, &f.logs);
        let queue = job.queue.clone();
        self.tally(&queue, |n| n.failures += 1);
        let mut error = f.error.clone().unwrap_or_else(|| "failed".to_string());
        if !self.fits(error.len()) {
            error = cut(&error, MAX_ATTEMPT_ERROR).to_string();
        }
        let outcome =
            AttemptOutcome::Failed { error: cut(&error, MAX_ATTEMPT_ERROR).to_string(), retryable: f.retryable };
        let job = self.retry_or_bury(f.job_id, at_ms, outcome, error, f.retryable, (lines, bytes));
        Ok(JobReply::Finished { job, logs_accepted: lines })
    }

    /// End a running job's attempt with `outcome`; then retry it after its
    /// backoff if `retryable` and attempts are left, else it is dead.
    fn retry_or_bury(
        &mut self,
        id: JobId,
        at_ms: u64,
        outcome: AttemptOutcome,
        error: String,
        retryable: bool,
        (lines, bytes): (u32, u64),
    ) -> Job {
        let job = &self.by_id[&id];
        let retry = retryable && job.attempt_count < job.max_attempts;
        if !retry {
            let queue = job.queue.clone();
            self.tally(&queue, |n| n.dead += 1);
        }
        self.update(id, |job| {
            end_attempt(job, at_ms, outcome);
            if retry {
                job.state = JobState::Failed;
                job.run_after_ms = at_ms.saturating_add(job.backoff.delay(job.id, job.attempt_count));
            } else {
                job.state = JobState::Dead;
                job.finished_ms = Some(at_ms);
            }
            job.error = Some(error);
            job.log_lines += lines;
            job.log_bytes += bytes;
            job.clone()
        })
        .expect("the job exists")
    }

    pub(crate) fn reap(&mut self, at_ms: u64, id: JobId, lease: &LeaseToken) -> Result<JobReply, CommandError> {
        let current = self.by_id.get(&id).is_some_and(|job| {
            job.state == JobState::Running
                && job.lease.as_ref().is_some_and(|l| l.token == *lease && l.expires_ms <= at_ms)
        });
        if !current {
            return Ok(JobReply::Reaped { job: None });
        }
        let queue = self.by_id[&id].queue.clone();
        self.tally(&queue, |n| n.expirations += 1);
        let job = self.retry_or_bury(id, at_ms, AttemptOutcome::Expired, "lease expired".into(), true, (0, 0));
        Ok(JobReply::Reaped { job: Some(job) })
    }

    pub(crate) fn cancel(&mut self, at_ms: u64, id: JobId) -> Result<Job, CommandError> {
        let job = self.by_id.get(&id).ok_or_else(|| job_not_found(id))?;
        if job.state.is_finished() {
            return Err(CommandError::new(ErrorKind::Conflict, format!("job {id} is {} already", job.state.as_str())));
        }
        Ok(self
            .update(id, |job| {
                if job.state == JobState::Running {
                    end_attempt(job, at_ms, AttemptOutcome::Cancelled);
                }
                job.state = JobState::Cancelled;
                job.finished_ms = Some(at_ms);
                job.updated_ms = at_ms;
                job.clone()
            })
            .expect("checked above"))
    }

    pub(crate) fn requeue(&mut self, at_ms: u64, id: JobId) -> Result<Job, CommandError> {
        let job = self.by_id.get(&id).ok_or_else(|| job_not_found(id))?;
        if !matches!(job.state, JobState::Dead | JobState::Failed | JobState::Cancelled) {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("job {id} is {}: only dead, failed or cancelled jobs are requeued", job.state.as_str()),
            ));
        }
        if job.state != JobState::Failed {
            let cap = self.cap_of(&job.queue);
            if self.pending_in(&job.queue) >= u64::from(cap) {
                return Err(limit(format!("queue {} is full: {cap} queued jobs", job.queue)));
            }
        }
        self.tick(at_ms);
        Ok(self
            .update(id, |job| {
                job.state = JobState::Queued;
                job.attempt_count = 0;
                job.run_after_ms = at_ms;
                job.finished_ms = None;
                job.result = None;
                job.updated_ms = at_ms;
                job.clone()
            })
            .expect("checked above"))
    }

    /// Cancel every pending job of a queue; returns how many.
    pub(crate) fn clear_queue(&mut self, at_ms: u64, queue: &str) -> Result<u32, CommandError> {
        validate_name("queue", queue)?;
        if !self.queue_counters.contains_key(queue) {
            return Err(CommandError::new(ErrorKind::NotFound, format!("queue {queue:?} not found")));
        }
        let ids: Vec<JobId> = self.pending.get(queue).into_iter().flatten().map(|(_, id)| *id).collect();
        for id in &ids {
            self.cancel(at_ms, *id).expect("a pending job can be cancelled");
        }
        Ok(ids.len() as u32)
    }

    pub(crate) fn set_queue(&mut self, queue: &str, f: impl FnOnce(&mut QueueConfig)) -> Result<(), CommandError> {
        validate_name("queue", queue)?;
        self.know_queue(queue)?;
        let cfg = self.queues.entry(queue.to_string()).or_default();
        f(cfg);
        if *cfg == QueueConfig::default() {
            self.queues.remove(queue);
            // A queue only named by a setting, now back to the defaults, is forgotten.
            let unused = self.queue_counters.get(queue).is_some_and(|c| *c == JobCounters::default());
            if unused && !self.counts.contains_key(queue) {
                self.queue_counters.remove(queue);
            }
        }
        Ok(())
    }

    /// Drop finished jobs that finished before the cutoff, then the oldest
    /// past `keep_finished`, at most [`MAX_COMPACT`]; forget queues left
    /// with no jobs and no settings.
    pub(crate) fn compact(&mut self, finished_before_ms: u64, keep_finished: u32) -> Vec<JobId> {
        let over = self.finished.len().saturating_sub(keep_finished as usize);
        let removed: Vec<JobId> = self
            .finished
            .iter()
            .enumerate()
            .take_while(|(i, (t, _))| *t < finished_before_ms || *i < over)
            .take(MAX_COMPACT)
            .map(|(_, (_, id))| *id)
            .collect();
        let mut queues = BTreeSet::new();
        for id in &removed {
            self.unindex(*id);
            if let Some(job) = self.by_id.remove(id) {
                queues.insert(job.queue);
            }
        }
        for q in queues {
            if !self.counts.contains_key(&q) && !self.queues.contains_key(&q) {
                self.queue_counters.remove(&q);
                self.promoted.remove(&q);
            }
        }
        removed
    }
}

/// Close the running attempt of a job and drop its lease.
fn end_attempt(job: &mut Job, at_ms: u64, outcome: AttemptOutcome) {
    if let Some(a) = job.attempts.last_mut().filter(|a| a.outcome == AttemptOutcome::Running) {
        a.ended_ms = Some(at_ms);
        a.outcome = outcome;
    }
    job.lease = None;
    job.updated_ms = at_ms;
}

impl ControlState {
    pub(crate) fn job_ops(&mut self, req: &Request, ops: &JobOps) -> Response {
        if ops.ops.is_empty() || ops.ops.len() > MAX_OPS {
            return Err(invalid(format!("a job command carries 1-{MAX_OPS} operations")));
        }
        Ok(Reply::Jobs(ops.ops.iter().map(|op| self.job_op_observed(req, op)).collect()))
    }

    pub(crate) fn job_op(&mut self, req: &Request, op: &JobOp) -> Result<JobReply, CommandError> {
        let at = req.at_ms;
        match op {
            JobOp::Enqueue(n) => self.jobs.enqueue(at, n),
            JobOp::Claim(c) => {
                let who = match self.workers.get(&c.worker) {
                    Some(w) => Claimant {
                        may_claim: w.desired_state == DesiredState::Running && !w.quarantined,
                        pool: Some(w.pool.to_string()),
                    },
                    None => Claimant { may_claim: true, pool: None },
                };
                self.jobs.claim(at, c, &who)
            }
            JobOp::Renew(r) => self.jobs.renew(at, r),
            JobOp::Complete(f) => self.jobs.complete(at, f),
            JobOp::Fail(f) => self.jobs.fail(at, f),
            JobOp::Reap { job_id, lease } => self.jobs.reap(at, *job_id, lease),
            JobOp::Compact { finished_before_ms, keep_finished } => {
                Ok(JobReply::Compacted { removed: self.jobs.compact(*finished_before_ms, *keep_finished) })
            }
            JobOp::Cancel { job_id, reason } => {
                if let Some(r) = reason {
                    check_text("reason", r, MAX_REASON_BYTES)?;
                }
                let job = self.jobs.cancel(at, *job_id)?;
                let subject = format!("job:{job_id}");
                self.changed_as(req, "job.cancel", subject.clone(), vec![field("state", "cancelled")]);
                self.audit_as(req, "job.cancel", &subject, reason.clone());
                Ok(JobReply::Changed { job })
            }
            JobOp::Requeue { job_id } => {
                let job = self.jobs.requeue(at, *job_id)?;
                let subject = format!("job:{job_id}");
                self.changed_as(req, "job.requeue", subject.clone(), vec![field("state", "queued")]);
                self.audit_as(req, "job.requeue", &subject, None);
                Ok(JobReply::Changed { job })
            }
            JobOp::ClearQueue { queue } => {
                let cancelled = self.jobs.clear_queue(at, queue)?;
                let subject = format!("queue:{queue}");
                self.changed_as(req, "queue.clear", subject.clone(), vec![field("cancelled", cancelled)]);
                self.audit_as(req, "queue.clear", &subject, Some(format!("cancelled {cancelled} jobs")));
                Ok(JobReply::Cleared { queue: queue.clone(), cancelled })
            }
            JobOp::SetQueuePaused { queue, paused } => {
                self.jobs.set_queue(queue, |c| c.paused = *paused)?;
                let action = if *paused { "queue.pause" } else { "queue.resume" };
                let subject = format!("queue:{queue}");
                self.changed_as(req, action, subject.clone(), vec![field("paused", paused)]);
                self.audit_as(req, action, &subject, None);
                Ok(JobReply::QueueSet { queue: queue.clone() })
            }
            JobOp::SetQueueCap { queue, max_queued } => {
                if max_queued.is_some_and(|m| m as usize > MAX_JOBS) {
                    return Err(invalid(format!("max_queued must be at most {MAX_JOBS}")));
                }
                self.jobs.set_queue(queue, |c| c.max_queued = *max_queued)?;
                let shown = max_queued.map_or_else(|| format!("default ({DEFAULT_MAX_QUEUED})"), |m| m.to_string());
                let subject = format!("queue:{queue}");
                self.changed_as(req, "queue.cap", subject.clone(), vec![field("max_queued", &shown)]);
                self.audit_as(req, "queue.cap", &subject, Some(format!("max_queued {shown}")));
                Ok(JobReply::QueueSet { queue: queue.clone() })
            }
        }
    }
}
