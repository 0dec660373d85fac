//! The snapshot section of a sled tree held beside the state (job logs, farm
//! blobs): a 4-byte magic, then per entry a 1 tag, its key and its value
//! (a u32 length before it), then a 0. Keys are of a fixed length, or carry
//! a u16 length before them. The stores choose which entries a snapshot
//! carries; the framing, its checks and the batched install are here.

use std::io::{self, Read, Write};

/// How a section writes its keys.
#[derive(Clone, Copy)]
pub(crate) enum KeyLen {
    Fixed(usize),
    /// A u16 length first (a key longer than that is never written).
    Prefixed,
}

/// One store's section format.
pub(crate) struct Section {
    pub magic: [u8; 4],
    /// Named in errors: `"job log section"`.
    pub what: &'static str,
    pub key: KeyLen,
    /// The shortest value a store writes (its fixed header).
    pub min_value: usize,
}

impl Section {
    /// Write the entries of `tree` that `keep` takes; returns how many.
    pub fn write(&self, tree: &sled::Tree, keep: impl Fn(&[u8], &[u8]) -> bool, w: &mut impl Write) -> io::Result<u64> {
        w.write_all(&self.magic)?;
        let mut n = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv.map_err(io::Error::other)?;
            let fits = match self.key {
                KeyLen::Fixed(len) => k.len() == len,
                KeyLen::Prefixed => k.len() <= u16::MAX as usize,
            };
            if !fits || !keep(&k, &v) {
                continue;
            }
            w.write_all(&[1])?;
            if let KeyLen::Prefixed = self.key {
                w.write_all(&(k.len() as u16).to_be_bytes())?;
            }
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_be_bytes())?;
            w.write_all(&v)?;
            n += 1;
        }
        w.write_all(&[0])?;
        Ok(n)
    }

    /// Replace all of `tree` with the section at the front of `section`
    /// (empty input: nothing, as in a snapshot written before the store
    /// existed), leaving what follows it; returns how many entries.
    pub fn install(&self, tree: &sled::Tree, section: &mut &[u8]) -> io::Result<u64> {
        tree.clear().map_err(io::Error::other)?;
        if section.is_empty() {
            return Ok(0);
        }
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", self.what));
        let mut magic = [0u8; 4];
        section.read_exact(&mut magic)?;
        if magic != self.magic {
            return Err(bad("bad magic"));
        }
        let mut n = 0u64;
        let mut batch = sled::Batch::default();
        loop {
            let mut tag = [0u8; 1];
            section.read_exact(&mut tag)?;
            if tag[0] == 0 {
                break;
            }
            let klen = match self.key {
                KeyLen::Fixed(len) => len,
                KeyLen::Prefixed => {
                    let mut klen = [0u8; 2];
                    section.read_exact(&mut klen)?;
                    u16::from_be_bytes(klen) as usize
                }
            };
            if klen == 0 || klen > section.len() {
                return Err(bad("bad key length"));
            }
            let (k, rest) = section.split_at(klen);
            *section = rest;
            let mut vlen = [0u8; 4];
            section.read_exact(&mut vlen)?;
            let vlen = u32::from_be_bytes(vlen) as usize;
            if vlen < self.min_value || vlen > section.len() {
                return Err(bad("bad value length"));
            }
            let (v, rest) = section.split_at(vlen);
            batch.insert(k, v);
            *section = rest;
            n += 1;
            if n.is_multiple_of(10_000) {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(io::Error::other)?;
            }
        }
        tree.apply_batch(batch).map_err(io::Error::other)?;
        Ok(n)
    }
}
