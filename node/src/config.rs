//! Node configuration: clap flags with environment fallbacks, validated into
//! typed values. Any problem is reported as one line and the node does not start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use raft_store::ClusterOptions;

use crate::secrets;

/// Flags for `engine-room serve`; every one has an environment fallback.
/// Its `Debug` leaves the secrets out (see [`crate::secrets`]).
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// This node's Raft id (u64); must appear in ENGINE_PEERS.
    #[arg(long, env = "ENGINE_NODE_ID")]
    pub node_id: Option<String>,
    /// host:port for the HTTP listener (default: the port of this node's peer URL, on 0.0.0.0).
    #[arg(long, env = "ENGINE_LISTEN")]
    pub listen: Option<String>,
    /// URL other nodes use to reach this one (default: this node's ENGINE_PEERS entry).
    #[arg(long, env = "ENGINE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for the node's sled database.
    #[arg(long, env = "ENGINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Initial voters: `1=http://10.0.0.1:7001,2=http://...,3=http://...`.
    #[arg(long, env = "ENGINE_PEERS")]
    pub peers: Option<String>,
    /// API bearer token and UI basic-auth password.
    #[arg(long, env = "CONTROL_PLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding CONTROL_PLANE_TOKEN (a trailing newline is dropped).
    #[arg(long, env = "CONTROL_PLANE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Shared secret authenticating `/raft/*` between nodes.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding CLUSTER_SECRET (a trailing newline is dropped).
    #[arg(long, env = "CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Start even with a token or secret shorter than 32 bytes, or a token
    /// equal to the secret (for upgrades; logs a warning at every start).
    #[arg(long, env = "ENGINE_ALLOW_WEAK_SECRETS", default_value_t = false, action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_weak_secrets: bool,
    /// Name of the cluster, reported as cluster_id.
    #[arg(long, env = "ENGINE_CLUSTER_ID", default_value = "engine-room")]
    pub cluster_id: String,
    /// Leader heartbeat interval in ms (also openraft's AppendEntries deadline).
    #[arg(long, env = "ENGINE_RAFT_HEARTBEAT_MS", default_value_t = 50)]
    pub raft_heartbeat_ms: u64,
    /// Election timeout lower bound in ms. A follower that heard from no leader
    /// for the upper bound plus a random share of (upper − lower) asks the
    /// other voters (pre-vote) and stands if a majority heard none either.
    #[arg(long, env = "ENGINE_ELECTION_MIN_MS", default_value_t = 150)]
    pub election_min_ms: u64,
    /// Election timeout upper bound in ms; also openraft's leader lease.
    #[arg(long, env = "ENGINE_ELECTION_MAX_MS", default_value_t = 250)]
    pub election_max_ms: u64,
    /// Snapshot after this many log entries.
    #[arg(long, env = "ENGINE_SNAPSHOT_LOGS", default_value_t = 5_000)]
    pub snapshot_logs: u64,
    /// Log entries kept behind the snapshot for slow followers.
    #[arg(long, env = "ENGINE_KEEP_LOGS", default_value_t = 1_000)]
    pub keep_logs: u64,
    /// How long a client write may wait for a leader and commit, in ms.
    #[arg(long, env = "ENGINE_WRITE_TIMEOUT_MS", default_value_t = 5_000)]
    pub write_timeout_ms: u64,
    /// sled page cache in MiB.
    #[arg(long, env = "ENGINE_SLED_CACHE_MB", default_value_t = 32)]
    pub sled_cache_mb: u64,
    /// Local IP for connections to peers (default: the ENGINE_LISTEN host when it is a specific address).
    #[arg(long, env = "ENGINE_RPC_SOURCE_IP")]
    pub rpc_source_ip: Option<std::net::IpAddr>,
    /// Most heartbeats carried by one Raft entry.
    #[arg(long, env = "HEARTBEAT_BATCH_MAX", default_value_t = 1_024)]
    pub heartbeat_batch_max: usize,
    /// Most workers the cluster keeps; a heartbeat of a new worker past it gets 429.
    #[arg(long, env = "ENGINE_MAX_WORKERS", default_value_t = 250_000)]
    pub max_workers: u64,
    /// Most pools; a heartbeat naming a new pool past it gets 429.
    #[arg(long, env = "ENGINE_MAX_POOLS", default_value_t = 1_000)]
    pub max_pools: u64,
    /// Largest Raft entry a node proposes, in bytes; larger writes get 413.
    #[arg(long, env = "ENGINE_MAX_ENTRY_BYTES", default_value_t = 8 << 20)]
    pub max_entry_bytes: usize,
    /// A heartbeat batch closes at this estimated size as well as at HEARTBEAT_BATCH_MAX.
    #[arg(long, env = "HEARTBEAT_BATCH_MAX_BYTES", default_value_t = 1 << 20)]
    pub heartbeat_batch_max_bytes: usize,
    /// Heartbeat batches the leader commits at once (a follower forwards one more).
    #[arg(long, env = "HEARTBEAT_BATCH_INFLIGHT", default_value_t = 1)]
    pub heartbeat_batch_inflight: usize,
    /// A job's lease after a claim or renewal, in seconds; the reaper re-queues it after that.
    #[arg(long, env = "WORKER_LEASE_TTL_SECONDS", default_value_t = 60)]
    pub worker_lease_ttl_seconds: u64,
    /// How often a worker renews its leases, in seconds (below the lease TTL).
    #[arg(long, env = "WORKER_HEARTBEAT_INTERVAL_SECONDS", default_value_t = 20)]
    pub worker_heartbeat_interval_seconds: u64,
    /// How often the leader looks for expired job leases, in seconds.
    #[arg(long, env = "LEASE_REAPER_INTERVAL_SECONDS", default_value_t = 15)]
    pub lease_reaper_interval_seconds: u64,
    /// Finished jobs (succeeded, dead, cancelled) are removed after this many seconds.
    #[arg(long, env = "JOB_RETENTION_SECONDS", default_value_t = 604_800)]
    pub job_retention_seconds: u64,
    /// And past this many finished jobs, the oldest first.
    #[arg(long, env = "JOB_RETENTION_MAX_FINISHED", default_value_t = 100_000)]
    pub job_retention_max_finished: u32,
    /// The build farm's reads (`/summary`, `/history`, `/logs`…) need no token.
    #[arg(long, env = "FARM_READS_OPEN", default_value_t = false, action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub farm_reads_open: bool,
    /// Build logs untouched this many days are dropped (1-365).
    #[arg(long, env = "BUILD_LOG_RETENTION_DAYS", default_value_t = 14)]
    pub build_log_retention_days: u64,
    /// Build logs kept in all, in bytes (1 MiB to 2 GiB); the least recently written go first.
    #[arg(long, env = "BUILD_LOG_MAX_BYTES", default_value_t = 256 << 20)]
    pub build_log_max_bytes: u64,
    /// Worker trigger: a command the leader runs with `sh -c` (the key in
    /// ENGINE_IDEMPOTENCY_KEY, the payload on stdin). Not with WORKER_WEBHOOK_URL.
    #[arg(long, env = "WORKER_TRIGGER_COMMAND", hide_env_values = true)]
    pub worker_trigger_command: Option<String>,
    /// Worker trigger: a URL the leader POSTs `{"action":"drain"}` to.
    #[arg(long, env = "WORKER_WEBHOOK_URL", hide_env_values = true)]
    pub worker_webhook_url: Option<String>,
    /// Sent as `X-Worker-Token` with every webhook trigger.
    #[arg(long, env = "WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// File holding WORKER_TOKEN (a trailing newline is dropped).
    #[arg(long, env = "WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// Longest trigger send in seconds (1-300): the command is killed, the request abandoned.
    #[arg(long, env = "WORKER_TRIGGER_TIMEOUT_SECONDS", default_value_t = 30)]
    pub worker_trigger_timeout_seconds: u64,
    /// Slack incoming-webhook URL for incident notifications.
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    pub slack_webhook_url: Option<String>,
    #[arg(long, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// File holding SMTP_PASSWORD (a trailing newline is dropped).
    #[arg(long, env = "SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    #[arg(long, env = "SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Comma-separated recipients.
    #[arg(long, env = "SMTP_TO")]
    pub smtp_to: Option<String>,
    /// `required` (STARTTLS), `implicit` (TLS from the first byte, port 465),
    /// `opportunistic` (STARTTLS when offered) or `none`. Default: `implicit`
    /// on port 465, else `required` with credentials, else `opportunistic`.
    #[arg(long, env = "SMTP_TLS")]
    pub smtp_tls: Option<String>,
    /// Allow SMTP credentials over `opportunistic` or `none` TLS, where a
    /// network attacker can read the password.
    #[arg(long, env = "SMTP_ALLOW_PLAINTEXT_AUTH", default_value_t = false, action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub smtp_allow_plaintext_auth: bool,
    /// Failed authentications from one address within the window before it gets 429.
    #[arg(long, env = "ENGINE_AUTH_FAIL_BURST", default_value_t = 20)]
    pub auth_fail_burst: u32,
    /// The window of ENGINE_AUTH_FAIL_BURST, in seconds; a refused address waits out its rest.
    #[arg(long, env = "ENGINE_AUTH_FAIL_WINDOW_SECONDS", default_value_t = 60)]
    pub auth_fail_window_seconds: u64,
    /// `text` or `json` logs.
    #[arg(long, env = "ENGINE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    // Peer admission and authentication (issue 19, points 4-5).
    /// Addresses a learner may have: comma-separated exact URLs and CIDRs
    /// (default: the hosts of the current members and of ENGINE_PEERS).
    #[arg(long, env = "ENGINE_PEER_ALLOWLIST")]
    pub peer_allowlist: Option<String>,
    /// Tolerated clock difference between nodes for signed /raft requests, in seconds.
    #[arg(long, env = "ENGINE_PEER_CLOCK_SKEW_SECS", default_value_t = 30)]
    pub peer_clock_skew_secs: u64,
    /// Rolling upgrade from a release that sent CLUSTER_SECRET in clear: send and accept it too.
    #[arg(long, env = "ENGINE_ALLOW_PLAIN_SECRET", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_plain_secret: bool,
    /// TLS, the `/raft` listener and the slow-client caps (`ENGINE_TLS_*`,
    /// `ENGINE_RAFT_LISTEN`, `ENGINE_MAX_CONNECTIONS`, ...).
    #[command(flatten)]
    pub transport: crate::transport::TransportArgs,
}

