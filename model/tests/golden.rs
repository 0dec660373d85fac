//! Golden bytes of the replicated format: one sample of every `Command`
//! variant (as a log entry's `Request`) and a snapshot of a populated state.
//! The bytes live in `tests/golden/*.hex`, committed: bytes written by one
//! release must decode in every later one, so a change that breaks this test
//! breaks nodes replaying old logs and snapshots. Never regenerate a file that
//! exists; a new variant gets a new file (`UPDATE_GOLDEN=1` writes missing
//! ones, and the test still fails until they are committed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::state::farm::{
    BlobKind, FarmConfig, FarmOp, HintSpec, LogChunk, LogRetention, Recipe, Strategy, TriggerKind, TriggerOutcome,
    TriggerResult, TriggerTarget,
};
use model::state::job::{Backoff, Claim, Finish, JobOp, JobOps, LeaseToken, NewJob, Renew};
use model::state::token::{NewToken, Scope};
use model::state::worker::{MetricMap, NestedMetrics, SmallMap};
use model::state::{
    Firing, FleetSample, Heartbeat, IncidentChanges, Limits, Metric, PoolPatch, Profile, Reconcile, WorkerAction,
};
use model::{codec, Command, ControlState, Request};

fn beat(id: &str, seq: u64) -> Heartbeat {
    Heartbeat {
        worker_id: id.into(),
        host: "vps-3".into(),
        ip: "203.0.113.7".into(),
        pool: Some("edge".into()),
        version: "1.4.2".into(),
        status: "running".into(),
        process_state: "running".into(),
        metrics: MetricMap::from([("processed", Metric(1200.0)), ("errors", Metric(14.0))]),
        stage_metrics: NestedMetrics::from([("dns", MetricMap::from([("ok", Metric(1180.0))]))]),
        smtp_metrics: MetricMap::from([("2xx", Metric(900.0)), ("4xx", Metric(200.5))]),
        provider_metrics: NestedMetrics::from([("gmail", MetricMap::from([("accepted", Metric(500.0))]))]),
        meta: SmallMap::from([("region", "\"eu\"".to_string()), ("seq", seq.to_string())]),
    }
}

/// The file name for each variant; a new variant does not compile here
/// until it has a sample and a golden file.
fn variant(c: &Command) -> &'static str {
    match c {
        Command::HeartbeatBatch { .. } => "heartbeat_batch",
        Command::WorkerControl { .. } => "worker_control",
        Command::RemoveStaleWorkers { .. } => "remove_stale_workers",
        Command::ScalePool { .. } => "scale_pool",
        Command::CreatePool { .. } => "create_pool",
        Command::UpdatePool { .. } => "update_pool",
        Command::ArchivePool { .. } => "archive_pool",
        Command::SetDefaultPool { .. } => "set_default_pool",
        Command::ReconcileIncidents(_) => "reconcile_incidents",
        Command::AckIncident { .. } => "ack_incident",
        Command::ClaimNotification { .. } => "claim_notification",
        Command::RecordDelivery { .. } => "record_delivery",
        Command::SetProviderMode { .. } => "set_provider_mode",
        Command::AutoscalePool { .. } => "autoscale_pool",
        Command::UpdateSettings { .. } => "update_settings",
        Command::SetFormatVersion { .. } => "set_format_version",
        Command::HeartbeatBatchLimited { .. } => "heartbeat_batch_limited",
        Command::DeleteWorker { .. } => "delete_worker",
        Command::RemoveEmptyPools { .. } => "remove_empty_pools",
        Command::IncidentChanges(_) => "incident_changes",
        Command::CreateToken(_) => "create_token",
        Command::RevokeToken { .. } => "revoke_token",
        // One sample per job operation, each alone in its command.
        Command::Jobs(ops) => match ops.ops.as_slice() {
            [JobOp::Enqueue(_)] => "jobs-enqueue",
            [JobOp::Claim(_)] => "jobs-claim",
            [JobOp::Renew(_)] => "jobs-renew",
            [JobOp::Complete(_)] => "jobs-complete",
            [JobOp::Fail(_)] => "jobs-fail",
            [JobOp::Cancel { .. }] => "jobs-cancel",
            [JobOp::Requeue { .. }] => "jobs-requeue",
            [JobOp::Reap { .. }] => "jobs-reap",
            [JobOp::ClearQueue { .. }] => "jobs-clear_queue",
            [JobOp::SetQueuePaused { .. }] => "jobs-set_queue_paused",
            [JobOp::SetQueueCap { .. }] => "jobs-set_queue_cap",
            [JobOp::Compact { .. }] => "jobs-compact",
            _ => panic!("a job sample holds one operation"),
        },
        Command::Farm(op) => match op {
            FarmOp::CreateHint(_) => "farm-create_hint",
            FarmOp::UpdateHint { .. } => "farm-update_hint",
            FarmOp::DeleteHint { .. } => "farm-delete_hint",
            FarmOp::PutBlob { .. } => "farm-put_blob",
            FarmOp::AppendLog(_) => "farm-append_log",
            FarmOp::CacheReport { .. } => "farm-cache_report",
            FarmOp::SetConfig(_) => "farm-set_config",
            FarmOp::RequestTrigger { .. } => "farm-request_trigger",
            FarmOp::ClaimTrigger { .. } => "farm-claim_trigger",
            FarmOp::RecordTrigger { .. } => "farm-record_trigger",
        },
    }
}

