use std::collections::BTreeMap;

use model::settings::{env_defaults, Effective};
use model::state::worker::MetricMap;
use model::state::{ControlState, Heartbeat, Metric, Pool, PoolPatch, Worker};

use super::*;

fn settings(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    env_defaults(|k| extra.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())).unwrap()
}

fn worker(id: &str, pool: &str, at: u64, metrics: &[(&str, f64)]) -> Worker {
    let beat = Heartbeat {
        worker_id: id.into(),
        host: "h".into(),
        ip: "".into(),
        pool: Some(pool.into()),
        version: "1".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), Metric(*v))).collect::<MetricMap>(),
        stage_metrics: Default::default(),
        smtp_metrics: Default::default(),
        provider_metrics: Default::default(),
        meta: Default::default(),
    };
    Worker::new(&beat, pool, at)
}

#[test]
fn missing_heartbeats_error_rates_and_nodes_fire() {
    let env = settings(&[]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let mut state = ControlState::default();
    let now = 1_000_000;
    state.workers.insert("silent".into(), worker("silent", "p", now - 200_000, &[]));
    let mut bad = worker("bad", "p", now - 1_000, &[]);
    bad.error_rate = Some(40.0);
    state.workers.insert("bad".into(), bad);
    state.workers.insert("ok".into(), worker("ok", "p", now - 1_000, &[]));
    let (firing, sample) = evaluate(&state, now, &s, &BTreeMap::new(), &[3]);
    let kinds: Vec<(&str, &str)> = firing.iter().map(|f| (f.kind.as_str(), f.subject.as_str())).collect();
    assert!(kinds.contains(&("heartbeat_missing", "silent")));
    assert!(kinds.contains(&("worker_error_rate", "bad")));
    assert!(kinds.contains(&("node_down", "node-3")));
    assert!(!kinds.iter().any(|(_, s)| *s == "ok"));
    assert_eq!((sample.total, sample.healthy), (3, 2));
}

#[test]
fn provider_rates_use_the_window_and_thresholds() {
    let env = settings(&[]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let prev = BTreeMap::from([("gmail".to_string(), [100.0, 0.0, 0.0, 0.0])]);
    let now = BTreeMap::from([("gmail".to_string(), [140.0, 0.0, 60.0, 0.0])]);
    let window = provider_window(&now, Some(&prev));
    assert_eq!(window["gmail"], [40.0, 0.0, 60.0, 0.0]);
    let (firing, _) = evaluate(&ControlState::default(), 0, &s, &window, &[]);
    assert_eq!(firing.len(), 1);
    assert_eq!((firing[0].kind.as_str(), firing[0].severity.as_str()), ("provider_tempfail_rate", "critical"));
    let protect_cmds = protect(
        &ControlState::default(),
        0,
        &Effective { env: &settings(&[("PROVIDER_AUTOPROTECT_ENABLED", "true")]), overrides: &none },
        &firing,
        &window,
    );
    assert!(
        matches!(&protect_cmds[..], [model::Command::SetProviderMode { mode, auto: true, .. }] if mode == "cautious")
    );
}

#[test]
fn a_protected_provider_without_new_probes_stays_protected() {
    let env = settings(&[("PROVIDER_AUTOPROTECT_ENABLED", "true")]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let mut state = ControlState::default();
    state.set_provider_mode("gmail", "cautious", true, Some("auto: bad".into()), 0).unwrap();
    let bad = model::state::Firing {
        kind: "provider_reject_rate".into(),
        subject: "gmail".into(),
        severity: "critical".into(),
        detail: "reject rate 75%".into(),
    };
    let kinds = KINDS.iter().map(|k| k.to_string()).collect();
    let r = model::state::Reconcile {
        firing: vec![bad],
        kinds_evaluated: kinds,
        channels: vec![],
        cooldown_ms: 0,
        sample: None,
    };
    state.reconcile(&r, 0);
    // No probes since the last round: the incident holds and nothing is undone.
    let quiet = BTreeMap::from([("gmail".to_string(), [0.0; 4])]);
    let (firing, _) = evaluate(&state, 1_000, &s, &quiet, &[]);
    assert_eq!(firing.len(), 1, "open provider incident held without data: {firing:?}");
    assert!(protect(&state, 1_000, &s, &firing, &quiet).is_empty());
    // Enough healthy probes: resolved and released.
    let healthy = BTreeMap::from([("gmail".to_string(), [100.0, 0.0, 0.0, 0.0])]);
    let (firing, _) = evaluate(&state, 2_000, &s, &healthy, &[]);
    assert!(firing.is_empty());
    let cmds = protect(&state, 2_000, &s, &firing, &healthy);
    assert!(matches!(&cmds[..], [model::Command::SetProviderMode { mode, .. }] if mode == "normal"), "{cmds:?}");
}

#[test]
fn autoscale_steps_within_bounds_and_canary() {
    let env = settings(&[("AUTOSCALE_MAX_DESIRED", "3")]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let now = 10_000_000;
    let mut state = ControlState::default();
    let mut pool = Pool::new("busy", 0);
    pool.edit(&PoolPatch { desired_count: Some(2), ..Default::default() }, 0).unwrap();
    state.pools.insert("busy".into(), pool);
    for i in 0..2 {
        state.workers.insert(format!("w{i}"), worker(&format!("w{i}"), "busy", now, &[("in_flight", 9.0)]));
    }
    // Built by hand, not by apply: the pool index is derived, rebuild it.
    state.reindex();
    let cmds = autoscale(&state, now, &s);
    assert!(matches!(&cmds[..], [model::Command::AutoscalePool { from: 2, to: 3, .. }]), "{cmds:?}");
    state.pools.get_mut("busy").unwrap().desired_count = 3;
    assert!(autoscale(&state, now, &s).is_empty(), "at max");
    let env0 = settings(&[("AUTOSCALE_CANARY_PERCENT", "0")]);
    state.pools.get_mut("busy").unwrap().desired_count = 2;
    assert!(autoscale(&state, now, &Effective { env: &env0, overrides: &none }).is_empty(), "outside canary");
}

#[test]
fn sustained_error_rate_quarantines_and_recovery_releases() {
    let env = settings(&[("AUTO_ACTIONS_ENABLED", "true")]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let mut state = ControlState::default();
    let mut w = worker("w", "p", 0, &[]);
    w.error_rate = Some(50.0);
    state.workers.insert("w".into(), w);
    assert!(protect(&state, 0, &s, &[], &BTreeMap::new()).is_empty(), "not sustained without an open incident");
    let f = model::state::Firing {
        kind: "worker_error_rate".into(),
        subject: "w".into(),
        severity: "critical".into(),
        detail: "".into(),
    };
    let r = model::state::Reconcile {
        firing: vec![f],
        kinds_evaluated: vec![],
        channels: vec![],
        cooldown_ms: 0,
        sample: None,
    };
    state.reconcile(&r, 0);
    let cmds = protect(&state, 30_000, &s, &[], &BTreeMap::new());
    assert!(matches!(
        &cmds[..],
        [model::Command::WorkerControl { action: model::state::WorkerAction::Quarantine, .. }]
    ));
    let w = state.workers.get_mut("w").unwrap();
    w.quarantined = true;
    w.quarantine_reason = Some("auto: high".into());
    w.error_rate = Some(2.0);
    let cmds = protect(&state, 90_000, &s, &[], &BTreeMap::new());
    assert!(matches!(
        &cmds[..],
        [model::Command::WorkerControl { action: model::state::WorkerAction::Unquarantine, .. }]
    ));
}

/// A fleet-wide outage at format 3: 100,000 workers fall silent at once. The
/// round is proposed as changes in parts that each encode well under the
/// smallest allowed `ENGINE_MAX_ENTRY_BYTES` (64 KiB here, the budget a
/// 256 KiB limit gives); applied, they open one incident per worker; the next
/// round, with nothing changed, is one small part; recovery resolves them all
/// in parts again.
#[test]
fn a_fleet_wide_outage_is_proposed_as_changes_in_bounded_parts() {
    let env = settings(&[]);
    let none = BTreeMap::new();
    let s = Effective { env: &env, overrides: &none };
    let mut state = ControlState { format_version: 3, ..ControlState::default() };
    let t0 = 10_000_000;
    for i in 0..100_000 {
        let id = format!("worker-{i:06}");
        state.workers.insert(id.clone(), worker(&id, "p", t0, &[]));
    }
    let budget = 64 << 10;
    let channels = vec!["email".to_string()];
    let apply_round = |state: &mut ControlState, now: u64| -> (usize, usize, usize) {
        let (firing, sample) = evaluate(state, now, &s, &BTreeMap::new(), &[]);
        let parts = incident_changes(state, now, &firing, (&channels, 600_000), Some(sample), budget);
        let (mut opened, mut resolved) = (0, 0);
        for (n, p) in parts.iter().enumerate() {
            assert_eq!(p.sample.is_some(), n == 0, "the sample rides in the first part only");
            let req = model::Request {
                at_ms: now,
                node: 1,
                actor: "leader:alerts".into(),
                command: Command::IncidentChanges(p.clone()),
            };
            let bytes = model::codec::encode(&req).unwrap().len();
            assert!(bytes <= budget + 1024, "part {n} is {bytes} bytes, budget {budget}");
            let reply = state.apply(&req).unwrap();
            let model::Reply::Reconciled { opened: o, resolved: r } = reply else { panic!("{reply:?}") };
            (opened, resolved) = (opened + o.len(), resolved + r.len());
        }
        (parts.len(), opened, resolved)
    };
    // Everyone healthy: one part, nothing opened.
    assert_eq!(apply_round(&mut state, t0 + 1_000), (1, 0, 0));
    // All silent past the grace: 100,000 incidents, in many bounded parts.
    let (parts, opened, _) = apply_round(&mut state, t0 + 130_000);
    assert_eq!(opened, 100_000);
    assert!(parts > 20, "{parts} parts");
    let active = state.incidents.values().filter(|i| i.state == IncidentState::Active).count();
    assert_eq!(active, 100_000);
    // Nothing changed since: one part with the sample alone.
    let (firing, sample) = evaluate(&state, t0 + 150_000, &s, &BTreeMap::new(), &[]);
    let parts = incident_changes(&state, t0 + 150_000, &firing, (&channels, 600_000), Some(sample), budget);
    assert_eq!(parts.len(), 1);
    assert!(parts[0].open.is_empty() && parts[0].resolve.is_empty() && parts[0].remind.is_empty());
    // Back: every worker beats again, every incident resolves.
    let back = t0 + 300_000;
    for w in state.workers.values_mut() {
        w.last_heartbeat_ms = back;
    }
    let (parts, _, resolved) = apply_round(&mut state, back + 1_000);
    assert_eq!(resolved, 100_000);
    assert!(parts > 1);
    assert_eq!(state.incidents.values().filter(|i| i.state == IncidentState::Active).count(), 0);
}
