//! Worker triggers (reference 003's `POST /worker/trigger` and
//! `/worker/smoke`). A request is committed first, with its idempotency key,
//! and answered 202; the leader's `worker-trigger` loop sends it (the
//! webhook or the local command the leader is configured with) and records
//! the outcome, which `GET /worker/triggers` shows. Requests are audited.

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use model::state::farm::trigger::{check_key, MAX_PENDING_TRIGGERS, MAX_TRIGGERS};
use model::state::farm::{FarmOp, FarmReply, Trigger, TriggerKind, TriggerResult, TriggerState, TriggerTarget};
use model::views::rfc3339;
use raft_store::cluster::now_ms;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::AppState;

/// The cluster format that introduced triggers.
const TRIGGER_FORMAT: u32 = 7;

/// Where a trigger stands: `sending` is a pending one under a live claim.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerStateView {
    Pending,
    Sending,
    Succeeded,
    Failed,
    NotConfigured,
}

/// The latest recorded attempt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutcomeView {
    pub result: TriggerResult,
    /// Null when nothing was configured (or no attempt recorded its own).
    pub target: Option<TriggerTarget>,
    /// The webhook's HTTP status, or the command's exit status.
    pub code: Option<i32>,
    pub duration_ms: u64,
    /// One short line; never the command's output or the webhook's answer.
    pub detail: String,
    /// RFC 3339.
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriggerView {
    pub id: u64,
    pub kind: TriggerKind,
    /// Sent as `Idempotency-Key` (`ENGINE_IDEMPOTENCY_KEY` to a command).
    pub key: String,
    pub state: TriggerStateView,
    /// Sends so far (at most 3).
    pub attempts: u32,
    /// Who asked (the token's audit actor).
    pub by: String,
    /// RFC 3339.
    pub requested_at: String,
    /// The node whose claim is, or was last, on it.
    pub claimed_by: Option<u64>,
    pub outcome: Option<OutcomeView>,
}

fn trigger_view(t: &Trigger, now: u64) -> TriggerView {
    let state = match t.state {
        TriggerState::Pending if t.sending(now) => TriggerStateView::Sending,
        TriggerState::Pending => TriggerStateView::Pending,
        TriggerState::Succeeded => TriggerStateView::Succeeded,
        TriggerState::Failed => TriggerStateView::Failed,
        TriggerState::NotConfigured => TriggerStateView::NotConfigured,
    };
    TriggerView {
        id: t.id,
        kind: t.kind,
        key: t.key.clone(),
        state,
        attempts: t.attempts,
        by: t.by.clone(),
        requested_at: rfc3339(t.requested_ms),
        claimed_by: t.claimed_by,
        outcome: t.outcome.as_ref().map(|o| OutcomeView {
            result: o.result,
            target: o.target,
            code: o.code,
            duration_ms: o.duration_ms,
            detail: o.detail.clone(),
            at: rfc3339(t.outcome_ms.unwrap_or(t.requested_ms)),
        }),
    }
}

/// The caller's `Idempotency-Key`, or a fresh one (node, time, randomness).
fn key_of(s: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", m);
    match headers.get("idempotency-key") {
        Some(v) => {
            let key = v.to_str().map_err(|_| bad("Idempotency-Key must be ASCII".into()))?;
            check_key(key).map_err(|e| bad(e.message))?;
            Ok(key.to_string())
        }
        None => Ok(format!("trg-{}-{}-{:016x}", s.cluster.id, now_ms(), rand::random::<u64>())),
    }
}

async fn request(
    s: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    kind: TriggerKind,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    let format = s.cluster.state.read().state.format();
    if format < TRIGGER_FORMAT {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "format_too_old",
            format!("worker triggers need cluster format {TRIGGER_FORMAT}; the cluster is at {format} (raised once every voter knows it)"),
        ));
    }
    let key = key_of(s, headers)?;
    let reply = crate::routes::farm::write(s, &caller.actor(), FarmOp::RequestTrigger { kind, key }).await?;
    match reply {
        FarmReply::Trigger { trigger, created } => {
            let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
            Ok((status, Json(trigger_view(&trigger, now_ms()))))
        }
        other => Err(ApiError::internal(format!("unexpected reply to a trigger request: {other:?}"))),
    }
}

