//! The bounded replicated log, in a caller-owned buffer.
//!
//! Like Redis's replication backlog, the log has a fixed capacity in entries and in bytes.
//! It holds the entries after a *base* position (the last entry folded into the store and
//! forgotten); a follower that needs an entry at or before the base gets a snapshot instead.
//!
//! Layout: `max_entries` metadata records of 16 bytes (term `u64`, data offset `u32`, length
//! `u32`), indexed by `index % max_entries`, then a data ring of `max_bytes`. An entry's bytes
//! are contiguous: an entry that does not fit before the end of the ring starts again at
//! offset 0, and the gap is skipped. The ring's head and tail are read off the oldest and
//! newest entries' metadata, so there is no separate state to keep consistent.

/// Bytes of one entry's metadata.
const META_BYTES: usize = 16;

/// Capacity of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most entries held at once.
    pub max_entries: u32,
    /// Bytes of entry data held at once (at most 4 GiB).
    pub max_bytes: u32,
}

impl LogLimits {
    /// Bytes of memory a [`Log`] with these limits needs.
    pub fn memory_bytes(&self) -> usize {
        self.max_entries as usize * META_BYTES + self.max_bytes as usize
    }
}

/// Why a log could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogInitError {
    /// `max_entries` or `max_bytes` is zero.
    Empty,
    /// The memory is smaller than [`LogLimits::memory_bytes`].
    MemoryTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
}

/// Why an entry could not be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// No room in entries or bytes: discard old entries first (or slow the writer down).
    Full,
    /// The entry is larger than the whole data ring.
    TooLarge,
}

/// The log. See the [module documentation](self).
#[derive(Debug)]
pub struct Log<B> {
    memory: B,
    limits: LogLimits,
    /// Index of the oldest entry held; when the log is empty, `last_index() + 1`.
    first_index: u64,
    count: u64,
    /// Term of the entry at `first_index - 1` (the base).
    base_term: u64,
    /// The lowest index appended or truncated since [`Log::take_unreported`] was last
    /// called: from there on, a copy of the log on disk may differ from this one.
    unreported_from: Option<u64>,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Log<B> {
    /// An empty log whose base is index 0, term 0.
    pub fn new(memory: B, limits: LogLimits) -> Result<Self, LogInitError> {
        if limits.max_entries == 0 || limits.max_bytes == 0 {
            return Err(LogInitError::Empty);
        }
        let needed = limits.memory_bytes();
        let given = memory.as_ref().len();
        if given < needed {
            return Err(LogInitError::MemoryTooSmall { needed, given });
        }
        Ok(Self {
            memory,
            limits,
            first_index: 1,
            count: 0,
            base_term: 0,
            unreported_from: None,
        })
    }

    /// Index of the oldest entry held (one past the last when empty).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// Index of the newest entry, or the base index when empty.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.count - 1
    }

    /// Term of the newest entry, or of the base when empty.
    pub fn last_term(&self) -> u64 {
        self.term_at(self.last_index()).unwrap_or(self.base_term)
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The term of the entry at `index`, if it is the base or held.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index {
            return Some(self.base_term);
        }
        self.holds(index).then(|| self.meta(index).0)
    }

    fn holds(&self, index: u64) -> bool {
        index >= self.first_index && index < self.first_index + self.count
    }

    /// (term, offset, length) of a held entry.
    fn meta(&self, index: u64) -> (u64, usize, usize) {
        let at = (index % u64::from(self.limits.max_entries)) as usize * META_BYTES;
        let bytes = &self.memory.as_ref()[at..at + META_BYTES];
        let mut term = [0; 8];
        term.copy_from_slice(&bytes[..8]);
        let mut offset = [0; 4];
        offset.copy_from_slice(&bytes[8..12]);
        let mut len = [0; 4];
        len.copy_from_slice(&bytes[12..16]);
        (
            u64::from_le_bytes(term),
            u32::from_le_bytes(offset) as usize,
            u32::from_le_bytes(len) as usize,
        )
    }

    fn data_start(&self) -> usize {
        self.limits.max_entries as usize * META_BYTES
    }

    /// The term and bytes of a held entry.
    pub fn entry(&self, index: u64) -> Option<(u64, &[u8])> {
        if !self.holds(index) {
            return None;
        }
        let (term, offset, len) = self.meta(index);
        let start = self.data_start() + offset;
        Some((term, &self.memory.as_ref()[start..start + len]))
    }

    /// Where a new entry of `len` bytes would go in the data ring, if it fits.
    fn place(&self, len: usize) -> Option<usize> {
        let capacity = self.limits.max_bytes as usize;
        if self.count == 0 {
            return (len <= capacity).then_some(0);
        }
        if self.count >= u64::from(self.limits.max_entries) {
            return None;
        }
        let (_, head, _) = self.meta(self.first_index);
        let (_, newest, newest_len) = self.meta(self.last_index());
        let tail = newest + newest_len;
        if head < tail {
            // Data in [head, tail): room at the end, or else at the start.
            if tail + len <= capacity {
                Some(tail)
            } else if len <= head {
                Some(0)
            } else {
                None
            }
        } else {
            // Wrapped: data in [head, capacity) and [0, tail).
            (tail + len <= head).then_some(tail)
        }
    }

