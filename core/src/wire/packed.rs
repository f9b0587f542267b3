//! [`Packed`]: many optional byte strings carried in one borrowed byte string.
//!
//! MGET, MSET and SCAN carry a variable number of keys and values, but the core cannot allocate
//! a `Vec` to hold them, and postcard cannot deserialize a sequence of unknown length into a
//! borrowed slice. So the list travels as one byte string with its own inner encoding, for each
//! item a varint `u32` tag (0 = `None`, n = `Some` of n - 1 bytes) followed by the item's bytes,
//! and is read in place.
//!
//! The encoding is validated completely when a [`Packed`] is made, so iterating it afterwards
//! cannot fail, and a server can reject a malformed request before acting on any of its items.

use core::fmt;
use core::iter::FusedIterator;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::varint::{self, VarintError, MAX_U32_BYTES};

/// Why bytes are not a valid [`Packed`] encoding.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PackedError {
    /// A tag, or the bytes of an item, run past the end of the encoding.
    Truncated,
    /// A tag is not a canonical varint `u32` (overlong, or too large).
    BadTag,
}

impl fmt::Display for PackedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("packed list truncated"),
            Self::BadTag => f.write_str("packed list has a malformed tag"),
        }
    }
}

/// Why [`PackedWriter::push`] could not add an item. Nothing was written in either case.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PackedPushError {
    /// The item does not fit in the rest of the buffer; the caller may finish with the items
    /// that did fit (this is how a SCAN page is cut to the frame size).
    BufferFull,
    /// The item is longer than `u32::MAX - 1` bytes, which the tag cannot express.
    ItemTooLarge,
}

impl fmt::Display for PackedPushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferFull => f.write_str("packed list buffer full"),
            Self::ItemTooLarge => f.write_str("packed item longer than u32::MAX - 1 bytes"),
        }
    }
}

/// A validated, borrowed list of optional byte strings.
///
/// It exists so that multi-key messages stay zero-copy and allocation-free: the items are read
/// straight out of the received frame. Make one with [`Packed::from_encoded`], a
/// [`PackedWriter`], or by deserializing; all three guarantee the encoding is valid. Because the
/// encoding is canonical, two values are equal exactly when they hold the same items.
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash)]
pub struct Packed<'a> {
    encoded: &'a [u8],
    len: usize,
}

impl<'a> Packed<'a> {
    /// Validates `encoded` and counts its items, so that later iteration cannot fail.
    pub fn from_encoded(encoded: &'a [u8]) -> Result<Self, PackedError> {
        let mut rest = encoded;
        let mut len = 0usize;
        while !rest.is_empty() {
            let (_, after) = read_item(rest)?;
            rest = after;
            // Every item takes at least one byte, so this cannot exceed `encoded.len()`.
            len += 1;
        }
        Ok(Self { encoded, len })
    }

    /// The inner encoding, for forwarding or storing the list without decoding it.
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// The number of items, counted during validation so that it is free to ask.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items (an MGET of no keys, the last page of a SCAN).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The items in order, borrowed from the same buffer as the list.
    pub fn iter(&self) -> PackedIter<'a> {
        PackedIter {
            rest: self.encoded,
            remaining: self.len,
        }
    }
}

impl fmt::Debug for Packed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Packed<'a> {
    type Item = Option<&'a [u8]>;
    type IntoIter = PackedIter<'a>;

    fn into_iter(self) -> PackedIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Packed<'a> {
    type Item = Option<&'a [u8]>;
    type IntoIter = PackedIter<'a>;

    fn into_iter(self) -> PackedIter<'a> {
        self.iter()
    }
}

impl Serialize for Packed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.encoded)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Packed<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let encoded: &'de [u8] = Deserialize::deserialize(deserializer)?;
        Packed::from_encoded(encoded).map_err(de::Error::custom)
    }
}

/// Iterator over the items of a [`Packed`], yielded by [`Packed::iter`].
///
/// A named type (rather than `impl Iterator`) so that it can be stored, cloned and asked for its
/// exact length.
#[derive(Clone, Debug)]
pub struct PackedIter<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for PackedIter<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match read_item(self.rest) {
            Ok((item, rest)) => {
                self.rest = rest;
                self.remaining -= 1;
                Some(item)
            }
            // Unreachable for a validated list; ending the iteration keeps it panic-free.
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for PackedIter<'_> {}

impl FusedIterator for PackedIter<'_> {}

/// Builds a [`Packed`] list in a caller-owned buffer, so replies like MGET need no allocation.
#[derive(Debug)]
pub struct PackedWriter<'b> {
    buffer: &'b mut [u8],
    written_bytes: usize,
    len: usize,
}

impl<'b> PackedWriter<'b> {
    /// Starts an empty list at the front of `buffer`; its length bounds the encoded list.
    pub fn new(buffer: &'b mut [u8]) -> Self {
        Self {
            buffer,
            written_bytes: 0,
            len: 0,
        }
    }

    /// Appends one item. On error nothing is written, so the list built so far stays valid.
    pub fn push(&mut self, item: Option<&[u8]>) -> Result<(), PackedPushError> {
        match item {
            None => self.push_tag(0, 0).map(|_| ()),
            Some(bytes) => self.push_with(bytes.len(), |out| out.copy_from_slice(bytes)),
        }
    }

