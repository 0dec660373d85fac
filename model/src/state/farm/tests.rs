use super::*;
use crate::command::{Command, ErrorKind, Reply, Request};
use crate::state::job::{Backoff, Claim, Finish, JobOp, JobOps, JobReply, LeaseToken, NewJob};
use crate::state::ControlState;

fn at6() -> ControlState {
    ControlState { format_version: 6, ..ControlState::default() }
}

fn farm(s: &mut ControlState, at_ms: u64, op: FarmOp) -> Result<FarmReply, crate::CommandError> {
    let req = Request { at_ms, node: 1, actor: "test".into(), command: Command::Farm(op) };
    s.apply(&req).map(|r| match r {
        Reply::Farm(f) => f,
        other => panic!("unexpected reply {other:?}"),
    })
}

fn job(s: &mut ControlState, at_ms: u64, op: JobOp) -> JobReply {
    let req = Request { at_ms, node: 1, actor: "test".into(), command: Command::Jobs(JobOps { ops: vec![op] }) };
    match s.apply(&req).expect("accepted") {
        Reply::Jobs(mut r) => r.pop().expect("one").expect("op applied"),
        other => panic!("unexpected reply {other:?}"),
    }
}

fn build(package: &str, version: &str) -> NewJob {
    NewJob {
        queue: BUILD_QUEUE.into(),
        kind: BUILD_KIND.into(),
        payload: format!(r#"{{"package":"{package}","version":"{version}","run_id":"r-1"}}"#),
        priority: 0,
        pool: None,
        run_after_ms: None,
        idempotency_key: None,
        max_attempts: 2,
        backoff: Backoff { base_ms: 1_000, max_ms: 1_000 },
    }
}

fn claim(s: &mut ControlState, at_ms: u64) -> LeaseToken {
    let op = JobOp::Claim(Claim {
        worker: "bw-1".into(),
        queues: vec![BUILD_QUEUE.into()],
        max_jobs: 1,
        lease_ms: 60_000,
        nonce: 7,
    });
    match job(s, at_ms, op) {
        JobReply::Claimed { jobs } => jobs[0].lease.as_ref().expect("leased").token,
        other => panic!("claim: {other:?}"),
    }
}

fn fail(lease: LeaseToken, retryable: bool, logs: &[&str]) -> JobOp {
    JobOp::Fail(Finish {
        job_id: 1,
        worker: "bw-1".into(),
        lease,
        result: None,
        error: Some("build failed".into()),
        retryable,
        logs: logs.iter().map(|l| l.to_string()).collect(),
    })
}

fn hint(pattern: &str) -> HintSpec {
    HintSpec {
        pattern: pattern.into(),
        recipe: Recipe {
            env: BTreeMap::from([("CFLAGS".to_string(), "-O1".to_string())]),
            extra_requirements: vec!["cython<3".into()],
            note: "pin cython".into(),
        },
    }
}

fn kinds(s: &ControlState) -> Vec<(EventKind, JobState)> {
    s.farm.events.iter().map(|e| (e.kind, e.state)).collect()
}

#[test]
fn hints_compile_at_create_and_a_bad_one_changes_nothing() {
    let mut s = at6();
    for (bad, kind) in
        [("(unclosed", ErrorKind::Invalid), ("", ErrorKind::Invalid), ("\\W{2,4}\\W{1,}\\W{2,4}", ErrorKind::Conflict)]
    {
        let before = s.clone();
        let e = farm(&mut s, 1, FarmOp::CreateHint(hint(bad))).unwrap_err();
        assert_eq!(e.kind, kind, "{bad:?}: {e:?}");
        assert_eq!(s, before);
    }
    let long = "a".repeat(MAX_PATTERN_BYTES + 1);
    assert_eq!(farm(&mut s, 1, FarmOp::CreateHint(hint(&long))).unwrap_err().kind, ErrorKind::Invalid);
    let mut bad_env = hint("x");
    bad_env.recipe.env.insert("1BAD".into(), "v".into());
    assert_eq!(farm(&mut s, 1, FarmOp::CreateHint(bad_env)).unwrap_err().kind, ErrorKind::Invalid);

    let Ok(FarmReply::Hint(h)) = farm(&mut s, 2, FarmOp::CreateHint(hint("(?i)cython.*not found"))) else { panic!() };
    assert_eq!(h.id, 1);
    assert_eq!(s.farm.matching_hints("error: Cython.h not found"), vec![1]);
    let upd = FarmOp::UpdateHint { id: 1, spec: hint("gcc: error") };
    let Ok(FarmReply::Hint(h)) = farm(&mut s, 3, upd) else { panic!() };
    assert_eq!((h.created_ms, h.updated_ms), (2, 3));
    assert!(s.farm.matching_hints("cython not found").is_empty());
    assert_eq!(farm(&mut s, 4, FarmOp::UpdateHint { id: 9, spec: hint("x") }).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(farm(&mut s, 4, FarmOp::DeleteHint { id: 9 }).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(farm(&mut s, 5, FarmOp::DeleteHint { id: 1 }).unwrap(), FarmReply::HintDeleted { id: 1 });
    assert!(s.farm.hints.is_empty() && s.farm.compiled.0.is_empty());
    let actions: Vec<_> = s.audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["hint.delete", "hint.update", "hint.create"], "hint CRUD is audited");
}

#[test]
fn a_build_jobs_state_changes_are_events_and_a_failure_records_the_matching_hints() {
    let mut s = at6();
    farm(&mut s, 1, FarmOp::CreateHint(hint("Cython\\.h"))).unwrap();
    farm(&mut s, 1, FarmOp::CreateHint(hint("never matches"))).unwrap();
    job(&mut s, 10, JobOp::Enqueue(build("numpy", "1.26.4")));
    let lease = claim(&mut s, 20);
    job(&mut s, 50, fail(lease, true, &["compiling", "fatal error: Cython.h: No such file"]));
    assert_eq!(
        kinds(&s),
        [
            (EventKind::Queued, JobState::Queued),
            (EventKind::Started, JobState::Running),
            (EventKind::Retried, JobState::Failed)
        ]
    );
    let failed = s.farm.events.back().unwrap();
    assert_eq!(failed.hints, vec![1]);
    assert_eq!((failed.duration_ms, failed.worker.as_deref()), (Some(30), Some("bw-1")));
    assert_eq!(
        (failed.package.as_str(), failed.version.as_str(), failed.run_id.as_deref()),
        ("numpy", "1.26.4", Some("r-1"))
    );
    assert_eq!(failed.error.as_deref(), Some("build failed"));

    let lease = claim(&mut s, 2_000);
    job(&mut s, 2_500, fail(lease, true, &["something else"]));
    let dead = s.farm.events.back().unwrap();
    assert_eq!((dead.kind, dead.state, dead.hints.len()), (EventKind::Failed, JobState::Dead, 0));
    job(&mut s, 3_000, JobOp::Requeue { job_id: 1 });
    let lease = claim(&mut s, 3_100);
    job(
        &mut s,
        3_400,
        JobOp::Complete(Finish {
            job_id: 1,
            worker: "bw-1".into(),
            lease,
            result: None,
            error: None,
            retryable: false,
            logs: vec![],
        }),
    );
    let last: Vec<_> = kinds(&s).into_iter().skip(5).collect();
    assert_eq!(
        last,
        [
            (EventKind::Retried, JobState::Queued),
            (EventKind::Started, JobState::Running),
            (EventKind::Succeeded, JobState::Succeeded)
        ]
    );
    assert_eq!(s.farm.events.back().unwrap().duration_ms, Some(300));

    // Other queues and kinds, and builds without a package, record nothing.
    let n = s.farm.events.len();
    let mut other = build("x", "1");
    other.queue = "mail".into();
    job(&mut s, 4_000, JobOp::Enqueue(other));
    let mut nameless = build("x", "1");
    nameless.payload = "{}".into();
    job(&mut s, 4_000, JobOp::Enqueue(nameless));
    assert_eq!(s.farm.events.len(), n);

    // A clear of the build queue cancels each pending build: one event each.
    job(&mut s, 5_000, JobOp::Enqueue(build("scipy", "1.13.0")));
    job(&mut s, 5_000, JobOp::ClearQueue { queue: BUILD_QUEUE.into() });
    let tail: Vec<_> = s.farm.events.iter().rev().take(2).map(|e| (e.kind, e.package.clone())).collect();
    assert_eq!(tail, [(EventKind::Cancelled, "scipy".to_string()), (EventKind::Queued, "scipy".to_string())]);
}

#[test]
fn the_farm_waits_for_format_six_and_jobs_below_it_record_no_events() {
    let mut s = ControlState { format_version: 5, ..ControlState::default() };
    let e = farm(&mut s, 1, FarmOp::CacheReport { hits: 1, misses: 0 }).unwrap_err();
    assert!(e.message.contains("needs cluster format 6"), "{e:?}");
    job(&mut s, 10, JobOp::Enqueue(build("numpy", "1")));
    assert!(s.farm.events.is_empty());
}

#[test]
fn blobs_are_versioned_capped_and_old_versions_dropped() {
    let mut s = at6();
    let big = "x".repeat(MAX_BLOB_BYTES + 1);
    let e = farm(&mut s, 1, FarmOp::PutBlob { kind: BlobKind::Plan, body: big }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge);
    assert!(s.farm.latest(BlobKind::Plan).is_none());
    let mut dropped_all = Vec::new();
    for i in 1..=(MAX_BLOB_VERSIONS as u64 + 2) {
        let Ok(FarmReply::Blob { meta, dropped, .. }) =
            farm(&mut s, i, FarmOp::PutBlob { kind: BlobKind::Plan, body: format!("{{\"n\":{i}}}") })
        else {
            panic!()
        };
        assert_eq!(meta.version, i);
        dropped_all.extend(dropped);
    }
    assert_eq!(dropped_all, vec![1, 2]);
    assert_eq!(s.farm.latest(BlobKind::Plan).unwrap().version, 22);
    assert!(s.farm.blob_version(BlobKind::Plan, 2).is_none() && s.farm.blob_version(BlobKind::Plan, 3).is_some());
    assert!(s.farm.latest(BlobKind::Manifest).is_none(), "kinds are versioned apart");
    let Ok(FarmReply::Blob { meta, .. }) =
        farm(&mut s, 9, FarmOp::PutBlob { kind: BlobKind::Manifest, body: "".into() })
    else {
        panic!()
    };
    assert_eq!(meta.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

fn chunk(package: &str, lines: &[&str], max_bytes: u64) -> FarmOp {
    FarmOp::AppendLog(LogChunk {
        package: package.into(),
        version: "1.0".into(),
        lines: lines.iter().map(|l| l.to_string()).collect(),
        keep: LogRetention { max_age_ms: 86_400_000, max_bytes },
    })
}

#[test]
fn log_lines_are_numbered_and_retention_evicts_by_age_and_size() {
    let mut s = at6();
    let mb = 1 << 20;
    let Ok(FarmReply::Logged { first_line, accepted, .. }) = farm(&mut s, 1, chunk("a", &["one", "two"], mb)) else {
        panic!()
    };
    assert_eq!((first_line, accepted), (0, 2));
    let Ok(FarmReply::Logged { first_line, .. }) = farm(&mut s, 2, chunk("a", &["three"], mb)) else { panic!() };
    assert_eq!(first_line, 2);
    assert_eq!(s.farm.logs[&("a".into(), "1.0".into())].lines, 3);
    // Past the byte budget, the least recently written log goes first.
    let half = "x".repeat(4096);
    let lines: Vec<&str> = std::iter::repeat_n(half.as_str(), 200).collect();
    farm(&mut s, 3, chunk("b", &lines, mb)).unwrap();
    let Ok(FarmReply::Logged { evicted, accepted, .. }) = farm(&mut s, 4, chunk("c", &lines, mb)) else { panic!() };
    assert_eq!(accepted, 200);
    assert_eq!(evicted, vec![("a".to_string(), "1.0".to_string()), ("b".to_string(), "1.0".to_string())]);
    assert_eq!(s.farm.log_bytes, 200 * 4096);
    // Past the age, a log goes when the next chunk comes.
    let day = 86_400_000;
    let Ok(FarmReply::Logged { evicted, .. }) = farm(&mut s, 5 + day, chunk("d", &["x"], mb)) else { panic!() };
    assert_eq!(evicted, vec![("c".to_string(), "1.0".to_string())]);
    assert_eq!(s.farm.log_bytes, 1);
    let bad = FarmOp::AppendLog(LogChunk {
        package: "a/b".into(),
        version: "1".into(),
        lines: vec![],
        keep: LogRetention { max_age_ms: 1, max_bytes: 1 },
    });
    assert_eq!(farm(&mut s, 6, bad).unwrap_err().kind, ErrorKind::Invalid);
}

#[test]
fn the_farm_travels_in_the_snapshot_with_its_hints_compiled_again() {
    let mut s = at6();
    farm(&mut s, 1, FarmOp::CreateHint(hint("oops"))).unwrap();
    farm(&mut s, 1, FarmOp::CacheReport { hits: 3, misses: 1 }).unwrap();
    farm(&mut s, 1, FarmOp::PutBlob { kind: BlobKind::Manifest, body: "{}".into() }).unwrap();
    farm(&mut s, 1, chunk("a", &["l"], 1 << 20)).unwrap();
    let cfg = FarmConfig { strategy: Strategy::Upgrade, python: "3.12".into(), ..FarmConfig::default() };
    farm(&mut s, 1, FarmOp::SetConfig(cfg)).unwrap();
    job(&mut s, 2, JobOp::Enqueue(build("numpy", "1")));
    let mut bytes = Vec::new();
    crate::state::encode_snapshot(&s, &mut bytes).unwrap();
    let back = crate::state::decode_snapshot(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.farm.matching_hints("oops"), vec![1]);
    assert_eq!(back.farm.cache, CacheCounters { hits: 3, misses: 1 });
    assert_eq!(back.farm.events.len(), 1);
}
