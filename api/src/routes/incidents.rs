//! Incidents (active and resolved, with filters), acknowledgement, and the
//! alert rules with their current state.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use model::state::IncidentState;
use model::{Command, Reply};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    #[serde(default)]
    pub consistent: bool,
    /// `active` or `resolved`.
    pub state: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/incidents", tag = "alerts", params(IncidentQuery), responses((status = 200, body = crate::openapi::IncidentList), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<IncidentQuery>) -> Result<Json<Value>, ApiError> {
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let want = match q.state.as_deref() {
        None => None,
        Some("active") => Some(IncidentState::Active),
        Some("resolved") => Some(IncidentState::Resolved),
        Some(other) => return Err(ApiError::bad_request(format!("state must be active or resolved, got {other:?}"))),
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 1_000);
    let applied = s.cluster.state.read();
    let st = &applied.state;
    let incidents: Vec<Value> = st
        .incidents
        .values()
        .rev()
        .filter(|i| want.is_none_or(|w| i.state == w))
        .filter(|i| q.kind.as_deref().is_none_or(|k| i.kind == k))
        .filter(|i| q.subject.as_deref().is_none_or(|sub| i.subject == sub))
        .take(limit)
        .map(|i| {
            let notes: Vec<_> = i.notifications.iter().filter_map(|n| st.notifications.get(n)).collect();
            let mut v = json!(i);
            v["notification_log"] = json!(notes);
            v
        })
        .collect();
    let active = st.incidents.values().filter(|i| i.state == IncidentState::Active).count();
    Ok(Json(json!({"incidents": incidents, "active": active, "notifications": st.delivery_counts()})))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/api/incidents/{id}/ack", tag = "alerts", params(("id" = u64, Path)), request_body = Option<AckBody>, responses((status = 200, body = model::state::Incident), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody)))]
pub async fn ack(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<u64>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let note = crate::extract::optional_json::<AckBody>(body)?.note;
    if note.as_ref().is_some_and(|n| n.len() > 1_000) {
        return Err(ApiError::bad_request("note is longer than 1000 characters"));
    }
    match s.cluster.write(&crate::auth::actor(&headers), Command::AckIncident { id, note }).await?? {
        Reply::Incident(i) => Ok(Json(json!(i))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The alert rules, their thresholds as in force now, and what fires per rule.
#[utoipa::path(get, path = "/api/alerts", tag = "alerts", responses((status = 200, body = crate::openapi::AlertsView), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn alerts(State(s): State<AppState>) -> Json<Value> {
    Json(alert_rules(&s))
}

/// The body of `GET /api/alerts`, shared with the alerts page.
pub fn alert_rules(s: &AppState) -> Value {
    let (enabled, rules) = s.with_settings(|e| {
        let pct = |k: &str| format!("{}%", e.raw(k));
        let rule =
            |name: &str, kind: &str, threshold: String| json!({"name": name, "kind": kind, "threshold": threshold});
        (
            e.bool("ALERTS_ENABLED"),
            vec![
                rule(
                    "Worker heartbeat missing",
                    "heartbeat_missing",
                    format!("{}s", e.raw("ALERT_HEARTBEAT_GRACE_SECONDS")),
                ),
                rule("Worker error rate", "worker_error_rate", pct("ALERT_ERROR_RATE_THRESHOLD")),
                rule(
                    "Desired state stuck",
                    "desired_state_stuck",
                    format!("{}s", e.raw("STUCK_DESIRED_GRACE_SECONDS")),
                ),
                rule(
                    "Provider tempfail rate",
                    "provider_tempfail_rate",
                    format!(
                        "warn {} / critical {}",
                        e.raw("PROVIDER_TEMPFAIL_WARN_RATE"),
                        e.raw("PROVIDER_TEMPFAIL_CRITICAL_RATE")
                    ),
                ),
                rule(
                    "Provider reject rate",
                    "provider_reject_rate",
                    format!(
                        "warn {} / critical {}",
                        e.raw("PROVIDER_REJECT_WARN_RATE"),
                        e.raw("PROVIDER_REJECT_CRITICAL_RATE")
                    ),
                ),
                rule(
                    "Provider unknown rate",
                    "provider_unknown_rate",
                    format!(
                        "warn {} / critical {}",
                        e.raw("PROVIDER_UNKNOWN_WARN_RATE"),
                        e.raw("PROVIDER_UNKNOWN_CRITICAL_RATE")
                    ),
                ),
                rule("Cluster node down", "node_down", "unreachable".into()),
            ],
        )
    });
    let applied = s.cluster.state.read();
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|mut r| {
            let kind = r["kind"].as_str().unwrap_or_default().to_string();
            let active: Vec<_> = applied
                .state
                .incidents
                .values()
                .filter(|i| i.state == IncidentState::Active && i.kind == kind)
                .map(|i| json!({"id": i.id, "subject": i.subject, "severity": i.severity}))
                .collect();
            r["state"] = json!(if !enabled {
                "disabled"
            } else if active.is_empty() {
                "ok"
            } else {
                "firing"
            });
            r["enabled"] = json!(enabled);
            r["active"] = json!(active);
            r
        })
        .collect();
    json!({"enabled": enabled, "rules": rules})
}
