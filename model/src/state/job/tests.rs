use super::*;
use crate::command::{Command, ErrorKind, Reply, Request};
use crate::state::testkit::beat;
use crate::state::{ControlState, WorkerAction};

fn at5() -> ControlState {
    ControlState { format_version: 5, ..ControlState::default() }
}

fn req_at(at_ms: u64, ops: Vec<JobOp>) -> Request {
    Request { at_ms, node: 1, actor: "test".into(), command: Command::Jobs(JobOps { ops }) }
}

/// Apply a group at `at_ms` and return the answers.
fn run(s: &mut ControlState, at_ms: u64, ops: Vec<JobOp>) -> Vec<Result<JobReply, CommandError>> {
    match s.apply(&req_at(at_ms, ops)).expect("the group is accepted") {
        Reply::Jobs(r) => r,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn one(s: &mut ControlState, at_ms: u64, op: JobOp) -> Result<JobReply, CommandError> {
    run(s, at_ms, vec![op]).pop().expect("one answer")
}

fn new_job(queue: &str) -> NewJob {
    NewJob {
        queue: queue.into(),
        kind: "email".into(),
        payload: r#"{"to":"a@b"}"#.into(),
        priority: 0,
        pool: None,
        run_after_ms: None,
        idempotency_key: None,
        max_attempts: 3,
        backoff: Backoff { base_ms: 1_000, max_ms: 60_000 },
    }
}

fn enqueue(s: &mut ControlState, at_ms: u64, n: NewJob) -> JobId {
    match one(s, at_ms, JobOp::Enqueue(n)) {
        Ok(JobReply::Enqueued { job, created: true }) => job.id,
        other => panic!("enqueue: {other:?}"),
    }
}

fn claim_op(worker: &str, queues: &[&str], max_jobs: u32) -> JobOp {
    JobOp::Claim(Claim {
        worker: worker.into(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max_jobs,
        lease_ms: 60_000,
        nonce: 0xfeed,
    })
}

fn claim(s: &mut ControlState, at_ms: u64, worker: &str, queues: &[&str], max_jobs: u32) -> Vec<Job> {
    match one(s, at_ms, claim_op(worker, queues, max_jobs)) {
        Ok(JobReply::Claimed { jobs }) => jobs,
        other => panic!("claim: {other:?}"),
    }
}

fn finish(job: &Job, worker: &str) -> Finish {
    Finish {
        job_id: job.id,
        worker: worker.into(),
        lease: job.lease.as_ref().expect("running").token,
        result: Some("{\"ok\":true}".into()),
        error: Some("boom".into()),
        retryable: true,
        logs: vec![],
    }
}

fn renew(job: &Job, worker: &str, logs: Vec<String>) -> Renew {
    Renew {
        job_id: job.id,
        worker: worker.into(),
        lease: job.lease.as_ref().expect("running").token,
        lease_ms: 60_000,
        progress: Some("half".into()),
        logs,
    }
}

fn snapshot(s: &ControlState) -> Vec<u8> {
    let mut b = Vec::new();
    crate::state::encode_snapshot(s, &mut b).unwrap();
    b
}

/// Apply `op` expecting a refusal of `kind`, and check that nothing changed.
fn refused(s: &mut ControlState, at_ms: u64, op: JobOp, kind: ErrorKind) {
    let before = snapshot(s);
    let (audit, history) = (s.audit.len(), s.history.len());
    let e = one(s, at_ms, op.clone()).expect_err("refused");
    assert_eq!(e.kind, kind, "{op:?}: {e}");
    assert_eq!(snapshot(s), before, "refused {op:?} changed the state");
    assert_eq!((s.audit.len(), s.history.len()), (audit, history));
    assert_indices(s);
}

/// The live indices answer like rebuilt ones.
fn assert_indices(s: &ControlState) {
    assert!(s.jobs.indices_agree(), "{:?}", s.jobs);
}

#[test]
fn jobs_need_format_5() {
    let mut s = ControlState { format_version: 4, ..ControlState::default() };
    let e = s.apply(&req_at(1, vec![JobOp::Enqueue(new_job("q"))])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.message.contains("needs cluster format 5"), "{e}");
    let mut s = at5();
    let e = s.apply(&req_at(1, vec![])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert_eq!(s, at5());
}

#[test]
fn claims_take_the_highest_priority_then_the_oldest() {
    let mut s = at5();
    let low = enqueue(&mut s, 1_000, new_job("q"));
    let high = enqueue(&mut s, 1_001, NewJob { priority: 5, ..new_job("q") });
    let low2 = enqueue(&mut s, 1_002, new_job("q"));
    let high2 = enqueue(&mut s, 1_003, NewJob { priority: 5, ..new_job("q") });
    let got: Vec<JobId> = claim(&mut s, 2_000, "w1", &["q"], 3).iter().map(|j| j.id).collect();
    assert_eq!(got, vec![high, high2, low]);
    let rest = claim(&mut s, 2_001, "w1", &["q"], 10);
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), vec![low2]);
    assert!(claim(&mut s, 2_002, "w1", &["q"], 10).is_empty(), "nothing left: an empty list");
    assert_eq!(s.jobs.totals.claims, 4);
    assert_eq!(s.jobs.lease_seq, 4);
    assert_indices(&s);
}

#[test]
fn a_claim_starts_an_attempt_under_a_fresh_lease() {
    let mut s = at5();
    let id = enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    assert_eq!(job.id, id);
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempt_count, 1);
    let lease = job.lease.clone().unwrap();
    assert_eq!(lease, Lease { worker: "w1".into(), token: LeaseToken { seq: 1, nonce: 0xfeed }, expires_ms: 62_000 });
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::Running);
    assert_eq!(s.jobs.get(id), Some(&job));
    assert_eq!(s.jobs.count("q", JobState::Running), 1);
    assert_eq!(s.jobs.count("q", JobState::Queued), 0);
}

