//! The single-node cluster both in-process API test files stand on.
// Each test file uses only part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::{AppState, BatchOptions, Settings};
use raft_store::{Cluster, ClusterOptions};

pub const TOKEN: &str = "test-token";

/// Whether the node is left uninitialized or made leader of a cluster of one.
#[derive(Clone, Copy, PartialEq)]
pub enum Start {
    /// Never bootstrapped: writes find no leader and time out after `write_timeout`.
    Uninitialized,
    /// Bootstrapped, and elected itself before this returns, so writes commit.
    Leader,
}

/// One node in `dir`, wrapped in the API state the router serves.
pub async fn one_node(dir: &std::path::Path, start: Start, write_timeout: Duration) -> AppState {
    one_node_with(dir, start, write_timeout, api::JobOptions::default()).await
}

/// [`one_node`] with job (and build-farm) options of its own.
pub async fn one_node_with(
    dir: &std::path::Path,
    start: Start,
    write_timeout: Duration,
    jobs: api::JobOptions,
) -> AppState {
    let opts = ClusterOptions {
        id: 1,
        cluster_name: "test".into(),
        secret: "s".into(),
        heartbeat_ms: 50,
        election_min_ms: 150,
        election_max_ms: 300,
        snapshot_logs: 1000,
        keep_logs: 100,
        write_timeout,
        rpc_source_ip: None,
        sled_cache_bytes: 8 << 20,
        limits: Default::default(),
        max_entry_bytes: 8 << 20,
        peer_security: Default::default(),
        peer_tls: None,
    };
    let cluster = Cluster::start(opts, dir).await.expect("start raft");
    if start == Start::Leader {
        // A single voter never contacts its own address; it only has to be a URL.
        cluster.bootstrap(&BTreeMap::from([(1, "http://127.0.0.1:9".to_string())])).await.expect("bootstrap");
        for _ in 0..100 {
            if cluster.report().role == "leader" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cluster.report().role, "leader", "single node elects itself");
    }
    let env = model::settings::env_defaults(|_| None).unwrap();
    AppState::with_auth(
        cluster,
        TOKEN,
        "s",
        Settings { env: Arc::new(env) },
        BatchOptions { max_batch: 64, max_inflight: 2, max_batch_bytes: 1 << 20 },
        api::AuthOptions::default(),
        jobs,
    )
}
