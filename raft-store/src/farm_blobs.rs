//! The build farm's blob store: plan and manifest versions and build log
//! lines, in the sled tree `farm_blobs` beside the job logs, outside the
//! in-memory state.
//!
//! The model numbers what it accepts (blob versions, log line numbers) and
//! names what its retention dropped; the state machine writes and deletes
//! here, in entry order, when it applies the entry. Keys: `P|M ‖ version`
//! for blobs, `L ‖ package ‖ 0 ‖ version ‖ 0 ‖ line` for log lines (numbers
//! big-endian); values: `entry index ‖ at_ms ‖ bytes`. Replaying an entry
//! rewrites the same keys. A snapshot carries what entries up to its index
//! wrote, as a section after the job logs; installing one replaces the tree.
//! Bounded by the model: 20 versions of 1 MiB per kind, and the log
//! retention (`BUILD_LOG_MAX_BYTES`, at most 2 GiB).

use std::io::{self, Write};
use std::time::Instant;

use model::state::farm::{BlobKind, FarmOp, FarmReply};
use model::{Command, CommandError, Reply, Request};

use super::job_logs::contains_ignore_ascii_case;
use super::tree_section::{KeyLen, Section};

/// The tree's name in the node's sled database.
pub const TREE: &str = "farm_blobs";
/// Most lines one read or search answers.
pub const MAX_READ: usize = 1_000;
/// The snapshot section: keys with a length, values from a 16-byte header.
const SECTION: Section = Section { magic: *b"ERFB", what: "farm blob section", key: KeyLen::Prefixed, min_value: 16 };
const LOG_TAG: u8 = b'L';

fn blob_key(kind: BlobKind, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(kind.tag());
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The prefix of one build's log lines.
fn log_prefix(package: &str, version: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + package.len() + version.len() + 8);
    k.push(LOG_TAG);
    k.extend_from_slice(package.as_bytes());
    k.push(0);
    k.extend_from_slice(version.as_bytes());
    k.push(0);
    k
}

fn line_key(package: &str, version: &str, line: u64) -> Vec<u8> {
    let mut k = log_prefix(package, version);
    k.extend_from_slice(&line.to_be_bytes());
    k
}

fn value(index: u64, at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + body.len());
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

/// One change to the store, in entry order.
#[derive(Debug)]
enum Change {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    RemovePrefix(Vec<u8>),
}

/// What applying entries does to the store.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    changes: Vec<Change>,
}

impl Effects {
    /// Collect what an applied entry (at `index`) stored and dropped.
    pub(crate) fn collect(&mut self, index: u64, req: &Request, reply: &Result<Reply, CommandError>) {
        let (Command::Farm(op), Ok(Reply::Farm(answer))) = (&req.command, reply) else { return };
        match (op, answer) {
            (FarmOp::PutBlob { body, .. }, FarmReply::Blob { kind, meta, dropped }) => {
                for v in dropped {
                    self.changes.push(Change::Remove(blob_key(*kind, *v)));
                }
                self.changes.push(Change::Put(blob_key(*kind, meta.version), value(index, req.at_ms, body.as_bytes())));
            }
            (FarmOp::AppendLog(chunk), FarmReply::Logged { first_line, accepted, evicted }) => {
                for (p, v) in evicted {
                    self.changes.push(Change::RemovePrefix(log_prefix(p, v)));
                }
                for (n, text) in chunk.lines.iter().take(*accepted as usize).enumerate() {
                    let k = line_key(&chunk.package, &chunk.version, first_line + n as u64);
                    self.changes.push(Change::Put(k, value(index, req.at_ms, text.as_bytes())));
                }
            }
            _ => {}
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// One stored build log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLine {
    pub package: String,
    pub version: String,
    /// From 0 within its build's log.
    pub line: u64,
    pub at_ms: u64,
    pub text: String,
}

/// A search hit with the lines around it (within its log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub line: BuildLine,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A bounded search's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub hits: Vec<Hit>,
    /// False when the search stopped at its limit or deadline.
    pub complete: bool,
    pub scanned: u64,
}

fn decode_line(k: &[u8], v: &[u8]) -> Option<BuildLine> {
    let rest = k.strip_prefix(&[LOG_TAG])?;
    let (names, line) = rest.split_at_checked(rest.len().checked_sub(8)?)?;
    let names = names.strip_suffix(&[0])?;
    let zero = names.iter().position(|b| *b == 0)?;
    Some(BuildLine {
        package: String::from_utf8_lossy(&names[..zero]).into_owned(),
        version: String::from_utf8_lossy(&names[zero + 1..]).into_owned(),
        line: u64_at(line, 0)?,
        at_ms: u64_at(v, 8)?,
        text: String::from_utf8_lossy(v.get(16..)?).into_owned(),
    })
}

/// The store: written by the state machine, read through clones of it.
#[derive(Clone)]
pub struct FarmBlobs {
    tree: sled::Tree,
}

impl FarmBlobs {
    pub(crate) fn open(db: &sled::Db) -> sled::Result<FarmBlobs> {
        Ok(FarmBlobs { tree: db.open_tree(TREE)? })
    }

