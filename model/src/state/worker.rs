//! Workers: what a heartbeat records, what an operator control changes, and
//! what a worker is told to do in return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandError, ErrorKind};

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
