//! Incidents and their notifications. The leader proposes what is firing; apply
//! opens, updates and resolves incidents (one active per kind+subject) and
//! queues notifications, which are claimed through Raft before they are sent
//! and recorded through Raft once delivered.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::history::field;
use super::ControlState;
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};
use crate::NodeId;

/// Resolved incidents and finished notifications kept for the API.
const KEEP_FINISHED: usize = 500;
/// Fleet availability samples kept (24 h at a 30 s check interval).
pub const KEEP_SAMPLES: usize = 2_880;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Active,
    Resolved,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Incident {
    pub id: u64,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub detail: String,
    pub state: IncidentState,
    pub opened_ms: u64,
    pub resolved_ms: Option<u64>,
    pub acked: bool,
    pub ack_note: Option<String>,
    pub acked_by: Option<String>,
    pub notifications: Vec<u64>,
}

/// A condition the leader found true in this round of checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Firing {
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub detail: String,
}

/// Share of workers healthy at one moment, for the SLO.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FleetSample {
    pub at_ms: u64,
    pub total: u64,
    pub healthy: u64,
}

/// One round of alert evaluation, as decided by the leader.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reconcile {
    pub firing: Vec<Firing>,
    /// Kinds that were evaluated: only their absent incidents resolve.
    pub kinds_evaluated: Vec<String>,
    /// Channels configured on the leader (`slack`, `email`).
    pub channels: Vec<String>,
    pub cooldown_ms: u64,
    pub sample: Option<FleetSample>,
}

/// One part of an alert round as changes only (format 3): the leader
/// compares what fires with the incidents in the state and proposes the
/// difference, split into parts that each fit well under the entry limit, so
/// a fleet-wide outage is many modest entries rather than one huge one, and a
/// steady state is one small entry per round.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IncidentChanges {
    /// Conditions that fire with no active incident (opened), or whose
    /// severity changed (the active incident is updated).
    pub open: Vec<Firing>,
    /// Active incidents whose condition no longer fires.
    pub resolve: Vec<u64>,
    /// Active incidents whose reminder is due.
    pub remind: Vec<u64>,
    /// Channels configured on the leader (`slack`, `email`).
    pub channels: Vec<String>,
    pub cooldown_ms: u64,
    /// The fleet sample of the round (carried by its first part).
    pub sample: Option<FleetSample>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Notification {
    pub id: u64,
    pub incident_id: u64,
    /// `opened`, `resolved` or `reminder`.
    pub event: String,
    pub channel: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_ms: u64,
    pub next_attempt_ms: u64,
    pub claimed_by: Option<NodeId>,
    pub claimed_until_ms: u64,
    pub delivered_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl Notification {
    /// Ready to be claimed and sent at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.state == DeliveryState::Pending && self.next_attempt_ms <= now && self.claimed_until_ms <= now
    }
}

fn key(kind: &str, subject: &str) -> String {
    format!("{kind}|{subject}")
}

impl ControlState {
    pub fn active_incident(&self, kind: &str, subject: &str) -> Option<&Incident> {
        self.incidents.values().find(|i| i.state == IncidentState::Active && i.kind == kind && i.subject == subject)
    }

    fn notify(&mut self, incident_id: u64, event: &str, channels: &[String], at: u64) {
        for channel in channels {
            self.notification_seq += 1;
            let id = self.notification_seq;
            self.notifications.insert(
                id,
                Notification {
                    id,
                    incident_id,
                    event: event.to_string(),
                    channel: channel.clone(),
                    state: DeliveryState::Pending,
                    attempts: 0,
                    created_ms: at,
                    next_attempt_ms: at,
                    claimed_by: None,
                    claimed_until_ms: 0,
                    delivered_ms: None,
                    last_error: None,
                },
            );
            if let Some(i) = self.incidents.get_mut(&incident_id) {
                i.notifications.push(id);
            }
        }
        if !channels.is_empty() {
            if let Some(i) = self.incidents.get(&incident_id) {
                self.last_notified.insert(key(&i.kind, &i.subject), at);
            }
        }
    }

