//! The node: one member of a cluster, driven by its shell.
//!
//! # Call order
//!
//! A shell (tokio, embassy, the simulator) owns the sockets and the clock and drives a
//! [`Node`] like this, always passing the current time in milliseconds:
//!
//! 1. When a frame arrives from a peer: [`Node::handle_peer_frame`]; from a client:
//!    [`Node::handle_client_frame`]. Each returns at once what to do with the bytes it
//!    may have written into the caller's buffer (reply, hold, forward).
//! 2. When [`Node::poll_timeout`] passes: [`Node::handle_timeout`].
//! 3. After any of these, drain the outputs until they return `None`:
//!    [`Node::poll_peer_transmit`] (frames for peers), [`Node::poll_ticket_event`] (what to
//!    do with waiting requests) and [`Node::poll_event`] (what to log).
//!
//! The node never blocks, never reads a clock and never allocates; everything it keeps is
//! bounded by the [`NodeConfig`], the store's and log's limits and `TICKETS`.

use heapless::{Deque, Vec};

use super::clock::ClusterClock;
use super::command::Command;
use super::config::{NodeConfig, MAX_MEMBERS};
use super::log::Log;
use super::membership::Membership;
use super::rng::Rng;
use super::tickets::{Ending, TicketEvent, Tickets};
use crate::store::Store;
use crate::wire::{
    decode, encode_frame, AppendOutcome, LogIndex, LogPosition, NodeId, PeerMessage, Term,
};

/// Capacity of the queue of small peer messages (votes, replies) awaiting transmission.
/// A full queue drops the message, as a lossy network would; the protocol retries.
const OUTBOX: usize = 64;
/// Capacity of the queue of events for the shell's log.
const EVENTS: usize = 32;

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks the voters whether it could win an election, without changing any term.
    PreCandidate,
    /// Stands for election in its current term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Something a shell may want to log or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node took a new role.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The term.
        term: u64,
    },
    /// The node learned who leads (or that nobody it knows of does).
    LeaderChanged {
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The term.
        term: u64,
    },
    /// A committed entry could not be applied to the store (it is smaller than the
    /// leader's): this node's store no longer matches the cluster's.
    ApplyFailed {
        /// The entry.
        index: u64,
    },
    /// This node had applied entries that a new leader discarded, and could not undo
    /// them (no undo journal, or it had given up on them): its store will be replaced by
    /// a snapshot from the leader.
    StoreStale {
        /// The term.
        term: u64,
    },
    /// This node had applied entries that a new leader discarded, and undid them with its
    /// undo journal: its store is as after entry `from - 1`.
    RolledBack {
        /// The first entry undone.
        from: u64,
        /// How many entries were undone.
        entries: u64,
    },
    /// A snapshot was installed: the store now reflects the log through `index`.
    SnapshotInstalled {
        /// The last entry the snapshot reflects.
        index: u64,
    },
    /// The membership in force changed (a change entered the log, a truncation removed
    /// one, or a snapshot brought one): the shell dials new members and drops gone ones.
    MembershipChanged {
        /// The entry that made the change (0 when it came with the log's base).
        index: u64,
        /// Voters now.
        voters: usize,
        /// Members now, learners included.
        members: usize,
    },
    /// A node removed from the membership is no longer a peer (the change committed): the
    /// shell may hang up on it.
    PeerDeparted {
        /// The removed node.
        peer: NodeId,
    },
    /// This node, restarted without its state ([`Node::restarted_without_state`]), caught up
    /// with a leader: it votes and may stand for election again.
    Recovered {
        /// The term of the leader it caught up with.
        term: u64,
    },
    /// A snapshot started streaming to a follower behind this leader's log.
    SnapshotStarted {
        /// The follower.
        to: NodeId,
        /// The last entry the snapshot reflects.
        index: u64,
    },
}

