//! Pure rule evaluation: from the replicated state, the time and the settings,
//! what is firing, what autoscale and auto-protect would do. No I/O here.

use std::collections::{BTreeMap, HashMap};

use model::settings::Effective;
use model::state::worker::{heartbeat_state, metric};
use model::state::{
    ControlState, DesiredState, Firing, FleetSample, IncidentChanges, IncidentState, Worker, WorkerAction,
};
use model::Command;

pub const KINDS: [&str; 7] = [
    "heartbeat_missing",
    "worker_error_rate",
    "desired_state_stuck",
    "provider_tempfail_rate",
    "provider_reject_rate",
    "provider_unknown_rate",
    "node_down",
];

/// Provider outcome counters: accepted, rejected, tempfail, unknown.
pub type ProviderCounts = [f64; 4];

fn healthy(w: &Worker, now: u64, grace: u64) -> bool {
    heartbeat_state(Some(w.last_heartbeat_ms), now, grace) == "healthy"
}

/// Has the worker reached what it was asked to do?
fn reached(w: &Worker) -> bool {
    let st = w.status.as_str();
    match w.desired_state {
        DesiredState::Running => st == "running",
        DesiredState::Paused => st == "paused" || st == "stopped",
        DesiredState::Draining => matches!(st, "draining" | "paused" | "stopped"),
        DesiredState::Stopped => st == "stopped" || w.process_state == "stopped",
    }
}

/// Sum of provider counters over healthy workers.
pub fn provider_totals(state: &ControlState, now: u64, grace: u64) -> BTreeMap<String, ProviderCounts> {
    let mut out: BTreeMap<String, ProviderCounts> = BTreeMap::new();
    for w in state.workers.values().filter(|w| healthy(w, now, grace)) {
        for (provider, m) in w.provider_metrics.iter() {
            let c = out.entry(provider.to_string()).or_default();
            for (i, k) in ["accepted", "rejected", "tempfail", "unknown"].iter().enumerate() {
                c[i] += metric(m, k);
            }
        }
    }
    out
}

/// Counters since `prev` where possible (a fresh leader has no `prev`, and a
/// counter that went backwards falls back to the running total).
pub fn provider_window(
    now: &BTreeMap<String, ProviderCounts>,
    prev: Option<&BTreeMap<String, ProviderCounts>>,
) -> BTreeMap<String, ProviderCounts> {
    now.iter()
        .map(|(p, c)| {
            let delta = prev.and_then(|prev| prev.get(p)).map(|old| {
                let d = [c[0] - old[0], c[1] - old[1], c[2] - old[2], c[3] - old[3]];
                if d.iter().any(|v| *v < 0.0) {
                    *c
                } else {
                    d
                }
            });
            (p.clone(), delta.unwrap_or(*c))
        })
        .collect()
}

/// Everything firing now, plus a fleet availability sample.
pub fn evaluate(
    state: &ControlState,
    now: u64,
    s: &Effective,
    providers: &BTreeMap<String, ProviderCounts>,
    down_nodes: &[u64],
) -> (Vec<Firing>, FleetSample) {
    let grace = s.ms("ALERT_HEARTBEAT_GRACE_SECONDS");
    let stuck_ms = s.ms("STUCK_DESIRED_GRACE_SECONDS");
    let (err_warn, err_crit) = (s.num("ALERT_ERROR_RATE_THRESHOLD"), s.num("QUARANTINE_ERROR_RATE_THRESHOLD"));
    let mut firing = Vec::new();
    let mut fire = |kind: &str, subject: &str, severity: &str, detail: String| {
        firing.push(Firing { kind: kind.into(), subject: subject.into(), severity: severity.into(), detail })
    };
    let mut sample = FleetSample { at_ms: now, total: 0, healthy: 0 };
    for w in state.workers.values() {
        sample.total += 1;
        if !healthy(w, now, grace) {
            if w.desired_state != DesiredState::Stopped {
                let age = now.saturating_sub(w.last_heartbeat_ms) / 1000;
                fire("heartbeat_missing", &w.id, "critical", format!("no heartbeat for {age}s"));
            }
            continue;
        }
        sample.healthy += 1;
        if let Some(rate) = w.error_rate.filter(|r| *r > err_warn) {
            let sev = if rate > err_crit { "critical" } else { "warning" };
            fire("worker_error_rate", &w.id, sev, format!("error rate {rate:.1}% over {err_warn}%"));
        }
        if !reached(w) && now.saturating_sub(w.desired_changed_ms) > stuck_ms {
            let d = w.desired_state.as_str();
            fire("desired_state_stuck", &w.id, "warning", format!("desired {d} but reports {:?}", w.status));
        }
    }
    let min_volume = s.num("PROVIDER_MIN_VOLUME");
    for (provider, c) in providers {
        let total: f64 = c.iter().sum();
        if total < min_volume.max(1.0) {
            // Too few probes since the last round to judge: an open provider
            // incident stays as it is rather than resolving for lack of data.
            for name in ["tempfail", "reject", "unknown"] {
                let kind = format!("provider_{name}_rate");
                if let Some(i) = state.active_incident(&kind, provider) {
                    fire(&kind, provider, &i.severity.clone(), i.detail.clone());
                }
            }
            continue;
        }
        for (idx, name) in [(2, "tempfail"), (1, "reject"), (3, "unknown")] {
            let rate = c[idx] / total;
            let up = name.to_uppercase();
            let (warn, crit) =
                (s.num(&format!("PROVIDER_{up}_WARN_RATE")), s.num(&format!("PROVIDER_{up}_CRITICAL_RATE")));
            let sev = if rate >= crit {
                "critical"
            } else if rate >= warn {
                "warning"
            } else {
                continue;
            };
            let detail = format!("{name} rate {:.0}% of {total:.0} probes", rate * 100.0);
            fire(&format!("provider_{name}_rate"), provider, sev, detail);
        }
    }
    for id in down_nodes {
        fire("node_down", &format!("node-{id}"), "critical", format!("node {id} does not answer"));
    }
    (firing, sample)
}

