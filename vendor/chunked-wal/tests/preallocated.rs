//! Engine Room patch: chunks zero-filled ahead of need
//! (`Config::preallocate_chunks`).
//!
//! Records are written over a chunk file's zeros instead of appended, so a
//! chunk on disk can end in zeros: while it is open, and after a crash.
//! These tests check that closed chunks end at their last record, that a
//! zeroed or torn tail is dropped on reopen, and that real damage is not.

mod common;

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use chunked_wal::Config;
use chunked_wal::WALRecord;
use codeq::Encode;
use common::TestWal;
use common::append_action;
use common::flush;
use common::open_wal;

/// Bytes a chunk is preallocated to.
const CHUNK_SIZE: usize = 16 * 1024;
/// Records per chunk: chunks rotate by count, well before they fill, because
/// the test state machine's checkpoint (every value so far) grows.
const CHUNK_RECORDS: usize = 50;

const CRASH_DIR_ENV: &str = "PREALLOCATED_CRASH_DIR";

fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir.to_str().unwrap());
    config.chunk_max_size = Some(CHUNK_SIZE);
    config.chunk_max_records = Some(CHUNK_RECORDS);
    config.preallocate_chunks = Some(true);
    config
}

/// Chunk files in offset order (the preparation file is not one).
fn chunk_paths(dir: &Path) -> Result<Vec<PathBuf>, io::Error> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if Config::parse_chunk_file_name(&name).is_ok() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn chunk_offset(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy();
    Config::parse_chunk_file_name(&name).unwrap()
}

fn values(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:08}")).collect()
}

/// Writes `values`, syncs them, and closes the WAL cleanly.
fn write_and_close(dir: &Path, values: &[String]) -> Result<(), io::Error> {
    let (mut wal, mut sm) = open_wal(&config(dir))?;
    for v in values {
        append_action(&mut wal, &mut sm, v)?;
    }
    flush(&mut wal, true)?;
    wal.shutdown()
}

fn replay(dir: &Path) -> Result<Vec<String>, io::Error> {
    let (mut wal, sm) = open_wal(&config(dir))?;
    wal.shutdown()?;
    Ok(sm.values)
}

/// Every chunk but the last ends exactly where its successor starts.
fn assert_closed_chunks_end_at_their_records(
    dir: &Path,
) -> Result<(), io::Error> {
    let paths = chunk_paths(dir)?;
    for pair in paths.windows(2) {
        let len = std::fs::metadata(&pair[0])?.len();
        assert_eq!(
            chunk_offset(&pair[1]) - chunk_offset(&pair[0]),
            len,
            "{} keeps zeros past its last record",
            pair[0].display()
        );
    }
    Ok(())
}

#[test]
fn test_rotation_and_clean_close_leave_no_zeros() -> Result<(), io::Error> {
    let td = tempfile::tempdir()?;
    let written = values(500);
    write_and_close(td.path(), &written)?;

    let paths = chunk_paths(td.path())?;
    assert!(paths.len() >= 5, "500 values rotate through several chunks");
    assert_closed_chunks_end_at_their_records(td.path())?;
    // The last chunk too: a clean close cuts the open chunk back.
    let last = paths.last().unwrap();
    let (wal, _sm) = open_wal(&config(td.path()))?;
    drop(wal);
    assert!(
        !td.path().join("prealloc.tmp").exists(),
        "no preparation file left"
    );
    let bytes = std::fs::read(last)?;
    assert!(
        bytes[bytes.len() - 16..].iter().any(|b| *b != 0),
        "the last chunk ends at a record, not in zeros"
    );

    assert_eq!(written, replay(td.path())?);

    // Appending after a reopen goes on from the same state.
    let more = values(600);
    write_and_close(td.path(), &more[500..])?;
    assert_eq!(more, replay(td.path())?);
    assert_closed_chunks_end_at_their_records(td.path())
}

