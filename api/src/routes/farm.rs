//! The build farm (reference 003's paths): summary, recent builds and the
//! history of build events, the `build` queue (list, enqueue, clear,
//! stats), cache reports and the farm's config. Hints are in
//! [`crate::routes::farm_hints`], plans, manifests and logs in
//! [`crate::routes::farm_store`]. A build is a job of kind `build` in queue
//! `build`; its events are recorded when its job operations are applied.

use std::collections::BTreeMap;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use model::state::farm::{BuildEvent, EventKind, FarmConfig, FarmOp, FarmReply, Strategy, BUILD_KIND, BUILD_QUEUE};
use model::state::job::{Backoff, JobOp, JobReply, JobState, NewJob};
use model::views::{parse_rfc3339, rfc3339};
use model::{Command, Reply};
use raft_store::cluster::now_ms;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::jobs::{batch_refused, view, JobView};
use crate::AppState;

/// Default and largest page of `/recent` and `/history`.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// Pattern of a package name, version or run id (`check_package`).
pub const PACKAGE_PATTERN: &str = "^[A-Za-z0-9._+!~-]{1,128}$";

/// Refuse farm writes (409) until the cluster runs format 6.
pub(crate) fn need_format(s: &AppState) -> Result<(), ApiError> {
    let format = s.cluster.state.read().state.format();
    if format < 6 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "format_too_old",
            format!(
                "the build farm needs cluster format 6; the cluster is at {format} (raised once every voter knows it)"
            ),
        ));
    }
    Ok(())
}

/// Write one farm operation under the caller's name.
pub(crate) async fn write(s: &AppState, actor: &str, op: FarmOp) -> Result<FarmReply, ApiError> {
    need_format(s)?;
    match s.cluster.write(actor, Command::Farm(op)).await?? {
        Reply::Farm(r) => Ok(r),
        other => Err(ApiError::internal(format!("unexpected reply to farm.ops: {other:?}"))),
    }
}

/// An environment map's values within the documented 256 characters (the
/// model checks names, count and bytes).
pub(crate) fn check_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if env.values().any(|v| v.chars().count() > 256) {
        return Err(ApiError::bad_request("an environment value is longer than 256 characters"));
    }
    Ok(())
}

pub(crate) fn check_package(what: &str, v: &str) -> Result<(), ApiError> {
    model::state::farm::check_package(what, v).map_err(|e| ApiError::bad_request(e.message))
}

// ---- events ----

/// One state change of a build.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    pub kind: EventKind,
    /// The build's (job's) state after the change.
    pub state: JobState,
    pub job_id: String,
    pub package: String,
    pub version: String,
    pub run_id: Option<String>,
    pub worker: Option<String>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    /// Ids of the hints whose pattern matched the failure.
    pub hints: Vec<u64>,
}

fn event_view(e: &BuildEvent) -> EventView {
    EventView {
        seq: e.seq,
        at: rfc3339(e.at_ms),
        kind: e.kind,
        state: e.state,
        job_id: e.job_id.to_string(),
        package: e.package.clone(),
        version: e.version.clone(),
        run_id: e.run_id.clone(),
        worker: e.worker.clone(),
        duration_ms: e.duration_ms,
        error: e.error.clone(),
        hints: e.hints.clone(),
    }
}

/// Event counts by kind over a window.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub queued: u64,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    /// succeeded / (succeeded + failed); null without either.
    pub success_rate: Option<f64>,
}

impl Counts {
    fn add(&mut self, kind: EventKind) {
        let n = match kind {
            EventKind::Queued => &mut self.queued,
            EventKind::Started => &mut self.started,
            EventKind::Succeeded => &mut self.succeeded,
            EventKind::Failed => &mut self.failed,
            EventKind::Retried => &mut self.retried,
            EventKind::Cancelled => &mut self.cancelled,
        };
        *n += 1;
    }

