//! The policy payload: per provider, the thresholds that set its mode, the
//! retry budget and backoff, and the routing weights per pool profile. The
//! format is in `deploy/policies/policy.schema.json`, with an example beside
//! it; [`validate_payload`] is the authority and names every problem by path.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The payload format this release reads (`"format": 1`).
pub const POLICY_FORMAT: u64 = 1;
/// Largest payload accepted, before parsing.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most providers one policy may name.
pub const MAX_PROVIDERS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;
/// Most problems reported for one payload; the rest are summarised.
pub const MAX_PROBLEMS: usize = 100;
/// Longest provider name; `*` is the entry for providers not named.
const MAX_PROVIDER_LEN: usize = 64;

/// A validated policy. Field order is part of [`canonical_bytes`]: append only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Policy {
    pub format: u64,
    pub description: Option<String>,
    /// Provider name (or `*` for any other) → its policy.
    pub providers: BTreeMap<String, ProviderPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ProviderPolicy {
    pub thresholds: Thresholds,
    pub retry: Retry,
    pub routing: Routing,
}

/// Outcome rates over a window that move a provider to `cautious` (warn) or
/// `drain` (critical); the `PROVIDER_*_RATE` settings, per provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Thresholds {
    pub tempfail_warn_rate: f64,
    pub tempfail_critical_rate: f64,
    pub reject_warn_rate: f64,
    pub reject_critical_rate: f64,
    pub unknown_warn_rate: f64,
    pub unknown_critical_rate: f64,
    /// Fewer probes than this in a window change no mode.
    pub min_volume: u64,
}

/// How often and how patiently a worker retries a tempfail or unknown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Retry {
    /// Attempts per address, the first included.
    pub max_attempts: u64,
    /// Share of a worker's probes to a provider that may be retries.
    pub budget_percent: u64,
    pub backoff: Backoff,
}

/// Exponential backoff: retry `i` (1-based) waits `initial_ms × multiplier^(i−1)`, at most `max_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

/// Relative share of a provider's probes sent through each pool profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Routing {
    pub standard: u64,
    pub low_hit: u64,
    pub warmup: u64,
}

/// One thing wrong with a payload: where (a dotted JSON path) and what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks a payload against the contract and returns it typed, or every
/// problem found (up to [`MAX_PROBLEMS`]). `strict` refuses fields the format
/// does not define (`POLICY_PAYLOAD_STRICT_VALIDATION_ENABLED`); otherwise
/// they are dropped and do not reach the checksum.
pub fn validate_payload(bytes: &[u8], strict: bool) -> Result<Policy, Vec<Problem>> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(vec![problem("$", format!("payload is {} bytes, at most {MAX_PAYLOAD_BYTES}", bytes.len()))]);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| vec![problem("$", format!("not JSON: {e}"))])?;
    let mut c = Check { strict, problems: Vec::new() };
    c.policy(&value);
    if !c.problems.is_empty() {
        let mut problems = c.problems;
        if problems.len() > MAX_PROBLEMS {
            let more = problems.len() - MAX_PROBLEMS;
            problems.truncate(MAX_PROBLEMS);
            problems.push(problem("$", format!("and {more} more problems")));
        }
        return Err(problems);
    }
    // Every field was checked above, so this cannot fail; answer it as a
    // problem rather than panic all the same.
    serde_json::from_value(value).map_err(|e| vec![problem("$", e.to_string())])
}

/// The bytes the checksum covers: the typed policy as compact JSON, fields in
/// declaration order and providers sorted, so formatting, key order and
/// (outside strict mode) unknown fields of the upload do not change it.
/// Numbers are written by serde_json's shortest round-trip float format; a
/// release that changed it would fail the golden test of the example, and a
/// stored checksum is never recomputed, only compared with a new upload's.
pub fn canonical_bytes(policy: &Policy) -> Vec<u8> {
    serde_json::to_vec(policy).expect("a policy of plain fields and finite numbers serializes")
}

/// SHA-256 of [`canonical_bytes`], lowercase hex.
pub fn checksum(policy: &Policy) -> String {
    Sha256::digest(canonical_bytes(policy)).iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the `n`th stored version (1-based): `v1`, `v2`, ….
pub fn version_name(n: u64) -> String {
    format!("v{n}")
}

/// The sequence number of a version name; `None` for anything
/// [`version_name`] does not produce (`v0`, `v01`, `V1`, `1`).
pub fn parse_version(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0)
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem { path: path.to_string(), message: message.into() }
}

