//! A node that cannot lead hands its log over to a candidate that can.
//!
//! A voter refuses a candidate whose log is behind its own: the candidate might lack a
//! committed entry. Usually the voter then stands itself and wins. But a node whose store
//! is stale (its journal could not undo what a new leader replaced, docs/protocol.md 4.7),
//! whose store is ahead of its log, or which is not a voter in its own membership cannot
//! lead. If its log is the most complete of the voters that can be reached, nobody can be
//! elected: it refuses the others and does not stand (simulator seed 508968, where a
//! deposed leader with a stale store and the longest log was one of the two voters left).
//!
//! So such a node, when it refuses a candidate for its log, sends the candidate the entries
//! that follow the candidate's last one (`LogOffer`); the candidate asks again with the
//! longer log and is granted. The candidate takes them only where they follow its own last
//! entry, so nothing of its log is replaced, and only while it is not a leader. This keeps
//! Raft's safety: the offered entries are those of the donor's log after a position both
//! logs hold, and by log matching the logs agree up to it, so the candidate's log becomes a
//! prefix of the donor's, which is itself a log every entry of which some leader created
//! after a matching prefix. Any such log that is at least as up to date as a log holding a
//! committed entry holds that entry (docs/protocol.md 4.1), which is what the vote check
//! relies on. No commit index moves: the entries commit, if at all, when a leader of the
//! candidate's term counts a majority holding an entry of that term after them.

