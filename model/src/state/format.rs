//! The cluster format version and the snapshot layout.
//!
//! Every node runs a binary that knows the replicated format up to
//! [`FORMAT_VERSION`]; the cluster runs at the format in
//! `ControlState::format_version`, which the leader raises (with
//! `Command::SetFormatVersion`) only once every voter reports that it knows
//! the new one. A command variant or apply rule introduced with format N is
//! refused (and never proposed) below N, so a mixed-version cluster during a
//! rolling upgrade keeps applying identically on every node.
//!
//! | format | release | adds |
//! |---|---|---|
//! | 1 | 0.1.0 (3252ddf) | the original vocabulary and snapshot layout |
//! | 2 | 0.2.0 | `SetFormatVersion`, `HeartbeatBatchLimited`, `DeleteWorker`, `RemoveEmptyPools`; the change history, implicit-pool tracking, pruning of an incident's bookkeeping; the snapshot envelope |
//! | 3 | 0.3.0 | `IncidentChanges`: the alert round proposes only what changed, in parts under the entry limit |
//! | 4 | 0.3.0 | `CreateToken`, `RevokeToken`: named, scoped API tokens; the snapshot's format-4 section |
//! | 5 | | `Jobs`: the work queue (`state::job`); the snapshot's format-5 section |
//! | 6 | | `Farm`: the build farm (`state::farm`); job operations on the `build` queue record build events; the snapshot's format-6 section |
//! | 7 | | `FarmOp::RequestTrigger`, `ClaimTrigger`, `RecordTrigger`: worker triggers as a leader effect (`state::farm::trigger`); the snapshot's format-7 section |
//!
//! Snapshots: at format 1 a snapshot is written in the 0.1.0 layout (the
//! bare state, so an 0.1.0 follower can install it); from format 2 on it is
//! [`SNAPSHOT_MAGIC`], the format as a little-endian u32, then the state.
//! From format 4 on, state added by a format travels in that format's
//! *section*, encoded after the state (whose own fields, and so the layout of
//! formats 2 and 3, never change again): format 4's section holds the tokens.
//! A later format appends its own section after the earlier ones.
//! A 0.1.0 snapshot never starts with `0xff` (bincode's varint never does),
//! so the two are told apart by the first byte.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::farm::trigger::Section7;
use super::farm::{Farm, Section6};
use super::history::field;
use super::job::{Jobs, Section5};
use super::token::{ApiToken, Tokens};
use super::{AuditEntry, ControlState, FleetSample, Incident, Notification, Pool, ProviderState, Worker};
use crate::codec::{self, CodecError};
use crate::command::{CommandError, ErrorKind, Reply, Request, Response};

/// The newest replicated format this binary knows.
pub const FORMAT_VERSION: u32 = 7;

/// First bytes of a versioned snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = [0xff, b'E', b'R', b'S'];

/// The state as release 0.1.0 laid it out (format 1), borrowed for writing.
#[derive(Serialize)]
struct V1Ref<'a> {
    pools: &'a BTreeMap<String, Pool>,
    workers: &'a BTreeMap<String, Worker>,
    providers: &'a BTreeMap<String, ProviderState>,
    policy_version: &'a Option<String>,
    incidents: &'a BTreeMap<u64, Incident>,
    incident_seq: u64,
    notifications: &'a BTreeMap<u64, Notification>,
    notification_seq: u64,
    last_notified: &'a BTreeMap<String, u64>,
    fleet_samples: &'a VecDeque<FleetSample>,
    settings: &'a BTreeMap<String, String>,
    autoscale_last: &'a BTreeMap<String, u64>,
    audit: &'a VecDeque<AuditEntry>,
    audit_seq: u64,
}

