//! Coming back after losing state: a restart without the log and the vote (a board after a
//! reset, a server without a disk).
//!
//! Raft's safety rests on two things a voter never forgets: whom it voted for in each term,
//! and the entries it acknowledged. A node that forgot both and voted again could vote twice
//! in one term (two leaders), or help elect a leader missing an entry that was committed
//! with its acknowledgement (a lost `quorum` write). So such a node recovers first, and only
//! then votes or stands. The rules (docs/protocol.md 4.10 has the argument for each):
//!
//! 1. **Wait, silent**, twice the longest election timeout. An election it voted in before
//!    the reset has then been won or abandoned (a candidate gives up its term when its own
//!    election timeout passes). It answers nothing meanwhile, so a leader stops counting it
//!    as recently heard (the snapshot rule and CheckQuorum count only those).
//! 2. **Ask** every voter it knows of for its term, its last log position and its
//!    membership (`RecoveryQuery`). A node that has its state answers (`RecoveryReply`) and
//!    forgets what it knew the asker held, so that no leader counts the lost entries again.
//!    The answer with the most up-to-date log names the membership to hear from (the
//!    *target*): the node needs answers from a majority of the target's voters, itself not
//!    counted. The bootstrap voters are only where it starts asking: it also asks the voters
//!    of every membership it hears of (in answers and in what the leader sends it), and a
//!    more up-to-date answer with another membership replaces the target, so the node
//!    repeats until a majority of the latest membership heard of has answered. The highest
//!    term answered is the **vote floor**: the node never votes in a term at or below it (it
//!    votes in none while recovering, ends recovery in a term at or above the floor, and
//!    records its vote in the floor's own term as cast, which a persistent shell writes).
//! 3. **Catch up** with a leader whose term is at least the floor and which answered the
//!    query (so it no longer counts what this node held before): recovery ends when this
//!    node's log holds that leader's log up to the leader's commit index, and the entry there
//!    is of the leader's term (so everything committed before the leader's term is
//!    included).
//!
//! While recovering, the node follows a leader (it takes entries and snapshots, applies
//! committed entries, and serves stale reads), but it grants no vote or pre-vote, does not
//! stand, and answers no recovery query. What it acknowledges it really holds, so a leader
//! may count it for commitment like any follower: the electorates it is missing from are
//! what the arithmetic in docs/protocol.md accounts for.
//!
//! A target membership in which this node is the only voter, or with two voters one of which
//! is this node, can never give a majority of *other* voters: such a node stays a
//! non-voting follower for good (docs/protocol.md 4.10: the refused case; with two voters
//! the other cannot be elected without it either, so run at least three voters).

use heapless::Vec;

use super::config::MAX_MEMBERS;
use super::membership::Membership;
use super::node::{Node, NodeEvent, Outgoing, Role};
use crate::wire::{encode_frame, LogPosition, NodeId, PeerMessage};

/// Nodes a recovering node may ask or hear from: the members of two memberships.
const ASKED: usize = 2 * MAX_MEMBERS;

/// What a recovering node knows (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub(crate) struct Recovery {
    /// Silent until then (rule 1).
    silent_until_ms: u64,
    /// Identifies this life's queries.
    nonce: u64,
    /// When to ask again those that have not answered.
    next_ask_ms: u64,
    /// Queries to send now.
    due: Vec<NodeId, ASKED>,
    /// (node, term) of each answer.
    answers: Vec<(NodeId, u64), ASKED>,
    /// The most up-to-date log among the answers, and its membership: the target.
    best_log: Option<LogPosition>,
    target: Membership,
    /// The vote floor, once a majority of the target's other voters answered.
    floor: Option<u64>,
}

impl Recovery {
    /// A node restarted at `now_ms` with `wait_ms` of silence ahead, asking with `nonce`.
    pub(crate) fn new(now_ms: u64, wait_ms: u64, nonce: u64) -> Self {
        let silent_until_ms = now_ms.saturating_add(wait_ms);
        Self {
            silent_until_ms,
            nonce,
            next_ask_ms: silent_until_ms,
            due: Vec::new(),
            answers: Vec::new(),
            best_log: None,
            target: Membership::empty(),
            floor: None,
        }
    }

