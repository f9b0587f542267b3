//! Bringing a follower up to date with a snapshot of the leader's store.
//!
//! A follower gets a snapshot when it needs entries the leader's bounded log no longer
//! holds, or when its own store no longer matches its log (`store_stale`). The leader
//! streams a *fuzzy* snapshot of its live store (see
//! [`SnapshotEncoder::new_fuzzy`](crate::snapshot::SnapshotEncoder::new_fuzzy)), which
//! reflects its *applied* index, and the follower's log starts at the leader's *commit*
//! index: the entries between, applied speculatively by the leader and not yet committed,
//! reach the follower as ordinary log entries (not applied again), so that if a new leader
//! replaces them the follower sees the conflict and gets a new snapshot. (A base at the
//! applied index, taken as committed, once kept a discarded write on a follower: found by
//! the simulator in 1 of 100,000 seeds.) Replaying the entries after the applied index
//! makes the store exact, since log entries are idempotent state changes.
//!
//! **Stop and wait, with resumption.** One chunk is in flight at a time. The leader keeps a
//! copy of the encoder's state at the last acknowledged offset; a lost chunk is sent again
//! from there. The store may have changed meanwhile, so the bytes may differ from the lost
//! chunk's, but any continuation of a fuzzy stream from a chunk boundary is a valid fuzzy
//! stream (chunks hold whole entries), and the CRC covers the bytes actually received.
//!
//! **Safety: a snapshot never wipes the only copies.** Loading a snapshot replaces the
//! follower's store and log, so whatever it held is lost to it. The leader starts a snapshot
//! to a follower only when enough voters *not counting that follower* (the leader included,
//! which holds everything) hold every entry the follower reported holding that the voters
//! lacking them are fewer than a quorum: `holders > voters - quorum`, a quorum of holders
//! for an odd number of voters, one fewer for an even number. A candidate without a
//! committed entry would need the votes of a quorum lacking it, which do not exist, so every
//! committed entry survives into every later leader's log however many snapshots are
//! loading. The most lagging follower always qualifies, so some follower can always make
//! progress. (With two voters, a rule asking for a quorum of holders besides the follower
//! never let the leader heal its only follower: found by the simulator once membership
//! changes made two-voter clusters.)

use super::membership::Membership;
use super::node::{Node, NodeEvent, Outgoing, Role};
use crate::snapshot::{SnapshotDecoder, SnapshotEncodeError, SnapshotEncoder};
use crate::wire::{encode_frame, LogIndex, LogPosition, NodeId, PeerMessage, Term};

/// A snapshot on its way to one follower (leader).
#[derive(Debug, Clone)]
pub(crate) struct OutgoingSnapshot {
    id: u64,
    base: LogPosition,
    /// The encoder as it was after the last acknowledged chunk.
    acked: SnapshotEncoder,
    acked_offset: u64,
    /// The encoder after the chunk in flight.
    sending: SnapshotEncoder,
    sent_offset: u64,
    in_flight: bool,
    sent_at_ms: u64,
}

/// One chunk of a snapshot, as received (follower).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk<'a> {
    pub snapshot_id: u64,
    pub offset: u64,
    pub done: bool,
    pub members: &'a [u8],
    pub data: &'a [u8],
}

/// A snapshot being received (follower).
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    id: u64,
    leader: NodeId,
    base: LogPosition,
    next_offset: u64,
    decoder: SnapshotDecoder,
}

impl OutgoingSnapshot {
    /// The log index the snapshot brings the follower to: it needs the entries after it.
    pub(crate) fn base_index(&self) -> u64 {
        self.base.index.0
    }
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Leader: whether loading a snapshot on peer `at` keeps every committed entry on a
    /// majority (see the module documentation).
    pub(crate) fn may_wipe(&self, at: usize, now_ms: u64) -> bool {
        let peer = &self.peers[at];
        if !peer.voter {
            return true;
        }
        let Some(held) = peer.held_index else {
            return false;
        };
        let others = self
            .peers
            .iter()
            .enumerate()
            .filter(|&(i, other)| {
                // Only voters heard from recently count.
                i != at
                    && other.voter
                    && other.match_index >= held
                    && now_ms.saturating_sub(other.last_heard_ms)
                        < self.config.election_timeout_min_ms
            })
            .count();
        // Enough holders that the voters lacking the entries are fewer than a quorum: no
        // candidate without them can win. For an odd number of voters that is a quorum of
        // holders; for an even number, one fewer (two voters: the leader alone).
        let holders = others + usize::from(self.is_voter());
        holders + self.quorum() > self.membership.voter_count()
    }

