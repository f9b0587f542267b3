//! Loading snapshot bytes into a store.

use super::format::{
    u16_at, u32_at, u64_at, EntryHead, SnapshotMeta, END_OF_ENTRIES, ENTRY_HAS_EXPIRY,
    FORMAT_VERSION, HEADER_BYTES, HEADER_FUZZY, SNAPSHOT_MAGIC, TRAILER_BYTES, TRAILER_MAGIC,
};
use crate::store::{InsertError, PendingInsert, Store};

/// Why a snapshot was rejected. The target store has been cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDecodeError {
    /// The bytes do not start with the snapshot magic: not a memdi snapshot.
    BadMagic,
    /// A snapshot format this code does not read.
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// A reserved header field is not zero.
    ReservedFieldSet,
    /// An entry's flags have unknown bits set.
    BadEntryFlags {
        /// The flags found.
        flags: u8,
    },
    /// An entry's version is above the header's version counter.
    VersionAboveHeader,
    /// An entry could not be stored: larger than this store's limits, a store too small
    /// for the snapshot, or a key that appears twice.
    Entry(InsertError),
    /// After the last entry, the trailer magic is missing: the entry count or an entry
    /// length is wrong.
    BadTrailer,
    /// The CRC does not match the bytes: the snapshot is damaged.
    ChecksumMismatch {
        /// The CRC the trailer holds.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The snapshot ended early.
    Truncated,
    /// Bytes follow the trailer.
    TrailingBytes,
    /// The store was not empty when loading began.
    StoreNotEmpty,
    /// The store was written to while loading.
    StoreChanged,
}

/// Where the decoder is in the stream.
#[derive(Debug)]
enum State {
    Header,
    EntryHead,
    Body(PendingInsert),
    Trailer,
    Done,
    Failed(SnapshotDecodeError),
}

/// Loads a snapshot into a store from chunks cut anywhere.
///
/// Call order: [`SnapshotDecoder::new`], [`SnapshotDecoder::feed`] with each chunk in
/// order, then [`SnapshotDecoder::finish`], which alone says whether the snapshot loaded.
/// The store must be empty at the start and must not be written to meanwhile. On any
/// error the store is cleared.
#[derive(Debug)]
pub struct SnapshotDecoder {
    state: State,
    crc: crc32fast::Hasher,
    /// Gathers fixed-size parts (header, entry head, trailer) cut across chunks.
    staged: [u8; HEADER_BYTES],
    staged_len: usize,
    meta: SnapshotMeta,
    entries_read: u64,
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDecoder {
    /// A decoder waiting for the first byte.
    pub fn new() -> Self {
        Self {
            state: State::Header,
            crc: crc32fast::Hasher::new(),
            staged: [0; HEADER_BYTES],
            staged_len: 0,
            meta: SnapshotMeta::default(),
            entries_read: 0,
        }
    }

    /// Takes the next chunk of the snapshot, loading entries into `store` as they complete.
    pub fn feed<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &mut Store<M>,
        bytes: &[u8],
    ) -> Result<(), SnapshotDecodeError> {
        if let State::Failed(error) = self.state {
            return Err(error);
        }
        self.feed_inner(store, bytes).inspect_err(|&error| {
            store.clear();
            self.state = State::Failed(error);
        })
    }

    /// Ends loading: `Ok` with the snapshot's metadata if every byte arrived and checked
    /// out, otherwise the error (and the store is cleared).
    pub fn finish<M: AsRef<[u8]> + AsMut<[u8]>>(
        self,
        store: &mut Store<M>,
    ) -> Result<SnapshotMeta, SnapshotDecodeError> {
        match self.state {
            State::Done => {
                if self.meta.fuzzy {
                    // The counter as it was at `log_index`: replaying the log after it
                    // gives every later write the version it had.
                    store.set_last_version(self.meta.last_version);
                } else {
                    store.raise_last_version(self.meta.last_version);
                }
                Ok(self.meta)
            }
            State::Failed(error) => Err(error),
            _ => {
                store.clear();
                Err(SnapshotDecodeError::Truncated)
            }
        }
    }