/// Validated configuration of one node. Its `Debug` leaves the secrets out
/// (see [`crate::secrets`]).
#[derive(Clone)]
pub struct NodeConfig {
    pub node_id: u64,
    pub listen: String,
    pub advertise: String,
    pub data_dir: PathBuf,
    pub peers: BTreeMap<u64, String>,
    pub token: String,
    pub cluster: ClusterOptions,
    pub settings: api::Settings,
    pub batch: api::BatchOptions,
    pub notify: loops::NotifyConfig,
    pub trigger: loops::TriggerConfig,
    pub auth: api::AuthOptions,
    pub jobs: raft_store::job_commit::JobOptions,
    /// Problems that do not stop the node, logged once logging is up.
    pub warnings: Vec<String>,
    pub transport: crate::transport::TransportConfig,
}

fn required(value: Option<String>, key: &str, flag: &str) -> Result<String, String> {
    match value.map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("{key} (--{flag}) is required")),
    }
}

fn check_url(what: &str, url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(' ') => Ok(()),
        _ => Err(format!("{what} must be an http:// or https:// URL, got {url:?}")),
    }
}

/// Parse `1=http://a:7001,2=http://b:7001`.
pub fn parse_peers(raw: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, url) = part.split_once('=').ok_or_else(|| format!("ENGINE_PEERS entry {part:?} is not id=url"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("ENGINE_PEERS id {id:?} is not a number"))?;
        let url = url.trim().trim_end_matches('/').to_string();
        check_url(&format!("ENGINE_PEERS entry for node {id}"), &url)?;
        if peers.insert(id, url).is_some() {
            return Err(format!("ENGINE_PEERS names node {id} twice"));
        }
    }
    if peers.is_empty() {
        return Err("ENGINE_PEERS is empty".into());
    }
    Ok(peers)
}