    /// Appends an entry of `term` whose bytes `write` fills (a buffer of `len` bytes), and
    /// returns its index.
    pub fn append_with(
        &mut self,
        term: u64,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<u64, AppendError> {
        if len > self.limits.max_bytes as usize {
            return Err(AppendError::TooLarge);
        }
        let offset = self.place(len).ok_or(AppendError::Full)?;
        let index = self.last_index() + 1;
        let at = (index % u64::from(self.limits.max_entries)) as usize * META_BYTES;
        let data_start = self.data_start();
        let memory = self.memory.as_mut();
        memory[at..at + 8].copy_from_slice(&term.to_le_bytes());
        memory[at + 8..at + 12].copy_from_slice(&(offset as u32).to_le_bytes());
        memory[at + 12..at + 16].copy_from_slice(&(len as u32).to_le_bytes());
        write(&mut memory[data_start + offset..data_start + offset + len]);
        self.count += 1;
        self.note_change(index);
        Ok(index)
    }

    /// Appends an entry holding `bytes`.
    pub fn append(&mut self, term: u64, bytes: &[u8]) -> Result<u64, AppendError> {
        self.append_with(term, bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// Whether an entry of `len` bytes would fit now.
    pub fn has_room(&self, len: usize) -> bool {
        self.place(len).is_some()
    }

    /// Removes the entries from `index` on (a conflict with the leader's log).
    pub fn truncate_from(&mut self, index: u64) {
        if index > self.last_index() {
            return;
        }
        self.note_change(index.max(self.first_index));
        if index < self.first_index {
            self.count = 0;
        } else {
            self.count = index - self.first_index;
        }
    }

    fn note_change(&mut self, index: u64) {
        self.unreported_from = Some(self.unreported_from.map_or(index, |from| from.min(index)));
    }

    /// The lowest index appended or truncated since the last [`Log::take_unreported`]: a
    /// persistent node must not discard entries from there on before its shell has written
    /// them.
    pub fn unreported_from(&self) -> Option<u64> {
        self.unreported_from
    }

    /// Returns [`Log::unreported_from`] and forgets it: the caller has taken note of every
    /// change (a shell persisting the log writes the entries from there to the end).
    pub fn take_unreported(&mut self) -> Option<u64> {
        self.unreported_from.take()
    }

    /// Forgets the entries up to and including `index`, which becomes the base.
    pub fn discard_through(&mut self, index: u64) {
        if index < self.first_index {
            return;
        }
        let index = index.min(self.last_index());
        self.base_term = self.term_at(index).unwrap_or(self.base_term);
        self.count -= index + 1 - self.first_index;
        self.first_index = index + 1;
    }

    /// Empties the log and makes (`index`, `term`) its base: after a snapshot of the state
    /// through `index` has been installed. Not counted as an unreported change: a node
    /// whose log is reset tells its shell to write a whole checkpoint instead.
    pub fn reset(&mut self, index: u64, term: u64) {
        self.count = 0;
        self.first_index = index + 1;
        self.base_term = term;
        self.unreported_from = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    fn wrapped<B: AsRef<[u8]> + AsMut<[u8]>>(log: &Log<B>) -> bool {
        let (_, head, _) = log.meta(log.first_index());
        let (_, newest, _) = log.meta(log.last_index());
        newest < head
    }

    /// The log against a VecDeque model, through random appends, truncations and discards.
    #[test]
    fn matches_a_model() {
        use proptest::prelude::*;
        let limits = LogLimits {
            max_entries: 7,
            max_bytes: 64,
        };
        proptest!(|(ops in proptest::collection::vec((0u8..4, 1usize..30, any::<u8>()), 1..300))| {
            let mut log = Log::new(vec![0u8; limits.memory_bytes()], limits).unwrap();
            let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            let mut first = 1u64;
            let mut base_term = 0u64;
            let mut term = 1u64;
            for (op, len, fill) in ops {
                match op {
                    0 | 1 => {
                        let bytes = vec![fill; len];
                        match log.append(term, &bytes) {
                            Ok(index) => {
                                prop_assert_eq!(index, first + model.len() as u64);
                                model.push_back((term, bytes));
                            }
                            Err(AppendError::Full) => {
                                // Never when empty; and never while more than twice the
                                // entry is free in an unwrapped ring (one side of it holds
                                // half the free space).
                                prop_assert!(!model.is_empty());
                                let used: usize = model.iter().map(|(_, b)| b.len()).sum();
                                prop_assert!(model.len() == 7 || used + 2 * len > 64 || wrapped(&log));
                            }
                            Err(AppendError::TooLarge) => prop_assert!(len > 64),
                        }
                    }
                    2 => {
                        let cut = first + (fill as u64 % (model.len() as u64 + 1));
                        log.truncate_from(cut);
                        model.truncate((cut - first) as usize);
                        term += 1;
                    }
                    _ => {
                        if !model.is_empty() {
                            let upto = first + (fill as u64 % model.len() as u64);
                            log.discard_through(upto);
                            while first <= upto {
                                base_term = model.pop_front().unwrap().0;
                                first += 1;
                            }
                        }
                    }
                }
                prop_assert_eq!(log.first_index(), first);
                prop_assert_eq!(log.len(), model.len() as u64);
                prop_assert_eq!(log.term_at(first - 1), Some(base_term));
                for (i, (t, bytes)) in model.iter().enumerate() {
                    let index = first + i as u64;
                    prop_assert_eq!(log.entry(index), Some((*t, &bytes[..])));
                }
                prop_assert_eq!(log.entry(first + model.len() as u64), None);
            }
        });
    }
}
