//! Transport limits in front of the handlers: a deadline on every request but
//! the UI's event stream, a cap on requests in flight (load shedding: 503 at
//! once rather than a queue that grows), and a cap on open event streams.
//! The connection-level defences (header-read timeout, connection cap) are in
//! the node's listener.
//!
//! A plain tower layer rather than `axum::middleware::from_fn`: every
//! request passes here, and the decisions are synchronous, so the request
//! goes on without a boxed future or a clone of the inner service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Timeout;
use tower::{Layer, Service};

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
    inflight: Option<Arc<Semaphore>>,
    sse: Arc<Semaphore>,
    /// `X-Content-Type-Options: nosniff` on every answer of the public
    /// surface: a browser never takes a JSON error or a text body for HTML
    /// or script.
    nosniff: bool,
}

/// The public surface (`/api`, UI, `/metrics`): deadline, load shedding,
/// the event-stream cap and `nosniff`.
pub fn public(router: Router, limits: Limits) -> Router {
    router.layer(LimitsLayer(Arc::new(Gate {
        timeout: limits.request_timeout,
        inflight: Some(Arc::new(Semaphore::new(limits.max_inflight))),
        sse: Arc::new(Semaphore::new(limits.max_sse_streams)),
        nosniff: true,
    })))
}

/// `/raft`: the deadline only. Peer traffic is never shed: a node that sheds
/// its heartbeats to the leader would start elections under load.
pub fn raft(router: Router, limits: Limits) -> Router {
    router.layer(LimitsLayer(Arc::new(Gate {
        timeout: limits.request_timeout,
        inflight: None,
        sse: Arc::new(Semaphore::new(0)),
        nosniff: false,
    })))
}

/// Applies a [`Gate`] to every route of a router.
#[derive(Clone)]
struct LimitsLayer(Arc<Gate>);

impl<S> Layer<S> for LimitsLayer {
    type Service = LimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitsService { inner, gate: self.0.clone() }
    }
}

#[derive(Clone)]
struct LimitsService<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S> Service<Request> for LimitsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LimitsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let gate = &self.gate;
        let nosniff = gate.nosniff;
        let path = req.uri().path();
        if path == SSE_PATH {
            // An event stream holds its permit for as long as its body is open.
            let Ok(permit) = gate.sse.clone().try_acquire_owned() else {
                return LimitsFuture::answer(
                    overloaded("too many open event streams on this node; retry shortly"),
                    nosniff,
                );
            };
            return LimitsFuture::Stream { inner: self.inner.call(req), permit: Some(permit), nosniff };
        }
        // Probes answer even when the node is saturated, so an orchestrator
        // does not restart a node for being busy.
        let permit = match &gate.inflight {
            Some(sem) if !path.starts_with("/api/health/") && path != "/health" => {
                match sem.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        return LimitsFuture::answer(
                            overloaded("too many requests in flight on this node; retry shortly"),
                            nosniff,
                        )
                    }
                }
            }
            _ => None,
        };
        LimitsFuture::Timed {
            inner: tokio::time::timeout(gate.timeout, self.inner.call(req)),
            permit,
            timeout: gate.timeout,
            nosniff,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request under the limits: answered at once, running with a
    /// deadline (and an in-flight permit), or an event stream.
    #[project = Proj]
    pub enum LimitsFuture<F> {
        Answer { res: Option<Response>, nosniff: bool },
        Timed { #[pin] inner: Timeout<F>, permit: Option<OwnedSemaphorePermit>, timeout: Duration, nosniff: bool },
        Stream { #[pin] inner: F, permit: Option<OwnedSemaphorePermit>, nosniff: bool },
    }
}

impl<F> LimitsFuture<F> {
    fn answer(res: Response, nosniff: bool) -> Self {
        LimitsFuture::Answer { res: Some(res), nosniff }
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for LimitsFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (mut res, nosniff) = match self.project() {
            Proj::Answer { res, nosniff } => {
                (res.take().expect("a limits future is not polled after it completed"), *nosniff)
            }
            Proj::Timed { inner, permit, timeout, nosniff } => {
                let outcome = ready!(inner.poll(cx));
                drop(permit.take());
                match outcome {
                    Ok(Ok(res)) => (res, *nosniff),
                    Ok(Err(never)) => match never {},
                    Err(_) => (timed_out(*timeout), *nosniff),
                }
            }
            Proj::Stream { inner, permit, nosniff } => {
                let Ok(res) = ready!(inner.poll(cx));
                let held = permit.take();
                let res = res.map(|body| {
                    Body::from_stream(body.into_data_stream().map(move |chunk| {
                        let _held = &held;
                        chunk
                    }))
                });
                (res, *nosniff)
            }
        };
        if nosniff {
            res.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        }
        Poll::Ready(Ok(res))
    }
}

fn timed_out(timeout: Duration) -> Response {
    let message = format!("request not completed within {} ms", timeout.as_millis());
    let mut res = error(StatusCode::REQUEST_TIMEOUT, "request_timeout", message);
    // The body may be half read: the connection cannot carry another request.
    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Our JSON error shape, built here rather than through `ApiError`, which
/// logs every 5xx: shedding under a flood must not flood the log too.
fn error(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: ErrorDetail { code: code.to_string(), message } })).into_response()
}

fn overloaded(message: &str) -> Response {
    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message.to_string());
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}
