//! Workers: the heartbeat hot path, listing with filters, and runtime controls.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::worker::{heartbeat_state, Key, MetricMap, NestedMetrics, SmallMap, PROCESS_STATES, SEQ_KEY};
use model::state::{validate_name, ControlState, DesiredState, Heartbeat, Metric, Worker, WorkerAction};
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::{WorkerList, WorkerView};
use crate::AppState;

/// Longest free-text field (host, version, status, reason) accepted, in characters.
const MAX_TEXT: usize = 256;
/// Most entries in any one metrics map, and unknown top-level fields kept.
pub const MAX_ENTRIES: usize = 128;
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1_000;

/// At most 128 fields beyond the documented ones (kept in the worker's `meta`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatBody {
    // Short text inline (`Key`), not on the heap: parsed at every heartbeat.
    #[schema(value_type = String, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    worker_id: Key,
    #[serde(default)]
    #[schema(value_type = String, max_length = 256)]
    host: Key,
    /// Empty, or an IPv4 or IPv6 address.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::ip)]
    ip: Key,
    #[schema(schema_with = crate::openapi::pool_name)]
    pool: Option<Key>,
    #[serde(default)]
    #[schema(value_type = String, max_length = 256)]
    version: Key,
    #[serde(default)]
    #[schema(value_type = String, max_length = 256)]
    status: Key,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::process_state)]
    process_state: Option<Key>,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::metric_map)]
    metrics: MetricMap,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::nested_metrics)]
    stage_metrics: NestedMetrics,
    #[serde(default)]
    #[schema(schema_with = crate::openapi::metric_map)]
    smtp_metrics: MetricMap,
    /// By provider name (a name as for pools: auto-protect and operators set
    /// a provider's mode by it), then counter.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::provider_metrics)]
    provider_metrics: NestedMetrics,
    /// The worker's own ordering of its heartbeats: increasing per worker,
    /// also across restarts (wall-clock milliseconds do). A heartbeat whose
    /// `seq` is not above the recorded one is answered with `"stale": true`
    /// and not recorded, so a delayed heartbeat never rolls the worker back.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 0, maximum = 18446744073709551615u64)]
    seq: Option<u64>,
    /// Unknown fields, kept in the worker's `meta`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    extra: BTreeMap<String, Value>,
}

/// Turn request bytes into a validated heartbeat, or a 4xx that says why.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, ApiError> {
    let b: HeartbeatBody = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "invalid_heartbeat" } else { "invalid_json" };
        ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
    })?;
    validate_name("worker_id", &b.worker_id)?;
    if let Some(p) = &b.pool {
        validate_name("pool", p)?;
    }
    for (field, v) in [("host", &b.host), ("version", &b.version), ("status", &b.status)] {
        // Bytes first: counting characters only when the bytes could be too many.
        if v.len() > MAX_TEXT && v.chars().count() > MAX_TEXT {
            return Err(ApiError::bad_request(format!("{field} is longer than {MAX_TEXT} characters")));
        }
    }
    if !b.ip.is_empty() && b.ip.parse::<IpAddr>().is_err() {
        return Err(ApiError::bad_request(format!("ip {:?} is not an IP address", b.ip)));
    }
    let process_state = b.process_state.unwrap_or_else(|| "unknown".into());
    if !PROCESS_STATES.contains(&process_state.as_str()) {
        return Err(ApiError::bad_request(format!("process_state must be one of {PROCESS_STATES:?}")));
    }
    let too_big = |m: usize| m > MAX_ENTRIES;
    if too_big(b.metrics.len())
        || too_big(b.smtp_metrics.len())
        || too_big(b.stage_metrics.len())
        || too_big(b.provider_metrics.len())
        || b.stage_metrics.values().chain(b.provider_metrics.values()).any(|m| too_big(m.len()))
        || too_big(b.extra.len())
    {
        return Err(ApiError::bad_request(format!("a metrics map or the body has more than {MAX_ENTRIES} entries")));
    }
    for (provider, _) in b.provider_metrics.iter() {
        validate_name("provider", provider)?;
    }
    let mut meta: SmallMap<String> = b.extra.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    if let Some(seq) = b.seq {
        meta.insert(SEQ_KEY, seq.to_string());
    }
    Ok(Heartbeat {
        worker_id: b.worker_id,
        host: b.host,
        ip: b.ip,
        pool: b.pool,
        version: b.version,
        status: b.status,
        process_state,
        metrics: b.metrics,
        stage_metrics: b.stage_metrics,
        smtp_metrics: b.smtp_metrics,
        provider_metrics: b.provider_metrics,
        meta,
    })
}