fn hint(pattern: &str) -> HintSpec {
    HintSpec {
        pattern: pattern.into(),
        recipe: Recipe {
            env: BTreeMap::from([("CFLAGS".to_string(), "-O1".to_string())]),
            extra_requirements: vec!["cython<3".into()],
            note: "old numpy needs cython 0.29".into(),
        },
    }
}

/// The format-6 samples: hints 1 and 2 are created, 1 updated, 2 deleted;
/// a plan, a log chunk, a cache report and the config.
fn farm_samples() -> Vec<Command> {
    vec![
        Command::Farm(FarmOp::CreateHint(hint("Cython\\.h: No such file"))),
        Command::Farm(FarmOp::UpdateHint { id: 1, spec: hint("(?i)cython\\.h") }),
        Command::Farm(FarmOp::DeleteHint { id: 2 }),
        Command::Farm(FarmOp::PutBlob { kind: BlobKind::Plan, body: r#"{"nodes":["numpy"],"edges":[]}"#.into() }),
        Command::Farm(FarmOp::AppendLog(LogChunk {
            package: "numpy".into(),
            version: "1.26.4".into(),
            lines: vec!["building wheel".into(), "fatal error: Cython.h: No such file".into()],
            keep: LogRetention { max_age_ms: 14 * 86_400_000, max_bytes: 256 << 20 },
        })),
        Command::Farm(FarmOp::CacheReport { hits: 40, misses: 2 }),
        Command::Farm(FarmOp::SetConfig(FarmConfig {
            strategy: Strategy::Upgrade,
            python: "3.12".into(),
            platform: "manylinux_2_28_x86_64".into(),
            index_url: "https://pypi.org/simple".into(),
            env: BTreeMap::from([("PIP_NO_CACHE_DIR".to_string(), "1".to_string())]),
        })),
    ]
}

/// The format-7 samples: trigger 1 is requested, claimed and recorded as
/// a failure to be retried.
fn trigger_samples() -> Vec<Command> {
    vec![
        Command::Farm(FarmOp::RequestTrigger { kind: TriggerKind::Trigger, key: "ci-run-7".into() }),
        Command::Farm(FarmOp::ClaimTrigger { id: 1, until_ms: 1_700_000_900_000 }),
        Command::Farm(FarmOp::RecordTrigger {
            id: 1,
            attempt: 1,
            outcome: TriggerOutcome {
                result: TriggerResult::Failed,
                target: Some(TriggerTarget::Webhook),
                code: Some(503),
                duration_ms: 41,
                detail: "webhook answered 503 Service Unavailable".into(),
                retry_at_ms: Some(1_700_000_950_000),
            },
        }),
    ]
}

const NONCE: u64 = 0x5eed_0000_0000_0017;

fn job(queue: &str, key: Option<&str>) -> NewJob {
    NewJob {
        queue: queue.into(),
        kind: "send_email".into(),
        payload: r#"{"to":"ops@example.com","template":"welcome"}"#.into(),
        priority: 2,
        pool: None,
        run_after_ms: None,
        idempotency_key: key.map(Into::into),
        max_attempts: 3,
        backoff: Backoff { base_ms: 2_000, max_ms: 120_000 },
    }
}

fn jobs(op: JobOp) -> Command {
    Command::Jobs(JobOps { ops: vec![op] })
}

/// The format-5 samples: job 1 is enqueued, claimed by w-19, renewed and
/// completed; the rest are refused or find nothing, as they come.
fn job_samples() -> Vec<Command> {
    let lease = LeaseToken { seq: 1, nonce: NONCE };
    vec![
        jobs(JobOp::Enqueue(job("mail", Some("order-1")))),
        jobs(JobOp::Claim(Claim {
            worker: "w-19".into(),
            queues: vec!["mail".into(), "bulk".into()],
            max_jobs: 4,
            lease_ms: 60_000,
            nonce: NONCE,
        })),
        jobs(JobOp::Renew(Renew {
            job_id: 1,
            worker: "w-19".into(),
            lease,
            lease_ms: 60_000,
            progress: Some("40%".into()),
            logs: vec!["connecting".into(), "sent 1/2".into()],
        })),
        jobs(JobOp::Complete(Finish {
            job_id: 1,
            worker: "w-19".into(),
            lease,
            result: Some(r#"{"message_id":"m-1"}"#.into()),
            error: None,
            retryable: false,
            logs: vec!["sent 2/2".into()],
        })),
        jobs(JobOp::Fail(Finish {
            job_id: 1,
            worker: "w-19".into(),
            lease,
            result: None,
            error: Some("smtp 451".into()),
            retryable: true,
            logs: vec![],
        })),
        jobs(JobOp::Cancel { job_id: 1, reason: Some("duplicate".into()) }),
        jobs(JobOp::Requeue { job_id: 1 }),
        jobs(JobOp::Reap { job_id: 1, lease }),
        jobs(JobOp::ClearQueue { queue: "mail".into() }),
        jobs(JobOp::SetQueuePaused { queue: "bulk".into(), paused: true }),
        jobs(JobOp::SetQueueCap { queue: "mail".into(), max_queued: Some(5_000) }),
        jobs(JobOp::Compact { finished_before_ms: 1_699_000_000_000, keep_finished: 100_000 }),
    ]
}

fn samples() -> Vec<Command> {
    let patch = PoolPatch {
        desired_count: Some(4),
        min_count: Some(1),
        max_count: Some(9),
        profiles: Some(BTreeMap::from([("gmail".to_string(), Profile::LowHit)])),
    };
    vec![
        Command::HeartbeatBatch { beats: vec![beat("w-17", 29), beat("w-18", 3)].into() },
        Command::WorkerControl {
            worker: "w-17".into(),
            action: WorkerAction::Quarantine,
            reason: Some("flaky".into()),
        },
        Command::RemoveStaleWorkers { cutoff_ms: 1_700_000_000_000, ids: vec!["w-old".into()] },
        Command::ScalePool { pool: "edge".into(), desired_count: 6 },
        Command::CreatePool { name: "eu-west".into(), patch: patch.clone() },
        Command::UpdatePool {
            name: "eu-west".into(),
            patch: PoolPatch { desired_count: Some(2), ..PoolPatch::default() },
        },
        Command::ArchivePool { name: "eu-west".into(), archived: true },
        Command::SetDefaultPool { name: "edge".into() },
        Command::ReconcileIncidents(Reconcile {
            firing: vec![Firing {
                kind: "heartbeat_missing".into(),
                subject: "w-17".into(),
                severity: "critical".into(),
                detail: "no heartbeat for 180 s".into(),
            }],
            kinds_evaluated: vec!["heartbeat_missing".into(), "error_rate".into()],
            channels: vec!["slack".into(), "email".into()],
            cooldown_ms: 300_000,
            sample: Some(FleetSample { at_ms: 1_700_000_000_500, total: 40, healthy: 39 }),
        }),
        Command::AckIncident { id: 1, note: Some("on it".into()) },
        Command::ClaimNotification { id: 1, until_ms: 1_700_000_030_000 },
        Command::RecordDelivery { id: 1, error: Some("smtp 451".into()), retry_at_ms: Some(1_700_000_060_000) },
        Command::SetProviderMode {
            provider: "gmail".into(),
            mode: "cautious".into(),
            auto: true,
            reason: Some("tempfail 30%".into()),
        },
        Command::AutoscalePool {
            pool: "edge".into(),
            from: 6,
            to: 7,
            reason: "in flight 90%".into(),
            cooldown_ms: 120_000,
        },
        Command::UpdateSettings {
            changes: BTreeMap::from([
                ("ALERT_COOLDOWN_SECONDS".to_string(), Some("600".to_string())),
                ("AUTOSCALE_ENABLED".to_string(), None),
            ]),
        },
        // ---- format 2 ----
        Command::SetFormatVersion { version: 2 },
        Command::HeartbeatBatchLimited {
            beats: vec![beat("w-19", 4), beat("w-17", 30)].into(),
            limits: Limits { max_workers: 250_000, max_pools: 1_000 },
        },
        Command::DeleteWorker { id: "w-18".into(), reason: Some("decommissioned".into()) },
        Command::RemoveEmptyPools { names: vec!["edge".into(), "gone".into()] },
        // ---- format 3 ----
        Command::IncidentChanges(IncidentChanges {
            open: vec![Firing {
                kind: "node_down".into(),
                subject: "node-2".into(),
                severity: "critical".into(),
                detail: "node 2 does not answer".into(),
            }],
            resolve: vec![1],
            remind: vec![3, 4],
            channels: vec!["email".into()],
            cooldown_ms: 600_000,
            sample: Some(FleetSample { at_ms: 1_700_000_090_000, total: 41, healthy: 38 }),
        }),
        // ---- format 4 ----
        Command::CreateToken(NewToken {
            name: "fleet-eu".into(),
            scope: Scope::Worker,
            sha256: std::array::from_fn(|i| i as u8 * 7),
            worker_prefix: Some("eu-".into()),
            pool: Some("edge".into()),
        }),
        Command::RevokeToken { name: "old-ci".into() },
    ]
    .into_iter()
    // ---- format 5 ----
    .chain(job_samples())
    // ---- format 6 ----
    .chain(farm_samples())
    // ---- format 7 ----
    .chain(trigger_samples())
    .collect()
}

fn request(i: usize, command: Command) -> Request {
    Request { at_ms: 1_700_000_000_000 + i as u64 * 1_000, node: 1 + i as u64 % 3, actor: "golden".into(), command }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    let t = text.trim();
    (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).expect("hex")).collect()
}

/// Compare `bytes` with the committed file `name`; a missing file is
/// written when `UPDATE_GOLDEN=1` and reported as a failure either way.
fn check(name: &str, bytes: &[u8], missing: &mut Vec<String>) -> Option<Vec<u8>> {
    let path = golden_dir().join(format!("{name}.hex"));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let want = from_hex(&text);
            assert_eq!(
                to_hex(bytes),
                to_hex(&want),
                "{name}: the encoding changed; old logs and snapshots would not decode"
            );
            Some(want)
        }
        Err(_) => {
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&path, to_hex(bytes) + "\n").unwrap();
            }
            missing.push(name.to_string());
            None
        }
    }
}

