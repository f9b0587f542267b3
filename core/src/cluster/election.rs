//! Elections: PreVote, votes, and CheckQuorum.
//!
//! Raft's rules give at most one leader per term: a node votes at most once per term, and a
//! candidate needs a majority. Two additions keep a node that was cut off from disturbing
//! a healthy cluster when it comes back:
//!
//! - **PreVote**: before raising its term, a node asks whether the voters would vote for it.
//!   They say yes only if they have not heard from a leader within the minimum election
//!   timeout and its log is up to date. A node that cannot win never raises its term, so
//!   it never makes the leader step down.
//! - **Leader stickiness and CheckQuorum**: a voter that heard from a leader within the
//!   minimum election timeout ignores vote requests, and a leader that has not heard from
//!   a majority within the election timeout steps down, so that stickiness cannot keep a
//!   cluster without a working leader.

use super::node::{Node, Outgoing, Role};
use super::tickets::Ending;
use crate::wire::{LogPosition, NodeId};

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    fn log_is_current(&self, theirs: LogPosition) -> bool {
        let ours = self.last_log();
        (theirs.term.0, theirs.index.0) >= (ours.term.0, ours.index.0)
    }

    /// Whether a leader was heard from recently enough that no election is warranted.
    pub(crate) fn leader_is_fresh(&self, now_ms: u64) -> bool {
        self.role == Role::Leader
            || self
                .last_leader_contact_ms
                .is_some_and(|at| now_ms.saturating_sub(at) < self.config.election_timeout_min_ms)
    }

    /// Whether this node may vote at all: not while it recovers from a restart without its
    /// state (it may have voted before and forgotten it; afterwards its term is at least the
    /// highest a majority answered, and its vote in that term is recorded as cast: see
    /// `recovery`).
    fn may_vote(&self) -> bool {
        self.recovery.is_none()
    }

    fn majority_granted(&self) -> bool {
        let granted = self.peers.iter().filter(|p| p.voter && p.granted).count()
            + usize::from(self.is_voter());
        granted >= self.quorum()
    }

    pub(crate) fn start_pre_vote(&mut self, now_ms: u64) {
        self.reset_election_deadline(now_ms);
        // A node whose store is stale could not serve as leader: it waits for a snapshot
        // (and hands its log to a candidate that can lead, see `handover`). Nor may a node
        // recovering from a restart without its state (see `recovery`).
        if !self.could_lead() {
            return;
        }
        self.set_leader(None);
        self.set_role(Role::PreCandidate);
        for peer in self.peers.iter_mut() {
            peer.granted = false;
        }
        if self.majority_granted() {
            self.start_election(now_ms);
            return;
        }
        let term = self.term + 1;
        self.send_to_voters(Outgoing::PreVote { term });
    }

    /// Queues `message` for every other voter.
    fn send_to_voters(&mut self, message: Outgoing) {
        let voters: heapless::Vec<NodeId, { super::config::MAX_MEMBERS }> = self
            .peers
            .iter()
            .filter(|p| p.voter)
            .map(|p| p.id)
            .collect();
        for id in voters {
            self.send(id, message);
        }
    }

    fn start_election(&mut self, now_ms: u64) {
        self.term += 1;
        self.voted_for = Some(self.config.node_id);
        self.set_role(Role::Candidate);
        self.reset_election_deadline(now_ms);
        for peer in self.peers.iter_mut() {
            peer.granted = false;
        }
        if self.majority_granted() {
            self.become_leader(now_ms);
            return;
        }
        self.send_to_voters(Outgoing::Vote { term: self.term });
    }

    pub(crate) fn handle_pre_vote(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        last_log: LogPosition,
    ) {
        // Whether this node votes in its own membership is not asked (Raft thesis 4.2.3): a
        // node whose latest membership entry is uncommitted and about to be replaced may be
        // a voter in the candidate's, and refusing would deadlock the election (found by
        // the simulator). The candidate counts only the votes of its own voters.
        // A node recovering from a restart without its state grants nothing: it may have
        // voted before and forgotten it (see `recovery`).
        let granted = term > self.term
            && self.may_vote()
            && !self.leader_is_fresh(now_ms)
            && self.log_is_current(last_log);
        // A rejection carries this node's term, so that a pre-candidate behind it learns
        // the term exists (it could otherwise never ask for a high enough one). A grant
        // echoes the term asked about.
        let reply_term = if granted { term } else { self.term };
        self.send(
            from,
            Outgoing::PreVoteReply {
                term: reply_term,
                granted,
            },
        );
        if !granted {
            self.offer_log_if_refused_for_it(now_ms, from, last_log);
        }
    }

    pub(crate) fn handle_pre_vote_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        granted: bool,
    ) {
        if !granted && term > self.term {
            // A voter is in a later term than ours: it exists, so adopt it (this disturbs
            // nobody) and ask again from there.
            self.step_down(now_ms, term, None);
            return;
        }
        if self.role != Role::PreCandidate || term != self.term + 1 || !granted {
            return;
        }
        if let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) {
            peer.granted = true;
        }
        if self.majority_granted() {
            self.start_election(now_ms);
        }
    }

    pub(crate) fn handle_vote(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        last_log: LogPosition,
    ) {
        if term > self.term {
            if self.leader_is_fresh(now_ms) {
                // Stickiness: a leader is alive; this candidate was cut off. Ignore it
                // without adopting its term, as PreVote would have told it.
                return;
            }
            self.step_down(now_ms, term, None);
        }
        // As for PreVote, whether this node votes in its own membership is not asked.
        let granted = term == self.term
            && self.may_vote()
            && self.voted_for.is_none_or(|id| id == from)
            && self.log_is_current(last_log);
        if granted {
            self.voted_for = Some(from);
            self.reset_election_deadline(now_ms);
        }
        self.send(
            from,
            Outgoing::VoteReply {
                term: self.term,
                granted,
            },
        );
        if !granted {
            self.offer_log_if_refused_for_it(now_ms, from, last_log);
        }
    }

    pub(crate) fn handle_vote_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        granted: bool,
    ) {
        if term > self.term {
            self.step_down(now_ms, term, None);
            return;
        }
        if self.role != Role::Candidate || term != self.term || !granted {
            return;
        }
        if let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) {
            peer.granted = true;
        }
        if self.majority_granted() {
            self.become_leader(now_ms);
        }
    }

    fn become_leader(&mut self, now_ms: u64) {
        self.set_role(Role::Leader);
        self.set_leader(Some(self.config.node_id));
        let next = self.log.last_index() + 1;
        for peer in self.peers.iter_mut() {
            peer.next_index = next;
            peer.match_index = 0;
            peer.inflight = 0;
            peer.last_heard_ms = now_ms;
            peer.progress_ms = now_ms;
            peer.acked_round = 0;
            // Unknown until it reports: no snapshot may wipe it before then.
            peer.held_index = None;
            peer.needs_snapshot = false;
            peer.snapshot = None;
        }
        // Continue the cluster clock from the last reading this node saw.
        let _ = self.clock.now(now_ms);
        // A leader's store reflects its whole log: apply the entries it holds but has not
        // applied (received from the previous leader, not yet known committed).
        self.apply_through(self.log.last_index());
        // A no-op of the new term: committing it commits every earlier entry, which tells
        // the leader its commit index (Raft section 5.4.2).
        let _ = self.propose(now_ms, super::command::Command::Noop);
        self.election_deadline_ms = now_ms + self.config.election_timeout_max_ms;
        self.start_round(now_ms);
        self.advance_commit(now_ms);
    }

    /// CheckQuorum: run every election timeout while leading.
    pub(crate) fn check_quorum(&mut self, now_ms: u64) {
        let window = self.config.election_timeout_max_ms;
        let heard = self
            .peers
            .iter()
            .filter(|p| p.voter && now_ms.saturating_sub(p.last_heard_ms) < window)
            .count()
            + usize::from(self.is_voter());
        if heard < self.quorum() {
            self.step_down(now_ms, self.term, None);
        } else {
            self.election_deadline_ms = now_ms + window;
        }
    }

    /// Leader steps down: waiting reads fail (they had no effect), waiting writes end with
    /// an unknown outcome (the entry may still commit under a later leader).
    pub(crate) fn fail_leader_tickets(&mut self) {
        use super::tickets::Wait;
        self.tickets.end_where(|pending| match pending.wait {
            Wait::Read { .. } => Some(Ending::Fail {
                code: crate::wire::ErrorCode::NoLeader,
                detail: "leadership lost before the read was confirmed; retry",
            }),
            Wait::Commit { .. } => Some(Ending::Fail {
                code: crate::wire::ErrorCode::Timeout,
                detail: "leadership lost before the write was acknowledged by a quorum; outcome unknown",
            }),
            _ => None,
        });
    }
}
