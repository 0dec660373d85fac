//! Issue 19, points 7–9 on real nodes: a private data directory, the UI's
//! browser-hardening headers and its CSRF defence, and readiness answered
//! from local state (quickly, even with peers frozen).

use std::time::{Duration, Instant};

use chaos_tests::cluster::{basic_auth, TOKEN};
use chaos_tests::{Options, TestCluster};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(SECS(5)).build().expect("http client")
}

/// Every file under `dir` 0600, every directory 0700 (bounded walk).
fn assert_private(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let (mut files, mut seen) = (0, 0);
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            seen += 1;
            assert!(seen < 10_000, "unexpectedly many entries under {}", dir.display());
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                files += 1;
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}, readable by others", e.path().display());
            }
        }
    }
    assert!(files > 3, "the data dir holds the node's files ({files})");
}

#[test]
fn a_nodes_data_dir_and_files_are_private() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    c.must_scale(leader, "private", 2);
    let (code, body) = c.post(leader, "/api/cluster/snapshot", json!({}));
    assert!(code == 200 || code == 202, "{code} {body}");
    for id in 1..=3 {
        assert_private(&c.nodes[&id].data_dir);
    }
}

/// Pages, assets, the 401 challenge and the live stream all carry the UI's
/// browser hardening; API answers carry nosniff; no page holds inline script.
#[test]
fn ui_answers_carry_browser_hardening_and_no_inline_script() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    c.must_scale(leader, "hardened", 1);
    let http = http();
    let ui = |path: &str, auth: bool| {
        let mut req = http.get(format!("{}/verifier-engine-room/{path}", c.url(1)));
        if auth {
            req = req.header("authorization", basic_auth("ui", TOKEN));
        }
        req.send().unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let hardened = |path: &str, res: &reqwest::blocking::Response| {
        let h = |k: &str| res.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let csp = h("content-security-policy");
        let script_src = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).unwrap_or("");
        assert_eq!(script_src, "script-src 'self'", "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"), "{path}: {csp}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    };
    let pages = [
        "overview",
        "workers",
        "pools",
        "alerts",
        "settings",
        "cluster",
        "jobs",
        "builds",
        "builds/numpy",
        "hints",
        "plan",
        "logs/numpy/1.0",
        "nope",
    ];
    for page in pages {
        let res = ui(page, true);
        assert!(res.status().is_success() || res.status() == 404, "{page}: {}", res.status());
        hardened(page, &res);
        let body = res.text().unwrap().to_ascii_lowercase();
        for (at, _) in body.match_indices("<script") {
            let tag = &body[at..body[at..].find('>').map_or(body.len(), |e| at + e)];
            assert!(tag.contains(" src=\"/verifier-engine-room/static/"), "{page}: inline script {tag}");
            assert!(body[at..].starts_with(&format!("{tag}></script>")), "{page}: script with a body");
        }
        for handler in
            ["onclick=", "onload=", "onerror=", "onsubmit=", "onchange=", "oninput=", "onfocus=", "onmouseover="]
        {
            assert!(!body.contains(handler), "{page}: inline handler {handler}");
        }
        assert!(!body.contains("javascript:"), "{page}: javascript: URL");
    }
    let res = ui("overview", false);
    assert_eq!(res.status(), 401);
    hardened("overview without password", &res);
    let res = ui("static/app.js", true);
    assert!(res.status().is_success());
    hardened("app.js", &res);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));

    for (path, auth) in [("/api/pools", true), ("/api/pools", false), ("/api/health/ready", false), ("/api/nope", true)]
    {
        let mut req = http.get(format!("{}{path}", c.url(2)));
        if auth {
            req = req.bearer_auth(TOKEN);
        }
        let res = req.send().unwrap();
        assert_eq!(res.headers().get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{path}");
    }
}

