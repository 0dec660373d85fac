//! Heartbeat group commit. On every node, heartbeats that arrive while earlier
//! batches are in flight join the next batch. A follower hands its batch to
//! the leader (`/raft/propose`), where it joins the leader's own next batch,
//! so one Raft entry carries a whole round of the cluster's heartbeats: the
//! cost of a commit round (a log flush on each node) is paid per round, not
//! per node's batch. Each caller is answered once its batch is committed and
//! applied.
//!
//! Work nobody waits for is not done: every group carries its callers'
//! deadline (a local request's write timeout, or the wait a follower's forward
//! announced). A round is not proposed for groups whose callers all gave up
//! or whose deadline passed, and a round's retries (leader elections, forwards)
//! stop once every caller of it has gone. A heartbeat that still arrives late
//! (an entry of a deposed leader committed by its successor) is ordered by
//! its `seq` in apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::state::{Heartbeat, HeartbeatAnswer};
use model::{Command, CommandError, Reply};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::cluster::ProposalOutcome;
use crate::{Cluster, ClusterError};

/// One answer per heartbeat of a group, in order.
pub type GroupAnswers = Vec<Result<HeartbeatAnswer, CommandError>>;

/// What a group's submitter learns: its answers, or why the round failed.
type GroupResult = Result<GroupAnswers, BatchError>;

/// A commit round that produced no per-heartbeat answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// Raft refused or lost the write (no leader, outcome unknown, ...).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The state machine refused the batch as a whole (not expected).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A bug on our side (a reply of the wrong shape).
    #[error("{0}")]
    Internal(String),
}

/// Where the batcher reports what it did (the node's Prometheus metrics).
pub trait BatchObserver: Send + Sync + 'static {
    /// A round of this many heartbeats is proposed.
    fn proposed(&self, heartbeats: usize);
    /// A round was committed and applied (or failed) after this long.
    fn committed(&self, elapsed: Duration);
    /// This many heartbeats were not proposed, or no longer retried,
    /// because every caller had given up.
    fn abandoned(&self, heartbeats: usize);
}

/// A group of heartbeats that must land in one Raft entry: one heartbeat
/// from a worker on this node, or a follower's whole batch.
struct Pending {
    beats: Vec<Heartbeat>,
    /// Their estimated encoded size ([`Heartbeat::approx_encoded_len`]).
    bytes: usize,
    reply: oneshot::Sender<GroupResult>,
    /// When its caller stops waiting.
    deadline: Instant,
}

impl Pending {
    /// Has its caller given up (request dropped, or its time is up)?
    fn abandoned(&self, now: Instant) -> bool {
        self.reply.is_closed() || self.deadline <= now
    }
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
    /// A batch also closes once its heartbeats' estimated encoded size
    /// reaches this many bytes (`HEARTBEAT_BATCH_MAX_BYTES`, 1 MiB; passed by
    /// less than one group), so an entry stays under `ENGINE_MAX_ENTRY_BYTES`
    /// whatever the heartbeats hold.
    pub max_batch_bytes: usize,
}

#[derive(Clone)]
pub struct HeartbeatBatcher {
    tx: mpsc::Sender<Pending>,
    /// The longest any caller waits (the node's write timeout).
    write_timeout: Duration,
}

