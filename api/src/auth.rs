//! Who may call what. Every `/api` route declares the scope it needs
//! ([`Access`], attached where the route is registered by [`scoped`], which
//! also writes the scope into the route's OpenAPI `security`). A caller
//! authenticates with `Authorization: Bearer <token>` or, from the UI, basic
//! auth with the token as password:
//!
//! - `CONTROL_PLANE_TOKEN`, the bootstrap token: scope `admin`, audit actor
//!   `operator` (so existing deployments keep working);
//! - a named token created through `/api/tokens`: found by the SHA-256 of
//!   the secret in the replicated state; the audit actor is `token:<name>`.
//!
//! The audit actor always comes from the token, never from a header the
//! client sets. Failed authentication is counted per source address; past a
//! burst, every request from that address gets 429 until the window ends
//! (see [`FailLimiter`]). Comparisons with the bootstrap token are
//! constant-time; named tokens are looked up by hash.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use model::state::token::Scope;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::error::ApiError;
use crate::AppState;

fn same(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn header_str<'a>(headers: &'a HeaderMap, name: impl header::AsHeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Header the UI's scripts send on state-changing calls; a cross-site form
/// or image cannot set it, so cached basic-auth credentials cannot be abused.
pub const CSRF_HEADER: &str = "x-engine-csrf";

/// The audit actor of the bootstrap token.
pub const BOOTSTRAP_ACTOR: &str = "operator";

/// An authenticated caller, put in the request's extensions for handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `operator` for the bootstrap token, else `token:<name>`.
    pub actor: Arc<str>,
    pub scope: Scope,
    /// A worker token's binding to worker ids with this prefix.
    pub worker_prefix: Option<Arc<str>>,
    /// A worker token's binding to one pool.
    pub pool: Option<Arc<str>>,
}

impl Caller {
    fn bootstrap() -> Self {
        // One shared name: the bootstrap token may be on every heartbeat.
        static ACTOR: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| BOOTSTRAP_ACTOR.into());
        Caller { actor: ACTOR.clone(), scope: Scope::Admin, worker_prefix: None, pool: None }
    }

    /// The audit actor: the token's name, never a client-supplied header.
    pub fn actor(&self) -> String {
        self.actor.to_string()
    }

    /// Refuse (403) a worker token's heartbeat or job call for a worker or
    /// pool outside its binding. `pool` is what the worker names (`None`:
    /// the default pool, which a pool-bound token may not use).
    pub fn check_worker(&self, worker_id: &str, pool: Option<&str>) -> Result<(), ApiError> {
        if let Some(prefix) = &self.worker_prefix {
            if !worker_id.starts_with(prefix.as_ref()) {
                return Err(forbidden(format!(
                    "{} may act only for workers whose id starts with {prefix:?}, not {worker_id:?}",
                    self.actor
                )));
            }
        }
        if let Some(bound) = &self.pool {
            if pool != Some(bound.as_ref()) {
                return Err(forbidden(format!("{} may act only for pool {bound:?}", self.actor)));
            }
        }
        Ok(())
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// The credential a request carries, and whether it came from a browser's
/// basic auth (which needs the CSRF defence on writes).
fn credential(headers: &HeaderMap) -> Option<(Cow<'_, str>, bool)> {
    let value = header_str(headers, header::AUTHORIZATION)?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some((Cow::Borrowed(t.trim()), false));
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(value.strip_prefix("Basic ")?.trim()).ok()?;
    let pair = String::from_utf8(raw).ok()?;
    pair.split_once(':').map(|(_, pw)| (Cow::Owned(pw.to_string()), true))
}

/// The caller a token belongs to: the bootstrap token, or a live named token.
pub fn identify(state: &AppState, token: &str) -> Option<Caller> {
    if same(token, &state.token) {
        return Some(Caller::bootstrap());
    }
    if token.is_empty() || token.len() > 512 {
        return None;
    }
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let applied = state.cluster.state.read();
    let t = applied.state.tokens.find(&hash)?;
    Some(Caller {
        actor: format!("token:{}", t.name).into(),
        scope: t.scope,
        worker_prefix: t.worker_prefix.as_deref().map(Into::into),
        pool: t.pool.as_deref().map(Into::into),
    })
}

/// A browser request is same-origin when its Origin (if any) names our Host.
fn same_origin(headers: &HeaderMap) -> bool {
    match (header_str(headers, header::ORIGIN), header_str(headers, header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split("://").nth(1) == Some(host),
        (Some(_), None) => false,
    }
}

/// The scope a route needs: `read` for GET and HEAD, `write` for the rest.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub read: Scope,
    pub write: Scope,
}

impl Access {
    /// Reads need `read`, changes `operator`: the fleet's controls.
    pub const OPERATOR: Access = Access { read: Scope::Read, write: Scope::Operator };
    /// Reads need `read`, changes `admin`: membership, settings.
    pub const ADMIN_WRITES: Access = Access { read: Scope::Read, write: Scope::Admin };
    /// Everything needs `admin`: tokens.
    pub const ADMIN: Access = Access { read: Scope::Admin, write: Scope::Admin };
    /// A worker's own calls: heartbeats; claiming, renewing and finishing jobs.
    pub const WORKER: Access = Access { read: Scope::Worker, write: Scope::Worker };
    /// Reads need `read`, enqueues `producer` (or `admin`): the jobs API of
    /// reference 004. Operators enqueue through `/api/queue/enqueue`.
    pub const PRODUCER: Access = Access { read: Scope::Read, write: Scope::Producer };
    /// The Prometheus scrape.
    pub const METRICS: Access = Access { read: Scope::Metrics, write: Scope::Metrics };

    pub fn need(&self, method: &Method) -> Scope {
        if method == Method::GET || method == Method::HEAD {
            self.read
        } else {
            self.write
        }
    }
}

/// Attach `access` to routes: the middleware that enforces it, and the scope
/// in each operation's OpenAPI `security` (one declaration, two uses).
pub fn scoped(state: &AppState, access: Access, routes: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, router) = routes;
    for item in paths.paths.values_mut() {
        for (method, op) in crate::openapi::operations_mut(item) {
            let Some(op) = op else { continue };
            let read = method == utoipa::openapi::path::HttpMethod::Get;
            let scope = if read { access.read } else { access.write }.as_str();
            op.security =
                Some(vec![SecurityRequirement::new("bearer", [scope]), SecurityRequirement::new("basic", [scope])]);
        }
    }
    (schemas, paths, router.route_layer(RequireLayer { state: state.clone(), access }))
}

