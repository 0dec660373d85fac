//! The job log store: the lines workers send with their renewals and
//! reports, kept in the sled tree `job_logs` outside the in-memory state.
//!
//! The model only counts a job's lines (`logs_accepted` in each answer);
//! the state machine writes the accepted lines here when it applies the
//! entry, keyed by `job id ‖ log index ‖ op position ‖ line` (all big-endian),
//! so replaying an entry rewrites the same keys, and deletes a job's lines
//! when compaction removes the job. A snapshot carries the lines written by
//! entries up to its index, as a section after the model's bytes; installing
//! one replaces the tree. Bounded by the model's caps: 10,000 lines and
//! 1 MiB per job, 512 MiB for all jobs.

use std::io::{self, Write};
use std::time::Instant;

use model::state::job::{JobId, JobOp, JobReply};
use model::{Command, CommandError, Reply, Request};

use super::tree_section::{KeyLen, Section};

/// The tree's name in the node's sled database.
pub const TREE: &str = "job_logs";
/// Most lines one read answers.
pub const MAX_READ: usize = 1_000;
/// First bytes of the snapshot section.
/// The snapshot section: fixed-length keys, values from an 8-byte header.
const SECTION: Section =
    Section { magic: *b"ERJL", what: "job log section", key: KeyLen::Fixed(KEY_LEN), min_value: 8 };
const KEY_LEN: usize = 24;

/// Where a line sits: the log entry, the operation within it and the line
/// within the operation. Lines of a job read in this order; its text form
/// `index-op-line` is the cursor of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineId {
    pub index: u64,
    pub op: u32,
    pub line: u32,
}

impl std::fmt::Display for LineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.index, self.op, self.line)
    }
}

impl std::str::FromStr for LineId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.split('-');
        let mut next = || parts.next().filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).ok_or(());
        let id = LineId {
            index: next()?.parse().map_err(|_| ())?,
            op: next()?.parse().map_err(|_| ())?,
            line: next()?.parse().map_err(|_| ())?,
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(id)
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub job_id: JobId,
    pub id: LineId,
    /// The time of the entry that carried it.
    pub at_ms: u64,
    pub text: String,
}

/// A bounded search's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHits {
    pub lines: Vec<LogLine>,
    /// False when the search stopped at its deadline or limit before the
    /// end of the store.
    pub complete: bool,
    /// Lines looked at.
    pub scanned: u64,
}

fn key(job_id: JobId, id: LineId) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&job_id.to_be_bytes());
    k[8..16].copy_from_slice(&id.index.to_be_bytes());
    k[16..20].copy_from_slice(&id.op.to_be_bytes());
    k[20..].copy_from_slice(&id.line.to_be_bytes());
    k
}

fn decode(k: &[u8], v: &[u8]) -> Option<LogLine> {
    if k.len() != KEY_LEN || v.len() < 8 {
        return None;
    }
    let u64_at = |b: &[u8], i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Some(LogLine {
        job_id: u64_at(k, 0),
        id: LineId { index: u64_at(k, 8), op: u32_at(k, 16), line: u32_at(k, 20) },
        at_ms: u64_at(v, 0),
        text: String::from_utf8_lossy(&v[8..]).into_owned(),
    })
}

/// What applying one entry does to the store.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    inserts: Vec<([u8; KEY_LEN], Vec<u8>)>,
    removed_jobs: Vec<JobId>,
}