impl ServeArgs {
    pub fn validate(mut self) -> Result<NodeConfig, String> {
        self.token = secrets::secret_value(self.token.take(), self.token_file.take(), "CONTROL_PLANE_TOKEN")?;
        self.cluster_secret =
            secrets::secret_value(self.cluster_secret.take(), self.cluster_secret_file.take(), "CLUSTER_SECRET")?;
        self.smtp_password =
            secrets::secret_value(self.smtp_password.take(), self.smtp_password_file.take(), "SMTP_PASSWORD")?;
        let notify = notify_config(&self)?;
        self.worker_token =
            secrets::secret_value(self.worker_token.take(), self.worker_token_file.take(), "WORKER_TOKEN")?;
        let trigger = trigger_config(&self)?;
        let node_id: u64 = required(self.node_id, "ENGINE_NODE_ID", "node-id")?
            .parse()
            .map_err(|_| "ENGINE_NODE_ID must be an unsigned integer".to_string())?;
        let peers = parse_peers(&required(self.peers, "ENGINE_PEERS", "peers")?)?;
        let own = peers
            .get(&node_id)
            .ok_or_else(|| format!("ENGINE_NODE_ID {node_id} is not in ENGINE_PEERS ({:?})", peers.keys()))?
            .clone();
        let advertise = match self.advertise.filter(|a| !a.trim().is_empty()) {
            Some(a) => {
                let a = a.trim().trim_end_matches('/').to_string();
                check_url("ENGINE_ADVERTISE", &a)?;
                if a != own {
                    return Err(format!(
                        "ENGINE_ADVERTISE {a} disagrees with ENGINE_PEERS entry for node {node_id} ({own})"
                    ));
                }
                a
            }
            None => own.clone(),
        };
        // Transport (TLS, /raft listener, caps): checked against the peer URLs.
        let transport = self.transport.validate(&peers, &own, self.write_timeout_ms.max(100))?;
        let listen = match self.listen.filter(|l| !l.trim().is_empty()) {
            Some(l) => l.trim().to_string(),
            None if transport.raft_listen.is_some() => {
                return Err(
                    "ENGINE_LISTEN is required with ENGINE_RAFT_LISTEN (the peer URL names the /raft listener)".into()
                )
            }
            None => {
                let authority = own.split("://").nth(1).unwrap_or_default();
                let port = authority.rsplit(':').next().filter(|p| p.parse::<u16>().is_ok());
                format!("0.0.0.0:{}", port.ok_or("ENGINE_LISTEN is required when the peer URL has no port")?)
            }
        };
        if listen.parse::<std::net::SocketAddr>().is_err() && !listen.contains(':') {
            return Err(format!("ENGINE_LISTEN must be host:port, got {listen:?}"));
        }
        let data_dir = self.data_dir.ok_or("ENGINE_DATA_DIR (--data-dir) is required")?;
        check_data_dir(&data_dir)?;
        let token = required(self.token, "CONTROL_PLANE_TOKEN", "token")?;
        let secret = required(self.cluster_secret, "CLUSTER_SECRET", "cluster-secret")?;
        let warnings: Vec<String> =
            secrets::check_secret_strength(&token, &secret, self.allow_weak_secrets)?.into_iter().collect();
        if self.election_min_ms <= self.raft_heartbeat_ms || self.election_max_ms <= self.election_min_ms {
            return Err("need ENGINE_RAFT_HEARTBEAT_MS < ENGINE_ELECTION_MIN_MS < ENGINE_ELECTION_MAX_MS".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!("ENGINE_LOG_FORMAT must be text or json, got {:?}", self.log_format));
        }
        let rpc_source_ip = self.rpc_source_ip.or_else(|| {
            let ip = listen.parse::<std::net::SocketAddr>().ok()?.ip();
            (!ip.is_unspecified()).then_some(ip)
        });
        let peer_security =
            peer_security(self.peer_allowlist.as_deref(), self.peer_clock_skew_secs, self.allow_plain_secret, &peers)?;
        let write_timeout = Duration::from_millis(self.write_timeout_ms.max(100));
        let jobs = JobArgs {
            lease_ttl: self.worker_lease_ttl_seconds,
            heartbeat: self.worker_heartbeat_interval_seconds,
            reaper: self.lease_reaper_interval_seconds,
            retention: self.job_retention_seconds,
            keep: self.job_retention_max_finished,
        }
        .validate(transport.limits.request_timeout, write_timeout)?;
        if !(1..=365).contains(&self.build_log_retention_days) {
            return Err(format!("BUILD_LOG_RETENTION_DAYS must be 1..=365, got {}", self.build_log_retention_days));
        }
        let max_log = model::state::farm::MAX_LOG_STORE_BYTES;
        if !((1 << 20)..=max_log).contains(&self.build_log_max_bytes) {
            return Err(format!("BUILD_LOG_MAX_BYTES must be 1048576..={max_log}, got {}", self.build_log_max_bytes));
        }
        let jobs = raft_store::job_commit::JobOptions {
            farm_reads_open: self.farm_reads_open,
            build_log_retention: Duration::from_secs(self.build_log_retention_days * 86_400),
            build_log_max_bytes: self.build_log_max_bytes,
            ..jobs
        };
        let cluster = ClusterOptions {
            id: node_id,
            cluster_name: self.cluster_id,
            secret,
            heartbeat_ms: self.raft_heartbeat_ms,
            election_min_ms: self.election_min_ms,
            election_max_ms: self.election_max_ms,
            snapshot_logs: self.snapshot_logs.max(1),
            keep_logs: self.keep_logs,
            write_timeout,
            rpc_source_ip,
            sled_cache_bytes: self.sled_cache_mb.max(1) << 20,
            limits: model::state::Limits { max_workers: self.max_workers, max_pools: self.max_pools },
            max_entry_bytes: self.max_entry_bytes,
            peer_security,
            peer_tls: transport.tls.as_ref().map(|t| t.peer.clone()),
        };
        // An entry must fit in one AppendEntries body with room to spare, and
        // a heartbeat batch (plus one follower's group) under the entry limit.
        let raft_body = raft_store::rpc_server::RAFT_BODY_LIMIT;
        if self.max_entry_bytes < (64 << 10) || self.max_entry_bytes > raft_body / 2 {
            return Err(format!(
                "ENGINE_MAX_ENTRY_BYTES must be 65536..={}, got {}",
                raft_body / 2,
                self.max_entry_bytes
            ));
        }
        if self.heartbeat_batch_max_bytes < (16 << 10) || self.heartbeat_batch_max_bytes > self.max_entry_bytes / 2 {
            return Err(format!(
                "HEARTBEAT_BATCH_MAX_BYTES must be 16384..=ENGINE_MAX_ENTRY_BYTES/2 ({}), got {}",
                self.max_entry_bytes / 2,
                self.heartbeat_batch_max_bytes
            ));
        }
        if self.heartbeat_batch_max == 0 || self.heartbeat_batch_inflight == 0 {
            return Err("HEARTBEAT_BATCH_MAX and HEARTBEAT_BATCH_INFLIGHT must be at least 1".into());
        }
        let env = model::settings::env_defaults(|k| std::env::var(k).ok())?;
        let settings = api::Settings { env: std::sync::Arc::new(env) };
        let batch = api::BatchOptions {
            max_batch: self.heartbeat_batch_max,
            max_inflight: self.heartbeat_batch_inflight,
            max_batch_bytes: self.heartbeat_batch_max_bytes,
        };
        if !(1..=86_400).contains(&self.auth_fail_window_seconds) || self.auth_fail_burst == 0 {
            return Err(format!(
                "ENGINE_AUTH_FAIL_BURST must be at least 1 and ENGINE_AUTH_FAIL_WINDOW_SECONDS 1..=86400, got {} and {}",
                self.auth_fail_burst, self.auth_fail_window_seconds
            ));
        }
        let auth = api::AuthOptions {
            fail_burst: self.auth_fail_burst,
            fail_window: Duration::from_secs(self.auth_fail_window_seconds),
        };
        Ok(NodeConfig {
            jobs,
            node_id,
            listen,
            advertise,
            data_dir,
            peers,
            token,
            cluster,
            settings,
            batch,
            notify,
            trigger,
            auth,
            warnings,
            transport,
        })
    }
}

