//! Requests that wait: for a commit, a read confirmation, a forwarded answer or a leader.
//!
//! The core holds no variable-size data for a waiting request. The shell holds the bytes
//! (the reply computed when the request arrived, or the request itself while no leader is
//! known) under a [`Ticket`]; the core holds a fixed-size record saying what the ticket
//! waits for and until when, and later tells the shell to send the held bytes
//! ([`TicketEvent::Release`]), to send other bytes instead (an error, or the leader's
//! answer: [`TicketEvent::Reply`]), or to submit the request again
//! ([`TicketEvent::Resubmit`]). Every ticket ends in exactly one event, so the event queue
//! never needs more room than there are tickets.

use heapless::{Deque, Vec};

use crate::wire::{ErrorCode, NodeId};

/// A waiting request, as the shell knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Where a request's answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// A client of this node, whose request had this id.
    Client { request_id: u32 },
    /// A follower that forwarded a client's request under this id.
    Peer { node: NodeId, forward_id: u64 },
}

/// What a ticket waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A write: the entry at `index` of `term` must commit (if `quorum`) and be on the
    /// leader's disk (if `disk`).
    Commit {
        index: u64,
        term: u64,
        quorum: bool,
        disk: bool,
    },
    /// A linearizable read on the leader: everything up to `index` must commit, and a
    /// majority must have answered heartbeat round `round` of `term` (proving that no newer
    /// leader existed when the read was served).
    Read { index: u64, round: u64, term: u64 },
    /// A request forwarded to the leader `to`; its answer comes back as a `ForwardReply`.
    Forwarded { to: NodeId },
    /// A request held until a leader is known.
    Leader,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    pub ticket: Ticket,
    pub reply_to: ReplyTo,
    pub wait: Wait,
    pub deadline_ms: u64,
}

/// How a ticket ended, queued until the shell polls it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    Release,
    Fail {
        code: ErrorCode,
        detail: &'static str,
    },
    Resubmit,
}

/// What the shell must do for a ticket. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketEvent {
    /// Send the bytes held for the ticket to its requester.
    Release {
        /// The ticket.
        ticket: Ticket,
    },
    /// Send the first `len` bytes of the buffer passed to `poll_ticket_event` to the
    /// ticket's requester instead of what is held.
    Reply {
        /// The ticket.
        ticket: Ticket,
        /// Bytes written.
        len: usize,
    },
    /// Submit the held request again (a leader is now known).
    Resubmit {
        /// The ticket.
        ticket: Ticket,
    },
}

/// Fixed-capacity table of waiting requests, `N` at most (at most 65,536).
#[derive(Debug)]
pub(crate) struct Tickets<const N: usize> {
    slots: [Option<Pending>; N],
    free: Vec<u16, N>,
    /// Counts issued tickets, so a ticket's number is never reused.
    issued: u64,
    endings: Deque<(Pending, Ending), N>,
}

impl<const N: usize> Tickets<N> {
    /// A table whose ticket numbers start at `first` (below 2^40). A node numbers the
    /// requests it forwards with its tickets, so a restarted node must not reuse the numbers
    /// of its previous life: an answer the leader sends late, for a request of that life,
    /// would be taken as the answer to a new request with the same number (found by the
    /// simulator: a GET answered with a compare-and-set's `VersionMismatch`). A node starts
    /// its numbering at a point drawn from its seed and the time it starts.
    pub fn starting_at(first: u64) -> Self {
        let mut free = Vec::new();
        for slot in (0..N.min(1 << 16)).rev() {
            let _ = free.push(slot as u16);
        }
        Self {
            slots: [const { None }; N],
            free,
            issued: first & ((1 << 40) - 1),
            endings: Deque::new(),
        }
    }

    /// Opens a ticket, or `None` when `N` requests already wait.
    pub fn open(&mut self, reply_to: ReplyTo, wait: Wait, deadline_ms: u64) -> Option<Ticket> {
        let slot = self.free.pop()?;
        self.issued += 1;
        let ticket = Ticket((self.issued << 16) | u64::from(slot));
        self.slots[usize::from(slot)] = Some(Pending {
            ticket,
            reply_to,
            wait,
            deadline_ms,
        });
        Some(ticket)
    }

