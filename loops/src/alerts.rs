//! The alert loop: evaluate the rules, commit what is firing (which opens,
//! resolves and queues notifications), then commit auto-protect decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::state::Reconcile;
use model::Command;
use raft_store::cluster::now_ms;

use crate::rules::{self, ProviderCounts};
use crate::LoopContext;

/// Largest part of an alert round, in (estimated) bytes of changes.
const PART_BYTES: usize = 256 << 10;
use raft_store::supervisor::Probe;

pub async fn run(ctx: Arc<LoopContext>, probe: Probe) {
    // Provider counters at the previous round, for windowed rates. Leader-local:
    // a new leader's first round uses running totals.
    let mut prev: Option<BTreeMap<String, ProviderCounts>> = None;
    loop {
        crate::pause(&ctx, "ALERT_CHECK_INTERVAL_SECONDS").await;
        if !ctx.acting_leader().await || !ctx.with_settings(|s| s.bool("ALERTS_ENABLED")) {
            prev = None;
            probe.idle();
            continue;
        }
        probe.busy();
        prev = Some(round(&ctx, prev.as_ref()).await);
        probe.done(Ok(()));
    }
}

/// One evaluation round; returns the provider totals it saw.
pub async fn round(
    ctx: &LoopContext,
    prev: Option<&BTreeMap<String, ProviderCounts>>,
) -> BTreeMap<String, ProviderCounts> {
    let status = ctx.cluster.status().await;
    let down: Vec<u64> = status.nodes.iter().filter(|n| !n.healthy).map(|n| n.id).collect();
    let now = now_ms();
    let (round_cmds, totals, protect) = {
        let applied = ctx.cluster.state.read();
        let state = &applied.state;
        ctx.with_settings_of(state, |s| {
            let totals = rules::provider_totals(state, now, s.ms("ALERT_HEARTBEAT_GRACE_SECONDS"));
            let window = rules::provider_window(&totals, prev);
            let (firing, sample) = rules::evaluate(state, now, s, &window, &down);
            let protect = rules::protect(state, now, s, &firing, &window);
            let channels = ctx.notify.channels();
            let cooldown_ms = s.ms("ALERT_COOLDOWN_SECONDS");
            let cmds: Vec<Command> = if state.format() >= 3 {
                // Only what changed, in parts well under the entry limit.
                let budget = (ctx.cluster.opts.max_entry_bytes / 4).clamp(16 << 10, PART_BYTES);
                rules::incident_changes(state, now, &firing, (&channels, cooldown_ms), Some(sample), budget)
                    .into_iter()
                    .map(Command::IncidentChanges)
                    .collect()
            } else {
                vec![Command::ReconcileIncidents(Reconcile {
                    firing,
                    kinds_evaluated: rules::KINDS.iter().map(|k| k.to_string()).collect(),
                    channels,
                    cooldown_ms,
                    sample: Some(sample),
                })]
            };
            (cmds, totals, protect)
        })
    };
    let parts = round_cmds.len();
    for (n, cmd) in round_cmds.into_iter().enumerate() {
        if n > 0 && !ctx.acting_leader().await {
            break;
        }
        match ctx.cluster.write(&ctx.actor("alerts"), cmd).await {
            Ok(Ok(reply)) => tracing::debug!(?reply, part = n + 1, parts, "alert round committed"),
            Ok(Err(e)) => tracing::warn!(error = %e, part = n + 1, parts, "alert round refused"),
            Err(e) => {
                // The rest is proposed again, as changes against the state
                // then, by the next round.
                tracing::warn!(error = %e, part = n + 1, parts, "alert round not committed");
                break;
            }
        }
    }
    for cmd in protect {
        if !ctx.acting_leader().await {
            break;
        }
        match ctx.cluster.write(&ctx.actor("auto-protect"), cmd).await {
            Ok(Ok(_)) => tracing::info!("auto-protect action committed"),
            Ok(Err(e)) => tracing::info!(error = %e, "auto-protect action refused"),
            Err(e) => tracing::warn!(error = %e, "auto-protect action not committed"),
        }
    }
    totals
}
