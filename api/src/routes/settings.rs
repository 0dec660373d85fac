//! Runtime settings: every toggle and interval, its value in force and where
//! that value comes from; updates go through Raft and apply without restart.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use model::settings::{normalize, DEFS};
use model::{Command, Reply};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::AppState;

fn view(s: &AppState, overrides: &BTreeMap<String, String>) -> Value {
    let settings: Vec<Value> = DEFS
        .iter()
        .map(|d| {
            let (value, source) = match overrides.get(d.key) {
                Some(v) => (v.clone(), "override"),
                None => match s.settings.env.get(d.key) {
                    Some(v) if v != d.default => (v.clone(), "env"),
                    _ => (d.default.to_string(), "default"),
                },
            };
            json!({"key": d.key, "value": value, "source": source, "kind": d.kind, "default": d.default, "help": d.help})
        })
        .collect();
    json!({ "settings": settings })
}

#[utoipa::path(get, path = "/api/settings", tag = "settings", responses((status = 200, body = crate::openapi::SettingsView), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn get(State(s): State<AppState>) -> Json<Value> {
    let overrides = s.cluster.state.read().state.settings.clone();
    Json(view(&s, &overrides))
}

/// `PUT /api/settings` with `{"KEY": value, ...}`; `null` resets a key to its
/// env default. All values are validated before anything is written.
#[utoipa::path(put, path = "/api/settings", tag = "settings", request_body = std::collections::BTreeMap<String, serde_json::Value>, responses((status = 200, body = crate::openapi::SettingsView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn put(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<BTreeMap<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("no settings given"));
    }
    let mut changes = BTreeMap::new();
    for (k, v) in body {
        let raw = match v {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
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
    match s.cluster.write(&crate::auth::actor(&headers), Command::UpdateSettings { changes }).await?? {
        Reply::Settings(overrides) => Ok(Json(view(&s, &overrides))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}