    /// The active incident of each kind and subject (the lowest id, as
    /// `active_incident` finds it), gathered once per apply: a fleet-wide
    /// outage has thousands of firing conditions.
    fn active_by_key(&self) -> HashMap<String, u64> {
        let mut active: HashMap<String, u64> = HashMap::new();
        for i in self.incidents.values().filter(|i| i.state == IncidentState::Active) {
            active.entry(key(&i.kind, &i.subject)).or_insert(i.id);
        }
        active
    }

    /// Open an incident for `f`, or bring the active one's severity and
    /// detail up to date (with a reminder when `remind` and its cooldown has
    /// passed). Returns the id of an incident it opened.
    fn open_or_update(
        &mut self,
        f: &Firing,
        active: &mut HashMap<String, u64>,
        (channels, cooldown_ms): (&[String], u64),
        at: u64,
        remind: bool,
    ) -> Option<u64> {
        let k = key(&f.kind, &f.subject);
        if let Some(i) = active.get(&k).and_then(|id| self.incidents.get_mut(id)) {
            let id = i.id;
            i.severity.clone_from(&f.severity);
            i.detail.clone_from(&f.detail);
            if remind {
                self.remind(id, channels, cooldown_ms, at);
            }
            return None;
        }
        self.incident_seq += 1;
        let id = self.incident_seq;
        self.incidents.insert(
            id,
            Incident {
                id,
                kind: f.kind.clone(),
                subject: f.subject.clone(),
                severity: f.severity.clone(),
                detail: f.detail.clone(),
                state: IncidentState::Active,
                opened_ms: at,
                resolved_ms: None,
                acked: false,
                ack_note: None,
                acked_by: None,
                notifications: Vec::new(),
            },
        );
        // A flapping condition re-opened within the cooldown stays quiet.
        let recently = self.last_notified.get(&k).is_some_and(|t| at.saturating_sub(*t) < cooldown_ms);
        active.insert(k, id);
        if !recently {
            self.notify(id, "opened", channels, at);
        }
        Some(id)
    }

    /// A reminder for an active, unacknowledged incident whose cooldown has
    /// passed since its last notification; nothing otherwise.
    fn remind(&mut self, id: u64, channels: &[String], cooldown_ms: u64, at: u64) {
        if self.incidents.get(&id).is_some_and(|i| self.reminder_due(i, cooldown_ms, at)) {
            self.notify(id, "reminder", channels, at);
        }
    }

    /// Is a reminder of `i` due at `at`: active, unacknowledged, and quiet
    /// for the cooldown since the last notification of its kind and subject.
    pub fn reminder_due(&self, i: &Incident, cooldown_ms: u64, at: u64) -> bool {
        let quiet_since = self.last_notified.get(&key(&i.kind, &i.subject)).copied().unwrap_or(0);
        i.state == IncidentState::Active && !i.acked && at.saturating_sub(quiet_since) >= cooldown_ms
    }

    /// Resolve an active incident (notifying where it was notified of).
    /// Returns false if it was not active.
    fn resolve_incident(&mut self, id: u64, channels: &[String], at: u64) -> bool {
        let Some(i) = self.incidents.get_mut(&id).filter(|i| i.state == IncidentState::Active) else {
            return false;
        };
        i.state = IncidentState::Resolved;
        i.resolved_ms = Some(at);
        if !i.notifications.is_empty() {
            self.notify(id, "resolved", channels, at);
        }
        true
    }

    fn push_sample(&mut self, sample: Option<FleetSample>) {
        if let Some(s) = sample {
            self.fleet_samples.push_back(s);
            while self.fleet_samples.len() > KEEP_SAMPLES {
                self.fleet_samples.pop_front();
            }
        }
    }

