//! The build farm's blob store: plan and manifest versions and build log
//! lines, in the sled tree `farm_blobs` beside the job logs, outside the
//! in-memory state.
//!
//! The model numbers what it accepts (blob versions, log line numbers) and
//! names what its retention dropped; the state machine writes and deletes
//! here, in entry order, when it applies the entry. Keys: `P|M ‖ version`
//! for blobs, `C ‖ package ‖ 0 ‖ version ‖ 0 ‖ first line` for a chunk of
//! log lines, as one append brought them (numbers big-endian); values:
//! `entry index ‖ at_ms ‖ bytes`, where a chunk's bytes are its line count
//! (u32) then each line as a u32 length and its text. One entry per chunk,
//! not per line, keeps a search a pass over few large values (a sled entry
//! costs microseconds to visit, a line's bytes nanoseconds). Replaying an entry
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
/// Log chunks. (`L`, one entry per line, was the layout before format 6
/// was released: never read, removed with its log.)
const LOG_TAG: u8 = b'C';
const OLD_LOG_TAG: u8 = b'L';

fn blob_key(kind: BlobKind, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(kind.tag());
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The prefix of one build's log chunks.
fn log_prefix(package: &str, version: &str) -> Vec<u8> {
    tagged_prefix(LOG_TAG, package, version)
}

fn tagged_prefix(tag: u8, package: &str, version: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + package.len() + version.len() + 8);
    k.push(tag);
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

/// A chunk's value: `index ‖ at_ms ‖ count ‖ (len ‖ text)*`.
fn chunk_value<'a>(index: u64, at_ms: u64, lines: impl ExactSizeIterator<Item = &'a String>) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + lines.len() * 64);
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(&(lines.len() as u32).to_be_bytes());
    for l in lines {
        v.extend_from_slice(&(l.len() as u32).to_be_bytes());
        v.extend_from_slice(l.as_bytes());
    }
    v
}

/// The lines of a chunk's value, in order (stops at a malformed length).
fn chunk_lines(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v.get(20..).unwrap_or_default();
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let text = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(text)
    })
}

/// A chunk's line count.
fn chunk_count(v: &[u8]) -> u64 {
    v.get(16..20).map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap_or_default()) as u64)
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
                    self.changes.push(Change::RemovePrefix(tagged_prefix(OLD_LOG_TAG, p, v)));
                }
                let lines = &chunk.lines[..(*accepted as usize).min(chunk.lines.len())];
                if !lines.is_empty() {
                    let k = line_key(&chunk.package, &chunk.version, *first_line);
                    self.changes.push(Change::Put(k, chunk_value(index, req.at_ms, lines.iter())));
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

/// A chunk key's package, version and first line.
fn decode_key(k: &[u8]) -> Option<(String, String, u64)> {
    let rest = k.strip_prefix(&[LOG_TAG])?;
    let (names, line) = rest.split_at_checked(rest.len().checked_sub(8)?)?;
    let names = names.strip_suffix(&[0])?;
    let zero = names.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8_lossy(&names[..zero]).into_owned(),
        String::from_utf8_lossy(&names[zero + 1..]).into_owned(),
        u64_at(line, 0)?,
    ))
}

