//! Streaming a store out as snapshot bytes.

use super::format::{
    encode_header, EntryHead, SnapshotMeta, END_OF_ENTRIES, ENTRY_FIXED_BYTES, EXPIRY_BYTES,
    HEADER_BYTES, TRAILER_MAGIC,
};
use crate::store::Store;

/// Why encoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEncodeError {
    /// The store was written to between two calls of [`SnapshotEncoder::fill`]: the
    /// snapshot would mix two states, so it is abandoned (start a new one).
    StoreChanged,
    /// A fuzzy snapshot writes whole entries only, and the buffer cannot hold the next one
    /// (or the 48-byte header).
    BufferTooSmall {
        /// Bytes the next entry needs.
        needed: usize,
    },
}

/// Where a fuzzy snapshot's walk over the index is (see [`SnapshotEncoder::new_fuzzy`]).
#[derive(Debug, Clone, Copy)]
struct FuzzyCursor {
    /// First slot of the run of occupied slots the walk is in.
    run_start: usize,
    /// Whether the last fill stopped inside a run, and the store's removal count then.
    stopped_mid_run: Option<u64>,
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
    /// Set for a fuzzy snapshot.
    fuzzy: Option<FuzzyCursor>,
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
            fuzzy: false,
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
            fuzzy: None,
        };
        encoder.stage(&encode_header(&meta));
        encoder
    }

    /// Starts a *fuzzy* snapshot of `store`: one the store may change under, between calls
    /// of [`SnapshotEncoder::fill`], as a leader's store does while it streams a snapshot to
    /// a follower. `term` and `log_index` name the last log entry the store reflects now.
    ///
    /// Each entry is a key's state at some moment of the snapshot; loaded, then brought
    /// forward by replaying the log after `log_index` (whose entries set keys to values
    /// rather than change them, so replaying one twice is harmless), it gives the store's
    /// exact state. For that, every key present throughout must be written at least once:
    /// the walk follows the index like SCAN, which guarantees this when each call ends at
    /// an empty slot; a call that must end inside a run (the buffer is full) resumes there
    /// only if no key was removed meanwhile (removals are what move keys to earlier slots),
    /// and otherwise starts the run again, writing some keys twice. Each call writes whole
    /// entries, so the buffer must hold the largest entry.
    pub fn new_fuzzy<M: AsRef<[u8]> + AsMut<[u8]>>(
        store: &Store<M>,
        term: u64,
        log_index: u64,
    ) -> Self {
        let mut encoder = Self::new(store, term, log_index);
        encoder.meta.entry_count = 0;
        encoder.meta.fuzzy = true;
        encoder.crc = crc32fast::Hasher::new();
        encoder.stage(&encode_header(&encoder.meta));
        encoder.fuzzy = Some(FuzzyCursor {
            run_start: 0,
            stopped_mid_run: None,
        });
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
        if self.fuzzy.is_some() {
            return self.fill_fuzzy(store, out);
        }
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

    /// Sends staged bytes; returns how many went out and whether all did.
    fn flush_staged(&mut self, out: &mut [u8]) -> (usize, bool) {
        let pending = &self.staged[self.staged_sent..self.staged_len];
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.staged_sent += n;
        (n, self.staged_sent == self.staged_len)
    }

    /// Stages the end-of-entries marker and the trailer of a fuzzy snapshot.
    fn stage_fuzzy_end(&mut self) {
        let mut end = [0; 13];
        end[0] = END_OF_ENTRIES;
        end[1..9].copy_from_slice(&TRAILER_MAGIC);
        // The CRC covers everything before its own field.
        self.crc.update(&end[..9]);
        let crc = self.crc.clone().finalize();
        end[9..].copy_from_slice(&crc.to_le_bytes());
        self.stage_without_crc(&end);
        self.phase = Phase::Done;
    }

    fn fill_fuzzy<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &Store<M>,
        out: &mut [u8],
    ) -> Result<usize, SnapshotEncodeError> {
        let Some(mut cursor) = self.fuzzy else {
            return Ok(0);
        };
        // Keys moved backwards while this walk was stopped inside a run: start it again.
        if cursor
            .stopped_mid_run
            .is_some_and(|removals| removals != store.removals())
        {
            self.next_slot = cursor.run_start;
        }
        cursor.stopped_mid_run = None;
        let (mut written, all_sent) = self.flush_staged(out);
        if !all_sent {
            self.fuzzy = Some(cursor);
            return Ok(written);
        }
        while self.phase == Phase::Entries {
            if self.next_slot >= store.slot_count() {
                self.stage_fuzzy_end();
                break;
            }
            let Some(entry) = store.entry_at_slot(self.next_slot) else {
                self.next_slot += 1;
                cursor.run_start = self.next_slot;
                continue;
            };
            let head = EntryHead::of(&entry);
            let mut head_bytes = [0; ENTRY_FIXED_BYTES + EXPIRY_BYTES];
            let head_len = head.encode(&mut head_bytes);
            let needed = head_len + entry.key.len() + entry.value.len();
            if needed > out.len() - written {
                if written == 0 {
                    return Err(SnapshotEncodeError::BufferTooSmall { needed });
                }
                if self.next_slot > cursor.run_start {
                    cursor.stopped_mid_run = Some(store.removals());
                }
                self.fuzzy = Some(cursor);
                return Ok(written);
            }
            for part in [&head_bytes[..head_len], entry.key, entry.value] {
                out[written..written + part.len()].copy_from_slice(part);
                self.crc.update(part);
                written += part.len();
            }
            self.entries_written += 1;
            self.next_slot += 1;
        }
        let (n, _) = self.flush_staged(&mut out[written..]);
        written += n;
        self.fuzzy = Some(cursor);
        Ok(written)
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
                let head = EntryHead::of(&entry);
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
