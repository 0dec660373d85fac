//! The one place that decides how stored and wire data is encoded (bincode 2
//! over serde). Swap the format here and nowhere else.

use serde::{de::DeserializeOwned, Serialize};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Most bytes one decode of wire or log data may claim. bincode counts what
/// it decodes at its in-memory size (a one-byte varint `u64` claims 8), and
/// claims a byte string's length before it allocates it, so a crafted length
/// prefix fails here instead of asking the allocator for exabytes (which
/// aborts the process). The largest legitimate message is a 16 MiB `/raft`
/// body, whose decoded size stays well below this.
pub const WIRE_LIMIT: usize = 128 << 20;

/// Most bytes the decode of a whole replicated state (a snapshot) may claim:
/// larger than [`WIRE_LIMIT`], since a snapshot of a big fleet is tens to
/// hundreds of MB, but still a bound.
pub const SNAPSHOT_LIMIT: usize = 2 << 30;

/// The limits only bound decoding: encoding uses [`config`] and its bytes
/// are the same with or without them (`tests/golden.rs`).
fn wire_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<WIRE_LIMIT>,
> {
    config().with_limit::<WIRE_LIMIT>()
}

fn snapshot_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<SNAPSHOT_LIMIT>,
> {
    config().with_limit::<SNAPSHOT_LIMIT>()
}

/// Encoding or decoding failed; carries bincode's explanation.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(pub String);

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError(e.to_string()))
}

/// Encode into `writer` (a file, for a snapshot of tens of MB that should
/// never sit in memory whole).
pub fn encode_into_writer<T: Serialize + ?Sized, W: std::io::Write>(
    value: &T,
    writer: &mut W,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, writer, config()).map(|_| ()).map_err(|e| CodecError(e.to_string()))
}

/// Write `value` to `w` as a 4-byte big-endian length and its encoding, so a
/// reader of a stream takes exactly its bytes back ([`read_framed`]). Returns
/// the bytes written. Used for the records of the Raft log's WAL.
pub fn write_framed<T: Serialize + ?Sized, W: std::io::Write>(value: &T, mut w: W) -> std::io::Result<usize> {
    let bytes = encode(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("codec: value over 4 GiB"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)?;
    Ok(4 + bytes.len())
}

/// Read back one value written by [`write_framed`].
/// A damaged length cannot make it allocate more than the input holds.
pub fn read_framed<T: DeserializeOwned, R: std::io::Read>(mut r: R) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u64::from(u32::from_be_bytes(len));
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut r.take(len), &mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    decode(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decode a replicated state from the front of `bytes` (claiming at most
/// [`SNAPSHOT_LIMIT`]); returns it and the bytes it took (for layouts that
/// put one encoding after another).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, snapshot_config()).map_err(|e| CodecError(e.to_string()))
}

/// Decode wire or log data, claiming at most [`WIRE_LIMIT`] bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, wire_config()).map_err(|e| CodecError(e.to_string()))?;
    Ok(value)
}

/// Decode a whole replicated state, claiming at most [`SNAPSHOT_LIMIT`] bytes.
pub fn decode_snapshot_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) =
        bincode::serde::decode_from_slice(bytes, snapshot_config()).map_err(|e| CodecError(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let v: Vec<(u64, String)> = vec![(1, "a".into()), (u64::MAX, "b".into())];
        let bytes = encode(&v).unwrap();
        assert_eq!(decode::<Vec<(u64, String)>>(&bytes).unwrap(), v);
        assert!(decode::<Vec<(u64, String)>>(&[0xff, 0xff, 0xff]).is_err());
        let mut written = Vec::new();
        encode_into_writer(&v, &mut written).unwrap();
        assert_eq!(written, bytes);

        let mut framed = Vec::new();
        let n = write_framed(&v, &mut framed).unwrap();
        assert_eq!(n, framed.len());
        framed.extend_from_slice(b"next record");
        let mut reader = framed.as_slice();
        assert_eq!(read_framed::<Vec<(u64, String)>, _>(&mut reader).unwrap(), v);
        assert_eq!(reader, b"next record", "reads exactly its own bytes");
        assert!(read_framed::<Vec<(u64, String)>, _>(&framed[..framed.len() - 20]).is_err(), "short input");
    }

    /// A varint length prefix claiming `len` elements, as bincode writes it.
    fn length_prefix(len: u64) -> Vec<u8> {
        let mut b = vec![253u8];
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    #[test]
    fn huge_length_prefixes_fail_without_allocating() {
        // Each would ask for terabytes to exabytes before reading a byte.
        for len in [u64::MAX, 1 << 40, (WIRE_LIMIT as u64) + 1] {
            let mut bytes = length_prefix(len);
            bytes.extend_from_slice(b"short");
            let e = decode::<String>(&bytes).unwrap_err();
            assert!(e.0.contains("limit") || e.0.contains("Limit"), "{len}: {e}");
            assert!(decode::<Vec<u8>>(&bytes).is_err());
            assert!(decode::<Vec<(u64, String)>>(&bytes).is_err());
            assert!(decode_snapshot_body::<Vec<u8>>(&bytes).is_err());
        }
        // Between the two limits: refused on the wire, allowed (and then
        // short of input) for a snapshot.
        let mut bytes = length_prefix(WIRE_LIMIT as u64 * 2);
        bytes.extend_from_slice(b"short");
        assert!(decode::<String>(&bytes).unwrap_err().0.to_lowercase().contains("limit"));
        let e = decode_snapshot_body::<Vec<u8>>(&bytes).unwrap_err();
        assert!(!e.0.to_lowercase().contains("limit"), "{e}");
    }

    #[test]
    fn truncated_and_random_input_is_an_error_not_a_panic() {
        let v: Vec<(u64, String, Vec<u8>)> =
            (0..50).map(|i| (i, format!("w-{i}"), vec![i as u8; i as usize])).collect();
        let bytes = encode(&v).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Vec<(u64, String, Vec<u8>)>>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<Vec<(u64, String, Vec<u8>)>>(&junk);
            let _ = decode_snapshot_body::<Vec<(u64, String, Vec<u8>)>>(&junk);
        }
    }

    #[test]
    fn the_limits_leave_encoding_unchanged() {
        let v: Vec<(u64, String)> = vec![(7, "x".repeat(300)), (u64::MAX, String::new())];
        let plain = bincode::serde::encode_to_vec(&v, bincode::config::standard()).unwrap();
        assert_eq!(encode(&v).unwrap(), plain);
        assert_eq!(decode::<Vec<(u64, String)>>(&plain).unwrap(), v);
        assert_eq!(decode_snapshot_body::<Vec<(u64, String)>>(&plain).unwrap(), v);
    }
}