#[test]
fn queues_are_taken_in_the_order_given_up_to_max_jobs() {
    let mut s = at5();
    let a = enqueue(&mut s, 1_000, new_job("a"));
    let b1 = enqueue(&mut s, 1_000, NewJob { priority: 9, ..new_job("b") });
    let b2 = enqueue(&mut s, 1_000, new_job("b"));
    let got: Vec<JobId> = claim(&mut s, 2_000, "w1", &["b", "a", "b"], 3).iter().map(|j| j.id).collect();
    assert_eq!(got, vec![b1, b2, a], "b first (its own order), then a; the repeated b is skipped");
}

#[test]
fn delayed_jobs_wait_for_their_time() {
    let mut s = at5();
    let later = enqueue(&mut s, 1_000, NewJob { run_after_ms: Some(5_000), ..new_job("q") });
    assert!(claim(&mut s, 4_999, "w1", &["q"], 5).is_empty());
    assert_eq!(s.jobs.count("q", JobState::Queued), 1);
    let got = claim(&mut s, 5_000, "w1", &["q"], 5);
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later]);
}

#[test]
fn a_job_due_now_is_claimable_whatever_the_claiming_node_clock_says() {
    // The enqueue came from a node whose clock is ahead of the claimer's.
    let mut s = at5();
    let id = enqueue(&mut s, 10_000, new_job("q"));
    let got = claim(&mut s, 9_990, "w1", &["q"], 1);
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
}

#[test]
fn claimable_jobs_are_the_same_after_a_snapshot() {
    let mut s = at5();
    for i in 0..6 {
        enqueue(&mut s, 1_000 + i, NewJob { run_after_ms: Some(1_000 + i * 1_000), ..new_job("q") });
    }
    claim(&mut s, 3_500, "w1", &["q"], 1);
    let mut t = crate::state::decode_snapshot(&snapshot(&s)).unwrap();
    assert_eq!(t, s);
    for at in [3_600, 4_100, 9_000] {
        let a: Vec<JobId> = claim(&mut s, at, "w1", &["q"], 2).iter().map(|j| j.id).collect();
        let b: Vec<JobId> = claim(&mut t, at, "w1", &["q"], 2).iter().map(|j| j.id).collect();
        assert_eq!(a, b, "at {at}");
    }
    assert_eq!(s, t);
}

#[test]
fn paused_queues_and_workers_not_running_get_nothing() {
    let mut s = at5();
    let id = enqueue(&mut s, 1_000, new_job("q"));
    one(&mut s, 1_001, JobOp::SetQueuePaused { queue: "q".into(), paused: true }).unwrap();
    assert!(claim(&mut s, 2_000, "w1", &["q"], 1).is_empty());
    one(&mut s, 2_001, JobOp::SetQueuePaused { queue: "q".into(), paused: false }).unwrap();
    assert_eq!(s.audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), vec!["queue.resume", "queue.pause"]);

    s.apply(&crate::state::testkit::req(Command::HeartbeatBatch { beats: vec![beat("w1", None)].into() })).unwrap();
    for action in [WorkerAction::Pause, WorkerAction::Drain, WorkerAction::Stop] {
        s.apply(&crate::state::testkit::req(Command::WorkerControl { worker: "w1".into(), action, reason: None }))
            .unwrap();
        assert!(claim(&mut s, 3_000, "w1", &["q"], 1).is_empty(), "{action:?}");
    }
    s.apply(&crate::state::testkit::req(Command::WorkerControl {
        worker: "w1".into(),
        action: WorkerAction::Resume,
        reason: None,
    }))
    .unwrap();
    s.apply(&crate::state::testkit::req(Command::WorkerControl {
        worker: "w1".into(),
        action: WorkerAction::Quarantine,
        reason: None,
    }))
    .unwrap();
    assert!(claim(&mut s, 3_000, "w1", &["q"], 1).is_empty(), "quarantined");
    assert_eq!(claim(&mut s, 3_000, "w-unknown", &["q"], 1)[0].id, id, "a worker the runtime does not know may claim");
}

