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

/// Encode into a buffer of `capacity` bytes to start with: for a value whose
/// size is known roughly (a snapshot), it avoids growing a huge buffer by
/// doubling, which briefly holds up to twice the final size.
pub fn encode_with_capacity<T: Serialize + ?Sized>(value: &T, capacity: usize) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::with_capacity(capacity);
    bincode::serde::encode_into_std_write(value, &mut buf, config()).map_err(|e| CodecError(e.to_string()))?;
    Ok(buf)
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
        assert_eq!(encode_with_capacity(&v, 4).unwrap(), bytes);
    }
}
