//! One askama template per page, the view rows they show, and a `render`
//! function per page. Rows are plain text prepared here so the templates stay
//! free of logic.

use std::collections::BTreeMap;

use askama::Template;
use model::settings::{Kind, DEFS};
use model::state::worker::heartbeat_state;
use model::state::{AuditEntry, Incident, Pool, Worker};
use model::views::{ClusterStatus, LoopStatus};

use crate::fleet::FleetSummary;
use crate::format::{ago, metric, thousands, utc};

/// What every page shows around its content: this node, its role, the leader.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub node_id: u64,
    pub role: String,
    pub leader: String,
    pub term: u64,
    /// Which nav entry is current.
    pub page: &'static str,
    pub title: String,
    /// Refresh cadence for polled tables, seconds.
    pub poll_seconds: u64,
    /// Base URLs of every cluster member, for the live view's failover.
    pub nodes: Vec<String>,
    /// This node was removed from the membership (a banner says so).
    pub removed: bool,
    /// The viewer's token may only read (scope `read`): controls are hidden
    /// (the API would refuse them with 403 anyway).
    pub read_only: bool,
}

impl Chrome {
    pub fn nodes_attr(&self) -> String {
        self.nodes.join(" ")
    }
}

pub(crate) fn render(t: &impl Template) -> String {
    t.render().unwrap_or_else(|e| format!("<!doctype html><p>template error: {e}</p>"))
}

// ---------------------------------------------------------------- workers

/// One worker as a table row.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub id: String,
    pub pool: String,
    pub host: String,
    pub ip: String,
    pub version: String,
    pub status: String,
    pub process_state: String,
    pub heartbeat: &'static str,
    pub heartbeat_age: String,
    pub desired: &'static str,
    pub quarantined: bool,
    pub quarantine_reason: String,
    pub processed: String,
    pub errors: String,
    pub in_flight: String,
    pub error_rate: String,
}

impl WorkerRow {
    pub fn new(w: &Worker, now_ms: u64, grace_ms: u64) -> Self {
        let m = |k: &str| w.metrics.get(k).map(|v| metric(v.value())).unwrap_or_else(|| "–".into());
        WorkerRow {
            id: w.id.clone(),
            pool: w.pool.to_string(),
            host: w.host.to_string(),
            ip: w.ip.to_string(),
            version: w.version.to_string(),
            status: w.status.to_string(),
            process_state: w.process_state.to_string(),
            heartbeat: heartbeat_state(Some(w.last_heartbeat_ms), now_ms, grace_ms),
            heartbeat_age: ago(w.last_heartbeat_ms, now_ms),
            desired: w.desired_state.as_str(),
            quarantined: w.quarantined,
            quarantine_reason: w.quarantine_reason.clone().unwrap_or_default(),
            processed: m("processed"),
            errors: m("errors"),
            in_flight: m("in_flight"),
            error_rate: w.error_rate.map(|r| format!("{r:.1}%")).unwrap_or_else(|| "–".into()),
        }
    }

    pub fn paused(&self) -> bool {
        self.desired == "paused"
    }
}

/// The filters of the workers table, as typed by the operator ("" = any).
#[derive(Debug, Clone, Default)]
pub struct WorkerFilter {
    pub q: String,
    pub pool: String,
    pub desired_state: String,
    pub heartbeat_state: String,
    pub quarantined: String,
    pub limit: usize,
    pub offset: usize,
}