#[test]
fn pool_jobs_go_only_to_workers_of_that_pool() {
    let mut s = at5();
    let eu = enqueue(&mut s, 1_000, NewJob { pool: Some("eu".into()), priority: 3, ..new_job("q") });
    let any = enqueue(&mut s, 1_001, new_job("q"));
    s.apply(&crate::state::testkit::req(Command::HeartbeatBatch {
        beats: vec![beat("w-us", Some("us")), beat("w-eu", Some("eu"))].into(),
    }))
    .unwrap();
    let mut anon = s.clone();
    let got: Vec<JobId> = claim(&mut anon, 2_000, "w-anon", &["q"], 5).iter().map(|j| j.id).collect();
    assert_eq!(got, vec![any], "a worker the runtime does not know has no pool");
    let us: Vec<JobId> = claim(&mut s, 2_000, "w-us", &["q"], 5).iter().map(|j| j.id).collect();
    assert_eq!(us, vec![any]);
    let eu_got: Vec<JobId> = claim(&mut s, 2_000, "w-eu", &["q"], 5).iter().map(|j| j.id).collect();
    assert_eq!(eu_got, vec![eu]);
    // A worker of the pool takes its pool's jobs and pool-less ones, by priority.
    let mut t = at5();
    let plain = enqueue(&mut t, 1_000, new_job("q"));
    let pooled = enqueue(&mut t, 1_001, NewJob { pool: Some("eu".into()), priority: 3, ..new_job("q") });
    let last = enqueue(&mut t, 1_002, NewJob { pool: Some("eu".into()), ..new_job("q") });
    t.apply(&crate::state::testkit::req(Command::HeartbeatBatch { beats: vec![beat("w-eu", Some("eu"))].into() }))
        .unwrap();
    let got: Vec<JobId> = claim(&mut t, 2_000, "w-eu", &["q"], 5).iter().map(|j| j.id).collect();
    assert_eq!(got, vec![pooled, plain, last]);
    assert_indices(&t);
}

#[test]
fn renew_extends_the_lease_and_counts_log_lines() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let r = one(&mut s, 30_000, JobOp::Renew(renew(&job, "w1", vec!["a".into(), "bc".into()]))).unwrap();
    assert_eq!(r, JobReply::Renewed { job_id: job.id, expires_ms: 90_000, logs_accepted: 2 });
    let now = s.jobs.get(job.id).unwrap();
    assert_eq!((now.log_lines, now.log_bytes), (2, 3));
    assert_eq!(now.progress.as_deref(), Some("half"));
    assert_eq!(s.jobs.expired(89_999, 10), vec![]);
    assert_eq!(s.jobs.expired(90_000, 10), vec![(job.id, job.lease.unwrap().token)]);
    assert!(s.audit.is_empty() && s.history.is_empty(), "worker operations are not audited");
}

#[test]
fn an_outdated_or_foreign_lease_is_refused_and_changes_nothing() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let token = job.lease.clone().unwrap().token;
    let mut wrong_token = finish(&job, "w1");
    wrong_token.lease = LeaseToken { seq: token.seq, nonce: token.nonce ^ 1 };
    refused(&mut s, 3_000, JobOp::Complete(wrong_token), ErrorKind::LeaseLost);
    refused(&mut s, 3_000, JobOp::Complete(finish(&job, "w2")), ErrorKind::LeaseLost);
    refused(&mut s, 62_000, JobOp::Complete(finish(&job, "w1")), ErrorKind::LeaseLost);
    refused(&mut s, 62_000, JobOp::Renew(renew(&job, "w1", vec![])), ErrorKind::LeaseLost);
    refused(&mut s, 62_000, JobOp::Fail(finish(&job, "w1")), ErrorKind::LeaseLost);
    let mut unknown = finish(&job, "w1");
    unknown.job_id = 99;
    refused(&mut s, 3_000, JobOp::Complete(unknown), ErrorKind::NotFound);
}

#[test]
fn fencing_an_old_token_cannot_complete_after_a_reclaim() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let first = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let reaped =
        one(&mut s, 62_000, JobOp::Reap { job_id: first.id, lease: first.lease.clone().unwrap().token }).unwrap();
    let JobReply::Reaped { job: Some(r) } = reaped else { panic!("{reaped:?}") };
    assert_eq!(r.state, JobState::Failed);
    let second = claim(&mut s, 200_000, "w2", &["q"], 1).remove(0);
    assert_eq!(second.id, first.id);
    assert!(second.lease.as_ref().unwrap().token.seq > first.lease.as_ref().unwrap().token.seq);
    // The first worker wakes up and completes, with its old token, before the
    // new lease expired: refused, and the job stays the second worker's.
    refused(&mut s, 200_001, JobOp::Complete(finish(&first, "w1")), ErrorKind::LeaseLost);
    let mut same_worker_old_token = finish(&first, "w2");
    same_worker_old_token.worker = "w2".into();
    refused(&mut s, 200_001, JobOp::Complete(same_worker_old_token), ErrorKind::LeaseLost);
    let done = one(&mut s, 200_002, JobOp::Complete(finish(&second, "w2"))).unwrap();
    let JobReply::Finished { job, .. } = done else { panic!() };
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(s.jobs.totals.completions, 1);
}

