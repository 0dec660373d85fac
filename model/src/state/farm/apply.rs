//! Validation and apply of each farm operation, and the build events that
//! job operations on the `build` queue record. Every operation checks
//! everything before it changes anything, so a refusal leaves the state as
//! it was.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::*;
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};
use crate::state::history::field;
use crate::state::job::{cut, Job, JobOp, JobReply};
use crate::state::ControlState;

/// Most lines, and bytes, one build log keeps.
pub const MAX_LOG_LINES_PER_BUILD: u64 = 100_000;
pub const MAX_LOG_BYTES_PER_BUILD: u64 = 16 << 20;
/// Most cache hits or misses one report adds.
pub const MAX_CACHE_REPORT: u64 = 1_000_000_000;

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorKind::Invalid, message)
}

fn hint_not_found(id: u64) -> CommandError {
    CommandError::new(ErrorKind::NotFound, format!("hint {id} not found"))
}

/// Text without control characters other than tab, within `max` bytes.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), CommandError> {
    if text.len() > max || text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(format!("{what} must be at most {max} bytes without control characters")));
    }
    Ok(())
}

/// A package name, version or run id: 1-128 printable characters without
/// `/`, spaces or NUL (they name paths and store keys).
pub fn check_package(what: &str, s: &str) -> Result<(), CommandError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_PACKAGE_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'!' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{what} must be 1-{MAX_PACKAGE_LEN} characters of [A-Za-z0-9-_.+!~], got {s:?}")))
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), CommandError> {
    if env.len() > MAX_ENV_VARS {
        return Err(invalid(format!("at most {MAX_ENV_VARS} environment variables")));
    }
    for (k, v) in env {
        let name_ok = !k.is_empty()
            && k.len() <= 128
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            return Err(invalid(format!("environment variable names are 1-128 of [A-Za-z0-9_], got {k:?}")));
        }
        check_text("an environment value", v, MAX_ENV_VALUE)?;
    }
    Ok(())
}

impl HintSpec {
    /// Check the recipe and compile the pattern.
    pub fn validate(&self) -> Result<regex::Regex, CommandError> {
        let re = compile(&self.pattern)?;
        check_env(&self.recipe.env)?;
        if self.recipe.extra_requirements.len() > MAX_REQUIREMENTS {
            return Err(invalid(format!("at most {MAX_REQUIREMENTS} extra requirements")));
        }
        for r in &self.recipe.extra_requirements {
            if r.is_empty() {
                return Err(invalid("an extra requirement is empty"));
            }
            check_text("an extra requirement", r, MAX_REQUIREMENT_BYTES)?;
        }
        if self.recipe.note.len() > MAX_NOTE_BYTES || self.recipe.note.contains('\0') {
            return Err(invalid(format!("note must be at most {MAX_NOTE_BYTES} bytes")));
        }
        Ok(re)
    }
}

impl FarmConfig {
    pub fn validate(&self) -> Result<(), CommandError> {
        check_text("python", &self.python, MAX_CONFIG_TEXT)?;
        check_text("platform", &self.platform, MAX_CONFIG_TEXT)?;
        check_text("index_url", &self.index_url, MAX_CONFIG_TEXT)?;
        check_env(&self.env)
    }
}

/// Which build a job is: its payload's `package`, `version` and `run_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildIdentity {
    pub package: String,
    pub version: String,
    pub run_id: Option<String>,
}

/// The build a job is, if it is a build job (queue and kind `build`) whose
/// payload names a valid package and version; other jobs of the queue
/// record no events.
pub fn build_identity(job: &Job) -> Option<BuildIdentity> {
    if job.queue != BUILD_QUEUE || job.kind != BUILD_KIND {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&job.payload).ok()?;
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let (package, version) = (text("package")?, text("version")?);
    check_package("package", &package).ok()?;
    check_package("version", &version).ok()?;
    let run_id = text("run_id").filter(|r| check_package("run_id", r).is_ok());
    Some(BuildIdentity { package, version, run_id })
}

