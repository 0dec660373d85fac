//! The jobs pages: counts per queue, the filtered table of jobs (newest
//! first, paged by cursor), one job's detail, and the overview's jobs card.
//! Everything a job carries (payload, result, error, progress, log lines) is
//! user data: it reaches the page only through askama's escaping.

use std::collections::HashMap;

use askama::Template;
use model::state::job::{Attempt, AttemptOutcome, Job, JobId, JobState, Jobs};
use model::views::QueueStats;
use serde::Serialize;

use crate::format::{age, ago, clip, cut, metric, relative, thousands, utc};
use crate::pages::{encode, render, Chrome};

/// Rows the table shows unless the operator picks another size.
pub const PAGE: usize = 200;
/// Largest page.
pub const MAX_PAGE: usize = 500;
/// Jobs one table render examines at most: past it, the page ends early and
/// "more" continues from where the scan stopped, so a filter that matches
/// little costs a bounded amount per refresh.
pub const MAX_SCAN: usize = 100_000;
/// Characters of an error shown in a table cell.
const ERROR_CELL: usize = 120;
/// Longest filter value kept (queue, kind and worker names are short).
const MAX_FILTER: usize = 200;

// ---------------------------------------------------------------- counts

/// One queue's jobs by state, and what an operator set on it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct QueueCard {
    pub name: String,
    pub queued: u64,
    pub running: u64,
    /// Failed, waiting for a retry.
    pub failed: u64,
    pub dead: u64,
    pub succeeded: u64,
    pub cancelled: u64,
    /// How long the longest-waiting claimable job has waited (`–` when none).
    pub oldest_queued: String,
    pub paused: bool,
    /// Claims per minute as this node measured them (`–` until it has).
    pub claims_per_minute: String,
    pub claims: u64,
}

/// Job counts over every queue, for the overview's card and its live stream.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct JobTotals {
    pub queued: u64,
    pub running: u64,
    pub failed: u64,
    pub dead: u64,
    pub succeeded: u64,
    pub cancelled: u64,
    /// Claims committed over the cluster's life, for a rate.
    pub claims: u64,
    pub completions: u64,
    /// Claims per minute over every queue as this node measured them (null until it has).
    pub claims_per_minute: Option<f64>,
    pub queues: u64,
    pub paused_queues: u64,
}

impl JobTotals {
    /// The claim rate for the card: `12`, `0.50`, or `–`.
    pub fn claims_rate(&self) -> String {
        per_minute(self.claims_per_minute)
    }
}

/// The totals and the per-queue cards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobsSummary {
    pub totals: JobTotals,
    pub queues: Vec<QueueCard>,
}

/// A rate for a card: `12`, `0.50`, or `–` when not measured yet.
fn per_minute(rate: Option<f64>) -> String {
    rate.map(metric).unwrap_or_else(|| "–".into())
}

/// The jobs by queue and state, from the model's indices (no walk over the
/// jobs); `claims_per_minute` gives a queue's measured claim rate.
pub fn summarize(jobs: &Jobs, now_ms: u64, claims_per_minute: &dyn Fn(&str) -> Option<f64>) -> JobsSummary {
    let stats = QueueStats::of_all(jobs, now_ms);
    let mut t = JobTotals { claims: jobs.totals.claims, completions: jobs.totals.completions, ..Default::default() };
    let queues = stats
        .into_iter()
        .map(|q| {
            let n = &q.length;
            t.queued += n.queued;
            t.running += n.running;
            t.failed += n.failed;
            t.dead += n.dead;
            t.succeeded += n.succeeded;
            t.cancelled += n.cancelled;
            t.queues += 1;
            t.paused_queues += u64::from(q.paused);
            let rate = claims_per_minute(&q.queue);
            if let Some(r) = rate {
                *t.claims_per_minute.get_or_insert(0.0) += r;
            }
            QueueCard {
                queued: n.queued,
                running: n.running,
                failed: n.failed,
                dead: n.dead,
                succeeded: n.succeeded,
                cancelled: n.cancelled,
                oldest_queued: q.oldest_queued_age_ms.map(age).unwrap_or_else(|| "–".into()),
                paused: q.paused,
                claims_per_minute: per_minute(rate),
                claims: q.claims,
                name: q.queue,
            }
        })
        .collect();
    JobsSummary { totals: t, queues }
}

