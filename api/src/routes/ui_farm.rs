//! The build farm's pages (Builds, a package, a build log, Plan, Hints) and
//! the hint pattern test. They read through the farm API's own handlers
//! (`/summary`, `/history`, `/plan`, `/artifacts`, `/config`), so a page
//! and the JSON it mirrors cannot disagree; changes go through the same
//! JSON routes as any client.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use model::state::farm::{BuildEvent, EventKind};
use model::views::parse_rfc3339;
use raft_store::cluster::now_ms;

use super::farm::{self as api, HistoryQuery};
use super::farm_store::{self as store, ArtifactQuery, VersionQuery};
use super::ui::{chrome, html, not_found, read_only};
use crate::extract::{ApiPath, ApiQuery};
use crate::AppState;

/// How long a search inside one build's log may scan.
const LOG_SEARCH_BUDGET: Duration = Duration::from_secs(1);
/// Events a package page lists.
const PACKAGE_EVENTS: usize = 50;

/// An API event as the model's, for the page's rows.
fn event_of(v: &api::EventView) -> BuildEvent {
    BuildEvent {
        seq: v.seq,
        at_ms: parse_rfc3339(&v.at).unwrap_or(0),
        kind: v.kind,
        state: v.state,
        job_id: v.job_id.parse().unwrap_or(0),
        package: v.package.clone(),
        version: v.version.clone(),
        run_id: v.run_id.clone(),
        worker: v.worker.clone(),
        duration_ms: v.duration_ms,
        error: v.error.clone(),
        hints: v.hints.clone(),
    }
}

/// One page of `/history` as rows (with their log links and job actions),
/// or the API's refusal.
async fn history_rows(
    s: &AppState,
    q: HistoryQuery,
    now: u64,
) -> Result<(Vec<ui::builds::EventRow>, Option<u64>), String> {
    let page = api::history(State(s.clone()), ApiQuery(q)).await.map_err(|e| e.message)?.0;
    let applied = s.cluster.state.read();
    let farm = &applied.state.farm;
    let mut rows: Vec<_> = page
        .events
        .iter()
        .map(|v| {
            let has_log = farm.logs.contains_key(&(v.package.clone(), v.version.clone()));
            ui::builds::EventRow::new(&event_of(v), now, has_log)
        })
        .collect();
    let jobs = &applied.state.jobs.by_id;
    ui::builds::offer_actions(&mut rows, &|id| jobs.get(&id).map(|j| j.state));
    Ok((rows, page.next_cursor.and_then(|c| c.parse().ok())))
}

fn window(c: &api::Counts) -> ui::builds::Window {
    ui::builds::Window::new([c.queued, c.started, c.succeeded, c.failed, c.retried, c.cancelled], c.success_rate)
}

/// `/verifier-engine-room/builds`: cards, charts, the history.
pub(crate) async fn builds(s: &AppState, query: &HashMap<String, String>) -> Response {
    let filter = ui::builds::HistoryFilter::from_query(query);
    let now = now_ms();
    let summary = api::summary(State(s.clone())).await.0;
    let stats = api::queue_stats(State(s.clone())).await.0;
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let q = HistoryQuery {
        package: some(&filter.package),
        version: some(&filter.version),
        status: serde_json::from_value(serde_json::Value::String(filter.status.clone())).ok(),
        run_id: some(&filter.run_id),
        since: filter.since_bound(),
        until: filter.until_bound(),
        limit: Some(filter.limit),
        cursor: filter.cursor.map(|c| c.to_string()),
    };
    let (rows, next_cursor, error) = match history_rows(s, q, now).await {
        Ok((rows, next)) => (rows, next, None),
        Err(e) => (Vec::new(), None, Some(e)),
    };
    let charts = ui::builds::charts(s.cluster.state.read().state.farm.events.iter().rev(), now);
    let last_run = summary.last_run.map(|r| (r.run_id.unwrap_or_default(), parse_rfc3339(&r.at).unwrap_or(0)));
    let cards = ui::builds::Cards::new(
        window(&summary.last_24h),
        window(&summary.last_7d),
        (summary.queue_depth, summary.running, stats.oldest_age_seconds.map(|s| (s * 1000.0) as u64)),
        (summary.cache.hits, summary.cache.misses, summary.cache.hit_rate),
        last_run,
        summary.events_kept,
        now,
    );
    let results = ui::builds::BuildResults { cards, charts, rows, filter, next_cursor, error, read_only: read_only() };
    if query.get("partial").is_some_and(|p| p == "rows") {
        return html(StatusCode::OK, ui::builds::build_results(&results));
    }
    html(StatusCode::OK, ui::builds::builds_page(&chrome(s, "builds", "Builds"), &results))
}

