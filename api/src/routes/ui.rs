//! The operator UI mount: pages rendered by the `ui` crate from this node's
//! state, their embedded assets, and the overview's live event stream. Pages
//! only read; every change they offer goes through the same `/api` calls as
//! any other client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::Stream;
use model::state::worker::heartbeat_state;
use model::state::IncidentState;
use raft_store::cluster::now_ms;
use ui::{Chrome, WorkerFilter, WorkerResults, WorkerRow};

use super::workers::{select, WorkerQuery};
use crate::extract::ApiPath;
use crate::AppState;

/// Rows per workers page unless the operator picks another size.
const UI_PAGE: usize = 50;
const UI_MAX_PAGE: usize = 250;

pub(crate) fn chrome(s: &AppState, page: &'static str, title: impl Into<String>) -> Chrome {
    let me = s.cluster.report();
    let nodes = {
        let m = s.cluster.raft.metrics().borrow().clone();
        m.membership_config.membership().nodes().map(|(_, n)| n.addr.clone()).collect()
    };
    Chrome {
        node_id: s.cluster.id,
        role: me.role,
        leader: me.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
        term: me.term,
        page,
        title: title.into(),
        poll_seconds: s.with_settings(|e| e.count("UI_POLL_INTERVAL_SECONDS")).max(1),
        nodes,
        removed: s.cluster.removed(),
        read_only: read_only(),
    }
}

