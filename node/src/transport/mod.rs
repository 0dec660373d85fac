//! How a node meets the network: TLS (listener and peer client), the optional
//! separate `/raft` listener, and the caps that keep slow or abusive clients
//! from starving it. Configured here, served by [`server`].

pub mod certs;
pub mod idle;
pub mod server;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Transport flags of `engine-room serve`, each with an environment fallback.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// PEM certificate chain of this node (with ENGINE_TLS_KEY and ENGINE_TLS_CA: TLS on).
    #[arg(long, env = "ENGINE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of this node's certificate.
    #[arg(long, env = "ENGINE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the cluster CA: the only roots peers are verified against.
    #[arg(long, env = "ENGINE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// `raft` (default): `/raft` needs a client certificate from the cluster CA
    /// (mutual TLS between nodes); `off`: server certificates only.
    #[arg(long, env = "ENGINE_TLS_CLIENT_AUTH", default_value = "raft")]
    pub tls_client_auth: String,
    /// host:port of a listener for `/raft` alone (then not served on ENGINE_LISTEN).
    #[arg(long, env = "ENGINE_RAFT_LISTEN")]
    pub raft_listen: Option<String>,
    /// A request's headers must arrive within this many ms of their first byte
    /// (and, with TLS, the handshake within this many ms of the connect).
    #[arg(long, env = "ENGINE_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// An idle keep-alive connection (no request under way) is closed after
    /// this many ms; above common client pool idle times (reqwest: 90 s is
    /// its default, so clients should set theirs lower; most use 60 s or less).
    #[arg(long, env = "ENGINE_KEEPALIVE_IDLE_MS", default_value_t = 75_000)]
    pub keepalive_idle_ms: u64,
    /// Deadline for a whole request (body included), except the UI's event stream.
    #[arg(long, env = "ENGINE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Open connections per listener; further ones are closed at once.
    #[arg(long, env = "ENGINE_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,
    /// Public requests in flight; past it, 503 `overloaded` at once.
    #[arg(long, env = "ENGINE_MAX_INFLIGHT", default_value_t = 1_024)]
    pub max_inflight: usize,
    /// Open UI event streams; past it, 503 `overloaded`.
    #[arg(long, env = "ENGINE_MAX_SSE_STREAMS", default_value_t = 64)]
    pub max_sse_streams: usize,
}

/// Validated transport configuration.
#[derive(Clone)]
pub struct TransportConfig {
    pub tls: Option<tls::NodeTls>,
    pub raft_listen: Option<String>,
    pub header_read_timeout: Duration,
    pub keepalive_idle: Duration,
    pub max_connections: usize,
    pub limits: api::limits::Limits,
}

impl std::fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConfig")
            .field("tls", &self.tls.is_some())
            .field("raft_listen", &self.raft_listen)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("keepalive_idle", &self.keepalive_idle)
            .field("max_connections", &self.max_connections)
            .field("limits", &self.limits)
            .finish()
    }
}

