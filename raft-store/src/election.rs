//! Elections gated by a pre-vote (Raft thesis §9.6), which openraft 0.9 lacks.
//!
//! Without it, a follower that was frozen for longer than its election timeout
//! (a VM stall, a swap storm, SIGSTOP) wakes, stands for election at a higher
//! term before it reads the leader's pending heartbeats, and the healthy
//! leader steps down on seeing that term: one needless leader change, and
//! writes in flight answered "outcome unknown", on every such stall.
//!
//! So openraft's own election timer is off (`enable_elect: false`) and this
//! loop decides instead: once this voter has heard from no leader for the
//! leader lease plus a random part of the election timeout, it asks the other
//! voters whether they have not heard from one either. Only when a majority of
//! every voter set (itself included) agrees does it start a real election,
//! which openraft then runs as before. A pre-vote changes no term and no vote,
//! so asking is harmless; the real vote still decides everything that matters
//! for safety.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesResponse, InstallSnapshotResponse, VoteResponse};
use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::types::NodeId;

/// When this node last heard from a leader it accepted (an AppendEntries or
/// snapshot chunk not refused for a stale term) or granted a real vote.
#[derive(Debug)]
pub struct LeaderContact {
    origin: Instant,
    last_ms: AtomicU64,
}

impl LeaderContact {
    /// A node starts as if it had just heard from a leader: it gives an
    /// existing one a full timeout to show up before asking for an election.
    pub fn new() -> Self {
        Self { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub fn touch(&self) {
        self.last_ms.fetch_max(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn elapsed(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Note an AppendEntries answer: anything but "your term is stale" means
    /// the sender is a leader this node follows.
    pub fn note_append<T>(&self, resp: &Result<AppendEntriesResponse<NodeId>, T>) {
        if matches!(resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.touch();
        }
    }

    /// Note a snapshot chunk answer: accepted when the sender's vote is not
    /// below the one this node holds.
    pub fn note_snapshot<T>(&self, sender: &openraft::Vote<NodeId>, resp: &Result<InstallSnapshotResponse<NodeId>, T>) {
        if matches!(resp, Ok(r) if *sender >= r.vote) {
            self.touch();
        }
    }

    /// Note a real vote answer: granting one restarts the wait, as in Raft.
    pub fn note_vote<T>(&self, resp: &Result<VoteResponse<NodeId>, T>) {
        if matches!(resp, Ok(r) if r.vote_granted) {
            self.touch();
        }
    }
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self::new()
    }
}

/// "Would you vote for me if I stood now?" Sent to `/raft/prevote`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    pub last_log_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
}

impl Cluster {
    /// Answer a pre-vote: yes only if this node does not lead, has heard from
    /// no leader for at least the leader lease (so openraft's real vote would
    /// not be refused for it either), and the candidate's log is not shorter.
    pub fn prevote(&self, req: &PreVoteRequest) -> PreVoteResponse {
        let (state, last) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.last_log_index)
        };
        let lease = Duration::from_millis(self.opts.election_max_ms);
        let granted = state != ServerState::Leader && self.contact.elapsed() >= lease && req.last_log_index >= last;
        tracing::debug!(candidate = req.candidate, granted, "pre-vote");
        PreVoteResponse { granted }
    }

    /// Ask every other voter; true once a majority of each voter set (this
    /// node counted for itself) grants.
    async fn prevote_round(self: &Arc<Self>) -> bool {
        let (configs, peers, last_log_index) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let configs: Vec<Vec<NodeId>> =
                membership.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect();
            let peers: Vec<(NodeId, String)> = membership
                .voter_ids()
                .filter(|id| *id != self.id)
                .filter_map(|id| Some((id, membership.get_node(&id)?.addr.clone())))
                .collect();
            (configs, peers, m.last_log_index)
        };
        let mut granted = vec![self.id];
        let won = |granted: &[NodeId]| majority_of_each(&configs, granted);
        if won(&granted) {
            return true;
        }
        let req = PreVoteRequest { candidate: self.id, last_log_index };
        let limit = Duration::from_millis(self.opts.election_min_ms);
        let mut asks = tokio::task::JoinSet::new();
        for (id, addr) in peers {
            let (rpc, req) = (self.rpc.clone(), req.clone());
            asks.spawn(async move {
                let answer: Result<PreVoteResponse, _> = rpc.post(&addr, "/raft/prevote", &req, limit).await;
                (id, answer.is_ok_and(|a| a.granted))
            });
        }
        while let Some(done) = asks.join_next().await {
            if let Ok((id, true)) = done {
                granted.push(id);
                if won(&granted) {
                    return true;
                }
            }
        }
        false
    }
}