    /// Write what applied entries did, in their order.
    pub(crate) fn write(&self, effects: Effects) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for change in effects.changes {
            match change {
                Change::Put(k, v) => batch.insert(k, v),
                Change::Remove(k) => batch.remove(k),
                Change::RemovePrefix(p) => {
                    self.tree.apply_batch(std::mem::take(&mut batch))?;
                    for k in self.tree.scan_prefix(&p).keys() {
                        batch.remove(k?);
                    }
                }
            }
        }
        self.tree.apply_batch(batch)
    }

    /// The body of a stored blob version.
    pub fn blob(&self, kind: BlobKind, version: u64) -> io::Result<Option<Vec<u8>>> {
        let v = self.tree.get(blob_key(kind, version)).map_err(io::Error::other)?;
        Ok(v.and_then(|v| v.get(16..).map(<[u8]>::to_vec)))
    }

    /// Up to `limit` (at most [`MAX_READ`]) lines of a build's log from line `from`.
    pub fn lines(&self, package: &str, version: &str, from: u64, limit: usize) -> io::Result<Vec<BuildLine>> {
        let prefix = log_prefix(package, version);
        let mut out = Vec::new();
        for kv in self.tree.range(line_key(package, version, from)..).take(limit.min(MAX_READ)) {
            let (k, v) = kv.map_err(io::Error::other)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.extend(decode_line(&k, &v));
        }
        Ok(out)
    }

    /// Lines containing `q` (case-insensitive for ASCII), of `package` if
    /// given, written at or after `since_ms`; at most `limit` (at most
    /// [`MAX_READ`]), each with the line before and after; stops at `deadline`.
    pub fn search(
        &self,
        q: &str,
        package: Option<&str>,
        since_ms: u64,
        limit: usize,
        deadline: Instant,
    ) -> io::Result<Found> {
        let needle = q.to_ascii_lowercase();
        let limit = limit.min(MAX_READ);
        let mut found = Found { hits: Vec::new(), complete: true, scanned: 0 };
        if needle.is_empty() || limit == 0 {
            return Ok(found);
        }
        let prefix = match package {
            Some(p) => {
                let mut k = vec![LOG_TAG];
                k.extend_from_slice(p.as_bytes());
                k.push(0);
                k
            }
            None => vec![LOG_TAG],
        };
        // Lines are matched on their stored bytes; only a hit and the lines
        // around it are decoded.
        let mut prev: Option<(sled::IVec, sled::IVec)> = None;
        let mut want_after = false;
        let same_log = |a: &[u8], b: &[u8]| a.len() == b.len() && a[..a.len() - 8] == b[..b.len() - 8];
        for kv in self.tree.scan_prefix(&prefix) {
            if found.scanned.is_multiple_of(256) && Instant::now() >= deadline {
                found.complete = false;
                break;
            }
            let (k, v) = kv.map_err(io::Error::other)?;
            found.scanned += 1;
            if k.len() < 9 || v.len() < 16 {
                continue;
            }
            if want_after {
                want_after = false;
                if let Some(last) = found.hits.last_mut() {
                    let last_key = line_key(&last.line.package, &last.line.version, last.line.line);
                    if same_log(&last_key, &k) {
                        last.after = decode_line(&k, &v).map(|l| l.text);
                    }
                }
                if found.hits.len() >= limit {
                    found.complete = false;
                    break;
                }
            }
            let at_ms = u64_at(&v, 8).unwrap_or(0);
            if at_ms >= since_ms && contains_ignore_ascii_case(&v[16..], needle.as_bytes()) {
                if found.hits.len() >= limit {
                    found.complete = false;
                    break;
                }
                if let Some(line) = decode_line(&k, &v) {
                    let before = prev
                        .as_ref()
                        .filter(|(pk, _)| same_log(pk, &k))
                        .and_then(|(pk, pv)| decode_line(pk, pv))
                        .map(|p| p.text);
                    found.hits.push(Hit { line, before, after: None });
                    want_after = true;
                }
            }
            prev = Some((k, v));
        }
        Ok(found)
    }

    /// Entries stored (a full count: for tests and tools).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Write the snapshot section: what entries up to `upto` wrote.
    pub(crate) fn write_section(&self, upto: u64, w: &mut impl Write) -> io::Result<u64> {
        SECTION.write(&self.tree, |_, v| u64_at(v, 0).is_some_and(|index| index <= upto), w)
    }

