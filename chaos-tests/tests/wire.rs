//! Issue 19, points 4 and 5, against real nodes: crafted bytes to every
//! `/raft` route with a valid signature, a fake peer whose replies are
//! crafted, the peer allowlist, and the signature's time window and replay
//! check. In every case the nodes keep serving: writes succeed, no node
//! dies, the API never answers 500.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_tests::peer::post_signed;
use chaos_tests::{Options, TestCluster};
use model::codec;
use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};
use raft_store::TypeConfig;
use serde_json::json;

const ROUTES: [&str; 8] = [
    "/raft/append",
    "/raft/vote",
    "/raft/prevote",
    "/raft/snapshot",
    "/raft/propose",
    "/raft/read-index",
    "/raft/report",
    "/raft/format",
];

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client")
}

/// Does `body` decode as what `route` expects? (Crafted bodies that happen
/// to be valid messages are skipped: a signed, valid message is a peer's.)
fn decodes(route: &str, body: &[u8]) -> bool {
    match route {
        "/raft/append" => codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(body).is_ok(),
        "/raft/vote" => codec::decode::<openraft::raft::VoteRequest<u64>>(body).is_ok(),
        "/raft/prevote" => codec::decode::<raft_store::election::PreVoteRequest>(body).is_ok(),
        "/raft/snapshot" => codec::decode::<openraft::raft::InstallSnapshotRequest<TypeConfig>>(body).is_ok(),
        "/raft/propose" => codec::decode::<raft_store::cluster::Proposal>(body).is_ok(),
        _ => false,
    }
}

/// A valid message for `route` (from a stale term, so it changes nothing).
fn valid(route: &str) -> Vec<u8> {
    let vote = Vote::new_committed(0, 1);
    match route {
        "/raft/append" => codec::encode(&openraft::raft::AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }),
        "/raft/vote" => codec::encode(&openraft::raft::VoteRequest::<u64> { vote, last_log_id: None }),
        "/raft/snapshot" => codec::encode(&snapshot_chunk(0, vec![7; 300])),
        _ => codec::encode(&raft_store::election::PreVoteRequest { candidate: 1, last_log_index: None }),
    }
    .expect("encode a test message")
}

fn snapshot_chunk(offset: u64, data: Vec<u8>) -> openraft::raft::InstallSnapshotRequest<TypeConfig> {
    openraft::raft::InstallSnapshotRequest {
        vote: Vote::new_committed(0, 1),
        meta: raft_store::types::SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(0, 1), 10)),
            last_membership: StoredMembership::default(),
            snapshot_id: "crafted".into(),
        },
        offset,
        data,
        done: false,
    }
}

/// Huge length prefixes at every early position, truncations of a valid
/// message, random bytes, and one body over the size limit.
fn crafted(route: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("empty".to_string(), vec![]), ("0xff".into(), vec![0xff; 3])];
    // Without a limit, u64::MAX overflows a capacity (a panic), 2^50 asks
    // the allocator for a petabyte (an abort), u32::MAX for 4 GiB.
    let prefix = |len: u64| [&[253u8][..], &len.to_le_bytes()].concat();
    let (max, peta, u32max) = (prefix(u64::MAX), prefix(1 << 50), vec![252u8, 0xff, 0xff, 0xff, 0xff]);
    for at in 0..12 {
        for (name, marker) in [("u64::MAX", &max), ("2^50", &peta), ("u32::MAX", &u32max)] {
            let mut b = vec![1u8; at];
            b.extend_from_slice(marker);
            b.extend_from_slice(b"tail");
            out.push((format!("{name} length prefix at {at}"), b));
        }
    }
    let whole = valid(route);
    for cut in [1, whole.len() / 3, whole.len() / 2, whole.len().saturating_sub(1)] {
        out.push((format!("valid message cut at {cut}"), whole[..cut.min(whole.len())].to_vec()));
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ route.len() as u64;
    for i in 0..40 {
        let len = 16 + (i * 97) % 4000;
        let junk = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        out.push((format!("random {i}"), junk));
    }
    out.push(("over the body limit".into(), vec![1u8; raft_store::rpc_server::RAFT_BODY_LIMIT + 1]));
    out.retain(|(_, b)| !decodes(route, b));
    out
}

