//! The audit log, newest first.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::AuditList;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[serde(default)]
    pub consistent: bool,
    /// Most entries returned (default 100); above 1000 is taken as 1000.
    #[param(maximum = 18446744073709551615u64)]
    pub limit: Option<usize>,
    pub subject: Option<String>,
}

#[utoipa::path(get, path = "/api/audit", tag = "cluster", params(AuditQuery), responses((status = 200, body = crate::openapi::AuditList), (status = 401, body = crate::openapi::ErrorBody), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<AuditQuery>) -> Result<Json<AuditList>, ApiError> {
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let limit = q.limit.unwrap_or(100).min(1_000);
    let applied = s.cluster.state.read();
    let entries = applied
        .state
        .audit
        .iter()
        .filter(|e| q.subject.as_deref().is_none_or(|want| e.subject == want))
        .take(limit)
        .cloned()
        .collect();
    Ok(Json(AuditList { entries }))
}
