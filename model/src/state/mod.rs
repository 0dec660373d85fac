//! The control state every node holds, and the pure function that applies a
//! command to it. No clock, no I/O, no randomness: time arrives in the request.

pub mod incident;
pub mod metric;
pub mod pool;
pub mod provider;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError, ErrorKind, Reply, Request, Response};
use crate::NodeId;
pub use incident::{DeliveryState, Firing, FleetSample, Incident, IncidentState, Notification, Reconcile};
pub use metric::{Key, Metric};
pub use pool::{Pool, PoolPatch, Profile};
pub use provider::ProviderState;
pub use worker::{DesiredState, Heartbeat, HeartbeatAnswer, Worker, WorkerAction};

/// Longest identifier accepted; names appear in URLs, keys and metrics labels.
pub const MAX_NAME_LEN: usize = 128;
/// Upper bound on a pool's desired count; anything larger is a typo.
pub const MAX_DESIRED_COUNT: u32 = 100_000;
/// How many audit entries the replicated state keeps (oldest dropped first).
pub const AUDIT_CAPACITY: usize = 10_000;
/// Name of the pool used when there is no default and a worker names none.
pub const FALLBACK_POOL: &str = "default";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControlState {
    pub pools: BTreeMap<String, Pool>,
    pub workers: BTreeMap<String, Worker>,
    pub providers: BTreeMap<String, ProviderState>,
    pub policy_version: Option<String>,
    pub incidents: BTreeMap<u64, Incident>,
    pub incident_seq: u64,
    pub notifications: BTreeMap<u64, Notification>,
    pub notification_seq: u64,
    /// Last notification time per `kind|subject`, for cooldown and dedup.
    pub last_notified: BTreeMap<String, u64>,
    pub fleet_samples: VecDeque<FleetSample>,
    /// Operator overrides of runtime settings (key → normalized value).
    pub settings: BTreeMap<String, String>,
    /// When autoscale last stepped each pool.
    pub autoscale_last: BTreeMap<String, u64>,
    pub audit: VecDeque<AuditEntry>,
    pub audit_seq: u64,
}

/// One operator or automation action, as recorded for `GET /api/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    pub node: NodeId,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: Option<String>,
}

/// Check an identifier: non-empty, bounded, printable, URL-safe.
pub fn validate_name(what: &str, name: &str) -> Result<(), CommandError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::Invalid,
            format!("{what} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9-_.:@], got {name:?}"),
        ))
    }
}

fn not_found(what: &str, name: &str) -> CommandError {
    CommandError::new(ErrorKind::NotFound, format!("{what} {name:?} not found"))
}

fn conflict(message: String) -> CommandError {
    CommandError::new(ErrorKind::Conflict, message)
}