// ---------------------------------------------------------------- table

/// The filters of the jobs table, as typed by the operator ("" = any), with
/// the same names as `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFilter {
    pub queue: String,
    pub state: String,
    pub kind: String,
    pub worker: String,
    pub limit: usize,
    /// Show jobs older than this one (ids below it); `None` = from the newest.
    pub cursor: Option<JobId>,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            queue: String::new(),
            state: String::new(),
            kind: String::new(),
            worker: String::new(),
            limit: PAGE,
            cursor: None,
        }
    }
}

impl JobFilter {
    /// The filter from a page's query, cleaned: an unknown state means any,
    /// the size is clamped, an unreadable cursor starts from the newest.
    pub fn from_query(query: &HashMap<String, String>) -> JobFilter {
        let get = |k: &str| {
            let v = query.get(k).map(|v| v.trim()).unwrap_or_default();
            cut(v, MAX_FILTER).to_string()
        };
        let state = get("state");
        JobFilter {
            queue: get("queue"),
            state: if JobState::parse(&state).is_some() { state } else { String::new() },
            kind: get("kind"),
            worker: get("worker"),
            limit: get("limit").parse().unwrap_or(PAGE).clamp(1, MAX_PAGE),
            cursor: get("cursor").parse().ok(),
        }
    }

    /// The query string for this filter from `cursor` on.
    pub fn query(&self, cursor: Option<JobId>) -> String {
        let mut parts = Vec::new();
        for (k, v) in [("queue", &self.queue), ("state", &self.state), ("kind", &self.kind), ("worker", &self.worker)] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if self.limit != PAGE {
            parts.push(format!("limit={}", self.limit));
        }
        if let Some(c) = cursor {
            parts.push(format!("cursor={c}"));
        }
        parts.join("&")
    }

    /// Whether a filter field is set (the empty table then says so).
    pub fn is_filtered(&self) -> bool {
        !(self.queue.is_empty() && self.state.is_empty() && self.kind.is_empty() && self.worker.is_empty())
    }

    fn matches(&self, job: &Job) -> bool {
        (self.queue.is_empty() || job.queue == self.queue)
            && (self.state.is_empty() || job.state.as_str() == self.state)
            && (self.kind.is_empty() || job.kind == self.kind)
            && (self.worker.is_empty()
                || job.lease.as_ref().is_some_and(|l| l.worker == self.worker)
                || job.attempts.iter().any(|a| a.worker == self.worker))
    }
}

/// One job as a table row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub state: &'static str,
    pub priority: i32,
    /// `attempts started / max_attempts`.
    pub attempts: String,
    /// The lease holder while running, else the last attempt's worker.
    pub worker: String,
    pub created: String,
    pub updated: String,
    /// The error, cut for a table cell.
    pub error: String,
    pub can_cancel: bool,
    pub can_requeue: bool,
}

/// Whether an operator may cancel a job in this state.
pub fn cancellable(s: JobState) -> bool {
    !s.is_finished()
}

/// Whether an operator may requeue a job in this state.
pub fn requeueable(s: JobState) -> bool {
    matches!(s, JobState::Dead | JobState::Failed | JobState::Cancelled)
}

impl JobRow {
    pub fn new(job: &Job, now_ms: u64) -> Self {
        let worker = match (&job.lease, job.attempts.last()) {
            (Some(l), _) => l.worker.clone(),
            (None, Some(a)) => a.worker.clone(),
            (None, None) => String::new(),
        };
        JobRow {
            id: job.id,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            state: job.state.as_str(),
            priority: job.priority,
            attempts: format!("{}/{}", job.attempt_count, job.max_attempts),
            worker,
            created: ago(job.created_ms, now_ms),
            updated: ago(job.updated_ms, now_ms),
            error: job.error.as_deref().map(|e| clip(e, ERROR_CELL)).unwrap_or_default(),
            can_cancel: cancellable(job.state),
            can_requeue: requeueable(job.state),
        }
    }
}