/// The job keys of [`ServeArgs`], in seconds and counts.
struct JobArgs {
    lease_ttl: u64,
    heartbeat: u64,
    reaper: u64,
    retention: u64,
    keep: u32,
}

impl JobArgs {
    /// Checked: a lease outlasts a renewal interval, and a long-poll claim
    /// ends before the request deadline.
    fn validate(
        self,
        request_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<raft_store::job_commit::JobOptions, String> {
        let JobArgs { lease_ttl: ttl, heartbeat: beat, reaper, retention, keep } = self;
        if !(1..=86_400).contains(&ttl) || beat == 0 || beat >= ttl {
            return Err(format!(
                "need 1 <= WORKER_HEARTBEAT_INTERVAL_SECONDS < WORKER_LEASE_TTL_SECONDS <= 86400, got {beat} and {ttl}"
            ));
        }
        if !(1..=3_600).contains(&reaper) {
            return Err(format!("LEASE_REAPER_INTERVAL_SECONDS must be 1..=3600, got {reaper}"));
        }
        if !(60..=315_360_000).contains(&retention) {
            return Err(format!("JOB_RETENTION_SECONDS must be 60..=315360000, got {retention}"));
        }
        if !(1..=1_000_000).contains(&keep) {
            return Err(format!("JOB_RETENTION_MAX_FINISHED must be 1..=1000000, got {keep}"));
        }
        // A claim answers before the request deadline even if its last
        // attempt waits the whole write timeout.
        let room = request_timeout.saturating_sub(write_timeout + Duration::from_secs(1));
        Ok(raft_store::job_commit::JobOptions {
            lease_ttl: Duration::from_secs(ttl),
            heartbeat_interval: Duration::from_secs(beat),
            reaper_interval: Duration::from_secs(reaper),
            retention: Duration::from_secs(retention),
            keep_finished: keep,
            max_claim_wait: room.min(Duration::from_millis(api::routes::jobs::MAX_WAIT_MS)),
            ..raft_store::job_commit::JobOptions::default()
        })
    }
}

/// Peer admission and authentication settings, checked.
fn peer_security(
    allowlist: Option<&str>,
    skew_secs: u64,
    allow_plain_secret: bool,
    peers: &BTreeMap<u64, String>,
) -> Result<raft_store::cluster::PeerSecurity, String> {
    let allowlist = raft_store::peer_allowlist::PeerAllowlist::parse(allowlist.unwrap_or(""))?;
    if !(1..=3600).contains(&skew_secs) {
        return Err(format!("ENGINE_PEER_CLOCK_SKEW_SECS must be 1..=3600, got {skew_secs}"));
    }
    Ok(raft_store::cluster::PeerSecurity {
        allowlist,
        initial_peers: peers.values().cloned().collect(),
        clock_skew: Duration::from_secs(skew_secs),
        allow_plain_secret,
    })
}

fn notify_config(a: &ServeArgs) -> Result<loops::NotifyConfig, String> {
    let set = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let slack_webhook = set(&a.slack_webhook_url);
    // The webhook URL is itself the credential: the error does not echo it.
    if let Some(url) = &slack_webhook {
        check_url("SLACK_WEBHOOK_URL", url).map_err(|_| "SLACK_WEBHOOK_URL must be an https:// or http:// URL")?;
    }
    let smtp = match set(&a.smtp_host) {
        None => None,
        Some(host) => {
            let from = set(&a.smtp_from).ok_or("SMTP_FROM is required when SMTP_HOST is set")?;
            let to: Vec<String> = set(&a.smtp_to)
                .ok_or("SMTP_TO is required when SMTP_HOST is set")?
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            for addr in std::iter::once(&from).chain(&to) {
                if addr.parse::<lettre::Address>().is_err() && addr.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!("{addr:?} is not an email address (SMTP_FROM/SMTP_TO)"));
                }
            }
            let (username, password) = (set(&a.smtp_username), set(&a.smtp_password));
            let tls = secrets::smtp_tls(a, username.is_some() || password.is_some())?;
            Some(loops::SmtpConfig { host, port: a.smtp_port, username, password, from, to, tls })
        }
    };
    Ok(loops::NotifyConfig { slack_webhook, smtp })
}