impl Farm {
    /// Append an event, dropping those past the cap or the retention.
    fn record(&mut self, at_ms: u64, job: &Job, kind: EventKind, error: Option<&str>, hints: Vec<u64>) {
        let Some(who) = build_identity(job) else { return };
        let last = job.attempts.last();
        let ended = matches!(kind, EventKind::Succeeded | EventKind::Failed)
            || (kind == EventKind::Retried && job.state == JobState::Failed);
        let duration_ms = last.filter(|_| ended).map(|a| at_ms.saturating_sub(a.claimed_ms));
        let worker = match kind {
            EventKind::Queued | EventKind::Cancelled => None,
            EventKind::Retried if job.state == JobState::Queued => None,
            _ => last.map(|a| a.worker.clone()),
        };
        self.event_seq += 1;
        self.events.push_back(BuildEvent {
            seq: self.event_seq,
            at_ms,
            kind,
            state: job.state,
            job_id: job.id,
            package: who.package,
            version: who.version,
            run_id: who.run_id,
            worker,
            duration_ms,
            error: error.map(|e| cut(e, MAX_EVENT_ERROR).to_string()),
            hints,
        });
        let cutoff = at_ms.saturating_sub(EVENT_RETENTION_MS);
        while self.events.len() > MAX_EVENTS || self.events.front().is_some_and(|e| e.at_ms < cutoff) {
            self.events.pop_front();
        }
    }

    /// The build jobs a clear of the build queue cancels (its pending ones).
    fn pending_builds(jobs: &crate::state::job::Jobs) -> Vec<JobId> {
        jobs.by_id.values().filter(|j| j.queue == BUILD_QUEUE && j.state.is_pending()).map(|j| j.id).collect()
    }

    /// Record the events of one applied job operation.
    pub(crate) fn observe(&mut self, at_ms: u64, op: &JobOp, answer: &JobReply) {
        let failure = |job: &Job| if job.state == JobState::Dead { EventKind::Failed } else { EventKind::Retried };
        match (op, answer) {
            (JobOp::Enqueue(_), JobReply::Enqueued { job, created: true }) => {
                self.record(at_ms, job, EventKind::Queued, None, Vec::new())
            }
            (JobOp::Claim(_), JobReply::Claimed { jobs: started }) => {
                for job in started {
                    self.record(at_ms, job, EventKind::Started, None, Vec::new());
                }
            }
            (JobOp::Complete(_), JobReply::Finished { job, .. }) => {
                self.record(at_ms, job, EventKind::Succeeded, None, Vec::new())
            }
            (JobOp::Fail(f), JobReply::Finished { job, .. }) => {
                let error = job.error.as_deref().unwrap_or("failed");
                let hints = if build_identity(job).is_some() && !self.compiled.0.is_empty() {
                    let mut text =
                        String::with_capacity(error.len() + f.logs.iter().map(|l| l.len() + 1).sum::<usize>());
                    text.push_str(error);
                    for l in &f.logs {
                        text.push('\n');
                        text.push_str(l);
                    }
                    self.matching_hints(&text)
                } else {
                    Vec::new()
                };
                self.record(at_ms, job, failure(job), Some(error), hints)
            }
            (JobOp::Reap { .. }, JobReply::Reaped { job: Some(job) }) => {
                self.record(at_ms, job, failure(job), job.error.as_deref(), Vec::new())
            }
            (JobOp::Cancel { .. }, JobReply::Changed { job }) => {
                self.record(at_ms, job, EventKind::Cancelled, None, Vec::new())
            }
            (JobOp::Requeue { .. }, JobReply::Changed { job }) => {
                self.record(at_ms, job, EventKind::Retried, None, Vec::new())
            }
            _ => {}
        }
    }