#[utoipa::path(post, path = "/api/workers/heartbeat", tag = "workers", request_body = HeartbeatBody, responses((status = 200, body = model::state::HeartbeatAnswer), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 403, description = "a worker token bound to other workers or another pool", body = crate::openapi::ErrorBody), (status = 413, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn heartbeat(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<model::state::HeartbeatAnswer>, ApiError> {
    s.metrics.heartbeats_received.inc();
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body over {} bytes", crate::API_BODY_LIMIT),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let beat = parse_heartbeat(&body)?;
    // A worker token acts only for the workers (and pool) it is bound to.
    caller.check_worker(&beat.worker_id, beat.pool.as_deref())?;
    let answer = s.batcher.submit(beat).await?;
    if answer.stale {
        s.metrics.heartbeats_stale.inc();
    }
    // Serialized straight from the struct: no JSON tree built per heartbeat.
    Ok(Json(answer))
}

/// A worker as the API shows it: stored fields plus derived status.
pub fn worker_view(w: &Worker, now: u64, grace_ms: u64) -> WorkerView {
    WorkerView {
        worker: w.clone(),
        heartbeat_state: heartbeat_state(Some(w.last_heartbeat_ms), now, grace_ms).to_string(),
        heartbeat_age_ms: now.saturating_sub(w.last_heartbeat_ms),
        runtime_match: "unmatched".to_string(),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerQuery {
    #[serde(default)]
    pub consistent: bool,
    pub pool: Option<String>,
    #[param(value_type = Option<DesiredState>)]
    pub desired_state: Option<String>,
    /// `healthy`, `stale` or `none`.
    #[param(schema_with = crate::openapi::heartbeat_state)]
    pub heartbeat_state: Option<String>,
    pub quarantined: Option<bool>,
    pub q: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    #[serde(default)]
    #[param(maximum = 18446744073709551615u64)]
    pub offset: usize,
}

#[utoipa::path(get, path = "/api/workers", tag = "workers", params(WorkerQuery), responses((status = 200, body = WorkerList), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<WorkerQuery>) -> Result<Json<WorkerList>, ApiError> {
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let (now, grace) = (now_ms(), s.grace_ms());
    let applied = s.cluster.state.read();
    let (total, page) = select(&applied.state, &q, now, grace)?;
    let workers = page.into_iter().map(|w| worker_view(w, now, grace)).collect();
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    Ok(Json(WorkerList { workers, total, limit, offset: q.offset }))
}

/// The workers matching `q` in id order: how many match in all, and the page
/// `offset..offset + limit` of them. Shared by `GET /api/workers` and the UI.
pub fn select<'a>(
    state: &'a ControlState,
    q: &WorkerQuery,
    now: u64,
    grace: u64,
) -> Result<(usize, Vec<&'a Worker>), ApiError> {
    let desired = match q.desired_state.as_deref() {
        Some(d) => {
            Some(DesiredState::parse(d).ok_or_else(|| ApiError::bad_request(format!("unknown desired_state {d:?}")))?)
        }
        None => None,
    };
    if let Some(h) = q.heartbeat_state.as_deref() {
        if !["healthy", "stale", "none"].contains(&h) {
            return Err(ApiError::bad_request(format!("unknown heartbeat_state {h:?}")));
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}")));
    }
    let needle = q.q.as_deref().map(str::to_lowercase);
    // A pool filter walks that pool's index entry, not the fleet.
    let candidates: Box<dyn Iterator<Item = &Worker>> = match q.pool.as_deref() {
        Some(p) => Box::new(state.pool_workers(p)),
        None => Box::new(state.workers.values()),
    };
    let matches = candidates.filter(|w| {
        desired.is_none_or(|d| w.desired_state == d)
            && q.quarantined.is_none_or(|qq| w.quarantined == qq)
            && q.heartbeat_state.as_deref().is_none_or(|h| heartbeat_state(Some(w.last_heartbeat_ms), now, grace) == h)
            && needle.as_deref().is_none_or(|n| {
                w.id.to_lowercase().contains(n) || w.host.to_lowercase().contains(n) || w.ip.contains(n)
            })
    });
    let mut total = 0usize;
    let mut page = Vec::with_capacity(limit);
    for w in matches {
        if total >= q.offset && page.len() < limit {
            page.push(w);
        }
        total += 1;
    }
    Ok((total, page))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistentQuery {
    #[serde(default)]
    pub consistent: bool,
}

#[utoipa::path(get, path = "/api/workers/{id}", tag = "workers", params(("id" = String, Path, description = "worker id", pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128), ConsistentQuery), responses((status = 200, body = WorkerView), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsistentQuery>,
) -> Result<Json<WorkerView>, ApiError> {
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let grace = s.grace_ms();
    let applied = s.cluster.state.read();
    let w = applied.state.workers.get(&id).ok_or_else(|| ApiError::not_found(format!("worker {id:?} not found")))?;
    Ok(Json(worker_view(w, now_ms(), grace)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlBody {
    #[schema(max_length = 256)]
    pub reason: Option<String>,
}

/// `POST /api/workers/{id}/{action}` with an optional `{"reason": "..."}`.
#[utoipa::path(post, path = "/api/workers/{id}/{action}", tag = "workers", params(("id" = String, Path, description = "worker id", pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128), ("action" = inline(WorkerAction), Path)), request_body = Option<ControlBody>, responses((status = 200, body = WorkerView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn control(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, action)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WorkerView>, ApiError> {
    let action =
        WorkerAction::parse(&action).ok_or_else(|| ApiError::not_found(format!("unknown action {action:?}")))?;
    let parsed: ControlBody = crate::extract::optional_json(body)?;
    if parsed.reason.as_ref().is_some_and(|r| r.chars().count() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!("reason is longer than {MAX_TEXT} characters")));
    }
    validate_name("worker id", &id)?;
    let cmd = Command::WorkerControl { worker: id, action, reason: parsed.reason };
    match s.cluster.write(&caller.actor(), cmd).await?? {
        Reply::Worker(w) => Ok(Json(worker_view(&w, now_ms(), s.grace_ms()))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Count of metric value `key` in a map, for callers that need one number.
pub fn metric(map: &MetricMap, key: &str) -> f64 {
    map.get(key).copied().map(Metric::value).unwrap_or(0.0)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Why (kept in the audit log), at most 256 characters.
    #[param(max_length = 256)]
    pub reason: Option<String>,
}

/// The answer to `DELETE /api/workers/{id}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerDeleted {
    pub deleted: String,
}

/// Remove a worker from the replicated state (audited). A worker that
/// heartbeats again comes back as new, running: stop it first.
#[utoipa::path(delete, path = "/api/workers/{id}", tag = "workers", params(("id" = String, Path, description = "worker id", pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128), DeleteQuery), responses((status = 200, body = WorkerDeleted), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, description = "the cluster format does not know this command yet (a rolling upgrade is under way)", body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<WorkerDeleted>, ApiError> {
    validate_name("worker id", &id)?;
    if q.reason.as_ref().is_some_and(|r| r.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!("reason is longer than {MAX_TEXT} characters")));
    }
    let cmd = Command::DeleteWorker { id: id.clone(), reason: q.reason };
    match s.cluster.write(&caller.actor(), cmd).await?? {
        Reply::Removed(_) => Ok(Json(WorkerDeleted { deleted: id })),
        _ => Err(ApiError::internal("unexpected reply to worker.delete".to_string())),
    }
}
