//! Worker triggers (cluster format 7): reference 003's `POST /worker/trigger`
//! and `/worker/smoke` as a leader effect. The API commits a request (with
//! its idempotency key); the leader's loop claims it, runs the local command
//! or posts to the webhook with that key, and commits the outcome. A claim
//! that expires without an outcome (its leader died between sending and
//! recording) is claimed again and sent again with the same key, at most
//! [`MAX_TRIGGER_ATTEMPTS`] times in all. The farm keeps the last
//! [`MAX_TRIGGERS`] triggers; its snapshot part is format 7's section.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorKind, Reply, Request, Response};
use crate::state::job::cut;
use crate::state::ControlState;
use crate::NodeId;

use super::{FarmOp, FarmReply};

/// Triggers kept (finished ones dropped oldest first).
pub const MAX_TRIGGERS: usize = 200;
/// Triggers waiting for an outcome at once; past it a request is refused (429).
pub const MAX_PENDING_TRIGGERS: usize = 16;
/// Sends of one trigger at most (the first and the resends after a failure
/// or an expired claim).
pub const MAX_TRIGGER_ATTEMPTS: u32 = 3;
/// Longest idempotency key.
pub const MAX_TRIGGER_KEY: usize = 128;
/// Longest outcome detail kept.
pub const MAX_TRIGGER_DETAIL: usize = 256;

/// What a trigger asks the worker for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Drain the queue: `{"action":"drain"}`.
    Trigger,
    /// The same request as a dry run: `{"action":"drain","dry_run":true}`.
    Smoke,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Trigger => "trigger",
            TriggerKind::Smoke => "smoke",
        }
    }
}

/// Where a trigger is sent: the leader's configuration decides.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerTarget {
    /// `WORKER_TRIGGER_COMMAND`, run on the leader.
    Command,
    /// `WORKER_WEBHOOK_URL`.
    Webhook,
}

/// How a trigger ended (or its last attempt, while it is pending).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerResult {
    /// The webhook answered 2xx, or the command exited 0.
    Succeeded,
    Failed,
    /// The leader has neither a command nor a webhook configured.
    NotConfigured,
}

impl TriggerResult {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerResult::Succeeded => "succeeded",
            TriggerResult::Failed => "failed",
            TriggerResult::NotConfigured => "not_configured",
        }
    }
}

/// What the leader reports of one attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TriggerOutcome {
    pub result: TriggerResult,
    pub target: Option<TriggerTarget>,
    /// The webhook's HTTP status, or the command's exit status.
    pub code: Option<i32>,
    pub duration_ms: u64,
    /// One short line, at most [`MAX_TRIGGER_DETAIL`] bytes: never the
    /// command's output or the webhook's answer, which may hold secrets.
    pub detail: String,
    /// A failed attempt to be tried again (same key) from then on.
    pub retry_at_ms: Option<u64>,
}

/// Where a trigger stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerState {
    /// Waiting for its (next) send, or being sent under a live claim.
    Pending,
    Succeeded,
    Failed,
    NotConfigured,
}

impl TriggerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerState::Pending => "pending",
            TriggerState::Succeeded => "succeeded",
            TriggerState::Failed => "failed",
            TriggerState::NotConfigured => "not_configured",
        }
    }
}

/// One trigger as the farm keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trigger {
    pub id: u64,
    pub kind: TriggerKind,
    /// Sent as `Idempotency-Key` (`ENGINE_IDEMPOTENCY_KEY` to the command)
    /// with every attempt.
    pub key: String,
    /// The audit actor that asked.
    pub by: String,
    pub requested_ms: u64,
    pub state: TriggerState,
    /// Claims so far (each one a send).
    pub attempts: u32,
    pub claimed_by: Option<NodeId>,
    pub claimed_until_ms: u64,
    pub next_attempt_ms: u64,
    /// The latest recorded attempt's outcome.
    pub outcome: Option<TriggerOutcome>,
    pub outcome_ms: Option<u64>,
}

impl Trigger {
    /// Pending, not under a live claim, and past any retry delay.
    pub fn due(&self, now_ms: u64) -> bool {
        self.state == TriggerState::Pending && self.claimed_until_ms <= now_ms && self.next_attempt_ms <= now_ms
    }

    /// Pending under a claim that has not expired: a send is under way.
    pub fn sending(&self, now_ms: u64) -> bool {
        self.state == TriggerState::Pending && self.claimed_until_ms > now_ms
    }
}

