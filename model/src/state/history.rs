//! One bounded history of entity changes, recorded by every command family
//! from cluster format 2 on: which entity, when, who, what it did and the
//! fields it set. Workers record control and identity changes (first seen,
//! host, ip, version, pool, desired state, quarantine, removal), not every
//! heartbeat. A later issue answers an entity's state as of a past time from
//! it; the API serves it at `GET /api/history`.

use serde::{Deserialize, Serialize};

use super::ControlState;
use crate::command::Request;

/// Changes kept (oldest dropped first). At ~150 bytes each, ~7.5 MB.
pub const HISTORY_CAPACITY: usize = 50_000;

/// One change of one entity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Change {
    pub seq: u64,
    pub at_ms: u64,
    /// `worker:{id}`, `pool:{name}`, `incident:{id}`, `provider:{name}`,
    /// `setting:{key}`, `cluster:format`, `job:{id}`, `queue:{name}`.
    pub entity: String,
    pub actor: String,
    /// The command's stable name (`worker.pause`, `pool.update`, …).
    pub action: String,
    /// The fields the change set, with their new values (`""` when removed).
    pub fields: Vec<(String, String)>,
}

impl ControlState {
    /// Record a change, if the cluster format records history (2 and up).
    pub(super) fn changed(&mut self, req: &Request, entity: String, fields: Vec<(String, String)>) {
        self.changed_as(req, req.command.name(), entity, fields);
    }

    /// Record a change under its own action (for grouped commands).
    pub(super) fn changed_as(&mut self, req: &Request, action: &str, entity: String, fields: Vec<(String, String)>) {
        if self.format() < 2 {
            return;
        }
        self.history_seq += 1;
        self.history.push_back(Change {
            seq: self.history_seq,
            at_ms: req.at_ms,
            entity,
            actor: req.actor.clone(),
            action: action.to_string(),
            fields,
        });
        while self.history.len() > HISTORY_CAPACITY {
            self.history.pop_front();
        }
    }

    /// The changes of one entity (or of all, with `None`), newest first.
    pub fn changes_of<'a>(&'a self, entity: Option<&'a str>) -> impl Iterator<Item = &'a Change> + 'a {
        self.history.iter().rev().filter(move |c| entity.is_none_or(|e| c.entity == e))
    }
}

/// A field and its new value, for [`Change::fields`].
pub(super) fn field(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}
