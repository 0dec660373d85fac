//! Pools: first-class groups of workers with a desired count, autoscale bounds
//! and a provider→profile map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{validate_name, MAX_DESIRED_COUNT};
use crate::command::{CommandError, ErrorKind};

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