/// The same layout, owned, for reading a 0.1.0 snapshot.
#[derive(Deserialize)]
struct V1 {
    pools: BTreeMap<String, Pool>,
    workers: BTreeMap<String, Worker>,
    providers: BTreeMap<String, ProviderState>,
    policy_version: Option<String>,
    incidents: BTreeMap<u64, Incident>,
    incident_seq: u64,
    notifications: BTreeMap<u64, Notification>,
    notification_seq: u64,
    last_notified: BTreeMap<String, u64>,
    fleet_samples: VecDeque<FleetSample>,
    settings: BTreeMap<String, String>,
    autoscale_last: BTreeMap<String, u64>,
    audit: VecDeque<AuditEntry>,
    audit_seq: u64,
}

/// Write a snapshot of `state` in the layout its format calls for.
pub fn encode_snapshot<W: std::io::Write>(state: &ControlState, w: &mut W) -> Result<(), CodecError> {
    if state.format() < 2 {
        let s = state;
        let v1 = V1Ref {
            pools: &s.pools,
            workers: &s.workers,
            providers: &s.providers,
            policy_version: &s.policy_version,
            incidents: &s.incidents,
            incident_seq: s.incident_seq,
            notifications: &s.notifications,
            notification_seq: s.notification_seq,
            last_notified: &s.last_notified,
            fleet_samples: &s.fleet_samples,
            settings: &s.settings,
            autoscale_last: &s.autoscale_last,
            audit: &s.audit,
            audit_seq: s.audit_seq,
        };
        return codec::encode_into_writer(&v1, w);
    }
    w.write_all(&SNAPSHOT_MAGIC).map_err(|e| CodecError(e.to_string()))?;
    w.write_all(&state.format().to_le_bytes()).map_err(|e| CodecError(e.to_string()))?;
    codec::encode_into_writer(state, w)?;
    if state.format() >= 4 {
        codec::encode_into_writer(&Section4Ref { tokens: &state.tokens.by_name }, w)?;
    }
    if state.format() >= 5 {
        codec::encode_into_writer(&state.jobs.section(), w)?;
    }
    if state.format() >= 6 {
        codec::encode_into_writer(&state.farm.section(), w)?;
    }
    if state.format() >= 7 {
        codec::encode_into_writer::<Section7, _>(&state.farm.triggers, w)?;
    }
    Ok(())
}

/// What format 4 adds to a snapshot, after the state.
#[derive(Serialize)]
struct Section4Ref<'a> {
    tokens: &'a BTreeMap<String, ApiToken>,
}

#[derive(Deserialize)]
struct Section4 {
    tokens: BTreeMap<String, ApiToken>,
}

/// Read a snapshot of any format up to [`FORMAT_VERSION`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<ControlState, CodecError> {
    decode_snapshot_prefix(bytes).map(|(state, _)| state)
}

/// Read a snapshot from the front of `bytes`; returns the state and how many
/// bytes it took, so that a container may carry more after it (raft-store
/// puts the job logs there).
pub fn decode_snapshot_prefix(bytes: &[u8]) -> Result<(ControlState, usize), CodecError> {
    let (mut state, end) = match bytes.strip_prefix(&SNAPSHOT_MAGIC) {
        Some(rest) => {
            let (version, body) =
                rest.split_at_checked(4).ok_or_else(|| CodecError("snapshot: short header".into()))?;
            let version = u32::from_le_bytes(version.try_into().map_err(|_| CodecError("snapshot header".into()))?);
            if version > FORMAT_VERSION {
                return Err(CodecError(format!(
                    "snapshot is format {version}; this binary knows up to {FORMAT_VERSION}: upgrade it"
                )));
            }
            let (mut state, mut used) = codec::decode_prefix::<ControlState>(body)?;
            if version >= 4 {
                let rest = body.get(used..).unwrap_or_default();
                let (section, n) = codec::decode_prefix::<Section4>(rest)?;
                state.tokens = Tokens::from_map(section.tokens);
                used += n;
            }
            if version >= 5 {
                let rest = body.get(used..).unwrap_or_default();
                let (section, n) = codec::decode_prefix::<Section5>(rest)?;
                state.jobs = Jobs::from_section(section);
                used += n;
            }
            if version >= 6 {
                let rest = body.get(used..).unwrap_or_default();
                let (section, n) = codec::decode_prefix::<Section6>(rest)?;
                state.farm = Farm::from_section(section);
                used += n;
            }
            if version >= 7 {
                let rest = body.get(used..).unwrap_or_default();
                let (section, n) = codec::decode_prefix::<Section7>(rest)?;
                state.farm.triggers = section;
                used += n;
            }
            (state, SNAPSHOT_MAGIC.len() + 4 + used)
        }
        None => {
            let (v, used) = codec::decode_prefix::<V1>(bytes)?;
            let state = ControlState {
                pools: v.pools,
                workers: v.workers,
                providers: v.providers,
                policy_version: v.policy_version,
                incidents: v.incidents,
                incident_seq: v.incident_seq,
                notifications: v.notifications,
                notification_seq: v.notification_seq,
                last_notified: v.last_notified,
                fleet_samples: v.fleet_samples,
                settings: v.settings,
                autoscale_last: v.autoscale_last,
                audit: v.audit,
                audit_seq: v.audit_seq,
                ..Default::default()
            };
            (state, used)
        }
    };
    state.reindex();
    Ok((state, end))
}