/// The layer [`scoped`] puts on its routes: [`authorize`] before the handler.
/// A plain tower layer (the check is synchronous), so a heartbeat pays no
/// boxed future or service clone for it.
#[derive(Clone)]
pub struct RequireLayer {
    state: AppState,
    access: Access,
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require { inner, state: self.state.clone(), access: self.access }
    }
}

#[derive(Clone)]
pub struct Require<S> {
    inner: S,
    state: AppState,
    access: Access,
}

impl<S> tower::Service<Request> for Require<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<std::future::Ready<Result<Response, std::convert::Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match authorize(&self.state, self.access, &mut req) {
            Ok(()) => futures::future::Either::Right(self.inner.call(req)),
            Err(refused) => futures::future::Either::Left(std::future::ready(Ok(refused))),
        }
    }
}

/// Leave read routes open (no token), and say so in their OpenAPI
/// `security`: the build farm's reads with `FARM_READS_OPEN=true`.
pub fn open(routes: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    let (schemas, mut paths, router) = routes;
    for item in paths.paths.values_mut() {
        for (_, op) in crate::openapi::operations_mut(item) {
            if let Some(op) = op {
                op.security = Some(vec![SecurityRequirement::default()]);
            }
        }
    }
    (schemas, paths, router)
}

/// Authenticate, check the route's scope, put the [`Caller`] in the
/// request; or the 401, 403 or 429 to answer instead.
#[allow(clippy::result_large_err)] // the refusal is the answer itself, built once
fn authorize(state: &AppState, access: Access, req: &mut Request) -> Result<(), Response> {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(retry) = ip.and_then(|ip| state.auth_failures.blocked(ip)) {
        return Err(too_many(retry));
    }
    let headers = req.headers();
    let cred = credential(headers);
    let Some((caller, browser)) = cred.as_ref().and_then(|(t, b)| identify(state, t).map(|c| (c, *b))) else {
        if let Some(ip) = ip {
            if let Some(retry) = state.auth_failures.failed(ip, req.uri().path()) {
                return Err(too_many(retry));
            }
        }
        let mut res =
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token").into_response();
        // A UI script's call (it always sends the CSRF header) gets the UI's
        // Basic challenge: browsers only send cached Basic credentials
        // preemptively under the path they logged in at, and answer a
        // challenge for the same realm.
        let challenge = if headers.contains_key(CSRF_HEADER) { BASIC_CHALLENGE } else { "Bearer" };
        res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return Err(res);
    };
    let need = access.need(req.method());
    if !caller.scope.allows(need) {
        let message =
            format!("{} has scope {}; this call needs {}", caller.actor, caller.scope.as_str(), need.as_str());
        return Err(forbidden(message).into_response());
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if browser && !safe && !(headers.contains_key(CSRF_HEADER) && same_origin(headers)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("state-changing browser requests need the {CSRF_HEADER} header and a same-origin Origin"),
        )
        .into_response());
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

fn too_many(retry: Duration) -> Response {
    let secs = retry.as_secs().max(1);
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        format!("too many failed authentications from this address; retry in {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// The UI's realm; the same string on `/verifier-engine-room` and `/api`, so a
/// browser reuses the credentials it was given for the pages.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"engine-room\", charset=\"UTF-8\"";

tokio::task_local! {
    /// Whether the page being rendered is for a viewer who may only read.
    pub static READ_ONLY: bool;
}

/// HTTP basic auth for the UI pages, with any user name and a token that may
/// read as password (the bootstrap token, or a named `admin`, `operator` or
/// `read` token; a `read` token sees the pages with the controls hidden), or
/// 401. The caller goes into the request for the page to consult.
pub async fn require_basic(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(retry) = ip.and_then(|ip| state.auth_failures.blocked(ip)) {
        return too_many(retry);
    }
    let caller = credential(req.headers())
        .filter(|(_, browser)| *browser)
        .and_then(|(t, _)| identify(&state, &t))
        .filter(|c| c.scope.allows(Scope::Read));
    if let Some(caller) = caller {
        let read_only = !caller.scope.allows(Scope::Operator);
        req.extensions_mut().insert(caller);
        return READ_ONLY.scope(read_only, next.run(req)).await;
    }
    if req.headers().contains_key(header::AUTHORIZATION) {
        if let Some(ip) = ip {
            if let Some(retry) = state.auth_failures.failed(ip, req.uri().path()) {
                return too_many(retry);
            }
        }
    }
    let mut res = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
    res
}

/// Failed authentications per source address. Past `burst` failures within
/// `window`, the address is refused (429) for the rest of the window, even
/// with a right token. Bounded: at most [`FailLimiter::MAX_ADDRESSES`]
/// addresses are tracked (expired ones are dropped first; past that, new
/// addresses are not tracked until room frees up). Logged without the
/// credential: the first failure of each window and the start of a block.
pub struct FailLimiter {
    burst: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// When the last block ends, in ms after `epoch`: before any address is
    /// blocked (the usual case), [`Self::blocked`] answers without the lock.
    blocks_end_ms: AtomicU64,
    epoch: Instant,
}

impl FailLimiter {
    pub const MAX_ADDRESSES: usize = 10_000;

    pub fn new(burst: u32, window: Duration) -> Self {
        FailLimiter {
            burst: burst.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
            blocks_end_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn ms_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// How long `ip` stays refused, if it is.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        if self.ms_since_epoch(Instant::now()) >= self.blocks_end_ms.load(Ordering::Relaxed) {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (start, count) = seen.get(&ip)?;
        let left = self.window.checked_sub(start.elapsed())?;
        (*count >= self.burst).then_some(left)
    }

    /// Count a failure; returns how long `ip` is now refused, if it is.
    pub fn failed(&self, ip: IpAddr, path: &str) -> Option<Duration> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= Self::MAX_ADDRESSES && !seen.contains_key(&ip) {
            seen.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if seen.len() >= Self::MAX_ADDRESSES {
                tracing::warn!(%ip, path, "authentication failed (not tracked: too many failing addresses)");
                return None;
            }
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == 1 {
            tracing::warn!(%ip, path, "authentication failed");
        }
        if entry.1 >= self.burst {
            // Rounded up: the fast path never ends a block early.
            self.blocks_end_ms.fetch_max(self.ms_since_epoch(entry.0 + self.window) + 1, Ordering::Relaxed);
        }
        if entry.1 == self.burst {
            tracing::warn!(%ip, path, failures = entry.1, window_s = self.window.as_secs(),
                "authentication failing repeatedly; refusing this address for the rest of the window");
        }
        (entry.1 >= self.burst).then(|| self.window.saturating_sub(now.duration_since(entry.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_limiter_blocks_past_the_burst_for_the_window_only() {
        let limiter = FailLimiter::new(3, Duration::from_millis(300));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(limiter.blocked(a), None, "nothing failed yet: the lock-free path answers");
        assert_eq!(limiter.failed(a, "/api/x"), None);
        assert_eq!(limiter.failed(a, "/api/x"), None);
        assert_eq!(limiter.blocked(a), None, "below the burst");
        assert!(limiter.failed(a, "/api/x").is_some(), "the third failure blocks");
        let left = limiter.blocked(a).expect("blocked within the window");
        assert!(left <= Duration::from_millis(300));
        assert_eq!(limiter.blocked(b), None, "another address is not blocked");
        std::thread::sleep(Duration::from_millis(320));
        assert_eq!(limiter.blocked(a), None, "the block ends with the window");
        assert_eq!(limiter.failed(a, "/api/x"), None, "a new window starts counting again");
    }
}
