//! Named, scoped API tokens (admin only). The secret is drawn here, shown
//! once in the answer to `POST /api/tokens`, and never stored: the cluster
//! keeps its SHA-256 (see `model::state::token`).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::token::{ApiToken, NewToken, Scope};
use model::state::validate_name;
use model::{Command, Reply};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::AppState;

/// Prefix of every secret this cluster issues (so a leaked one is easy to
/// recognise in a scan).
pub const SECRET_PREFIX: &str = "ert_";

/// A token as listed: never the secret nor its hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub name: String,
    pub scope: Scope,
    pub worker_prefix: Option<String>,
    pub pool: Option<String>,
    pub created_ms: u64,
    pub created_by: String,
    pub revoked_ms: Option<u64>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        TokenView {
            name: t.name.clone(),
            scope: t.scope,
            worker_prefix: t.worker_prefix.clone(),
            pool: t.pool.clone(),
            created_ms: t.created_ms,
            created_by: t.created_by.clone(),
            revoked_ms: t.revoked_ms,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// `POST /api/tokens`: a worker token (which may be bound to a worker-id
/// prefix or a pool), or a token of another scope (which may not).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TokenRequest {
    Worker(WorkerTokenRequest),
    Other(OtherTokenRequest),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerTokenRequest {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    pub scope: WorkerScope,
    /// The worker ids it may act for start with this.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub worker_prefix: Option<String>,
    /// The one pool it may act for.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerScope {
    Worker,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OtherTokenRequest {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub name: String,
    pub scope: OtherScope,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OtherScope {
    Admin,
    Operator,
    Read,
    Metrics,
    Producer,
}

impl TokenRequest {
    fn into_parts(self) -> (String, Scope, Option<String>, Option<String>) {
        match self {
            TokenRequest::Worker(w) => (w.name, Scope::Worker, w.worker_prefix, w.pool),
            TokenRequest::Other(o) => {
                let scope = match o.scope {
                    OtherScope::Admin => Scope::Admin,
                    OtherScope::Operator => Scope::Operator,
                    OtherScope::Read => Scope::Read,
                    OtherScope::Metrics => Scope::Metrics,
                    OtherScope::Producer => Scope::Producer,
                };
                (o.name, scope, None, None)
            }
        }
    }
}

/// The answer to `POST /api/tokens`: the only time the secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer secret. Store it now: it cannot be shown again.
    pub secret: String,
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens", responses((status = 200, body = TokenList), (status = 401, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>) -> Json<TokenList> {
    let applied = s.cluster.state.read();
    Json(TokenList { tokens: applied.state.tokens.by_name.values().map(TokenView::from).collect() })
}

/// Create a token; the answer carries its secret, once.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = TokenRequest, responses((status = 201, body = TokenCreated), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 409, description = "the name is taken, or the cluster format does not know tokens yet (a rolling upgrade is under way)", body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 429, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let (name, scope, worker_prefix, pool) = body.into_parts();
    validate_name("token name", &name)?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!("{SECRET_PREFIX}{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let sha256: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let cmd = Command::CreateToken(NewToken { name, scope, sha256, worker_prefix, pool });
    match s.cluster.write(&caller.actor(), cmd).await?? {
        Reply::Token(t) => Ok((StatusCode::CREATED, Json(TokenCreated { token: TokenView::from(&t), secret }))),
        _ => Err(ApiError::internal("unexpected reply to token.create".to_string())),
    }
}

/// Revoke a token: it stops authenticating on every node as the entry applies.
#[utoipa::path(delete, path = "/api/tokens/{name}", tag = "tokens", params(("name" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses((status = 200, body = TokenView), (status = 400, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody), (status = 404, body = crate::openapi::ErrorBody), (status = 409, description = "the cluster format does not know tokens yet", body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn revoke(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TokenView>, ApiError> {
    validate_name("token name", &name)?;
    match s.cluster.write(&caller.actor(), Command::RevokeToken { name }).await?? {
        Reply::Token(t) => Ok(Json(TokenView::from(&t))),
        _ => Err(ApiError::internal("unexpected reply to token.revoke".to_string())),
    }
}