/// `/verifier-engine-room/builds/{package}`: its versions and recent events.
pub async fn package(State(s): State<AppState>, ApiPath(package): ApiPath<String>) -> Response {
    if api::check_package("package", &package).is_err() {
        return not_found(&s, &format!("no package {package:?}"));
    }
    let now = now_ms();
    let chrome = chrome(&s, "builds", format!("Package {package}"));
    let artifacts: BTreeMap<String, Vec<String>> =
        match store::artifacts(State(s.clone()), ApiQuery(ArtifactQuery { package: Some(package.clone()) })).await {
            Ok(a) => a.0.artifacts.into_iter().map(|a| (a.version, a.links)).collect(),
            Err(_) => BTreeMap::new(),
        };
    let q = HistoryQuery { package: Some(package.clone()), limit: Some(PACKAGE_EVENTS), ..Default::default() };
    let recent = history_rows(&s, q, now).await.map(|r| r.0).unwrap_or_default();
    let versions = {
        let applied = s.cluster.state.read();
        let farm = &applied.state.farm;
        let logs: BTreeMap<String, u64> = farm
            .logs
            .range((package.clone(), String::new())..)
            .take_while(|((p, _), _)| *p == package)
            .take(ui::builds::MAX_VERSIONS)
            .map(|((_, v), l)| (v.clone(), l.lines))
            .collect();
        ui::builds::versions(&package, farm.events.iter().rev(), &logs, &artifacts, now)
    };
    html(StatusCode::OK, ui::builds::package_page(&chrome, &package, &versions, &recent))
}

/// `/verifier-engine-room/logs/{name}/{version}?q=&from=`: one build's log.
pub async fn log(
    State(s): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let missing = |s: &AppState| not_found(s, &format!("no log stored for {name} {version}"));
    if api::check_package("name", &name).is_err() || api::check_package("version", &version).is_err() {
        return missing(&s);
    }
    let q = ui::format::cut(query.get("q").map(|q| q.trim()).unwrap_or(""), ui::build_log::MAX_Q).to_string();
    let now = now_ms();
    let chrome = chrome(&s, "builds", format!("Build log {name} {version}"));
    // `missing` builds a page, which reads the settings: not under the state lock.
    let found = {
        let applied = s.cluster.state.read();
        let farm = &applied.state.farm;
        let Some(total) = farm.logs.get(&(name.clone(), version.clone())).map(|l| l.lines) else {
            drop(applied);
            return missing(&s);
        };
        // The latest event of this build, and the hints of its latest failure
        // that recorded some: one walk from the newest, stopping when both are found.
        let (mut latest, mut matched): (Option<&BuildEvent>, Option<&BuildEvent>) = (None, None);
        for e in farm.events.iter().rev().filter(|e| e.package == name && e.version == version) {
            latest = latest.or(Some(e));
            if !e.hints.is_empty() {
                matched = Some(e);
                break;
            }
        }
        let hints: Vec<(ui::build_log::HintRef, Option<_>)> = matched
            .map(|e| e.hints.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|id| match farm.hints.get(&id) {
                Some(h) => (
                    ui::build_log::HintRef { id, pattern: h.pattern.clone(), note: h.recipe.note.clone(), lines: 0 },
                    model::state::farm::compile(&h.pattern).ok(),
                ),
                None => (ui::build_log::HintRef { id, pattern: String::new(), note: String::new(), lines: 0 }, None),
            })
            .collect();
        (total, latest.map(|e| ui::builds::EventRow::new(e, now, true)), hints)
    };
    let (total, event, hints) = found;
    let from = ui::build_log::first_line(total, query.get("from").and_then(|f| f.parse().ok()));
    let store = s.cluster.farm_blobs.clone();
    let (n, v, needle) = (name.clone(), version.clone(), q.clone());
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<_>, u64, bool)> {
        let page = ui::build_log::PAGE_LINES as usize;
        if needle.is_empty() {
            let lines = store.lines(&n, &v, from, page)?;
            return Ok((lines, 0, true));
        }
        let deadline = Instant::now() + LOG_SEARCH_BUDGET;
        let (mut hits, mut scanned, mut at) = (Vec::new(), 0u64, 0u64);
        loop {
            let chunk = store.lines(&n, &v, at, page)?;
            let Some(last) = chunk.last().map(|l| l.line) else { return Ok((hits, scanned, true)) };
            scanned += chunk.len() as u64;
            for l in chunk {
                if ui::build_log::contains_ci(&l.text, &needle) {
                    hits.push(l);
                    if hits.len() == ui::build_log::MAX_HITS {
                        return Ok((hits, scanned, false));
                    }
                }
            }
            at = last + 1;
            if Instant::now() > deadline {
                return Ok((hits, scanned, false));
            }
        }
    })
    .await;
    let (lines, scanned, complete) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return html(StatusCode::SERVICE_UNAVAILABLE, format!("the log store did not answer: {e}")),
        Err(e) => return html(StatusCode::SERVICE_UNAVAILABLE, format!("the log read failed: {e}")),
    };
    let lines = lines.into_iter().map(|l| (l.line, l.at_ms, l.text)).collect();
    let (refs, regexes): (Vec<_>, Vec<_>) = hints.into_iter().unzip();
    let ids: Vec<u64> = refs.iter().map(|r| r.id).collect();
    let matcher = |text: &str| -> Vec<u64> {
        ids.iter()
            .zip(&regexes)
            .filter(|(_, re)| re.as_ref().is_some_and(|re| re.is_match(text)))
            .map(|(id, _)| *id)
            .collect()
    };
    let view = ui::build_log::LogView::new(
        &name,
        &version,
        total,
        &q,
        if q.is_empty() { from } else { 0 },
        lines,
        &matcher,
        refs,
        event,
        (scanned, complete),
    );
    html(StatusCode::OK, ui::build_log::log_page(&chrome, &view))
}