    /// Apply one round of alert evaluation. Returns (opened, resolved) ids.
    /// Finished incidents are pruned by the caller, after auditing the round
    /// ([`ControlState::apply`] does).
    pub fn reconcile(&mut self, r: &Reconcile, at: u64) -> (Vec<u64>, Vec<u64>) {
        let (mut opened, mut resolved) = (Vec::new(), Vec::new());
        let mut active = self.active_by_key();
        for f in &r.firing {
            opened.extend(self.open_or_update(f, &mut active, (&r.channels, r.cooldown_ms), at, true));
        }
        let still: std::collections::HashSet<String> = r.firing.iter().map(|f| key(&f.kind, &f.subject)).collect();
        let to_resolve: Vec<u64> = self
            .incidents
            .values()
            .filter(|i| i.state == IncidentState::Active && r.kinds_evaluated.contains(&i.kind))
            .filter(|i| !still.contains(&key(&i.kind, &i.subject)))
            .map(|i| i.id)
            .collect();
        for id in to_resolve {
            if self.resolve_incident(id, &r.channels, at) {
                resolved.push(id);
            }
        }
        self.push_sample(r.sample);
        (opened, resolved)
    }

    /// Apply one part of an alert round given as changes (format 3). Each
    /// change is checked against the state as it is now, so a part applied
    /// late or twice does no harm: an `open` whose incident is already active
    /// updates it, a `resolve` or `remind` of an incident that is no longer
    /// active does nothing. Returns (opened, resolved) ids.
    pub fn apply_incident_changes(&mut self, d: &IncidentChanges, at: u64) -> (Vec<u64>, Vec<u64>) {
        let (mut opened, mut resolved) = (Vec::new(), Vec::new());
        if !d.open.is_empty() {
            let mut active = self.active_by_key();
            for f in &d.open {
                opened.extend(self.open_or_update(f, &mut active, (&d.channels, d.cooldown_ms), at, false));
            }
        }
        for id in &d.resolve {
            if self.resolve_incident(*id, &d.channels, at) {
                resolved.push(*id);
            }
        }
        for id in &d.remind {
            self.remind(*id, &d.channels, d.cooldown_ms, at);
        }
        self.push_sample(d.sample);
        (opened, resolved)
    }

    /// Drops the oldest finished incidents and notifications beyond what is
    /// kept. Run after a round's incidents are audited: a round that resolves
    /// more than are kept prunes some of its own.
    pub(super) fn prune_finished(&mut self) {
        let resolved: Vec<u64> =
            self.incidents.values().filter(|i| i.state == IncidentState::Resolved).map(|i| i.id).collect();
        let mut dropped = Vec::new();
        for id in resolved.iter().take(resolved.len().saturating_sub(KEEP_FINISHED)) {
            dropped.extend(self.incidents.remove(id));
        }
        let done: Vec<u64> =
            self.notifications.values().filter(|n| n.state != DeliveryState::Pending).map(|n| n.id).collect();
        for id in done.iter().take(done.len().saturating_sub(KEEP_FINISHED)) {
            self.notifications.remove(id);
        }
        // From format 2 on, an incident's bookkeeping goes with it: its
        // finished notifications, and the cooldown mark of its kind and
        // subject once no incident of that key is left and the mark is older
        // than the incident (a flapping condition keeps its mark while any
        // incident of the key is kept).
        if self.format() >= 2 && !dropped.is_empty() {
            for i in &dropped {
                for n in &i.notifications {
                    if self.notifications.get(n).is_some_and(|n| n.state != DeliveryState::Pending) {
                        self.notifications.remove(n);
                    }
                }
            }
            let kept: std::collections::HashSet<String> =
                self.incidents.values().map(|i| key(&i.kind, &i.subject)).collect();
            for i in &dropped {
                let k = key(&i.kind, &i.subject);
                if !kept.contains(&k) {
                    self.last_notified.remove(&k);
                }
            }
        }
    }

    pub fn ack_incident(&mut self, id: u64, note: Option<String>, actor: &str) -> Result<Incident, CommandError> {
        let i = self
            .incidents
            .get_mut(&id)
            .ok_or_else(|| CommandError::new(ErrorKind::NotFound, format!("incident {id} not found")))?;
        if i.state == IncidentState::Resolved {
            return Err(CommandError::new(ErrorKind::Conflict, format!("incident {id} is already resolved")));
        }
        if i.acked {
            return Err(CommandError::new(ErrorKind::Conflict, format!("incident {id} is already acknowledged")));
        }
        i.acked = true;
        i.ack_note = note;
        i.acked_by = Some(actor.to_string());
        Ok(i.clone())
    }

