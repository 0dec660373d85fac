//! Jobs, producer side (reference 004's paths): enqueue one or a batch,
//! read a job, its logs, the history with a stable cursor, and queue stats.
//! Enqueues are group-committed with workers' claims and finishes
//! ([`raft_store::job_commit`]); the job view is shared by every jobs route.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use model::state::job::{Backoff, Job, JobId, JobOp, JobReply, JobState, NewJob, MAX_ATTEMPTS, MAX_PAYLOAD_BYTES};
use model::state::validate_name;
use model::{CommandError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::AppState;
use model::views::parse_rfc3339;

/// Longest wait a claim may ask for (`wait_ms`).
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most jobs in one batch enqueue.
pub const MAX_BATCH: usize = 1_000;
/// Body limit of a single enqueue: the payload cap plus room for JSON escapes and the other fields.
pub const CREATE_BODY_LIMIT: usize = 4 * MAX_PAYLOAD_BYTES;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Default and largest page of the history.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// Most jobs one history page examines; a page cut short by it carries a
/// cursor to go on from, so a rare filter never holds the state lock long.
const MAX_SCAN: usize = 100_000;

/// A job as every jobs route shows it (the model's view).
pub use model::views::JobView;

pub fn view(job: &Job) -> JobView {
    JobView::from(job)
}

// ---- errors and ids ----

/// A refusal of a job op: the shared mapping, with a full queue as
/// `queue_full` (429) and an oversized payload as `payload_too_large` (413).
pub fn refused(e: CommandError) -> ApiError {
    match e.kind {
        ErrorKind::Limit => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.message),
        _ => e.into(),
    }
}

/// A `job_id` path segment: a decimal job id.
pub fn job_id(raw: &str) -> Result<JobId, ApiError> {
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::not_found(format!("job {raw:?} not found")));
    }
    raw.parse().map_err(|_| ApiError::not_found(format!("job {raw:?} not found")))
}

/// A body's `job_id`: the decimal string the API shows, or a number.
pub fn body_job_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<JobId, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(D::Error::custom)
        }
        Value::Number(n) if n.as_u64().is_some() => Ok(n.as_u64().expect("checked")),
        other => Err(D::Error::custom(format!("job_id must be a decimal job id, got {other}"))),
    }
}

pub(crate) fn not_found(id: JobId) -> ApiError {
    ApiError::not_found(format!("job {id} not found"))
}

// ---- enqueue ----

/// A job to enqueue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub queue: String,
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub kind: String,
    /// A JSON object, at most 64 KiB as compact text (413 past it). Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object, nullable)]
    pub payload: Option<Value>,
    /// Higher first; equal priorities in enqueue order. Default 0.
    #[serde(default, deserialize_with = "crate::extract::whole_i32")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub priority: i32,
    /// Only workers of this pool may claim it.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub pool: Option<String>,
    /// A repeat with the same key answers the existing job (200, not 201)
    /// for as long as the job is kept (`JOB_RETENTION_SECONDS`).
    /// At most 64 characters (256 bytes), no control characters.
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    pub idempotency_key: Option<String>,
    /// 1..=100, default 3.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// RFC 3339; not claimable before.
    #[schema(format = DateTime)]
    pub run_after: Option<String>,
    /// Retry delay: `min(backoff_max_ms, backoff_base_ms·2^(attempt-1))`,
    /// with jitter. Default 1,000 and 300,000.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 1, maximum = 86400000)]
    pub backoff_base_ms: Option<u64>,
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 1, maximum = 86400000)]
    pub backoff_max_ms: Option<u64>,
}

const DAY_MS: u64 = 86_400_000;

