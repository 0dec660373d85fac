//! Raft RPC and leader forwarding over HTTP: one shared reqwest client, bodies
//! encoded by [`model::codec`], every request signed ([`crate::peer_auth`]),
//! every reply read up to a cap and decoded within the codec's limit.
//! openraft gives an AppendEntries only one heartbeat interval, so requests
//! over [`MAX_APPEND_BYTES`] are refused before sending and openraft retries
//! at once with fewer entries; snapshot chunks are encoded as one byte run.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::peer_auth::{PeerAuth, AUTH_HEADER, DEFAULT_SKEW, PLAIN_SECRET_HEADER};
use crate::types::{Node, NodeId, SnapshotMeta, TypeConfig};
use model::codec;

/// Largest AppendEntries body sent in one RPC (unless it holds a single
/// entry): it must be sent, decoded, written and fsynced within one Raft
/// heartbeat interval, or openraft times it out and resends the same range.
pub const MAX_APPEND_BYTES: usize = 512 * 1024;

/// Largest reply body read from a peer (the `/raft` request limit): a
/// longer one is cut off and the call fails, whatever its length header says.
pub const MAX_REPLY_BYTES: usize = crate::rpc_server::RAFT_BODY_LIMIT;

/// Largest error body read from a peer; only its JSON error code and a
/// cleaned, shortened message are kept.
const MAX_ERROR_BYTES: usize = 4096;

/// Why an internal RPC failed, split by what the caller may safely do next.
/// The text starts with a fixed classification written here ([`Self::class`]),
/// never with bytes from the peer.
#[derive(Debug, thiserror::Error)]
pub enum RpcFailure {
    /// The request never reached the peer (connection refused, DNS, connect
    /// timeout): retrying elsewhere cannot apply it twice.
    #[error("peer unreachable: {0}")]
    NotDelivered(String),
    /// The request may have reached the peer; its outcome is unknown.
    #[error("rpc failed: {0}")]
    Unknown(String),
}

impl RpcFailure {
    /// The short classification (`unreachable`, `timeout`, `HTTP 401`,
    /// `reply too large`, `undecodable reply`, …) without detail, for
    /// places shown to operators such as `/api/cluster/status`.
    pub fn class(&self) -> &str {
        let (RpcFailure::NotDelivered(m) | RpcFailure::Unknown(m)) = self;
        m.split(':').next().unwrap_or("failed")
    }
}

/// The process's one HTTP client for talking to other nodes.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    auth: Arc<PeerAuth>,
}

/// Keep from a peer's error body only what our own `/raft` error shape
/// holds, cleaned: its code (`[a-z0-9_]`, 40 at most) and message
/// (printable ASCII, 160 at most).
fn peer_error_summary(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return "no error code".into() };
    let code: String = v["error"]["code"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
        .take(40)
        .collect();
    let message: String = v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(160)
        .collect();
    if code.is_empty() {
        "no error code".into()
    } else {
        format!("{code}: {message}")
    }
}

