//! The build farm's blobs (reference 003's `/plan`, `/manifest`,
//! `/artifacts`, `/logs`): the worker posts the build plan, the manifest and
//! build log lines; each plan or manifest is a new version (20 kept) with
//! its SHA-256. The bytes live in the node's blob store (raft-store's
//! `farm_blobs`), written when the entry is applied and carried by
//! snapshots; the state holds their metadata.

use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::farm::{BlobKind, FarmOp, FarmReply, LogChunk, LogRetention, MAX_BLOB_BYTES, MAX_CHUNK_LINES};
use model::views::{parse_rfc3339, rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::farm::{check_package, write};
use crate::AppState;

/// Body limit of `POST /plan` and `/manifest`: room for JSON whitespace
/// around a 1 MiB document (the cap applies to its compact text).
pub const BLOB_BODY_LIMIT: usize = 2 * MAX_BLOB_BYTES;
/// Body limit of a log chunk: 1,000 lines of 4 KiB, with escapes.
pub const LOG_BODY_LIMIT: usize = 6 << 20;
/// How long a log search may scan.
const SEARCH_BUDGET: Duration = Duration::from_secs(2);

/// A plan or manifest as posted: any JSON object.
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = Object)]
pub struct Document(pub Value);

/// One version of a plan or manifest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BlobView {
    pub version: u64,
    /// Lower-case hex SHA-256 of the compact JSON text.
    pub sha256: String,
    pub size: u64,
    /// RFC 3339: when it was posted.
    pub at: String,
    /// The document as posted (compact); absent in a post's answer.
    #[schema(value_type = Object)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
    /// Versions kept, oldest first.
    pub versions: Vec<u64>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A kept version; default the latest.
    #[param(minimum = 1, maximum = 999999999)]
    pub version: Option<u64>,
}

/// Largest `version` and `from` accepted (the documented maximum).
const MAX_NUMBER: u64 = 999_999_999;

fn read_blob(s: &AppState, kind: BlobKind, version: Option<u64>) -> Result<BlobView, ApiError> {
    if version.is_some_and(|v| v == 0 || v > MAX_NUMBER) {
        return Err(ApiError::bad_request(format!("version must be 1..={MAX_NUMBER}")));
    }
    let (meta, versions) = {
        let applied = s.cluster.state.read();
        let farm = &applied.state.farm;
        let meta = match version {
            Some(v) => farm.blob_version(kind, v),
            None => farm.latest(kind),
        };
        let versions = farm.blobs.get(&kind).map(|v| v.iter().map(|b| b.version).collect()).unwrap_or_default();
        (meta.cloned(), versions)
    };
    let what = kind.as_str();
    let meta = meta.ok_or_else(|| match version {
        Some(v) => ApiError::not_found(format!("{what} version {v} not found (kept: {versions:?})")),
        None => ApiError::not_found(format!("no {what} posted yet")),
    })?;
    let body = s
        .cluster
        .farm_blobs
        .blob(kind, meta.version)
        .map_err(|e| ApiError::internal(e.to_string()))?
        // Applied here but not yet in the store: a moment later it is.
        .ok_or_else(|| ApiError::unavailable(format!("{what} version {} is being stored; retry", meta.version)))?;
    let document = serde_json::from_slice(&body).map_err(|e| ApiError::internal(format!("stored {what}: {e}")))?;
    Ok(BlobView {
        version: meta.version,
        sha256: meta.sha256,
        size: meta.size,
        at: rfc3339(meta.at_ms),
        document: Some(document),
        versions,
    })
}

