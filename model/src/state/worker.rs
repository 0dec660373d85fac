//! Workers: what a heartbeat records, what an operator control changes, and
//! what a worker is told to do in return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::field;
use super::{not_found, validate_name, ControlState, Pool};
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

/// What the control plane wants a worker to be doing.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    #[default]
    Running,
    Paused,
    Draining,
    Stopped,
}

impl DesiredState {
    pub const ALL: [DesiredState; 4] =
        [DesiredState::Running, DesiredState::Paused, DesiredState::Draining, DesiredState::Stopped];

    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Paused => "paused",
            DesiredState::Draining => "draining",
            DesiredState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A counter from a metrics map, 0 when absent.
pub fn metric(map: &MetricMap, key: &str) -> f64 {
    map.get(key).map(|m| m.value()).unwrap_or(0.0)
}

/// Heartbeat freshness (reference 001): `healthy` within the grace period,
/// `stale` after it, `none` when nothing was ever received.
pub fn heartbeat_state(last_heartbeat_ms: Option<u64>, now_ms: u64, grace_ms: u64) -> &'static str {
    match last_heartbeat_ms {
        None | Some(0) => "none",
        Some(t) if now_ms.saturating_sub(t) <= grace_ms => "healthy",
        Some(_) => "stale",
    }
}

/// Process states a worker may report (reference 001).
pub const PROCESS_STATES: [&str; 5] = ["running", "starting", "stopping", "stopped", "unknown"];

/// An operator (or automation) action on one worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerAction {
    Pause,
    Resume,
    Drain,
    Stop,
    Quarantine,
    Unquarantine,
}

impl WorkerAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "drain" => Self::Drain,
            "stop" => Self::Stop,
            "quarantine" => Self::Quarantine,
            "unquarantine" => Self::Unquarantine,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Drain => "drain",
            Self::Stop => "stop",
            Self::Quarantine => "quarantine",
            Self::Unquarantine => "unquarantine",
        }
    }
}

pub use super::metric::{Key, MetricMap, NestedMetrics, SmallMap};

/// One heartbeat as validated by the API and carried in a Raft entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Heartbeat {
    #[schema(value_type = String)]
    pub worker_id: Key,
    #[schema(value_type = String)]
    pub host: Key,
    #[schema(value_type = String)]
    pub ip: Key,
    #[schema(value_type = Option<String>)]
    pub pool: Option<Key>,
    #[schema(value_type = String)]
    pub version: Key,
    #[schema(value_type = String)]
    pub status: Key,
    #[schema(value_type = String)]
    pub process_state: Key,
    #[schema(value_type = BTreeMap<String, f64>)]
    pub metrics: MetricMap,
    #[schema(value_type = BTreeMap<String, BTreeMap<String, f64>>)]
    pub stage_metrics: NestedMetrics,
    #[schema(value_type = BTreeMap<String, f64>)]
    pub smtp_metrics: MetricMap,
    #[schema(value_type = BTreeMap<String, BTreeMap<String, f64>>)]
    pub provider_metrics: NestedMetrics,
    /// Unknown top-level fields, each kept as compact JSON text; the worker's
    /// ordering field `seq` travels here too (see [`Heartbeat::seq`]).
    #[schema(value_type = BTreeMap<String, String>)]
    pub meta: SmallMap<String>,
}

/// Key in `meta` of a heartbeat's ordering number. It lives in `meta`, not
/// in a field of its own, so that log entries and snapshots written before
/// it existed decode unchanged (the replicated format has no version yet).
pub const SEQ_KEY: &str = "seq";

/// The ordering number in a `meta` map, if one was sent.
fn seq_in(meta: &SmallMap<String>) -> Option<u64> {
    meta.get(SEQ_KEY).and_then(|s| s.parse().ok())
}

impl Heartbeat {
    /// An upper bound on this heartbeat's encoded size in a log entry: every
    /// string with a 9-byte length, every metric 8 bytes plus its key. Used
    /// to close a batch at its byte budget without encoding it twice.
    pub fn approx_encoded_len(&self) -> usize {
        let s = |k: &str| k.len() + 9;
        let flat = |m: &MetricMap| 9 + m.iter().map(|(k, _)| s(k) + 8).sum::<usize>();
        let nested = |m: &NestedMetrics| 9 + m.iter().map(|(k, v)| s(k) + flat(v)).sum::<usize>();
        [&self.worker_id, &self.host, &self.ip, &self.version, &self.status, &self.process_state]
            .iter()
            .map(|k| s(k))
            .sum::<usize>()
            + self.pool.as_deref().map_or(1, s)
            + flat(&self.metrics)
            + nested(&self.stage_metrics)
            + flat(&self.smtp_metrics)
            + nested(&self.provider_metrics)
            + 9
            + self.meta.iter().map(|(k, v)| s(k) + s(v)).sum::<usize>()
    }

