//! Apply cannot take the cluster down: random sequences of commands, valid
//! and not, never panic, and a refused command leaves the state exactly as
//! it was (byte for byte, as a snapshot would hold it).

use std::collections::BTreeMap;

use model::state::job::{Backoff, Claim, Finish, JobOp, JobOps, LeaseToken, NewJob, Renew};
use model::state::token::{NewToken, Scope};
use model::state::worker::{MetricMap, SmallMap};
use model::state::{Firing, Heartbeat, IncidentChanges, Limits, Metric, PoolPatch, Profile, Reconcile, WorkerAction};
use model::{Command, ControlState, Request};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["w1", "w2", "p1", "p2", "gmail", "default"]).prop_map(String::from),
        1 => prop::sample::select(vec!["", "bad/name", "x y", "ü"]).prop_map(String::from),
    ]
}

fn beat() -> impl Strategy<Value = Heartbeat> {
    (
        name(),
        prop::option::of(name()),
        prop::option::of(0u64..6),
        0u32..100,
        prop::sample::select(vec!["running", "stopped"]),
    )
        .prop_map(|(id, pool, seq, processed, state)| {
            let mut meta = SmallMap::new();
            if let Some(seq) = seq {
                meta.insert("seq", seq.to_string());
            }
            Heartbeat {
                worker_id: id.as_str().into(),
                host: "h".into(),
                ip: "127.0.0.1".into(),
                pool: pool.map(|p| p.as_str().into()),
                version: "1".into(),
                status: state.into(),
                process_state: state.into(),
                metrics: MetricMap::from([("processed", Metric(processed as f64)), ("errors", Metric(1.0))]),
                stage_metrics: Default::default(),
                smtp_metrics: Default::default(),
                provider_metrics: Default::default(),
                meta,
            }
        })
}

fn action() -> impl Strategy<Value = WorkerAction> {
    prop::sample::select(vec![
        WorkerAction::Pause,
        WorkerAction::Resume,
        WorkerAction::Drain,
        WorkerAction::Stop,
        WorkerAction::Quarantine,
        WorkerAction::Unquarantine,
    ])
}

fn patch() -> impl Strategy<Value = PoolPatch> {
    (prop::option::of(0u32..200_000), prop::option::of(0u32..20), prop::option::of(0u32..20), any::<bool>()).prop_map(
        |(desired_count, min_count, max_count, profiles)| PoolPatch {
            desired_count,
            min_count,
            max_count,
            profiles: profiles.then(|| BTreeMap::from([("gmail".to_string(), Profile::Warmup)])),
        },
    )
}

fn lease() -> impl Strategy<Value = LeaseToken> {
    (1u64..8, 1u64..3).prop_map(|(seq, nonce)| LeaseToken { seq, nonce })
}

fn logs() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop_oneof![4 => Just("line".to_string()), 1 => Just("x".repeat(5_000))], 0..3)
}

