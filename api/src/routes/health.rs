//! Liveness and readiness, open without a token for load balancers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::openapi::{Live, Ready};
use crate::AppState;

/// How far (in log entries) a node may trail the leader and still be ready.
const READY_MAX_LAG: u64 = 1_000;

/// Live while the HTTP server answers and the Raft core runs: after a fatal
/// Raft error the node answers 503 (and exits; see `raft_store::fatal`).
#[utoipa::path(get, path = "/api/health/live", tag = "health", responses((status = 200, body = crate::openapi::Live), (status = 503, description = "the Raft core has stopped", body = crate::openapi::Live)))]
pub async fn live(State(s): State<AppState>) -> (StatusCode, Json<Live>) {
    if s.cluster.core_running() {
        (StatusCode::OK, Json(Live { status: "ok".to_string() }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Live { status: "raft_stopped".to_string() }))
    }
}

/// How long a follower may go without hearing from its leader, in election
/// timeouts (`ENGINE_ELECTION_MAX_MS`), and still be ready.
const READY_MAX_QUIET_ELECTIONS: u32 = 4;

/// Ready when this node is a member, knows a leader, has heard from it
/// recently (a follower), and has applied close to the commit index it last
/// heard of. Answered from local state alone: a load balancer polling every
/// node costs no RPC between nodes, and a dead peer cannot slow the answer.
#[utoipa::path(get, path = "/api/health/ready", tag = "health", responses((status = 200, body = crate::openapi::Ready), (status = 503, description = "removed from the cluster, no known leader, leader unreachable, or too far behind", body = crate::openapi::Ready)))]
pub async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Ready>) {
    let not_ready = |leader_id, reason: &str| {
        let r = Ready { ready: false, leader_id, applied_index: None, lag: None, reason: Some(reason.to_string()) };
        (StatusCode::SERVICE_UNAVAILABLE, Json(r))
    };
    if s.cluster.removed() {
        return not_ready(None, "not_a_member: this node was removed from the cluster");
    }
    let me = s.cluster.report();
    let leader = match me.leader_id {
        None => return not_ready(None, "no known leader"),
        Some(l) => l,
    };
    let target = if leader == s.cluster.id {
        me.last_log_index
    } else {
        let quiet = s.cluster.contact.elapsed();
        let limit = std::time::Duration::from_millis(s.cluster.opts.election_max_ms) * READY_MAX_QUIET_ELECTIONS;
        if quiet > limit {
            return not_ready(Some(leader), &format!("leader unreachable: nothing heard for {} ms", quiet.as_millis()));
        }
        s.cluster.leader_commit()
    };
    let lag = target.saturating_sub(me.applied_index);
    let ready = lag <= READY_MAX_LAG;
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let r =
        Ready { ready, leader_id: Some(leader), applied_index: Some(me.applied_index), lag: Some(lag), reason: None };
    (code, Json(r))
}
