//! Provider policies (issue 22): the payload format and its validation, the
//! canary cohort, and the rule that rolls a canary back. Pure: no commands,
//! state or clock here; the policy command family builds on these pieces.
//!
//! Design note, for the Raft, API and leader work that follows:
//! - `POST /api/policies/validate` and `…/versions` call [`validate_payload`]
//!   with the strict flag from `POLICY_PAYLOAD_STRICT_VALIDATION_ENABLED`; a
//!   refusal answers 4xx with every [`Problem`] (`path: message`). An accepted
//!   payload is stored as its typed [`Policy`] with [`checksum`] (SHA-256 of
//!   [`canonical_bytes`]) and the name [`version_name`] of the next sequence
//!   number, the same string heartbeat answers carry as `policy_version`.
//!   Checksums are computed on the leader before the command is proposed, so
//!   apply only stores them.
//! - Promote keeps `(previous, candidate, canary_percent)` in the state.
//!   Today the heartbeat answer copies the one `ControlState::policy_version`
//!   to every worker (`state/worker.rs`); with a rollout it gives a worker
//!   the candidate when [`in_canary_percent`] says so and the previous
//!   version otherwise. The cohort is a function of the worker id alone:
//!   stepping 5 → 25 → 100 % only adds workers, and every node and release
//!   answers alike.
//! - The leader's rollout loop feeds each window's per-cohort counts
//!   ([`CohortCounts`]: probes, tempfails, rejects, unknowns, summed from the
//!   heartbeats' `provider_metrics` by the worker's cohort) to a
//!   [`CanaryWatch`] and, on a [`Verdict`], proposes the rollback once, with
//!   the rate and evidence, like the other leader effects. The windows'
//!   counts belong in the replicated rollout record, so a new leader
//!   [`CanaryWatch::replay`]s them to the same point: starting over would
//!   drop the evidence so far and spend the false-rollback rate again.

mod cohort;
mod payload;
mod rollback;
#[cfg(test)]
mod schema_tests;
mod watch;

pub use cohort::{canary_bucket, in_canary, in_canary_percent, BUCKETS};
pub use payload::{
    canonical_bytes, checksum, parse_version, validate_payload, version_name, Backoff, Policy, Problem, ProviderPolicy,
    Retry, Routing, Thresholds, MAX_DESCRIPTION_LEN, MAX_PAYLOAD_BYTES, MAX_PROBLEMS, MAX_PROVIDERS, POLICY_FORMAT,
};
pub use rollback::{Decision, RollbackTest, Window, DEFAULT_FALSE_ROLLBACK_RATE, RATIO_GRID};
pub use watch::{CanaryWatch, CohortCounts, Verdict, WatchedRate};
