//! The worker contract: claim (with long poll), renew (`heartbeat`, with
//! progress and log lines), complete and fail. Every call is group-committed
//! with the others arriving at once and answered once applied. A claim's
//! lease is fenced: renew, complete and fail must present the current
//! `lease_token`, or get 409 `lease_lost` and change nothing.

use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use model::state::job::{
    Claim, Finish, JobId, JobOp, JobReply, LeaseToken, Renew, MAX_CLAIM, MAX_CLAIM_QUEUES, MAX_ERROR_BYTES,
    MAX_LOG_LINE, MAX_PAYLOAD_BYTES, MAX_PROGRESS_BYTES,
};
use model::state::{validate_name, ControlState, DesiredState};
use raft_store::cluster::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::jobs::{batch_refused, body_job_id, view, JobView, MAX_WAIT_MS};
use crate::AppState;

/// Most log lines one renew, complete or fail carries.
pub const MAX_LINES_PER_CALL: usize = 1_000;
/// Body limit of renew, complete and fail: a result, an error and log lines.
pub const WORKER_BODY_LIMIT: usize = 2 * MAX_PAYLOAD_BYTES + MAX_LINES_PER_CALL * 64 + (1 << 20);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub worker_id: String,
    /// 1..=16 queues, in preference order.
    #[schema(min_items = 1, max_items = 16, value_type = Vec<QueueName>)]
    pub queues: Vec<String>,
    /// 1..=100, default 1.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_jobs: Option<u32>,
    /// Long poll: with nothing to claim, wait up to this long (0..=30,000 ms,
    /// default 0) for a job to arrive. The answer comes at the latest
    /// ENGINE_REQUEST_TIMEOUT_MS − ENGINE_WRITE_TIMEOUT_MS − 1 s after the
    /// request (24 s by default), with an empty list if nothing came.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 0, maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// Check the credential and the request, claim nothing, answer `{"jobs": []}`.
    #[serde(default)]
    pub dry_run: bool,
    /// The worker's pool, for a pool-bound token when the cluster does not
    /// know the worker yet (no heartbeat so far); a known worker's pool is
    /// the one its heartbeats recorded.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub pool: Option<String>,
}

/// A claimed job: what the worker needs to run it and to keep its lease.
pub use model::views::ClaimedJob;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimAnswer {
    /// Empty when nothing was claimable (or within `wait_ms`).
    pub jobs: Vec<ClaimedJob>,
    /// How often to renew each lease (`WORKER_HEARTBEAT_INTERVAL_SECONDS`).
    pub heartbeat_interval_seconds: u64,
}

/// May this worker get jobs? A worker the cluster knows must be running and
/// not quarantined (apply checks the desired state too).
fn worker_may_claim(state: &ControlState, worker: &str) -> bool {
    state.workers.get(worker).is_none_or(|w| w.desired_state == DesiredState::Running && !w.quarantined)
}

/// Does one of `queues` hold a pending job (queued, or failed waiting for
/// its retry) and is it not paused? From the indices.
fn pending(state: &ControlState, queues: &[String]) -> bool {
    let jobs = &state.jobs;
    queues.iter().any(|q| !jobs.queues.get(q).is_some_and(|c| c.paused) && jobs.pending_in(q) > 0)
}

/// Check a claim's queues, `max_jobs` and pool, and that the caller's token
/// may act for the worker (a worker token acts only for its workers and
/// pool, as in heartbeats); answers `max_jobs` with its default.
fn check_claim(
    s: &AppState,
    caller: &Caller,
    worker: &str,
    queues: &[String],
    max_jobs: Option<u32>,
    pool: Option<&str>,
) -> Result<u32, ApiError> {
    if queues.is_empty() || queues.len() > MAX_CLAIM_QUEUES {
        return Err(ApiError::bad_request(format!("queues must name 1..={MAX_CLAIM_QUEUES} queues")));
    }
    for q in queues {
        validate_name("queue", q)?;
    }
    if let Some(p) = pool {
        validate_name("pool", p)?;
    }
    let max_jobs = max_jobs.unwrap_or(1);
    if !(1..=MAX_CLAIM).contains(&max_jobs) {
        return Err(ApiError::bad_request(format!("max_jobs must be 1..={MAX_CLAIM}")));
    }
    let known_pool = s.cluster.state.read().state.workers.get(worker).map(|w| w.pool.to_string());
    caller.check_worker(worker, known_pool.as_deref().or(pool))?;
    Ok(max_jobs)
}