/// The UI's basic-auth password reaches the API only with the CSRF header and
/// a same-origin `Origin`: another site's form or script gets 403 and
/// changes nothing; an API client with the bearer token needs neither.
#[test]
fn a_cross_origin_browser_post_is_refused_without_the_csrf_header() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    c.must_scale(leader, "csrf", 1);
    let http = http();
    let node = c.url(2);
    let own_origin = node.clone();
    let scale = |count: u32, origin: Option<&str>, csrf: bool| {
        let mut req = http
            .post(format!("{node}/api/pools/csrf/scale"))
            .header("authorization", basic_auth("ui", TOKEN))
            .json(&json!({"desired_count": count}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if csrf {
            req = req.header("x-engine-csrf", "1");
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().unwrap_or_default())
    };
    let evil = Some("http://evil.example");
    let (code, body) = scale(5, evil, false);
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("csrf")), "{body}");
    let (code, body) = scale(5, None, false);
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("csrf")), "no header, no Origin: {body}");
    let (code, body) = scale(5, evil, true);
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("csrf")), "header but another origin: {body}");
    assert_eq!(c.pool_count(leader, "csrf"), Some(1), "refused posts changed nothing");

    let (code, body) = scale(6, Some(&own_origin), true);
    assert_eq!(code, 200, "same-origin UI call: {body}");
    assert_eq!(c.pool_count(leader, "csrf"), Some(6));
    let (code, body) = scale(7, None, true);
    assert_eq!(code, 200, "header without Origin (same-origin GET-less fetch): {body}");
    let res = http
        .post(format!("{node}/api/pools/csrf/scale"))
        .bearer_auth(TOKEN)
        .header("origin", "http://evil.example")
        .json(&json!({"desired_count": 8}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200, "a bearer-token client needs no CSRF header");
    assert_eq!(c.pool_count(leader, "csrf"), Some(8));
}

/// One readiness probe: (status, body, how long it took).
fn ready(c: &TestCluster, id: u64) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let (code, body) = c.request_timeout(id, "GET", "/api/health/ready", None, SECS(3));
    (code, body, started.elapsed())
}

/// Readiness asks no peer: with the leader and one follower frozen, the last
/// follower answers at once, and says "leader unreachable" once it has heard
/// nothing for a few election timeouts; a frozen peer never slows it.
#[test]
fn readiness_answers_from_local_state_while_peers_are_frozen() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    c.must_scale(leader, "ready", 1);
    for id in 1..=3 {
        let (code, body, took) = ready(&c, id);
        assert_eq!(code, 200, "node {id}: {body}");
        assert_eq!((body["ready"].as_bool(), body["leader_id"].as_u64()), (Some(true), Some(leader)), "{body}");
        assert!(body["lag"].as_u64().unwrap() <= 1_000, "{body}");
        assert!(took < Duration::from_millis(500), "node {id} took {took:?}");
    }
    let mut followers = (1..=3).filter(|id| *id != leader);
    let (frozen, watcher) = (followers.next().unwrap(), followers.next().unwrap());
    c.pause(leader);
    c.pause(frozen);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut unreachable = None;
    while started.elapsed() < SECS(6) && unreachable.is_none() {
        let (code, body, took) = ready(&c, watcher);
        slowest = slowest.max(took);
        assert!(code == 200 || code == 503, "{code} {body}");
        if code == 503 && body["reason"].as_str().is_some_and(|r| r.starts_with("leader unreachable")) {
            assert_eq!(body["ready"], false);
            unreachable = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.resume(leader);
    c.resume(frozen);
    let after = unreachable.expect("the lone follower reports the leader unreachable");
    assert!(after < SECS(3), "not ready after {after:?}");
    assert!(slowest < Duration::from_millis(300), "slowest readiness answer {slowest:?} with peers frozen");
    eprintln!("readiness: not ready {after:?} after the freeze; slowest answer {slowest:?}");
    c.wait_for_leader(SECS(10));
    c.eventually(SECS(10), "every node ready again", || (1..=3).all(|id| ready(&c, id).0 == 200).then_some(()));
}
