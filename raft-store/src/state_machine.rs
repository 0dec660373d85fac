//! The state machine: `ControlState` in memory behind a lock, rebuilt at start
//! from the last snapshot (kept in sled) plus the committed log that openraft
//! re-applies. Snapshots are written and flushed before they are reported:
//! the state bytes go to a file named after the snapshot id (fsynced, then
//! renamed), then its meta to sled (flushed), then older files are removed.
//! Encoding, decoding and storing a snapshot (tens of MB at 100k workers) run
//! on tokio's blocking pool, so Raft heartbeats keep flowing meanwhile; the
//! bytes never pass through sled, whose cache would keep a copy in memory.

use std::fs::File;
use std::io::{self, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::log_store::io_error;
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use model::codec;
use model::command::{Reply, Response};
use model::state::ControlState;

/// Meta (bincode) of the current snapshot; its bytes are in [`data_file`].
const KEY_META: &[u8] = b"meta";
/// Older layout: meta and data bincoded together in sled; still read, dropped on the next save.
const KEY_LEGACY: &[u8] = b"current";
const DATA_EXT: &str = "snap";

/// The file holding the bytes of snapshot `meta` in `dir`.
fn data_file(dir: &Path, meta: &SnapshotMeta) -> PathBuf {
    let name: String = meta
        .snapshot_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    dir.join(format!("{name}.{DATA_EXT}"))
}

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
    /// Directory of snapshot data files.
    dir: Arc<PathBuf>,
    /// One save at a time: a save removes the files of the snapshots before it.
    saving: Arc<Mutex<()>>,
    snapshot_seq: Arc<AtomicU64>,
    /// Held (shared) by a snapshot encode for as long as it reads the state;
    /// apply and install take it exclusively, awaiting it, before they take
    /// the state's write lock. Waiting on the std lock instead would block
    /// the runtime thread for the whole encode (and, the std lock preferring
    /// writers, every reader behind it): no Raft RPC, no request answered.
    encoding: Arc<tokio::sync::RwLock<()>>,
}

/// A cheap, cloneable read handle on the applied state for the API layer.
#[derive(Clone)]
pub struct StateReader {
    applied: Arc<RwLock<Applied>>,
}

impl StateReader {
    /// Borrow the applied state; keep the guard short, apply waits on it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().unwrap_or_else(|_| crate::fatal("the state lock is poisoned (an apply panicked)"))
    }
}

impl StateMachineStore {
    /// Open on `db`, with snapshot data files in `dir` (created if missing).
    pub fn new(db: sled::Db, dir: PathBuf) -> Result<Self, StorageError> {
        let snapshots = db.open_tree("snapshot").map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        std::fs::create_dir_all(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let store = Self {
            applied: Arc::default(),
            db,
            snapshots,
            dir: Arc::new(dir),
            saving: Arc::default(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            encoding: Arc::default(),
        };
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
        self.applied.write().unwrap_or_else(|_| crate::fatal("the state lock is poisoned (an apply panicked)"))
    }

    /// The state's write lock for apply and install, taken once no snapshot
    /// encode is reading it (see `encoding`); the gate is held alongside.
    async fn write_applied_after_encode(
        &self,
    ) -> (tokio::sync::RwLockWriteGuard<'_, ()>, std::sync::RwLockWriteGuard<'_, Applied>) {
        let gate = self.encoding.write().await;
        (gate, self.write_applied())
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let err = |e: &dyn std::error::Error| {
            io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, std::io::Error::other(e.to_string()))
        };
        if let Some(raw) = self.snapshots.get(KEY_META).map_err(|e| err(&e))? {
            let meta: SnapshotMeta = codec::decode(&raw).map_err(|e| err(&e))?;
            let data = std::fs::read(data_file(&self.dir, &meta)).map_err(|e| err(&e))?;
            return Ok(Some((meta, data)));
        }
        let legacy = self.snapshots.get(KEY_LEGACY).map_err(|e| err(&e))?;
        legacy
            .map(|v| codec::decode_snapshot_body::<LegacySnapshot>(&v).map(|s| (s.meta, s.data)).map_err(|e| err(&e)))
            .transpose()
    }

    /// Make `data` (a received snapshot) durable as the current snapshot,
    /// then drop older ones; hands `data` back.
    async fn save_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let (store, meta_owned) = (self.clone(), meta.clone());
        let (data, saved) = tokio::task::spawn_blocking(move || {
            let saved = store.save_blocking(&meta_owned, |file| file.write_all(&data));
            (data, saved)
        })
        .await
        .map_err(|e| io_error(subject(), ErrorVerb::Write, std::io::Error::other(e.to_string())))?;
        saved.map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        Ok(data)
    }