#[test]
fn complete_records_the_result_and_ends_the_attempt() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let mut f = finish(&job, "w1");
    f.logs = vec!["done".into()];
    let r = one(&mut s, 3_000, JobOp::Complete(f)).unwrap();
    let JobReply::Finished { job, logs_accepted } = r else { panic!() };
    assert_eq!(logs_accepted, 1);
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.result.as_deref(), Some("{\"ok\":true}"));
    assert_eq!(job.error, None, "Complete ignores error");
    assert_eq!(job.lease, None);
    assert_eq!(job.finished_ms, Some(3_000));
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(job.attempts[0].ended_ms, Some(3_000));
    refused(&mut s, 3_001, JobOp::Complete(finish(&claim_free(&job), "w1")), ErrorKind::LeaseLost);
    assert_indices(&s);
}

/// A finished job with the lease it had (for replaying a report).
fn claim_free(job: &Job) -> Job {
    let mut j = job.clone();
    j.lease = Some(Lease { worker: "w1".into(), token: LeaseToken { seq: 1, nonce: 0xfeed }, expires_ms: u64::MAX });
    j
}

#[test]
fn failures_retry_with_backoff_then_die() {
    let mut s = at5();
    let id = enqueue(&mut s, 1_000, new_job("q"));
    let mut at = 2_000;
    for attempt in 1..=3u32 {
        let job = claim(&mut s, at, "w1", &["q"], 1).pop().unwrap_or_else(|| panic!("attempt {attempt} claimable"));
        assert_eq!(job.attempt_count, attempt);
        let r = one(&mut s, at + 10, JobOp::Fail(finish(&job, "w1"))).unwrap();
        let JobReply::Finished { job, .. } = r else { panic!() };
        assert_eq!(job.error.as_deref(), Some("boom"));
        assert_eq!(job.result, None, "Fail ignores result");
        if attempt < 3 {
            assert_eq!(job.state, JobState::Failed);
            let delay = job.run_after_ms - (at + 10);
            let raw = 1_000u64 << (attempt - 1);
            assert!(delay >= raw - raw / 5 && delay <= raw + raw / 5, "attempt {attempt}: {delay}");
            assert!(claim(&mut s, job.run_after_ms - 1, "w1", &["q"], 1).is_empty(), "not before its time");
            at = job.run_after_ms;
        } else {
            assert_eq!(job.state, JobState::Dead);
            assert_eq!(job.finished_ms, Some(at + 10));
        }
    }
    assert_eq!(s.jobs.get(id).unwrap().attempts.len(), 3);
    assert_eq!((s.jobs.totals.failures, s.jobs.totals.dead), (3, 1));
    assert!(claim(&mut s, 1_000_000, "w1", &["q"], 1).is_empty());
}

#[test]
fn a_failure_that_is_not_retryable_is_dead_at_once() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let mut f = finish(&job, "w1");
    f.retryable = false;
    let JobReply::Finished { job, .. } = one(&mut s, 2_500, JobOp::Fail(f)).unwrap() else { panic!() };
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts[0].outcome, AttemptOutcome::Failed { error: "boom".into(), retryable: false });
}

#[test]
fn backoff_is_capped_deterministic_and_jittered() {
    let b = Backoff { base_ms: 1_000, max_ms: 10_000 };
    assert_eq!(b.delay(7, 3), b.delay(7, 3));
    assert!(b.delay(7, 60) <= 10_000 && b.delay(7, 60) >= 8_000);
    assert!(b.delay(7, u32::MAX) <= 10_000);
    let spread: BTreeSet<u64> = (0..50).map(|id| b.delay(id, 2)).collect();
    assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    assert!(spread.iter().all(|d| (1_600..=2_400).contains(d)));
    assert_eq!(Backoff { base_ms: 0, max_ms: 0 }.delay(1, 1), 0);
}

#[test]
fn a_reap_twice_for_one_expiry_requeues_once() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let token = job.lease.clone().unwrap().token;
    let reap = JobOp::Reap { job_id: job.id, lease: token };
    // Not expired yet: nothing done.
    let before = snapshot(&s);
    assert_eq!(one(&mut s, 61_999, reap.clone()).unwrap(), JobReply::Reaped { job: None });
    assert_eq!(snapshot(&s), before);
    let JobReply::Reaped { job: Some(r) } = one(&mut s, 62_000, reap.clone()).unwrap() else { panic!() };
    assert_eq!(r.state, JobState::Failed);
    assert_eq!(r.error.as_deref(), Some("lease expired"));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Expired);
    // The same reap again (a new leader re-proposing it): nothing more.
    let before = snapshot(&s);
    let answers = run(&mut s, 62_001, vec![reap.clone(), reap.clone()]);
    assert_eq!(answers, vec![Ok(JobReply::Reaped { job: None }), Ok(JobReply::Reaped { job: None })]);
    assert_eq!(snapshot(&s), before);
    assert_eq!(s.jobs.totals.expirations, 1);
    // After a re-claim the old token still reaps nothing.
    let again = claim(&mut s, 500_000, "w2", &["q"], 1).remove(0);
    assert_eq!(again.attempt_count, 2);
    assert_eq!(one(&mut s, 900_000, reap).unwrap(), JobReply::Reaped { job: None });
    assert_eq!(one(&mut s, 900_000, JobOp::Reap { job_id: 42, lease: token }).unwrap(), JobReply::Reaped { job: None });
}