/// Whether the viewer's token may only read (controls are left out).
pub(crate) fn read_only() -> bool {
    crate::auth::READ_ONLY.try_with(|r| *r).unwrap_or(false)
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

pub async fn root() -> Redirect {
    Redirect::to(&format!("{}/overview", ui::BASE))
}

/// `/verifier-engine-room/{page}`.
pub async fn page(
    State(s): State<AppState>,
    ApiPath(page): ApiPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match page.as_str() {
        "overview" => overview(&s).await,
        "workers" => workers(&s, &query),
        "jobs" => jobs(&s, &query),
        "alerts" => alerts(&s),
        "builds" => super::ui_farm::builds(&s, &query).await,
        "plan" => super::ui_farm::plan(&s, &query).await,
        "hints" => super::ui_farm::hints(&s),
        "pools" => pools(&s),
        "settings" => settings(&s).await,
        "cluster" => cluster(&s).await,
        _ => not_found(&s, &format!("no page called {page:?}")),
    }
}

pub(crate) fn not_found(s: &AppState, what: &str) -> Response {
    html(StatusCode::NOT_FOUND, ui::not_found(&chrome(s, "", "Not found"), what))
}

/// The ten newest active incidents, as the overview and its live stream show them.
fn recent_active(state: &model::ControlState) -> impl Iterator<Item = &model::state::Incident> {
    state.incidents.values().rev().filter(|i| i.state == IncidentState::Active).take(10)
}

async fn overview(s: &AppState) -> Response {
    let status = s.cluster.status().await;
    let (now, grace) = (now_ms(), s.grace_ms());
    let rates = s.job_rates.per_minute();
    let (fleet, incidents, jobs) = {
        let applied = s.cluster.state.read();
        let incidents: Vec<_> = recent_active(&applied.state).map(|i| ui::IncidentRow::new(i, now)).collect();
        let jobs = ui::jobs::summarize(&applied.state.jobs, now, &|q| rates.get(q).map(|r| r.0)).totals;
        (ui::summarize(&applied.state, now, grace), incidents, jobs)
    };
    html(StatusCode::OK, ui::overview(&chrome(s, "overview", "Overview"), &fleet, &status, &incidents, &jobs))
}

/// The filter typed on the page, cleaned: unknown choices mean "any".
fn worker_filter(query: &HashMap<String, String>) -> WorkerFilter {
    let get = |k: &str| query.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let one_of = |k: &str, allowed: &[&str]| {
        let v = get(k);
        if allowed.contains(&v.as_str()) {
            v
        } else {
            String::new()
        }
    };
    WorkerFilter {
        q: get("q"),
        pool: get("pool"),
        desired_state: one_of("desired_state", &["running", "paused", "draining", "stopped"]),
        heartbeat_state: one_of("heartbeat_state", &["healthy", "stale", "none"]),
        quarantined: one_of("quarantined", &["true", "false"]),
        limit: get("limit").parse().unwrap_or(UI_PAGE).clamp(1, UI_MAX_PAGE),
        offset: get("offset").parse().unwrap_or(0),
    }
}

fn workers(s: &AppState, query: &HashMap<String, String>) -> Response {
    let filter = worker_filter(query);
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let q = WorkerQuery {
        q: some(&filter.q),
        pool: some(&filter.pool),
        desired_state: some(&filter.desired_state),
        heartbeat_state: some(&filter.heartbeat_state),
        quarantined: filter.quarantined.parse().ok(),
        limit: Some(filter.limit),
        offset: filter.offset,
        consistent: false,
    };
    let (now, grace) = (now_ms(), s.grace_ms());
    let (results, pools) = {
        let applied = s.cluster.state.read();
        let (total, page) = match select(&applied.state, &q, now, grace) {
            Ok(r) => r,
            Err(e) => return html(StatusCode::BAD_REQUEST, format!("bad filter: {}", e.message)),
        };
        let rows = page.into_iter().map(|w| WorkerRow::new(w, now, grace)).collect();
        let mut pools: BTreeSet<String> = applied.state.pools.keys().cloned().collect();
        pools.extend(applied.state.by_pool.keys().cloned());
        (WorkerResults { rows, total, filter }, pools.into_iter().collect::<Vec<_>>())
    };
    if query.get("partial").is_some_and(|p| p == "rows") {
        return html(StatusCode::OK, ui::worker_results(&results));
    }
    html(StatusCode::OK, ui::workers(&chrome(s, "workers", "Workers"), &pools, &results))
}

/// `/verifier-engine-room/workers/{id}`.
pub async fn worker(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    let (now, grace) = (now_ms(), s.grace_ms());
    // Built before taking the state lock: `chrome` reads settings, which locks too.
    let chrome = chrome(&s, "workers", format!("Worker {id}"));
    let body = {
        let applied = s.cluster.state.read();
        applied.state.workers.get(&id).map(|w| {
            let audit: Vec<_> = applied.state.audit.iter().filter(|e| e.subject == id).take(25).collect();
            ui::worker(&chrome, w, now, grace, &audit)
        })
    };
    match body {
        Some(b) => html(StatusCode::OK, b),
        None => not_found(&s, &format!("no worker {id:?}")),
    }
}

fn jobs(s: &AppState, query: &HashMap<String, String>) -> Response {
    let filter = ui::jobs::JobFilter::from_query(query);
    let read_only = read_only();
    let now = now_ms();
    let rates = s.job_rates.per_minute();
    let results = {
        let applied = s.cluster.state.read();
        let jobs = &applied.state.jobs;
        let (rows, next_cursor, scan_capped) = ui::jobs::select(jobs, &filter, now);
        let queues = ui::jobs::summarize(jobs, now, &|q| rates.get(q).map(|r| r.0)).queues;
        ui::jobs::JobResults { queues, rows, filter, next_cursor, scan_capped, read_only }
    };
    if query.get("partial").is_some_and(|p| p == "rows") {
        return html(StatusCode::OK, ui::jobs::job_results(&results));
    }
    html(StatusCode::OK, ui::jobs::jobs_page(&chrome(s, "jobs", "Jobs"), &results))
}

/// `/verifier-engine-room/jobs/{id}`.
pub async fn job(State(s): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    let Ok(job_id) = id.parse::<u64>() else {
        return not_found(&s, &format!("no job {id:?}"));
    };
    let now = now_ms();
    // Built before taking the state lock: `chrome` reads settings, which locks too.
    let chrome = chrome(&s, "jobs", format!("Job {job_id}"));
    let logs = job_logs(&s, job_id).await;
    let body = {
        let applied = s.cluster.state.read();
        applied.state.jobs.by_id.get(&job_id).map(|j| ui::jobs::job_page(&chrome, j, now, &logs))
    };
    match body {
        Some(b) => html(StatusCode::OK, b),
        None => not_found(&s, &format!("no job {job_id}")),
    }
}

/// Log lines a job page shows; the rest are a click away in the API.
const UI_LOG_LINES: usize = 500;

/// The first lines of a job's log from the log store, or where to read them
/// when the store does not answer.
async fn job_logs(s: &AppState, job_id: u64) -> ui::jobs::JobLogs {
    let store = s.cluster.job_logs.clone();
    match tokio::task::spawn_blocking(move || store.lines(job_id, None, UI_LOG_LINES + 1)).await {
        Ok(Ok(mut lines)) => {
            let more = lines.len() > UI_LOG_LINES;
            lines.truncate(UI_LOG_LINES);
            let lines =
                lines.into_iter().map(|l| ui::jobs::LogLine { at: ui::format::utc(l.at_ms), text: l.text }).collect();
            ui::jobs::JobLogs::Lines { lines, more }
        }
        _ => ui::jobs::JobLogs::At(format!("/api/v1/jobs/{job_id}/logs")),
    }
}

fn pools(s: &AppState) -> Response {
    let (now, grace) = (now_ms(), s.grace_ms());
    let (rows, implicit) = {
        let applied = s.cluster.state.read();
        let mut counts: ui::PoolCounts = BTreeMap::new();
        for w in applied.state.workers.values() {
            let c = counts.entry(w.pool.to_string()).or_default();
            c.0 += 1;
            c.1 += u64::from(heartbeat_state(Some(w.last_heartbeat_ms), now, grace) == "healthy");
        }
        let rows: Vec<_> = applied.state.pools.values().map(|p| ui::PoolRow::new(p, &counts, now)).collect();
        let implicit: Vec<_> = counts
            .iter()
            .filter(|(name, _)| !applied.state.pools.contains_key(*name))
            .map(|(name, (total, _))| (name.clone(), *total))
            .collect();
        (rows, implicit)
    };
    html(StatusCode::OK, ui::pools(&chrome(s, "pools", "Pools"), &rows, &implicit))
}

fn alerts(s: &AppState) -> Response {
    // Rendered from the API's own views: a renamed field is a compile error here.
    let rules_view = super::incidents::alert_rules(s);
    let enabled = rules_view.enabled;
    let rules: Vec<ui::RuleRow> = rules_view
        .rules
        .into_iter()
        .map(|r| ui::RuleRow {
            name: r.name,
            kind: r.kind,
            threshold: r.threshold,
            state: r.state,
            firing: r.active.into_iter().map(|i| i.subject).collect(),
        })
        .collect();
    let slo_view = super::slo::slo_view(s);
    let slo: Vec<ui::SloRow> = slo_view
        .windows
        .into_iter()
        .map(|w| ui::SloRow {
            window: w.window,
            availability: w.availability_percent.map(|a| format!("{a:.2}%")).unwrap_or("–".into()),
            burn: w.error_budget_burn_rate.map(|b| format!("{b:.2}×")).unwrap_or("–".into()),
            samples: w.samples,
        })
        .collect();
    let target = slo_view.target_availability_percent;
    let now = now_ms();
    let (active, resolved) = {
        let applied = s.cluster.state.read();
        let newest_first = || applied.state.incidents.values().rev();
        let active: Vec<_> =
            newest_first().filter(|i| i.state == IncidentState::Active).map(|i| ui::IncidentRow::new(i, now)).collect();
        let resolved: Vec<_> = newest_first()
            .filter(|i| i.state == IncidentState::Resolved)
            .take(100)
            .map(|i| ui::IncidentRow::new(i, now))
            .collect();
        (active, resolved)
    };
    let page = ui::alerts(&chrome(s, "alerts", "Alerts"), enabled, &rules, &active, &resolved, &slo, target);
    html(StatusCode::OK, page)
}

async fn settings(s: &AppState) -> Response {
    let overrides = s.cluster.state.read().state.settings.clone();
    let groups = ui::setting_groups(&s.settings.env, &overrides);
    let health = super::providers::provider_health(s);
    let pct = |r: f64| format!("{:.1}%", r * 100.0);
    let providers: Vec<ui::ProviderRow> = health
        .providers
        .into_iter()
        .map(|p| ui::ProviderRow {
            name: p.provider,
            effective: p.effective_mode,
            override_mode: p.override_mode.unwrap_or_default(),
            auto_mode: p.auto_mode.unwrap_or_default(),
            auto_reason: p.auto_reason.unwrap_or_default(),
            probes: ui::format::metric(p.probes),
            tempfail: pct(p.tempfail_rate),
            reject: pct(p.reject_rate),
            unknown: pct(p.unknown_rate),
        })
        .collect();
    // Shown once the cluster runs the farm's format; its writes are refused before.
    let farm =
        if s.cluster.state.read().state.format() >= 6 { Some(super::ui_farm::farm_config(s).await) } else { None };
    html(StatusCode::OK, ui::settings(&chrome(s, "settings", "Settings"), &groups, &providers, farm.as_ref()))
}

async fn cluster(s: &AppState) -> Response {
    let status = s.cluster.status().await;
    let loops = s.cluster.supervisor.statuses();
    html(StatusCode::OK, ui::cluster(&chrome(s, "cluster", "Cluster"), &status, &loops))
}

/// `/verifier-engine-room/static/{file}`: CSS, JS and icons from the binary.
pub async fn asset(ApiPath(name): ApiPath<String>) -> Response {
    match ui::assets::get(&name) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "public, max-age=300")], a.body)
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// State carried from one tick of the live stream to the next.
struct Ticker {
    s: AppState,
    first: bool,
    /// Commit-latency histogram at the previous tick, for per-interval quantiles.
    prev: (Vec<(f64, u64)>, u64),
}

