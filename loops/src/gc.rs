//! Stale-worker cleanup: remove workers silent for `STALE_WORKER_TTL_SECONDS`.
//! The cutoff travels in the command and apply re-checks it, so a worker that
//! heartbeats in between stays.

use std::sync::Arc;
use std::time::Duration;

use model::Command;
use raft_store::cluster::now_ms;

use crate::LoopContext;

/// Most workers removed by one command.
const BATCH: usize = 1_000;

pub async fn run(ctx: Arc<LoopContext>) {
    loop {
        let ttl = ctx.with_settings(|s| s.secs("STALE_WORKER_TTL_SECONDS"));
        tokio::time::sleep((ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(30))).await;
        if !ctx.acting_leader().await {
            continue;
        }
        let cutoff_ms = now_ms().saturating_sub(ttl.as_millis() as u64);
        let ids: Vec<String> = {
            let applied = ctx.cluster.state.read();
            let stale = applied.state.workers.values().filter(|w| w.last_heartbeat_ms < cutoff_ms);
            stale.take(BATCH).map(|w| w.id.clone()).collect()
        };
        if ids.is_empty() {
            continue;
        }
        match ctx.cluster.write(&ctx.actor("stale-gc"), Command::RemoveStaleWorkers { cutoff_ms, ids }).await {
            Ok(Ok(reply)) => tracing::info!(?reply, "stale workers removed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stale cleanup refused"),
            Err(e) => tracing::warn!(error = %e, "stale cleanup not committed"),
        }
    }
}
