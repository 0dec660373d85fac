//! [`JobsClient::run`]: the worker loop. A runtime heartbeat task keeps the
//! desired state fresh; the claim loop asks for as many jobs as there are
//! free slots while the state is `running` (paused, draining, stopped or
//! quarantined: no new claims, jobs in hand run to their end); each job runs
//! its handler beside a renewal task that carries its logs and progress, and
//! is dropped (so a child process dies with it) when its lease is lost.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{watch, Semaphore};

use crate::logs::{LogBuffer, LogCaps};
use crate::{ClaimedJob, Desired, Finished, JobsClient, MAX_PROGRESS_BYTES};

/// A handler's failure: its error text and whether the job may run again.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    pub error: String,
    pub retryable: bool,
}

/// What a handler sees of its job besides the job itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    shared: Arc<JobShared>,
}

#[derive(Debug)]
struct JobShared {
    logs: Mutex<LogBuffer>,
    progress: Mutex<Option<String>>,
    lost: watch::Sender<bool>,
}

impl JobContext {
    /// A context of its own, for a handler run outside [`JobsClient::run`] (tests).
    pub fn new(caps: LogCaps) -> Self {
        let (lost, _) = watch::channel(false);
        Self {
            shared: Arc::new(JobShared { logs: Mutex::new(LogBuffer::new(caps)), progress: Mutex::new(None), lost }),
        }
    }

    /// Buffer one log line, sent with the next renewal; false if it was
    /// dropped (buffer full, or the job's log reached its cap).
    pub fn log(&self, line: &str) -> bool {
        self.shared.logs.lock().expect("log buffer lock is never poisoned").push(line)
    }

    /// Set the progress note sent with the next renewal (cut to 1 KiB).
    pub fn progress(&self, note: &str) {
        let note = crate::logs::cut(note, MAX_PROGRESS_BYTES).to_string();
        *self.shared.progress.lock().expect("progress lock is never poisoned") = Some(note);
    }

    /// True once the lease is known lost: any result would be refused.
    pub fn is_lease_lost(&self) -> bool {
        *self.shared.lost.borrow()
    }

    /// Resolves when the lease is lost.
    pub async fn lease_lost(&self) {
        let mut rx = self.shared.lost.subscribe();
        // The sender lives in `shared`, which `self` holds: wait_for cannot fail.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    fn mark_lost(&self) {
        self.shared.lost.send_replace(true);
    }

    /// The next batch of buffered lines (what a renewal would send).
    pub fn take_logs(&self) -> Vec<String> {
        self.shared.logs.lock().expect("log buffer lock is never poisoned").take_batch()
    }

    fn put_back(&self, batch: Vec<String>) {
        self.shared.logs.lock().expect("log buffer lock is never poisoned").put_back(batch);
    }

    fn accepted(&self, accepted: Option<u32>, sent: usize) {
        if let Some(n) = accepted {
            self.shared.logs.lock().expect("log buffer lock is never poisoned").accepted(n, sent);
        }
    }

    fn pending_logs(&self) -> usize {
        self.shared.logs.lock().expect("log buffer lock is never poisoned").len()
    }

    fn take_progress(&self) -> Option<String> {
        self.shared.progress.lock().expect("progress lock is never poisoned").take()
    }
}

/// Counters of a worker loop, shared with the runtime heartbeat.
#[derive(Debug, Default)]
pub struct RunStats {
    pub claimed: AtomicU64,
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub lease_lost: AtomicU64,
    /// Completes or fails whose outcome is unknown (see [`Finished::MaybeApplied`]).
    pub unknown: AtomicU64,
    pub in_flight: AtomicU64,
    pub claim_errors: AtomicU64,
}

/// A copy of [`RunStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub claimed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub lease_lost: u64,
    pub unknown: u64,
    pub in_flight: u64,
    pub claim_errors: u64,
}