    /// Appends one item of `len` bytes that `fill` writes in place, so that an item made of
    /// several parts (a log entry's term and command) needs no buffer of its own. On error
    /// nothing is written.
    pub fn push_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), PackedPushError> {
        let tag = u32::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(1))
            .ok_or(PackedPushError::ItemTooLarge)?;
        let start = self.push_tag(tag, len)?;
        fill(&mut self.buffer[start..start + len]);
        Ok(())
    }

    /// Writes an item's tag and reserves `len` bytes after it; returns where they start.
    fn push_tag(&mut self, tag: u32, len: usize) -> Result<usize, PackedPushError> {
        let mut tag_bytes = [0; MAX_U32_BYTES];
        let tag_len = varint::encode_u32(tag, &mut tag_bytes);
        let tag_end = self.written_bytes + tag_len;
        let item_end = tag_end
            .checked_add(len)
            .filter(|&end| end <= self.buffer.len())
            .ok_or(PackedPushError::BufferFull)?;
        self.buffer[self.written_bytes..tag_end].copy_from_slice(&tag_bytes[..tag_len]);
        self.written_bytes = item_end;
        self.len += 1;
        Ok(tag_end)
    }

    /// Ends the list, giving it the writer's borrow of the buffer.
    pub fn finish(self) -> Packed<'b> {
        let buffer: &'b [u8] = self.buffer;
        Packed {
            encoded: &buffer[..self.written_bytes],
            len: self.len,
        }
    }
}

/// Reads one item from the front of `bytes`, returning it and the bytes after it.
fn read_item(bytes: &[u8]) -> Result<(Option<&[u8]>, &[u8]), PackedError> {
    let (tag, tag_len) = varint::decode_u32(bytes).map_err(|error| match error {
        VarintError::Truncated => PackedError::Truncated,
        VarintError::Invalid => PackedError::BadTag,
    })?;
    let rest = &bytes[tag_len..];
    let Some(item_len) = tag.checked_sub(1) else {
        return Ok((None, rest));
    };
    let item_len = usize::try_from(item_len).map_err(|_| PackedError::Truncated)?;
    if item_len > rest.len() {
        return Err(PackedError::Truncated);
    }
    let (item, after) = rest.split_at(item_len);
    Ok((Some(item), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_documented_encoding() {
        let mut buffer = [0; 16];
        let mut writer = PackedWriter::new(&mut buffer);
        writer.push(Some(b"ab")).unwrap();
        writer.push(None).unwrap();
        writer.push(Some(b"")).unwrap();
        let packed = writer.finish();
        assert_eq!(packed.encoded(), &[3, b'a', b'b', 0, 1]);
        assert_eq!(packed.len(), 3);
        let items: std::vec::Vec<_> = packed.iter().collect();
        assert_eq!(items, [Some(&b"ab"[..]), None, Some(&b""[..])]);
    }

    #[test]
    fn a_full_buffer_leaves_the_list_intact() {
        let mut buffer = [0; 4];
        let mut writer = PackedWriter::new(&mut buffer);
        writer.push(Some(b"ab")).unwrap();
        assert_eq!(writer.push(Some(b"c")), Err(PackedPushError::BufferFull));
        writer.push(None).unwrap();
        assert_eq!(writer.push(None), Err(PackedPushError::BufferFull));
        let packed = writer.finish();
        assert_eq!(packed.encoded(), &[3, b'a', b'b', 0]);
        assert_eq!(packed.len(), 2);
    }

    #[test]
    fn a_long_item_uses_a_multi_byte_tag() {
        let item = [7u8; 200];
        let mut buffer = [0; 203];
        let mut writer = PackedWriter::new(&mut buffer);
        writer.push(Some(&item)).unwrap();
        let packed = writer.finish();
        // 201 = 0b1_1100_1001 -> 0xC9 0x01
        assert_eq!(&packed.encoded()[..2], &[0xC9, 0x01]);
        assert_eq!(packed.iter().next(), Some(Some(&item[..])));
    }

    #[test]
    fn validation_rejects_bad_encodings() {
        assert_eq!(Packed::from_encoded(&[2]), Err(PackedError::Truncated));
        assert_eq!(
            Packed::from_encoded(&[0, 0x80]),
            Err(PackedError::Truncated)
        );
        assert_eq!(
            Packed::from_encoded(&[0x80, 0x00]),
            Err(PackedError::BadTag)
        );
        assert_eq!(
            Packed::from_encoded(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),
            Err(PackedError::Truncated)
        );
        assert_eq!(Packed::from_encoded(&[]).map(|p| p.len()), Ok(0));
    }

    #[test]
    fn deserializing_validates() {
        // postcard byte string of length 1 containing the truncated tag 0x05.
        let bad = [1, 5];
        assert!(postcard::from_bytes::<Packed<'_>>(&bad).is_err());
        let good = [2, 2, b'x'];
        let packed: Packed<'_> = postcard::from_bytes(&good).unwrap();
        assert_eq!(
            packed.iter().collect::<std::vec::Vec<_>>(),
            [Some(&b"x"[..])]
        );
    }
}
