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

    /// Apply one round of alert evaluation. Returns (opened, resolved) ids.
    /// Finished incidents are pruned by the caller, after auditing the round
    /// ([`ControlState::apply`] does).
    pub fn reconcile(&mut self, r: &Reconcile, at: u64) -> (Vec<u64>, Vec<u64>) {
        let (mut opened, mut resolved) = (Vec::new(), Vec::new());
        // The active incident of each kind and subject (the lowest id, as
        // `active_incident` finds it), looked up once per firing condition:
        // a fleet-wide outage has thousands of both.
        let mut active: HashMap<String, u64> = HashMap::new();
        for i in self.incidents.values().filter(|i| i.state == IncidentState::Active) {
            active.entry(key(&i.kind, &i.subject)).or_insert(i.id);
        }
        for f in &r.firing {
            let k = key(&f.kind, &f.subject);
            if let Some(i) = active.get(&k).and_then(|id| self.incidents.get_mut(id)) {
                let id = i.id;
                i.severity.clone_from(&f.severity);
                i.detail.clone_from(&f.detail);
                let quiet_since = self.last_notified.get(&k).copied().unwrap_or(0);
                if !i.acked && at.saturating_sub(quiet_since) >= r.cooldown_ms {
                    self.notify(id, "reminder", &r.channels, at);
                }
                continue;
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
            opened.push(id);
            active.insert(k.clone(), id);
            // A flapping condition re-opened within the cooldown stays quiet.
            let recently = self.last_notified.get(&k).is_some_and(|t| at.saturating_sub(*t) < r.cooldown_ms);
            if !recently {
                self.notify(id, "opened", &r.channels, at);
            }
        }
        let still: std::collections::BTreeSet<String> = r.firing.iter().map(|f| key(&f.kind, &f.subject)).collect();
        let to_resolve: Vec<u64> = self
            .incidents
            .values()
            .filter(|i| i.state == IncidentState::Active && r.kinds_evaluated.contains(&i.kind))
            .filter(|i| !still.contains(&key(&i.kind, &i.subject)))
            .map(|i| i.id)
            .collect();
        for id in to_resolve {
            let Some(i) = self.incidents.get_mut(&id) else { continue };
            i.state = IncidentState::Resolved;
            i.resolved_ms = Some(at);
            let was_notified = !i.notifications.is_empty();
            resolved.push(id);
            if was_notified {
                self.notify(id, "resolved", &r.channels, at);
            }
        }
        if let Some(s) = r.sample {
            self.fleet_samples.push_back(s);
            while self.fleet_samples.len() > KEEP_SAMPLES {
                self.fleet_samples.pop_front();
            }
        }
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
