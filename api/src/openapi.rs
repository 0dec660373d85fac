//! The OpenAPI 3 document. Paths come from `#[utoipa::path]` on each handler,
//! collected by the same `OpenApiRouter` that builds the routes, so a route
//! cannot exist undocumented. Response shapes built with `json!` are described
//! by the view types here; tests pin those views to the real output.

#![allow(dead_code)] // view types exist for the schema

use std::collections::BTreeMap;

use model::state::{AuditEntry, Incident, Notification, Pool, ProviderState, Worker};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(title = "Engine Room API", description = "Highly available control plane for worker fleets."),
    modifiers(&Security),
    security(("bearer" = []), ("basic" = [])),
    tags((name = "workers"), (name = "pools"), (name = "cluster"), (name = "alerts"), (name = "settings"), (name = "health"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme("basic", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()));
    }
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A worker with its derived status (reference 001 semantics).
#[derive(Serialize, ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    pub worker: Worker,
    /// `healthy`, `stale` or `none`.
    pub heartbeat_state: String,
    pub heartbeat_age_ms: u64,
    /// `matched` or `unmatched`.
    pub runtime_match: String,
}

#[derive(Serialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A pool with live counts of its workers (total, by heartbeat and desired state, quarantined).
#[derive(Serialize, ToSchema)]
pub struct PoolView {
    #[serde(flatten)]
    pub pool: Pool,
    pub workers: BTreeMap<String, u64>,
}

#[derive(Serialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolView>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    pub notification_log: Vec<Notification>,
}

#[derive(Serialize, ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<IncidentView>,
    pub active: usize,
    /// Notifications by delivery state.
    pub notifications: BTreeMap<String, usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveRef {
    pub id: u64,
    pub subject: String,
    pub severity: String,
}

#[derive(Serialize, ToSchema)]
pub struct AlertRule {
    pub name: String,
    pub kind: String,
    pub threshold: String,
    /// `ok`, `firing` or `disabled`.
    pub state: String,
    pub enabled: bool,
    pub active: Vec<ActiveRef>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertsView {
    pub enabled: bool,
    pub rules: Vec<AlertRule>,
}

#[derive(Serialize, ToSchema)]
pub struct SettingView {
    pub key: String,
    pub value: String,
    /// `override`, `env` or `default`.
    pub source: String,
    pub kind: String,
    pub default: String,
    pub help: String,
}

#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    pub settings: Vec<SettingView>,
}

#[derive(Serialize, ToSchema)]
pub struct SloWindow {
    pub window: String,
    pub samples: usize,
    pub availability_percent: Option<f64>,
    pub error_budget_burn_rate: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct SloLatency {
    pub node_id: u64,
    pub batches: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct SloView {
    pub target_availability_percent: f64,
    pub windows: Vec<SloWindow>,
    pub heartbeat_commit_latency_ms: SloLatency,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderHealth {
    pub provider: String,
    pub effective_mode: String,
    pub override_mode: Option<String>,
    pub auto_mode: Option<String>,
    pub auto_reason: Option<String>,
    pub probes: f64,
    pub accepted_rate: f64,
    pub reject_rate: f64,
    pub tempfail_rate: f64,
    pub unknown_rate: f64,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderHealthList {
    pub providers: Vec<ProviderHealth>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderModeView {
    pub provider: String,
    pub effective_mode: String,
    pub state: ProviderState,
}

#[derive(Serialize, ToSchema)]
pub struct Live {
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    pub leader_id: Option<u64>,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotTriggered {
    pub triggered: bool,
    pub node_id: u64,
}
