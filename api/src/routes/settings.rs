//! Runtime settings: every toggle and interval, its value in force and where
//! that value comes from; updates go through Raft and apply without restart.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::Json;
use model::settings::{normalize, DEFS};
use model::{Command, Reply};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::openapi::{SettingView, SettingsPatch, SettingsView};
use crate::AppState;

fn view(s: &AppState, overrides: &BTreeMap<String, String>) -> SettingsView {
    let settings = DEFS
        .iter()
        .map(|d| {
            let (value, source) = match overrides.get(d.key) {
                Some(v) => (v.clone(), "override"),
                None => match s.settings.env.get(d.key) {
                    Some(v) if v != d.default => (v.clone(), "env"),
                    _ => (d.default.to_string(), "default"),
                },
            };
            SettingView {
                key: d.key.to_string(),
                value,
                source: source.to_string(),
                kind: d.kind,
                default: d.default.to_string(),
                help: d.help.to_string(),
            }
        })
        .collect();
    SettingsView { settings }
}

#[utoipa::path(get, path = "/api/settings", tag = "settings", responses((status = 200, body = crate::openapi::SettingsView), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn get(State(s): State<AppState>) -> Json<SettingsView> {
    let overrides = s.cluster.state.read().state.settings.clone();
    Json(view(&s, &overrides))
}

/// `PUT /api/settings` with `{"KEY": value, ...}`; `null` resets a key to its
/// env default. All values are validated before anything is written.
#[utoipa::path(put, path = "/api/settings", tag = "settings", request_body(content = inline(SettingsPatch)), responses((status = 200, body = crate::openapi::SettingsView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn put(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<BTreeMap<String, Value>>,
) -> Result<Json<SettingsView>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("no settings given"));
    }
    let mut changes = BTreeMap::new();
    for (k, v) in body {
        let raw = match v {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            // `3836.0` is a whole number too (JSON Schema's `integer` admits it).
            Value::Number(n) => Some(match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
                _ => n.to_string(),
            }),
            Value::String(t) => Some(t),
            other => return Err(ApiError::bad_request(format!("{k}: expected a bool, number or string, got {other}"))),
        };
        match &raw {
            Some(r) => normalize(&k, r).map_err(ApiError::bad_request)?,
            None => model::settings::find(&k)
                .map(|_| String::new())
                .ok_or_else(|| ApiError::bad_request(format!("unknown setting {k}")))?,
        };
        changes.insert(k, raw);
    }
    match s.cluster.write(&caller.actor(), Command::UpdateSettings { changes }).await?? {
        Reply::Settings(overrides) => Ok(Json(view(&s, &overrides))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}
