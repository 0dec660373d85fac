//! The state machine: `ControlState` in memory behind a lock, rebuilt at start
//! from the last snapshot (kept in sled) plus the committed log that openraft
//! re-applies. Snapshots are written and flushed before they are reported.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::command::{Reply, Response};
use crate::log_store::io_error;
use crate::state::ControlState;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const KEY_CURRENT: &[u8] = b"current";

/// What apply mutates; shared with readers through [`StateReader`].
#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: ControlState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    db: sled::Db,
    snapshots: sled::Tree,
    snapshot_seq: Arc<AtomicU64>,
}

/// A cheap, cloneable read handle on the applied state for the API layer.
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
}

impl StateReader {
    /// Borrow the applied state; keep the guard short, apply waits on it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().expect("state lock poisoned: an apply panicked")
    }
}

impl StateMachineStore {
    pub fn new(db: sled::Db) -> Result<Self, StorageError> {
        let snapshots = db.open_tree("snapshot").map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        let store = Self { applied: Arc::default(), db, snapshots, snapshot_seq: Arc::new(AtomicU64::new(0)) };
        if let Some(stored) = store.load_snapshot()? {
            let state: ControlState = decode_state(&stored.data)?;
            let mut applied = store.write_applied();
            applied.last_applied = stored.meta.last_log_id;
            applied.last_membership = stored.meta.last_membership.clone();
            applied.state = state;
        }
        Ok(store)
    }

    pub fn reader(&self) -> StateReader {
        StateReader { applied: self.applied.clone() }
    }

    fn write_applied(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied.write().expect("state lock poisoned: an apply panicked")
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let raw =
            self.snapshots.get(KEY_CURRENT).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        raw.map(|v| codec::decode(&v).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e)))
            .transpose()
    }

    async fn save_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(stored.meta.signature()));
        let bytes = codec::encode(stored).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        self.snapshots.insert(KEY_CURRENT, bytes).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        self.db.flush_async().await.map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        Ok(())
    }
}

fn decode_state(bytes: &[u8]) -> Result<ControlState, StorageError> {
    codec::decode(bytes).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last_applied, last_membership, state) = {
            let applied = self.applied.read().expect("state lock poisoned");
            (applied.last_applied, applied.last_membership.clone(), applied.state.clone())
        };
        let data = codec::encode(&state).map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        let stored = StoredSnapshot { meta, data };
        self.save_snapshot(&stored).await?;
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.read().expect("state lock poisoned");
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.write_applied();
        let mut replies = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Ok(Reply::Done),
                EntryPayload::Normal(ref req) => applied.state.apply(req),
                EntryPayload::Membership(ref m) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Ok(Reply::Done)
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = decode_state(&data)?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored).await?;
        let mut applied = self.write_applied();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.state = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.load_snapshot()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
