//! Membership changes: tracking the membership the log says is in force, and the leader's
//! joins, promotions and removals.
//!
//! A node uses the latest `Members` entry in its log, committed or not, else the membership
//! as of its log's base (`membership` module). So the membership changes when such an entry
//! is appended, when a truncation removes it (the node falls back to the one before), and
//! when a snapshot replaces the log. Discarding entries from the front of the log moves a
//! `Members` entry into the base membership, so that it is never lost.
//!
//! The leader changes the membership one member at a time, and only when the previous
//! change is committed and an entry of its own term is committed (Raft thesis 4.1 and the
//! fix of 2015: a leader of a new term must not reconfigure before it has committed in that
//! term, or two leaders' changes can build configurations without a common majority).
//! - **Join**: a node is added as a learner: it gets the log (or a snapshot), counts for
//!   nothing, and never votes or stands.
//! - **Promotion**: once a learner holds every committed entry, the leader makes it a voter.
//!   So a new voter never makes commitment wait for a long catch-up.
//! - **Removal**: a member is removed. A leader that removes itself leads until the change
//!   commits (counting a majority of the new voters, not itself), then steps down; as a
//!   non-voter it never stands again.

use super::command::Command;
use super::membership::{Membership, MembershipError};
use super::node::{Node, NodeEvent, Peer, ReplayWindow, Role};
use super::replication::ProposeError;
use crate::wire::NodeId;

/// Why the leader did not start a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeError {
    /// A change is not committed yet, or this leader has not committed in its term.
    InProgress,
    /// The change would leave no voter.
    LastVoter,
    /// The membership would not be valid.
    Membership(MembershipError),
    /// The log could not take the entry.
    Propose(ProposeError),
}