    fn answered(&self, id: NodeId) -> bool {
        self.answers.iter().any(|(other, _)| *other == id)
    }
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Whether this node is recovering from a restart without its state
    /// ([`Node::restarted_without_state`]): it follows a leader and serves stale reads, but
    /// does not vote or stand for election until it has caught up.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Whether this node is in recovery's first, silent wait: it takes no peer message.
    pub(crate) fn recovery_silent(&self, now_ms: u64) -> bool {
        self.recovery
            .as_ref()
            .is_some_and(|recovery| now_ms < recovery.silent_until_ms)
    }

    /// The next time recovery needs `handle_timeout`.
    pub(crate) fn recovery_deadline_ms(&self) -> Option<u64> {
        let recovery = self.recovery.as_ref()?;
        Some(recovery.next_ask_ms)
    }

    /// Recovery's timer: after the silent wait, and then every four heartbeat intervals,
    /// queries go to every voter known of that has not answered, and to the leader followed
    /// until it answers.
    pub(crate) fn recovery_timeout(&mut self, now_ms: u64) {
        let own = self.config.node_id;
        let leader = self.leader_id;
        let interval_ms = self.config.heartbeat_interval_ms.max(1) * 4;
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        if now_ms < recovery.next_ask_ms {
            return;
        }
        recovery.next_ask_ms = now_ms + interval_ms;
        recovery.due.clear();
        let known = recovery
            .target
            .iter()
            .chain(self.membership.iter())
            .filter(|member| member.voter)
            .map(|member| member.id)
            .chain(leader);
        for id in known {
            if id != own && !recovery.answered(id) && !recovery.due.contains(&id) {
                // At most ASKED distinct ids: two memberships and the leader, one of them in
                // a membership.
                let _ = recovery.due.push(id);
            }
        }
    }

    /// Writes the next recovery query due, if any.
    pub(crate) fn next_recovery_query(&mut self, out: &mut [u8]) -> Option<(NodeId, usize)> {
        let recovery = self.recovery.as_mut()?;
        let to = recovery.due.pop()?;
        let len = encode_frame(
            &PeerMessage::RecoveryQuery {
                nonce: recovery.nonce,
            },
            out,
        )
        .ok()?;
        Some((to, len))
    }

