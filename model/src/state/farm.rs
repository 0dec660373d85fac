//! The build-farm command family (cluster format 6): reference 003's wheel
//! farm on the job queue. A build is a job of kind `build` in queue `build`;
//! its state changes become build events in the same apply (`observe`).
//! Beside them the farm keeps fix hints (a pattern and a recipe), the
//! version metadata of the build plan and manifest, its build logs' sizes,
//! cache counters and its configuration.
//!
//! This file holds the types; `apply` the validation and apply of each
//! operation and the events derived from job operations; `tests` the unit
//! tests. Plans, manifests and log lines are not held here: apply numbers
//! them and the state-machine adapter stores them (raft-store's
//! `farm_blobs`), as it does job logs.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::job::{JobId, JobState};
use crate::command::CommandError;

/// The queue, and the job kind, of builds.
pub const BUILD_QUEUE: &str = "build";
pub const BUILD_KIND: &str = "build";

/// Hints the farm holds.
pub const MAX_HINTS: usize = 1_000;
/// Longest hint pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Compiled size a hint pattern may take (the `regex` crate's size limit).
pub const MAX_PATTERN_COMPILED: usize = 256 * 1024;
/// Environment variables a recipe (or the config) may set.
pub const MAX_ENV_VARS: usize = 64;
/// Longest environment variable value.
pub const MAX_ENV_VALUE: usize = 1024;
/// Extra build requirements a recipe may name, and the longest one.
pub const MAX_REQUIREMENTS: usize = 64;
pub const MAX_REQUIREMENT_BYTES: usize = 256;
/// Longest recipe note.
pub const MAX_NOTE_BYTES: usize = 4 * 1024;
/// Build events kept (oldest dropped first), and for how long.
pub const MAX_EVENTS: usize = 50_000;
pub const EVENT_RETENTION_MS: u64 = 30 * 86_400_000;
/// Longest error an event keeps.
pub const MAX_EVENT_ERROR: usize = 512;
/// Largest plan or manifest (JSON text), in bytes.
pub const MAX_BLOB_BYTES: usize = 1024 * 1024;
/// Versions of the plan, and of the manifest, kept (older ones are dropped).
pub const MAX_BLOB_VERSIONS: usize = 20;
/// Build logs (package, version) kept at once.
pub const MAX_LOGS: usize = 100_000;
/// Most lines one log chunk carries, and the longest line.
pub const MAX_CHUNK_LINES: usize = 1_000;
pub const MAX_LOG_LINE: usize = 4 * 1024;
/// Bounds of the log retention a chunk carries (`BUILD_LOG_RETENTION_DAYS`,
/// `BUILD_LOG_MAX_BYTES`): at most a year, at most 2 GiB.
pub const MAX_LOG_AGE_MS: u64 = 365 * 86_400_000;
pub const MAX_LOG_STORE_BYTES: u64 = 2 << 30;
/// Longest package name, version and run id.
pub const MAX_PACKAGE_LEN: usize = 128;
/// Longest config text field (python, platform, index URL).
pub const MAX_CONFIG_TEXT: usize = 512;

/// One farm operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FarmOp {
    CreateHint(HintSpec),
    UpdateHint {
        id: u64,
        spec: HintSpec,
    },
    DeleteHint {
        id: u64,
    },
    /// A new version of the plan or the manifest (JSON text, validated by the API).
    PutBlob {
        kind: BlobKind,
        body: String,
    },
    /// Lines of a build's log, numbered by apply after those it holds.
    AppendLog(LogChunk),
    /// A worker's cache hits and misses since its last report.
    CacheReport {
        hits: u64,
        misses: u64,
    },
    SetConfig(FarmConfig),
    // ---- cluster format 7 (`trigger`) ----
    /// An operator asks for a worker trigger or smoke run under `key`.
    RequestTrigger {
        kind: TriggerKind,
        key: String,
    },
    /// The leader reserves a due trigger until `until_ms`, before sending it.
    ClaimTrigger {
        id: u64,
        until_ms: u64,
    },
    /// The outcome of the send of attempt `attempt`.
    RecordTrigger {
        id: u64,
        attempt: u32,
        outcome: TriggerOutcome,
    },
}

impl FarmOp {
    /// The cluster format that introduced the operation.
    pub fn min_format(&self) -> u32 {
        match self {
            FarmOp::RequestTrigger { .. } | FarmOp::ClaimTrigger { .. } | FarmOp::RecordTrigger { .. } => 7,
            _ => 6,
        }
    }
}

/// What an operator gives for a hint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HintSpec {
    /// A regular expression matched against a failed build's log.
    pub pattern: String,
    pub recipe: Recipe,
}

