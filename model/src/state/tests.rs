use super::*;
use crate::state::worker::{metric, MetricMap};

fn req(command: Command) -> Request {
    Request { at_ms: 1_000, node: 1, actor: "test".into(), command }
}

fn beat(id: &str, pool: Option<&str>) -> Heartbeat {
    Heartbeat {
        worker_id: id.into(),
        host: "vps-1".into(),
        ip: "127.0.0.1".into(),
        pool: pool.map(Into::into),
        version: "1.0".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: MetricMap::from([("processed", Metric(1.0))]),
        stage_metrics: Default::default(),
        smtp_metrics: Default::default(),
        provider_metrics: Default::default(),
        meta: Default::default(),
    }
}

#[test]
fn scale_creates_then_updates_a_pool_and_audits() {
    let mut s = ControlState::default();
    s.apply(&req(Command::ScalePool { pool: "default".into(), desired_count: 3 })).unwrap();
    let r = s.apply(&req(Command::ScalePool { pool: "default".into(), desired_count: 5 })).unwrap();
    match r {
        Reply::Pool(p) => assert_eq!(p.desired_count, 5),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(s.pools.len(), 1);
    assert_eq!(s.audit.len(), 2);
    assert_eq!(s.audit[0].reason.as_deref(), Some("desired_count 3 -> 5"));
}

#[test]
fn bad_names_and_counts_change_nothing() {
    let mut s = ControlState::default();
    for bad in ["", "a/b", "white space", &"x".repeat(MAX_NAME_LEN + 1)] {
        let e = s.apply(&req(Command::ScalePool { pool: bad.into(), desired_count: 1 })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
    }
    let e = s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: MAX_DESIRED_COUNT + 1 })).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(s, ControlState::default());
}

#[test]
fn heartbeat_batch_answers_each_beat_and_refuses_bad_ones_alone() {
    let mut s = ControlState::default();
    s.apply(&req(Command::ScalePool { pool: "eu".into(), desired_count: 4 })).unwrap();
    let beats = vec![beat("w-1", Some("eu")), beat("bad id", None), beat("w-2", None)];
    let Reply::Heartbeats(answers) = s.apply(&req(Command::HeartbeatBatch { beats: beats.into() })).unwrap() else {
        panic!("expected heartbeat answers")
    };
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].as_ref().unwrap().pool_desired_count, 4);
    assert!(answers[1].is_err());
    assert_eq!(answers[2].as_ref().unwrap().desired_state, DesiredState::Running);
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.workers["w-2"].pool, FALLBACK_POOL);
    assert!(s.audit.len() == 1, "heartbeats are not audited");
}

#[test]
fn controls_reach_the_next_heartbeat_answer() {
    let mut s = ControlState::default();
    s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", None)].into() })).unwrap();
    let control = |action| Command::WorkerControl { worker: "w-1".into(), action, reason: Some("ops".into()) };
    s.apply(&req(control(WorkerAction::Pause))).unwrap();
    s.apply(&req(control(WorkerAction::Quarantine))).unwrap();
    let Reply::Heartbeats(a) =
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", None)].into() })).unwrap()
    else {
        panic!()
    };
    let a = a[0].as_ref().unwrap();
    assert_eq!((a.desired_state, a.quarantined), (DesiredState::Paused, true));
    let e = s
        .apply(&req(Command::WorkerControl { worker: "nope".into(), action: WorkerAction::Pause, reason: None }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(s.audit[0].action, "worker.quarantine");
}

#[test]
fn stale_removal_rechecks_the_heartbeat_time() {
    let mut s = ControlState::default();
    s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("old", None), beat("fresh", None)].into() })).unwrap();
    let mut later = req(Command::HeartbeatBatch { beats: vec![beat("fresh", None)].into() });
    later.at_ms = 5_000;
    s.apply(&later).unwrap();
    let cmd = Command::RemoveStaleWorkers { cutoff_ms: 2_000, ids: vec!["old".into(), "fresh".into()] };
    let Reply::Removed(removed) = s.apply(&req(cmd)).unwrap() else { panic!() };
    assert_eq!(removed, vec!["old".to_string()]);
    assert!(s.workers.contains_key("fresh"));
}