fn job_op() -> impl Strategy<Value = JobOp> {
    let queue = || prop::sample::select(vec!["q1", "q2", "bad q"]).prop_map(String::from);
    prop_oneof![
        4 => (queue(), -2i32..3, prop::option::of(name()), prop::option::of(0u64..4_000), prop::option::of(prop::sample::select(vec!["k1", "k2"])), 0u32..4, 0u64..3_000, prop_oneof![9 => Just(10usize), 1 => Just(70_000usize)])
            .prop_map(|(queue, priority, pool, run_after_ms, key, max_attempts, base_ms, size)| JobOp::Enqueue(NewJob {
                queue, kind: "k".into(), payload: "p".repeat(size), priority, pool, run_after_ms,
                idempotency_key: key.map(String::from), max_attempts, backoff: Backoff { base_ms, max_ms: 2_000 },
            })),
        3 => (name(), prop::collection::vec(queue(), 0..3), 0u32..4, 0u64..3_000, 1u64..3)
            .prop_map(|(worker, queues, max_jobs, lease_ms, nonce)| JobOp::Claim(Claim { worker, queues, max_jobs, lease_ms, nonce })),
        2 => (1u64..8, name(), lease(), 0u64..3_000, prop::option::of(Just("50%".to_string())), logs())
            .prop_map(|(job_id, worker, lease, lease_ms, progress, logs)| JobOp::Renew(Renew { job_id, worker, lease, lease_ms, progress, logs })),
        2 => (1u64..8, name(), lease(), any::<bool>(), logs()).prop_map(|(job_id, worker, lease, retryable, logs)| {
            let f = Finish { job_id, worker, lease, result: Some("{}".into()), error: Some("e".into()), retryable, logs };
            if retryable { JobOp::Fail(f) } else { JobOp::Complete(f) }
        }),
        1 => (1u64..8, prop::option::of(name())).prop_map(|(job_id, reason)| JobOp::Cancel { job_id, reason }),
        1 => (1u64..8).prop_map(|job_id| JobOp::Requeue { job_id }),
        2 => (1u64..8, lease()).prop_map(|(job_id, lease)| JobOp::Reap { job_id, lease }),
        1 => queue().prop_map(|queue| JobOp::ClearQueue { queue }),
        1 => (queue(), any::<bool>()).prop_map(|(queue, paused)| JobOp::SetQueuePaused { queue, paused }),
        1 => (queue(), prop::option::of(0u32..3)).prop_map(|(queue, max_queued)| JobOp::SetQueueCap { queue, max_queued }),
        1 => (0u64..5_000, 0u32..4).prop_map(|(finished_before_ms, keep_finished)| JobOp::Compact { finished_before_ms, keep_finished }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => prop::collection::vec(beat(), 1..4).prop_map(|b| Command::HeartbeatBatch { beats: b.into() }),
        2 => (name(), action(), prop::option::of(name())).prop_map(|(worker, action, reason)| Command::WorkerControl { worker, action, reason }),
        1 => (0u64..3_000, prop::collection::vec(name(), 0..3)).prop_map(|(cutoff_ms, ids)| Command::RemoveStaleWorkers { cutoff_ms, ids }),
        2 => (name(), 0u32..200_000).prop_map(|(pool, desired_count)| Command::ScalePool { pool, desired_count }),
        1 => (name(), patch()).prop_map(|(name, patch)| Command::CreatePool { name, patch }),
        1 => (name(), patch()).prop_map(|(name, patch)| Command::UpdatePool { name, patch }),
        1 => (name(), any::<bool>()).prop_map(|(name, archived)| Command::ArchivePool { name, archived }),
        1 => name().prop_map(|name| Command::SetDefaultPool { name }),
        2 => (prop::collection::vec((prop::sample::select(vec!["heartbeat_missing", "error_rate"]), name()), 0..4), any::<bool>())
            .prop_map(|(firing, email)| Command::ReconcileIncidents(Reconcile {
                firing: firing.into_iter().map(|(kind, subject)| Firing { kind: kind.into(), subject, severity: "warning".into(), detail: "d".into() }).collect(),
                kinds_evaluated: vec!["heartbeat_missing".into(), "error_rate".into()],
                channels: if email { vec!["email".into()] } else { vec![] },
                cooldown_ms: 1_000,
                sample: None,
            })),
        1 => (0u64..5, prop::option::of(name())).prop_map(|(id, note)| Command::AckIncident { id, note }),
        1 => (0u64..5, 0u64..5_000).prop_map(|(id, until_ms)| Command::ClaimNotification { id, until_ms }),
        1 => (0u64..5, prop::option::of(name()), prop::option::of(0u64..5_000)).prop_map(|(id, error, retry_at_ms)| Command::RecordDelivery { id, error, retry_at_ms }),
        1 => (name(), prop::sample::select(vec!["normal", "cautious", "drain", "auto", "turbo"]), any::<bool>(), prop::option::of(name()))
            .prop_map(|(provider, mode, auto, reason)| Command::SetProviderMode { provider, mode: mode.into(), auto, reason }),
        1 => (name(), 0u32..10, 0u32..10, 0u64..2_000).prop_map(|(pool, from, to, cooldown_ms)| Command::AutoscalePool { pool, from, to, reason: "r".into(), cooldown_ms }),
        1 => (prop::sample::select(vec!["ALERT_COOLDOWN_SECONDS", "AUTOSCALE_ENABLED", "NOT_A_SETTING"]), prop::option::of(prop::sample::select(vec!["5", "true", "-1", "soon"])))
            .prop_map(|(k, v)| Command::UpdateSettings { changes: BTreeMap::from([(k.to_string(), v.map(String::from))]) }),
        // format 2
        1 => (0u32..4).prop_map(|version| Command::SetFormatVersion { version }),
        3 => (prop::collection::vec(beat(), 1..4), 0u64..4, 0u64..4).prop_map(|(b, max_workers, max_pools)| {
            Command::HeartbeatBatchLimited { beats: b.into(), limits: Limits { max_workers, max_pools } }
        }),
        1 => (name(), prop::option::of(name())).prop_map(|(id, reason)| Command::DeleteWorker { id, reason }),
        1 => prop::collection::vec(name(), 0..3).prop_map(|names| Command::RemoveEmptyPools { names }),
        // format 3
        2 => (prop::collection::vec((prop::sample::select(vec!["heartbeat_missing", "error_rate"]), name(), prop::sample::select(vec!["warning", "critical"])), 0..4),
              prop::collection::vec(0u64..6, 0..3), prop::collection::vec(0u64..6, 0..3), any::<bool>())
            .prop_map(|(open, resolve, remind, email)| Command::IncidentChanges(IncidentChanges {
                open: open.into_iter().map(|(kind, subject, severity)| Firing { kind: kind.into(), subject, severity: severity.into(), detail: "d".into() }).collect(),
                resolve,
                remind,
                channels: if email { vec!["email".into()] } else { vec![] },
                cooldown_ms: 1_000,
                sample: None,
            })),
        // format 4
        2 => (prop::sample::select(vec!["ops", "fleet", "bad name"]), prop::sample::select(Scope::ALL.to_vec()), 0u8..3, prop::option::of(prop::sample::select(vec!["eu-", "us-"])), prop::option::of(name()))
            .prop_map(|(name, scope, seed, worker_prefix, pool)| Command::CreateToken(NewToken { name: name.into(), scope, sha256: [seed; 32], worker_prefix: worker_prefix.map(String::from), pool })),
        1 => prop::sample::select(vec!["ops", "fleet", "nope"]).prop_map(|name| Command::RevokeToken { name: name.into() }),
        // format 5: mostly one operation per command, so that each refusal is checked alone
        8 => job_op().prop_map(|op| Command::Jobs(JobOps { ops: vec![op] })),
        2 => prop::collection::vec(job_op(), 0..5).prop_map(|ops| Command::Jobs(JobOps { ops })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn apply_never_panics_and_a_refusal_changes_nothing(format in 0u32..6, commands in prop::collection::vec(command(), 1..40)) {
        let mut state = ControlState { format_version: format, ..Default::default() };
        for (i, command) in commands.into_iter().enumerate() {
            let req = Request { at_ms: 1_000 + i as u64 * 100, node: 1, actor: "prop".into(), command };
            let workers_before = state.workers.len() as u64;
            // The snapshot encoding: every replicated field, the format-4
            // section included.
            let snapshot = |s: &ControlState| {
                let mut bytes = Vec::new();
                model::state::encode_snapshot(s, &mut bytes).unwrap();
                bytes
            };
            let before = snapshot(&state);
            let result = state.apply(&req);
            if let Err(e) = &result {
                prop_assert_eq!(&snapshot(&state), &before, "refused {} ({}) changed the state", req.command.name(), e);
            }
            // A job operation refused alone changes nothing either.
            if let (Command::Jobs(ops), Ok(model::Reply::Jobs(answers))) = (&req.command, &result) {
                prop_assert_eq!(answers.len(), ops.ops.len());
                if let [Err(e)] = answers.as_slice() {
                    prop_assert_eq!(&snapshot(&state), &before, "refused {:?} ({}) changed the state", ops.ops[0], e);
                }
            }
            prop_assert!(state.jobs.indices_agree(), "job indices after {}", req.command.name());
            // What a snapshot holds decodes to the same state, job indices included.
            if state.format() >= 5 {
                let back = model::state::decode_snapshot(&snapshot(&state)).unwrap();
                prop_assert_eq!(&back.jobs, &state.jobs);
                prop_assert_eq!(back.jobs.queue_numbers(), state.jobs.queue_numbers());
                prop_assert_eq!(back.jobs.expired(u64::MAX, 100), state.jobs.expired(u64::MAX, 100));
            }
            // The derived pool index always matches the workers.
            let mut reindexed = state.clone();
            reindexed.reindex();
            prop_assert_eq!(&reindexed.by_pool, &state.by_pool, "index after {}", req.command.name());
            prop_assert_eq!(&reindexed.tokens, &state.tokens, "token index after {}", req.command.name());
            // A heartbeat batch refused per beat (a cap) changes nothing for that beat.
            if let (Command::HeartbeatBatchLimited { beats, limits }, Ok(model::Reply::Heartbeats(answers))) = (&req.command, &result) {
                prop_assert!(state.workers.len() as u64 <= limits.max_workers.max(workers_before));
                prop_assert_eq!(answers.len(), beats.len());
            }
        }
    }
}
