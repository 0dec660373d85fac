//! The Builds page: the farm's summary cards, the success-rate charts (SVG
//! drawn here), the history of build events with its filters and cursor,
//! and one package's versions. The API gathers the numbers (its own
//! `/summary` and `/history` answers); this module turns them into rows.
//! Package names, versions, run ids, workers and errors are user data: they
//! reach the page only through askama's escaping.

use std::collections::HashMap;

use askama::Template;
use model::state::farm::{BuildEvent, EventKind};

use crate::format::{age, ago, clip, cut, thousands, utc};
use crate::pages::{encode, render, Chrome};

/// History rows unless the operator picks another size (the API's default).
pub const PAGE: usize = 50;
/// The API's largest page.
pub const MAX_PAGE: usize = 500;
/// Characters of an error in a table cell.
const ERROR_CELL: usize = 140;
/// Versions a package page lists.
pub const MAX_VERSIONS: usize = 200;
/// `/history?status=` values offered (the API's list).
pub const STATUSES: [&str; 8] = ["queued", "started", "running", "succeeded", "failed", "dead", "retried", "cancelled"];

// ---------------------------------------------------------------- cards

/// Event counts over one window, as the cards show them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub queued: u64,
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub cancelled: u64,
    /// `92.5%`, or `–` with no finished build.
    pub success_rate: String,
    /// `ok`, `warn` or `bad` for the card's colour.
    pub class: &'static str,
}

impl Window {
    /// From the API's counts; `rate` is succeeded / (succeeded + failed).
    pub fn new(counts: [u64; 6], rate: Option<f64>) -> Self {
        let [queued, started, succeeded, failed, retried, cancelled] = counts;
        Window {
            queued,
            started,
            succeeded,
            failed,
            retried,
            cancelled,
            success_rate: rate.map(percent).unwrap_or_else(|| "–".into()),
            class: rate.map_or("", rate_class),
        }
    }
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn rate_class(r: f64) -> &'static str {
    if r >= 0.9 {
        "ok"
    } else if r >= 0.6 {
        "warn"
    } else {
        "bad"
    }
}

/// The summary cards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cards {
    pub day: Window,
    pub week: Window,
    /// Builds queued or waiting for a retry.
    pub queue_depth: u64,
    pub running: u64,
    pub oldest_queued: String,
    pub cache_hits: String,
    pub cache_misses: String,
    pub hit_rate: String,
    pub last_run: String,
    pub last_run_at: String,
    pub events_kept: String,
}

impl Cards {
    /// The cards from the API's summary figures.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        day: Window,
        week: Window,
        (queue_depth, running, oldest_ms): (u64, u64, Option<u64>),
        (hits, misses, hit_rate): (u64, u64, Option<f64>),
        last_run: Option<(String, u64)>,
        events_kept: usize,
        now_ms: u64,
    ) -> Self {
        let (last_run, last_run_at) = match last_run {
            Some((id, at)) => (id, ago(at, now_ms)),
            None => ("–".into(), "no run id seen".into()),
        };
        Cards {
            day,
            week,
            queue_depth,
            running,
            oldest_queued: oldest_ms.map(age).unwrap_or_else(|| "–".into()),
            cache_hits: thousands(hits),
            cache_misses: thousands(misses),
            hit_rate: hit_rate.map(percent).unwrap_or_else(|| "–".into()),
            last_run,
            last_run_at,
            events_kept: thousands(events_kept as u64),
        }
    }
}

// ---------------------------------------------------------------- charts

/// One bar of a success-rate chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RateBar {
    pub x: u32,
    pub y: u32,
    pub h: u32,
    /// `ok`, `warn`, `bad`, or `none` (no finished build in the bucket).
    pub class: &'static str,
    /// The tooltip: the bucket, its counts and rate.
    pub title: String,
}

/// A success-rate chart: one bar per bucket, oldest left.
#[derive(Debug, Clone, PartialEq)]
pub struct RateChart {
    pub title: &'static str,
    pub bars: Vec<RateBar>,
    pub bar_w: u32,
    pub first: String,
    pub last: String,
    /// Finished builds over the chart.
    pub finished: u64,
}

/// Chart geometry (the same box as the overview's charts).
pub const CHART_W: u32 = 600;
pub const CHART_H: u32 = 160;
const CHART_L: u32 = 40;
const CHART_T: u32 = 10;
const CHART_B: u32 = 22;

