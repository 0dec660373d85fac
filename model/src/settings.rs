//! Runtime settings: every toggle and interval the leader loops and UI read,
//! with env defaults, operator overrides replicated through Raft, and one
//! validation used both at startup (env) and at `PUT /api/settings`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How a setting's text is interpreted and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Bool,
    /// Whole seconds, at least 1.
    Seconds,
    /// 0 to 100.
    Percent,
    /// A fraction, 0 to 1.
    Rate,
    /// A whole number, 0 or more.
    Count,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SettingDef {
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
    /// Largest value of a `Seconds` or `Count` setting. Values are multiplied
    /// (seconds to ms) and narrowed (counts to u32) where they are used, so an
    /// unbounded one could wrap: a TTL of 2^64/1000 s would become 384 ms.
    /// Always 10^k − 1, so the OpenAPI document can state it as a digit count.
    pub max: u64,
}

/// Largest `Seconds` or `Count` value unless a setting names its own (11.5 days).
const DEFAULT_MAX: u64 = 999_999;

const fn def(key: &'static str, kind: Kind, default: &'static str, help: &'static str) -> SettingDef {
    SettingDef { key, kind, default, help, max: DEFAULT_MAX }
}

impl SettingDef {
    const fn up_to(self, max: u64) -> Self {
        SettingDef { max, ..self }
    }
}

/// Every runtime setting, by its reference env key.
pub const DEFS: &[SettingDef] = &[
    def("ALERTS_ENABLED", Kind::Bool, "true", "evaluate alert rules and open incidents"),
    def("ALERT_CHECK_INTERVAL_SECONDS", Kind::Seconds, "30", "how often alert rules are evaluated").up_to(99_999),
    def("ALERT_HEARTBEAT_GRACE_SECONDS", Kind::Seconds, "120", "heartbeat age after which a worker is stale"),
    def("ALERT_COOLDOWN_SECONDS", Kind::Seconds, "300", "at most one notification per incident per cooldown"),
    def("ALERT_ERROR_RATE_THRESHOLD", Kind::Percent, "10", "worker error rate (percent) that opens an incident"),
    def("STUCK_DESIRED_GRACE_SECONDS", Kind::Seconds, "600", "time a worker may take to reach its desired state"),
    def("STALE_WORKER_TTL_SECONDS", Kind::Seconds, "86400", "silent workers are removed after this long")
        .up_to(99_999_999),
    def("AUTO_ACTIONS_ENABLED", Kind::Bool, "false", "quarantine workers automatically"),
    def("QUARANTINE_ERROR_RATE_THRESHOLD", Kind::Percent, "15", "error rate (percent) that quarantines a worker"),
    def("AUTOSCALE_ENABLED", Kind::Bool, "false", "step pool desired counts from load"),
    def("AUTOSCALE_INTERVAL_SECONDS", Kind::Seconds, "30", "how often autoscale looks at pools").up_to(99_999),
    def("AUTOSCALE_COOLDOWN_SECONDS", Kind::Seconds, "120", "minimum time between two steps of one pool"),
    def("AUTOSCALE_MIN_DESIRED", Kind::Count, "1", "lower bound for pools without their own min").up_to(99_999),
    def("AUTOSCALE_MAX_DESIRED", Kind::Count, "4", "upper bound for pools without their own max").up_to(99_999),
    def("AUTOSCALE_CANARY_PERCENT", Kind::Percent, "100", "share of pools autoscale may act on"),
    def("AUTOSCALE_WORKER_CAPACITY", Kind::Count, "10", "in-flight jobs one worker handles at full load"),
    def("AUTOSCALE_UP_UTILIZATION", Kind::Rate, "0.8", "utilization above which a pool grows"),
    def("AUTOSCALE_DOWN_UTILIZATION", Kind::Rate, "0.3", "utilization below which a pool shrinks"),
    def("PROVIDER_AUTOPROTECT_ENABLED", Kind::Bool, "false", "switch providers to cautious mode when critical"),
    def("PROVIDER_MIN_VOLUME", Kind::Count, "50", "probes needed before provider rates count").up_to(999_999_999),
    def("PROVIDER_TEMPFAIL_WARN_RATE", Kind::Rate, "0.30", "tempfail share that warns"),
    def("PROVIDER_TEMPFAIL_CRITICAL_RATE", Kind::Rate, "0.55", "tempfail share that is critical"),
    def("PROVIDER_REJECT_WARN_RATE", Kind::Rate, "0.20", "reject share that warns"),
    def("PROVIDER_REJECT_CRITICAL_RATE", Kind::Rate, "0.40", "reject share that is critical"),
    def("PROVIDER_UNKNOWN_WARN_RATE", Kind::Rate, "0.20", "unknown share that warns"),
    def("PROVIDER_UNKNOWN_CRITICAL_RATE", Kind::Rate, "0.35", "unknown share that is critical"),
    def("SLO_AVAILABILITY_TARGET", Kind::Percent, "99", "target share of healthy workers"),
    def("SSE_INTERVAL_SECONDS", Kind::Seconds, "2", "overview live-update cadence").up_to(9_999),
    def("UI_POLL_INTERVAL_SECONDS", Kind::Seconds, "10", "workers/pools/alerts page refresh").up_to(9_999),
];

