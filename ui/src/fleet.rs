//! The fleet at a glance: worker counts by heartbeat and desired state, per
//! pool, and open incidents. Shared by the overview page and its live stream.

use model::state::worker::heartbeat_state;
use model::state::{ControlState, IncidentState};
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

#[cfg(test)]
mod tests {
    use model::state::{Heartbeat, WorkerAction};
    use model::{Command, ControlState, Request};

    use super::summarize;

    fn beat(id: &str, pool: &str) -> Heartbeat {
        Heartbeat {
            worker_id: id.into(),
            host: "h".into(),
            ip: Default::default(),
            pool: Some(pool.into()),
            version: "1".into(),
            status: "running".into(),
            process_state: "running".into(),
            metrics: Default::default(),
            stage_metrics: Default::default(),
            smtp_metrics: Default::default(),
            provider_metrics: Default::default(),
            meta: Default::default(),
        }
    }

    fn apply(s: &mut ControlState, at_ms: u64, command: Command) {
        s.apply(&Request { at_ms, node: 1, actor: "t".into(), command }).expect("applies");
    }

    #[test]
    fn counts_by_state_and_pool() {
        let mut s = ControlState::default();
        apply(
            &mut s,
            1_000,
            Command::HeartbeatBatch { beats: vec![beat("a", "p1"), beat("b", "p1"), beat("c", "p2")].into() },
        );
        apply(&mut s, 100_000, Command::HeartbeatBatch { beats: vec![beat("a", "p1")].into() });
        apply(
            &mut s,
            100_000,
            Command::WorkerControl { worker: "b".into(), action: WorkerAction::Pause, reason: None },
        );
        apply(
            &mut s,
            100_000,
            Command::WorkerControl { worker: "c".into(), action: WorkerAction::Quarantine, reason: None },
        );
        // Grace 30 s at t=101 s: only `a` (seen at 100 s) is healthy.
        let f = summarize(&s, 101_000, 30_000);
        assert_eq!((f.total, f.healthy, f.stale, f.none), (3, 1, 2, 0));
        assert_eq!((f.running, f.paused, f.quarantined), (2, 1, 1));
        assert_eq!(f.heartbeats_total, 4);
        assert_eq!(f.healthy_percent(), 33);
        let p1 = f.pools.iter().find(|p| p.name == "p1").expect("p1 listed");
        assert_eq!((p1.total, p1.healthy), (2, 1));
        assert_eq!(f.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["p1", "p2"]);
        assert_eq!(summarize(&ControlState::default(), 0, 1).healthy_percent(), 100);
    }
}
