//! `/api` handlers, one module per resource.

pub mod audit;
pub mod cluster;
pub mod farm;
pub mod farm_hints;
pub mod farm_store;
pub mod farm_trigger;
pub mod health;
pub mod history;
pub mod incidents;
pub mod job_queue;
pub mod job_worker;
pub mod jobs;
pub mod pools;
pub mod providers;
pub mod settings;
pub mod slo;
pub mod tokens;
pub mod ui;
pub mod ui_farm;
pub mod workers;

use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

/// `?consistent=true` asks for a linearizable read.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadOpts {
    #[serde(default)]
    pub consistent: bool,
}

impl ReadOpts {
    /// Wait for the read barrier when the caller asked for consistency.
    pub async fn barrier(&self, state: &AppState) -> Result<(), ApiError> {
        if self.consistent {
            state.cluster.read_barrier().await?;
        }
        Ok(())
    }
}
