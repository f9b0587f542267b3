//! Chunk allocation inside the fixed arena.
//!
//! Records vary in size, so the arena needs an allocator, and it must be one that never
//! fails while enough bytes are free in total, or a store that is not full would refuse
//! writes. The scheme, cheapest step first:
//!
//! 1. **Exact-size free lists** for chunks up to [`SMALL_CHUNK_MAX_BYTES`], one list per
//!    4-byte size: overwriting a key with a value of the same size (the common case of a
//!    cache or a counter) reuses a freed chunk in O(1) with no fragmentation.
//! 2. **Bump allocation** from the untouched end of the arena.
//! 3. **A first-fit list** of larger free chunks, split on use.
//! 4. Otherwise the caller **compacts** (slides every live chunk down, see
//!    `Store::compact`), after which all free space is one run at the end and the request is
//!    guaranteed to fit if the total free bytes allow it.
//!
//! Compaction costs a pass over the live bytes, but it runs only when the arena is
//! exhausted by fragments, so its cost is amortized over at least as many bytes written
//! as it reclaims. Free chunks of 4 bytes (too small to hold a list link) stay unlisted
//! until compaction reclaims them.

use super::record::{self, FLAG_LIVE};

/// Largest chunk kept on an exact-size list; larger free chunks go to the first-fit list.
pub(crate) const SMALL_CHUNK_MAX_BYTES: usize = 1024;
const SMALL_CLASS_COUNT: usize = SMALL_CHUNK_MAX_BYTES / 4 + 1;
/// Smallest free chunk that can hold a list link (chunk word + link).
const LINKED_CHUNK_MIN_BYTES: usize = 8;
/// A list link or head meaning "none".
const NO_CHUNK: u32 = 0;

/// Allocation state of the arena. The arena's bytes themselves are passed into every call,
/// since they live in the caller's buffer beside the index.
#[derive(Debug, Clone)]
pub(crate) struct Arena {
    capacity_bytes: usize,
    /// Everything at or above this offset has never been handed out since the last reset
    /// or compaction.
    bump: usize,
    /// Bytes in live chunks: the measure the capacity limit is checked against.
    used_bytes: usize,
    /// Heads of the exact-size lists, indexed by chunk length / 4. Links are encoded as
    /// `offset / 4 + 1`, with 0 for none.
    small_heads: [u32; SMALL_CLASS_COUNT],
    large_head: u32,
}

fn encode_link(at: usize) -> u32 {
    (at / 4 + 1) as u32
}

fn decode_link(link: u32) -> Option<usize> {
    (link != NO_CHUNK).then(|| (link as usize - 1) * 4)
}

impl Arena {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            bump: 0,
            used_bytes: 0,
            small_heads: [NO_CHUNK; SMALL_CLASS_COUNT],
            large_head: NO_CHUNK,
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// End of the region that compaction must walk.
    pub fn bump(&self) -> usize {
        self.bump
    }

    /// Whether `len` more live bytes (after `releasing` bytes are freed) stay within capacity.
    pub fn has_room(&self, len: usize, releasing: usize) -> bool {
        self.used_bytes - releasing + len <= self.capacity_bytes
    }

    /// Forgets every chunk.
    pub fn reset(&mut self) {
        *self = Self::new(self.capacity_bytes);
    }

    /// After compaction: all live chunks are packed below `live_end`, and nothing is free.
    pub fn set_compacted(&mut self, live_end: usize) {
        self.bump = live_end;
        self.used_bytes = live_end;
        self.small_heads = [NO_CHUNK; SMALL_CLASS_COUNT];
        self.large_head = NO_CHUNK;
    }

    /// Hands out a chunk of exactly `len` bytes (a multiple of 4), marked live, or `None`
    /// when only compaction could make room. The caller writes the record into it.
    pub fn alloc(&mut self, arena: &mut [u8], len: usize) -> Option<usize> {
        debug_assert!(len % 4 == 0 && len >= 4);
        let at = self
            .pop_small(arena, len)
            .or_else(|| self.bump_alloc(len))
            .or_else(|| self.take_large(arena, len))?;
        self.used_bytes += len;
        record::write_chunk_word(arena, at, len, FLAG_LIVE);
        Some(at)
    }

    /// Returns the live chunk at `at` to the free space.
    pub fn free(&mut self, arena: &mut [u8], at: usize) {
        let (len, flags) = record::chunk_at(arena, at);
        debug_assert!(flags & FLAG_LIVE != 0, "double free at {at}");
        self.used_bytes -= len;
        if at + len == self.bump {
            self.bump = at;
        } else {
            self.release(arena, at, len);
        }
    }

    /// Shrinks the live chunk at `at` from `old_len` to `new_len` bytes in place, freeing the
    /// tail.
    pub fn shrink(&mut self, arena: &mut [u8], at: usize, old_len: usize, new_len: usize) {
        debug_assert!(new_len <= old_len && new_len % 4 == 0);
        if new_len == old_len {
            return;
        }
        self.used_bytes -= old_len - new_len;
        let tail = at + new_len;
        if at + old_len == self.bump {
            self.bump = tail;
        } else {
            self.release(arena, tail, old_len - new_len);
        }
    }

    /// Marks `len` bytes at `at` free and, when big enough to hold a link, lists them.
    fn release(&mut self, arena: &mut [u8], at: usize, len: usize) {
        record::write_chunk_word(arena, at, len, 0);
        if len < LINKED_CHUNK_MIN_BYTES {
            return;
        }
        let head = if len <= SMALL_CHUNK_MAX_BYTES {
            &mut self.small_heads[len / 4]
        } else {
            &mut self.large_head
        };
        record::write_u32(arena, at + 4, *head);
        *head = encode_link(at);
    }

    fn pop_small(&mut self, arena: &[u8], len: usize) -> Option<usize> {
        if len > SMALL_CHUNK_MAX_BYTES {
            return None;
        }
        let head = &mut self.small_heads[len / 4];
        let at = decode_link(*head)?;
        *head = record::read_u32(arena, at + 4);
        Some(at)
    }

    fn bump_alloc(&mut self, len: usize) -> Option<usize> {
        let at = self.bump;
        if len > self.capacity_bytes - at {
            return None;
        }
        self.bump = at + len;
        Some(at)
    }

    /// First fit on the large list; the remainder of the chosen chunk is freed again.
    fn take_large(&mut self, arena: &mut [u8], len: usize) -> Option<usize> {
        let mut previous: Option<usize> = None;
        let mut link = self.large_head;
        // Bounded: every listed chunk is distinct and the list has no cycles.
        while let Some(at) = decode_link(link) {
            let next = record::read_u32(arena, at + 4);
            let (chunk_len, _) = record::chunk_at(arena, at);
            if chunk_len >= len {
                match previous {
                    None => self.large_head = next,
                    Some(prev) => record::write_u32(arena, prev + 4, next),
                }
                if chunk_len > len {
                    self.release(arena, at + len, chunk_len - len);
                }
                return Some(at);
            }
            previous = Some(at);
            link = next;
        }
        None
    }
}
