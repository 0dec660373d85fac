//! Provider modes: operator override (`POST /api/providers/{provider}/mode`)
//! and the health auto-protect sees.

use axum::extract::{Extension, State};
use axum::Json;
use model::{Command, Reply};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::openapi::{ProviderHealth, ProviderHealthList, ProviderModeView};
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    #[schema(schema_with = crate::openapi::provider_mode)]
    pub mode: String,
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/providers/{provider}/mode", tag = "settings", params(("provider" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), request_body = ModeBody, responses((status = 200, body = ProviderModeView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn set_mode(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(provider): ApiPath<String>,
    ApiJson(b): ApiJson<ModeBody>,
) -> Result<Json<ProviderModeView>, ApiError> {
    let cmd = Command::SetProviderMode { provider: provider.clone(), mode: b.mode, auto: false, reason: b.reason };
    match s.cluster.write(&caller.actor(), cmd).await?? {
        Reply::Provider(p) => {
            Ok(Json(ProviderModeView { provider, effective_mode: p.effective().to_string(), state: p }))
        }
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Per provider: mode in force, override, auto-protect decision and counters
/// summed over the fleet's latest heartbeats.
#[utoipa::path(get, path = "/api/providers/health", tag = "settings", responses((status = 200, body = crate::openapi::ProviderHealthList), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn health(State(s): State<AppState>) -> Json<ProviderHealthList> {
    Json(provider_health(&s))
}

/// The body of `GET /api/providers/health`, shared with the settings page.
pub fn provider_health(s: &AppState) -> ProviderHealthList {
    let applied = s.cluster.state.read();
    let st = &applied.state;
    let mut totals: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    for w in st.workers.values() {
        for (p, m) in w.provider_metrics.iter() {
            let t = totals.entry(p.to_string()).or_default();
            for (i, k) in ["accepted", "rejected", "tempfail", "unknown"].iter().enumerate() {
                t[i] += m.get(*k).map(|v| v.value()).unwrap_or(0.0);
            }
        }
    }
    let names: std::collections::BTreeSet<&String> = totals.keys().chain(st.providers.keys()).collect();
    let providers = names
        .into_iter()
        .map(|name| {
            let t = totals.get(name).copied().unwrap_or_default();
            let total: f64 = t.iter().sum();
            let rate = |x: f64| if total > 0.0 { x / total } else { 0.0 };
            let p = st.providers.get(name).cloned().unwrap_or_default();
            ProviderHealth {
                provider: name.clone(),
                effective_mode: p.effective().to_string(),
                override_mode: p.override_mode,
                auto_mode: p.auto_mode,
                auto_reason: p.auto_reason,
                probes: total,
                accepted_rate: rate(t[0]),
                reject_rate: rate(t[1]),
                tempfail_rate: rate(t[2]),
                unknown_rate: rate(t[3]),
            }
        })
        .collect();
    ProviderHealthList { providers }
}
