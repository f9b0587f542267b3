//! Streaming a store out as snapshot bytes.

use super::format::{
    encode_header, EntryHead, SnapshotMeta, ENTRY_FIXED_BYTES, EXPIRY_BYTES, HEADER_BYTES,
    TRAILER_MAGIC,
};
use crate::store::Store;

/// Why encoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEncodeError {
    /// The store was written to between two calls of [`SnapshotEncoder::fill`]: the
    /// snapshot would mix two states, so it is abandoned (start a new one).
    StoreChanged,
}

/// Where the encoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Entries,
    Trailer,
    Done,
}

/// Writes a snapshot of a store in chunks. The store must not change until the encoder
/// is done; if it does, [`SnapshotEncoder::fill`] says so rather than write a snapshot
/// that mixes two states.
///
/// Call order: [`SnapshotEncoder::new`], then [`SnapshotEncoder::fill`] with buffers of
/// any size until it returns `Ok(0)` (or [`SnapshotEncoder::is_done`]).
#[derive(Debug, Clone)]
pub struct SnapshotEncoder {
    meta: SnapshotMeta,
    mutations: u64,
    crc: crc32fast::Hasher,
    /// Fixed-size bytes waiting to go out: the header, an entry head or the trailer.
    /// They enter the CRC when they are staged (all but the CRC field itself).
    staged: [u8; HEADER_BYTES],
    staged_len: usize,
    staged_sent: usize,
    next_slot: usize,
    /// The entry whose key and value are going out: its slot and the body bytes sent.
    body: Option<(usize, usize)>,
    entries_written: u64,
    phase: Phase,
}

impl SnapshotEncoder {
    /// Starts a snapshot of `store` as it is now. `term` and `log_index` name the last log
    /// entry the store reflects (0 outside a cluster).
    pub fn new<M: AsRef<[u8]> + AsMut<[u8]>>(store: &Store<M>, term: u64, log_index: u64) -> Self {
        let meta = SnapshotMeta {
            term,
            log_index,
            last_version: store.last_version(),
            entry_count: u64::from(store.len()),
        };
        let mut encoder = Self {
            meta,
            mutations: store.mutations(),
            crc: crc32fast::Hasher::new(),
            staged: [0; HEADER_BYTES],
            staged_len: 0,
            staged_sent: 0,
            next_slot: 0,
            body: None,
            entries_written: 0,
            phase: Phase::Entries,
        };
        encoder.stage(&encode_header(&meta));
        encoder
    }

    /// What the header says.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Whether every byte has been written.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done && self.staged_sent == self.staged_len
    }

    /// Queues fixed-size bytes to go out, adding them to the CRC.
    fn stage(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.stage_without_crc(bytes);
    }

    fn stage_without_crc(&mut self, bytes: &[u8]) {
        self.staged[..bytes.len()].copy_from_slice(bytes);
        self.staged_len = bytes.len();
        self.staged_sent = 0;
    }

    /// Writes the next bytes of the snapshot into `out`; returns how many (0 once done).
    pub fn fill<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &Store<M>,
        out: &mut [u8],
    ) -> Result<usize, SnapshotEncodeError> {
        if store.mutations() != self.mutations {
            return Err(SnapshotEncodeError::StoreChanged);
        }
        let mut written = 0;
        loop {
            if self.staged_sent < self.staged_len {
                let pending = &self.staged[self.staged_sent..self.staged_len];
                let n = pending.len().min(out.len() - written);
                out[written..written + n].copy_from_slice(&pending[..n]);
                self.staged_sent += n;
                written += n;
                if self.staged_sent < self.staged_len {
                    return Ok(written);
                }
            }
            if let Some((slot, sent)) = self.body {
                let entry = store
                    .entry_at_slot(slot)
                    .ok_or(SnapshotEncodeError::StoreChanged)?;
                let body_len = entry.key.len() + entry.value.len();
                let mut sent = sent;
                while sent < body_len && written < out.len() {
                    let (part, offset) = if sent < entry.key.len() {
                        (entry.key, sent)
                    } else {
                        (entry.value, sent - entry.key.len())
                    };
                    let n = (part.len() - offset).min(out.len() - written);
                    out[written..written + n].copy_from_slice(&part[offset..offset + n]);
                    self.crc.update(&part[offset..offset + n]);
                    sent += n;
                    written += n;
                }
                if sent < body_len {
                    self.body = Some((slot, sent));
                    return Ok(written);
                }
                self.body = None;
            }
            match self.phase {
                Phase::Entries => self.stage_next_entry(store)?,
                Phase::Trailer => {
                    // The CRC covers everything up to and including the trailer magic.
                    self.crc.update(&TRAILER_MAGIC);
                    let crc = self.crc.clone().finalize();
                    let mut trailer = [0; 12];
                    trailer[..8].copy_from_slice(&TRAILER_MAGIC);
                    trailer[8..].copy_from_slice(&crc.to_le_bytes());
                    self.stage_without_crc(&trailer);
                    self.phase = Phase::Done;
                }
                Phase::Done => return Ok(written),
            }
        }
    }

    /// Stages the head of the next entry, or moves on to the trailer after the last.
    fn stage_next_entry<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &Store<M>,
    ) -> Result<(), SnapshotEncodeError> {
        while self.next_slot < store.slot_count() {
            let slot = self.next_slot;
            self.next_slot += 1;
            if let Some(entry) = store.entry_at_slot(slot) {
                let head = EntryHead {
                    key_len: entry.key.len() as u32,
                    value_len: entry.value.len() as u32,
                    version: entry.version,
                    expires_at_ms: entry.expires_at_ms,
                };
                let mut bytes = [0; ENTRY_FIXED_BYTES + EXPIRY_BYTES];
                let len = head.encode(&mut bytes);
                self.stage(&bytes[..len]);
                self.body = Some((slot, 0));
                self.entries_written += 1;
                return Ok(());
            }
        }
        if self.entries_written != self.meta.entry_count {
            return Err(SnapshotEncodeError::StoreChanged);
        }
        self.phase = Phase::Trailer;
        Ok(())
    }
}
