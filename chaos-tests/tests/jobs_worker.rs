//! Issue 20's reference worker on a real 3-node cluster: `engine-room worker
//! run -- sh -c …` runs a command per job (payload on stdin, `JOB_*` env),
//! its output becomes the job's log (counted in the job's `log_lines`), exit 0 completes with the last stdout
//! line as result, exit 65 fails for good, a cancelled job's command is
//! killed when the renewal finds the lease gone, and the worker moves on to
//! another node when the first one it was given dies.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos_tests::cluster::TOKEN;
use chaos_tests::{Options, TestCluster};
use serde_json::{json, Value};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The worker process; killed when the test ends, whatever happens.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn enqueue(c: &TestCluster, via: u64, kind: &str, payload: Value) -> String {
    let body = json!({"queue": "wq", "kind": kind, "payload": payload, "max_attempts": 1});
    let (code, job) = c.post(via, "/api/v1/jobs", body);
    assert_eq!(code, 201, "{job}");
    job["job_id"].as_str().expect("job_id is a string").to_string()
}

fn job_in_state(c: &TestCluster, id: &str, state: &str) -> Value {
    c.eventually(SECS(30), &format!("job {id} {state}"), || {
        let via = c.running()[0];
        let (code, job) = c.get(via, &format!("/api/v1/jobs/{id}"));
        (code == 200 && job["state"] == state).then_some(job)
    })
}

#[test]
fn worker_run_runs_a_command_per_job_and_fails_over() {
    let started = Instant::now();
    let opts = Options::default().env("WORKER_LEASE_TTL_SECONDS", "4").env("WORKER_HEARTBEAT_INTERVAL_SECONDS", "1");
    let mut c = TestCluster::start(3, opts);
    let leader = c.wait_for_leader(SECS(10));
    c.eventually(SECS(20), "cluster format 5 (jobs)", || {
        (c.get(leader, "/api/history?entity=cluster:format").1["format_version"].as_u64()? >= 5).then_some(())
    });
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("slow-finished");
    let script = format!(
        r#"read p; echo "got $p"; echo "kind=$JOB_KIND attempt=$JOB_ATTEMPT queue=$JOB_QUEUE" >&2
case "$JOB_KIND" in
  bad) exit 65 ;;
  slow) sleep 6; touch {}; exit 0 ;;
esac
echo '{{"done": '"$JOB_ID"'}}'"#,
        marker.display()
    );
    // Node 1 first: the failover below kills it.
    let nodes = (1..=3).map(|n| c.url(n)).collect::<Vec<_>>().join(",");
    let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    let _worker = Worker(
        Command::new(chaos_tests::binary())
            .args([
                "worker",
                "run",
                "--queue",
                "wq",
                "--nodes",
                &nodes,
                "--worker-id",
                "sh-worker",
                "--concurrency",
                "2",
            ])
            .args(["--renew-every", "1", "--lease-ttl", "4", "--wait-ms", "2000", "--", "sh", "-c", &script])
            .env("CONTROL_PLANE_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the worker"),
    );
    let worker_log = || std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();

    // Exit 0: succeeded, the last stdout line is the result, output is the log.
    let ok = enqueue(&c, leader, "ok", json!({"to": "a@b"}));
    let job = job_in_state(&c, &ok, "succeeded");
    assert_eq!(job["result"], json!({"done": ok.parse::<u64>().unwrap()}), "{job} / {}", worker_log());
    // Three lines (stdout "got …", stderr "kind=…", the result line) reached the job's log.
    assert!(job["log_lines"].as_u64().unwrap_or(0) >= 3, "{job}");

    // Exit 65: dead at once, whatever max_attempts says.
    let bad = enqueue(&c, leader, "bad", json!({}));
    let job = job_in_state(&c, &bad, "dead");
    assert!(job["error"].as_str().unwrap_or("").contains("exited with 65"), "{job}");

    // A cancelled job's command is killed: its marker never appears.
    let slow = enqueue(&c, leader, "slow", json!({}));
    job_in_state(&c, &slow, "running");
    let (code, body) = c.post(leader, &format!("/api/v1/jobs/{slow}/cancel"), json!({"reason": "test"}));
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(SECS(8));
    assert!(!marker.exists(), "the command of a job whose lease was lost was killed; {}", worker_log());

    // Failover: node 1 (first in --nodes) dies; jobs still flow.
    c.kill(1);
    let via = c.wait_for_leader(SECS(20));
    let after = enqueue(&c, via, "ok", json!({"after": "failover"}));
    job_in_state(&c, &after, "succeeded");
    assert!(started.elapsed() < SECS(120), "took {:?}", started.elapsed());
}
