//! What waiting claims and queue stats watch: a generation number bumped
//! whenever an applied entry changed the jobs in a way that can make one
//! claimable (an enqueue, a requeue, a reap, a failure waiting for its
//! retry, a queue resumed, a worker resumed, a job removed), and claims and
//! completions per minute per queue, sampled from the replicated totals.
//! One task per node follows the applied index; waiters sleep on a `watch`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::state::job::JobCounters;
use raft_store::Cluster;
use tokio::sync::watch;

/// How often the per-minute rates are sampled, and how much is kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(60);

/// The parts of the state whose change can make a job claimable; operator
/// and worker controls show as a new audit entry.
fn fingerprint(state: &model::ControlState) -> (u64, u64, JobCounters, u64, usize) {
    let j = &state.jobs;
    (j.job_seq, j.lease_seq, j.totals, state.audit_seq, j.by_id.len())
}

/// (claims, completions) totals per queue at one moment.
type Sample = (Instant, BTreeMap<String, (u64, u64)>);

/// Claims and completions per queue over the last minute.
#[derive(Default)]
pub struct JobRates {
    samples: Mutex<VecDeque<Sample>>,
}

impl JobRates {
    fn sample(&self, counters: &BTreeMap<String, JobCounters>, total: JobCounters) {
        let mut now: BTreeMap<String, (u64, u64)> =
            counters.iter().map(|(q, c)| (q.clone(), (c.claims, c.completions))).collect();
        now.insert("*".to_string(), (total.claims, total.completions));
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let at = Instant::now();
        while s.front().is_some_and(|(t, _)| at.duration_since(*t) > WINDOW + SAMPLE_EVERY) {
            s.pop_front();
        }
        s.push_back((at, now));
    }

    /// Per queue (`*`: all): (claims, completions) per minute between the
    /// oldest sample of the last minute and the newest; empty until two
    /// samples at least one sampling period apart exist.
    pub fn per_minute(&self) -> BTreeMap<String, (f64, f64)> {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some((t0, old)), Some((t1, new))) = (s.front(), s.back()) else { return BTreeMap::new() };
        let minutes = t1.duration_since(*t0).as_secs_f64() / 60.0;
        if minutes < SAMPLE_EVERY.as_secs_f64() / 60.0 {
            return BTreeMap::new();
        }
        new.iter()
            .map(|(q, (c, d))| {
                let (c0, d0) = old.get(q).copied().unwrap_or((0, 0));
                (q.clone(), (c.saturating_sub(c0) as f64 / minutes, d.saturating_sub(d0) as f64 / minutes))
            })
            .collect()
    }
}

/// Start the watcher; the sender's receivers are the waiting claims.
pub fn start(cluster: Arc<Cluster>, rates: Arc<JobRates>) -> watch::Sender<u64> {
    let (tx, _) = watch::channel(0u64);
    let wake = tx.clone();
    tokio::spawn(async move {
        let mut metrics = cluster.raft.metrics();
        let mut last = None;
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = fingerprint(&cluster.state.read().state);
                    if last.as_ref() != Some(&now) {
                        last = Some(now);
                        wake.send_modify(|g| *g = g.wrapping_add(1));
                    }
                }
                _ = tick.tick() => {
                    let applied = cluster.state.read();
                    rates.sample(&applied.state.jobs.queue_counters, applied.state.jobs.totals);
                }
            }
        }
    });
    tx
}