    fn finish(mut self) -> Self {
        let ended = self.succeeded + self.failed;
        self.success_rate = (ended > 0).then(|| self.succeeded as f64 / ended as f64);
        self
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheView {
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses); null before any report.
    pub hit_rate: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastRun {
    pub run_id: Option<String>,
    /// RFC 3339: the run's latest event.
    pub at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub last_24h: Counts,
    pub last_7d: Counts,
    /// Builds queued or waiting for a retry.
    pub queue_depth: u64,
    pub running: u64,
    pub cache: CacheView,
    /// The latest event that named a run id (null when none did).
    pub last_run: Option<LastRun>,
    /// Events kept (at most 50,000, for 30 days).
    pub events_kept: usize,
}

fn build_numbers(s: &AppState) -> (u64, u64, Option<u64>) {
    let applied = s.cluster.state.read();
    let stats = model::views::QueueStats::of_all(&applied.state.jobs, now_ms());
    stats
        .iter()
        .find(|q| q.queue == BUILD_QUEUE)
        .map_or((0, 0, None), |q| (q.length.queued + q.length.failed, q.length.running, q.oldest_queued_age_ms))
}

fn cache_view(hits: u64, misses: u64) -> CacheView {
    let all = hits + misses;
    CacheView { hits, misses, hit_rate: (all > 0).then(|| hits as f64 / all as f64) }
}

/// Counts by status over 24 hours and 7 days, queue depth, cache, last run.
#[utoipa::path(get, path = "/summary", tag = "farm", responses((status = 200, body = Summary)))]
pub async fn summary(State(s): State<AppState>) -> Json<Summary> {
    let now = now_ms();
    let (depth, running, _) = build_numbers(&s);
    let applied = s.cluster.state.read();
    let farm = &applied.state.farm;
    let (mut day, mut week) = (Counts::default(), Counts::default());
    for e in farm.events.iter().rev() {
        if e.at_ms + 7 * 86_400_000 < now {
            break;
        }
        week.add(e.kind);
        if e.at_ms + 86_400_000 >= now {
            day.add(e.kind);
        }
    }
    let last_run = farm
        .events
        .iter()
        .rev()
        .find(|e| e.run_id.is_some())
        .map(|e| LastRun { run_id: e.run_id.clone(), at: rfc3339(e.at_ms) });
    Json(Summary {
        last_24h: day.finish(),
        last_7d: week.finish(),
        queue_depth: depth,
        running,
        cache: cache_view(farm.cache.hits, farm.cache.misses),
        last_run,
        events_kept: farm.events.len(),
    })
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RecentQuery {
    /// Default 50; 400 past 500.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventView>,
    /// Pass as `cursor` for the next page; null at the end. Sequence
    /// numbers only grow, so pages never repeat or skip an event.
    pub next_cursor: Option<String>,
    pub limit: usize,
}

fn limit_of(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}")));
    }
    Ok(limit)
}

/// The latest build events, newest first.
#[utoipa::path(get, path = "/recent", tag = "farm", params(RecentQuery), responses(
    (status = 200, body = EventPage),
    (status = 400, description = "a bad or unknown query parameter, or `limit` over 500", body = crate::openapi::ErrorBody)))]
pub async fn recent(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = limit_of(q.limit)?;
    let applied = s.cluster.state.read();
    let events = applied.state.farm.events.iter().rev().take(limit).map(event_view).collect();
    Ok(Json(EventPage { events, next_cursor: None, limit }))
}

/// `status` of `/history`: an event kind or the build state it left.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    /// Reference 003's `started`; the job state `running`.
    Started,
    Running,
    Succeeded,
    /// Attempts that failed, whether a retry followed or not.
    Failed,
    /// Failed with no retry left.
    Dead,
    Retried,
    Cancelled,
}