/// The worker trigger's target, token and timeout. The URL and the token
/// are credentials: no error echoes them.
fn trigger_config(a: &ServeArgs) -> Result<loops::TriggerConfig, String> {
    use loops::TriggerTargetConfig as Target;
    let set = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let target = match (set(&a.worker_trigger_command), set(&a.worker_webhook_url)) {
        (Some(_), Some(_)) => return Err("set WORKER_TRIGGER_COMMAND or WORKER_WEBHOOK_URL, not both".into()),
        (Some(cmd), None) => {
            if cmd.len() > 4096 || cmd.contains('\0') {
                return Err("WORKER_TRIGGER_COMMAND must be at most 4096 bytes without NUL".into());
            }
            Some(Target::Command(cmd))
        }
        (None, Some(url)) => {
            check_url("WORKER_WEBHOOK_URL", &url)
                .map_err(|_| "WORKER_WEBHOOK_URL must be an https:// or http:// URL")?;
            Some(Target::Webhook(url))
        }
        (None, None) => None,
    };
    let token = set(&a.worker_token);
    if token.as_ref().is_some_and(|t| t.len() > 4096 || t.bytes().any(|b| b < 0x20 || b == 0x7f)) {
        return Err("WORKER_TOKEN must be at most 4096 bytes of printable characters (it is an HTTP header)".into());
    }
    if !(1..=300).contains(&a.worker_trigger_timeout_seconds) {
        return Err(format!(
            "WORKER_TRIGGER_TIMEOUT_SECONDS must be 1..=300, got {}",
            a.worker_trigger_timeout_seconds
        ));
    }
    Ok(loops::TriggerConfig { target, token, timeout: Duration::from_secs(a.worker_trigger_timeout_seconds) })
}