impl WorkerFilter {
    /// The query string for this filter at `offset` (same names as `/api/workers`).
    pub fn query(&self, offset: usize) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("q", &self.q),
            ("pool", &self.pool),
            ("desired_state", &self.desired_state),
            ("heartbeat_state", &self.heartbeat_state),
            ("quarantined", &self.quarantined),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        if offset > 0 {
            parts.push(format!("offset={offset}"));
        }
        parts.push(format!("limit={}", self.limit));
        parts.join("&")
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One page of the workers table plus what the pager needs.
#[derive(Debug, Clone)]
pub struct WorkerResults {
    pub rows: Vec<WorkerRow>,
    pub total: usize,
    pub filter: WorkerFilter,
}

impl WorkerResults {
    pub fn first(&self) -> usize {
        if self.rows.is_empty() {
            0
        } else {
            self.filter.offset + 1
        }
    }
    pub fn last(&self) -> usize {
        self.filter.offset + self.rows.len()
    }
    pub fn total_text(&self) -> String {
        thousands(self.total as u64)
    }
    pub fn prev_query(&self) -> Option<String> {
        (self.filter.offset > 0).then(|| self.filter.query(self.filter.offset.saturating_sub(self.filter.limit)))
    }
    pub fn next_query(&self) -> Option<String> {
        let next = self.filter.offset + self.filter.limit;
        (next < self.total).then(|| self.filter.query(next))
    }
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage<'a> {
    chrome: &'a Chrome,
    pools: &'a [String],
    results: &'a WorkerResults,
}

/// The workers page: filters, the current page of rows, the pager.
pub fn workers(chrome: &Chrome, pools: &[String], results: &WorkerResults) -> String {
    render(&WorkersPage { chrome, pools, results })
}

/// Just the table and pager, swapped in by the page's script on filter,
/// paging, refresh and after an action.
pub fn worker_results(results: &WorkerResults) -> String {
    render(&WorkerResultsFragment { results })
}

#[derive(Template)]
#[template(path = "worker_results.html")]
struct WorkerResultsFragment<'a> {
    results: &'a WorkerResults,
}

/// One audit log line.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    pub node: u64,
}

impl AuditRow {
    pub fn new(e: &AuditEntry) -> Self {
        AuditRow {
            at: utc(e.at_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            reason: e.reason.clone().unwrap_or_default(),
            node: e.node,
        }
    }
}

/// A labelled value with its share of the largest, for bar charts.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: String,
    pub percent: u32,
}

fn bars(items: Vec<(String, f64)>) -> Vec<Bar> {
    let max = items.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    items
        .into_iter()
        .map(|(label, v)| Bar {
            label,
            value: metric(v),
            percent: if max > 0.0 { (v / max * 100.0).round() as u32 } else { 0 },
        })
        .collect()
}

#[derive(Template)]
#[template(path = "worker.html")]
struct WorkerPage<'a> {
    chrome: &'a Chrome,
    w: WorkerRow,
    first_seen: String,
    last_heartbeat: String,
    desired_changed: String,
    heartbeat_count: String,
    metrics: Vec<Bar>,
    smtp: Vec<Bar>,
    stages: Vec<(String, String)>,
    providers: Vec<(String, String)>,
    meta: Vec<(String, String)>,
    audit: Vec<AuditRow>,
}

fn nested_text(m: &model::state::worker::NestedMetrics) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, inner)| {
            let parts: Vec<String> = inner.iter().map(|(ik, v)| format!("{ik} {}", metric(v.value()))).collect();
            (k.to_string(), parts.join(" · "))
        })
        .collect()
}

/// A worker's detail page: identity, state, metrics, its recent audit trail.
pub fn worker(chrome: &Chrome, w: &Worker, now_ms: u64, grace_ms: u64, audit: &[&AuditEntry]) -> String {
    render(&WorkerPage {
        chrome,
        w: WorkerRow::new(w, now_ms, grace_ms),
        first_seen: utc(w.first_seen_ms),
        last_heartbeat: format!("{} ({})", utc(w.last_heartbeat_ms), ago(w.last_heartbeat_ms, now_ms)),
        desired_changed: format!("{} ({})", utc(w.desired_changed_ms), ago(w.desired_changed_ms, now_ms)),
        heartbeat_count: thousands(w.heartbeat_count),
        metrics: bars(w.metrics.iter().map(|(k, v)| (k.to_string(), v.value())).collect()),
        smtp: bars(w.smtp_metrics.iter().map(|(k, v)| (k.to_string(), v.value())).collect()),
        stages: nested_text(&w.stage_metrics),
        providers: nested_text(&w.provider_metrics),
        meta: w.meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        audit: audit.iter().map(|e| AuditRow::new(e)).collect(),
    })
}

// ---------------------------------------------------------------- overview