    /// Moves up to `need - staged_len` bytes from the front of `bytes` into the staging
    /// buffer; returns the rest.
    fn stage<'b>(&mut self, bytes: &'b [u8], need: usize) -> &'b [u8] {
        let take = (need - self.staged_len).min(bytes.len());
        self.staged[self.staged_len..self.staged_len + take].copy_from_slice(&bytes[..take]);
        self.staged_len += take;
        &bytes[take..]
    }

    fn feed_inner<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &mut Store<M>,
        mut bytes: &[u8],
    ) -> Result<(), SnapshotDecodeError> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Header => {
                    if self.staged_len == 0 && !store.is_empty() {
                        return Err(SnapshotDecodeError::StoreNotEmpty);
                    }
                    let rest = self.stage(bytes, HEADER_BYTES);
                    self.crc.update(&bytes[..bytes.len() - rest.len()]);
                    bytes = rest;
                    if self.staged_len == HEADER_BYTES {
                        self.read_header()?;
                    }
                }
                State::EntryHead => {
                    let need = if self.staged_len == 0 {
                        1
                    } else {
                        EntryHead::encoded_len(self.staged[0])
                    };
                    let rest = self.stage(bytes, need);
                    self.crc.update(&bytes[..bytes.len() - rest.len()]);
                    bytes = rest;
                    if self.staged_len == 1 && self.meta.fuzzy && self.staged[0] == END_OF_ENTRIES {
                        self.staged_len = 0;
                        self.state = State::Trailer;
                        continue;
                    }
                    if self.staged_len == 1 && self.staged[0] & !ENTRY_HAS_EXPIRY != 0 {
                        return Err(SnapshotDecodeError::BadEntryFlags {
                            flags: self.staged[0],
                        });
                    }
                    if self.staged_len == EntryHead::encoded_len(self.staged[0]) {
                        self.begin_entry(store)?;
                    }
                }
                State::Body(pending) => {
                    let taken = store.fill_insert(pending, bytes);
                    if taken == 0 {
                        return Err(SnapshotDecodeError::StoreChanged);
                    }
                    self.crc.update(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if pending.remaining_bytes() == 0 {
                        self.commit_entry(store)?;
                    }
                }
                State::Trailer => {
                    let before = self.staged_len;
                    let rest = self.stage(bytes, TRAILER_BYTES);
                    // The CRC covers the trailer magic but not the CRC field itself.
                    let magic_end = self.staged_len.min(TRAILER_MAGIC.len());
                    if magic_end > before {
                        self.crc.update(&self.staged[before..magic_end]);
                    }
                    bytes = rest;
                    if self.staged_len == TRAILER_BYTES {
                        self.read_trailer()?;
                    }
                }
                State::Done => return Err(SnapshotDecodeError::TrailingBytes),
                State::Failed(error) => return Err(*error),
            }
        }
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), SnapshotDecodeError> {
        let header = &self.staged[..HEADER_BYTES];
        if header[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotDecodeError::BadMagic);
        }
        let version = u16_at(header, 8);
        if version != FORMAT_VERSION {
            return Err(SnapshotDecodeError::UnsupportedVersion { found: version });
        }
        let flags = u16_at(header, 10);
        if flags & !HEADER_FUZZY != 0 || u32_at(header, 12) != 0 {
            return Err(SnapshotDecodeError::ReservedFieldSet);
        }
        self.meta = SnapshotMeta {
            term: u64_at(header, 16),
            log_index: u64_at(header, 24),
            last_version: u64_at(header, 32),
            entry_count: u64_at(header, 40),
            fuzzy: flags & HEADER_FUZZY != 0,
        };
        if self.meta.fuzzy && self.meta.entry_count != 0 {
            return Err(SnapshotDecodeError::ReservedFieldSet);
        }
        self.staged_len = 0;
        self.state = self.after_entries();
        Ok(())
    }

    /// The state after an entry (or the header): another entry, or the trailer.
    fn after_entries(&self) -> State {
        if !self.meta.fuzzy && self.entries_read == self.meta.entry_count {
            State::Trailer
        } else {
            State::EntryHead
        }
    }

    fn begin_entry<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &mut Store<M>,
    ) -> Result<(), SnapshotDecodeError> {
        let head = EntryHead::decode(&self.staged[..self.staged_len]);
        self.staged_len = 0;
        // A fuzzy snapshot's entries may be newer than its start, and so its counter.
        if !self.meta.fuzzy && head.version > self.meta.last_version {
            return Err(SnapshotDecodeError::VersionAboveHeader);
        }
        let pending = store
            .begin_insert(
                head.key_len as usize,
                head.value_len as usize,
                head.version,
                head.expires_at_ms,
            )
            .map_err(SnapshotDecodeError::Entry)?;
        let empty = pending.remaining_bytes() == 0;
        self.state = State::Body(pending);
        if empty {
            self.commit_entry(store)?;
        }
        Ok(())
    }

    fn commit_entry<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &mut Store<M>,
    ) -> Result<(), SnapshotDecodeError> {
        let State::Body(pending) = core::mem::replace(&mut self.state, State::EntryHead) else {
            unreachable!("commit_entry outside an entry body");
        };
        let committed = if self.meta.fuzzy {
            store.commit_insert_replacing(pending)
        } else {
            store.commit_insert(pending)
        };
        committed.map_err(|error| match error {
            InsertError::Stale => SnapshotDecodeError::StoreChanged,
            other => SnapshotDecodeError::Entry(other),
        })?;
        self.entries_read += 1;
        self.state = self.after_entries();
        Ok(())
    }

    fn read_trailer(&mut self) -> Result<(), SnapshotDecodeError> {
        if self.staged[..8] != TRAILER_MAGIC {
            return Err(SnapshotDecodeError::BadTrailer);
        }
        let stored = u32_at(&self.staged, 8);
        let computed = self.crc.clone().finalize();
        if stored != computed {
            return Err(SnapshotDecodeError::ChecksumMismatch { stored, computed });
        }
        self.state = State::Done;
        Ok(())
    }
}
