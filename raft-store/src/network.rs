//! Raft RPC and leader forwarding over HTTP: one shared reqwest client, bodies
//! encoded by [`crate::codec`], every request carrying the cluster secret.

use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec;
use crate::types::{Node, NodeId, TypeConfig};

/// Header that carries `CLUSTER_SECRET` on every `/raft/*` request.
pub const SECRET_HEADER: &str = "x-engine-cluster-secret";

/// Why an internal RPC failed, split by what the caller may safely do next.
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

/// The process's one HTTP client for talking to other nodes.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    secret: String,
}

impl RpcClient {
    /// `source_ip` pins the local address of outgoing connections, so that
    /// nodes sharing one host (tests, drills) are told apart by firewall rules.
    pub fn new(secret: String, source_ip: Option<std::net::IpAddr>) -> Self {
        let http = reqwest::Client::builder()
            .local_address(source_ip)
            .connect_timeout(Duration::from_millis(300))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client with static options always builds");
        Self { http, secret }
    }

    /// POST `body` to `{addr}{path}` and decode the answer.
    pub async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcFailure> {
        let bytes = codec::encode(body).map_err(|e| RpcFailure::NotDelivered(e.to_string()))?;
        let res = self
            .http
            .post(format!("{}{}", addr.trim_end_matches('/'), path))
            .header(SECRET_HEADER, &self.secret)
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RpcFailure::NotDelivered(e.to_string())
                } else {
                    RpcFailure::Unknown(e.to_string())
                }
            })?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| RpcFailure::Unknown(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            // A refused secret or missing route means nothing was applied.
            return Err(if status.is_client_error() {
                RpcFailure::NotDelivered(format!("{status}: {text}"))
            } else {
                RpcFailure::Unknown(format!("{status}: {text}"))
            });
        }
        codec::decode(&body).map_err(|e| RpcFailure::Unknown(e.to_string()))
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
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> =
            self.rpc.post(&self.addr, path, req, option.hard_ttl()).await.map_err(|f| match f {
                RpcFailure::NotDelivered(_) => RPCError::Unreachable(Unreachable::new(&f)),
                RpcFailure::Unknown(_) => RPCError::Network(NetworkError::new(&f)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}