/// What the node knows of one other member.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub id: NodeId,
    pub voter: bool,
    /// Next entry to send (leader).
    pub next_index: u64,
    /// Highest entry known to be replicated there (leader).
    pub match_index: u64,
    /// `Append`s with entries sent and not yet answered (leader).
    pub inflight: u32,
    /// A heartbeat is due (leader).
    pub heartbeat_due: bool,
    /// When it last answered us (leader: check quorum).
    pub last_heard_ms: u64,
    /// Highest heartbeat round it answered (leader: read index).
    pub acked_round: u64,
    /// Its answer in the current (pre-)election.
    pub granted: bool,
    /// Forwarded requests already taken from it (leader), so that a duplicated message
    /// is never executed twice.
    pub forwards: ReplayWindow,
    /// The last log index it reported holding (leader; `None` until it reports): what a
    /// snapshot would wipe.
    pub held_index: Option<u64>,
    /// It asked for a snapshot, or needs entries this leader discarded (leader).
    pub needs_snapshot: bool,
    /// The snapshot being sent to it (leader).
    pub snapshot: Option<super::snapshot_transfer::OutgoingSnapshot>,
    /// The shell said the connection to it broke (`handle_peer_lost`) and nothing has come
    /// from it since: requests are not forwarded to it while it leads.
    pub link_down: bool,
    /// When it last took entries or a snapshot chunk, or answered holding the whole log
    /// (leader): a follower that progresses keeps the log's entries it lacks (see
    /// `make_room_for`).
    pub progress_ms: u64,
}

/// Which ids of a sender's forwarded requests were seen: the highest, and a bitmap of the
/// 64 below it (the anti-replay window of IPsec). A follower numbers its forwards in
/// increasing order, so an id at or below the window was either seen or arrived more than
/// 64 forwards late; both are dropped (the latter's client times out, outcome unknown).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    highest: u64,
    seen_below: u64,
}

impl ReplayWindow {
    /// Records `id`; returns false if it must not be executed (seen, or too old).
    pub fn accept(&mut self, id: u64) -> bool {
        if id > self.highest {
            let shift = id - self.highest;
            // The old highest (if there was one) joins the bitmap, `shift` below the new.
            let old_highest = if self.highest > 0 && shift <= 64 {
                1 << (shift - 1)
            } else {
                0
            };
            let kept = if shift >= 64 {
                0
            } else {
                self.seen_below << shift
            };
            self.seen_below = kept | old_highest;
            self.highest = id;
            return true;
        }
        let below = self.highest - id;
        if below == 0 || below > 64 {
            return false;
        }
        let bit = 1u64 << (below - 1);
        let fresh = self.seen_below & bit == 0;
        self.seen_below |= bit;
        fresh
    }
}

/// Small peer messages queued for transmission.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outgoing {
    PreVote {
        term: u64,
    },
    PreVoteReply {
        term: u64,
        granted: bool,
    },
    Vote {
        term: u64,
    },
    VoteReply {
        term: u64,
        granted: bool,
    },
    AppendReply {
        term: u64,
        round: u64,
        outcome: AppendOutcome,
    },
    SnapshotReply {
        term: u64,
        snapshot_id: u64,
        next_offset: u64,
        failed: bool,
    },
    /// The answer to a recovery query: this node's term, last log position and membership
    /// as they are when it is sent.
    RecoveryReply {
        nonce: u64,
    },
    /// The entries after `prev_index`, for a candidate refused for its log (see `handover`).
    LogOffer {
        prev_index: u64,
    },
}

/// What a node knows of another member, for `cluster status` and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member.
    pub id: NodeId,
    /// Whether it votes.
    pub voter: bool,
    /// Leader: the highest entry known replicated there.
    pub match_index: u64,
    /// Leader: the next entry to send.
    pub next_index: u64,
    /// Leader: appends in flight.
    pub inflight: u32,
    /// Leader: it needs (or is receiving) a snapshot.
    pub needs_snapshot: bool,
    /// Leader: when it last answered, in this node's milliseconds.
    pub last_heard_ms: u64,
}