    /// Reserve a notification for one sender until `until_ms`; refused if it is
    /// not due, so two leaders can never both hold it.
    pub fn claim_notification(
        &mut self,
        id: u64,
        by: NodeId,
        until_ms: u64,
        at: u64,
    ) -> Result<Notification, CommandError> {
        let n = self
            .notifications
            .get_mut(&id)
            .ok_or_else(|| CommandError::new(ErrorKind::NotFound, format!("notification {id} not found")))?;
        if !n.due(at) {
            return Err(CommandError::new(ErrorKind::Conflict, format!("notification {id} is not due")));
        }
        n.claimed_by = Some(by);
        n.claimed_until_ms = until_ms;
        n.attempts += 1;
        Ok(n.clone())
    }

    /// Record a send attempt: delivered, or retry at `retry_at_ms`, or failed for good.
    pub fn record_delivery(
        &mut self,
        id: u64,
        error: Option<String>,
        retry_at_ms: Option<u64>,
        at: u64,
    ) -> Result<Notification, CommandError> {
        let n = self
            .notifications
            .get_mut(&id)
            .ok_or_else(|| CommandError::new(ErrorKind::NotFound, format!("notification {id} not found")))?;
        if n.state != DeliveryState::Pending {
            return Err(CommandError::new(ErrorKind::Conflict, format!("notification {id} is already finished")));
        }
        match (error, retry_at_ms) {
            (None, _) => {
                n.state = DeliveryState::Delivered;
                n.delivered_ms = Some(at);
            }
            (Some(e), Some(retry)) => {
                n.last_error = Some(e);
                n.next_attempt_ms = retry;
                n.claimed_until_ms = 0;
            }
            (Some(e), None) => {
                n.last_error = Some(e);
                n.state = DeliveryState::Failed;
            }
        }
        Ok(n.clone())
    }

    /// Notifications per state, for the API and metrics.
    pub fn delivery_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for n in self.notifications.values() {
            let k = match n.state {
                DeliveryState::Pending => "pending",
                DeliveryState::Delivered => "delivered",
                DeliveryState::Failed => "failed",
            };
            *m.entry(k).or_default() += 1;
        }
        m
    }
}

// ---- the incident and notification command family ----

impl ControlState {
    /// The leader's alert round: open, update and resolve incidents, audit
    /// and record what opened or resolved, then prune.
    pub(super) fn reconcile_incidents(&mut self, req: &Request, r: &Reconcile) -> Response {
        let (opened, resolved) = self.reconcile(r, req.at_ms);
        self.record_round(req, opened, resolved)
    }

    /// One part of an alert round given as changes (format 3).
    pub(super) fn incident_changes(&mut self, req: &Request, d: &IncidentChanges) -> Response {
        let (opened, resolved) = self.apply_incident_changes(d, req.at_ms);
        self.record_round(req, opened, resolved)
    }

    /// Audit and record what a round opened or resolved, then prune.
    fn record_round(&mut self, req: &Request, opened: Vec<u64>, resolved: Vec<u64>) -> Response {
        for id in opened.iter().chain(&resolved) {
            let Some(i) = self.incidents.get(id) else { continue };
            let what = if i.state == IncidentState::Active { "opened" } else { "resolved" };
            let (subject, reason) = (format!("{}:{}", i.kind, i.subject), Some(format!("{what}: {}", i.detail)));
            let fields = vec![field("state", what), field("kind", &i.kind), field("subject", &i.subject)];
            self.changed(req, format!("incident:{id}"), fields);
            self.audit(req, &subject, reason);
        }
        self.prune_finished();
        Ok(Reply::Reconciled { opened, resolved })
    }