/// Claim up to `max_jobs` jobs, committed through Raft before the answer;
/// with `wait_ms`, wait for one to arrive (woken by applied entries that
/// change the jobs, never by polling).
#[utoipa::path(post, path = "/internal/worker/claim", tag = "jobs", request_body = ClaimBody, responses(
    (status = 415, description = "the body is not `application/json`", body = crate::openapi::ErrorBody),
    (status = 200, body = ClaimAnswer),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 403, description = "a worker token bound to other workers or another pool", body = crate::openapi::ErrorBody),
    (status = 409, description = "the cluster format does not know jobs yet", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn claim(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Json<ClaimAnswer>, ApiError> {
    let started = Instant::now();
    validate_name("worker_id", &body.worker_id)?;
    let max_jobs = check_claim(&s, &caller, &body.worker_id, &body.queues, body.max_jobs, body.pool.as_deref())?;
    let wait_ms = body.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(format!("wait_ms must be 0..={MAX_WAIT_MS}")));
    }
    let interval = s.job_options.heartbeat_interval.as_secs();
    if body.dry_run {
        return Ok(Json(ClaimAnswer { jobs: Vec::new(), heartbeat_interval_seconds: interval }));
    }
    let deadline = started + Duration::from_millis(wait_ms).min(s.job_options.max_claim_wait);
    let lease_ms = s.job_options.lease_ttl.as_millis() as u64;
    let mut wake = s.job_wake.subscribe();
    // Look before proposing: a claim is proposed at once, and afterwards
    // only when the jobs changed since the last empty claim (or a delayed
    // job fell due) and one is pending, so a waiting claim costs no Raft
    // entry until there is something to take.
    let (mut first, mut proposed_at, mut due_passed, mut due) = (true, None, false, None);
    loop {
        let generation = *wake.borrow_and_update();
        let (may, any) = {
            let applied = s.cluster.state.read();
            (worker_may_claim(&applied.state, &body.worker_id), pending(&applied.state, &body.queues))
        };
        if may && (first || (any && (proposed_at != Some(generation) || due_passed))) {
            (proposed_at, due_passed) = (Some(generation), false);
            let op = JobOp::Claim(Claim {
                worker: body.worker_id.clone(),
                queues: body.queues.clone(),
                max_jobs,
                lease_ms,
                nonce: rand::random(),
            });
            let reply = s.jobs.submit(op).await.map_err(batch_refused)?;
            let JobReply::Claimed { jobs } = reply else {
                return Err(ApiError::internal(format!("unexpected reply to a claim: {reply:?}")));
            };
            if !jobs.is_empty() {
                s.metrics.job_claim_seconds.observe(started.elapsed().as_secs_f64());
                let jobs = jobs.iter().filter_map(ClaimedJob::of).collect();
                return Ok(Json(ClaimAnswer { jobs, heartbeat_interval_seconds: interval }));
            }
            // Nothing for us though some are pending: delayed ones, or
            // another pool's. Wake at the next due time too.
            let now = now_ms();
            due = if any {
                s.cluster
                    .state
                    .read()
                    .state
                    .jobs
                    .next_due(&body.queues, now)
                    .map(|d| Instant::now() + Duration::from_millis(d - now))
            } else {
                None
            };
        }
        first = false;
        if Instant::now() >= deadline {
            return Ok(Json(ClaimAnswer { jobs: Vec::new(), heartbeat_interval_seconds: interval }));
        }
        // Sleep until the jobs change, a delayed job falls due, or time is up.
        let until = due.map_or(deadline, |d: Instant| d.min(deadline));
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    return Err(ApiError::unavailable("the node is shutting down"));
                }
            }
            () = tokio::time::sleep_until(until.into()) => {
                due_passed = due.is_some_and(|d| d <= Instant::now());
                if due_passed {
                    due = None;
                }
            }
        }
    }
}

