//! Log replication: the leader's `Append`s, the followers' answers, and commitment.
//!
//! The leader pipelines: it sends entries from a peer's `next_index` and moves
//! `next_index` past them at once, keeping up to `max_inflight_appends` such messages
//! unanswered per peer; heartbeats go out every `heartbeat_interval_ms` whatever the window.
//! A rejection (the follower lacks the entry before the ones sent, after a loss or a leader
//! change) moves `next_index` back to just after the follower's last entry and empties the
//! window. Lost messages are repaired the same way: the next heartbeat's `prev` is one the
//! follower lacks, it rejects, and the leader resends.
//!
//! An entry is committed when a majority of voters hold it and it is of the leader's term
//! (Raft's rule; earlier entries commit with it). Followers apply committed entries; the
//! leader has already applied every entry when it accepted it.

use super::command::Command;
use super::log::AppendError;
use super::node::{Node, NodeEvent, Outgoing, Role};
use super::tickets::{Ending, Wait};
use crate::wire::{
    encode_frame, AppendOutcome, LogIndex, LogPosition, NodeId, Packed, PackedWriter, PeerMessage,
    Term,
};

/// Bytes of an entry's term in an `Append`.
const ENTRY_TERM_BYTES: usize = 8;

/// Why the leader could not accept a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProposeError {
    /// The log is full of entries not yet committed: the followers are behind.
    LogFull,
    /// The entry is larger than the log.
    TooLarge,
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Whether the log has room for `command` now, discarding applied and committed
    /// entries if need be (see `make_room_for`).
    pub(crate) fn make_room(
        &mut self,
        now_ms: u64,
        command: &Command<'_>,
    ) -> Result<(), ProposeError> {
        self.make_room_for(now_ms, command.encoded_len())
    }

    /// Whether the log has room for an entry of `len` bytes, discarding applied and
    /// committed entries if need be.
    ///
    /// **Flow control.** A leader keeps the entries a follower that is keeping up still
    /// needs: one heard from and progressing (taking entries or snapshot chunks) within
    /// the longest election timeout, in the log or receiving a snapshot (whose entries
    /// after its base it will need next). The write is refused (`LogFull`, answered `Busy`:
    /// nothing done, retry) until the follower has them. Discarding them instead sent
    /// such a follower a snapshot, and on a board's 128-entry log the next one while the
    /// first streamed: a leader of two servers sent 88 snapshots to one in a 30,000-write
    /// run (docs/benchmarks.md, "The embedded node"). A follower that stops progressing
    /// for that long stops holding the log, and gets a snapshot when it is back.
    pub(crate) fn make_room_for(&mut self, now_ms: u64, len: usize) -> Result<(), ProposeError> {
        while !self.log.has_room(len) {
            let mut discardable = self.commit_index.min(self.applied_index);
            if self.config.persistent {
                // The shell has not written these yet.
                if let Some(from) = self.log.unreported_from() {
                    discardable = discardable.min(from - 1);
                }
            }
            if self.role == Role::Leader {
                discardable = discardable.min(self.kept_for_followers(now_ms));
            }
            if self.log.first_index() > discardable {
                return Err(if self.log.is_empty() {
                    ProposeError::TooLarge
                } else {
                    ProposeError::LogFull
                });
            }
            self.discard_first_entry();
        }
        Ok(())
    }

    /// Leader: the last entry that may be discarded without cutting off a follower that
    /// keeps up (see `make_room_for`).
    fn kept_for_followers(&self, now_ms: u64) -> u64 {
        let window_ms = self.config.election_timeout_max_ms;
        let first = self.log.first_index();
        self.peers
            .iter()
            .filter(|peer| {
                // Only followers that have answered this leader: before that, their match
                // index is unknown (0), and holding the log for it kept a new leader's
                // no-op out of a full log (simulator seed 552534).
                peer.held_index.is_some()
                    && now_ms.saturating_sub(peer.last_heard_ms) < window_ms
                    && now_ms.saturating_sub(peer.progress_ms) < window_ms
            })
            .filter_map(|peer| match &peer.snapshot {
                Some(snapshot) => Some(snapshot.base_index()),
                None if !peer.needs_snapshot && peer.match_index + 1 >= first => {
                    Some(peer.match_index)
                }
                None => None,
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Leader: appends a command that has already been applied to the store (or needs no
    /// applying), returning its index. The caller checked room with `make_room`.
    pub(crate) fn append_applied(&mut self, command: &Command<'_>) -> Result<u64, ProposeError> {
        let len = command.encoded_len();
        let index = self
            .log
            .append_with(self.term, len, |out| command.encode(out))
            .map_err(|error| match error {
                AppendError::Full => ProposeError::LogFull,
                AppendError::TooLarge => ProposeError::TooLarge,
            })?;
        self.note_appended(index);
        Ok(index)
    }

    /// Leader: an entry applied to the store was appended at `index`; idle followers get
    /// it with the next `Append` rather than the next heartbeat.
    fn note_appended(&mut self, index: u64) {
        debug_assert_eq!(
            self.applied_index + 1,
            index,
            "leader appended past unapplied entries"
        );
        self.applied_index = index;
        for peer in self.peers.iter_mut() {
            peer.heartbeat_due |= peer.inflight == 0;
        }
    }

    /// Leader: applies and appends a command.
    pub(crate) fn propose(
        &mut self,
        now_ms: u64,
        command: Command<'_>,
    ) -> Result<u64, ProposeError> {
        self.make_room(now_ms, &command)?;
        self.journal_next(&command);
        // Noop and Delete cannot fail; a Put is checked by the caller before proposing.
        let _ = command.apply(&mut self.store);
        let index = self.append_applied(&command)?;
        self.advance_commit(now_ms);
        Ok(index)
    }

    /// Leader: starts a heartbeat round; every peer gets an `Append` soon.
    pub(crate) fn start_round(&mut self, now_ms: u64) {
        if self.log.last_term() != self.term {
            // The no-op of `become_leader` found the log full (of entries of earlier
            // terms, none of which this leader can commit without an entry of its own):
            // try again, or nothing would ever commit.
            let _ = self.propose(now_ms, Command::Noop);
        }
        self.round += 1;
        self.heartbeat_deadline_ms = now_ms + self.config.heartbeat_interval_ms;
        for peer in self.peers.iter_mut() {
            peer.heartbeat_due = true;
            // Answers lost: after a quiet election timeout, resend from the last match.
            if peer.inflight > 0
                && now_ms.saturating_sub(peer.last_heard_ms) > self.config.election_timeout_min_ms
            {
                peer.inflight = 0;
                peer.next_index = peer.match_index + 1;
            }
        }
        self.release_confirmed_reads();
    }

    /// Leader: the next `Append` due to some peer, written into `out`.
    pub(crate) fn next_append(&mut self, now_ms: u64, out: &mut [u8]) -> Option<(NodeId, usize)> {
        let count = self.peers.len();
        for step in 0..count {
            let at = (self.next_peer + step) % count;
            let wants_snapshot =
                self.peers[at].needs_snapshot || self.peers[at].next_index < self.log.first_index();
            if !wants_snapshot && self.peers[at].snapshot.is_some() {
                // It caught up through the log (a rolled-back deposed leader answering an
                // earlier `Append`): the snapshot is moot. Kept, it made flow control hold
                // the log for it for good (simulator seed 16231).
                self.peers[at].snapshot = None;
            }
            if wants_snapshot && (self.peers[at].snapshot.is_some() || self.may_wipe(at, now_ms)) {
                if let Some(sent) = self.next_snapshot_chunk(at, now_ms, out) {
                    self.next_peer = (at + 1) % count;
                    return Some(sent);
                }
                if self.peers[at].snapshot.is_some() {
                    // A chunk is in flight; it keeps the follower following.
                    continue;
                }
            }
            // Until a snapshot may start, the log is replicated as usual, so that commit
            // advances and the follower's answers tell what it holds. Discarded entries
            // cannot be sent: then only heartbeats go, from the log's base.
            let peer = &self.peers[at];
            let next_index = peer.next_index.max(self.log.first_index());
            let has_entries = next_index <= self.log.last_index()
                && peer.inflight < self.config.max_inflight_appends
                && peer.next_index >= self.log.first_index();
            if !(peer.heartbeat_due || has_entries) {
                continue;
            }
            self.next_peer = (at + 1) % count;
            let budget = self.message_budget_bytes(peer.id);
            let (len, last_sent) =
                self.encode_append(now_ms, next_index, has_entries, budget, out)?;
            let peer = &mut self.peers[at];
            peer.heartbeat_due = false;
            // Only entries sent move the window; a heartbeat leaves it where it was.
            if has_entries && last_sent >= peer.next_index {
                peer.next_index = last_sent + 1;
                peer.inflight += 1;
            }
            return Some((peer.id, len));
        }
        None
    }

    /// Writes an `Append` from `next_index` (with entries if `with_entries`) into `out`;
    /// returns its length and the index of the last entry in it.
    fn encode_append(
        &mut self,
        now_ms: u64,
        next_index: u64,
        with_entries: bool,
        budget_bytes: usize,
        out: &mut [u8],
    ) -> Option<(usize, u64)> {
        let prev_index = next_index - 1;
        let prev_term = self.log.term_at(prev_index).unwrap_or(0);
        // The entries are packed into the back half of `out`, then the message that
        // carries them is encoded into the front half.
        let (front, back) = out.split_at_mut(out.len() / 2);
        let limit = budget_bytes.min(back.len());
        let mut writer = PackedWriter::new(&mut back[..limit]);
        let last_sent = if with_entries {
            self.pack_entries(next_index, &mut writer)
        } else {
            prev_index
        };
        let entries = writer.finish();
        let message = PeerMessage::Append {
            term: Term(self.term),
            prev: LogPosition {
                term: Term(prev_term),
                index: LogIndex(prev_index),
            },
            commit: LogIndex(self.commit_index),
            round: self.round,
            cluster_time_ms: self.clock.now(now_ms),
            entries,
        };
        let len = encode_frame(&message, front).ok()?;
        Some((len, last_sent))
    }

    /// Packs log entries from `next_index` on into `writer`, as many as fit; returns the
    /// index of the last one packed (`next_index - 1` if none).
    pub(crate) fn pack_entries(&self, next_index: u64, writer: &mut PackedWriter<'_>) -> u64 {
        let mut last_packed = next_index - 1;
        while let Some((term, bytes)) = self.log.entry(last_packed + 1) {
            if writer
                .push_with(ENTRY_TERM_BYTES + bytes.len(), |item| {
                    item[..ENTRY_TERM_BYTES].copy_from_slice(&term.to_le_bytes());
                    item[ENTRY_TERM_BYTES..].copy_from_slice(bytes);
                })
                .is_err()
            {
                break;
            }
            last_packed += 1;
        }
        last_packed
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_append(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        prev: LogPosition,
        commit: u64,
        round: u64,
        cluster_time_ms: u64,
        entries: Packed<'_>,
    ) {
        let outcome = if term < self.term {
            // A stale leader: the reply's term makes it step down.
            AppendOutcome::Rejected {
                next_hint: LogIndex(self.log.last_index()),
                last_index: LogIndex(self.log.last_index()),
            }
        } else {
            self.follow_and_accept(now_ms, from, term, prev, commit, cluster_time_ms, entries)
        };
        self.send(
            from,
            Outgoing::AppendReply {
                term: self.term,
                round,
                outcome,
            },
        );
    }

    /// An `Append` of the current term (or a later one) from `from`: follow it, take the
    /// entries, advance the commit index; returns the answer.
    #[allow(clippy::too_many_arguments)]
    fn follow_and_accept(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        prev: LogPosition,
        commit: u64,
        cluster_time_ms: u64,
        entries: Packed<'_>,
    ) -> AppendOutcome {
        if term > self.term || self.role != Role::Follower || self.leader_id != Some(from) {
            self.step_down(now_ms, term, Some(from));
        }
        self.last_leader_contact_ms = Some(now_ms);
        self.reset_election_deadline(now_ms);
        self.clock.observe(now_ms, cluster_time_ms);
        if self.incoming.take().is_some() {
            // A snapshot was being loaded and a leader sends entries instead: what was
            // loaded is incomplete.
            self.store_stale = true;
        }
        let mut outcome = self.accept_entries(now_ms, prev, entries);
        if self.store_stale {
            let last_index = LogIndex(self.log.last_index());
            outcome = match outcome {
                AppendOutcome::Accepted { match_index }
                | AppendOutcome::NeedsSnapshot { match_index, .. } => {
                    AppendOutcome::NeedsSnapshot {
                        match_index,
                        last_index,
                    }
                }
                AppendOutcome::Rejected { .. } => AppendOutcome::NeedsSnapshot {
                    match_index: LogIndex(0),
                    last_index,
                },
            };
        }
        if let AppendOutcome::Accepted { match_index } = outcome {
            // Only what is known to match the leader's log may be committed here.
            let known = commit.min(match_index.0);
            if known > self.commit_index {
                self.commit_index = known;
                self.apply_committed();
                self.drop_departed_peers();
            }
            // Recovery ends only at the leader's own commit index, not at what is known to
            // match of it.
            self.check_recovered(from, term, commit);
        }
        outcome
    }

    /// Checks `prev` and appends the entries that are new, truncating a conflicting tail.
    pub(crate) fn accept_entries(
        &mut self,
        now_ms: u64,
        prev: LogPosition,
        entries: Packed<'_>,
    ) -> AppendOutcome {
        let last_index = self.log.last_index();
        let base = self.log.first_index() - 1;
        // An entry at or before the base is committed (a snapshot's base is the leader's
        // commit index), so it matches the leader's.
        let prev_matches =
            prev.index.0 < base || self.log.term_at(prev.index.0) == Some(prev.term.0);
        if !prev_matches {
            let hint = last_index.min(prev.index.0.saturating_sub(1));
            return AppendOutcome::Rejected {
                next_hint: LogIndex(hint),
                last_index: LogIndex(last_index),
            };
        }
        let mut index = prev.index.0;
        for item in entries.iter() {
            // A malformed item (only a leader's bug or a hostile peer sends one) ends the
            // entries taken; the reply's match index covers only what was stored.
            let Some(item) = item.filter(|item| item.len() > ENTRY_TERM_BYTES) else {
                break;
            };
            index += 1;
            let mut term = [0; ENTRY_TERM_BYTES];
            term.copy_from_slice(&item[..ENTRY_TERM_BYTES]);
            let term = u64::from_le_bytes(term);
            if index <= base {
                continue;
            }
            if index == self.applied_index {
                if let Some(expected) = self.applied_term.take() {
                    // The entry whose effects the snapshot's store holds: the same term
                    // means the same entries up to here (log matching); another means a new
                    // leader replaced them.
                    if expected != term && !self.store_stale {
                        self.store_stale = true;
                        self.push_event(NodeEvent::StoreStale { term: self.term });
                    }
                }
            }
            match self.log.term_at(index) {
                Some(existing) if existing == term => continue,
                Some(_) => {
                    if index <= self.applied_index && !self.store_stale {
                        // This node (a former leader) applied entries that are being
                        // replaced.
                        self.roll_back_store(index);
                    }
                    self.log.truncate_from(index);
                    self.note_truncated(now_ms, index);
                }
                None => {}
            }
            let command = &item[ENTRY_TERM_BYTES..];
            if self.make_room_for(now_ms, command.len()).is_err()
                || self.log.append(term, command).is_err()
            {
                // Log full of entries not yet applied: take what fitted; the leader
                // resends the rest.
                index -= 1;
                break;
            }
            self.note_entry_appended(now_ms, index, command);
        }
        AppendOutcome::Accepted {
            match_index: LogIndex(index),
        }
    }

    pub(crate) fn handle_append_reply(
        &mut self,
        now_ms: u64,
        from: NodeId,
        term: u64,
        round: u64,
        outcome: AppendOutcome,
    ) {
        if term > self.term {
            self.step_down(now_ms, term, None);
            return;
        }
        if self.role != Role::Leader || term != self.term {
            return;
        }
        // What a follower holds that may be committed: no entry the leader lacks is.
        let leader_last = self.log.last_index();
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == from) else {
            return;
        };
        peer.last_heard_ms = now_ms;
        peer.acked_round = peer.acked_round.max(round);
        match outcome {
            AppendOutcome::NeedsSnapshot {
                match_index,
                last_index,
            } => {
                // Holding less than recorded would mean it lost state.
                peer.match_index = peer.match_index.max(match_index.0).min(last_index.0);
                peer.held_index = Some(last_index.0.min(leader_last));
                peer.needs_snapshot = true;
                peer.inflight = 0;
                // A stale follower keeps a valid log and still says whether the entry before
                // those sent matched; when it did not (no match known), try again after its
                // last entry, so that what it holds is learned: `may_wipe` counts it for the
                // others, and it may count toward commitment. Without this a new leader
                // kept sending after its own last entry, and with one follower stale and
                // the other behind the log neither could ever be given a snapshot
                // (simulator seed 303276).
                if match_index.0 == 0 && peer.next_index > last_index.0 + 1 {
                    peer.next_index = (last_index.0 + 1).max(peer.match_index + 1);
                    peer.heartbeat_due = true;
                }
            }
            AppendOutcome::Accepted { match_index } => {
                // Progress: it took entries, or it has them all (an idle follower that
                // answers heartbeats keeps up).
                if match_index.0 > peer.match_index || match_index.0 >= leader_last {
                    peer.progress_ms = now_ms;
                }
                let held = peer.held_index.unwrap_or(0).max(match_index.0);
                peer.held_index = Some(held.min(leader_last));
                peer.match_index = peer.match_index.max(match_index.0);
                peer.next_index = peer.next_index.max(peer.match_index + 1);
                peer.inflight = if peer.match_index + 1 >= peer.next_index {
                    0
                } else {
                    peer.inflight.saturating_sub(1)
                };
            }
            AppendOutcome::Rejected {
                next_hint,
                last_index,
            } => {
                // It lacks the entry before those sent, so what it holds from there on
                // conflicts with the leader's log, or is missing: none of it is committed.
                peer.held_index = Some(last_index.0.min(next_hint.0).min(leader_last));
                peer.match_index = peer.match_index.min(last_index.0);
                let next_index = (next_hint.0 + 1)
                    .min(peer.next_index)
                    .max(peer.match_index + 1);
                // Resend at once only on news: a duplicated or repeated rejection must not
                // trigger another send, or duplication grows into a storm.
                // (Lost messages are resent by the round timer in `start_round`.)
                if next_index < peer.next_index {
                    peer.heartbeat_due = true;
                    peer.inflight = 0;
                }
                peer.next_index = next_index;
            }
        }
        self.advance_commit(now_ms);
        self.release_confirmed_reads();
        self.promote_caught_up_learner(now_ms);
        self.step_down_if_removed(now_ms);
    }

    /// Leader: commits what a majority holds, if of the current term, and releases the
    /// writes waiting for it.
    pub(crate) fn advance_commit(&mut self, now_ms: u64) {
        if self.role != Role::Leader {
            return;
        }
        let majority_index = self.quorum_value(|p| p.match_index, self.log.last_index());
        if majority_index > self.commit_index && self.log.term_at(majority_index) == Some(self.term)
        {
            self.commit_index = majority_index;
            self.release_durable_writes();
            self.release_confirmed_reads();
            self.drop_departed_peers();
            self.step_down_if_removed(now_ms);
            self.promote_caught_up_learner(now_ms);
        }
    }

    /// Releases the writes whose entries are now where their acknowledgement asked: on a
    /// majority (`quorum`), on this node's disk (`disk`), or both.
    pub(crate) fn release_durable_writes(&mut self) {
        let commit = self.commit_index;
        let persisted = self.persisted_index;
        let log = &self.log;
        self.tickets.end_where(|pending| match pending.wait {
            Wait::Commit {
                index,
                term,
                quorum,
                disk,
            } if (!quorum || index <= commit) && (!disk || index <= persisted) => {
                Some(if log.term_at(index).is_none_or(|t| t == term) {
                    Ending::Release
                } else {
                    Ending::Fail {
                        code: crate::wire::ErrorCode::Timeout,
                        detail: "write replaced in a leader change; outcome unknown",
                    }
                })
            }
            _ => None,
        });
    }

    /// Leader: the highest value that a majority of the voters has reached, each peer's
    /// read by `of` and this node's being `own` (commit index: the match indexes; read
    /// confirmation: the heartbeat rounds answered).
    fn quorum_value(&self, of: impl Fn(&super::node::Peer) -> u64, own: u64) -> u64 {
        let mut values: heapless::Vec<u64, { super::config::MAX_MEMBERS }> =
            self.peers.iter().filter(|p| p.voter).map(of).collect();
        if self.is_voter() {
            let _ = values.push(own);
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum() - 1).copied().unwrap_or(0)
    }

    /// Leader: the highest heartbeat round a majority has answered.
    fn confirmed_round(&self) -> u64 {
        self.quorum_value(|p| p.acked_round, self.round)
    }

    /// Leader: releases linearizable reads whose round a majority confirmed and whose read
    /// index has committed.
    pub(crate) fn release_confirmed_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let confirmed = self.confirmed_round();
        let commit = self.commit_index;
        let current_term = self.term;
        self.tickets.end_where(|pending| match pending.wait {
            Wait::Read { index, round, term }
                if term == current_term && round <= confirmed && index <= commit =>
            {
                Some(Ending::Release)
            }
            _ => None,
        });
    }

    /// Leader: logs deletes for keys whose expiry has passed on the cluster clock, a few
    /// index slots per heartbeat (Redis's active expiry, made cluster-wide).
    pub(crate) fn sweep_expired_keys(&mut self, now_ms: u64) {
        const SLOTS_PER_SWEEP: usize = 256;
        let cluster_now = self.clock.now(now_ms);
        let slot_count = self.store.slot_count();
        let mut slot = self.expiry_cursor.min(slot_count);
        let mut examined = 0;
        while examined < SLOTS_PER_SWEEP {
            if slot >= slot_count {
                slot = 0;
            }
            examined += 1;
            if !self.expire_at_slot(now_ms, slot, cluster_now) {
                slot += 1;
            }
        }
        self.expiry_cursor = slot;
    }

    /// If the key in `slot` has expired, logs and applies its delete; returns whether it did
    /// (a later key may then have moved into the slot).
    pub(crate) fn expire_at_slot(&mut self, now_ms: u64, slot: usize, cluster_now: u64) -> bool {
        let len = match self.store.entry_at_slot(slot) {
            Some(entry) if entry.expires_at_ms.is_some_and(|at| at <= cluster_now) => {
                Command::Delete { key: entry.key }.encoded_len()
            }
            _ => return false,
        };
        if self.make_room_for(now_ms, len).is_err() {
            return false;
        }
        // The key is copied from the store into the log; then the slot is emptied.
        let Some(key) = self.store.entry_at_slot(slot).map(|entry| entry.key) else {
            return false;
        };
        let command = Command::Delete { key };
        let commits = self.next_entry_commits_on_append();
        let undo = self.undo.as_mut().filter(|_| !commits);
        super::node::journal_command(
            undo,
            &self.store,
            self.commit_index,
            self.applied_index + 1,
            &command,
        );
        let Ok(index) = self
            .log
            .append_with(self.term, len, |out| command.encode(out))
        else {
            return false;
        };
        self.store.delete_slot(slot);
        self.note_appended(index);
        self.advance_commit(now_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::test_support::{self, log_limits, Net, TestNode};
    use crate::cluster::{Node, NodeConfig};
    use crate::wire::{ClusterId, Expiry, NodeId, Request, SetCondition, WriteOptions};
    use std::vec;

    fn node(id: u64) -> TestNode {
        let config = NodeConfig::new(NodeId(id), ClusterId(7), &[NodeId(1), NodeId(2)]);
        Node::new(
            config,
            test_support::store(id),
            test_support::log(log_limits(2048)),
            0,
        )
    }

    /// A follower that announced small frames (a board among servers) gets every entry in
    /// appends that fit them; without the limit, the leader batches the writes into one.
    #[test]
    fn appends_fit_the_frame_limit_a_peer_announced() {
        let mut net = Net::new(vec![node(1), node(2)]);
        net.run(2_000);
        let leader = net.leader().expect("a leader");
        let follower = 3 - leader;
        let limit = 200u32;
        let at = net.at(leader);
        net.nodes[at].handle_peer_link_up(NodeId(follower), limit);
        let keys: [&[u8]; 10] = [
            b"k0", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6", b"k7", b"k8", b"k9",
        ];
        for key in keys {
            let answer = net.request(
                leader,
                Request::Set {
                    key,
                    value: b"0123456789abcdef",
                    condition: SetCondition::Always,
                    expiry: Expiry::None,
                    write: WriteOptions::default(),
                },
            );
            assert!(
                answer.is_some(),
                "a leader-acknowledged write answers at once"
            );
        }
        net.run(1_000);
        let largest = net
            .largest_frames
            .iter()
            .find(|(from, to, _)| (*from, *to) == (NodeId(leader), NodeId(follower)))
            .map(|found| found.2)
            .unwrap();
        assert!(
            largest <= limit as usize + crate::wire::FRAME_HEADER_BYTES,
            "a {largest}-byte frame went to a peer that takes {limit}"
        );
        let at = net.at(follower);
        assert_eq!(net.nodes[at].store().len() as usize, keys.len());
    }

    /// Flow control: a leader with a 16-entry log and three voters keeps the entries a
    /// briefly silent follower lacks (answering `Busy` once the log is full) rather than
    /// discarding them and sending it a snapshot; a follower silent for longer than the
    /// longest election timeout stops holding the log, and gets a snapshot when it is back.
    #[test]
    fn a_leader_keeps_what_a_live_follower_lacks_and_lets_go_of_a_silent_one() {
        use crate::cluster::NodeEvent;
        use crate::wire::{decode, ErrorCode, Response, ServerMessage};

        let voters = [NodeId(1), NodeId(2), NodeId(3)];
        let nodes = (1..=3)
            .map(|id| {
                let config = NodeConfig::new(NodeId(id), ClusterId(7), &voters);
                Node::new(
                    config,
                    test_support::store(id),
                    test_support::log(log_limits(2048)),
                    0,
                )
            })
            .collect();
        let mut net = Net::new(nodes);
        net.run(1_000);
        let leader = net.leader().expect("a leader");
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        let write = |key: &'static [u8]| Request::Set {
            key,
            value: b"v",
            condition: SetCondition::Always,
            expiry: Expiry::None,
            write: WriteOptions::default(),
        };
        let keys: [&[u8]; 12] = [
            b"k0", b"k1", b"k2", b"k3", b"k4", b"k5", b"k6", b"k7", b"k8", b"k9", b"ka", b"kb",
        ];
        let busy = |net: &mut Net, key: &'static [u8]| {
            let answer = net.request(leader, write(key)).expect("answered at once");
            match decode::<ServerMessage<'_>>(&answer).unwrap().response {
                Response::Error(error) => {
                    assert_eq!(error.code, ErrorCode::Busy, "{error:?}");
                    true
                }
                _ => false,
            }
        };

        // Silent for 100 ms: twice as many writes as the log holds, a millisecond apart,
        // so that the other follower's answers commit them.
        net.isolate(follower);
        let mut refused = 0;
        for key in (0..3).flat_map(|_| keys) {
            refused += usize::from(busy(&mut net, key));
            net.run(1);
        }
        assert!(refused > 0, "the log was never full");
        net.run(64);
        net.heal();
        net.run(200);
        let snapshots_to = |net: &Net| {
            net.events
                .iter()
                .filter(|(_, event)| {
                    matches!(event, NodeEvent::SnapshotStarted { to, .. } if *to == NodeId(follower))
                })
                .count()
        };
        assert_eq!(snapshots_to(&net), 0, "the live follower was cut off");
        assert!(keys.iter().all(|&key| !busy(&mut net, key)), "room again");

        // Silent for 2 s: it stops holding the log; writes go on; it gets a snapshot.
        net.isolate(follower);
        net.run(2_000);
        for _ in 0..3 {
            assert!(keys.iter().all(|&key| !busy(&mut net, key)));
            net.run(10);
        }
        net.heal();
        net.run(500);
        assert!(snapshots_to(&net) > 0, "the silent follower got a snapshot");
        let at = net.at(follower);
        assert!(net.nodes[at].store().get(b"kb", 0).is_some());
    }
}
