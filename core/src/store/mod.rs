//! The fixed-capacity key-value store every memdi node runs.
//!
//! # Memory
//!
//! A [`Store`] lives entirely inside one buffer the caller hands over at construction
//! (a `Vec<u8>` or `Box<[u8]>` on a server, a `static` array on a board), sized by
//! [`StoreLimits::memory_bytes`]. It never allocates afterwards. The buffer holds:
//!
//! - the **index** (see `index`): open addressing with linear probing, 8-byte slots, load
//!   factor at most 0.8;
//! - the **arena** (see `arena` and `record`): one variable-size chunk per key holding a
//!   20-byte header (28 with an expiry), the key and the value.
//!
//! At 16-byte keys and 64-byte values that is 20 bytes of header plus 10 bytes of index
//! per key beyond the key and value themselves.
//!
//! # Semantics
//!
//! - Keys and values are arbitrary bytes.
//! - Every write takes the next number of a store-wide counter as the key's *version*
//!   (like etcd's revision), so versions never repeat even when a key is deleted and
//!   created again, and compare-and-set cannot suffer the ABA problem. Replicas that
//!   apply the same writes in the same order agree on every version.
//! - The store has no clock: expiry times are absolute instants in the caller's
//!   milliseconds, and every call that may meet an expired key takes `now_ms`. A key whose
//!   `expires_at_ms <= now_ms` is never returned; its space is reclaimed when the key is
//!   written or deleted, by [`Store::sweep_expired`], and, before any write is refused
//!   for lack of space, by a pass over the whole store.
//! - A write that would exceed a limit fails with an error and changes nothing; the store
//!   accepts writes again as soon as space is freed.

mod arena;
mod index;
pub mod integer;
mod limits;
mod record;

use core::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;

use arena::Arena;
use index::{Index, Slot};
pub use limits::{StoreInitError, StoreLimits, MAX_KEYS, MAX_TOTAL_BYTES};
pub use record::record_bytes;
use record::{RecordHeader, FLAG_LIVE};

/// A key as the store holds it, borrowed from the store's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The version the last write gave the key.
    pub version: u64,
    /// When the key expires, if it does.
    pub expires_at_ms: Option<u64>,
}

/// Which existing state a SET requires (Redis's NX and XX).
///
/// Also a wire type (postcard encodes the variant index): the variant order is frozen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum SetCondition {
    /// Write whether or not the key exists.
    #[default]
    Always,
    /// Write only if the key does not exist (NX).
    IfAbsent,
    /// Write only if the key exists (XX).
    IfPresent,
}

/// What a write does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// The key no longer expires (a plain Redis SET).
    #[default]
    Clear,
    /// The key keeps the expiry it had, if any (Redis's KEEPTTL).
    Keep,
    /// The key expires at this instant, in the caller's milliseconds.
    At(u64),
}

/// Options of [`Store::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOptions {
    /// The condition on the key's existence.
    pub condition: SetCondition,
    /// The key's expiry after the write.
    pub expiry: SetExpiry,
}

/// What [`Store::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The value was written and has this version.
    Stored {
        /// The key's new version.
        version: u64,
    },
    /// The condition did not hold; nothing changed.
    NotStored,
}

/// What [`Store::compare_and_set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The version matched and the value was written with this new version.
    Stored {
        /// The key's new version.
        version: u64,
    },
    /// The key's version is not the one expected; nothing changed.
    VersionMismatch {
        /// The key's version, or 0 if it does not exist.
        current_version: u64,
    },
}

/// Which limit a refused write would have crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// The store holds `max_keys` keys.
    Keys,
    /// The arena has too few free bytes for the record.
    Bytes,
}

/// Why a write (set, compare-and-set, a record being loaded) was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The key is longer than `max_key_bytes`.
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The value is longer than `max_value_bytes`.
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The store is full (Redis's OOM error); delete keys or raise the limits.
    Full(FullReason),
}

/// Why [`Store::incr_by`] failed. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not the canonical decimal form of a 64-bit signed integer.
    NotAnInteger,
    /// The result would not fit a 64-bit signed integer.
    Overflow,
    /// The result could not be stored.
    Write(WriteError),
}

/// What [`Store::incr_by`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrOutcome {
    /// The new value.
    pub value: i64,
    /// The key's new version.
    pub version: u64,
}

/// Why a record being loaded (see [`Store::begin_insert`]) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The record breaks a limit of this store.
    Write(WriteError),
    /// The key is already in the store.
    DuplicateKey,
    /// The store changed between [`Store::begin_insert`] and [`Store::commit_insert`].
    Stale,
    /// Fewer body bytes were filled in than the record needs.
    Incomplete,
}

/// A record being loaded: space is reserved, its body is filled in by
/// [`Store::fill_insert`], then it is made visible by [`Store::commit_insert`]. This lets a
/// snapshot decoder write a key and value straight into the store as bytes arrive, with no
/// buffer of its own.
#[derive(Debug)]
pub struct PendingInsert {
    at: usize,
    body: core::ops::Range<usize>,
    filled: usize,
    key_len: usize,
    expires_at_ms: Option<u64>,
    mutations: u64,
}

impl PendingInsert {
    /// Body bytes (key then value) still to be filled in.
    pub fn remaining_bytes(&self) -> usize {
        self.body.len() - self.filled
    }
}

/// Where a key is, or where it would go.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Found { slot: usize, record_at: usize },
    Vacant { slot: usize },
}

