//! The snapshot byte format, version 1. All integers are little-endian.
//!
//! ```text
//! header   magic "MEMDISNP" (8) | format_version u16 | flags u16 | reserved u32 = 0
//!          | term u64 | log_index u64 | last_version u64 | entry_count u64        (48 bytes)
//! entry    flags u8 (bit 0: has expiry; others 0) | key_len u32 | value_len u32
//!          | version u64 | expires_at_ms u64 (only with the flag) | key | value
//! end      0xFF (fuzzy snapshots only: the entry count is not known in advance)
//! trailer  magic "MEMDIEND" (8) | crc32 u32 over every byte before it           (12 bytes)
//! ```
//!
//! Header flag bit 0 marks a **fuzzy** snapshot: one taken while the store kept changing
//! (see [`SnapshotEncoder::new_fuzzy`](super::SnapshotEncoder::new_fuzzy)). Its entries are
//! each a key's state at some moment during the snapshot, a key may appear more than once
//! (the later copy wins), the entry count is 0 and the entries end with the `0xFF` byte, and
//! `last_version` and `log_index` are the store's at the start. Replaying the log entries
//! after `log_index` on it gives exactly the state of the store that took it.
//!
//! Fixed-width fields keep the decoder a small state machine with no varint edge cases.
//! The entry count in the header tells the decoder where the trailer starts, so a cut
//! anywhere is noticed (the trailer is missing or its magic is wrong), and the CRC-32
//! (IEEE) over everything catches every single-bit flip and all but 2^-32 of other damage.

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"MEMDISNP";
/// First bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"MEMDIEND";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

pub(crate) const HEADER_BYTES: usize = 48;
pub(crate) const TRAILER_BYTES: usize = 12;
pub(crate) const ENTRY_FIXED_BYTES: usize = 17;
pub(crate) const EXPIRY_BYTES: usize = 8;
pub(crate) const ENTRY_HAS_EXPIRY: u8 = 1;
/// Ends the entries of a fuzzy snapshot (never a valid entry flags byte).
pub(crate) const END_OF_ENTRIES: u8 = 0xFF;
/// Header flag: a fuzzy snapshot.
pub(crate) const HEADER_FUZZY: u16 = 1;

/// What a snapshot says about the state it captures, besides the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// The term of the last log entry the snapshot includes (0 outside a cluster).
    pub term: u64,
    /// The index of the last log entry the snapshot includes (0 outside a cluster).
    pub log_index: u64,
    /// The store's version counter, so versions keep rising after a load.
    pub last_version: u64,
    /// Entries that follow the header (0 in a fuzzy snapshot, which ends them with a
    /// marker instead).
    pub entry_count: u64,
    /// Whether the snapshot was taken while the store changed (see the module docs).
    pub fuzzy: bool,
}

pub(crate) fn encode_header(meta: &SnapshotMeta) -> [u8; HEADER_BYTES] {
    let mut out = [0; HEADER_BYTES];
    out[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if meta.fuzzy { HEADER_FUZZY } else { 0 };
    out[10..12].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&meta.term.to_le_bytes());
    out[24..32].copy_from_slice(&meta.log_index.to_le_bytes());
    out[32..40].copy_from_slice(&meta.last_version.to_le_bytes());
    out[40..48].copy_from_slice(&meta.entry_count.to_le_bytes());
    out
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The fixed part of one entry, as encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHead {
    pub key_len: u32,
    pub value_len: u32,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

impl EntryHead {
    /// The head of a store entry.
    pub fn of(entry: &crate::store::Entry<'_>) -> Self {
        Self {
            key_len: entry.key.len() as u32,
            value_len: entry.value.len() as u32,
            version: entry.version,
            expires_at_ms: entry.expires_at_ms,
        }
    }

    /// Bytes of the encoded head: 17, or 25 with an expiry.
    pub fn encoded_len(flags: u8) -> usize {
        ENTRY_FIXED_BYTES
            + if flags & ENTRY_HAS_EXPIRY != 0 {
                EXPIRY_BYTES
            } else {
                0
            }
    }

    /// Writes the head into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8; ENTRY_FIXED_BYTES + EXPIRY_BYTES]) -> usize {
        out[0] = if self.expires_at_ms.is_some() {
            ENTRY_HAS_EXPIRY
        } else {
            0
        };
        out[1..5].copy_from_slice(&self.key_len.to_le_bytes());
        out[5..9].copy_from_slice(&self.value_len.to_le_bytes());
        out[9..17].copy_from_slice(&self.version.to_le_bytes());
        match self.expires_at_ms {
            Some(at) => {
                out[17..25].copy_from_slice(&at.to_le_bytes());
                ENTRY_FIXED_BYTES + EXPIRY_BYTES
            }
            None => ENTRY_FIXED_BYTES,
        }
    }

    /// Reads a head of [`EntryHead::encoded_len`] bytes whose flags were checked.
    pub fn decode(bytes: &[u8]) -> Self {
        let expires_at_ms = (bytes[0] & ENTRY_HAS_EXPIRY != 0).then(|| u64_at(bytes, 17));
        Self {
            key_len: u32_at(bytes, 1),
            value_len: u32_at(bytes, 5),
            version: u64_at(bytes, 9),
            expires_at_ms,
        }
    }
}