/// How to fix what a hint recognizes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Recipe {
    pub env: BTreeMap<String, String>,
    pub extra_requirements: Vec<String>,
    pub note: String,
}

/// A hint as the farm keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hint {
    pub id: u64,
    pub pattern: String,
    pub recipe: Recipe,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The two versioned blobs a worker posts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobKind {
    Plan,
    Manifest,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Plan => "plan",
            BlobKind::Manifest => "manifest",
        }
    }

    /// The byte that prefixes its keys in the blob store.
    pub fn tag(self) -> u8 {
        match self {
            BlobKind::Plan => b'P',
            BlobKind::Manifest => b'M',
        }
    }
}

/// One stored version of a blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlobVersion {
    /// From 1, per kind.
    pub version: u64,
    /// Lower-case hex SHA-256 of the body.
    pub sha256: String,
    pub size: u64,
    pub at_ms: u64,
}

/// Lines for one build's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogChunk {
    pub package: String,
    pub version: String,
    pub lines: Vec<String>,
    /// The proposing node's retention, applied before the lines are added.
    pub keep: LogRetention,
}

/// How long build logs are kept and how much of them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogRetention {
    pub max_age_ms: u64,
    pub max_bytes: u64,
}

/// What the store holds of one build's log.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildLog {
    pub lines: u64,
    pub bytes: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// What happened to a build.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Queued,
    Started,
    Succeeded,
    /// The attempt failed (or its lease expired) and no retry is left.
    Failed,
    /// The attempt failed (or its lease expired) and a retry waits, or an
    /// operator requeued the build.
    Retried,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Started => "started",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Retried => "retried",
            EventKind::Cancelled => "cancelled",
        }
    }
}

/// One state change of a build job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub kind: EventKind,
    /// The job's state after the change.
    pub state: JobState,
    pub job_id: JobId,
    pub package: String,
    pub version: String,
    pub run_id: Option<String>,
    pub worker: Option<String>,
    /// From the attempt's claim to its end.
    pub duration_ms: Option<u64>,
    /// At most [`MAX_EVENT_ERROR`] bytes.
    pub error: Option<String>,
    /// Ids of the hints whose pattern matched the failure.
    pub hints: Vec<u64>,
}

/// The build strategy.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Pinned,
    Upgrade,
}

/// The farm's settings, shown by `GET /config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FarmConfig {
    pub strategy: Strategy,
    pub python: String,
    pub platform: String,
    pub index_url: String,
    /// Environment information shown to operators (and given to workers).
    pub env: BTreeMap<String, String>,
}

/// Totals of the workers' cache reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
}

/// The answer to one farm operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum FarmReply {
    Hint(Hint),
    HintDeleted {
        id: u64,
    },
    /// The new version, and the versions dropped past [`MAX_BLOB_VERSIONS`].
    Blob {
        kind: BlobKind,
        meta: BlobVersion,
        dropped: Vec<u64>,
    },
    /// Lines `first_line..first_line + accepted` were added (the rest did
    /// not fit); `evicted` logs were dropped by the retention first.
    Logged {
        first_line: u64,
        accepted: u32,
        evicted: Vec<(String, String)>,
    },
    Cache(CacheCounters),
    Config(FarmConfig),
    /// Format 7: the trigger after the operation; `created` is false when a
    /// request's key named a kept trigger (nothing new was asked).
    Trigger {
        trigger: Trigger,
        created: bool,
    },
}

/// Hints with their compiled patterns (derived, rebuilt after a decode).
#[derive(Debug, Clone, Default)]
pub struct Compiled(pub(crate) BTreeMap<u64, regex::Regex>);

/// The farm's replicated state.
#[derive(Debug, Clone, Default)]
pub struct Farm {
    pub hints: BTreeMap<u64, Hint>,
    pub hint_seq: u64,
    /// Newest last.
    pub events: VecDeque<BuildEvent>,
    pub event_seq: u64,
    /// Kept versions per kind, oldest first.
    pub blobs: BTreeMap<BlobKind, VecDeque<BlobVersion>>,
    pub blob_seq: BTreeMap<BlobKind, u64>,
    /// Per (package, version).
    pub logs: BTreeMap<(String, String), BuildLog>,
    pub log_bytes: u64,
    pub cache: CacheCounters,
    pub config: FarmConfig,
    /// Format 7: worker triggers, carried by the snapshot's format-7 section.
    pub triggers: Triggers,
    // ---- derived ----
    pub compiled: Compiled,
}

/// Equal when the replicated parts are (compiled patterns are derived).
impl PartialEq for Farm {
    fn eq(&self, other: &Self) -> bool {
        self.hints == other.hints
            && self.hint_seq == other.hint_seq
            && self.events == other.events
            && self.event_seq == other.event_seq
            && self.blobs == other.blobs
            && self.blob_seq == other.blob_seq
            && self.logs == other.logs
            && self.log_bytes == other.log_bytes
            && self.cache == other.cache
            && self.config == other.config
            && self.triggers == other.triggers
    }
}

