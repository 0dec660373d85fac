//! Transport limits in front of the handlers: a deadline on every request but
//! the UI's event stream, a cap on requests in flight (load shedding: 503 at
//! once rather than a queue that grows), and a cap on open event streams.
//! The connection-level defences (header-read timeout, connection cap) are in
//! the node's listener.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::openapi::{ErrorBody, ErrorDetail};

/// The UI's Server-Sent Events stream: long-lived by design, so it has no
/// deadline and counts against [`Limits::max_sse_streams`] instead.
pub const SSE_PATH: &str = "/verifier-engine-room/events";

/// Caps from the node's configuration (`ENGINE_REQUEST_TIMEOUT_MS`,
/// `ENGINE_MAX_INFLIGHT`, `ENGINE_MAX_SSE_STREAMS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_inflight: usize,
    pub max_sse_streams: usize,
}

struct Gate {
    timeout: Duration,
    inflight: Option<Semaphore>,
    sse: Arc<Semaphore>,
}

/// The public surface (`/api`, UI, `/metrics`): deadline, load shedding and
/// the event-stream cap.
pub fn public(router: Router, limits: Limits) -> Router {
    let gate = Gate {
        timeout: limits.request_timeout,
        inflight: Some(Semaphore::new(limits.max_inflight)),
        sse: Arc::new(Semaphore::new(limits.max_sse_streams)),
    };
    router.layer(middleware::from_fn_with_state(Arc::new(gate), guard))
}

/// `/raft`: the deadline only. Peer traffic is never shed: a node that sheds
/// its heartbeats to the leader would start elections under load.
pub fn raft(router: Router, limits: Limits) -> Router {
    let gate = Gate { timeout: limits.request_timeout, inflight: None, sse: Arc::new(Semaphore::new(0)) };
    router.layer(middleware::from_fn_with_state(Arc::new(gate), guard))
}

async fn guard(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == SSE_PATH {
        return stream(&gate, req, next).await;
    }
    // Probes answer even when the node is saturated, so an orchestrator does
    // not restart a node for being busy.
    let _permit = match &gate.inflight {
        Some(sem) if !path.starts_with("/api/health/") && path != "/health" => match sem.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => return overloaded("too many requests in flight on this node; retry shortly"),
        },
        _ => None,
    };
    match tokio::time::timeout(gate.timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let message = format!("request not completed within {} ms", gate.timeout.as_millis());
            let mut res = error(StatusCode::REQUEST_TIMEOUT, "request_timeout", message);
            // The body may be half read: the connection cannot carry another request.
            res.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            res
        }
    }
}

/// An event stream holds its permit for as long as its body is open.
async fn stream(gate: &Gate, req: Request, next: Next) -> Response {
    let Ok(permit) = gate.sse.clone().try_acquire_owned() else {
        return overloaded("too many open event streams on this node; retry shortly");
    };
    let res = next.run(req).await;
    res.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _held = &permit;
            chunk
        }))
    })
}

/// Our JSON error shape, built here rather than through `ApiError`, which
/// logs every 5xx: shedding under a flood must not flood the log too.
fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: ErrorDetail { code: code.to_string(), message } })).into_response()
}

fn overloaded(message: &str) -> Response {
    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message.to_string());
    res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    res
}
