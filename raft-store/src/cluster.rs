//! The cluster handle: start a Raft node on its storage, propose writes from
//! any node (forwarding to the leader), serve linearizable reads, bootstrap once,
//! and report what every member is doing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::election::LeaderContact;
use crate::network::{NetworkFactory, RpcClient, RpcFailure};
use crate::peer_allowlist::PeerAllowlist;
use crate::peer_auth::PeerAuth;
use crate::state_machine::StateReader;
use crate::supervisor::Supervisor;
use crate::types::{Node, NodeId, Raft, TypeConfig};
use model::command::{Command, Request, Response};
pub use model::views::{ClusterStatus, NodeStatus};

type RaftResult<T> = Result<T, RaftError<NodeId>>;

/// How a node runs its Raft instance; filled from the node's configuration.
/// `Debug` leaves the cluster secret out.
#[derive(Clone)]
pub struct ClusterOptions {
    pub id: NodeId,
    pub cluster_name: String,
    pub secret: String,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Snapshot every this many applied entries, each voter at its own offset
    /// (see [`crate::snapshot_schedule`]).
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot for slow followers.
    pub keep_logs: u64,
    /// How long a write may wait for leader election plus commit.
    pub write_timeout: Duration,
    /// Local address for connections to peers (None: the OS picks).
    pub rpc_source_ip: Option<std::net::IpAddr>,
    /// sled page-cache budget in bytes (sled's own default is 1 GiB).
    pub sled_cache_bytes: u64,
    /// Caps on the fleet (`ENGINE_MAX_WORKERS`, `ENGINE_MAX_POOLS`), carried
    /// in each heartbeat batch this node proposes as leader (format 2).
    pub limits: model::state::Limits,
    /// Largest Raft entry this node proposes (`ENGINE_MAX_ENTRY_BYTES`);
    /// a larger write is refused with 413 before it reaches the log.
    pub max_entry_bytes: usize,
    /// Who may be a peer and how peers prove it.
    pub peer_security: PeerSecurity,
    /// TLS towards peers (`ENGINE_TLS_*`); None: plain HTTP.
    pub peer_tls: Option<crate::network::PeerTls>,
}

/// Peer authentication and admission (`ENGINE_PEER_ALLOWLIST`,
/// `ENGINE_PEER_CLOCK_SKEW_SECS`, `ENGINE_ALLOW_PLAIN_SECRET`).
#[derive(Debug, Clone)]
pub struct PeerSecurity {
    /// Addresses a learner may have.
    pub allowlist: PeerAllowlist,
    /// The `ENGINE_PEERS` URLs, allowed hosts when the allowlist is unset.
    pub initial_peers: Vec<String>,
    /// Tolerated clock difference for signed peer requests.
    pub clock_skew: Duration,
    /// Rolling upgrade from a release that sent `CLUSTER_SECRET` in clear:
    /// send and accept that header too.
    pub allow_plain_secret: bool,
}

impl Default for PeerSecurity {
    fn default() -> Self {
        Self {
            allowlist: PeerAllowlist::default(),
            initial_peers: Vec::new(),
            clock_skew: crate::peer_auth::DEFAULT_SKEW,
            allow_plain_secret: false,
        }
    }
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("id", &self.id)
            .field("cluster_name", &self.cluster_name)
            .field("secret", &"<redacted>")
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("election_min_ms", &self.election_min_ms)
            .field("election_max_ms", &self.election_max_ms)
            .field("snapshot_logs", &self.snapshot_logs)
            .field("keep_logs", &self.keep_logs)
            .field("write_timeout", &self.write_timeout)
            .field("rpc_source_ip", &self.rpc_source_ip)
            .field("sled_cache_bytes", &self.sled_cache_bytes)
            .field("limits", &self.limits)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("peer_tls", &self.peer_tls.is_some())
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No leader could be reached before the deadline; nothing was applied.
    #[error("no leader available: {0}")]
    Unavailable(String),
    /// The write may or may not have been applied (leader lost mid-flight).
    #[error("write outcome unknown: {0}")]
    Unknown(String),
    /// A membership change was refused by Raft.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The local Raft core has stopped; the node needs a restart.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// This node was removed from the cluster's membership: it can neither
    /// write nor read consistently, and will not again unless re-added.
    #[error("this node ({0}) is not a member of the cluster any more; use another node")]
    NotAMember(NodeId),
    /// The write would make a Raft entry over `ENGINE_MAX_ENTRY_BYTES`.
    #[error("{0}")]
    TooLarge(String),
}