    /// Leader: the next snapshot chunk for peer `at`, if one is due, written into `out`.
    pub(crate) fn next_snapshot_chunk(
        &mut self,
        at: usize,
        now_ms: u64,
        out: &mut [u8],
    ) -> Option<(NodeId, usize)> {
        let retransmit_ms = self.config.election_timeout_min_ms / 2;
        let peer_id = self.peers[at].id;
        if self.peers[at].snapshot.is_none() {
            if !self.may_wipe(at, now_ms) {
                return None;
            }
            self.snapshots_started += 1;
            // The store reflects the applied index, which may run ahead of the commit index
            // (speculative entries); the follower's log starts at the commit index, and gets
            // the entries after it as usual, so that a later conflict with them is seen.
            let applied_term = self.log.term_at(self.applied_index).unwrap_or(self.term);
            let encoder = SnapshotEncoder::new_fuzzy(&self.store, applied_term, self.applied_index);
            let base_index = self.commit_index.max(self.log.first_index() - 1);
            let base_term = self.log.term_at(base_index).unwrap_or(0);
            self.peers[at].snapshot = Some(OutgoingSnapshot {
                id: self.snapshots_started,
                base: LogPosition {
                    term: Term(base_term),
                    index: LogIndex(base_index),
                },
                acked: encoder.clone(),
                acked_offset: 0,
                sending: encoder,
                sent_offset: 0,
                in_flight: false,
                sent_at_ms: now_ms,
            });
            self.push_event(NodeEvent::SnapshotStarted {
                to: peer_id,
                index: base_index,
            });
        }
        let term = self.term;
        let snapshot = self.peers[at].snapshot.as_ref()?;
        if snapshot.in_flight && now_ms.saturating_sub(snapshot.sent_at_ms) < retransmit_ms {
            // Waiting for the answer: nothing to build (this is asked at every poll).
            return None;
        }
        let base = snapshot.base;
        // Found by the failover benchmark: searching a 65,536-entry log for the membership
        // at every poll made a leader's turns last a second while it sent a snapshot, and
        // the other follower deposed it.
        let members = self.membership_in_force_as_of(base.index.0);
        // The membership travels in every chunk, within the chunk's budget.
        let chunk_limit = self
            .message_budget_bytes(peer_id)
            .saturating_sub(members.as_bytes().len());
        let snapshot = self.peers[at].snapshot.as_mut()?;
        if snapshot.in_flight {
            // Unanswered for the retransmission time (checked above): lost. Send again
            // from the last acknowledged point.
            snapshot.sending = snapshot.acked.clone();
            snapshot.sent_offset = snapshot.acked_offset;
        }
        let (front, back) = out.split_at_mut(out.len() / 2);
        let limit = chunk_limit.min(back.len());
        let len = match snapshot.sending.fill(&self.store, &mut back[..limit]) {
            Ok(len) => len,
            Err(SnapshotEncodeError::BufferTooSmall { .. } | SnapshotEncodeError::StoreChanged) => {
                // A record larger than a chunk: the configuration cannot snapshot this
                // store. Give up on this follower rather than loop.
                self.peers[at].snapshot = None;
                self.peers[at].needs_snapshot = false;
                return None;
            }
        };
        let message = PeerMessage::Snapshot {
            term: Term(term),
            base: snapshot.base,
            snapshot_id: snapshot.id,
            offset: snapshot.sent_offset,
            done: snapshot.sending.is_done(),
            members: members.as_bytes(),
            data: &back[..len],
        };
        let frame_len = encode_frame(&message, front).ok()?;
        snapshot.sent_offset += len as u64;
        snapshot.in_flight = true;
        snapshot.sent_at_ms = now_ms;
        Some((peer_id, frame_len))
    }