/// Ask the worker to drain the queue: the leader POSTs `{"action":"drain"}`
/// to `WORKER_WEBHOOK_URL` (with `X-Worker-Token`) or runs
/// `WORKER_TRIGGER_COMMAND`, with the trigger's `Idempotency-Key`. A
/// request's own `Idempotency-Key` names the trigger: the same key again
/// answers the same trigger (200), never a second one. Audited.
#[utoipa::path(post, path = "/worker/trigger", tag = "farm",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 of [A-Za-z0-9-_.:]; default: a fresh key",
        pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    responses(
    (status = 202, description = "committed; the leader sends it", body = TriggerView),
    (status = 200, description = "the key names a kept trigger of this kind: that trigger", body = TriggerView),
    (status = 400, description = "`invalid_key`", body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old` (below format 7), or `conflict`: the key names a smoke run", body = crate::openapi::ErrorBody),
    (status = 429, description = "16 triggers wait for an outcome already", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn trigger(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    request(&s, &caller, &headers, TriggerKind::Trigger).await
}

/// A smoke run: the same as a trigger with the dry-run payload
/// `{"action":"drain","dry_run":true}` (`ENGINE_TRIGGER_DRY_RUN=1` to a
/// command). Audited.
#[utoipa::path(post, path = "/worker/smoke", tag = "farm",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-128 of [A-Za-z0-9-_.:]; default: a fresh key",
        pattern = "^[A-Za-z0-9._:-]{1,128}$")),
    responses(
    (status = 202, description = "committed; the leader sends it", body = TriggerView),
    (status = 200, description = "the key names a kept smoke run: that one", body = TriggerView),
    (status = 400, description = "`invalid_key`", body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old` (below format 7), or `conflict`: the key names a trigger", body = crate::openapi::ErrorBody),
    (status = 429, description = "16 triggers wait for an outcome already", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn smoke(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    request(&s, &caller, &headers, TriggerKind::Smoke).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TriggersQuery {
    /// Default 50, at most 200 (400 past it).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<usize>,
    #[param(inline)]
    pub kind: Option<TriggerKind>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriggerList {
    /// Newest first; the farm keeps the last 200.
    pub triggers: Vec<TriggerView>,
    /// Waiting for an outcome (at most 16).
    pub pending: usize,
}

/// The recent triggers and smoke runs with their outcomes.
#[utoipa::path(get, path = "/worker/triggers", tag = "farm", params(TriggersQuery), responses(
    (status = 200, body = TriggerList),
    (status = 400, body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<TriggersQuery>,
) -> Result<Json<TriggerList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_TRIGGERS {
        return Err(ApiError::bad_request(format!("limit must be 1-{MAX_TRIGGERS}")));
    }
    let now = now_ms();
    let applied = s.cluster.state.read();
    let t = &applied.state.farm.triggers;
    let triggers = t
        .kept
        .iter()
        .rev()
        .filter(|t| q.kind.is_none_or(|k| t.kind == k))
        .take(limit)
        .map(|t| trigger_view(t, now))
        .collect();
    debug_assert!(t.pending() <= MAX_PENDING_TRIGGERS);
    Ok(Json(TriggerList { triggers, pending: t.pending() }))
}

/// One kept trigger.
#[utoipa::path(get, path = "/worker/triggers/{id}", tag = "farm",
    params(("id" = String, Path, pattern = "^[0-9]{1,19}$")),
    responses((status = 200, body = TriggerView), (status = 404, body = crate::openapi::ErrorBody)))]
pub async fn get(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Json<TriggerView>, ApiError> {
    let missing = || ApiError::not_found(format!("trigger {id:?} not found"));
    let n: u64 = if id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()) {
        id.parse().map_err(|_| missing())?
    } else {
        return Err(missing());
    };
    let applied = s.cluster.state.read();
    let t = applied.state.farm.triggers.get(n).ok_or_else(missing)?;
    Ok(Json(trigger_view(t, now_ms())))
}
