//! What a request looks like for each target, and where it may go (loopback only).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;

/// The system under test; each gets the same SPEC §3 heartbeat JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// `POST /api/workers/heartbeat` with a bearer token.
    EngineRoom,
    /// `POST /v3/kv/put`, key `worker/<id>`, the heartbeat JSON as value (base64).
    Etcd,
    /// Any endpoint that answers 200; `er-bench noop-server` is one.
    Noop,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::EngineRoom => "engine-room",
            Target::Etcd => "etcd",
            Target::Noop => "noop",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Target::EngineRoom => "/api/workers/heartbeat",
            Target::Etcd => "/v3/kv/put",
            Target::Noop => "/noop",
        }
    }

    /// Request body for heartbeat number `round` of worker `worker`.
    pub fn body(self, worker: u64, round: u64) -> Bytes {
        let beat = heartbeat_json(worker, round);
        match self {
            Target::EngineRoom | Target::Noop => Bytes::from(beat),
            Target::Etcd => {
                let key = B64.encode(format!("worker/{}", worker_id(worker)));
                let value = B64.encode(beat);
                Bytes::from(format!(r#"{{"key":"{key}","value":"{value}"}}"#))
            }
        }
    }
}

/// Fixed-width ids keep every request the same size.
pub fn worker_id(worker: u64) -> String {
    format!("w-{worker:07}")
}

/// Base of every heartbeat's `seq` in this process: the start time in
/// milliseconds times 1,000, so that a run against the same cluster a second
/// later sends higher numbers than an earlier run did (unless that one sent
/// a million rounds per worker).
fn seq_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        ms as u64 * 1_000
    })
}

/// The SPEC §3 example heartbeat, with counters that grow with `round` and
/// the ordering field `seq` (increasing per worker, as the contract asks).
pub fn heartbeat_json(worker: u64, round: u64) -> String {
    let id = worker_id(worker);
    let seq = seq_base() + round;
    let (host, ip) = (worker % 90 + 10, worker % 100 + 100);
    let p = 1_000 + round * 10;
    let e = round / 4;
    format!(
        concat!(
            r#"{{"worker_id":"{id}","host":"vps-{host}","ip":"203.0.113.{ip}","pool":"default","#,
            r#""version":"1.4.2","status":"running","process_state":"running","seq":{seq},"#,
            r#""metrics":{{"processed":{p},"errors":{e},"in_flight":3}},"#,
            r#""stage_metrics":{{"dns":{{"ok":{p},"fail":{e}}}}},"#,
            r#""smtp_metrics":{{"2xx":{p},"4xx":200,"5xx":80,"timeout":{e}}},"#,
            r#""provider_metrics":{{"gmail":{{"accepted":{p},"rejected":40,"tempfail":30,"unknown":{e}}}}}}}"#
        ),
        id = id,
        host = host,
        ip = ip,
        seq = seq,
        p = p,
        e = e
    )
}

/// One target URL, resolved to a loopback socket address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub addr: SocketAddr,
    /// Value for the `Host` header.
    pub authority: String,
    /// `https://`: TLS, verified against `er-bench run --ca`.
    pub tls: bool,
}

impl Endpoint {
    /// Accepts `http://IP:PORT` (or `localhost:PORT`) where IP is a loopback
    /// address; anything else is refused, so a typo cannot load a real host.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(format!("{url}: only http:// and https:// URLs are supported")),
        };
        let authority = rest.split('/').next().unwrap_or_default().to_string();
        let (host, port) =
            authority.rsplit_once(':').ok_or_else(|| format!("{url}: the URL needs an explicit port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port {port:?}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse().map_err(|_| format!("{url}: host must be a literal loopback IP or localhost"))?
        };
        if !ip.is_loopback() {
            return Err(format!("{url}: {ip} is not a loopback address; er-bench only loads 127.0.0.0/8 and ::1"));
        }
        Ok(Self { url: url.trim_end_matches('/').to_string(), addr: SocketAddr::new(ip, port), authority, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(Endpoint::parse("http://127.0.0.7:7001").is_ok());
        assert!(Endpoint::parse("http://localhost:7001/").is_ok());
        assert!(Endpoint::parse("http://[::1]:7001").is_ok());
        assert!(Endpoint::parse("http://10.0.0.1:7001").is_err());
        assert!(Endpoint::parse("http://example.com:80").is_err());
        assert!(Endpoint::parse("https://127.0.0.1:7001").is_ok_and(|e| e.tls));
        assert!(Endpoint::parse("https://10.0.0.1:7001").is_err());
        assert!(Endpoint::parse("ftp://127.0.0.1:7001").is_err());
        assert!(Endpoint::parse("http://127.0.0.1").is_err());
    }

    #[test]
    fn bodies_are_valid_json_of_constant_size() {
        let a = Target::EngineRoom.body(1, 1);
        let b = Target::EngineRoom.body(99_999, 1);
        assert_eq!(a.len(), b.len());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["worker_id"], "w-0000001");
        let next: serde_json::Value = serde_json::from_slice(&Target::EngineRoom.body(1, 2)).unwrap();
        assert_eq!(next["seq"].as_u64(), v["seq"].as_u64().map(|s| s + 1), "seq rises per round");
        let e: serde_json::Value = serde_json::from_slice(&Target::Etcd.body(1, 1)).unwrap();
        let value = B64.decode(e["value"].as_str().unwrap()).unwrap();
        assert_eq!(value, a.to_vec());
        assert_eq!(B64.decode(e["key"].as_str().unwrap()).unwrap(), b"worker/w-0000001");
    }
}