/// The nodes serve: every node is alive, a write through each one succeeds
/// and its cluster status answers 200.
fn assert_serving(c: &TestCluster, round: &str) {
    for id in c.running() {
        c.wait_live(id, Duration::from_secs(5));
        let started = Instant::now();
        let (code, body) = c.post(id, "/api/pools/wire/scale", json!({"desired_count": 1 + id}));
        assert_eq!(code, 200, "{round}: a write through node {id}: {body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{round}: write took {:?}", started.elapsed());
        let (code, body) = c.post(
            id,
            "/api/workers/heartbeat",
            json!({"worker_id": format!("wire-{id}"), "host": "h", "ip": "203.0.113.9", "pool": "wire",
                   "version": "1", "status": "running", "process_state": "running"}),
        );
        assert_eq!(code, 200, "{round}: a heartbeat through node {id}: {body}");
        let (code, _) = c.get(id, "/api/cluster/status");
        assert_eq!(code, 200, "{round}: status of node {id}");
    }
}

#[test]
fn crafted_bytes_to_every_raft_route_are_refused_and_the_nodes_keep_serving() {
    let c = TestCluster::start(3, Options::default());
    let http = http();
    let leader = c.wait_for_leader(Duration::from_secs(10));
    let follower = c.running().into_iter().find(|id| *id != leader).expect("a follower");
    for route in ROUTES {
        for target in [leader, follower] {
            let cases = crafted(route);
            assert!(cases.len() > 30, "{route}: {} crafted bodies", cases.len());
            for (name, body) in cases {
                let len = body.len();
                let started = Instant::now();
                let (status, answer) = post_signed(&http, &c.url(target), route, body, 0);
                let took = started.elapsed();
                assert!(took < Duration::from_secs(5), "{route} {name}: {took:?}");
                let expected: &[u16] = match (route, len > raft_store::rpc_server::RAFT_BODY_LIMIT) {
                    (_, true) => &[413],
                    // These ignore or tolerate their body.
                    ("/raft/read-index" | "/raft/report" | "/raft/format", _) => &[200],
                    _ => &[400],
                };
                assert!(
                    expected.contains(&status),
                    "{route} {name} to node {target}: {status} {}",
                    String::from_utf8_lossy(&answer[..answer.len().min(300)])
                );
            }
        }
        assert_serving(&c, route);
    }

    // Snapshot chunks out of bounds are refused before openraft sees them
    // (it would grow its buffer to any offset); a first chunk is taken.
    for target in [leader, follower] {
        for offset in [u64::MAX - 3, 1 << 40, 5, (1 << 30) - 10] {
            let body = codec::encode(&snapshot_chunk(offset, vec![9; 100])).unwrap();
            let (status, answer) = post_signed(&http, &c.url(target), "/raft/snapshot", body, 0);
            let answer = String::from_utf8_lossy(&answer).to_string();
            assert_eq!(status, 400, "offset {offset}: {answer}");
            assert!(answer.contains("bad_snapshot_chunk"), "{answer}");
        }
        let (status, _) = post_signed(&http, &c.url(target), "/raft/snapshot", valid("/raft/snapshot"), 0);
        assert_eq!(status, 200, "a chunk at offset 0 of a stale term is answered (with the node's vote)");
    }
    assert_serving(&c, "snapshot offsets");
    assert_eq!(c.wait_for_leader(Duration::from_secs(5)), leader, "no election was caused");
}

