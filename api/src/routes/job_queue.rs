//! Jobs, operator side: cancel and requeue a job, reconcile (a reaper round
//! now), the queue listing, enqueue, clear, pause, resume and cap of a
//! queue, and queue stats (also reference 004's `/api/v1/queue/stats`).
//! Operator ops are written on their own (not group-committed): each is
//! audited under the caller's name.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::job::{JobOp, JobOps, JobReply, DEFAULT_MAX_QUEUED};
use model::state::validate_name;
use model::views::QueueStats;
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::jobs::{self, job_id, refused, view, CreateJob, JobPage, JobView};
use crate::AppState;

/// Write one operator op under the caller's name; its own answer.
pub(crate) async fn write_op(s: &AppState, actor: &str, op: JobOp) -> Result<JobReply, ApiError> {
    match s.cluster.write(actor, Command::Jobs(JobOps { ops: vec![op] })).await?? {
        Reply::Jobs(mut answers) if answers.len() == 1 => answers.pop().expect("one answer").map_err(refused),
        other => Err(ApiError::internal(format!("unexpected reply to job.ops: {other:?}"))),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[schema(max_length = 256)]
    pub reason: Option<String>,
}

fn changed(reply: JobReply) -> Result<Json<JobView>, ApiError> {
    match reply {
        JobReply::Changed { job } => Ok(Json(view(&job))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Cancel a queued, failed-waiting or running job (a running job's lease
/// ends: its worker's next renew or finish gets 409 `lease_lost`). Audited.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", tag = "jobs", params(("job_id" = String, Path, description = "decimal job id", pattern = "^[0-9]{1,19}$")), request_body = Option<CancelBody>, responses(
    (status = 200, body = JobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "already finished", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(raw): ApiPath<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&raw)?;
    let b: CancelBody = crate::extract::optional_json(body)?;
    if b.reason.as_ref().is_some_and(|r| r.chars().count() > 256) {
        return Err(ApiError::bad_request("reason is longer than 256 characters"));
    }
    changed(write_op(&s, &caller.actor(), JobOp::Cancel { job_id: id, reason: b.reason }).await?)
}

/// Requeue a dead, failed or cancelled job: queued again, attempts from 0. Audited.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/requeue", tag = "jobs", params(("job_id" = String, Path, description = "decimal job id", pattern = "^[0-9]{1,19}$")), responses(
    (status = 200, body = JobView),
    (status = 404, body = crate::openapi::ErrorBody),
    (status = 409, description = "not dead, failed or cancelled", body = crate::openapi::ErrorBody),
    (status = 429, description = "`queue_full`", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn requeue(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(&raw)?;
    changed(write_op(&s, &caller.actor(), JobOp::Requeue { job_id: id }).await?)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reconciled {
    /// The jobs whose expired lease this round ended: queued again (or
    /// waiting for their retry), or dead past `max_attempts`.
    pub requeued: Vec<JobView>,
    /// Expired leases seen; those not in `requeued` were renewed, finished
    /// or reaped by someone else in between.
    pub expired_seen: usize,
}

/// Run a lease-reaper round now: every lease expired at this moment ends,
/// each at most once (a committed decision, as the leader's own rounds).
#[utoipa::path(post, path = "/internal/admin/queue/reconcile", tag = "jobs", responses(
    (status = 200, body = Reconciled),
    (status = 409, description = "the cluster format does not know jobs yet, or `run_after_too_far`: `run_after` more than a year ahead", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn reconcile(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Reconciled>, ApiError> {
    let round = raft_store::job_commit::reap_round(&s.cluster, &caller.actor()).await?;
    Ok(Json(Reconciled { requeued: round.reaped.iter().map(view).collect(), expired_seen: round.expired_seen }))
}

/// `GET /api/queue`: the history's filters and cursor, over every queue.
#[utoipa::path(get, path = "/api/queue", tag = "jobs", params(jobs::HistoryQuery), responses(
    (status = 200, body = JobPage),
    (status = 400, description = "a bad or unknown query parameter", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn items(s: State<AppState>, q: ApiQuery<jobs::HistoryQuery>) -> Result<Json<JobPage>, ApiError> {
    jobs::list(s, q).await
}

/// Enqueue a job as an operator: `POST /api/v1/jobs` under the operator
/// scope (the job records when it was created; enqueues are not audited).
#[utoipa::path(post, path = "/api/queue/enqueue", tag = "jobs", request_body = CreateJob, responses(
    (status = 201, description = "created", body = JobView),
    (status = 200, description = "an existing job with this idempotency key; nothing changed", body = JobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "the cluster format does not know jobs yet, or `run_after_too_far`: `run_after` more than a year ahead", body = crate::openapi::ErrorBody),
    (status = 413, description = "`payload_too_large`", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 429, description = "`queue_full`", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn enqueue(s: State<AppState>, body: ApiJson<CreateJob>) -> Result<(StatusCode, Json<JobView>), ApiError> {
    jobs::create(s, body).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    #[schema(pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)]
    pub queue: String,
    /// The queue's name again: a clear cannot happen by accident.
    pub confirm: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cleared {
    pub queue: String,
    /// Queued and failed-waiting jobs now cancelled (running ones run on).
    pub cancelled: u32,
}

/// Cancel every queued and failed-waiting job of a queue. Audited.
#[utoipa::path(post, path = "/api/queue/clear", tag = "jobs", request_body = ClearBody, responses(
    (status = 200, body = Cleared),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`confirm_mismatch`: `confirm` is not the queue's name; nothing cleared", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn clear(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<ClearBody>,
) -> Result<Json<Cleared>, ApiError> {
    validate_name("queue", &b.queue)?;
    if b.confirm != b.queue {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "confirm_mismatch",
            format!("confirm must be the queue's name, {:?}", b.queue),
        ));
    }
    match write_op(&s, &caller.actor(), JobOp::ClearQueue { queue: b.queue }).await? {
        JobReply::Cleared { queue, cancelled } => Ok(Json(Cleared { queue, cancelled })),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// One queue's numbers (the model's view) with what this node measures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueStatsView {
    #[serde(flatten)]
    pub stats: QueueStats,
    /// Over the last minute this node sampled (null until it has).
    pub claims_per_minute: Option<f64>,
    pub completions_per_minute: Option<f64>,
    /// Dead jobs kept now (`length.dead`).
    pub dead_letters: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub queues: Vec<QueueStatsView>,
    /// Every queue together (queue `*`).
    pub total: QueueStatsView,
}

/// Per-queue counts and ages from the indices, and this node's rates.
pub fn stats(s: &AppState) -> StatsView {
    let queues = QueueStats::of_all(&s.cluster.state.read().state.jobs, now_ms());
    let total = QueueStats::total(&queues);
    let rates = s.job_rates.per_minute();
    let with_rates = |stats: QueueStats| {
        let rate = rates.get(&stats.queue);
        QueueStatsView {
            claims_per_minute: rate.map(|r| r.0),
            completions_per_minute: rate.map(|r| r.1),
            dead_letters: stats.length.dead,
            stats,
        }
    };
    StatsView { total: with_rates(total), queues: queues.into_iter().map(with_rates).collect() }
}

/// Queue stats: length by state, oldest queued age, claims and completions
/// per minute, dead letters.
#[utoipa::path(get, path = "/api/v1/queue/stats", tag = "jobs", responses((status = 200, body = StatsView)))]
pub async fn stats_v1(State(s): State<AppState>) -> Json<StatsView> {
    Json(stats(&s))
}

/// The same view as `/api/v1/queue/stats`, for operators.
#[utoipa::path(get, path = "/api/queue/stats", tag = "jobs", responses((status = 200, body = StatsView)))]
pub async fn stats_ops(State(s): State<AppState>) -> Json<StatsView> {
    Json(stats(&s))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapBody {
    /// Most queued jobs (enqueues past it get 429 `queue_full`); null
    /// restores the default (100,000).
    #[serde(default, deserialize_with = "crate::extract::whole_opt")]
    #[schema(required = true, nullable = true, minimum = 0, maximum = 1000000)]
    pub max_queued: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueSet {
    pub queue: String,
    pub paused: bool,
    pub max_queued: u32,
}

async fn set_queue(s: &AppState, caller: &Caller, queue: String, op: JobOp) -> Result<Json<QueueSet>, ApiError> {
    validate_name("queue", &queue)?;
    write_op(s, &caller.actor(), op).await?;
    let applied = s.cluster.state.read();
    let cfg = applied.state.jobs.queues.get(&queue).cloned().unwrap_or_default();
    Ok(Json(QueueSet { queue, paused: cfg.paused, max_queued: cfg.max_queued.unwrap_or(DEFAULT_MAX_QUEUED) }))
}

/// Pause a queue: no claims from it until resumed (enqueues go on). Audited.
#[utoipa::path(post, path = "/api/queue/{queue}/pause", tag = "jobs", params(("queue" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses(
    (status = 200, body = QueueSet), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn pause(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueSet>, ApiError> {
    validate_name("queue", &queue)?;
    set_queue(&s, &caller, queue.clone(), JobOp::SetQueuePaused { queue, paused: true }).await
}

/// Resume a paused queue. Audited.
#[utoipa::path(post, path = "/api/queue/{queue}/resume", tag = "jobs", params(("queue" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), responses(
    (status = 200, body = QueueSet), (status = 400, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn resume(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(queue): ApiPath<String>,
) -> Result<Json<QueueSet>, ApiError> {
    validate_name("queue", &queue)?;
    set_queue(&s, &caller, queue.clone(), JobOp::SetQueuePaused { queue, paused: false }).await
}

/// Set a queue's cap on queued jobs. Audited.
#[utoipa::path(post, path = "/api/queue/{queue}/cap", tag = "jobs", params(("queue" = String, Path, pattern = "^[A-Za-z0-9._:@-]{1,128}$", min_length = 1, max_length = 128)), request_body = CapBody, responses(
    (status = 200, body = QueueSet), (status = 400, body = crate::openapi::ErrorBody), (status = 415, body = crate::openapi::ErrorBody), (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn cap(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(queue): ApiPath<String>,
    ApiJson(raw): ApiJson<serde_json::Value>,
) -> Result<Json<QueueSet>, ApiError> {
    validate_name("queue", &queue)?;
    // `max_queued` must be there (null is a value: the default).
    if raw.get("max_queued").is_none() {
        return Err(ApiError::bad_request("max_queued is required (a number, or null for the default)"));
    }
    let b: CapBody = serde_json::from_value(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if b.max_queued.is_some_and(|m| m > 1_000_000) {
        return Err(ApiError::bad_request("max_queued must be 0..=1000000"));
    }
    set_queue(&s, &caller, queue.clone(), JobOp::SetQueueCap { queue, max_queued: b.max_queued }).await
}
