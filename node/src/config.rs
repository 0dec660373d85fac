//! Node configuration: clap flags with environment fallbacks, validated into
//! typed values. Any problem is reported as one line and the node does not start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use raft_store::ClusterOptions;

/// Flags for `engine-room serve`; every one has an environment fallback.
/// Its `Debug` leaves the secrets out (see the `impl` below).
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
    /// `text` or `json` logs.
    #[arg(long, env = "ENGINE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Validated configuration of one node. Its `Debug` leaves the secrets out.
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
    /// Problems that do not stop the node, logged once logging is up.
    pub warnings: Vec<String>,
}

/// Shortest token or cluster secret accepted outside `ENGINE_ALLOW_WEAK_SECRETS`.
pub const MIN_SECRET_BYTES: usize = 32;

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ServeArgs")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("data_dir", &self.data_dir)
            .field("peers", &self.peers)
            .field("token", &redact(&self.token))
            .field("token_file", &self.token_file)
            .field("cluster_secret", &redact(&self.cluster_secret))
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("cluster_id", &self.cluster_id)
            .field("slack_webhook_url", &redact(&self.slack_webhook_url))
            .field("smtp_host", &self.smtp_host)
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &redact(&self.smtp_password))
            .field("smtp_password_file", &self.smtp_password_file)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("data_dir", &self.data_dir)
            .field("peers", &self.peers)
            .field("token", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("settings", &self.settings)
            .field("batch", &self.batch)
            .field("notify", &self.notify)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// A secret given either inline (`KEY`) or as a file (`KEY_FILE`), never both.
/// Errors name the key and the file, never the content.
fn secret_value(value: Option<String>, file: Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    let value = value.filter(|v| !v.trim().is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(format!("set {key} or {key}_FILE, not both")),
        (Some(v), None) => Ok(Some(v)),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(&path)
                .map_err(|e| format!("{key}_FILE {} cannot be read: {}", path.display(), e.kind()))?;
            let v = raw.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&raw);
            if v.trim().is_empty() {
                return Err(format!("{key}_FILE {} is empty", path.display()));
            }
            Ok(Some(v.to_string()))
        }
    }
}

/// A token or secret too short, or a token that also opens `/raft`, stops the
/// node unless `allow_weak`; then each problem becomes a startup warning.
fn check_secret_strength(token: &str, secret: &str, allow_weak: bool) -> Result<Option<String>, String> {
    let mut problems = Vec::new();
    for (key, v) in [("CONTROL_PLANE_TOKEN", token), ("CLUSTER_SECRET", secret)] {
        if v.len() < MIN_SECRET_BYTES {
            problems.push(format!("{key} is {} bytes, shorter than {MIN_SECRET_BYTES}", v.len()));
        }
    }
    if token == secret {
        problems.push("CONTROL_PLANE_TOKEN equals CLUSTER_SECRET (an API client could join Raft)".to_string());
    }
    if problems.is_empty() {
        return Ok(None);
    }
    let problems = problems.join("; ");
    match allow_weak {
        true => Ok(Some(format!("WEAK SECRETS: {problems}; starting anyway because ENGINE_ALLOW_WEAK_SECRETS=true"))),
        false => Err(format!(
            "{problems} (generate one with `openssl rand -hex 32`; ENGINE_ALLOW_WEAK_SECRETS=true starts anyway)"
        )),
    }
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
        self.token = secret_value(self.token.take(), self.token_file.take(), "CONTROL_PLANE_TOKEN")?;
        self.cluster_secret =
            secret_value(self.cluster_secret.take(), self.cluster_secret_file.take(), "CLUSTER_SECRET")?;
        self.smtp_password = secret_value(self.smtp_password.take(), self.smtp_password_file.take(), "SMTP_PASSWORD")?;
        let notify = notify_config(&self)?;
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
        let listen = match self.listen.filter(|l| !l.trim().is_empty()) {
            Some(l) => l.trim().to_string(),
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
            check_secret_strength(&token, &secret, self.allow_weak_secrets)?.into_iter().collect();
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
        let cluster = ClusterOptions {
            id: node_id,
            cluster_name: self.cluster_id,
            secret,
            heartbeat_ms: self.raft_heartbeat_ms,
            election_min_ms: self.election_min_ms,
            election_max_ms: self.election_max_ms,
            snapshot_logs: self.snapshot_logs.max(1),
            keep_logs: self.keep_logs,
            write_timeout: Duration::from_millis(self.write_timeout_ms.max(100)),
            rpc_source_ip,
            sled_cache_bytes: self.sled_cache_mb.max(1) << 20,
            limits: model::state::Limits { max_workers: self.max_workers, max_pools: self.max_pools },
            max_entry_bytes: self.max_entry_bytes,
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
        Ok(NodeConfig {
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
            warnings,
        })
    }
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
            let tls = smtp_tls(a, username.is_some() || password.is_some())?;
            Some(loops::SmtpConfig { host, port: a.smtp_port, username, password, from, to, tls })
        }
    };
    Ok(loops::NotifyConfig { slack_webhook, smtp })
}