pub fn find(key: &str) -> Option<&'static SettingDef> {
    DEFS.iter().find(|d| d.key == key)
}

/// Check and normalize one value for `key`; the error is one readable line.
pub fn normalize(key: &str, raw: &str) -> Result<String, String> {
    let d = find(key).ok_or_else(|| format!("unknown setting {key}"))?;
    let raw = raw.trim();
    let num = || {
        raw.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{key} must be a number, got {raw:?}"))
    };
    match d.kind {
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok("true".into()),
            "false" | "0" | "no" | "off" => Ok("false".into()),
            _ => Err(format!("{key} must be true or false, got {raw:?}")),
        },
        Kind::Seconds => match raw.parse::<u64>() {
            Ok(v) if (1..=d.max).contains(&v) => Ok(v.to_string()),
            _ => Err(format!("{key} must be a whole number of seconds from 1 to {}, got {raw:?}", d.max)),
        },
        Kind::Count => match raw.parse::<u64>() {
            Ok(v) if v <= d.max => Ok(v.to_string()),
            _ => Err(format!("{key} must be a whole number from 0 to {}, got {raw:?}", d.max)),
        },
        Kind::Percent => match num()? {
            v if (0.0..=100.0).contains(&v) => Ok(v.to_string()),
            _ => Err(format!("{key} must be between 0 and 100, got {raw:?}")),
        },
        Kind::Rate => match num()? {
            v if (0.0..=1.0).contains(&v) => Ok(v.to_string()),
            _ => Err(format!("{key} must be between 0 and 1, got {raw:?}")),
        },
    }
}

/// Read every setting from the environment (through `lookup`), validated.
pub fn env_defaults(lookup: impl Fn(&str) -> Option<String>) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for d in DEFS {
        let v = match lookup(d.key).filter(|v| !v.trim().is_empty()) {
            Some(raw) => normalize(d.key, &raw)?,
            None => d.default.to_string(),
        };
        out.insert(d.key.to_string(), v);
    }
    Ok(out)
}

/// Settings in force: operator overrides over env defaults over built-ins.
#[derive(Debug, Clone)]
pub struct Effective<'a> {
    pub env: &'a BTreeMap<String, String>,
    pub overrides: &'a BTreeMap<String, String>,
}

