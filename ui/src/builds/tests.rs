use std::collections::{BTreeMap, HashMap};

use model::state::farm::{BuildEvent, EventKind};
use model::state::job::JobState;

use super::*;

const H: u64 = 3_600_000;
const NOW: u64 = 100 * 24 * H;

fn ev(seq: u64, at_ms: u64, kind: EventKind, package: &str, version: &str) -> BuildEvent {
    BuildEvent {
        seq,
        at_ms,
        kind,
        state: match kind {
            EventKind::Failed => JobState::Dead,
            EventKind::Succeeded => JobState::Succeeded,
            _ => JobState::Queued,
        },
        job_id: seq,
        package: package.into(),
        version: version.into(),
        run_id: Some("r-1".into()),
        worker: Some("bw-1".into()),
        duration_ms: Some(1_500),
        error: (kind == EventKind::Failed).then(|| "<b>boom</b>".to_string()),
        hints: if kind == EventKind::Failed { vec![3] } else { vec![] },
    }
}

fn chrome(read_only: bool) -> Chrome {
    Chrome {
        node_id: 1,
        role: "leader".into(),
        leader: "1".into(),
        term: 1,
        page: "builds",
        title: "Builds".into(),
        poll_seconds: 2,
        nodes: vec![],
        removed: false,
        read_only,
    }
}

#[test]
fn charts_bucket_finished_builds_and_stop_at_seven_days() {
    let events = [
        ev(1, NOW - 8 * 24 * H, EventKind::Succeeded, "a", "1"), // too old: not counted
        ev(2, NOW - 3 * 24 * H, EventKind::Failed, "a", "1"),
        ev(3, NOW - 2 * H - 5, EventKind::Succeeded, "a", "1"),
        ev(4, NOW - 2 * H, EventKind::Failed, "a", "1"),
        ev(5, NOW - 60_000, EventKind::Succeeded, "a", "1"),
        ev(6, NOW - 1_000, EventKind::Queued, "a", "1"), // not a finished build
    ];
    let [hourly, daily] = charts(events.iter().rev(), NOW);
    assert_eq!((hourly.bars.len(), daily.bars.len()), (24, 7));
    assert_eq!((hourly.finished, daily.finished), (3, 4));
    let last = &hourly.bars[23];
    assert_eq!((last.class, last.h), ("ok", CHART_H - 10 - 22), "the last hour: 1 of 1");
    let two_back = &hourly.bars[21];
    assert_eq!(two_back.class, "bad", "{:?}", two_back.title);
    assert!(two_back.title.ends_with("1 succeeded, 1 failed (50.0%)"), "{}", two_back.title);
    assert_eq!(hourly.bars[0].class, "none");
    assert_eq!(daily.bars[3].class, "bad", "3 days back: one failure");
    assert!(hourly.bars.windows(2).all(|w| w[0].x < w[1].x), "oldest left");
    assert!(hourly.bars.iter().all(|b| b.y + b.h <= CHART_H && b.x + hourly.bar_w <= CHART_W));
    assert_eq!(chart_y(1.0), 10);
}