    pub(super) fn incident_ack(&mut self, req: &Request, id: u64, note: &Option<String>) -> Response {
        let i = self.ack_incident(id, note.clone(), &req.actor)?;
        self.changed(req, format!("incident:{id}"), vec![field("acked", true)]);
        self.audit(req, &format!("incident:{id}"), note.clone());
        Ok(Reply::Incident(i))
    }

    pub(super) fn notification_claim(&mut self, req: &Request, id: u64, until_ms: u64) -> Response {
        Ok(Reply::Notification(self.claim_notification(id, req.node, until_ms, req.at_ms)?))
    }

    pub(super) fn notification_record(
        &mut self,
        req: &Request,
        id: u64,
        error: &Option<String>,
        retry_at_ms: Option<u64>,
    ) -> Response {
        Ok(Reply::Notification(self.record_delivery(id, error.clone(), retry_at_ms, req.at_ms)?))
    }
}

#[cfg(test)]
#[allow(unused_imports)]
mod command_tests {
    use crate::command::*;
    use crate::state::testkit::{beat, req};
    use crate::state::worker::{metric, MetricMap};
    use crate::state::*;

    fn firing(kind: &str, subject: &str) -> Firing {
        Firing { kind: kind.into(), subject: subject.into(), severity: "warning".into(), detail: "d".into() }
    }

    fn round(s: &mut ControlState, at: u64, f: Vec<Firing>) -> (Vec<u64>, Vec<u64>) {
        let r = Reconcile {
            firing: f,
            kinds_evaluated: vec!["heartbeat_missing".into()],
            channels: vec!["slack".into(), "email".into()],
            cooldown_ms: 10_000,
            sample: Some(FleetSample { at_ms: at, total: 2, healthy: 1 }),
        };
        s.reconcile(&r, at)
    }

    #[test]
    fn incidents_dedupe_notify_once_and_resolve() {
        let mut s = ControlState::default();
        let (opened, _) = round(&mut s, 1_000, vec![firing("heartbeat_missing", "w-1")]);
        assert_eq!(opened.len(), 1);
        assert_eq!(s.notifications.len(), 2, "one per channel");
        let (opened, _) = round(&mut s, 2_000, vec![firing("heartbeat_missing", "w-1")]);
        assert!(opened.is_empty(), "same kind+subject stays one incident");
        assert_eq!(s.notifications.len(), 2, "no repeat inside the cooldown");
        round(&mut s, 12_000, vec![firing("heartbeat_missing", "w-1")]);
        assert_eq!(s.notifications.len(), 4, "reminder after the cooldown");
        let (_, resolved) = round(&mut s, 13_000, vec![]);
        assert_eq!(resolved.len(), 1);
        assert_eq!(s.notifications.values().filter(|n| n.event == "resolved").count(), 2);
        // Flapping back within the cooldown opens an incident but stays quiet.
        let (opened, _) = round(&mut s, 14_000, vec![firing("heartbeat_missing", "w-1")]);
        assert_eq!(opened.len(), 1);
        assert_eq!(s.notifications.len(), 6);
        assert_eq!(s.fleet_samples.len(), 5);
    }

    /// A fleet-wide outage resolves more incidents at once than are kept: the
    /// round's own resolved incidents may be pruned in the same apply, and its
    /// audit entries must not need them (this panicked every node's apply).
    #[test]
    fn resolving_more_incidents_than_are_kept_audits_them_all() {
        let mut s = ControlState::default();
        let reconcile = |firing: Vec<Firing>| {
            Command::ReconcileIncidents(Reconcile {
                firing,
                kinds_evaluated: vec!["heartbeat_missing".into()],
                channels: vec![],
                cooldown_ms: 10_000,
                sample: None,
            })
        };
        let all: Vec<Firing> = (0..700).map(|i| firing("heartbeat_missing", &format!("w-{i}"))).collect();
        s.apply(&req(reconcile(all))).unwrap();
        let audited = s.audit.len();
        let reply = s.apply(&req(reconcile(vec![firing("heartbeat_missing", "w-0")]))).unwrap();
        let Reply::Reconciled { resolved, .. } = reply else { panic!("unexpected reply {reply:?}") };
        assert_eq!(resolved.len(), 699);
        assert_eq!(s.audit.len() - audited, 699, "one audit entry per resolved incident");
        let finished = s.incidents.values().filter(|i| i.state == IncidentState::Resolved).count();
        assert_eq!(finished, 500, "only the newest finished incidents are kept");
    }