#[test]
fn pools_lifecycle_default_and_archive_rules() {
    let mut s = ControlState::default();
    let patch = PoolPatch { min_count: Some(1), max_count: Some(4), ..Default::default() };
    s.apply(&req(Command::CreatePool { name: "eu".into(), patch: patch.clone() })).unwrap();
    assert_eq!(s.apply(&req(Command::CreatePool { name: "eu".into(), patch })).unwrap_err().kind, ErrorKind::Conflict);
    let bad = PoolPatch { min_count: Some(9), ..Default::default() };
    assert_eq!(
        s.apply(&req(Command::UpdatePool { name: "eu".into(), patch: bad })).unwrap_err().kind,
        ErrorKind::Conflict
    );
    s.apply(&req(Command::SetDefaultPool { name: "eu".into() })).unwrap();
    assert_eq!(s.default_pool(), "eu");
    assert_eq!(
        s.apply(&req(Command::ArchivePool { name: "eu".into(), archived: true })).unwrap_err().kind,
        ErrorKind::Conflict
    );
    s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w", None)].into() })).unwrap();
    assert_eq!(s.workers["w"].pool, "eu");
}

fn firing(kind: &str, subject: &str) -> Firing {
    Firing { kind: kind.into(), subject: subject.into(), severity: "warning".into(), detail: "d".into() }
}

fn round(s: &mut ControlState, at: u64, f: Vec<Firing>) -> (Vec<u64>, Vec<u64>) {
    let r = Reconcile {
        firing: f,
        kinds_evaluated: vec!["heartbeat_missing".into()],
        channels: vec!["slack".into(), "email".into()],
        cooldown_ms: 10_000,
        sample: Some(FleetSample { at_ms: at, total: 2, healthy: 1 }),
    };
    s.reconcile(&r, at)
}

#[test]
fn incidents_dedupe_notify_once_and_resolve() {
    let mut s = ControlState::default();
    let (opened, _) = round(&mut s, 1_000, vec![firing("heartbeat_missing", "w-1")]);
    assert_eq!(opened.len(), 1);
    assert_eq!(s.notifications.len(), 2, "one per channel");
    let (opened, _) = round(&mut s, 2_000, vec![firing("heartbeat_missing", "w-1")]);
    assert!(opened.is_empty(), "same kind+subject stays one incident");
    assert_eq!(s.notifications.len(), 2, "no repeat inside the cooldown");
    round(&mut s, 12_000, vec![firing("heartbeat_missing", "w-1")]);
    assert_eq!(s.notifications.len(), 4, "reminder after the cooldown");
    let (_, resolved) = round(&mut s, 13_000, vec![]);
    assert_eq!(resolved.len(), 1);
    assert_eq!(s.notifications.values().filter(|n| n.event == "resolved").count(), 2);
    // Flapping back within the cooldown opens an incident but stays quiet.
    let (opened, _) = round(&mut s, 14_000, vec![firing("heartbeat_missing", "w-1")]);
    assert_eq!(opened.len(), 1);
    assert_eq!(s.notifications.len(), 6);
    assert_eq!(s.fleet_samples.len(), 5);
}

/// A fleet-wide outage resolves more incidents at once than are kept: the
/// round's own resolved incidents may be pruned in the same apply, and its
/// audit entries must not need them (this panicked every node's apply).
#[test]
fn resolving_more_incidents_than_are_kept_audits_them_all() {
    let mut s = ControlState::default();
    let reconcile = |firing: Vec<Firing>| {
        Command::ReconcileIncidents(Reconcile {
            firing,
            kinds_evaluated: vec!["heartbeat_missing".into()],
            channels: vec![],
            cooldown_ms: 10_000,
            sample: None,
        })
    };
    let all: Vec<Firing> = (0..700).map(|i| firing("heartbeat_missing", &format!("w-{i}"))).collect();
    s.apply(&req(reconcile(all))).unwrap();
    let audited = s.audit.len();
    let reply = s.apply(&req(reconcile(vec![firing("heartbeat_missing", "w-0")]))).unwrap();
    let Reply::Reconciled { resolved, .. } = reply else { panic!("unexpected reply {reply:?}") };
    assert_eq!(resolved.len(), 699);
    assert_eq!(s.audit.len() - audited, 699, "one audit entry per resolved incident");
    let finished = s.incidents.values().filter(|i| i.state == IncidentState::Resolved).count();
    assert_eq!(finished, 500, "only the newest finished incidents are kept");
}

