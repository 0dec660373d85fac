//! HTTP for Engine Room: the `/api` surface, the internal `/raft` RPC, the UI
//! mount, all on one axum router built by [`app`] so tests can drive it.

pub mod auth;
pub mod error;
pub mod extract;
pub mod raft_rpc;
pub mod routes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};
use raft_store::Cluster;

pub use error::ApiError;

/// Largest `/api` request body accepted (heartbeats are far smaller).
pub const API_BODY_LIMIT: usize = 64 * 1024;
/// Largest `/raft` body: a snapshot chunk plus framing.
pub const RAFT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Shared handles every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub cluster: Arc<Cluster>,
    pub token: Arc<str>,
    pub secret: Arc<str>,
}

/// The whole HTTP surface of one node.
pub fn app(state: AppState) -> Router {
    let public = Router::new()
        .route("/api/health/live", get(routes::health::live))
        .route("/api/health/ready", get(routes::health::ready));

    let api = Router::new()
        .route("/api/pools", get(routes::pools::list))
        .route("/api/pools/{pool}/scale", post(routes::pools::scale))
        .route("/api/cluster/status", get(routes::cluster::status))
        .route("/api/cluster/learners", post(routes::cluster::add_learner))
        .route("/api/cluster/promote", post(routes::cluster::promote))
        .route("/api/cluster/remove", post(routes::cluster::remove))
        .route("/api/cluster/snapshot", post(routes::cluster::snapshot))
        .route("/api/audit", get(routes::audit::list))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));

    let ui = Router::new()
        .route("/verifier-engine-room", get(routes::ui::index))
        .route("/verifier-engine-room/", get(routes::ui::index))
        .route("/verifier-engine-room/{page}", get(routes::ui::index))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_basic,
        ));

    Router::new()
        .merge(public)
        .merge(api)
        .merge(ui)
        .nest("/raft", raft_rpc::router(state.clone()))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
}