use super::node::{Node, Outgoing, Role};
use crate::wire::{
    encode_frame, LogIndex, LogPosition, NodeId, Packed, PackedWriter, PeerMessage, Term,
};

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Whether this node's store and membership would let it lead if it won an election:
    /// a voter (or one about to be again), with a store that reflects exactly its log's
    /// applied prefix, not loading a snapshot, not recovering from a lost state.
    pub(crate) fn could_lead(&self) -> bool {
        // A store ahead of its log (just after a snapshot, until the entries it reflects
        // arrive) holds effects of entries the log lacks, which, since this node could win
        // without them, are not committed.
        let store_ahead_of_log =
            self.applied_index > self.log.last_index() || self.applied_term.is_some();
        self.may_stand()
            && !self.store_stale
            && self.incoming.is_none()
            && !store_ahead_of_log
            && self.recovery.is_none()
    }

    /// A candidate whose last entry is `their_last` was refused for its log: if this node
    /// cannot lead and holds that entry and more, offer it the rest.
    pub(crate) fn offer_log_if_refused_for_it(
        &mut self,
        now_ms: u64,
        to: NodeId,
        their_last: LogPosition,
    ) {
        let ours = self.last_log();
        let behind = (their_last.term.0, their_last.index.0) < (ours.term.0, ours.index.0);
        // Only where the candidate's log is a prefix of ours (log matching: the same entry
        // at its last index means the same entries up to there), and the entries after it
        // are still here.
        let prefix = their_last.index.0 < ours.index.0
            && their_last.index.0 + 1 >= self.log.first_index()
            && self.log.term_at(their_last.index.0) == Some(their_last.term.0);
        // A live leader will bring the candidate up to date itself; a recovering node
        // does not know its log is a valid one to give.
        if behind
            && prefix
            && !self.could_lead()
            && self.recovery.is_none()
            && !self.leader_is_fresh(now_ms)
        {
            self.send(
                to,
                Outgoing::LogOffer {
                    prev_index: their_last.index.0,
                },
            );
        }
    }

    /// Writes the `LogOffer` of the entries after `prev_index` for `to` into `out`; `None`
    /// if the log no longer holds them.
    pub(crate) fn encode_log_offer(
        &self,
        to: NodeId,
        prev_index: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let prev_term = self.log.term_at(prev_index)?;
        if prev_index >= self.log.last_index() {
            return None;
        }
        let (front, back) = out.split_at_mut(out.len() / 2);
        let limit = self.message_budget_bytes(to).min(back.len());
        let mut writer = PackedWriter::new(&mut back[..limit]);
        if self.pack_entries(prev_index + 1, &mut writer) == prev_index {
            return None;
        }
        let message = PeerMessage::LogOffer {
            prev: LogPosition {
                term: Term(prev_term),
                index: LogIndex(prev_index),
            },
            entries: writer.finish(),
        };
        encode_frame(&message, front).ok()
    }

    /// Entries offered by a voter that cannot lead (see the [module documentation](self)).
    pub(crate) fn handle_log_offer(&mut self, now_ms: u64, prev: LogPosition, entries: Packed<'_>) {
        // A leader's log grows only by its own proposals; a recovering node, or one loading
        // a snapshot, takes entries only from a leader.
        if self.role == Role::Leader || self.recovery.is_some() || self.incoming.is_some() {
            return;
        }
        // Only right after the last entry: nothing is replaced. (A delayed or duplicated
        // offer no longer fits and is dropped.)
        if prev != self.last_log() {
            return;
        }
        let _ = self.accept_entries(now_ms, prev, entries);
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use crate::cluster::test_support::{self, set, Net};
    use crate::cluster::{Node, NodeConfig, Role};
    use crate::wire::{AckLevel, ClusterId, Expiry, NodeId, Request, SetCondition, WriteOptions};

    fn three_nodes() -> Net {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let nodes: Vec<_> = (1..=3)
            .map(|id| {
                let config = NodeConfig::new(NodeId(id), ClusterId(7), &voters);
                let log = test_support::log(test_support::log_limits(2048));
                Node::new(config, test_support::store(id), log, 0)
            })
            .collect();
        Net::new(nodes)
    }

    /// Simulator seed 508968, made small: the two voters left are a node whose store is
    /// stale (there, a deposed leader without an undo journal; here it is marked so) but
    /// whose log is the longest, and a node behind it. The stale node may not lead and must
    /// refuse the other for its log; handing its log over lets the other win, with the
    /// committed write it lacked.
    #[test]
    fn a_stale_node_with_the_longest_log_hands_it_over_and_the_other_leads() {
        let mut net = three_nodes();
        net.run(1_000);
        let leader = net.leader().expect("a leader within a second");
        let mut followers = (1..=3).filter(|&id| id != leader);
        let (stale, behind) = (followers.next().unwrap(), followers.next().unwrap());
        assert!(net.request(leader, set(b"a", b"everywhere")).is_some());
        net.run(100);

        // Cut off one follower; the leader commits a write with the other's acknowledgement,
        // so that only that one holds it besides the leader.
        net.isolate(behind);
        let quorum_write = Request::Set {
            key: b"d",
            value: b"on-two",
            condition: SetCondition::Always,
            expiry: Expiry::None,
            write: WriteOptions {
                ack: Some(AckLevel::Quorum),
                ..WriteOptions::default()
            },
        };
        assert!(
            net.request(leader, quorum_write).is_none(),
            "waits for a quorum"
        );
        net.run(100);
        assert_eq!(net.answers.len(), 1, "the quorum write was acknowledged");

        // Its holder's store goes stale (as when an undo journal gives up), the leader goes
        // for good, the node behind comes back.
        let at_stale = net.at(stale);
        net.nodes[at_stale].store_stale = true;
        net.heal();
        net.isolate(leader);
        net.run(3_000);
        assert_eq!(
            net.leader().filter(|&id| id != leader),
            Some(behind),
            "the node behind was given the log and leads"
        );
        let at = net.at(behind);
        assert_eq!(net.nodes[at].role(), Role::Leader);
        assert_eq!(
            net.nodes[at]
                .store()
                .get(b"d", 0)
                .map(|record| record.value.to_vec()),
            Some(b"on-two".to_vec()),
            "the committed write survived"
        );
        assert!(
            net.nodes[at_stale].store_stale,
            "no snapshot may wipe it yet"
        );
        assert!(net.request(behind, set(b"e", b"after")).is_some());
    }
}
