//! HTTP for Engine Room: the `/api` surface and the UI mount, with the
//! consensus layer's `/raft` RPC nested in, all on one axum router built by
//! [`app`] so tests can drive it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod job_watch;
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
pub use raft_store::job_commit::{JobBatcher, JobOptions};
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
    /// Producers' and workers' job operations, group-committed.
    pub jobs: JobBatcher,
    pub job_options: JobOptions,
    /// Bumped when applied entries changed the jobs: waiting claims look again.
    pub job_wake: tokio::sync::watch::Sender<u64>,
    /// Claims and completions per minute, per queue.
    pub job_rates: Arc<job_watch::JobRates>,
    /// The `/raft` handlers' handles (the same cluster, batchers and secret).
    pub raft: Arc<RaftService>,
    /// Failed authentications per source address.
    pub auth_failures: auth::FailLimiter,
}

/// The brute-force defence: past `fail_burst` failed authentications from
/// one address within `fail_window`, that address gets 429 until it ends.
#[derive(Debug, Clone, Copy)]
pub struct AuthOptions {
    pub fail_burst: u32,
    pub fail_window: std::time::Duration,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions { fail_burst: 20, fail_window: std::time::Duration::from_secs(60) }
    }
}

impl AppState {
    pub fn new(cluster: Arc<Cluster>, token: &str, secret: &str, settings: Settings, batch: BatchOptions) -> Self {
        Self::with_auth(cluster, token, secret, settings, batch, AuthOptions::default(), JobOptions::default())
    }

    pub fn with_auth(
        cluster: Arc<Cluster>,
        token: &str,
        secret: &str,
        settings: Settings,
        batch: BatchOptions,
        auth: AuthOptions,
        job_options: JobOptions,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(cluster.id));
        let batcher = HeartbeatBatcher::start(cluster.clone(), metrics.clone(), batch);
        // Job rounds close at an eighth of the entry limit: with a batch
        // enqueue (at most half of it) joining, an entry stays under it.
        let job_batch =
            BatchOptions { max_batch_bytes: (cluster.opts.max_entry_bytes / 8).min(batch.max_batch_bytes), ..batch };
        let jobs = JobBatcher::start(cluster.clone(), Arc::new(metrics::JobCommitObserver(metrics.clone())), job_batch);
        let job_rates = Arc::new(job_watch::JobRates::default());
        let job_wake = job_watch::start(cluster.clone(), job_rates.clone());
        let secret: Arc<str> = secret.into();
        let raft = Arc::new(RaftService {
            cluster: cluster.clone(),
            batcher: batcher.clone(),
            jobs: jobs.clone(),
            secret: secret.clone(),
        });
        Self(Arc::new(Handles {
            cluster,
            token: token.into(),
            secret,
            settings: Arc::new(settings),
            metrics,
            batcher,
            jobs,
            job_options,
            job_wake,
            job_rates,
            raft,
            auth_failures: auth::FailLimiter::new(auth.fail_burst, auth.fail_window),
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

/// Content-Security-Policy of every UI answer. Scripts and styles come only
/// from this node's own `/static` files (no inline script, no `eval`); no page
/// may be framed. Inline `style` attributes stay allowed: the server renders
/// bar widths into them. `connect-src` admits other origins because the
/// overview's live-view failover probes the other nodes, at addresses the
/// operator may have typed into the browser (see the cluster page).
pub const UI_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self'; connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Browser hardening on every UI answer, the 401 asking for a password included.
async fn ui_headers(req: axum::extract::Request, next: middleware::Next) -> axum::response::Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(UI_CSP));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    res
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
        .route("/verifier-engine-room/jobs/{id}", get(routes::ui::job))
        .route("/verifier-engine-room/builds/{package}", get(routes::ui_farm::package))
        .route("/verifier-engine-room/logs/{name}/{version}", get(routes::ui_farm::log))
        .route(
            "/verifier-engine-room/hints/test",
            axum::routing::post(routes::ui_farm::test_pattern)
                .layer(DefaultBodyLimit::max(routes::ui_farm::TEST_BODY_LIMIT)),
        )
        .route("/verifier-engine-room/{page}", get(routes::ui::page))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_basic))
        .layer(middleware::from_fn(ui_headers));