/// What format 6 adds to a snapshot (after format 5's section).
#[derive(Serialize, Deserialize)]
pub(crate) struct Section6 {
    hints: BTreeMap<u64, Hint>,
    hint_seq: u64,
    events: VecDeque<BuildEvent>,
    event_seq: u64,
    blobs: BTreeMap<BlobKind, VecDeque<BlobVersion>>,
    blob_seq: BTreeMap<BlobKind, u64>,
    logs: BTreeMap<(String, String), BuildLog>,
    log_bytes: u64,
    cache: CacheCounters,
    config: FarmConfig,
}

/// The same, borrowed for writing.
#[derive(Serialize)]
pub(crate) struct Section6Ref<'a> {
    hints: &'a BTreeMap<u64, Hint>,
    hint_seq: u64,
    events: &'a VecDeque<BuildEvent>,
    event_seq: u64,
    blobs: &'a BTreeMap<BlobKind, VecDeque<BlobVersion>>,
    blob_seq: &'a BTreeMap<BlobKind, u64>,
    logs: &'a BTreeMap<(String, String), BuildLog>,
    log_bytes: u64,
    cache: CacheCounters,
    config: &'a FarmConfig,
}

impl Farm {
    pub(crate) fn section(&self) -> Section6Ref<'_> {
        Section6Ref {
            hints: &self.hints,
            hint_seq: self.hint_seq,
            events: &self.events,
            event_seq: self.event_seq,
            blobs: &self.blobs,
            blob_seq: &self.blob_seq,
            logs: &self.logs,
            log_bytes: self.log_bytes,
            cache: self.cache,
            config: &self.config,
        }
    }

    pub(crate) fn from_section(s: Section6) -> Farm {
        let mut farm = Farm {
            hints: s.hints,
            hint_seq: s.hint_seq,
            events: s.events,
            event_seq: s.event_seq,
            blobs: s.blobs,
            blob_seq: s.blob_seq,
            logs: s.logs,
            log_bytes: s.log_bytes,
            cache: s.cache,
            config: s.config,
            triggers: Triggers::default(),
            compiled: Compiled::default(),
        };
        farm.reindex();
        farm
    }

    /// Recompile the hints' patterns (each compiled once at create).
    pub fn reindex(&mut self) {
        self.compiled.0 = self.hints.values().filter_map(|h| compile(&h.pattern).ok().map(|r| (h.id, r))).collect();
    }

    /// The latest version of a blob kind.
    pub fn latest(&self, kind: BlobKind) -> Option<&BlobVersion> {
        self.blobs.get(&kind).and_then(|v| v.back())
    }

    /// A kept version of a blob kind.
    pub fn blob_version(&self, kind: BlobKind, version: u64) -> Option<&BlobVersion> {
        self.blobs.get(&kind).and_then(|v| v.iter().find(|b| b.version == version))
    }

    /// Ids of the hints whose pattern matches somewhere in `text`.
    pub fn matching_hints(&self, text: &str) -> Vec<u64> {
        self.compiled.0.iter().filter(|(_, re)| re.is_match(text)).map(|(id, _)| *id).collect()
    }
}

/// Compile a hint pattern within its limits: `Invalid` if it is not a
/// regular expression, `Conflict` if it is one whose compiled form is over
/// [`MAX_PATTERN_COMPILED`]; the message is one readable line.
pub fn compile(pattern: &str) -> Result<regex::Regex, CommandError> {
    use crate::command::ErrorKind;
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
        return Err(CommandError::new(ErrorKind::Invalid, format!("pattern must be 1-{MAX_PATTERN_BYTES} bytes")));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_PATTERN_COMPILED)
        .dfa_size_limit(MAX_PATTERN_COMPILED)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => CommandError::new(
                ErrorKind::Conflict,
                format!("pattern compiles to more than {MAX_PATTERN_COMPILED} bytes; simplify it"),
            ),
            other => CommandError::new(
                ErrorKind::Invalid,
                format!("pattern is not a valid regular expression: {}", one_line(&other.to_string())),
            ),
        })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

mod apply;
pub mod trigger;
pub use apply::{
    build_identity, check_package, BuildIdentity, MAX_CACHE_REPORT, MAX_LOG_BYTES_PER_BUILD, MAX_LOG_LINES_PER_BUILD,
};
pub use trigger::{Trigger, TriggerKind, TriggerOutcome, TriggerResult, TriggerState, TriggerTarget, Triggers};
#[cfg(test)]
mod tests;