impl ControlState {
    /// Apply one request. Refusals leave the state exactly as it was.
    pub fn apply(&mut self, req: &Request) -> Response {
        let at = req.at_ms;
        match &req.command {
            Command::HeartbeatBatch { beats } => {
                let answers = beats.iter().map(|b| self.heartbeat(b, at)).collect();
                Ok(Reply::Heartbeats(answers))
            }
            Command::WorkerControl { worker, action, reason } => {
                let w = self.workers.get_mut(worker).ok_or_else(|| not_found("worker", worker))?;
                w.control(*action, reason.as_deref(), at)?;
                let reply = Reply::Worker(w.clone());
                self.audit(req, worker, reason.clone());
                Ok(reply)
            }
            Command::RemoveStaleWorkers { cutoff_ms, ids } => {
                let mut removed = Vec::new();
                for id in ids {
                    // Re-checked here: a worker that heartbeated since the leader
                    // looked is not stale any more and stays.
                    if self.workers.get(id).is_some_and(|w| w.last_heartbeat_ms < *cutoff_ms) {
                        self.workers.remove(id);
                        removed.push(id.clone());
                    }
                }
                for id in &removed {
                    self.audit(req, id, Some(format!("silent since before {cutoff_ms}")));
                }
                Ok(Reply::Removed(removed))
            }
            Command::ScalePool { pool, desired_count } => {
                validate_name("pool", pool)?;
                let before = self.pools.get(pool).map(|p| p.desired_count).unwrap_or(0);
                let mut p = self.pools.get(pool).cloned().unwrap_or_else(|| Pool::new(pool, at));
                if p.archived {
                    return Err(conflict(format!("pool {pool} is archived")));
                }
                p.edit(&PoolPatch { desired_count: Some(*desired_count), ..Default::default() }, at)?;
                self.pools.insert(pool.clone(), p.clone());
                self.audit(req, pool, Some(format!("desired_count {before} -> {desired_count}")));
                Ok(Reply::Pool(p))
            }
            Command::CreatePool { name, patch } => {
                validate_name("pool", name)?;
                if self.pools.contains_key(name) {
                    return Err(conflict(format!("pool {name} already exists")));
                }
                let mut p = Pool::new(name, at);
                p.edit(patch, at)?;
                self.pools.insert(name.clone(), p.clone());
                self.audit(req, name, None);
                Ok(Reply::Pool(p))
            }
            Command::UpdatePool { name, patch } => {
                let p = self.pools.get_mut(name).ok_or_else(|| not_found("pool", name))?;
                p.edit(patch, at)?;
                let reply = Reply::Pool(p.clone());
                self.audit(req, name, None);
                Ok(reply)
            }
            Command::ArchivePool { name, archived } => {
                let p = self.pools.get_mut(name).ok_or_else(|| not_found("pool", name))?;
                if p.archived == *archived {
                    let state = if *archived { "archived" } else { "not archived" };
                    return Err(conflict(format!("pool {name} is already {state}")));
                }
                if *archived && p.is_default {
                    return Err(conflict(format!("pool {name} is the default pool; set another default first")));
                }
                p.archived = *archived;
                p.updated_at_ms = at;
                let reply = Reply::Pool(p.clone());
                self.audit(req, name, None);
                Ok(reply)
            }
            Command::ReconcileIncidents(r) => {
                let (opened, resolved) = self.reconcile(r, at);
                for id in opened.iter().chain(&resolved) {
                    let i = &self.incidents[id];
                    let what = if i.state == IncidentState::Active { "opened" } else { "resolved" };
                    let (subject, reason) =
                        (format!("{}:{}", i.kind, i.subject), Some(format!("{what}: {}", i.detail)));
                    self.audit(req, &subject, reason);
                }
                self.prune_finished();
                Ok(Reply::Reconciled { opened, resolved })
            }
            Command::AckIncident { id, note } => {
                let i = self.ack_incident(*id, note.clone(), &req.actor)?;
                self.audit(req, &format!("incident:{id}"), note.clone());
                Ok(Reply::Incident(i))
            }
            Command::ClaimNotification { id, until_ms } => {
                Ok(Reply::Notification(self.claim_notification(*id, req.node, *until_ms, at)?))
            }
            Command::RecordDelivery { id, error, retry_at_ms } => {
                Ok(Reply::Notification(self.record_delivery(*id, error.clone(), *retry_at_ms, at)?))
            }
            Command::SetProviderMode { provider, mode, auto, reason } => {
                validate_name("provider", provider)?;
                let p = self.set_provider_mode(provider, mode, *auto, reason.clone(), at)?;
                self.audit(
                    req,
                    &format!("provider:{provider}"),
                    Some(format!("mode {mode}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())),
                );
                Ok(Reply::Provider(p))
            }
            Command::AutoscalePool { pool, from, to, reason, cooldown_ms } => {
                let p = self.pools.get_mut(pool).ok_or_else(|| not_found("pool", pool))?;
                if p.desired_count != *from {
                    return Err(conflict(format!("pool {pool} desired count is {} now, not {from}", p.desired_count)));
                }
                let last = self.autoscale_last.get(pool).copied().unwrap_or(0);
                if last > 0 && at.saturating_sub(last) < *cooldown_ms {
                    return Err(conflict(format!("pool {pool} is in autoscale cooldown")));
                }
                p.edit(&PoolPatch { desired_count: Some(*to), ..Default::default() }, at)?;
                let reply = Reply::Pool(p.clone());
                self.autoscale_last.insert(pool.clone(), at);
                self.audit(req, pool, Some(format!("desired_count {from} -> {to}: {reason}")));
                Ok(reply)
            }
            Command::UpdateSettings { changes } => {
                let mut normalized = Vec::new();
                for (k, v) in changes {
                    let v = match v {
                        Some(raw) => Some(
                            crate::settings::normalize(k, raw).map_err(|e| CommandError::new(ErrorKind::Invalid, e))?,
                        ),
                        None => crate::settings::find(k)
                            .map(|_| None)
                            .ok_or_else(|| CommandError::new(ErrorKind::Invalid, format!("unknown setting {k}")))?,
                    };
                    normalized.push((k.clone(), v));
                }
                for (k, v) in normalized {
                    let reason = Some(format!("{k} = {}", v.as_deref().unwrap_or("(default)")));
                    match v {
                        Some(v) => self.settings.insert(k.clone(), v),
                        None => self.settings.remove(&k),
                    };
                    self.audit(req, &format!("setting:{k}"), reason);
                }
                Ok(Reply::Settings(self.settings.clone()))
            }
            Command::SetDefaultPool { name } => {
                let p = self.pools.get(name).ok_or_else(|| not_found("pool", name))?;
                if p.archived {
                    return Err(conflict(format!("pool {name} is archived")));
                }
                for p in self.pools.values_mut() {
                    p.is_default = p.name == *name;
                }
                let reply = Reply::Pool(self.pools[name].clone());
                self.audit(req, name, None);
                Ok(reply)
            }
        }
    }

    /// The pool a worker lands in when it names none.
    pub fn default_pool(&self) -> &str {
        self.pools.values().find(|p| p.is_default).map(|p| p.name.as_str()).unwrap_or(FALLBACK_POOL)
    }

    fn heartbeat(&mut self, beat: &Heartbeat, at: u64) -> Result<HeartbeatAnswer, CommandError> {
        validate_name("worker_id", &beat.worker_id)?;
        let pool: Key = match &beat.pool {
            Some(p) => {
                validate_name("pool", p)?;
                p.clone()
            }
            None => self.default_pool().into(),
        };
        // One lookup of the worker. Heartbeats are last-state writes: an
        // older one applied after a newer one would roll the worker back, so
        // it changes nothing (not even the pool it names) and is marked stale.
        let (desired, quarantined, answered_pool, stale) = match self.workers.get_mut(beat.worker_id.as_str()) {
            Some(w) if w.is_older(beat) => (w.desired_state, w.quarantined, w.pool.clone(), true),
            Some(w) => {
                w.record(beat, at);
                w.pool.clone_from(&pool);
                (w.desired_state, w.quarantined, pool, false)
            }
            None => {
                let w = Worker::new(beat, pool.clone(), at);
                let answer = (w.desired_state, w.quarantined, pool, false);
                self.workers.insert(beat.worker_id.to_string(), w);
                answer
            }
        };
        let pool_desired_count = match self.pools.get(answered_pool.as_str()) {
            Some(p) => p.desired_count,
            None if stale => 0,
            None => {
                let p = Pool::new(&answered_pool, at);
                self.pools.entry(answered_pool.to_string()).or_insert(p).desired_count
            }
        };
        Ok(HeartbeatAnswer {
            desired_state: desired,
            quarantined,
            pool_desired_count,
            policy_version: self.policy_version.clone(),
            provider_modes: self.provider_modes(),
            stale,
        })
    }

    fn audit(&mut self, req: &Request, subject: &str, reason: Option<String>) {
        self.audit_seq += 1;
        self.audit.push_front(AuditEntry {
            seq: self.audit_seq,
            at_ms: req.at_ms,
            node: req.node,
            actor: req.actor.clone(),
            action: req.command.name().to_string(),
            subject: subject.to_string(),
            reason,
        });
        self.audit.truncate(AUDIT_CAPACITY);
    }
}

#[cfg(test)]
mod tests;