#[test]
fn an_expired_lease_past_max_attempts_is_dead() {
    let mut s = at5();
    enqueue(&mut s, 1_000, NewJob { max_attempts: 1, ..new_job("q") });
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let reap = JobOp::Reap { job_id: job.id, lease: job.lease.unwrap().token };
    let JobReply::Reaped { job: Some(r) } = one(&mut s, 70_000, reap).unwrap() else { panic!() };
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(r.error.as_deref(), Some("lease expired"));
    assert_eq!((s.jobs.totals.expirations, s.jobs.totals.dead), (1, 1));
}

#[test]
fn idempotency_keys_answer_the_existing_job_and_change_nothing() {
    let mut s = at5();
    let keyed = NewJob { idempotency_key: Some("order-17".into()), ..new_job("q") };
    let id = enqueue(&mut s, 1_000, keyed.clone());
    let before = snapshot(&s);
    let r = one(&mut s, 2_000, JobOp::Enqueue(NewJob { payload: "{}".into(), ..keyed.clone() })).unwrap();
    let JobReply::Enqueued { job, created: false } = r else { panic!("{r:?}") };
    assert_eq!(job.id, id);
    assert_eq!(snapshot(&s), before);
    // Twice in one batch: one job.
    let answers = run(
        &mut s,
        3_000,
        vec![
            JobOp::Enqueue(NewJob { idempotency_key: Some("k2".into()), ..new_job("q") }),
            JobOp::Enqueue(NewJob { idempotency_key: Some("k2".into()), ..new_job("q") }),
        ],
    );
    assert!(matches!(answers[0], Ok(JobReply::Enqueued { created: true, .. })));
    assert!(matches!(answers[1], Ok(JobReply::Enqueued { created: false, .. })));
    assert_eq!(s.jobs.by_id.len(), 2);
}

#[test]
fn enqueue_validation_and_caps_refuse_without_change() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let big = NewJob { payload: "x".repeat(MAX_PAYLOAD_BYTES + 1), ..new_job("q") };
    refused(&mut s, 2_000, JobOp::Enqueue(big), ErrorKind::TooLarge);
    let fits = NewJob { payload: "x".repeat(MAX_PAYLOAD_BYTES), ..new_job("q") };
    assert!(one(&mut s, 2_000, JobOp::Enqueue(fits)).is_ok());
    for bad in [
        NewJob { queue: "bad queue".into(), ..new_job("q") },
        NewJob { kind: "".into(), ..new_job("q") },
        NewJob { pool: Some("a/b".into()), ..new_job("q") },
        NewJob { max_attempts: 0, ..new_job("q") },
        NewJob { max_attempts: MAX_ATTEMPTS + 1, ..new_job("q") },
        NewJob { backoff: Backoff { base_ms: 10, max_ms: 5 }, ..new_job("q") },
        NewJob { backoff: Backoff { base_ms: 0, max_ms: u64::MAX }, ..new_job("q") },
        NewJob { run_after_ms: Some(u64::MAX), ..new_job("q") },
        NewJob { idempotency_key: Some(String::new()), ..new_job("q") },
        NewJob { idempotency_key: Some("a\nb".into()), ..new_job("q") },
        NewJob { idempotency_key: Some("k".repeat(257)), ..new_job("q") },
    ] {
        refused(&mut s, 2_000, JobOp::Enqueue(bad), ErrorKind::Invalid);
    }
    one(&mut s, 2_000, JobOp::SetQueueCap { queue: "q".into(), max_queued: Some(2) }).unwrap();
    refused(&mut s, 2_000, JobOp::Enqueue(new_job("q")), ErrorKind::Limit);
    assert!(one(&mut s, 2_000, JobOp::Enqueue(new_job("other"))).is_ok(), "the cap is per queue");
    // A claimed job leaves room.
    claim(&mut s, 3_000, "w1", &["q"], 1);
    assert!(one(&mut s, 3_000, JobOp::Enqueue(new_job("q"))).is_ok());
    one(&mut s, 3_000, JobOp::SetQueueCap { queue: "q".into(), max_queued: None }).unwrap();
    assert_eq!(s.jobs.cap_of("q"), DEFAULT_MAX_QUEUED);
    assert!(!s.jobs.queues.contains_key("q"), "a default setting is not kept");
    refused(&mut s, 3_000, JobOp::SetQueueCap { queue: "q".into(), max_queued: Some(u32::MAX) }, ErrorKind::Invalid);
}

