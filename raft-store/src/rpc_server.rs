//! The server side of the internal Raft RPC under `/raft/*`: bincode bodies,
//! a valid peer signature ([`crate::peer_auth`]) required on every request,
//! bodies decoded within the codec's limit. Followers also use it to
//! forward proposals (heartbeat batches join the leader's group commit) and to
//! ask the leader for a read index. The client side is [`crate::network`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, OriginalUri, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use model::{codec, Command, Request};
use serde::{de::DeserializeOwned, Serialize};

use crate::cluster::{Proposal, ProposalOutcome, NOT_A_MEMBER, WAIT_HEADER};
use crate::group_commit::{BatchError, HeartbeatBatcher};
use crate::job_commit::JobBatcher;
use crate::peer_auth::{AUTH_HEADER, PLAIN_SECRET_HEADER};
use crate::{Cluster, ClusterError, NodeId, TypeConfig};

/// Largest `/raft` body: a snapshot chunk plus framing.
pub const RAFT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What the `/raft` handlers need.
pub struct RaftService {
    pub cluster: Arc<Cluster>,
    pub batcher: HeartbeatBatcher,
    /// The job group commit: forwarded job rounds join the leader's.
    pub jobs: JobBatcher,
    /// `CLUSTER_SECRET`; requests are checked by the cluster's
    /// [`crate::peer_auth::PeerAuth`], built from the same secret.
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
        .route_layer(middleware::from_fn_with_state(svc.clone(), require_peer))
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

/// A valid peer signature over the request, or 401 (413 for a body over
/// [`RAFT_BODY_LIMIT`]). The body is read here, since it is signed, and
/// handed on; a request with no credential at all is refused unread.
async fn require_peer(State(svc): Svc, req: HttpRequest, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let signed = parts.headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    let plain = parts.headers.get(PLAIN_SECRET_HEADER).map(|v| v.as_bytes());
    if signed.is_none() && plain.is_none() {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing peer signature");
    }
    let path = match parts.extensions.get::<OriginalUri>() {
        Some(original) => original.path().to_string(),
        None => format!("/raft{}", parts.uri.path()),
    };
    let Ok(bytes) = axum::body::to_bytes(body, RAFT_BODY_LIMIT).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "raft rpc body over the limit or cut short");
    };
    // A forwarded proposal is a write: its replay would apply it twice.
    let remember = path == "/raft/propose";
    match svc.cluster.peer_auth.verify(parts.method.as_str(), &path, signed, plain, &bytes, remember) {
        Ok(()) => next.run(HttpRequest::from_parts(parts, Body::from(bytes))).await,
        Err(e) => {
            tracing::warn!(%path, reason = %e, "refused a /raft request");
            error(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
        }
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
    let answer = s
        .cluster
        .install_snapshot(rpc)
        .await
        .map_err(|why| error(StatusCode::BAD_REQUEST, "bad_snapshot_chunk", why))?;
    Ok(encoded(&answer))
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
        // Likewise a follower's round of job operations (only a grouped
        // round: an operator's op keeps its own entry and audit actor).
        Proposal::Write(Request { command: Command::Jobs(ops), actor, .. })
            if s.cluster.is_leader() && actor == crate::job_commit::ACTOR =>
        {
            return s.jobs.forwarded(ops.ops, wait).await.map(|o| encoded(&o)).map_err(|e| batch_error(&e));
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