/// What the shell does after [`Node::handle_peer_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAction {
    /// Nothing (any replies were queued for [`Node::poll_peer_transmit`]).
    None,
    /// Send the first `len` bytes of the buffer to peer `to` now.
    Send {
        /// The peer.
        to: NodeId,
        /// Bytes written.
        len: usize,
    },
    /// Hold the first `len` bytes of the buffer under `ticket`; send them to peer `to` when
    /// the ticket is released.
    Wait {
        /// The ticket.
        ticket: super::tickets::Ticket,
        /// The peer to send them to.
        to: NodeId,
        /// Bytes written.
        len: usize,
    },
    /// The answer to a forwarded request: send the first `len` bytes of the buffer to the
    /// client that holds `ticket`, which is now done.
    ClientReply {
        /// The ticket.
        ticket: super::tickets::Ticket,
        /// Bytes written.
        len: usize,
    },
}

/// A member of a memdi cluster. See the [module documentation](self).
#[derive(Debug)]
pub struct Node<M, L, const TICKETS: usize> {
    pub(crate) config: NodeConfig,
    pub(crate) store: Store<M>,
    pub(crate) log: Log<L>,
    pub(crate) term: u64,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader_id: Option<NodeId>,
    pub(crate) commit_index: u64,
    /// Entries applied to the store. On a leader this runs ahead of the commit index: a
    /// leader applies a write when it accepts it.
    pub(crate) applied_index: u64,
    pub(crate) peers: Vec<Peer, MAX_MEMBERS>,
    pub(crate) election_deadline_ms: u64,
    pub(crate) heartbeat_deadline_ms: u64,
    pub(crate) last_leader_contact_ms: Option<u64>,
    /// Leader: the current heartbeat round.
    pub(crate) round: u64,
    pub(crate) rng: Rng,
    pub(crate) clock: ClusterClock,
    pub(crate) outbox: Deque<(NodeId, Outgoing), OUTBOX>,
    pub(crate) events: Deque<NodeEvent, EVENTS>,
    pub(crate) tickets: Tickets<TICKETS>,
    /// Leader: where the next append round-robin starts, so no peer starves.
    pub(crate) next_peer: usize,
    /// Leader: the index slot where the next expiry sweep starts.
    pub(crate) expiry_cursor: usize,
    /// Leader: a linearizable read waits for a heartbeat round that has not begun yet.
    /// Reads arriving together share one round.
    pub(crate) read_round_requested: bool,
    /// The store does not match the log (this node applied entries a new leader discarded,
    /// or a snapshot it was loading was interrupted): it must be replaced by a snapshot.
    /// Meanwhile the node keeps its log (it still votes on it), but applies nothing,
    /// answers no read from its store and does not stand for election.
    pub(crate) store_stale: bool,
    /// The snapshot being received (follower).
    pub(crate) incoming: Option<super::snapshot_transfer::IncomingSnapshot>,
    /// After a snapshot whose store is ahead of the log it came with: the term of the entry
    /// at the applied index, which the log does not hold yet. When that entry arrives, a
    /// different term means the store holds effects of entries a new leader replaced.
    pub(crate) applied_term: Option<u64>,
    /// Numbers the snapshots this node sends.
    pub(crate) snapshots_started: u64,
    /// The largest frame each peer announced in its handshake answer
    /// ([`Node::handle_peer_link_up`]); peers not listed take `max_append_bytes`. Kept apart
    /// from `peers` because a link may come up before its peer is a member.
    pub(crate) peer_frame_limits: Vec<(NodeId, u32), MAX_MEMBERS>,
    /// The term and vote last given to the shell to persist.
    pub(crate) reported_hard_state: super::persist::HardState,
    /// The commit index last given to the shell to persist.
    pub(crate) reported_commit: u64,
    /// A snapshot from the leader replaced the store; the shell must write a checkpoint.
    pub(crate) store_replaced: bool,
    /// The shell has made the log durable through this entry (`durability: disk`).
    pub(crate) persisted_index: u64,
    /// The membership as of the log's base (see `membership`).
    pub(crate) base_membership: Membership,
    /// The membership in force: the latest in the log, else `base_membership`.
    pub(crate) membership: Membership,
    /// The entry `membership` came from (0 when it is `base_membership`).
    pub(crate) membership_index: u64,
    /// Whether this node votes in `membership`.
    pub(crate) voter: bool,
    /// What entries applied before they committed overwrote (see `undo`), once the shell
    /// gave memory for it.
    pub(crate) undo: Option<super::undo::UndoJournal<L>>,
    /// Set while this node recovers from a restart without its state (see `recovery`).
    pub(crate) recovery: Option<super::recovery::Recovery>,
    /// Leader: when it saw its own removal committed; it leads on until a voter can take
    /// over (see `step_down_if_removed`).
    pub(crate) removed_since_ms: Option<u64>,
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// A node that starts as a follower with an empty log and `store` (empty, or loaded
    /// from a snapshot of the state through `log`'s base).
    pub fn new(config: NodeConfig, mut store: Store<M>, log: Log<L>, now_ms: u64) -> Self {
        // Expired keys leave the store only through logged deletes, decided by the leader,
        // so that every replica removes the same keys.
        store.set_reclaim_expired(false);
        let membership = config.initial_membership();
        let applied = log.first_index() - 1;
        // This life's ticket numbers: from the seed and the start time, so that a restarted
        // node (same seed) does not reuse its previous life's (see `Tickets::starting_at`).
        let seed_for_tickets = config.rng_seed ^ now_ms.rotate_left(23) ^ 0x0074_6963_6b65_7473;
        let mut node = Self {
            rng: Rng::new(config.rng_seed),
            config,
            store,
            log,
            term: 0,
            voted_for: None,
            role: Role::Follower,
            leader_id: None,
            commit_index: applied,
            applied_index: applied,
            peers: Vec::new(),
            election_deadline_ms: 0,
            heartbeat_deadline_ms: u64::MAX,
            last_leader_contact_ms: None,
            round: 0,
            clock: ClusterClock::new(),
            outbox: Deque::new(),
            events: Deque::new(),
            tickets: Tickets::starting_at(super::rng::Rng::new(seed_for_tickets).next_u64()),
            next_peer: 0,
            expiry_cursor: 0,
            read_round_requested: false,
            store_stale: false,
            incoming: None,
            applied_term: None,
            snapshots_started: 0,
            peer_frame_limits: Vec::new(),
            reported_hard_state: super::persist::HardState::default(),
            reported_commit: applied,
            store_replaced: false,
            persisted_index: applied,
            base_membership: membership.clone(),
            membership,
            membership_index: 0,
            voter: false,
            undo: None,
            recovery: None,
            removed_since_ms: None,
        };
        node.adopt_membership(now_ms);
        node.reset_election_deadline(now_ms);
        node
    }