impl HeartbeatBatcher {
    pub fn start(cluster: Arc<Cluster>, metrics: Arc<dyn BatchObserver>, opts: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.max_batch * opts.max_inflight * 4);
        let write_timeout = cluster.opts.write_timeout;
        tokio::spawn(run(rx, cluster, metrics, opts));
        Self { tx, write_timeout }
    }

    /// Queue one heartbeat and wait for its committed answer.
    pub async fn submit(&self, beat: Heartbeat) -> Result<HeartbeatAnswer, BatchError> {
        let mut answers = self.group(vec![beat], self.write_timeout).await?;
        match answers.pop() {
            Some(answer) if answers.is_empty() => answer.map_err(BatchError::from),
            _ => Err(BatchError::Internal("heartbeat batch answered the wrong number of heartbeats".into())),
        }
    }

    /// On the leader: commit a follower's batch within the leader's next
    /// round, answered as the follower's own proposal would have been.
    /// `wait` is how long the follower's callers still wait (`None` from a
    /// node that does not say: this node's write timeout).
    pub async fn forwarded(
        &self,
        beats: Vec<Heartbeat>,
        wait: Option<Duration>,
    ) -> Result<ProposalOutcome, BatchError> {
        let wait = wait.map_or(self.write_timeout, |w| w.min(self.write_timeout));
        match self.group(beats, wait).await {
            Ok(answers) => Ok(ProposalOutcome::Applied(Ok(Reply::Heartbeats(answers)))),
            Err(BatchError::Command(e)) => Ok(ProposalOutcome::Applied(Err(e))),
            // Nothing was applied: the follower may look for the leader again.
            Err(BatchError::Cluster(ClusterError::Unavailable(_))) => Ok(ProposalOutcome::NotLeader { leader: None }),
            Err(other) => Err(other),
        }
    }

    async fn group(&self, beats: Vec<Heartbeat>, wait: Duration) -> GroupResult {
        let (reply, rx) = oneshot::channel();
        let stopped = || BatchError::Cluster(ClusterError::Unavailable("heartbeat batcher stopped".into()));
        let deadline = Instant::now() + wait;
        let bytes = beats.iter().map(Heartbeat::approx_encoded_len).sum();
        self.tx.send(Pending { beats, bytes, reply, deadline }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| BatchError::Cluster(ClusterError::Unknown("heartbeat batch dropped".into())))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    cluster: Arc<Cluster>,
    metrics: Arc<dyn BatchObserver>,
    opts: BatchOptions,
) {
    // The leader's rounds in flight; a follower keeps one more batch on its
    // way, so that its next batch reaches the leader while the last commits.
    let proposing = Arc::new(Semaphore::new(opts.max_inflight));
    let forwarding = Arc::new(Semaphore::new(opts.max_inflight + 1));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the next batch grow under load.
        let sem = if cluster.is_leader() { &proposing } else { &forwarding };
        let permit = sem.clone().acquire_owned().await.expect("semaphore is never closed");
        let (mut beats, mut bytes) = (first.beats.len(), first.bytes);
        let mut batch = vec![first];
        // Like the count, the byte budget closes the batch once reached: a
        // group is never split (it is one caller's, or one follower's), so an
        // entry may pass the budget by less than one follower batch, which
        // config keeps under ENGINE_MAX_ENTRY_BYTES (budget <= limit / 2).
        while beats < opts.max_batch && bytes < opts.max_batch_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    beats += p.beats.len();
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit(batch, beats, &cluster, metrics.as_ref()).await;
            drop(permit);
        });
    }
}

/// How often a round still waiting looks whether anyone waits for it.
const GONE_CHECK: Duration = Duration::from_millis(50);

/// Resolves once every caller of a round has dropped its request. Looked at
/// every [`GONE_CHECK`] rather than watched per caller: a round that commits
/// at once then costs one timer, not a waker per caller (a leader's round
/// holds hundreds of groups).
async fn all_gone(groups: &[(usize, oneshot::Sender<GroupResult>)]) {
    loop {
        tokio::time::sleep(GONE_CHECK).await;
        if groups.iter().all(|(_, reply)| reply.is_closed()) {
            return;
        }
    }
}

async fn commit(batch: Vec<Pending>, size: usize, cluster: &Cluster, metrics: &dyn BatchObserver) {
    let started = Instant::now();
    let mut beats = Vec::with_capacity(size);
    let mut groups = Vec::with_capacity(batch.len());
    let mut deadline = started;
    for p in batch {
        if p.abandoned(started) {
            // Nobody waits for it: never proposed. A caller still listening
            // (its deadline passed) learns that nothing was applied.
            metrics.abandoned(p.beats.len());
            let expired = ClusterError::Unavailable("the heartbeat's wait ended before it could be proposed".into());
            let _ = p.reply.send(Err(BatchError::Cluster(expired)));
            continue;
        }
        deadline = deadline.max(p.deadline);
        groups.push((p.beats.len(), p.reply));
        beats.extend(p.beats);
    }
    if groups.is_empty() {
        return;
    }
    let size = beats.len();
    metrics.proposed(size);
    let write = cluster.write_within("worker", Command::HeartbeatBatch { beats: beats.into() }, deadline - started);
    let result = tokio::select! {
        r = write => r,
        () = all_gone(&groups) => {
            // Stop retrying: an election or forward still pending is dropped.
            // (An entry already in a leader's log may still commit; apply
            // orders it by `seq`.)
            metrics.abandoned(size);
            return;
        }
    };
    metrics.committed(started.elapsed());
    let failure = match result {
        Ok(Ok(Reply::Heartbeats(answers))) if answers.len() == size => {
            let mut answers = answers.into_iter();
            for (len, reply) in groups {
                let _ = reply.send(Ok(answers.by_ref().take(len).collect()));
            }
            return;
        }
        Ok(Ok(other)) => BatchError::Internal(format!("unexpected heartbeat batch reply {}", reply_kind(&other))),
        Ok(Err(e)) => BatchError::Command(e),
        Err(e) => BatchError::Cluster(e),
    };
    for (_, reply) in groups {
        let _ = reply.send(Err(failure.clone()));
    }
}

/// A reply's variant name, for an error line (never the whole reply).
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Heartbeats(_) => "heartbeats of the wrong count",
        _ => "of another kind",
    }
}
