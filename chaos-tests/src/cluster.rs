//! `TestCluster`: start N nodes, drive them over HTTP, kill and restart them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The test cluster's API token and cluster secret: 32 bytes or more, as a
/// node outside `dev` requires.
pub const TOKEN: &str = "chaos-token-0123456789abcdef0123456789abcdef";
pub const SECRET: &str = "chaos-secret-0123456789abcdef0123456789abcdef";

/// An `Authorization` header value for HTTP basic auth.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Knobs for a test cluster; `env` adds or overrides node environment.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// HTTPS everywhere, with certificates from `engine-room certs init`.
    pub tls: bool,
    /// `/raft` on a listener of its own (`ENGINE_RAFT_LISTEN`, the peer URL);
    /// the API on another port.
    pub raft_apart: bool,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    pub fn raft_apart(mut self) -> Self {
        self.raft_apart = true;
        self
    }
}

pub struct Node {
    pub id: u64,
    pub ip: String,
    /// The port of the peer URL (the only one, unless `/raft` is apart).
    pub port: u16,
    /// The API's port when `/raft` has a listener of its own.
    pub api_port: Option<u16>,
    pub scheme: &'static str,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Where the API is.
    pub fn url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.ip, self.api_port.unwrap_or(self.port))
    }

    /// Where peers reach `/raft`.
    pub fn peer_url(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.ip, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct TestCluster {
    pub nodes: BTreeMap<u64, Node>,
    pub peers: String,
    opts: Options,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

/// A free port on `ip`, found by binding port 0 and letting it go.
fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind to a loopback address");
    l.local_addr().expect("bound listener has an address").port()
}

/// The certificates in `dir/ca.pem`, for a client that trusts the cluster CA alone.
pub fn ca_certs(dir: &std::path::Path) -> Vec<reqwest::Certificate> {
    let pem = std::fs::read(dir.join("ca.pem")).expect("certs init wrote ca.pem");
    reqwest::Certificate::from_pem_bundle(&pem).expect("ca.pem is PEM")
}

fn node_ip(id: u64) -> String {
    format!("127.0.0.{}", 10 + id)
}

impl TestCluster {
    /// Start nodes `1..=n` as the initial voters and wait for a leader.
    pub fn start(n: u64, opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        crate::net::remove_stale_cuts();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(id, Self::spec(dir.path(), id, &opts));
        }
        let peers = nodes.values().map(|n| format!("{}={}", n.id, n.peer_url())).collect::<Vec<_>>().join(",");
        // Pooled connections are dropped after 60 s idle, below the node's
        // keep-alive idle close (ENGINE_KEEPALIVE_IDLE_MS, 75 s).
        let mut http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(8))
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60));
        if opts.tls {
            let hosts = (1..=n).map(node_ip).collect::<Vec<_>>().join(",");
            crate::run_ok(
                &["certs", "init", "--nodes", &n.to_string(), "--out", "certs", "--hosts", &hosts],
                dir.path(),
            );
            http = http.tls_backend_rustls().tls_certs_only(ca_certs(&dir.path().join("certs")));
        }
        let http = http.build().expect("http client");
        let mut c = TestCluster { nodes, peers, opts, dir, http };
        for id in 1..=n {
            c.run_node(id);
        }
        c.wait_for_leader(Duration::from_secs(20));
        c
    }

    fn spec(dir: &std::path::Path, id: u64, opts: &Options) -> Node {
        let ip = node_ip(id);
        Node {
            id,
            port: free_port(&ip),
            api_port: opts.raft_apart.then(|| free_port(&ip)),
            scheme: if opts.tls { "https" } else { "http" },
            ip,
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            child: None,
        }
    }

    /// Add a node spec (not yet running) whose peers list includes itself.
    pub fn add_spec(&mut self, id: u64) -> String {
        let n = Self::spec(self.dir.path(), id, &self.opts);
        if self.opts.tls {
            crate::run_ok(
                &["certs", "add", "--out", "certs", "--id", &id.to_string(), "--hosts", &n.ip],
                self.dir.path(),
            );
        }
        let url = n.peer_url();
        self.peers = format!("{},{}={}", self.peers, id, url);
        self.nodes.insert(id, n);
        url
    }

    /// Start (or restart) node `id` from its data dir.
    pub fn run_node(&mut self, id: u64) {
        let peers = self.peers.clone();
        let n = self.nodes.get_mut(&id).expect("known node");
        assert!(n.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).expect("open node log");
        let mut cmd = Command::new(crate::binary());
        cmd.arg("serve")
            .env("ENGINE_NODE_ID", id.to_string())
            .env("ENGINE_LISTEN", format!("{}:{}", n.ip, n.api_port.unwrap_or(n.port)))
            .env("ENGINE_DATA_DIR", &n.data_dir)
            .env("ENGINE_PEERS", peers)
            .env("CONTROL_PLANE_TOKEN", TOKEN)
            .env("CLUSTER_SECRET", SECRET)
            // Test nodes live on 127.0.0.x; a test about the default list unsets it.
            .env("ENGINE_PEER_ALLOWLIST", "127.0.0.0/8")
            .env("RUST_LOG", "info,openraft=warn,sled=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if n.api_port.is_some() {
            cmd.env("ENGINE_RAFT_LISTEN", format!("{}:{}", n.ip, n.port));
        }
        if self.opts.tls {
            let certs = self.dir.path().join("certs");
            cmd.env("ENGINE_TLS_CERT", certs.join(format!("node-{id}.pem")))
                .env("ENGINE_TLS_KEY", certs.join(format!("node-{id}-key.pem")))
                .env("ENGINE_TLS_CA", certs.join("ca.pem"));
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        n.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", crate::binary())));
        self.wait_live(id, Duration::from_secs(20));
    }

    /// Wait until node `id` answers `/api/health/live` (its listener is up).
    pub fn wait_live(&self, id: u64, timeout: Duration) {
        let url = format!("{}/api/health/live", self.url(id));
        self.eventually(timeout, &format!("node {id} listening"), || {
            self.http.get(&url).timeout(Duration::from_millis(500)).send().ok().filter(|r| r.status().is_success())
        });
    }

    /// SIGKILL node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM node `id` and wait up to `limit` for it to exit. Returns how
    /// long it took, or `None` (and SIGKILLs it) if it was still running.
    pub fn terminate(&mut self, id: u64, limit: Duration) -> Option<Duration> {
        self.signal(id, "-TERM");
        let started = Instant::now();
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        while started.elapsed() < limit {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.run_node(id);
    }

    fn signal(&self, id: u64, sig: &str) {
        let pid = self.nodes[&id].pid().expect("node running");
        let ok = Command::new("kill").arg(sig).arg(pid.to_string()).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// SIGSTOP: the process freezes, like a long GC pause.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub fn url(&self, id: u64) -> String {
        self.nodes[&id].url()
    }

    /// The directory `engine-room certs init` wrote (TLS clusters only).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// One request with the API token; `(status, json)`; status 0 = no answer.
    pub fn request(&self, id: u64, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.request_timeout(id, method, path, body, Duration::from_secs(8))
    }

    pub fn request_timeout(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: Option<&Value>,
        t: Duration,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut req = self.http.request(m, format!("{}{}", self.url(id), path)).bearer_auth(TOKEN).timeout(t);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        match req.send() {
            Ok(res) => {
                let status = res.status().as_u16();
                (status, res.json().unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    pub fn get(&self, id: u64, path: &str) -> (u16, Value) {
        self.request(id, "GET", path, None)
    }

    pub fn post(&self, id: u64, path: &str, body: Value) -> (u16, Value) {
        self.request(id, "POST", path, Some(&body))
    }

    pub fn status(&self, id: u64) -> Option<Value> {
        let (code, v) = self.request_timeout(id, "GET", "/api/cluster/status", None, Duration::from_secs(2));
        (code == 200).then_some(v)
    }

    /// The leader as reported by any running node that knows one.
    pub fn leader(&self) -> Option<u64> {
        self.running().into_iter().find_map(|id| self.status(id)?["leader_id"].as_u64())
    }

    /// Cut the network between the nodes in `a` and those in `b`, both ways;
    /// healed when the guard drops.
    pub fn cut(&self, a: &[u64], b: &[u64]) -> crate::net::Partition {
        let addrs =
            |ids: &[u64]| ids.iter().map(|id| (self.nodes[id].ip.clone(), self.nodes[id].port)).collect::<Vec<_>>();
        crate::net::Partition::cut(&addrs(a), &addrs(b))
    }

    /// The leader node `id` believes in, if it answers and knows one.
    pub fn leader_seen_by(&self, id: u64) -> Option<u64> {
        self.status(id)?["leader_id"].as_u64()
    }

    /// Wait until all running nodes agree on one leader.
    pub fn wait_for_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<Option<u64>> =
                self.running().iter().map(|id| self.status(*id).and_then(|s| s["leader_id"].as_u64())).collect();
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*l)) && self.running().contains(l) {
                    return *l;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {timeout:?}: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scale pool `pool` to `count` through node `via`; panics unless 200.
    pub fn must_scale(&self, via: u64, pool: &str, count: u32) {
        let (code, body) = self.post(via, &format!("/api/pools/{pool}/scale"), json!({"desired_count": count}));
        assert_eq!(code, 200, "scale via node {via}: {body}");
    }

    /// Poll `f` until it returns Some, or panic after `timeout`.
    pub fn eventually<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A pool's desired count read linearizably through node `id`.
    pub fn pool_count(&self, id: u64, pool: &str) -> Option<u64> {
        let (code, v) = self.get(id, "/api/pools?consistent=true");
        if code != 200 {
            return None;
        }
        let pools = v["pools"].as_array()?;
        Some(pools.iter().find(|p| p["name"] == pool).map(|p| p["desired_count"].as_u64().unwrap_or(0)).unwrap_or(0))
    }

    /// Print the tail of every node's log (called on failure).
    pub fn dump_logs(&self) {
        for n in self.nodes.values() {
            eprintln!("===== node {} log ({}) =====", n.id, n.log.display());
            if let Ok(f) = std::fs::File::open(&n.log) {
                let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
                // A paused process must be continued to die promptly.
                let _ = Command::new("kill").arg("-CONT").arg(c.id().to_string()).status();
            }
            self.kill(id);
        }
    }
}
