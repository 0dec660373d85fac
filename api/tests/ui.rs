//! In-process checks of the operator UI routes on a real single-node cluster:
//! basic auth with a challenge, every page rendering the state it should, the
//! workers table's filters and paging, embedded assets, the live stream, and a
//! browser-style write (basic auth + CSRF header) showing up on the pages.

use std::time::Duration;

use api::AppState;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;

use common::{Start, TOKEN};

const BASIC: &str = "Basic dXNlcjp0ZXN0LXRva2Vu"; // user:test-token

/// A one-node cluster that has elected itself leader, so writes commit.
async fn leader(dir: &std::path::Path) -> AppState {
    common::one_node(dir, Start::Leader, Duration::from_secs(5)).await
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn get(app: &axum::Router, uri: &str, auth: Option<&str>) -> Answer {
    let mut req = Request::builder().uri(uri);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

async fn beat(app: &axum::Router, id: &str, pool: &str) {
    let body = format!(
        r#"{{"worker_id":"{id}","host":"vps-{id}","ip":"127.0.0.5","pool":"{pool}","version":"1.4.2","status":"running","process_state":"running","metrics":{{"processed":1200,"errors":14,"in_flight":3}},"smtp_metrics":{{"2xx":900,"4xx":200}}}}"#
    );
    let req = Request::post("/api/workers/heartbeat")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let a = send(app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn pages_need_basic_auth_and_challenge_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    for uri in ["/verifier-engine-room/overview", "/verifier-engine-room/events", "/verifier-engine-room/static/app.js"]
    {
        let a = get(&app, uri, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        let challenge = a.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.starts_with("Basic realm=\"engine-room\""), "{uri}: {challenge}");
        let wrong = get(&app, uri, Some("Basic dXNlcjp3cm9uZw==")).await; // user:wrong
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    // The UI's script calls /api with the CSRF header: it gets the same Basic
    // challenge so the browser answers with the credentials it already has.
    let req = Request::post("/api/workers/w/pause").header("x-engine-csrf", "1").body(Body::empty()).unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic realm=\"engine-room\""));
    // Other API clients keep the Bearer challenge.
    let a = get(&app, "/api/workers", None).await;
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn every_page_renders_with_navigation_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    beat(&app, "w-1", "eu-west").await;
    beat(&app, "w-2", "us-east").await;

    let root = get(&app, "/verifier-engine-room", Some(BASIC)).await;
    assert!(root.status.is_redirection());
    assert_eq!(root.headers[header::LOCATION], "/verifier-engine-room/overview");

    let expected = [
        ("overview", "Fleet heartbeat rate"),
        ("workers", "w-2"),
        ("jobs", "No queues yet"),
        ("alerts", "Alert rules"),
        ("builds", "No builds yet"),
        ("plan", "no plan posted yet"),
        ("hints", "No hints yet"),
        ("pools", "eu-west"),
        ("settings", "SSE_INTERVAL_SECONDS"),
        ("cluster", "http://127.0.0.1:9"),
    ];
    // The pages under test are the ones the navigation links to, not a list
    // kept here by hand: a new page needs its expectation above.
    let nav_html = get(&app, "/verifier-engine-room/overview", Some(BASIC)).await.body;
    let nav = nav_html.split("<nav>").nth(1).and_then(|n| n.split("</nav>").next()).expect("a <nav>");
    let linked: std::collections::BTreeSet<&str> =
        nav.split("href=\"/verifier-engine-room/").skip(1).filter_map(|l| l.split('"').next()).collect();
    assert_eq!(linked, expected.iter().map(|(p, _)| *p).collect(), "pages linked from the navigation");
    for (page, expect) in expected {
        let a = get(&app, &format!("/verifier-engine-room/{page}"), Some(BASIC)).await;
        assert_eq!(a.status, StatusCode::OK, "{page}: {}", a.body);
        assert!(a.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{page}");
        assert!(a.body.contains(&format!("data-page=\"{page}\"")), "{page}");
        for group in [">Ops<", ">Infra<", ">Governance<", ">Cluster<"] {
            assert!(a.body.contains(group), "{page} nav lacks {group}");
        }
        assert!(a.body.contains(expect), "{page} lacks {expect:?}");
        assert!(a.body.contains("leader"), "{page} shows the node role");
        assert!(!a.body.contains("template error"), "{page}");
    }
    let overview = get(&app, "/verifier-engine-room/overview", Some(BASIC)).await.body;
    assert!(overview.contains(r#"data-k="total">2<"#), "overview counts both workers");

    let missing = get(&app, "/verifier-engine-room/nope", Some(BASIC)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("nope"));
    let missing = get(&app, "/verifier-engine-room/workers/ghost", Some(BASIC)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn workers_table_filters_and_pages_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    for i in 0..30 {
        beat(&app, &format!("w-{i:02}"), if i % 3 == 0 { "gold" } else { "default" }).await;
    }
    let page = get(&app, "/verifier-engine-room/workers?limit=25", Some(BASIC)).await.body;
    assert_eq!(page.matches("<tr data-worker=").count(), 25);
    assert!(page.contains("1–25 of <strong id=\"worker-total\">30</strong>"), "pager");
    assert!(page.contains("data-page-link href=\"/verifier-engine-room/workers?offset=25"), "next link");

    let rows = get(&app, "/verifier-engine-room/workers?limit=25&offset=25&partial=rows", Some(BASIC)).await.body;
    assert!(!rows.contains("<html"), "partial is just the table");
    assert_eq!(rows.matches("<tr data-worker=").count(), 5);

    let gold = get(&app, "/verifier-engine-room/workers?pool=gold&partial=rows", Some(BASIC)).await.body;
    assert_eq!(gold.matches("<tr data-worker=").count(), 10);
    let one = get(&app, "/verifier-engine-room/workers?q=W-07&partial=rows", Some(BASIC)).await.body;
    assert_eq!(one.matches("<tr data-worker=").count(), 1, "search is case-insensitive");
    // Unknown filter values mean "any" rather than an error page.
    let any = get(&app, "/verifier-engine-room/workers?desired_state=bogus&limit=100&partial=rows", Some(BASIC)).await;
    assert_eq!(any.status, StatusCode::OK);
    assert_eq!(any.body.matches("<tr data-worker=").count(), 30);
}

#[tokio::test]
async fn a_browser_style_pause_shows_on_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    beat(&app, "w-9", "default").await;
    let req = Request::post("/api/workers/w-9/pause")
        .header(header::AUTHORIZATION, BASIC)
        .header("x-engine-csrf", "1")
        .header(header::HOST, "ui.test:7001")
        .header(header::ORIGIN, "http://ui.test:7001")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"reason":"disk full"}"#))
        .unwrap();
    let a = send(&app, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let w: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(w["desired_state"], "paused");

    let rows = get(&app, "/verifier-engine-room/workers?partial=rows", Some(BASIC)).await.body;
    assert!(rows.contains(r#"data-field="desired">paused<"#), "{rows}");
    assert!(rows.contains(r#"data-action="resume""#), "a paused worker offers resume");
    let detail = get(&app, "/verifier-engine-room/workers/w-9", Some(BASIC)).await.body;
    assert!(detail.contains("disk full"), "audit entry with the reason");
    assert!(detail.contains("1,200"), "processed counter");
}

async fn post_json(app: &axum::Router, uri: &str, body: &str) -> Answer {
    let req = Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(app, req).await
}

#[tokio::test]
async fn jobs_pages_list_filter_and_detail_the_jobs_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let s = leader(dir.path()).await;
    // A one-node cluster stays at its first format until raised (the node's
    // format loop does that; not running here).
    let version = model::state::FORMAT_VERSION;
    s.cluster.write("t", model::Command::SetFormatVersion { version }).await.unwrap().unwrap();
    let app = api::app(s);
    let mut ids = Vec::new();
    for (queue, kind, payload) in [
        ("mail", "send", r#"{"html":"<img src=x id=injected>"}"#),
        ("mail", "send", "{}"),
        ("bulk", "scan", r#"{"n":[1]}"#),
    ] {
        let a =
            post_json(&app, "/api/v1/jobs", &format!(r#"{{"queue":"{queue}","kind":"{kind}","payload":{payload}}}"#))
                .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        let v: Value = serde_json::from_str(&a.body).unwrap();
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    let claim =
        post_json(&app, "/internal/worker/claim", r#"{"worker_id":"w-1","queues":["mail"],"max_jobs":1}"#).await;
    let c2 = post_json(&app, "/internal/worker/claim", r#"{"worker_id":"w-2","queues":["bulk"],"max_jobs":1}"#).await;
    let c2: Value = serde_json::from_str(&c2.body).unwrap();
    let done = format!(
        r#"{{"job_id":"{}","worker_id":"w-2","lease_token":"{}","result":{{"n":1}},"logs":["line one","<b>two</b>"]}}"#,
        ids[2],
        c2["jobs"][0]["lease_token"].as_str().unwrap()
    );
    let a = post_json(&app, "/internal/worker/complete", &done).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(claim.status, StatusCode::OK, "{}", claim.body);
    let c: Value = serde_json::from_str(&claim.body).unwrap();
    let token = c["jobs"][0]["lease_token"].as_str().unwrap().to_string();
    assert_eq!(c["jobs"][0]["job_id"], ids[0]);

    let page = get(&app, "/verifier-engine-room/jobs", Some(BASIC)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<tr data-job=").count(), 3, "every job listed");
    let first = page.body.find(&format!(r#"data-job="{}""#, ids[2])).unwrap();
    let last = page.body.find(&format!(r#"data-job="{}""#, ids[0])).unwrap();
    assert!(first < last, "newest first");
    assert!(
        page.body.contains(r#"data-queue="mail""#) && page.body.contains(r#"data-queue="bulk""#),
        "a card per queue"
    );
    assert!(page.body.contains(r#"data-queue-action="pause""#) && page.body.contains(r#"data-job-action="cancel""#));

    let rows = get(&app, "/verifier-engine-room/jobs?partial=rows&state=running", Some(BASIC)).await.body;
    assert!(!rows.contains("<!doctype"), "a fragment");
    assert_eq!(rows.matches("<tr data-job=").count(), 1, "{rows}");
    let rows_done = get(&app, "/verifier-engine-room/jobs?partial=rows&state=succeeded", Some(BASIC)).await.body;
    assert_eq!(rows_done.matches("<tr data-job=").count(), 1, "{rows_done}");
    assert!(rows.contains(">w-1<"), "the lease holder");
    let rows = get(&app, "/verifier-engine-room/jobs?partial=rows&kind=scan&limit=1", Some(BASIC)).await.body;
    assert_eq!(rows.matches("<tr data-job=").count(), 1);
    assert!(!rows.contains(r#"id="job-more""#), "one scan job: no more");
    let rows = get(&app, "/verifier-engine-room/jobs?partial=rows&queue=mail&limit=1", Some(BASIC)).await.body;
    assert!(rows.contains(&format!("cursor={}", ids[1])), "more continues below the last row: {rows}");

    let detail = get(&app, &format!("/verifier-engine-room/jobs/{}", ids[0]), Some(BASIC)).await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(!detail.body.contains("<img src=x"), "payload escaped");
    assert!(detail.body.contains("&#60;img src=x"), "payload shown");
    assert!(!detail.body.contains(&token), "the full lease token stays off the page");
    assert!(detail.body.contains(&format!("{}…", &token[..token.find('-').unwrap() + 5])), "the short token");
    assert!(detail.body.contains("No log lines."), "the log store answered: no lines yet");
    let done = get(&app, &format!("/verifier-engine-room/jobs/{}", ids[2]), Some(BASIC)).await.body;
    assert!(done.contains("line one") && done.contains("&#60;b&#62;two&#60;/b&#62;"), "log lines, escaped");
    for missing in ["/verifier-engine-room/jobs/999", "/verifier-engine-room/jobs/abc"] {
        assert_eq!(get(&app, missing, Some(BASIC)).await.status, StatusCode::NOT_FOUND, "{missing}");
    }
    let overview = get(&app, "/verifier-engine-room/overview", Some(BASIC)).await.body;
    assert!(
        overview.contains(r#"data-k="jobs_queued">1<"#) && overview.contains(r#"data-k="jobs_running">1<"#),
        "jobs card"
    );
}

#[tokio::test]
async fn assets_are_embedded_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    for (name, ty) in [("app.css", "text/css"), ("app.js", "text/javascript"), ("favicon.svg", "image/svg+xml")] {
        let a = get(&app, &format!("/verifier-engine-room/static/{name}"), Some(BASIC)).await;
        assert_eq!(a.status, StatusCode::OK, "{name}");
        assert!(a.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty), "{name}");
        assert!(!a.body.is_empty());
    }
    let a = get(&app, "/verifier-engine-room/static/nope.js", Some(BASIC)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let page = get(&app, "/verifier-engine-room/overview", Some(BASIC)).await.body;
    assert!(!page.contains("http://cdn") && !page.contains("https://"), "no external resources");
}

#[tokio::test]
async fn events_stream_sends_a_snapshot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(leader(dir.path()).await);
    beat(&app, "w-1", "default").await;
    let req = Request::get("/verifier-engine-room/events").header(header::AUTHORIZATION, BASIC).body(Body::empty());
    let res = app.clone().oneshot(req.unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = res.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains("\n\n") {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("first event in time");
        let frame = frame.expect("stream open").expect("frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(text.contains("event: snapshot"), "{text}");
    assert!(text.contains("retry: 1500"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).expect("data line");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["fleet"]["total"], 1);
    assert_eq!(v["fleet"]["healthy"], 1);
    assert_eq!(v["role"], "leader");
    assert_eq!(v["interval_seconds"], 2);
    assert!(v["fleet"]["heartbeats_total"].as_u64().unwrap() >= 1);
    assert!(v["incidents"].as_array().is_some_and(|i| i.is_empty()), "no incident open yet");
}

#[tokio::test]
async fn farm_pages_show_builds_logs_hint_highlights_plan_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = leader(dir.path()).await;
    let version = model::state::FORMAT_VERSION;
    s.cluster.write("t", model::Command::SetFormatVersion { version }).await.unwrap().unwrap();
    let app = api::app(s);
    let ok = |a: &Answer, want: StatusCode| assert_eq!(a.status, want, "{}", a.body);
    ok(
        &post_json(
            &app,
            "/hints",
            r#"{"pattern":"fatal error: .*\\.h: No such file","recipe":{"note":"install <dev>"}}"#,
        )
        .await,
        StatusCode::CREATED,
    );
    ok(
        &post_json(&app, "/queue/enqueue", r#"{"package":"lxml","version":"5.2.2","run_id":"r1"}"#).await,
        StatusCode::CREATED,
    );
    let error = "fatal error: libxml<x>.h: No such file";
    let lines = format!(r#"{{"lines":["compiling etree","{error}","done"]}}"#);
    ok(&post_json(&app, "/logs/lxml/5.2.2", &lines).await, StatusCode::OK);
    let claim =
        post_json(&app, "/internal/worker/claim", r#"{"worker_id":"bw","queues":["build"],"max_jobs":1}"#).await;
    let c: Value = serde_json::from_str(&claim.body).unwrap();
    let fail = serde_json::json!({"job_id": c["jobs"][0]["job_id"], "worker_id": "bw", "lease_token": c["jobs"][0]["lease_token"],
        "error": error, "retryable": false, "logs": []});
    ok(&post_json(&app, "/internal/worker/fail", &fail.to_string()).await, StatusCode::OK);
    let plan =
        r#"{"packages":[{"name":"cython","version":"3.0"},{"name":"lxml","version":"5.2.2","deps":["cython"]}]}"#;
    ok(&post_json(&app, "/plan", plan).await, StatusCode::CREATED);

    let page = get(&app, "/verifier-engine-room/builds", Some(BASIC)).await;
    ok(&page, StatusCode::OK);
    assert!(page.body.contains(r#"data-kind="failed" data-package="lxml""#) && page.body.contains("hint #1"));
    assert!(!page.body.contains("libxml<x>") && page.body.contains("libxml&#60;x&#62;"), "errors are escaped");
    let rows = get(&app, "/verifier-engine-room/builds?partial=rows&status=queued", Some(BASIC)).await.body;
    assert!(
        rows.contains(r#"data-kind="queued""#) && !rows.contains(r#"data-kind="failed""#) && !rows.contains("<nav>")
    );
    let bad = get(&app, "/verifier-engine-room/builds?partial=rows&package=bad%20name", Some(BASIC)).await.body;
    assert!(bad.contains("history-error"), "the API's refusal is shown");

    let pkg = get(&app, "/verifier-engine-room/builds/lxml", Some(BASIC)).await.body;
    assert!(pkg.contains(r#"data-version="5.2.2""#) && pkg.contains("3 lines"));
    let log = get(&app, "/verifier-engine-room/logs/lxml/5.2.2", Some(BASIC)).await;
    ok(&log, StatusCode::OK);
    assert_eq!(log.body.matches("log-line hint-line").count(), 1, "one highlighted line");
    assert!(log.body.contains(r#"id="L2" data-hints="1""#), "the header line, naming hint 1");
    assert!(log.body.contains("install &#60;dev&#62;"), "the hint's note, escaped");
    let found = get(&app, "/verifier-engine-room/logs/lxml/5.2.2?q=COMPILING", Some(BASIC)).await.body;
    assert!(found.contains("<mark>compiling</mark>") && !found.contains("id=\"L3\""), "only the hit");
    ok(&get(&app, "/verifier-engine-room/logs/lxml/9.9", Some(BASIC)).await, StatusCode::NOT_FOUND);
    ok(&get(&app, "/verifier-engine-room/builds/bad%20name", Some(BASIC)).await, StatusCode::NOT_FOUND);

    let plan = get(&app, "/verifier-engine-room/plan", Some(BASIC)).await.body;
    assert!(plan.contains(r#"class="node st-failed" data-package="lxml""#), "lxml drawn with its failure");
    assert_eq!(plan.matches(r#"<path class="edge""#).count(), 1);
    let hints = get(&app, "/verifier-engine-room/hints", Some(BASIC)).await.body;
    assert!(hints.contains(r#"id="hint-1""#) && hints.contains("1 events"));
    let settings = get(&app, "/verifier-engine-room/settings", Some(BASIC)).await.body;
    assert!(settings.contains(r#"id="farm-config-form""#));

    let test = |csrf: bool, auth: bool| {
        let mut req =
            Request::post("/verifier-engine-room/hints/test").header(header::CONTENT_TYPE, "application/json");
        if csrf {
            req = req.header("x-engine-csrf", "1");
        }
        if auth {
            req = req.header(header::AUTHORIZATION, BASIC);
        }
        req.body(Body::from(r#"{"pattern":"(?i)ERROR","log":"ok\n<b>error</b> here"}"#)).unwrap()
    };
    let t = send(&app, test(true, true)).await;
    ok(&t, StatusCode::OK);
    assert!(t.body.contains("<mark>error</mark>") && t.body.contains("&#60;b&#62;"), "{}", t.body);
    ok(&send(&app, test(false, true)).await, StatusCode::FORBIDDEN);
    ok(&send(&app, test(true, false)).await, StatusCode::UNAUTHORIZED);
}