/// Success rate per hour over 24 hours and per day over 7 days, from the
/// events newest first; the walk stops at the first event older than 7 days.
/// Rate as in `/summary`: succeeded / (succeeded + failed with no retry left).
pub fn charts<'a>(newest_first: impl Iterator<Item = &'a BuildEvent>, now_ms: u64) -> [RateChart; 2] {
    const HOUR: u64 = 3_600_000;
    const DAY: u64 = 24 * HOUR;
    let (mut hours, mut days) = ([(0u64, 0u64); 24], [(0u64, 0u64); 7]);
    for e in newest_first {
        let back = now_ms.saturating_sub(e.at_ms);
        if back >= 7 * DAY {
            break;
        }
        let hit = match e.kind {
            EventKind::Succeeded => (1, 0),
            EventKind::Failed => (0, 1),
            _ => continue,
        };
        let d = &mut days[6 - (back / DAY) as usize];
        (d.0, d.1) = (d.0 + hit.0, d.1 + hit.1);
        if back < DAY {
            let h = &mut hours[23 - (back / HOUR) as usize];
            (h.0, h.1) = (h.0 + hit.0, h.1 + hit.1);
        }
    }
    let span = |n: usize, width: u64, i: usize| {
        let end = now_ms.saturating_sub((n - 1 - i) as u64 * width);
        (end.saturating_sub(width), end)
    };
    let hourly = chart("Success rate per hour, last 24 h", &hours, |i| span(24, HOUR, i));
    let daily = chart("Success rate per day, last 7 d", &days, |i| span(7, DAY, i));
    [hourly, daily]
}

fn chart(title: &'static str, buckets: &[(u64, u64)], span: impl Fn(usize) -> (u64, u64)) -> RateChart {
    let n = buckets.len() as u32;
    let plot_w = CHART_W - CHART_L - 8;
    let plot_h = CHART_H - CHART_T - CHART_B;
    let slot = plot_w / n;
    let bar_w = slot.saturating_sub(4).max(2);
    let bars = buckets
        .iter()
        .enumerate()
        .map(|(i, &(ok, bad))| {
            let (from, to) = span(i);
            let when = format!("{} – {} UTC", utc(from), &utc(to)[11..16]);
            let x = CHART_L + i as u32 * slot + (slot - bar_w) / 2;
            if ok + bad == 0 {
                return RateBar {
                    x,
                    y: CHART_T + plot_h - 2,
                    h: 2,
                    class: "none",
                    title: format!("{when}: no finished build"),
                };
            }
            let r = ok as f64 / (ok + bad) as f64;
            let h = ((plot_h as f64) * r).round().max(2.0) as u32;
            RateBar {
                x,
                y: CHART_T + plot_h - h,
                h,
                class: rate_class(r),
                title: format!("{when}: {ok} succeeded, {bad} failed ({})", percent(r)),
            }
        })
        .collect();
    let label = |i: usize| utc(span(i).0)[5..16].to_string();
    RateChart {
        title,
        bars,
        bar_w,
        first: label(0),
        last: label(buckets.len() - 1),
        finished: buckets.iter().map(|(a, b)| a + b).sum(),
    }
}

/// The y of a rate line on the charts (`r` in 0..=1), for the grid.
pub fn chart_y(r: f64) -> u32 {
    CHART_T + ((CHART_H - CHART_T - CHART_B) as f64 * (1.0 - r)).round() as u32
}

/// The charts' grid lines: their y and label.
pub fn chart_grid() -> [(u32, &'static str); 3] {
    [(chart_y(1.0), "100%"), (chart_y(0.5), "50%"), (chart_y(0.0), "0%")]
}

// ---------------------------------------------------------------- history

/// The history filters as typed ("" = any), with the names of `/history`;
/// dates are UTC days (`YYYY-MM-DD`), both included.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryFilter {
    pub package: String,
    pub version: String,
    pub status: String,
    pub run_id: String,
    pub since: String,
    pub until: String,
    pub limit: usize,
    /// `next_cursor` of the page before.
    pub cursor: Option<u64>,
}

impl Default for HistoryFilter {
    fn default() -> Self {
        HistoryFilter {
            package: String::new(),
            version: String::new(),
            status: String::new(),
            run_id: String::new(),
            since: String::new(),
            until: String::new(),
            limit: PAGE,
            cursor: None,
        }
    }
}

/// A `YYYY-MM-DD` day as Unix ms at its start, if it is one.
pub fn day_start(day: &str) -> Option<u64> {
    (day.len() == 10).then(|| model::views::parse_rfc3339(&format!("{day}T00:00:00Z")))?
}

impl HistoryFilter {
    /// The filter from a page's query, cleaned: an unknown status or a bad
    /// day means any, the size is clamped, an unreadable cursor starts from
    /// the newest. Names are passed on as typed (the API says what is wrong).
    pub fn from_query(query: &HashMap<String, String>) -> Self {
        let get = |k: &str| cut(query.get(k).map(|v| v.trim()).unwrap_or_default(), 128).to_string();
        let day = |k: &str| Some(get(k)).filter(|d| day_start(d).is_some()).unwrap_or_default();
        let status = get("status");
        HistoryFilter {
            package: get("package"),
            version: get("version"),
            status: if STATUSES.contains(&status.as_str()) { status } else { String::new() },
            run_id: get("run_id"),
            since: day("since"),
            until: day("until"),
            limit: get("limit").parse().unwrap_or(PAGE).clamp(1, MAX_PAGE),
            cursor: get("cursor").parse().ok(),
        }
    }