    fn put_blob(&mut self, at_ms: u64, kind: BlobKind, body: &str) -> Result<FarmReply, CommandError> {
        if body.len() > MAX_BLOB_BYTES {
            return Err(CommandError::new(
                ErrorKind::TooLarge,
                format!("the {} is over {MAX_BLOB_BYTES} bytes", kind.as_str()),
            ));
        }
        let sha256: String = Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let seq = self.blob_seq.entry(kind).or_insert(0);
        *seq += 1;
        let meta = BlobVersion { version: *seq, sha256, size: body.len() as u64, at_ms };
        let kept = self.blobs.entry(kind).or_default();
        kept.push_back(meta.clone());
        let mut dropped = Vec::new();
        while kept.len() > MAX_BLOB_VERSIONS {
            dropped.extend(kept.pop_front().map(|b| b.version));
        }
        Ok(FarmReply::Blob { kind, meta, dropped })
    }

    fn append_log(&mut self, at_ms: u64, c: &LogChunk) -> Result<FarmReply, CommandError> {
        check_package("package", &c.package)?;
        check_package("version", &c.version)?;
        if c.lines.len() > MAX_CHUNK_LINES {
            return Err(invalid(format!("at most {MAX_CHUNK_LINES} log lines at once")));
        }
        if c.lines.iter().any(|l| l.len() > MAX_LOG_LINE) {
            return Err(invalid(format!("a log line is over {MAX_LOG_LINE} bytes")));
        }
        let max_age_ms = c.keep.max_age_ms.clamp(3_600_000, MAX_LOG_AGE_MS);
        let max_bytes = c.keep.max_bytes.clamp(1 << 20, MAX_LOG_STORE_BYTES);
        let key = (c.package.clone(), c.version.clone());
        let incoming: u64 = c.lines.iter().map(|l| l.len() as u64).sum();
        // The retention first: logs untouched for longer than the age, then
        // the least recently written until the new lines fit, and one more
        // if a new log would pass the count cap. Never the log written to.
        let cutoff = at_ms.saturating_sub(max_age_ms);
        let mut by_age: Vec<(u64, &(String, String))> =
            self.logs.iter().filter(|(k, _)| **k != key).map(|(k, l)| (l.last_ms, k)).collect();
        by_age.sort();
        let mut evicted = Vec::new();
        let (mut bytes, mut count) = (self.log_bytes, self.logs.len());
        for (last_ms, k) in by_age {
            let over_bytes = bytes + incoming > max_bytes;
            let over_count = count >= MAX_LOGS && !self.logs.contains_key(&key);
            if last_ms >= cutoff && !over_bytes && !over_count {
                break;
            }
            bytes -= self.logs[k].bytes;
            count -= 1;
            evicted.push(k.clone());
        }
        for k in &evicted {
            self.logs.remove(k);
        }
        self.log_bytes = bytes;
        if self.logs.len() >= MAX_LOGS && !self.logs.contains_key(&key) {
            return Ok(FarmReply::Logged { first_line: 0, accepted: 0, evicted });
        }
        let log = self.logs.get(&key).copied().unwrap_or(BuildLog { first_ms: at_ms, ..BuildLog::default() });
        let (mut accepted, mut added) = (0u32, 0u64);
        for l in &c.lines {
            let b = l.len() as u64;
            if log.lines + u64::from(accepted) >= MAX_LOG_LINES_PER_BUILD
                || log.bytes + added + b > MAX_LOG_BYTES_PER_BUILD
                || self.log_bytes + added + b > max_bytes
            {
                break;
            }
            accepted += 1;
            added += b;
        }
        if accepted > 0 {
            self.logs.insert(
                key,
                BuildLog {
                    lines: log.lines + u64::from(accepted),
                    bytes: log.bytes + added,
                    first_ms: log.first_ms,
                    last_ms: at_ms,
                },
            );
            self.log_bytes += added;
        }
        Ok(FarmReply::Logged { first_line: log.lines, accepted, evicted })
    }
}