impl Effective<'_> {
    pub fn raw(&self, key: &str) -> &str {
        self.overrides
            .get(key)
            .or_else(|| self.env.get(key))
            .map(String::as_str)
            .or_else(|| find(key).map(|d| d.default))
            .unwrap_or("")
    }

    pub fn bool(&self, key: &str) -> bool {
        self.raw(key) == "true"
    }

    pub fn num(&self, key: &str) -> f64 {
        self.raw(key).parse().unwrap_or(0.0)
    }

    /// The value, never above its bound (an override stored before bounds
    /// existed is read as the bound).
    pub fn count(&self, key: &str) -> u64 {
        let max = find(key).map_or(DEFAULT_MAX, |d| d.max);
        self.raw(key).parse::<u64>().unwrap_or(0).min(max)
    }

    pub fn secs(&self, key: &str) -> Duration {
        Duration::from_secs(self.count(key).max(1))
    }

    pub fn ms(&self, key: &str) -> u64 {
        self.count(key).max(1).saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_and_refuses() {
        assert_eq!(normalize("ALERTS_ENABLED", "ON").unwrap(), "true");
        assert!(normalize("ALERT_CHECK_INTERVAL_SECONDS", "-5").is_err());
        assert!(normalize("ALERT_CHECK_INTERVAL_SECONDS", "0").is_err());
        assert!(normalize("PROVIDER_REJECT_WARN_RATE", "1.5").is_err());
        assert_eq!(normalize("ALERT_ERROR_RATE_THRESHOLD", "12.5").unwrap(), "12.5");
        assert!(normalize("NOPE", "1").is_err());
    }

    #[test]
    fn seconds_and_counts_have_upper_bounds() {
        // 2^64 / 1000 + 1 seconds: multiplied to ms it would wrap to 384 ms.
        let wraps = (u64::MAX / 1000 + 1).to_string();
        let e = normalize("STALE_WORKER_TTL_SECONDS", &wraps).unwrap_err();
        assert!(e.contains("from 1 to 99999999"), "{e}");
        assert_eq!(normalize("STALE_WORKER_TTL_SECONDS", "99999999").unwrap(), "99999999");
        assert!(normalize("STALE_WORKER_TTL_SECONDS", "100000000").is_err());
        // 2^32 + 4 would narrow to 4 where pool bounds are u32.
        assert!(normalize("AUTOSCALE_MAX_DESIRED", "4294967300").is_err());
        assert!(normalize("UI_POLL_INTERVAL_SECONDS", "10000").is_err());
        assert!(env_defaults(|k| (k == "ALERT_COOLDOWN_SECONDS").then(|| "18446744073709551615".into())).is_err());
        for d in DEFS.iter().filter(|d| matches!(d.kind, Kind::Seconds | Kind::Count)) {
            let digits = d.max.to_string();
            assert!(digits.chars().all(|c| c == '9'), "{}: max {} is not 10^k - 1", d.key, d.max);
            assert!(d.max.saturating_mul(1000) < u64::MAX / 2 && d.max < u32::MAX as u64, "{}", d.key);
            normalize(d.key, d.default).unwrap_or_else(|e| panic!("default of {}: {e}", d.key));
        }
    }

    #[test]
    fn a_stored_value_above_its_bound_is_read_as_the_bound() {
        let env = env_defaults(|_| None).unwrap();
        let overrides = BTreeMap::from([("STALE_WORKER_TTL_SECONDS".to_string(), u64::MAX.to_string())]);
        let eff = Effective { env: &env, overrides: &overrides };
        assert_eq!(eff.count("STALE_WORKER_TTL_SECONDS"), 99_999_999);
        assert_eq!(eff.ms("STALE_WORKER_TTL_SECONDS"), 99_999_999_000);
    }

    #[test]
    fn overrides_win_over_env_over_defaults() {
        let env = env_defaults(|k| (k == "ALERT_COOLDOWN_SECONDS").then(|| "60".to_string())).unwrap();
        let mut overrides = BTreeMap::new();
        let eff = Effective { env: &env, overrides: &overrides };
        assert_eq!(eff.count("ALERT_COOLDOWN_SECONDS"), 60);
        assert_eq!(eff.count("ALERT_CHECK_INTERVAL_SECONDS"), 30);
        overrides.insert("ALERT_COOLDOWN_SECONDS".to_string(), "5".to_string());
        let eff = Effective { env: &env, overrides: &overrides };
        assert_eq!(eff.ms("ALERT_COOLDOWN_SECONDS"), 5_000);
        assert!(env_defaults(|k| (k == "ALERTS_ENABLED").then(|| "maybe".to_string())).is_err());
    }
}
