//! The one place that decides how stored and wire data is encoded (bincode 2
//! over serde). Swap the format here and nowhere else.

use serde::{de::DeserializeOwned, Serialize};

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
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

/// Decode a value from the front of `bytes`; returns it and the bytes it
/// took (for layouts that put one encoding after another).
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError(e.to_string()))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError(e.to_string()))?;
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
}
