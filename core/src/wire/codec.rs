//! Encoding and decoding one message with postcard, into and out of caller buffers.
//!
//! Thin wrappers, so that the rest of memdi does not depend on postcard's error type and so that
//! decoding is strict: a frame holds exactly one message, and bytes left after it mean the
//! sender and receiver disagree about the format.

use core::fmt;

use serde::{Deserialize, Serialize};

/// Why a message could not be encoded.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is too small for the message (or, for a frame, its header).
    BufferFull,
    /// The value uses a serde feature postcard cannot encode; never happens for the messages
    /// of this module.
    Unsupported,
}

impl EncodeError {
    /// Private on purpose: postcard's error type stays out of memdi's public API.
    fn from_postcard(error: postcard::Error) -> Self {
        match error {
            postcard::Error::SerializeBufferFull => Self::BufferFull,
            _ => Self::Unsupported,
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferFull => f.write_str("output buffer too small for the message"),
            Self::Unsupported => f.write_str("value cannot be encoded with postcard"),
        }
    }
}

/// Why bytes could not be decoded as a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The bytes end in the middle of the message.
    Truncated,
    /// The bytes are not a valid encoding (unknown variant, bad varint, bad UTF-8, a malformed
    /// [`Packed`](super::Packed) list, ...).
    Malformed,
    /// A whole message was decoded but bytes were left after it.
    TrailingBytes {
        /// How many bytes were left.
        count: usize,
    },
}

impl DecodeError {
    /// Private on purpose: postcard's error type stays out of memdi's public API.
    fn from_postcard(error: postcard::Error) -> Self {
        match error {
            postcard::Error::DeserializeUnexpectedEnd => Self::Truncated,
            _ => Self::Malformed,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("message truncated"),
            Self::Malformed => f.write_str("message malformed"),
            Self::TrailingBytes { count } => write!(f, "{count} bytes after the message"),
        }
    }
}

/// Encodes `message` at the front of `out`, returning the part of `out` that holds it.
pub fn encode<'o, T: Serialize + ?Sized>(
    message: &T,
    out: &'o mut [u8],
) -> Result<&'o mut [u8], EncodeError> {
    postcard::to_slice(message, out).map_err(EncodeError::from_postcard)
}

/// Decodes exactly one message from `bytes`, borrowing keys and values from them.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (message, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::from_postcard)?;
    if rest.is_empty() {
        Ok(message)
    } else {
        Err(DecodeError::TrailingBytes { count: rest.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_trailing_bytes() {
        let mut out = [0u8; 8];
        let encoded = encode(&300u32, &mut out).unwrap();
        assert_eq!(encoded, &[0xAC, 0x02]);
        assert_eq!(decode::<u32>(&[0xAC, 0x02]), Ok(300));
        assert_eq!(
            decode::<u32>(&[0xAC, 0x02, 0x00]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
        assert_eq!(decode::<u32>(&[0xAC]), Err(DecodeError::Truncated));
        assert_eq!(decode::<bool>(&[2]), Err(DecodeError::Malformed));
    }

    #[test]
    fn a_small_buffer_is_reported() {
        let mut out = [0u8; 1];
        assert_eq!(encode(&300u32, &mut out), Err(EncodeError::BufferFull));
    }
}