impl Ticker {
    async fn snapshot(&mut self) -> LiveSnapshot {
        let s = &self.s;
        let status = s.cluster.status().await;
        let me = s.cluster.report();
        let (now, grace) = (now_ms(), s.grace_ms());
        let rates = s.job_rates.per_minute();
        let (fleet, incidents, jobs) = {
            let applied = s.cluster.state.read();
            let jobs = ui::jobs::summarize(&applied.state.jobs, now, &|q| rates.get(q).map(|r| r.0)).totals;
            let incidents: Vec<LiveIncident> = recent_active(&applied.state)
                .map(|i| LiveIncident {
                    id: i.id,
                    kind: i.kind.clone(),
                    subject: i.subject.clone(),
                    severity: i.severity.clone(),
                    detail: i.detail.clone(),
                    opened_ms: i.opened_ms,
                })
                .collect();
            (ui::summarize(&applied.state, now, grace), incidents, jobs)
        };
        let (buckets, count) = super::slo::commit_buckets(s);
        // Quantiles over this interval only: subtract the previous cumulative counts.
        let (prev_buckets, prev_count) = &self.prev;
        let delta: Vec<(f64, u64)> = buckets
            .iter()
            .enumerate()
            .map(|(i, (upper, c))| (*upper, c.saturating_sub(prev_buckets.get(i).map(|p| p.1).unwrap_or(0))))
            .collect();
        let n = count.saturating_sub(*prev_count);
        let ms = |q| super::slo::quantile(&delta, n, q).map(|v| (v * 1000.0 * 100.0).round() / 100.0);
        let commit_latency_ms = CommitLatency { batches: n, p50: ms(0.5), p99: ms(0.99) };
        self.prev = (buckets, count);
        let nodes = status
            .nodes
            .iter()
            .map(|n| LiveNode { id: n.id, addr: n.addr.clone(), role: n.role.clone(), healthy: n.healthy, lag: n.lag })
            .collect();
        LiveSnapshot {
            at_ms: now,
            node_id: s.cluster.id,
            role: me.role.to_string(),
            leader_id: status.leader_id,
            term: me.term,
            healthy_nodes: status.healthy_nodes,
            total_nodes: status.total_nodes,
            nodes,
            healthy_percent: fleet.healthy_percent(),
            fleet,
            jobs,
            incidents,
            commit_latency_ms,
            interval_seconds: s.with_settings(|e| e.count("SSE_INTERVAL_SECONDS")).max(1),
        }
    }
}