#[test]
fn the_job_count_and_held_bytes_are_capped() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    s.jobs.held_bytes = MAX_HELD_BYTES - 5;
    let e = one(&mut s, 2_000, JobOp::Enqueue(new_job("q"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit);
    s.jobs.reindex();
    let mut t = at5();
    for i in 0..MAX_QUEUES {
        one(&mut t, 1_000, JobOp::SetQueuePaused { queue: format!("q{i}"), paused: true }).unwrap();
    }
    refused(&mut t, 2_000, JobOp::Enqueue(new_job("one-more")), ErrorKind::Limit);
    refused(&mut t, 2_000, JobOp::SetQueuePaused { queue: "one-more".into(), paused: true }, ErrorKind::Limit);
    assert!(one(&mut t, 2_000, JobOp::Enqueue(new_job("q7"))).is_ok(), "known queues still take jobs");
}

#[test]
fn reports_past_the_held_bytes_keep_no_result_or_progress_and_a_short_error() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    enqueue(&mut s, 1_000, new_job("q"));
    let jobs = claim(&mut s, 2_000, "w1", &["q"], 2);
    let long_error = "é".repeat(1_000);
    let mut f = finish(&jobs[0], "w1");
    f.error = Some(long_error.clone());
    f.retryable = false;
    let JobReply::Finished { job, .. } = one(&mut s, 2_100, JobOp::Fail(f)).unwrap() else { panic!() };
    assert_eq!(job.error.as_deref(), Some(long_error.as_str()), "the job keeps its last error whole");
    let AttemptOutcome::Failed { error, .. } = &job.attempts[0].outcome else { panic!() };
    assert_eq!(error.len(), MAX_ATTEMPT_ERROR, "an attempt keeps a short one");
    s.jobs.held_bytes = MAX_HELD_BYTES - 2;
    let JobReply::Renewed { .. } = one(&mut s, 2_200, JobOp::Renew(renew(&jobs[1], "w1", vec![]))).unwrap() else {
        panic!()
    };
    assert_eq!(s.jobs.get(jobs[1].id).unwrap().progress, None, "no room for progress");
    let JobReply::Finished { job, .. } = one(&mut s, 2_300, JobOp::Complete(finish(&jobs[1], "w1"))).unwrap() else {
        panic!()
    };
    assert_eq!((job.state, job.result.as_deref()), (JobState::Succeeded, None), "completed, its result not kept");
    s.jobs.reindex();
    assert!(s.jobs.held_bytes() < 10_000);
}

#[test]
fn worker_reports_are_validated() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let mut r = renew(&job, "w1", vec!["x".repeat(MAX_LOG_LINE + 1)]);
    refused(&mut s, 3_000, JobOp::Renew(r.clone()), ErrorKind::Invalid);
    r.logs = vec!["l".into(); MAX_LOG_LINES_PER_OP_FOR_TESTS + 1];
    refused(&mut s, 3_000, JobOp::Renew(r.clone()), ErrorKind::Invalid);
    r.logs = vec![];
    r.progress = Some("p".repeat(MAX_PROGRESS_BYTES + 1));
    refused(&mut s, 3_000, JobOp::Renew(r.clone()), ErrorKind::TooLarge);
    r.progress = None;
    r.lease_ms = 0;
    refused(&mut s, 3_000, JobOp::Renew(r), ErrorKind::Invalid);
    let mut f = finish(&job, "w1");
    f.result = Some("r".repeat(MAX_PAYLOAD_BYTES + 1));
    refused(&mut s, 3_000, JobOp::Complete(f.clone()), ErrorKind::TooLarge);
    f.error = Some("e".repeat(MAX_ERROR_BYTES + 1));
    refused(&mut s, 3_000, JobOp::Fail(f), ErrorKind::TooLarge);
    for bad in [
        claim_op("", &["q"], 1),
        claim_op("w1", &[], 1),
        claim_op("w1", &["q"; 17], 1),
        claim_op("w1", &["bad q"], 1),
        claim_op("w1", &["q"], 0),
        claim_op("w1", &["q"], MAX_CLAIM + 1),
    ] {
        refused(&mut s, 3_000, bad, ErrorKind::Invalid);
    }
}

const MAX_LOG_LINES_PER_OP_FOR_TESTS: usize = MAX_LOG_LINES_PER_OP;

#[test]
fn log_lines_are_accepted_up_to_the_caps() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let line = "x".repeat(MAX_LOG_LINE);
    // 1 MiB is 256 lines of 4 KiB: the 257th is refused by the byte cap.
    let mut accepted = 0;
    for _ in 0..3 {
        let r = one(&mut s, 3_000, JobOp::Renew(renew(&job, "w1", vec![line.clone(); 100]))).unwrap();
        let JobReply::Renewed { logs_accepted, .. } = r else { panic!() };
        accepted += logs_accepted;
    }
    assert_eq!(accepted, 256);
    let j = s.jobs.get(job.id).unwrap();
    assert_eq!((j.log_lines, j.log_bytes), (256, MAX_LOG_BYTES));
    // The line cap.
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let mut accepted = 0;
    for _ in 0..11 {
        let r = one(&mut s, 3_000, JobOp::Renew(renew(&job, "w1", vec!["y".into(); 1_000]))).unwrap();
        let JobReply::Renewed { logs_accepted, .. } = r else { panic!() };
        accepted += logs_accepted;
    }
    assert_eq!(accepted, MAX_LOG_LINES);
    let mut f = finish(&job, "w1");
    f.logs = vec!["z".into()];
    let JobReply::Finished { logs_accepted, .. } = one(&mut s, 3_000, JobOp::Complete(f)).unwrap() else { panic!() };
    assert_eq!(logs_accepted, 0, "the job is full; the completion still counts");
    // The store-wide cap.
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    s.jobs.log_bytes = MAX_STORED_LOG_BYTES - 3;
    let r = one(&mut s, 3_000, JobOp::Renew(renew(&job, "w1", vec!["ab".into(), "cd".into()]))).unwrap();
    assert!(matches!(r, JobReply::Renewed { logs_accepted: 1, .. }), "{r:?}");
    assert_eq!(s.jobs.log_bytes(), MAX_STORED_LOG_BYTES - 1);
}