    fn changes(open: Vec<Firing>, resolve: Vec<u64>, remind: Vec<u64>) -> Command {
        Command::IncidentChanges(IncidentChanges {
            open,
            resolve,
            remind,
            channels: vec!["slack".into()],
            cooldown_ms: 10_000,
            sample: None,
        })
    }

    fn at(at_ms: u64, command: Command) -> Request {
        Request { at_ms, ..req(command) }
    }

    /// Format 3: the round as changes. Each change is checked against the
    /// state, so a part applied twice (or after the incident moved on) is
    /// harmless, and it needs format 3.
    #[test]
    fn incident_changes_open_update_remind_and_resolve_idempotently() {
        let mut s = ControlState { format_version: 2, ..ControlState::default() };
        let before = s.clone();
        let c = changes(vec![firing("heartbeat_missing", "w-1")], vec![], vec![]);
        assert_eq!(s.apply(&req(c.clone())).unwrap_err().kind, ErrorKind::Invalid, "needs format 3");
        assert_eq!(s, before, "refused below format 3 and changed nothing");
        s.format_version = 3;
        let Reply::Reconciled { opened, .. } = s.apply(&at(1_000, c.clone())).unwrap() else { panic!() };
        assert_eq!(opened.len(), 1);
        let id = opened[0];
        assert_eq!(s.notifications.len(), 1, "opened, one channel");
        // The same part again updates the open incident: no second one, no notification.
        let mut worse = firing("heartbeat_missing", "w-1");
        worse.severity = "critical".into();
        let Reply::Reconciled { opened, .. } = s.apply(&at(2_000, changes(vec![worse], vec![], vec![]))).unwrap()
        else {
            panic!()
        };
        assert!(opened.is_empty());
        assert_eq!((s.incidents.len(), s.incidents[&id].severity.as_str()), (1, "critical"));
        assert_eq!(s.notifications.len(), 1);
        // A reminder only once the cooldown has passed, and only if still due.
        s.apply(&at(5_000, changes(vec![], vec![], vec![id]))).unwrap();
        assert_eq!(s.notifications.len(), 1, "inside the cooldown");
        s.apply(&at(11_000, changes(vec![], vec![], vec![id]))).unwrap();
        assert_eq!(s.notifications.len(), 2, "reminder after the cooldown");
        s.apply(&at(11_500, changes(vec![], vec![], vec![id]))).unwrap();
        assert_eq!(s.notifications.len(), 2, "a repeated part does not remind twice");
        // Resolve: once, audited; a repeat or an unknown id does nothing.
        let Reply::Reconciled { resolved, .. } = s.apply(&at(12_000, changes(vec![], vec![id], vec![]))).unwrap()
        else {
            panic!()
        };
        assert_eq!(resolved, vec![id]);
        assert_eq!(s.incidents[&id].state, IncidentState::Resolved);
        assert_eq!(s.notifications.values().filter(|n| n.event == "resolved").count(), 1);
        let Reply::Reconciled { resolved, .. } =
            s.apply(&at(12_500, changes(vec![], vec![id, 999], vec![id]))).unwrap()
        else {
            panic!()
        };
        assert!(resolved.is_empty());
        assert_eq!(s.notifications.len(), 3, "nothing more for a resolved incident");
        assert_eq!(s.audit.iter().filter(|a| a.action == "incident.reconcile").count(), 2, "opened and resolved");
    }

