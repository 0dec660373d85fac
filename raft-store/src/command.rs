//! The replicated vocabulary: every state change is one `Command`, wrapped in a
//! `Request` that carries the time and origin so that applying stays pure.

use serde::{Deserialize, Serialize};

use crate::state::{Heartbeat, HeartbeatAnswer, Pool, PoolPatch, Worker, WorkerAction};
use crate::types::NodeId;

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// Heartbeats gathered by one node within one batching window.
    HeartbeatBatch {
        beats: Vec<Heartbeat>,
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
            Command::ArchivePool {
                archived: false, ..
            } => "pool.unarchive",
            Command::SetDefaultPool { .. } => "pool.set_default",
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
}

impl CommandError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The state machine's answer to one log entry.
pub type Response = Result<Reply, CommandError>;
