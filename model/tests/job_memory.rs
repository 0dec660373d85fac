//! What a job costs in memory: 100,000 jobs built through apply, the heap
//! measured by a counting allocator, the figure per job and for 1,000,000
//! printed (`cargo nextest run -p model --test job_memory --no-capture`)
//! and held under the bound the module doc of `state::job` states.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use model::state::job::{Backoff, Claim, JobOp, JobOps, NewJob};
use model::{Command, ControlState, Request};

/// Counts the bytes the process holds on the heap.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const JOBS: usize = 100_000;
/// A typical small payload (the benchmark's is about this size).
const PAYLOAD: &str = r#"{"to":"user-000000@example.com","template":"welcome","locale":"en"}"#;

/// The process's resident set in bytes (Linux), for the allocator's own overhead.
fn rss() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

fn apply(state: &mut ControlState, at_ms: u64, ops: Vec<JobOp>) {
    let req = Request { at_ms, node: 1, actor: "mem".into(), command: Command::Jobs(JobOps { ops }) };
    state.apply(&req).expect("accepted");
}

#[test]
fn a_job_costs_well_under_a_kilobyte_beside_its_payload() {
    let mut state = ControlState { format_version: 5, ..ControlState::default() };
    apply(&mut state, 1, vec![JobOp::SetQueueCap { queue: "mail".into(), max_queued: Some(200_000) }]);
    let (before, rss_before) = (HELD.load(Ordering::Relaxed), rss());
    for batch in 0..JOBS / 1_000 {
        let ops = (0..1_000)
            .map(|i| {
                JobOp::Enqueue(NewJob {
                    queue: "mail".into(),
                    kind: "send_email".into(),
                    payload: PAYLOAD.into(),
                    priority: i % 3,
                    pool: None,
                    run_after_ms: None,
                    idempotency_key: Some(format!("order-{batch}-{i}")),
                    max_attempts: 3,
                    backoff: Backoff { base_ms: 1_000, max_ms: 60_000 },
                })
            })
            .collect();
        apply(&mut state, 1_000 + batch as u64, ops);
    }
    // A tenth running (a lease and an attempt each), as under load.
    for round in 0..100u64 {
        let claim = JobOp::Claim(Claim {
            worker: format!("worker-{round:03}"),
            queues: vec!["mail".into()],
            max_jobs: 100,
            lease_ms: 60_000,
            nonce: round,
        });
        apply(&mut state, 200_000 + round, vec![claim]);
    }
    let held = (HELD.load(Ordering::Relaxed) - before) as f64;
    if let (Some(a), Some(b)) = (rss_before, rss()) {
        println!(
            "jobs: resident set grew {:.1} MiB ({:.0} bytes per job)",
            (b - a) / (1 << 20) as f64,
            (b - a) / JOBS as f64
        );
    }
    assert_eq!(state.jobs.by_id.len(), JOBS);
    let per_job = held / JOBS as f64;
    let beside_payload = per_job - PAYLOAD.len() as f64;
    println!(
        "jobs: {JOBS} held {:.1} MiB: {per_job:.0} bytes per job ({beside_payload:.0} beside a {}-byte payload); \
         1,000,000 such jobs: {:.0} MiB",
        held / (1 << 20) as f64,
        PAYLOAD.len(),
        per_job * 1e6 / (1 << 20) as f64
    );
    // The bound the module doc states: about 1 KiB per job beside its
    // payload and result.
    assert!(beside_payload < 1_024.0, "{beside_payload} bytes per job beside its payload");
    assert!(per_job > 300.0, "the count is plausible: {per_job}");
}
