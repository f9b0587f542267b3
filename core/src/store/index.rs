//! The hash index: an open-addressing table of 8-byte slots with linear probing.
//!
//! Why this and not hashbrown: the store must work with no allocator at all, inside one
//! caller-owned buffer, and its SCAN cursor must keep Redis's promise (a key present for
//! the whole scan is returned) although the table changes between calls. Linear probing
//! with *backward-shift deletion* keeps no tombstones, so the table never needs rehashing,
//! and it keeps one invariant that SCAN relies on: every slot between a key's home slot
//! and the slot it sits in is occupied. Hence a key never moves across an empty slot, and
//! a cursor that stops on an empty slot cannot be overtaken by a key moving backwards
//! (see `Store::scan`).
//!
//! A slot is a little-endian `u64`: the low 32 bits link to the record (`offset / 4 + 1`,
//! 0 for an empty slot), the high 32 bits are the top half of the key's hash (the *tag*).
//! The tag picks the home slot by multiply-shift (`tag * slot_count >> 32`, so any slot
//! count works, not just powers of two) and filters key comparisons: a probe reads the
//! record, and so touches a second cache line, only when the tag matches.

use super::limits::SLOT_BYTES;

/// One decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub tag: u32,
    /// Arena offset of the record.
    pub record_at: usize,
}

impl Slot {
    fn encode(self) -> u64 {
        (u64::from(self.tag) << 32) | (self.record_at / 4 + 1) as u64
    }

    fn decode(raw: u64) -> Option<Slot> {
        let link = raw as u32;
        (link != 0).then(|| Slot {
            tag: (raw >> 32) as u32,
            record_at: (link as usize - 1) * 4,
        })
    }
}

/// The tag of a 64-bit hash.
pub(crate) fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Slot arithmetic over the index bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Index {
    slot_count: u32,
}

impl Index {
    pub fn new(slot_count: u32) -> Self {
        Self { slot_count }
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count as usize
    }

    /// The slot a key with this tag probes first.
    pub fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * u64::from(self.slot_count)) >> 32) as usize
    }

    /// The slot after `i`, wrapping around.
    pub fn next(&self, i: usize) -> usize {
        if i + 1 == self.slot_count as usize {
            0
        } else {
            i + 1
        }
    }

    pub fn get(&self, slots: &[u8], i: usize) -> Option<Slot> {
        let mut raw = [0; SLOT_BYTES];
        raw.copy_from_slice(&slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES]);
        Slot::decode(u64::from_le_bytes(raw))
    }

    pub fn set(&self, slots: &mut [u8], i: usize, slot: Option<Slot>) {
        let raw = slot.map_or(0, Slot::encode);
        slots[i * SLOT_BYTES..(i + 1) * SLOT_BYTES].copy_from_slice(&raw.to_le_bytes());
    }

    /// Empties slot `i` and shifts later keys of the same run back, so that no run has a
    /// hole (the invariant lookups and scans rely on).
    pub fn remove(&self, slots: &mut [u8], mut hole: usize) {
        let mut j = hole;
        // Bounded: the table always has an empty slot (load factor <= 0.8).
        for _ in 0..self.slot_count {
            j = self.next(j);
            let Some(slot) = self.get(slots, j) else {
                break;
            };
            let home = self.home(slot.tag);
            // The key at j may move into the hole only if its home is not in (hole, j],
            // cyclically: moving it would otherwise put it before its home.
            let home_in_between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !home_in_between {
                self.set(slots, hole, Some(slot));
                hole = j;
            }
        }
        self.set(slots, hole, None);
    }
}