/// The farm's triggers: its format-7 snapshot section, as is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Triggers {
    /// Oldest first (ids ascending).
    pub kept: VecDeque<Trigger>,
    pub seq: u64,
    /// Finished triggers since the farm began, by kind and result.
    pub totals: BTreeMap<(TriggerKind, TriggerResult), u64>,
}

/// What format 7 adds to a snapshot (after format 6's section).
pub(crate) type Section7 = Triggers;

impl Triggers {
    pub fn get(&self, id: u64) -> Option<&Trigger> {
        let i = self.kept.binary_search_by_key(&id, |t| t.id).ok()?;
        self.kept.get(i)
    }

    fn get_mut(&mut self, id: u64) -> Result<&mut Trigger, CommandError> {
        let i = self.kept.binary_search_by_key(&id, |t| t.id).map_err(|_| not_found(id))?;
        Ok(&mut self.kept[i])
    }

    pub fn pending(&self) -> usize {
        self.kept.iter().filter(|t| t.state == TriggerState::Pending).count()
    }

    fn request(&mut self, at: u64, by: &str, kind: TriggerKind, key: &str) -> Result<(Trigger, bool), CommandError> {
        check_key(key)?;
        if let Some(t) = self.kept.iter().find(|t| t.key == key) {
            if t.kind != kind {
                return Err(conflict(format!("key {key:?} names trigger {} of kind {}", t.id, t.kind.as_str())));
            }
            return Ok((t.clone(), false));
        }
        if self.pending() >= MAX_PENDING_TRIGGERS {
            return Err(CommandError::new(
                ErrorKind::Limit,
                format!("{MAX_PENDING_TRIGGERS} triggers are waiting for an outcome already"),
            ));
        }
        self.seq += 1;
        let t = Trigger {
            id: self.seq,
            kind,
            key: key.to_string(),
            by: by.to_string(),
            requested_ms: at,
            state: TriggerState::Pending,
            attempts: 0,
            claimed_by: None,
            claimed_until_ms: 0,
            next_attempt_ms: 0,
            outcome: None,
            outcome_ms: None,
        };
        self.kept.push_back(t.clone());
        // Pending ones stay (at most MAX_PENDING_TRIGGERS, far below the cap).
        while self.kept.len() > MAX_TRIGGERS {
            match self.kept.iter().position(|t| t.state != TriggerState::Pending) {
                Some(i) => drop(self.kept.remove(i)),
                None => break,
            }
        }
        Ok((t, true))
    }

    fn claim(&mut self, at: u64, node: NodeId, id: u64, until_ms: u64) -> Result<Trigger, CommandError> {
        let t = self.get_mut(id)?;
        if t.state != TriggerState::Pending {
            return Err(conflict(format!("trigger {id} is {} already", t.state.as_str())));
        }
        if !t.due(at) {
            return Err(conflict(format!("trigger {id} is claimed or waits for its retry")));
        }
        if t.attempts >= MAX_TRIGGER_ATTEMPTS {
            return Err(conflict(format!("trigger {id} was sent {MAX_TRIGGER_ATTEMPTS} times already")));
        }
        if until_ms <= at {
            return Err(invalid("a claim must end after it is made"));
        }
        t.attempts += 1;
        t.claimed_by = Some(node);
        t.claimed_until_ms = until_ms;
        Ok(t.clone())
    }

    fn record(&mut self, at: u64, id: u64, attempt: u32, o: &TriggerOutcome) -> Result<Trigger, CommandError> {
        if o.detail.len() > MAX_TRIGGER_DETAIL || o.detail.chars().any(char::is_control) {
            return Err(invalid(format!("detail must be at most {MAX_TRIGGER_DETAIL} bytes on one line")));
        }
        if o.retry_at_ms.is_some() && o.result != TriggerResult::Failed {
            return Err(invalid("only a failed attempt is retried"));
        }
        let t = self.get_mut(id)?;
        if t.state != TriggerState::Pending {
            return Err(conflict(format!("trigger {id} is {} already", t.state.as_str())));
        }
        if attempt == 0 || attempt != t.attempts {
            return Err(conflict(format!("attempt {attempt} of trigger {id} is not its latest ({})", t.attempts)));
        }
        t.outcome = Some(o.clone());
        t.outcome_ms = Some(at);
        t.claimed_until_ms = 0;
        match o.retry_at_ms.filter(|_| t.attempts < MAX_TRIGGER_ATTEMPTS) {
            Some(retry) => t.next_attempt_ms = retry,
            None => {
                t.state = match o.result {
                    TriggerResult::Succeeded => TriggerState::Succeeded,
                    TriggerResult::Failed => TriggerState::Failed,
                    TriggerResult::NotConfigured => TriggerState::NotConfigured,
                };
                let t = t.clone();
                *self.totals.entry((t.kind, o.result)).or_insert(0) += 1;
                return Ok(t);
            }
        }
        Ok(t.clone())
    }
}

