//! Heartbeat group commit. On every node, heartbeats that arrive while earlier
//! batches are in flight join the next batch. A follower hands its batch to
//! the leader (`/raft/propose`), where it joins the leader's own next batch,
//! so one Raft entry carries a whole round of the cluster's heartbeats: the
//! cost of a commit round (a log flush on each node) is paid per round, not
//! per node's batch. Each caller is answered once its batch is committed and
//! applied.

use std::sync::Arc;
use std::time::Instant;

use raft_store::cluster::ProposalOutcome;
use raft_store::state::{Heartbeat, HeartbeatAnswer};
use raft_store::{Cluster, ClusterError, Command, CommandError, Reply};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ApiError;
use crate::metrics::Metrics;

/// One answer per heartbeat of a group, in order.
pub type GroupAnswers = Vec<Result<HeartbeatAnswer, CommandError>>;

/// What a group's submitter learns: its answers, or why the round failed.
type GroupResult = Result<GroupAnswers, RoundFailure>;

/// A commit round that produced no per-heartbeat answers.
#[derive(Debug, Clone)]
enum RoundFailure {
    /// Raft refused or lost the write (no leader, outcome unknown, ...).
    Cluster { unavailable: bool, error: ApiError },
    /// The state machine refused the batch as a whole (not expected).
    Command(CommandError),
}

impl From<RoundFailure> for ApiError {
    fn from(f: RoundFailure) -> Self {
        match f {
            RoundFailure::Cluster { error, .. } => error,
            RoundFailure::Command(e) => e.into(),
        }
    }
}

/// A group of heartbeats that must land in one Raft entry: one heartbeat
/// from a worker on this node, or a follower's whole batch.
struct Pending {
    beats: Vec<Heartbeat>,
    reply: oneshot::Sender<GroupResult>,
}

/// Tuning for [`HeartbeatBatcher`].
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most heartbeats in one Raft entry (a follower's group is never split,
    /// so an entry may exceed this by less than one follower batch).
    pub max_batch: usize,
    /// Batches the leader proposes concurrently (a follower forwards one
    /// more); more arrivals wait and grow the next batch.
    pub max_inflight: usize,
}

#[derive(Clone)]
pub struct HeartbeatBatcher {
    tx: mpsc::Sender<Pending>,
}

impl HeartbeatBatcher {
    pub fn start(cluster: Arc<Cluster>, metrics: Arc<Metrics>, opts: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.max_batch * opts.max_inflight * 4);
        tokio::spawn(run(rx, cluster, metrics, opts));
        Self { tx }
    }

    /// Queue one heartbeat and wait for its committed answer.
    pub async fn submit(&self, beat: Heartbeat) -> Result<HeartbeatAnswer, ApiError> {
        let mut answers = self.group(vec![beat]).await.map_err(ApiError::from)?;
        match answers.pop() {
            Some(answer) if answers.is_empty() => answer.map_err(ApiError::from),
            _ => Err(ApiError::internal("heartbeat batch answered the wrong number of heartbeats")),
        }
    }

    /// On the leader: commit a follower's batch within the leader's next
    /// round, answered as the follower's own proposal would have been.
    pub async fn forwarded(&self, beats: Vec<Heartbeat>) -> Result<ProposalOutcome, ApiError> {
        match self.group(beats).await {
            Ok(answers) => Ok(ProposalOutcome::Applied(Ok(Reply::Heartbeats(answers)))),
            Err(RoundFailure::Command(e)) => Ok(ProposalOutcome::Applied(Err(e))),
            // Nothing was applied: the follower may look for the leader again.
            Err(RoundFailure::Cluster { unavailable: true, .. }) => Ok(ProposalOutcome::NotLeader { leader: None }),
            Err(RoundFailure::Cluster { error, .. }) => Err(error),
        }
    }

    async fn group(&self, beats: Vec<Heartbeat>) -> GroupResult {
        let (reply, rx) = oneshot::channel();
        let stopped =
            || RoundFailure::Cluster { unavailable: true, error: ApiError::unavailable("heartbeat batcher stopped") };
        self.tx.send(Pending { beats, reply }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| RoundFailure::Cluster {
            unavailable: false,
            error: ApiError::unavailable("heartbeat batch dropped"),
        })?
    }
}

async fn run(mut rx: mpsc::Receiver<Pending>, cluster: Arc<Cluster>, metrics: Arc<Metrics>, opts: BatchOptions) {
    // The leader's rounds in flight; a follower keeps one more batch on its
    // way, so that its next batch reaches the leader while the last commits.
    let proposing = Arc::new(Semaphore::new(opts.max_inflight));
    let forwarding = Arc::new(Semaphore::new(opts.max_inflight + 1));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch grow under load.
        let sem = if cluster.is_leader() { &proposing } else { &forwarding };
        let permit = sem.clone().acquire_owned().await.expect("semaphore is never closed");
        let mut beats = first.beats.len();
        let mut batch = vec![first];
        while beats < opts.max_batch {
            match rx.try_recv() {
                Ok(p) => {
                    beats += p.beats.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit(batch, beats, &cluster, &metrics).await;
            drop(permit);
        });
    }
}

async fn commit(batch: Vec<Pending>, size: usize, cluster: &Cluster, metrics: &Metrics) {
    let started = Instant::now();
    metrics.heartbeat_batch_size.observe(size as f64);
    let mut beats = Vec::with_capacity(size);
    let mut groups = Vec::with_capacity(batch.len());
    for p in batch {
        groups.push((p.beats.len(), p.reply));
        beats.extend(p.beats);
    }
    let result = cluster.write("worker", Command::HeartbeatBatch { beats: beats.into() }).await;
    metrics.heartbeat_commit_seconds.observe(started.elapsed().as_secs_f64());
    let failure = match result {
        Ok(Ok(Reply::Heartbeats(answers))) if answers.len() == size => {
            let mut answers = answers.into_iter();
            for (len, reply) in groups {
                let _ = reply.send(Ok(answers.by_ref().take(len).collect()));
            }
            return;
        }
        Ok(Ok(other)) => RoundFailure::Cluster {
            unavailable: false,
            error: ApiError::internal(format!("unexpected heartbeat batch reply {other:?}")),
        },
        Ok(Err(e)) => RoundFailure::Command(e),
        Err(e) => RoundFailure::Cluster { unavailable: matches!(e, ClusterError::Unavailable(_)), error: e.into() },
    };
    for (_, reply) in groups {
        let _ = reply.send(Err(failure.clone()));
    }
}
