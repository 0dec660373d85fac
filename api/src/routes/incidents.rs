//! Incidents (active and resolved, with filters), acknowledgement, and the
//! alert rules with their current state.

use axum::extract::{Extension, State};
use axum::Json;
use model::state::IncidentState;
use model::{Command, Reply};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::{ActiveRef, AlertRule, AlertsView, IncidentList, IncidentView};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    #[serde(default)]
    pub consistent: bool,
    #[param(schema_with = crate::openapi::incident_state)]
    pub state: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    /// Most incidents returned (default 200); taken as 1 to 1000.
    #[param(maximum = 18446744073709551615u64)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/incidents", tag = "alerts", params(IncidentQuery), responses((status = 200, body = IncidentList), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<IncidentQuery>,
) -> Result<Json<IncidentList>, ApiError> {
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
    let incidents: Vec<IncidentView> = st
        .incidents
        .values()
        .rev()
        .filter(|i| want.is_none_or(|w| i.state == w))
        .filter(|i| q.kind.as_deref().is_none_or(|k| i.kind == k))
        .filter(|i| q.subject.as_deref().is_none_or(|sub| i.subject == sub))
        .take(limit)
        .map(|i| {
            let notification_log = i.notifications.iter().filter_map(|n| st.notifications.get(n)).cloned().collect();
            IncidentView { incident: i.clone(), notification_log }
        })
        .collect();
    let active = st.incidents.values().filter(|i| i.state == IncidentState::Active).count();
    let notifications = st.delivery_counts().into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    Ok(Json(IncidentList { incidents, active, notifications }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

#[utoipa::path(post, path = "/api/incidents/{id}/ack", tag = "alerts", params(("id" = u64, Path)), request_body = Option<AckBody>, responses((status = 200, body = model::state::Incident), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn ack(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<u64>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<model::state::Incident>, ApiError> {
    let note = crate::extract::optional_json::<AckBody>(body)?.note;
    if note.as_ref().is_some_and(|n| n.chars().count() > 1_000) {
        return Err(ApiError::bad_request("note is longer than 1000 characters"));
    }
    match s.cluster.write(&caller.actor(), Command::AckIncident { id, note }).await?? {
        Reply::Incident(i) => Ok(Json(i)),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The alert rules, their thresholds as in force now, and what fires per rule.
#[utoipa::path(get, path = "/api/alerts", tag = "alerts", responses((status = 200, body = AlertsView), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn alerts(State(s): State<AppState>) -> Json<AlertsView> {
    Json(alert_rules(&s))
}

/// The body of `GET /api/alerts`, shared with the alerts page.
pub fn alert_rules(s: &AppState) -> AlertsView {
    let (enabled, rules) = s.with_settings(|e| {
        let pct = |k: &str| format!("{}%", e.raw(k));
        let warn_critical = |what: &str| {
            let (w, c) = (format!("PROVIDER_{what}_WARN_RATE"), format!("PROVIDER_{what}_CRITICAL_RATE"));
            format!("warn {} / critical {}", e.raw(&w), e.raw(&c))
        };
        (
            e.bool("ALERTS_ENABLED"),
            vec![
                (
                    "Worker heartbeat missing",
                    "heartbeat_missing",
                    format!("{}s", e.raw("ALERT_HEARTBEAT_GRACE_SECONDS")),
                ),
                ("Worker error rate", "worker_error_rate", pct("ALERT_ERROR_RATE_THRESHOLD")),
                ("Desired state stuck", "desired_state_stuck", format!("{}s", e.raw("STUCK_DESIRED_GRACE_SECONDS"))),
                ("Provider tempfail rate", "provider_tempfail_rate", warn_critical("TEMPFAIL")),
                ("Provider reject rate", "provider_reject_rate", warn_critical("REJECT")),
                ("Provider unknown rate", "provider_unknown_rate", warn_critical("UNKNOWN")),
                ("Cluster node down", "node_down", "unreachable".to_string()),
            ],
        )
    });
    let applied = s.cluster.state.read();
    let rules = rules
        .into_iter()
        .map(|(name, kind, threshold)| {
            let active: Vec<ActiveRef> = applied
                .state
                .incidents
                .values()
                .filter(|i| i.state == IncidentState::Active && i.kind == kind)
                .map(|i| ActiveRef { id: i.id, subject: i.subject.clone(), severity: i.severity.clone() })
                .collect();
            let state = if !enabled {
                "disabled"
            } else if active.is_empty() {
                "ok"
            } else {
                "firing"
            };
            AlertRule {
                name: name.to_string(),
                kind: kind.to_string(),
                threshold,
                state: state.to_string(),
                enabled,
                active,
            }
        })
        .collect();
    AlertsView { enabled, rules }
}
