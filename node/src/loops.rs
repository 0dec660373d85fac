//! Background loops that only the Raft leader runs. Each loop checks that this
//! node leads before every round and acts only through committed commands.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use raft_store::cluster::now_ms;
use raft_store::{Cluster, Command};

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub stale_worker_ttl: Duration,
}

/// Most workers removed by one stale-cleanup command.
const STALE_BATCH: usize = 1_000;

pub fn spawn(cluster: Arc<Cluster>, cfg: LoopConfig) {
    tokio::spawn(stale_worker_gc(cluster, cfg));
}

fn is_leader(cluster: &Cluster) -> bool {
    cluster.raft.metrics().borrow().state == ServerState::Leader
}

/// Remove workers silent for longer than the TTL. The cutoff travels in the
/// command and apply re-checks it, so a worker that heartbeats meanwhile stays.
async fn stale_worker_gc(cluster: Arc<Cluster>, cfg: LoopConfig) {
    let ttl_ms = cfg.stale_worker_ttl.as_millis() as u64;
    let period = (cfg.stale_worker_ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !is_leader(&cluster) {
            continue;
        }
        let cutoff_ms = now_ms().saturating_sub(ttl_ms);
        let ids: Vec<String> = {
            let applied = cluster.state.read();
            applied
                .state
                .workers
                .values()
                .filter(|w| w.last_heartbeat_ms < cutoff_ms)
                .take(STALE_BATCH)
                .map(|w| w.id.clone())
                .collect()
        };
        if ids.is_empty() {
            continue;
        }
        match cluster.write("leader:stale-gc", Command::RemoveStaleWorkers { cutoff_ms, ids }).await {
            Ok(Ok(reply)) => tracing::info!(?reply, "stale workers removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stale cleanup refused"),
            Err(e) => tracing::warn!(error = %e, "stale cleanup not committed"),
        }
    }
}
