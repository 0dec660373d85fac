//! Internal Raft RPC under `/raft/*`: bincode bodies, cluster secret required.
//! Followers also use it to forward proposals and ask the leader for a read index.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{middleware, Router};
use raft_store::cluster::{Proposal, ProposalOutcome, WAIT_HEADER};
use model::codec;
use raft_store::TypeConfig;
use model::{Command, Request};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::ApiError;
use crate::{auth, AppState};

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/append", post(append))
        .route("/vote", post(vote))
        .route("/prevote", post(prevote))
        .route("/snapshot", post(snapshot))
        .route("/propose", post(propose))
        .route("/read-index", post(read_index))
        .route("/report", post(report))
        .route_layer(middleware::from_fn_with_state(state, auth::require_secret))
        .layer(DefaultBodyLimit::max(crate::RAFT_BODY_LIMIT))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    codec::decode(body).map_err(|e| ApiError::bad_request(format!("undecodable raft rpc body: {e}")))
}

fn encoded<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "codec", e.to_string()).into_response(),
    }
}

async fn append(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&body)?;
    Ok(encoded(&s.cluster.append_entries(rpc).await))
}

async fn vote(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let rpc: openraft::raft::VoteRequest<u64> = decode(&body)?;
    Ok(encoded(&s.cluster.vote(rpc).await))
}

async fn prevote(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: raft_store::election::PreVoteRequest = decode(&body)?;
    Ok(encoded(&s.cluster.prevote(&req)))
}

async fn snapshot(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(&body)?;
    Ok(encoded(&s.cluster.install_snapshot(rpc).await))
}

/// A follower's forwarded proposal; answered only once applied (or refused).
async fn propose(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let proposal: Proposal = decode(&body)?;
    // How long the follower's callers still wait (absent from older nodes).
    let wait = headers
        .get(WAIT_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let proposal = match proposal {
        // A follower's heartbeats join this leader's own next batch: one Raft
        // entry per round. A node that no longer leads refuses them below with
        // the leader's whereabouts, as it refuses any proposal.
        Proposal::Write(Request { command: Command::HeartbeatBatch { beats }, .. }) if s.cluster.is_leader() => {
            let beats = Arc::try_unwrap(beats).unwrap_or_else(|shared| shared.as_ref().clone());
            return Ok(encoded(&s.batcher.forwarded(beats, wait).await?));
        }
        other => other,
    };
    let limit = wait.map_or(s.cluster.opts.write_timeout, |w| w.min(s.cluster.opts.write_timeout));
    if limit.is_zero() {
        // The follower's caller has stopped waiting: not proposed.
        return Ok(encoded(&ProposalOutcome::NotLeader { leader: None }));
    }
    let outcome = s.cluster.propose_local(proposal, limit).await?;
    Ok(encoded(&outcome))
}

async fn read_index(State(s): State<AppState>) -> Response {
    let answer = s.cluster.local_read_index(s.cluster.opts.write_timeout).await.map_err(|e| e.to_string());
    encoded(&answer)
}

async fn report(State(s): State<AppState>) -> Response {
    encoded(&s.cluster.report())
}
