//! Engine Room's model: the replicated `Command` vocabulary, the control
//! state it applies to (one module per command family under `state`), the
//! runtime settings schema, validation, and the one codec for stored and wire
//! bytes. Pure: no clock, no I/O, no tokio, openraft, sled or HTTP; applying
//! a command is a function of (state, command).

pub mod codec;
pub mod command;
pub mod policy;
pub mod settings;
pub mod state;
pub mod views;

pub use command::{Command, CommandError, ErrorKind, Reply, Request, Response};
pub use state::ControlState;

/// A cluster member's id (`ENGINE_NODE_ID`).
pub type NodeId = u64;
