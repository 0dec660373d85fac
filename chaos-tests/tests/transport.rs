//! Issue 19, points 1, 2 and 6 (transport) across real nodes: a cluster on
//! certificates from `engine-room certs init` speaks only HTTPS, to clients
//! and between nodes (mutual TLS on `/raft`); `/raft` on a listener of its
//! own; slow clients (slowloris) do not stop a node from serving heartbeats
//! and Raft traffic; the caps answer with our JSON errors.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chaos_tests::cluster::{ca_certs, TOKEN};
use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn beat(id: &str, seq: u64) -> Value {
    json!({"worker_id": id, "host": "vps-1", "ip": "127.0.0.1", "pool": "tls", "version": "1", "status": "running",
           "process_state": "running", "seq": seq, "metrics": {"processed": seq}})
}

/// A heartbeat through every node, then each node's linearizable view has all three.
fn writes_replicate(c: &TestCluster, tag: &str) {
    for n in 1..=3u64 {
        let (code, body) = c.post(n, "/api/workers/heartbeat", beat(&format!("{tag}-{n}"), 1));
        assert_eq!(code, 200, "heartbeat via node {n}: {body}");
    }
    for n in 1..=3u64 {
        for w in 1..=3u64 {
            let (code, body) = c.get(n, &format!("/api/workers/{tag}-{w}?consistent=true"));
            assert_eq!(code, 200, "worker {tag}-{w} on node {n}: {body}");
        }
    }
}

fn blocking(builder: reqwest::blocking::ClientBuilder) -> reqwest::blocking::Client {
    builder.timeout(SECS(5)).connect_timeout(SECS(2)).build().expect("client")
}

fn trusting_ca(c: &TestCluster) -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder().tls_backend_rustls().tls_certs_only(ca_certs(&c.certs_dir()))
}

/// Node `id`'s certificate and key as a client identity.
fn node_identity(c: &TestCluster, id: u64) -> reqwest::Identity {
    let dir = c.certs_dir();
    let cert = std::fs::read(dir.join(format!("node-{id}.pem"))).unwrap();
    let key = std::fs::read(dir.join(format!("node-{id}-key.pem"))).unwrap();
    reqwest::Identity::from_pem(&[cert, key].concat()).expect("node identity")
}

#[test]
fn a_cluster_on_certs_init_certificates_speaks_only_tls() {
    let c = TestCluster::start(3, Options::default().tls());
    let status = c.status(1).expect("status over https");
    for node in status["nodes"].as_array().expect("nodes") {
        assert!(node["addr"].as_str().unwrap_or("").starts_with("https://"), "peer URL is https: {node}");
    }
    writes_replicate(&c, "tls");

    let url = |n: u64, path: &str| format!("{}{path}", c.url(n));
    let ca = blocking(trusting_ca(&c));
    let no_ca = blocking(reqwest::blocking::Client::builder().tls_backend_rustls());
    let plain = blocking(reqwest::blocking::Client::builder());
    for n in 1..=3u64 {
        let live = url(n, "/api/health/live");
        assert_eq!(ca.get(&live).send().map(|r| r.status().as_u16()).ok(), Some(200), "node {n} trusted over TLS");
        assert!(no_ca.get(&live).send().is_err(), "node {n}: a client without the CA must not connect");
        let http = live.replacen("https://", "http://", 1);
        let served = plain.get(&http).send().map(|r| r.status().is_success()).unwrap_or(false);
        assert!(!served, "node {n}: plain HTTP must not be served");
    }

    // Mutual TLS on /raft: without a client certificate, refused before any
    // Raft code runs; with a node's certificate it reaches the Raft handler.
    let vote = url(1, "/raft/vote");
    let res = ca.post(&vote).body(Vec::<u8>::new()).send().expect("answer");
    assert_eq!(res.status().as_u16(), 403);
    let body: Value = res.json().unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "client_certificate_required", "{body}");
    let peer = blocking(trusting_ca(&c).identity(node_identity(&c, 2)));
    let res = peer.post(&vote).body(Vec::<u8>::new()).send().expect("answer");
    // (Refused further on for want of the cluster secret: that is Raft's own check.)
    let body = res.text().unwrap_or_default();
    assert!(!body.contains("client_certificate_required"), "a node's certificate passes the transport gate: {body}");

    // The CLI's client path: the API over TLS with the bearer token.
    let res = ca.get(url(2, "/api/cluster/status")).bearer_auth(TOKEN).send().expect("status");
    assert_eq!(res.status().as_u16(), 200);
}

