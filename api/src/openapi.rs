//! The OpenAPI 3 document. Paths come from `#[utoipa::path]` on each handler,
//! collected by the same `OpenApiRouter` that builds the routes, so a route
//! cannot exist undocumented. The view types here are what the handlers (and
//! the UI pages) build and serialize, so the schema is the answer's own type;
//! request schemas carry the limits validation enforces.

use std::collections::BTreeMap;

use model::state::{AuditEntry, Incident, Notification, Pool, ProviderState, Worker, MAX_NAME_LEN};
use serde::Serialize;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes::workers::MAX_ENTRIES;

#[derive(OpenApi)]
#[openapi(
    info(title = "Engine Room API", description = "Highly available control plane for worker fleets."),
    modifiers(&Security),
    security(("bearer" = []), ("basic" = [])),
    tags((name = "workers"), (name = "pools"), (name = "cluster"), (name = "alerts"), (name = "settings"), (name = "tokens"), (name = "jobs"), (name = "farm"), (name = "health"))
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

/// Add what the middleware in front of every `/api` handler can answer to each
/// operation that does not list it itself: 401 (no or wrong token), 403 (a
/// scope that does not cover the call, or a browser's state-changing call
/// without the CSRF header), 429 (an address past the failed-authentication
/// burst) and 413 (a body over
/// [`crate::API_BODY_LIMIT`]). Run on the document once every route is in.
pub fn add_layer_statuses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/api/health/") || path == "/health" {
            continue;
        }
        for (method, op) in operations_mut(item) {
            let Some(op) = op else { continue };
            let has_body = op.request_body.is_some();
            let mut add = |status: &str, text: &str| {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(text).into());
            };
            add("401", "missing or wrong bearer token");
            if method != HttpMethod::Get {
                add("403", "the token's scope does not cover this call, or a browser's state-changing call without the CSRF header or from another origin");
            } else {
                add("403", "the token's scope does not cover this call");
            }
            add(
                "429",
                "too many failed authentications from this address: refused until the window ends (Retry-After)",
            );
            if has_body {
                add("413", "request body over 64 KiB");
            }
        }
    }
}

/// The operations of a path item, with their methods (the ones this API uses).
pub fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> [(HttpMethod, Option<&mut utoipa::openapi::path::Operation>); 5] {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
    ]
}

/// Add what the transport limits ([`crate::limits`]) can answer to every
/// operation: 408 past the request deadline, and 503 when the node sheds load
/// (health probes are never shed).
pub fn add_transport_statuses(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (_, op) in operations_mut(item) {
            let Some(op) = op else { continue };
            let mut add = |status: &str, text: &str| {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(text).into());
            };
            add("408", "`request_timeout`: not completed within ENGINE_REQUEST_TIMEOUT_MS");
            if !path.starts_with("/api/health/") && path != "/health" {
                add("503", "`overloaded`: more requests in flight than ENGINE_MAX_INFLIGHT; retry after a second");
            }
        }
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

// ---- request schemas: the limits validation enforces ----

/// Identifiers (`validate_name`): worker ids, pool and provider names. The
/// `#[utoipa::path]` attributes spell it out (they take literals); a test
/// checks that every name parameter in the document uses this one.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9._:@-]{1,128}$";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn null() -> Schema {
    Schema::Object(ObjectBuilder::new().schema_type(Type::Null).build())
}

/// A name as `validate_name` accepts it.
pub fn name() -> Object {
    string().pattern(Some(NAME_PATTERN)).min_length(Some(1)).max_length(Some(MAX_NAME_LEN)).build()
}

/// A heartbeat's `ip`: empty, or an IPv4 or IPv6 address.
pub fn ip() -> Schema {
    AnyOfBuilder::new()
        .item(string().enum_values(Some([""])).build())
        .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4))).build())
        .item(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6))).build())
        .build()
        .into()
}

/// A heartbeat's `pool`: a name, or null for the default pool.
pub fn pool_name() -> Schema {
    AnyOfBuilder::new().item(name()).item(null()).build().into()
}

/// A heartbeat's `process_state`; null or absent means `unknown`.
pub fn process_state() -> Schema {
    let states = model::state::worker::PROCESS_STATES;
    AnyOfBuilder::new().item(string().enum_values(Some(states)).build()).item(null()).build().into()
}

/// Counters by name: finite numbers, at most [`MAX_ENTRIES`] of them.
pub fn metric_map() -> Object {
    ObjectBuilder::new()
        .additional_properties(Some(
            ObjectBuilder::new().schema_type(Type::Number).format(Some(SchemaFormat::KnownFormat(KnownFormat::Double))),
        ))
        .max_properties(Some(MAX_ENTRIES))
        .build()
}

/// Counters by group, then name; both levels hold at most [`MAX_ENTRIES`].
pub fn nested_metrics() -> Object {
    ObjectBuilder::new()
        .additional_properties(Some(Schema::Object(metric_map())))
        .max_properties(Some(MAX_ENTRIES))
        .build()
}