    /// The worker's own ordering number: increasing per worker, so a
    /// heartbeat applied after a newer one (a batch delayed by a partition,
    /// an entry of a deposed leader committed late) is recognised as older.
    pub fn seq(&self) -> Option<u64> {
        seq_in(&self.meta)
    }
}

/// What a worker is told after its heartbeat is committed (SPEC §3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    pub desired_state: DesiredState,
    pub quarantined: bool,
    pub pool_desired_count: u32,
    pub policy_version: Option<String>,
    pub provider_modes: BTreeMap<String, String>,
    /// True when this heartbeat's `seq` was not above the one already
    /// recorded: nothing of it was kept, the answer is the current state.
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Worker {
    pub id: String,
    #[schema(value_type = String)]
    pub host: Key,
    #[schema(value_type = String)]
    pub ip: Key,
    #[schema(value_type = String)]
    pub pool: Key,
    #[schema(value_type = String)]
    pub version: Key,
    #[schema(value_type = String)]
    pub status: Key,
    #[schema(value_type = String)]
    pub process_state: Key,
    pub first_seen_ms: u64,
    pub last_heartbeat_ms: u64,
    pub heartbeat_count: u64,
    #[schema(value_type = BTreeMap<String, f64>)]
    pub metrics: MetricMap,
    #[schema(value_type = BTreeMap<String, BTreeMap<String, f64>>)]
    pub stage_metrics: NestedMetrics,
    #[schema(value_type = BTreeMap<String, f64>)]
    pub smtp_metrics: MetricMap,
    #[schema(value_type = BTreeMap<String, BTreeMap<String, f64>>)]
    pub provider_metrics: NestedMetrics,
    /// Extra fields of the latest heartbeat, each kept as its JSON text and
    /// shown by the API as the value the worker sent.
    #[schema(value_type = Object)]
    #[serde(serialize_with = "meta_as_values")]
    pub meta: SmallMap<String>,
    pub desired_state: DesiredState,
    pub desired_changed_ms: u64,
    pub quarantined: bool,
    pub quarantine_reason: Option<String>,
    /// Start of the current error-rate window and the counters at that time.
    pub window_start_ms: u64,
    pub window_processed: f64,
    pub window_errors: f64,
    /// Error rate (percent) over the last completed window with any work.
    pub error_rate: Option<f64>,
}

/// `meta` as stored and replicated (binary formats) is JSON text per key; a
/// human-readable format (the API's JSON) shows each value as sent.
fn meta_as_values<S: serde::Serializer>(meta: &SmallMap<String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    if !s.is_human_readable() {
        return meta.serialize(s);
    }
    let mut m = s.serialize_map(Some(meta.len()))?;
    for (k, raw) in meta.iter() {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(v) => m.serialize_entry(k.as_str(), &v)?,
            Err(_) => m.serialize_entry(k.as_str(), raw)?,
        }
    }
    m.end()
}

/// Length of the window a worker's error rate is measured over.
pub const RATE_WINDOW_MS: u64 = 60_000;

impl Worker {
    /// A worker first seen in `beat`, wanted running.
    pub fn new(beat: &Heartbeat, pool: impl Into<Key>, at_ms: u64) -> Self {
        let mut w = Worker {
            id: beat.worker_id.to_string(),
            host: Key::default(),
            ip: Key::default(),
            pool: pool.into(),
            version: Key::default(),
            status: Key::default(),
            process_state: Key::default(),
            first_seen_ms: at_ms,
            last_heartbeat_ms: at_ms,
            heartbeat_count: 0,
            metrics: MetricMap::new(),
            stage_metrics: NestedMetrics::new(),
            smtp_metrics: MetricMap::new(),
            provider_metrics: NestedMetrics::new(),
            meta: SmallMap::new(),
            desired_state: DesiredState::Running,
            desired_changed_ms: at_ms,
            quarantined: false,
            quarantine_reason: None,
            window_start_ms: at_ms,
            window_processed: metric(&beat.metrics, "processed"),
            window_errors: metric(&beat.metrics, "errors"),
            error_rate: None,
        };
        w.record(beat, at_ms);
        w
    }

    /// The `seq` of the last heartbeat recorded, if it carried one.
    pub fn seq(&self) -> Option<u64> {
        seq_in(&self.meta)
    }

