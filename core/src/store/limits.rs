//! Capacity limits of a store and the memory layout they imply.

use super::record;

/// The capacity of a store, fixed when it is built.
///
/// Every limit is enforced on every write, so a store never grows past what it was given:
/// a write that would cross one is refused with an error and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// The most keys the store holds at once (expired keys not yet reclaimed count too,
    /// until a full store reclaims them).
    pub max_keys: u32,
    /// The longest key accepted, in bytes.
    pub max_key_bytes: u32,
    /// The longest value accepted, in bytes.
    pub max_value_bytes: u32,
    /// The size of the record arena in bytes: every key costs
    /// [`record_bytes`](crate::store::record_bytes) of it (its key, its value and a 20- or
    /// 28-byte header, rounded up to 4 bytes). Together with the index
    /// ([`StoreLimits::index_bytes`]) this is all the memory the store uses.
    pub max_total_bytes: u64,
}

/// Why a store could not be built from the limits and memory it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreInitError {
    /// `max_keys` is zero: a store that can hold nothing is a configuration mistake.
    NoKeys,
    /// `max_keys` is above [`MAX_KEYS`].
    TooManyKeys {
        /// The limit that was asked for.
        max_keys: u32,
    },
    /// `max_total_bytes` is above [`MAX_TOTAL_BYTES`] or above what this platform can
    /// address.
    ArenaTooLarge {
        /// The limit that was asked for.
        max_total_bytes: u64,
    },
    /// One record of the largest key and value allowed would not fit a chunk (4 GiB).
    RecordTooLarge,
    /// The memory handed to [`Store::new`](crate::store::Store::new) is smaller than
    /// [`StoreLimits::memory_bytes`].
    MemoryTooSmall {
        /// Bytes the limits need.
        needed: usize,
        /// Bytes that were given.
        given: usize,
    },
}

/// The largest `max_keys` a store accepts: the index must stay addressable by `u32` slots
/// with one slot in five left empty.
pub const MAX_KEYS: u32 = 3_000_000_000;

/// The largest arena a store accepts: records are addressed by `u32` offsets in 4-byte units.
pub const MAX_TOTAL_BYTES: u64 = 4 * (u32::MAX as u64 - 1);

/// Bytes of one index slot.
pub(crate) const SLOT_BYTES: usize = 8;

impl StoreLimits {
    /// Number of index slots for these limits: at least a fifth more than `max_keys`, so
    /// the load factor stays at or below 0.8 and a probe always meets an empty slot.
    pub fn slot_count(&self) -> u32 {
        let keys = u64::from(self.max_keys);
        let slots = keys + keys / 4 + 1;
        u32::try_from(slots).unwrap_or(u32::MAX)
    }

    /// Bytes of the index: [`StoreLimits::slot_count`] slots of 8 bytes.
    pub fn index_bytes(&self) -> usize {
        self.slot_count() as usize * SLOT_BYTES
    }

    /// Bytes of memory a [`Store`](crate::store::Store) with these limits needs: the index
    /// followed by the arena. Allocate this much once, at start-up, and hand it over.
    pub fn memory_bytes(&self) -> Result<usize, StoreInitError> {
        self.validate()?;
        let arena = arena_bytes(self.max_total_bytes)?;
        self.index_bytes()
            .checked_add(arena)
            .ok_or(StoreInitError::ArenaTooLarge {
                max_total_bytes: self.max_total_bytes,
            })
    }

    /// Checks the limits are usable on this platform.
    pub fn validate(&self) -> Result<(), StoreInitError> {
        if self.max_keys == 0 {
            return Err(StoreInitError::NoKeys);
        }
        if self.max_keys > MAX_KEYS {
            return Err(StoreInitError::TooManyKeys {
                max_keys: self.max_keys,
            });
        }
        let largest = record::record_bytes(
            self.max_key_bytes as usize,
            self.max_value_bytes as usize,
            true,
        );
        if !matches!(largest, Some(len) if len <= record::MAX_CHUNK_BYTES) {
            return Err(StoreInitError::RecordTooLarge);
        }
        arena_bytes(self.max_total_bytes)?;
        // The index and the arena must together be addressable.
        self.index_bytes()
            .checked_add(arena_bytes(self.max_total_bytes)?)
            .ok_or(StoreInitError::ArenaTooLarge {
                max_total_bytes: self.max_total_bytes,
            })?;
        Ok(())
    }
}

/// The arena size in bytes: `max_total_bytes` rounded down to whole 4-byte units.
fn arena_bytes(max_total_bytes: u64) -> Result<usize, StoreInitError> {
    let too_large = StoreInitError::ArenaTooLarge { max_total_bytes };
    if max_total_bytes > MAX_TOTAL_BYTES {
        return Err(too_large);
    }
    usize::try_from(max_total_bytes & !3).map_err(|_| too_large)
}