/// Line `n` of a chunk (0-based within it), decoded.
fn decode_line(k: &[u8], v: &[u8], n: usize, text: &[u8]) -> Option<BuildLine> {
    let (package, version, first) = decode_key(k)?;
    Some(BuildLine {
        package,
        version,
        line: first + n as u64,
        at_ms: u64_at(v, 8)?,
        text: String::from_utf8_lossy(text).into_owned(),
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
        let limit = limit.min(MAX_READ);
        // From the chunk holding `from`: the last one starting at or before it.
        let start = match self.tree.range(prefix.clone()..=line_key(package, version, from)).next_back() {
            Some(kv) => kv.map_err(io::Error::other)?.0,
            None => line_key(package, version, from).into(),
        };
        let mut out = Vec::new();
        for kv in self.tree.range(start..) {
            let (k, v) = kv.map_err(io::Error::other)?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let first = u64_at(&k, k.len() - 8).unwrap_or(0);
            for (n, text) in chunk_lines(&v).enumerate() {
                if first + n as u64 >= from && out.len() < limit {
                    out.extend(decode_line(&k, &v, n, text));
                }
            }
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
        // A chunk whose bytes hold no match is passed over whole; only a
        // hit and the lines around it are decoded.
        let needle = needle.as_bytes();
        let mut prev: Option<(String, String, String)> = None; // the last line seen: package, version, text
        let mut want_after = false;
        for kv in self.tree.scan_prefix(&prefix) {
            if Instant::now() >= deadline {
                found.complete = false;
                break;
            }
            let (k, v) = kv.map_err(io::Error::other)?;
            let Some((package, version, first)) = decode_key(&k) else { continue };
            let count = chunk_count(&v);
            found.scanned += count;
            let same_log = |p: &(String, String, String)| p.0 == package && p.1 == version;
            if want_after {
                want_after = false;
                if let (Some(last), Some(text)) = (found.hits.last_mut(), chunk_lines(&v).next()) {
                    if last.line.package == package && last.line.version == version {
                        last.after = Some(String::from_utf8_lossy(text).into_owned());
                    }
                }
                if found.hits.len() >= limit {
                    found.complete = false;
                    break;
                }
            }
            let at_ms = u64_at(&v, 8).unwrap_or(0);
            if at_ms < since_ms || !contains_ignore_ascii_case(v.get(20..).unwrap_or_default(), needle) {
                prev = chunk_lines(&v)
                    .last()
                    .map(|t| (package, version, String::from_utf8_lossy(t).into_owned()))
                    .or(prev);
                continue;
            }
            let lines: Vec<&[u8]> = chunk_lines(&v).collect();
            let mut stop = false;
            for (n, text) in lines.iter().enumerate() {
                if want_after {
                    want_after = false;
                    if let Some(last) = found.hits.last_mut() {
                        last.after = Some(String::from_utf8_lossy(text).into_owned());
                    }
                    if found.hits.len() >= limit {
                        (found.complete, stop) = (false, true);
                        break;
                    }
                }
                if !contains_ignore_ascii_case(text, needle) {
                    continue;
                }
                if found.hits.len() >= limit {
                    (found.complete, stop) = (false, true);
                    break;
                }
                let before = match n {
                    0 => prev.as_ref().filter(|p| same_log(p)).map(|p| p.2.clone()),
                    _ => Some(String::from_utf8_lossy(lines[n - 1]).into_owned()),
                };
                let line = BuildLine {
                    package: package.clone(),
                    version: version.clone(),
                    line: first + n as u64,
                    at_ms,
                    text: String::from_utf8_lossy(text).into_owned(),
                };
                found.hits.push(Hit { line, before, after: None });
                want_after = true;
            }
            if stop {
                break;
            }
            prev = lines.last().map(|t| (package, version, String::from_utf8_lossy(t).into_owned())).or(prev);
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
        assert_eq!(s.len(), 3, "2 chunks (3 lines, 1 accepted line) + 1 blob");
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
        assert_eq!(s.write_section(2, &mut section).unwrap(), 2, "the blob came at index 3");
        let (_d2, other) = store();
        let mut rest: &[u8] = &section;
        assert_eq!(other.install_section(&mut rest).unwrap(), 2);
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

    #[test]
    fn reads_and_searches_cross_chunk_boundaries() {
        let (_d, s) = store();
        let mut e = Effects::default();
        let texts: Vec<String> = (0..10).map(|n| format!("line {n}")).collect();
        // Chunks of 3, 3, 4 lines: 0-2, 3-5, 6-9; line 5 ends a chunk, 6 starts one.
        for (i, range) in [0..3, 3..6, 6..10].into_iter().enumerate() {
            let lines: Vec<&str> = texts[range.clone()].iter().map(String::as_str).collect();
            let mut lines = lines;
            if range.start == 3 {
                lines[2] = "an ERROR at the end";
            }
            if range.start == 6 {
                lines[0] = "error at the start";
            }
            let n = lines.len() as u32;
            e.collect(i as u64 + 1, &req(10 + i as u64, chunk("pkg", &lines)), &logged(range.start as u64, n, &[]));
        }
        s.write(e).unwrap();
        assert_eq!(s.len(), 3);
        let read =
            |from, limit| -> Vec<u64> { s.lines("pkg", "1.0", from, limit).unwrap().iter().map(|l| l.line).collect() };
        assert_eq!(read(0, 100), (0..10).collect::<Vec<_>>());
        assert_eq!(read(4, 3), [4, 5, 6], "from inside a chunk, across the next");
        assert_eq!(read(9, 5), [9]);
        assert!(read(10, 5).is_empty());
        assert_eq!(s.lines("pkg", "2.0", 0, 5).unwrap(), [], "another version");

        let far = Instant::now() + Duration::from_secs(5);
        let found = s.search("error", None, 0, 10, far).unwrap();
        assert!(found.complete);
        assert_eq!(found.scanned, 10);
        let got: Vec<_> = found.hits.iter().map(|h| (h.line.line, h.before.as_deref(), h.after.as_deref())).collect();
        assert_eq!(
            got,
            [(5, Some("line 4"), Some("error at the start")), (6, Some("an ERROR at the end"), Some("line 7"))]
        );
        let one = s.search("error", None, 0, 1, far).unwrap();
        assert_eq!((one.hits.len(), one.complete), (1, false));
        assert_eq!(one.hits[0].after.as_deref(), Some("error at the start"), "its context crosses the chunk");
        let past = Instant::now() - Duration::from_secs(1);
        assert!(!s.search("error", None, 0, 10, past).unwrap().complete, "a spent deadline stops the scan");
    }
}
