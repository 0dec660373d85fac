//! The replicated vocabulary: every state change is one `Command`, wrapped in a
//! `Request` that carries the time and origin so that applying stays pure.

use serde::{Deserialize, Serialize};

use crate::state::Pool;
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
    /// Set a pool's desired worker count, creating the pool if it is new.
    ScalePool { pool: String, desired_count: u32 },
}

impl Command {
    /// Short stable name, used in audit entries and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Command::ScalePool { .. } => "pool.scale",
        }
    }
}

/// What a successfully applied command hands back to its caller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reply {
    /// Entries with nothing to say (blank and membership entries).
    Done,
    Pool(Pool),
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
