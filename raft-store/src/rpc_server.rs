//! The server side of the internal Raft RPC under `/raft/*`: bincode bodies,
//! the cluster secret required on every request. Followers also use it to
//! forward proposals (heartbeat batches join the leader's group commit) and to
//! ask the leader for a read index. The client side is [`crate::network`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use model::{codec, Command, Request};
use serde::{de::DeserializeOwned, Serialize};
use subtle::ConstantTimeEq;

use crate::cluster::{Proposal, ProposalOutcome, NOT_A_MEMBER, WAIT_HEADER};
use crate::group_commit::{BatchError, HeartbeatBatcher};
use crate::network::SECRET_HEADER;
use crate::{Cluster, ClusterError, NodeId, TypeConfig};

/// Largest `/raft` body: a snapshot chunk plus framing.
pub const RAFT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What the `/raft` handlers need.
pub struct RaftService {
    pub cluster: Arc<Cluster>,
    pub batcher: HeartbeatBatcher,
    pub secret: Arc<str>,
}

type Svc = State<Arc<RaftService>>;

/// The `/raft` routes, to be nested under `/raft` by the node's HTTP app.
pub fn router(svc: Arc<RaftService>) -> Router {
    Router::new()
        .route("/append", post(append))
        .route("/vote", post(vote))
        .route("/prevote", post(prevote))
        .route("/snapshot", post(snapshot))
        .route("/propose", post(propose))
        .route("/read-index", post(read_index))
        .route("/report", post(report))
        .route("/format", post(format))
        .route_layer(middleware::from_fn_with_state(svc.clone(), require_secret))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such raft rpc") })
        .layer(DefaultBodyLimit::max(RAFT_BODY_LIMIT))
        .with_state(svc)
}

/// The JSON error shape every route of a node answers with.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    if status.is_server_error() {
        tracing::warn!(%status, code, %message, "raft rpc failed");
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// A cluster failure as the forwarding follower's client reads it: the same
/// status and code as the API gives for it.
fn cluster_error(e: &ClusterError) -> Response {
    let (status, code) = e.http_parts();
    error(status, code, e.to_string())
}

fn batch_error(e: &BatchError) -> Response {
    match e {
        BatchError::Cluster(c) => cluster_error(c),
        BatchError::Command(c) => error(StatusCode::CONFLICT, "refused", c.to_string()),
        BatchError::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
    }
}

/// The cluster secret header, compared in constant time, or 401.
async fn require_secret(State(svc): Svc, req: HttpRequest, next: Next) -> Response {
    let given = req.headers().get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(svc.secret.as_bytes()))) {
        next.run(req).await
    } else {
        error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong cluster secret")
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    codec::decode(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("undecodable raft rpc body: {e}")))
}

fn encoded<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "codec", e.to_string()),
    }
}

async fn append(State(s): Svc, body: Bytes) -> Result<Response, Response> {
    let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&body)?;
    Ok(encoded(&s.cluster.append_entries(rpc).await))
}

async fn vote(State(s): Svc, body: Bytes) -> Result<Response, Response> {
    let rpc: openraft::raft::VoteRequest<u64> = decode(&body)?;
    Ok(encoded(&s.cluster.vote(rpc).await))
}

async fn prevote(State(s): Svc, body: Bytes) -> Result<Response, Response> {
    let req: crate::election::PreVoteRequest = decode(&body)?;
    Ok(encoded(&s.cluster.prevote(&req)))
}

async fn snapshot(State(s): Svc, body: Bytes) -> Result<Response, Response> {
    let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(&body)?;
    Ok(encoded(&s.cluster.install_snapshot(rpc).await))
}

/// A follower's forwarded proposal; answered only once applied (or refused).
async fn propose(State(s): Svc, headers: HeaderMap, body: Bytes) -> Result<Response, Response> {
    let proposal: Proposal = decode(&body)?;
    if let Proposal::Write(req) = &proposal {
        if s.cluster.is_leader() && !s.cluster.is_member(req.node) {
            let why = format!("{NOT_A_MEMBER}: node {} is not in the cluster's membership", req.node);
            return Ok(encoded(&ProposalOutcome::Refused(why)));
        }
    }
    // How long the follower's callers still wait (absent from older nodes).
    let wait = headers.get(WAIT_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_millis);
    let proposal = match proposal {
        // A follower's heartbeats join this leader's own next batch: one Raft
        // entry per round. A node that no longer leads refuses them below with
        // the leader's whereabouts, as it refuses any proposal.
        Proposal::Write(Request { command: Command::HeartbeatBatch { beats }, .. }) if s.cluster.is_leader() => {
            let beats = Arc::try_unwrap(beats).unwrap_or_else(|shared| shared.as_ref().clone());
            return s.batcher.forwarded(beats, wait).await.map(|o| encoded(&o)).map_err(|e| batch_error(&e));
        }
        other => other,
    };
    let limit = wait.map_or(s.cluster.opts.write_timeout, |w| w.min(s.cluster.opts.write_timeout));
    if limit.is_zero() {
        // The follower's caller has stopped waiting: not proposed.
        return Ok(encoded(&ProposalOutcome::NotLeader { leader: None }));
    }
    let outcome = s.cluster.propose_local(proposal, limit).await.map_err(|e| cluster_error(&e))?;
    Ok(encoded(&outcome))
}

async fn read_index(State(s): Svc, body: Bytes) -> Response {
    // The asking node's id (absent from 0.1.0 nodes).
    if let Ok(asker) = model::codec::decode::<NodeId>(&body) {
        if s.cluster.is_leader() && !s.cluster.is_member(asker) {
            let answer: Result<Option<u64>, String> =
                Err(format!("{NOT_A_MEMBER}: node {asker} is not in the cluster's membership"));
            return encoded(&answer);
        }
    }
    let answer = s.cluster.local_read_index(s.cluster.opts.write_timeout).await.map_err(|e| e.to_string());
    encoded(&answer)
}

/// The newest replicated format this binary knows (0.1.0 has no such
/// route: its 404 means format 1).
async fn format() -> Response {
    encoded(&model::state::FORMAT_VERSION)
}

async fn report(State(s): Svc) -> Response {
    encoded(&s.cluster.report())
}