/// One page of the jobs table, the counts above it, and what the pager needs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResults {
    pub queues: Vec<QueueCard>,
    pub rows: Vec<JobRow>,
    pub filter: JobFilter,
    /// Where "more" continues, when there is more to see.
    pub next_cursor: Option<JobId>,
    /// The scan stopped at [`MAX_SCAN`] jobs before filling the page.
    pub scan_capped: bool,
    /// Controls are left out (a `read` token).
    pub read_only: bool,
}

impl JobResults {
    pub fn next_query(&self) -> Option<String> {
        self.next_cursor.map(|c| self.filter.query(Some(c)))
    }
    /// The query of the newest page with the same filter, when not on it.
    pub fn newest_query(&self) -> Option<String> {
        self.filter.cursor.map(|_| self.filter.query(None))
    }
}

/// The page of jobs `filter` selects, newest first: at most `filter.limit`
/// rows, examining at most [`MAX_SCAN`] jobs.
pub fn select(jobs: &Jobs, filter: &JobFilter, now_ms: u64) -> (Vec<JobRow>, Option<JobId>, bool) {
    let upper = filter.cursor.unwrap_or(JobId::MAX);
    let mut rows = Vec::new();
    for (scanned, job) in jobs.by_id.range(..upper).rev().map(|(_, j)| j).enumerate() {
        if scanned == MAX_SCAN {
            // Continue from this job, the first not examined.
            return (rows, Some(job.id.saturating_add(1)), true);
        }
        if !filter.matches(job) {
            continue;
        }
        if rows.len() == filter.limit {
            let last = rows.last().map_or(upper, |r: &JobRow| r.id);
            return (rows, Some(last), false);
        }
        rows.push(JobRow::new(job, now_ms));
    }
    (rows, None, false)
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage<'a> {
    chrome: &'a Chrome,
    results: &'a JobResults,
    queue_names: Vec<&'a str>,
    states: [&'static str; 6],
}

/// The Jobs page: filters, the per-queue cards, the table.
pub fn jobs_page(chrome: &Chrome, results: &JobResults) -> String {
    render(&JobsPage {
        chrome,
        results,
        queue_names: results.queues.iter().map(|q| q.name.as_str()).collect(),
        states: JobState::ALL.map(JobState::as_str),
    })
}

#[derive(Template)]
#[template(path = "job_results.html")]
struct JobResultsFragment<'a> {
    results: &'a JobResults,
}

/// Just the cards and the table, swapped in by the page's script on filter,
/// refresh and after an action.
pub fn job_results(results: &JobResults) -> String {
    render(&JobResultsFragment { results })
}

// ---------------------------------------------------------------- detail

/// The current lease of a running job.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub worker: String,
    /// The fencing token, shortened: enough to tell two apart, not to use one.
    pub token: String,
    pub expires: String,
    pub expired: bool,
}

/// One attempt as a table row.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub n: u32,
    pub worker: String,
    pub claimed: String,
    pub ended: String,
    pub took: String,
    pub outcome: &'static str,
    /// The badge's class suffix.
    pub class: &'static str,
    pub error: String,
}

impl AttemptRow {
    pub fn new(a: &Attempt, now_ms: u64) -> Self {
        let (outcome, class, error) = match &a.outcome {
            AttemptOutcome::Running => ("running", "running", String::new()),
            AttemptOutcome::Succeeded => ("succeeded", "succeeded", String::new()),
            AttemptOutcome::Failed { error, retryable: true } => ("failed", "failed", error.clone()),
            AttemptOutcome::Failed { error, retryable: false } => ("failed (final)", "dead", error.clone()),
            AttemptOutcome::Expired => ("expired", "failed", "lease expired".into()),
            AttemptOutcome::Cancelled => ("cancelled", "cancelled", String::new()),
        };
        AttemptRow {
            n: a.n,
            worker: a.worker.clone(),
            claimed: utc(a.claimed_ms),
            ended: a.ended_ms.map(utc).unwrap_or_default(),
            took: age(a.ended_ms.unwrap_or(now_ms).saturating_sub(a.claimed_ms)),
            outcome,
            class,
            error,
        }
    }
}

/// Where a job's log lines are.
#[derive(Debug, Clone, PartialEq)]
pub enum JobLogs {
    /// The lines read from the log store (oldest first), and whether more
    /// follow past them.
    Lines { lines: Vec<LogLine>, more: bool },
    /// Not readable on this page: the API path that serves them.
    At(String),
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at: String,
    pub text: String,
}