impl Status {
    fn matches(self, e: &BuildEvent) -> bool {
        match self {
            Status::Queued => e.kind == EventKind::Queued,
            Status::Started | Status::Running => e.kind == EventKind::Started,
            Status::Succeeded => e.kind == EventKind::Succeeded,
            Status::Failed => {
                matches!(e.kind, EventKind::Failed) || (e.kind == EventKind::Retried && e.error.is_some())
            }
            Status::Dead => e.state == JobState::Dead,
            Status::Retried => e.kind == EventKind::Retried,
            Status::Cancelled => e.kind == EventKind::Cancelled,
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[param(pattern = "^[A-Za-z0-9._+!~-]{1,128}$")]
    pub package: Option<String>,
    #[param(pattern = "^[A-Za-z0-9._+!~-]{1,128}$")]
    pub version: Option<String>,
    #[param(inline)]
    pub status: Option<Status>,
    #[param(pattern = "^[A-Za-z0-9._+!~-]{1,128}$")]
    pub run_id: Option<String>,
    /// Events at or after (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Events before (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Default 50; 400 past 500.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
}

fn time(name: &str, v: &Option<String>) -> Result<Option<u64>, ApiError> {
    v.as_deref()
        .map(|t| parse_rfc3339(t).ok_or_else(|| ApiError::bad_request(format!("{name} {t:?} is not an RFC 3339 time"))))
        .transpose()
}

/// Build events, newest first, filtered, paged by a stable cursor.
#[utoipa::path(get, path = "/history", tag = "farm", params(HistoryQuery), responses(
    (status = 200, body = EventPage),
    (status = 400, description = "a bad or unknown query parameter, or `limit` over 500", body = crate::openapi::ErrorBody)))]
pub async fn history(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<EventPage>, ApiError> {
    for (what, v) in [("package", &q.package), ("version", &q.version), ("run_id", &q.run_id)] {
        if let Some(v) = v {
            check_package(what, v)?;
        }
    }
    let limit = limit_of(q.limit)?;
    let cursor = match &q.cursor {
        Some(c) if !c.is_empty() && c.len() <= 19 && c.bytes().all(|b| b.is_ascii_digit()) => {
            c.parse::<u64>().map_err(|_| ApiError::bad_request("cursor is not a cursor"))?
        }
        Some(c) => return Err(ApiError::bad_request(format!("cursor {c:?} is not a cursor"))),
        None => u64::MAX,
    };
    let (since, until) = (time("since", &q.since)?, time("until", &q.until)?);
    let keep = |e: &BuildEvent| {
        q.package.as_deref().is_none_or(|p| e.package == p)
            && q.version.as_deref().is_none_or(|v| e.version == v)
            && q.run_id.as_deref().is_none_or(|r| e.run_id.as_deref() == Some(r))
            && q.status.is_none_or(|st| st.matches(e))
            && since.is_none_or(|t| e.at_ms >= t)
            && until.is_none_or(|t| e.at_ms < t)
    };
    let applied = s.cluster.state.read();
    let events = &applied.state.farm.events;
    let end = events.partition_point(|e| e.seq < cursor);
    let mut out = Vec::new();
    let mut next = None;
    for e in events.range(..end).rev() {
        if !keep(e) {
            continue;
        }
        if out.len() == limit {
            next = Some(out.last().map_or(e.seq + 1, |v: &EventView| v.seq).to_string());
            break;
        }
        out.push(event_view(e));
    }
    Ok(Json(EventPage { events: out, next_cursor: next, limit }))
}

// ---- the build queue ----

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueItem {
    pub job_id: String,
    pub package: String,
    pub version: String,
    pub run_id: Option<String>,
    /// queued, running or failed (waiting for its retry).
    pub state: JobState,
    pub priority: i32,
    pub attempts: u32,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueList {
    /// Highest priority first, then oldest; at most 500.
    pub items: Vec<QueueItem>,
    /// Builds queued, waiting for a retry, or running.
    pub length: u64,
}

/// Most items `GET /queue` lists.
const MAX_QUEUE_LIST: usize = 500;

/// The builds not yet finished (queued, waiting for a retry, running).
#[utoipa::path(get, path = "/queue", tag = "farm", responses((status = 200, body = QueueList)))]
pub async fn queue(State(s): State<AppState>) -> Json<QueueList> {
    let applied = s.cluster.state.read();
    let mut items: Vec<_> =
        applied.state.jobs.by_id.values().filter(|j| j.queue == BUILD_QUEUE && !j.state.is_finished()).collect();
    let length = items.len() as u64;
    items.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.id));
    let items = items
        .into_iter()
        .take(MAX_QUEUE_LIST)
        .map(|j| {
            let who = model::state::farm::build_identity(j);
            QueueItem {
                job_id: j.id.to_string(),
                package: who.as_ref().map_or_else(String::new, |w| w.package.clone()),
                version: who.as_ref().map_or_else(String::new, |w| w.version.clone()),
                run_id: who.and_then(|w| w.run_id),
                state: j.state,
                priority: j.priority,
                attempts: j.attempt_count,
                created_at: rfc3339(j.created_ms),
            }
        })
        .collect();
    Json(QueueList { items, length })
}