// ---- the format command family ----

impl ControlState {
    /// Raise the cluster format. Never lowered; a version above what this
    /// binary knows is recorded all the same (every node must apply alike)
    /// and the state-machine adapter stops the node with a clear line.
    pub(super) fn set_format_version(&mut self, req: &Request, version: u32) -> Response {
        if version <= self.format() {
            return Err(CommandError::new(
                ErrorKind::Conflict,
                format!("the cluster is at format {} already", self.format()),
            ));
        }
        let from = self.format();
        self.format_version = version;
        self.changed(req, "cluster:format".into(), vec![field("format_version", version)]);
        self.audit(req, "cluster:format", Some(format!("format {from} -> {version}")));
        Ok(Reply::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn req(command: Command) -> Request {
        Request { at_ms: 5, node: 1, actor: "leader".into(), command }
    }

    #[test]
    fn format_one_snapshots_keep_the_old_layout_and_format_two_ones_carry_a_header() {
        let mut s = ControlState::default();
        s.settings.insert("K".into(), "v".into());
        let mut v1 = Vec::new();
        encode_snapshot(&s, &mut v1).unwrap();
        assert_ne!(v1[0], 0xff);
        assert_eq!(decode_snapshot(&v1).unwrap(), s);

        s.apply(&req(Command::SetFormatVersion { version: 2 })).unwrap();
        assert_eq!(s.format(), 2);
        let mut v2 = Vec::new();
        encode_snapshot(&s, &mut v2).unwrap();
        assert_eq!(v2[..4], SNAPSHOT_MAGIC);
        assert_eq!(decode_snapshot(&v2).unwrap(), s);

        let mut future = v2.clone();
        future[4] = 9;
        assert!(decode_snapshot(&future).unwrap_err().0.contains("upgrade"));
        assert!(decode_snapshot(&v2[..6]).is_err());
    }

    #[test]
    fn new_variants_wait_for_their_format_and_the_format_never_goes_back() {
        let mut s = ControlState::default();
        let delete = req(Command::DeleteWorker { id: "w".into(), reason: None });
        let e = s.apply(&delete).unwrap_err();
        assert!(e.message.contains("needs cluster format 2"), "{e:?}");
        assert_eq!(s, ControlState::default());
        s.apply(&req(Command::SetFormatVersion { version: 2 })).unwrap();
        assert_eq!(s.apply(&delete).unwrap_err().kind, ErrorKind::NotFound);
        let before = s.clone();
        assert_eq!(s.apply(&req(Command::SetFormatVersion { version: 2 })).unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(s.apply(&req(Command::SetFormatVersion { version: 1 })).unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(s, before);
    }
}