/// The alert round as changes against the incidents in `state` (cluster
/// format 3): conditions with no active incident or a new severity are
/// opened (or updated), active incidents of an evaluated kind that no longer
/// fire are resolved, and those whose reminder is due are reminded. A steady
/// state is one small part carrying only the sample; a fleet-wide outage is
/// split into parts of about `budget` bytes each, so every entry stays well
/// under `ENGINE_MAX_ENTRY_BYTES`. The sample rides in the first part.
pub fn incident_changes(
    state: &ControlState,
    now: u64,
    firing: &[Firing],
    (channels, cooldown_ms): (&[String], u64),
    sample: Option<FleetSample>,
    budget: usize,
) -> Vec<IncidentChanges> {
    let mut active: HashMap<(&str, &str), &model::state::Incident> = HashMap::new();
    for i in state.incidents.values().filter(|i| i.state == IncidentState::Active) {
        active.entry((i.kind.as_str(), i.subject.as_str())).or_insert(i);
    }
    let empty = || IncidentChanges { channels: channels.to_vec(), cooldown_ms, ..IncidentChanges::default() };
    let mut parts = vec![IncidentChanges { sample, ..empty() }];
    let mut size = 0usize;
    // The part a change of `bytes` goes into: a new one once the current
    // one has reached the budget.
    let mut part = |bytes: usize| -> usize {
        if size + bytes > budget && size > 0 {
            parts.push(empty());
            size = 0;
        }
        size += bytes;
        parts.len() - 1
    };
    let mut placed: Vec<(usize, Change)> = Vec::new();
    let mut firing_now = std::collections::HashSet::new();
    for f in firing {
        firing_now.insert((f.kind.as_str(), f.subject.as_str()));
        match active.get(&(f.kind.as_str(), f.subject.as_str())) {
            Some(i) if i.severity == f.severity => {
                if !channels.is_empty() && state.reminder_due(i, cooldown_ms, now) {
                    placed.push((part(10), Change::Remind(i.id)));
                }
            }
            _ => {
                let bytes = 16 + f.kind.len() + f.subject.len() + f.severity.len() + f.detail.len();
                placed.push((part(bytes), Change::Open(f.clone())));
            }
        }
    }
    for i in state.incidents.values().filter(|i| i.state == IncidentState::Active) {
        if KINDS.contains(&i.kind.as_str()) && !firing_now.contains(&(i.kind.as_str(), i.subject.as_str())) {
            placed.push((part(10), Change::Resolve(i.id)));
        }
    }
    for (n, change) in placed {
        let p = &mut parts[n];
        match change {
            Change::Open(f) => p.open.push(f),
            Change::Resolve(id) => p.resolve.push(id),
            Change::Remind(id) => p.remind.push(id),
        }
    }
    parts
}

enum Change {
    Open(Firing),
    Resolve(u64),
    Remind(u64),
}

