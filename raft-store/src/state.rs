//! The control state every node holds, and the pure function that applies a
//! command to it. No clock, no I/O, no randomness: time arrives in the request.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandError, ErrorKind, Reply, Request, Response};
use crate::types::NodeId;

/// Longest pool name accepted; names appear in URLs, keys and metrics labels.
pub const MAX_NAME_LEN: usize = 128;
/// Upper bound on a pool's desired count; anything larger is a typo.
pub const MAX_DESIRED_COUNT: u32 = 100_000;
/// How many audit entries the replicated log keeps (oldest dropped first).
pub const AUDIT_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ControlState {
    pub pools: BTreeMap<String, Pool>,
    pub audit: VecDeque<AuditEntry>,
    pub audit_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    pub name: String,
    pub desired_count: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// One operator or automation action, as recorded for `GET /api/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    pub node: NodeId,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: Option<String>,
}

/// Check a pool or worker identifier: non-empty, bounded, printable, no slashes.
pub fn validate_name(what: &str, name: &str) -> Result<(), CommandError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(CommandError::new(
            ErrorKind::Invalid,
            format!("{what} must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9-_.:@], got {name:?}"),
        ))
    }
}

impl ControlState {
    /// Apply one request. Refusals leave the state exactly as it was.
    pub fn apply(&mut self, req: &Request) -> Response {
        match &req.command {
            Command::ScalePool {
                pool,
                desired_count,
            } => {
                validate_name("pool", pool)?;
                if *desired_count > MAX_DESIRED_COUNT {
                    return Err(CommandError::new(
                        ErrorKind::Invalid,
                        format!("desired_count must be at most {MAX_DESIRED_COUNT}"),
                    ));
                }
                let entry = self.pools.entry(pool.clone()).or_insert_with(|| Pool {
                    name: pool.clone(),
                    desired_count: 0,
                    created_at_ms: req.at_ms,
                    updated_at_ms: req.at_ms,
                });
                let before = entry.desired_count;
                entry.desired_count = *desired_count;
                entry.updated_at_ms = req.at_ms;
                let reply = Reply::Pool(entry.clone());
                self.audit(
                    req,
                    pool,
                    Some(format!("desired_count {before} -> {desired_count}")),
                );
                Ok(reply)
            }
        }
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
mod tests {
    use super::*;

    fn req(command: Command) -> Request {
        Request {
            at_ms: 1_000,
            node: 1,
            actor: "test".into(),
            command,
        }
    }

    #[test]
    fn scale_creates_then_updates_a_pool_and_audits() {
        let mut s = ControlState::default();
        s.apply(&req(Command::ScalePool {
            pool: "default".into(),
            desired_count: 3,
        }))
        .unwrap();
        let r = s
            .apply(&req(Command::ScalePool {
                pool: "default".into(),
                desired_count: 5,
            }))
            .unwrap();
        match r {
            Reply::Pool(p) => assert_eq!(p.desired_count, 5),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.pools.len(), 1);
        assert_eq!(s.audit.len(), 2);
        assert_eq!(s.audit[0].reason.as_deref(), Some("desired_count 3 -> 5"));
    }

    #[test]
    fn bad_names_and_counts_change_nothing() {
        let mut s = ControlState::default();
        for bad in ["", "a/b", "white space", &"x".repeat(MAX_NAME_LEN + 1)] {
            let e = s
                .apply(&req(Command::ScalePool {
                    pool: bad.into(),
                    desired_count: 1,
                }))
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
        }
        let e = s
            .apply(&req(Command::ScalePool {
                pool: "p".into(),
                desired_count: MAX_DESIRED_COUNT + 1,
            }))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(s, ControlState::default());
    }
}
