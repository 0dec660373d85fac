//! Group commit. On every node, items (heartbeats, job operations) that
//! arrive while earlier batches are in flight join the next batch. A follower
//! hands its batch to the leader (`/raft/propose`), where it joins the
//! leader's own next batch, so one Raft entry carries a whole round of the
//! cluster's items: the cost of a commit round (a log flush on each node) is
//! paid per round, not per node's batch. Each caller is answered once its
//! batch is committed and applied. What a batch holds, and which command
//! carries it, is a [`Grouped`] kind: [`Heartbeats`] here, jobs in
//! [`crate::job_commit`].
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

/// A kind of group commit: its items, the command that carries a round of
/// them, and the reply that answers them one by one, in order.
pub trait Grouped: Send + Sync + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;
    /// The actor of a round's entry.
    const ACTOR: &'static str;
    /// What an item is called in error messages.
    const WHAT: &'static str;
    /// An item's estimated encoded size, for the batch's byte budget.
    fn approx_len(item: &Self::Item) -> usize;
    /// The command carrying one round.
    fn command(items: Vec<Self::Item>) -> Command;
    /// The per-item answers of a round's reply (`None`: a reply of another kind).
    fn answers(reply: Reply) -> Option<Vec<Result<Self::Answer, CommandError>>>;
    /// A round's answers as the reply a forwarding follower expects.
    fn reply(answers: Vec<Result<Self::Answer, CommandError>>) -> Reply;
}

/// Heartbeats: one `HeartbeatBatch` entry per round.
pub struct Heartbeats;

impl Grouped for Heartbeats {
    type Item = Heartbeat;
    type Answer = HeartbeatAnswer;
    const ACTOR: &'static str = "worker";
    const WHAT: &'static str = "heartbeat";

    fn approx_len(item: &Heartbeat) -> usize {
        item.approx_encoded_len()
    }

    fn command(items: Vec<Heartbeat>) -> Command {
        Command::HeartbeatBatch { beats: items.into() }
    }

    fn answers(reply: Reply) -> Option<Vec<Result<HeartbeatAnswer, CommandError>>> {
        match reply {
            Reply::Heartbeats(answers) => Some(answers),
            _ => None,
        }
    }

    fn reply(answers: Vec<Result<HeartbeatAnswer, CommandError>>) -> Reply {
        Reply::Heartbeats(answers)
    }
}

/// The heartbeat group commit.
pub type HeartbeatBatcher = GroupCommit<Heartbeats>;

/// One answer per item of a group, in order.
pub type GroupAnswers<K> = Vec<Result<<K as Grouped>::Answer, CommandError>>;

/// What a group's submitter learns: its answers, or why the round failed.
type GroupResult<K> = Result<GroupAnswers<K>, BatchError>;

/// A commit round that produced no per-item answers.
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
    /// A round of this many items is proposed.
    fn proposed(&self, items: usize);
    /// A round was committed and applied (or failed) after this long.
    fn committed(&self, elapsed: Duration);
    /// This many items were not proposed, or no longer retried, because
    /// every caller had given up.
    fn abandoned(&self, items: usize);
}

/// A group of items that must land in one Raft entry: one item from a
/// caller on this node, or a follower's whole batch.
struct Pending<K: Grouped> {
    items: Vec<K::Item>,
    /// Their estimated encoded size ([`Grouped::approx_len`]).
    bytes: usize,
    reply: oneshot::Sender<GroupResult<K>>,
    /// When its caller stops waiting.
    deadline: Instant,
}

impl<K: Grouped> Pending<K> {
    /// Has its caller given up (request dropped, or its time is up)?
    fn abandoned(&self, now: Instant) -> bool {
        self.reply.is_closed() || self.deadline <= now
    }
}

/// Tuning for a [`GroupCommit`].
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most items in one Raft entry (a follower's group is never split,
    /// so an entry may exceed this by less than one follower batch).
    pub max_batch: usize,
    /// Batches the leader proposes concurrently (a follower forwards one
    /// more); more arrivals wait and grow the next batch.
    pub max_inflight: usize,
    /// A batch also closes once its items' estimated encoded size reaches
    /// this many bytes (`HEARTBEAT_BATCH_MAX_BYTES`, 1 MiB; passed by less
    /// than one group), so an entry stays under `ENGINE_MAX_ENTRY_BYTES`
    /// whatever the items hold.
    pub max_batch_bytes: usize,
}

pub struct GroupCommit<K: Grouped> {
    tx: mpsc::Sender<Pending<K>>,
    /// The longest any caller waits (the node's write timeout).
    write_timeout: Duration,
}

impl<K: Grouped> Clone for GroupCommit<K> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone(), write_timeout: self.write_timeout }
    }
}

impl<K: Grouped> GroupCommit<K> {
    pub fn start(cluster: Arc<Cluster>, metrics: Arc<dyn BatchObserver>, opts: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel(opts.max_batch * opts.max_inflight * 4);
        let write_timeout = cluster.opts.write_timeout;
        tokio::spawn(run(rx, cluster, metrics, opts));
        Self { tx, write_timeout }
    }

    /// Queue one item and wait for its committed answer.
    pub async fn submit(&self, item: K::Item) -> Result<K::Answer, BatchError> {
        self.submit_within(item, self.write_timeout).await
    }