#[test]
fn test_crash_leaves_zeros_that_reopen_drops() -> Result<(), io::Error> {
    if let Ok(dir) = std::env::var(CRASH_DIR_ENV) {
        // Child: write and sync, then leave without running any destructor.
        // Pauses between chunks let the next chunk be prepared in time.
        let (mut wal, mut sm) = open_wal(&config(Path::new(&dir))).unwrap();
        for group in values(300).chunks(CHUNK_RECORDS) {
            for v in group {
                append_action(&mut wal, &mut sm, v).unwrap();
            }
            flush(&mut wal, true).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        std::process::exit(0);
    }

    let td = tempfile::tempdir()?;
    let status = Command::new(std::env::current_exe()?)
        .args(["--exact", "test_crash_leaves_zeros_that_reopen_drops"])
        .env(CRASH_DIR_ENV, td.path())
        .status()?;
    assert!(status.success(), "child exited with {status}");

    let last = chunk_paths(td.path())?.pop().unwrap();
    let bytes = std::fs::read(&last)?;
    assert_eq!(CHUNK_SIZE, bytes.len(), "the open chunk was preallocated");
    assert_eq!(Some(&0), bytes.last(), "and ends in zeros after the crash");
    assert_closed_chunks_end_at_their_records(td.path())?;

    assert_eq!(values(300), replay(td.path())?);
    assert_closed_chunks_end_at_their_records(td.path())
}

/// A clean WAL whose last chunk is grown back to full size with zeros, as a
/// crash leaves it; returns that chunk and where its records end.
fn zero_tailed_image(
    dir: &Path,
    written: &[String],
) -> Result<(PathBuf, u64), io::Error> {
    write_and_close(dir, written)?;
    let last = chunk_paths(dir)?.pop().unwrap();
    let end = std::fs::metadata(&last)?.len();
    OpenOptions::new()
        .write(true)
        .open(&last)?
        .set_len(CHUNK_SIZE as u64 * 2)?;
    Ok((last, end))
}

fn encoded_checkpoint(len: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    WALRecord::<TestWal>::Checkpoint("c".repeat(len)).encode(&mut buf).unwrap();
    buf
}

#[test]
fn test_torn_last_record_is_dropped() -> Result<(), io::Error> {
    let td = tempfile::tempdir()?;
    let written = values(10);
    let (last, end) = zero_tailed_image(td.path(), &written)?;

    // The write reached the first sectors only: up to a sector boundary
    // inside the record, zeros after.
    let record = encoded_checkpoint(3000);
    assert!(end + record.len() as u64 <= CHUNK_SIZE as u64 * 2);
    let torn_len = ((end + 1024).div_ceil(512) * 512 - end) as usize;
    assert!(torn_len < record.len());
    let f = OpenOptions::new().write(true).open(&last)?;
    f.write_all_at(&record[..torn_len], end)?;

    assert_eq!(written, replay(td.path())?);
    assert_eq!(
        end,
        std::fs::metadata(&last)?.len(),
        "cut back to its last whole record"
    );
    Ok(())
}

#[test]
fn test_torn_record_with_a_hole_and_later_sectors_is_dropped()
-> Result<(), io::Error> {
    let td = tempfile::tempdir()?;
    let written = values(10);
    let (last, end) = zero_tailed_image(td.path(), &written)?;

    // Unsynced writes land in any order: a whole record and one after it
    // were written, but one sector inside the first never reached the disk.
    let record = encoded_checkpoint(3000);
    let mut after = Vec::new();
    WALRecord::<TestWal>::Checkpoint("after".to_string()).encode(&mut after)?;
    let f = OpenOptions::new().write(true).open(&last)?;
    f.write_all_at(&record, end)?;
    f.write_all_at(&after, end + record.len() as u64)?;
    let hole = (end + 1024).div_ceil(512) * 512;
    assert!(
        hole + 512 <= end + record.len() as u64,
        "the hole is inside the record"
    );
    f.write_all_at(&[0u8; 512], hole)?;

    assert_eq!(written, replay(td.path())?);
    assert_eq!(
        end,
        std::fs::metadata(&last)?.len(),
        "cut back to its last whole record"
    );
    Ok(())
}

#[test]
fn test_last_chunk_with_torn_first_record_is_removed() -> Result<(), io::Error>
{
    let td = tempfile::tempdir()?;
    let written = values(120);
    write_and_close(td.path(), &written)?;
    let last = chunk_paths(td.path())?.pop().unwrap();

    // A chunk just rotated to: its first sector (most of its checkpoint
    // record) never landed, the rest of it did.
    let f = OpenOptions::new().write(true).open(&last)?;
    assert!(f.metadata()?.len() > 1024, "the first record spans sectors");
    f.write_all_at(&[0u8; 512], 0)?;
    f.set_len(CHUNK_SIZE as u64)?;

    let replayed = replay(td.path())?;
    assert!(!replayed.is_empty() && replayed.len() < written.len());
    assert_eq!(
        written[..replayed.len()],
        replayed[..],
        "the earlier chunks replay"
    );
    // The removed chunk's offset starts a new chunk, and writing goes on.
    write_and_close(td.path(), &["next".to_string()])?;
    assert_eq!(Some(&"next".to_string()), replay(td.path())?.last());
    Ok(())
}

#[test]
fn test_preallocation_without_truncation_is_refused() {
    let td = tempfile::tempdir().unwrap();
    let mut config = config(td.path());
    config.truncate_incomplete_record = Some(false);
    let err =
        open_wal(&config).expect_err("a crash could never be recovered from");
    assert_eq!(io::ErrorKind::InvalidInput, err.kind());
}

#[test]
fn test_damaged_last_record_still_fails_the_open() -> Result<(), io::Error> {
    let td = tempfile::tempdir()?;
    let (last, end) = zero_tailed_image(td.path(), &values(10))?;

    // Every byte of the record is there, one of them wrong: damage, not a
    // tear, so recovery must not silently drop it.
    let mut record = encoded_checkpoint(3000);
    record[1500] ^= 0x01;
    let f = OpenOptions::new().write(true).open(&last)?;
    f.write_all_at(&record, end)?;

    let err =
        replay(td.path()).expect_err("a damaged record must fail the open");
    assert_eq!(io::ErrorKind::InvalidData, err.kind(), "{err}");
    Ok(())
}

#[test]
fn test_zeroed_tail_is_dropped_and_writing_goes_on() -> Result<(), io::Error> {
    let td = tempfile::tempdir()?;
    let written = values(10);
    let (_last, _end) = zero_tailed_image(td.path(), &written)?;

    assert_eq!(written, replay(td.path())?);
    let more = values(20);
    write_and_close(td.path(), &more[10..])?;
    assert_eq!(more, replay(td.path())?);
    assert_closed_chunks_end_at_their_records(td.path())?;
    Ok(())
}