/// SMTP_TLS, resolved. Credentials travel only inside TLS (STARTTLS required,
/// or implicit TLS) unless SMTP_ALLOW_PLAINTEXT_AUTH says otherwise: with
/// `opportunistic`, an attacker on the path strips STARTTLS and reads them.
fn smtp_tls(a: &ServeArgs, credentials: bool) -> Result<loops::notify::SmtpTls, String> {
    use loops::notify::SmtpTls;
    let tls = match a.smtp_tls.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None if a.smtp_port == 465 => SmtpTls::Implicit,
        None if credentials => SmtpTls::Required,
        None | Some("opportunistic") => SmtpTls::Opportunistic,
        Some("required") => SmtpTls::Required,
        Some("implicit") => SmtpTls::Implicit,
        Some("none") => SmtpTls::None,
        Some(other) => {
            return Err(format!("SMTP_TLS must be required, implicit, opportunistic or none, got {other:?}"))
        }
    };
    let weak = matches!(tls, SmtpTls::Opportunistic | SmtpTls::None);
    if credentials && weak && !a.smtp_allow_plaintext_auth {
        return Err(
            "SMTP credentials need SMTP_TLS=required or implicit (SMTP_ALLOW_PLAINTEXT_AUTH=true sends them anyway)"
                .into(),
        );
    }
    Ok(tls)
}