impl Effects {
    /// Collect the lines an applied entry (at `index`) had accepted and the
    /// jobs its compaction removed.
    pub(crate) fn collect(&mut self, index: u64, req: &Request, reply: &Result<Reply, CommandError>) {
        let (Command::Jobs(ops), Ok(Reply::Jobs(answers))) = (&req.command, reply) else { return };
        for (pos, (op, answer)) in ops.ops.iter().zip(answers).enumerate() {
            let (job_id, logs, accepted) = match (op, answer) {
                (JobOp::Renew(r), Ok(JobReply::Renewed { logs_accepted, .. })) => (r.job_id, &r.logs, *logs_accepted),
                (JobOp::Complete(f) | JobOp::Fail(f), Ok(JobReply::Finished { logs_accepted, .. })) => {
                    (f.job_id, &f.logs, *logs_accepted)
                }
                (_, Ok(JobReply::Compacted { removed })) => {
                    self.removed_jobs.extend_from_slice(removed);
                    continue;
                }
                _ => continue,
            };
            for (n, text) in logs.iter().take(accepted as usize).enumerate() {
                let id = LineId { index, op: pos as u32, line: n as u32 };
                let mut v = Vec::with_capacity(8 + text.len());
                v.extend_from_slice(&req.at_ms.to_be_bytes());
                v.extend_from_slice(text.as_bytes());
                self.inserts.push((key(job_id, id), v));
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.removed_jobs.is_empty()
    }
}

/// The store: written by the state machine, read through clones of it.
#[derive(Clone)]
pub struct JobLogs {
    tree: sled::Tree,
}

impl JobLogs {
    pub(crate) fn open(db: &sled::Db) -> sled::Result<JobLogs> {
        Ok(JobLogs { tree: db.open_tree(TREE)? })
    }

    /// Write what applied entries did, in their order.
    pub(crate) fn write(&self, effects: Effects) -> sled::Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in effects.inserts {
            batch.insert(&k[..], v);
        }
        self.tree.apply_batch(batch)?;
        for job_id in effects.removed_jobs {
            let mut batch = sled::Batch::default();
            for k in self.tree.scan_prefix(job_id.to_be_bytes()).keys() {
                batch.remove(k?);
            }
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Up to `limit` (at most [`MAX_READ`]) lines of a job, after `after`.
    pub fn lines(&self, job_id: JobId, after: Option<LineId>, limit: usize) -> io::Result<Vec<LogLine>> {
        let start = match after {
            Some(a) => std::ops::Bound::Excluded(key(job_id, a).to_vec()),
            None => std::ops::Bound::Included(job_id.to_be_bytes().to_vec()),
        };
        let end = match job_id.checked_add(1) {
            Some(next) => std::ops::Bound::Excluded(next.to_be_bytes().to_vec()),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.tree.range::<Vec<u8>, _>((start, end)).take(limit.min(MAX_READ)) {
            let (k, v) = kv.map_err(io::Error::other)?;
            out.extend(decode(&k, &v));
        }
        Ok(out)
    }

    /// Lines containing `q` (case-insensitive for ASCII), newest job first,
    /// at most `limit` (at most [`MAX_READ`]); stops at `deadline`.
    pub fn search(&self, q: &str, limit: usize, deadline: Instant) -> io::Result<SearchHits> {
        let needle = q.to_ascii_lowercase();
        let limit = limit.min(MAX_READ);
        let mut hits = SearchHits { lines: Vec::new(), complete: true, scanned: 0 };
        if needle.is_empty() || limit == 0 {
            return Ok(hits);
        }
        for kv in self.tree.iter().rev() {
            if hits.lines.len() >= limit || (hits.scanned.is_multiple_of(256) && Instant::now() >= deadline) {
                hits.complete = false;
                break;
            }
            let (k, v) = kv.map_err(io::Error::other)?;
            hits.scanned += 1;
            let text = v.get(8..).unwrap_or_default();
            if contains_ignore_ascii_case(text, needle.as_bytes()) {
                hits.lines.extend(decode(&k, &v));
            }
        }
        Ok(hits)
    }

    /// Lines stored (a full count: for tests and tools).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Write the snapshot section: the lines of entries up to `upto` (the
    /// snapshot's index; later ones come with the log after it).
    pub(crate) fn write_section(&self, upto: u64, w: &mut impl Write) -> io::Result<u64> {
        SECTION.write(&self.tree, |k, v| decode(k, v).is_some_and(|line| line.id.index <= upto), w)
    }

    /// Replace the whole store with a snapshot section (empty input: no lines,
    /// as in a snapshot written before the store existed).
    /// Reads from the front of `section`, leaving what follows the section.
    pub(crate) fn install_section(&self, section: &mut &[u8]) -> io::Result<u64> {
        SECTION.install(&self.tree, section)
    }
}

pub(crate) fn contains_ignore_ascii_case(hay: &[u8], needle_lower: &[u8]) -> bool {
    let Some((&first, rest)) = needle_lower.split_first() else { return true };
    if hay.len() < needle_lower.len() {
        return false;
    }
    // Candidates are the places of the first byte in either case (found with
    // SIMD by memchr); only those are compared in full.
    let last_start = hay.len() - needle_lower.len();
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), &hay[..=last_start])
        .any(|at| hay[at + 1..at + needle_lower.len()].eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn contains_ignore_ascii_case_agrees_with_a_plain_scan() {
        let plain = |hay: &[u8], n: &[u8]| {
            n.is_empty() || (hay.len() >= n.len() && hay.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n)))
        };
        let hays: [&[u8]; 7] =
            [b"", b"a", b"Error: NUMPY missing", b"errerror", b"xx ERROR", b"\xff\xfeerr", b"ab-AB-aB-Ab-"];
        for hay in hays {
            for needle in [&b""[..], b"e", b"error", b"numpy missing", b"ab-a", b"b-", b"-ab-", b"zz", b"error!"] {
                assert_eq!(contains_ignore_ascii_case(hay, needle), plain(hay, needle), "{hay:?} {needle:?}");
            }
        }
        // A needle at the very end, and one a byte too long.
        assert!(contains_ignore_ascii_case(b"the end", b"end"));
        assert!(!contains_ignore_ascii_case(b"the end", b"the end!"));
    }

    fn store() -> (tempfile::TempDir, JobLogs) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, JobLogs::open(&db).unwrap())
    }

    fn fill(logs: &JobLogs, jobs: u64, per_job: u32) {
        let mut e = Effects::default();
        for job in 1..=jobs {
            for line in 0..per_job {
                let mut v = 5u64.to_be_bytes().to_vec();
                v.extend_from_slice(format!("job {job} line {line}").as_bytes());
                e.inserts.push((key(job, LineId { index: 10 + job, op: 0, line }), v));
            }
        }
        logs.write(e).unwrap();
    }

    #[test]
    fn line_ids_read_back_their_text_form() {
        let id = LineId { index: 42, op: 3, line: 7 };
        assert_eq!(id.to_string(), "42-3-7");
        assert_eq!("42-3-7".parse::<LineId>(), Ok(id));
        for bad in ["", "42", "42-3", "42-3-7-1", "a-b-c", "-1-2", "1--2", "99999999999999999999-0-0"] {
            assert!(bad.parse::<LineId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_stay_within_one_job_and_their_limit() {
        let (_dir, logs) = store();
        fill(&logs, 3, 5);
        let two = logs.lines(2, None, 100).unwrap();
        assert_eq!(two.len(), 5);
        assert!(two.iter().all(|l| l.job_id == 2 && l.at_ms == 5));
        assert_eq!(logs.lines(2, None, 2).unwrap().len(), 2);
        assert_eq!(logs.lines(2, Some(two[3].id), 100).unwrap(), two[4..].to_vec());
        assert!(logs.lines(u64::MAX, None, 10).unwrap().is_empty());
        assert_eq!(logs.lines(1, None, usize::MAX).unwrap().len(), 5);
    }

    #[test]
    fn search_is_case_insensitive_newest_job_first_and_bounded() {
        let (_dir, logs) = store();
        fill(&logs, 50, 20);
        let far = Instant::now() + Duration::from_secs(10);
        let hits = logs.search("JOB 7 LINE 1", 100, far).unwrap();
        // "job 7 line 1" and "job 7 line 10".."19".
        assert_eq!(hits.lines.len(), 11);
        assert!(hits.complete);
        assert_eq!(hits.scanned, 1_000);
        let newest = logs.search("line 0", 3, far).unwrap();
        assert_eq!(newest.lines.iter().map(|l| l.job_id).collect::<Vec<_>>(), vec![50, 49, 48]);
        assert!(!newest.complete, "stopped at its limit");
        let late = logs.search("line", 100, Instant::now()).unwrap();
        assert!(!late.complete && late.lines.is_empty(), "stopped at its deadline");
        assert!(logs.search("", 10, far).unwrap().lines.is_empty());
    }

    #[test]
    fn a_section_round_trips_and_damage_is_an_error() {
        let (_dir, logs) = store();
        fill(&logs, 4, 3);
        let mut section = Vec::new();
        assert_eq!(logs.write_section(12, &mut section).unwrap(), 6, "jobs 1 and 2 (indices 11, 12)");
        let (_dir2, other) = store();
        fill(&other, 9, 1);
        assert_eq!(other.install_section(&mut &section[..]).unwrap(), 6);
        assert_eq!(other.len(), 6);
        assert_eq!(other.lines(2, None, 10).unwrap(), logs.lines(2, None, 10).unwrap());
        assert_eq!(other.install_section(&mut &[][..]).unwrap(), 0);
        assert!(other.is_empty());
        for cut in [1, 5, 20, section.len() - 1] {
            assert!(other.install_section(&mut &section[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = section.clone();
        bad[0] = b'X';
        assert!(other.install_section(&mut &bad[..]).is_err());
    }
}
