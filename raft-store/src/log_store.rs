//! The Raft log, in a write-ahead log of its own (the `raft-log` crate, by
//! openraft's author) in `<data dir>/raft-log`: checksummed records appended
//! to chunk files, and one flush thread that writes and `fdatasync`s them. An
//! append or a vote is reported durable only after that sync.
//!
//! Chunk files are zero-filled ahead of need and written over rather than
//! appended to (our patch to `chunked-wal`, `vendor/chunked-wal`), so a sync
//! writes the data without the file's size.
//!
//! Why not sled, where the log used to be: every sled flush goes through its
//! IO thread pool, which wakes all of its idle threads for each task. On a
//! small machine those wake-ups cost more than the flush (BENCHMARKS.md). The
//! state machine's snapshot meta stays in sled.
//!
//! Data directories written before this change hold the log in sled; it is
//! moved here once, at start ([`LogStore::open`]).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError, Vote};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::RaftLog;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};
use model::codec;
use model::command::Command;

/// Size at which a chunk file is closed and a new one started. The entries of
/// the open chunk stay decoded in memory (the crate's rule), so this bounds
/// that memory; closed chunks are deleted once purged after a snapshot.
const CHUNK_MAX_BYTES: usize = 4 << 20;
/// Decoded entries of closed chunks kept for replication to a lagging follower.
const CACHE_MAX_ENTRIES: usize = 1024;
const CACHE_MAX_BYTES: usize = 4 << 20;

/// The WAL's view of our types. Each is stored as our codec's bytes behind a
/// length ([`codec::write_framed`]); the crate adds a checksum per record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalTypes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalLogId(LogId);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd)]
pub struct WalVote(Vote<NodeId>);

#[derive(Debug, Clone)]
pub struct WalPayload(EntryPayload<TypeConfig>);

macro_rules! framed_codec {
    ($($ty:ty),*) => {$(
        impl Encode for $ty {
            fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
                codec::write_framed(&self.0, w)
            }
        }
        impl Decode for $ty {
            fn decode<R: io::Read>(r: R) -> io::Result<Self> {
                codec::read_framed(r).map(Self)
            }
        }
    )*};
}
framed_codec!(WalLogId, WalVote, WalPayload);

/// Who hears that a flush reached the disk.
pub enum Flushed {
    /// openraft, for an append.
    Log(LogFlushed<TypeConfig>),
    /// An async caller waiting on a vote, truncate or purge.
    Task(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// A blocking caller (moving a sled log over at start).
    Thread(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Log(cb) => cb.log_io_completed(res),
            // A caller that gave up waiting has nothing left to tell.
            Flushed::Task(tx) => drop(tx.send(res)),
            Flushed::Thread(tx) => drop(tx.send(res)),
        }
    }
}

impl raft_log::Types for WalTypes {
    type LogId = WalLogId;
    type LogPayload = WalPayload;
    type Vote = WalVote;
    type Callback = Flushed;
    type UserData = ();

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    /// Only weighs the cache, so an estimate: heartbeat batches dominate.
    fn payload_size(payload: &WalPayload) -> u64 {
        match &payload.0 {
            EntryPayload::Normal(req) => match &req.command {
                Command::HeartbeatBatch { beats } => 64 + 400 * beats.len() as u64,
                _ => 256,
            },
            _ => 256,
        }
    }
}

type Wal = RaftLog<WalTypes>;

fn wal_config(dir: &Path) -> raft_log::Config {
    let mut wal = raft_log::chunked_wal::Config::new(dir.display());
    wal.chunk_max_size = Some(CHUNK_MAX_BYTES);
    // Replay reads chunks through a buffer of this size (default 64 MiB).
    wal.read_buffer_size = Some(1 << 20);
    // Sync as soon as there is something to sync: openraft already groups a
    // round's entries into one append, and waiting only adds latency.
    wal.flush_batch_wait = Some(Duration::ZERO);
    // Write records over a zero-filled chunk file instead of appending, so a
    // sync writes data only, not the file's size (patched chunked-wal).
    wal.preallocate_chunks = Some(true);
    raft_log::Config { wal, log_cache_max_items: Some(CACHE_MAX_ENTRIES), log_cache_capacity: Some(CACHE_MAX_BYTES) }
}

fn open_wal(dir: &Path) -> io::Result<Wal> {
    std::fs::create_dir_all(dir)?;
    RaftLog::open(Arc::new(wal_config(dir)))
}