/// Dotted path to a member; keys that are not plain words are quoted.
pub(super) fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match (path, plain) {
        ("$", true) => key.to_string(),
        ("$", false) => format!("[{key:?}]"),
        (_, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

struct Check {
    strict: bool,
    problems: Vec<Problem>,
}

impl Check {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(problem(path, message));
    }

    fn object<'v>(&mut self, path: &str, v: &'v Value, fields: &[&str]) -> Option<&'v Map<String, Value>> {
        let Some(map) = v.as_object() else {
            self.push(path, "must be an object");
            return None;
        };
        if self.strict {
            for key in map.keys().filter(|k| !fields.contains(&k.as_str())) {
                self.push(&join(path, key), "unknown field");
            }
        }
        Some(map)
    }

    fn member<'v>(&mut self, path: &str, map: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
        let v = map.get(key);
        if v.is_none() {
            self.push(&join(path, key), "is required");
        }
        v
    }

    fn int(&mut self, path: &str, map: &Map<String, Value>, key: &str, lo: u64, hi: u64) -> Option<u64> {
        let v = self.member(path, map, key)?;
        match v.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                self.push(&join(path, key), format!("must be an integer in {lo}..={hi}"));
                None
            }
        }
    }

    fn number(&mut self, path: &str, map: &Map<String, Value>, key: &str, lo: f64, hi: f64) -> Option<f64> {
        let v = self.member(path, map, key)?;
        match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Some(x),
            _ => {
                self.push(&join(path, key), format!("must be a number in {lo}..={hi}"));
                None
            }
        }
    }

    fn policy(&mut self, v: &Value) {
        let Some(map) = self.object("$", v, &["format", "description", "providers"]) else { return };
        if let Some(f) = self.member("$", map, "format") {
            if f.as_u64() != Some(POLICY_FORMAT) {
                self.push("format", format!("must be {POLICY_FORMAT}"));
            }
        }
        match map.get("description") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION_LEN => {}
            Some(_) => {
                self.push("description", format!("must be a string of at most {MAX_DESCRIPTION_LEN} characters"))
            }
        }
        let Some(providers) = self.member("$", map, "providers") else { return };
        let Some(providers) = providers.as_object() else {
            self.push("providers", "must be an object");
            return;
        };
        if providers.is_empty() || providers.len() > MAX_PROVIDERS {
            self.push("providers", format!("must name 1..={MAX_PROVIDERS} providers, names {}", providers.len()));
        }
        for (name, p) in providers.iter().take(MAX_PROVIDERS) {
            let path = join("providers", name);
            let ok_name = name == "*"
                || (!name.is_empty()
                    && name.len() <= MAX_PROVIDER_LEN
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
            if !ok_name {
                self.push(&path, format!("provider name must be `*` or 1-{MAX_PROVIDER_LEN} of [A-Za-z0-9-_.]"));
            }
            self.provider(&path, p);
        }
    }

    fn provider(&mut self, path: &str, v: &Value) {
        let Some(map) = self.object(path, v, &["thresholds", "retry", "routing"]) else { return };
        if let Some(t) = self.member(path, map, "thresholds") {
            self.thresholds(&join(path, "thresholds"), t);
        }
        if let Some(r) = self.member(path, map, "retry") {
            self.retry(&join(path, "retry"), r);
        }
        if let Some(r) = self.member(path, map, "routing") {
            self.routing(&join(path, "routing"), r);
        }
    }

    fn thresholds(&mut self, path: &str, v: &Value) {
        const PAIRS: [(&str, &str); 3] = [
            ("tempfail_warn_rate", "tempfail_critical_rate"),
            ("reject_warn_rate", "reject_critical_rate"),
            ("unknown_warn_rate", "unknown_critical_rate"),
        ];
        let mut fields: Vec<&str> = PAIRS.iter().flat_map(|(w, c)| [*w, *c]).collect();
        fields.push("min_volume");
        let Some(map) = self.object(path, v, &fields) else { return };
        for (warn, critical) in PAIRS {
            let w = self.number(path, map, warn, 0.0, 1.0);
            let c = self.number(path, map, critical, 0.0, 1.0);
            if let (Some(w), Some(c)) = (w, c) {
                if w > c {
                    self.push(&join(path, warn), format!("must not exceed {critical} ({w} > {c})"));
                }
            }
        }
        self.int(path, map, "min_volume", 1, 1_000_000);
    }

    fn retry(&mut self, path: &str, v: &Value) {
        let Some(map) = self.object(path, v, &["max_attempts", "budget_percent", "backoff"]) else { return };
        self.int(path, map, "max_attempts", 1, 10);
        self.int(path, map, "budget_percent", 0, 100);
        let Some(b) = self.member(path, map, "backoff") else { return };
        let path = join(path, "backoff");
        let Some(b) = self.object(&path, b, &["initial_ms", "max_ms", "multiplier"]) else { return };
        let initial = self.int(&path, b, "initial_ms", 100, 3_600_000);
        let max = self.int(&path, b, "max_ms", 100, 86_400_000);
        self.number(&path, b, "multiplier", 1.0, 10.0);
        if let (Some(i), Some(m)) = (initial, max) {
            if m < i {
                self.push(&join(&path, "max_ms"), format!("must be at least initial_ms ({m} < {i})"));
            }
        }
    }

    fn routing(&mut self, path: &str, v: &Value) {
        let Some(map) = self.object(path, v, &["standard", "low_hit", "warmup"]) else { return };
        let weights: Vec<Option<u64>> =
            ["standard", "low_hit", "warmup"].iter().map(|k| self.int(path, map, k, 0, 1_000)).collect();
        if weights.iter().all(|w| *w == Some(0)) {
            self.push(path, "at least one profile needs a weight above 0");
        }
    }
}

#[cfg(test)]
mod tests;