/// One incident as a table row.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub id: u64,
    pub kind: String,
    pub subject: String,
    pub severity: String,
    pub detail: String,
    pub opened: String,
    pub resolved: String,
    pub acked: bool,
    pub ack_note: String,
    pub acked_by: String,
    pub notifications: usize,
}

impl IncidentRow {
    pub fn new(i: &Incident, now_ms: u64) -> Self {
        IncidentRow {
            id: i.id,
            kind: i.kind.clone(),
            subject: i.subject.clone(),
            severity: i.severity.clone(),
            detail: i.detail.clone(),
            opened: ago(i.opened_ms, now_ms),
            resolved: i.resolved_ms.map(|r| ago(r, now_ms)).unwrap_or_default(),
            acked: i.acked,
            ack_note: i.ack_note.clone().unwrap_or_default(),
            acked_by: i.acked_by.clone().unwrap_or_default(),
            notifications: i.notifications.len(),
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    chrome: &'a Chrome,
    fleet: &'a FleetSummary,
    healthy_nodes: usize,
    total_nodes: usize,
    incidents: &'a [IncidentRow],
    jobs: &'a crate::jobs::JobTotals,
}

/// The overview: fleet counts, pools, jobs, incidents, cluster health and the
/// live charts (filled by the event stream).
pub fn overview(
    chrome: &Chrome,
    fleet: &FleetSummary,
    cluster: &ClusterStatus,
    incidents: &[IncidentRow],
    jobs: &crate::jobs::JobTotals,
) -> String {
    render(&OverviewPage {
        chrome,
        fleet,
        healthy_nodes: cluster.healthy_nodes,
        total_nodes: cluster.total_nodes,
        incidents,
        jobs,
    })
}

// ---------------------------------------------------------------- pools

#[derive(Debug, Clone)]
pub struct PoolRow {
    pub name: String,
    pub desired: u32,
    pub min: String,
    pub max: String,
    pub archived: bool,
    pub is_default: bool,
    pub profiles: Vec<(String, String)>,
    /// The profile map as JSON, for the edit dialog.
    pub profiles_json: String,
    pub total: u64,
    pub healthy: u64,
    pub updated: String,
}

/// Worker counts of one pool: total and healthy.
pub type PoolCounts = BTreeMap<String, (u64, u64)>;

impl PoolRow {
    pub fn new(p: &Pool, counts: &PoolCounts, now_ms: u64) -> Self {
        let (total, healthy) = counts.get(&p.name).copied().unwrap_or_default();
        let profile_name = |v: &model::state::Profile| {
            serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        };
        PoolRow {
            name: p.name.clone(),
            desired: p.desired_count,
            min: p.min_count.map(|v| v.to_string()).unwrap_or_default(),
            max: p.max_count.map(|v| v.to_string()).unwrap_or_default(),
            archived: p.archived,
            is_default: p.is_default,
            profiles: p.profiles.iter().map(|(k, v)| (k.clone(), profile_name(v))).collect(),
            profiles_json: serde_json::to_string(&p.profiles).unwrap_or_else(|_| "{}".into()),
            total,
            healthy,
            updated: ago(p.updated_at_ms, now_ms),
        }
    }
}

#[derive(Template)]
#[template(path = "pools.html")]
struct PoolsPage<'a> {
    chrome: &'a Chrome,
    pools: &'a [PoolRow],
    /// Pools that workers report but nobody created.
    implicit: &'a [(String, u64)],
}

pub fn pools(chrome: &Chrome, pools: &[PoolRow], implicit: &[(String, u64)]) -> String {
    render(&PoolsPage { chrome, pools, implicit })
}

// ---------------------------------------------------------------- alerts

#[derive(Debug, Clone)]
pub struct RuleRow {
    pub name: String,
    pub kind: String,
    pub threshold: String,
    pub state: String,
    pub firing: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SloRow {
    pub window: String,
    pub availability: String,
    pub burn: String,
    pub samples: usize,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage<'a> {
    chrome: &'a Chrome,
    enabled: bool,
    rules: &'a [RuleRow],
    active: &'a [IncidentRow],
    resolved: &'a [IncidentRow],
    slo: &'a [SloRow],
    slo_target: String,
}

pub fn alerts(
    chrome: &Chrome,
    enabled: bool,
    rules: &[RuleRow],
    active: &[IncidentRow],
    resolved: &[IncidentRow],
    slo: &[SloRow],
    slo_target: f64,
) -> String {
    render(&AlertsPage { chrome, enabled, rules, active, resolved, slo, slo_target: format!("{slo_target}%") })
}

// ---------------------------------------------------------------- settings

#[derive(Debug, Clone)]
pub struct SettingRow {
    pub key: &'static str,
    pub value: String,
    pub default: &'static str,
    pub source: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    pub is_bool: bool,
    pub step: &'static str,
    pub min: &'static str,
    pub max: &'static str,
}

#[derive(Debug, Clone)]
pub struct SettingGroup {
    pub title: &'static str,
    pub rows: Vec<SettingRow>,
}

/// Which group a setting belongs to on the page, by its key.
fn group_of(key: &str) -> &'static str {
    if key.starts_with("AUTOSCALE") {
        "Autoscale"
    } else if key.starts_with("PROVIDER") {
        "Provider protection"
    } else if key.contains("SSE") || key.starts_with("UI_") {
        "UI refresh"
    } else {
        "Alerts and automation"
    }
}

/// Every runtime setting with the value in force and where it comes from:
/// an operator override, the node's environment, or the built-in default.
pub fn setting_groups(env: &BTreeMap<String, String>, overrides: &BTreeMap<String, String>) -> Vec<SettingGroup> {
    let mut groups: Vec<SettingGroup> = ["UI refresh", "Alerts and automation", "Autoscale", "Provider protection"]
        .into_iter()
        .map(|title| SettingGroup { title, rows: Vec::new() })
        .collect();
    for d in DEFS {
        let (value, source) = match overrides.get(d.key) {
            Some(v) => (v.clone(), "override"),
            None => match env.get(d.key) {
                Some(v) if v != d.default => (v.clone(), "env"),
                _ => (d.default.to_string(), "default"),
            },
        };
        let (kind, step, min, max) = match d.kind {
            Kind::Bool => ("bool", "", "", ""),
            Kind::Seconds => ("seconds", "1", "1", ""),
            Kind::Percent => ("percent", "any", "0", "100"),
            Kind::Rate => ("rate", "any", "0", "1"),
            Kind::Count => ("count", "1", "0", ""),
        };
        let row = SettingRow {
            key: d.key,
            value,
            default: d.default,
            source,
            kind,
            help: d.help,
            is_bool: d.kind == Kind::Bool,
            step,
            min,
            max,
        };
        let title = group_of(d.key);
        if let Some(g) = groups.iter_mut().find(|g| g.title == title) {
            g.rows.push(row);
        }
    }
    groups
}

#[derive(Debug, Clone)]
pub struct ProviderRow {
    pub name: String,
    pub effective: String,
    pub override_mode: String,
    pub auto_mode: String,
    pub auto_reason: String,
    pub probes: String,
    pub tempfail: String,
    pub reject: String,
    pub unknown: String,
}

/// The build farm's replicated config as the Settings page edits it, with
/// this node's log retention beside it.
#[derive(Debug, Clone, Default)]
pub struct FarmConfigForm {
    /// `pinned` or `upgrade`.
    pub strategy: String,
    pub python: String,
    pub platform: String,
    pub index_url: String,
    /// `NAME=value` lines.
    pub env_text: String,
    pub retention_days: u64,
    pub max_bytes: String,
    pub log_bytes: String,
    pub reads_open: bool,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage<'a> {
    chrome: &'a Chrome,
    groups: &'a [SettingGroup],
    providers: &'a [ProviderRow],
    farm: Option<&'a FarmConfigForm>,
}

pub fn settings(
    chrome: &Chrome,
    groups: &[SettingGroup],
    providers: &[ProviderRow],
    farm: Option<&FarmConfigForm>,
) -> String {
    render(&SettingsPage { chrome, groups, providers, farm })
}

// ---------------------------------------------------------------- cluster

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub voter: bool,
    pub healthy: bool,
    pub is_leader: bool,
    pub is_self: bool,
    pub term: String,
    pub last_log: String,
    pub applied: String,
    pub lag: String,
    pub snapshot: String,
    pub error: String,
}