#[test]
fn acknowledged_incidents_stop_reminding() {
    let mut s = ControlState::default();
    let (opened, _) = round(&mut s, 0, vec![firing("heartbeat_missing", "w-1")]);
    s.ack_incident(opened[0], Some("looking".into()), "ops").unwrap();
    assert!(s.ack_incident(opened[0], None, "ops").is_err());
    round(&mut s, 50_000, vec![firing("heartbeat_missing", "w-1")]);
    assert_eq!(s.notifications.len(), 2);
}

#[test]
fn a_claimed_notification_cannot_be_claimed_twice_until_it_expires() {
    let mut s = ControlState::default();
    round(&mut s, 0, vec![firing("heartbeat_missing", "w-1")]);
    let id = *s.notifications.keys().next().unwrap();
    s.claim_notification(id, 1, 5_000, 100).unwrap();
    assert_eq!(s.claim_notification(id, 2, 9_000, 200).unwrap_err().kind, ErrorKind::Conflict);
    let n = s.claim_notification(id, 2, 9_000, 5_000).unwrap();
    assert_eq!((n.attempts, n.claimed_by), (2, Some(2)));
    s.record_delivery(id, Some("503".into()), Some(6_000), 5_100).unwrap();
    assert!(!s.notifications[&id].due(5_500));
    assert!(s.notifications[&id].due(6_000));
    s.record_delivery(id, None, None, 6_100).unwrap();
    assert_eq!(s.notifications[&id].state, DeliveryState::Delivered);
    assert!(s.record_delivery(id, None, None, 6_200).is_err(), "a delivery is recorded once");
}

#[test]
fn auto_protect_never_overrides_an_operator_pin() {
    let mut s = ControlState::default();
    s.set_provider_mode("gmail", "cautious", true, Some("tempfail".into()), 1).unwrap();
    assert_eq!(s.provider_modes()["gmail"], "cautious");
    s.set_provider_mode("gmail", "normal", false, None, 2).unwrap();
    assert_eq!(s.set_provider_mode("gmail", "drain", true, None, 3).unwrap_err().kind, ErrorKind::Conflict);
    s.set_provider_mode("gmail", "auto", false, None, 4).unwrap();
    assert_eq!(s.provider_modes()["gmail"], "cautious", "auto hands control back");
    assert!(s.set_provider_mode("gmail", "bogus", false, None, 5).is_err());
}

#[test]
fn autoscale_is_fenced_on_count_and_cooldown() {
    let mut s = ControlState::default();
    s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: 2 })).unwrap();
    let step =
        |from, to| Command::AutoscalePool { pool: "p".into(), from, to, reason: "load".into(), cooldown_ms: 60_000 };
    s.apply(&req(step(2, 3))).unwrap();
    assert_eq!(s.apply(&req(step(2, 3))).unwrap_err().kind, ErrorKind::Conflict, "stale view");
    assert_eq!(s.apply(&req(step(3, 4))).unwrap_err().kind, ErrorKind::Conflict, "cooldown");
    assert!(s.audit[0].reason.as_deref().unwrap().contains("load"));
}

#[test]
fn settings_updates_validate_everything_first() {
    let mut s = ControlState::default();
    let mut changes = std::collections::BTreeMap::new();
    changes.insert("ALERT_COOLDOWN_SECONDS".to_string(), Some("60".to_string()));
    changes.insert("ALERT_CHECK_INTERVAL_SECONDS".to_string(), Some("-1".to_string()));
    let e = s.apply(&req(Command::UpdateSettings { changes: changes.clone() })).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(s.settings.is_empty(), "nothing applied when one value is bad");
    changes.insert("ALERT_CHECK_INTERVAL_SECONDS".to_string(), None);
    s.apply(&req(Command::UpdateSettings { changes })).unwrap();
    assert_eq!(s.settings.get("ALERT_COOLDOWN_SECONDS").map(String::as_str), Some("60"));
}

fn beat_seq(id: &str, seq: Option<u64>, processed: f64) -> Heartbeat {
    let mut b = beat(id, Some("p"));
    b.metrics = MetricMap::from([("processed", Metric(processed))]);
    if let Some(seq) = seq {
        b.meta.insert(worker::SEQ_KEY, seq.to_string());
    }
    b
}

fn batch(beats: Vec<Heartbeat>) -> Request {
    req(Command::HeartbeatBatch { beats: beats.into() })
}