    /// A node restarting *without* the log, vote and store it had (a board after a reset, a
    /// server that lost its disk), with the same arguments as [`Node::new`] (`store` and
    /// `log` empty). It recovers before it votes or stands for election, or safety would be
    /// lost (it could vote twice in a term, or help elect a leader missing an entry committed
    /// with its acknowledgement): it stays silent for twice the longest election timeout,
    /// asks a majority of the voters for their terms, never votes in a term at or below the
    /// highest, and ends recovery ([`NodeEvent::Recovered`]) once it holds the log of a
    /// leader of such a term up to that leader's commit index. Meanwhile it follows the
    /// leader and serves stale reads. See `recovery` and docs/protocol.md 4.10.
    pub fn restarted_without_state(
        config: NodeConfig,
        store: Store<M>,
        log: Log<L>,
        now_ms: u64,
    ) -> Self {
        let wait_ms = config.election_timeout_max_ms.saturating_mul(2);
        // A different nonce in every life, so that an answer to an earlier life's query is
        // not taken for an answer to this one's.
        let nonce =
            Rng::new(config.rng_seed ^ now_ms.rotate_left(29) ^ 0x0072_6563_6f76_6572).next_u64();
        let mut node = Self::new(config, store, log, now_ms);
        node.recovery = Some(super::recovery::Recovery::new(now_ms, wait_ms, nonce));
        node
    }

