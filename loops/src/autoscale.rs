//! The autoscale loop: step pools toward their utilization band. Each step is
//! fenced in apply on the count the leader saw and on the pool's cooldown.

use std::sync::Arc;

use raft_store::cluster::now_ms;

use crate::{rules, LoopContext};
use raft_store::supervisor::Probe;

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    loop {
        crate::pause(&ctx, "AUTOSCALE_INTERVAL_SECONDS").await;
        if !ctx.acting_leader().await || !ctx.with_settings(|s| s.bool("AUTOSCALE_ENABLED")) {
            probe.idle();
            continue;
        }
        probe.busy();
        let mut failed = None;
        let steps = {
            let applied = ctx.cluster.state.read();
            ctx.with_settings_of(&applied.state, |s| rules::autoscale(&applied.state, now_ms(), s))
        };
        for cmd in steps {
            match ctx.cluster.write(&ctx.actor("autoscale"), cmd).await {
                Ok(Ok(reply)) => tracing::info!(?reply, "autoscale step committed"),
                Ok(Err(e)) => tracing::info!(error = %e, "autoscale step refused"),
                Err(e) => {
                    tracing::warn!(error = %e, "autoscale step not committed");
                    failed = Some(format!("autoscale step not committed: {e}"));
                }
            }
        }
        probe.done(failed.map_or(Ok(()), Err));
    }
}