impl CreateJob {
    /// Validate into an `Enqueue` op; every refusal is a 4xx and nothing is stored.
    pub fn into_new_job(self) -> Result<NewJob, ApiError> {
        validate_name("queue", &self.queue)?;
        validate_name("kind", &self.kind)?;
        if let Some(p) = &self.pool {
            validate_name("pool", p)?;
        }
        let payload = match self.payload {
            Some(v) if !v.is_object() => return Err(ApiError::bad_request("payload must be a JSON object")),
            Some(v) => serde_json::to_string(&v).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => "{}".to_string(),
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("payload is {} bytes as compact JSON; the cap is {MAX_PAYLOAD_BYTES}", payload.len()),
            ));
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.chars().count() > 64 || k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "idempotency_key must be 1-64 characters ({MAX_KEY_LEN} bytes at most) without control characters"
                )));
            }
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ApiError::bad_request(format!("max_attempts must be 1..={MAX_ATTEMPTS}")));
        }
        let run_after_ms = match &self.run_after {
            Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
                ApiError::bad_request(format!("run_after {t:?} is not an RFC 3339 time (like 2026-12-01T16:41:07Z)"))
            })?),
            None => None,
        };
        // The model refuses a start more than a year ahead; a time any
        // schema allows is not malformed, so this is a conflict with that
        // rule (409), checked here with a minute's margin for clock skew.
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if run_after_ms.is_some_and(|t| t > now_ms.saturating_add(model::state::job::MAX_DELAY_MS - 60_000)) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "run_after_too_far",
                "run_after may be at most a year ahead (366 days)",
            ));
        }
        let base_ms = self.backoff_base_ms.unwrap_or(1_000);
        let max_ms = self.backoff_max_ms.unwrap_or(300_000).max(base_ms);
        if base_ms == 0 || self.backoff_max_ms == Some(0) || max_ms > DAY_MS {
            return Err(ApiError::bad_request("backoff_base_ms and backoff_max_ms must be 1..=86400000"));
        }
        Ok(NewJob {
            queue: self.queue,
            kind: self.kind,
            payload,
            priority: self.priority,
            pool: self.pool,
            run_after_ms,
            idempotency_key: self.idempotency_key,
            max_attempts,
            backoff: Backoff { base_ms, max_ms },
        })
    }
}

/// An enqueue's answer: the job, 201 when created, 200 for an idempotent repeat.
pub(crate) fn enqueued(reply: JobReply) -> Result<(StatusCode, Json<JobView>), ApiError> {
    match reply {
        JobReply::Enqueued { job, created } => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(view(&job))))
        }
        other => Err(ApiError::internal(format!("unexpected reply to an enqueue: {other:?}"))),
    }
}

/// Enqueue one job; the answer is the job with its `job_id`.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = CreateJob, responses(
    (status = 201, description = "created", body = JobView),
    (status = 200, description = "an existing job with this idempotency key; nothing changed", body = JobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "the cluster format does not know jobs yet, or `run_after_too_far`: `run_after` more than a year ahead", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`: body over 256 KiB or payload over 64 KiB", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 429, description = "`queue_full`: the queue's cap on queued jobs, or the cluster's on jobs", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = body.into_new_job()?;
    let reply = s.jobs.submit(JobOp::Enqueue(job)).await.map_err(batch_refused)?;
    enqueued(reply)
}

/// A group commit's failure, a job op's refusal mapped like [`refused`].
pub fn batch_refused(e: raft_store::group_commit::BatchError) -> ApiError {
    match e {
        raft_store::group_commit::BatchError::Command(c) => refused(c),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1..=1000 jobs; together within half the Raft entry limit
    /// (`ENGINE_MAX_ENTRY_BYTES`/2, 4 MiB by default), 413 past it.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<CreateJob>,
}

/// One job of a batch: its status as a single enqueue would have answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// 201 created, 200 an existing job with the key, 4xx refused.
    pub status: u16,
    pub job: Option<JobView>,
    pub error: Option<crate::openapi::ErrorDetail>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// In the order sent.
    pub results: Vec<BatchItem>,
    pub created: usize,
}

/// Enqueue up to 1,000 jobs in one Raft entry. Every job is validated
/// first: one invalid job refuses the batch (400 naming it) and nothing is
/// stored. Caps are checked per job, in order (a full queue refuses the
/// rest of its jobs with 429 in `results`).
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = BatchBody, responses(
    (status = 201, description = "at least one job created", body = BatchAnswer),
    (status = 200, description = "no job created (repeats or refusals, see results)", body = BatchAnswer),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "the cluster format does not know jobs yet, or `run_after_too_far`: `run_after` more than a year ahead", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`: body over half of ENGINE_MAX_ENTRY_BYTES, or a payload over 64 KiB", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn batch(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<(StatusCode, Json<BatchAnswer>), ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!("jobs must hold 1..={MAX_BATCH} jobs")));
    }
    let mut ops = Vec::with_capacity(body.jobs.len());
    for (i, j) in body.jobs.into_iter().enumerate() {
        let job = j.into_new_job().map_err(|e| ApiError::new(e.status, e.code, format!("jobs[{i}]: {}", e.message)))?;
        ops.push(JobOp::Enqueue(job));
    }
    let answers = s.jobs.submit_all(ops).await?;
    let mut created = 0;
    let mut results = Vec::with_capacity(answers.len());
    for a in answers {
        results.push(match a.map_err(refused).and_then(enqueued) {
            Ok((status, Json(job))) => {
                created += usize::from(status == StatusCode::CREATED);
                BatchItem { status: status.as_u16(), job: Some(job), error: None }
            }
            Err(e) => BatchItem {
                status: e.status.as_u16(),
                job: None,
                error: Some(crate::openapi::ErrorDetail { code: e.code.to_string(), message: e.message }),
            },
        });
    }
    let status = if created > 0 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(BatchAnswer { results, created })))
}