/// Read a reply body of at most `cap` bytes (a stated or actual longer one
/// fails without being read further).
async fn read_capped(mut res: reqwest::Response, cap: usize) -> Result<Vec<u8>, RpcFailure> {
    let too_large = |n: u64| RpcFailure::Unknown(format!("reply too large: {n} bytes, over the {cap}-byte cap"));
    if let Some(n) = res.content_length().filter(|n| *n > cap as u64) {
        return Err(too_large(n));
    }
    let mut body = Vec::with_capacity(res.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = res.chunk().await.map_err(|e| transport_failure(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(too_large((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_failure(e: &reqwest::Error) -> RpcFailure {
    if e.is_connect() {
        RpcFailure::NotDelivered(format!("unreachable: {e}"))
    } else if e.is_timeout() {
        RpcFailure::Unknown(format!("timeout: {e}"))
    } else {
        RpcFailure::Unknown(format!("connection failed: {e}"))
    }
}

/// What a node needs to talk TLS to its peers: the cluster CA (the only
/// roots trusted for peer certificates) and, for mutual TLS on `/raft`, this
/// node's own certificate and key as the client identity.
#[derive(Clone)]
pub struct PeerTls {
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds a private key: never printed.
        f.debug_struct("PeerTls").field("roots", &self.roots.len()).field("identity", &self.identity.is_some()).finish()
    }
}

/// The HTTP client for peer traffic. Fails only on TLS material reqwest
/// cannot use, which the node checks once at startup.
pub fn peer_http_client(
    source_ip: Option<std::net::IpAddr>,
    tls: Option<&PeerTls>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .local_address(source_ip)
        .connect_timeout(Duration::from_millis(300))
        // Far below the peers' idle close (ENGINE_KEEPALIVE_IDLE_MS, 75 s by
        // default, at least 1 s), so a request is almost never sent on a
        // connection the peer is closing; Raft traffic keeps them busy anyway.
        .pool_idle_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Peers are addressed directly: an HTTP_PROXY meant for the
        // host's outbound traffic must not carry Raft, and a peer never
        // redirects (each would also cost a lookup per request).
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(tls) = tls {
        // Only the cluster CA: a certificate from a public CA for the same
        // name is not a peer.
        builder = builder.tls_backend_rustls().tls_certs_only(tls.roots.iter().cloned()).https_only(true);
        if let Some(identity) = &tls.identity {
            builder = builder.identity(identity.clone());
        }
    }
    builder.build()
}

impl RpcClient {
    /// `source_ip` pins the local address of outgoing connections, so that
    /// nodes sharing one host (tests, drills) are told apart by firewall rules.
    pub fn new(secret: String, source_ip: Option<std::net::IpAddr>, tls: Option<&PeerTls>) -> Self {
        let http = peer_http_client(source_ip, tls).expect("peer TLS material is checked when the node starts");
        Self { http, auth: Arc::new(PeerAuth::new(&secret, DEFAULT_SKEW, false)) }
    }

    /// Also send the plain secret header, for peers still on a release that
    /// checks only that (`ENGINE_ALLOW_PLAIN_SECRET`, rolling upgrade).
    pub fn with_plain_secret(self, secret: &str, yes: bool) -> Self {
        Self { auth: Arc::new(PeerAuth::new(secret, DEFAULT_SKEW, yes)), ..self }
    }

    /// POST `body` to `{addr}{path}` and decode the answer.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcFailure> {
        self.post_with(addr, path, body, timeout, None).await
    }

    /// [`Self::post`] with one extra header.
    pub async fn post_with<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
        header: Option<(&'static str, String)>,
    ) -> Result<Resp, RpcFailure> {
        let bytes = codec::encode(body).map_err(|e| RpcFailure::NotDelivered(e.to_string()))?;
        self.send(addr, path, bytes, timeout, header).await
    }

    /// POST an already encoded body to `{addr}{path}` and decode the answer.
    pub async fn post_encoded<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, RpcFailure> {
        self.send(addr, path, bytes, timeout, None).await
    }

    async fn send<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        bytes: Vec<u8>,
        timeout: Duration,
        header: Option<(&'static str, String)>,
    ) -> Result<Resp, RpcFailure> {
        let mut req = self
            .http
            .post(format!("{}{}", addr.trim_end_matches('/'), path))
            .header(AUTH_HEADER, self.auth.sign("POST", path, &bytes))
            .header("content-type", "application/octet-stream");
        if let Some(plain) = self.auth.plain_secret() {
            req = req.header(PLAIN_SECRET_HEADER, plain);
        }
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        // The timeout covers reading the reply too.
        let res = req.timeout(timeout).body(bytes).send().await.map_err(|e| transport_failure(&e))?;
        let status = res.status();
        if !status.is_success() {
            let summary = match read_capped(res, MAX_ERROR_BYTES).await {
                Ok(body) => peer_error_summary(&body),
                Err(_) => "unreadable error body".into(),
            };
            let class = format!("HTTP {}", status.as_u16());
            // A refused signature or missing route means nothing was applied.
            return Err(if status.is_client_error() {
                RpcFailure::NotDelivered(format!("{class}: {summary}"))
            } else {
                RpcFailure::Unknown(format!("{class}: {summary}"))
            });
        }
        let body = read_capped(res, MAX_REPLY_BYTES).await?;
        codec::decode(&body).map_err(|e| RpcFailure::Unknown(format!("undecodable reply: {e}")))
    }
}

/// Builds one [`PeerConnection`] per replication target.
pub struct NetworkFactory {
    pub rpc: RpcClient,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        PeerConnection { rpc: self.rpc.clone(), target, addr: node.addr.clone() }
    }
}

pub struct PeerConnection {
    rpc: RpcClient,
    target: NodeId,
    addr: String,
}

impl PeerConnection {
    async fn call<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> =
            self.rpc.post_encoded(&self.addr, path, body, option.hard_ttl()).await.map_err(|f| match f {
                RpcFailure::NotDelivered(_) => RPCError::Unreachable(Unreachable::new(&f)),
                RpcFailure::Unknown(_) => RPCError::Network(NetworkError::new(&f)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn encode<Req: Serialize, E: std::error::Error>(req: &Req) -> Result<Vec<u8>, RPCError<NodeId, Node, E>> {
    codec::encode(req).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
}

/// How many of `entries` entries fit in [`MAX_APPEND_BYTES`], when `bytes` do not.
fn entries_hint(entries: usize, bytes: usize) -> Option<u64> {
    (entries > 1 && bytes > MAX_APPEND_BYTES).then(|| (entries * MAX_APPEND_BYTES / bytes).clamp(1, entries - 1) as u64)
}

/// [`InstallSnapshotRequest`] with the same bincode layout, but `data` written
/// as one byte run rather than element by element (tens of MB per snapshot).
#[derive(Serialize)]
struct SnapshotChunk<'a> {
    vote: &'a openraft::Vote<NodeId>,
    meta: &'a SnapshotMeta,
    offset: u64,
    #[serde(serialize_with = "as_byte_run")]
    data: &'a [u8],
    done: bool,
}

fn as_byte_run<S: serde::Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(data)
}

fn encode_snapshot_chunk(rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&SnapshotChunk {
        vote: &rpc.vote,
        meta: &rpc.meta,
        offset: rpc.offset,
        data: &rpc.data,
        done: rpc.done,
    })
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        // openraft 0.9 can build, after a failed round, an AppendEntries whose
        // entries do not follow `prev_log_id` (seen: prev None, entries from
        // the first unpurged index to a wiped follower). Appended, it leaves a
        // gap that stops the follower's Raft core; refused here, openraft
        // recomputes the follower's progress and sends a snapshot instead.
        if let Some(first) = rpc.entries.first() {
            let expected = rpc.prev_log_id.map_or(0, |p| p.index + 1);
            if first.log_id.index != expected {
                let why =
                    format!("append entries start at {} but prev_log_id is {:?}", first.log_id.index, rpc.prev_log_id);
                tracing::warn!(target_node = self.target, "{why}; not sent");
                return Err(RPCError::Network(NetworkError::new(&std::io::Error::other(why))));
            }
        }
        let body = encode(&rpc)?;
        if let Some(hint) = entries_hint(rpc.entries.len(), body.len()) {
            tracing::debug!(
                entries = rpc.entries.len(),
                bytes = body.len(),
                hint,
                "append entries too large; splitting"
            );
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.call("/raft/append", body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        let body = encode_snapshot_chunk(&rpc).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        self.call("/raft/snapshot", body, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call("/raft/vote", encode(&rpc)?, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LogId, StoredMembership, Vote};

    #[test]
    fn snapshot_chunk_has_the_request_layout() {
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: StoredMembership::default(),
                snapshot_id: "3-1-42-0".into(),
            },
            offset: 4096,
            data: (0..=255u8).cycle().take(5000).collect(),
            done: true,
        };
        let fast = encode_snapshot_chunk(&rpc).unwrap();
        assert_eq!(fast, codec::encode(&rpc).unwrap());
        assert_eq!(codec::decode::<InstallSnapshotRequest<TypeConfig>>(&fast).unwrap(), rpc);
    }

    #[test]
    fn peer_error_bodies_are_reduced_to_a_clean_code_and_message() {
        let ours = br#"{"error":{"code":"not_found","message":"no such raft rpc"}}"#;
        assert_eq!(peer_error_summary(ours), "not_found: no such raft rpc");
        let crafted = serde_json::json!({"error": {
            "code": format!("x<script>\n{}", "a".repeat(500)),
            "message": format!("{}\u{1b}[31m\n", "m".repeat(500)),
        }})
        .to_string();
        let s = peer_error_summary(crafted.as_bytes());
        assert!(s.starts_with("xscript"), "{s}");
        assert!(s.len() <= 40 + 2 + 160 && !s.contains('<') && !s.contains('\n') && !s.contains('\u{1b}'), "{s}");
        assert_eq!(peer_error_summary(b"<html>secret stack trace</html>"), "no error code");
        let f = RpcFailure::NotDelivered(format!("HTTP 401: {}", peer_error_summary(ours)));
        assert_eq!(f.class(), "HTTP 401");
    }

    /// The largest entry a node proposes (ENGINE_MAX_ENTRY_BYTES at its
    /// maximum, 8 MiB of heartbeats) decodes within the codec's wire limit.
    #[test]
    fn a_largest_append_decodes_within_the_wire_limit() {
        let beat = |i: usize| -> model::state::Heartbeat {
            serde_json::from_value(serde_json::json!({
                "worker_id": format!("w-{i}"), "host": "vps-3", "ip": "203.0.113.7", "pool": "default",
                "version": "1.4.2", "status": "running", "process_state": "running",
                "metrics": {"processed": 1200, "errors": 14, "in_flight": 3},
                "stage_metrics": {"dns": {"ok": 1180, "fail": 20}},
                "smtp_metrics": {"2xx": 900, "4xx": 200, "5xx": 80, "timeout": 20},
                "provider_metrics": {"gmail": {"accepted": 500, "rejected": 40, "tempfail": 30, "unknown": 10}},
                "meta": {"seq": i.to_string()}
            }))
            .expect("a spec heartbeat parses")
        };
        let mut beats = Vec::new();
        let mut size = 0;
        while size < 8 << 20 {
            let b = beat(beats.len());
            size += b.approx_encoded_len();
            beats.push(b);
        }
        let req = model::Request {
            at_ms: 1,
            node: 1,
            actor: "worker".into(),
            command: model::Command::HeartbeatBatch { beats: std::sync::Arc::new(beats) },
        };
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: None,
            entries: vec![openraft::Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), 0),
                payload: openraft::EntryPayload::Normal(req),
            }],
            leader_commit: None,
        };
        // The node caps entries by this same estimate, so this is the largest.
        let bytes = codec::encode(&rpc).unwrap();
        assert!(bytes.len() >= 4 << 20, "{} bytes", bytes.len());
        let back: AppendEntriesRequest<TypeConfig> = codec::decode(&bytes).expect("decodes within WIRE_LIMIT");
        assert_eq!(back.entries.len(), 1);
    }

    #[test]
    fn large_appends_are_split_small_ones_sent() {
        assert_eq!(entries_hint(10, MAX_APPEND_BYTES), None);
        assert_eq!(entries_hint(1, 10 * MAX_APPEND_BYTES), None, "a single entry always goes");
        assert_eq!(entries_hint(300, 3 * MAX_APPEND_BYTES), Some(100));
        assert_eq!(entries_hint(2, 100 * MAX_APPEND_BYTES), Some(1));
        assert_eq!(entries_hint(300, MAX_APPEND_BYTES + 1), Some(299));
    }
}
