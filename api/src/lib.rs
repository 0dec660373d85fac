//! HTTP for Engine Room: the `/api` surface and the UI mount, with the
//! consensus layer's `/raft` RPC nested in, all on one axum router built by
//! [`app`] so tests can drive it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Router};
use raft_store::Cluster;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::ApiError;
pub use metrics::Metrics;
pub use raft_store::group_commit::{BatchOptions, HeartbeatBatcher};
use raft_store::rpc_server::RaftService;

/// Largest `/api` request body accepted (heartbeats are far smaller).
pub const API_BODY_LIMIT: usize = 64 * 1024;

/// Runtime settings as read from the environment at startup; operator
/// overrides in the replicated state take precedence.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Arc<std::collections::BTreeMap<String, String>>,
}

/// Shared handles every handler needs. One `Arc`, so the clones axum makes
/// for each request and each middleware layer cost one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl std::ops::Deref for AppState {
    type Target = Handles;
    fn deref(&self) -> &Handles {
        &self.0
    }
}

pub struct Handles {
    pub cluster: Arc<Cluster>,
    pub token: Arc<str>,
    pub secret: Arc<str>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub batcher: HeartbeatBatcher,
    /// The `/raft` handlers' handles (the same cluster, batcher and secret).
    pub raft: Arc<RaftService>,
}

impl AppState {
    pub fn new(cluster: Arc<Cluster>, token: &str, secret: &str, settings: Settings, batch: BatchOptions) -> Self {
        let metrics = Arc::new(Metrics::new(cluster.id));
        let batcher = HeartbeatBatcher::start(cluster.clone(), metrics.clone(), batch);
        let secret: Arc<str> = secret.into();
        let raft = Arc::new(RaftService { cluster: cluster.clone(), batcher: batcher.clone(), secret: secret.clone() });
        Self(Arc::new(Handles {
            cluster,
            token: token.into(),
            secret,
            settings: Arc::new(settings),
            metrics,
            batcher,
            raft,
        }))
    }
}

impl AppState {
    /// Run `f` with the settings in force (takes the state lock briefly; do not
    /// call while holding it).
    pub fn with_settings<T>(&self, f: impl FnOnce(&model::settings::Effective) -> T) -> T {
        let overrides = self.cluster.state.read().state.settings.clone();
        f(&model::settings::Effective { env: &self.settings.env, overrides: &overrides })
    }

    /// Heartbeat age (ms) beyond which a worker is `stale`.
    pub fn grace_ms(&self) -> u64 {
        self.with_settings(|s| s.ms("ALERT_HEARTBEAT_GRACE_SECONDS"))
    }
}

/// Prometheus text exposition of this node's metrics.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, body = openapi::ErrorBody)))]
async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(&s))
}

/// The whole HTTP surface of one node, without transport limits (tests).
pub fn app(state: AppState) -> Router {
    public_routes(state.clone()).merge(raft_routes(&state))
}

/// The public surface (`/api`, UI, `/metrics`, fallback) and `/raft`, each
/// with its transport limits, so a node can serve them on one listener
/// (merged) or on two (`ENGINE_RAFT_LISTEN`).
pub fn limited_apps(state: AppState, limits: limits::Limits) -> (Router, Router) {
    (limits::public(public_routes(state.clone()), limits), limits::raft(raft_routes(&state), limits))
}

/// `/raft/*` only, without a fallback (merged into the public router or
/// given one of its own by the caller).
fn raft_routes(state: &AppState) -> Router {
    Router::new().nest_service("/raft", raft_store::rpc_server::router(state.raft.clone()))
}

fn public_routes(state: AppState) -> Router {
    let (router, mut doc) = api_routes(state.clone()).split_for_parts();
    openapi::add_layer_statuses(&mut doc);
    openapi::add_transport_statuses(&mut doc);
    let doc = Arc::new(doc);

    let ui = Router::new()
        .route("/verifier-engine-room", get(routes::ui::root))
        .route("/verifier-engine-room/", get(routes::ui::root))
        .route("/verifier-engine-room/events", get(routes::ui::events))
        .route("/verifier-engine-room/static/{file}", get(routes::ui::asset))
        .route("/verifier-engine-room/workers/{id}", get(routes::ui::worker))
        .route("/verifier-engine-room/{page}", get(routes::ui::page))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_basic));

    Router::new()
        .merge(router)
        .route("/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .merge(ui)
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::track_http))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Every documented route: `/api/*` and `/metrics`. Registering a handler here
/// requires its `#[utoipa::path]`, so the OpenAPI document stays complete.
pub fn api_routes(state: AppState) -> OpenApiRouter<AppState> {
    use routes::{audit, cluster, health, history, incidents, pools, providers, settings, slo, workers};
    let public = OpenApiRouter::new().routes(routes!(health::live)).routes(routes!(health::ready));
    let private = OpenApiRouter::new()
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::list))
        .routes(routes!(workers::get, workers::delete))
        .routes(routes!(workers::control))
        .routes(routes!(pools::list, pools::create))
        .routes(routes!(pools::get, pools::update))
        .routes(routes!(pools::scale))
        .routes(routes!(pools::archive))
        .routes(routes!(pools::unarchive))
        .routes(routes!(pools::set_default))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::add_learner))
        .routes(routes!(cluster::promote))
        .routes(routes!(cluster::remove))
        .routes(routes!(cluster::snapshot))
        .routes(routes!(cluster::loops))
        .routes(routes!(history::list))
        .routes(routes!(audit::list))
        .routes(routes!(incidents::list))
        .routes(routes!(incidents::ack))
        .routes(routes!(incidents::alerts))
        .routes(routes!(settings::get, settings::put))
        .routes(routes!(slo::get))
        .routes(routes!(providers::health))
        .routes(routes!(providers::set_mode))
        .routes(routes!(metrics_text))
        .route_layer(middleware::from_fn_with_state(state, auth::require_token))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(public).merge(private)
}