    /// Gives the node `memory` for its undo journal (see `undo`): with it, a deposed
    /// leader undoes the writes a new leader discarded instead of waiting for a snapshot,
    /// and a cluster whose only complete logs are on such nodes can still elect one. Size it
    /// for the writes a leader holds uncommitted (their keys and the values they replace);
    /// what does not fit falls back to the snapshot. Effects already in the store (a
    /// restored node's) cannot be undone.
    pub fn set_undo_memory(&mut self, memory: L) {
        self.undo = Some(super::undo::UndoJournal::new(
            memory,
            self.applied_index + 1,
        ));
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The leader this node follows, if known (itself when leading).
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }

    /// Index of the last entry known committed.
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }

    /// Index of the last entry applied to the store.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The store (for stale reads by a shell, and for checks).
    pub fn store(&self) -> &Store<M> {
        &self.store
    }

    /// The log.
    pub fn log(&self) -> &Log<L> {
        &self.log
    }

    /// What this node knows of the other members (replication progress when leading).
    pub fn members(&self) -> impl Iterator<Item = MemberStatus> + '_ {
        self.peers.iter().map(|peer| MemberStatus {
            id: peer.id,
            voter: peer.voter,
            match_index: peer.match_index,
            next_index: peer.next_index,
            inflight: peer.inflight,
            needs_snapshot: peer.needs_snapshot || peer.snapshot.is_some(),
            last_heard_ms: peer.last_heard_ms,
        })
    }

    /// Requests waiting on this node.
    pub fn waiting_requests(&self) -> usize {
        self.tickets.waiting()
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The cluster clock as this node sees it now.
    pub fn cluster_time_ms(&mut self, now_ms: u64) -> u64 {
        self.clock.now(now_ms)
    }

    pub(crate) fn push_event(&mut self, event: NodeEvent) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(event);
    }

    pub(crate) fn send(&mut self, to: NodeId, message: Outgoing) {
        let _ = self.outbox.push_back((to, message));
    }

    pub(crate) fn last_log(&self) -> LogPosition {
        LogPosition {
            term: Term(self.log.last_term()),
            index: LogIndex(self.log.last_index()),
        }
    }

    pub(crate) fn reset_election_deadline(&mut self, now_ms: u64) {
        let timeout = self.rng.between(
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        self.election_deadline_ms = now_ms + timeout;
    }

    pub(crate) fn set_role(&mut self, role: Role) {
        if self.role != role {
            self.role = role;
            self.push_event(NodeEvent::RoleChanged {
                role,
                term: self.term,
            });
        }
    }

    pub(crate) fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader_id != leader {
            self.leader_id = leader;
            self.push_event(NodeEvent::LeaderChanged {
                leader,
                term: self.term,
            });
            if leader.is_some() {
                self.resubmit_held_requests();
            }
        }
    }

    /// Requests held for want of a reachable leader can go now.
    pub(crate) fn resubmit_held_requests(&mut self) {
        self.tickets.end_where(|pending| {
            matches!(pending.wait, super::tickets::Wait::Leader).then_some(Ending::Resubmit)
        });
    }

    /// A frame came from `from`: it is alive, whatever the shell said of the link before.
    fn note_heard_from(&mut self, from: NodeId) {
        let leader = self.leader_id;
        if let Some(peer) = self.peers.iter_mut().find(|p| p.id == from && p.link_down) {
            peer.link_down = false;
            if leader == Some(from) {
                self.resubmit_held_requests();
            }
        }
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&self) -> u64 {
        let mut timer = if self.role == Role::Leader {
            self.heartbeat_deadline_ms.min(self.election_deadline_ms)
        } else {
            self.election_deadline_ms
        };
        if let Some(deadline) = self.recovery_deadline_ms() {
            timer = timer.min(deadline);
        }
        match self.tickets.earliest_deadline_ms() {
            Some(deadline) => timer.min(deadline),
            None => timer,
        }
    }

    /// Runs whatever timers have expired by `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.expire_tickets(now_ms);
        self.recovery_timeout(now_ms);
        if self.role == Role::Leader {
            if now_ms >= self.heartbeat_deadline_ms {
                self.start_round(now_ms);
                self.sweep_expired_keys(now_ms);
                self.step_down_if_removed(now_ms);
            }
            if now_ms >= self.election_deadline_ms {
                self.check_quorum(now_ms);
            }
        } else if now_ms >= self.election_deadline_ms {
            self.start_pre_vote(now_ms);
        }
    }

    /// Takes one frame payload from peer `from`. Replies go to the outbox, except the
    /// answers to forwarded requests, which are written into `out` (see [`PeerAction`]).
    pub fn handle_peer_frame(
        &mut self,
        now_ms: u64,
        from: NodeId,
        payload: &[u8],
        out: &mut [u8],
    ) -> PeerAction {
        let Ok(message) = decode::<PeerMessage<'_>>(payload) else {
            return PeerAction::None;
        };
        if self.recovery_silent(now_ms) {
            // Restarted without state and still in the silent wait (see `recovery`): as if
            // this node were still down.
            return PeerAction::None;
        }
        // Messages are taken from peers whatever this node's membership says (the handshake
        // checked the cluster id), as Raft asks (thesis 4.2.3): a node being added learns
        // the membership from the leader, and a node whose membership entry is about to be
        // replaced must still vote for candidates that count it. Answers from nodes that are
        // not members are ignored by their handlers, which look the sender up among the
        // peers; so are forwarded requests.
        self.note_heard_from(from);
        match message {
            PeerMessage::PreVote { term, last_log } => {
                self.handle_pre_vote(now_ms, from, term.0, last_log)
            }
            PeerMessage::PreVoteReply { term, granted } => {
                self.handle_pre_vote_reply(now_ms, from, term.0, granted)
            }
            PeerMessage::Vote { term, last_log } => {
                self.handle_vote(now_ms, from, term.0, last_log)
            }
            PeerMessage::VoteReply { term, granted } => {
                self.handle_vote_reply(now_ms, from, term.0, granted)
            }
            PeerMessage::Append {
                term,
                prev,
                commit,
                round,
                cluster_time_ms,
                entries,
            } => self.handle_append(
                now_ms,
                from,
                term.0,
                prev,
                commit.0,
                round,
                cluster_time_ms,
                entries,
            ),
            PeerMessage::AppendReply {
                term,
                round,
                outcome,
            } => self.handle_append_reply(now_ms, from, term.0, round, outcome),
            PeerMessage::Forward {
                forward_id,
                request,
            } => {
                let fresh = self
                    .peers
                    .iter_mut()
                    .find(|p| p.id == from)
                    .is_some_and(|peer| peer.forwards.accept(forward_id));
                if !fresh {
                    return PeerAction::None;
                }
                return self.handle_forward(now_ms, from, forward_id, request, out);
            }
            PeerMessage::ForwardReply {
                forward_id,
                response,
            } => return self.handle_forward_reply(forward_id, response, out),
            PeerMessage::Snapshot {
                term,
                base,
                snapshot_id,
                offset,
                done,
                members,
                data,
            } => self.handle_snapshot(
                now_ms,
                from,
                term.0,
                base,
                super::snapshot_transfer::Chunk {
                    snapshot_id,
                    offset,
                    done,
                    members,
                    data,
                },
            ),
            PeerMessage::SnapshotReply {
                term,
                snapshot_id,
                next_offset,
                failed,
            } => self.handle_snapshot_reply(now_ms, from, term.0, snapshot_id, next_offset, failed),
            PeerMessage::RecoveryQuery { nonce } => self.handle_recovery_query(from, nonce),
            PeerMessage::RecoveryReply {
                nonce,
                term,
                last_log,
                members,
            } => self.handle_recovery_reply(from, nonce, term.0, last_log, members),
            PeerMessage::LogOffer { prev, entries } => self.handle_log_offer(now_ms, prev, entries),
        }
        PeerAction::None
    }

    /// A message of a higher term: adopt it and follow.
    pub(crate) fn step_down(&mut self, now_ms: u64, term: u64, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        let was_leader = self.role == Role::Leader;
        self.set_role(Role::Follower);
        self.set_leader(leader);
        if was_leader {
            self.heartbeat_deadline_ms = u64::MAX;
            self.fail_leader_tickets();
            self.reset_election_deadline(now_ms);
        }
    }

    /// The next frame for a peer, written into `out`, or `None` when nothing is due.
    /// `out` must hold a frame of `max_append_bytes` plus the same again as scratch.
    pub fn poll_peer_transmit(&mut self, now_ms: u64, out: &mut [u8]) -> Option<(NodeId, usize)> {
        while let Some((to, message)) = self.outbox.pop_front() {
            if let Some(len) = self.encode_outgoing(to, message, out) {
                return Some((to, len));
            }
        }
        if let Some(query) = self.next_recovery_query(out) {
            return Some(query);
        }
        if self.role == Role::Leader {
            if self.read_round_requested {
                self.read_round_requested = false;
                self.start_round(now_ms);
            }
            return self.next_append(now_ms, out);
        }
        None
    }

    fn encode_outgoing(&self, to: NodeId, message: Outgoing, out: &mut [u8]) -> Option<usize> {
        let last_log = self.last_log();
        let frame = match message {
            Outgoing::LogOffer { prev_index } => {
                return self.encode_log_offer(to, prev_index, out);
            }
            Outgoing::PreVote { term } => PeerMessage::PreVote {
                term: Term(term),
                last_log,
            },
            Outgoing::PreVoteReply { term, granted } => PeerMessage::PreVoteReply {
                term: Term(term),
                granted,
            },
            Outgoing::Vote { term } => PeerMessage::Vote {
                term: Term(term),
                last_log,
            },
            Outgoing::VoteReply { term, granted } => PeerMessage::VoteReply {
                term: Term(term),
                granted,
            },
            Outgoing::AppendReply {
                term,
                round,
                outcome,
            } => PeerMessage::AppendReply {
                term: Term(term),
                round,
                outcome,
            },
            Outgoing::SnapshotReply {
                term,
                snapshot_id,
                next_offset,
                failed,
            } => PeerMessage::SnapshotReply {
                term: Term(term),
                snapshot_id,
                next_offset,
                failed,
            },
            Outgoing::RecoveryReply { nonce } => PeerMessage::RecoveryReply {
                nonce,
                term: Term(self.term),
                last_log,
                members: self.membership.as_bytes(),
            },
        };
        encode_frame(&frame, out).ok()
    }

    /// The next event for the shell's log.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The next thing to do for a waiting request; error replies are written into `out`.
    pub fn poll_ticket_event(&mut self, out: &mut [u8]) -> Option<TicketEvent> {
        let (pending, ending) = self.tickets.next_ending()?;
        Some(match ending {
            Ending::Release => TicketEvent::Release {
                ticket: pending.ticket,
            },
            Ending::Resubmit => TicketEvent::Resubmit {
                ticket: pending.ticket,
            },
            Ending::Fail { code, detail } => TicketEvent::Reply {
                ticket: pending.ticket,
                len: self.error_frame(pending.reply_to, code, detail, out),
            },
        })
    }

    /// Applies committed entries a follower has not applied yet.
    pub(crate) fn apply_committed(&mut self) {
        self.apply_through(self.commit_index);
    }

    /// Leader: records in the undo journal what `command`, about to be applied as the next
    /// entry, overwrites.
    pub(crate) fn journal_next(&mut self, command: &Command<'_>) {
        let index = self.applied_index + 1;
        let commits = self.next_entry_commits_on_append();
        let undo = self.undo.as_mut().filter(|_| !commits);
        journal_command(undo, &self.store, self.commit_index, index, command);
    }

    /// Leader: whether the entry about to be appended commits as it is appended: this node
    /// is the only voter, so its own log is the majority. A committed entry is never
    /// replaced, so a record in the undo journal of what it overwrote could never be used;
    /// a lone node makes none for its writes.
    pub(crate) fn next_entry_commits_on_append(&self) -> bool {
        self.role == Role::Leader && self.is_voter() && self.quorum() == 1
    }

    /// Follower: entries from `from` on, some of them applied, are being replaced by a new
    /// leader's. Undoes them with the journal if it can; otherwise the store is stale
    /// until a snapshot replaces it (the log stays: it is a valid Raft log and may hold
    /// committed entries a majority needs).
    pub(crate) fn roll_back_store(&mut self, from: u64) {
        let entries = self.applied_index + 1 - from;
        let undone = match self.undo.as_mut() {
            Some(undo) => undo.roll_back(&mut self.store, from).ok(),
            None => None,
        };
        // Entries that changed nothing (no-ops, membership changes) need no undoing, journal
        // or not (found by the simulator: a leader deposed just after proposing a
        // membership change had to wait for a snapshot).
        let changed_nothing = || {
            (from..=self.applied_index).all(|index| {
                self.log
                    .entry(index)
                    .is_some_and(|(_, bytes)| Command::leaves_store_alone(bytes))
            })
        };
        if undone.is_some() || changed_nothing() {
            self.applied_index = from - 1;
            self.push_event(NodeEvent::RolledBack { from, entries });
            if self.config.persistent && undone.is_some_and(|records| records > 0) {
                // The last checkpoint may hold the undone effects, which a restart from it
                // would find in no log: write a new one, as after a snapshot.
                self.store_replaced = true;
                self.persisted_index = self.persisted_index.min(from - 1);
            }
        } else {
            self.store_stale = true;
            self.push_event(NodeEvent::StoreStale { term: self.term });
        }
    }

    /// Applies the entries after the applied index up to `last`.
    pub(crate) fn apply_through(&mut self, last: u64) {
        if self.store_stale {
            return;
        }
        while self.applied_index < last {
            let index = self.applied_index + 1;
            let Some((_, bytes)) = self.log.entry(index) else {
                break;
            };
            let failed = match Command::decode(bytes) {
                Ok(command) => {
                    if index > self.commit_index {
                        // A new leader's entries not yet known committed.
                        let committed = self.commit_index;
                        journal_command(
                            self.undo.as_mut(),
                            &self.store,
                            committed,
                            index,
                            &command,
                        );
                    }
                    command.apply(&mut self.store).is_err()
                }
                Err(_) => true,
            };
            self.applied_index = index;
            if failed {
                self.push_event(NodeEvent::ApplyFailed { index });
            }
        }
    }
}