/// A build to request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    #[schema(pattern = "^[A-Za-z0-9._+!~-]{1,128}$", min_length = 1, max_length = 128)]
    pub package: String,
    #[schema(pattern = "^[A-Za-z0-9._+!~-]{1,128}$", min_length = 1, max_length = 128)]
    pub version: String,
    #[schema(pattern = "^[A-Za-z0-9._+!~-]{1,128}$", min_length = 1, max_length = 128)]
    pub run_id: Option<String>,
    /// Higher first; default 0.
    #[serde(default, deserialize_with = "crate::extract::whole_i32")]
    #[schema(minimum = -2147483648, maximum = 2147483647)]
    pub priority: i32,
}

/// Request a build: a job of kind `build` in queue `build` (3 attempts,
/// backoff 5 s to 5 min). Its events appear in `/history`.
#[utoipa::path(post, path = "/queue/enqueue", tag = "farm", request_body = EnqueueBody, responses(
    (status = 201, description = "queued", body = JobView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`: the cluster does not run format 6 yet", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 429, description = "`queue_full`", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn enqueue(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<EnqueueBody>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    check_package("package", &b.package)?;
    check_package("version", &b.version)?;
    if let Some(r) = &b.run_id {
        check_package("run_id", r)?;
    }
    need_format(&s)?;
    let mut payload = serde_json::json!({ "package": b.package, "version": b.version });
    if let Some(r) = b.run_id {
        payload["run_id"] = r.into();
    }
    let job = NewJob {
        queue: BUILD_QUEUE.into(),
        kind: BUILD_KIND.into(),
        payload: payload.to_string(),
        priority: b.priority,
        pool: None,
        run_after_ms: None,
        idempotency_key: None,
        max_attempts: 3,
        backoff: Backoff { base_ms: 5_000, max_ms: 300_000 },
    };
    match s.jobs.submit(JobOp::Enqueue(job)).await.map_err(batch_refused)? {
        JobReply::Enqueued { job, .. } => Ok((StatusCode::CREATED, Json(view(&job)))),
        other => Err(ApiError::internal(format!("unexpected reply to an enqueue: {other:?}"))),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildsCleared {
    /// Queued and retry-waiting builds now cancelled (running ones run on).
    pub cancelled: u32,
}

/// Cancel every queued and retry-waiting build (reference 003's shape: no
/// confirmation field). Audited as `queue.clear` of `queue:build`.
#[utoipa::path(post, path = "/queue/clear", tag = "farm", responses(
    (status = 200, body = BuildsCleared),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn clear(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BuildsCleared>, ApiError> {
    need_format(&s)?;
    let op = JobOp::ClearQueue { queue: BUILD_QUEUE.into() };
    match crate::routes::job_queue::write_op(&s, &caller.actor(), op).await {
        Ok(JobReply::Cleared { cancelled, .. }) => Ok(Json(BuildsCleared { cancelled })),
        // A queue that never held a build has nothing to clear.
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(Json(BuildsCleared { cancelled: 0 })),
        Ok(other) => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildQueueStats {
    /// Builds queued or waiting for a retry.
    pub length: u64,
    pub running: u64,
    /// How long the longest-waiting claimable build has waited (null: none).
    pub oldest_age_seconds: Option<f64>,
}

/// The build queue's length and oldest age.
#[utoipa::path(get, path = "/queue/stats", tag = "farm", responses((status = 200, body = BuildQueueStats)))]
pub async fn queue_stats(State(s): State<AppState>) -> Json<BuildQueueStats> {
    let (length, running, oldest) = build_numbers(&s);
    Json(BuildQueueStats { length, running, oldest_age_seconds: oldest.map(|ms| ms as f64 / 1000.0) })
}

// ---- cache reports and config ----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheReport {
    /// Hits since the worker's last report.
    #[serde(deserialize_with = "crate::extract::whole")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub hits: u64,
    #[serde(deserialize_with = "crate::extract::whole")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub misses: u64,
}

/// A worker reports its cache hits and misses (added to the totals).
#[utoipa::path(post, path = "/cache/report", tag = "farm", request_body = CacheReport, responses(
    (status = 200, body = CacheView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn cache_report(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<CacheReport>,
) -> Result<Json<CacheView>, ApiError> {
    let max = model::state::farm::MAX_CACHE_REPORT;
    if b.hits > max || b.misses > max {
        return Err(ApiError::bad_request(format!("hits and misses are 0..={max}")));
    }
    match write(&s, &caller.actor(), FarmOp::CacheReport { hits: b.hits, misses: b.misses }).await? {
        FarmReply::Cache(c) => Ok(Json(cache_view(c.hits, c.misses))),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The farm's settings, with this node's log retention.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub strategy: Strategy,
    pub python: String,
    pub platform: String,
    pub index_url: String,
    pub env: BTreeMap<String, String>,
    /// `BUILD_LOG_RETENTION_DAYS` of this node.
    pub build_log_retention_days: u64,
    /// `BUILD_LOG_MAX_BYTES` of this node.
    pub build_log_max_bytes: u64,
    /// Build log bytes stored now.
    pub build_log_bytes: u64,
    /// `FARM_READS_OPEN` of this node.
    pub reads_open: bool,
}

/// The build strategy, target Python and platform, index and environment.
#[utoipa::path(get, path = "/config", tag = "farm", responses((status = 200, body = ConfigView)))]
pub async fn config(State(s): State<AppState>) -> Json<ConfigView> {
    let (config, log_bytes) = {
        let applied = s.cluster.state.read();
        (applied.state.farm.config.clone(), applied.state.farm.log_bytes)
    };
    Json(config_view(&s, config, log_bytes))
}

fn config_view(s: &AppState, c: FarmConfig, build_log_bytes: u64) -> ConfigView {
    let o = &s.job_options;
    ConfigView {
        strategy: c.strategy,
        python: c.python,
        platform: c.platform,
        index_url: c.index_url,
        env: c.env,
        build_log_retention_days: o.build_log_retention.as_secs() / 86_400,
        build_log_max_bytes: o.build_log_max_bytes,
        build_log_bytes,
        reads_open: o.farm_reads_open,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigBody {
    pub strategy: Strategy,
    #[serde(default)]
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]*$")]
    pub python: String,
    #[serde(default)]
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]*$")]
    pub platform: String,
    #[serde(default)]
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f]*$")]
    pub index_url: String,
    /// At most 64 variables, names `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::env_map)]
    pub env: BTreeMap<String, String>,
}