// ---- reads ----

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistentOnly {
    /// Wait for a linearizable read.
    #[serde(default)]
    pub consistent: bool,
}

/// One job with its attempts and lease.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path, description = "decimal job id", pattern = "^[0-9]{1,19}$"), ConsistentOnly), responses(
    (status = 200, body = JobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn get(
    State(s): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsistentOnly>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&raw)?;
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let applied = s.cluster.state.read();
    applied.state.jobs.by_id.get(&id).map(|j| Json(view(j))).ok_or_else(|| not_found(id))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[param(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    pub queue: Option<String>,
    pub state: Option<JobState>,
    #[param(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    pub kind: Option<String>,
    /// Jobs this worker ran (any attempt kept).
    #[param(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
    pub worker: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page: jobs with a smaller id come next.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    #[serde(default)]
    pub consistent: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest (highest id) first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null at the end. Ids only grow,
    /// so a page never repeats or skips a job that moves meanwhile.
    pub next_cursor: Option<String>,
    pub limit: usize,
}

/// A filter of the history, checked.
pub(crate) struct Filter {
    pub queue: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub worker: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl Filter {
    pub(crate) fn matches(&self, j: &Job) -> bool {
        self.queue.as_deref().is_none_or(|q| j.queue == q)
            && self.state.is_none_or(|s| j.state == s)
            && self.kind.as_deref().is_none_or(|k| j.kind == k)
            && self.since.is_none_or(|t| j.created_ms >= t)
            && self.until.is_none_or(|t| j.created_ms < t)
            && self.worker.as_deref().is_none_or(|w| {
                j.lease.as_ref().is_some_and(|l| l.worker == w) || j.attempts.iter().any(|a| a.worker == w)
            })
    }
}

fn time_param(name: &str, v: &Option<String>) -> Result<Option<u64>, ApiError> {
    v.as_deref()
        .map(|t| parse_rfc3339(t).ok_or_else(|| ApiError::bad_request(format!("{name} {t:?} is not an RFC 3339 time"))))
        .transpose()
}

/// One page of `jobs` (newest first, ids below `cursor`), at most `limit`.
pub(crate) fn page(
    jobs: &BTreeMap<JobId, Box<Job>>,
    f: &Filter,
    cursor: Option<JobId>,
    limit: usize,
) -> (Vec<JobView>, Option<JobId>) {
    let mut out = Vec::with_capacity(limit.min(64));
    for (scanned, (id, j)) in jobs.range(..cursor.unwrap_or(JobId::MAX)).rev().enumerate() {
        if scanned == MAX_SCAN {
            // Cut short: go on from here.
            return (out, Some(*id + 1));
        }
        if f.matches(j) {
            out.push(view(j));
            if out.len() == limit {
                let more = jobs.range(..*id).next_back().is_some();
                return (out, more.then_some(*id));
            }
        }
    }
    (out, None)
}

/// The history: every job kept, newest first, filtered, paged by cursor.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(HistoryQuery), responses(
    (status = 200, body = JobPage),
    (status = 400, description = "a bad or unknown query parameter", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<HistoryQuery>) -> Result<Json<JobPage>, ApiError> {
    for (what, v) in [("queue", &q.queue), ("kind", &q.kind), ("worker", &q.worker)] {
        if let Some(v) = v {
            validate_name(what, v)?;
        }
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}")));
    }
    let cursor = match &q.cursor {
        Some(c) => Some(job_id(c).map_err(|_| ApiError::bad_request(format!("cursor {c:?} is not a job id")))?),
        None => None,
    };
    let f = Filter {
        since: time_param("since", &q.since)?,
        until: time_param("until", &q.until)?,
        queue: q.queue,
        state: q.state,
        kind: q.kind,
        worker: q.worker,
    };
    if q.consistent {
        s.cluster.read_barrier().await?;
    }
    let applied = s.cluster.state.read();
    let (jobs, next) = page(&applied.state.jobs.by_id, &f, cursor, limit);
    Ok(Json(JobPage { jobs, next_cursor: next.map(|n| n.to_string()), limit }))
}

/// `GET /health`, reference 004's probe: open, `ok` while the Raft core runs.
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, body = crate::openapi::Live), (status = 503, description = "the Raft core has stopped", body = crate::openapi::Live)))]
pub async fn health(s: State<AppState>) -> (StatusCode, Json<crate::openapi::Live>) {
    crate::routes::health::live(s).await
}