impl ClusterError {
    /// The HTTP status and error code every route answers this failure with.
    pub fn http_parts(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode;
        match self {
            ClusterError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ClusterError::Unknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ClusterError::Membership(_) => (StatusCode::CONFLICT, "membership_refused"),
            ClusterError::Fatal(_) => (StatusCode::SERVICE_UNAVAILABLE, "raft_stopped"),
            ClusterError::NotAMember(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_a_member"),
            ClusterError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "entry_too_large"),
        }
    }
}

/// Everything a follower can hand to the leader over `/raft/propose`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    Write(Request),
    AddLearner { id: NodeId, addr: String },
    Promote { ids: BTreeSet<NodeId> },
    Remove { ids: BTreeSet<NodeId> },
}

/// The leader's answer to a [`Proposal`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposalOutcome {
    Applied(Response),
    MembershipChanged,
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    Refused(String),
    /// The leader lost leadership or its quorum while the write waited; it
    /// may or may not be applied later.
    Abandoned,
}

/// One node's own view of itself, served at `/raft/report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub id: NodeId,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub initialized: bool,
}

pub struct Cluster {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateReader,
    /// The job log store, for reads (the state machine writes it).
    pub job_logs: crate::state_machine::JobLogs,
    /// The build farm's blob store (plans, manifests, build logs), for reads.
    pub farm_blobs: crate::state_machine::FarmBlobs,
    pub rpc: RpcClient,
    pub opts: ClusterOptions,
    /// Last word from a leader, for the pre-vote (see [`crate::election`]).
    pub contact: LeaderContact,
    /// Checks the signature of every `/raft` request this node receives.
    pub peer_auth: PeerAuth,
    /// The snapshot being received, to refuse chunks out of its bounds.
    snapshot_progress: tokio::sync::Mutex<SnapshotProgress>,
    /// Fault injection for tests (`ENGINE_TEST_HOLD_FORWARD_FILE`): while
    /// this file exists, heartbeat batches wait before being forwarded.
    hold_forward_file: Option<std::path::PathBuf>,
    /// Every background task of this node, under one cancellation tree.
    pub supervisor: Supervisor,
    /// Set (to its last log index + 1) when the leader said this node is
    /// not a member; cleared in effect once the log moves again (re-added).
    removed_at: std::sync::atomic::AtomicU64,
    /// Highest commit index a leader announced to this node in an
    /// AppendEntries it did not refuse for a stale term: how far this follower should have applied, known
    /// without asking anyone (readiness).
    leader_commit: std::sync::atomic::AtomicU64,
}

/// Largest snapshot a node receives, in bytes; a stream going past it is refused.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// How far the snapshot being streamed to this node has come.
#[derive(Debug, Default)]
pub struct SnapshotProgress {
    id: Option<String>,
    received: u64,
}