/// `/verifier-engine-room/hints`.
pub(crate) fn hints(s: &AppState) -> Response {
    let now = now_ms();
    let chrome = chrome(s, "hints", "Hints");
    let rows: Vec<_> = {
        let applied = s.cluster.state.read();
        let farm = &applied.state.farm;
        let counts = ui::hints::match_counts(farm.events.iter());
        farm.hints.values().map(|h| ui::hints::HintRow::new(h, counts.get(&h.id).copied().unwrap_or(0), now)).collect()
    };
    html(StatusCode::OK, ui::hints::hints_page(&chrome, &rows))
}

/// Body limit of the pattern test: the pasted log, the pattern, JSON quoting.
pub const TEST_BODY_LIMIT: usize = 2 * ui::hints::MAX_TEST_BYTES + 4096;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternTestBody {
    pattern: String,
    #[serde(default)]
    log: String,
}

/// `POST /verifier-engine-room/hints/test` (`{"pattern", "log"}`): where the
/// pattern matches the pasted log, as an HTML fragment. It changes nothing;
/// it still wants the UI's CSRF header, like every script call.
pub async fn test_pattern(
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !headers.contains_key(crate::auth::CSRF_HEADER) {
        return html(StatusCode::FORBIDDEN, format!("send the {} header", crate::auth::CSRF_HEADER));
    }
    let Ok(body) = body else {
        return html(StatusCode::PAYLOAD_TOO_LARGE, "the pasted log is too large; paste its end".into());
    };
    let b: PatternTestBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return html(StatusCode::BAD_REQUEST, format!("expected {{\"pattern\", \"log\"}}: {e}")),
    };
    let t = ui::hints::test_pattern(&b.pattern, &b.log);
    html(StatusCode::OK, ui::hints::test_fragment(&t))
}

/// A plan node's colour: its latest build, by package and version when the
/// plan names one, else by package.
fn node_status(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Succeeded => "succeeded",
        EventKind::Failed => "failed",
        EventKind::Started => "running",
        EventKind::Queued | EventKind::Retried => "queued",
        EventKind::Cancelled => "cancelled",
    }
}

/// `/verifier-engine-room/plan?version=`: the plan drawn as a graph.
pub(crate) async fn plan(s: &AppState, query: &HashMap<String, String>) -> Response {
    let chrome = chrome(s, "plan", "Build plan");
    let version = query.get("version").and_then(|v| v.parse::<u64>().ok());
    let blob = store::plan(State(s.clone()), ApiQuery(VersionQuery { version })).await;
    let (meta, view) = match blob {
        Ok(b) => {
            let b = b.0;
            let doc = b.document.unwrap_or_default();
            // Each package's latest event (and each version's), borrowed from
            // the state for as long as the layout takes: one walk, no copies.
            let view = {
                let applied = s.cluster.state.read();
                let (mut by_package, mut by_version) = (HashMap::new(), HashMap::new());
                for e in applied.state.farm.events.iter().rev() {
                    by_package.entry(e.package.as_str()).or_insert(e.kind);
                    by_version.entry((e.package.as_str(), e.version.as_str())).or_insert(e.kind);
                }
                let status = |n: &ui::plan::PlanNode| {
                    let kind = match &n.version {
                        Some(v) => {
                            by_version.get(&(n.name.as_str(), v.as_str())).or_else(|| by_package.get(n.name.as_str()))
                        }
                        None => by_package.get(n.name.as_str()),
                    };
                    kind.map(|k| node_status(*k).to_string())
                };
                ui::plan::view(&doc, &status)
            };
            let meta = ui::plan::PlanMeta {
                version: b.version,
                sha256: b.sha256,
                size: ui::format::thousands(b.size),
                at: ui::format::utc(parse_rfc3339(&b.at).unwrap_or(0)),
                versions: b.versions,
            };
            (Some(meta), view)
        }
        Err(e) => (None, ui::plan::PlanView::Missing(e.message)),
    };
    html(StatusCode::OK, ui::plan::plan_page(&chrome, meta.as_ref(), &view))
}

/// The farm's config for the Settings page.
pub(crate) async fn farm_config(s: &AppState) -> ui::FarmConfigForm {
    let c = api::config(State(s.clone())).await.0;
    let strategy = serde_json::to_value(c.strategy).ok().and_then(|v| v.as_str().map(str::to_string));
    ui::FarmConfigForm {
        strategy: strategy.unwrap_or_else(|| "pinned".into()),
        python: c.python,
        platform: c.platform,
        index_url: c.index_url,
        env_text: c.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n"),
        retention_days: c.build_log_retention_days,
        max_bytes: ui::format::thousands(c.build_log_max_bytes),
        log_bytes: ui::format::thousands(c.build_log_bytes),
        reads_open: c.reads_open,
    }
}