/// The data dir must exist (or be creatable) and be writable by us. It is
/// made private: the directory 0700, whatever is already in it 0600 (files)
/// or 0700 (directories); what the node creates later is private by the
/// umask `main` sets ([`secrets::private_umask`]).
fn check_data_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("ENGINE_DATA_DIR {} cannot be created: {e}", dir.display()))?;
    secrets::restrict(dir)
        .map_err(|e| format!("ENGINE_DATA_DIR {} cannot be made private (0700): {e}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("ENGINE_DATA_DIR {} is not writable: {e}", dir.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    /// `ServeArgs` as clap parses these flags (shared with `secrets`' tests).
    pub(crate) fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::parse_from(v).a
    }

    #[test]
    fn peers_parse_and_reject() {
        let p = parse_peers("1=http://127.0.0.1:7001, 2=http://127.0.0.1:7002/").unwrap();
        assert_eq!(p[&2], "http://127.0.0.1:7002");
        assert!(parse_peers("1=ftp://x").is_err());
        assert!(parse_peers("x=http://a:1").is_err());
        assert!(parse_peers("1=http://a:1,1=http://b:1").is_err());
    }

    const TOKEN: &str = "test-token-0123456789abcdef0123456789";
    const SECRET: &str = "test-secret-0123456789abcdef0123456789";

    #[test]
    fn contradictions_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let base = ["--peers", "1=http://127.0.0.1:7001,2=http://127.0.0.1:7002", "--data-dir", d];
        let e = args(&[&base[..], &["--node-id", "3", "--token", TOKEN, "--cluster-secret", SECRET]].concat())
            .validate()
            .unwrap_err();
        assert!(e.contains("not in ENGINE_PEERS"), "{e}");
        let e = args(&[&base[..], &["--node-id", "1", "--cluster-secret", SECRET]].concat()).validate().unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN"), "{e}");
        let ok = args(&[&base[..], &["--node-id", "1", "--token", TOKEN, "--cluster-secret", SECRET]].concat())
            .validate()
            .unwrap();
        assert_eq!(ok.listen, "0.0.0.0:7001");
        assert_eq!(ok.advertise, "http://127.0.0.1:7001");
        assert!(ok.warnings.is_empty());
        assert!(!e.contains('\n'));
    }

    #[test]
    fn job_keys_are_checked_and_the_long_poll_fits_the_request_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (token, secret) = ("t".repeat(32), "s".repeat(32));
        let base = ["--peers", "1=http://127.0.0.1:7001", "--data-dir", d, "--node-id", "1", "--token", &token];
        let with = |extra: &[&str]| args(&[&base[..], &["--cluster-secret", &secret], extra].concat()).validate();
        let jobs = with(&[]).unwrap().jobs;
        assert_eq!(jobs.lease_ttl, Duration::from_secs(60));
        assert_eq!(jobs.heartbeat_interval, Duration::from_secs(20));
        assert_eq!(jobs.reaper_interval, Duration::from_secs(15));
        assert_eq!(jobs.retention, Duration::from_secs(604_800));
        // 30 s request deadline − 5 s write timeout − 1 s.
        assert_eq!(jobs.max_claim_wait, Duration::from_secs(24));
        let e = with(&["--worker-heartbeat-interval-seconds", "60"]).unwrap_err();
        assert!(e.contains("WORKER_HEARTBEAT_INTERVAL_SECONDS"), "{e}");
        assert!(with(&["--lease-reaper-interval-seconds", "0"]).unwrap_err().contains("LEASE_REAPER"));
        assert!(with(&["--job-retention-seconds", "1"]).unwrap_err().contains("JOB_RETENTION_SECONDS"));
        assert!(with(&["--job-retention-max-finished", "0"]).unwrap_err().contains("JOB_RETENTION_MAX_FINISHED"));
    }

    #[test]
    fn worker_trigger_keys_are_checked_in_one_line_that_names_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let (token, secret) = ("t".repeat(32), "s".repeat(32));
        let base = ["--peers", "1=http://127.0.0.1:7001", "--data-dir", d, "--node-id", "1", "--token", &token];
        let with = |extra: &[&str]| args(&[&base[..], &["--cluster-secret", &secret], extra].concat()).validate();
        let none = with(&[]).unwrap().trigger;
        assert!(none.target.is_none() && none.token.is_none());
        assert_eq!(none.timeout, Duration::from_secs(30));
        let hook = ["--worker-webhook-url", "http://127.0.0.1:9/drain", "--worker-token", "wt-secret"];
        let t = with(&[&hook[..], &["--worker-trigger-timeout-seconds", "4"]].concat()).unwrap().trigger;
        assert_eq!(t.target, Some(loops::TriggerTargetConfig::Webhook("http://127.0.0.1:9/drain".into())));
        assert_eq!((t.token.as_deref(), t.timeout), (Some("wt-secret"), Duration::from_secs(4)));
        let cmd = with(&["--worker-trigger-command", "touch /tmp/x"]).unwrap().trigger;
        assert_eq!(cmd.target, Some(loops::TriggerTargetConfig::Command("touch /tmp/x".into())));
        let e = with(&[&hook[..], &["--worker-trigger-command", "true"]].concat()).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = with(&["--worker-webhook-url", "ftp://h/url-secret"]).unwrap_err();
        assert!(e.starts_with("WORKER_WEBHOOK_URL") && !e.contains("url-secret"), "{e}");
        let e = with(&["--worker-token", "bad\u{1}token-secret"]).unwrap_err();
        assert!(e.starts_with("WORKER_TOKEN") && !e.contains("token-secret"), "{e}");
        let e = with(&["--worker-trigger-timeout-seconds", "0"]).unwrap_err();
        assert!(e.contains("WORKER_TRIGGER_TIMEOUT_SECONDS") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn peer_security_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let token = "t".repeat(32);
        let base = ["--peers", "1=http://127.0.0.1:7001", "--data-dir", d, "--node-id", "1", "--token", &token];
        let secret = "s".repeat(32);
        let with = |extra: &[&str]| args(&[&base[..], &["--cluster-secret", &secret], extra].concat()).validate();
        let ok = with(&[]).unwrap().cluster.peer_security;
        assert_eq!(ok.initial_peers, vec!["http://127.0.0.1:7001".to_string()]);
        assert!(!ok.allow_plain_secret, "the plain secret is off by default");
        assert_eq!(ok.clock_skew, Duration::from_secs(30));
        let e = with(&["--peer-allowlist", "10.0.0.0/8,nonsense"]).unwrap_err();
        assert!(e.starts_with("ENGINE_PEER_ALLOWLIST") && e.contains("nonsense"), "{e}");
        let e = with(&["--peer-clock-skew-secs", "0"]).unwrap_err();
        assert!(e.contains("ENGINE_PEER_CLOCK_SKEW_SECS"), "{e}");
        let on =
            with(&["--allow-plain-secret", "true", "--peer-allowlist", "10.0.0.0/8"]).unwrap().cluster.peer_security;
        assert!(on.allow_plain_secret);
        assert!(on.allowlist.check("http://10.9.9.9:7001", []).is_ok());
    }
}
