//! Cluster status and membership changes (forwarded to the leader).

use std::collections::BTreeSet;

use axum::extract::State;
use axum::Json;
use raft_store::cluster::{ClusterStatus, Proposal};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openapi::SnapshotTriggered;
use crate::AppState;

#[utoipa::path(get, path = "/api/cluster/status", tag = "cluster", responses((status = 200, body = raft_store::cluster::ClusterStatus)))]
pub async fn status(State(s): State<AppState>) -> Json<ClusterStatus> {
    Json(s.cluster.status().await)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnerBody {
    pub id: u64,
    pub addr: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeIdBody {
    pub id: u64,
}

#[utoipa::path(post, path = "/api/cluster/learners", tag = "cluster", request_body = LearnerBody, responses((status = 200, body = raft_store::cluster::ClusterStatus), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn add_learner(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<LearnerBody>,
) -> Result<Json<ClusterStatus>, ApiError> {
    if !(b.addr.starts_with("http://") || b.addr.starts_with("https://")) || b.addr.len() > 2048 {
        return Err(ApiError::bad_request("addr must be an http:// or https:// URL"));
    }
    // A member receives every entry and a full snapshot: only allowed
    // addresses join (`ENGINE_PEER_ALLOWLIST`).
    s.cluster
        .check_peer_addr(&b.addr)
        .map_err(|why| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "peer_not_allowed", why))?;
    s.cluster.propose(Proposal::AddLearner { id: b.id, addr: b.addr }).await?;
    Ok(Json(s.cluster.status().await))
}

#[utoipa::path(post, path = "/api/cluster/promote", tag = "cluster", request_body = NodeIdBody, responses((status = 200, body = raft_store::cluster::ClusterStatus), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn promote(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<NodeIdBody>,
) -> Result<Json<ClusterStatus>, ApiError> {
    s.cluster.propose(Proposal::Promote { ids: BTreeSet::from([b.id]) }).await?;
    Ok(Json(s.cluster.status().await))
}

#[utoipa::path(post, path = "/api/cluster/remove", tag = "cluster", request_body = NodeIdBody, responses((status = 200, body = raft_store::cluster::ClusterStatus), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody)))]
pub async fn remove(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<NodeIdBody>,
) -> Result<Json<ClusterStatus>, ApiError> {
    s.cluster.propose(Proposal::Remove { ids: BTreeSet::from([b.id]) }).await?;
    Ok(Json(s.cluster.status().await))
}

/// Ask this node to snapshot its state machine now (and compact its log).
#[utoipa::path(post, path = "/api/cluster/snapshot", tag = "cluster", responses((status = 200, body = crate::openapi::SnapshotTriggered), (status = 401, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn snapshot(State(s): State<AppState>) -> Result<Json<SnapshotTriggered>, ApiError> {
    s.cluster
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "raft_stopped", e.to_string()))?;
    Ok(Json(SnapshotTriggered { triggered: true, node_id: s.cluster.id }))
}

/// This node's supervised background loops (leader loops run on every node
/// and act only while it leads), with their status.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LoopList {
    pub node_id: u64,
    pub loops: Vec<model::views::LoopStatus>,
}

#[utoipa::path(get, path = "/api/cluster/loops", tag = "cluster", responses((status = 200, body = LoopList), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn loops(State(s): State<AppState>) -> Json<LoopList> {
    Json(LoopList { node_id: s.cluster.id, loops: s.cluster.supervisor.statuses() })
}
