//! The state machine: `ControlState` in memory behind a lock, rebuilt at start
//! from the last snapshot (kept in sled) plus the committed log that openraft
//! re-applies. Snapshots are written and flushed before they are reported:
//! the state bytes go to a file named after the snapshot id (fsynced, then
//! renamed), then its meta to sled (flushed), then older files are removed.
//! Encoding, decoding and storing a snapshot (tens of MB at 100k workers) run
//! on tokio's blocking pool, so Raft heartbeats keep flowing meanwhile; the
//! bytes never pass through sled, whose cache would keep a copy in memory.
//!
//! Job log lines live beside the state in the sled tree of [`job_logs`]:
//! apply writes the lines an entry's job operations had accepted, a snapshot
//! carries them as a section after the state's bytes, an install replaces
//! them. The build farm's plans, manifests and log lines live the same way
//! in [`farm_blobs`] (from format 6), in the section after the job logs.

#[path = "farm_blobs.rs"]
pub mod farm_blobs;
#[path = "job_logs.rs"]
pub mod job_logs;
#[path = "tree_section.rs"]
mod tree_section;

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
pub use farm_blobs::FarmBlobs;
pub use job_logs::JobLogs;
use model::codec;
use model::command::{Reply, Response};
use model::state::ControlState;

/// Meta (bincode) of the current snapshot; its bytes are in [`data_file`].
const KEY_META: &[u8] = b"meta";
/// Older layout: meta and data bincoded together in sled; still read, dropped on the next save.
const KEY_LEGACY: &[u8] = b"current";
/// Set while an install replaces the job logs: a start that finds it redoes
/// the replacement from the current snapshot.
const KEY_LOGS_INSTALLING: &[u8] = b"job_logs_installing";
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
    /// The job log store.
    logs: JobLogs,
    /// The build farm's blob store.
    blobs: FarmBlobs,
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
        let logs = JobLogs::open(&db).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        let blobs = FarmBlobs::open(&db).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        std::fs::create_dir_all(&dir).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let store = Self {
            applied: Arc::default(),
            db,
            snapshots,
            dir: Arc::new(dir),
            saving: Arc::default(),
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            encoding: Arc::default(),
            logs,
            blobs,
        };
        if let Some((meta, data)) = store.load_snapshot()? {
            let (state, used) = decode_state(&data)?;
            let interrupted = store.snapshots.get(KEY_LOGS_INSTALLING).map_err(|e| store_error(ErrorVerb::Read, e))?;
            if interrupted.is_some() {
                store.install_logs(&data[used..]).map_err(|e| store_error(ErrorVerb::Write, e))?;
            }
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

    /// A cloneable read handle on the job log store.
    pub fn job_logs(&self) -> JobLogs {
        self.logs.clone()
    }

    /// A cloneable read handle on the build farm's blob store.
    pub fn farm_blobs(&self) -> FarmBlobs {
        self.blobs.clone()
    }

    /// Replace the job logs and the farm's blobs with a snapshot's sections,
    /// durably: marked in sled first, so that a crash half-way is redone at
    /// the next start.
    fn install_logs(&self, mut section: &[u8]) -> io::Result<u64> {
        self.snapshots.insert(KEY_LOGS_INSTALLING, &[1u8][..]).map_err(io::Error::other)?;
        self.db.flush().map_err(io::Error::other)?;
        let n = self.logs.install_section(&mut section)?;
        let n = n + self.blobs.install_section(&mut section)?;
        self.snapshots.remove(KEY_LOGS_INSTALLING).map_err(io::Error::other)?;
        self.db.flush().map_err(io::Error::other)?;
        Ok(n)
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

/// The state a snapshot holds, and the bytes it took (the job logs follow).
fn decode_state(bytes: &[u8]) -> Result<(ControlState, usize), StorageError> {
    model::state::decode_snapshot_prefix(bytes).map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
}

fn store_error(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::Store, verb, std::io::Error::other(e.to_string()))
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
            let with_logs = applied.state.format() >= 5;
            let with_blobs = applied.state.format() >= 6;
            let upto = applied.last_applied.map_or(0, |l| l.index);
            let (logs, blobs) = (store.logs.clone(), store.blobs.clone());
            let size = store.save_blocking(&meta, |file| {
                let encoded = model::state::encode_snapshot(&applied.state, file).map_err(io::Error::other);
                drop(applied);
                drop(encoding);
                encode_ms = started.elapsed().as_secs_f64() * 1e3;
                encoded?;
                // The job logs of entries up to the snapshot's index, read
                // while apply goes on: lines written later carry a larger
                // index and are left out; lines deleted meanwhile belong to
                // jobs a later entry removes again on whoever installs this.
                if with_logs {
                    logs.write_section(upto, file)?;
                }
                if with_blobs {
                    blobs.write_section(upto, file)?;
                }
                Ok(())
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

impl StateMachineStore {
    /// Apply entries to the state under its write lock; returns the replies
    /// and what the job log store is to do.
    fn apply_locked<I: IntoIterator<Item = Entry>>(&self, entries: I) -> (Vec<Response>, Stored) {
        let mut applied = self.write_applied();
        let mut replies = Vec::new();
        let (mut logs, mut blobs) = (job_logs::Effects::default(), farm_blobs::Effects::default());
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Ok(Reply::Done),
                EntryPayload::Normal(ref req) => {
                    let reply = applied.state.apply(req);
                    logs.collect(entry.log_id.index, req, &reply);
                    blobs.collect(entry.log_id.index, req, &reply);
                    reply
                }
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
        (replies, (logs, blobs))
    }
}

/// What applied entries leave for the job logs and the farm's blobs.
type Stored = (job_logs::Effects, farm_blobs::Effects);

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
        let _gate = self.encoding.write().await;
        let (replies, (logs, blobs)) = self.apply_locked(entries);
        // The lines go to the store outside the state's lock (readers of the
        // state need not wait on sled) but inside the gate, before a
        // snapshot encode can start.
        if !logs.is_empty() || !blobs.is_empty() {
            let (store, farm) = (self.logs.clone(), self.blobs.clone());
            tokio::task::spawn_blocking(move || store.write(logs).and_then(|()| farm.write(blobs)))
                .await
                .map_err(|e| store_error(ErrorVerb::Write, e))?
                .map_err(|e| store_error(ErrorVerb::Write, e))?;
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
        let (state, used) = state?;
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let data = self.save_snapshot(meta, data).await?;
        let store = self.clone();
        let (lines, data) = tokio::task::spawn_blocking(move || (store.install_logs(&data[used..]), data))
            .await
            .map_err(|e| store_error(ErrorVerb::Write, e))?;
        let lines = lines.map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let old = {
            let (_gate, mut applied) = self.write_applied_after_encode().await;
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership.clone();
            std::mem::replace(&mut applied.state, state)
        };
        // Freeing the replaced state (100k workers) is not worth a runtime thread.
        tokio::task::spawn_blocking(move || drop(old));
        tracing::info!(bytes = data.len(), job_log_lines = lines, decode_ms, total_ms = started.elapsed().as_secs_f64() * 1e3,
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

    mod jobs {
        use model::state::job::{Backoff, Claim, Finish, JobOp, JobOps, LeaseToken, NewJob, Renew};
        use model::{Command, Request};
        use openraft::CommittedLeaderId;

        use super::super::*;
        use crate::state_machine::job_logs::LineId;

        fn entry(index: u64, at_ms: u64, command: Command) -> Entry {
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Request { at_ms, node: 1, actor: "t".into(), command }),
            }
        }

        fn ops(v: Vec<JobOp>) -> Command {
            Command::Jobs(JobOps { ops: v })
        }

        const LEASE: LeaseToken = LeaseToken { seq: 1, nonce: 7 };

        /// Format 5, job 1 enqueued and claimed (lease seq 1), renewed with
        /// two lines, completed with one; job 2 enqueued.
        fn history() -> Vec<Entry> {
            let new = |q: &str| {
                JobOp::Enqueue(NewJob {
                    queue: q.into(),
                    kind: "k".into(),
                    payload: "{}".into(),
                    priority: 0,
                    pool: None,
                    run_after_ms: None,
                    idempotency_key: None,
                    max_attempts: 3,
                    backoff: Backoff { base_ms: 10, max_ms: 100 },
                })
            };
            let claim = JobOp::Claim(Claim {
                worker: "w1".into(),
                queues: vec!["q".into()],
                max_jobs: 1,
                lease_ms: 60_000,
                nonce: 7,
            });
            let renew = JobOp::Renew(Renew {
                job_id: 1,
                worker: "w1".into(),
                lease: LEASE,
                lease_ms: 60_000,
                progress: None,
                logs: vec!["starting".into(), "Half Way".into()],
            });
            let complete = JobOp::Complete(Finish {
                job_id: 1,
                worker: "w1".into(),
                lease: LEASE,
                result: None,
                error: None,
                retryable: false,
                logs: vec!["done".into()],
            });
            vec![
                entry(1, 1_000, Command::SetFormatVersion { version: 5 }),
                entry(2, 1_000, ops(vec![new("q"), new("other")])),
                entry(3, 2_000, ops(vec![claim])),
                // A refused renewal (an outdated token) stores nothing.
                entry(
                    4,
                    2_500,
                    ops(vec![
                        JobOp::Renew(Renew {
                            job_id: 1,
                            worker: "w1".into(),
                            lease: LeaseToken { seq: 1, nonce: 8 },
                            lease_ms: 60_000,
                            progress: None,
                            logs: vec!["forged".into()],
                        }),
                        renew,
                    ]),
                ),
                entry(5, 3_000, ops(vec![complete])),
            ]
        }

        fn texts(sm: &StateMachineStore, job: u64) -> Vec<String> {
            sm.job_logs().lines(job, None, 100).unwrap().into_iter().map(|l| l.text).collect()
        }

        #[tokio::test]
        async fn apply_writes_the_accepted_lines_and_a_replay_rewrites_the_same_keys() {
            let dir = tempfile::tempdir().unwrap();
            let (_log, mut sm) = crate::open_storage(dir.path(), 16 << 20).unwrap();
            sm.apply(history()).await.unwrap();
            assert_eq!(texts(&sm, 1), vec!["starting", "Half Way", "done"]);
            let lines = sm.job_logs().lines(1, None, 100).unwrap();
            assert_eq!(lines[0].id, LineId { index: 4, op: 1, line: 0 });
            assert_eq!((lines[0].at_ms, lines[2].at_ms), (2_500, 3_000));
            assert_eq!(sm.reader().read().state.jobs.get(1).unwrap().log_lines, 3);
            // Paging with a cursor.
            let page = sm.job_logs().lines(1, Some(lines[0].id), 1).unwrap();
            assert_eq!(page.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), vec!["Half Way"]);
            assert!(sm.job_logs().lines(2, None, 100).unwrap().is_empty());
            // A restart replays the log onto the last snapshot (none here):
            // the same entries write the same keys, no line twice.
            let mut again = StateMachineStore::new(sm.db.clone(), dir.path().join("snapshots")).unwrap();
            again.apply(history()).await.unwrap();
            assert_eq!(sm.job_logs().len(), 3);
            assert_eq!(texts(&again, 1), vec!["starting", "Half Way", "done"]);
        }

        #[tokio::test]
        async fn a_snapshot_carries_the_lines_to_a_fresh_store_and_compaction_deletes_them() {
            let dir = tempfile::tempdir().unwrap();
            let (_log, mut sm) = crate::open_storage(dir.path(), 16 << 20).unwrap();
            sm.apply(history()).await.unwrap();
            sm.build_snapshot().await.unwrap();
            let snap = sm.get_current_snapshot().await.unwrap().expect("a snapshot");

            let other = tempfile::tempdir().unwrap();
            let (_log2, mut fresh) = crate::open_storage(other.path(), 16 << 20).unwrap();
            // Lines the fresh store had are replaced, not merged.
            fresh.apply(history()).await.unwrap();
            fresh.logs.write(stray_line()).unwrap();
            assert_eq!(fresh.job_logs().len(), 4);
            fresh.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
            assert_eq!(texts(&fresh, 1), vec!["starting", "Half Way", "done"]);
            assert_eq!(fresh.job_logs().len(), 3);
            assert_eq!(fresh.reader().read().state, sm.reader().read().state);

            // A restart of the fresh store keeps both.
            drop(fresh);
            drop(_log2);
            let (_log2, fresh) = crate::open_storage(other.path(), 16 << 20).unwrap();
            assert_eq!(texts(&fresh, 1), vec!["starting", "Half Way", "done"]);
            assert_eq!(fresh.reader().read().state.jobs.get(1).unwrap().log_lines, 3);

            // Compaction removes the job and its lines.
            let compact = ops(vec![JobOp::Compact { finished_before_ms: u64::MAX, keep_finished: 0 }]);
            let replies = sm.apply(vec![entry(6, 9_000, compact)]).await.unwrap();
            assert!(format!("{replies:?}").contains("removed: [1]"), "{replies:?}");
            assert!(sm.job_logs().is_empty());
        }

        /// A line of job 9 at index 99, as if left from an older history.
        fn stray_line() -> job_logs::Effects {
            let renew = JobOp::Renew(Renew {
                job_id: 9,
                worker: "w".into(),
                lease: LEASE,
                lease_ms: 1,
                progress: None,
                logs: vec!["stray".into()],
            });
            let req = Request { at_ms: 1, node: 1, actor: "t".into(), command: ops(vec![renew]) };
            let reply = Ok(Reply::Jobs(vec![Ok(model::state::job::JobReply::Renewed {
                job_id: 9,
                expires_ms: 2,
                logs_accepted: 1,
            })]));
            let mut e = job_logs::Effects::default();
            e.collect(99, &req, &reply);
            e
        }

        #[tokio::test]
        async fn a_snapshot_section_holds_lines_up_to_its_index_and_an_interrupted_install_is_redone() {
            let dir = tempfile::tempdir().unwrap();
            let (_log, mut sm) = crate::open_storage(dir.path(), 16 << 20).unwrap();
            sm.apply(history()).await.unwrap();
            let mut section = Vec::new();
            assert_eq!(sm.logs.write_section(4, &mut section).unwrap(), 2, "entry 5's line is after index 4");
            sm.build_snapshot().await.unwrap();
            // A crash in the middle of an install: the marker is set and the
            // tree half-replaced. The next start redoes it from the snapshot.
            sm.logs.write(stray_line()).unwrap();
            sm.snapshots.insert(KEY_LOGS_INSTALLING, &[1u8][..]).unwrap();
            sm.db.flush().unwrap();
            let again = StateMachineStore::new(sm.db.clone(), dir.path().join("snapshots")).unwrap();
            assert_eq!(again.job_logs().len(), 3);
            assert!(again.snapshots.get(KEY_LOGS_INSTALLING).unwrap().is_none());
        }
    }
}
