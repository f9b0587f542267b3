//! The undo journal: what a node's uncommitted writes overwrote, until they commit.
//!
//! A leader applies a write to its store when it accepts it, so that a `leader`
//! acknowledgement goes out at once. If the leader is deposed before the write commits, a
//! new leader may replace the entry, and the store must lose its effects. Without this
//! journal the only way back was a snapshot from the new leader: until one came, the
//! deposed node's store was *stale*, and a node with a stale store may not stand for
//! election. When no live node had a usable store (the failover benchmark met this: a
//! deposed leader and a follower halfway through loading a snapshot), the cluster stayed
//! without a leader (docs/protocol.md 4.10).
//!
//! With the journal, before an entry past the commit index changes a key, the node records
//! the key's previous record (value, version, expiry) or its absence, and the store's
//! version counter. A new leader's entries that replace applied ones roll the store back,
//! newest record first, to the state after the last entry kept: exactly the store of any
//! replica that applied that log, versions included. The node is then an ordinary follower.
//!
//! Records sit in log order in one caller-owned byte buffer. Committing drops them from
//! the front (a committed entry is never replaced); rolling back pops them from the back.
//! A record that does not fit (the buffer is full of uncommitted writes, or a `Clear` of a
//! store larger than the buffer) makes the journal give up on that entry and every one
//! before it: a truncation that reaches them leaves the store stale, as without a journal.

use crate::store::{Entry, Store, WriteError};

/// Fixed part of a record: index, version counter before, flags, key and value lengths,
/// version, expiry.
const HEAD_BYTES: usize = 8 + 8 + 1 + 4 + 4 + 8 + 8;
/// The record's total length, repeated after it so that the last record can be found.
const TAIL_BYTES: usize = 4;
const FLAG_PRESENT: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// Why a rollback could not be made: the node's store must come from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RollBackError {
    /// The journal gave up on an entry in the range (it did not fit).
    NotJournaled,
    /// The store refused a record back (only a bug makes this happen: each state restored
    /// is one the store held before).
    Store(WriteError),
}

/// One key's record before an entry changed it.
struct Record<'a> {
    index: u64,
    version_before: u64,
    previous: Option<Entry<'a>>,
    len: usize,
}

/// See the [module documentation](self). `L` is the caller-owned buffer.
#[derive(Debug)]
pub(crate) struct UndoJournal<L> {
    memory: L,
    /// Records occupy `start..end` of `memory`, oldest first.
    start: usize,
    end: usize,
    /// Rolling back to just before an entry at or after this index is possible: every entry
    /// from here to the applied index was journaled.
    first_undoable: u64,
}

impl<L: AsRef<[u8]> + AsMut<[u8]>> UndoJournal<L> {
    /// An empty journal in `memory`, with nothing undoable before `first_undoable`.
    pub(crate) fn new(memory: L, first_undoable: u64) -> Self {
        Self {
            memory,
            start: 0,
            end: 0,
            first_undoable,
        }
    }

    /// Forgets every record; entries before `first_undoable` cannot be undone (the store was
    /// replaced, or holds effects no record covers).
    pub(crate) fn reset(&mut self, first_undoable: u64) {
        self.start = 0;
        self.end = 0;
        self.first_undoable = first_undoable;
    }

    /// Whether the store can be rolled back to just before entry `from`.
    pub(crate) fn can_undo_from(&self, from: u64) -> bool {
        from >= self.first_undoable
    }

