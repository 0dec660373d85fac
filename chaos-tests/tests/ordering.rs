//! Issue 17: a heartbeat delayed on its way to the leader must never roll a
//! worker back. A test-only hook (`ENGINE_TEST_HOLD_FORWARD_FILE`) holds one
//! follower's heartbeat forwards while newer heartbeats of the same worker are
//! acknowledged through the leader; then it lets the old one go.

use std::time::{Duration, Instant};

use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const HOLD: &str = "test-hold-forward";

fn cluster() -> TestCluster {
    TestCluster::start(3, Options::default().env("ENGINE_TEST_HOLD_FORWARD_FILE", HOLD))
}

fn body(id: &str, seq: Option<u64>, processed: u64) -> Value {
    let mut b = json!({"worker_id": id, "host": "h", "ip": "127.0.0.1", "pool": "ordering",
        "status": "running", "process_state": "running", "metrics": {"processed": processed}});
    if let Some(seq) = seq {
        b["seq"] = json!(seq);
    }
    b
}

/// One counter from node `id`'s `/metrics`.
fn counter(c: &TestCluster, id: u64, name: &str) -> f64 {
    let text = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", c.url(id)))
        .bearer_auth(chaos_tests::cluster::TOKEN)
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// The worker's record as node `id` holds it, read linearizably.
fn record(c: &TestCluster, id: u64, worker: &str) -> Value {
    let (code, v) = c.get(id, "/api/workers?consistent=true&pool=ordering&limit=100");
    assert_eq!(code, 200, "{v}");
    v["workers"].as_array().unwrap().iter().find(|w| w["id"] == worker).cloned().unwrap_or(Value::Null)
}

/// Holds node `f`'s heartbeat forwards while it lives.
struct Hold(std::path::PathBuf);

impl Hold {
    fn on(c: &TestCluster, f: u64) -> Hold {
        let file = c.nodes[&f].data_dir.join(HOLD);
        std::fs::write(&file, b"").unwrap();
        Hold(file)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn wait_received(c: &TestCluster, f: u64, at_least: f64) {
    c.eventually(SECS(5), "the follower received the held heartbeat", || {
        (counter(c, f, "engine_room_heartbeats_received_total") >= at_least).then_some(())
    });
}

#[test]
fn a_heartbeat_held_back_past_newer_ones_does_not_roll_the_worker_back() {
    let c = cluster();
    let leader = c.wait_for_leader(SECS(10));
    let f = (1..=3).find(|id| *id != leader).unwrap();
    let (code, a) = c.post(leader, "/api/workers/heartbeat", body("w-late", Some(1), 1));
    assert_eq!((code, a["stale"].as_bool()), (200, Some(false)), "{a}");

    let hold = Hold::on(&c, f);
    let received = counter(&c, f, "engine_room_heartbeats_received_total");
    let url = c.url(f);
    // Its caller keeps waiting (a long client timeout): the batch is still
    // wanted, so the follower forwards it once let go, after seq 3.
    let held = std::thread::spawn(move || {
        let res = reqwest::blocking::Client::new()
            .post(format!("{url}/api/workers/heartbeat"))
            .bearer_auth(chaos_tests::cluster::TOKEN)
            .timeout(SECS(20))
            .json(&body("w-late", Some(2), 2))
            .send()
            .expect("the held heartbeat is answered");
        (res.status().as_u16(), res.json::<Value>().unwrap_or(Value::Null))
    });
    wait_received(&c, f, received + 1.0);
    let (code, a) = c.post(leader, "/api/workers/heartbeat", body("w-late", Some(3), 3));
    assert_eq!((code, a["stale"].as_bool()), (200, Some(false)), "{a}");
    assert_eq!(record(&c, leader, "w-late")["metrics"]["processed"], 3, "seq 3 acknowledged");
    drop(hold);
    let (code, late) = held.join().unwrap();
    assert_eq!(code, 200, "the late heartbeat still gets an answer: {late}");
    for id in 1..=3 {
        let w = record(&c, id, "w-late");
        assert_eq!(w["metrics"]["processed"], 3, "node {id} rolled the worker back: {w}");
        assert_eq!(w["heartbeat_count"], 2, "node {id}: the stale heartbeat was counted: {w}");
    }
    assert_eq!(late["stale"], true, "answered as stale: {late}");
    assert_eq!(late["desired_state"], "running", "with the current desired state: {late}");
    assert!(counter(&c, f, "engine_room_heartbeats_stale_total") >= 1.0);
}

#[test]
fn a_heartbeat_whose_caller_gave_up_is_not_forwarded() {
    let c = cluster();
    let leader = c.wait_for_leader(SECS(10));
    let f = (1..=3).find(|id| *id != leader).unwrap();
    // No `seq`: only the follower's giving up can keep this one out.
    let (code, a) = c.post(leader, "/api/workers/heartbeat", body("w-gone", None, 1));
    assert_eq!(code, 200, "{a}");

    let hold = Hold::on(&c, f);
    let received = counter(&c, f, "engine_room_heartbeats_received_total");
    let t0 = Instant::now();
    let (code, _) = c.request_timeout(f, "POST", "/api/workers/heartbeat", Some(&body("w-gone", None, 2)), SECS(1));
    assert_eq!(code, 0, "the client gave up after {:?}", t0.elapsed());
    wait_received(&c, f, received + 1.0);
    let (code, a) = c.post(leader, "/api/workers/heartbeat", body("w-gone", None, 3));
    assert_eq!(code, 200, "{a}");
    // Let it go while the follower's write timeout (5 s) still runs, then
    // give a forward that was still being retried time to land.
    std::thread::sleep(Duration::from_millis(500));
    drop(hold);
    std::thread::sleep(Duration::from_millis(1500));
    for id in 1..=3 {
        let w = record(&c, id, "w-gone");
        assert_eq!(w["metrics"]["processed"], 3, "node {id} applied a heartbeat nobody waited for: {w}");
    }
    assert!(counter(&c, f, "engine_room_heartbeats_abandoned_total") >= 1.0, "counted as abandoned");
}