/// Does `granted` hold a majority of every voter set (two during a joint
/// membership change)?
fn majority_of_each(configs: &[Vec<NodeId>], granted: &[NodeId]) -> bool {
    configs.iter().all(|c| c.iter().filter(|id| granted.contains(id)).count() * 2 > c.len())
}

/// How long a voter waits without a leader before asking: the leader lease
/// (openraft refuses real votes within it) plus a random share of the
/// election timeout, so that two followers rarely ask at once.
fn next_wait(min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(max_ms + rand::thread_rng().gen_range(0..=max_ms.saturating_sub(min_ms)))
}

/// The election loop; ends when the cluster handle is dropped.
pub(crate) async fn run(cluster: Weak<Cluster>) {
    let (min_ms, max_ms, tick) = match cluster.upgrade() {
        Some(c) => (
            c.opts.election_min_ms,
            c.opts.election_max_ms,
            Duration::from_millis((c.opts.heartbeat_ms / 3).clamp(5, 50)),
        ),
        None => return,
    };
    let mut wait = next_wait(min_ms, max_ms);
    let mut last_try: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let Some(c) = cluster.upgrade() else { return };
        let (state, voter) = {
            let m = c.raft.metrics();
            let m = m.borrow();
            (m.state, m.membership_config.membership().voter_ids().any(|id| id == c.id))
        };
        if state == ServerState::Leader || state == ServerState::Shutdown || !voter {
            continue;
        }
        let quiet = c.contact.elapsed().min(last_try.map_or(Duration::MAX, |t| t.elapsed()));
        if quiet < wait {
            continue;
        }
        last_try = Some(Instant::now());
        wait = next_wait(min_ms, max_ms);
        if !c.prevote_round().await {
            tracing::debug!("pre-vote not granted by a majority; not standing for election");
            continue;
        }
        tracing::info!(quiet_ms = quiet.as_millis() as u64, "no leader heard by a majority; standing for election");
        if let Err(e) = c.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not start an election");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::Vote;

    #[test]
    fn majority_counts_every_voter_set() {
        let one = vec![vec![1, 2, 3]];
        assert!(!majority_of_each(&one, &[1]));
        assert!(majority_of_each(&one, &[1, 3]));
        // Joint config {1,2,3} + {3,4,5}: 1 and 2 are a majority of the old
        // set only; 3 and 4 added make it a majority of both.
        let joint = vec![vec![1, 2, 3], vec![3, 4, 5]];
        assert!(!majority_of_each(&joint, &[1, 2]));
        assert!(majority_of_each(&joint, &[1, 2, 3, 4]));
        assert!(majority_of_each(&[vec![7]], &[7]));
    }

    #[test]
    fn wait_is_the_lease_plus_a_share_of_the_timeout() {
        for _ in 0..200 {
            let w = next_wait(150, 250);
            assert!(w >= Duration::from_millis(250) && w <= Duration::from_millis(350), "{w:?}");
        }
    }

    #[test]
    fn only_an_accepted_append_or_a_granted_vote_counts_as_contact() {
        let c = LeaderContact::new();
        std::thread::sleep(Duration::from_millis(30));
        let vote = Vote::new_committed(3, 1);
        let refused: Result<_, ()> = Ok(AppendEntriesResponse::<NodeId>::HigherVote(vote));
        c.note_append(&refused);
        let not_granted: Result<_, ()> = Ok(VoteResponse { vote, vote_granted: false, last_log_id: None });
        c.note_vote(&not_granted);
        let stale: Result<_, ()> = Ok(InstallSnapshotResponse { vote });
        c.note_snapshot(&Vote::new_committed(2, 1), &stale);
        let failed: Result<AppendEntriesResponse<NodeId>, ()> = Err(());
        c.note_append(&failed);
        assert!(c.elapsed() >= Duration::from_millis(30), "nothing above is word from a leader");

        c.note_append(&Ok::<_, ()>(AppendEntriesResponse::Success));
        assert!(c.elapsed() < Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(30));
        c.note_vote(&Ok::<_, ()>(VoteResponse { vote, vote_granted: true, last_log_id: None }));
        assert!(c.elapsed() < Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(30));
        c.note_snapshot(&vote, &Ok::<_, ()>(InstallSnapshotResponse { vote }));
        assert!(c.elapsed() < Duration::from_millis(30));
    }
}