/// Auto-protect decisions: quarantine workers whose error rate stays high,
/// release them when it falls, protect providers with critical rates and
/// release them once enough probes since the last round show healthy rates.
pub fn protect(
    state: &ControlState,
    now: u64,
    s: &Effective,
    firing: &[Firing],
    providers: &BTreeMap<String, ProviderCounts>,
) -> Vec<Command> {
    let mut out = Vec::new();
    let threshold = s.num("QUARANTINE_ERROR_RATE_THRESHOLD");
    let interval = s.ms("ALERT_CHECK_INTERVAL_SECONDS");
    if s.bool("AUTO_ACTIONS_ENABLED") {
        // When each worker's active error-rate incident opened (the lowest
        // id, as `active_incident` finds it), gathered once rather than
        // searched for per worker.
        let mut error_since: HashMap<&str, u64> = HashMap::new();
        for i in state.incidents.values() {
            if i.state == IncidentState::Active && i.kind == "worker_error_rate" {
                error_since.entry(i.subject.as_str()).or_insert(i.opened_ms);
            }
        }
        for w in state.workers.values() {
            let rate = w.error_rate.unwrap_or(0.0);
            // "Stays over": an error-rate incident already open for a full interval.
            let sustained =
                error_since.get(w.id.as_str()).is_some_and(|opened| now.saturating_sub(*opened) >= interval);
            if !w.quarantined && rate > threshold && sustained {
                out.push(Command::WorkerControl {
                    worker: w.id.clone(),
                    action: WorkerAction::Quarantine,
                    reason: Some(format!("auto: error rate {rate:.1}% over {threshold}%")),
                });
            }
            let auto_quarantined = w.quarantine_reason.as_deref().is_some_and(|r| r.starts_with("auto:"));
            if w.quarantined && auto_quarantined && rate < threshold / 2.0 {
                out.push(Command::WorkerControl {
                    worker: w.id.clone(),
                    action: WorkerAction::Unquarantine,
                    reason: Some(format!("auto: error rate back to {rate:.1}%")),
                });
            }
        }
    }
    if s.bool("PROVIDER_AUTOPROTECT_ENABLED") {
        let mut worst: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for f in firing.iter().filter(|f| f.kind.starts_with("provider_")) {
            let e = worst.entry(f.subject.as_str()).or_insert((f.severity.as_str(), f.detail.as_str()));
            if f.severity == "critical" {
                *e = (f.severity.as_str(), f.detail.as_str());
            }
        }
        let min_volume = s.num("PROVIDER_MIN_VOLUME").max(1.0);
        let judged = |p: &str| providers.get(p).is_some_and(|c| c.iter().sum::<f64>() >= min_volume);
        for (provider, p) in &state.providers {
            let cautious = p.auto_allowed() && p.auto_mode.as_deref() == Some("cautious");
            if cautious && judged(provider) && !worst.contains_key(provider.as_str()) {
                out.push(Command::SetProviderMode {
                    provider: provider.clone(),
                    mode: "normal".into(),
                    auto: true,
                    reason: Some("auto: rates healthy again".into()),
                });
            }
        }
        for (provider, (sev, detail)) in worst {
            let p = state.providers.get(provider);
            let allowed = p.is_none_or(|p| p.auto_allowed());
            let already = p.is_some_and(|p| p.effective() != "normal");
            if sev == "critical" && allowed && !already {
                out.push(Command::SetProviderMode {
                    provider: provider.to_string(),
                    mode: "cautious".into(),
                    auto: true,
                    reason: Some(format!("auto: {detail}")),
                });
            }
        }
    }
    out
}

/// Stable share of pools autoscale may touch: FNV-1a of the name, mod 100.
pub fn in_canary(pool: &str, percent: f64) -> bool {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in pool.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    ((h % 100) as f64) < percent
}

/// Autoscale steps for pools out of their utilization band.
pub fn autoscale(state: &ControlState, now: u64, s: &Effective) -> Vec<Command> {
    let grace = s.ms("ALERT_HEARTBEAT_GRACE_SECONDS");
    let cooldown_ms = s.ms("AUTOSCALE_COOLDOWN_SECONDS");
    let (up, down) = (s.num("AUTOSCALE_UP_UTILIZATION"), s.num("AUTOSCALE_DOWN_UTILIZATION"));
    let default_capacity = s.num("AUTOSCALE_WORKER_CAPACITY").max(1.0);
    let mut out = Vec::new();
    for pool in state.pools.values().filter(|p| !p.archived) {
        if !in_canary(&pool.name, s.num("AUTOSCALE_CANARY_PERCENT")) {
            continue;
        }
        let last = state.autoscale_last.get(&pool.name).copied().unwrap_or(0);
        if last > 0 && now.saturating_sub(last) < cooldown_ms {
            continue;
        }
        let min = pool.min_count.unwrap_or(s.count("AUTOSCALE_MIN_DESIRED") as u32);
        let max = pool.max_count.unwrap_or(s.count("AUTOSCALE_MAX_DESIRED") as u32).max(min);
        let live: Vec<&Worker> = state
            .pool_workers(&pool.name)
            .filter(|w| healthy(w, now, grace))
            .filter(|w| w.desired_state == DesiredState::Running && !w.quarantined)
            .collect();
        let desired = pool.desired_count;
        let (target, reason) = if desired < min {
            (min, format!("below autoscale minimum {min}"))
        } else if desired > max {
            (max, format!("above autoscale maximum {max}"))
        } else if live.is_empty() {
            continue;
        } else {
            let in_flight: f64 = live.iter().map(|w| metric(&w.metrics, "in_flight")).sum();
            let capacity: f64 = live
                .iter()
                .map(|w| Some(metric(&w.metrics, "capacity")).filter(|c| *c > 0.0).unwrap_or(default_capacity))
                .sum();
            let util = in_flight / capacity;
            let why = format!(
                "utilization {util:.2} (in_flight {in_flight:.0} / capacity {capacity:.0}, {} workers)",
                live.len()
            );
            if util > up && desired < max {
                (desired + 1, format!("{why} above {up}"))
            } else if util < down && desired > min {
                (desired - 1, format!("{why} below {down}"))
            } else {
                continue;
            }
        };
        out.push(Command::AutoscalePool { pool: pool.name.clone(), from: desired, to: target, reason, cooldown_ms });
    }
    out
}

#[cfg(test)]
mod tests;