impl RunStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            claimed: l(&self.claimed),
            succeeded: l(&self.succeeded),
            failed: l(&self.failed),
            lease_lost: l(&self.lease_lost),
            unknown: l(&self.unknown),
            in_flight: l(&self.in_flight),
            claim_errors: l(&self.claim_errors),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl JobsClient {
    /// Run jobs with `handler` until `shutdown` resolves, then stop claiming
    /// and wait for the jobs in hand. `stats` is updated as jobs end.
    pub async fn run<H, Fut>(self: Arc<Self>, handler: H, stats: Arc<RunStats>, shutdown: impl Future<Output = ()>)
    where
        H: Fn(ClaimedJob, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, JobFailure>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency as usize));
        let (desired_tx, mut desired) = watch::channel(None::<Desired>);
        let (stop_tx, stop_rx) = watch::channel(false);
        let beat = tokio::spawn(self.clone().runtime_heartbeats(desired_tx, stats.clone(), stop_rx));
        tokio::pin!(shutdown);
        let mut claim_failures = 0u32;
        loop {
            // Wait for a desired state that allows claims.
            let ready = async {
                let _ = desired.wait_for(|d| d.as_ref().is_some_and(Desired::may_claim)).await;
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ready => {}
            }
            let first = tokio::select! {
                _ = &mut shutdown => break,
                p = slots.clone().acquire_owned() => p.expect("the slot semaphore is never closed"),
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let claim = self.claim(permits.len() as u32, self.cfg.wait_ms);
            let jobs = tokio::select! {
                _ = &mut shutdown => break,
                r = claim => r,
            };
            match jobs {
                Ok(jobs) => {
                    claim_failures = 0;
                    for job in jobs.into_iter().take(permits.len()) {
                        let permit = permits.pop().expect("at most one job per permit");
                        inc(&stats.claimed);
                        let (client, handler, stats) = (self.clone(), handler.clone(), stats.clone());
                        tokio::spawn(async move {
                            client.run_job(job, handler, &stats).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    inc(&stats.claim_errors);
                    claim_failures += 1;
                    tracing::warn!(worker = %self.cfg.worker_id, error = %e, "claim failed");
                    let pause = self.cfg.retry.backoff(claim_failures.min(16));
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        // Jobs in hand run to their end (or lose their lease).
        let _ = slots.acquire_many(self.cfg.concurrency).await;
        stop_tx.send_replace(true);
        let _ = beat.await;
    }

    /// Heartbeat the runtime every `heartbeat_every`, publishing the desired state.
    async fn runtime_heartbeats(
        self: Arc<Self>,
        desired: watch::Sender<Option<Desired>>,
        stats: Arc<RunStats>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failures = 0u32;
        loop {
            let status = match desired.borrow().as_ref() {
                Some(d) if d.quarantined => "paused".to_string(),
                Some(d) => d.state.clone(),
                None => "running".to_string(),
            };
            let pause = match self.heartbeat(&status, &stats.snapshot()).await {
                Ok(d) => {
                    failures = 0;
                    desired.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&d);
                        if changed {
                            tracing::info!(worker = %self.cfg.worker_id, state = %d.state, quarantined = d.quarantined, "desired state");
                        }
                        *cur = Some(d);
                        changed
                    });
                    self.cfg.heartbeat_every
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(worker = %self.cfg.worker_id, error = %e, "runtime heartbeat failed");
                    self.cfg.retry.backoff(failures.min(16)).min(self.cfg.heartbeat_every)
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One job: handler and renewals side by side, then complete or fail.
    async fn run_job<H, Fut>(self: Arc<Self>, job: ClaimedJob, handler: Arc<H>, stats: &RunStats)
    where
        H: Fn(ClaimedJob, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, JobFailure>> + Send + 'static,
    {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let ctx = JobContext::new(self.cfg.log_caps);
        let (stop_tx, stop_rx) = watch::channel(false);
        let renewer = tokio::spawn(self.clone().renew_loop(job.clone(), ctx.clone(), stop_rx));
        let outcome = tokio::select! {
            r = handler(job.clone(), ctx.clone()) => Some(r),
            // Dropping the handler's future ends its work (a child process
            // spawned with kill_on_drop dies with it).
            _ = ctx.lease_lost() => None,
        };
        // Let a renewal in flight finish, so its log lines are not lost.
        stop_tx.send_replace(true);
        let _ = renewer.await;
        match outcome {
            None => inc(&stats.lease_lost),
            Some(r) => self.report(&job, &ctx, r, stats).await,
        }
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    async fn report(&self, job: &ClaimedJob, ctx: &JobContext, r: Result<Option<Value>, JobFailure>, stats: &RunStats) {
        // Lines beyond one call's batch go in renewals first.
        while ctx.pending_logs() > self.cfg.log_caps.max_lines_per_call && !ctx.is_lease_lost() {
            let batch = ctx.take_logs();
            match self.renew(job, None, &batch).await {
                Ok(r) => ctx.accepted(r.logs_accepted, batch.len()),
                Err(e) if e.is_lease_lost() => ctx.mark_lost(),
                Err(_) => break,
            }
        }
        if ctx.is_lease_lost() {
            inc(&stats.lease_lost);
            return;
        }
        let logs = ctx.take_logs();
        let finished = match &r {
            Ok(result) => self.complete(job, result.as_ref(), &logs).await,
            Err(f) => self.fail(job, &f.error, f.retryable, &logs).await,
        };
        let id = &job.job_id;
        match finished {
            Ok(Finished::Accepted { state, .. }) => {
                tracing::debug!(job = %id, %state, "job finished");
                inc(if r.is_ok() { &stats.succeeded } else { &stats.failed });
            }
            Ok(Finished::LeaseLost) => {
                tracing::warn!(job = %id, "lease lost before the job was reported");
                inc(&stats.lease_lost);
            }
            Ok(Finished::MaybeApplied) => {
                tracing::warn!(job = %id, "outcome unknown: an earlier try may have been applied, the retry found the lease gone");
                inc(&stats.unknown);
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not report the job; its lease will expire");
                inc(if e.maybe_applied() { &stats.unknown } else { &stats.lease_lost });
            }
        }
    }

    /// Renew every `renew_every` until stopped or the lease is lost. A lease
    /// not renewed within the TTL by the local clock counts as lost.
    async fn renew_loop(self: Arc<Self>, job: ClaimedJob, ctx: JobContext, mut stop: watch::Receiver<bool>) {
        let mut deadline = Instant::now() + self.cfg.lease_ttl;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.cfg.renew_every) => {}
            }
            let sent_at = Instant::now();
            let batch = ctx.take_logs();
            let progress = ctx.take_progress();
            // Retries stop at the lease's end: past it the lease is gone anyway.
            let renewal = tokio::time::timeout_at(deadline.into(), self.renew(&job, progress.as_deref(), &batch));
            let Ok(renewal) = renewal.await else {
                tracing::warn!(job = %job.job_id, "lease TTL passed without a renewal; giving the job up");
                ctx.mark_lost();
                return;
            };
            match renewal {
                Ok(r) => {
                    deadline = sent_at + self.cfg.lease_ttl;
                    ctx.accepted(r.logs_accepted, batch.len());
                }
                Err(e)
                    if e.is_lease_lost()
                        || matches!(&e, crate::ClientError::Refused { refusal, .. } if refusal.status == 404) =>
                {
                    tracing::warn!(job = %job.job_id, error = %e, "lease lost");
                    ctx.mark_lost();
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.job_id, error = %e, "renewal failed");
                    ctx.put_back(batch);
                    if let Some(p) = progress {
                        // Keep the newest note: the handler may have set one since.
                        let mut cur = ctx.shared.progress.lock().expect("progress lock is never poisoned");
                        cur.get_or_insert(p);
                    }
                    if Instant::now() + Duration::from_millis(500) >= deadline {
                        tracing::warn!(job = %job.job_id, "lease TTL passed without a renewal; giving the job up");
                        ctx.mark_lost();
                        return;
                    }
                }
            }
        }
    }
}