/// The fixed-capacity hash store. See the [module documentation](self).
///
/// `M` is the caller-owned memory, of at least [`StoreLimits::memory_bytes`] bytes.
///
/// ```
/// use memdi_core::store::{SetExpiry, SetOptions, SetOutcome, Store, StoreLimits, WriteError};
///
/// let limits = StoreLimits {
///     max_keys: 2,
///     max_key_bytes: 16,
///     max_value_bytes: 64,
///     max_total_bytes: 1024,
/// };
/// let memory = vec![0u8; limits.memory_bytes().unwrap()];
/// let mut store = Store::new(memory, limits, 0x5eed).unwrap();
///
/// let ttl = SetOptions { expiry: SetExpiry::At(1_000), ..SetOptions::default() };
/// assert_eq!(store.set(b"a", b"1", ttl, 0), Ok(SetOutcome::Stored { version: 1 }));
/// assert_eq!(store.get(b"a", 999).unwrap().value, b"1");
/// assert!(store.get(b"a", 1_000).is_none()); // expired
///
/// store.set(b"b", b"2", SetOptions::default(), 0).unwrap();
/// // Two keys is the limit, but "a" has expired, so its slot is reclaimed for "c".
/// assert!(store.set(b"c", b"3", SetOptions::default(), 1_000).is_ok());
/// assert!(matches!(
///     store.set(b"d", b"4", SetOptions::default(), 1_000),
///     Err(WriteError::Full(_))
/// ));
/// ```
#[derive(Debug)]
pub struct Store<M> {
    memory: M,
    limits: StoreLimits,
    index: Index,
    index_bytes: usize,
    arena: Arena,
    hasher: FixedState,
    len: u32,
    /// Keys whose record has an expiry (expired or not), kept as records come and go so
    /// that INFO and metrics need not walk the store.
    with_expiry: u32,
    last_version: u64,
    /// Counts every change to the store's contents, so that a reader that spans several
    /// calls (a snapshot encoder, a pending insert) can tell it was overtaken.
    mutations: u64,
    /// No key expires before this instant (a lower bound, exact after a full pass), so a
    /// refused write scans for expired keys only when some may exist.
    next_expiry_ms: u64,
    /// Whether a write that finds the store full reclaims expired keys by itself. A cluster
    /// turns this off: there every removal must go through the log.
    reclaim_expired: bool,
    /// Counts removals: only a removal moves keys to other index slots (backwards), so a
    /// cursor that stopped mid-run knows from this whether it must go back to the run's
    /// start (see the fuzzy snapshot encoder).
    removals: u64,
}

/// Splits the memory into index and arena.
fn split(memory: &mut [u8], index_bytes: usize, arena_bytes: usize) -> (&mut [u8], &mut [u8]) {
    let (slots, rest) = memory.split_at_mut(index_bytes);
    (slots, &mut rest[..arena_bytes])
}

fn is_expired(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    matches!(expires_at_ms, Some(at) if at <= now_ms)
}

fn hash_key(hasher: &FixedState, key: &[u8]) -> u64 {
    let mut state = hasher.build_hasher();
    state.write(key);
    state.finish()
}

impl<M: AsRef<[u8]> + AsMut<[u8]>> Store<M> {
    /// Builds an empty store in `memory`. `hash_seed` keys the hash function: give each
    /// node a random one, so that clients cannot choose keys that collide.
    pub fn new(mut memory: M, limits: StoreLimits, hash_seed: u64) -> Result<Self, StoreInitError> {
        let needed = limits.memory_bytes()?;
        let given = memory.as_ref().len();
        if given < needed {
            return Err(StoreInitError::MemoryTooSmall { needed, given });
        }
        let index_bytes = limits.index_bytes();
        memory.as_mut()[..index_bytes].fill(0);
        Ok(Self {
            memory,
            index: Index::new(limits.slot_count()),
            index_bytes,
            arena: Arena::new(needed - index_bytes),
            hasher: FixedState::with_seed(hash_seed),
            limits,
            len: 0,
            with_expiry: 0,
            last_version: 0,
            mutations: 0,
            next_expiry_ms: u64::MAX,
            reclaim_expired: true,
            removals: 0,
        })
    }

