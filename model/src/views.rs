//! Typed views of things the model does not hold but every layer shows:
//! the cluster's members as `GET /api/cluster/status` reports them; and the
//! API shapes of jobs (RFC 3339 times, ids as strings, payloads as JSON).

use serde::{Deserialize, Serialize};

use crate::state::job::{AttemptOutcome, Job, JobState, Jobs, QueueConfig, DEFAULT_MAX_QUEUED};
use crate::NodeId;

/// One member as `GET /api/cluster/status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub role: String,
    pub voter: bool,
    pub healthy: bool,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub lag: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub term: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub nodes: Vec<NodeStatus>,
    pub total_nodes: usize,
    pub healthy_nodes: usize,
}

/// One supervised loop as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LoopStatus {
    pub name: String,
    /// `running` (in a round), `idle` (between rounds), `restarting` (after a
    /// panic, waiting out its backoff) or `stopped` (node shutting down).
    pub state: String,
    /// Rounds completed, with or without an error.
    pub runs: u64,
    pub errors: u64,
    pub panics: u64,
    pub last_run_ms: Option<u64>,
    pub last_error: Option<String>,
}

// ---- jobs (cluster format 5) ----

/// A Unix-ms time as UTC calendar fields: (year, month, day, hour, minute,
/// second, millisecond). Civil-from-days (Howard Hinnant's algorithm), so no
/// time-zone crate is needed.
pub fn utc_fields(ms: u64) -> (i64, i64, i64, u64, u64, u64, u64) {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3_600, rem % 3_600 / 60, rem % 60, ms % 1000)
}

/// A Unix-ms time as RFC 3339 UTC with milliseconds (`2026-12-01T16:41:07.250Z`).
pub fn rfc3339(ms: u64) -> String {
    let (y, m, d, h, mi, s, milli) = utc_fields(ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// An RFC 3339 time (`Z` or a `±HH:MM` offset, optional fraction) as Unix
/// ms; `None` for anything else or a time before 1970 or after 9999.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let first3: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = first3.parse().ok()?;
    }
    let offset_min = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if &tz[..1] == "+" { 1 } else { -1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days-from-civil (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60;
    // A time before 1970 is in the past like any other: the epoch.
    Some(u64::try_from(secs.checked_mul(1000)? + frac_ms).unwrap_or(0))
}

/// JSON text as the value it holds (text that is not JSON as a string).
fn json_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// A running job's lease as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LeaseView {
    pub worker_id: String,
    /// Opaque; present it to renew, complete or fail.
    pub lease_token: String,
    pub lease_expires_at: String,
}

/// One attempt of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub worker_id: String,
    pub claimed_at: String,
    pub ended_at: Option<String>,
    /// `running`, `succeeded`, `failed`, `expired` or `cancelled`.
    pub outcome: String,
    pub error: Option<String>,
    pub retryable: Option<bool>,
}

/// A job as `GET /api/v1/jobs/{job_id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobView {
    /// The job's id as a decimal string.
    pub job_id: String,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub priority: i32,
    pub pool: Option<String>,
    pub state: JobState,
    /// Attempts started since the job was (re)queued.
    pub attempts: u32,
    pub max_attempts: u32,
    pub lease: Option<LeaseView>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub progress: Option<String>,
    pub idempotency_key: Option<String>,
    pub run_after: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub log_lines: u32,
    /// The latest attempts, oldest first (at most 20 kept).
    pub attempt_history: Vec<AttemptView>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        JobView {
            job_id: j.id.to_string(),
            queue: j.queue.clone(),
            kind: j.kind.clone(),
            payload: json_value(&j.payload),
            priority: j.priority,
            pool: j.pool.clone(),
            state: j.state,
            attempts: j.attempt_count,
            max_attempts: j.max_attempts,
            lease: j.lease.as_ref().map(|l| LeaseView {
                worker_id: l.worker.clone(),
                lease_token: l.token.to_string(),
                lease_expires_at: rfc3339(l.expires_ms),
            }),
            result: j.result.as_deref().map(json_value),
            error: j.error.clone(),
            progress: j.progress.clone(),
            idempotency_key: j.idempotency_key.clone(),
            run_after: rfc3339(j.run_after_ms),
            created_at: rfc3339(j.created_ms),
            updated_at: rfc3339(j.updated_ms),
            finished_at: j.finished_ms.map(rfc3339),
            log_lines: j.log_lines,
            attempt_history: j
                .attempts
                .iter()
                .map(|a| {
                    let (outcome, error, retryable) = match &a.outcome {
                        AttemptOutcome::Running => ("running", None, None),
                        AttemptOutcome::Succeeded => ("succeeded", None, None),
                        AttemptOutcome::Failed { error, retryable } => {
                            ("failed", Some(error.clone()), Some(*retryable))
                        }
                        AttemptOutcome::Expired => ("expired", None, None),
                        AttemptOutcome::Cancelled => ("cancelled", None, None),
                    };
                    AttemptView {
                        attempt: a.n,
                        worker_id: a.worker.clone(),
                        claimed_at: rfc3339(a.claimed_ms),
                        ended_at: a.ended_ms.map(rfc3339),
                        outcome: outcome.to_string(),
                        error,
                        retryable,
                    }
                })
                .collect(),
        }
    }
}

