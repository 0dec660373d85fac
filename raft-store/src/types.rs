//! openraft type configuration, in one place.

use std::io::Cursor;

use model::{Request, Response};

pub use model::NodeId;

openraft::declare_raft_types!(
    /// Engine Room's Raft types: our `Request` in, our `Response` out, the rest default.
    pub TypeConfig:
        D = Request,
        R = Response,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Node = openraft::BasicNode;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