/// Set the farm's settings (all of them). Audited as `farm.config`.
#[utoipa::path(put, path = "/config", tag = "farm", request_body = ConfigBody, responses(
    (status = 200, body = ConfigView),
    (status = 400, body = crate::openapi::ErrorBody),
    (status = 409, description = "`format_too_old`", body = crate::openapi::ErrorBody),
    (status = 415, body = crate::openapi::ErrorBody),
    (status = 503, body = crate::openapi::ErrorBody)))]
pub async fn set_config(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(b): ApiJson<ConfigBody>,
) -> Result<Json<ConfigView>, ApiError> {
    for (what, v) in [("python", &b.python), ("platform", &b.platform)] {
        if v.chars().count() > 128 {
            return Err(ApiError::bad_request(format!("{what} is longer than 128 characters")));
        }
    }
    check_env(&b.env)?;
    if b.index_url.chars().count() > 128 {
        return Err(ApiError::bad_request("index_url is longer than 128 characters"));
    }
    let cfg =
        FarmConfig { strategy: b.strategy, python: b.python, platform: b.platform, index_url: b.index_url, env: b.env };
    cfg.validate().map_err(|e| ApiError::bad_request(e.message))?;
    match write(&s, &caller.actor(), FarmOp::SetConfig(cfg)).await? {
        // From the reply: this node may not have applied the entry yet.
        FarmReply::Config(c) => {
            let log_bytes = s.cluster.state.read().state.farm.log_bytes;
            Ok(Json(config_view(&s, c, log_bytes)))
        }
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}