/// One job of a claim's answer (`POST /internal/worker/claim`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ClaimedJob {
    pub job_id: String,
    pub lease_token: String,
    pub lease_expires_at: String,
    pub queue: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    pub max_attempts: u32,
}

impl ClaimedJob {
    /// The claim's view of a job it started; `None` for a job not running.
    pub fn of(j: &Job) -> Option<ClaimedJob> {
        let l = j.lease.as_ref()?;
        Some(ClaimedJob {
            job_id: j.id.to_string(),
            lease_token: l.token.to_string(),
            lease_expires_at: rfc3339(l.expires_ms),
            queue: j.queue.clone(),
            kind: j.kind.clone(),
            payload: json_value(&j.payload),
            attempt: j.attempt_count,
            max_attempts: j.max_attempts,
        })
    }
}

/// Jobs of one queue by state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StateCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    /// Waiting for a retry.
    pub failed: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl StateCounts {
    fn from_array(a: [u64; 6]) -> Self {
        let [queued, running, succeeded, failed, dead, cancelled] = a;
        StateCounts { queued, running, succeeded, failed, dead, cancelled }
    }

    fn add(&mut self, o: &StateCounts) {
        self.queued += o.queued;
        self.running += o.running;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.dead += o.dead;
        self.cancelled += o.cancelled;
    }
}

/// One queue as `GET /api/v1/queue/stats` shows it (the API adds rates
/// from the totals).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct QueueStats {
    pub queue: String,
    pub paused: bool,
    /// The cap on queued (and failed, waiting) jobs.
    pub max_queued: u32,
    pub length: StateCounts,
    /// How long the longest-waiting claimable job has waited, in ms.
    pub oldest_queued_age_ms: Option<u64>,
    /// Totals since the queue was first seen.
    pub claims: u64,
    pub completions: u64,
    pub failures: u64,
    pub expirations: u64,
    pub dead: u64,
}

impl QueueStats {
    /// Every known queue's numbers at `now_ms`, from the indices (no walk
    /// over the jobs).
    pub fn of_all(jobs: &Jobs, now_ms: u64) -> Vec<QueueStats> {
        jobs.queue_numbers()
            .into_iter()
            .map(|n| {
                let QueueConfig { paused, max_queued } = n.config;
                QueueStats {
                    queue: n.queue,
                    paused,
                    max_queued: max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
                    length: StateCounts::from_array(n.by_state),
                    oldest_queued_age_ms: n.oldest_ready_ms.map(|t| now_ms.saturating_sub(t)),
                    claims: n.counters.claims,
                    completions: n.counters.completions,
                    failures: n.counters.failures,
                    expirations: n.counters.expirations,
                    dead: n.counters.dead,
                }
            })
            .collect()
    }

