//! Engine Room patch: chunk files zero-filled ahead of need
//! (`Config::preallocate_chunks`).
//!
//! A background thread writes the next chunk's file in full, as zeros, and
//! syncs it, under a name that is not a chunk name. When the open chunk is
//! full the prepared file takes the new chunk's name. Records are then
//! written over blocks that already exist, so a flush's `fdatasync` has no
//! size or extent change to write. If no file is ready in time the new
//! chunk is created empty and appended to, as without this option.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::ChunkId;
use crate::Config;

/// Bytes of zeros written and synced at once.
const PIECE: usize = 256 * 1024;

/// Zero-fills a new file at `Config::prealloc_path` to the chunk size and
/// syncs it; the returned handle is positioned at the start. Gives up with
/// `Interrupted` between pieces once `stop()` says so.
pub(crate) fn prepare(
    config: &Config,
    stop: &dyn Fn() -> bool,
) -> Result<File, io::Error> {
    let path = config.prealloc_path();
    remove_if_present(&path)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    // Written and synced a piece at a time, so the zeros reach the disk as
    // a trickle between the WAL's own syncs rather than as one burst.
    let zeros = vec![0u8; PIECE];
    let mut left = config.chunk_max_size();
    while left > 0 {
        if stop() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "WAL closing",
            ));
        }
        let n = left.min(zeros.len());
        f.write_all(&zeros[..n])?;
        f.sync_data()?;
        left -= n;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// Gives a prepared file the name of chunk `chunk_id`. Never replaces an
/// existing chunk file: the new name is a hard link, which fails if taken.
pub(crate) fn install(
    config: &Config,
    f: File,
    chunk_id: ChunkId,
) -> Result<Arc<File>, io::Error> {
    let tmp = config.prealloc_path();
    std::fs::hard_link(&tmp, config.chunk_path(chunk_id))?;
    std::fs::remove_file(&tmp)?;
    // Commit the new name before any of its records can be acknowledged.
    config.sync_dir()?;
    Ok(Arc::new(f))
}

/// A preparation file left by a process that stopped is only zeros.
pub(crate) fn remove_if_present(path: &str) -> Result<(), io::Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Cuts a chunk file back to `len` bytes, its records, and makes the new
/// size durable. A file that is no longer than that is left alone.
pub(crate) fn cut_to(f: &File, len: u64) -> Result<(), io::Error> {
    if f.metadata()?.len() > len {
        f.set_len(len)?;
        f.sync_all()?;
    }
    Ok(())
}

#[derive(Default)]
struct State {
    ready: Option<File>,
    wanted: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The background thread and the file it has ready.
pub(crate) struct Preallocator {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Starts the thread, which prepares the first file at once.
    pub(crate) fn start(config: Arc<Config>) -> Result<Self, io::Error> {
        let shared = Arc::new(Shared::default());
        shared.state.lock().unwrap().wanted = true;
        let worker = shared.clone();
        let handle = std::thread::Builder::new()
            .name("chunked_wal_preallocator".to_string())
            .spawn(move || run(&worker, &config))?;
        Ok(Self {
            shared,
            handle: Some(handle),
        })
    }

    /// The prepared file under chunk `chunk_id`'s name, if one is ready.
    /// Either way the thread starts on the next one.
    pub(crate) fn take(
        &self,
        config: &Config,
        chunk_id: ChunkId,
    ) -> Result<Option<Arc<File>>, io::Error> {
        let mut state = self.shared.state.lock().unwrap();
        state.wanted = true;
        let ready = state.ready.take();
        // Renamed under the lock: the thread makes no new file meanwhile.
        let installed = ready.map(|f| install(config, f, chunk_id)).transpose();
        self.shared.changed.notify_all();
        installed
    }

    /// Stops the thread; a preparation in progress stops at its next piece.
    pub(crate) fn stop(&mut self) {
        self.shared.state.lock().unwrap().stop = true;
        self.shared.changed.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(shared: &Shared, config: &Config) {
    loop {
        {
            let mut state = shared.state.lock().unwrap();
            while !state.stop && !(state.wanted && state.ready.is_none()) {
                state = shared.changed.wait(state).unwrap();
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        let stopping = || shared.state.lock().unwrap().stop;
        match prepare(config, &stopping) {
            Ok(f) => shared.state.lock().unwrap().ready = Some(f),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            // The next chunk is then created empty and appended to.
            Err(e) => log::warn!("preparing the next WAL chunk failed: {}", e),
        }
    }
}