/// Flush everything written so far and wait, from a plain thread.
fn sync_blocking(wal: &mut Wal) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    wal.flush(true, Some(Flushed::Thread(tx)))?;
    rx.recv().map_err(|_| io::Error::other("raft log flush worker stopped"))?
}

pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Mutex<Wal>>,
    /// Fault injection for tests (`ENGINE_TEST_SYNC_DELAY_FILE`): while this
    /// file holds a number of milliseconds, every append is reported synced
    /// that much later than its sync returned.
    sync_delay_file: Option<Arc<PathBuf>>,
}

/// Names a file (relative to the data directory) whose content, a number of
/// milliseconds, delays each append's sync report. For tests only.
const SYNC_DELAY_ENV: &str = "ENGINE_TEST_SYNC_DELAY_FILE";

const SLED_LOG: &str = "log";
const SLED_META: &str = "raft_meta";

impl LogStore {
    /// Open the log in `dir`, first moving a log that an older version of
    /// this node kept in sled (trees `log` and `raft_meta`), if there is one.
    pub fn open(dir: &Path, db: &sled::Db) -> Result<Self, String> {
        move_log_out_of_sled(dir, db)?;
        let wal = open_wal(dir).map_err(|e| format!("cannot open raft log in {}: {e}", dir.display()))?;
        let data_dir = dir.parent().unwrap_or(dir);
        let sync_delay_file = std::env::var_os(SYNC_DELAY_ENV).map(|f| Arc::new(data_dir.join(f)));
        Ok(Self { wal: Arc::new(Mutex::new(wal)), sync_delay_file })
    }

