//! Issue 2 acceptance: a real 3-node cluster on loopback forms, takes writes on
//! any node, survives leader kill and restarts, catches a node up by snapshot,
//! changes membership under load, and refuses /raft without the secret.

use std::process::Command;
use std::time::{Duration, Instant};

use chaos_tests::{Options, TestCluster};
use serde_json::json;

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn forms_one_leader_and_a_follower_write_is_readable_everywhere() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    let status = c.status(leader).expect("status");
    assert_eq!(status["total_nodes"], 3);
    assert_eq!(status["healthy_nodes"], 3);
    let roles: Vec<&str> = status["nodes"].as_array().unwrap().iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{roles:?}");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.must_scale(follower, "via-follower", 7);
    for id in 1..=3 {
        assert_eq!(c.pool_count(id, "via-follower"), Some(7), "node {id} must see the write");
    }
}

/// Nodes talk to each other directly even where the host sets a proxy for
/// outbound HTTP: a proxy that refuses everything (a closed loopback port)
/// must not stop elections, replication or a follower's forwarding.
#[test]
fn raft_traffic_ignores_the_hosts_http_proxy() {
    let refusing = "http://127.0.0.1:9";
    let opts = Options::default().env("HTTP_PROXY", refusing).env("http_proxy", refusing).env("ALL_PROXY", refusing);
    let c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.must_scale(follower, "behind-proxy", 4);
    for id in 1..=3 {
        c.eventually(SECS(10), "the write reaches every node", || {
            (c.pool_count(id, "behind-proxy") == Some(4)).then_some(())
        });
    }
}

/// The leader syncs its own log append while it replicates (the patched
/// openraft, `vendor/openraft/ENGINE-ROOM-PATCH.md`) but counts itself toward
/// the commit quorum only once that sync is reported. With the leader's sync
/// reports held back 2 s, two followers still commit a write at once; with one
/// follower frozen, a write must wait for the leader's own sync.
#[test]
fn the_leader_counts_its_own_append_only_once_synced() {
    let c = TestCluster::start(3, Options::default().env("ENGINE_TEST_SYNC_DELAY_FILE", "test-sync-delay-ms"));
    let leader = c.wait_for_leader(SECS(10));
    c.must_scale(leader, "leader-sync", 1);
    let delay_file = c.nodes[&leader].data_dir.join("test-sync-delay-ms");
    std::fs::write(&delay_file, "2000").unwrap();
    let timed_scale = |count: u32| {
        let t0 = Instant::now();
        let body = json!({"desired_count": count});
        let (code, answer) = c.request_timeout(leader, "POST", "/api/pools/leader-sync/scale", Some(&body), SECS(10));
        assert_eq!(code, 200, "scale to {count}: {answer}");
        t0.elapsed()
    };
    let with_both_followers = timed_scale(2);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    c.pause(follower);
    let with_one_follower = timed_scale(3);
    c.resume(follower);
    std::fs::remove_file(&delay_file).unwrap();
    eprintln!("FIGURE leader sync held back 2 s: write with both followers {with_both_followers:?}, with one {with_one_follower:?}");
    assert!(with_both_followers < SECS(1), "followers alone should commit: {with_both_followers:?}");
    assert!(
        with_one_follower >= Duration::from_millis(1_900),
        "acknowledged before the leader's own sync was reported: {with_one_follower:?}"
    );
    assert_eq!(c.leader(), Some(leader), "no election was needed");
    c.eventually(SECS(10), "the frozen follower catches up", || {
        (c.pool_count(follower, "leader-sync") == Some(3)).then_some(())
    });
}

#[test]
fn leader_kill_elects_a_new_leader_and_writes_resume() {
    let mut c = TestCluster::start(3, Options::default());
    let mut failovers = Vec::new();
    for round in 0..3u32 {
        let old = c.wait_for_leader(SECS(10));
        let via = c.running().into_iter().find(|id| *id != old).unwrap();
        c.must_scale(via, "failover", round * 10 + 1);
        let t0 = Instant::now();
        c.kill(old);
        // First acknowledged write after the kill, sent to a surviving node.
        let mut n = 0;
        let took = c.eventually(SECS(10), "a write after the leader kill", || {
            n += 1;
            let (code, _) = c.request_timeout(
                via,
                "POST",
                "/api/pools/failover/scale",
                Some(&json!({"desired_count": round * 10 + 2})),
                SECS(3),
            );
            (code == 200).then(|| t0.elapsed())
        });
        failovers.push(took);
        let new = c.wait_for_leader(SECS(10));
        assert_ne!(new, old);
        assert_eq!(c.pool_count(via, "failover"), Some((round * 10 + 2) as u64));
        c.run_node(old);
        c.eventually(SECS(15), "restarted node catches up", || {
            (c.pool_count(old, "failover") == Some((round * 10 + 2) as u64)).then_some(())
        });
    }
    failovers.sort();
    eprintln!("FIGURE leader kill -> first acknowledged write: {:?} (sorted), median {:?}", failovers, failovers[1]);
    assert!(failovers[2] < SECS(5), "failover too slow: {failovers:?}");
}