    Router::new()
        .merge(router)
        .route("/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .merge(ui)
        .route_layer(metrics::TrackHttp(state.metrics.clone()))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}

/// Every documented route: `/api/*` and `/metrics`. Registering a handler here
/// requires its `#[utoipa::path]`, so the OpenAPI document stays complete.
pub fn api_routes(state: AppState) -> OpenApiRouter<AppState> {
    use auth::{scoped, Access};
    use routes::{
        audit, cluster, farm, farm_hints, farm_store, farm_trigger, health, history, incidents, job_queue, job_worker,
        jobs, pools, providers, settings, slo, tokens, workers,
    };
    let s = &state;
    let public =
        OpenApiRouter::new().routes(routes!(health::live)).routes(routes!(health::ready)).routes(routes!(jobs::health));
    // Job routes whose bodies may pass the default limit get their own
    // (the innermost `DefaultBodyLimit` wins): a batch up to half an entry.
    let sized = |limit: usize, (schemas, paths, router): utoipa_axum::router::UtoipaMethodRouter<AppState>| {
        (schemas, paths, router.layer(DefaultBodyLimit::max(limit)))
    };
    let batch_limit = s.cluster.opts.max_entry_bytes / 2;
    let worker_limit = routes::job_worker::WORKER_BODY_LIMIT;
    // Every route names the scope it needs (reads: GET and HEAD; writes:
    // the rest); `scoped` enforces it and writes it into the document.
    let private = OpenApiRouter::new()
        .routes(scoped(s, Access::WORKER, routes!(workers::heartbeat)))
        .routes(scoped(s, Access::OPERATOR, routes!(workers::list)))
        .routes(scoped(s, Access::OPERATOR, routes!(workers::get, workers::delete)))
        .routes(scoped(s, Access::OPERATOR, routes!(workers::control)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::list, pools::create)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::get, pools::update)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::scale)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::archive)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::unarchive)))
        .routes(scoped(s, Access::OPERATOR, routes!(pools::set_default)))
        .routes(scoped(s, Access::OPERATOR, routes!(cluster::status)))
        .routes(scoped(s, Access::ADMIN_WRITES, routes!(cluster::add_learner)))
        .routes(scoped(s, Access::ADMIN_WRITES, routes!(cluster::promote)))
        .routes(scoped(s, Access::ADMIN_WRITES, routes!(cluster::remove)))
        .routes(scoped(s, Access::ADMIN_WRITES, routes!(cluster::snapshot)))
        .routes(scoped(s, Access::OPERATOR, routes!(cluster::loops)))
        .routes(scoped(s, Access::OPERATOR, routes!(history::list)))
        .routes(scoped(s, Access::OPERATOR, routes!(audit::list)))
        .routes(scoped(s, Access::OPERATOR, routes!(incidents::list)))
        .routes(scoped(s, Access::OPERATOR, routes!(incidents::ack)))
        .routes(scoped(s, Access::OPERATOR, routes!(incidents::alerts)))
        .routes(scoped(s, Access::ADMIN_WRITES, routes!(settings::get, settings::put)))
        .routes(scoped(s, Access::OPERATOR, routes!(slo::get)))
        .routes(scoped(s, Access::OPERATOR, routes!(providers::health)))
        .routes(scoped(s, Access::OPERATOR, routes!(providers::set_mode)))
        .routes(scoped(s, Access::ADMIN, routes!(tokens::list, tokens::create)))
        .routes(scoped(s, Access::ADMIN, routes!(tokens::revoke)))
        .routes(scoped(s, Access::METRICS, routes!(metrics_text)))
        .routes(sized(jobs::CREATE_BODY_LIMIT, scoped(s, Access::PRODUCER, routes!(jobs::create, jobs::list))))
        .routes(sized(batch_limit, scoped(s, Access::PRODUCER, routes!(jobs::batch))))
        .routes(scoped(s, Access::PRODUCER, routes!(jobs::get)))
        .routes(scoped(s, Access::PRODUCER, routes!(jobs::logs)))
        .routes(scoped(s, Access::PRODUCER, routes!(job_queue::stats_v1)))
        .routes(scoped(s, Access::WORKER, routes!(job_worker::claim)))
        .routes(sized(worker_limit, scoped(s, Access::WORKER, routes!(job_worker::heartbeat))))
        .routes(sized(worker_limit, scoped(s, Access::WORKER, routes!(job_worker::complete))))
        .routes(sized(worker_limit, scoped(s, Access::WORKER, routes!(job_worker::fail))))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::cancel)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::requeue)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::reconcile)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::items)))
        .routes(sized(jobs::CREATE_BODY_LIMIT, scoped(s, Access::OPERATOR, routes!(job_queue::enqueue))))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::clear)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::stats_ops)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::pause)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::resume)))
        .routes(scoped(s, Access::OPERATOR, routes!(job_queue::cap)))
        .routes(scoped(s, Access::OPERATOR, routes!(jobs::search)))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    // The build farm under reference 003's paths: reads need `read` (none
    // with FARM_READS_OPEN=true), writes `operator`, the build worker's
    // callbacks (plan, manifest, log lines, cache reports) `worker`;
    // worker triggers are writes (`operator`), their list a read.
    let read = |r| if s.job_options.farm_reads_open { auth::open(r) } else { scoped(s, Access::OPERATOR, r) };
    let farm = OpenApiRouter::new()
        .routes(read(routes!(farm::summary)))
        .routes(read(routes!(farm::recent)))
        .routes(read(routes!(farm::history)))
        .routes(read(routes!(farm::queue)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm::enqueue)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm::clear)))
        .routes(read(routes!(farm::queue_stats)))
        .routes(read(routes!(farm::config)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm::set_config)))
        .routes(scoped(s, Access::WORKER, routes!(farm::cache_report)))
        .routes(read(routes!(farm_hints::list)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm_hints::create)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm_hints::update, farm_hints::delete)))
        .routes(read(routes!(farm_store::plan)))
        .routes(sized(farm_store::BLOB_BODY_LIMIT, scoped(s, Access::WORKER, routes!(farm_store::post_plan))))
        .routes(read(routes!(farm_store::manifest)))
        .routes(sized(farm_store::BLOB_BODY_LIMIT, scoped(s, Access::WORKER, routes!(farm_store::post_manifest))))
        .routes(read(routes!(farm_store::artifacts)))
        .routes(read(routes!(farm_store::log)))
        .routes(sized(farm_store::LOG_BODY_LIMIT, scoped(s, Access::WORKER, routes!(farm_store::append_log))))
        .routes(read(routes!(farm_store::search)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm_trigger::trigger)))
        .routes(scoped(s, Access::OPERATOR, routes!(farm_trigger::smoke)))
        .routes(read(routes!(farm_trigger::list)))
        .routes(read(routes!(farm_trigger::get)))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(public).merge(private).merge(farm)
}