    /// The injected delay for this append's sync report, if a test set one.
    fn injected_sync_delay(&self) -> Option<Duration> {
        let file = self.sync_delay_file.as_ref()?;
        let ms: u64 = std::fs::read_to_string(file.as_path()).ok()?.trim().parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    fn wal(&self) -> MutexGuard<'_, Wal> {
        // Every call leaves the log consistent or fails before changing it;
        // a panic elsewhere while it was locked does not make it wrong.
        self.wal.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Make everything written so far durable, and wait for it.
    async fn sync(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.wal().flush(true, Some(Flushed::Task(tx))).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        let flushed = rx.await.unwrap_or_else(|_| Err(io::Error::other("raft log flush worker stopped")));
        flushed.map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

/// Older nodes kept the log in sled. Copy it into a fresh WAL beside `dir`,
/// sync it, rename it into place, and only then empty the sled trees: a crash
/// at any point leaves either the sled log or the complete WAL to start from.
fn move_log_out_of_sled(dir: &Path, db: &sled::Db) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot move the raft log from sled to {}: {e}", dir.display());
    let log = db.open_tree(SLED_LOG).map_err(|e| fail(&e))?;
    let meta = db.open_tree(SLED_META).map_err(|e| fail(&e))?;
    let empty_sled =
        || log.clear().and_then(|_| meta.clear()).and_then(|_| db.flush()).map(|_| ()).map_err(|e| fail(&e));
    if dir.exists() {
        // Moved already; a crash may have come before sled was emptied.
        if !log.is_empty() || !meta.is_empty() {
            empty_sled()?;
        }
        return Ok(());
    }
    if log.is_empty() && meta.is_empty() {
        return Ok(());
    }
    let get = |key: &[u8]| -> Result<Option<sled::IVec>, String> { meta.get(key).map_err(|e| fail(&e)) };
    let staging = PathBuf::from(format!("{}.moving", dir.display()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| fail(&e))?;
    }
    let mut wal = open_wal(&staging).map_err(|e| fail(&e))?;
    let decode_err = |e: codec::CodecError| fail(&e);
    if let Some(raw) = get(b"vote")? {
        wal.save_vote(WalVote(codec::decode(&raw).map_err(decode_err)?)).map_err(|e| fail(&e))?;
    }
    if let Some(raw) = get(b"last_purged")? {
        wal.purge(WalLogId(codec::decode(&raw).map_err(decode_err)?)).map_err(|e| fail(&e))?;
    }
    for item in log.iter() {
        let (_, raw) = item.map_err(|e| fail(&e))?;
        let entry: Entry = codec::decode(&raw).map_err(decode_err)?;
        wal.append([(WalLogId(entry.log_id), WalPayload(entry.payload))]).map_err(|e| fail(&e))?;
    }
    if let Some(raw) = get(b"committed")? {
        let committed: Option<LogId> = codec::decode(&raw).map_err(decode_err)?;
        let last = wal.log_state().last().map(|l| l.0);
        if let Some(committed) = committed.filter(|c| Some(*c) <= last) {
            wal.commit(WalLogId(committed)).map_err(|e| fail(&e))?;
        }
    }
    sync_blocking(&mut wal).map_err(|e| fail(&e))?;
    drop(wal);
    std::fs::rename(&staging, dir).map_err(|e| fail(&e))?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| fail(&e))?;
    }
    empty_sled()?;
    tracing::info!(dir = %dir.display(), "raft log moved out of sled");
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let wal = self.wal();
        wal.read(start, end)
            .map(|item| {
                let (log_id, payload) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Entry { log_id: log_id.0, payload: payload.0 })
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let wal = self.wal();
        let state = wal.log_state();
        let last_purged_log_id = state.purged().map(|l| l.0);
        Ok(LogState { last_purged_log_id, last_log_id: state.last().map(|l| l.0).or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.wal().save_vote(WalVote(*vote)).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.sync(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.wal().log_state().vote().map(|v| v.0))
    }

    /// Not synced on purpose: a lost commit index is re-learned from the
    /// leader; it only lets a restarted node re-apply committed entries before
    /// serving. It rides along with the next append's sync.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut wal = self.wal();
        let state = wal.log_state();
        let (last, known) = (state.last().map(|l| l.0), state.committed().map(|l| l.0));
        // The WAL refuses a commit index behind the one it has or past its
        // last entry; neither needs recording.
        let Some(committed) = committed.filter(|c| Some(*c) <= last && Some(*c) > known) else {
            return Ok(());
        };
        wal.commit(WalLogId(committed)).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        wal.flush(false, None).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal().log_state().committed().map(|l| l.0))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut wal = self.wal();
        // Entries at or below the purge point are in the state machine
        // already (openraft purges up to what it applied when the log is
        // behind); the WAL refuses them and nothing would ever read them.
        let purged = wal.log_state().purged().map(|l| l.0.index);
        let entries = entries.into_iter().filter(|e| purged.is_none_or(|p| e.log_id.index > p));
        wal.append(entries.map(|e| (WalLogId(e.log_id), WalPayload(e.payload))))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Durable before acknowledged: openraft counts this node towards the
        // commit quorum only once the callback fires, after the fdatasync.
        let flushed = match self.injected_sync_delay() {
            None => Flushed::Log(callback),
            Some(delay) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let synced = rx.await.unwrap_or_else(|_| Err(io::Error::other("raft log flush worker stopped")));
                    tokio::time::sleep(delay).await;
                    callback.log_io_completed(synced);
                });
                Flushed::Task(tx)
            }
        };
        wal.flush(true, Some(flushed)).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal().truncate(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.sync(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal().purge(WalLogId(log_id)).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Chunk files wholly purged are deleted by the flush worker after
        // this sync made the purge record durable.
        self.sync(ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    async fn indexes(store: &mut LogStore, range: std::ops::Range<u64>) -> Vec<u64> {
        store.try_get_log_entries(range).await.unwrap().iter().map(|e| e.log_id.index).collect()
    }

    /// A data directory with its sled database, and the log's path in it.
    fn data_dir() -> (tempfile::TempDir, sled::Db, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path().join("sled")).open().unwrap();
        let path = dir.path().join("raft-log");
        (dir, db, path)
    }

    /// The newest chunk file of the log in `path`.
    fn last_chunk(path: &Path) -> PathBuf {
        let chunks = std::fs::read_dir(path).unwrap().map(|f| f.unwrap().path());
        chunks.filter(|p| p.extension().is_some_and(|e| e == "wal")).max().expect("a chunk file")
    }

    /// A closed log holding entries 1..=20 of term 1, and its newest chunk file.
    async fn log_of_twenty() -> (tempfile::TempDir, sled::Db, PathBuf, PathBuf) {
        let (dir, db, path) = data_dir();
        {
            let mut store = LogStore::open(&path, &db).unwrap();
            append(&mut store, (1..=20).map(|i| entry(1, i)).collect()).await;
        }
        let chunk = last_chunk(&path);
        (dir, db, path, chunk)
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // openraft's own callback cannot be built outside it; flush after.
        store.wal().append(entries.into_iter().map(|e| (WalLogId(e.log_id), WalPayload(e.payload)))).unwrap();
        store.wal().flush(true, Some(Flushed::Task(tx))).unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn everything_synced_is_there_after_reopening() {
        let (_dir, db, path) = data_dir();
        {
            let mut store = LogStore::open(&path, &db).unwrap();
            append(&mut store, (1..=300).map(|i| entry(1, i)).collect()).await;
            store.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
            store.truncate(log_id(1, 251)).await.unwrap();
            store.purge(log_id(1, 10)).await.unwrap();
            store.save_committed(Some(log_id(1, 200))).await.unwrap();
            append(&mut store, vec![entry(2, 251)]).await;
        }
        let mut store = LogStore::open(&path, &db).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 10)));
        assert_eq!(state.last_log_id, Some(log_id(2, 251)));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(2, 3)));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 200)), "synced by the append after it");
        assert_eq!(indexes(&mut store, 0..1000).await, (11..=251).collect::<Vec<_>>());
        assert_eq!(store.try_get_log_entries(251..252).await.unwrap()[0].log_id, log_id(2, 251));
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_moves_over_once_and_sled_is_emptied() {
        let (dir, db, path) = data_dir();
        // The layout nodes wrote before the log had a WAL of its own.
        let (log, meta) = (db.open_tree(SLED_LOG).unwrap(), db.open_tree(SLED_META).unwrap());
        for i in 6u64..=40 {
            log.insert(i.to_be_bytes(), codec::encode(&entry(3, i)).unwrap()).unwrap();
        }
        meta.insert(b"vote", codec::encode(&Vote::<NodeId>::new_committed(3, 2)).unwrap()).unwrap();
        meta.insert(b"last_purged", codec::encode(&log_id(2, 5)).unwrap()).unwrap();
        meta.insert(b"committed", codec::encode(&Some(log_id(3, 33))).unwrap()).unwrap();
        // A staging directory left by a crash mid-move is discarded.
        std::fs::create_dir_all(dir.path().join("raft-log.moving/junk")).unwrap();

        for round in 0..2 {
            let mut store = LogStore::open(&path, &db).unwrap();
            assert!(log.is_empty() && meta.is_empty(), "sled emptied (round {round})");
            assert!(!dir.path().join("raft-log.moving").exists());
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(2, 5)));
            assert_eq!(state.last_log_id, Some(log_id(3, 40)));
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(3, 2)));
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 33)));
            assert_eq!(indexes(&mut store, 0..100).await, (6..=40).collect::<Vec<_>>());
        }

        // Moved, but sled not emptied before a crash: the WAL wins, sled is cleared.
        log.insert(7u64.to_be_bytes(), codec::encode(&entry(9, 7)).unwrap()).unwrap();
        let mut store = LogStore::open(&path, &db).unwrap();
        assert!(log.is_empty());
        assert_eq!(store.try_get_log_entries(7..8).await.unwrap()[0].log_id, log_id(3, 7));
    }

    /// A crash mid-write leaves part of a record at the tail of the open
    /// chunk. That record was never synced, so never acknowledged: opening
    /// cuts it off and keeps everything before it.
    #[tokio::test]
    async fn a_torn_record_at_the_tail_is_cut_off() {
        let (_dir, db, path, chunk) = log_of_twenty().await;
        let len = std::fs::metadata(&chunk).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&chunk).unwrap().set_len(len - 3).unwrap();

        let mut store = LogStore::open(&path, &db).unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 19)));
        assert_eq!(indexes(&mut store, 0..100).await, (1..=19).collect::<Vec<_>>());
        append(&mut store, vec![entry(2, 20)]).await;
        drop(store);
        let mut store = LogStore::open(&path, &db).unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 20)));
    }

    /// A damaged record before the tail is not a torn write: the node must
    /// not start on a log with a hole in it, nor skip the record silently.
    #[tokio::test]
    async fn a_damaged_record_before_the_tail_refuses_to_open() {
        let (_dir, db, path, chunk) = log_of_twenty().await;
        let mut bytes = std::fs::read(&chunk).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&chunk, bytes).unwrap();
        let opened = LogStore::open(&path, &db);
        assert!(opened.is_err(), "opened a log with a damaged record in it");
    }
}
