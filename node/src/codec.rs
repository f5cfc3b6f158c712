//! The binary encoding of internal structs (Raft messages, commands, snapshots): postcard
//! behind a one-byte format version, so the format is ours and can evolve explicitly.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Current encoding version. Bump it (and keep a decoder for the old one) when the layout of
/// any encoded struct changes.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding failed: {0}")]
    Encode(postcard::Error),
    #[error("empty message")]
    Empty,
    #[error("unknown format version {0} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion(u8),
    #[error("decoding failed: {0}")]
    Decode(postcard::Error),
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_sized(value, 0)
}

/// [`encode`] into a buffer made for about `len_hint` bytes: one allocation where growing an
/// empty one would take a copy for every doubling.
pub fn encode_sized<T: Serialize + ?Sized>(value: &T, len_hint: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(1 + len_hint);
    out.push(FORMAT_VERSION);
    postcard::to_io(value, &mut out).map_err(CodecError::Encode)?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    postcard::from_bytes(body).map_err(CodecError::Decode)
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    #[test]
    fn round_trip_and_version_check() {
        let cmd = Command::SetClusterId { id: "c".into() };
        let bytes = encode(&cmd).unwrap();
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(decode::<Command>(&wrong), Err(CodecError::UnknownVersion(9))));
        assert!(matches!(decode::<Command>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Command>(&bytes[..bytes.len() - 1]).is_err());
    }
}