/// How many of its longest election timeouts a removed leader leads on, at most, while no
/// voter of the new membership could take over (see `step_down_if_removed`).
const REMOVED_LEADER_LINGER_TIMEOUTS: u64 = 10;

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// The membership in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Whether this node votes.
    pub(crate) fn is_voter(&self) -> bool {
        self.voter
    }

    /// Whether this node may stand for election: it votes in the membership in force, or it
    /// is being removed and the change is not known committed (it voted in the membership
    /// before). A leader removing itself may lose leadership before the change commits; it
    /// then holds the whole log, and may be the only such node whose store can lead (the
    /// simulator found a two-voter cluster where the other holder's store was stale). It
    /// counts votes of the new membership like any candidate, which is what Raft's safety
    /// needs; once the change commits, it steps down for good.
    pub(crate) fn may_stand(&self) -> bool {
        if self.voter {
            return true;
        }
        self.membership_index > self.commit_index
            && self
                .membership_as_of(self.membership_index - 1)
                .0
                .is_voter(self.config.node_id)
    }

    /// Votes needed to win an election or to commit: a majority of the voters.
    pub(crate) fn quorum(&self) -> usize {
        self.membership.voter_count() / 2 + 1
    }

    /// An entry was appended at `index`: if it changes the membership, the change is in
    /// force at once.
    pub(crate) fn note_entry_appended(&mut self, now_ms: u64, index: u64, bytes: &[u8]) {
        let Some(members) = Command::members_in(bytes) else {
            return;
        };
        // The leader checked it; a damaged one would be a leader's bug. The entry is kept
        // (it is part of the log), but it changes nothing here.
        if let Ok(membership) = Membership::decode(members) {
            self.set_membership(now_ms, membership, index);
        }
    }

    /// Entries from `from` on were truncated: if the membership came from one of them, the
    /// one before it is in force again.
    pub(crate) fn note_truncated(&mut self, now_ms: u64, from: u64) {
        if self.membership_index >= from {
            self.rescan_membership(now_ms);
        }
    }

    /// Discards the log's first entry, keeping the membership it carries, if any, as the
    /// base membership.
    pub(crate) fn discard_first_entry(&mut self) {
        let first = self.log.first_index();
        if let Some(membership) = self
            .log
            .entry(first)
            .and_then(|(_, bytes)| Command::members_in(bytes))
            .and_then(|members| Membership::decode(members).ok())
        {
            self.base_membership = membership;
        }
        self.log.discard_through(first);
        if self.membership_index == first {
            // Still in force; it now comes from the base.
            self.membership_index = 0;
        }
    }

    /// The log was replaced and starts after a state whose membership is `base`.
    pub(crate) fn reset_membership(&mut self, now_ms: u64, base: Membership) {
        self.base_membership = base;
        self.rescan_membership(now_ms);
    }

    /// Finds the membership in force from the log: the latest `Members` entry, else the
    /// base membership.
    pub(crate) fn rescan_membership(&mut self, now_ms: u64) {
        let (membership, index) = self.membership_as_of(self.log.last_index());
        self.set_membership(now_ms, membership, index);
        self.drop_departed_peers();
    }

    /// Puts `membership`, from entry `index`, in force.
    fn set_membership(&mut self, now_ms: u64, membership: Membership, index: u64) {
        let changed = membership != self.membership;
        self.membership = membership;
        self.membership_index = index;
        self.adopt_membership(now_ms);
        if changed {
            self.push_event(NodeEvent::MembershipChanged {
                index,
                voters: self.membership.voter_count(),
                members: self.membership.len(),
            });
        }
    }

    /// The membership as of entry `index` (at or after the log's base), the membership in
    /// force being current (not in the middle of a rescan). At or after the entry it came
    /// from, that is the membership in force, with no search of the log: a leader asks for
    /// every snapshot chunk it sends.
    pub(crate) fn membership_in_force_as_of(&self, index: u64) -> Membership {
        if index >= self.membership_index {
            self.membership.clone()
        } else {
            self.membership_as_of(index).0
        }
    }

    /// The membership as of entry `index` (at or after the log's base) and the entry it
    /// came from (0 for the base), found by searching the log backwards from `index`.
    pub(crate) fn membership_as_of(&self, index: u64) -> (Membership, u64) {
        let first = self.log.first_index();
        let mut at = index.min(self.log.last_index());
        while at >= first {
            if let Some(membership) = self
                .log
                .entry(at)
                .and_then(|(_, bytes)| Command::members_in(bytes))
                .and_then(|members| Membership::decode(members).ok())
            {
                return (membership, at);
            }
            at -= 1;
        }
        (self.base_membership.clone(), 0)
    }

    /// Makes the peers match the membership: new members are added with no progress, and
    /// the others keep their progress with their vote updated. A node removed by a change
    /// not yet committed stays a peer, as a non-voter, until the change commits
    /// (`drop_departed_peers`): a leader keeps replicating to it, so that it learns it was
    /// removed (else it would stand for election in vain forever), and a leader removing
    /// itself stays reachable to the others until then.
    pub(crate) fn adopt_membership(&mut self, now_ms: u64) {
        let own_id = self.config.node_id;
        let membership = &self.membership;
        let pending = self.membership_index > self.commit_index;
        self.peers
            .retain(|peer| pending || membership.get(peer.id).is_some());
        for peer in self.peers.iter_mut() {
            if membership.get(peer.id).is_none() {
                peer.voter = false;
            }
        }
        for member in membership.iter().filter(|member| member.id != own_id) {
            if let Some(peer) = self.peers.iter_mut().find(|peer| peer.id == member.id) {
                peer.voter = member.voter;
                continue;
            }
            // At most MAX_MEMBERS members, this node among them or not.
            let _ = self.peers.push(Peer {
                id: member.id,
                voter: member.voter,
                next_index: self.log.last_index() + 1,
                match_index: 0,
                inflight: 0,
                heartbeat_due: true,
                last_heard_ms: now_ms,
                acked_round: 0,
                granted: false,
                forwards: ReplayWindow::default(),
                held_index: None,
                needs_snapshot: false,
                snapshot: None,
                link_down: false,
                progress_ms: now_ms,
            });
        }
        if self.next_peer >= self.peers.len() {
            self.next_peer = 0;
        }
        self.voter = membership.is_voter(own_id);
    }

    /// Once the membership in force is committed, drops the peers it removed.
    pub(crate) fn drop_departed_peers(&mut self) {
        if self.membership_index > self.commit_index {
            return;
        }
        while let Some(at) = self
            .peers
            .iter()
            .position(|peer| self.membership.get(peer.id).is_none())
        {
            let peer = self.peers.swap_remove(at).id;
            self.push_event(NodeEvent::PeerDeparted { peer });
        }
        if self.next_peer >= self.peers.len() {
            self.next_peer = 0;
        }
    }

    /// Leader: whether a membership change may start now.
    fn may_reconfigure(&self) -> bool {
        self.role == Role::Leader
            && self.membership_index <= self.commit_index
            && self.log.term_at(self.commit_index) == Some(self.term)
    }

    /// Leader: logs `membership` as the new one, in force at once. Returns its entry.
    fn propose_membership(
        &mut self,
        now_ms: u64,
        membership: &Membership,
    ) -> Result<u64, ChangeError> {
        if !self.may_reconfigure() {
            return Err(ChangeError::InProgress);
        }
        if membership.voter_count() == 0 {
            return Err(ChangeError::LastVoter);
        }
        let command = Command::Members {
            members: membership.as_bytes(),
        };
        // Not `propose`: the membership must be in force before anything else looks at it
        // (committing the entry may promote or step down); there is nothing to apply.
        self.make_room(now_ms, &command)
            .map_err(ChangeError::Propose)?;
        let index = self
            .append_applied(&command)
            .map_err(ChangeError::Propose)?;
        self.set_membership(now_ms, membership.clone(), index);
        // With fewer voters, what the others hold may already be a majority.
        self.advance_commit(now_ms);
        Ok(index)
    }

    /// Leader: adds `id` as a learner with peer address `address`. Returns the entry to wait
    /// for, or `None` if it is already a member with that address (nothing to do).
    pub(crate) fn add_member(
        &mut self,
        now_ms: u64,
        id: NodeId,
        address: &[u8],
    ) -> Result<Option<u64>, ChangeError> {
        if let Some(member) = self.membership.get(id) {
            if member.address == address {
                return Ok(None);
            }
            // A known member at a new address: keep its vote, change the address.
            let voter = member.voter;
            let next = self
                .membership
                .with(id, voter, address)
                .map_err(ChangeError::Membership)?;
            return self.propose_membership(now_ms, &next).map(Some);
        }
        let next = self
            .membership
            .with(id, false, address)
            .map_err(ChangeError::Membership)?;
        self.propose_membership(now_ms, &next).map(Some)
    }

    /// Leader: removes `id`. Returns the entry to wait for, or `None` if it is not a member.
    pub(crate) fn remove_member(
        &mut self,
        now_ms: u64,
        id: NodeId,
    ) -> Result<Option<u64>, ChangeError> {
        if self.membership.get(id).is_none() {
            return Ok(None);
        }
        let next = self.membership.without(id);
        self.propose_membership(now_ms, &next).map(Some)
    }

    /// Leader: promotes a learner that holds every committed entry, one at a time.
    pub(crate) fn promote_caught_up_learner(&mut self, now_ms: u64) {
        // The learner first: it runs at every commit, and there is rarely one.
        let commit = self.commit_index;
        let Some(id) = self
            .peers
            .iter()
            .find(|peer| !peer.voter && peer.match_index >= commit && peer.snapshot.is_none())
            .map(|peer| peer.id)
        else {
            return;
        };
        if !self.may_reconfigure() {
            return;
        }
        let Some(address) = self.membership.get(id).map(|member| member.address) else {
            return;
        };
        let Ok(next) = self.membership.with(id, true, address) else {
            return;
        };
        // A full log or an entry in progress: tried again on the next answer.
        let _ = self.propose_membership(now_ms, &next);
    }

    /// Leader: once a membership without this node is committed, it steps down, but not
    /// before a voter of that membership could take over: one heard from recently whose
    /// store waits for no snapshot and whose log holds all of this node's. Stepping down at
    /// once left voters whose stores were all stale (an undo journal that gave up, docs/
    /// protocol.md 4.7), which only a leader could heal and none could become (simulator
    /// seeds 508968 and 566528); meanwhile this node heals them, as any leader does. It
    /// does not count itself for commitment or elections (it is no voter), and it leads on
    /// for at most `REMOVED_LEADER_LINGER_TIMEOUTS` election timeouts, or less if
    /// CheckQuorum finds it cut off.
    pub(crate) fn step_down_if_removed(&mut self, now_ms: u64) {
        if self.role != Role::Leader || self.voter || self.membership_index > self.commit_index {
            self.removed_since_ms = None;
            return;
        }
        let since = *self.removed_since_ms.get_or_insert(now_ms);
        let last_index = self.log.last_index();
        let recent_ms = self.config.election_timeout_min_ms;
        let successor_ready = self.peers.iter().any(|peer| {
            peer.voter
                && !peer.needs_snapshot
                && peer.snapshot.is_none()
                && peer.match_index >= last_index
                && now_ms.saturating_sub(peer.last_heard_ms) < recent_ms
        });
        let linger_ms = REMOVED_LEADER_LINGER_TIMEOUTS * self.config.election_timeout_max_ms;
        if successor_ready || now_ms.saturating_sub(since) >= linger_ms {
            self.removed_since_ms = None;
            self.step_down(now_ms, self.term, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec;

    use crate::cluster::test_support::{self, log_limits, Net, TestNode};
    use crate::cluster::NodeConfig;
    use crate::wire::{
        decode, encode, ClusterId, ErrorCode, Expiry, NodeId, Request, Response, ServerMessage,
        SetCondition, WriteOptions,
    };

    use super::*;

    fn node(id: u64, voters: &[NodeId]) -> TestNode {
        let config = NodeConfig::new(NodeId(id), ClusterId(7), voters);
        let store = test_support::store(id);
        let log = test_support::log(log_limits(2048));
        Node::new(config, store, log, 0)
    }

    /// Sends `request` to node `id`; returns the answer if it came at once.
    fn ask(net: &mut Net, id: u64, request: Request<'_>) -> Option<Response<'static>> {
        net.request(id, request).map(|bytes| to_response(&bytes))
    }

    /// Decodes an answer, keeping only what the tests look at.
    fn to_response(bytes: &[u8]) -> Response<'static> {
        let message: ServerMessage<'_> = decode(bytes).unwrap();
        match message.response {
            Response::MembershipChanged { log_index, .. } => Response::MembershipChanged {
                log_index,
                members: &[],
            },
            Response::Stored { version } => Response::Stored { version },
            Response::Error(error) => Response::Error(crate::wire::ErrorReply {
                code: error.code,
                detail: "",
            }),
            other => panic!("unexpected answer {other:?}"),
        }
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

    /// A node joins a one-node cluster as a learner, gets every key, is promoted, and then
    /// the first node removes itself: the joined node leads alone.
    #[test]
    fn a_node_joins_is_promoted_and_the_first_leader_leaves() {
        let mut net = Net::new(vec![node(1, &[NodeId(1)]), node(2, &[])]);
        net.run(1_000);
        assert_eq!(net.nodes[0].role(), Role::Leader);
        assert!(ask(&mut net, 1, set(b"before")).is_some());

        let joined = ask(
            &mut net,
            1,
            Request::AddMember {
                node_id: NodeId(2),
                address: b"n2:7380",
            },
        );
        assert!(matches!(joined, Some(Response::MembershipChanged { .. })));
        let learner = net.nodes[0].membership().get(NodeId(2)).unwrap();
        assert!(!learner.voter, "a new member starts as a learner");
        assert_eq!(learner.address, b"n2:7380");

        net.run(500);
        assert!(
            net.nodes[0].membership().is_voter(NodeId(2)),
            "caught up, so promoted"
        );
        assert!(net.nodes[1].membership().is_voter(NodeId(2)));
        assert!(net.nodes[1].store().get(b"before", 0).is_some());
        assert_eq!(net.nodes[1].leader_id(), Some(NodeId(1)));

        // One change at a time: a second change waits for the first to commit.
        assert!(net
            .request(
                1,
                Request::AddMember {
                    node_id: NodeId(3),
                    address: b"n3:7380",
                },
            )
            .is_none());
        let busy = ask(&mut net, 1, Request::RemoveMember { node_id: NodeId(3) });
        assert!(
            matches!(busy, Some(Response::Error(e)) if e.code == ErrorCode::Busy),
            "{busy:?}"
        );
        net.run(200);
        assert_eq!(net.answers.len(), 1, "the first change committed");
        // Node 3 never comes: remove it again.
        assert!(net
            .request(1, Request::RemoveMember { node_id: NodeId(3) })
            .is_none());
        net.run(200);
        assert_eq!(net.answers.len(), 2);

        // The leader removes itself: it leads until the change commits, then steps down,
        // and the remaining voter elects itself.
        assert!(net
            .request(1, Request::RemoveMember { node_id: NodeId(1) })
            .is_none());
        net.run(2_000);
        assert_eq!(net.answers.len(), 3, "the removal was acknowledged");
        assert_ne!(net.nodes[0].role(), Role::Leader);
        assert_eq!(net.nodes[1].role(), Role::Leader);
        assert_eq!(net.nodes[1].membership().len(), 1);
        assert!(ask(&mut net, 2, set(b"after")).is_some());
    }

    /// Simulator seeds 508968 and 566528, made small: a leader removes itself while both
    /// other voters' stores are stale (as when an undo journal gives up). Had it stepped
    /// down once the removal committed, neither could ever lead and no leader was left to
    /// send them a snapshot; it leads on until one of them is healed, then steps down.
    #[test]
    fn a_removed_leader_leads_on_until_a_voter_can_take_over() {
        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let mut net = Net::new((1..=3).map(|id| node(id, &voters)).collect());
        net.run(1_000);
        let leader = net.leader().expect("a leader within a second");
        assert!(ask(&mut net, leader, set(b"before")).is_some());
        net.run(100);
        for id in (1..=3).filter(|&id| id != leader) {
            let at = net.at(id);
            net.nodes[at].store_stale = true;
        }

        assert!(net
            .request(
                leader,
                Request::RemoveMember {
                    node_id: NodeId(leader)
                }
            )
            .is_none());
        net.run(3_000);
        assert_eq!(net.answers.len(), 1, "the removal was acknowledged");
        let at_old = net.at(leader);
        assert_ne!(
            net.nodes[at_old].role(),
            Role::Leader,
            "it stepped down in the end"
        );
        let new = net.leader().expect("a voter took over");
        assert_ne!(new, leader);
        let at_new = net.at(new);
        assert!(!net.nodes[at_new].store_stale);
        assert!(net.nodes[at_new].store().get(b"before", 0).is_some());
        assert!(ask(&mut net, new, set(b"after")).is_some());
    }

    /// Feeds node `to` a peer message from `from`.
    fn deliver(net: &mut Net, to: u64, from: u64, message: crate::wire::PeerMessage<'_>) {
        let mut payload = [0u8; 256];
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 1 << 16];
        let i = net.at(to);
        let now = net.now_ms;
        net.nodes[i].handle_peer_frame(now, NodeId(from), &payload[..len], &mut out);
    }

    /// A new leader reconfigures only once it has committed an entry of its own term (the
    /// 2015 fix to single-server changes).
    #[test]
    fn a_new_leader_changes_nothing_before_committing_in_its_term() {
        use crate::wire::{AppendOutcome, LogIndex, PeerMessage, Term};
        let mut net = Net::new(vec![node(1, &[NodeId(1), NodeId(2)])]);
        // Node 2 exists only as the messages fed here: node 1 wins its votes.
        net.now_ms = net.nodes[0].poll_timeout();
        let now = net.now_ms;
        net.nodes[0].handle_timeout(now);
        assert_eq!(net.nodes[0].role(), Role::PreCandidate);
        let granted = |term| PeerMessage::PreVoteReply {
            term: Term(term),
            granted: true,
        };
        deliver(&mut net, 1, 2, granted(1));
        assert_eq!(net.nodes[0].role(), Role::Candidate);
        deliver(
            &mut net,
            1,
            2,
            PeerMessage::VoteReply {
                term: Term(1),
                granted: true,
            },
        );
        assert_eq!(net.nodes[0].role(), Role::Leader);
        let add = Request::AddMember {
            node_id: NodeId(3),
            address: b"n3:7380",
        };
        let refused = ask(&mut net, 1, add);
        assert!(
            matches!(refused, Some(Response::Error(e)) if e.code == ErrorCode::Busy),
            "reconfigured before its no-op committed: {refused:?}"
        );
        assert!(net.nodes[0].membership().get(NodeId(3)).is_none());
        let last = net.nodes[0].log().last_index();
        deliver(
            &mut net,
            1,
            2,
            PeerMessage::AppendReply {
                term: Term(1),
                round: 1,
                outcome: AppendOutcome::Accepted {
                    match_index: LogIndex(last),
                },
            },
        );
        assert_eq!(net.nodes[0].commit_index(), last);
        assert!(
            ask(&mut net, 1, add).is_none(),
            "waits for node 2 to commit"
        );
        assert!(net.nodes[0].membership().get(NodeId(3)).is_some());

        // A learner's acknowledgement commits nothing; a voter's does.
        let change = net.nodes[0].log().last_index();
        let accepted = |index| PeerMessage::AppendReply {
            term: Term(1),
            round: 1,
            outcome: AppendOutcome::Accepted {
                match_index: LogIndex(index),
            },
        };
        deliver(&mut net, 1, 3, accepted(change));
        assert!(net.nodes[0].commit_index() < change, "a learner counted");
        deliver(&mut net, 1, 2, accepted(change));
        assert_eq!(net.nodes[0].commit_index(), change);
    }

    #[test]
    fn the_last_voter_cannot_be_removed() {
        let mut net = Net::new(vec![node(1, &[NodeId(1)])]);
        net.run(1_000);
        let refused = ask(&mut net, 1, Request::RemoveMember { node_id: NodeId(1) });
        assert!(
            matches!(refused, Some(Response::Error(e)) if e.code == ErrorCode::Unsupported),
            "{refused:?}"
        );
        assert!(net.nodes[0].membership().is_voter(NodeId(1)));
    }
}