#[test]
fn a_node_down_during_compaction_catches_up_by_snapshot() {
    let opts = Options::default().env("ENGINE_SNAPSHOT_LOGS", "50").env("ENGINE_KEEP_LOGS", "10");
    let mut c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    let down = (1..=3).find(|id| *id != leader).unwrap();
    c.must_scale(leader, "before", 1);
    c.eventually(SECS(10), "node caught up before going down", || {
        (c.pool_count(down, "before") == Some(1)).then_some(())
    });
    c.kill(down);
    for i in 0..300u32 {
        c.must_scale(leader, &format!("p{}", i % 20), i + 1);
    }
    // Snapshots are built off the request path, so compaction follows shortly.
    let purged = c.eventually(SECS(20), "the leader compacts its log", || {
        let s = c.status(leader)?;
        let p = s["nodes"].as_array()?.iter().find(|n| n["id"] == leader)?["purged_index"].as_u64()?;
        (p > 50).then_some(p)
    });
    assert!(purged > 50, "leader must have compacted its log (purged {purged})");
    c.run_node(down);
    c.eventually(SECS(20), "snapshot install on the returning node", || {
        (c.pool_count(down, "p19") == Some(300)).then_some(())
    });
    let me = c.status(down).unwrap();
    let node = me["nodes"].as_array().unwrap().iter().find(|n| n["id"] == down).unwrap().clone();
    assert!(node["snapshot_index"].as_u64().unwrap_or(0) > 0, "caught up through a snapshot: {node}");
}

#[test]
fn the_voters_take_their_snapshots_at_different_indexes() {
    // Every 60 entries each, but staggered: voter ranks 0, 1, 2 at offsets
    // 0, 20, 40. With openraft's own policy all three snapshot at the same
    // index, encode at the same moment and stall commits together.
    let opts = Options::default().env("ENGINE_SNAPSHOT_LOGS", "60").env("ENGINE_KEEP_LOGS", "10");
    let c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    // Paced, so that a node's 100 ms check sees its own snapshot point pass
    // before the next voter's point (20 entries on) is reached.
    for i in 0..250u32 {
        c.must_scale(leader, "stagger", i + 1);
        std::thread::sleep(Duration::from_millis(15));
    }
    let own = |id: u64| -> Option<(u64, u64)> {
        let s = c.status(id)?;
        let me = s["nodes"].as_array()?.iter().find(|n| n["id"] == id)?.clone();
        Some((me["applied_index"].as_u64()?, me["snapshot_index"].as_u64()?))
    };
    let snapshots: Vec<(u64, u64)> = c.eventually(SECS(10), "all nodes applied and snapshotted", || {
        let all: Option<Vec<_>> = (1..=3).map(own).collect();
        let all = all?;
        let applied = all[0].0;
        all.iter().all(|(a, s)| *a == applied && *s > 0 && applied - s < 60).then_some(all)
    });
    eprintln!("FIGURE (applied, snapshot index) per node: {snapshots:?}");
    let mut indexes: Vec<u64> = snapshots.iter().map(|(_, s)| *s).collect();
    indexes.sort();
    indexes.dedup();
    assert_eq!(indexes.len(), 3, "each voter snapshots at its own index: {snapshots:?}");
}

#[test]
fn a_killed_follower_restarts_from_its_data_dir_and_catches_up() {
    let mut c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    let f = (1..=3).find(|id| *id != leader).unwrap();
    c.must_scale(leader, "restart", 1);
    c.kill(f);
    for i in 2..=20 {
        c.must_scale(leader, "restart", i);
    }
    c.run_node(f);
    c.eventually(SECS(15), "restarted follower catches up", || (c.pool_count(f, "restart") == Some(20)).then_some(()));
    let s = c.status(f).unwrap();
    assert_eq!(s["healthy_nodes"], 3);
}