    /// Bytes held by records.
    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Drops the records of entries through `committed`, which no leader can replace.
    pub(crate) fn forget_through(&mut self, committed: u64) {
        while self.start < self.end {
            let record = self.record_at(self.start);
            if record.index > committed {
                break;
            }
            self.start += record.len;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Records `previous`, the record of `key` before entry `index` changes it (`None`: the
    /// key is absent), and the store's version counter before the entry. Returns whether it
    /// fitted; if not, the journal gives up on every entry through `index`.
    pub(crate) fn save(
        &mut self,
        index: u64,
        version_before: u64,
        key: &[u8],
        previous: Option<Entry<'_>>,
    ) -> bool {
        let value: &[u8] = previous.map_or(&[], |entry| entry.value);
        let len = HEAD_BYTES + key.len() + value.len() + TAIL_BYTES;
        let capacity = self.memory.as_ref().len();
        if self.end + len > capacity {
            if self.end - self.start + len > capacity || u32::try_from(len).is_err() {
                self.give_up(index);
                return false;
            }
            // Slide the records to the front: they are the uncommitted window, usually far
            // smaller than the buffer.
            self.memory.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut flags = 0;
        let (version, expires_at_ms) = match previous {
            Some(entry) => {
                flags |= FLAG_PRESENT;
                if entry.expires_at_ms.is_some() {
                    flags |= FLAG_EXPIRES;
                }
                (entry.version, entry.expires_at_ms.unwrap_or(0))
            }
            None => (0, 0),
        };
        let out = &mut self.memory.as_mut()[self.end..self.end + len];
        let (head, rest) = out.split_at_mut(HEAD_BYTES);
        head[0..8].copy_from_slice(&index.to_le_bytes());
        head[8..16].copy_from_slice(&version_before.to_le_bytes());
        head[16] = flags;
        head[17..21].copy_from_slice(&(key.len() as u32).to_le_bytes());
        head[21..25].copy_from_slice(&(value.len() as u32).to_le_bytes());
        head[25..33].copy_from_slice(&version.to_le_bytes());
        head[33..41].copy_from_slice(&expires_at_ms.to_le_bytes());
        let (body, tail) = rest.split_at_mut(key.len() + value.len());
        body[..key.len()].copy_from_slice(key);
        body[key.len()..].copy_from_slice(value);
        tail.copy_from_slice(&(len as u32).to_le_bytes());
        self.end += len;
        true
    }

    /// Entries through `index` changed the store without records: none of them can be
    /// undone.
    pub(crate) fn give_up(&mut self, index: u64) {
        self.reset(self.first_undoable.max(index + 1));
    }

    /// Undoes every recorded change of entries from `from` on, newest first, and puts the
    /// version counter back; the store is then as it was after entry `from - 1`. Returns
    /// how many records were undone (none if those entries changed nothing).
    pub(crate) fn roll_back<M: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        store: &mut Store<M>,
        from: u64,
    ) -> Result<usize, RollBackError> {
        if !self.can_undo_from(from) {
            return Err(RollBackError::NotJournaled);
        }
        let mut version_before = None;
        let mut undone = 0;
        while self.start < self.end {
            let mut tail = [0; TAIL_BYTES];
            tail.copy_from_slice(&self.memory.as_ref()[self.end - TAIL_BYTES..self.end]);
            let at = self.end - u32::from_le_bytes(tail) as usize;
            let record = self.record_at(at);
            if record.index < from {
                break;
            }
            let key = key_at(self.memory.as_ref(), at);
            let restored = match record.previous {
                Some(entry) => store.restore(entry),
                None => {
                    store.delete(key, 0);
                    Ok(())
                }
            };
            version_before = Some(record.version_before);
            undone += 1;
            self.end = at;
            if let Err(error) = restored {
                self.reset(u64::MAX);
                return Err(RollBackError::Store(error));
            }
        }
        if let Some(version) = version_before {
            store.set_last_version(version);
        }
        Ok(undone)
    }

    fn record_at(&self, at: usize) -> Record<'_> {
        let bytes = &self.memory.as_ref()[at..];
        let u64_at = |i: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(word)
        };
        let u32_at = |i: usize| {
            let mut word = [0; 4];
            word.copy_from_slice(&bytes[i..i + 4]);
            u32::from_le_bytes(word) as usize
        };
        let flags = bytes[16];
        let key_len = u32_at(17);
        let value_len = u32_at(21);
        let key = &bytes[HEAD_BYTES..HEAD_BYTES + key_len];
        let value = &bytes[HEAD_BYTES + key_len..HEAD_BYTES + key_len + value_len];
        Record {
            index: u64_at(0),
            version_before: u64_at(8),
            previous: (flags & FLAG_PRESENT != 0).then(|| Entry {
                key,
                value,
                version: u64_at(25),
                expires_at_ms: (flags & FLAG_EXPIRES != 0).then(|| u64_at(33)),
            }),
            len: HEAD_BYTES + key_len + value_len + TAIL_BYTES,
        }
    }
}

/// The key of the record at `at`.
fn key_at(memory: &[u8], at: usize) -> &[u8] {
    let mut word = [0; 4];
    word.copy_from_slice(&memory[at + 17..at + 21]);
    let key_len = u32::from_le_bytes(word) as usize;
    &memory[at + HEAD_BYTES..at + HEAD_BYTES + key_len]
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::cluster::test_support::{self, depose_a_leader_after, lost_writes};
    use crate::cluster::NodeEvent;
    use crate::store::{SetExpiry, SetOptions};
    use crate::wire::{NodeId, Request};

    fn put(store: &mut Store<Vec<u8>>, key: &[u8], value: &[u8], expiry: Option<u64>) {
        let options = SetOptions {
            expiry: expiry.map_or(SetExpiry::Clear, SetExpiry::At),
            ..SetOptions::default()
        };
        store.set(key, value, options, 0).unwrap();
    }

    /// Journals a put of `key` as entry `index`, then makes it.
    fn journaled_put(
        journal: &mut UndoJournal<Vec<u8>>,
        store: &mut Store<Vec<u8>>,
        index: u64,
        key: &[u8],
        value: &[u8],
    ) -> bool {
        let saved = journal.save(index, store.last_version(), key, store.get(key, 0));
        put(store, key, value, None);
        saved
    }

    /// The liveness gap of docs/protocol.md 4.10: without the journal, a deposed leader's
    /// store is stale and it may not stand until a snapshot comes; with it, its store is
    /// the new leader's, versions included, and it may lead.
    #[test]
    fn a_deposed_leader_undoes_what_the_new_leader_replaced_and_may_stand() {
        let (mut net, old) = depose_a_leader_after(1024, &lost_writes());
        let deposed = net.at(old);
        assert!(!net.nodes[deposed].store_stale);
        assert!(net.events.iter().any(|(id, event)| *id == NodeId(old)
            && matches!(event, NodeEvent::RolledBack { entries: 2, .. })));
        assert!(!net
            .events
            .iter()
            .any(|(_, event)| matches!(event, NodeEvent::StoreStale { .. })));
        let new = net.leader().unwrap();
        assert_eq!(
            net.nodes[deposed].store().sorted_records(),
            net.nodes[net.at(new)].store().sorted_records()
        );
        assert_eq!(
            net.nodes[deposed].store().last_version(),
            net.nodes[net.at(new)].store().last_version()
        );

        // The old leader may stand again: cut off the new one, and one of the two others
        // leads, whichever wins.
        net.isolate(new);
        net.run(2_000);
        let next = net.leader().filter(|&id| id != new);
        assert!(next.is_some(), "no leader without the new one");
        assert!(net.nodes[deposed].store().get(b"c", 0).is_some());
        assert!(net.nodes[deposed].store().get(b"b", 0).is_none());
    }

    #[test]
    fn without_a_journal_a_deposed_leader_waits_for_a_snapshot() {
        let (net, old) = depose_a_leader_after(0, &lost_writes());
        assert!(
            net.events
                .iter()
                .any(|(id, event)| *id == NodeId(old)
                    && matches!(event, NodeEvent::StoreStale { .. }))
        );
    }

    /// Found by the simulator: a leader deposed just after proposing a membership change
    /// waited for a snapshot although the entry changed nothing in its store.
    #[test]
    fn entries_that_change_nothing_need_no_journal_to_undo() {
        let add = Request::AddMember {
            node_id: NodeId(4),
            address: b"n4:7380",
        };
        let (net, old) = depose_a_leader_after(0, &[add]);
        assert!(net.events.iter().any(|(id, event)| *id == NodeId(old)
            && matches!(event, NodeEvent::RolledBack { entries: 1, .. })));
        assert!(!net.nodes[net.at(old)].store_stale);
    }

    /// A lone voter's entries commit as they are appended: it keeps no records, where a
    /// leader of three keeps one for each write not yet committed.
    #[test]
    fn a_lone_voter_journals_nothing_and_a_leader_of_three_journals_uncommitted_writes() {
        let config =
            crate::cluster::NodeConfig::new(NodeId(1), crate::wire::ClusterId(7), &[NodeId(1)]);
        let log = test_support::log(test_support::log_limits(2048));
        let mut lone = crate::cluster::Node::new(config, test_support::store(1), log, 0);
        lone.set_undo_memory(vec![0; 1024]);
        let mut net = test_support::Net::new(vec![lone]);
        net.run(1_000);
        assert_eq!(net.leader(), Some(1));
        for request in lost_writes() {
            assert!(net.request(1, request).is_some());
        }
        let node = &net.nodes[0];
        assert!(node.store().get(b"a", 0).is_some());
        assert_eq!(
            node.undo.as_ref().map(|journal| journal.used_bytes()),
            Some(0)
        );

        // Three voters, the leader cut off: its writes wait for a majority, journaled.
        let (mut net, _) = depose_a_leader_after(1024, &[]);
        let leader = net.leader().expect("a leader");
        net.isolate(leader);
        for request in lost_writes() {
            assert!(net.request(leader, request).is_some());
        }
        let leader = &net.nodes[net.at(leader)];
        assert!(
            leader
                .undo
                .as_ref()
                .map_or(0, |journal| journal.used_bytes())
                > 0
        );
    }

    #[test]
    fn rolling_back_restores_values_versions_expiries_and_absences() {
        let mut store = test_support::store(1);
        put(&mut store, b"a", b"1", Some(500));
        put(&mut store, b"b", b"2", None);
        let before = store.sorted_records();
        let version_before = store.last_version();
        let mut journal = UndoJournal::new(vec![0; 1024], 3);
        assert!(journaled_put(&mut journal, &mut store, 3, b"a", b"one"));
        assert!(journaled_put(&mut journal, &mut store, 4, b"c", b"new"));
        assert!(journaled_put(&mut journal, &mut store, 4, b"a", b"twice"));
        let saved = journal.save(5, store.last_version(), b"b", store.get(b"b", 0));
        assert!(saved);
        store.delete(b"b", 0);

        journal.roll_back(&mut store, 3).unwrap();
        assert_eq!(store.sorted_records(), before);
        assert_eq!(store.last_version(), version_before);
        assert_eq!(journal.used_bytes(), 0);
    }

    #[test]
    fn rolling_back_keeps_the_entries_before_and_committing_forgets() {
        let mut store = test_support::store(1);
        let mut journal = UndoJournal::new(vec![0; 1024], 1);
        journaled_put(&mut journal, &mut store, 1, b"a", b"1");
        let after_first = store.sorted_records();
        journaled_put(&mut journal, &mut store, 2, b"a", b"2");
        journaled_put(&mut journal, &mut store, 3, b"b", b"3");
        journal.roll_back(&mut store, 2).unwrap();
        assert_eq!(store.sorted_records(), after_first);

        journal.forget_through(1);
        assert_eq!(journal.used_bytes(), 0);
    }

    #[test]
    fn a_record_that_does_not_fit_gives_up_on_its_entry_and_all_before() {
        let mut store = test_support::store(1);
        let mut journal = UndoJournal::new(vec![0; 3 * (HEAD_BYTES + TAIL_BYTES + 2)], 1);
        assert!(journaled_put(&mut journal, &mut store, 1, b"a", b"1"));
        assert!(journaled_put(&mut journal, &mut store, 2, b"b", b"2"));
        assert!(journaled_put(&mut journal, &mut store, 3, b"c", b"3"));
        // Full of uncommitted records: entry 4 cannot be journaled.
        assert!(!journaled_put(&mut journal, &mut store, 4, b"d", b"4"));
        assert!(!journal.can_undo_from(4));
        assert_eq!(
            journal.roll_back(&mut store, 2),
            Err(RollBackError::NotJournaled)
        );
        assert!(journal.can_undo_from(5));
    }

    #[test]
    fn committed_records_make_room_by_sliding_the_rest_to_the_front() {
        let mut store = test_support::store(1);
        let record = HEAD_BYTES + TAIL_BYTES + 2;
        let mut journal = UndoJournal::new(vec![0; 3 * record], 1);
        for index in 1..=3 {
            assert!(journaled_put(&mut journal, &mut store, index, b"k", b"v"));
        }
        let after_two = {
            let mut copy = test_support::store(1);
            put(&mut copy, b"k", b"v", None);
            put(&mut copy, b"k", b"v", None);
            copy.get(b"k", 0).map(|e| e.version)
        };
        journal.forget_through(2);
        // One record left, at the end of the buffer: the next two slide it to the front.
        assert!(journaled_put(&mut journal, &mut store, 4, b"k", b"w"));
        assert!(journaled_put(&mut journal, &mut store, 5, b"k", b"x"));
        journal.roll_back(&mut store, 3).unwrap();
        assert_eq!(store.get(b"k", 0).map(|e| e.version), after_two);
        assert_eq!(store.get(b"k", 0).map(|e| e.value), Some(&b"v"[..]));
    }
}