    /// Replace the whole store with the section at the front of `section`
    /// (empty: nothing, as in a snapshot written before format 6).
    pub(crate) fn install_section(&self, section: &mut &[u8]) -> io::Result<u64> {
        SECTION.install(&self.tree, section)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use model::state::farm::{LogChunk, LogRetention};

    use super::*;

    fn store() -> (tempfile::TempDir, FarmBlobs) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, FarmBlobs::open(&db).unwrap())
    }

    fn req(at_ms: u64, op: FarmOp) -> Request {
        Request { at_ms, node: 1, actor: "t".into(), command: Command::Farm(op) }
    }

    fn chunk(package: &str, lines: &[&str]) -> FarmOp {
        FarmOp::AppendLog(LogChunk {
            package: package.into(),
            version: "1.0".into(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
            keep: LogRetention { max_age_ms: 1, max_bytes: 1 },
        })
    }

    fn logged(first_line: u64, accepted: u32, evicted: &[&str]) -> Result<Reply, CommandError> {
        let evicted = evicted.iter().map(|p| (p.to_string(), "1.0".to_string())).collect();
        Ok(Reply::Farm(FarmReply::Logged { first_line, accepted, evicted }))
    }

    #[test]
    fn lines_blobs_evictions_and_a_section_round_trip_in_entry_order() {
        let (_d, s) = store();
        let mut e = Effects::default();
        e.collect(1, &req(5, chunk("numpy", &["cc -O2", "error: Cython.h missing", "exit 1"])), &logged(0, 3, &[]));
        e.collect(2, &req(6, chunk("scipy", &["ok", "skipped"])), &logged(0, 1, &[]));
        let body = FarmOp::PutBlob { kind: BlobKind::Plan, body: "{\"a\":1}".into() };
        let meta = model::state::farm::BlobVersion { version: 1, sha256: String::new(), size: 7, at_ms: 7 };
        e.collect(3, &req(7, body), &Ok(Reply::Farm(FarmReply::Blob { kind: BlobKind::Plan, meta, dropped: vec![] })));
        s.write(e).unwrap();
        assert_eq!(s.len(), 5, "3 + 1 accepted lines + 1 blob");
        assert_eq!(s.blob(BlobKind::Plan, 1).unwrap().unwrap(), b"{\"a\":1}");
        assert!(s.blob(BlobKind::Manifest, 1).unwrap().is_none());
        let lines = s.lines("numpy", "1.0", 1, 10).unwrap();
        assert_eq!(
            lines.iter().map(|l| (l.line, l.text.as_str())).collect::<Vec<_>>(),
            [(1, "error: Cython.h missing"), (2, "exit 1")]
        );

        let far = Instant::now() + Duration::from_secs(5);
        let found = s.search("cython", None, 0, 10, far).unwrap();
        assert_eq!(found.hits.len(), 1);
        let hit = &found.hits[0];
        assert_eq!((hit.before.as_deref(), hit.after.as_deref()), (Some("cc -O2"), Some("exit 1")));
        assert!(s.search("cython", Some("scipy"), 0, 10, far).unwrap().hits.is_empty());
        assert!(s.search("cython", None, 6, 10, far).unwrap().hits.is_empty(), "written before `since`");
        assert!(!s.search("o", None, 0, 1, far).unwrap().complete);

        let mut section = Vec::new();
        assert_eq!(s.write_section(2, &mut section).unwrap(), 4, "the blob came at index 3");
        let (_d2, other) = store();
        let mut rest: &[u8] = &section;
        assert_eq!(other.install_section(&mut rest).unwrap(), 4);
        assert!(rest.is_empty());
        assert_eq!(other.lines("numpy", "1.0", 0, 10).unwrap(), s.lines("numpy", "1.0", 0, 10).unwrap());
        for cut in [1, 6, section.len() - 1] {
            assert!(other.install_section(&mut &section[..cut]).is_err(), "cut at {cut}");
        }

        // An eviction then a new log of the same build, in one write: the new lines stay.
        let mut e = Effects::default();
        e.collect(4, &req(8, chunk("x", &[])), &logged(0, 0, &["numpy"]));
        e.collect(
            5,
            &req(
                9,
                FarmOp::AppendLog(LogChunk {
                    package: "numpy".into(),
                    version: "1.0".into(),
                    lines: vec!["again".into()],
                    keep: LogRetention { max_age_ms: 1, max_bytes: 1 },
                }),
            ),
            &logged(0, 1, &[]),
        );
        s.write(e).unwrap();
        let lines = s.lines("numpy", "1.0", 0, 10).unwrap();
        assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["again"]);
    }
}
