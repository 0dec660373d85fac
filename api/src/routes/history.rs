//! The change history of entities, newest first (`model::state::history`).

use axum::extract::State;
use axum::Json;
use model::state::Change;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// One entity, as `worker:{id}`, `pool:{name}`, `incident:{id}`,
    /// `provider:{name}`, `setting:{key}` or `cluster:format`.
    #[param(max_length = 160)]
    pub entity: Option<String>,
    /// Only changes at or before this time (ms since the epoch).
    #[param(minimum = 0)]
    pub before_ms: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryList {
    pub changes: Vec<Change>,
    /// The cluster format in force; below 2 nothing is recorded yet.
    pub format_version: u32,
}

#[utoipa::path(get, path = "/api/history", tag = "cluster", params(HistoryQuery), responses((status = 200, body = HistoryList), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryList>, ApiError> {
    if q.entity.as_ref().is_some_and(|e| e.chars().count() > 160) {
        return Err(ApiError::bad_request("entity is longer than 160 characters"));
    }
    if q.before_ms.is_some_and(|t| t < 0) {
        return Err(ApiError::bad_request("before_ms must not be negative"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=1000"));
    }
    let applied = s.cluster.state.read();
    let changes = applied
        .state
        .changes_of(q.entity.as_deref())
        .filter(|c| q.before_ms.is_none_or(|t| c.at_ms <= t as u64))
        .take(limit)
        .cloned()
        .collect();
    Ok(Json(HistoryList { changes, format_version: applied.state.format() }))
}