/// The data dir must exist (or be creatable) and be writable by us. It is
/// made private: the directory 0700, whatever is already in it 0600 (files)
/// or 0700 (directories); what the node creates later is private by the
/// umask `main` sets ([`private_umask`]).
fn check_data_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("ENGINE_DATA_DIR {} cannot be created: {e}", dir.display()))?;
    restrict(dir).map_err(|e| format!("ENGINE_DATA_DIR {} cannot be made private (0700): {e}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| format!("ENGINE_DATA_DIR {} is not writable: {e}", dir.display()))
}

/// Most entries [`restrict`] visits: a data dir holds a sled database, WAL
/// chunks and a few snapshots, far fewer.
const RESTRICT_MAX_ENTRIES: usize = 100_000;

/// chmod `dir` 0700 and everything under it 0600 (files) or 0700 (dirs),
/// without following symlinks.
fn restrict(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(&d)? {
            seen += 1;
            if seen > RESTRICT_MAX_ENTRIES {
                return Err(std::io::Error::other(format!("more than {RESTRICT_MAX_ENTRIES} entries")));
            }
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

/// Files and directories the node creates are for its own user only (the
/// Raft log and state hold every worker's data and the audit trail).
pub fn private_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it is called
    // at startup before any thread that creates files.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
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

    fn base(d: &str) -> Vec<String> {
        ["--peers", "1=http://127.0.0.1:7001", "--data-dir", d, "--node-id", "1"].map(String::from).to_vec()
    }

    fn validate(d: &str, extra: &[&str]) -> Result<NodeConfig, String> {
        let mut v = base(d);
        v.extend(extra.iter().map(|s| s.to_string()));
        args(&v.iter().map(String::as_str).collect::<Vec<_>>()).validate()
    }

    #[test]
    fn secrets_are_read_from_files_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let d = d.to_str().unwrap();
        let (tf, sf, pf) = (dir.path().join("token"), dir.path().join("secret"), dir.path().join("smtp"));
        std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
        std::fs::write(&sf, format!("{SECRET}\r\n")).unwrap();
        std::fs::write(&pf, "smtp-pass word\n").unwrap();
        let (tf, sf, pf) = (tf.to_str().unwrap(), sf.to_str().unwrap(), pf.to_str().unwrap());
        let smtp = ["--smtp-host", "mail.example.com", "--smtp-from", "a@example.com", "--smtp-to", "b@example.com"];
        let cfg = validate(
            d,
            &[
                &["--token-file", tf, "--cluster-secret-file", sf, "--smtp-username", "u", "--smtp-password-file", pf]
                    [..],
                &smtp,
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(cfg.token, TOKEN);
        assert_eq!(cfg.cluster.secret, SECRET);
        let smtp_cfg = cfg.notify.smtp.as_ref().unwrap();
        assert_eq!(smtp_cfg.password.as_deref(), Some("smtp-pass word"));
        assert_eq!(smtp_cfg.tls, loops::notify::SmtpTls::Required, "credentials default to STARTTLS required");

        let e = validate(d, &["--token", TOKEN, "--token-file", tf, "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN or CONTROL_PLANE_TOKEN_FILE, not both"), "{e}");
        let missing = dir.path().join("nope");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret-file", missing.to_str().unwrap()]).unwrap_err();
        assert!(e.contains("CLUSTER_SECRET_FILE") && e.contains("cannot be read"), "{e}");
        // A file that is not text: the error names the key, never the content.
        std::fs::write(dir.path().join("bin"), [0xffu8, 0xfe, b'X', b'Y', b'Z']).unwrap();
        let bin = dir.path().join("bin");
        let e = validate(d, &["--token-file", bin.to_str().unwrap(), "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN_FILE") && !e.contains("XYZ"), "{e}");
    }

    #[test]
    fn weak_secrets_stop_the_node_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = validate(d, &["--token", "short", "--cluster-secret", SECRET]).unwrap_err();
        assert!(e.contains("CONTROL_PLANE_TOKEN is 5 bytes, shorter than 32") && !e.contains("short "), "{e}");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret", "s3cret"]).unwrap_err();
        assert!(e.contains("CLUSTER_SECRET is 6 bytes") && !e.contains("s3cret"), "{e}");
        let e = validate(d, &["--token", TOKEN, "--cluster-secret", TOKEN]).unwrap_err();
        assert!(e.contains("equals CLUSTER_SECRET") && !e.contains(TOKEN), "{e}");
        let cfg = validate(d, &["--token", "t", "--cluster-secret", "t", "--allow-weak-secrets", "true"]).unwrap();
        assert_eq!(cfg.warnings.len(), 1, "one warning line: {:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("ENGINE_ALLOW_WEAK_SECRETS") && cfg.warnings[0].contains("equals"));
    }

    #[test]
    fn smtp_credentials_need_tls() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let smtp = |extra: &[&str]| {
            let base = ["--token", TOKEN, "--cluster-secret", SECRET, "--smtp-host", "mail.example.com"];
            let addrs = ["--smtp-from", "a@example.com", "--smtp-to", "b@example.com"];
            validate(d, &[&base[..], &addrs, extra].concat()).map(|c| c.notify.smtp.unwrap().tls)
        };
        use loops::notify::SmtpTls;
        let creds = ["--smtp-username", "u", "--smtp-password", "p"];
        assert_eq!(smtp(&[]).unwrap(), SmtpTls::Opportunistic, "no credentials: STARTTLS when offered");
        assert_eq!(smtp(&creds).unwrap(), SmtpTls::Required);
        assert_eq!(smtp(&[&creds[..], &["--smtp-port", "465"]].concat()).unwrap(), SmtpTls::Implicit);
        for tls in ["none", "opportunistic"] {
            let e = smtp(&[&creds[..], &["--smtp-tls", tls]].concat()).unwrap_err();
            assert!(e.contains("SMTP_ALLOW_PLAINTEXT_AUTH"), "{e}");
        }
        let allowed = [&creds[..], &["--smtp-tls", "none", "--smtp-allow-plaintext-auth", "true"]].concat();
        assert_eq!(smtp(&allowed).unwrap(), SmtpTls::None);
        assert!(smtp(&["--smtp-tls", "maybe"]).unwrap_err().contains("SMTP_TLS"));
    }

    #[test]
    fn a_bad_webhook_url_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let e = validate(
            d,
            &["--token", TOKEN, "--cluster-secret", SECRET, "--slack-webhook-url", "hooks.slack.com/T0/B0/hook-secret"],
        )
        .unwrap_err();
        assert!(e.contains("SLACK_WEBHOOK_URL") && !e.contains("hook-secret"), "{e}");
    }

    #[test]
    fn debug_output_leaves_every_secret_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let hook = "https://hooks.slack.com/services/T0/B0/hook-secret-value";
        let extra = [
            "--token",
            TOKEN,
            "--cluster-secret",
            SECRET,
            "--slack-webhook-url",
            hook,
            "--smtp-host",
            "mail.example.com",
            "--smtp-from",
            "a@example.com",
            "--smtp-to",
            "b@example.com",
            "--smtp-username",
            "u",
            "--smtp-password",
            "smtp-password-value",
        ];
        let mut v = base(d);
        v.extend(extra.iter().map(|s| s.to_string()));
        let a = args(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let cfg = a.clone().validate().unwrap();
        for dbg in [format!("{a:?}"), format!("{cfg:?}"), format!("{cfg:#?}"), format!("{:?}", cfg.cluster)] {
            for secret in [TOKEN, SECRET, "hook-secret-value", "smtp-password-value"] {
                assert!(!dbg.contains(secret), "{secret} in {dbg}");
            }
            assert!(dbg.contains("<redacted>"), "{dbg}");
        }
    }

    #[test]
    fn the_data_dir_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        std::fs::create_dir_all(d.join("sled")).unwrap();
        std::fs::write(d.join("sled").join("db"), b"x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("sled").join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        validate(d.to_str().unwrap(), &["--token", TOKEN, "--cluster-secret", SECRET]).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("sled")), 0o700);
        assert_eq!(mode(&d.join("sled").join("db")), 0o600);
        let fresh = dir.path().join("fresh").join("data");
        validate(fresh.to_str().unwrap(), &["--token", TOKEN, "--cluster-secret", SECRET]).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