fn answers(r: Response) -> Vec<HeartbeatAnswer> {
    match r {
        Ok(Reply::Heartbeats(a)) => a.into_iter().map(|a| a.expect("heartbeat accepted")).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_older_heartbeat_applied_after_a_newer_one_changes_nothing() {
    let mut s = ControlState::default();
    let a = answers(s.apply(&batch(vec![beat_seq("w", Some(29), 29.0)])));
    assert!(!a[0].stale);
    let before = s.workers["w"].clone();
    // The delayed batch: older, then equal (a retry of the same heartbeat).
    for seq in [26, 29] {
        let mut late = beat_seq("w", Some(seq), seq as f64);
        late.pool = Some("elsewhere".into());
        late.status = "stopping".into();
        let a = answers(s.apply(&batch(vec![late])));
        assert!(a[0].stale, "seq {seq} after 29 is stale");
        assert_eq!(s.workers["w"], before, "seq {seq} after 29 left the record as it was");
        assert!(!s.pools.contains_key("elsewhere"), "a stale heartbeat creates no pool");
    }
    // The answer is the worker's current one, not a default.
    s.apply(&req(Command::WorkerControl { worker: "w".into(), action: WorkerAction::Pause, reason: None })).unwrap();
    s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: 7 })).unwrap();
    let a = answers(s.apply(&batch(vec![beat_seq("w", Some(3), 3.0)])));
    assert_eq!((a[0].desired_state, a[0].pool_desired_count, a[0].stale), (DesiredState::Paused, 7, true));
    // A newer one is recorded, within the same batch too.
    let a = answers(s.apply(&batch(vec![beat_seq("w", Some(31), 31.0), beat_seq("w", Some(30), 30.0)])));
    assert_eq!((a[0].stale, a[1].stale), (false, true));
    assert_eq!((s.workers["w"].seq(), metric(&s.workers["w"].metrics, "processed")), (Some(31), 31.0));
    assert_eq!(s.workers["w"].heartbeat_count, 2);
}

#[test]
fn heartbeats_without_seq_keep_last_applied_wins() {
    let mut s = ControlState::default();
    answers(s.apply(&batch(vec![beat_seq("w", None, 5.0)])));
    let a = answers(s.apply(&batch(vec![beat_seq("w", None, 3.0)])));
    assert!(!a[0].stale);
    assert_eq!(metric(&s.workers["w"].metrics, "processed"), 3.0);
    // A worker that starts sending seq is ordered from then on; one that
    // stops sending it is recorded as before.
    answers(s.apply(&batch(vec![beat_seq("w", Some(10), 10.0)])));
    assert!(answers(s.apply(&batch(vec![beat_seq("w", Some(9), 9.0)])))[0].stale);
    assert!(!answers(s.apply(&batch(vec![beat_seq("w", None, 1.0)])))[0].stale);
    assert_eq!((s.workers["w"].seq(), metric(&s.workers["w"].metrics, "processed")), (None, 1.0));
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let hex = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex = hex.trim();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Log entries and snapshots written by 3252ddf (before `seq` was read)
/// decode unchanged, re-encode to the same bytes, and are ordered by it.
#[test]
fn entries_and_snapshots_written_before_seq_decode_and_are_ordered() {
    let newer = fixture("3252ddf-heartbeat-batch-seq29.hex");
    let older = fixture("3252ddf-heartbeat-batch-seq26.hex");
    let state = fixture("3252ddf-state-after-seq29.hex");
    let newer_req: Request = crate::codec::decode(&newer).expect("3252ddf entry decodes");
    let older_req: Request = crate::codec::decode(&older).expect("3252ddf entry decodes");
    assert_eq!(crate::codec::encode(&newer_req).unwrap(), newer, "same bytes");
    let mut from_snapshot: ControlState = crate::codec::decode(&state).expect("3252ddf snapshot decodes");
    assert_eq!(crate::codec::encode(&from_snapshot).unwrap(), state, "same bytes");
    assert_eq!(from_snapshot.workers["w-seq"].seq(), Some(29));

    let mut replayed = ControlState::default();
    answers(replayed.apply(&newer_req));
    assert_eq!(replayed, from_snapshot, "replaying the entry gives the snapshot");
    for s in [&mut replayed, &mut from_snapshot] {
        let a = answers(s.apply(&older_req));
        assert!(a[0].stale);
        assert_eq!(metric(&s.workers["w-seq"].metrics, "processed"), 29.0, "seq 26 did not roll 29 back");
    }
}
