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
    }
}