/// JSON text indented for reading; other text as it is.
pub fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

/// `seq-nonce` → `seq-` and the nonce's first four hex digits, then `…`.
pub fn short_token(token: &model::state::job::LeaseToken) -> String {
    let full = token.to_string();
    let (seq, nonce) = full.split_once('-').unwrap_or((&full, ""));
    format!("{seq}-{}…", &nonce[..nonce.len().min(4)])
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobDetailPage<'a> {
    chrome: &'a Chrome,
    row: JobRow,
    job: &'a Job,
    payload: String,
    result: String,
    lease: Option<LeaseView>,
    attempts: Vec<AttemptRow>,
    run_after: String,
    created: String,
    updated: String,
    finished: String,
    log_lines: String,
    log_bytes: String,
    logs: &'a JobLogs,
}

/// A job's detail page: its facts, payload and result, lease, attempts and logs.
pub fn job_page(chrome: &Chrome, job: &Job, now_ms: u64, logs: &JobLogs) -> String {
    let at = |ms: u64| format!("{} ({})", utc(ms), relative(ms, now_ms));
    render(&JobDetailPage {
        chrome,
        row: JobRow::new(job, now_ms),
        job,
        payload: pretty_json(&job.payload),
        result: job.result.as_deref().map(pretty_json).unwrap_or_default(),
        lease: job.lease.as_ref().map(|l| LeaseView {
            worker: l.worker.clone(),
            token: short_token(&l.token),
            expires: at(l.expires_ms),
            expired: l.expires_ms <= now_ms,
        }),
        attempts: job.attempts.iter().rev().map(|a| AttemptRow::new(a, now_ms)).collect(),
        run_after: at(job.run_after_ms),
        created: at(job.created_ms),
        updated: at(job.updated_ms),
        finished: job.finished_ms.map(at).unwrap_or_default(),
        log_lines: thousands(u64::from(job.log_lines)),
        log_bytes: thousands(job.log_bytes),
        logs,
    })
}

#[cfg(test)]
mod tests {
    use model::state::job::{Backoff, Claim, Finish, JobOp, JobOps, JobReply, Lease, LeaseToken, NewJob};
    use model::{Command, CommandError, ControlState, Reply, Request};

    use super::*;

    fn job(id: JobId, queue: &str, kind: &str, state: JobState) -> Job {
        Job {
            id,
            queue: queue.into(),
            kind: kind.into(),
            payload: r#"{"to":"a@example.com"}"#.into(),
            priority: 0,
            pool: None,
            run_after_ms: 0,
            idempotency_key: None,
            max_attempts: 3,
            backoff: Backoff { base_ms: 1_000, max_ms: 60_000 },
            state,
            attempts: vec![],
            attempt_count: 0,
            lease: None,
            result: None,
            error: None,
            progress: None,
            created_ms: id * 1_000,
            updated_ms: id * 1_000,
            finished_ms: None,
            log_lines: 0,
            log_bytes: 0,
        }
    }

    fn jobs(list: Vec<Job>) -> Jobs {
        let mut j = Jobs::default();
        for job in list {
            j.by_id.insert(job.id, Box::new(job));
        }
        j.reindex();
        j
    }

    fn running(mut j: Job, worker: &str) -> Job {
        j.lease = Some(Lease {
            worker: worker.into(),
            token: LeaseToken { seq: 0x2a, nonce: 0xdead_beef },
            expires_ms: 90_000,
        });
        j.attempt_count = 1;
        j.attempts.push(Attempt {
            n: 1,
            worker: worker.into(),
            claimed_ms: 30_000,
            ended_ms: None,
            outcome: AttemptOutcome::Running,
        });
        j
    }

