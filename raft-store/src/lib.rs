//! Consensus for Engine Room: the Raft log (a WAL of its own), the state
//! machine adapter over the model's state (in memory, snapshots in files,
//! their meta in sled), both sides of the Raft RPC (client and axum server),
//! forwarding, reads, pre-vote, the snapshot schedule, group commit of heartbeats
//! and of job operations,
//! and the cluster handle that turns a `model::Command`
//! into a committed, applied write.

pub mod cluster;
pub mod election;
pub mod group_commit;
pub mod job_commit;
pub mod log_store;
pub mod network;
pub mod peer_allowlist;
pub mod peer_auth;
pub mod rpc_server;
pub mod snapshot_schedule;
pub mod state_machine;
pub mod supervisor;
pub mod types;

pub use cluster::{Cluster, ClusterError, ClusterOptions};

/// Stop the process with one clear line and a non-zero status, so that its
/// supervisor (systemd) restarts it, instead of serving stale answers from a
/// node whose state can no longer advance: a poisoned state lock (an apply
/// panicked), a fatal Raft core error, a cluster format newer than this binary.
pub fn fatal(why: &str) -> ! {
    tracing::error!("fatal: {why}; exiting");
    eprintln!("engine-room: fatal: {why}; exiting");
    std::process::exit(70)
}
pub use types::{NodeId, Raft, TypeConfig};

/// Open the process's one sled database, the Raft log in `dir/raft-log`, and
/// the state machine.
pub fn open_storage(
    dir: &std::path::Path,
    cache_bytes: u64,
) -> Result<(log_store::LogStore, state_machine::StateMachineStore), StoreOpenError> {
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| StoreOpenError(format!("cannot open sled database in {}: {e}", dir.display())))?;
    let log = log_store::LogStore::open(&dir.join("raft-log"), &db).map_err(StoreOpenError)?;
    let sm =
        state_machine::StateMachineStore::new(db, dir.join("snapshots")).map_err(|e| StoreOpenError(e.to_string()))?;
    Ok((log, sm))
}

/// Opening the data directory failed; the message is meant for one log line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreOpenError(pub String);