    /// A peer lost its state and asks: forget what it held (it holds nothing this node
    /// knows of), then answer with this node's term, last log position and membership,
    /// unless this node is recovering too (its term and log prove nothing).
    pub(crate) fn handle_recovery_query(&mut self, from: NodeId, nonce: u64) {
        if let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) {
            // What it held is gone: no commitment may count it, no snapshot may count it as
            // a holder, and what it holds now is unknown until it answers an `Append`.
            peer.match_index = 0;
            peer.held_index = None;
            peer.inflight = 0;
            peer.snapshot = None;
            peer.needs_snapshot = false;
            peer.next_index = peer.next_index.min(self.log.last_index() + 1).max(1);
        }
        if self.recovery.is_none() {
            self.send(from, Outgoing::RecoveryReply { nonce });
        }
    }

    /// An answer to this node's query.
    pub(crate) fn handle_recovery_reply(
        &mut self,
        from: NodeId,
        nonce: u64,
        term: u64,
        last_log: LogPosition,
        members: &[u8],
    ) {
        let own = self.config.node_id;
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        if nonce != recovery.nonce || from == own || recovery.answered(from) {
            return;
        }
        let Ok(membership) = Membership::decode(members) else {
            return;
        };
        if recovery.answers.push((from, term)).is_err() {
            return;
        }
        if recovery.best_log.is_none_or(|best| last_log > best) {
            recovery.best_log = Some(last_log);
            recovery.target = membership;
        }
        let highest = recovery
            .answers
            .iter()
            .map(|(_, term)| *term)
            .max()
            .unwrap_or(0);
        if let Some(floor) = recovery.floor.as_mut() {
            // Already decided; a later answer can only raise the floor.
            *floor = (*floor).max(highest);
        } else {
            let target = &recovery.target;
            let voters = target.voter_count();
            let heard = recovery
                .answers
                .iter()
                .filter(|(id, _)| *id != own && target.is_voter(*id))
                .count();
            if voters == 0 || heard < voters / 2 + 1 {
                return;
            }
            recovery.floor = Some(highest);
        }
    }

    /// Follower: after taking an `Append` of `term` from leader `from` whose commit index is
    /// `leader_commit`, ends recovery if this node has caught up (rule 3).
    pub(crate) fn check_recovered(&mut self, from: NodeId, term: u64, leader_commit: u64) {
        let Some(recovery) = self.recovery.as_ref() else {
            return;
        };
        let Some(floor) = recovery.floor else {
            return;
        };
        let store_matches_log = !self.store_stale
            && self.incoming.is_none()
            && self.applied_term.is_none()
            && self.applied_index >= self.commit_index;
        let caught_up = self.role == Role::Follower
            && self.leader_id == Some(from)
            && term == self.term
            && term >= floor
            && recovery.answered(from)
            && leader_commit <= self.commit_index
            && self.log.term_at(leader_commit) == Some(term)
            && store_matches_log;
        if caught_up {
            self.recovery = None;
            if term == floor && self.voted_for.is_none() {
                // The vote it may have cast in the floor's term before the reset, recorded
                // as cast: a persistent shell writes it, so that a later restart from disk,
                // which does not know the floor, still grants no vote in that term.
                self.voted_for = Some(self.config.node_id);
            }
            self.push_event(NodeEvent::Recovered { term });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use crate::cluster::test_support::{self, log_limits, Net, TestNode};
    use crate::cluster::{Command, Membership, Node, NodeConfig, NodeEvent, Role};
    use crate::wire::{
        decode, encode, ClusterId, Expiry, LogIndex, LogPosition, NodeId, PackedWriter,
        PeerMessage, Request, SetCondition, Term, WriteOptions, FRAME_HEADER_BYTES,
    };

    fn ids(list: &[u64]) -> Vec<NodeId> {
        list.iter().copied().map(NodeId).collect()
    }

    fn config(id: u64, voters: &[u64]) -> NodeConfig {
        NodeConfig::new(NodeId(id), ClusterId(7), &ids(voters))
    }

    fn fresh(id: u64, voters: &[u64]) -> TestNode {
        let log = test_support::log(log_limits(2048));
        Node::new(config(id, voters), test_support::store(id), log, 0)
    }

    fn lost(id: u64, voters: &[u64], now_ms: u64) -> TestNode {
        let log = test_support::log(log_limits(2048));
        Node::restarted_without_state(config(id, voters), test_support::store(id), log, now_ms)
    }

    /// Past the silent wait of a node restarted at 0 (twice the longest election timeout).
    const AWAKE_MS: u64 = 1_201;

    fn membership(voters: &[u64]) -> Membership {
        let mut membership = Membership::empty();
        for &id in voters {
            membership = membership.with(NodeId(id), true, b"").unwrap();
        }
        membership
    }

    fn position(term: u64, index: u64) -> LogPosition {
        LogPosition {
            term: Term(term),
            index: LogIndex(index),
        }
    }

    /// Feeds `node` a peer message from `from` at `now`; returns every frame it sends
    /// (to, payload), the direct answer first.
    fn deliver(
        node: &mut TestNode,
        now: u64,
        from: u64,
        message: &PeerMessage<'_>,
    ) -> Vec<(u64, Vec<u8>)> {
        let mut payload = vec![0u8; 4096];
        let len = encode(message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 1 << 16];
        let mut sent = Vec::new();
        if let crate::cluster::PeerAction::Send { to, len } =
            node.handle_peer_frame(now, NodeId(from), &payload[..len], &mut out)
        {
            sent.push((to.0, out[FRAME_HEADER_BYTES..len].to_vec()));
        }
        sent.extend(drain(node, now));
        sent
    }

    /// Everything `node` has to send now.
    fn drain(node: &mut TestNode, now: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = vec![0u8; 1 << 16];
        let mut sent = Vec::new();
        while let Some((to, len)) = node.poll_peer_transmit(now, &mut out) {
            sent.push((to.0, out[FRAME_HEADER_BYTES..len].to_vec()));
        }
        sent
    }

    /// Runs `node`'s timers at `now`; returns what it sends.
    fn tick(node: &mut TestNode, now: u64) -> Vec<(u64, Vec<u8>)> {
        node.handle_timeout(now);
        drain(node, now)
    }

    /// The nonce of the recovery query among `sent`.
    fn query_nonce(sent: &[(u64, Vec<u8>)]) -> u64 {
        sent.iter()
            .find_map(|(_, bytes)| match decode::<PeerMessage<'_>>(bytes) {
                Ok(PeerMessage::RecoveryQuery { nonce }) => Some(nonce),
                _ => None,
            })
            .expect("a recovery query")
    }

    /// Whether the answers among `sent` granted a vote or pre-vote (`None`: no answer).
    fn granted(sent: &[(u64, Vec<u8>)]) -> Option<bool> {
        sent.iter()
            .find_map(|(_, bytes)| match decode::<PeerMessage<'_>>(bytes) {
                Ok(PeerMessage::VoteReply { granted, .. })
                | Ok(PeerMessage::PreVoteReply { granted, .. }) => Some(granted),
                _ => None,
            })
    }

    fn answer(nonce: u64, term: u64, last_log: LogPosition, members: &Membership) -> Vec<u8> {
        let mut bytes = vec![0u8; 1024];
        let message = PeerMessage::RecoveryReply {
            nonce,
            term: Term(term),
            last_log,
            members: members.as_bytes(),
        };
        let len = encode(&message, &mut bytes).unwrap().len();
        bytes.truncate(len);
        bytes
    }

    fn deliver_bytes(node: &mut TestNode, now: u64, from: u64, bytes: &[u8]) {
        let message: PeerMessage<'_> = decode(bytes).unwrap();
        deliver(node, now, from, &message);
    }

    /// An `Append` of `term` after `prev`, with commit index `commit`, carrying no-ops of
    /// the given terms.
    fn append(
        node: &mut TestNode,
        now: u64,
        from: u64,
        term: u64,
        prev: LogPosition,
        commit: u64,
        entry_terms: &[u64],
    ) -> Vec<(u64, Vec<u8>)> {
        let mut buffer = vec![0u8; 1024];
        let mut writer = PackedWriter::new(&mut buffer);
        let mut noop = [0u8; 1];
        Command::Noop.encode(&mut noop);
        for entry_term in entry_terms {
            writer
                .push_with(8 + noop.len(), |item| {
                    item[..8].copy_from_slice(&entry_term.to_le_bytes());
                    item[8..].copy_from_slice(&noop);
                })
                .unwrap();
        }
        let entries = writer.finish();
        let message = PeerMessage::Append {
            term: Term(term),
            prev,
            commit: LogIndex(commit),
            round: 1,
            cluster_time_ms: now,
            entries,
        };
        deliver(node, now, from, &message)
    }

    fn recovered(node: &mut TestNode) -> Option<u64> {
        let mut term = None;
        while let Some(event) = node.poll_event() {
            if let NodeEvent::Recovered { term: at } = event {
                term = Some(at);
            }
        }
        term
    }

    /// Node 3 of {1, 2, 3}, past the wait, having asked: returns it and the query's nonce.
    fn asking(voters: &[u64], id: u64) -> (TestNode, u64) {
        let mut node = lost(id, voters, 0);
        assert!(node.is_recovering());
        let early = tick(&mut node, 10);
        assert!(early.is_empty(), "silent during the wait: {early:?}");
        let sent = tick(&mut node, AWAKE_MS);
        let asked: Vec<u64> = sent.iter().map(|(to, _)| *to).collect();
        for voter in voters.iter().filter(|&&v| v != id) {
            assert!(asked.contains(voter), "{voter} not asked: {asked:?}");
        }
        let nonce = query_nonce(&sent);
        (node, nonce)
    }

    /// Rule: no vote, and no pre-vote, while recovering, in any term, with any log.
    #[test]
    fn a_recovering_node_grants_no_vote() {
        let (mut node, _) = asking(&[1, 2, 3], 3);
        let now = AWAKE_MS + 10;
        let pre_vote = PeerMessage::PreVote {
            term: Term(9),
            last_log: position(8, 100),
        };
        assert_eq!(granted(&deliver(&mut node, now, 1, &pre_vote)), Some(false));
        let vote = PeerMessage::Vote {
            term: Term(9),
            last_log: position(8, 100),
        };
        assert_eq!(granted(&deliver(&mut node, now, 1, &vote)), Some(false));
        assert_eq!(node.term(), 9, "it still adopts the term it sees");
        // During the silent wait it does not even answer.
        let mut waiting = lost(3, &[1, 2, 3], 0);
        assert_eq!(granted(&deliver(&mut waiting, 5, 1, &vote)), None);
    }

    /// Rule: no candidacy while recovering, however long no leader is heard from.
    #[test]
    fn a_recovering_node_does_not_stand() {
        let (mut node, _) = asking(&[1, 2, 3], 3);
        let mut now = AWAKE_MS;
        while now < 20_000 {
            now = node.poll_timeout().max(now + 1);
            for (to, bytes) in tick(&mut node, now) {
                let message: PeerMessage<'_> = decode(&bytes).unwrap();
                assert!(
                    matches!(message, PeerMessage::RecoveryQuery { .. }),
                    "sent {message:?} to {to}"
                );
            }
            assert_eq!(node.role(), Role::Follower);
        }
        assert!(node.is_recovering());
    }

    /// Rule: after recovering, no vote in a term at or below the highest a majority
    /// answered; a vote in a later term is fine.
    #[test]
    fn a_recovered_node_never_votes_at_or_below_the_highest_term_answered() {
        let (mut node, nonce) = asking(&[1, 2, 3], 3);
        let now = AWAKE_MS + 10;
        let members = membership(&[1, 2, 3]);
        deliver_bytes(
            &mut node,
            now,
            1,
            &answer(nonce, 5, position(5, 1), &members),
        );
        deliver_bytes(
            &mut node,
            now,
            2,
            &answer(nonce, 4, position(4, 1), &members),
        );
        // Leader 1 of term 5 brings it up to date: entry 1 of term 5, committed.
        append(&mut node, now, 1, 5, position(0, 0), 1, &[5]);
        assert_eq!(recovered(&mut node), Some(5));
        assert!(!node.is_recovering());
        assert_eq!(node.term(), 5);
        // It may have voted in term 5 before losing its state: it grants no vote in it.
        let later = now + 2_000;
        let vote = |term| PeerMessage::Vote {
            term: Term(term),
            last_log: position(5, 1),
        };
        assert_eq!(
            granted(&deliver(&mut node, later, 2, &vote(5))),
            Some(false)
        );
        // In a later term it votes as any voter.
        assert_eq!(granted(&deliver(&mut node, later, 2, &vote(6))), Some(true));
    }

    /// Rule: recovery ends only once caught up with a leader of a term at least the
    /// highest answered, that answered the query, up to that leader's commit index, where
    /// the entry is of the leader's term.
    #[test]
    fn recovery_ends_only_after_catching_up_with_a_leader_of_a_high_enough_term() {
        let voters = [1, 2, 3, 4, 5];
        let (mut node, nonce) = asking(&voters, 5);
        let mut now = AWAKE_MS + 10;
        let members = membership(&voters);
        // Node 2 is in term 6; node 1 still leads term 4, unaware of it.
        for (from, term) in [(1, 4), (2, 6), (3, 4)] {
            deliver_bytes(
                &mut node,
                now,
                from,
                &answer(nonce, term, position(4, 3), &members),
            );
        }
        assert!(node.is_recovering());
        now += 10;
        append(&mut node, now, 1, 4, position(0, 0), 3, &[4, 4, 4]);
        assert_eq!(node.commit_index(), 3);
        assert_eq!(recovered(&mut node), None, "a leader of term 4 < 6");

        // Node 4 leads term 6 and commits its no-op; but it did not answer the query, so
        // it may still count what this node held before.
        now += 10;
        append(&mut node, now, 4, 6, position(4, 3), 4, &[6]);
        assert_eq!(node.commit_index(), 4);
        assert_eq!(recovered(&mut node), None, "a leader that did not answer");

        // Node 2 leads term 7: its commit index is at an entry of term 6, so entries
        // committed before its term may lie beyond it.
        now += 10;
        append(&mut node, now, 2, 7, position(6, 4), 4, &[7]);
        assert_eq!(
            recovered(&mut node),
            None,
            "commit index at an entry of an older term"
        );

        // A heartbeat from before entry 5 with commit 5: this node's log holds entry 5, of
        // term 7, but matched the leader's only up to 4, so its commit index stays 4.
        now += 10;
        append(&mut node, now, 2, 7, position(6, 4), 5, &[]);
        assert_eq!(node.commit_index(), 4);
        assert_eq!(
            recovered(&mut node),
            None,
            "not caught up to the commit index"
        );

        now += 10;
        append(&mut node, now, 2, 7, position(7, 5), 5, &[]);
        assert_eq!(recovered(&mut node), Some(7));
        assert!(!node.is_recovering());
    }

    /// The membership to hear a majority of is the one of the most up-to-date answer, not
    /// the bootstrap voters: two members were added since this node's configuration.
    #[test]
    fn a_recovering_node_needs_a_majority_of_the_latest_membership_heard_of() {
        let (mut node, nonce) = asking(&[1, 2, 3], 3);
        let now = AWAKE_MS + 10;
        let old = membership(&[1, 2, 3]);
        let new = membership(&[1, 2, 3, 4, 5]);
        deliver_bytes(&mut node, now, 2, &answer(nonce, 3, position(3, 10), &old));
        deliver_bytes(&mut node, now, 1, &answer(nonce, 4, position(4, 20), &new));
        let recovery = node.recovery.as_ref().unwrap();
        assert_eq!(recovery.target, new);
        assert_eq!(
            recovery.floor, None,
            "two of {{1, 2, 4, 5}} are not a majority of {{1, 2, 3, 4, 5}}"
        );
        // The new voters are asked at the next round.
        let sent = tick(&mut node, now + 500);
        let asked: Vec<u64> = sent.iter().map(|(to, _)| *to).collect();
        assert!(asked.contains(&4) && asked.contains(&5), "{asked:?}");
        assert!(
            !asked.contains(&1) && !asked.contains(&2),
            "answered: {asked:?}"
        );
        deliver_bytes(
            &mut node,
            now + 500,
            5,
            &answer(nonce, 4, position(4, 19), &new),
        );
        assert_eq!(node.recovery.as_ref().unwrap().floor, Some(4));
    }

    /// Answers to a query of an earlier life, and from recovering nodes (which do not
    /// answer), count for nothing.
    #[test]
    fn only_answers_to_this_lifes_query_count_and_recovering_nodes_do_not_answer() {
        let (mut node, nonce) = asking(&[1, 2, 3], 3);
        let now = AWAKE_MS + 10;
        let members = membership(&[1, 2, 3]);
        for from in [1, 2] {
            deliver_bytes(
                &mut node,
                now,
                from,
                &answer(nonce ^ 1, 5, position(5, 1), &members),
            );
        }
        assert_eq!(node.recovery.as_ref().unwrap().floor, None);
        let (mut other, _) = asking(&[1, 2, 3], 2);
        let query = PeerMessage::RecoveryQuery { nonce };
        assert!(deliver(&mut other, now, 3, &query).is_empty());
    }

    /// With two voters, this node one of them, no majority of *other* voters exists: the
    /// node stays a non-voting follower (the case the protocol refuses, 4.10).
    #[test]
    fn a_voter_of_two_never_finishes_recovery() {
        let (mut node, nonce) = asking(&[1, 2], 2);
        let now = AWAKE_MS + 10;
        deliver_bytes(
            &mut node,
            now,
            1,
            &answer(nonce, 3, position(3, 1), &membership(&[1, 2])),
        );
        append(&mut node, now, 1, 3, position(0, 0), 1, &[3]);
        assert_eq!(recovered(&mut node), None);
        assert!(node.is_recovering());
    }

    fn set(key: &'static [u8]) -> Request<'static> {
        Request::Set {
            key,
            value: b"v",
            condition: SetCondition::Always,
            expiry: Expiry::None,
            write: WriteOptions::default(),
        }
    }

    /// The common case: one board of a cluster of three resets; it comes back empty, gets
    /// the keys from the leader, recovers, and the cluster can then lose another node.
    #[test]
    fn a_board_of_three_resets_recovers_and_votes_again() {
        let voters = [1, 2, 3];
        let mut net = Net::new(vec![
            fresh(1, &voters),
            fresh(2, &voters),
            fresh(3, &voters),
        ]);
        net.run(1_500);
        let leader = net.leader().expect("a leader");
        let board = if leader == 3 { 2 } else { 3 };
        // Acknowledged by the leader at once (the default `ack`); replicated next.
        assert!(net.request(leader, set(b"k1")).is_some());
        net.run(200);

        let at = net.at(board);
        let now = net.now_ms;
        net.nodes[at] = lost(board, &voters, now);
        net.run(500);
        assert!(net.nodes[at].is_recovering(), "still in its silent wait");
        assert_eq!(net.nodes[at].log().last_index(), 0);
        net.run(2_000);
        assert!(!net.nodes[at].is_recovering(), "recovered");
        assert!(net
            .events
            .iter()
            .any(|(id, event)| id.0 == board && matches!(event, NodeEvent::Recovered { .. })));
        assert!(net.nodes[at].store().get(b"k1", 0).is_some());

        // The leader fails: the board's vote elects the third node.
        net.isolate(leader);
        net.run(2_000);
        let new_leader = net
            .nodes
            .iter()
            .filter(|n| n.id().0 != leader && n.role() == Role::Leader)
            .count();
        assert_eq!(new_leader, 1, "the recovered board voted");
    }

    /// Rule: a node asked by a recovering peer forgets what it knew the peer held, so that
    /// no leader counts the lost entries towards a commitment or a snapshot's safety; and it
    /// answers with its term, log position and membership.
    #[test]
    fn a_query_makes_the_leader_forget_what_the_asker_held() {
        let voters = [1, 2, 3];
        let mut net = Net::new(vec![
            fresh(1, &voters),
            fresh(2, &voters),
            fresh(3, &voters),
        ]);
        net.run(1_500);
        let leader = net.leader().expect("a leader");
        let asker = if leader == 1 { 2 } else { 1 };
        let at = net.at(leader);
        let held = |net: &Net| {
            net.nodes[at]
                .members()
                .find(|m| m.id == NodeId(asker))
                .unwrap()
                .match_index
        };
        assert!(held(&net) > 0);
        let now = net.now_ms;
        let sent = deliver(
            &mut net.nodes[at],
            now,
            asker,
            &PeerMessage::RecoveryQuery { nonce: 42 },
        );
        assert_eq!(held(&net), 0, "the leader still counts what the asker lost");
        let term = net.nodes[at].term();
        let last = net.nodes[at].log().last_index();
        let answered = sent.iter().any(|(to, bytes)| {
            *to == asker
                && matches!(
                    decode::<PeerMessage<'_>>(bytes),
                    Ok(PeerMessage::RecoveryReply { nonce: 42, term: Term(t), last_log, .. })
                        if t == term && last_log.index.0 == last
                )
        });
        assert!(answered, "{sent:?}");
    }
}