    /// Store the current snapshot `meta`, its bytes written by `write`: into a
    /// temporary file, fsynced and renamed into place; only then does the meta
    /// in sled point at it (flushed); older files are removed last. Returns
    /// the file's size.
    fn save_blocking(
        &self,
        meta: &SnapshotMeta,
        write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
    ) -> io::Result<u64> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let meta_bytes = codec::encode(meta).map_err(io::Error::other)?;
        let path = data_file(&self.dir, meta);
        let tmp = path.with_extension("tmp");
        let mut file = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut file)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&tmp, &path)?;
        File::open(&*self.dir)?.sync_all()?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_META, meta_bytes);
        batch.remove(KEY_LEGACY);
        self.snapshots.apply_batch(batch).map_err(io::Error::other)?;
        self.db.flush().map_err(io::Error::other)?;
        for entry in std::fs::read_dir(&*self.dir)? {
            let old = entry?.path();
            if old != path {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(size)
    }
}

fn decode_state(bytes: &[u8]) -> Result<ControlState, StorageError> {
    model::state::decode_snapshot(bytes).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Encode straight from the shared state, under its read lock, into the
        // snapshot file, on the blocking pool: no copy of the state and no
        // encoded buffer in memory (RSS), no stalled runtime thread. Apply
        // awaits the encode (see `encoding`), readers do not wait; the fsync
        // comes after the lock is released.
        let started = Instant::now();
        let (store, seq) = (self.clone(), self.snapshot_seq.fetch_add(1, Ordering::Relaxed));
        let encoding = self.encoding.clone().read_owned().await;
        let built = tokio::task::spawn_blocking(move || {
            let applied =
                store.applied.read().unwrap_or_else(|_| crate::fatal("the state lock is poisoned (an apply panicked)"));
            let snapshot_id = match applied.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("--{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
                snapshot_id,
            };
            let mut encode_ms = 0.0;
            let size = store.save_blocking(&meta, |file| {
                let encoded = model::state::encode_snapshot(&applied.state, file).map_err(io::Error::other);
                drop(applied);
                drop(encoding);
                encode_ms = started.elapsed().as_secs_f64() * 1e3;
                encoded
            });
            size.map(|size| (meta, size, encode_ms))
        })
        .await
        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, std::io::Error::other(e.to_string())))?;
        let (meta, size, encode_ms) = built.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        tracing::info!(bytes = size, encode_ms, total_ms = started.elapsed().as_secs_f64() * 1e3,
            index = ?meta.last_log_id.map(|l| l.index), "snapshot built");
        // openraft 0.9 keeps only the meta of a built snapshot
        // (`core::sm::worker`); a snapshot is sent from `get_current_snapshot`,
        // which reads the file. So the bytes are not read back here.
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied =
            self.applied.read().unwrap_or_else(|_| crate::fatal("the state lock is poisoned (an apply panicked)"));
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (_gate, mut applied) = self.write_applied_after_encode().await;
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
        if applied.state.format() > model::state::FORMAT_VERSION {
            crate::fatal(&format!(
                "the cluster moved to replicated format {}; this binary knows up to {}: upgrade it",
                applied.state.format(),
                model::state::FORMAT_VERSION
            ));
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
        let (state, data) = tokio::task::spawn_blocking(move || (decode_state(&data), data)).await.map_err(|e| {
            io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, std::io::Error::other(e.to_string()))
        })?;
        let state = state?;
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let data = self.save_snapshot(meta, data).await?;
        let old = {
            let (_gate, mut applied) = self.write_applied_after_encode().await;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::CommittedLeaderId;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn apply_awaits_a_snapshot_encode_without_blocking_the_runtime_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_log, sm) = crate::open_storage(dir.path(), 16 << 20).expect("open storage");
        // A snapshot encode in progress, as `build_snapshot` runs one on the
        // blocking pool: the gate held shared, the state's read lock held.
        let gate = sm.encoding.clone().read_owned().await;
        let state = sm.applied.clone();
        let (held, holding) = std::sync::mpsc::channel();
        let encoder = std::thread::spawn(move || {
            let read = state.read().expect("state lock");
            held.send(()).expect("test alive");
            std::thread::sleep(Duration::from_millis(300));
            drop(read);
            drop(gate);
        });
        holding.recv().expect("encoder started");

        let mut applier = sm.clone();
        let entry = Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 1), payload: EntryPayload::Blank };
        let apply = tokio::spawn(async move { applier.apply(vec![entry]).await });
        // The apply task runs first. Had it blocked on the state's lock, this
        // one-thread runtime would run nothing else until the encode ended.
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(200), "runtime thread blocked for {waited:?} by a waiting apply");
        assert!(!apply.is_finished(), "apply must wait for the encode to finish");

        let replies = apply.await.expect("apply task").expect("apply");
        assert_eq!(replies.len(), 1);
        assert_eq!(sm.reader().read().last_applied.map(|l| l.index), Some(1));
        encoder.join().expect("encoder thread");
    }
}