#[test]
fn every_command_variant_keeps_its_bytes() {
    let mut missing = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, command) in samples().into_iter().enumerate() {
        let name = variant(&command);
        assert!(seen.insert(name), "two samples of {name}");
        let req = request(i, command);
        let bytes = codec::encode(&req).unwrap();
        if let Some(old) = check(&format!("command-{name}"), &bytes, &mut missing) {
            assert_eq!(codec::decode::<Request>(&old).unwrap(), req, "{name}: committed bytes decode to the sample");
        }
    }
    assert!(missing.is_empty(), "golden files missing (commit them): {missing:?}");
}

/// A state with every kind of entity, from the samples of one format
/// (format-1 samples alone, or every sample from a format-2 state).
fn populated(format: u32) -> ControlState {
    let mut state = ControlState { format_version: if format >= 2 { format } else { 0 }, ..Default::default() };
    for (i, command) in samples().into_iter().enumerate() {
        if command.min_format() > format || (format < 2 && matches!(command, Command::SetFormatVersion { .. })) {
            continue;
        }
        // Some samples are refused in this order (a refusal changes nothing);
        // what matters is a state with every kind of entity in it.
        let _ = state.apply(&request(i, command));
    }
    if format >= 5 {
        // Jobs in every state but succeeded (job 1 is): queued (one delayed,
        // one for a pool), running, failed waiting, dead and cancelled.
        let mut after = job("mail", None);
        after.run_after_ms = Some(1_700_009_000_000);
        let mut pooled = job("bulk", Some("batch-7"));
        pooled.pool = Some("edge".into());
        let ops = vec![
            JobOp::Enqueue(job("mail", Some("order-2"))),
            JobOp::Enqueue(job("mail", None)),
            JobOp::Enqueue(job("mail", None)),
            JobOp::Enqueue(job("mail", None)),
            JobOp::Enqueue(after),
            JobOp::Enqueue(pooled),
            JobOp::Claim(Claim {
                worker: "w-19".into(),
                queues: vec!["mail".into()],
                max_jobs: 3,
                lease_ms: 30_000,
                nonce: NONCE + 1,
            }),
            JobOp::Cancel { job_id: 5, reason: None },
        ];
        state.apply(&request(100, Command::Jobs(JobOps { ops }))).unwrap();
        let fail = |job_id, seq, retryable| {
            JobOp::Fail(Finish {
                job_id,
                worker: "w-19".into(),
                lease: LeaseToken { seq, nonce: NONCE + 1 },
                result: None,
                error: Some("timeout".into()),
                retryable,
                logs: vec!["giving up".into()],
            })
        };
        state.apply(&request(101, Command::Jobs(JobOps { ops: vec![fail(2, 2, true), fail(3, 3, false)] }))).unwrap();
        let states: std::collections::BTreeSet<_> = state.jobs.by_id.values().map(|j| j.state).collect();
        assert_eq!(states.len(), 6, "every job state: {states:?}");
    }
    if format >= 6 {
        // A build that fails with a log matching hint 1, then another queued.
        let build = |package: &str| NewJob {
            queue: "build".into(),
            kind: "build".into(),
            payload: format!(r#"{{"package":"{package}","version":"1.26.4","run_id":"run-7"}}"#),
            ..job("build", None)
        };
        let ops = vec![
            JobOp::Enqueue(build("numpy")),
            JobOp::Claim(Claim {
                worker: "bw-1".into(),
                queues: vec!["build".into()],
                max_jobs: 1,
                lease_ms: 60_000,
                nonce: NONCE + 2,
            }),
        ];
        let claimed = state.apply(&request(102, Command::Jobs(JobOps { ops }))).unwrap();
        let lease = match claimed {
            model::Reply::Jobs(r) => match &r[1] {
                Ok(model::state::JobReply::Claimed { jobs }) => jobs[0].lease.as_ref().unwrap().token,
                other => panic!("claim: {other:?}"),
            },
            other => panic!("{other:?}"),
        };
        let fail = JobOp::Fail(Finish {
            job_id: state.jobs.job_seq,
            worker: "bw-1".into(),
            lease,
            result: None,
            error: Some("exit 1".into()),
            retryable: true,
            logs: vec!["fatal error: Cython.h: No such file".into()],
        });
        let ops = vec![fail, JobOp::Enqueue(build("scipy"))];
        state.apply(&request(103, Command::Jobs(JobOps { ops }))).unwrap();
        assert_eq!(state.farm.events.len(), 4, "queued, started, retried, queued");
        assert_eq!(state.farm.events[2].hints, vec![1], "the failure matched hint 1");
    }
    if format >= 7 {
        // Trigger 1 waits for its retry (the samples); a smoke run is pending.
        let smoke = FarmOp::RequestTrigger { kind: TriggerKind::Smoke, key: "smoke-1".into() };
        state.apply(&request(104, Command::Farm(smoke))).unwrap();
        assert_eq!(state.farm.triggers.kept.len(), 2);
        assert_eq!(state.farm.triggers.kept[0].attempts, 1, "the samples claimed trigger 1");
    }
    assert!(!state.workers.is_empty() && !state.pools.is_empty() && !state.incidents.is_empty());
    assert!(!state.providers.is_empty() && !state.settings.is_empty() && !state.audit.is_empty());
    state
}

#[test]
fn a_populated_snapshot_keeps_its_bytes() {
    let mut missing = Vec::new();
    for (format, name) in [
        (1, "snapshot-populated"),
        (2, "snapshot-populated-format2"),
        (3, "snapshot-populated-format3"),
        (4, "snapshot-populated-format4"),
        (5, "snapshot-populated-format5"),
        (6, "snapshot-populated-format6"),
        (7, "snapshot-populated-format7"),
    ] {
        let state = populated(format);
        assert_eq!(state.format(), format);
        if format >= 2 {
            assert!(!state.history.is_empty(), "format 2 records changes");
        }
        assert_eq!(state.tokens.by_name.is_empty(), format < 4, "tokens from format 4 on");
        assert_eq!(state.jobs.by_id.is_empty(), format < 5, "jobs from format 5 on");
        assert_eq!(state.farm.hints.is_empty(), format < 6, "the farm from format 6 on");
        assert_eq!(state.farm.triggers.kept.is_empty(), format < 7, "triggers from format 7 on");
        let mut bytes = Vec::new();
        model::state::encode_snapshot(&state, &mut bytes).unwrap();
        if let Some(old) = check(name, &bytes, &mut missing) {
            assert_eq!(model::state::decode_snapshot(&old).unwrap(), state, "{name} decodes to the same state");
        }
    }
    assert!(missing.is_empty(), "golden files missing (commit them): {missing:?}");
}