async fn post_blob(s: &AppState, caller: &Caller, kind: BlobKind, doc: Value) -> Result<BlobView, ApiError> {
    if !doc.is_object() {
        return Err(ApiError::bad_request(format!("the {} must be a JSON object", kind.as_str())));
    }
    let body = doc.to_string();
    if body.len() > MAX_BLOB_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the {} is {} bytes as compact JSON; the cap is {MAX_BLOB_BYTES}", kind.as_str(), body.len()),
        ));
    }
    match write(s, &caller.actor(), FarmOp::PutBlob { kind, body }).await? {
        FarmReply::Blob { meta, dropped, .. } => {
            // This node may not have applied the entry yet: its versions,
            // as the reply says they are now.
            let applied = s.cluster.state.read();
            let kept = applied.state.farm.blobs.get(&kind).into_iter().flatten().map(|b| b.version);
            let mut versions: Vec<u64> = kept.filter(|v| *v < meta.version && !dropped.contains(v)).collect();
            versions.push(meta.version);
            Ok(BlobView {
                version: meta.version,
                sha256: meta.sha256,
                size: meta.size,
                at: rfc3339(meta.at_ms),
                document: None,
                versions,
            })
        }
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// A blob body: a JSON object (bodies past 2 MiB are refused with 413).
fn blob_body(body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|r| {
        ApiError::new(r.status(), "payload_too_large", format!("request body is larger than {BLOB_BODY_LIMIT} bytes"))
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

/// The build plan (latest, or `?version=`).
#[utoipa::path(get, path = "/plan", tag = "farm", params(VersionQuery), responses(
    (status = 200, body = BlobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, description = "none posted, or that version is not kept", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn plan(State(s): State<AppState>, ApiQuery(q): ApiQuery<VersionQuery>) -> Result<Json<BlobView>, ApiError> {
    read_blob(&s, BlobKind::Plan, q.version).map(Json)
}

/// The worker posts the build plan graph: a JSON object of at most 1 MiB
/// (compact), kept as a new version.
#[utoipa::path(post, path = "/plan", tag = "farm", request_body(content = Document, description = "the plan graph, a JSON object"), responses(
    (status = 201, body = BlobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`: over 1 MiB as compact JSON", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn post_plan(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<BlobView>), ApiError> {
    json_content(&headers)?;
    let doc = blob_body(body)?;
    Ok((StatusCode::CREATED, Json(post_blob(&s, &caller, BlobKind::Plan, doc).await?)))
}

/// The manifest (latest, or `?version=`).
#[utoipa::path(get, path = "/manifest", tag = "farm", params(VersionQuery), responses(
    (status = 200, body = BlobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, description = "none posted, or that version is not kept", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn manifest(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<Json<BlobView>, ApiError> {
    read_blob(&s, BlobKind::Manifest, q.version).map(Json)
}

/// The worker posts the manifest: a JSON object of at most 1 MiB whose
/// `packages` (if any) list `{name, version, artifacts: [path or URL]}`.
#[utoipa::path(post, path = "/manifest", tag = "farm", request_body(content = Document, description = "the manifest, a JSON object"), responses(
    (status = 201, body = BlobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`: over 1 MiB as compact JSON", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn post_manifest(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<BlobView>), ApiError> {
    json_content(&headers)?;
    let doc = blob_body(body)?;
    Ok((StatusCode::CREATED, Json(post_blob(&s, &caller, BlobKind::Manifest, doc).await?)))
}

/// 415 unless the body is declared JSON.
fn json_content(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected content-type: application/json",
        ))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Artifact {
    pub package: String,
    pub version: String,
    /// Paths or links to the wheels, as the manifest gives them.
    pub links: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Artifacts {
    /// The manifest version read; null before any.
    pub manifest_version: Option<u64>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    #[param(pattern = "^[A-Za-z0-9._+!~-]{1,128}$")]
    pub package: Option<String>,
}

/// The artifacts of one manifest entry: `artifacts` (strings), or one
/// `artifact`, `path`, `url` or `wheel` string.
fn links(entry: &Value) -> Vec<String> {
    let mut out: Vec<String> = entry
        .get("artifacts")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for key in ["artifact", "path", "url", "wheel"] {
        out.extend(entry.get(key).and_then(Value::as_str).map(str::to_string));
    }
    out
}

/// Artifact links per package and version, from the latest manifest's
/// `packages` (entries naming `name` or `package`, and `version`).
#[utoipa::path(get, path = "/artifacts", tag = "farm", params(ArtifactQuery), responses(
    (status = 200, body = Artifacts),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn artifacts(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ArtifactQuery>,
) -> Result<Json<Artifacts>, ApiError> {
    if let Some(p) = &q.package {
        check_package("package", p)?;
    }
    let manifest = match read_blob(&s, BlobKind::Manifest, None) {
        Ok(m) => m,
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return Ok(Json(Artifacts { manifest_version: None, artifacts: Vec::new() }))
        }
        Err(e) => return Err(e),
    };
    let doc = manifest.document.unwrap_or_default();
    let entries = doc.get("packages").and_then(Value::as_array).cloned().unwrap_or_default();
    let artifacts = entries
        .iter()
        .filter_map(|e| {
            let package = e.get("name").or_else(|| e.get("package")).and_then(Value::as_str)?;
            let version = e.get("version").and_then(Value::as_str)?;
            Some(Artifact { package: package.into(), version: version.into(), links: links(e) })
        })
        .filter(|a| q.package.as_deref().is_none_or(|p| a.package == p))
        .collect();
    Ok(Json(Artifacts { manifest_version: Some(manifest.version), artifacts }))
}

// ---- build logs ----

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildLogLine {
    /// From 0 within the build's log.
    pub line: u64,
    /// RFC 3339: when it was posted.
    pub at: String,
    pub text: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildLogView {
    pub package: String,
    pub version: String,
    /// Lines the log holds.
    pub total_lines: u64,
    pub lines: Vec<BuildLogLine>,
    /// Pass as `from` for the next lines; null at the end.
    pub next_from: Option<u64>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// The last N lines (1-1000); overrides `from`.
    #[param(minimum = 1, maximum = 1000)]
    pub tail: Option<u64>,
    /// The first line to return (from 0); default 0.
    #[param(minimum = 0, maximum = 999999999)]
    pub from: Option<u64>,
    /// Lines to return, 1-1000; default 1000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A build's log: the whole (1,000 lines a page), a range (`from`,
/// `limit`), or its last lines (`tail`).
#[utoipa::path(get, path = "/logs/{name}/{version}", tag = "farm", params(
    ("name" = String, Path, pattern = "^[A-Za-z0-9._+!~-]{1,128}$"),
    ("version" = String, Path, pattern = "^[A-Za-z0-9._+!~-]{1,128}$"),
    LogQuery), responses(
    (status = 200, body = BuildLogView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, description = "no log stored for that build", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn log(
    State(s): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<BuildLogView>, ApiError> {
    let unknown = || ApiError::not_found(format!("no log stored for {name} {version}"));
    if check_package("name", &name).is_err() || check_package("version", &version).is_err() {
        return Err(unknown());
    }
    let limit = q.limit.unwrap_or(1_000);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=1000"));
    }
    if q.from.is_some_and(|f| f > MAX_NUMBER) {
        return Err(ApiError::bad_request(format!("from must be 0..={MAX_NUMBER}")));
    }
    if q.tail.is_some_and(|t| !(1..=1_000).contains(&t)) {
        return Err(ApiError::bad_request("tail must be 1..=1000"));
    }
    let total = {
        let applied = s.cluster.state.read();
        applied.state.farm.logs.get(&(name.clone(), version.clone())).map(|l| l.lines).ok_or_else(unknown)?
    };
    let (from, limit) = match q.tail {
        Some(t) => (total.saturating_sub(t), t as usize),
        None => (q.from.unwrap_or(0), limit),
    };
    let store = s.cluster.farm_blobs.clone();
    let (n, v) = (name.clone(), version.clone());
    let lines = tokio::task::spawn_blocking(move || store.lines(&n, &v, from, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let next_from = lines.last().map(|l| l.line + 1).filter(|n| *n < total && lines.len() == limit);
    let lines = lines.into_iter().map(|l| BuildLogLine { line: l.line, at: rfc3339(l.at_ms), text: l.text }).collect();
    Ok(Json(BuildLogView { package: name, version, total_lines: total, lines, next_from }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogChunkBody {
    /// 1-1000 lines, each at most 4 KiB (longer ones are cut at a
    /// character boundary).
    #[schema(min_items = 1, max_items = 1000)]
    pub lines: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogAppended {
    /// The number of the first line added.
    pub first_line: u64,
    /// Lines added; fewer than sent when the build's log (100,000 lines,
    /// 16 MiB) or the store (`BUILD_LOG_MAX_BYTES`) is full.
    pub accepted: u32,
}

/// The build worker appends lines to a build's log (while it builds and
/// at the end). Older logs go first when the store is over its
/// retention (`BUILD_LOG_RETENTION_DAYS`, `BUILD_LOG_MAX_BYTES`).
#[utoipa::path(post, path = "/logs/{name}/{version}", tag = "farm", params(
    ("name" = String, Path, pattern = "^[A-Za-z0-9._+!~-]{1,128}$"),
    ("version" = String, Path, pattern = "^[A-Za-z0-9._+!~-]{1,128}$")),
    request_body = LogChunkBody, responses(
    (status = 200, body = LogAppended),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 413, description = "body over 6 MiB", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn append_log(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<LogChunkBody>,
) -> Result<Json<LogAppended>, ApiError> {
    check_package("name", &name)?;
    check_package("version", &version)?;
    if b.lines.is_empty() || b.lines.len() > MAX_CHUNK_LINES {
        return Err(ApiError::bad_request(format!("lines must hold 1..={MAX_CHUNK_LINES} lines")));
    }
    let lines =
        b.lines.into_iter().map(|l| model::state::job::cut(&l, model::state::farm::MAX_LOG_LINE).to_string()).collect();
    let o = &s.job_options;
    let keep = LogRetention {
        max_age_ms: o.build_log_retention.as_millis().min(u128::from(u64::MAX)) as u64,
        max_bytes: o.build_log_max_bytes,
    };
    let chunk = LogChunk { package: name, version, lines, keep };
    match write(&s, &caller.actor(), FarmOp::AppendLog(chunk)).await? {
        FarmReply::Logged { first_line, accepted, .. } => Ok(Json(LogAppended { first_line, accepted })),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Text to find (case-insensitive for ASCII), 1-256 characters.
    #[param(min_length = 1, max_length = 256)]
    pub q: String,
    #[param(pattern = "^[A-Za-z0-9._+!~-]{1,128}$")]
    pub package: Option<String>,
    /// Lines posted at or after (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Hits to return, 1-500; default 100.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildLogHit {
    pub package: String,
    pub version: String,
    pub line: u64,
    /// RFC 3339.
    pub at: String,
    pub text: String,
    /// The lines before and after, within the same log.
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildLogSearch {
    /// By package, version and line.
    pub hits: Vec<BuildLogHit>,
    /// False when the search stopped at its limit or its 2 s budget.
    pub complete: bool,
    /// Lines looked at.
    pub scanned: u64,
}

/// Find lines across stored build logs.
#[utoipa::path(get, path = "/logs/search", tag = "farm", params(SearchQuery), responses(
    (status = 200, body = BuildLogSearch),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn search(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<BuildLogSearch>, ApiError> {
    if q.q.is_empty() || q.q.chars().count() > 256 {
        return Err(ApiError::bad_request("q must be 1-256 characters"));
    }
    if let Some(p) = &q.package {
        check_package("package", p)?;
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=500"));
    }
    let since = match &q.since {
        Some(t) => {
            parse_rfc3339(t).ok_or_else(|| ApiError::bad_request(format!("since {t:?} is not an RFC 3339 time")))?
        }
        None => 0,
    };
    let store = s.cluster.farm_blobs.clone();
    let deadline = Instant::now() + SEARCH_BUDGET;
    let found = tokio::task::spawn_blocking(move || store.search(&q.q, q.package.as_deref(), since, limit, deadline))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let hits = found
        .hits
        .into_iter()
        .map(|h| BuildLogHit {
            package: h.line.package,
            version: h.line.version,
            line: h.line.line,
            at: rfc3339(h.line.at_ms),
            text: h.line.text,
            before: h.before,
            after: h.after,
        })
        .collect();
    Ok(Json(BuildLogSearch { hits, complete: found.complete, scanned: found.scanned }))
}
