//! Bearer-token auth for `/api` and basic auth for the UI (the cluster secret
//! on `/raft` is checked by `raft_store::rpc_server`). Every comparison is
//! constant-time.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

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

fn basic_ok(headers: &HeaderMap, token: &str) -> bool {
    header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, pw)| same(pw, token)))
        .unwrap_or(false)
}

/// A browser request is same-origin when its Origin (if any) names our Host.
fn same_origin(headers: &HeaderMap) -> bool {
    match (header_str(headers, header::ORIGIN), header_str(headers, header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split("://").nth(1) == Some(host),
        (Some(_), None) => false,
    }
}

/// `Authorization: Bearer <CONTROL_PLANE_TOKEN>`, or the UI's basic auth (with
/// the CSRF header and a same-origin check on anything but GET/HEAD), or 401.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = header_str(headers, header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim(), &state.token));
    if bearer {
        return next.run(req).await;
    }
    if basic_ok(headers, &state.token) {
        let safe = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
        if safe || (headers.contains_key(CSRF_HEADER) && same_origin(headers)) {
            return next.run(req).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("state-changing browser requests need the {CSRF_HEADER} header and a same-origin Origin"),
        )
        .into_response();
    }
    let mut res =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token").into_response();
    // A UI script's call (it always sends the CSRF header) gets the UI's Basic
    // challenge: browsers only send cached Basic credentials preemptively under
    // the path they logged in at, and answer a challenge for the same realm.
    let challenge = if headers.contains_key(CSRF_HEADER) { BASIC_CHALLENGE } else { "Bearer" };
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    res
}

/// The UI's realm; the same string on `/verifier-engine-room` and `/api`, so a
/// browser reuses the credentials it was given for the pages.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"engine-room\", charset=\"UTF-8\"";

/// HTTP basic auth with any user name and the token as password, or 401.
pub async fn require_basic(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = header_str(req.headers(), header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, pw)| same(pw, &state.token)))
        .unwrap_or(false);
    if ok {
        return next.run(req).await;
    }
    let mut res = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC_CHALLENGE));
    res
}

/// Who is acting, for the audit log: `operator`, or `operator:<name>` when the
/// client names itself with a valid `x-engine-actor` header.
pub fn actor(headers: &HeaderMap) -> String {
    match header_str(headers, "x-engine-actor") {
        Some(name) if model::state::validate_name("actor", name).is_ok() => {
            format!("operator:{name}")
        }
        _ => "operator".to_string(),
    }
}
