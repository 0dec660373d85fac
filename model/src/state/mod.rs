//! The control state every node holds, and the pure function that applies a
//! command to it. No clock, no I/O, no randomness: time arrives in the request.
//!
//! One module per command family owns its commands' validation, apply and
//! unit tests: `worker` (heartbeats, controls, removal), `pool`, `incident`
//! (incidents and notifications), `provider`, `setting`, `token` (API
//! tokens and scopes), `job` (the work queue), `farm` (the build farm on
//! it), and `format` (the
//! cluster format version and the snapshot layout). [`ControlState::apply`]
//! is only the dispatch; adding a command touches its family module, the
//! dispatch and its route. Families record their entities' changes in one
//! bounded history (`history`).

pub mod farm;
pub mod format;
pub mod history;
pub mod incident;
pub mod job;
pub mod metric;
pub mod pool;
pub mod provider;
pub mod setting;
pub mod token;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError, ErrorKind, Request, Response};
use crate::NodeId;
pub use format::{decode_snapshot, decode_snapshot_prefix, encode_snapshot, FORMAT_VERSION};
pub use history::{Change, HISTORY_CAPACITY};
pub use incident::{
    DeliveryState, Firing, FleetSample, Incident, IncidentChanges, IncidentState, Notification, Reconcile,
};
pub use job::{
    Attempt, AttemptOutcome, Backoff, Claim, Finish, Job, JobCounters, JobId, JobOp, JobOps, JobReply, JobState, Jobs,
    Lease, LeaseToken, NewJob, QueueConfig, Renew,
};
pub use metric::{Key, Metric};
pub use pool::{Pool, PoolPatch, Profile};
pub use provider::ProviderState;
pub use worker::{DesiredState, Heartbeat, HeartbeatAnswer, Limits, Worker, WorkerAction};

/// Longest identifier accepted; names appear in URLs, keys and metrics labels.
pub const MAX_NAME_LEN: usize = 128;
/// Upper bound on a pool's desired count; anything larger is a typo.
pub const MAX_DESIRED_COUNT: u32 = 100_000;
/// How many audit entries the replicated state keeps (oldest dropped first).
pub const AUDIT_CAPACITY: usize = 10_000;
/// Name of the pool used when there is no default and a worker names none.
pub const FALLBACK_POOL: &str = "default";