    fn apply(st: &mut ControlState, at_ms: u64, ops: Vec<JobOp>) -> Vec<Result<JobReply, CommandError>> {
        let req = Request { at_ms, node: 1, actor: "t".into(), command: Command::Jobs(JobOps { ops }) };
        match st.apply(&req).expect("applies") {
            Reply::Jobs(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn enqueue(queue: &str) -> JobOp {
        JobOp::Enqueue(NewJob {
            queue: queue.into(),
            kind: "send".into(),
            payload: "{}".into(),
            priority: 0,
            pool: None,
            run_after_ms: None,
            idempotency_key: None,
            max_attempts: 1,
            backoff: Backoff { base_ms: 1_000, max_ms: 1_000 },
        })
    }

    #[test]
    fn counts_per_queue_with_oldest_queued_and_paused_queues() {
        let mut st = ControlState { format_version: model::state::FORMAT_VERSION, ..ControlState::default() };
        let ok = |r: Vec<Result<JobReply, CommandError>>| r.into_iter().all(|x| x.is_ok());
        assert!(ok(apply(&mut st, 1_000, vec![enqueue("mail"), enqueue("mail"), enqueue("mail"), enqueue("bulk")])));
        let claim = JobOp::Claim(Claim {
            worker: "w1".into(),
            queues: vec!["mail".into()],
            max_jobs: 1,
            lease_ms: 60_000,
            nonce: 9,
        });
        let claimed = apply(&mut st, 2_000, vec![claim]);
        let Ok(JobReply::Claimed { jobs }) = &claimed[0] else { panic!("{claimed:?}") };
        let (id, lease) = (jobs[0].id, jobs[0].lease.clone().expect("lease").token);
        let fail = Finish {
            job_id: id,
            worker: "w1".into(),
            lease,
            result: None,
            error: Some("boom".into()),
            retryable: false,
            logs: vec![],
        };
        assert!(ok(apply(
            &mut st,
            3_000,
            vec![JobOp::Fail(fail), JobOp::SetQueuePaused { queue: "bulk".into(), paused: true }]
        )));
        let rate = |q: &str| (q == "mail").then_some(1.5);
        let s = summarize(&st.jobs, 61_000, &rate);
        assert_eq!(s.queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(), ["bulk", "mail"]);
        let (bulk, mail) = (&s.queues[0], &s.queues[1]);
        assert_eq!((mail.queued, mail.running, mail.dead, mail.failed), (2, 0, 1, 0));
        assert_eq!(mail.oldest_queued, "1m", "queued since 1 s, at 61 s");
        assert_eq!((mail.claims, mail.claims_per_minute.as_str(), bulk.claims_per_minute.as_str()), (1, "1.50", "–"));
        assert!(bulk.paused && bulk.queued == 1 && !mail.paused);
        let t = &s.totals;
        assert_eq!((t.queued, t.running, t.failed, t.dead, t.succeeded), (3, 0, 0, 1, 0));
        assert_eq!((t.queues, t.paused_queues, t.claims, t.claims_rate().as_str()), (2, 1, 1, "1.50"));
    }

    #[test]
    fn select_is_newest_first_filtered_and_continues_at_the_cursor() {
        let mut list: Vec<Job> =
            (1..=10).map(|i| job(i, if i % 2 == 0 { "a" } else { "b" }, "k", JobState::Queued)).collect();
        list[6] = running(job(7, "b", "other", JobState::Running), "w-7");
        let js = jobs(list);
        let f = JobFilter { queue: "b".into(), limit: 2, ..Default::default() };
        let (rows, next, capped) = select(&js, &f, 20_000);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [9, 7]);
        assert_eq!((next, capped), (Some(7), false));
        let (rows, next, _) = select(&js, &JobFilter { cursor: next, ..f.clone() }, 20_000);
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [5, 3]);
        let (rows, last, _) = select(&js, &JobFilter { cursor: next, ..f.clone() }, 20_000);
        assert_eq!((rows.iter().map(|r| r.id).collect::<Vec<_>>(), last), (vec![1], None), "nothing after the last");
        let by = |f: JobFilter| select(&js, &f, 20_000).0.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(by(JobFilter { worker: "w-7".into(), ..Default::default() }), [7]);
        assert_eq!(by(JobFilter { kind: "other".into(), ..Default::default() }), [7]);
        assert_eq!(by(JobFilter { state: "running".into(), ..Default::default() }), [7]);
        assert_eq!(by(JobFilter { queue: "none".into(), ..Default::default() }), Vec::<JobId>::new());
        let row = &select(&js, &JobFilter { worker: "w-7".into(), ..Default::default() }, 20_000).0[0];
        assert_eq!(
            (row.worker.as_str(), row.attempts.as_str(), row.can_cancel, row.can_requeue),
            ("w-7", "1/3", true, false)
        );
    }

    #[test]
    fn filter_from_query_cleans_and_round_trips() {
        let q: HashMap<String, String> =
            [("queue", " mail & co "), ("state", "bogus"), ("kind", "send"), ("limit", "100000"), ("cursor", "42")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let f = JobFilter::from_query(&q);
        assert_eq!((f.queue.as_str(), f.state.as_str(), f.limit, f.cursor), ("mail & co", "", MAX_PAGE, Some(42)));
        assert_eq!(f.query(Some(7)), "queue=mail%20%26%20co&kind=send&limit=500&cursor=7");
        assert_eq!(JobFilter::default().query(None), "");
        assert!(!JobFilter::default().is_filtered() && f.is_filtered());
        let long: HashMap<String, String> = [("worker".to_string(), "w".repeat(5_000))].into();
        assert_eq!(JobFilter::from_query(&long).worker.len(), MAX_FILTER, "filter values are capped");
    }

    #[test]
    fn detail_helpers_shorten_tokens_and_indent_json() {
        assert_eq!(short_token(&LeaseToken { seq: 0x2a, nonce: 0xdead_beef }), "2a-0000…");
        assert_eq!(short_token(&LeaseToken { seq: 1, nonce: u64::MAX }), "1-ffff…");
        assert_eq!(pretty_json(r#"{"a":[1]}"#), "{\n  \"a\": [\n    1\n  ]\n}");
        assert_eq!(pretty_json("not json <b>"), "not json <b>");
        let a = Attempt {
            n: 2,
            worker: "w".into(),
            claimed_ms: 1_000,
            ended_ms: Some(6_000),
            outcome: AttemptOutcome::Failed { error: "boom".into(), retryable: false },
        };
        let r = AttemptRow::new(&a, 10_000);
        assert_eq!((r.outcome, r.error.as_str(), r.took.as_str()), ("failed (final)", "boom", "5s"));
        assert!(requeueable(JobState::Dead) && !requeueable(JobState::Running) && !cancellable(JobState::Succeeded));
    }

    #[test]
    fn pages_escape_user_data() {
        let chrome = Chrome {
            node_id: 1,
            role: "leader".into(),
            leader: "1".into(),
            term: 1,
            page: "jobs",
            title: "Jobs".into(),
            poll_seconds: 2,
            nodes: vec![],
            removed: false,
            read_only: false,
        };
        let mut j = job(1, "q<script>", "k\"x", JobState::Dead);
        j.payload = r#"{"html":"<img src=x onerror=alert(1)>"}"#.into();
        j.error = Some("<b>bad</b>".into());
        let logs =
            JobLogs::Lines { lines: vec![LogLine { at: "t".into(), text: "<script>x</script>".into() }], more: false };
        let html = job_page(&chrome, &j, 5_000, &logs);
        for raw in ["<img src=x", "<b>bad</b>", "<script>x</script>", "q<script>"] {
            assert!(!html.contains(raw), "unescaped {raw:?}");
        }
        assert!(html.contains("&#60;b&#62;bad&#60;/b&#62;"), "the error is shown, escaped");
        assert!(html.contains(r#"data-job-action="requeue""#), "a dead job offers requeue");
        let js = jobs(vec![j]);
        let f = JobFilter::default();
        let (rows, next_cursor, scan_capped) = select(&js, &f, 5_000);
        let mut results = JobResults {
            queues: summarize(&js, 5_000, &|_| None).queues,
            rows,
            filter: f,
            next_cursor,
            scan_capped,
            read_only: false,
        };
        let page = jobs_page(&chrome, &results);
        assert!(!page.contains("q<script>") && page.contains("q&#60;script&#62;"));
        assert!(page.contains(r#"data-job-action="requeue""#));
        results.read_only = true;
        let fragment = job_results(&results);
        assert!(
            !fragment.contains("data-job-action") && !fragment.contains("data-queue-action"),
            "no controls when read-only"
        );
        let ro = job_page(
            &Chrome { read_only: true, ..chrome },
            &js.by_id[&1],
            5_000,
            &JobLogs::At("/api/v1/jobs/1/logs".into()),
        );
        assert!(!ro.contains("data-job-action") && ro.contains("/api/v1/jobs/1/logs"));
    }
}
