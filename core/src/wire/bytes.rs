//! Byte-string fields serialized as one run of bytes.
//!
//! serde serializes a plain `&[u8]` field as a sequence, one `u8` at a time; postcard writes
//! the same bytes either way (a varint length, then the bytes), but the sequence path costs a
//! call per byte on every key and value a node encodes: about 3% of a server's CPU under a
//! pipelined write load. Fields marked `#[serde(serialize_with = "...::serialize")]` go
//! through `serialize_bytes` instead, so the encoding is unchanged and decoding (already
//! `deserialize_bytes`, borrowing from the frame) too.

use serde::Serializer;

/// Serializes `bytes` with [`Serializer::serialize_bytes`]: for postcard, the length as a
/// varint and then the bytes, exactly what the derived sequence wrote.
pub(crate) fn serialize<S: Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    /// A field the way serde derives it, as a sequence of `u8`.
    #[derive(Serialize)]
    struct AsSequence<'a> {
        tag: u8,
        bytes: &'a [u8],
    }

    /// The same field through [`super::serialize`].
    #[derive(Serialize)]
    struct AsBytes<'a> {
        tag: u8,
        #[serde(serialize_with = "super::serialize")]
        bytes: &'a [u8],
    }

    #[test]
    fn bytes_encode_exactly_as_the_derived_sequence_did() {
        let long = [0xA5u8; 300]; // a two-byte varint length
        for bytes in [&b""[..], b"k", &long[..]] {
            let mut sequence = [0u8; 512];
            let mut run = [0u8; 512];
            let sequence =
                postcard::to_slice(&AsSequence { tag: 7, bytes }, &mut sequence).expect("fits");
            let run = postcard::to_slice(&AsBytes { tag: 7, bytes }, &mut run).expect("fits");
            assert_eq!(sequence, run);
        }
    }
}
