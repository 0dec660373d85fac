//! Liveness and readiness, open without a token for load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// How far (in log entries) a node may trail the leader and still be ready.
const READY_MAX_LAG: u64 = 1_000;

/// Live while the HTTP server answers and the Raft core runs: after a fatal
/// Raft error the node answers 503 (and exits; see `raft_store::fatal`).
#[utoipa::path(get, path = "/api/health/live", tag = "health", responses((status = 200, body = crate::openapi::Live), (status = 503, body = crate::openapi::Live)))]
pub async fn live(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    if s.cluster.core_running() {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "raft_stopped"})))
    }
}

/// Ready when a leader is known and this node has applied close to its log.
#[utoipa::path(get, path = "/api/health/ready", tag = "health", responses((status = 200, body = crate::openapi::Ready)))]
pub async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    if s.cluster.removed() {
        let reason = "not_a_member: this node was removed from the cluster";
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": reason})));
    }
    let me = s.cluster.report();
    let leader = match me.leader_id {
        None => return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": "no known leader"}))),
        Some(l) => l,
    };
    let leader_last = if leader == s.cluster.id {
        me.last_log_index
    } else {
        let status = s.cluster.status().await;
        match status.nodes.iter().find(|n| n.id == leader).and_then(|n| n.last_log_index) {
            Some(i) => i,
            None => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"ready": false, "reason": "leader unreachable", "leader_id": leader})),
                )
            }
        }
    };
    let lag = leader_last.saturating_sub(me.applied_index);
    let ready = lag <= READY_MAX_LAG;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"ready": ready, "leader_id": leader, "applied_index": me.applied_index, "lag": lag})))
}