    /// Would recording `beat` move this worker back to an older heartbeat?
    /// Only when both carry a `seq` and the new one is not above the old.
    pub fn is_older(&self, beat: &Heartbeat) -> bool {
        matches!((beat.seq(), self.seq()), (Some(new), Some(old)) if new <= old)
    }

    /// Keep the last heartbeat's fields and metrics as sent.
    pub fn record(&mut self, beat: &Heartbeat, at_ms: u64) {
        self.host.clone_from(&beat.host);
        self.ip.clone_from(&beat.ip);
        self.version.clone_from(&beat.version);
        self.status.clone_from(&beat.status);
        self.process_state.clone_from(&beat.process_state);
        self.metrics.clone_from(&beat.metrics);
        self.stage_metrics.clone_from(&beat.stage_metrics);
        self.smtp_metrics.clone_from(&beat.smtp_metrics);
        self.provider_metrics.clone_from(&beat.provider_metrics);
        self.meta.clone_from(&beat.meta);
        self.last_heartbeat_ms = self.last_heartbeat_ms.max(at_ms);
        self.heartbeat_count += 1;
        self.roll_window(at_ms);
    }

    /// Close the error-rate window once it is long enough. A counter that went
    /// backwards (worker restart) starts a fresh window.
    fn roll_window(&mut self, at_ms: u64) {
        let (processed, errors) = (metric(&self.metrics, "processed"), metric(&self.metrics, "errors"));
        if processed < self.window_processed || errors < self.window_errors {
            (self.window_start_ms, self.window_processed, self.window_errors) = (at_ms, processed, errors);
            return;
        }
        if at_ms.saturating_sub(self.window_start_ms) < RATE_WINDOW_MS {
            return;
        }
        let done = processed - self.window_processed;
        if done > 0.0 {
            self.error_rate = Some(((errors - self.window_errors) / done * 100.0).clamp(0.0, 100.0));
        }
        (self.window_start_ms, self.window_processed, self.window_errors) = (at_ms, processed, errors);
    }

    /// Apply an operator action, or say why it makes no sense now.
    pub fn control(&mut self, action: WorkerAction, reason: Option<&str>, at_ms: u64) -> Result<(), CommandError> {
        use DesiredState::*;
        let conflict = |msg: String| Err(CommandError::new(ErrorKind::Conflict, msg));
        let target = match (action, self.desired_state) {
            (WorkerAction::Quarantine, _) if self.quarantined => {
                return conflict(format!("worker {} is already quarantined", self.id))
            }
            (WorkerAction::Quarantine, _) => {
                self.quarantined = true;
                self.quarantine_reason = reason.map(str::to_string);
                return Ok(());
            }
            (WorkerAction::Unquarantine, _) if !self.quarantined => {
                return conflict(format!("worker {} is not quarantined", self.id))
            }
            (WorkerAction::Unquarantine, _) => {
                self.quarantined = false;
                self.quarantine_reason = None;
                return Ok(());
            }
            (WorkerAction::Pause, Running | Draining) => Paused,
            (WorkerAction::Resume, Paused | Draining | Stopped) => Running,
            (WorkerAction::Drain, Running | Paused) => Draining,
            (WorkerAction::Stop, Running | Paused | Draining) => Stopped,
            (a, current) => {
                return conflict(format!(
                    "cannot {} worker {}: its desired state is {}",
                    a.as_str(),
                    self.id,
                    current.as_str()
                ))
            }
        };
        self.desired_state = target;
        self.desired_changed_ms = at_ms;
        Ok(())
    }
}

/// Caps on the fleet that the leader carries in each heartbeat batch
/// (`ENGINE_MAX_WORKERS`, `ENGINE_MAX_POOLS`), so every node refuses the same
/// heartbeats: a new worker past `max_workers`, a new pool past `max_pools`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub max_workers: u64,
    pub max_pools: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_workers: 250_000, max_pools: 1_000 }
    }
}

// ---- the worker command family ----