    /// Leader: a follower acknowledged a chunk, asked for one again, or failed to load.
    pub(crate) fn handle_snapshot_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        snapshot_id: u64,
        next_offset: u64,
        failed: bool,
    ) {
        if term > self.term {
            self.step_down(now_ms, term, None);
            return;
        }
        if self.role != Role::Leader || term != self.term {
            return;
        }
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) else {
            return;
        };
        peer.last_heard_ms = now_ms;
        let Some(snapshot) = peer.snapshot.as_mut().filter(|s| s.id == snapshot_id) else {
            return;
        };
        if failed {
            // It could not continue this snapshot: it cleared its log at the first chunk, or
            // it restarted without its state. Either way it holds none of what it was
            // counted for.
            peer.snapshot = None;
            peer.match_index = 0;
            return;
        }
        if next_offset == snapshot.sent_offset {
            peer.progress_ms = now_ms;
            snapshot.acked = snapshot.sending.clone();
            snapshot.acked_offset = snapshot.sent_offset;
            snapshot.in_flight = false;
            if snapshot.acked.is_done() {
                let base = snapshot.base.index.0;
                peer.snapshot = None;
                peer.needs_snapshot = false;
                peer.match_index = peer.match_index.max(base);
                peer.next_index = base + 1;
                peer.held_index = Some(base);
                peer.inflight = 0;
                peer.heartbeat_due = true;
                self.advance_commit(now_ms);
            }
        } else if next_offset == snapshot.acked_offset {
            snapshot.sending = snapshot.acked.clone();
            snapshot.sent_offset = snapshot.acked_offset;
            snapshot.in_flight = false;
        } else {
            // Out of step (a chunk from before a restart): start a new snapshot.
            peer.snapshot = None;
        }
    }

    /// Follower: a chunk of a snapshot.
    pub(crate) fn handle_snapshot(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        base: LogPosition,
        chunk: Chunk<'_>,
    ) {
        let Chunk {
            snapshot_id,
            offset,
            done,
            members,
            data,
        } = chunk;
        let reply = |node: &mut Self, next_offset: u64, failed: bool| {
            node.send(
                from,
                Outgoing::SnapshotReply {
                    term: node.term,
                    snapshot_id,
                    next_offset,
                    failed,
                },
            );
        };
        if term < self.term {
            reply(self, 0, true);
            return;
        }
        if term > self.term || self.role != Role::Follower || self.leader_id != Some(from) {
            self.step_down(now_ms, term, Some(from));
        }
        self.last_leader_contact_ms = Some(now_ms);
        self.reset_election_deadline(now_ms);
        if offset == 0 {
            // A new snapshot: forget the store and the log (the leader checked that a
            // majority of others holds everything this node held).
            self.store.clear();
            self.store.set_last_version(0);
            self.log.reset(0, 0);
            self.commit_index = 0;
            self.applied_index = 0;
            self.applied_term = None;
            self.store_stale = true;
            if let Some(undo) = self.undo.as_mut() {
                undo.reset(u64::MAX);
            }
            self.incoming = Some(IncomingSnapshot {
                id: snapshot_id,
                leader: from,
                base,
                next_offset: 0,
                decoder: SnapshotDecoder::new(),
            });
        }
        let Some(incoming) = self
            .incoming
            .as_mut()
            .filter(|i| i.id == snapshot_id && i.leader == from)
        else {
            reply(self, 0, true);
            return;
        };
        if offset != incoming.next_offset {
            let expected = incoming.next_offset;
            reply(self, expected, false);
            return;
        }
        if incoming.decoder.feed(&mut self.store, data).is_err() {
            self.incoming = None;
            reply(self, 0, true);
            return;
        }
        incoming.next_offset += data.len() as u64;
        let next_offset = incoming.next_offset;
        if done {
            let Some(incoming) = self.incoming.take() else {
                return;
            };
            let membership = Membership::decode(members);
            match incoming.decoder.finish(&mut self.store) {
                Ok(meta) if membership.is_ok() => {
                    // The log starts at the leader's commit index (`base`); the store
                    // reflects the leader's applied index (`meta.log_index`), possibly
                    // further, whose entries arrive next and are not applied again.
                    self.log.reset(incoming.base.index.0, incoming.base.term.0);
                    self.commit_index = incoming.base.index.0;
                    self.applied_index = meta.log_index.max(incoming.base.index.0);
                    self.applied_term =
                        (meta.log_index > incoming.base.index.0).then_some(meta.term);
                    self.store_stale = false;
                    if let Some(undo) = self.undo.as_mut() {
                        // The store's effects past the base came with it, unrecorded.
                        undo.reset(self.applied_index + 1);
                    }
                    self.store_replaced = true;
                    self.persisted_index = 0;
                    self.push_event(NodeEvent::SnapshotInstalled {
                        index: incoming.base.index.0,
                    });
                    if let Ok(membership) = membership {
                        self.reset_membership(now_ms, membership);
                    }
                }
                _ => {
                    reply(self, 0, true);
                    return;
                }
            }
        }
        reply(self, next_offset, false);
    }
}
