//! The replicated vocabulary: every state change is one `Command`, wrapped in a
//! `Request` that carries the time and origin so that applying stays pure.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::state::farm::{FarmOp, FarmReply};
use crate::state::job::{JobOps, JobReply};
use crate::state::token::{ApiToken, NewToken};
use crate::state::{
    Heartbeat, HeartbeatAnswer, Incident, IncidentChanges, Limits, Notification, Pool, PoolPatch, ProviderState,
    Reconcile, Worker, WorkerAction,
};
use crate::NodeId;

/// One Raft log payload: a command plus the facts apply may not look up itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// Wall-clock milliseconds when the proposing node accepted the command.
    pub at_ms: u64,
    /// Node that accepted the command from its client.
    pub node: NodeId,
    /// Who asked (token id, `leader` for loops, `worker` for heartbeats).
    pub actor: String,
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.actor, self.node, self.command.name())
    }
}

/// The replicated vocabulary. **Format rule**: log entries and snapshots are
/// bincode, positional, so variants and fields are only ever *appended*:
/// never reordered, renamed into another's place or removed, and an existing
/// variant's fields never change type. A new variant (or a new rule for an
/// old one) must wait for a cluster format version that every voter knows,
/// since an older follower cannot decode it. `tests/golden.rs` holds the
/// committed bytes of every variant and of a populated snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// Heartbeats gathered by the leader within one commit round. Shared, so
    /// that the leader's log cache and replication clone the entry cheaply.
    HeartbeatBatch {
        beats: Arc<Vec<Heartbeat>>,
    },
    /// Operator or automation control of one worker.
    WorkerControl {
        worker: String,
        action: WorkerAction,
        reason: Option<String>,
    },
    /// Leader's stale-worker cleanup: remove these if still silent since `cutoff_ms`.
    RemoveStaleWorkers {
        cutoff_ms: u64,
        ids: Vec<String>,
    },
    /// Set a pool's desired worker count, creating the pool if it is new.
    ScalePool {
        pool: String,
        desired_count: u32,
    },
    CreatePool {
        name: String,
        patch: PoolPatch,
    },
    UpdatePool {
        name: String,
        patch: PoolPatch,
    },
    ArchivePool {
        name: String,
        archived: bool,
    },
    SetDefaultPool {
        name: String,
    },
    /// The leader's alert round: what is firing now, plus a fleet sample.
    ReconcileIncidents(Reconcile),
    AckIncident {
        id: u64,
        note: Option<String>,
    },
    /// Reserve a notification for the proposing node until `until_ms`.
    ClaimNotification {
        id: u64,
        until_ms: u64,
    },
    /// Outcome of a send: `error: None` means delivered.
    RecordDelivery {
        id: u64,
        error: Option<String>,
        retry_at_ms: Option<u64>,
    },
    /// Operator override (`auto: false`) or auto-protect decision (`auto: true`).
    SetProviderMode {
        provider: String,
        mode: String,
        auto: bool,
        reason: Option<String>,
    },
    /// Autoscale step, fenced on the count the leader saw and the cooldown.
    AutoscalePool {
        pool: String,
        from: u32,
        to: u32,
        reason: String,
        cooldown_ms: u64,
    },
    /// Set (`Some`) or reset (`None`) runtime settings.
    UpdateSettings {
        changes: BTreeMap<String, Option<String>>,
    },
    // ---- cluster format 2 (release 0.2.0); see `state::format` ----
    /// Raise the cluster format version. The leader proposes it once every
    /// voter reports a binary that knows `version`.
    SetFormatVersion {
        version: u32,
    },
    /// A heartbeat batch with the leader's fleet caps, refused per beat past them.
    HeartbeatBatchLimited {
        beats: Arc<Vec<Heartbeat>>,
        limits: Limits,
    },
    /// An operator removes a worker (it returns as new if it heartbeats again).
    DeleteWorker {
        id: String,
        reason: Option<String>,
    },
    /// The cleanup loop removes pools a heartbeat created that have no
    /// workers and were never configured, if that still holds.
    RemoveEmptyPools {
        names: Vec<String>,
    },
    // ---- cluster format 3 (release 0.3.0) ----
    /// One part of the leader's alert round as changes only: what opened,
    /// changed severity, resolved or is due a reminder.
    IncidentChanges(IncidentChanges),
    // ---- cluster format 4 ----
    /// An admin creates a named, scoped API token (its SHA-256 only).
    CreateToken(NewToken),
    /// An admin revokes a token: it stops authenticating at once.
    RevokeToken {
        name: String,
    },
    // ---- cluster format 5 ----
    /// A group of job operations (producers, workers, operators, the leader's
    /// reaper and compaction), applied in order, each answered on its own.
    Jobs(JobOps),
    // ---- cluster format 6 ----
    /// One build-farm operation: hints, plan and manifest versions, build
    /// log lines, cache reports, the farm's config (`state::farm`); from
    /// format 7 also worker triggers (`FarmOp::min_format`).
    Farm(FarmOp),
}

