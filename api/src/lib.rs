//! HTTP for Engine Room: the `/api` surface, the internal `/raft` RPC, the UI
//! mount, all on one axum router built by [`app`] so tests can drive it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod heartbeat;
pub mod metrics;
pub mod raft_rpc;
pub mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Router};
use raft_store::Cluster;

pub use error::ApiError;
pub use heartbeat::{BatchOptions, HeartbeatBatcher};
pub use metrics::Metrics;

/// Largest `/api` request body accepted (heartbeats are far smaller).
pub const API_BODY_LIMIT: usize = 64 * 1024;
/// Largest `/raft` body: a snapshot chunk plus framing.
pub const RAFT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Runtime settings as read from the environment at startup; operator
/// overrides in the replicated state take precedence.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Arc<std::collections::BTreeMap<String, String>>,
}

/// Shared handles every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub token: Arc<str>,
    pub secret: Arc<str>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub batcher: HeartbeatBatcher,
}

impl AppState {
    pub fn new(cluster: Arc<Cluster>, token: &str, secret: &str, settings: Settings, batch: BatchOptions) -> Self {
        let metrics = Arc::new(Metrics::new(cluster.id));
        let batcher = HeartbeatBatcher::start(cluster.clone(), metrics.clone(), batch);
        Self { cluster, token: token.into(), secret: secret.into(), settings: Arc::new(settings), metrics, batcher }
    }
}

impl AppState {
    /// Run `f` with the settings in force (takes the state lock briefly; do not
    /// call while holding it).
    pub fn with_settings<T>(&self, f: impl FnOnce(&raft_store::settings::Effective) -> T) -> T {
        let overrides = self.cluster.state.read().state.settings.clone();
        f(&raft_store::settings::Effective { env: &self.settings.env, overrides: &overrides })
    }

    /// Heartbeat age (ms) beyond which a worker is `stale`.
    pub fn grace_ms(&self) -> u64 {
        self.with_settings(|s| s.ms("ALERT_HEARTBEAT_GRACE_SECONDS"))
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(&s))
}

/// The whole HTTP surface of one node.
pub fn app(state: AppState) -> Router {
    use routes::{audit, cluster, health, incidents, pools, providers, settings, slo, workers};
    let public =
        Router::new().route("/api/health/live", get(health::live)).route("/api/health/ready", get(health::ready));

    let api = Router::new()
        .route("/api/workers/heartbeat", post(workers::heartbeat))
        .route("/api/workers", get(workers::list))
        .route("/api/workers/{id}", get(workers::get))
        .route("/api/workers/{id}/{action}", post(workers::control))
        .route("/api/pools", get(pools::list).post(pools::create))
        .route("/api/pools/{pool}", get(pools::get).patch(pools::update).put(pools::update))
        .route("/api/pools/{pool}/scale", post(pools::scale))
        .route("/api/pools/{pool}/archive", post(pools::archive))
        .route("/api/pools/{pool}/unarchive", post(pools::unarchive))
        .route("/api/pools/{pool}/default", post(pools::set_default))
        .route("/api/cluster/status", get(cluster::status))
        .route("/api/cluster/learners", post(cluster::add_learner))
        .route("/api/cluster/promote", post(cluster::promote))
        .route("/api/cluster/remove", post(cluster::remove))
        .route("/api/cluster/snapshot", post(cluster::snapshot))
        .route("/api/audit", get(audit::list))
        .route("/api/incidents", get(incidents::list))
        .route("/api/incidents/{id}/ack", post(incidents::ack))
        .route("/api/alerts", get(incidents::alerts))
        .route("/api/settings", get(settings::get).put(settings::put))
        .route("/api/slo", get(slo::get))
        .route("/api/providers/health", get(providers::health))
        .route("/api/providers/{provider}/mode", post(providers::set_mode))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));

    let ui = Router::new()
        .route("/verifier-engine-room", get(routes::ui::index))
        .route("/verifier-engine-room/", get(routes::ui::index))
        .route("/verifier-engine-room/{page}", get(routes::ui::index))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_basic));

    Router::new()
        .merge(public)
        .merge(api)
        .merge(ui)
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::track_http))
        .nest("/raft", raft_rpc::router(state.clone()))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}
