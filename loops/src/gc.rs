//! Stale-worker cleanup: remove workers silent for `STALE_WORKER_TTL_SECONDS`.
//! The cutoff travels in the command and apply re-checks it, so a worker that
//! heartbeats in between stays.

use std::sync::Arc;
use std::time::Duration;

use model::Command;
use raft_store::cluster::now_ms;

use crate::LoopContext;
use raft_store::supervisor::Probe;

/// Most workers removed by one command.
const BATCH: usize = 1_000;

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    loop {
        let ttl = ctx.with_settings(|s| s.secs("STALE_WORKER_TTL_SECONDS"));
        tokio::time::sleep((ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(30))).await;
        if !ctx.acting_leader().await {
            probe.idle();
            continue;
        }
        probe.busy();
        let mut result = remove_empty_pools(&ctx).await;
        let cutoff_ms = now_ms().saturating_sub(ttl.as_millis() as u64);
        let ids: Vec<String> = {
            let applied = ctx.cluster.state.read();
            let stale = applied.state.workers.values().filter(|w| w.last_heartbeat_ms < cutoff_ms);
            stale.take(BATCH).map(|w| w.id.clone()).collect()
        };
        if !ids.is_empty() {
            match ctx.cluster.write(&ctx.actor("stale-gc"), Command::RemoveStaleWorkers { cutoff_ms, ids }).await {
                Ok(Ok(reply)) => tracing::info!(?reply, "stale workers removed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "stale cleanup refused"),
                Err(e) => {
                    tracing::warn!(error = %e, "stale cleanup not committed");
                    result = Err(format!("stale cleanup not committed: {e}"));
                }
            }
        }
        probe.done(result);
    }
}

/// Remove pools that a heartbeat created, that no operator configured and
/// that have no workers left (format 2; apply re-checks each).
async fn remove_empty_pools(ctx: &LoopContext) -> Result<(), String> {
    let names = {
        let applied = ctx.cluster.state.read();
        if applied.state.format() < 2 {
            return Ok(());
        }
        applied.state.empty_implicit_pools()
    };
    if names.is_empty() {
        return Ok(());
    }
    match ctx.cluster.write(&ctx.actor("pool-gc"), Command::RemoveEmptyPools { names }).await {
        Ok(Ok(reply)) => {
            tracing::info!(?reply, "empty pools removed");
            Ok(())
        }
        Ok(Err(e)) => Err(format!("empty-pool cleanup refused: {e}")),
        Err(e) => Err(format!("empty-pool cleanup not committed: {e}")),
    }
}
