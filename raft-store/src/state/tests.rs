use super::*;
use crate::state::worker::MetricMap;

fn req(command: Command) -> Request {
    Request {
        at_ms: 1_000,
        node: 1,
        actor: "test".into(),
        command,
    }
}

fn beat(id: &str, pool: Option<&str>) -> Heartbeat {
    Heartbeat {
        worker_id: id.into(),
        host: "vps-1".into(),
        ip: "127.0.0.1".into(),
        pool: pool.map(str::to_string),
        version: "1.0".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: MetricMap::from([("processed".into(), Metric(1.0))]),
        stage_metrics: Default::default(),
        smtp_metrics: Default::default(),
        provider_metrics: Default::default(),
        meta: Default::default(),
    }
}

#[test]
fn scale_creates_then_updates_a_pool_and_audits() {
    let mut s = ControlState::default();
    s.apply(&req(Command::ScalePool {
        pool: "default".into(),
        desired_count: 3,
    }))
    .unwrap();
    let r = s
        .apply(&req(Command::ScalePool {
            pool: "default".into(),
            desired_count: 5,
        }))
        .unwrap();
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
        let e = s
            .apply(&req(Command::ScalePool {
                pool: bad.into(),
                desired_count: 1,
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
    }
    let e = s
        .apply(&req(Command::ScalePool {
            pool: "p".into(),
            desired_count: MAX_DESIRED_COUNT + 1,
        }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(s, ControlState::default());
}

#[test]
fn heartbeat_batch_answers_each_beat_and_refuses_bad_ones_alone() {
    let mut s = ControlState::default();
    s.apply(&req(Command::ScalePool {
        pool: "eu".into(),
        desired_count: 4,
    }))
    .unwrap();
    let beats = vec![
        beat("w-1", Some("eu")),
        beat("bad id", None),
        beat("w-2", None),
    ];
    let Reply::Heartbeats(answers) = s.apply(&req(Command::HeartbeatBatch { beats })).unwrap()
    else {
        panic!("expected heartbeat answers")
    };
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].as_ref().unwrap().pool_desired_count, 4);
    assert!(answers[1].is_err());
    assert_eq!(
        answers[2].as_ref().unwrap().desired_state,
        DesiredState::Running
    );
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.workers["w-2"].pool, FALLBACK_POOL);
    assert!(s.audit.len() == 1, "heartbeats are not audited");
}

#[test]
fn controls_reach_the_next_heartbeat_answer() {
    let mut s = ControlState::default();
    s.apply(&req(Command::HeartbeatBatch {
        beats: vec![beat("w-1", None)],
    }))
    .unwrap();
    let control = |action| Command::WorkerControl {
        worker: "w-1".into(),
        action,
        reason: Some("ops".into()),
    };
    s.apply(&req(control(WorkerAction::Pause))).unwrap();
    s.apply(&req(control(WorkerAction::Quarantine))).unwrap();
    let Reply::Heartbeats(a) = s
        .apply(&req(Command::HeartbeatBatch {
            beats: vec![beat("w-1", None)],
        }))
        .unwrap()
    else {
        panic!()
    };
    let a = a[0].as_ref().unwrap();
    assert_eq!(
        (a.desired_state, a.quarantined),
        (DesiredState::Paused, true)
    );
    let e = s
        .apply(&req(Command::WorkerControl {
            worker: "nope".into(),
            action: WorkerAction::Pause,
            reason: None,
        }))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(s.audit[0].action, "worker.quarantine");
}

#[test]
fn stale_removal_rechecks_the_heartbeat_time() {
    let mut s = ControlState::default();
    s.apply(&req(Command::HeartbeatBatch {
        beats: vec![beat("old", None), beat("fresh", None)],
    }))
    .unwrap();
    let mut later = req(Command::HeartbeatBatch {
        beats: vec![beat("fresh", None)],
    });
    later.at_ms = 5_000;
    s.apply(&later).unwrap();
    let cmd = Command::RemoveStaleWorkers {
        cutoff_ms: 2_000,
        ids: vec!["old".into(), "fresh".into()],
    };
    let Reply::Removed(removed) = s.apply(&req(cmd)).unwrap() else {
        panic!()
    };
    assert_eq!(removed, vec!["old".to_string()]);
    assert!(s.workers.contains_key("fresh"));
}

#[test]
fn pools_lifecycle_default_and_archive_rules() {
    let mut s = ControlState::default();
    let patch = PoolPatch {
        min_count: Some(1),
        max_count: Some(4),
        ..Default::default()
    };
    s.apply(&req(Command::CreatePool {
        name: "eu".into(),
        patch: patch.clone(),
    }))
    .unwrap();
    assert_eq!(
        s.apply(&req(Command::CreatePool {
            name: "eu".into(),
            patch
        }))
        .unwrap_err()
        .kind,
        ErrorKind::Conflict
    );
    let bad = PoolPatch {
        min_count: Some(9),
        ..Default::default()
    };
    assert_eq!(
        s.apply(&req(Command::UpdatePool {
            name: "eu".into(),
            patch: bad
        }))
        .unwrap_err()
        .kind,
        ErrorKind::Invalid
    );
    s.apply(&req(Command::SetDefaultPool { name: "eu".into() }))
        .unwrap();
    assert_eq!(s.default_pool(), "eu");
    assert_eq!(
        s.apply(&req(Command::ArchivePool {
            name: "eu".into(),
            archived: true
        }))
        .unwrap_err()
        .kind,
        ErrorKind::Conflict
    );
    s.apply(&req(Command::HeartbeatBatch {
        beats: vec![beat("w", None)],
    }))
    .unwrap();
    assert_eq!(s.workers["w"].pool, "eu");
}
