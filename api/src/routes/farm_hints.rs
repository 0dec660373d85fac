//! Build-farm hints (reference 003's `/hints`): a pattern (a regular
//! expression, compiled and size-limited at create) and a recipe. When a
//! build fails, the hints whose pattern matches its error and the log lines
//! of its failure report are recorded on the event. CRUD is audited.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::farm::{FarmOp, FarmReply, Hint, HintSpec, Recipe};
use model::views::rfc3339;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::routes::farm::{check_env, write};
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HintView {
    pub id: u64,
    pub pattern: String,
    pub recipe: RecipeBody,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

fn hint_view(h: &Hint) -> HintView {
    HintView {
        id: h.id,
        pattern: h.pattern.clone(),
        recipe: RecipeBody {
            env: h.recipe.env.clone(),
            extra_requirements: h.recipe.extra_requirements.clone(),
            note: h.recipe.note.clone(),
        },
        created_at: rfc3339(h.created_ms),
        updated_at: rfc3339(h.updated_ms),
    }
}

/// How to fix what the pattern recognizes.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeBody {
    /// Environment variables to set: at most 64, names `[A-Za-z_][A-Za-z0-9_]*`
    /// (1-128), values at most 1 KiB.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::env_map)]
    pub env: BTreeMap<String, String>,
    /// Extra build requirements: at most 64, each 1-64 characters.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::requirements)]
    pub extra_requirements: Vec<String>,
    /// At most 1,024 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\x00]*$")]
    pub note: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HintBody {
    /// A regular expression (Rust `regex` syntax), 1-256 characters; 400
    /// if it does not compile within 256 KiB.
    #[schema(schema_with = crate::openapi::hint_pattern)]
    pub pattern: String,
    #[serde(default)]
    pub recipe: RecipeBody,
}

impl HintBody {
    fn into_spec(self) -> Result<HintSpec, ApiError> {
        let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_hint", m);
        if self.pattern.chars().count() > 256 {
            return Err(bad("pattern is longer than 256 characters"));
        }
        check_env(&self.recipe.env)?;
        if self.recipe.extra_requirements.iter().any(|r| r.chars().count() > 64) {
            return Err(bad("an extra requirement is longer than 64 characters"));
        }
        if self.recipe.note.chars().count() > 1024 {
            return Err(bad("note is longer than 1024 characters"));
        }
        let spec = HintSpec {
            pattern: self.pattern,
            recipe: Recipe {
                env: self.recipe.env,
                extra_requirements: self.recipe.extra_requirements,
                note: self.recipe.note,
            },
        };
        spec.validate().map_err(|e| match e.kind {
            // A regular expression, but one over the compiled-size limit.
            model::ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "pattern_too_complex", e.message),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_hint", e.message),
        })?;
        Ok(spec)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HintList {
    pub hints: Vec<HintView>,
}

/// Every hint, by id.
#[utoipa::path(get, path = "/hints", tag = "farm", responses((status = 200, body = HintList)))]
pub async fn list(State(s): State<AppState>) -> Json<HintList> {
    let applied = s.cluster.state.read();
    Json(HintList { hints: applied.state.farm.hints.values().map(hint_view).collect() })
}

fn answered(reply: FarmReply) -> Result<Json<HintView>, ApiError> {
    match reply {
        FarmReply::Hint(h) => Ok(Json(hint_view(&h))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Create a hint; answered with its `id`. Audited.
#[utoipa::path(post, path = "/hints", tag = "farm", request_body = HintBody, responses(
    (status = 201, body = HintView),
    (status = 400, description = "`invalid_hint`: a pattern that does not compile, or a bad recipe", body = crate::openapi::ErrorBody),
    (status = 409, description = "`pattern_too_complex`: compiles to more than 256 KiB; or `format_too_old`", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 429, description = "1,000 hints already", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<HintBody>,
) -> Result<(StatusCode, Json<HintView>), ApiError> {
    let spec = b.into_spec()?;
    let view = answered(write(&s, &caller.actor(), FarmOp::CreateHint(spec)).await?)?;
    Ok((StatusCode::CREATED, view))
}

/// A hint id path segment; anything else is an unknown hint.
fn hint_id(raw: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::not_found(format!("hint {raw:?} not found"));
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    raw.parse().map_err(|_| bad())
}

/// Replace a hint's pattern and recipe. Audited.
#[utoipa::path(put, path = "/hints/{id}", tag = "farm", params(("id" = String, Path, pattern = "^[0-9]{1,19}$")), request_body = HintBody, responses(
    (status = 200, body = HintView),
    (status = 400, description = "`invalid_hint`", body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "`pattern_too_complex`: compiles to more than 256 KiB; or `format_too_old`", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn update(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(b): ApiJson<HintBody>,
) -> Result<Json<HintView>, ApiError> {
    let id = hint_id(&raw)?;
    let spec = b.into_spec()?;
    answered(write(&s, &caller.actor(), FarmOp::UpdateHint { id, spec }).await?)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HintDeleted {
    pub id: u64,
    pub deleted: bool,
}

/// Delete a hint (events keep the ids they recorded). Audited.
#[utoipa::path(delete, path = "/hints/{id}", tag = "farm", params(("id" = String, Path, pattern = "^[0-9]{1,19}$")), responses(
    (status = 200, body = HintDeleted),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<HintDeleted>, ApiError> {
    let id = hint_id(&raw)?;
    write(&s, &caller.actor(), FarmOp::DeleteHint { id }).await?;
    Ok(Json(HintDeleted { id, deleted: true }))
}