    fn slot_of(ticket: Ticket) -> usize {
        (ticket.0 & 0xFFFF) as usize
    }

    /// The waiting request with this ticket.
    pub fn get(&self, ticket: Ticket) -> Option<&Pending> {
        self.slots
            .get(Self::slot_of(ticket))?
            .as_ref()
            .filter(|pending| pending.ticket == ticket)
    }

    /// Ends every waiting request for which `decide` returns an ending.
    ///
    /// This scan and `earliest_deadline_ms` stop once they have seen every waiting request:
    /// tickets take the lowest free slot first (the free list is a stack that starts in
    /// order and takes slots back on top), so waiting requests sit in the low slots. A
    /// shell's node scans on every commit and every timer re-arm, with thousands of slots.
    pub fn end_where(&mut self, mut decide: impl FnMut(&Pending) -> Option<Ending>) {
        let mut left = self.waiting();
        for slot in 0..N {
            if left == 0 {
                break;
            }
            let Some(pending) = self.slots[slot] else {
                continue;
            };
            left -= 1;
            if let Some(ending) = decide(&pending) {
                self.slots[slot] = None;
                let _ = self.free.push(slot as u16);
                // Never full: one ending per ticket, and at most N tickets.
                let _ = self.endings.push_back((pending, ending));
            }
        }
    }

    /// Removes a ticket without an ending (its answer was delivered another way).
    pub fn take(&mut self, ticket: Ticket) -> Option<Pending> {
        let pending = *self.get(ticket)?;
        let slot = Self::slot_of(ticket);
        self.slots[slot] = None;
        let _ = self.free.push(slot as u16);
        Some(pending)
    }

    pub fn next_ending(&mut self) -> Option<(Pending, Ending)> {
        self.endings.pop_front()
    }

    /// The earliest deadline among waiting requests.
    pub fn earliest_deadline_ms(&self) -> Option<u64> {
        let mut left = self.waiting();
        if left == 0 {
            return None;
        }
        let mut earliest = None;
        for pending in self.slots.iter().flatten() {
            earliest =
                Some(earliest.map_or(pending.deadline_ms, |e: u64| e.min(pending.deadline_ms)));
            left -= 1;
            if left == 0 {
                break;
            }
        }
        earliest
    }

    pub fn waiting(&self) -> usize {
        N - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    /// The scans stop after the last waiting request; requests left in high slots after
    /// others ended (the slots are reused out of order) must still be found.
    #[test]
    fn scans_find_every_waiting_request_wherever_its_slot() {
        let mut tickets: Tickets<8> = Tickets::starting_at(0);
        let open = |tickets: &mut Tickets<8>, deadline_ms| {
            tickets
                .open(ReplyTo::Client { request_id: 0 }, Wait::Leader, deadline_ms)
                .unwrap()
        };
        let all: Vec<Ticket> = (0..8).map(|i| open(&mut tickets, 100 + i)).collect();
        // End all but the two in the highest slots.
        for &ticket in &all[..6] {
            tickets.take(ticket).unwrap();
        }
        assert_eq!(tickets.waiting(), 2);
        assert_eq!(tickets.earliest_deadline_ms(), Some(106));
        // A new request takes a low slot; the high ones are still found.
        open(&mut tickets, 50);
        assert_eq!(tickets.earliest_deadline_ms(), Some(50));
        let mut ended = Vec::new();
        tickets.end_where(|pending| (pending.deadline_ms >= 100).then_some(Ending::Release));
        while let Some((pending, _)) = tickets.next_ending() {
            ended.push(pending.ticket);
        }
        assert_eq!(ended, [all[6], all[7]]);
        assert_eq!(tickets.waiting(), 1);
        assert_eq!(tickets.earliest_deadline_ms(), Some(50));
    }
}