fn identity(w: &Worker) -> [(&'static str, &str); 4] {
    [("host", &w.host), ("ip", &w.ip), ("version", &w.version), ("pool", &w.pool)]
}

impl ControlState {
    pub(super) fn heartbeats(&mut self, beats: &[Heartbeat], limits: Option<&Limits>, req: &Request) -> Response {
        let answers = beats.iter().map(|b| self.heartbeat(b, limits, req)).collect();
        Ok(Reply::Heartbeats(answers))
    }

    fn heartbeat(
        &mut self,
        beat: &Heartbeat,
        limits: Option<&Limits>,
        req: &Request,
    ) -> Result<HeartbeatAnswer, CommandError> {
        let at = req.at_ms;
        validate_name("worker_id", &beat.worker_id)?;
        let pool: Key = match &beat.pool {
            Some(p) => {
                validate_name("pool", p)?;
                p.clone()
            }
            None => self.default_pool().into(),
        };
        let over = |what: &str, cap: u64| {
            Err(CommandError::new(
                ErrorKind::Limit,
                format!("the fleet is at its cap of {cap} {what}s; no new {what} is accepted"),
            ))
        };
        let new_pool = !self.pools.contains_key(pool.as_str());
        if let Some(l) = limits {
            if new_pool && self.pools.len() as u64 >= l.max_pools {
                return over("pool", l.max_pools);
            }
            if self.workers.len() as u64 >= l.max_workers && !self.workers.contains_key(beat.worker_id.as_str()) {
                return over("worker", l.max_workers);
            }
        }
        // One lookup of the worker. Heartbeats are last-state writes: an
        // older one applied after a newer one would roll the worker back, so
        // it changes nothing (not even the pool it names) and is marked stale.
        let mut moved_from = None;
        let mut change = None;
        let (desired, quarantined, answered_pool, stale) = match self.workers.get_mut(beat.worker_id.as_str()) {
            Some(w) if w.is_older(beat) => (w.desired_state, w.quarantined, w.pool.clone(), true),
            Some(w) => {
                // Identity changes go to the history; compared before the
                // record, without copies (this is the heartbeat path).
                let mut fields = Vec::new();
                for (name, was, now) in [
                    ("host", &w.host, &beat.host),
                    ("ip", &w.ip, &beat.ip),
                    ("version", &w.version, &beat.version),
                    ("pool", &w.pool, &pool),
                ] {
                    if was != now {
                        fields.push(field(name, now));
                    }
                }
                w.record(beat, at);
                if w.pool != pool {
                    moved_from = Some(std::mem::replace(&mut w.pool, pool.clone()));
                }
                if !fields.is_empty() {
                    change = Some(fields);
                }
                (w.desired_state, w.quarantined, pool, false)
            }
            None => {
                let w = Worker::new(beat, pool.clone(), at);
                let mut fields: Vec<_> = identity(&w).iter().map(|(k, v)| field(k, v)).collect();
                fields.push(field("desired_state", w.desired_state.as_str()));
                change = Some(fields);
                let answer = (w.desired_state, w.quarantined, pool, false);
                self.workers.insert(beat.worker_id.to_string(), w);
                self.by_pool.entry(answer.2.to_string()).or_default().insert(beat.worker_id.to_string());
                answer
            }
        };
        if let Some(old) = moved_from {
            self.unindex(old.as_str(), &beat.worker_id);
            self.by_pool.entry(answered_pool.to_string()).or_default().insert(beat.worker_id.to_string());
        }
        if let Some(fields) = change {
            self.changed(req, format!("worker:{}", beat.worker_id), fields);
        }
        let pool_desired_count = match self.pools.get(answered_pool.as_str()) {
            Some(p) => p.desired_count,
            None if stale => 0,
            None => {
                let p = Pool::new(&answered_pool, at);
                if self.format() >= 2 {
                    self.implicit_pools.insert(answered_pool.to_string());
                }
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

    fn unindex(&mut self, pool: &str, id: &str) {
        if let Some(ids) = self.by_pool.get_mut(pool) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_pool.remove(pool);
            }
        }
    }

    /// Remove a worker and its index entry; true if it was there.
    fn remove_worker(&mut self, id: &str) -> bool {
        match self.workers.remove(id) {
            Some(w) => {
                self.unindex(w.pool.as_str(), id);
                true
            }
            None => false,
        }
    }

    pub(super) fn worker_control(
        &mut self,
        req: &Request,
        worker: &str,
        action: WorkerAction,
        reason: &Option<String>,
    ) -> Response {
        let w = self.workers.get_mut(worker).ok_or_else(|| not_found("worker", worker))?;
        w.control(action, reason.as_deref(), req.at_ms)?;
        let reply = Reply::Worker(w.clone());
        let fields = vec![
            field("desired_state", w.desired_state.as_str()),
            field("quarantined", w.quarantined),
            field("reason", reason.as_deref().unwrap_or("")),
        ];
        self.changed(req, format!("worker:{worker}"), fields);
        self.audit(req, worker, reason.clone());
        Ok(reply)
    }

    pub(super) fn remove_stale_workers(&mut self, req: &Request, cutoff_ms: u64, ids: &[String]) -> Response {
        let mut removed = Vec::new();
        for id in ids {
            // Re-checked here: a worker that heartbeated since the leader
            // looked is not stale any more and stays.
            if self.workers.get(id).is_some_and(|w| w.last_heartbeat_ms < cutoff_ms) && self.remove_worker(id) {
                removed.push(id.clone());
            }
        }
        for id in &removed {
            self.changed(req, format!("worker:{id}"), vec![field("removed", "stale")]);
            self.audit(req, id, Some(format!("silent since before {cutoff_ms}")));
        }
        Ok(Reply::Removed(removed))
    }

    /// An operator removes a worker from the state. If it heartbeats again it
    /// comes back as new (running, not quarantined): stop it first.
    pub(super) fn delete_worker(&mut self, req: &Request, id: &str, reason: &Option<String>) -> Response {
        if !self.remove_worker(id) {
            return Err(not_found("worker", id));
        }
        self.changed(req, format!("worker:{id}"), vec![field("removed", "deleted")]);
        self.audit(req, id, reason.clone());
        Ok(Reply::Removed(vec![id.to_string()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Metric;

    fn beat(id: &str) -> Heartbeat {
        Heartbeat {
            worker_id: id.into(),
            host: "h".into(),
            ip: "127.0.0.1".into(),
            pool: None,
            version: "1".into(),
            status: "running".into(),
            process_state: "running".into(),
            metrics: MetricMap::from([("processed", Metric(5.0))]),
            stage_metrics: NestedMetrics::new(),
            smtp_metrics: MetricMap::new(),
            provider_metrics: NestedMetrics::new(),
            meta: SmallMap::new(),
        }
    }

    /// The heartbeat as earlier versions encoded it (text fields as
    /// `String`), as Raft logs on disk and older peers still hold it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct HeartbeatWithStrings {
        worker_id: String,
        host: String,
        ip: String,
        pool: Option<String>,
        version: String,
        status: String,
        process_state: String,
        metrics: MetricMap,
        stage_metrics: NestedMetrics,
        smtp_metrics: MetricMap,
        provider_metrics: NestedMetrics,
        meta: SmallMap<String>,
    }

    #[test]
    fn inline_text_fields_encode_exactly_as_strings_did() {
        let mut new = beat("a-worker-id-longer-than-twenty-four-bytes");
        new.pool = Some("default".into());
        new.stage_metrics = [("dns", MetricMap::from([("ok", Metric(3.0))]))].into();
        new.meta = [("region", "\"eu\"".to_string())].into();
        let old = HeartbeatWithStrings {
            worker_id: new.worker_id.to_string(),
            host: new.host.to_string(),
            ip: new.ip.to_string(),
            pool: new.pool.as_ref().map(|p| p.to_string()),
            version: new.version.to_string(),
            status: new.status.to_string(),
            process_state: new.process_state.to_string(),
            metrics: new.metrics.clone(),
            stage_metrics: new.stage_metrics.clone(),
            smtp_metrics: new.smtp_metrics.clone(),
            provider_metrics: new.provider_metrics.clone(),
            meta: new.meta.clone(),
        };
        let bytes = crate::codec::encode(&old).unwrap();
        assert_eq!(crate::codec::encode(&new).unwrap(), bytes, "same bytes on disk and on the wire");
        assert_eq!(crate::codec::decode::<Heartbeat>(&bytes).unwrap(), new);
        assert_eq!(crate::codec::decode::<HeartbeatWithStrings>(&bytes).unwrap(), old);
    }

    #[test]
    fn transitions_follow_the_control_model() {
        let mut w = Worker::new(&beat("w"), "default", 1);
        w.control(WorkerAction::Pause, None, 2).unwrap();
        assert_eq!(w.desired_state, DesiredState::Paused);
        assert_eq!(w.control(WorkerAction::Pause, None, 3).unwrap_err().kind, ErrorKind::Conflict);
        w.control(WorkerAction::Drain, None, 4).unwrap();
        w.control(WorkerAction::Stop, None, 5).unwrap();
        assert_eq!(w.control(WorkerAction::Drain, None, 6).unwrap_err().kind, ErrorKind::Conflict);
        w.control(WorkerAction::Resume, None, 7).unwrap();
        assert_eq!(w.desired_state, DesiredState::Running);
        assert_eq!(w.desired_changed_ms, 7);
        w.control(WorkerAction::Quarantine, Some("flaky"), 8).unwrap();
        assert!(w.control(WorkerAction::Quarantine, None, 9).is_err());
        assert_eq!(w.quarantine_reason.as_deref(), Some("flaky"));
        w.control(WorkerAction::Unquarantine, None, 10).unwrap();
        assert!(!w.quarantined);
    }

    #[test]
    fn error_rate_is_measured_per_window() {
        let mut b = beat("w");
        b.metrics = MetricMap::from([("processed", Metric(100.0)), ("errors", Metric(0.0))]);
        let mut w = Worker::new(&b, "p", 0);
        b.metrics = MetricMap::from([("processed", Metric(200.0)), ("errors", Metric(20.0))]);
        w.record(&b, 30_000);
        assert_eq!(w.error_rate, None, "window still open");
        w.record(&b, 60_000);
        assert_eq!(w.error_rate, Some(20.0));
        b.metrics = MetricMap::from([("processed", Metric(5.0)), ("errors", Metric(0.0))]);
        w.record(&b, 70_000);
        assert_eq!((w.window_start_ms, w.error_rate), (70_000, Some(20.0)), "reset keeps last rate");
    }

    #[test]
    fn record_keeps_latest_and_never_moves_time_back() {
        let mut w = Worker::new(&beat("w"), "default", 100);
        let mut b = beat("w");
        b.metrics.insert("processed", Metric(9.0));
        w.record(&b, 50);
        assert_eq!(w.last_heartbeat_ms, 100);
        assert_eq!(w.metrics.get("processed"), Some(&Metric(9.0)));
        assert_eq!(w.heartbeat_count, 2);
    }
}

#[cfg(test)]
#[allow(unused_imports)]
mod command_tests {
    use crate::command::*;
    use crate::state::testkit::{beat, req};
    use crate::state::worker::{metric, MetricMap};
    use crate::state::*;

    #[test]
    fn heartbeat_batch_answers_each_beat_and_refuses_bad_ones_alone() {
        let mut s = ControlState::default();
        s.apply(&req(Command::ScalePool { pool: "eu".into(), desired_count: 4 })).unwrap();
        let beats = vec![beat("w-1", Some("eu")), beat("bad id", None), beat("w-2", None)];
        let Reply::Heartbeats(answers) = s.apply(&req(Command::HeartbeatBatch { beats: beats.into() })).unwrap() else {
            panic!("expected heartbeat answers")
        };
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].as_ref().unwrap().pool_desired_count, 4);
        assert!(answers[1].is_err());
        assert_eq!(answers[2].as_ref().unwrap().desired_state, DesiredState::Running);
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.workers["w-2"].pool, FALLBACK_POOL);
        assert!(s.audit.len() == 1, "heartbeats are not audited");
    }

    #[test]
    fn controls_reach_the_next_heartbeat_answer() {
        let mut s = ControlState::default();
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", None)].into() })).unwrap();
        let control = |action| Command::WorkerControl { worker: "w-1".into(), action, reason: Some("ops".into()) };
        s.apply(&req(control(WorkerAction::Pause))).unwrap();
        s.apply(&req(control(WorkerAction::Quarantine))).unwrap();
        let Reply::Heartbeats(a) =
            s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", None)].into() })).unwrap()
        else {
            panic!()
        };
        let a = a[0].as_ref().unwrap();
        assert_eq!((a.desired_state, a.quarantined), (DesiredState::Paused, true));
        let e = s
            .apply(&req(Command::WorkerControl { worker: "nope".into(), action: WorkerAction::Pause, reason: None }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(s.audit[0].action, "worker.quarantine");
    }

    #[test]
    fn stale_removal_rechecks_the_heartbeat_time() {
        let mut s = ControlState::default();
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("old", None), beat("fresh", None)].into() })).unwrap();
        let mut later = req(Command::HeartbeatBatch { beats: vec![beat("fresh", None)].into() });
        later.at_ms = 5_000;
        s.apply(&later).unwrap();
        let cmd = Command::RemoveStaleWorkers { cutoff_ms: 2_000, ids: vec!["old".into(), "fresh".into()] };
        let Reply::Removed(removed) = s.apply(&req(cmd)).unwrap() else { panic!() };
        assert_eq!(removed, vec!["old".to_string()]);
        assert!(s.workers.contains_key("fresh"));
    }

    fn beat_seq(id: &str, seq: Option<u64>, processed: f64) -> Heartbeat {
        let mut b = beat(id, Some("p"));
        b.metrics = MetricMap::from([("processed", Metric(processed))]);
        if let Some(seq) = seq {
            b.meta.insert(worker::SEQ_KEY, seq.to_string());
        }
        b
    }

    fn batch(beats: Vec<Heartbeat>) -> Request {
        req(Command::HeartbeatBatch { beats: beats.into() })
    }

    fn answers(r: Response) -> Vec<HeartbeatAnswer> {
        match r {
            Ok(Reply::Heartbeats(a)) => a.into_iter().map(|a| a.expect("heartbeat accepted")).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_older_heartbeat_applied_after_a_newer_one_changes_nothing() {
        let mut s = ControlState::default();
        let a = answers(s.apply(&batch(vec![beat_seq("w", Some(29), 29.0)])));
        assert!(!a[0].stale);
        let before = s.workers["w"].clone();
        // The delayed batch: older, then equal (a retry of the same heartbeat).
        for seq in [26, 29] {
            let mut late = beat_seq("w", Some(seq), seq as f64);
            late.pool = Some("elsewhere".into());
            late.status = "stopping".into();
            let a = answers(s.apply(&batch(vec![late])));
            assert!(a[0].stale, "seq {seq} after 29 is stale");
            assert_eq!(s.workers["w"], before, "seq {seq} after 29 left the record as it was");
            assert!(!s.pools.contains_key("elsewhere"), "a stale heartbeat creates no pool");
        }
        // The answer is the worker's current one, not a default.
        s.apply(&req(Command::WorkerControl { worker: "w".into(), action: WorkerAction::Pause, reason: None }))
            .unwrap();
        s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: 7 })).unwrap();
        let a = answers(s.apply(&batch(vec![beat_seq("w", Some(3), 3.0)])));
        assert_eq!((a[0].desired_state, a[0].pool_desired_count, a[0].stale), (DesiredState::Paused, 7, true));
        // A newer one is recorded, within the same batch too.
        let a = answers(s.apply(&batch(vec![beat_seq("w", Some(31), 31.0), beat_seq("w", Some(30), 30.0)])));
        assert_eq!((a[0].stale, a[1].stale), (false, true));
        assert_eq!((s.workers["w"].seq(), metric(&s.workers["w"].metrics, "processed")), (Some(31), 31.0));
        assert_eq!(s.workers["w"].heartbeat_count, 2);
    }

    #[test]
    fn heartbeats_without_seq_keep_last_applied_wins() {
        let mut s = ControlState::default();
        answers(s.apply(&batch(vec![beat_seq("w", None, 5.0)])));
        let a = answers(s.apply(&batch(vec![beat_seq("w", None, 3.0)])));
        assert!(!a[0].stale);
        assert_eq!(metric(&s.workers["w"].metrics, "processed"), 3.0);
        // A worker that starts sending seq is ordered from then on; one that
        // stops sending it is recorded as before.
        answers(s.apply(&batch(vec![beat_seq("w", Some(10), 10.0)])));
        assert!(answers(s.apply(&batch(vec![beat_seq("w", Some(9), 9.0)])))[0].stale);
        assert!(!answers(s.apply(&batch(vec![beat_seq("w", None, 1.0)])))[0].stale);
        assert_eq!((s.workers["w"].seq(), metric(&s.workers["w"].metrics, "processed")), (None, 1.0));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let hex = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let hex = hex.trim();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
    }

    /// Log entries and snapshots written by 3252ddf (before `seq` was read)
    /// decode unchanged, re-encode to the same bytes, and are ordered by it.
    #[test]
    fn entries_and_snapshots_written_before_seq_decode_and_are_ordered() {
        let newer = fixture("3252ddf-heartbeat-batch-seq29.hex");
        let older = fixture("3252ddf-heartbeat-batch-seq26.hex");
        let state = fixture("3252ddf-state-after-seq29.hex");
        let newer_req: Request = crate::codec::decode(&newer).expect("3252ddf entry decodes");
        let older_req: Request = crate::codec::decode(&older).expect("3252ddf entry decodes");
        assert_eq!(crate::codec::encode(&newer_req).unwrap(), newer, "same bytes");
        let mut from_snapshot = decode_snapshot(&state).expect("3252ddf snapshot decodes");
        let mut again = Vec::new();
        encode_snapshot(&from_snapshot, &mut again).unwrap();
        assert_eq!(again, state, "a format-1 state is written in the 0.1.0 layout, byte for byte");
        assert_eq!(from_snapshot.workers["w-seq"].seq(), Some(29));

        let mut replayed = ControlState::default();
        answers(replayed.apply(&newer_req));
        assert_eq!(replayed, from_snapshot, "replaying the entry gives the snapshot");
        for s in [&mut replayed, &mut from_snapshot] {
            let a = answers(s.apply(&older_req));
            assert!(a[0].stale);
            assert_eq!(metric(&s.workers["w-seq"].metrics, "processed"), 29.0, "seq 26 did not roll 29 back");
        }
    }

    fn at_format_2() -> ControlState {
        ControlState { format_version: 2, ..Default::default() }
    }

    fn limited(beats: Vec<Heartbeat>, max_workers: u64, max_pools: u64) -> Request {
        req(Command::HeartbeatBatchLimited { beats: beats.into(), limits: Limits { max_workers, max_pools } })
    }

    #[test]
    fn the_size_estimate_bounds_the_encoding() {
        let mut b = beat("w-1", Some("eu"));
        b.meta.insert("region", "\"eu-west\"".to_string());
        b.provider_metrics.insert("gmail", MetricMap::from([("accepted", Metric(5.0))]));
        let exact = crate::codec::encode(&b).unwrap().len();
        let approx = b.approx_encoded_len();
        assert!(approx >= exact && approx <= exact * 4, "{approx} vs {exact}");
    }

    #[test]
    fn caps_refuse_new_workers_and_pools_alone_and_known_ones_keep_beating() {
        let mut s = at_format_2();
        let Reply::Heartbeats(a) = s
            .apply(&limited(vec![beat("w-1", Some("a")), beat("w-2", Some("b")), beat("w-3", Some("a"))], 2, 1))
            .unwrap()
        else {
            panic!()
        };
        assert!(a[0].is_ok());
        assert_eq!(a[1].as_ref().unwrap_err().kind, ErrorKind::Limit, "a second pool is past max_pools 1");
        assert!(a[2].is_ok());
        assert_eq!(s.workers.len(), 2);
        assert_eq!(s.pools.len(), 1);
        let Reply::Heartbeats(a) =
            s.apply(&limited(vec![beat("w-4", Some("a")), beat("w-1", Some("a"))], 2, 1)).unwrap()
        else {
            panic!()
        };
        let e = a[0].as_ref().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Limit);
        assert!(e.message.contains("250") || e.message.contains("cap of 2 workers"), "{e:?}");
        assert!(a[1].is_ok(), "a known worker is never refused by the cap");
        assert_eq!(s.workers.len(), 2);
    }

    #[test]
    fn the_pool_index_follows_moves_removals_and_deletes() {
        let mut s = at_format_2();
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", Some("a")), beat("w-2", Some("a"))].into() }))
            .unwrap();
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-2", Some("b"))].into() })).unwrap();
        let ids = |s: &ControlState, p: &str| s.pool_workers(p).map(|w| w.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&s, "a"), ["w-1"]);
        assert_eq!(ids(&s, "b"), ["w-2"]);
        let r = s.apply(&req(Command::DeleteWorker { id: "w-1".into(), reason: Some("gone".into()) })).unwrap();
        assert_eq!(r, Reply::Removed(vec!["w-1".into()]));
        assert!(ids(&s, "a").is_empty() && !s.by_pool.contains_key("a"));
        assert_eq!(s.audit[0].action, "worker.delete");
        let before = s.clone();
        let e = s.apply(&req(Command::DeleteWorker { id: "w-1".into(), reason: None })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(s, before);
        let mut again = s.clone();
        again.reindex();
        assert_eq!(again.by_pool, s.by_pool);
    }

    #[test]
    fn history_records_identity_and_control_changes_not_every_heartbeat() {
        let mut s = at_format_2();
        for _ in 0..3 {
            s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", Some("a"))].into() })).unwrap();
        }
        assert_eq!(s.history.len(), 1, "first seen only: {:?}", s.history);
        let mut moved = beat("w-1", Some("a"));
        moved.ip = "10.0.0.9".into();
        s.apply(&req(Command::HeartbeatBatch { beats: vec![moved].into() })).unwrap();
        s.apply(&req(Command::WorkerControl { worker: "w-1".into(), action: WorkerAction::Pause, reason: None }))
            .unwrap();
        let changes: Vec<_> = s.changes_of(Some("worker:w-1")).collect();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].action, "worker.pause");
        assert!(changes[0].fields.contains(&("desired_state".into(), "paused".into())));
        assert_eq!(changes[1].fields, vec![("ip".to_string(), "10.0.0.9".to_string())]);
        // Format 1 records nothing, so a mixed-version cluster applies alike.
        let mut old = ControlState::default();
        old.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w-1", Some("a"))].into() })).unwrap();
        assert!(old.history.is_empty() && old.implicit_pools.is_empty());
    }
}