#[test]
fn cancel_and_requeue_are_audited_and_follow_the_states() {
    let mut s = at5();
    let queued = enqueue(&mut s, 1_000, new_job("q"));
    let running = enqueue(&mut s, 1_000, new_job("r"));
    let job = claim(&mut s, 2_000, "w1", &["r"], 1).remove(0);
    assert_eq!(job.id, running);
    let cancel = |id| JobOp::Cancel { job_id: id, reason: Some("no longer needed".into()) };
    let JobReply::Changed { job: c } = one(&mut s, 3_000, cancel(queued)).unwrap() else { panic!() };
    assert_eq!(c.state, JobState::Cancelled);
    let JobReply::Changed { job: c } = one(&mut s, 3_000, cancel(running)).unwrap() else { panic!() };
    assert_eq!(c.state, JobState::Cancelled);
    assert_eq!(c.lease, None);
    assert_eq!(c.attempts[0].outcome, AttemptOutcome::Cancelled);
    // The worker's lease went with it.
    refused(&mut s, 3_001, JobOp::Complete(finish(&job, "w1")), ErrorKind::LeaseLost);
    refused(&mut s, 3_001, cancel(queued), ErrorKind::Conflict);
    refused(&mut s, 3_001, cancel(404), ErrorKind::NotFound);
    refused(&mut s, 3_001, JobOp::Cancel { job_id: queued, reason: Some("r".repeat(2_000)) }, ErrorKind::TooLarge);
    let JobReply::Changed { job: r } = one(&mut s, 4_000, JobOp::Requeue { job_id: running }).unwrap() else {
        panic!()
    };
    assert_eq!((r.state, r.attempt_count, r.finished_ms), (JobState::Queued, 0, None));
    assert_eq!(r.attempts.len(), 1, "past attempts stay on record");
    refused(&mut s, 4_001, JobOp::Requeue { job_id: running }, ErrorKind::Conflict);
    refused(&mut s, 4_001, JobOp::Requeue { job_id: 404 }, ErrorKind::NotFound);
    let again = claim(&mut s, 5_000, "w2", &["r"], 1).remove(0);
    assert_eq!((again.id, again.attempt_count), (running, 1));
    let actions: Vec<&str> = s.audit.iter().rev().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, vec!["job.cancel", "job.cancel", "job.requeue"]);
    assert_eq!(s.audit[1].reason.as_deref(), Some("no longer needed"));
    let entities: Vec<&str> = s.history.iter().map(|c| c.entity.as_str()).collect();
    assert_eq!(entities, vec![format!("job:{queued}"), format!("job:{running}"), format!("job:{running}")]);
    assert!(s.history.iter().all(|c| c.action.starts_with("job.")));
}

#[test]
fn clearing_a_queue_cancels_its_pending_jobs_only() {
    let mut s = at5();
    for _ in 0..3 {
        enqueue(&mut s, 1_000, new_job("q"));
    }
    let later = enqueue(&mut s, 1_000, NewJob { run_after_ms: Some(99_000), ..new_job("q") });
    let other = enqueue(&mut s, 1_000, new_job("other"));
    let running = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    let r = one(&mut s, 3_000, JobOp::ClearQueue { queue: "q".into() }).unwrap();
    assert_eq!(r, JobReply::Cleared { queue: "q".into(), cancelled: 3 });
    assert_eq!(s.jobs.get(later).unwrap().state, JobState::Cancelled);
    assert_eq!(s.jobs.get(running.id).unwrap().state, JobState::Running);
    assert_eq!(s.jobs.get(other).unwrap().state, JobState::Queued);
    assert_eq!(s.jobs.count("q", JobState::Cancelled), 3);
    assert_eq!(s.audit[0].action, "queue.clear");
    assert_eq!(s.audit[0].subject, "queue:q");
    refused(&mut s, 3_000, JobOp::ClearQueue { queue: "nope".into() }, ErrorKind::NotFound);
    refused(&mut s, 3_000, JobOp::ClearQueue { queue: "bad q".into() }, ErrorKind::Invalid);
    assert_indices(&s);
}

#[test]
fn compaction_drops_old_finished_jobs_and_the_oldest_past_the_count() {
    let mut s = at5();
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let id = enqueue(&mut s, 1_000, NewJob { idempotency_key: Some(format!("k{i}")), ..new_job("q") });
        one(&mut s, 10_000 + i, JobOp::Cancel { job_id: id, reason: None }).unwrap();
        ids.push(id);
    }
    let pending = enqueue(&mut s, 1_000, new_job("q"));
    assert_eq!(s.jobs.compactable(10_002, 100), 2);
    let r = one(&mut s, 20_000, JobOp::Compact { finished_before_ms: 10_002, keep_finished: 100 }).unwrap();
    assert_eq!(r, JobReply::Compacted { removed: ids[..2].to_vec() });
    assert!(!s.jobs.keys.contains_key("k0"), "a key goes with its job");
    let r = one(&mut s, 20_000, JobOp::Compact { finished_before_ms: 0, keep_finished: 1 }).unwrap();
    assert_eq!(r, JobReply::Compacted { removed: ids[2..4].to_vec() });
    assert!(s.jobs.get(pending).is_some(), "pending jobs are never compacted");
    assert_eq!(s.jobs.compactable(0, 1), 0);
    // A queue left empty and unconfigured is forgotten.
    one(&mut s, 20_000, JobOp::Cancel { job_id: pending, reason: None }).unwrap();
    let r = one(&mut s, 20_000, JobOp::Compact { finished_before_ms: u64::MAX, keep_finished: 0 }).unwrap();
    assert_eq!(r, JobReply::Compacted { removed: vec![ids[4], pending] });
    assert!(s.jobs.queue_counters.is_empty() && s.jobs.by_id.is_empty());
    assert_eq!(s.jobs.held_bytes(), 0);
    assert!(s.audit.iter().all(|a| a.action == "job.cancel"), "the leader's compaction is not audited");
    assert_indices(&s);
}

