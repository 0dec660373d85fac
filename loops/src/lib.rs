//! Leader loops: alerts and incidents, notifications, autoscale, auto-protect,
//! stale-worker cleanup, the job lease reaper with job compaction, and the
//! build farm's worker triggers. They run on every node but act only while
//! the node is an acting leader, and every decision is committed through
//! Raft before any outside effect.

pub mod alerts;
pub mod autoscale;
pub mod format;
pub mod gc;
pub mod jobs;
pub mod notify;
pub mod rules;
pub mod trigger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use model::settings::Effective;
use raft_store::Cluster;

pub use notify::{NotifyConfig, SmtpConfig};
pub use trigger::{TriggerConfig, TriggerTargetConfig};

/// What every loop needs.
pub struct LoopContext {
    pub cluster: Arc<Cluster>,
    /// Settings read from the environment at startup (validated).
    pub env: BTreeMap<String, String>,
    pub notify: NotifyConfig,
    /// Lease reaper period and job retention.
    pub jobs: raft_store::job_commit::JobOptions,
    /// Where worker triggers go (`WORKER_TRIGGER_COMMAND`, `WORKER_WEBHOOK_URL`).
    pub trigger: TriggerConfig,
}

impl LoopContext {
    /// Leader, confirmed by a quorum within the minimum election timeout: a
    /// leader cut off from the majority stops acting before a new one can be
    /// elected. (openraft's `millis_since_quorum_ack` metric is not refreshed
    /// by heartbeats on an idle leader, so it is not used.)
    pub async fn acting_leader(&self) -> bool {
        let limit = Duration::from_millis(self.cluster.opts.election_min_ms);
        self.cluster.confirm_leadership(limit).await
    }

    /// Run `f` with the settings in force now (env defaults + Raft overrides).
    pub fn with_settings<T>(&self, f: impl FnOnce(&Effective) -> T) -> T {
        let overrides = self.cluster.state.read().state.settings.clone();
        f(&Effective { env: &self.env, overrides: &overrides })
    }

    /// Like [`Self::with_settings`] for a caller already holding the state.
    pub fn with_settings_of<T>(&self, state: &model::ControlState, f: impl FnOnce(&Effective) -> T) -> T {
        f(&Effective { env: &self.env, overrides: &state.settings })
    }

    pub fn actor(&self, loop_name: &str) -> String {
        format!("leader:{loop_name}")
    }
}

/// Start every loop under the node's supervisor (restarted if it panics,
/// stopped at shutdown, listed at `GET /api/cluster/loops`).
pub fn spawn_all(ctx: Arc<LoopContext>) {
    let sup = ctx.cluster.supervisor.clone();
    let c = ctx.clone();
    sup.spawn("alerts", move |probe| alerts::run(c.clone(), probe));
    let c = ctx.clone();
    sup.spawn("notifications", move |probe| notify::run(c.clone(), probe));
    let c = ctx.clone();
    sup.spawn("autoscale", move |probe| autoscale::run(c.clone(), probe));
    let c = ctx.clone();
    sup.spawn("cleanup", move |probe| gc::run(c.clone(), probe));
    let c = ctx.clone();
    sup.spawn("jobs", move |probe| jobs::run(c.clone(), probe));
    let c = ctx.clone();
    sup.spawn("worker-trigger", move |probe| trigger::run(c.clone(), probe));
    sup.spawn("format", move |probe| format::run(ctx.clone(), probe));
}

/// Sleep for the period a setting names, re-read every round so changes apply
/// without a restart.
pub(crate) async fn pause(ctx: &LoopContext, key: &str) {
    let period = ctx.with_settings(|s| s.secs(key));
    tokio::time::sleep(period.min(Duration::from_secs(3600))).await;
}
