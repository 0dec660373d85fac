//! The Raft log on sled. An append or a vote is reported durable only after
//! sled has flushed it to disk: one flush per appended batch, never per entry.
//! The newest entries are also kept decoded in memory ([`RecentEntries`]), so
//! the leader's replication streams do not decode from sled what it has just
//! appended.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, StorageIOError, Vote};

use crate::codec;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Log entries live in tree `log` keyed by big-endian index; vote and
/// bookkeeping in tree `raft_meta`. Both share the process's one `sled::Db`.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    recent: Arc<Mutex<RecentEntries>>,
}

/// Most entries [`RecentEntries`] keeps, and most encoded bytes they add up
/// to. Replication to a follower that keeps up reads the last entry or two;
/// one that lags further reads sled as before. Decoded entries take a few
/// times their encoded size, so the budget stays small (RSS).
const RECENT_MAX_ENTRIES: usize = 128;
const RECENT_MAX_BYTES: usize = 1 << 20;

/// A copy of the log's newest contiguous entries, changed in the same calls
/// that change sled (append, truncate, purge), so that whatever range it
/// holds reads the same as sled. Cloning an entry is cheap: heartbeat
/// batches, the bulk of the log, are shared behind an `Arc`.
#[derive(Default)]
struct RecentEntries {
    /// Entries with consecutive indexes, each with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn push(&mut self, entry: Entry, size: usize) {
        if self.entries.back().is_some_and(|(last, _)| last.log_id.index + 1 != entry.log_id.index) {
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_MAX_ENTRIES || (self.bytes > RECENT_MAX_BYTES && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drop entries at `index` and after (log truncated there).
    fn truncate(&mut self, index: u64) {
        while let Some((last, size)) = self.entries.back() {
            if last.log_id.index < index {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_back();
        }
    }

    /// Drop entries up to and including `index` (log purged there).
    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(first, _)| first.log_id.index <= index) {
            self.pop_front();
        }
    }

    /// Entries `start..end` if every one of them is held here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start >= end {
            return Some(Vec::new());
        }
        if start < first || end > last + 1 {
            return None;
        }
        let from = (start - first) as usize;
        Some(self.entries.range(from..from + (end - start) as usize).map(|(e, _)| e.clone()).collect())
    }
}

pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl LogStore {
    pub fn new(db: sled::Db) -> Result<Self, sled::Error> {
        Ok(Self { log: db.open_tree("log")?, meta: db.open_tree("raft_meta")?, db, recent: Arc::default() })
    }

    fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        // The cache is only ever left consistent; a panic elsewhere while it
        // was locked does not make it wrong.
        self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self.meta.get(key).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        raw.map(|v| codec::decode(&v).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))).transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        self.meta.insert(key, bytes).map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        self.flush_db().await.map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    /// Flush everything written so far to disk. On tokio's blocking pool rather
    /// than sled's `flush_async`: sled's own pool wakes every idle IO thread
    /// (`notify_all`) for each task, which on a small machine cost more than
    /// the flush itself (two such hand-offs per flush, seven threads each).
    async fn flush_db(&self) -> std::io::Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(flushed) => flushed.map(|_| ()).map_err(std::io::Error::other),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
        codec::decode(bytes).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
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
            Bound::Included(i) => Some(i.saturating_add(1)),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = end.and_then(|end| self.recent().get(start, end)) {
            return Ok(entries);
        }
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(start.to_be_bytes()..=i.to_be_bytes()),
            Bound::Excluded(i) => self.log.range(start.to_be_bytes()..i.to_be_bytes()),
            Bound::Unbounded => self.log.range(start.to_be_bytes()..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (_, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            entries.push(Self::decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.log.last().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((_, v)) => Some(Self::decode_entry(&v)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    /// Not flushed on purpose: a lost commit index is re-learned from the leader;
    /// it only lets a restarted node re-apply committed entries before serving.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes =
                codec::encode(&entry).map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            let size = bytes.len();
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
            appended.push((entry, size));
        }
        self.log.apply_batch(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        {
            let mut recent = self.recent();
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }
        // Durable before acknowledged: openraft counts this node towards the
        // commit quorum only once the callback fires.
        let flushed = self.flush_db().await;
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(log_id.index.to_be_bytes()..).keys() {
            batch.remove(key.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?);
        }
        self.recent().truncate(log_id.index);
        self.log.apply_batch(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=log_id.index.to_be_bytes()).keys() {
            batch.remove(key.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?);
        }
        self.recent().purge(log_id.index);
        self.log.apply_batch(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.flush(ErrorSubject::Logs).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_hold() {
        let mut r = RecentEntries::default();
        assert_eq!(indexes(r.get(1, 2)), None, "empty cache holds nothing");
        for i in 5..=9 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(r.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(r.get(4, 6)), None, "starts before the cache");
        assert_eq!(indexes(r.get(8, 11)), None, "ends after the cache");

        r.truncate(8);
        assert_eq!(indexes(r.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(r.get(7, 9)), None, "truncated entries are gone");
        r.purge(5);
        assert_eq!(indexes(r.get(5, 6)), None, "purged entries are gone");
        assert_eq!(indexes(r.get(6, 8)), Some(vec![6, 7]));
        assert_eq!(r.bytes, 20);

        r.push(entry(20), 10);
        assert_eq!(indexes(r.get(6, 7)), None, "a gap starts the cache afresh");
        assert_eq!(indexes(r.get(20, 21)), Some(vec![20]));
        assert_eq!(r.bytes, 10);
    }

    #[test]
    fn recent_entries_stay_within_their_bounds() {
        let mut r = RecentEntries::default();
        for i in 0..(RECENT_MAX_ENTRIES as u64 + 10) {
            r.push(entry(i), 1);
        }
        assert_eq!(r.entries.len(), RECENT_MAX_ENTRIES);
        assert_eq!(r.entries.front().unwrap().0.log_id.index, 10);
        r.push(entry(RECENT_MAX_ENTRIES as u64 + 10), RECENT_MAX_BYTES);
        assert_eq!(r.entries.len(), 1, "one entry over the byte budget is still kept, alone");
        assert_eq!(r.bytes, RECENT_MAX_BYTES);
    }
}