impl SnapshotProgress {
    /// Check a chunk: it starts a snapshot (offset 0) or continues the one
    /// in progress no further than its received end (a resent chunk may
    /// start earlier). Returns the chunk's end.
    pub fn admit(&self, rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<u64, String> {
        let end = rpc.offset.checked_add(rpc.data.len() as u64).filter(|end| *end <= MAX_SNAPSHOT_BYTES).ok_or_else(
            || format!("snapshot chunk at offset {} would pass the {MAX_SNAPSHOT_BYTES}-byte limit", rpc.offset),
        )?;
        if rpc.offset > 0 {
            let current = self.id.as_deref() == Some(rpc.meta.snapshot_id.as_str());
            let received = if current { self.received } else { 0 };
            if rpc.offset > received {
                return Err(format!(
                    "snapshot chunk at offset {} but only {received} bytes of snapshot {:?} were received",
                    rpc.offset, rpc.meta.snapshot_id
                ));
            }
        }
        Ok(end)
    }

    /// openraft took the chunk ending at `end`.
    pub fn accepted(&mut self, id: String, end: u64, done: bool) {
        if done {
            *self = Self::default();
        } else if self.id.as_deref() == Some(id.as_str()) {
            self.received = self.received.max(end);
        } else {
            *self = Self { id: Some(id), received: end };
        }
    }
}

/// How a leader's refusal to a node outside its membership begins.
pub const NOT_A_MEMBER: &str = "not_a_member";

/// Names a file (relative to the data directory) whose existence holds back
/// this node's forwarding of heartbeat batches to the leader. For tests only.
const HOLD_FORWARD_ENV: &str = "ENGINE_TEST_HOLD_FORWARD_FILE";

/// Header of a forwarded proposal: how many milliseconds its callers still
/// wait. A duration, not an instant, so that no two nodes' clocks are compared.
pub const WAIT_HEADER: &str = "x-engine-wait-ms";

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

const RETRY_PAUSE: Duration = Duration::from_millis(25);
const REPORT_TIMEOUT: Duration = Duration::from_millis(400);

impl Cluster {
    /// Open storage in `dir` and start the Raft core; returns once it runs.
    pub async fn start(opts: ClusterOptions, dir: &std::path::Path) -> Result<Arc<Self>, ClusterError> {
        let (log_store, sm) =
            crate::open_storage(dir, opts.sled_cache_bytes).map_err(|e| ClusterError::Fatal(e.to_string()))?;
        let config = Config {
            cluster_name: opts.cluster_name.clone(),
            heartbeat_interval: opts.heartbeat_ms,
            election_timeout_min: opts.election_min_ms,
            election_timeout_max: opts.election_max_ms,
            // Per snapshot chunk; the last chunk includes decoding and storing
            // the whole state on the follower. A timeout restarts the transfer,
            // so it must cover a busy machine; a dead peer fails on connect anyway.
            install_snapshot_timeout: 20_000,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            // Entries are heartbeat batches of up to HEARTBEAT_BATCH_MAX beats;
            // the network layer splits further by bytes (MAX_APPEND_BYTES).
            max_payload_entries: 64,
            // Snapshots are triggered by `snapshot_schedule::run`, staggered
            // across the voters.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: opts.keep_logs,
            // Elections are started by `election::run` after a pre-vote.
            enable_elect: false,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Fatal(format!("invalid raft config: {e}")))?;
        let peers = &opts.peer_security;
        let rpc = RpcClient::new(opts.secret.clone(), opts.rpc_source_ip, opts.peer_tls.as_ref())
            .with_plain_secret(&opts.secret, peers.allow_plain_secret);
        let peer_auth = PeerAuth::new(&opts.secret, peers.clock_skew, peers.allow_plain_secret);
        let state = sm.reader();
        let job_logs = sm.job_logs();
        let farm_blobs = sm.farm_blobs();
        let network = NetworkFactory { rpc: rpc.clone() };
        let raft = Raft::new(opts.id, Arc::new(config), network, log_store, sm)
            .await
            .map_err(|e| ClusterError::Fatal(e.to_string()))?;
        let hold_forward_file = std::env::var_os(HOLD_FORWARD_ENV).map(|f| dir.join(f));
        let cluster = Arc::new(Self {
            id: opts.id,
            raft,
            state,
            job_logs,
            farm_blobs,
            rpc,
            opts,
            contact: LeaderContact::new(),
            peer_auth,
            snapshot_progress: Default::default(),
            hold_forward_file,
            supervisor: Supervisor::default(),
            removed_at: Default::default(),
            leader_commit: Default::default(),
        });
        let weak = Arc::downgrade(&cluster);
        cluster.supervisor.spawn("election", move |_| crate::election::run(weak.clone()));
        let weak = Arc::downgrade(&cluster);
        cluster.supervisor.spawn("snapshot-schedule", move |probe| crate::snapshot_schedule::run(weak.clone(), probe));
        // A fatal Raft core error (storage failure, say) stops the process
        // with one line, so systemd restarts it, rather than leaving a node
        // that answers from a state that can no longer advance.
        let metrics = cluster.raft.metrics();
        cluster.supervisor.spawn("raft-core-watch", move |_| {
            let mut metrics = metrics.clone();
            async move {
                loop {
                    if let Err(e) = &metrics.borrow_and_update().running_state {
                        crate::fatal(&format!("the Raft core stopped: {e}"));
                    }
                    if metrics.changed().await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(cluster)
    }

    /// Initialize a brand-new cluster from `peers`, once. Only the lowest id
    /// does it, only on empty storage, and only if no peer already has a cluster.
    pub async fn bootstrap(&self, peers: &BTreeMap<NodeId, String>) -> Result<(), ClusterError> {
        if self.raft.is_initialized().await.map_err(|e| ClusterError::Fatal(e.to_string()))? {
            tracing::info!("existing raft state found; not initializing");
            return Ok(());
        }
        if peers.keys().next() != Some(&self.id) {
            return Ok(());
        }
        for (id, addr) in peers.iter().filter(|(id, _)| **id != self.id) {
            if let Ok(report) = self.rpc.post::<_, NodeReport>(addr, "/raft/report", &(), REPORT_TIMEOUT).await {
                if report.initialized {
                    tracing::warn!(peer = id, "peer already belongs to a cluster; not initializing");
                    return Ok(());
                }
            }
        }
        let members: BTreeMap<NodeId, Node> =
            peers.iter().map(|(id, addr)| (*id, Node { addr: addr.clone() })).collect();
        match self.raft.initialize(members).await {
            Ok(()) => tracing::info!("cluster initialized"),
            Err(e) => tracing::warn!(error = %e, "initialize skipped"),
        }
        Ok(())
    }

    /// Apply `command` through Raft from this node, wherever the leader is.
    pub async fn write(&self, actor: &str, command: Command) -> Result<Response, ClusterError> {
        self.write_within(actor, command, self.opts.write_timeout).await
    }

    /// [`Self::write`] for callers that wait only `limit`: no leader is
    /// tried, and no forward sent, once it has passed.
    pub async fn write_within(&self, actor: &str, command: Command, limit: Duration) -> Result<Response, ClusterError> {
        let req = Request { at_ms: now_ms(), node: self.id, actor: actor.to_string(), command };
        match self.propose_within(Proposal::Write(req), limit).await? {
            ProposalOutcome::Applied(r) => Ok(r),
            other => Err(ClusterError::Unknown(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Run a proposal on the leader: locally if we lead, else forwarded.
    /// Retries only when the proposal certainly was not applied.
    pub async fn propose(&self, proposal: Proposal) -> Result<ProposalOutcome, ClusterError> {
        self.propose_within(proposal, self.opts.write_timeout).await
    }

    /// [`Self::propose`] within `limit`: retries stop when it has passed, and
    /// a forward tells the leader how long its caller still waits.
    pub async fn propose_within(&self, proposal: Proposal, limit: Duration) -> Result<ProposalOutcome, ClusterError> {
        if self.removed() {
            return Err(ClusterError::NotAMember(self.id));
        }
        if let Proposal::Write(req) = &proposal {
            self.check_entry_size(req)?;
        }
        let deadline = Instant::now() + limit;
        let mut target: Option<(NodeId, String)> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Unavailable("no leader accepted the write in time".into()));
            }
            let outcome = match &target {
                Some((id, addr)) if *id != self.id => {
                    self.injected_forward_hold(&proposal, deadline).await;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let wait = (WAIT_HEADER, remaining.as_millis().to_string());
                    let post = self.rpc.post_with(addr, "/raft/propose", &proposal, remaining, Some(wait));
                    tokio::pin!(post);
                    let sent = tokio::select! {
                        r = &mut post => r,
                        () = self.leadership_gone(*id) => {
                            // A request to a leader that died never arrives and
                            // fails at once (connection refused): give it a
                            // moment to, before calling the outcome unknown.
                            let grace = Duration::from_millis(self.opts.election_min_ms).min(remaining);
                            match tokio::time::timeout(grace, &mut post).await {
                                Ok(r) => r,
                                Err(_) => return Err(ClusterError::Unknown(format!(
                                    "leader {id} was replaced while the write was in flight; it may or may not have been applied"
                                ))),
                            }
                        }
                    };
                    match sent {
                        Ok(outcome) => outcome,
                        Err(RpcFailure::NotDelivered(e)) => {
                            tracing::debug!(leader = id, error = %e, "leader unreachable; retrying");
                            ProposalOutcome::NotLeader { leader: None }
                        }
                        Err(RpcFailure::Unknown(e)) => return Err(ClusterError::Unknown(e)),
                    }
                }
                _ => self.propose_local(proposal.clone(), remaining).await?,
            };
            match outcome {
                ProposalOutcome::NotLeader { leader } => {
                    let known = leader.or_else(|| self.leader_hint());
                    if known.is_none() || known == target {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    target = known.or_else(|| self.leader_hint());
                }
                ProposalOutcome::Refused(msg) if msg.starts_with(NOT_A_MEMBER) => return Err(self.mark_removed()),
                ProposalOutcome::Refused(msg) => return Err(ClusterError::Membership(msg)),
                ProposalOutcome::Abandoned => {
                    return Err(ClusterError::Unknown(
                        "the leader lost its quorum while the write was in flight; it may or may not have been applied"
                            .into(),
                    ))
                }
                done => return Ok(done),
            }
        }
    }

    /// While a test's hold file exists, keep a heartbeat batch from being
    /// forwarded (until `deadline` at most).
    async fn injected_forward_hold(&self, proposal: &Proposal, deadline: Instant) {
        let Some(file) = &self.hold_forward_file else { return };
        if !matches!(proposal, Proposal::Write(Request { command: Command::HeartbeatBatch { .. }, .. })) {
            return;
        }
        while file.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn leader_hint(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node.addr))
    }

    /// Resolves once `leader` evidently no longer leads: this node follows a
    /// different leader, or (when `leader` is this node) it stepped down or
    /// heard from no quorum for longer than an election timeout. A write
    /// waiting on such a leader is answered "outcome unknown" at once rather
    /// than at the write timeout, so clients retry against the new leader.
    async fn leadership_gone(&self, leader: NodeId) {
        if leader == self.id {
            // openraft's `millis_since_quorum_ack` metric is not refreshed by
            // heartbeats on an idle leader, so confirm leadership the way a
            // linearizable read does: a quorum round, bounded in time.
            let period = Duration::from_millis(self.opts.election_max_ms);
            loop {
                tokio::time::sleep(period).await;
                if !self.confirm_leadership(period).await {
                    return;
                }
            }
        }
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow_and_update().current_leader.is_some_and(|l| l != leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// An AppendEntries from a leader, through openraft, noted for the pre-vote.
    pub async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> RaftResult<AppendEntriesResponse<NodeId>> {
        let commit = rpc.leader_commit.map_or(0, |l| l.index);
        let resp = self.raft.append_entries(rpc).await;
        self.contact.note_append(&resp);
        // Any answer but "your term is stale" accepts the sender as leader,
        // and its commit index as committed, even if our log conflicts.
        if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.leader_commit.fetch_max(commit, std::sync::atomic::Ordering::Relaxed);
        }
        resp
    }

    /// The highest commit index a leader has told this node of (0: none yet).
    pub fn leader_commit(&self) -> u64 {
        self.leader_commit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A real vote request, through openraft; a granted vote is noted.
    pub async fn vote(&self, rpc: VoteRequest<NodeId>) -> RaftResult<VoteResponse<NodeId>> {
        let resp = self.raft.vote(rpc).await;
        self.contact.note_vote(&resp);
        resp
    }

    /// A snapshot chunk from a leader, through openraft, noted for the pre-vote.
    /// A chunk that starts beyond what was received of its snapshot, or
    /// would take it past [`MAX_SNAPSHOT_BYTES`], is refused (`Err`) before
    /// openraft sees it: openraft seeks its in-memory buffer to any offset
    /// it is given, and writing there grows the buffer to that size.
    pub async fn install_snapshot(
        &self,
        rpc: InstallSnapshotRequest<TypeConfig>,
    ) -> Result<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>, String> {
        // Held across the install, so chunks are checked in the order they land.
        let mut progress = self.snapshot_progress.lock().await;
        let end = progress.admit(&rpc)?;
        let (sender, id, done) = (rpc.vote, rpc.meta.snapshot_id.clone(), rpc.done);
        let resp = self.raft.install_snapshot(rpc).await;
        if let Ok(r) = &resp {
            // Accepted (openraft answers a newer vote when it refuses).
            if r.vote <= sender {
                progress.accepted(id, end, done);
            }
        }
        self.contact.note_snapshot(&sender, &resp);
        Ok(resp)
    }

    /// Does this node believe it leads (no quorum round; see below for that)?
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Is this node the leader, confirmed by a quorum within `limit`? A leader
    /// cut off from the majority answers false within `limit`.
    pub async fn confirm_leadership(&self, limit: Duration) -> bool {
        if !self.is_leader() {
            return false;
        }
        matches!(tokio::time::timeout(limit, self.raft.get_read_log_id()).await, Ok(Ok(_)))
    }

    /// Attempt a proposal on this node's Raft core; never forwards.
    pub async fn propose_local(&self, proposal: Proposal, limit: Duration) -> Result<ProposalOutcome, ClusterError> {
        let fut = async {
            let result = match proposal {
                Proposal::Write(req) => {
                    let req = match self.in_cluster_format(req) {
                        Ok(req) => req,
                        Err(refused) => return Ok(ProposalOutcome::Applied(Err(refused))),
                    };
                    return tokio::select! {
                        r = self.raft.client_write(req) => r.map(|r| ProposalOutcome::Applied(r.data)),
                        () = self.leadership_gone(self.id) => Ok(ProposalOutcome::Abandoned),
                    };
                }
                Proposal::AddLearner { id, addr } => {
                    // The leader checks too: a follower with a looser list
                    // cannot add a peer this one would refuse.
                    if let Err(why) = self.check_peer_addr(&addr) {
                        return Ok(ProposalOutcome::Refused(why));
                    }
                    self.raft.add_learner(id, Node { addr }, true).await
                }
                Proposal::Promote { ids } => self.raft.change_membership(ChangeMembers::AddVoterIds(ids), false).await,
                Proposal::Remove { ids } => self.raft.change_membership(ChangeMembers::RemoveVoters(ids), false).await,
            };
            result.map(|_| ProposalOutcome::MembershipChanged)
        };
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(ClusterError::Unknown(format!("not committed within {limit:?}"))),
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Ok(ProposalOutcome::NotLeader { leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)) })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Ok(ProposalOutcome::Refused(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(ClusterError::Fatal(e.to_string())),
        }
    }

    /// Refuse a write whose entry would pass `ENGINE_MAX_ENTRY_BYTES`
    /// (heartbeat batches are sized by estimate: their byte budget keeps
    /// them under it; other writes are rare and encoded to be measured).
    fn check_entry_size(&self, req: &Request) -> Result<(), ClusterError> {
        let size = match &req.command {
            Command::HeartbeatBatch { beats } | Command::HeartbeatBatchLimited { beats, .. } => {
                beats.iter().map(model::state::Heartbeat::approx_encoded_len).sum()
            }
            _ => model::codec::encode(req).map(|b| b.len()).unwrap_or(usize::MAX),
        };
        if size > self.opts.max_entry_bytes {
            return Err(ClusterError::TooLarge(format!(
                "{} would be a {size}-byte Raft entry; the limit is {} (ENGINE_MAX_ENTRY_BYTES)",
                req.command.name(),
                self.opts.max_entry_bytes
            )));
        }
        Ok(())
    }

    /// Shape a write for the cluster format in force: a heartbeat batch
    /// carries the fleet caps from format 2 on; a variant newer than the
    /// format is refused here, before the log, since a voter running an
    /// older binary could not decode it.
    fn in_cluster_format(&self, mut req: Request) -> Result<Request, model::CommandError> {
        let format = self.state.read().state.format();
        if let (Command::HeartbeatBatch { beats }, true) = (&req.command, format >= 2) {
            req.command = Command::HeartbeatBatchLimited { beats: beats.clone(), limits: self.opts.limits };
        }
        let needs = req.command.min_format();
        if needs > format {
            return Err(model::CommandError::new(
                model::ErrorKind::Conflict,
                format!(
                    "{} needs cluster format {needs}; the cluster is at {format} until every voter runs a release that knows it",
                    req.command.name()
                ),
            ));
        }
        Ok(req)
    }

    /// Wait until this node has applied everything committed before the call:
    /// afterwards a local read is linearizable.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        if self.removed() {
            return Err(ClusterError::NotAMember(self.id));
        }
        let deadline = Instant::now() + self.opts.write_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ClusterError::Unavailable("no leader confirmed the read in time".into()));
            }
            let read_index = match self.leader_read_index(remaining).await {
                Ok(Some(idx)) => idx,
                Ok(None) => return Ok(()),
                Err(ClusterError::Unavailable(e)) => {
                    tracing::debug!(error = %e, "read index not available yet");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            return self
                .raft
                .wait(Some(remaining))
                .applied_index_at_least(Some(read_index), "consistent read")
                .await
                .map(|_| ())
                // openraft's timeout message carries its whole metrics dump:
                // say what happened in a line instead.
                .map_err(|e| match e {
                    openraft::metrics::WaitError::Timeout(..) => ClusterError::Unavailable(format!(
                        "this node did not apply up to the read index {read_index} within {} ms",
                        remaining.as_millis()
                    )),
                    openraft::metrics::WaitError::ShuttingDown => ClusterError::Fatal("raft is shutting down".into()),
                });
        }
    }

    async fn leader_read_index(&self, limit: Duration) -> Result<Option<u64>, ClusterError> {
        match self.local_read_index(limit).await {
            Err(ClusterError::Unavailable(_)) => {}
            other => return other,
        }
        let (id, addr) = self.leader_hint().ok_or_else(|| ClusterError::Unavailable("no leader known".into()))?;
        if id == self.id {
            return Err(ClusterError::Unavailable("leadership in flux".into()));
        }
        // Our id lets the leader refuse a node it removed (0.1.0 ignores it).
        let answer: Result<Option<u64>, String> = self
            .rpc
            .post(&addr, "/raft/read-index", &self.id, limit)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        match answer {
            Err(msg) if msg.starts_with(NOT_A_MEMBER) => Err(self.mark_removed()),
            other => other.map_err(ClusterError::Unavailable),
        }
    }

    /// On the leader: the index a linearizable read must wait for.
    pub async fn local_read_index(&self, limit: Duration) -> Result<Option<u64>, ClusterError> {
        match tokio::time::timeout(limit, self.raft.get_read_log_id()).await {
            Err(_) => Err(ClusterError::Unavailable("leader could not confirm its lease in time".into())),
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ClusterError::Unavailable("not the leader".into()))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ClusterError::Unavailable("the leader could not reach a quorum to confirm the read".into()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(ClusterError::Fatal(e.to_string())),
        }
    }

    /// Was this node removed from the membership? (An initialized cluster's
    /// membership that no longer names it; a node not yet added, with an
    /// empty membership, is not "removed".)
    pub fn removed(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let told = self.removed_at.load(std::sync::atomic::Ordering::Relaxed);
        (membership.nodes().next().is_some() && membership.get_node(&self.id).is_none())
            || (told != 0 && told == m.last_log_index.unwrap_or(0) + 1)
    }

    /// May `addr` become a member? Checked against `ENGINE_PEER_ALLOWLIST`,
    /// or when unset against the hosts of the membership and `ENGINE_PEERS`.
    pub fn check_peer_addr(&self, addr: &str) -> Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        let members: Vec<String> = m.membership_config.membership().nodes().map(|(_, n)| n.addr.clone()).collect();
        let known = members.iter().chain(&self.opts.peer_security.initial_peers).map(String::as_str);
        self.opts.peer_security.allowlist.check(addr, known)
    }

    /// Is `id` in this node's view of the membership (voter or learner)?
    pub fn is_member(&self, id: NodeId) -> bool {
        self.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some()
    }

    /// The leader refused us as a non-member: a removed node often never
    /// receives the entry that removes it, so this is how it learns.
    fn mark_removed(&self) -> ClusterError {
        let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.removed_at.store(last + 1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!("the leader says this node is not a member of the cluster any more");
        ClusterError::NotAMember(self.id)
    }

    /// Is the Raft core running? (False after a fatal error or shutdown.)
    pub fn core_running(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.running_state.is_ok() && m.state != openraft::ServerState::Shutdown
    }

    /// This node's own report, as other nodes fetch it for cluster status.
    pub fn report(&self) -> NodeReport {
        let m = self.raft.metrics().borrow().clone();
        NodeReport {
            id: self.id,
            role: role_name(m.state).to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            initialized: m.vote.leader_id().term > 0 || m.last_log_index.is_some(),
        }
    }

    /// The newest replicated format every voter's binary knows. A voter
    /// that answers 404 runs 0.1.0 (format 1); one that does not answer at
    /// all makes it unknown (`Err`), so the format waits.
    pub async fn voters_format(&self) -> Result<u32, String> {
        let voters: Vec<(NodeId, String)> = {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership().clone();
            let ids: BTreeSet<NodeId> = membership.voter_ids().collect();
            membership.nodes().filter(|(id, _)| ids.contains(id)).map(|(id, n)| (*id, n.addr.clone())).collect()
        };
        let mut known = model::state::FORMAT_VERSION;
        for (id, addr) in voters.into_iter().filter(|(id, _)| *id != self.id) {
            match self.rpc.post::<_, u32>(&addr, "/raft/format", &(), REPORT_TIMEOUT).await {
                Ok(v) => known = known.min(v),
                Err(RpcFailure::NotDelivered(e)) if e.starts_with("HTTP 404") => known = 1,
                Err(e) => return Err(format!("voter {id} did not say which format it knows: {e}")),
            }
        }
        Ok(known)
    }

    /// Gather every member's report (in parallel, bounded) into one status.
    pub async fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let fetches = membership.nodes().map(|(id, node)| {
            let (id, addr) = (*id, node.addr.clone());
            async move {
                let report = if id == self.id {
                    Ok(self.report())
                } else {
                    self.rpc.post::<_, NodeReport>(&addr, "/raft/report", &(), REPORT_TIMEOUT).await
                };
                (id, addr, report)
            }
        });
        let reports = futures::future::join_all(fetches).await;
        let leader_last = reports
            .iter()
            .filter_map(|(_, _, r)| r.as_ref().ok())
            .find(|r| r.role == "leader")
            .map(|r| r.last_log_index)
            .unwrap_or(m.last_log_index.unwrap_or(0));
        let nodes: Vec<NodeStatus> = reports
            .into_iter()
            .map(|(id, addr, report)| {
                let voter = voters.contains(&id);
                match report {
                    Ok(r) => NodeStatus {
                        id,
                        addr,
                        role: r.role,
                        voter,
                        healthy: true,
                        last_log_index: Some(r.last_log_index),
                        applied_index: Some(r.applied_index),
                        lag: Some(leader_last.saturating_sub(r.applied_index)),
                        snapshot_index: r.snapshot_index,
                        purged_index: r.purged_index,
                        term: Some(r.term),
                        error: None,
                    },
                    Err(e) => NodeStatus {
                        id,
                        addr,
                        role: if voter { "voter" } else { "learner" }.to_string(),
                        voter,
                        healthy: false,
                        last_log_index: None,
                        applied_index: None,
                        lag: None,
                        snapshot_index: None,
                        purged_index: None,
                        term: None,
                        // A classification only: a peer's reply is never echoed.
                        error: Some(e.class().to_string()),
                    },
                }
            })
            .collect();
        let healthy_nodes = nodes.iter().filter(|n| n.healthy).count();
        ClusterStatus {
            cluster_id: self.opts.cluster_name.clone(),
            node_id: self.id,
            leader_id: m.current_leader,
            term: m.current_term,
            total_nodes: nodes.len(),
            healthy_nodes,
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, StoredMembership, Vote};

    fn chunk(id: &str, offset: u64, len: usize, done: bool) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: crate::types::SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: id.into(),
            },
            offset,
            data: vec![0; len],
            done,
        }
    }

