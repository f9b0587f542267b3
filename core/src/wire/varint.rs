//! The unsigned LEB128 varint that postcard uses for `u32`, for the tags inside [`Packed`].
//!
//! [`Packed`] writes its own inner encoding (postcard sees it as one byte string), so it needs
//! the varint by hand. Decoding is stricter than postcard: an overlong encoding (a trailing
//! `0x00` continuation byte) is refused, so every list of items has exactly one encoding and two
//! [`Packed`] values are equal exactly when their bytes are.
//!
//! [`Packed`]: super::Packed

/// The longest encoding of a `u32`: 5 groups of 7 bits.
pub(crate) const MAX_U32_BYTES: usize = 5;

/// Why a varint could not be read.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended before the last byte of the varint.
    Truncated,
    /// Overlong, or larger than `u32::MAX`.
    Invalid,
}

/// Reads a `u32` from the front of `bytes`, returning it and the number of bytes it took.
pub(crate) fn decode_u32(bytes: &[u8]) -> Result<(u32, usize), VarintError> {
    let mut value: u32 = 0;
    for index in 0..MAX_U32_BYTES {
        let byte = *bytes.get(index).ok_or(VarintError::Truncated)?;
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            let overlong = index > 0 && byte == 0;
            // The fifth byte carries only the top 4 bits of a u32.
            let overflows = index == MAX_U32_BYTES - 1 && byte > 0x0F;
            return if overlong || overflows {
                Err(VarintError::Invalid)
            } else {
                Ok((value, index + 1))
            };
        }
    }
    Err(VarintError::Invalid)
}

/// Writes `value` into `out`, returning how many bytes of `out` it used.
pub(crate) fn encode_u32(value: u32, out: &mut [u8; MAX_U32_BYTES]) -> usize {
    let mut rest = value;
    for (index, slot) in out.iter_mut().enumerate() {
        let low_bits = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            *slot = low_bits;
            return index + 1;
        }
        *slot = low_bits | 0x80;
    }
    MAX_U32_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: u32) -> ([u8; MAX_U32_BYTES], usize) {
        let mut out = [0; MAX_U32_BYTES];
        let used = encode_u32(value, &mut out);
        (out, used)
    }

    #[test]
    fn matches_postcard_and_round_trips() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX - 1, u32::MAX] {
            let (out, used) = encoded(value);
            let mut postcard_out = [0; 8];
            let postcard_bytes = postcard::to_slice(&value, &mut postcard_out).unwrap();
            assert_eq!(&out[..used], &postcard_bytes[..], "value {value}");
            assert_eq!(decode_u32(&out[..used]), Ok((value, used)));
        }
    }

    #[test]
    fn rejects_truncated_overlong_and_overflowing_input() {
        assert_eq!(decode_u32(&[]), Err(VarintError::Truncated));
        assert_eq!(decode_u32(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(decode_u32(&[0x80, 0x00]), Err(VarintError::Invalid));
        assert_eq!(
            decode_u32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10]),
            Err(VarintError::Invalid)
        );
        assert_eq!(
            decode_u32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x80]),
            Err(VarintError::Invalid)
        );
        assert_eq!(
            decode_u32(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Ok((u32::MAX, MAX_U32_BYTES))
        );
    }
}