    /// The query string of this filter from `cursor` on.
    pub fn query(&self, cursor: Option<u64>) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("package", &self.package),
            ("version", &self.version),
            ("status", &self.status),
            ("run_id", &self.run_id),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if self.limit != PAGE {
            parts.push(format!("limit={}", self.limit));
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={c}"));
        }
        parts.join("&")
    }

    pub fn is_filtered(&self) -> bool {
        [&self.package, &self.version, &self.status, &self.run_id, &self.since, &self.until]
            .iter()
            .any(|v| !v.is_empty())
    }

    /// `since` as the API's RFC 3339 bound (start of the day).
    pub fn since_bound(&self) -> Option<String> {
        day_start(&self.since).map(model::views::rfc3339)
    }

    /// `until` as the API's exclusive bound: the start of the next day.
    pub fn until_bound(&self) -> Option<String> {
        day_start(&self.until).map(|ms| model::views::rfc3339(ms + 86_400_000))
    }
}

/// One build event as a history row.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: u64,
    pub at: String,
    pub ago: String,
    pub kind: &'static str,
    /// The build's state after the event.
    pub state: &'static str,
    pub job_id: u64,
    pub package: String,
    pub version: String,
    pub run_id: String,
    pub worker: String,
    pub duration: String,
    pub error: String,
    pub hints: Vec<u64>,
    /// A log is stored for this package and version.
    pub has_log: bool,
    /// Actions on the build's job as it is now (only on its newest row of a page).
    pub can_cancel: bool,
    pub can_requeue: bool,
}

impl EventRow {
    pub fn new(e: &BuildEvent, now_ms: u64, has_log: bool) -> Self {
        EventRow {
            seq: e.seq,
            at: utc(e.at_ms),
            ago: ago(e.at_ms, now_ms),
            kind: e.kind.as_str(),
            state: e.state.as_str(),
            job_id: e.job_id,
            package: e.package.clone(),
            version: e.version.clone(),
            run_id: e.run_id.clone().unwrap_or_default(),
            worker: e.worker.clone().unwrap_or_default(),
            duration: e.duration_ms.map(duration).unwrap_or_default(),
            error: e.error.as_deref().map(|x| clip(x, ERROR_CELL)).unwrap_or_default(),
            hints: e.hints.clone(),
            has_log,
            can_cancel: false,
            can_requeue: false,
        }
    }

    /// The badge class of the event's kind.
    pub fn class(&self) -> &'static str {
        kind_class(self.kind)
    }
}

/// The badge class of an event kind (the jobs' state colours).
pub fn kind_class(kind: &str) -> &'static str {
    match kind {
        "queued" => "js-queued",
        "started" => "js-running",
        "succeeded" => "js-succeeded",
        "failed" => "js-dead",
        "retried" => "js-failed",
        _ => "js-cancelled",
    }
}

/// `850 ms`, `12.3 s`, `4m 05s`.
pub fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

/// Give each job's newest row of the page its actions, from the job's state
/// now (`state(job_id)`); older rows of the same job get none.
pub fn offer_actions(rows: &mut [EventRow], state: &dyn Fn(u64) -> Option<model::state::job::JobState>) {
    let mut seen = std::collections::HashSet::new();
    for r in rows.iter_mut() {
        if !seen.insert(r.job_id) {
            continue;
        }
        if let Some(s) = state(r.job_id) {
            r.can_cancel = crate::jobs::cancellable(s);
            r.can_requeue = crate::jobs::requeueable(s);
        }
    }
}

/// The cards, charts and one page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildResults {
    pub cards: Cards,
    pub charts: [RateChart; 2],
    pub rows: Vec<EventRow>,
    pub filter: HistoryFilter,
    pub next_cursor: Option<u64>,
    /// The API refused the filter: its message.
    pub error: Option<String>,
    pub read_only: bool,
}

impl BuildResults {
    pub fn next_query(&self) -> Option<String> {
        self.next_cursor.map(|c| self.filter.query(Some(c)))
    }
    pub fn newest_query(&self) -> Option<String> {
        self.filter.cursor.map(|_| self.filter.query(None))
    }
}

#[derive(Template)]
#[template(path = "builds.html")]
struct BuildsPage<'a> {
    chrome: &'a Chrome,
    results: &'a BuildResults,
    statuses: [&'static str; 8],
}

/// The Builds page: cards, charts, enqueue and clear, the history.
pub fn builds_page(chrome: &Chrome, results: &BuildResults) -> String {
    render(&BuildsPage { chrome, results, statuses: STATUSES })
}

#[derive(Template)]
#[template(path = "build_results.html")]
struct BuildResultsFragment<'a> {
    results: &'a BuildResults,
}

/// The cards, charts and table, swapped in by the page's script.
pub fn build_results(results: &BuildResults) -> String {
    render(&BuildResultsFragment { results })
}

mod package;
pub use package::{is_link, package_page, versions, VersionRow};

#[cfg(test)]
mod tests;
