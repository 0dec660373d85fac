//! Cluster format upgrade: once every voter runs a binary that knows a newer
//! replicated format, the leader commits `SetFormatVersion`, and the rules
//! and variants of that format come into force on every node at the same
//! log index. Until then a rolling upgrade runs the old format (see
//! `model::state::format`).

use std::sync::Arc;
use std::time::Duration;

use model::state::FORMAT_VERSION;
use model::Command;
use raft_store::supervisor::Probe;

use crate::LoopContext;

const EVERY: Duration = Duration::from_secs(5);

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    loop {
        tokio::time::sleep(EVERY).await;
        let current = ctx.cluster.state.read().state.format();
        if current >= FORMAT_VERSION || !ctx.acting_leader().await {
            probe.idle();
            continue;
        }
        probe.busy();
        let result = match ctx.cluster.voters_format().await {
            Ok(known) if known > current => {
                match ctx.cluster.write(&ctx.actor("format"), Command::SetFormatVersion { version: known }).await {
                    Ok(Ok(_)) => {
                        tracing::info!(from = current, to = known, "cluster format raised");
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("format {known} refused: {e}")),
                    Err(e) => Err(format!("format {known} not committed: {e}")),
                }
            }
            Ok(known) => Err(format!("waiting for every voter to know format {FORMAT_VERSION} (they know {known})")),
            Err(e) => Err(e),
        };
        probe.done(result);
    }
}
