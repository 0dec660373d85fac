//! Issue 19 across real nodes: named, scoped tokens. Every route in the
//! OpenAPI document is called with a token of each scope and must allow or
//! deny as its declared scope says; a worker token bound to a prefix and a
//! pool cannot beat for others; the audit actor is the token's name, not a
//! header; a revoked token stops working on every node; 50 wrong tokens in a
//! row from one address get 429, and that address is refused even with a
//! right token while another address is served.

use std::collections::BTreeMap;
use std::time::Duration;

use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SCOPES: [&str; 6] = ["admin", "operator", "read", "worker", "metrics", "producer"];

/// What a scope may do, as SECURITY.md states it (not derived from the code).
fn allows(scope: &str, need: &str) -> bool {
    match scope {
        "admin" => true,
        "operator" => matches!(need, "operator" | "read" | "metrics"),
        "read" => matches!(need, "read" | "metrics"),
        other => other == need,
    }
}

fn call(
    http: &reqwest::blocking::Client,
    url: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http.request(m, format!("{url}{path}")).bearer_auth(token).timeout(SECS(10));
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    match req.send() {
        Ok(res) => {
            let status = res.status().as_u16();
            let text = res.text().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn beat(id: &str, pool: &str) -> Value {
    json!({"worker_id": id, "host": "vps-1", "ip": "127.0.0.1", "pool": pool, "version": "1", "status": "running",
           "process_state": "running", "metrics": {"processed": 1}})
}

#[test]
fn every_route_allows_exactly_its_scopes_and_tokens_are_bound_audited_revoked_and_rate_limited() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    let other = (1..=3).find(|n| *n != leader).unwrap();
    c.eventually(SECS(20), "cluster format 4 (tokens)", || {
        (c.get(leader, "/api/history?entity=cluster:format").1["format_version"] == 4).then_some(())
    });
    let http = reqwest::blocking::Client::new();

    // One token per scope, created through a follower; the secret is shown once.
    let mut secrets = BTreeMap::new();
    for scope in SCOPES {
        let (code, body) = c.post(other, "/api/tokens", json!({"name": format!("t-{scope}"), "scope": scope}));
        assert_eq!(code, 201, "{body}");
        let secret = body["secret"].as_str().unwrap().to_string();
        assert!(secret.len() >= 64, "a long random secret");
        secrets.insert(scope, secret);
    }
    let (_, list) = c.get(leader, "/api/tokens");
    assert_eq!(list["tokens"].as_array().unwrap().len(), SCOPES.len());
    assert!(!list.to_string().contains(&secrets["admin"]), "listing never shows a secret");
    let (code, body) = c.post(leader, "/api/tokens", json!({"name": "t-read", "scope": "read"}));
    assert_eq!(code, 409, "a taken name: {body}");
    let (code, _) = c.post(leader, "/api/tokens", json!({"name": "x", "scope": "root"}));
    assert_eq!(code, 400, "an unknown scope");
    // Every node knows them once applied.
    c.eventually(SECS(10), "tokens on every node", || {
        (1..=3).all(|n| call(&http, &c.url(n), "GET", "/api/workers", &secrets["read"], None).0 == 200).then_some(())
    });

    // The scope matrix, over every route of the document.
    let (code, doc) = c.get(leader, "/openapi.json");
    assert_eq!(code, 200);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(need) = op["security"][0]["bearer"][0].as_str() else {
                assert!(path.starts_with("/api/health/") || path == "/health", "{method} {path} declares no scope");
                continue;
            };
            assert!(SCOPES.contains(&need), "{method} {path}: unknown scope {need}");
            // Path parameters as a name or id that exists nowhere; writes with
            // an empty object: allowed calls are refused by validation or
            // answer 404, and change nothing.
            let concrete = path.split('/').map(|seg| if seg.starts_with('{') { "1" } else { seg }).collect::<Vec<_>>();
            let concrete = concrete.join("/");
            let method = method.to_uppercase();
            let body = (method != "GET").then(|| json!({}));
            for scope in SCOPES {
                let (code, answer) = call(&http, &c.url(other), &method, &concrete, &secrets[scope], body.as_ref());
                if allows(scope, need) {
                    assert!(
                        code != 401 && code != 403 && code != 500,
                        "{scope} token on {method} {path} (needs {need}): {code} {answer}"
                    );
                } else {
                    assert_eq!(code, 403, "{scope} token on {method} {path} (needs {need}): {answer}");
                    assert_eq!(answer["error"]["code"], "forbidden", "{answer}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6 * 25, "{checked} calls checked");
    // Spot checks of the document against the table.
    assert_eq!(doc["paths"]["/api/workers/heartbeat"]["post"]["security"][0]["bearer"][0], "worker");
    assert_eq!(doc["paths"]["/api/cluster/learners"]["post"]["security"][0]["bearer"][0], "admin");
    assert_eq!(doc["paths"]["/metrics"]["get"]["security"][0]["bearer"][0], "metrics");
    assert_eq!(doc["paths"]["/api/pools/{pool}/scale"]["post"]["security"][0]["bearer"][0], "operator");

    // The UI: a read token sees the pages with the controls hidden; an
    // operator's pages have them; a worker or metrics token gets no pages.
    let page = |secret: &str| {
        let res = http
            .get(format!("{}/verifier-engine-room/pools", c.url(other)))
            .basic_auth("someone", Some(secret))
            .send()
            .unwrap();
        (res.status().as_u16(), res.text().unwrap_or_default())
    };
    let (code, html) = page(&secrets["read"]);
    assert_eq!(code, 200);
    assert!(html.contains("data-read-only=\"true\""), "read-only pages for a read token");
    let (code, html) = page(&secrets["operator"]);
    assert_eq!(code, 200);
    assert!(!html.contains("data-read-only"), "controls for an operator");
    assert_eq!(page(&secrets["worker"]).0, 401);
    assert_eq!(page(&secrets["metrics"]).0, 401);

    // A worker token bound to a prefix and a pool beats only for those.
    let (code, body) = c.post(
        leader,
        "/api/tokens",
        json!({"name": "fleet-eu", "scope": "worker", "worker_prefix": "eu-", "pool": "eu"}),
    );
    assert_eq!(code, 201, "{body}");
    let fleet = body["secret"].as_str().unwrap().to_string();
    let (code, body) = c.post(leader, "/api/tokens", json!({"name": "bad", "scope": "read", "pool": "eu"}));
    assert_eq!(code, 400, "bindings are for worker tokens only: {body}");
    c.eventually(SECS(10), "the bound token on a follower", || {
        let (code, _) = call(&http, &c.url(other), "POST", "/api/workers/heartbeat", &fleet, Some(&beat("eu-1", "eu")));
        (code == 200).then_some(())
    });
    for (id, pool) in [("us-1", "eu"), ("eu-2", "us")] {
        let (code, body) = call(&http, &c.url(other), "POST", "/api/workers/heartbeat", &fleet, Some(&beat(id, pool)));
        assert_eq!(code, 403, "{id} in {pool}: {body}");
        assert_eq!(c.get(leader, &format!("/api/workers/{id}?consistent=true")).0, 404, "refused changed nothing");
    }

    // The audit actor is the token's name, whatever header the client sends.
    let res = http
        .post(format!("{}/api/pools/edge/scale", c.url(other)))
        .bearer_auth(&secrets["operator"])
        .header("x-engine-actor", "someone-else")
        .json(&json!({"desired_count": 3}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let (_, audit) = c.get(leader, "/api/audit?subject=edge");
    assert_eq!(audit["entries"][0]["actor"], "token:t-operator", "{audit}");
    let (_, audit) = c.get(leader, "/api/audit?subject=token:fleet-eu");
    assert_eq!(audit["entries"][0]["actor"], "operator", "created with the bootstrap token: {audit}");

    // Revoked: refused on every node once applied; the name stays taken.
    let (code, body) = c.request(leader, "DELETE", "/api/tokens/t-operator", None);
    assert_eq!(code, 200, "{body}");
    assert!(body["revoked_ms"].is_u64());
    c.eventually(SECS(10), "the revoked token refused everywhere", || {
        (1..=3)
            .all(|n| call(&http, &c.url(n), "GET", "/api/workers", &secrets["operator"], None).0 == 401)
            .then_some(())
    });
    assert_eq!(c.request(leader, "DELETE", "/api/tokens/t-operator", None).0, 404);

    // Brute force: 50 wrong tokens in a row from one address.
    let from = |ip: [u8; 4]| {
        reqwest::blocking::Client::builder().local_address(Some(std::net::IpAddr::from(ip))).build().unwrap()
    };
    let attacker = from([127, 0, 0, 77]);
    let mut codes = Vec::new();
    for i in 0..50 {
        let (code, _) = call(&attacker, &c.url(leader), "GET", "/api/workers", &format!("ert_guess{i:02}"), None);
        codes.push(code);
    }
    assert_eq!(codes[0], 401);
    assert!(codes[..19].iter().all(|c| *c == 401), "{codes:?}");
    assert!(codes[25..].iter().all(|c| *c == 429), "429 after the burst: {codes:?}");
    let (code, body) = call(&attacker, &c.url(leader), "GET", "/api/workers", &secrets["read"], None);
    assert_eq!(code, 429, "the whole address is refused while it lasts: {body}");
    assert_eq!(body["error"]["code"], "too_many_failures");
    let bystander = from([127, 0, 0, 78]);
    assert_eq!(call(&bystander, &c.url(leader), "GET", "/api/workers", &secrets["read"], None).0, 200);
    // Other nodes count for themselves.
    assert_eq!(call(&attacker, &c.url(other), "GET", "/api/workers", &secrets["read"], None).0, 200);
    let log = std::fs::read_to_string(&c.nodes[&leader].log).unwrap_or_default();
    assert!(log.contains("authentication failed"), "failures are logged");
    assert!(!log.contains("ert_guess"), "never with the credential");
}