#[test]
fn signatures_outside_the_time_window_replays_and_the_plain_secret_are_refused() {
    let c = TestCluster::start(3, Options::default());
    let http = http();
    let url = c.url(1);
    let (status, _) = post_signed(&http, &url, "/raft/report", vec![], 0);
    assert_eq!(status, 200, "a signed request");
    for skew in [-60_000i64, 60_000] {
        let (status, body) = post_signed(&http, &url, "/raft/report", vec![], skew);
        let body = String::from_utf8_lossy(&body).to_string();
        assert_eq!(status, 401, "{skew} ms off: {body}");
        assert!(body.contains("skew"), "{body}");
    }
    // A forwarded proposal is accepted once: the same signed bytes again are
    // a replay (the body need not even decode; this one does not).
    let body = vec![0xffu8; 4];
    let auth = chaos_tests::peer::sign(
        chaos_tests::cluster::SECRET,
        "POST",
        "/raft/propose",
        chaos_tests::peer::now_ms(),
        42,
        &body,
    );
    let send = || {
        let res = http
            .post(format!("{url}/raft/propose"))
            .header("x-engine-peer-auth", &auth)
            .body(body.clone())
            .send()
            .unwrap();
        (res.status().as_u16(), res.text().unwrap_or_default())
    };
    assert_eq!(send().0, 400, "first: authentic, undecodable");
    let (status, text) = send();
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("replayed"), "{text}");
    // Signed for another path, or with a body changed in flight.
    let auth = chaos_tests::peer::sign(
        chaos_tests::cluster::SECRET,
        "POST",
        "/raft/report",
        chaos_tests::peer::now_ms(),
        1,
        b"",
    );
    let res = http.post(format!("{url}/raft/format")).header("x-engine-peer-auth", &auth).send().unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = http.post(format!("{url}/raft/report")).header("x-engine-peer-auth", &auth).body("x").send().unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = http
        .post(format!("{url}/raft/report"))
        .header("x-engine-cluster-secret", chaos_tests::cluster::SECRET)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401, "the plain secret is off by default");
    assert_serving(&c, "after refused signatures");
    drop(c);

    // The rolling-upgrade window: the plain secret is accepted (and sent).
    let c = TestCluster::start(3, Options::default().env("ENGINE_ALLOW_PLAIN_SECRET", "true"));
    for (secret, expected) in [(chaos_tests::cluster::SECRET, 200), ("wrong", 401)] {
        let res =
            http.post(format!("{}/raft/report", c.url(2))).header("x-engine-cluster-secret", secret).send().unwrap();
        assert_eq!(res.status().as_u16(), expected, "plain secret {secret:?}");
    }
    assert_serving(&c, "plain secret allowed");
}