    /// The sum over `queues` (queue `*`): lengths and totals added, the
    /// oldest age the largest.
    pub fn total(queues: &[QueueStats]) -> QueueStats {
        let mut t = QueueStats { queue: "*".into(), ..QueueStats::default() };
        for q in queues {
            t.length.add(&q.length);
            t.max_queued = t.max_queued.saturating_add(q.max_queued);
            t.oldest_queued_age_ms = t.oldest_queued_age_ms.max(q.oldest_queued_age_ms);
            t.claims += q.claims;
            t.completions += q.completions;
            t.failures += q.failures;
            t.expirations += q.expirations;
            t.dead += q.dead;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::job::{Backoff, JobOp, JobOps, JobReply, NewJob};
    use crate::{Command, ControlState, Reply, Request};

    #[test]
    fn times_are_rfc3339_and_read_back() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_607_267_250), "2025-12-01T16:41:07.250Z");
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        for ms in [0, 1, 951_827_696_789, 1_764_607_267_250, 253_402_300_799_999] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(parse_rfc3339("2025-12-01T17:41:07+01:00"), Some(1_764_607_267_000));
        assert_eq!(parse_rfc3339("2025-12-01T16:41:07.25Z"), Some(1_764_607_267_250));
        assert_eq!(parse_rfc3339("2025-12-01T16:41:07.123456789Z"), Some(1_764_607_267_123));
        for bad in [
            "",
            "2025-12-01",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-12-01T24:00:00Z",
            "2025-12-01T00:00:00",
            "2025-12-01T00:00:00.Z",
            "2025-12-01T00:00:00+1:00",
            "+025-12-01T00:00:00Z",
            "2025-12-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        // A valid time before 1970 is in the past like any other: the epoch.
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(0));
        assert_eq!(parse_rfc3339("0164-02-09T19:57:14Z"), Some(0));
    }

    fn state_with_jobs() -> ControlState {
        let mut s = ControlState { format_version: 5, ..ControlState::default() };
        let new = |queue: &str, payload: &str| {
            JobOp::Enqueue(NewJob {
                queue: queue.into(),
                kind: "email".into(),
                payload: payload.into(),
                priority: 1,
                pool: None,
                run_after_ms: None,
                idempotency_key: Some(format!("{queue}-{payload}")),
                max_attempts: 3,
                backoff: Backoff { base_ms: 100, max_ms: 1_000 },
            })
        };
        let ops = vec![new("a", r#"{"n":1}"#), new("a", "not json"), new("b", "[]")];
        s.apply(&Request { at_ms: 1_000, node: 1, actor: "t".into(), command: Command::Jobs(JobOps { ops }) }).unwrap();
        s
    }

    #[test]
    fn a_job_view_has_the_api_shape() {
        let mut s = state_with_jobs();
        let claim = JobOp::Claim(crate::state::job::Claim {
            worker: "w1".into(),
            queues: vec!["a".into()],
            max_jobs: 1,
            lease_ms: 60_000,
            nonce: 0xabc,
        });
        let r = s.apply(&Request {
            at_ms: 2_000,
            node: 1,
            actor: "w".into(),
            command: Command::Jobs(JobOps { ops: vec![claim] }),
        });
        let Ok(Reply::Jobs(mut answers)) = r else { panic!("{r:?}") };
        let Ok(JobReply::Claimed { jobs }) = answers.remove(0) else { panic!() };
        let v = serde_json::to_value(JobView::from(&jobs[0])).unwrap();
        assert_eq!(v["job_id"], "1");
        assert_eq!(v["payload"], serde_json::json!({"n": 1}));
        assert_eq!(v["state"], "running");
        assert_eq!(v["attempts"], 1);
        assert_eq!(v["lease"]["worker_id"], "w1");
        assert_eq!(v["lease"]["lease_token"], "1-0000000000000abc");
        assert_eq!(v["lease"]["lease_expires_at"], "1970-01-01T00:01:02.000Z");
        assert_eq!(v["created_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(v["finished_at"], serde_json::Value::Null);
        assert_eq!(v["attempt_history"][0]["outcome"], "running");
        let odd = JobView::from(s.jobs.get(2).unwrap());
        assert_eq!(
            odd.payload,
            serde_json::Value::String("not json".into()),
            "text that is not JSON shows as a string"
        );
        assert!(odd.lease.is_none());
        let c = ClaimedJob::of(&jobs[0]).unwrap();
        assert_eq!((c.job_id.as_str(), c.attempt, c.max_attempts), ("1", 1, 3));
        assert!(ClaimedJob::of(s.jobs.get(2).unwrap()).is_none());
    }

    #[test]
    fn queue_stats_count_by_state_and_age() {
        let s = state_with_jobs();
        let stats = QueueStats::of_all(&s.jobs, 61_000);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].queue, "a");
        assert_eq!(stats[0].length.queued, 2);
        assert_eq!(stats[0].oldest_queued_age_ms, Some(60_000));
        assert_eq!(stats[0].max_queued, DEFAULT_MAX_QUEUED);
        let t = QueueStats::total(&stats);
        assert_eq!((t.queue.as_str(), t.length.queued), ("*", 3));
        let v = serde_json::to_value(&stats[1]).unwrap();
        assert_eq!(v["length"]["queued"], 1);
        assert_eq!(v["claims"], 0);
    }
}
