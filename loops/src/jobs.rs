//! The job lease reaper and compaction, on the acting leader. Every
//! `LEASE_REAPER_INTERVAL_SECONDS` it proposes `Reap` for the leases it sees
//! expired (apply re-checks each against the entry's time and the lease
//! still current, so a lease is reaped once, across failovers too), then,
//! when finished jobs passed `JOB_RETENTION_SECONDS` or the count cap,
//! `Compact` (apply chooses which go). Both are committed decisions; the
//! loop acts on nothing else.

use std::sync::Arc;

use model::state::job::{JobOp, JobOps, Jobs};
use model::Command;
use raft_store::cluster::now_ms;
use raft_store::job_commit::reap_round;
use raft_store::supervisor::Probe;

use crate::LoopContext;

/// The cluster format that knows jobs.
const JOBS_FORMAT: u32 = 5;

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    loop {
        tokio::time::sleep(ctx.jobs.reaper_interval).await;
        if ctx.cluster.state.read().state.format() < JOBS_FORMAT || !ctx.acting_leader().await {
            probe.idle();
            continue;
        }
        probe.busy();
        let mut result = Ok(());
        // Rounds until no expired lease is left (one entry ends at most
        // REAP_BATCH), within this period.
        loop {
            match reap_round(&ctx.cluster, &ctx.actor("lease-reaper")).await {
                Ok(round) => {
                    if !round.reaped.is_empty() {
                        tracing::info!(reaped = round.reaped.len(), seen = round.expired_seen, "expired leases reaped");
                    }
                    if round.expired_seen < raft_store::job_commit::REAP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease reaper round not committed");
                    result = Err(format!("lease reaper round not committed: {e}"));
                    break;
                }
            }
        }
        if let Err(e) = compact(&ctx).await {
            result = Err(e);
        }
        probe.done(result);
    }
}

/// Propose `Compact` when finished jobs are due to go.
async fn compact(ctx: &LoopContext) -> Result<(), String> {
    let finished_before_ms = now_ms().saturating_sub(ctx.jobs.retention.as_millis() as u64);
    let keep_finished = ctx.jobs.keep_finished;
    if !compaction_due(&ctx.cluster.state.read().state.jobs, finished_before_ms, keep_finished) {
        return Ok(());
    }
    let op = JobOp::Compact { finished_before_ms, keep_finished };
    match ctx.cluster.write(&ctx.actor("job-compaction"), Command::Jobs(JobOps { ops: vec![op] })).await {
        Ok(Ok(reply)) => {
            tracing::info!(?reply, "finished jobs compacted");
            Ok(())
        }
        Ok(Err(e)) => Err(format!("job compaction refused: {e}")),
        Err(e) => Err(format!("job compaction not committed: {e}")),
    }
}

/// Is a finished job older than the cutoff, or are there more than
/// `keep` finished jobs?
fn compaction_due(jobs: &Jobs, finished_before_ms: u64, keep: u32) -> bool {
    let mut finished = 0u64;
    for j in jobs.by_id.values().filter(|j| j.state.is_finished()) {
        if j.finished_ms.unwrap_or(j.updated_ms) < finished_before_ms {
            return true;
        }
        finished += 1;
        if finished > u64::from(keep) {
            return true;
        }
    }
    false
}
