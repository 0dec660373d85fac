//! Pools as first-class groups: list with live worker counts, create, edit,
//! archive, set default, scale.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::Json;
use model::state::worker::heartbeat_state;
use model::state::{ControlState, Pool, PoolPatch, Profile};
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use serde::Deserialize;

use super::ReadOpts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::{PoolList, PoolView};
use crate::AppState;

/// A pool with the live counts of its workers by state.
fn pool_view(state: &ControlState, p: &Pool, now: u64, grace: u64) -> PoolView {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for w in state.pool_workers(&p.name) {
        *counts.entry("total").or_default() += 1;
        *counts.entry(heartbeat_state(Some(w.last_heartbeat_ms), now, grace)).or_default() += 1;
        *counts.entry(w.desired_state.as_str()).or_default() += 1;
        if w.quarantined {
            *counts.entry("quarantined").or_default() += 1;
        }
    }
    PoolView { pool: p.clone(), workers: counts.into_iter().map(|(k, n)| (k.to_string(), n)).collect() }
}

#[utoipa::path(get, path = "/api/pools", tag = "pools", params(ReadOpts), responses((status = 200, body = PoolList), (status = 401, body = crate::openapi::ErrorBody), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>, ApiQuery(opts): ApiQuery<ReadOpts>) -> Result<Json<PoolList>, ApiError> {
    opts.barrier(&s).await?;
    let (now, grace) = (now_ms(), s.grace_ms());
    let applied = s.cluster.state.read();
    let pools = applied.state.pools.values().map(|p| pool_view(&applied.state, p, now, grace)).collect();
    Ok(Json(PoolList { pools }))
}

#[utoipa::path(get, path = "/api/pools/{pool}", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128), ReadOpts), responses((status = 200, body = PoolView), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(opts): ApiQuery<ReadOpts>,
) -> Result<Json<PoolView>, ApiError> {
    opts.barrier(&s).await?;
    let grace = s.grace_ms();
    let applied = s.cluster.state.read();
    let p = applied.state.pools.get(&name).ok_or_else(|| ApiError::not_found(format!("pool {name:?} not found")))?;
    Ok(Json(pool_view(&applied.state, p, now_ms(), grace)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub desired_count: Option<u32>,
    /// Above the pool's `max_count` (given or kept) is a 409.
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub min_count: Option<u32>,
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub max_count: Option<u32>,
    #[schema(schema_with = crate::openapi::profiles)]
    pub profiles: Option<BTreeMap<String, Profile>>,
}

impl From<PoolBody> for PoolPatch {
    fn from(b: PoolBody) -> Self {
        PoolPatch {
            desired_count: b.desired_count,
            min_count: b.min_count,
            max_count: b.max_count,
            profiles: b.profiles,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub desired_count: Option<u32>,
    /// Above `max_count` is a 409.
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub min_count: Option<u32>,
    #[schema(maximum = 100_000)]
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    pub max_count: Option<u32>,
    #[schema(schema_with = crate::openapi::profiles)]
    pub profiles: Option<BTreeMap<String, Profile>>,
}

async fn write_pool(s: &AppState, caller: &Caller, cmd: Command) -> Result<Json<PoolView>, ApiError> {
    match s.cluster.write(&caller.actor(), cmd).await?? {
        Reply::Pool(p) => {
            let grace = s.grace_ms();
            let applied = s.cluster.state.read();
            Ok(Json(pool_view(&applied.state, &p, now_ms(), grace)))
        }
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(post, path = "/api/pools", tag = "pools", request_body = CreateBody, responses((status = 200, body = PoolView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<Json<PoolView>, ApiError> {
    let patch = PoolPatch {
        desired_count: b.desired_count,
        min_count: b.min_count,
        max_count: b.max_count,
        profiles: b.profiles,
    };
    write_pool(&s, &caller, Command::CreatePool { name: b.name, patch }).await
}

#[utoipa::path(method(patch, put), path = "/api/pools/{pool}", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), request_body = PoolBody, responses((status = 200, body = PoolView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(b): ApiJson<PoolBody>,
) -> Result<Json<PoolView>, ApiError> {
    write_pool(&s, &caller, Command::UpdatePool { name, patch: b.into() }).await
}

#[utoipa::path(post, path = "/api/pools/{pool}/archive", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses((status = 200, body = PoolView), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn archive(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PoolView>, ApiError> {
    write_pool(&s, &caller, Command::ArchivePool { name, archived: true }).await
}

#[utoipa::path(post, path = "/api/pools/{pool}/unarchive", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses((status = 200, body = PoolView), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn unarchive(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PoolView>, ApiError> {
    write_pool(&s, &caller, Command::ArchivePool { name, archived: false }).await
}

#[utoipa::path(post, path = "/api/pools/{pool}/default", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses((status = 200, body = PoolView), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn set_default(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PoolView>, ApiError> {
    write_pool(&s, &caller, Command::SetDefaultPool { name }).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleBody {
    #[schema(maximum = 100_000)]
    #[serde(deserialize_with = "crate::extract::whole")]
    pub desired_count: u32,
}

#[utoipa::path(post, path = "/api/pools/{pool}/scale", tag = "pools", params(("pool" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), request_body = ScaleBody, responses((status = 200, body = PoolView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn scale(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(pool): ApiPath<String>,
    ApiJson(body): ApiJson<ScaleBody>,
) -> Result<Json<PoolView>, ApiError> {
    write_pool(&s, &caller, Command::ScalePool { pool, desired_count: body.desired_count }).await
}