#[test]
fn membership_add_promote_and_remove_without_downtime() {
    let mut c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    let addr = c.add_spec(4);
    c.run_node(4);
    let (code, body) = c.post(leader, "/api/cluster/learners", json!({"id": 4, "addr": addr}));
    assert_eq!(code, 200, "{body}");
    let via = (1..=3).find(|id| *id != leader).unwrap();
    c.must_scale(via, "members", 1);
    let (code, body) = c.post(via, "/api/cluster/promote", json!({"id": 4}));
    assert_eq!(code, 200, "{body}");
    c.must_scale(4, "members", 2);
    let voters = |s: &serde_json::Value| s["nodes"].as_array().unwrap().iter().filter(|n| n["voter"] == true).count();
    assert_eq!(voters(&c.status(4).unwrap()), 4);
    // Remove a follower that is not node 4, keep writing throughout.
    let gone = (1..=3).find(|id| *id != leader && *id != via).unwrap();
    let (code, body) = c.post(leader, "/api/cluster/remove", json!({"id": gone}));
    assert_eq!(code, 200, "{body}");
    c.must_scale(4, "members", 3);
    let s = c.status(leader).unwrap();
    assert_eq!(s["total_nodes"], 3, "{s}");
    assert!(s["nodes"].as_array().unwrap().iter().all(|n| n["id"] != gone));
    assert_eq!(c.pool_count(4, "members"), Some(3));

    // The removed node says so at once instead of waiting out the write timeout.
    let answer = c.eventually(Duration::from_secs(10), "removed node knows it", || {
        let started = Instant::now();
        let (code, body) = c.post(gone, "/api/pools/members/scale", json!({"desired_count": 4}));
        (code == 503 && body["error"]["code"] == "not_a_member").then(|| (started.elapsed(), body))
    });
    assert!(answer.0 < Duration::from_secs(1), "answered in {:?}: {}", answer.0, answer.1);
    let (code, body) = c.get(gone, "/api/workers?consistent=true");
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("not_a_member")), "{body}");
    let (code, body) = c.get(gone, "/api/health/ready");
    assert_eq!(code, 503);
    assert!(body["reason"].as_str().unwrap().starts_with("not_a_member"), "{body}");
    let page = reqwest::blocking::Client::new()
        .get(format!("{}/verifier-engine-room/overview", c.url(gone)))
        .basic_auth("ui", Some(chaos_tests::cluster::TOKEN))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("id=\"not-a-member\""), "banner on the removed node's UI");
    assert_eq!(c.pool_count(4, "members"), Some(3), "its refused write changed nothing");
}

#[test]
fn raft_rpc_needs_the_cluster_secret_and_api_needs_the_token() {
    let c = TestCluster::start(3, Options::default());
    let http = reqwest::blocking::Client::new();
    for path in ["/raft/vote", "/raft/prevote", "/raft/append"] {
        let res = http.post(format!("{}{path}", c.url(1))).body(vec![0u8; 8]).send().unwrap();
        assert_eq!(res.status().as_u16(), 401, "{path} without the secret");
    }
    // Signed, an undecodable pre-vote is a 400, not a crash.
    let (status, _) = chaos_tests::peer::post_signed(&http, &c.url(1), "/raft/prevote", vec![0xffu8; 3], 0);
    assert_eq!(status, 400);
    // The secret itself in clear is not accepted (ENGINE_ALLOW_PLAIN_SECRET is off).
    for secret in [chaos_tests::cluster::SECRET, "wrong"] {
        let res = http
            .post(format!("{}/raft/vote", c.url(1)))
            .header("x-engine-cluster-secret", secret)
            .body(vec![0u8])
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 401);
    }
    let res = http.get(format!("{}/api/pools", c.url(2))).send().unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let res = http.get(format!("{}/api/health/live", c.url(3))).send().unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

#[test]
fn bad_config_stops_the_node_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(chaos_tests::binary());
        cmd.arg("serve").env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run binary")
    };
    let d = dir.path().to_str().unwrap();
    let (tok, sec) = (chaos_tests::cluster::TOKEN, chaos_tests::cluster::SECRET);
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{sec}\n")).unwrap();
    let secret_file = secret_file.to_str().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let peers = "1=http://127.0.0.1:7951,2=http://127.0.0.1:7952";
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("ENGINE_NODE_ID", "1"), ("ENGINE_PEERS", peers), ("ENGINE_DATA_DIR", d), ("CLUSTER_SECRET", sec)],
            "CONTROL_PLANE_TOKEN",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "3"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", tok),
                ("CLUSTER_SECRET", sec),
            ],
            "not in ENGINE_PEERS",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", "/proc/engine-room-no"),
                ("CONTROL_PLANE_TOKEN", tok),
                ("CLUSTER_SECRET", sec),
            ],
            "ENGINE_DATA_DIR",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", tok),
                ("CLUSTER_SECRET", sec),
                ("ALERT_CHECK_INTERVAL_SECONDS", "-1"),
            ],
            "ALERT_CHECK_INTERVAL_SECONDS",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", "t"),
                ("CLUSTER_SECRET", sec),
            ],
            "CONTROL_PLANE_TOKEN is 1 bytes, shorter than 32",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", sec),
                ("CLUSTER_SECRET_FILE", secret_file),
            ],
            "CONTROL_PLANE_TOKEN equals CLUSTER_SECRET",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", tok),
                ("CLUSTER_SECRET", sec),
                ("CLUSTER_SECRET_FILE", secret_file),
            ],
            "set CLUSTER_SECRET or CLUSTER_SECRET_FILE, not both",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN_FILE", missing),
                ("CLUSTER_SECRET", sec),
            ],
            "CONTROL_PLANE_TOKEN_FILE",
        ),
        (
            vec![
                ("ENGINE_NODE_ID", "1"),
                ("ENGINE_PEERS", peers),
                ("ENGINE_DATA_DIR", d),
                ("CONTROL_PLANE_TOKEN", tok),
                ("CLUSTER_SECRET", sec),
                ("STALE_WORKER_TTL_SECONDS", "18446744073709551"),
            ],
            "STALE_WORKER_TTL_SECONDS",
        ),
    ];
    for (envs, needle) in cases {
        let out = run(&envs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
        assert!(err.contains(needle), "{needle} not in {err}");
        assert!(!err.contains("panicked"));
    }
}