#[test]
fn queue_numbers_come_from_the_indices() {
    let mut s = at5();
    enqueue(&mut s, 1_000, new_job("q"));
    enqueue(&mut s, 1_500, new_job("q"));
    enqueue(&mut s, 1_500, NewJob { run_after_ms: Some(50_000), ..new_job("q") });
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    one(&mut s, 2_100, JobOp::Complete(finish(&job, "w1"))).unwrap();
    let n = s.jobs.queue_numbers();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].queue, "q");
    assert_eq!(n[0].by_state, [2, 0, 1, 0, 0, 0]);
    assert_eq!(n[0].oldest_ready_ms, Some(1_500));
    assert_eq!((n[0].counters.claims, n[0].counters.completions), (1, 1));
    assert_eq!(s.jobs.count_all(JobState::Queued), 2);
}

#[test]
fn lease_tokens_read_back_their_api_form() {
    let t = LeaseToken { seq: 0x1f, nonce: 0xdead_beef };
    assert_eq!(t.to_string(), "1f-00000000deadbeef");
    assert_eq!("1f-00000000deadbeef".parse::<LeaseToken>().unwrap(), t);
    for bad in ["", "1f", "-1", "1f-", "zz-00", "1-2-3", "+1-2", "11111111111111111-1"] {
        assert_eq!(bad.parse::<LeaseToken>().unwrap_err().kind, ErrorKind::Invalid, "{bad:?}");
    }
}

#[test]
fn jobs_survive_a_snapshot() {
    let mut s = at5();
    let a = enqueue(&mut s, 1_000, NewJob { idempotency_key: Some("k".into()), ..new_job("q") });
    enqueue(&mut s, 1_000, NewJob { run_after_ms: Some(9_000), pool: Some("eu".into()), ..new_job("q") });
    let job = claim(&mut s, 2_000, "w1", &["q"], 1).remove(0);
    assert_eq!(job.id, a);
    one(&mut s, 2_000, JobOp::SetQueueCap { queue: "q".into(), max_queued: Some(7) }).unwrap();
    let back = crate::state::decode_snapshot(&snapshot(&s)).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.jobs.keys.get("k"), Some(&a));
    assert_eq!(back.jobs.expired(u64::MAX, 5), s.jobs.expired(u64::MAX, 5));
    assert_eq!(back.jobs.queue_numbers(), s.jobs.queue_numbers());
    let (_, used) = crate::state::decode_snapshot_prefix(&snapshot(&s)).unwrap();
    assert_eq!(used, snapshot(&s).len());
    let mut with_more = snapshot(&s);
    with_more.extend_from_slice(b"trailer");
    assert_eq!(crate::state::decode_snapshot_prefix(&with_more).unwrap().1, used);
}

/// The index answers what a walk over every job answers.
#[test]
fn next_due_reads_the_pending_index_as_a_walk_would() {
    let mut s = at5();
    let walk = |s: &ControlState, queues: &[String], now: u64| {
        s.jobs
            .by_id
            .values()
            .filter(|j| j.state.is_pending() && j.run_after_ms > now && queues.contains(&j.queue))
            .map(|j| j.run_after_ms)
            .min()
    };
    for i in 0..40u64 {
        let queue = if i % 3 == 0 { "a" } else { "b" };
        let run_after = (i % 4 != 0).then_some(2_000 + (i * 7_919) % 50_000);
        enqueue(&mut s, 1_000 + i, NewJob { run_after_ms: run_after, ..new_job(queue) });
    }
    // Some run, some finish: neither counts as pending any more.
    let taken = claim(&mut s, 30_000, "w1", &["a", "b"], 10);
    for job in taken.iter().take(5) {
        one(&mut s, 30_001, JobOp::Complete(finish(job, "w1"))).unwrap();
    }
    let sets =
        [vec!["a".to_string()], vec!["b".to_string()], vec!["a".to_string(), "b".to_string()], vec!["c".to_string()]];
    for queues in &sets {
        for now in [0, 1_999, 2_000, 10_000, 30_000, 45_000, 60_000] {
            assert_eq!(s.jobs.next_due(queues, now), walk(&s, queues, now), "{queues:?} at {now}");
        }
    }
    assert!(s.jobs.next_due(&sets[2], 10_000).is_some(), "the test has delayed jobs left");
}