    /// A copy of this store in `memory` (at least [`StoreLimits::memory_bytes`] bytes, all
    /// zero): for writing a snapshot on another thread while this store goes on taking
    /// writes, as Redis forks for BGSAVE. Only the index and the part of the arena ever
    /// handed out are copied, so the copy costs a `memcpy` of the bytes in use, and memory
    /// the store never wrote (zeroed pages the OS has not committed) stays untouched.
    pub fn copy_into<N: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        mut memory: N,
    ) -> Result<Store<N>, StoreInitError> {
        let needed = self.limits.memory_bytes()?;
        let given = memory.as_ref().len();
        if given < needed {
            return Err(StoreInitError::MemoryTooSmall { needed, given });
        }
        let used = self.index_bytes + self.arena.bump();
        memory.as_mut()[..used].copy_from_slice(&self.memory.as_ref()[..used]);
        Ok(Store {
            memory,
            limits: self.limits,
            index: self.index,
            index_bytes: self.index_bytes,
            arena: self.arena.clone(),
            hasher: self.hasher.clone(),
            len: self.len,
            with_expiry: self.with_expiry,
            last_version: self.last_version,
            mutations: self.mutations,
            next_expiry_ms: self.next_expiry_ms,
            reclaim_expired: self.reclaim_expired,
            removals: self.removals,
        })
    }

    /// Gives the memory back.
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// The limits the store was built with.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// Keys held, counting expired keys not yet reclaimed.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Keys held whose record has an expiry, expired keys not yet reclaimed included.
    pub fn len_with_expiry(&self) -> u32 {
        self.with_expiry
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arena bytes in use: the sum of [`record_bytes`] over the keys held.
    pub fn used_bytes(&self) -> u64 {
        self.arena.used_bytes() as u64
    }

    /// The version of the most recent write.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Raises the version counter (never lowers it), for a store loaded from a snapshot:
    /// later writes must get versions above every version seen before.
    pub fn raise_last_version(&mut self, version: u64) {
        self.last_version = self.last_version.max(version);
    }

    /// Sets the version counter exactly: for a replica whose versions must follow its log
    /// (0 when a replica starts loading a snapshot; the snapshot's once a fuzzy one loaded).
    pub fn set_last_version(&mut self, version: u64) {
        self.last_version = version;
    }

    /// A number that changes whenever the contents change.
    pub fn mutations(&self) -> u64 {
        self.mutations
    }

    /// Number of index slots: the range of [`Store::entry_at_slot`] and of scan cursors.
    pub fn slot_count(&self) -> usize {
        self.index.slot_count()
    }

    fn parts(&self) -> (&[u8], &[u8]) {
        let (slots, rest) = self.memory.as_ref().split_at(self.index_bytes);
        (slots, &rest[..self.arena.capacity_bytes()])
    }

    fn hash(&self, key: &[u8]) -> u64 {
        hash_key(&self.hasher, key)
    }

    fn lookup(&self, key: &[u8], hash: u64) -> Lookup {
        let (slots, arena) = self.parts();
        let tag = index::tag_of(hash);
        let mut i = self.index.home(tag);
        // Bounded: the load factor is at most 0.8, so an empty slot is always met.
        for _ in 0..self.index.slot_count() {
            match self.index.get(slots, i) {
                None => return Lookup::Vacant { slot: i },
                Some(slot) if slot.tag == tag && record::key_at(arena, slot.record_at) == key => {
                    return Lookup::Found {
                        slot: i,
                        record_at: slot.record_at,
                    }
                }
                Some(_) => i = self.index.next(i),
            }
        }
        unreachable!("index has no empty slot: load factor invariant broken")
    }

    fn entry_at(&self, record_at: usize) -> Entry<'_> {
        let (_, arena) = self.parts();
        let view = record::view(arena, record_at);
        Entry {
            key: view.key,
            value: view.value,
            version: view.version,
            expires_at_ms: view.expires_at_ms,
        }
    }

    /// The live entry for `key`, or `None` if it is absent or expired at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<Entry<'_>> {
        match self.lookup(key, self.hash(key)) {
            Lookup::Found { record_at, .. } => {
                let entry = self.entry_at(record_at);
                (!is_expired(entry.expires_at_ms, now_ms)).then_some(entry)
            }
            Lookup::Vacant { .. } => None,
        }
    }

    /// Whether `key` is held and not expired at `now_ms`.
    pub fn exists(&self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// The entry in index slot `slot`, expired or not: the raw walk a snapshot encoder
    /// makes, in slot order.
    pub fn entry_at_slot(&self, slot: usize) -> Option<Entry<'_>> {
        let (slots, _) = self.parts();
        let found = self.index.get(slots, slot)?;
        Some(self.entry_at(found.record_at))
    }

    /// Every entry held, expired or not, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        (0..self.slot_count()).filter_map(move |slot| self.entry_at_slot(slot))
    }

    fn check_sizes(&self, key_len: usize, value_len: usize) -> Result<(), WriteError> {
        if key_len > self.limits.max_key_bytes as usize {
            return Err(WriteError::KeyTooLarge {
                len: key_len,
                max: self.limits.max_key_bytes,
            });
        }
        if value_len > self.limits.max_value_bytes as usize {
            return Err(WriteError::ValueTooLarge {
                len: value_len,
                max: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks that a record of `new_len` bytes fits where `lookup` says it goes.
    fn check_room(&self, lookup: Lookup, new_len: usize) -> Result<(), WriteError> {
        let releasing = match lookup {
            Lookup::Found { record_at, .. } => record::chunk_at(self.parts().1, record_at).0,
            Lookup::Vacant { .. } => {
                if self.len >= self.limits.max_keys {
                    return Err(WriteError::Full(FullReason::Keys));
                }
                0
            }
        };
        if self.arena.has_room(new_len, releasing) {
            Ok(())
        } else {
            Err(WriteError::Full(FullReason::Bytes))
        }
    }

    /// Writes `value` under `key` (whose `hash` and `lookup` the caller computed) with
    /// `version`, which becomes the counter's. The caller has checked sizes and room, so
    /// this cannot fail.
    fn write_checked(
        &mut self,
        key: &[u8],
        hash: u64,
        lookup: Lookup,
        value: &[u8],
        version: u64,
        expires_at_ms: Option<u64>,
    ) -> u64 {
        let header = RecordHeader {
            key_len: key.len(),
            value_len: value.len(),
            version,
            expires_at_ms,
        };
        let new_len = header.chunk_len();
        let arena_capacity = self.arena.capacity_bytes();
        // Whether the record was written where the old one was (then the slot is as it was).
        let (slot, record_at, in_place) = match lookup {
            Lookup::Found { slot, record_at } => {
                if self.entry_at(record_at).expires_at_ms.is_some() {
                    self.with_expiry -= 1;
                }
                let (_, arena_bytes) =
                    split(self.memory.as_mut(), self.index_bytes, arena_capacity);
                let (old_len, _) = record::chunk_at(arena_bytes, record_at);
                if new_len <= old_len {
                    self.arena.shrink(arena_bytes, record_at, old_len, new_len);
                    record::write_record(arena_bytes, record_at, &header, key, value);
                    (slot, record_at, true)
                } else {
                    // The slot keeps pointing at the freed chunk until it is repointed
                    // below; compaction cannot confuse it with a live chunk, since it only
                    // matches slots to chunks live when it starts (see `compact`).
                    self.arena.free(arena_bytes, record_at);
                    let at = self.alloc_chunk(new_len);
                    (slot, at, false)
                }
            }
            Lookup::Vacant { slot } => {
                self.len += 1;
                (slot, self.alloc_chunk(new_len), false)
            }
        };
        let (slots, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        if !in_place {
            record::write_record(arena_bytes, record_at, &header, key, value);
        }
        self.index.set(
            slots,
            slot,
            Some(Slot {
                tag: index::tag_of(hash),
                record_at,
            }),
        );
        self.last_version = version;
        self.mutations += 1;
        if let Some(at) = expires_at_ms {
            self.next_expiry_ms = self.next_expiry_ms.min(at);
            self.with_expiry += 1;
        }
        version
    }

    /// A chunk of `len` bytes, compacting the arena if fragments are all that is left.
    /// The caller has checked there is room, which compaction turns into one free run.
    fn alloc_chunk(&mut self, len: usize) -> usize {
        let arena_capacity = self.arena.capacity_bytes();
        let (_, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        if let Some(at) = self.arena.alloc(arena_bytes, len) {
            return at;
        }
        self.compact();
        let (_, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        match self.arena.alloc(arena_bytes, len) {
            Some(at) => at,
            None => unreachable!("no room after compaction although room was checked"),
        }
    }

    /// Slides every live chunk down to the start of the arena, in address order, and
    /// repoints its slot, leaving all free space in one run at the end.
    ///
    /// A chunk's slot is found by probing from its key's home for the slot that holds the
    /// chunk's *old* offset. No other slot can hold that offset: chunks already moved sit
    /// below the write position, which is at or below the chunk being moved, and a slot
    /// left pointing at a chunk freed by the current write points at a chunk that was not
    /// live when compaction began.
    fn compact(&mut self) {
        let arena_capacity = self.arena.capacity_bytes();
        let end = self.arena.bump();
        let (slots, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        let mut read = 0;
        let mut write = 0;
        while read < end {
            let (len, flags) = record::chunk_at(arena_bytes, read);
            debug_assert!(len >= 4, "zero-length chunk at {read}");
            if len == 0 {
                break;
            }
            if flags & FLAG_LIVE != 0 {
                if read != write {
                    let key = record::key_at(arena_bytes, read);
                    let tag = index::tag_of(hash_key(&self.hasher, key));
                    let mut i = self.index.home(tag);
                    for _ in 0..self.index.slot_count() {
                        match self.index.get(slots, i) {
                            Some(slot) if slot.record_at == read => {
                                self.index.set(
                                    slots,
                                    i,
                                    Some(Slot {
                                        tag,
                                        record_at: write,
                                    }),
                                );
                                break;
                            }
                            _ => i = self.index.next(i),
                        }
                    }
                    arena_bytes.copy_within(read..read + len, write);
                }
                write += len;
            }
            read += len;
        }
        self.arena.set_compacted(write);
    }

    /// Removes the key in `slot`, whose record is at `record_at`.
    fn remove_at(&mut self, slot: usize, record_at: usize) {
        if self.entry_at(record_at).expires_at_ms.is_some() {
            self.with_expiry -= 1;
        }
        let arena_capacity = self.arena.capacity_bytes();
        let (slots, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        self.arena.free(arena_bytes, record_at);
        self.index.remove(slots, slot);
        self.len -= 1;
        self.mutations += 1;
        self.removals += 1;
    }

    /// A number that changes whenever a key is removed (and so other keys may move to
    /// earlier index slots).
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Runs `write`; if it found the store full and some key may have expired by `now_ms`,
    /// reclaims every expired key and runs it once more.
    fn with_reclaim<T, E>(
        &mut self,
        now_ms: u64,
        is_full: impl Fn(&E) -> bool,
        mut write: impl FnMut(&mut Self) -> Result<T, E>,
    ) -> Result<T, E> {
        match write(self) {
            Err(error)
                if is_full(&error) && self.reclaim_expired && self.next_expiry_ms <= now_ms =>
            {
                self.purge_expired(now_ms);
                write(self)
            }
            result => result,
        }
    }

    /// Writes `value` under `key` if `options.condition` holds at `now_ms`.
    pub fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now_ms: u64,
    ) -> Result<SetOutcome, WriteError> {
        self.check_sizes(key.len(), value.len())?;
        self.with_reclaim(
            now_ms,
            |error| matches!(error, WriteError::Full(_)),
            |store| store.set_once(key, value, options, now_ms),
        )
    }

    fn set_once(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now_ms: u64,
    ) -> Result<SetOutcome, WriteError> {
        let hash = self.hash(key);
        let lookup = self.lookup(key, hash);
        let current = match lookup {
            Lookup::Found { record_at, .. } => Some(self.entry_at(record_at).expires_at_ms)
                .filter(|expires| !is_expired(*expires, now_ms)),
            Lookup::Vacant { .. } => None,
        };
        let allowed = match options.condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => current.is_none(),
            SetCondition::IfPresent => current.is_some(),
        };
        if !allowed {
            return Ok(SetOutcome::NotStored);
        }
        let expires_at_ms = match options.expiry {
            SetExpiry::Clear => None,
            SetExpiry::Keep => current.flatten(),
            SetExpiry::At(at) => Some(at),
        };
        let header_len = record_bytes(key.len(), value.len(), expires_at_ms.is_some());
        self.check_room(lookup, header_len.map_or(usize::MAX, |len| len as usize))?;
        let version = self.last_version + 1;
        self.write_checked(key, hash, lookup, value, version, expires_at_ms);
        Ok(SetOutcome::Stored { version })
    }

    /// Puts `entry` back exactly as it was, version and expiry included, leaving the
    /// version counter alone: an undo, for a replica rolling back writes it applied before
    /// they committed (the caller restores the counter once it is done). Changes nothing
    /// if the record does not fit, which cannot happen when undoing in reverse order.
    pub fn restore(&mut self, entry: Entry<'_>) -> Result<(), WriteError> {
        self.check_sizes(entry.key.len(), entry.value.len())?;
        let hash = self.hash(entry.key);
        let lookup = self.lookup(entry.key, hash);
        let len = record_bytes(
            entry.key.len(),
            entry.value.len(),
            entry.expires_at_ms.is_some(),
        );
        self.check_room(lookup, len.map_or(usize::MAX, |len| len as usize))?;
        let last_version = self.last_version;
        self.write_checked(
            entry.key,
            hash,
            lookup,
            entry.value,
            entry.version,
            entry.expires_at_ms,
        );
        self.last_version = last_version;
        Ok(())
    }

    /// Checks, without changing anything, that writing every `(key, value)` of `puts` in
    /// order, each with no expiry, would succeed: the leader asks before an MSET so that the
    /// batch is applied all or nothing, never cut halfway by a full store.
    ///
    /// Exact when the keys are distinct. A key written twice counts both records' bytes (the
    /// first one is freed again by the second), so a batch with repeated keys may be refused
    /// a little before the store is truly full, but never accepted when it does not fit: every
    /// intermediate state of the batch uses at most the bytes counted here. Costs one lookup
    /// per item plus a comparison of each key with the ones after it, so callers bound the
    /// batch.
    pub fn check_puts<'k, I>(&self, puts: I) -> Result<(), WriteError>
    where
        I: Iterator<Item = (&'k [u8], &'k [u8])> + Clone,
    {
        let mut adding = 0usize;
        let mut releasing = 0usize;
        let mut new_keys = 0u32;
        let mut rest = puts;
        while let Some((key, value)) = rest.next() {
            self.check_sizes(key.len(), value.len())?;
            let len = record_bytes(key.len(), value.len(), false)
                .map_or(usize::MAX, |len| usize::try_from(len).unwrap_or(usize::MAX));
            adding = adding.saturating_add(len);
            if rest.clone().any(|(later, _)| later == key) {
                continue; // the key's last write decides whether it is new or replaces one
            }
            match self.lookup(key, self.hash(key)) {
                Lookup::Found { record_at, .. } => {
                    releasing += record::chunk_at(self.parts().1, record_at).0;
                }
                Lookup::Vacant { .. } => new_keys = new_keys.saturating_add(1),
            }
        }
        if self.len.saturating_add(new_keys) > self.limits.max_keys {
            return Err(WriteError::Full(FullReason::Keys));
        }
        let after = (self.arena.used_bytes() - releasing).checked_add(adding);
        if after.is_none_or(|bytes| bytes > self.arena.capacity_bytes()) {
            return Err(WriteError::Full(FullReason::Bytes));
        }
        Ok(())
    }

    /// Writes `value` under `key` only if the key's current version is `expected_version`
    /// (0: only if the key does not exist), setting its expiry as `expiry` says.
    pub fn compare_and_set(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
        expiry: SetExpiry,
        now_ms: u64,
    ) -> Result<CasOutcome, WriteError> {
        self.check_sizes(key.len(), value.len())?;
        let current_version = self.get(key, now_ms).map_or(0, |entry| entry.version);
        if current_version != expected_version {
            return Ok(CasOutcome::VersionMismatch { current_version });
        }
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry,
        };
        // The version check above stays true: a reclaim pass only removes expired keys,
        // which read as absent (version 0) both before and after it.
        match self.set(key, value, options, now_ms)? {
            SetOutcome::Stored { version } => Ok(CasOutcome::Stored { version }),
            SetOutcome::NotStored => unreachable!("an unconditional set always stores"),
        }
    }

    /// Adds `delta` to the integer stored under `key` (a missing key counts as 0), keeping
    /// its expiry, as Redis's INCRBY does.
    pub fn incr_by(
        &mut self,
        key: &[u8],
        delta: i64,
        now_ms: u64,
    ) -> Result<IncrOutcome, IncrError> {
        let current = match self.get(key, now_ms) {
            Some(entry) => integer::parse_i64(entry.value).ok_or(IncrError::NotAnInteger)?,
            None => 0,
        };
        let value = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let mut text = [0; integer::MAX_DECIMAL_BYTES];
        let text = integer::format_i64(value, &mut text);
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry: SetExpiry::Keep,
        };
        match self
            .set(key, text, options, now_ms)
            .map_err(IncrError::Write)?
        {
            SetOutcome::Stored { version } => Ok(IncrOutcome { value, version }),
            SetOutcome::NotStored => unreachable!("an unconditional set always stores"),
        }
    }

    /// Removes `key`. Returns whether a live key was removed (an expired one is reclaimed
    /// too, but reported as absent).
    pub fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        match self.lookup(key, self.hash(key)) {
            Lookup::Found { slot, record_at } => {
                let live = !is_expired(self.entry_at(record_at).expires_at_ms, now_ms);
                self.remove_at(slot, record_at);
                live
            }
            Lookup::Vacant { .. } => false,
        }
    }

    /// Removes the key in index slot `slot`, expired or not; returns whether there was one.
    /// (A replicated store's leader removes an expired key it found by walking the slots.)
    pub fn delete_slot(&mut self, slot: usize) -> bool {
        let (slots, _) = self.parts();
        match self.index.get(slots, slot) {
            Some(found) => {
                self.remove_at(slot, found.record_at);
                true
            }
            None => false,
        }
    }

    /// Removes every key. The version counter is kept, so versions still never repeat.
    pub fn clear(&mut self) {
        self.memory.as_mut()[..self.index_bytes].fill(0);
        self.arena.reset();
        self.len = 0;
        self.with_expiry = 0;
        self.mutations += 1;
        self.removals += 1;
        self.next_expiry_ms = u64::MAX;
    }

    /// Sets whether a write that finds the store full first reclaims expired keys (the
    /// default). With it off, expired keys stay until deleted: a replicated store turns it
    /// off so that every replica removes the same keys, through its log.
    pub fn set_reclaim_expired(&mut self, enabled: bool) {
        self.reclaim_expired = enabled;
    }

    /// The first index slot at or after `from` holding a key expired at `now_ms`, if any.
    /// Answers at once when no key can have expired yet. A pass from slot 0 that finds none
    /// makes that check exact again.
    pub fn expired_slot(&mut self, now_ms: u64, from: usize) -> Option<usize> {
        if self.next_expiry_ms > now_ms {
            return None;
        }
        let mut next_expiry_ms = u64::MAX;
        for slot in from..self.slot_count() {
            if let Some(expires_at_ms) = self.entry_at_slot(slot).and_then(|e| e.expires_at_ms) {
                if expires_at_ms <= now_ms {
                    return Some(slot);
                }
                next_expiry_ms = next_expiry_ms.min(expires_at_ms);
            }
        }
        if from == 0 {
            self.next_expiry_ms = next_expiry_ms;
        }
        None
    }

    /// Removes every key expired at `now_ms`, in one pass over the index. Returns how many.
    pub fn purge_expired(&mut self, now_ms: u64) -> u32 {
        let mut removed = 0;
        let mut next_expiry_ms = u64::MAX;
        let mut slot = 0;
        // A removal shifts a later key into `slot`, so the slot is looked at again; keys
        // only ever move backwards onto slots at or after `slot`, or onto slots already
        // passed (wrapping around), whose keys were live.
        while slot < self.slot_count() {
            let (slots, _) = self.parts();
            let Some(found) = self.index.get(slots, slot) else {
                slot += 1;
                continue;
            };
            match self.entry_at(found.record_at).expires_at_ms {
                Some(at) if at <= now_ms => {
                    self.remove_at(slot, found.record_at);
                    removed += 1;
                }
                expires => {
                    if let Some(at) = expires {
                        next_expiry_ms = next_expiry_ms.min(at);
                    }
                    slot += 1;
                }
            }
        }
        self.next_expiry_ms = next_expiry_ms;
        removed
    }

    /// Removes the expired keys among up to `max_slots` index slots from `cursor` on, so a
    /// shell can reclaim expired keys a little at a time (Redis's active expiry).
    /// Returns the cursor to continue from (0 once the end is reached) and the count
    /// removed.
    pub fn sweep_expired(&mut self, now_ms: u64, cursor: usize, max_slots: usize) -> (usize, u32) {
        let mut removed = 0;
        let mut slot = cursor;
        let mut examined = 0;
        while slot < self.slot_count() && examined < max_slots {
            examined += 1;
            let (slots, _) = self.parts();
            let Some(found) = self.index.get(slots, slot) else {
                slot += 1;
                continue;
            };
            if is_expired(self.entry_at(found.record_at).expires_at_ms, now_ms) {
                self.remove_at(slot, found.record_at);
                removed += 1;
            } else {
                slot += 1;
            }
        }
        let next = if slot >= self.slot_count() { 0 } else { slot };
        (next, removed)
    }

    /// Visits live keys with `prefix` from index slot `cursor` on, the way Redis's SCAN
    /// does: call with cursor 0 to start and again with each returned cursor until it
    /// returns 0. `visit` gets each key and returns `false` when it can take no more (its
    /// output buffer is full; that key is visited again next time). At least `count` slots
    /// holding keys are examined unless the end is reached or `visit` stops.
    ///
    /// Guarantee: a key present from the first call to the last is visited at least once,
    /// provided `visit` can take every key of a probe run (a run is a stretch of occupied
    /// slots, a few keys long on average). Keys may be visited more than once.
    ///
    /// Why it holds: a call ends at an empty slot `c` (or, when `visit` stops, at the
    /// start of the current run, which is empty-preceded). Every key after `c` has its home
    /// after `c` (a run never spans an empty slot), and keys only ever move towards their
    /// home, so no key after `c` can move to or before `c` between calls.
    pub fn scan(
        &self,
        cursor: u64,
        prefix: &[u8],
        count: usize,
        now_ms: u64,
        mut visit: impl FnMut(Entry<'_>) -> bool,
    ) -> u64 {
        let (slots, _) = self.parts();
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        let count = count.max(1);
        let mut examined = 0;
        // First slot of the current run, or of the next run after an empty slot.
        let mut run_start = start;
        let mut slot = start;
        while slot < self.slot_count() {
            match self.index.get(slots, slot) {
                None => {
                    if examined >= count {
                        return slot as u64;
                    }
                    run_start = slot + 1;
                }
                Some(found) => {
                    examined += 1;
                    let entry = self.entry_at(found.record_at);
                    let wanted =
                        entry.key.starts_with(prefix) && !is_expired(entry.expires_at_ms, now_ms);
                    if wanted && !visit(entry) {
                        // Restart next time from this run's first slot, if that makes
                        // progress; the run's earlier keys are then visited twice.
                        return if run_start > start { run_start } else { slot } as u64;
                    }
                }
            }
            slot += 1;
        }
        0
    }

    /// Reserves space for a record of the given shape, to be filled in by
    /// [`Store::fill_insert`] and made visible by [`Store::commit_insert`]. No other write
    /// may come in between (the commit would fail with [`InsertError::Stale`]).
    pub fn begin_insert(
        &mut self,
        key_len: usize,
        value_len: usize,
        version: u64,
        expires_at_ms: Option<u64>,
    ) -> Result<PendingInsert, InsertError> {
        self.check_sizes(key_len, value_len)
            .map_err(InsertError::Write)?;
        if self.len >= self.limits.max_keys {
            return Err(InsertError::Write(WriteError::Full(FullReason::Keys)));
        }
        let header = RecordHeader {
            key_len,
            value_len,
            version,
            expires_at_ms,
        };
        let len = header.chunk_len();
        if !self.arena.has_room(len, 0) {
            return Err(InsertError::Write(WriteError::Full(FullReason::Bytes)));
        }
        let at = self.alloc_chunk(len);
        let arena_capacity = self.arena.capacity_bytes();
        let (_, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        let body = record::write_header(arena_bytes, at, &header);
        // Not live until committed: a compaction meanwhile would drop it, which the
        // mutation count then reports as stale.
        record::write_chunk_word(
            arena_bytes,
            at,
            len,
            record::chunk_at(arena_bytes, at).1 & !FLAG_LIVE,
        );
        Ok(PendingInsert {
            at,
            body,
            filled: 0,
            key_len,
            expires_at_ms,
            mutations: self.mutations,
        })
    }

    /// Copies the next body bytes (key, then value) of `pending` from `bytes`; returns how
    /// many were taken (fewer than offered once the body is complete).
    pub fn fill_insert(&mut self, pending: &mut PendingInsert, bytes: &[u8]) -> usize {
        if pending.mutations != self.mutations {
            return 0;
        }
        let take = bytes.len().min(pending.remaining_bytes());
        let arena_capacity = self.arena.capacity_bytes();
        let (_, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        let at = pending.body.start + pending.filled;
        arena_bytes[at..at + take].copy_from_slice(&bytes[..take]);
        pending.filled += take;
        take
    }

    /// Makes a filled-in record visible. A duplicate key is refused and its space freed.
    pub fn commit_insert(&mut self, pending: PendingInsert) -> Result<(), InsertError> {
        self.commit_pending(pending, false)
    }

    /// Makes a filled-in record visible, replacing the key's record if there is one (a
    /// fuzzy snapshot may carry a key twice; the later copy is the newer).
    pub fn commit_insert_replacing(&mut self, pending: PendingInsert) -> Result<(), InsertError> {
        self.commit_pending(pending, true)
    }

    fn commit_pending(&mut self, pending: PendingInsert, replace: bool) -> Result<(), InsertError> {
        if pending.mutations != self.mutations {
            return Err(InsertError::Stale);
        }
        if pending.remaining_bytes() != 0 {
            return Err(InsertError::Incomplete);
        }
        let arena_capacity = self.arena.capacity_bytes();
        let (_, arena_bytes) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
        let (len, flags) = record::chunk_at(arena_bytes, pending.at);
        record::write_chunk_word(arena_bytes, pending.at, len, flags | FLAG_LIVE);
        let key_range = pending.body.start..pending.body.start + pending.key_len;
        let (_, arena_bytes) = self.parts();
        let hash = self.hash(&arena_bytes[key_range.clone()]);
        // The key is looked up while its own chunk is live but not yet indexed, so a match
        // can only be another record.
        let key = &self.parts().1[key_range.clone()];
        let mut lookup = self.lookup(key, hash);
        if let (true, Lookup::Found { slot, record_at }) = (replace, lookup) {
            self.remove_at(slot, record_at);
            let key = &self.parts().1[key_range];
            lookup = self.lookup(key, hash);
        }
        match lookup {
            Lookup::Found { .. } => {
                let (_, arena_bytes) =
                    split(self.memory.as_mut(), self.index_bytes, arena_capacity);
                self.arena.free(arena_bytes, pending.at);
                Err(InsertError::DuplicateKey)
            }
            Lookup::Vacant { slot } => {
                let (slots, _) = split(self.memory.as_mut(), self.index_bytes, arena_capacity);
                self.index.set(
                    slots,
                    slot,
                    Some(Slot {
                        tag: index::tag_of(hash),
                        record_at: pending.at,
                    }),
                );
                self.len += 1;
                self.mutations += 1;
                if let Some(at) = pending.expires_at_ms {
                    self.next_expiry_ms = self.next_expiry_ms.min(at);
                    self.with_expiry += 1;
                }
                Ok(())
            }
        }
    }
}

/// A key's record as tests compare stores: key, value, version, expiry.
#[cfg(test)]
pub(crate) type TestRecord = (std::vec::Vec<u8>, std::vec::Vec<u8>, u64, Option<u64>);

#[cfg(test)]
impl<M: AsRef<[u8]> + AsMut<[u8]>> Store<M> {
    /// Every record, expired or not, sorted by key: what two stores must agree on.
    pub(crate) fn sorted_records(&self) -> std::vec::Vec<TestRecord> {
        let mut all: std::vec::Vec<_> = self
            .iter()
            .map(|e| (e.key.to_vec(), e.value.to_vec(), e.version, e.expires_at_ms))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn full_store(seed: u64) -> Store<Vec<u8>> {
        let limits = StoreLimits {
            max_keys: 64,
            max_key_bytes: 8,
            max_value_bytes: 1,
            max_total_bytes: 64 * 40,
        };
        let mut store = Store::new(vec![0; limits.memory_bytes().unwrap()], limits, seed).unwrap();
        for i in 0..64u32 {
            store
                .set(&i.to_le_bytes(), b"v", SetOptions::default(), 0)
                .unwrap();
        }
        store
    }

    /// A scan whose visitor fills up in the middle of a run resumes at the run's start, so
    /// that a key displaced from its home is not lost when a deletion earlier in the run
    /// shifts it back past the stopping point.
    #[test]
    fn scan_stopped_mid_run_does_not_miss_a_key_shifted_back() {
        let mut cases = 0;
        for seed in 0..50 {
            let store = full_store(seed);
            let (slots, _) = store.parts();
            let occupied = |i: usize| store.index.get(slots, i).is_some();
            // A run starting after an empty slot, with a key at `s` whose home is the
            // run's first slot (so deleting that first key shifts it back).
            let n = store.slot_count();
            let found = (1..n - 1).find_map(|run_start| {
                if occupied(run_start - 1) || !occupied(run_start) {
                    return None;
                }
                (run_start + 1..n)
                    .take_while(|&s| occupied(s))
                    .find(|&s| {
                        let slot = store.index.get(slots, s).unwrap();
                        store.index.home(slot.tag) == run_start
                    })
                    .map(|s| (run_start, s))
            });
            let Some((run_start, s)) = found else {
                continue;
            };
            cases += 1;
            let first_key = store.entry_at_slot(run_start).unwrap().key.to_vec();
            let displaced = store.entry_at_slot(s).unwrap().key.to_vec();
            let mut store = store;
            // Visit from the empty slot before the run, taking keys up to just before `s`.
            let room = s - run_start;
            let mut taken = 0;
            let cursor = store.scan((run_start - 1) as u64, b"", usize::MAX, 0, |_| {
                taken += 1;
                taken <= room
            });
            assert!(store.delete(&first_key, 0));
            let mut seen = Vec::new();
            let mut cursor = cursor;
            while cursor != 0 {
                cursor = store.scan(cursor, b"", 8, 0, |entry| {
                    seen.push(entry.key.to_vec());
                    true
                });
            }
            assert!(
                seen.contains(&displaced),
                "seed {seed}: displaced key missed"
            );
        }
        assert!(cases > 10, "too few runs with a displaced key: {cases}");
    }

    /// A copy holds what the store held, versions and expiries included, answers lookups,
    /// takes writes of its own, and does not see the store's later writes.
    #[test]
    fn a_copy_is_the_store_as_it_was_and_goes_its_own_way() {
        let mut store = full_store(9);
        // Freed chunks and a compaction behind the bump pointer, and an expiry.
        for i in (0..64u32).step_by(3) {
            store.delete(&i.to_le_bytes(), 0);
        }
        let options = SetOptions {
            expiry: SetExpiry::At(500),
            ..SetOptions::default()
        };
        store.set(b"exp", b"e", options, 0).unwrap();
        let memory = vec![0; store.limits().memory_bytes().unwrap()];
        let mut copy = store.copy_into(memory).unwrap();
        assert_eq!(copy.sorted_records(), store.sorted_records());
        assert_eq!(copy.last_version(), store.last_version());
        assert_eq!(copy.len(), store.len());
        assert_eq!(copy.get(b"exp", 0).map(|e| e.value), Some(&b"e"[..]));

        store.set(b"later", b"x", SetOptions::default(), 0).unwrap();
        assert!(copy.get(b"later", 0).is_none());
        copy.set(b"mine", b"y", SetOptions::default(), 0).unwrap();
        assert!(store.get(b"mine", 0).is_none());
        assert!(store
            .copy_into(vec![0; 16])
            .is_err_and(|e| matches!(e, StoreInitError::MemoryTooSmall { .. })));
    }

    fn small_store() -> Store<Vec<u8>> {
        let limits = StoreLimits {
            max_keys: 4,
            max_key_bytes: 8,
            max_value_bytes: 64,
            max_total_bytes: 4 * 40,
        };
        Store::new(vec![0; limits.memory_bytes().unwrap()], limits, 3).unwrap()
    }

    fn put_all(store: &mut Store<Vec<u8>>, puts: &[(&[u8], &[u8])]) {
        for (key, value) in puts {
            store.set(key, value, SetOptions::default(), 0).unwrap();
        }
    }

    /// Whatever `check_puts` accepts, writing the batch succeeds; whatever it refuses on a
    /// store with distinct keys, writing would have failed somewhere.
    #[test]
    fn check_puts_accepts_exactly_the_batches_that_fit() {
        let mut store = small_store();
        put_all(&mut store, &[(b"a", b"1"), (b"b", b"2")]);
        let fits: [(&[u8], &[u8]); 2] = [(b"a", b"x"), (b"c", b"y")];
        assert_eq!(store.check_puts(fits.iter().copied()), Ok(()));
        let too_many: [(&[u8], &[u8]); 3] = [(b"c", b"1"), (b"d", b"2"), (b"e", b"3")];
        assert_eq!(
            store.check_puts(too_many.iter().copied()),
            Err(WriteError::Full(FullReason::Keys))
        );
        let too_big: [(&[u8], &[u8]); 2] = [(b"a", &[7; 60]), (b"c", &[7; 60])];
        assert_eq!(
            store.check_puts(too_big.iter().copied()),
            Err(WriteError::Full(FullReason::Bytes))
        );
        let mut copy = small_store();
        put_all(&mut copy, &[(b"a", b"1"), (b"b", b"2")]);
        copy.set(b"a", &[7; 60], SetOptions::default(), 0).unwrap();
        assert!(copy.set(b"c", &[7; 60], SetOptions::default(), 0).is_err());
        let oversized: [(&[u8], &[u8]); 1] = [(b"a", &[0; 65])];
        assert!(matches!(
            store.check_puts(oversized.iter().copied()),
            Err(WriteError::ValueTooLarge { .. })
        ));
        let before = store.used_bytes();
        assert_eq!(store.len(), 2);
        assert_eq!(store.used_bytes(), before, "checking changed nothing");
    }

    /// A key repeated in a batch is one key: four writes of two keys fit a store with room
    /// for two more keys.
    #[test]
    fn check_puts_counts_a_repeated_key_once() {
        let mut store = small_store();
        put_all(&mut store, &[(b"a", b"1"), (b"b", b"2")]);
        let repeated: [(&[u8], &[u8]); 4] =
            [(b"c", b"1"), (b"d", b"2"), (b"c", b"3"), (b"d", b"4")];
        assert_eq!(store.check_puts(repeated.iter().copied()), Ok(()));
        put_all(&mut store, &repeated);
        assert_eq!(store.len(), 4);
    }
}