/// A lease token as sent; a malformed one cannot be current.
fn lease(raw: &str) -> Result<LeaseToken, ApiError> {
    raw.parse::<LeaseToken>().map_err(|_| {
        ApiError::new(StatusCode::CONFLICT, "lease_lost", "lease_token is not a current lease of this job")
    })
}

/// Log lines as a worker sends them: at most [`MAX_LINES_PER_CALL`], each
/// cut to [`MAX_LOG_LINE`] bytes at a char boundary.
fn log_lines(lines: Vec<String>) -> Result<Vec<String>, ApiError> {
    if lines.len() > MAX_LINES_PER_CALL {
        return Err(ApiError::bad_request(format!("at most {MAX_LINES_PER_CALL} log lines per call")));
    }
    Ok(lines
        .into_iter()
        .map(|mut l| {
            if l.len() > MAX_LOG_LINE {
                let mut end = MAX_LOG_LINE;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                l.truncate(end);
            }
            l
        })
        .collect())
}

fn text_cap(what: &str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    if v.as_ref().is_some_and(|t| t.len() > max) {
        return Err(ApiError::bad_request(format!("{what} is longer than {max} bytes")));
    }
    Ok(())
}

/// A renewal: the lease, and optionally progress and log lines.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    #[serde(deserialize_with = "body_job_id")]
    #[schema(value_type = String, pattern = "^[0-9]{1,19}$")]
    pub job_id: JobId,
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub worker_id: String,
    #[schema(max_length = 64)]
    pub lease_token: String,
    /// Free text, at most 1 KiB.
    #[schema(max_length = 1024)]
    pub progress: Option<String>,
    /// Appended to the job's log; at most 1,000 lines, each cut at 4 KiB.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub logs: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Renewed {
    pub job_id: String,
    pub lease_expires_at: String,
    /// Lines kept, from the front; fewer than sent once the job's log is full.
    pub logs_accepted: u32,
}

/// A queue's name (as the document shows a claim's `queues`).
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$")]
#[allow(dead_code)]
pub struct QueueName(String);