    #[test]
    fn snapshot_chunks_must_follow_what_was_received() {
        let mut p = SnapshotProgress::default();
        assert!(p.admit(&chunk("a", 10, 5, false)).is_err(), "a stream starts at offset 0");
        assert_eq!(p.admit(&chunk("a", 0, 100, false)), Ok(100));
        p.accepted("a".into(), 100, false);
        assert_eq!(p.admit(&chunk("a", 100, 50, false)), Ok(150), "the next chunk");
        assert_eq!(p.admit(&chunk("a", 0, 100, false)), Ok(100), "a resent chunk");
        let e = p.admit(&chunk("a", 101, 50, false)).unwrap_err();
        assert!(e.contains("only 100 bytes"), "{e}");
        assert!(p.admit(&chunk("b", 100, 50, false)).is_err(), "another snapshot starts at 0");
        assert!(p.admit(&chunk("a", u64::MAX - 1, 10, false)).is_err(), "overflowing offset");
        assert!(p.admit(&chunk("a", 0, 0, false)).is_ok());
        p.accepted("a".into(), 150, false);
        assert!(p.admit(&chunk("a", 150, 0, true)).is_ok());
        p.accepted("a".into(), 150, true);
        assert!(p.admit(&chunk("a", 150, 0, false)).is_err(), "finished: nothing to continue");
    }

    #[test]
    fn snapshots_over_the_limit_are_refused() {
        let mut p = SnapshotProgress::default();
        p.accepted("big".into(), MAX_SNAPSHOT_BYTES - 10, false);
        assert!(p.admit(&chunk("big", MAX_SNAPSHOT_BYTES - 10, 10, true)).is_ok());
        let e = p.admit(&chunk("big", MAX_SNAPSHOT_BYTES - 10, 11, true)).unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }
}