/// One tick of the overview's live stream (`/verifier-engine-room/events`),
/// as `ui/static/app.js` reads it.
#[derive(Debug, serde::Serialize)]
struct LiveSnapshot {
    at_ms: u64,
    node_id: u64,
    role: String,
    leader_id: Option<u64>,
    term: u64,
    healthy_nodes: usize,
    total_nodes: usize,
    nodes: Vec<LiveNode>,
    fleet: ui::FleetSummary,
    jobs: ui::jobs::JobTotals,
    incidents: Vec<LiveIncident>,
    healthy_percent: u64,
    commit_latency_ms: CommitLatency,
    interval_seconds: u64,
}

#[derive(Debug, serde::Serialize)]
struct LiveNode {
    id: u64,
    addr: String,
    role: String,
    healthy: bool,
    lag: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct LiveIncident {
    id: u64,
    kind: String,
    subject: String,
    severity: String,
    detail: String,
    opened_ms: u64,
}

/// Commit latency of heartbeat batches over the last interval.
#[derive(Debug, serde::Serialize)]
struct CommitLatency {
    batches: u64,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// `/verifier-engine-room/events`: one JSON snapshot right away, then one per
/// `SSE_INTERVAL_SECONDS` (re-read every tick, so a change applies at once).
pub async fn events(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let prev = super::slo::commit_buckets(&s);
    // The stream ends when the node shuts down, so that SIGTERM is not held
    // up by open UI tabs (the supervisor's cancellation tree).
    let stopping = Box::pin(s.cluster.supervisor.stopping().wait());
    let ticker = Ticker { s, first: true, prev };
    let stream = futures::stream::unfold(ticker, |mut t| async move {
        if !t.first {
            let secs = t.s.with_settings(|e| e.count("SSE_INTERVAL_SECONDS")).max(1);
            tokio::time::sleep(Duration::from_secs(secs)).await;
        }
        let mut event = Event::default().event("snapshot");
        if t.first {
            // Browsers wait this long before reconnecting a dropped stream.
            event = event.retry(Duration::from_millis(1_500));
            t.first = false;
        }
        let data = t.snapshot().await;
        let event = event.json_data(data).unwrap_or_else(|_| Event::default().comment("unserializable snapshot"));
        Some((Ok(event), t))
    });
    let stream = futures::StreamExt::take_until(stream, stopping);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
