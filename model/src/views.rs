//! Typed views of things the model does not hold but every layer shows:
//! the cluster's members as `GET /api/cluster/status` reports them.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// One member as `GET /api/cluster/status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub role: String,
    pub voter: bool,
    pub healthy: bool,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub term: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub nodes: Vec<NodeStatus>,
    pub total_nodes: usize,
    pub healthy_nodes: usize,
}

/// One supervised loop as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LoopStatus {
    pub name: String,
    /// `running` (in a round), `idle` (between rounds), `restarting` (after a
    /// panic, waiting out its backoff) or `stopped` (node shutting down).
    pub state: String,
    /// Rounds completed, with or without an error.
    pub runs: u64,
    pub errors: u64,
    pub panics: u64,
    pub last_run_ms: Option<u64>,
    pub last_error: Option<String>,
}