    /// [`Self::submit`] for a caller that waits at most `wait` (capped by
    /// the write timeout).
    pub async fn submit_within(&self, item: K::Item, wait: Duration) -> Result<K::Answer, BatchError> {
        let mut answers = self.group(vec![item], wait.min(self.write_timeout)).await?;
        match answers.pop() {
            Some(answer) if answers.is_empty() => answer.map_err(BatchError::from),
            _ => Err(BatchError::Internal(format!("{} batch answered the wrong number of items", K::WHAT))),
        }
    }

    /// Queue several items of one caller, committed in one entry, answered
    /// in order.
    pub async fn submit_all(&self, items: Vec<K::Item>) -> GroupResult<K> {
        let n = items.len();
        let answers = self.group(items, self.write_timeout).await?;
        if answers.len() != n {
            return Err(BatchError::Internal(format!("{} batch answered the wrong number of items", K::WHAT)));
        }
        Ok(answers)
    }

    /// On the leader: commit a follower's batch within the leader's next
    /// round, answered as the follower's own proposal would have been.
    /// `wait` is how long the follower's callers still wait (`None` from a
    /// node that does not say: this node's write timeout).
    pub async fn forwarded(&self, items: Vec<K::Item>, wait: Option<Duration>) -> Result<ProposalOutcome, BatchError> {
        let wait = wait.map_or(self.write_timeout, |w| w.min(self.write_timeout));
        match self.group(items, wait).await {
            Ok(answers) => Ok(ProposalOutcome::Applied(Ok(K::reply(answers)))),
            Err(BatchError::Command(e)) => Ok(ProposalOutcome::Applied(Err(e))),
            // Nothing was applied: the follower may look for the leader again.
            Err(BatchError::Cluster(ClusterError::Unavailable(_))) => Ok(ProposalOutcome::NotLeader { leader: None }),
            Err(other) => Err(other),
        }
    }

    async fn group(&self, items: Vec<K::Item>, wait: Duration) -> GroupResult<K> {
        let (reply, rx) = oneshot::channel();
        let stopped = || BatchError::Cluster(ClusterError::Unavailable(format!("{} batcher stopped", K::WHAT)));
        let deadline = Instant::now() + wait;
        let bytes = items.iter().map(K::approx_len).sum();
        self.tx.send(Pending { items, bytes, reply, deadline }).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| BatchError::Cluster(ClusterError::Unknown(format!("{} batch dropped", K::WHAT))))?
    }
}

async fn run<K: Grouped>(
    mut rx: mpsc::Receiver<Pending<K>>,
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
        let (mut items, mut bytes) = (first.items.len(), first.bytes);
        let mut batch = vec![first];
        // Like the count, the byte budget closes the batch once reached: a
        // group is never split (it is one caller's, or one follower's), so an
        // entry may pass the budget by less than one follower batch, which
        // config keeps under ENGINE_MAX_ENTRY_BYTES (budget <= limit / 2).
        while items < opts.max_batch && bytes < opts.max_batch_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    items += p.items.len();
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            commit(batch, items, &cluster, metrics.as_ref()).await;
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
async fn all_gone<T>(groups: &[(usize, oneshot::Sender<T>)]) {
    loop {
        tokio::time::sleep(GONE_CHECK).await;
        if groups.iter().all(|(_, reply)| reply.is_closed()) {
            return;
        }
    }
}

async fn commit<K: Grouped>(batch: Vec<Pending<K>>, size: usize, cluster: &Cluster, metrics: &dyn BatchObserver) {
    let started = Instant::now();
    let mut items = Vec::with_capacity(size);
    let mut groups = Vec::with_capacity(batch.len());
    let mut deadline = started;
    for p in batch {
        if p.abandoned(started) {
            // Nobody waits for it: never proposed. A caller still listening
            // (its deadline passed) learns that nothing was applied.
            metrics.abandoned(p.items.len());
            let expired =
                ClusterError::Unavailable(format!("the {}'s wait ended before it could be proposed", K::WHAT));
            let _ = p.reply.send(Err(BatchError::Cluster(expired)));
            continue;
        }
        deadline = deadline.max(p.deadline);
        groups.push((p.items.len(), p.reply));
        items.extend(p.items);
    }
    if groups.is_empty() {
        return;
    }
    let size = items.len();
    metrics.proposed(size);
    let write = cluster.write_within(K::ACTOR, K::command(items), deadline - started);
    let result = tokio::select! {
        r = write => r,
        () = all_gone(&groups) => {
            // Stop retrying: an election or forward still pending is dropped.
            // (An entry already in a leader's log may still commit; apply
            // orders heartbeats by `seq`, and fences job operations by lease.)
            metrics.abandoned(size);
            return;
        }
    };
    metrics.committed(started.elapsed());
    let failure = match result.map(|r| r.map(K::answers)) {
        Ok(Ok(Some(answers))) if answers.len() == size => {
            let mut answers = answers.into_iter();
            for (len, reply) in groups {
                let _ = reply.send(Ok(answers.by_ref().take(len).collect()));
            }
            return;
        }
        Ok(Ok(Some(_))) => BatchError::Internal(format!("{} batch reply of the wrong count", K::WHAT)),
        Ok(Ok(None)) => BatchError::Internal(format!("{} batch reply of another kind", K::WHAT)),
        Ok(Err(e)) => BatchError::Command(e),
        Err(e) => BatchError::Cluster(e),
    };
    for (_, reply) in groups {
        let _ = reply.send(Err(failure.clone()));
    }
}