/// An idempotency key: 1-128 characters of `[A-Za-z0-9-_.:]`.
pub fn check_key(key: &str) -> Result<(), CommandError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_TRIGGER_KEY
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("an idempotency key is 1-{MAX_TRIGGER_KEY} characters of [A-Za-z0-9-_.:]")))
    }
}

fn invalid(message: impl Into<String>) -> CommandError {
    CommandError::new(ErrorKind::Invalid, message)
}

fn conflict(message: String) -> CommandError {
    CommandError::new(ErrorKind::Conflict, message)
}

fn not_found(id: u64) -> CommandError {
    CommandError::new(ErrorKind::NotFound, format!("trigger {id} not found"))
}

impl ControlState {
    /// Apply one trigger operation (the farm's dispatch sends them here).
    pub(crate) fn trigger_op(&mut self, req: &Request, op: &FarmOp) -> Response {
        let at = req.at_ms;
        let triggers = &mut self.farm.triggers;
        let reply = match op {
            FarmOp::RequestTrigger { kind, key } => {
                let (trigger, created) = triggers.request(at, &req.actor, *kind, key)?;
                if created {
                    let action = format!("farm.{}", kind.as_str());
                    let subject = format!("trigger:{}", trigger.id);
                    self.audit_as(req, &action, &subject, Some(format!("key {}", cut(key, 64))));
                }
                FarmReply::Trigger { trigger, created }
            }
            FarmOp::ClaimTrigger { id, until_ms } => {
                FarmReply::Trigger { trigger: triggers.claim(at, req.node, *id, *until_ms)?, created: false }
            }
            FarmOp::RecordTrigger { id, attempt, outcome } => {
                FarmReply::Trigger { trigger: triggers.record(at, *id, *attempt, outcome)?, created: false }
            }
            other => return Err(invalid(format!("not a trigger operation: {other:?}"))),
        };
        Ok(Reply::Farm(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn at7() -> ControlState {
        ControlState { format_version: 7, ..ControlState::default() }
    }

    fn op(s: &mut ControlState, at_ms: u64, node: NodeId, op: FarmOp) -> Result<(Trigger, bool), CommandError> {
        let req = Request { at_ms, node, actor: "token:ops".into(), command: Command::Farm(op) };
        s.apply(&req).map(|r| match r {
            Reply::Farm(FarmReply::Trigger { trigger, created }) => (trigger, created),
            other => panic!("unexpected reply {other:?}"),
        })
    }

    fn ask(s: &mut ControlState, at: u64, key: &str) -> Result<(Trigger, bool), CommandError> {
        op(s, at, 1, FarmOp::RequestTrigger { kind: TriggerKind::Trigger, key: key.into() })
    }

    fn outcome(result: TriggerResult, retry_at_ms: Option<u64>) -> TriggerOutcome {
        TriggerOutcome {
            result,
            target: Some(TriggerTarget::Webhook),
            code: Some(if result == TriggerResult::Succeeded { 202 } else { 503 }),
            duration_ms: 40,
            detail: "webhook answered".into(),
            retry_at_ms,
        }
    }

    #[test]
    fn triggers_wait_for_format_seven() {
        let mut s = ControlState { format_version: 6, ..ControlState::default() };
        let e = ask(&mut s, 1, "k-1").unwrap_err();
        assert!(e.message.contains("needs cluster format 7"), "{e:?}");
        assert_eq!(s, ControlState { format_version: 6, ..ControlState::default() });
    }

    #[test]
    fn a_request_is_audited_once_and_its_key_answers_the_same_trigger() {
        let mut s = at7();
        let (t, created) = ask(&mut s, 10, "ci-run-7").unwrap();
        assert!(created);
        assert_eq!((t.id, t.state, t.attempts, t.by.as_str()), (1, TriggerState::Pending, 0, "token:ops"));
        let (again, created) = ask(&mut s, 20, "ci-run-7").unwrap();
        assert!(!created);
        assert_eq!(again, t, "the same key is the same trigger, not a second one");
        let smoke = FarmOp::RequestTrigger { kind: TriggerKind::Smoke, key: "ci-run-7".into() };
        let before = s.clone();
        assert_eq!(op(&mut s, 30, 1, smoke).unwrap_err().kind, ErrorKind::Conflict);
        let long = "k".repeat(MAX_TRIGGER_KEY + 1);
        for bad in ["", "has space", long.as_str()] {
            assert_eq!(ask(&mut s, 30, bad).unwrap_err().kind, ErrorKind::Invalid, "{bad:?}");
        }
        assert_eq!(s, before, "refusals change nothing");
        let audit: Vec<_> = s.audit.iter().map(|a| (a.action.as_str(), a.subject.as_str())).collect();
        assert_eq!(audit, [("farm.trigger", "trigger:1")]);
    }

    #[test]
    fn a_claim_fences_other_leaders_until_it_expires_and_the_resend_keeps_the_key() {
        let mut s = at7();
        ask(&mut s, 10, "k").unwrap();
        let (t, _) = op(&mut s, 100, 1, FarmOp::ClaimTrigger { id: 1, until_ms: 5_000 }).unwrap();
        assert_eq!((t.attempts, t.claimed_by, t.claimed_until_ms), (1, Some(1), 5_000));
        assert!(t.sending(4_999) && !t.due(4_999));
        // Another leader while the claim lives: refused.
        let e = op(&mut s, 4_999, 2, FarmOp::ClaimTrigger { id: 1, until_ms: 9_000 }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        // The first leader died between sending and recording: after the
        // claim, a new leader claims attempt 2 of the same trigger and key.
        let (t, _) = op(&mut s, 5_000, 2, FarmOp::ClaimTrigger { id: 1, until_ms: 9_000 }).unwrap();
        assert_eq!((t.attempts, t.claimed_by, t.key.as_str()), (2, Some(2), "k"));
        // The dead leader's attempt 1 can no longer record an outcome.
        let late = FarmOp::RecordTrigger { id: 1, attempt: 1, outcome: outcome(TriggerResult::Succeeded, None) };
        assert_eq!(op(&mut s, 5_100, 1, late).unwrap_err().kind, ErrorKind::Conflict);
        let rec = FarmOp::RecordTrigger { id: 1, attempt: 2, outcome: outcome(TriggerResult::Succeeded, None) };
        let (t, _) = op(&mut s, 5_200, 2, rec.clone()).unwrap();
        assert_eq!((t.state, t.outcome_ms, t.claimed_until_ms), (TriggerState::Succeeded, Some(5_200), 0));
        assert_eq!(t.outcome.as_ref().and_then(|o| o.code), Some(202));
        assert_eq!(op(&mut s, 5_300, 2, rec).unwrap_err().kind, ErrorKind::Conflict, "recorded once");
        assert_eq!(s.farm.triggers.totals, BTreeMap::from([((TriggerKind::Trigger, TriggerResult::Succeeded), 1)]));
        let e = op(&mut s, 9_000, 1, FarmOp::ClaimTrigger { id: 1, until_ms: 20_000 }).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "a finished trigger is not sent again");
        assert_eq!(
            op(&mut s, 1, 1, FarmOp::ClaimTrigger { id: 9, until_ms: 2 }).unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_failure_retries_with_the_same_key_until_the_attempts_run_out() {
        let mut s = at7();
        ask(&mut s, 10, "k").unwrap();
        for attempt in 1..=MAX_TRIGGER_ATTEMPTS {
            let at = u64::from(attempt) * 1_000;
            op(&mut s, at, 1, FarmOp::ClaimTrigger { id: 1, until_ms: at + 500 }).unwrap();
            let failed = outcome(TriggerResult::Failed, Some(at + 600));
            let (t, _) = op(&mut s, at + 100, 1, FarmOp::RecordTrigger { id: 1, attempt, outcome: failed }).unwrap();
            if attempt < MAX_TRIGGER_ATTEMPTS {
                assert_eq!((t.state, t.next_attempt_ms), (TriggerState::Pending, at + 600));
                assert!(!t.due(at + 599) && t.due(at + 600));
            } else {
                assert_eq!(t.state, TriggerState::Failed, "the last attempt's failure is final");
            }
        }
        assert_eq!(s.farm.triggers.totals[&(TriggerKind::Trigger, TriggerResult::Failed)], 1);
        // Attempts are capped even when claims expire without an outcome.
        ask(&mut s, 10_000, "k2").unwrap();
        for n in 0..MAX_TRIGGER_ATTEMPTS {
            let at = 20_000 + u64::from(n) * 1_000;
            op(&mut s, at, 1, FarmOp::ClaimTrigger { id: 2, until_ms: at + 500 }).unwrap();
        }
        let e = op(&mut s, 30_000, 1, FarmOp::ClaimTrigger { id: 2, until_ms: 31_000 }).unwrap_err();
        assert!(e.message.contains("3 times"), "{e:?}");
        let gave_up =
            TriggerOutcome { detail: "no outcome after 3 attempts".into(), ..outcome(TriggerResult::Failed, None) };
        let (t, _) = op(&mut s, 30_000, 1, FarmOp::RecordTrigger { id: 2, attempt: 3, outcome: gave_up }).unwrap();
        assert_eq!(t.state, TriggerState::Failed);
    }

    #[test]
    fn outcomes_are_checked_before_anything_changes() {
        let mut s = at7();
        ask(&mut s, 10, "k").unwrap();
        let rec = |o| FarmOp::RecordTrigger { id: 1, attempt: 1, outcome: o };
        let unclaimed = rec(outcome(TriggerResult::Succeeded, None));
        assert_eq!(op(&mut s, 20, 1, unclaimed).unwrap_err().kind, ErrorKind::Conflict, "no claim, no outcome");
        op(&mut s, 20, 1, FarmOp::ClaimTrigger { id: 1, until_ms: 1_000 }).unwrap();
        let before = s.clone();
        let long =
            TriggerOutcome { detail: "x".repeat(MAX_TRIGGER_DETAIL + 1), ..outcome(TriggerResult::Failed, None) };
        let two_lines = TriggerOutcome { detail: "a\nb".into(), ..outcome(TriggerResult::Failed, None) };
        let retried_success = outcome(TriggerResult::Succeeded, Some(5));
        for bad in [long, two_lines, retried_success] {
            assert_eq!(op(&mut s, 30, 1, rec(bad)).unwrap_err().kind, ErrorKind::Invalid);
        }
        assert_eq!(s, before);
        let none = TriggerOutcome { target: None, code: None, ..outcome(TriggerResult::NotConfigured, None) };
        let (t, _) = op(&mut s, 40, 1, rec(none)).unwrap();
        assert_eq!(t.state, TriggerState::NotConfigured);
    }

    #[test]
    fn the_farm_keeps_the_last_triggers_and_caps_the_pending_ones() {
        let mut s = at7();
        for i in 0..MAX_PENDING_TRIGGERS as u64 {
            ask(&mut s, i, &format!("k-{i}")).unwrap();
        }
        let before = s.clone();
        assert_eq!(ask(&mut s, 100, "one-more").unwrap_err().kind, ErrorKind::Limit);
        assert_eq!(s, before);
        // Finish them all, then fill past the cap: the oldest finished go.
        let done = |s: &mut ControlState, id: u64, at: u64| {
            op(s, at, 1, FarmOp::ClaimTrigger { id, until_ms: at + 10 }).unwrap();
            let o = outcome(TriggerResult::Succeeded, None);
            op(s, at, 1, FarmOp::RecordTrigger { id, attempt: 1, outcome: o }).unwrap();
        };
        for id in 1..=MAX_PENDING_TRIGGERS as u64 {
            done(&mut s, id, 200);
        }
        for i in 0..MAX_TRIGGERS as u64 {
            let (t, _) = ask(&mut s, 300 + i, &format!("n-{i}")).unwrap();
            if i + 1 < MAX_TRIGGERS as u64 {
                done(&mut s, t.id, 300 + i);
            }
        }
        let t = &s.farm.triggers;
        assert_eq!(t.kept.len(), MAX_TRIGGERS);
        assert_eq!(t.kept.front().map(|t| t.id), Some(MAX_PENDING_TRIGGERS as u64 + 1), "oldest dropped first");
        assert_eq!((t.pending(), t.seq), (1, (MAX_PENDING_TRIGGERS + MAX_TRIGGERS) as u64));
        assert!(t.get(1).is_none() && t.get(t.seq).is_some());
        assert_eq!(t.totals[&(TriggerKind::Trigger, TriggerResult::Succeeded)], t.seq - 1, "totals outlive the cap");
    }

    #[test]
    fn the_triggers_travel_in_the_format_seven_section() {
        let mut s = at7();
        ask(&mut s, 10, "k").unwrap();
        op(&mut s, 20, 3, FarmOp::ClaimTrigger { id: 1, until_ms: 500 }).unwrap();
        let mut bytes = Vec::new();
        crate::state::encode_snapshot(&s, &mut bytes).unwrap();
        let back = crate::state::decode_snapshot(&bytes).unwrap();
        assert_eq!(back.farm.triggers, s.farm.triggers);
        assert_eq!(back, s);
    }
}