impl TransportArgs {
    /// Check the flags against the peer URLs (`own`: this node's) and the
    /// write timeout, and load the TLS files. One line on any problem.
    pub fn validate(
        self,
        peers: &std::collections::BTreeMap<u64, String>,
        own: &str,
        write_timeout_ms: u64,
    ) -> Result<TransportConfig, String> {
        let client_auth = match self.tls_client_auth.as_str() {
            "raft" => true,
            "off" => false,
            other => return Err(format!("ENGINE_TLS_CLIENT_AUTH must be raft or off, got {other:?}")),
        };
        let tls = match (self.tls_cert, self.tls_key, self.tls_ca) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(tls::NodeTls::load(&cert, &key, &ca, client_auth)?),
            _ => {
                return Err(
                    "ENGINE_TLS_CERT, ENGINE_TLS_KEY and ENGINE_TLS_CA go together: set all three or none".into()
                )
            }
        };
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        if let Some((id, url)) = peers.iter().find(|(_, url)| !url.starts_with(scheme)) {
            return Err(format!(
                "ENGINE_PEERS entry for node {id} ({url}) must start with {scheme} when TLS is {}",
                if tls.is_some() { "on" } else { "off" }
            ));
        }
        let raft_listen = self.raft_listen.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        if let Some(l) = &raft_listen {
            let port = l.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            let own_port = own.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            match (port, own_port) {
                (None, _) => return Err(format!("ENGINE_RAFT_LISTEN must be host:port, got {l:?}")),
                (Some(p), Some(o)) if p != o => {
                    return Err(format!(
                        "ENGINE_RAFT_LISTEN port {p} disagrees with this node's ENGINE_PEERS entry ({own}): \
                         peers reach /raft at the peer URL"
                    ))
                }
                _ => {}
            }
        }
        if !(1_000..=120_000).contains(&self.header_read_timeout_ms) {
            return Err(format!(
                "ENGINE_HEADER_READ_TIMEOUT_MS must be 1000..=120000, got {}",
                self.header_read_timeout_ms
            ));
        }
        if !(self.header_read_timeout_ms..=600_000).contains(&self.keepalive_idle_ms) {
            return Err(format!(
                "ENGINE_KEEPALIVE_IDLE_MS must be from ENGINE_HEADER_READ_TIMEOUT_MS ({}) to 600000, got {}",
                self.header_read_timeout_ms, self.keepalive_idle_ms
            ));
        }
        if self.request_timeout_ms <= write_timeout_ms || self.request_timeout_ms > 600_000 {
            return Err(format!(
                "ENGINE_REQUEST_TIMEOUT_MS must be above ENGINE_WRITE_TIMEOUT_MS ({write_timeout_ms}) and at most 600000, got {}",
                self.request_timeout_ms
            ));
        }
        for (key, v) in [
            ("ENGINE_MAX_CONNECTIONS", self.max_connections),
            ("ENGINE_MAX_INFLIGHT", self.max_inflight),
            ("ENGINE_MAX_SSE_STREAMS", self.max_sse_streams),
        ] {
            if !(1..=1_000_000).contains(&v) {
                return Err(format!("{key} must be 1..=1000000, got {v}"));
            }
        }
        Ok(TransportConfig {
            tls,
            raft_listen,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            keepalive_idle: Duration::from_millis(self.keepalive_idle_ms),
            max_connections: self.max_connections,
            limits: api::limits::Limits {
                request_timeout: Duration::from_millis(self.request_timeout_ms),
                max_inflight: self.max_inflight,
                max_sse_streams: self.max_sse_streams,
            },
        })
    }
}

/// True when `listen` (host:port) accepts connections only from this host.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: TransportArgs,
    }

    fn check(flags: &[&str], peers: &str) -> Result<TransportConfig, String> {
        let peers = crate::config::parse_peers(peers).unwrap();
        let own = peers[&1].clone();
        T::parse_from([&["t"], flags].concat()).a.validate(&peers, &own, 5_000)
    }

    #[test]
    fn tls_files_and_peer_urls_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("c");
        certs::tests_init(&d);
        let f = |n: &str| d.join(n).to_str().unwrap().to_string();
        let (cert, key, ca) = (f("node-1.pem"), f("node-1-key.pem"), f("ca.pem"));
        let tls = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca];
        assert!(check(&tls, "1=https://127.0.0.1:7001").unwrap().tls.is_some());
        let e = check(&tls, "1=https://127.0.0.1:7001,2=http://127.0.0.2:7001").unwrap_err();
        assert!(e.contains("must start with https://"), "{e}");
        let e = check(&tls[..4], "1=https://127.0.0.1:7001").unwrap_err();
        assert!(e.contains("all three or none"), "{e}");
        let missing = f("nope.pem");
        let e = check(&["--tls-cert", &missing, "--tls-key", &key, "--tls-ca", &ca], "1=https://a:1").unwrap_err();
        assert!(e.contains("ENGINE_TLS_CERT") && e.contains("cannot be read") && !e.contains('\n'), "{e}");
        let e = check(&["--tls-cert", &key, "--tls-key", &key, "--tls-ca", &ca], "1=https://a:1").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e =
            check(&["--tls-cert", &f("node-2.pem"), "--tls-key", &key, "--tls-ca", &ca], "1=https://a:1").unwrap_err();
        assert!(e.contains("do not make a key pair"), "{e}");
        let e = check(&["--raft-listen", "127.0.0.1:7002"], "1=http://127.0.0.1:7001").unwrap_err();
        assert!(e.contains("disagrees"), "{e}");
        let e = check(&["--request-timeout-ms", "5000"], "1=http://127.0.0.1:7001").unwrap_err();
        assert!(e.contains("ENGINE_REQUEST_TIMEOUT_MS"), "{e}");
        assert!(check(&[], "1=https://127.0.0.1:7001").unwrap_err().contains("must start with http://"));
    }

    #[test]
    fn loopback_is_told_apart() {
        assert!(is_loopback("127.0.0.11:7001"));
        assert!(is_loopback("[::1]:7001"));
        assert!(is_loopback("localhost:7001"));
        assert!(!is_loopback("0.0.0.0:7001"));
        assert!(!is_loopback("10.0.0.1:7001"));
        assert!(!is_loopback("node1.example.com:7001"));
    }
}
