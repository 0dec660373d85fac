//! In-process checks of the real router on a single, uninitialized node: auth,
//! bad input (never a 5xx, always the JSON error shape), and the OpenAPI
//! document's completeness.

use std::collections::BTreeMap;
use std::time::Duration;

use api::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;

use common::Start;

async fn state(dir: &std::path::Path) -> AppState {
    common::one_node(dir, Start::Uninitialized, Duration::from_millis(300)).await
}

async fn call(app: &axum::Router, method: &str, uri: &str, auth: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = app.clone().oneshot(req.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn bearer() -> Option<&'static str> {
    Some("Bearer test-token")
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let app = api::app(s.clone());
    let big = format!("{{\"worker_id\":\"w\",\"pad\":\"{}\"}}", "x".repeat(70_000));
    let cases: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        ("POST", "/api/workers/heartbeat", None, "{}".into(), 401),
        ("POST", "/api/workers/heartbeat", Some("Bearer wrong"), "{}".into(), 401),
        ("POST", "/api/workers/heartbeat", bearer(), "{nope".into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), "{}".into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), r#"{"worker_id": 7}"#.into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), r#"{"worker_id": ""}"#.into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), format!(r#"{{"worker_id": "{}"}}"#, "a".repeat(500)), 400),
        ("POST", "/api/workers/heartbeat", bearer(), r#"{"worker_id": "w/1"}"#.into(), 400),
        (
            "POST",
            "/api/workers/heartbeat",
            bearer(),
            r#"{"worker_id": "w", "metrics": {"processed": "many"}}"#.into(),
            400,
        ),
        ("POST", "/api/workers/heartbeat", bearer(), r#"{"worker_id": "w", "ip": "not-an-ip"}"#.into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), r#"{"worker_id": "w", "process_state": "dancing"}"#.into(), 400),
        ("POST", "/api/workers/heartbeat", bearer(), big, 413),
        ("POST", "/api/workers/w/explode", bearer(), "".into(), 404),
        ("POST", "/api/workers/w/pause", bearer(), "[1,2]".into(), 400),
        ("GET", "/api/workers?limit=0", bearer(), "".into(), 400),
        ("GET", "/api/workers?limit=abc", bearer(), "".into(), 400),
        ("GET", "/api/workers?desired_state=flying", bearer(), "".into(), 400),
        ("GET", "/api/workers/nobody", bearer(), "".into(), 404),
        ("POST", "/api/pools/p/scale", bearer(), r#"{"desired_count": -1}"#.into(), 400),
        ("POST", "/api/pools/p/scale", bearer(), r#"{"desired_count": 1, "extra": 2}"#.into(), 400),
        ("PUT", "/api/settings", bearer(), r#"{"ALERT_CHECK_INTERVAL_SECONDS": -5}"#.into(), 400),
        ("PUT", "/api/settings", bearer(), r#"{"NO_SUCH_KEY": 1}"#.into(), 400),
        // Past their bounds: a TTL that would wrap to 384 ms in milliseconds,
        // a count that would narrow to 4 as a u32.
        ("PUT", "/api/settings", bearer(), r#"{"STALE_WORKER_TTL_SECONDS": 18446744073709552}"#.into(), 400),
        ("PUT", "/api/settings", bearer(), r#"{"STALE_WORKER_TTL_SECONDS": "18446744073709552"}"#.into(), 400),
        ("PUT", "/api/settings", bearer(), r#"{"AUTOSCALE_MAX_DESIRED": 4294967300}"#.into(), 400),
        ("PUT", "/api/settings", bearer(), r#"{"UI_POLL_INTERVAL_SECONDS": 1e300}"#.into(), 400),
        ("GET", "/api/incidents?state=sideways", bearer(), "".into(), 400),
        ("POST", "/api/cluster/learners", bearer(), r#"{"id": 4, "addr": "ftp://x"}"#.into(), 400),
        ("GET", "/api/nope", bearer(), "".into(), 404),
        ("DELETE", "/api/workers", bearer(), "".into(), 405),
    ];
    for (method, uri, auth, body, want) in cases {
        let (status, json) = call(&app, method, uri, auth, &body).await;
        assert_eq!(status.as_u16(), want, "{method} {uri} {body:.80} -> {json}");
        assert!(json["error"]["code"].is_string() && json["error"]["message"].is_string(), "{method} {uri}: {json}");
    }
    let applied = s.cluster.state.read();
    assert!(applied.state.workers.is_empty() && applied.state.pools.is_empty() && applied.state.settings.is_empty());
}

/// `FARM_READS_OPEN=true`: the build farm's reads answer without a token
/// (and say so in the document); its writes and every other route still
/// need one.
#[tokio::test]
async fn farm_reads_open_leaves_only_the_farms_reads_open() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = api::JobOptions { farm_reads_open: true, ..api::JobOptions::default() };
    let s = common::one_node_with(dir.path(), Start::Uninitialized, Duration::from_millis(300), jobs).await;
    let app = api::app(s);
    let reads = ["/summary", "/recent", "/history", "/queue", "/queue/stats", "/hints", "/config", "/artifacts"];
    for uri in reads.into_iter().chain(["/worker/triggers"]) {
        let (status, json) = call(&app, "GET", uri, None, "").await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
    }
    let (status, _) = call(&app, "GET", "/logs/numpy/1.0", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "open, and no such log");
    let writes = [("POST", "/hints"), ("POST", "/plan"), ("POST", "/queue/clear"), ("POST", "/worker/trigger")];
    for (method, uri) in writes.into_iter().chain([("POST", "/worker/smoke"), ("GET", "/api/pools")]) {
        let (status, _) = call(&app, method, uri, None, "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    let (_, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(doc["paths"]["/summary"]["get"]["security"], serde_json::json!([{}]));
    assert_eq!(doc["paths"]["/hints"]["post"]["security"][0]["bearer"], serde_json::json!(["operator"]));
}

#[tokio::test]
async fn browser_writes_need_the_csrf_header() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(state(dir.path()).await);
    let basic = "Basic dXNlcjp0ZXN0LXRva2Vu"; // user:test-token
    let (status, _) = call(&app, "GET", "/api/pools", Some(basic), "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(&app, "POST", "/api/pools/p/scale", Some(basic), r#"{"desired_count":1}"#).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert_eq!(json["error"]["code"], "csrf");
}

/// The route list comes from the document itself: every documented operation
/// is routed (a token-less call gets the documented 401, not the fallback's
/// 404), and every error it documents has the error shape.
#[tokio::test]
async fn openapi_lists_every_api_route_with_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::app(state(dir.path()).await);
    let (status, doc) = call(&app, "GET", "/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: BTreeMap<String, Value> = serde_json::from_value(doc["paths"].clone()).unwrap();
    assert!(paths.len() >= 20, "only {} paths documented", paths.len());
    for (path, item) in &paths {
        let uri = path.replace("{id}", "1").replace("{action}", "pause").replace('{', "").replace('}', "");
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let (status, json) = call(&app, &method, &uri, None, "").await;
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/api/health/") || path == "/health" {
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {uri} is documented but not routed");
                continue;
            }
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {json}");
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                if param["in"] == "path"
                    && ["id", "pool", "provider"].contains(&name)
                    && path != "/api/incidents/{id}/ack"
                    && path != "/hints/{id}"
                    && path != "/worker/triggers/{id}"
                {
                    assert_eq!(param["schema"]["pattern"], api::openapi::NAME_PATTERN, "{method} {path} {name}");
                }
            }
            assert!(responses.contains_key("401"), "{method} {path} does not document its 401");
            for (code, r) in responses {
                if !code.starts_with('2') {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {code}");
                }
            }
        }
    }
    assert!(paths["/api/pools/{pool}"].get("patch").is_some() && paths["/api/pools/{pool}"].get("put").is_some());
    let schemas = &doc["components"]["schemas"];
    for s in ["Worker", "WorkerView", "HeartbeatBody", "HeartbeatAnswer", "Pool", "PoolView", "Incident", "ErrorBody"] {
        assert!(schemas.get(s).is_some(), "schema {s} missing");
    }
    // The worker contract's ordering field and the answer's stale mark.
    let text = |v: &Value| v.to_string();
    let seq = text(&schemas["HeartbeatBody"]);
    assert!(seq.contains("\"seq\"") && seq.contains("increasing per worker"), "seq undocumented: {seq}");
    let stale = text(&schemas["HeartbeatAnswer"]);
    assert!(stale.contains("\"stale\""), "stale undocumented: {stale}");
}

/// The worker view carries exactly the documented fields (flattened `Worker`).
#[test]
fn views_match_their_schemas() {
    use model::state::{Heartbeat, Worker};
    use utoipa::PartialSchema;
    let beat: Heartbeat = Heartbeat {
        worker_id: "w".into(),
        host: "h".into(),
        ip: "127.0.0.1".into(),
        pool: None,
        version: "1".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: Default::default(),
        stage_metrics: Default::default(),
        smtp_metrics: Default::default(),
        provider_metrics: Default::default(),
        meta: [("agent", "\"x\"".to_string())].into(),
    };
    let w = Worker::new(&beat, "default", 1);
    let view = serde_json::to_value(api::routes::workers::worker_view(&w, 2, 1000)).unwrap();
    assert_eq!(view["meta"]["agent"], "x", "meta values are shown as sent, not as JSON text");
    let produced: std::collections::BTreeSet<String> = view.as_object().unwrap().keys().cloned().collect();
    let mut documented: std::collections::BTreeSet<String> = BTreeMap::<String, Value>::new().into_keys().collect();
    for schema in [
        serde_json::to_value(Worker::schema()).unwrap(),
        serde_json::to_value(api::openapi::WorkerView::schema()).unwrap(),
    ] {
        let mut stack = vec![schema];
        while let Some(v) = stack.pop() {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                documented.extend(props.keys().filter(|k| k.as_str() != "worker").cloned());
            }
            if let Some(all) = v.get("allOf").and_then(Value::as_array) {
                stack.extend(all.iter().cloned());
            }
        }
    }
    assert_eq!(produced, documented);
}
