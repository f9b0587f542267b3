//! The request ids of one RESP connection, and the command each answers.
//!
//! A connection hands out ids in order and the node answers each once, mostly in order
//! (a quorum write may be answered after later reads). So the ids in flight are a window
//! that moves forward, held as a queue indexed by `id - base` rather than a hash map: a
//! pipelined command then costs no hashing to send and none to match its answer, which
//! showed in profiles of `redis-benchmark -P 16`.

use std::collections::VecDeque;

/// Marks an id that was answered (or never sent) in the window.
const DONE: u64 = u64::MAX;

/// Ids in flight and the sequence number of the command each belongs to.
#[derive(Debug)]
pub struct RequestIds {
    /// The id of `seqs[0]`.
    base: u32,
    /// From `base` on, each id's command, or [`DONE`].
    seqs: VecDeque<u64>,
    /// Ids in the window not yet answered.
    outstanding: usize,
}

impl Default for RequestIds {
    fn default() -> Self {
        // Id 0 is never used: the node answers an undecodable request with id 0.
        Self {
            base: 1,
            seqs: VecDeque::new(),
            outstanding: 0,
        }
    }
}

impl RequestIds {
    /// A new id for a request of command `seq`.
    pub fn assign(&mut self, seq: u64) -> u32 {
        let mut id = self.next_id();
        if id == 0 {
            // Wrapped around: 0 stays unused, as a slot already done.
            self.seqs.push_back(DONE);
            id = self.next_id();
        }
        self.seqs.push_back(seq);
        self.outstanding += 1;
        id
    }

    /// The command `id` belongs to, once: `None` if it is unknown or was taken already.
    pub fn take(&mut self, id: u32) -> Option<u64> {
        let at = id.wrapping_sub(self.base) as usize;
        let slot = self.seqs.get_mut(at)?;
        if *slot == DONE {
            return None;
        }
        let seq = std::mem::replace(slot, DONE);
        self.outstanding -= 1;
        while self.seqs.front() == Some(&DONE) {
            self.seqs.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        Some(seq)
    }

    /// Ids not yet answered.
    pub fn len(&self) -> usize {
        self.outstanding
    }

    fn next_id(&self) -> u32 {
        self.base.wrapping_add(self.seqs.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_any_order_find_their_commands_once() {
        let mut ids = RequestIds::default();
        let a = ids.assign(10);
        let b = ids.assign(10);
        let c = ids.assign(11);
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.take(b), Some(10));
        assert_eq!(ids.take(b), None);
        assert_eq!(ids.take(c), Some(11));
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.take(a), Some(10));
        assert_eq!(ids.len(), 0);
        // Unknown ids: 0, one never assigned, and one answered long ago.
        assert_eq!(ids.take(0), None);
        assert_eq!(ids.take(99), None);
        assert_eq!(ids.take(a), None);
        assert_eq!(ids.assign(12), 4);
        assert_eq!(ids.take(4), Some(12));
    }

    #[test]
    fn ids_wrap_around_without_using_zero() {
        let mut ids = RequestIds {
            base: u32::MAX - 1,
            ..RequestIds::default()
        };
        let first = ids.assign(1);
        let second = ids.assign(2);
        let third = ids.assign(3);
        assert_eq!((first, second, third), (u32::MAX - 1, u32::MAX, 1));
        assert_eq!(ids.take(third), Some(3));
        assert_eq!(ids.take(first), Some(1));
        assert_eq!(ids.take(0), None);
        assert_eq!(ids.take(second), Some(2));
        assert_eq!(ids.len(), 0);
        assert_eq!(ids.assign(4), 2);
    }

    #[test]
    fn a_request_never_sent_can_be_taken_back() {
        let mut ids = RequestIds::default();
        let sent = ids.assign(1);
        let failed = ids.assign(2);
        assert_eq!(ids.take(failed), Some(2));
        assert_eq!(ids.len(), 1);
        assert_eq!(ids.take(sent), Some(1));
        assert_eq!(ids.len(), 0);
    }
}
