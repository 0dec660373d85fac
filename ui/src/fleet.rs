//! The fleet at a glance: worker counts by heartbeat and desired state, per
//! pool, and open incidents. Shared by the overview page and its live stream.

use raft_store::state::worker::heartbeat_state;
use raft_store::state::{ControlState, IncidentState};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PoolSummary {
    pub name: String,
    pub desired: u32,
    pub total: u64,
    pub healthy: u64,
    pub archived: bool,
    pub is_default: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FleetSummary {
    pub total: u64,
    pub healthy: u64,
    pub stale: u64,
    pub none: u64,
    pub running: u64,
    pub paused: u64,
    pub draining: u64,
    pub stopped: u64,
    pub quarantined: u64,
    /// Heartbeats committed over the whole fleet's life, for a rate.
    pub heartbeats_total: u64,
    pub incidents_active: u64,
    pub pools: Vec<PoolSummary>,
}

/// Count the fleet in one pass over the workers.
pub fn summarize(state: &ControlState, now_ms: u64, grace_ms: u64) -> FleetSummary {
    let mut f = FleetSummary::default();
    let mut pools: Vec<PoolSummary> = state
        .pools
        .values()
        .map(|p| PoolSummary {
            name: p.name.clone(),
            desired: p.desired_count,
            archived: p.archived,
            is_default: p.is_default,
            ..Default::default()
        })
        .collect();
    for w in state.workers.values() {
        f.total += 1;
        f.heartbeats_total += w.heartbeat_count;
        let hb = heartbeat_state(Some(w.last_heartbeat_ms), now_ms, grace_ms);
        match hb {
            "healthy" => f.healthy += 1,
            "stale" => f.stale += 1,
            _ => f.none += 1,
        }
        match w.desired_state.as_str() {
            "running" => f.running += 1,
            "paused" => f.paused += 1,
            "draining" => f.draining += 1,
            _ => f.stopped += 1,
        }
        f.quarantined += u64::from(w.quarantined);
        // Pools are few; a linear probe beats a map here.
        let idx = match pools.iter().position(|p| p.name == w.pool.as_str()) {
            Some(i) => i,
            None => {
                pools.push(PoolSummary { name: w.pool.to_string(), ..Default::default() });
                pools.len() - 1
            }
        };
        pools[idx].total += 1;
        pools[idx].healthy += u64::from(hb == "healthy");
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    f.pools = pools;
    f.incidents_active = state.incidents.values().filter(|i| i.state == IncidentState::Active).count() as u64;
    f
}

impl FleetSummary {
    /// Share of workers with a fresh heartbeat, in percent (100 when empty).
    pub fn healthy_percent(&self) -> u64 {
        (self.healthy * 100).checked_div(self.total).unwrap_or(100)
    }
}