    /// The two forms of a round agree: the same firing conditions given as
    /// a full `Reconcile` or as the changes the leader derives give the same
    /// incidents and notifications.
    #[test]
    fn a_round_as_changes_matches_the_full_round() {
        let mut full = ControlState { format_version: 3, ..ControlState::default() };
        let mut delta = full.clone();
        let steps: Vec<(u64, Vec<Firing>)> = vec![
            (1_000, vec![firing("heartbeat_missing", "w-1"), firing("heartbeat_missing", "w-2")]),
            (2_000, vec![firing("heartbeat_missing", "w-2")]),
            (15_000, vec![firing("heartbeat_missing", "w-2"), firing("heartbeat_missing", "w-3")]),
            (16_000, vec![]),
        ];
        for (t, f) in steps {
            round(&mut full, t, f.clone());
            // The changes, derived the way the leader does it.
            let active: Vec<&Incident> =
                delta.incidents.values().filter(|i| i.state == IncidentState::Active).collect();
            let find = |f: &Firing| active.iter().find(|i| i.kind == f.kind && i.subject == f.subject).copied();
            let open: Vec<Firing> = f.iter().filter(|f| find(f).is_none()).cloned().collect();
            let remind: Vec<u64> =
                f.iter().filter_map(find).filter(|i| delta.reminder_due(i, 10_000, t)).map(|i| i.id).collect();
            let resolve: Vec<u64> = active
                .iter()
                .filter(|i| !f.iter().any(|f| f.kind == i.kind && f.subject == i.subject))
                .map(|i| i.id)
                .collect();
            let d = IncidentChanges {
                open,
                resolve,
                remind,
                channels: vec!["slack".into(), "email".into()],
                cooldown_ms: 10_000,
                sample: Some(FleetSample { at_ms: t, total: 2, healthy: 1 }),
            };
            delta.apply_incident_changes(&d, t);
        }
        // The same incidents with the same notifications (ids may be given
        // in another order within a round).
        type Events = Vec<(String, String, u64)>;
        let summary = |s: &ControlState| {
            let mut out: Vec<(u64, IncidentState, Option<u64>, Events)> = Vec::new();
            for i in s.incidents.values() {
                let mut events: Events = i
                    .notifications
                    .iter()
                    .map(|n| &s.notifications[n])
                    .map(|n| (n.event.clone(), n.channel.clone(), n.created_ms))
                    .collect();
                events.sort();
                out.push((i.id, i.state, i.resolved_ms, events));
            }
            out
        };
        assert_eq!(summary(&full), summary(&delta));
        assert_eq!(full.notifications.len(), delta.notifications.len());
        assert_eq!(full.last_notified, delta.last_notified);
        assert_eq!(full.fleet_samples, delta.fleet_samples);
    }

    #[test]
    fn acknowledged_incidents_stop_reminding() {
        let mut s = ControlState::default();
        let (opened, _) = round(&mut s, 0, vec![firing("heartbeat_missing", "w-1")]);
        s.ack_incident(opened[0], Some("looking".into()), "ops").unwrap();
        assert!(s.ack_incident(opened[0], None, "ops").is_err());
        round(&mut s, 50_000, vec![firing("heartbeat_missing", "w-1")]);
        assert_eq!(s.notifications.len(), 2);
    }

    #[test]
    fn a_claimed_notification_cannot_be_claimed_twice_until_it_expires() {
        let mut s = ControlState::default();
        round(&mut s, 0, vec![firing("heartbeat_missing", "w-1")]);
        let id = *s.notifications.keys().next().unwrap();
        s.claim_notification(id, 1, 5_000, 100).unwrap();
        assert_eq!(s.claim_notification(id, 2, 9_000, 200).unwrap_err().kind, ErrorKind::Conflict);
        let n = s.claim_notification(id, 2, 9_000, 5_000).unwrap();
        assert_eq!((n.attempts, n.claimed_by), (2, Some(2)));
        s.record_delivery(id, Some("503".into()), Some(6_000), 5_100).unwrap();
        assert!(!s.notifications[&id].due(5_500));
        assert!(s.notifications[&id].due(6_000));
        s.record_delivery(id, None, None, 6_100).unwrap();
        assert_eq!(s.notifications[&id].state, DeliveryState::Delivered);
        assert!(s.record_delivery(id, None, None, 6_200).is_err(), "a delivery is recorded once");
    }
}
