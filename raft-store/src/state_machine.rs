//! The state machine: `ControlState` in memory behind a lock, rebuilt at start
//! from the last snapshot (kept in sled) plus the committed log that openraft
//! re-applies. Snapshots are written and flushed before they are reported.
//! Encoding, decoding and storing a snapshot (tens of MB at 100k workers) run
//! on tokio's blocking pool, so Raft heartbeats keep flowing meanwhile.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::command::{Reply, Response};
use crate::log_store::io_error;
use crate::state::ControlState;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// Snapshot meta (bincode) and state bytes (raw) under two keys, written in one batch.
const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";
/// Older layout: meta and data bincoded together; still read, replaced on the next save.
const KEY_LEGACY: &[u8] = b"current";

/// What apply mutates; shared with readers through [`StateReader`].
#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: ControlState,
}

#[derive(Serialize, Deserialize)]
struct LegacySnapshot {
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
        if let Some((meta, data)) = store.load_snapshot()? {
            let state: ControlState = decode_state(&data)?;
            let mut applied = store.write_applied();
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership.clone();
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

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let err = |e: &dyn std::error::Error| {
            io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, std::io::Error::other(e.to_string()))
        };
        if let Some(raw) = self.snapshots.get(KEY_META).map_err(|e| err(&e))? {
            let meta: SnapshotMeta = codec::decode(&raw).map_err(|e| err(&e))?;
            let data = self.snapshots.get(KEY_DATA).map_err(|e| err(&e))?;
            let data = data.ok_or_else(|| err(&std::io::Error::other("snapshot meta without data")))?;
            return Ok(Some((meta, data.to_vec())));
        }
        let legacy = self.snapshots.get(KEY_LEGACY).map_err(|e| err(&e))?;
        legacy
            .map(|v| codec::decode::<LegacySnapshot>(&v).map(|s| (s.meta, s.data)).map_err(|e| err(&e)))
            .transpose()
    }

    /// Store meta and data atomically and flush; hands `data` back for reuse.
    async fn save_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let meta_bytes = codec::encode(meta).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        let tree = self.snapshots.clone();
        let (data, stored) = tokio::task::spawn_blocking(move || {
            let mut batch = sled::Batch::default();
            batch.insert(KEY_META, meta_bytes);
            batch.insert(KEY_DATA, data.as_slice());
            batch.remove(KEY_LEGACY);
            let stored = tree.apply_batch(batch);
            (data, stored)
        })
        .await
        .map_err(|e| io_error(subject(), ErrorVerb::Write, std::io::Error::other(e.to_string())))?;
        stored.map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        self.db.flush_async().await.map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        Ok(data)
    }
}

fn decode_state(bytes: &[u8]) -> Result<ControlState, StorageError> {
    codec::decode(bytes).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Encode straight from the shared state under a read lock, on the
        // blocking pool: no second copy of the state (RSS), no stalled runtime
        // thread. Apply waits for the encode, readers do not.
        let started = Instant::now();
        let shared = self.applied.clone();
        let encoded = tokio::task::spawn_blocking(move || {
            let applied = shared.read().expect("state lock poisoned");
            let data = codec::encode(&applied.state);
            (applied.last_applied, applied.last_membership.clone(), data)
        })
        .await
        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, std::io::Error::other(e.to_string())))?;
        let (last_applied, last_membership, data) = encoded;
        let data = data.map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let encode_ms = started.elapsed().as_secs_f64() * 1e3;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership, snapshot_id };
        let data = self.save_snapshot(&meta, data).await?;
        tracing::info!(bytes = data.len(), encode_ms, total_ms = started.elapsed().as_secs_f64() * 1e3,
            index = ?last_applied.map(|l| l.index), "snapshot built");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
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
        let started = Instant::now();
        let data = snapshot.into_inner();
        let (state, data) = tokio::task::spawn_blocking(move || (decode_state(&data), data))
            .await
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, std::io::Error::other(e.to_string())))?;
        let state = state?;
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let data = self.save_snapshot(meta, data).await?;
        let old = {
            let mut applied = self.write_applied();
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership.clone();
            std::mem::replace(&mut applied.state, state)
        };
        // Freeing the replaced state (100k workers) is not worth a runtime thread.
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(bytes = data.len(), decode_ms, total_ms = started.elapsed().as_secs_f64() * 1e3,
            index = ?meta.last_log_id.map(|l| l.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let subject = || ErrorSubject::Snapshot(None);
        let store = self.clone();
        let loaded = tokio::task::spawn_blocking(move || store.load_snapshot())
            .await
            .map_err(|e| io_error(subject(), ErrorVerb::Read, std::io::Error::other(e.to_string())))??;
        Ok(loaded.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
