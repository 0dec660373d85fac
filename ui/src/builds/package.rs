//! One package's page: its versions with their latest event, stored log
//! and artifacts (the latest manifest's links), and its recent events.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use model::state::farm::{BuildEvent, EventKind};

use super::{EventRow, MAX_VERSIONS};
use crate::pages::{render, Chrome};

/// One version of a package: its latest event and its log.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub version: String,
    pub latest: Option<EventRow>,
    pub builds: u64,
    /// Lines of its stored log (0: none stored).
    pub log_lines: u64,
    pub artifacts: Vec<String>,
}

/// A package's versions, newest event first (then versions with a log but
/// no event kept), at most [`MAX_VERSIONS`]. `events` newest first; `logs`
/// the package's stored logs (version → lines).
pub fn versions<'a>(
    package: &str,
    newest_first: impl Iterator<Item = &'a BuildEvent>,
    logs: &BTreeMap<String, u64>,
    artifacts: &BTreeMap<String, Vec<String>>,
    now_ms: u64,
) -> Vec<VersionRow> {
    let mut rows: Vec<VersionRow> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for e in newest_first.filter(|e| e.package == package) {
        match at.get(&e.version) {
            Some(&i) => rows[i].builds += u64::from(e.kind == EventKind::Queued),
            None if rows.len() < MAX_VERSIONS => {
                at.insert(e.version.clone(), rows.len());
                let log_lines = logs.get(&e.version).copied().unwrap_or(0);
                rows.push(VersionRow {
                    version: e.version.clone(),
                    latest: Some(EventRow::new(e, now_ms, log_lines > 0)),
                    builds: u64::from(e.kind == EventKind::Queued),
                    log_lines,
                    artifacts: Vec::new(),
                });
            }
            None => {}
        }
    }
    for (v, lines) in logs {
        if rows.len() < MAX_VERSIONS && !at.contains_key(v) {
            at.insert(v.clone(), rows.len());
            rows.push(VersionRow {
                version: v.clone(),
                latest: None,
                builds: 0,
                log_lines: *lines,
                artifacts: Vec::new(),
            });
        }
    }
    for (v, links) in artifacts {
        match at.get(v) {
            Some(&i) => rows[i].artifacts = links.clone(),
            None if rows.len() < MAX_VERSIONS => {
                at.insert(v.clone(), rows.len());
                rows.push(VersionRow {
                    version: v.clone(),
                    latest: None,
                    builds: 0,
                    log_lines: 0,
                    artifacts: links.clone(),
                });
            }
            None => {}
        }
    }
    rows
}

/// Whether an artifact link is a URL a browser can open (else a path shown as text).
pub fn is_link(a: &str) -> bool {
    a.starts_with("https://") || a.starts_with("http://")
}

#[derive(Template)]
#[template(path = "build_package.html")]
struct PackagePage<'a> {
    chrome: &'a Chrome,
    package: &'a str,
    versions: &'a [VersionRow],
    recent: &'a [EventRow],
}

/// One package: its versions with their latest events, logs and artifacts,
/// and its recent events.
pub fn package_page(chrome: &Chrome, package: &str, versions: &[VersionRow], recent: &[EventRow]) -> String {
    render(&PackagePage { chrome, package, versions, recent })
}