/// The replicated control state. **Format rule** (as for `Command`): fields
/// are appended, never reordered or removed; the fields after `audit_seq`
/// exist from cluster format 2 on, and a snapshot taken at format 1 is
/// written in the 0.1.0 layout (see `format`).
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
    // ---- format 2 (release 0.2.0) ----
    /// The cluster format version: which apply rules and variants are in
    /// force (0 means 1, the format of release 0.1.0). Raised only by
    /// `Command::SetFormatVersion`, which the leader proposes once every
    /// voter runs a binary that knows the new version.
    pub format_version: u32,
    /// Pools a heartbeat created and no operator has configured since; the
    /// cleanup loop removes them once they have no workers.
    pub implicit_pools: BTreeSet<String>,
    /// Entity changes, newest last, at most [`HISTORY_CAPACITY`].
    pub history: VecDeque<Change>,
    pub history_seq: u64,
    /// Derived, not replicated: the ids of each pool's workers, so that pool
    /// counts and autoscale do not scan the fleet. Rebuilt after a decode.
    #[serde(skip)]
    pub by_pool: BTreeMap<String, BTreeSet<String>>,
    // ---- format 4: carried by the snapshot's format-4 section (see
    // `format`), not by this struct's own encoding, so that the layout of
    // formats 2 and 3 stays byte for byte what it was ----
    /// Named, scoped API tokens (their hashes).
    #[serde(skip)]
    pub tokens: token::Tokens,
    // ---- format 5: carried by the snapshot's format-5 section ----
    /// Jobs, their queues and indices.
    #[serde(skip)]
    pub jobs: job::Jobs,
    // ---- format 6: carried by the snapshot's format-6 section ----
    /// The build farm: hints, build events, blob versions, log sizes.
    #[serde(skip)]
    pub farm: farm::Farm,
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
        let needs = req.command.min_format();
        if needs > self.format() {
            return Err(CommandError::new(
                ErrorKind::Invalid,
                format!("{} needs cluster format {needs}; the cluster is at {}", req.command.name(), self.format()),
            ));
        }
        match &req.command {
            Command::HeartbeatBatch { beats } => self.heartbeats(beats, None, req),
            Command::HeartbeatBatchLimited { beats, limits } => self.heartbeats(beats, Some(limits), req),
            Command::WorkerControl { worker, action, reason } => self.worker_control(req, worker, *action, reason),
            Command::RemoveStaleWorkers { cutoff_ms, ids } => self.remove_stale_workers(req, *cutoff_ms, ids),
            Command::DeleteWorker { id, reason } => self.delete_worker(req, id, reason),
            Command::ScalePool { pool, desired_count } => self.scale_pool(req, pool, *desired_count),
            Command::CreatePool { name, patch } => self.create_pool(req, name, patch),
            Command::UpdatePool { name, patch } => self.update_pool(req, name, patch),
            Command::ArchivePool { name, archived } => self.archive_pool(req, name, *archived),
            Command::SetDefaultPool { name } => self.set_default_pool(req, name),
            Command::AutoscalePool { pool, from, to, reason, cooldown_ms } => {
                self.autoscale_pool(req, pool, (*from, *to), reason, *cooldown_ms)
            }
            Command::RemoveEmptyPools { names } => self.remove_empty_pools(req, names),
            Command::ReconcileIncidents(r) => self.reconcile_incidents(req, r),
            Command::IncidentChanges(d) => self.incident_changes(req, d),
            Command::AckIncident { id, note } => self.incident_ack(req, *id, note),
            Command::ClaimNotification { id, until_ms } => self.notification_claim(req, *id, *until_ms),
            Command::RecordDelivery { id, error, retry_at_ms } => {
                self.notification_record(req, *id, error, *retry_at_ms)
            }
            Command::SetProviderMode { provider, mode, auto, reason } => {
                self.provider_mode(req, provider, mode, *auto, reason)
            }
            Command::UpdateSettings { changes } => self.update_settings(req, changes),
            Command::SetFormatVersion { version } => self.set_format_version(req, *version),
            Command::CreateToken(t) => self.create_token(req, t),
            Command::RevokeToken { name } => self.revoke_token(req, name),
            Command::Jobs(ops) => self.job_ops(req, ops),
            Command::Farm(op) => self.farm_op(req, op),
        }
    }

    /// The cluster format version in force (see `format`).
    pub fn format(&self) -> u32 {
        self.format_version.max(1)
    }

    /// The pool a worker lands in when it names none.
    pub fn default_pool(&self) -> &str {
        self.pools.values().find(|p| p.is_default).map(|p| p.name.as_str()).unwrap_or(FALLBACK_POOL)
    }

    /// The ids of a pool's workers, from the index.
    pub fn pool_workers<'a>(&'a self, pool: &str) -> impl Iterator<Item = &'a Worker> + 'a {
        self.by_pool.get(pool).into_iter().flatten().filter_map(|id| self.workers.get(id))
    }

    /// Rebuild the derived index (after a snapshot decode).
    pub fn reindex(&mut self) {
        self.tokens.reindex();
        self.jobs.reindex();
        self.farm.reindex();
        self.by_pool.clear();
        for w in self.workers.values() {
            self.by_pool.entry(w.pool.to_string()).or_default().insert(w.id.clone());
        }
    }

    fn audit(&mut self, req: &Request, subject: &str, reason: Option<String>) {
        self.audit_as(req, req.command.name(), subject, reason);
    }

    /// An audit entry with its own action, for commands that group several
    /// actions (`job.ops` records `job.cancel`, `queue.clear`, …).
    fn audit_as(&mut self, req: &Request, action: &str, subject: &str, reason: Option<String>) {
        self.audit_seq += 1;
        self.audit.push_front(AuditEntry {
            seq: self.audit_seq,
            at_ms: req.at_ms,
            node: req.node,
            actor: req.actor.clone(),
            action: action.to_string(),
            subject: subject.to_string(),
            reason,
        });
        self.audit.truncate(AUDIT_CAPACITY);
    }
}

#[cfg(test)]
mod testkit;
