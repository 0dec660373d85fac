//! Pools: list and scale.

use axum::extract::State;
use axum::Json;
use raft_store::{Command, Reply};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ReadOpts;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;

pub async fn list(
    State(s): State<AppState>,
    ApiQuery(opts): ApiQuery<ReadOpts>,
) -> Result<Json<Value>, ApiError> {
    opts.barrier(&s).await?;
    let applied = s.cluster.state.read();
    let pools: Vec<_> = applied.state.pools.values().collect();
    Ok(Json(json!({ "pools": pools })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    pub desired_count: u32,
}

pub async fn scale(
    State(s): State<AppState>,
    ApiPath(pool): ApiPath<String>,
    ApiJson(body): ApiJson<ScaleBody>,
) -> Result<Json<Value>, ApiError> {
    let command = Command::ScalePool {
        pool,
        desired_count: body.desired_count,
    };
    match s.cluster.write("operator", command).await?? {
        Reply::Pool(p) => Ok(Json(json!(p))),
        other => Err(ApiError::bad_request(format!("unexpected reply {other:?}"))),
    }
}