#[test]
fn history_filter_cleans_round_trips_and_bounds_days() {
    let q: HashMap<String, String> = [
        ("package", " numpy "),
        ("status", "bogus"),
        ("since", "2026-11-30"),
        ("until", "2026-13-01"),
        ("limit", "9999"),
        ("cursor", "77"),
        ("run_id", "r 1&x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let f = HistoryFilter::from_query(&q);
    assert_eq!((f.package.as_str(), f.status.as_str(), f.until.as_str()), ("numpy", "", ""));
    assert_eq!((f.limit, f.cursor), (MAX_PAGE, Some(77)));
    assert_eq!(f.query(Some(5)), "package=numpy&run_id=r%201%26x&since=2026-11-30&limit=500&cursor=5");
    assert_eq!(f.since_bound().as_deref(), Some("2026-11-30T00:00:00.000Z"));
    let g = HistoryFilter { until: "2026-11-30".into(), ..Default::default() };
    assert_eq!(g.until_bound().as_deref(), Some("2026-12-01T00:00:00.000Z"), "the day is included");
    assert!(f.is_filtered() && !HistoryFilter::default().is_filtered());
    assert_eq!(HistoryFilter::default().query(None), "");
    let st: HashMap<String, String> = [("status".to_string(), "dead".to_string())].into();
    assert_eq!(HistoryFilter::from_query(&st).status, "dead");
}

#[test]
fn actions_go_on_each_jobs_newest_row_only() {
    let mut rows: Vec<EventRow> = [ev(3, 3, EventKind::Failed, "a", "1"), ev(2, 2, EventKind::Started, "a", "1")]
        .iter()
        .map(|e| EventRow { job_id: 9, ..EventRow::new(e, NOW, true) })
        .collect();
    offer_actions(&mut rows, &|id| (id == 9).then_some(JobState::Dead));
    assert_eq!((rows[0].can_requeue, rows[0].can_cancel), (true, false));
    assert_eq!((rows[1].can_requeue, rows[1].can_cancel), (false, false));
    assert_eq!(
        (duration(850), duration(12_340), duration(245_000)),
        ("850 ms".into(), "12.3 s".into(), "4m 05s".into())
    );
}

#[test]
fn versions_take_the_latest_event_logs_and_artifacts() {
    let events = [
        ev(1, 10, EventKind::Queued, "numpy", "1.26"),
        ev(2, 20, EventKind::Failed, "numpy", "1.26"),
        ev(3, 30, EventKind::Queued, "numpy", "2.0"),
        ev(4, 40, EventKind::Queued, "scipy", "1.13"),
        ev(5, 50, EventKind::Queued, "numpy", "1.26"),
        ev(6, 60, EventKind::Succeeded, "numpy", "1.26"),
    ];
    let logs = BTreeMap::from([("1.26".to_string(), 40u64), ("0.9".to_string(), 5)]);
    let artifacts = BTreeMap::from([("2.0".to_string(), vec!["https://x/numpy-2.0.whl".to_string()])]);
    let v = versions("numpy", events.iter().rev(), &logs, &artifacts, NOW);
    let names: Vec<&str> = v.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(names, ["1.26", "2.0", "0.9"]);
    assert_eq!(v[0].latest.as_ref().map(|e| e.kind), Some("succeeded"));
    assert_eq!((v[0].builds, v[0].log_lines), (2, 40));
    assert_eq!(v[1].artifacts, ["https://x/numpy-2.0.whl"]);
    assert!(v[2].latest.is_none() && v[2].log_lines == 5);
    assert!(is_link("https://x") && !is_link("javascript:alert(1)") && !is_link("/srv/wheels/a.whl"));
}

#[test]
fn pages_escape_user_data_and_hide_controls_when_read_only() {
    let e = ev(1, NOW - 1_000, EventKind::Failed, "pkg<script>", "1\"x");
    let mut rows = vec![EventRow::new(&e, NOW, true)];
    offer_actions(&mut rows, &|_| Some(JobState::Dead));
    let mut results = BuildResults {
        cards: Cards::new(
            Window::new([1, 1, 0, 1, 0, 0], Some(0.0)),
            Window::new([1, 1, 0, 1, 0, 0], Some(0.0)),
            (2, 1, Some(65_000)),
            (3, 1, Some(0.75)),
            Some(("run<1>".into(), NOW - 60_000)),
            1,
            NOW,
        ),
        charts: charts(std::iter::once(&e), NOW),
        rows,
        filter: HistoryFilter::default(),
        next_cursor: Some(1),
        error: Some("<i>bad filter</i>".into()),
        read_only: false,
    };
    let html = builds_page(&chrome(false), &results);
    for raw in ["pkg<script>", "<b>boom</b>", "1\"x", "run<1>", "<i>bad"] {
        assert!(!html.contains(raw), "unescaped {raw:?}");
    }
    assert!(html.contains("hint #3") && html.contains(r#"data-job-action="requeue""#));
    assert!(html.contains("75.0%") && html.contains("1m"), "hit rate and oldest queued");
    assert!(html.contains("id=\"queue-clear\"") && html.contains("cursor=1"));
    results.read_only = true;
    let ro = build_results(&results);
    assert!(!ro.contains("data-job-action"));
    assert!(!builds_page(&chrome(true), &results).contains("queue-clear"));
    let v = versions("pkg<script>", std::iter::once(&e), &BTreeMap::new(), &BTreeMap::new(), NOW);
    let p = package_page(&chrome(false), "pkg<script>", &v, &results.rows);
    assert!(!p.contains("pkg<script>") && p.contains("data-rebuild"));
}

#[test]
fn fifty_thousand_events_render_in_bounded_time() {
    let kinds = [EventKind::Queued, EventKind::Started, EventKind::Succeeded, EventKind::Failed];
    let events: Vec<BuildEvent> = (0..50_000u64)
        .map(|i| {
            ev(i + 1, NOW - (50_000 - i) * 10_000, kinds[((i / 500) % 4) as usize], &format!("p{}", i % 500), "1.0")
        })
        .collect();
    let t0 = std::time::Instant::now();
    let [hourly, daily] = charts(events.iter().rev(), NOW);
    let v = versions("p7", events.iter().rev(), &BTreeMap::new(), &BTreeMap::new(), NOW);
    let counts = crate::hints::match_counts(events.iter());
    let took = t0.elapsed();
    assert!(hourly.finished > 0 && daily.finished >= hourly.finished);
    assert_eq!((v.len(), v[0].builds), (1, 25), "p7's 100 events: 25 queued");
    assert_eq!(counts.get(&3), Some(&12_500));
    assert!(took < std::time::Duration::from_secs(2), "one render's walks took {took:?}");
}
