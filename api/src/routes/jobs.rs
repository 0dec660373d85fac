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
use crate::rfc3339;
use crate::AppState;

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

// ---- the job view ----

/// A job's lease as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LeaseView {
    pub worker_id: String,
    /// Opaque; present it to renew, complete or fail.
    pub lease_token: String,
    pub lease_expires_at: String,
}

/// One attempt: who ran it, when, and how it ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub worker_id: String,
    pub claimed_at: String,
    pub ended_at: Option<String>,
    /// `running`, `succeeded`, `failed`, `expired` or `cancelled`.
    pub outcome: String,
    pub error: Option<String>,
    pub retryable: Option<bool>,
}

/// A job. Times are RFC 3339 (UTC).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// Decimal.
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub priority: i32,
    pub pool: Option<String>,
    pub state: JobState,
    /// Attempts started since the job was (re)queued.
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease: Option<LeaseView>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub progress: Option<String>,
    pub idempotency_key: Option<String>,
    /// Claimable from then on (queued, or failed waiting for its retry).
    pub run_after: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub log_lines: u32,
    /// Newest last; the last 20 are kept.
    pub attempt_history: Vec<AttemptView>,
}

/// JSON text the cluster holds (validated by the API when it came in).
fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub fn view(job: &Job) -> JobView {
    use model::state::job::AttemptOutcome as O;
    JobView {
        job_id: job.id.to_string(),
        queue: job.queue.clone(),
        kind: job.kind.clone(),
        payload: json_of(&job.payload),
        priority: job.priority,
        pool: job.pool.clone(),
        state: job.state,
        attempts: job.attempt_count,
        max_attempts: job.max_attempts,
        lease: job.lease.as_ref().map(|l| LeaseView {
            worker_id: l.worker.clone(),
            lease_token: l.token.to_string(),
            lease_expires_at: rfc3339::format(l.expires_ms),
        }),
        result: job.result.as_deref().map(json_of),
        error: job.error.clone(),
        progress: job.progress.clone(),
        idempotency_key: job.idempotency_key.clone(),
        run_after: rfc3339::format(job.run_after_ms),
        created_at: rfc3339::format(job.created_ms),
        updated_at: rfc3339::format(job.updated_ms),
        finished_at: job.finished_ms.map(rfc3339::format),
        log_lines: job.log_lines,
        attempt_history: job
            .attempts
            .iter()
            .map(|a| {
                let (outcome, error, retryable) = match &a.outcome {
                    O::Running => ("running", None, None),
                    O::Succeeded => ("succeeded", None, None),
                    O::Failed { error, retryable } => ("failed", Some(error.clone()), Some(*retryable)),
                    O::Expired => ("expired", None, None),
                    O::Cancelled => ("cancelled", None, None),
                };
                AttemptView {
                    attempt: a.n,
                    worker_id: a.worker.clone(),
                    claimed_at: rfc3339::format(a.claimed_ms),
                    ended_at: a.ended_ms.map(rfc3339::format),
                    outcome: outcome.to_string(),
                    error,
                    retryable,
                }
            })
            .collect(),
    }
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
    /// Any JSON, at most 64 KiB as compact text (413 past it). Default `{}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
    /// Higher first; equal priorities in enqueue order. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Only workers of this pool may claim it.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub pool: Option<String>,
    /// A repeat with the same key answers the existing job (200, not 201)
    /// for as long as the job is kept (`JOB_RETENTION_SECONDS`).
    #[schema(min_length = 1, max_length = 256)]
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
            if k.is_empty() || k.len() > MAX_KEY_LEN || k.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "idempotency_key must be 1-{MAX_KEY_LEN} bytes without control characters"
                )));
            }
        }
        let max_attempts = self.max_attempts.unwrap_or(3);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(ApiError::bad_request(format!("max_attempts must be 1..={MAX_ATTEMPTS}")));
        }
        let run_after_ms = match &self.run_after {
            Some(t) => Some(rfc3339::parse(t).ok_or_else(|| {
                ApiError::bad_request(format!("run_after {t:?} is not an RFC 3339 time (like 2026-12-01T16:41:07Z)"))
            })?),
            None => None,
        };
        let base_ms = self.backoff_base_ms.unwrap_or(1_000);
        let max_ms = self.backoff_max_ms.unwrap_or(300_000).max(base_ms);
        if base_ms == 0 || max_ms > DAY_MS {
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
    (status = 409, description = "the cluster format does not know jobs yet", body = crate::openapi::ErrorBody),
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
    (status = 409, description = "the cluster format does not know jobs yet", body = crate::openapi::ErrorBody),
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
#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", tag = "jobs", params(("job_id" = String, Path, description = "decimal job id", pattern = "^[0-9]{1,20}$"), ConsistentOnly), responses(
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
    #[param(pattern = "^[0-9]{1,20}$")]
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
        .map(|t| {
            rfc3339::parse(t).ok_or_else(|| ApiError::bad_request(format!("{name} {t:?} is not an RFC 3339 time")))
        })
        .transpose()
}

/// One page of `jobs` (newest first, ids below `cursor`), at most `limit`.
pub(crate) fn page(
    jobs: &BTreeMap<JobId, Job>,
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
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = crate::openapi::Live), (status = 503, description = "the Raft core has stopped", body = crate::openapi::Live)))]
pub async fn health(s: State<AppState>) -> (StatusCode, Json<crate::openapi::Live>) {
    crate::routes::health::live(s).await
}
