//! Pools: first-class groups of workers with a desired count, autoscale bounds
//! and a provider→profile map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::field;
use super::{conflict, not_found, validate_name, ControlState, MAX_DESIRED_COUNT};
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

/// How a pool's workers treat one mailbox provider (reference 001).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Standard,
    LowHit,
    Warmup,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Pool {
    pub name: String,
    pub desired_count: u32,
    pub min_count: Option<u32>,
    pub max_count: Option<u32>,
    pub archived: bool,
    pub is_default: bool,
    pub profiles: BTreeMap<String, Profile>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Fields an operator may set when creating or editing a pool; `None` keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PoolPatch {
    pub desired_count: Option<u32>,
    pub min_count: Option<u32>,
    pub max_count: Option<u32>,
    pub profiles: Option<BTreeMap<String, Profile>>,
}

impl Pool {
    pub fn new(name: &str, at_ms: u64) -> Self {
        Pool {
            name: name.to_string(),
            desired_count: 0,
            min_count: None,
            max_count: None,
            archived: false,
            is_default: false,
            profiles: BTreeMap::new(),
            created_at_ms: at_ms,
            updated_at_ms: at_ms,
        }
    }

    /// Apply `patch` if the result is coherent; otherwise leave the pool alone.
    pub fn edit(&mut self, patch: &PoolPatch, at_ms: u64) -> Result<(), CommandError> {
        let invalid = |m: String| Err(CommandError::new(ErrorKind::Invalid, m));
        let mut next = self.clone();
        if let Some(d) = patch.desired_count {
            next.desired_count = d;
        }
        if patch.min_count.is_some() {
            next.min_count = patch.min_count;
        }
        if patch.max_count.is_some() {
            next.max_count = patch.max_count;
        }
        if let Some(p) = &patch.profiles {
            for provider in p.keys() {
                validate_name("provider", provider)?;
            }
            next.profiles = p.clone();
        }
        for (what, v) in
            [("desired_count", Some(next.desired_count)), ("min_count", next.min_count), ("max_count", next.max_count)]
        {
            if v.is_some_and(|v| v > MAX_DESIRED_COUNT) {
                return invalid(format!("{what} must be at most {MAX_DESIRED_COUNT}"));
            }
        }
        // Each bound is well-formed alone; the pair (or a bound against the
        // pool's other one) conflicting is a conflict, not a malformed request.
        if let (Some(lo), Some(hi)) = (next.min_count, next.max_count) {
            if lo > hi {
                return Err(CommandError::new(
                    ErrorKind::Conflict,
                    format!("min_count {lo} is greater than max_count {hi}"),
                ));
            }
        }
        next.updated_at_ms = at_ms;
        *self = next;
        Ok(())
    }
}

fn fields(p: &Pool) -> Vec<(String, String)> {
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
    vec![
        field("desired_count", p.desired_count),
        field("min_count", opt(p.min_count)),
        field("max_count", opt(p.max_count)),
        field("archived", p.archived),
        field("is_default", p.is_default),
    ]
}

// ---- the pool command family ----

impl ControlState {
    /// An operator (or autoscale) touched the pool: it is configured now, so
    /// the cleanup loop keeps it even without workers.
    fn configured(&mut self, req: &Request, name: &str) {
        self.implicit_pools.remove(name);
        if let Some(p) = self.pools.get(name) {
            let f = fields(p);
            self.changed(req, format!("pool:{name}"), f);
        }
    }

    pub(super) fn scale_pool(&mut self, req: &Request, pool: &str, desired_count: u32) -> Response {
        validate_name("pool", pool)?;
        let before = self.pools.get(pool).map(|p| p.desired_count).unwrap_or(0);
        let mut p = self.pools.get(pool).cloned().unwrap_or_else(|| Pool::new(pool, req.at_ms));
        if p.archived {
            return Err(conflict(format!("pool {pool} is archived")));
        }
        p.edit(&PoolPatch { desired_count: Some(desired_count), ..Default::default() }, req.at_ms)?;
        self.pools.insert(pool.to_string(), p.clone());
        self.configured(req, pool);
        self.audit(req, pool, Some(format!("desired_count {before} -> {desired_count}")));
        Ok(Reply::Pool(p))
    }

    pub(super) fn create_pool(&mut self, req: &Request, name: &str, patch: &PoolPatch) -> Response {
        validate_name("pool", name)?;
        if self.pools.contains_key(name) {
            return Err(conflict(format!("pool {name} already exists")));
        }
        let mut p = Pool::new(name, req.at_ms);
        p.edit(patch, req.at_ms)?;
        self.pools.insert(name.to_string(), p.clone());
        self.configured(req, name);
        self.audit(req, name, None);
        Ok(Reply::Pool(p))
    }

    pub(super) fn update_pool(&mut self, req: &Request, name: &str, patch: &PoolPatch) -> Response {
        let p = self.pools.get_mut(name).ok_or_else(|| not_found("pool", name))?;
        p.edit(patch, req.at_ms)?;
        let reply = Reply::Pool(p.clone());
        self.configured(req, name);
        self.audit(req, name, None);
        Ok(reply)
    }

    pub(super) fn archive_pool(&mut self, req: &Request, name: &str, archived: bool) -> Response {
        let p = self.pools.get_mut(name).ok_or_else(|| not_found("pool", name))?;
        if p.archived == archived {
            let state = if archived { "archived" } else { "not archived" };
            return Err(conflict(format!("pool {name} is already {state}")));
        }
        if archived && p.is_default {
            return Err(conflict(format!("pool {name} is the default pool; set another default first")));
        }
        p.archived = archived;
        p.updated_at_ms = req.at_ms;
        let reply = Reply::Pool(p.clone());
        self.configured(req, name);
        self.audit(req, name, None);
        Ok(reply)
    }

    pub(super) fn set_default_pool(&mut self, req: &Request, name: &str) -> Response {
        let p = self.pools.get(name).ok_or_else(|| not_found("pool", name))?;
        if p.archived {
            return Err(conflict(format!("pool {name} is archived")));
        }
        let mut chosen = None;
        for p in self.pools.values_mut() {
            p.is_default = p.name == name;
            if p.is_default {
                chosen = Some(p.clone());
            }
        }
        let p = chosen.ok_or_else(|| not_found("pool", name))?;
        self.configured(req, name);
        self.audit(req, name, None);
        Ok(Reply::Pool(p))
    }

    /// Autoscale step, fenced on the count the leader saw and the cooldown.
    pub(super) fn autoscale_pool(
        &mut self,
        req: &Request,
        pool: &str,
        (from, to): (u32, u32),
        reason: &str,
        cooldown_ms: u64,
    ) -> Response {
        let at = req.at_ms;
        let p = self.pools.get_mut(pool).ok_or_else(|| not_found("pool", pool))?;
        if p.desired_count != from {
            return Err(conflict(format!("pool {pool} desired count is {} now, not {from}", p.desired_count)));
        }
        let last = self.autoscale_last.get(pool).copied().unwrap_or(0);
        if last > 0 && at.saturating_sub(last) < cooldown_ms {
            return Err(conflict(format!("pool {pool} is in autoscale cooldown")));
        }
        p.edit(&PoolPatch { desired_count: Some(to), ..Default::default() }, at)?;
        let reply = Reply::Pool(p.clone());
        self.autoscale_last.insert(pool.to_string(), at);
        self.configured(req, pool);
        self.audit(req, pool, Some(format!("desired_count {from} -> {to}: {reason}")));
        Ok(reply)
    }

    /// Pools a heartbeat created, that no operator configured, that have no
    /// workers and are not the default: the ones the cleanup loop may remove.
    pub fn empty_implicit_pools(&self) -> Vec<String> {
        self.implicit_pools.iter().filter(|name| self.removable(name)).cloned().collect()
    }

    fn removable(&self, name: &str) -> bool {
        self.implicit_pools.contains(name)
            && !self.by_pool.contains_key(name)
            && self.pools.get(name).is_some_and(|p| !p.is_default)
    }

    /// The cleanup loop's removal, re-checked here: a pool that gained a
    /// worker or an operator's configuration since the leader looked stays.
    pub(super) fn remove_empty_pools(&mut self, req: &Request, names: &[String]) -> Response {
        let mut removed = Vec::new();
        for name in names {
            if self.removable(name) {
                self.pools.remove(name);
                self.implicit_pools.remove(name);
                self.autoscale_last.remove(name);
                removed.push(name.clone());
            }
        }
        for name in &removed {
            self.changed(req, format!("pool:{name}"), vec![field("removed", "empty")]);
            self.audit(req, name, Some("created by a heartbeat; no workers left".into()));
        }
        Ok(Reply::Removed(removed))
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
    fn scale_creates_then_updates_a_pool_and_audits() {
        let mut s = ControlState::default();
        s.apply(&req(Command::ScalePool { pool: "default".into(), desired_count: 3 })).unwrap();
        let r = s.apply(&req(Command::ScalePool { pool: "default".into(), desired_count: 5 })).unwrap();
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
            let e = s.apply(&req(Command::ScalePool { pool: bad.into(), desired_count: 1 })).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
        }
        let e =
            s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: MAX_DESIRED_COUNT + 1 })).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Invalid);
        assert_eq!(s, ControlState::default());
    }

    #[test]
    fn pools_lifecycle_default_and_archive_rules() {
        let mut s = ControlState::default();
        let patch = PoolPatch { min_count: Some(1), max_count: Some(4), ..Default::default() };
        s.apply(&req(Command::CreatePool { name: "eu".into(), patch: patch.clone() })).unwrap();
        assert_eq!(
            s.apply(&req(Command::CreatePool { name: "eu".into(), patch })).unwrap_err().kind,
            ErrorKind::Conflict
        );
        let bad = PoolPatch { min_count: Some(9), ..Default::default() };
        assert_eq!(
            s.apply(&req(Command::UpdatePool { name: "eu".into(), patch: bad })).unwrap_err().kind,
            ErrorKind::Conflict
        );
        s.apply(&req(Command::SetDefaultPool { name: "eu".into() })).unwrap();
        assert_eq!(s.default_pool(), "eu");
        assert_eq!(
            s.apply(&req(Command::ArchivePool { name: "eu".into(), archived: true })).unwrap_err().kind,
            ErrorKind::Conflict
        );
        s.apply(&req(Command::HeartbeatBatch { beats: vec![beat("w", None)].into() })).unwrap();
        assert_eq!(s.workers["w"].pool, "eu");
    }

    #[test]
    fn autoscale_is_fenced_on_count_and_cooldown() {
        let mut s = ControlState::default();
        s.apply(&req(Command::ScalePool { pool: "p".into(), desired_count: 2 })).unwrap();
        let step = |from, to| Command::AutoscalePool {
            pool: "p".into(),
            from,
            to,
            reason: "load".into(),
            cooldown_ms: 60_000,
        };
        s.apply(&req(step(2, 3))).unwrap();
        assert_eq!(s.apply(&req(step(2, 3))).unwrap_err().kind, ErrorKind::Conflict, "stale view");
        assert_eq!(s.apply(&req(step(3, 4))).unwrap_err().kind, ErrorKind::Conflict, "cooldown");
        assert!(s.audit[0].reason.as_deref().unwrap().contains("load"));
    }

    #[test]
    fn only_empty_pools_a_heartbeat_created_are_removed() {
        let mut s = ControlState { format_version: 2, ..Default::default() };
        let beats = vec![beat("w-1", Some("implicit")), beat("w-2", Some("busy")), beat("w-3", Some("configured"))];
        s.apply(&req(Command::HeartbeatBatch { beats: beats.into() })).unwrap();
        s.apply(&req(Command::UpdatePool { name: "configured".into(), patch: PoolPatch::default() })).unwrap();
        for id in ["w-1", "w-3"] {
            s.apply(&req(Command::DeleteWorker { id: id.into(), reason: None })).unwrap();
        }
        assert_eq!(s.empty_implicit_pools(), ["implicit"]);
        let names = vec!["implicit".into(), "busy".into(), "configured".into(), "nope".into()];
        let r = s.apply(&req(Command::RemoveEmptyPools { names })).unwrap();
        assert_eq!(r, Reply::Removed(vec!["implicit".into()]));
        assert!(
            !s.pools.contains_key("implicit") && s.pools.contains_key("busy") && s.pools.contains_key("configured")
        );
        assert!(s.empty_implicit_pools().is_empty());
    }
}
