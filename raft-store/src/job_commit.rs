//! Group commit of job operations: enqueues from producers and claims,
//! renewals and finishes from workers that arrive at once share one Raft
//! entry, `Command::Jobs(JobOps { ops })`, per round, as heartbeats do (see
//! [`crate::group_commit`]); a follower forwards its round to the leader,
//! where it joins the leader's own. Each op is answered on its own. Operator
//! ops (they are audited under the caller's name) and the leader's reaper
//! and compaction are written on their own, not grouped.

use std::time::Duration;

use model::state::job::{Job, JobOp, JobOps, JobReply};
use model::{Command, CommandError, Reply};

use crate::group_commit::{BatchError, GroupCommit, Grouped};
use crate::Cluster;

/// Job operations: one `Jobs` entry per round.
pub struct JobGroup;

/// The actor of a grouped round; `/raft/propose` joins a forwarded `Jobs`
/// entry to the leader's round only when it carries this actor.
pub const ACTOR: &str = "jobs";

/// Bytes an op costs in an entry beyond its variable-length fields.
const OP_OVERHEAD: usize = 64;

impl Grouped for JobGroup {
    type Item = JobOp;
    type Answer = JobReply;
    const ACTOR: &'static str = ACTOR;
    const WHAT: &'static str = "job operation";

    fn approx_len(op: &JobOp) -> usize {
        let lines = |logs: &[String]| logs.iter().map(|l| l.len() + 8).sum::<usize>();
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        OP_OVERHEAD
            + match op {
                JobOp::Enqueue(j) => {
                    j.queue.len() + j.kind.len() + j.payload.len() + opt(&j.pool) + opt(&j.idempotency_key)
                }
                JobOp::Claim(c) => c.worker.len() + c.queues.iter().map(|q| q.len() + 8).sum::<usize>(),
                JobOp::Renew(r) => r.worker.len() + opt(&r.progress) + lines(&r.logs),
                JobOp::Complete(f) | JobOp::Fail(f) => f.worker.len() + opt(&f.result) + opt(&f.error) + lines(&f.logs),
                JobOp::Cancel { reason, .. } => opt(reason),
                JobOp::ClearQueue { queue }
                | JobOp::SetQueuePaused { queue, .. }
                | JobOp::SetQueueCap { queue, .. } => queue.len(),
                JobOp::Requeue { .. } | JobOp::Reap { .. } | JobOp::Compact { .. } => 0,
            }
    }

    fn command(ops: Vec<JobOp>) -> Command {
        Command::Jobs(JobOps { ops })
    }

    fn answers(reply: Reply) -> Option<Vec<Result<JobReply, CommandError>>> {
        match reply {
            Reply::Jobs(answers) => Some(answers),
            _ => None,
        }
    }

    fn reply(answers: Vec<Result<JobReply, CommandError>>) -> Reply {
        Reply::Jobs(answers)
    }
}

/// The job group commit.
pub type JobBatcher = GroupCommit<JobGroup>;

/// Job timing and retention from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct JobOptions {
    /// A claim's or renewal's lease (`WORKER_LEASE_TTL_SECONDS`).
    pub lease_ttl: Duration,
    /// How often a worker should renew (`WORKER_HEARTBEAT_INTERVAL_SECONDS`),
    /// told to workers with every claim.
    pub heartbeat_interval: Duration,
    /// How often the leader looks for expired leases (`LEASE_REAPER_INTERVAL_SECONDS`).
    pub reaper_interval: Duration,
    /// Finished jobs are compacted away after this long (`JOB_RETENTION_SECONDS`).
    pub retention: Duration,
    /// And past this many finished jobs, the oldest first (`JOB_RETENTION_MAX_FINISHED`).
    pub keep_finished: u32,
    /// The longest a claim may long-poll: `wait_ms` is capped to it, so the
    /// answer comes before the request deadline (`ENGINE_REQUEST_TIMEOUT_MS`).
    pub max_claim_wait: Duration,
    /// The build farm's reads need no token (`FARM_READS_OPEN`).
    pub farm_reads_open: bool,
    /// Build logs untouched this long are dropped (`BUILD_LOG_RETENTION_DAYS`).
    pub build_log_retention: Duration,
    /// And the least recently written past this many bytes (`BUILD_LOG_MAX_BYTES`).
    pub build_log_max_bytes: u64,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            lease_ttl: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(20),
            reaper_interval: Duration::from_secs(15),
            retention: Duration::from_secs(7 * 24 * 3600),
            keep_finished: 100_000,
            max_claim_wait: Duration::from_secs(24),
            farm_reads_open: false,
            build_log_retention: Duration::from_secs(14 * 86_400),
            build_log_max_bytes: 256 << 20,
        }
    }
}

/// Most leases one reaper entry ends.
pub const REAP_BATCH: usize = 1_000;

/// What a reaper round did.
#[derive(Debug, Default)]
pub struct ReapRound {
    /// Jobs whose expired lease this round ended (re-queued, waiting for
    /// their retry, or dead), as applied.
    pub reaped: Vec<Job>,
    /// Expired leases seen in the state before proposing.
    pub expired_seen: usize,
}

/// One lease-reaper round: propose `Reap` for every lease this node sees
/// expired now (up to [`REAP_BATCH`]), committed before anything is
/// answered. Apply re-checks each against the entry's time and the lease
/// still current, so a lease is reaped once however many rounds (leaders,
/// operators' reconciles) see it expired.
pub async fn reap_round(cluster: &Cluster, actor: &str) -> Result<ReapRound, BatchError> {
    let now = crate::cluster::now_ms();
    let ops: Vec<JobOp> = {
        let applied = cluster.state.read();
        let expired = applied.state.jobs.expired(now, REAP_BATCH);
        expired.into_iter().map(|(job_id, lease)| JobOp::Reap { job_id, lease }).collect()
    };
    let mut round = ReapRound { reaped: Vec::new(), expired_seen: ops.len() };
    if ops.is_empty() {
        return Ok(round);
    }
    match cluster.write(actor, Command::Jobs(JobOps { ops })).await? {
        Ok(Reply::Jobs(answers)) => {
            for a in answers {
                match a {
                    Ok(JobReply::Reaped { job: Some(job) }) => round.reaped.push(job),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "a reap was refused"),
                }
            }
            Ok(round)
        }
        Ok(other) => Err(BatchError::Internal(format!("unexpected reply to a reaper round: {other:?}"))),
        Err(e) => Err(BatchError::Command(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::state::job::{Backoff, NewJob};

    #[test]
    fn an_op_is_sized_by_what_it_carries() {
        let job = |payload: usize| {
            JobOp::Enqueue(NewJob {
                queue: "q".into(),
                kind: "k".into(),
                payload: "x".repeat(payload),
                priority: 0,
                pool: None,
                run_after_ms: None,
                idempotency_key: None,
                max_attempts: 3,
                backoff: Backoff { base_ms: 1, max_ms: 1 },
            })
        };
        let (small, big) = (JobGroup::approx_len(&job(10)), JobGroup::approx_len(&job(64 * 1024)));
        assert!(big - small == 64 * 1024 - 10);
        // The estimate is not below the encoded size.
        let encoded = model::codec::encode(&job(64 * 1024)).unwrap().len();
        assert!(big >= encoded, "{big} < {encoded}");
        let cmd = JobGroup::command(vec![job(1), job(2)]);
        assert!(matches!(cmd, Command::Jobs(JobOps { ref ops }) if ops.len() == 2));
        assert!(JobGroup::answers(Reply::Jobs(vec![])).is_some());
        assert!(JobGroup::answers(Reply::Heartbeats(vec![])).is_none());
    }
}