impl ControlState {
    pub(crate) fn farm_op(&mut self, req: &Request, op: &FarmOp) -> Response {
        let at = req.at_ms;
        let reply = match op {
            FarmOp::RequestTrigger { .. } | FarmOp::ClaimTrigger { .. } | FarmOp::RecordTrigger { .. } => {
                return self.trigger_op(req, op)
            }
            FarmOp::CreateHint(spec) => {
                let re = spec.validate()?;
                if self.farm.hints.len() >= MAX_HINTS {
                    return Err(CommandError::new(
                        ErrorKind::Limit,
                        format!("the farm holds at most {MAX_HINTS} hints"),
                    ));
                }
                self.farm.hint_seq += 1;
                let id = self.farm.hint_seq;
                let hint = Hint {
                    id,
                    pattern: spec.pattern.clone(),
                    recipe: spec.recipe.clone(),
                    created_ms: at,
                    updated_ms: at,
                };
                self.farm.hints.insert(id, hint.clone());
                self.farm.compiled.0.insert(id, re);
                self.hint_changed(req, "hint.create", id, Some(&hint.pattern));
                FarmReply::Hint(hint)
            }
            FarmOp::UpdateHint { id, spec } => {
                let re = spec.validate()?;
                let hint = self.farm.hints.get_mut(id).ok_or_else(|| hint_not_found(*id))?;
                hint.pattern = spec.pattern.clone();
                hint.recipe = spec.recipe.clone();
                hint.updated_ms = at;
                let hint = hint.clone();
                self.farm.compiled.0.insert(*id, re);
                self.hint_changed(req, "hint.update", *id, Some(&hint.pattern));
                FarmReply::Hint(hint)
            }
            FarmOp::DeleteHint { id } => {
                self.farm.hints.remove(id).ok_or_else(|| hint_not_found(*id))?;
                self.farm.compiled.0.remove(id);
                self.hint_changed(req, "hint.delete", *id, None);
                FarmReply::HintDeleted { id: *id }
            }
            FarmOp::PutBlob { kind, body } => self.farm.put_blob(at, *kind, body)?,
            FarmOp::AppendLog(chunk) => self.farm.append_log(at, chunk)?,
            FarmOp::CacheReport { hits, misses } => {
                if *hits > MAX_CACHE_REPORT || *misses > MAX_CACHE_REPORT {
                    return Err(invalid(format!("a cache report adds at most {MAX_CACHE_REPORT} hits and misses")));
                }
                let c = &mut self.farm.cache;
                c.hits = c.hits.saturating_add(*hits);
                c.misses = c.misses.saturating_add(*misses);
                FarmReply::Cache(*c)
            }
            FarmOp::SetConfig(config) => {
                config.validate()?;
                self.farm.config = config.clone();
                let strategy = match config.strategy {
                    Strategy::Pinned => "pinned",
                    Strategy::Upgrade => "upgrade",
                };
                self.changed_as(req, "farm.config", "farm:config".into(), vec![field("strategy", strategy)]);
                self.audit_as(req, "farm.config", "farm:config", Some(format!("strategy {strategy}")));
                FarmReply::Config(config.clone())
            }
        };
        Ok(Reply::Farm(reply))
    }

    fn hint_changed(&mut self, req: &Request, action: &str, id: u64, pattern: Option<&str>) {
        let subject = format!("hint:{id}");
        let fields = pattern.map(|p| vec![field("pattern", cut(p, 200))]).unwrap_or_default();
        self.changed_as(req, action, subject.clone(), fields);
        self.audit_as(req, action, &subject, pattern.map(|p| format!("pattern {}", cut(p, 200))));
    }

    /// Apply one job operation and, from format 6, record the build events
    /// it caused.
    pub(crate) fn job_op_observed(&mut self, req: &Request, op: &JobOp) -> Result<JobReply, CommandError> {
        if self.format() < 6 {
            return self.job_op(req, op);
        }
        let cleared: Option<BTreeSet<JobId>> = match op {
            JobOp::ClearQueue { queue } if queue == BUILD_QUEUE => {
                Some(Farm::pending_builds(&self.jobs).into_iter().collect())
            }
            _ => None,
        };
        let answer = self.job_op(req, op)?;
        if let Some(ids) = cleared {
            for id in ids {
                if let Some(job) = self.jobs.by_id.get(&id).filter(|j| j.state == JobState::Cancelled) {
                    let job = (**job).clone();
                    self.farm.record(req.at_ms, &job, EventKind::Cancelled, None, Vec::new());
                }
            }
        } else {
            self.farm.observe(req.at_ms, op, &answer);
        }
        Ok(answer)
    }
}
