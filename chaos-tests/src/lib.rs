//! Multi-process test harness: real `engine-room serve` processes on loopback,
//! each on its own 127.0.0.x address, with kill, restart, pause and network
//! partitions (iptables rules between those addresses). Node logs are printed
//! when a test fails.

pub mod cluster;
pub mod net;
pub mod receivers;
pub mod scenarios;
pub mod workload;

pub use cluster::{Options, TestCluster};
pub use net::Partition;

/// Path of the binary under test: `ENGINE_ROOM_BIN`, else the workspace target dir.
pub fn binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("ENGINE_ROOM_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/engine-room")
}