#[test]
fn raft_on_its_own_listener_with_mutual_tls() {
    let c = TestCluster::start(3, Options::default().tls().raft_apart());
    writes_replicate(&c, "apart");
    let ca = blocking(trusting_ca(&c));
    let n1 = &c.nodes[&1];
    // The public listener has no /raft; the raft listener no API, and no
    // handshake without a node certificate.
    let res = ca.post(format!("{}/raft/vote", n1.url())).body(Vec::<u8>::new()).send().expect("answer");
    assert_eq!(res.status().as_u16(), 404, "/raft is not on the public listener");
    assert!(ca.get(format!("{}/api/health/live", n1.peer_url())).send().is_err(), "no client cert, no handshake");
    let peer = blocking(trusting_ca(&c).identity(node_identity(&c, 2)));
    let res = peer.get(format!("{}/api/health/live", n1.peer_url())).send().expect("answer");
    assert_eq!(res.status().as_u16(), 404, "the raft listener serves /raft only");
}

/// Sockets that opened a request and send one more header line each second,
/// never finishing it.
struct Slowloris {
    socks: Vec<Option<TcpStream>>,
}

impl Slowloris {
    fn open(addr: &str, count: usize) -> Self {
        let socks = (0..count)
            .map(|i| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nonblocking(true).expect("nonblocking");
                let _ = write!(s, "POST /api/workers/heartbeat HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: a\r\n");
                Some(s)
            })
            .collect();
        Self { socks }
    }

    /// One more header line on every socket still open; drop those the node
    /// closed. Returns how many are still open.
    fn drip(&mut self) -> usize {
        for slot in self.socks.iter_mut() {
            let Some(s) = slot else { continue };
            let mut buf = [0u8; 512];
            let closed = match s.read(&mut buf) {
                Ok(_) => true, // EOF, or an error answer: the node gave up on it
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            if closed || s.write_all(b"X-More: b\r\n").is_err() {
                *slot = None;
            }
        }
        self.socks.iter().filter(|s| s.is_some()).count()
    }
}

#[test]
fn slowloris_does_not_stop_heartbeats_or_raft() {
    let c = TestCluster::start(3, Options::default());
    let leader = c.wait_for_leader(SECS(10));
    let term = c.status(leader).expect("status")["term"].as_u64();
    writes_replicate(&c, "before");

    // 500 half-sent requests on every node.
    let started = Instant::now();
    let mut attacks: Vec<Slowloris> =
        (1..=3u64).map(|n| Slowloris::open(&format!("{}:{}", c.nodes[&n].ip, c.nodes[&n].port), 500)).collect();

    // While they drip, every node keeps taking heartbeats on new connections
    // (fresh client each round) and through the leader's Raft log.
    let mut round = 0u64;
    let mut worst = Duration::ZERO;
    let mut open_left = usize::MAX;
    // 1,500 connects at once overflow the listen backlog: the kernel
    // completes some late, and their 10 s start at accept. 30 s bounds it.
    while started.elapsed() < SECS(30) {
        round += 1;
        let fresh = reqwest::blocking::Client::builder().timeout(SECS(3)).build().expect("client");
        for n in 1..=3u64 {
            let t = Instant::now();
            let res = fresh
                .post(format!("{}/api/workers/heartbeat", c.url(n)))
                .bearer_auth(TOKEN)
                .json(&beat(&format!("during-{n}"), round))
                .send();
            let code = res.map(|r| r.status().as_u16()).unwrap_or(0);
            assert_eq!(code, 200, "heartbeat via node {n} in round {round} ({:?} into the attack)", started.elapsed());
            worst = worst.max(t.elapsed());
        }
        open_left = attacks.iter_mut().map(Slowloris::drip).sum();
        if open_left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "slowloris: {round} rounds of 3 heartbeats, slowest {worst:?}; all 1500 sockets closed after {:?}",
        started.elapsed()
    );
    assert!(worst < SECS(2), "a heartbeat took {worst:?} under attack");
    assert_eq!(open_left, 0, "the header-read timeout (10 s) closed every half-sent request within 30 s");
    assert!(started.elapsed() >= SECS(9), "closed by the timeout, not at once");
    assert_eq!(c.status(leader).expect("status")["term"].as_u64(), term, "no election during the attack");
    writes_replicate(&c, "after");
}

