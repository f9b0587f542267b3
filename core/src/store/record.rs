//! The byte layout of chunks in the arena.
//!
//! The arena is a sequence of chunks, each starting on a 4-byte boundary with a little-endian
//! `u32` *chunk word*: the chunk's length in bytes (a multiple of 4) with two flag bits in
//! the low bits. Every chunk, live or free, is walkable from the start of the arena by these
//! lengths, which is what compaction relies on.
//!
//! A live chunk (a record) is laid out as:
//!
//! ```text
//! 0   chunk word   u32  length | LIVE | HAS_EXPIRY
//! 4   key_len      u32
//! 8   value_len    u32
//! 12  version      u64
//! 20  expires_at   u64  (only with HAS_EXPIRY)
//! ..  key bytes, value bytes, zero padding to a multiple of 4
//! ```
//!
//! A free chunk has the LIVE bit clear; one of 8 bytes or more also holds, at offset 4, the
//! link to the next chunk of its free list (see `arena`). Keeping the expiry optional saves
//! 8 bytes on every key without a TTL, which is most keys.

/// The chunk is a record (clear: the chunk is free).
pub(crate) const FLAG_LIVE: u32 = 1;
/// The record carries an expiry time.
pub(crate) const FLAG_HAS_EXPIRY: u32 = 2;
const FLAG_MASK: u32 = 3;

/// Largest chunk a chunk word can describe.
pub(crate) const MAX_CHUNK_BYTES: u64 = (u32::MAX - FLAG_MASK) as u64;

const KEY_LEN_AT: usize = 4;
const VALUE_LEN_AT: usize = 8;
const VERSION_AT: usize = 12;
const EXPIRY_AT: usize = 20;
const HEADER_BYTES: usize = 20;
const EXPIRY_BYTES: usize = 8;

/// Arena bytes one record takes: its header, key and value, rounded up to 4 bytes.
///
/// This is the unit `max_total_bytes` counts in, published so that a caller can tell in
/// advance whether a write fits. `None` if the size overflows `usize`.
pub fn record_bytes(key_len: usize, value_len: usize, has_expiry: bool) -> Option<u64> {
    let header = HEADER_BYTES + if has_expiry { EXPIRY_BYTES } else { 0 };
    let len = header.checked_add(key_len)?.checked_add(value_len)?;
    let rounded = len.checked_add(3)? & !3;
    u64::try_from(rounded).ok()
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn write_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn write_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Writes a chunk word.
pub(crate) fn write_chunk_word(arena: &mut [u8], at: usize, len: usize, flags: u32) {
    debug_assert!(len % 4 == 0 && len as u64 <= MAX_CHUNK_BYTES);
    write_u32(arena, at, len as u32 | flags);
}

/// The length and flags of the chunk at `at`.
pub(crate) fn chunk_at(arena: &[u8], at: usize) -> (usize, u32) {
    let word = read_u32(arena, at);
    ((word & !FLAG_MASK) as usize, word & FLAG_MASK)
}

/// A record read in place from the arena.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

/// Reads the record at `at`, which must be a live chunk.
pub(crate) fn view(arena: &[u8], at: usize) -> RecordView<'_> {
    let (_, flags) = chunk_at(arena, at);
    let key_len = read_u32(arena, at + KEY_LEN_AT) as usize;
    let value_len = read_u32(arena, at + VALUE_LEN_AT) as usize;
    let version = read_u64(arena, at + VERSION_AT);
    let (expires_at_ms, body) = if flags & FLAG_HAS_EXPIRY != 0 {
        (
            Some(read_u64(arena, at + EXPIRY_AT)),
            at + HEADER_BYTES + EXPIRY_BYTES,
        )
    } else {
        (None, at + HEADER_BYTES)
    };
    let key = &arena[body..body + key_len];
    let value = &arena[body + key_len..body + key_len + value_len];
    RecordView {
        key,
        value,
        version,
        expires_at_ms,
    }
}

/// Just the key of the record at `at` (the hot path of a lookup: no other field is read).
pub(crate) fn key_at(arena: &[u8], at: usize) -> &[u8] {
    let (_, flags) = chunk_at(arena, at);
    let key_len = read_u32(arena, at + KEY_LEN_AT) as usize;
    let body = at
        + HEADER_BYTES
        + if flags & FLAG_HAS_EXPIRY != 0 {
            EXPIRY_BYTES
        } else {
            0
        };
    &arena[body..body + key_len]
}

/// The header fields of a record about to be written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordHeader {
    pub key_len: usize,
    pub value_len: usize,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

impl RecordHeader {
    /// Arena bytes of this record.
    pub fn chunk_len(&self) -> usize {
        // Bounded by the store limits, checked at construction.
        record_bytes(self.key_len, self.value_len, self.expires_at_ms.is_some())
            .map_or(usize::MAX, |len| len as usize)
    }
}

/// Writes a live record's header at `at` (a chunk of exactly `header.chunk_len()` bytes)
/// and returns the range of its body (key then value), for the caller to fill.
pub(crate) fn write_header(
    arena: &mut [u8],
    at: usize,
    header: &RecordHeader,
) -> core::ops::Range<usize> {
    let len = header.chunk_len();
    let mut flags = FLAG_LIVE;
    let mut body = at + HEADER_BYTES;
    if let Some(expires_at_ms) = header.expires_at_ms {
        flags |= FLAG_HAS_EXPIRY;
        write_u64(arena, at + EXPIRY_AT, expires_at_ms);
        body += EXPIRY_BYTES;
    }
    write_chunk_word(arena, at, len, flags);
    write_u32(arena, at + KEY_LEN_AT, header.key_len as u32);
    write_u32(arena, at + VALUE_LEN_AT, header.value_len as u32);
    write_u64(arena, at + VERSION_AT, header.version);
    let end = body + header.key_len + header.value_len;
    // Zero the padding so that arena contents never depend on what was there before.
    arena[end..at + len].fill(0);
    body..end
}

/// Writes a whole record: header, key and value.
pub(crate) fn write_record(
    arena: &mut [u8],
    at: usize,
    header: &RecordHeader,
    key: &[u8],
    value: &[u8],
) {
    let body = write_header(arena, at, header);
    let split = body.start + key.len();
    arena[body.start..split].copy_from_slice(key);
    arena[split..body.end].copy_from_slice(value);
}