/// Renew a lease (the job's heartbeat), with progress and log lines.
#[utoipa::path(post, path = "/internal/worker/heartbeat", tag = "jobs", request_body = RenewBody, responses(
    (status = 415, description = "the body is not `application/json`", body = crate::openapi::ErrorBody),
    (status = 200, body = Renewed),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 403, description = "a worker token bound to other workers", body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "`lease_lost`: not the current lease of this job (or expired); nothing changed", body = crate::openapi::ErrorBody),
    (status = 413, description = "body over the worker calls' limit", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn heartbeat(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<RenewBody>,
) -> Result<Json<Renewed>, ApiError> {
    validate_name("worker_id", &b.worker_id)?;
    text_cap("progress", &b.progress, MAX_PROGRESS_BYTES)?;
    check_bound(&s, &caller, &b.worker_id)?;
    let op = JobOp::Renew(Renew {
        job_id: b.job_id,
        worker: b.worker_id,
        lease: lease(&b.lease_token)?,
        lease_ms: s.job_options.lease_ttl.as_millis() as u64,
        progress: b.progress,
        logs: log_lines(b.logs)?,
    });
    match s.jobs.submit(op).await.map_err(batch_refused)? {
        JobReply::Renewed { job_id, expires_ms, logs_accepted } => Ok(Json(Renewed {
            job_id: job_id.to_string(),
            lease_expires_at: model::views::rfc3339(expires_ms),
            logs_accepted,
        })),
        other => Err(ApiError::internal(format!("unexpected reply to a renewal: {other:?}"))),
    }
}

/// A worker token's binding, for calls that name a job's worker: the pool
/// is the one the cluster knows for the worker.
fn check_bound(s: &AppState, caller: &Caller, worker: &str) -> Result<(), ApiError> {
    if caller.worker_prefix.is_none() && caller.pool.is_none() {
        return Ok(());
    }
    let pool = s.cluster.state.read().state.workers.get(worker).map(|w| w.pool.to_string());
    caller.check_worker(worker, pool.as_deref().or(caller.pool.as_deref()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    #[serde(deserialize_with = "body_job_id")]
    #[schema(value_type = String, pattern = "^[0-9]{1,19}$")]
    pub job_id: JobId,
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub worker_id: String,
    #[schema(max_length = 64)]
    pub lease_token: String,
    /// Any JSON, at most 64 KiB as compact text.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub logs: Vec<String>,
    /// Claim the worker's next jobs in the same commit.
    pub next: Option<NextClaim>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    #[serde(deserialize_with = "body_job_id")]
    #[schema(value_type = String, pattern = "^[0-9]{1,19}$")]
    pub job_id: JobId,
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub worker_id: String,
    #[schema(max_length = 64)]
    pub lease_token: String,
    /// At most 4 KiB.
    #[schema(max_length = 4096)]
    pub error: String,
    /// Retry (after the backoff) while attempts remain; default true.
    #[serde(default = "yes")]
    pub retryable: bool,
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub logs: Vec<String>,
    /// Claim the worker's next jobs in the same commit.
    pub next: Option<NextClaim>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FinishAnswer {
    pub job: JobView,
    pub logs_accepted: u32,
    /// Present when the call asked for `next`: the jobs claimed with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<ClaimAnswer>,
}

/// A complete or fail that also claims the worker's next jobs, in the same
/// commit: one round trip and one Raft entry per job instead of two. The
/// claim does not wait (no long poll); an empty `next.jobs` means nothing
/// was claimable, or the worker may not take jobs now.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NextClaim {
    /// 1..=16 queues, in preference order.
    #[schema(min_items = 1, max_items = 16, value_type = Vec<QueueName>)]
    pub queues: Vec<String>,
    /// 1..=100, default 1.
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_jobs: Option<u32>,
    /// As in a claim: the pool of a worker the cluster does not know yet.
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub pool: Option<String>,
}

/// A worker's report on its attempt (complete or fail): the worker id is
/// checked and bound to the caller's token, then `op` builds the operation
/// from it, which is committed and answered. With `next`, a claim for the
/// same worker rides in the same entry, after the report; when the report
/// is refused, the refusal's body carries the claimed jobs as `next` too
/// (they are leased to the worker either way).
async fn report(
    s: &AppState,
    caller: &Caller,
    worker: String,
    next: Option<NextClaim>,
    op: impl FnOnce(String) -> Result<JobOp, ApiError>,
) -> Result<Response, ApiError> {
    validate_name("worker_id", &worker)?;
    check_bound(s, caller, &worker)?;
    let claim = match &next {
        Some(n) => {
            let max_jobs = check_claim(s, caller, &worker, &n.queues, n.max_jobs, n.pool.as_deref())?;
            let may = worker_may_claim(&s.cluster.state.read().state, &worker);
            may.then(|| {
                JobOp::Claim(Claim {
                    worker: worker.clone(),
                    queues: n.queues.clone(),
                    max_jobs,
                    lease_ms: s.job_options.lease_ttl.as_millis() as u64,
                    nonce: rand::random(),
                })
            })
        }
        None => None,
    };
    let op = op(worker)?;
    let interval = s.job_options.heartbeat_interval.as_secs();
    let empty = || ClaimAnswer { jobs: Vec::new(), heartbeat_interval_seconds: interval };
    let (finished, next) = match claim {
        None => (s.jobs.submit(op).await.map_err(batch_refused), next.map(|_| empty())),
        Some(claim) => {
            let mut answers = s.jobs.submit_all(vec![op, claim]).await.map_err(batch_refused)?.into_iter();
            let (finished, claimed) = (answers.next(), answers.next());
            let next = match claimed {
                Some(Ok(JobReply::Claimed { jobs })) => ClaimAnswer {
                    jobs: jobs.iter().filter_map(ClaimedJob::of).collect(),
                    heartbeat_interval_seconds: interval,
                },
                _ => empty(),
            };
            let finished = finished
                .ok_or_else(|| ApiError::internal("a report's batch answered nothing"))?
                .map_err(crate::routes::jobs::refused);
            (finished, Some(next))
        }
    };
    match finished {
        Ok(JobReply::Finished { job, logs_accepted }) => {
            Ok(Json(FinishAnswer { job: view(&job), logs_accepted, next }).into_response())
        }
        Ok(other) => Err(ApiError::internal(format!("unexpected reply to a finish: {other:?}"))),
        Err(e) => match next {
            Some(next) if !next.jobs.is_empty() => {
                let body = serde_json::json!({
                    "error": {"code": e.code, "message": e.message},
                    "next": next,
                });
                Ok((e.status, Json(body)).into_response())
            }
            _ => Err(e),
        },
    }
}

/// Complete a job with its result: `succeeded`.
#[utoipa::path(post, path = "/internal/worker/complete", tag = "jobs", request_body = CompleteBody, responses(
    (status = 415, description = "the body is not `application/json`", body = crate::openapi::ErrorBody),
    (status = 200, body = FinishAnswer),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 403, description = "a worker token bound to other workers", body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "`lease_lost`: not the current lease of this job (or expired); the job did not change (a `next` claim in the same call still took jobs: the body's `next` lists them)", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`: result over 64 KiB or body over the limit", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn complete(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<CompleteBody>,
) -> Result<Response, ApiError> {
    report(&s, &caller, b.worker_id, b.next, |worker| {
        let result = b.result.map(|v| v.to_string());
        if result.as_ref().is_some_and(|r| r.len() > MAX_PAYLOAD_BYTES) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("result is over {MAX_PAYLOAD_BYTES} bytes as compact JSON"),
            ));
        }
        Ok(JobOp::Complete(Finish {
            job_id: b.job_id,
            worker,
            lease: lease(&b.lease_token)?,
            result,
            error: None,
            retryable: false,
            logs: log_lines(b.logs)?,
        }))
    })
    .await
}

/// Fail an attempt: retried after its backoff while attempts remain and
/// `retryable`, else `dead` with this error.
#[utoipa::path(post, path = "/internal/worker/fail", tag = "jobs", request_body = FailBody, responses(
    (status = 415, description = "the body is not `application/json`", body = crate::openapi::ErrorBody),
    (status = 200, body = FinishAnswer),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 403, description = "a worker token bound to other workers", body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "`lease_lost`: not the current lease of this job (or expired); the job did not change (a `next` claim in the same call still took jobs: the body's `next` lists them)", body = crate::openapi::ErrorBody),
    (status = 413, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn fail(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<FailBody>,
) -> Result<Response, ApiError> {
    report(&s, &caller, b.worker_id, b.next, |worker| {
        text_cap("error", &Some(b.error.clone()), MAX_ERROR_BYTES)?;
        Ok(JobOp::Fail(Finish {
            job_id: b.job_id,
            worker,
            lease: lease(&b.lease_token)?,
            result: None,
            error: Some(b.error),
            retryable: b.retryable,
            logs: log_lines(b.logs)?,
        }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cut_at_a_char_boundary_and_counted() {
        let long = "é".repeat(MAX_LOG_LINE); // 2 bytes each
        let lines = log_lines(vec![long, "short".into()]).unwrap();
        assert!(lines[0].len() <= MAX_LOG_LINE && lines[0].len() >= MAX_LOG_LINE - 1);
        assert!(lines[0].chars().all(|c| c == 'é'));
        assert_eq!(lines[1], "short");
        let e = log_lines(vec![String::new(); MAX_LINES_PER_CALL + 1]).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_malformed_lease_token_is_a_lost_lease() {
        let e = lease("not-a-token").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "lease_lost"));
        let t = LeaseToken { seq: 0x2a, nonce: 7 };
        assert_eq!(lease(&t.to_string()).unwrap(), t);
    }
}