// ---- logs ----

/// One stored log line.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogLineView {
    pub job_id: String,
    /// Where the line sits (`index-op-line`); pass as `after` to read on.
    pub id: String,
    /// When the entry that carried it was accepted.
    pub at: String,
    pub text: String,
}

fn line_view(l: raft_store::state_machine::job_logs::LogLine) -> LogLineView {
    LogLineView { job_id: l.job_id.to_string(), id: l.id.to_string(), at: model::views::rfc3339(l.at_ms), text: l.text }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The last `id` read: lines after it come next.
    #[param(pattern = "^[0-9]{1,19}-[0-9]{1,9}-[0-9]{1,9}$")]
    pub after: Option<String>,
    /// Default 200, at most 1,000.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub job_id: String,
    /// Oldest first.
    pub lines: Vec<LogLineView>,
    /// Pass as `after` for more; null when this page was not full.
    pub next_after: Option<String>,
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("the job log store could not be read: {e}"))
}

/// A job's log lines, oldest first, paged by the last line's id.
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/logs", tag = "jobs", params(("job_id" = String, Path, description = "decimal job id", pattern = "^[0-9]{1,19}$"), LogsQuery), responses(
    (status = 200, body = LogPage),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn logs(
    State(s): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Json<LogPage>, ApiError> {
    use raft_store::state_machine::job_logs::{LineId, MAX_READ};
    let id = job_id(&raw)?;
    let limit = q.limit.unwrap_or(200);
    if !(1..=MAX_READ).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={MAX_READ}")));
    }
    let after = match &q.after {
        Some(a) => {
            Some(a.parse::<LineId>().map_err(|()| ApiError::bad_request(format!("after {a:?} is not a line id")))?)
        }
        None => None,
    };
    if s.cluster.state.read().state.jobs.get(id).is_none() {
        return Err(not_found(id));
    }
    let store = s.cluster.job_logs.clone();
    let lines = tokio::task::spawn_blocking(move || store.lines(id, after, limit))
        .await
        .map_err(store_error)?
        .map_err(store_error)?;
    let next_after = (lines.len() == limit).then(|| lines.last().map(|l| l.id.to_string())).flatten();
    Ok(Json(LogPage { job_id: id.to_string(), lines: lines.into_iter().map(line_view).collect(), next_after }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Text to find (ASCII case-insensitive), 1-256 bytes.
    #[param(min_length = 1, max_length = 256)]
    pub q: String,
    /// Default 50, at most 500.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchAnswer {
    /// Newest job first.
    pub lines: Vec<LogLineView>,
    /// False when the search stopped at its time bound (1 s) or its limit
    /// before the end of the store.
    pub complete: bool,
    pub scanned: u64,
}

/// Search the stored job logs, bounded in time (1 s) and results.
#[utoipa::path(get, path = "/api/jobs/logs/search", tag = "jobs", params(SearchQuery), responses(
    (status = 200, body = SearchAnswer),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn search(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Result<Json<SearchAnswer>, ApiError> {
    if q.q.is_empty() || q.q.len() > 256 {
        return Err(ApiError::bad_request("q must be 1-256 bytes"));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1..=500"));
    }
    let store = s.cluster.job_logs.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let hits = tokio::task::spawn_blocking(move || store.search(&q.q, limit, deadline))
        .await
        .map_err(store_error)?
        .map_err(store_error)?;
    Ok(Json(SearchAnswer {
        lines: hits.lines.into_iter().map(line_view).collect(),
        complete: hits.complete,
        scanned: hits.scanned,
    }))
}