/// Records in `undo` what applying `command` as entry `index` will overwrite, after
/// forgetting the records of entries through `committed`.
pub(crate) fn journal_command<M, L>(
    undo: Option<&mut super::undo::UndoJournal<L>>,
    store: &Store<M>,
    committed: u64,
    index: u64,
    command: &Command<'_>,
) where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    let Some(undo) = undo else {
        return;
    };
    undo.forget_through(committed);
    let version = store.last_version();
    match *command {
        Command::Noop | Command::Members { .. } => {}
        Command::Put { key, .. } | Command::Delete { key } => {
            undo.save(index, version, key, store.get(key, 0));
        }
        Command::PutMany { pairs } => {
            for (key, _) in super::command::Pairs::new(pairs).into_iter().flatten() {
                if !undo.save(index, version, key, store.get(key, 0)) {
                    break;
                }
            }
        }
        Command::Clear => {
            for entry in store.iter() {
                if !undo.save(index, version, entry.key, Some(entry)) {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayWindow;

    #[test]
    fn replay_window_takes_each_id_once_in_any_order_within_64() {
        let mut window = ReplayWindow::default();
        assert!(window.accept(5));
        assert!(!window.accept(5));
        assert!(window.accept(3));
        assert!(!window.accept(3));
        assert!(window.accept(4));
        assert!(window.accept(70));
        assert!(!window.accept(4), "more than 64 behind the highest");
        assert!(window.accept(69));
        assert!(!window.accept(69));
        assert!(!window.accept(70));
        assert!(window.accept(200));
        assert!(window.accept(137));
        assert!(window.accept(136), "exactly 64 below: still in the window");
        assert!(!window.accept(136));
        assert!(!window.accept(135), "65 below: too old");
    }
}