#[test]
fn caps_answer_with_json_errors() {
    let c = TestCluster::start(
        3,
        Options::default()
            .env("ENGINE_MAX_SSE_STREAMS", "2")
            .env("ENGINE_REQUEST_TIMEOUT_MS", "6000")
            .env("ENGINE_MAX_CONNECTIONS", "64"),
    );
    let n1 = &c.nodes[&1];
    let addr = format!("{}:{}", n1.ip, n1.port);

    // Event streams: two open, the third is shed with 503 overloaded.
    let streaming = reqwest::blocking::Client::builder().build().expect("client");
    let events = format!("{}/verifier-engine-room/events", c.url(1));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut res = streaming.get(&events).basic_auth("ui", Some(TOKEN)).send().expect("stream");
        assert_eq!(res.status().as_u16(), 200);
        let mut first = [0u8; 16];
        res.read_exact(&mut first).expect("first event");
        open.push(res);
    }
    let res = streaming.get(&events).basic_auth("ui", Some(TOKEN)).send().expect("answer");
    assert_eq!(res.status().as_u16(), 503);
    let body: Value = res.json().unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    drop(open);
    c.eventually(SECS(5), "a stream slot freed", || {
        let res = streaming.get(&events).basic_auth("ui", Some(TOKEN)).send().ok()?;
        (res.status().as_u16() == 200).then_some(())
    });

    // A body sent too slowly: 408 request_timeout after ENGINE_REQUEST_TIMEOUT_MS.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(SECS(15))).unwrap();
    let started = Instant::now();
    write!(
        s,
        "POST /api/workers/heartbeat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"worker_id\""
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(5_900) && took < SECS(12), "answered after {took:?}");

    // Connections past ENGINE_MAX_CONNECTIONS=64 are closed at once; the
    // node serves again once they go.
    let socks: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut held = Vec::new();
    let mut refused = 0;
    for mut s in socks {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            // Still open, waiting for our request.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held.push(s),
            // Closed (FIN or reset) without a word.
            _ => refused += 1,
        }
    }
    assert!(refused >= 30, "only {refused} of 100 connections were refused at a cap of 64");
    drop(held);
    c.eventually(SECS(5), "node 1 serving again", || (c.get(1, "/api/health/live").0 == 200).then_some(()));
    writes_replicate(&c, "caps");
}

/// Send one keep-alive request on `s` and read its whole answer; the status.
fn request_on(s: &mut TcpStream, path: &str) -> std::io::Result<u16> {
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    s.set_read_timeout(Some(SECS(3)))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(text[9..12].parse().unwrap_or(0));
            }
        }
    }
}

/// Is `s` closed by the node (EOF) right now? (Waits up to 200 ms.)
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// The header-read bound runs from a head's first byte; an idle keep-alive
/// connection stays open for the (longer) idle time, so a client that reuses
/// a pooled connection after a pause is answered (the rehearsal saw a
/// request on a connection closed at 10 s idle fail).
#[test]
fn idle_keep_alive_outlives_the_header_read_bound() {
    let c = TestCluster::start(
        1,
        Options::default().env("ENGINE_HEADER_READ_TIMEOUT_MS", "2000").env("ENGINE_KEEPALIVE_IDLE_MS", "8000"),
    );
    c.wait_for_leader(SECS(10));
    let addr = format!("{}:{}", c.nodes[&1].ip, c.nodes[&1].port);
    let mut reused = TcpStream::connect(&addr).expect("connect");
    let mut silent = TcpStream::connect(&addr).expect("connect");
    let mut slow = TcpStream::connect(&addr).expect("connect");
    assert_eq!(request_on(&mut reused, "/api/health/live").expect("first request"), 200);
    write!(slow, "GET /api/health/live HTTP/1.1\r\n").expect("half a head");

    std::thread::sleep(SECS(4));
    assert!(closed(&mut slow), "a head not finished within 2 s is closed");
    assert!(!closed(&mut silent), "a connection that sent nothing is idle, not slow");
    assert_eq!(
        request_on(&mut reused, "/api/health/live").expect("the pooled connection still serves after 4 s idle"),
        200
    );

    std::thread::sleep(SECS(10));
    assert!(closed(&mut reused), "idle past ENGINE_KEEPALIVE_IDLE_MS: closed");
    assert!(closed(&mut silent), "idle past ENGINE_KEEPALIVE_IDLE_MS: closed");
}