#[test]
fn learners_outside_the_allowlist_are_refused_and_nothing_changes() {
    // The default list: hosts of the members and of ENGINE_PEERS.
    let c = TestCluster::start(3, Options::default().env("ENGINE_PEER_ALLOWLIST", ""));
    let leader = c.wait_for_leader(Duration::from_secs(10));
    for via in c.running() {
        for addr in ["http://127.0.0.99:7001", "http://198.51.100.7:7001", "https://evil.example.com"] {
            let (code, body) = c.post(via, "/api/cluster/learners", json!({"id": 7, "addr": addr}));
            assert_eq!(code, 400, "{addr} via {via}: {body}");
            assert_eq!(body["error"]["code"], "peer_not_allowed", "{body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("ENGINE_PEER_ALLOWLIST"), "{body}");
        }
    }
    let (_, status) = c.get(leader, "/api/cluster/status");
    assert_eq!(status["total_nodes"], 3, "membership unchanged: {status}");
    assert_serving(&c, "after refused learners");
}

/// A peer that answers every request with crafted bytes, one kind after the
/// other; it runs until dropped (bounded by a deadline in any case).
struct FakePeer {
    url: String,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const MARKER: &str = "FAKE-PEER-MARKER";

impl FakePeer {
    fn start(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind the fake peer");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (served, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (s, st) = (served.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let counters = [AtomicUsize::new(0), AtomicUsize::new(0)];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        s.fetch_add(1, Ordering::Relaxed);
                        let _ = answer(stream, &counters);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { url, served, stop, thread: Some(thread) }
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read one request (headers and its body), then write a crafted reply:
/// the `n`th kind, counted apart for `/raft/report` (status asks for few).
fn answer(mut stream: TcpStream, counters: &[AtomicUsize; 2]) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let got = stream.read(&mut chunk)?;
        if got == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..got]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let report = head.starts_with("post /raft/report ");
    let n = counters[usize::from(report)].fetch_add(1, Ordering::Relaxed);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
        .min(32 << 20);
    let mut have = buf.len() - head_end;
    while have < length {
        let got = stream.read(&mut chunk)?;
        if got == 0 {
            break;
        }
        have += got;
    }
    let reply = |status: &str, headers: &str, body: &[u8]| {
        let mut r = format!("HTTP/1.1 {status}\r\nconnection: close\r\n{headers}\r\n").into_bytes();
        r.extend_from_slice(body);
        r
    };
    // A petabyte length prefix (without a decode limit: an allocation
    // failure, which aborts) after 0..6 one-byte fields, so that it lands on
    // the length of a string or list of whichever reply is expected; for a
    // report, right after its id, on the length of its role.
    let ones = if report { 1 } else { (n / 7) % 6 };
    let mut huge_prefix = vec![1u8; ones];
    huge_prefix.push(253);
    huge_prefix.extend_from_slice(&(1u64 << 50).to_le_bytes());
    huge_prefix.extend_from_slice(b"junk");
    let error_body = format!(r#"{{"error":{{"code":"<b>{MARKER}</b>","message":"{MARKER} secret=hunter2"}}}}"#);
    let garbage: Vec<u8> = (0..1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mode = match n % 7 {
        // A 17 MiB body (over the reply cap) is costly: one in 35.
        6 if n % 35 != 6 => 2,
        m => m,
    };
    match mode {
        0 => {
            // A length far over the cap, and a few bytes.
            stream.write_all(&reply("200 OK", &format!("content-length: {}\r\n", 1u64 << 40), b"x"))?;
        }
        1 => stream.write_all(&reply("200 OK", &format!("content-length: {}\r\n", huge_prefix.len()), &huge_prefix))?,
        2 => stream.write_all(&reply("200 OK", &format!("content-length: {}\r\n", garbage.len()), &garbage))?,
        3 => stream.write_all(&reply(
            "401 Unauthorized",
            &format!("content-length: {}\r\n", error_body.len()),
            error_body.as_bytes(),
        ))?,
        4 => {
            let body = format!("<html>{MARKER} stack trace {}</html>", "x".repeat(10_000));
            stream.write_all(&reply(
                "500 Internal Server Error",
                &format!("content-length: {}\r\n", body.len()),
                body.as_bytes(),
            ))?
        }
        5 => {
            // Promised 1000 bytes, sent 10, then closed.
            stream.write_all(&reply("200 OK", "content-length: 1000\r\n", &[1u8; 10]))?;
        }
        _ => {
            // Chunked, no length announced, 17 MiB: cut off by the cap.
            stream.write_all(&reply("200 OK", "transfer-encoding: chunked\r\n", b""))?;
            let piece = vec![0u8; 1 << 20];
            for _ in 0..17 {
                stream.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
                stream.write_all(&piece)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")?;
        }
    }
    stream.flush()
}

#[test]
fn a_fake_peer_with_crafted_replies_cannot_hurt_the_cluster() {
    let c = TestCluster::start(3, Options::default());
    let peer = FakePeer::start("127.0.0.60");
    let leader = c.wait_for_leader(Duration::from_secs(10));
    // The add blocks until the learner catches up, which this one never
    // does: the membership change commits, the call may time out.
    let (code, body) = c.request_timeout(
        leader,
        "POST",
        "/api/cluster/learners",
        Some(&json!({"id": 9, "addr": peer.url})),
        Duration::from_secs(10),
    );
    assert!(code == 200 || code == 503, "add the fake learner: {code} {body}");
    for id in c.running() {
        c.eventually(Duration::from_secs(10), "the fake learner in every node's membership", || {
            let (_, s) = c.get(id, "/api/cluster/status");
            s["nodes"].as_array()?.iter().any(|n| n["id"] == 9).then_some(())
        });
    }

    let started = Instant::now();
    let mut rounds = 0;
    let mut classes = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(12) || peer.served.load(Ordering::Relaxed) < 40 {
        assert!(started.elapsed() < Duration::from_secs(60), "the fake peer saw too few requests");
        assert_serving(&c, &format!("fake peer round {rounds}"));
        for id in c.running() {
            let (code, status) = c.get(id, "/api/cluster/status");
            assert_eq!(code, 200);
            let text = status.to_string();
            assert!(!text.contains(MARKER) && !text.contains("hunter2"), "peer bytes echoed: {text}");
            let fake = status["nodes"].as_array().unwrap().iter().find(|n| n["id"] == 9).cloned().unwrap();
            assert_eq!(fake["healthy"], false, "{fake}");
            let error = fake["error"].as_str().unwrap_or_default().to_string();
            assert!(!error.is_empty() && error.len() <= 24, "a short classification: {error:?}");
            classes.insert(error);
        }
        rounds += 1;
    }
    eprintln!("fake peer: {} requests answered, status errors seen: {classes:?}", peer.served.load(Ordering::Relaxed));
    assert!(classes.len() >= 3, "several kinds of crafted reply were classified: {classes:?}");
    assert_eq!(c.running().len(), 3);
}