impl Command {
    /// Short stable name, used in audit entries and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Command::HeartbeatBatch { .. } => "worker.heartbeat",
            Command::WorkerControl { action, .. } => match action {
                WorkerAction::Pause => "worker.pause",
                WorkerAction::Resume => "worker.resume",
                WorkerAction::Drain => "worker.drain",
                WorkerAction::Stop => "worker.stop",
                WorkerAction::Quarantine => "worker.quarantine",
                WorkerAction::Unquarantine => "worker.unquarantine",
            },
            Command::RemoveStaleWorkers { .. } => "worker.remove_stale",
            Command::ScalePool { .. } => "pool.scale",
            Command::CreatePool { .. } => "pool.create",
            Command::UpdatePool { .. } => "pool.update",
            Command::ArchivePool { archived: true, .. } => "pool.archive",
            Command::ArchivePool { archived: false, .. } => "pool.unarchive",
            Command::SetDefaultPool { .. } => "pool.set_default",
            Command::ReconcileIncidents(_) => "incident.reconcile",
            Command::AckIncident { .. } => "incident.ack",
            Command::ClaimNotification { .. } => "notification.claim",
            Command::RecordDelivery { .. } => "notification.record",
            Command::SetProviderMode { auto: false, .. } => "provider.mode",
            Command::SetProviderMode { auto: true, .. } => "provider.autoprotect",
            Command::AutoscalePool { .. } => "pool.autoscale",
            Command::UpdateSettings { .. } => "settings.update",
            Command::SetFormatVersion { .. } => "cluster.format",
            Command::HeartbeatBatchLimited { .. } => "worker.heartbeat",
            Command::DeleteWorker { .. } => "worker.delete",
            Command::RemoveEmptyPools { .. } => "pool.remove_empty",
            Command::IncidentChanges(_) => "incident.reconcile",
            Command::CreateToken(_) => "token.create",
            Command::RevokeToken { .. } => "token.revoke",
            Command::Jobs(_) => "job.ops",
            Command::Farm(_) => "farm.ops",
        }
    }

    /// The cluster format version that introduced this variant: it is
    /// proposed, and applied, only at that format or later.
    /// (`SetFormatVersion` is what raises it, so it needs none.)
    pub fn min_format(&self) -> u32 {
        match self {
            Command::HeartbeatBatchLimited { .. } | Command::DeleteWorker { .. } | Command::RemoveEmptyPools { .. } => {
                2
            }
            Command::IncidentChanges(_) => 3,
            Command::CreateToken(_) | Command::RevokeToken { .. } => 4,
            Command::Jobs(_) => 5,
            Command::Farm(op) => op.min_format(),
            _ => 1,
        }
    }
}

/// What a successfully applied command hands back to its caller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reply {
    /// Entries with nothing to say (blank and membership entries).
    Done,
    Pool(Pool),
    Worker(Worker),
    /// One answer per heartbeat of a batch, in order.
    Heartbeats(Vec<Result<HeartbeatAnswer, CommandError>>),
    Removed(Vec<String>),
    Reconciled {
        opened: Vec<u64>,
        resolved: Vec<u64>,
    },
    Incident(Incident),
    Notification(Notification),
    Provider(ProviderState),
    Settings(BTreeMap<String, String>),
    /// Format 4.
    Token(ApiToken),
    /// Format 5: one answer per job operation, in order.
    Jobs(Vec<Result<JobReply, CommandError>>),
    /// Format 6.
    Farm(FarmReply),
}

/// Why a command was refused by the state machine. Refusals are deterministic:
/// every node refuses the same command the same way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct CommandError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    Invalid,
    /// A cap on the replicated state was reached (HTTP 429). Format 2.
    Limit,
    /// A job's lease is no longer the caller's (HTTP 409 `lease_lost`). Format 5.
    LeaseLost,
    /// A payload or result over its cap (HTTP 413). Format 5.
    TooLarge,
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// The state machine's answer to one log entry.
pub type Response = Result<Reply, CommandError>;