fn opt(v: Option<u64>) -> String {
    v.map(thousands).unwrap_or_else(|| "–".into())
}

impl NodeRow {
    pub fn rows(status: &ClusterStatus) -> Vec<NodeRow> {
        status
            .nodes
            .iter()
            .map(|n| NodeRow {
                id: n.id,
                addr: n.addr.clone(),
                role: n.role.clone(),
                voter: n.voter,
                healthy: n.healthy,
                is_leader: status.leader_id == Some(n.id),
                is_self: status.node_id == n.id,
                term: opt(n.term),
                last_log: opt(n.last_log_index),
                applied: opt(n.applied_index),
                lag: opt(n.lag),
                snapshot: opt(n.snapshot_index),
                error: n.error.clone().unwrap_or_default(),
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage<'a> {
    chrome: &'a Chrome,
    cluster_id: &'a str,
    nodes: &'a [NodeRow],
    healthy_nodes: usize,
    total_nodes: usize,
    loops: Vec<LoopRow<'a>>,
}

/// One supervised loop as the cluster page lists it.
struct LoopRow<'a> {
    s: &'a LoopStatus,
    last_run: String,
    last_error: &'a str,
}

pub fn cluster(chrome: &Chrome, status: &ClusterStatus, loops: &[LoopStatus]) -> String {
    let nodes = NodeRow::rows(status);
    render(&ClusterPage {
        chrome,
        cluster_id: &status.cluster_id,
        nodes: &nodes,
        healthy_nodes: status.healthy_nodes,
        total_nodes: status.total_nodes,
        loops: loops
            .iter()
            .map(|l| LoopRow {
                s: l,
                last_run: l.last_run_ms.map(crate::format::utc).unwrap_or_else(|| "never".into()),
                last_error: l.last_error.as_deref().unwrap_or(""),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------- errors

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    chrome: &'a Chrome,
    what: &'a str,
}

/// A page for an unknown UI path or a missing worker.
pub fn not_found(chrome: &Chrome, what: &str) -> String {
    render(&NotFoundPage { chrome, what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_query_keeps_only_set_fields_and_encodes_them() {
        let f = WorkerFilter { q: "a b&c".into(), pool: "eu".into(), limit: 50, ..Default::default() };
        assert_eq!(f.query(0), "q=a%20b%26c&pool=eu&limit=50");
        assert_eq!(f.query(100), "q=a%20b%26c&pool=eu&offset=100&limit=50");
        let r = WorkerResults { rows: vec![], total: 120, filter: WorkerFilter { limit: 50, offset: 50, ..f.clone() } };
        assert_eq!(r.prev_query().as_deref(), Some("q=a%20b%26c&pool=eu&limit=50"));
        assert_eq!(r.next_query().as_deref(), Some("q=a%20b%26c&pool=eu&offset=100&limit=50"));
        let last = WorkerResults { rows: vec![], total: 100, filter: WorkerFilter { limit: 50, offset: 50, ..f } };
        assert_eq!(last.next_query(), None, "nothing after the last page");
    }

    #[test]
    fn settings_show_where_each_value_comes_from() {
        let env = BTreeMap::from([("ALERT_COOLDOWN_SECONDS".to_string(), "60".to_string())]);
        let overrides = BTreeMap::from([("SSE_INTERVAL_SECONDS".to_string(), "5".to_string())]);
        let groups = setting_groups(&env, &overrides);
        let all: Vec<&SettingRow> = groups.iter().flat_map(|g| &g.rows).collect();
        assert_eq!(all.len(), DEFS.len(), "every setting appears once");
        let find = |k: &str| all.iter().find(|r| r.key == k).expect("listed");
        assert_eq!(
            (find("SSE_INTERVAL_SECONDS").value.as_str(), find("SSE_INTERVAL_SECONDS").source),
            ("5", "override")
        );
        assert_eq!(find("ALERT_COOLDOWN_SECONDS").source, "env");
        assert_eq!(find("ALERTS_ENABLED").source, "default");
        assert!(find("ALERTS_ENABLED").is_bool);
        assert_eq!(groups[0].title, "UI refresh");
    }
}