/// A heartbeat's counters by provider name, then counter.
pub fn provider_metrics() -> Object {
    ObjectBuilder::new()
        .property_names(Some(name()))
        .additional_properties(Some(Schema::Object(metric_map())))
        .max_properties(Some(MAX_ENTRIES))
        .build()
}

/// A pool's provider → profile map: provider names as `validate_name` accepts.
pub fn profiles() -> Schema {
    let map = ObjectBuilder::new()
        .property_names(Some(name()))
        .additional_properties(Some(Ref::from_schema_name("Profile")))
        .build();
    AnyOfBuilder::new().item(map).item(null()).build().into()
}

/// A build-farm environment map: at most 64 variables, names
/// `[A-Za-z_][A-Za-z0-9_]*` (1-128), values without control characters
/// (tab allowed), at most 256 characters.
pub fn env_map() -> Object {
    ObjectBuilder::new()
        .property_names(Some(string().pattern(Some("^[A-Za-z_][A-Za-z0-9_]{0,127}$"))))
        .additional_properties(Some(
            string().max_length(Some(256)).pattern(Some("^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]*$")),
        ))
        .max_properties(Some(64))
        .build()
}

/// A hint's extra build requirements: at most 64, each 1-64 characters
/// without control characters.
pub fn requirements() -> utoipa::openapi::schema::Array {
    let item =
        string().min_length(Some(1)).max_length(Some(64)).pattern(Some("^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]+$"));
    utoipa::openapi::schema::ArrayBuilder::new().items(item).max_items(Some(64)).build()
}

/// A hint's pattern: a regular expression of 1-256 characters.
pub fn hint_pattern() -> Object {
    string().format(Some(SchemaFormat::Custom("regex".into()))).min_length(Some(1)).max_length(Some(256)).build()
}

/// `GET /api/workers?heartbeat_state=`.
pub fn heartbeat_state() -> Object {
    string().enum_values(Some(["healthy", "stale", "none"])).build()
}

/// `GET /api/incidents?state=`.
pub fn incident_state() -> Object {
    string().enum_values(Some(["active", "resolved"])).build()
}

/// A provider mode an operator may set.
pub fn provider_mode() -> Object {
    string().enum_values(Some(model::state::provider::MODES)).build()
}

/// The body of `PUT /api/settings`, for the document (the handler reads a map
/// and checks each key with [`model::settings::normalize`]).
pub struct SettingsPatch;

impl utoipa::PartialSchema for SettingsPatch {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        settings_patch().into()
    }
}

impl ToSchema for SettingsPatch {}

/// The body of `PUT /api/settings`: any of the known keys, each with the values
/// [`model::settings::normalize`] accepts (as JSON value or as text), or
/// `null` to fall back to the env default.
pub fn settings_patch() -> Schema {
    use model::settings::{Kind, DEFS};
    let mut obj = ObjectBuilder::new()
        .min_properties(Some(1))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    for d in DEFS {
        let (json, text): (Object, String) = match d.kind {
            Kind::Bool => (
                ObjectBuilder::new().schema_type(Type::Boolean).build(),
                "^(true|false|yes|no|on|off|0|1)$".to_string(),
            ),
            Kind::Seconds => {
                (int(d.max).minimum(Some(1u64)).build(), format!("^[1-9][0-9]{{0,{}}}$", digits(d.max) - 1))
            }
            Kind::Count => (int(d.max).minimum(Some(0u64)).build(), format!("^[0-9]{{1,{}}}$", digits(d.max))),
            Kind::Percent => (num(0.0, 100.0), "^(100(\\.0{1,6})?|[0-9]{1,2}(\\.[0-9]{1,6})?)$".to_string()),
            Kind::Rate => (num(0.0, 1.0), "^(1(\\.0{1,6})?|0(\\.[0-9]{1,6})?)$".to_string()),
        };
        let mut any = AnyOfBuilder::new().item(json).item(string().pattern(Some(text.as_str())).build()).item(null());
        if d.kind == Kind::Bool {
            any = any.item(ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some([0, 1])).build());
        }
        let any = any.description(Some(format!("{} (default {})", d.help, d.default))).build();
        obj = obj.property(d.key, Schema::AnyOf(any));
    }
    obj.build().into()
}

/// An integer up to `max` (a setting's bound, 10^k − 1).
fn int(max: u64) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).maximum(Some(max))
}

/// Decimal digits of `max`; the text form of a bounded setting is at most that long.
fn digits(max: u64) -> usize {
    max.to_string().len()
}

fn num(min: f64, max: f64) -> Object {
    ObjectBuilder::new().schema_type(Type::Number).minimum(Some(min)).maximum(Some(max)).build()
}

#[derive(Debug, Serialize, ToSchema)]
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
    pub kind: model::settings::Kind,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotTriggered {
    pub triggered: bool,
    pub node_id: u64,
}
