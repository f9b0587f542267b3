//! What a node asks its shell to keep on disk, and how a node is rebuilt from it.
//!
//! Raft is safe across restarts only if a node never forgets, once it has acted on them,
//! its term, its vote and the entries it acknowledged. A persistent node
//! ([`NodeConfig::persistent`](super::NodeConfig)) therefore reports every change of them
//! through [`Node::poll_persist`], and a shell that keeps them writes them to an append-only
//! file:
//!
//! - [`Persist::HardState`]: the term and vote changed.
//! - [`Persist::Log`]: the log changed from an index on (entries appended, or a conflicting
//!   tail truncated): the file's entries from there are replaced by the log's.
//! - [`Persist::Committed`]: the commit index advanced (may be written lazily: a restored
//!   node that knows a lower commit index only learns it again from the leader).
//! - [`Persist::StoreReplaced`]: a snapshot from the leader replaced the store: nothing
//!   in the file describes this node any more; the shell writes a [`Checkpoint`] at once.
//!
//! **The ordering rule.** A shell writes what `poll_persist` gives, to the durability its
//! fsync policy promises, *before* it sends anything the node gave after it (peer frames,
//! client answers): a vote or an acknowledgement must never reach another node before what it
//! promises is on disk. With `--fsync always` this makes the Raft guarantees hold across
//! crashes of any number of nodes; with a laxer policy, a crash loses what the policy allows
//! and the node comes back with an older state (still a valid one: an older prefix).
//!
//! A **checkpoint** ([`Node::checkpoint`]) is a snapshot of the store plus the log entries it
//! needs: the store reflects the entries through `applied`, which on a leader runs ahead of
//! the commit index, so the log must be kept from a committed `base` on. The shell writes the
//! store with the snapshot codec as a *fuzzy* snapshot (`SnapshotEncoder::new_fuzzy`, header:
//! `applied`): a store loaded from a leader's fuzzy snapshot holds some keys as they are
//! after `applied`, and is exact only once it has applied the entries that follow, so its
//! version counter is that of `applied` and its keys may be ahead of it. Then the shell
//! starts a new log file with the hard state, a reset to `base` and the entries after it,
//! and only then deletes the old files. [`Restore`] rebuilds a node from the snapshot and the records, checking each the
//! way a live node checks what it receives.

use super::command::Command;
use super::config::NodeConfig;
use super::log::Log;
use super::membership::Membership;
use super::node::{Node, NodeEvent};
use crate::store::Store;
use crate::wire::{LogIndex, LogPosition, NodeId, Term};

/// Raft's state that must survive a restart: the current term and the vote cast in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// Whom this node voted for in `term`.
    pub voted_for: Option<NodeId>,
}

/// Something a persistent node asks its shell to write. See the [module documentation](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// Record the term and vote.
    HardState(HardState),
    /// Drop any recorded entries at or after `from`, then record the entries `from..=to`
    /// (read them with [`Node::log`]; `to < from` is a truncation alone).
    Log {
        /// The first changed index.
        from: u64,
        /// The log's last index.
        to: u64,
    },
    /// Entries through `index` are committed, and the cluster clock read `cluster_time_ms`.
    Committed {
        /// The commit index.
        index: u64,
        /// The cluster clock, so that a restarted node's clock does not run backwards.
        cluster_time_ms: u64,
    },
    /// The store was replaced by a snapshot from the leader: call [`Node::checkpoint`]
    /// and write it before anything else. Until then no log change is given (the records
    /// written so far describe the log the snapshot replaced).
    StoreReplaced,
}

/// Where a checkpoint stands. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The store reflects the log through this entry: the snapshot header's index and term.
    pub applied: LogPosition,
    /// The log is kept from after this committed entry: the new log file's reset record.
    /// Entries `base.index + 1 ..= last` are read with [`Node::log`].
    pub base: LogPosition,
    /// The last entry of the log.
    pub last_index: u64,
    /// The commit index.
    pub commit_index: u64,
    /// The term and vote.
    pub hard_state: HardState,
    /// The cluster clock's reading.
    pub cluster_time_ms: u64,
    /// The membership as of `base`: recorded with the reset record, since the entries that
    /// set it may be gone from the log.
    pub members: Membership,
}

/// Why a node could not be rebuilt from its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// An entry record skips indexes: the file lacks entries.
    Gap {
        /// The entry's index.
        index: u64,
        /// The index the log expected next.
        expected: u64,
    },
    /// The uncommitted entries on disk do not fit this node's log (was it made smaller?).
    LogTooSmall {
        /// The entry that did not fit.
        index: u64,
    },
    /// A committed entry could not be applied to the store (is the store smaller than it
    /// was?).
    ApplyFailed {
        /// The entry.
        index: u64,
    },
    /// A reset record puts the log's base after the snapshot's entry: the snapshot is
    /// older than the log file.
    ResetAheadOfSnapshot {
        /// The reset's index.
        index: u64,
        /// The snapshot's index.
        applied: u64,
    },
    /// A reset record's membership is not a valid membership.
    BadMembership,
}

impl core::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Gap { index, expected } => write!(
                f,
                "log entry {index} follows entry {} (entries missing)",
                expected - 1
            ),
            Self::LogTooSmall { index } => write!(
                f,
                "uncommitted entries up to {index} do not fit the log; start with the log limits they were written with"
            ),
            Self::ApplyFailed { index } => write!(
                f,
                "committed entry {index} does not fit the store; start with the store limits it was written with"
            ),
            Self::ResetAheadOfSnapshot { index, applied } => write!(
                f,
                "the log file starts after entry {index} but the snapshot holds only entries through {applied}: the snapshot is older than the log"
            ),
            Self::BadMembership => f.write_str("a reset record holds a malformed membership"),
        }
    }
}

/// Rebuilds a node from a snapshot and the records written since. See the
/// [module documentation](self).
#[derive(Debug)]
pub struct Restore<M, L> {
    store: Store<M>,
    log: Log<L>,
    applied: LogPosition,
    hard_state: HardState,
    committed: u64,
    cluster_time_ms: u64,
    store_stale: bool,
    /// The membership as of the log's base, once a reset record or a discarded entry gave
    /// one (until then, the configuration's bootstrap voters).
    base_membership: Option<Membership>,
}

impl<M, L> Restore<M, L>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Starts from `store`, which reflects the log through `applied` (the snapshot header's
    /// index and term; `(0, 0)` and an empty store when there is no snapshot), and an empty
    /// `log`. The records that follow must begin with the reset record of the checkpoint
    /// that wrote the snapshot: until then the log's base is `applied`, which a restored node
    /// would take as committed, and `applied` need not be (a leader's store runs ahead).
    pub fn new(store: Store<M>, mut log: Log<L>, applied: LogPosition) -> Self {
        log.reset(applied.index.0, applied.term.0);
        Self {
            store,
            log,
            applied,
            hard_state: HardState::default(),
            committed: 0,
            cluster_time_ms: 0,
            store_stale: false,
            base_membership: None,
        }
    }

    /// A hard-state record: the later one wins.
    pub fn hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// A reset record: the log is kept from after `base`, whose membership is `members`
    /// (a [`Checkpoint`]'s, encoded).
    pub fn reset(&mut self, base: LogPosition, members: &[u8]) -> Result<(), RestoreError> {
        if base.index.0 > self.applied.index.0 {
            return Err(RestoreError::ResetAheadOfSnapshot {
                index: base.index.0,
                applied: self.applied.index.0,
            });
        }
        self.base_membership =
            Some(Membership::decode(members).map_err(|_| RestoreError::BadMembership)?);
        self.log.reset(base.index.0, base.term.0);
        self.committed = self.committed.max(base.index.0);
        Ok(())
    }

    /// A commit record.
    pub fn committed(&mut self, index: u64, cluster_time_ms: u64) {
        self.committed = self.committed.max(index);
        self.cluster_time_ms = self.cluster_time_ms.max(cluster_time_ms);
    }

    /// A truncation record: entries from `from` on are gone.
    pub fn truncate(&mut self, from: u64) {
        let applied = self.applied.index.0;
        if from <= applied && from <= self.log.last_index() {
            let changed_nothing = applied <= self.log.last_index()
                && (from..=applied).all(|index| {
                    self.log
                        .entry(index)
                        .is_some_and(|(_, bytes)| Command::leaves_store_alone(bytes))
                });
            if changed_nothing {
                // The store is that of the entries before, as on the live node.
                self.applied = LogPosition {
                    term: Term(self.log.term_at(from - 1).unwrap_or(0)),
                    index: LogIndex(from - 1),
                };
            } else {
                // The store holds effects of entries the log no longer has, as on the live
                // node when it could not undo them: it waits for a snapshot.
                self.store_stale = true;
            }
        }
        self.log.truncate_from(from);
    }

    /// An entry record: replaces any entry at `index` or after, as on the live node.
    pub fn entry(&mut self, index: u64, term: u64, bytes: &[u8]) -> Result<(), RestoreError> {
        let base = self.log.first_index() - 1;
        if index <= base {
            // Committed and folded into the snapshot.
            return Ok(());
        }
        let expected = self.log.last_index() + 1;
        if index > expected {
            return Err(RestoreError::Gap { index, expected });
        }
        if let Some(existing) = self.log.term_at(index) {
            if existing == term {
                return Ok(());
            }
            self.truncate(index);
        }
        while !self.log.has_room(bytes.len()) {
            let first = self.log.first_index();
            if self.log.is_empty() || first > self.committed {
                return Err(RestoreError::LogTooSmall { index });
            }
            if first > self.applied.index.0 && !self.store_stale {
                // Committed, and not yet in the store: apply it before forgetting it.
                let term = self.log.term_at(first).unwrap_or(0);
                let applied = match self.log.entry(first) {
                    Some((_, bytes)) => {
                        Command::decode(bytes).is_ok_and(|c| c.apply(&mut self.store).is_ok())
                    }
                    None => false,
                };
                if !applied {
                    return Err(RestoreError::ApplyFailed { index: first });
                }
                self.applied = LogPosition {
                    term: Term(term),
                    index: LogIndex(first),
                };
            }
            if let Some(membership) = self
                .log
                .entry(first)
                .and_then(|(_, bytes)| Command::members_in(bytes))
                .and_then(|members| Membership::decode(members).ok())
            {
                self.base_membership = Some(membership);
            }
            self.log.discard_through(first);
        }
        self.log
            .append(term, bytes)
            .map_err(|_| RestoreError::LogTooSmall { index })?;
        Ok(())
    }

    /// The node, as a follower with the restored term and vote. `now_ms` as for
    /// [`Node::new`].
    pub fn finish<const TICKETS: usize>(
        self,
        config: NodeConfig,
        now_ms: u64,
    ) -> Node<M, L, TICKETS> {
        let Self {
            store,
            mut log,
            applied,
            hard_state,
            committed,
            cluster_time_ms,
            mut store_stale,
            base_membership,
        } = self;
        let _ = log.take_unreported();
        let base = log.first_index() - 1;
        let last = log.last_index();
        let mut applied_term = None;
        if applied.index.0 < base {
            // The store lacks entries the log has forgotten.
            store_stale = true;
        } else if applied.index.0 > last {
            // Checked when the entry arrives, as after a snapshot from a leader.
            applied_term = Some(applied.term.0);
        } else if log.term_at(applied.index.0) != Some(applied.term.0) {
            store_stale = true;
        }
        let mut node = Node::new(config, store, log, now_ms);
        node.term = hard_state.term;
        node.voted_for = hard_state.voted_for;
        node.reported_hard_state = hard_state;
        node.commit_index = committed.clamp(base, last);
        node.reported_commit = node.commit_index;
        node.applied_index = applied.index.0.max(base);
        node.applied_term = applied_term.filter(|_| !store_stale);
        node.store_stale = store_stale;
        node.clock.observe(now_ms, cluster_time_ms);
        let base_membership = base_membership.unwrap_or_else(|| node.config.initial_membership());
        node.reset_membership(now_ms, base_membership);
        if store_stale {
            node.push_event(NodeEvent::StoreStale {
                term: hard_state.term,
            });
        }
        node.apply_committed();
        node
    }
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// The next thing to write to disk, for a [`NodeConfig::persistent`] node (always `None`
    /// otherwise). Drain it after every `handle_*` call, and obey the ordering rule of the
    /// [module documentation](self).
    pub fn poll_persist(&mut self) -> Option<Persist> {
        if !self.config.persistent {
            return None;
        }
        if self.store_replaced && self.can_checkpoint() {
            return Some(Persist::StoreReplaced);
        }
        let hard_state = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        if hard_state != self.reported_hard_state {
            self.reported_hard_state = hard_state;
            return Some(Persist::HardState(hard_state));
        }
        if self.store_replaced {
            // The records on disk describe the log before the snapshot replaced it: changes
            // of the new log wait for the checkpoint that starts a new record file (the log
            // keeps them meanwhile).
            return None;
        }
        if let Some(from) = self.log.take_unreported() {
            // What was on disk from `from` on is being replaced.
            self.persisted_index = self.persisted_index.min(from - 1);
            return Some(Persist::Log {
                from,
                to: self.log.last_index(),
            });
        }
        if self.commit_index > self.reported_commit {
            self.reported_commit = self.commit_index;
            return Some(Persist::Committed {
                index: self.commit_index,
                cluster_time_ms: self.clock.floor_ms(),
            });
        }
        None
    }

    /// Whether [`Node::poll_persist`] still has the term and vote, log entries or a replaced
    /// store to give (a newer commit index aside: a lower figure on disk is safe). If not, a
    /// [`Node::checkpoint`] taken now records nothing the items given so far do not, so once
    /// those are written a shell may count the checkpoint's records as written too, before
    /// its files are (memdi-server does with `--fsync everysec` and `no`, and keeps
    /// answering while the snapshot is written).
    pub fn has_unreported_state(&self) -> bool {
        let hard_state = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        self.config.persistent
            && (self.store_replaced
                || hard_state != self.reported_hard_state
                || self.log.unreported_from().is_some())
    }

    /// A checkpoint of the node now, or `None` while its store does not match its log (it
    /// waits for a snapshot from the leader; the records written so far still describe it).
    /// Everything not yet given by [`Node::poll_persist`] is part of the checkpoint.
    pub fn checkpoint(&mut self) -> Option<Checkpoint> {
        if !self.can_checkpoint() {
            return None;
        }
        let applied_term = self.log.term_at(self.applied_index).or(self.applied_term)?;
        let base_index = self.log.first_index() - 1;
        let hard_state = HardState {
            term: self.term,
            voted_for: self.voted_for,
        };
        let _ = self.log.take_unreported();
        self.store_replaced = false;
        self.reported_hard_state = hard_state;
        self.reported_commit = self.commit_index;
        Some(Checkpoint {
            applied: LogPosition {
                term: Term(applied_term),
                index: LogIndex(self.applied_index),
            },
            base: LogPosition {
                term: Term(self.log.term_at(base_index).unwrap_or(0)),
                index: LogIndex(base_index),
            },
            last_index: self.log.last_index(),
            commit_index: self.commit_index,
            hard_state,
            cluster_time_ms: self.clock.floor_ms(),
            members: self.base_membership.clone(),
        })
    }

    /// Whether the store matches the log, so that a checkpoint describes this node.
    fn can_checkpoint(&self) -> bool {
        !self.store_stale
            && self.incoming.is_none()
            && (self.log.term_at(self.applied_index).is_some() || self.applied_term.is_some())
    }

    /// The shell made everything [`Node::poll_persist`] gave durable, through log entry
    /// `index`: writes that asked for `durability: disk` can be acknowledged.
    pub fn handle_persisted(&mut self, index: u64) {
        if index > self.persisted_index {
            self.persisted_index = index.min(self.log.last_index());
            self.release_durable_writes();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::cluster::test_support::{self, log_limits, TestNode};
    use crate::wire::{decode, encode, ClusterId, FRAME_HEADER_BYTES};

    fn config() -> NodeConfig {
        let mut config =
            NodeConfig::new(NodeId(1), ClusterId(7), &[NodeId(1), NodeId(2), NodeId(3)]);
        config.persistent = true;
        config
    }

    fn parts() -> (Store<Vec<u8>>, Log<Vec<u8>>) {
        (test_support::store(1), test_support::log(log_limits(1024)))
    }

    /// Asks `node` for its vote in `term` on behalf of `candidate`; returns whether granted.
    fn ask_vote(node: &mut TestNode, candidate: u64, term: u64) -> bool {
        let message = crate::wire::PeerMessage::Vote {
            term: Term(term),
            last_log: LogPosition {
                term: Term(0),
                index: LogIndex(0),
            },
        };
        let mut payload = [0u8; 64];
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 1 << 16];
        node.handle_peer_frame(0, NodeId(candidate), &payload[..len], &mut out);
        let (to, len) = node.poll_peer_transmit(0, &mut out).expect("a vote reply");
        assert_eq!(to, NodeId(candidate));
        match decode(&out[FRAME_HEADER_BYTES..len]).unwrap() {
            crate::wire::PeerMessage::VoteReply { granted, .. } => granted,
            other => panic!("expected a vote reply, got {other:?}"),
        }
    }

    /// The vote is what keeps one leader per term across restarts: a node that voted,
    /// reported its vote, and restarted from the records must refuse another candidate of
    /// the same term. (The simulator cannot be relied on for this: a double vote needs a
    /// split election, a crash and a restart inside one election timeout.)
    #[test]
    fn a_restored_node_does_not_vote_twice_in_a_term() {
        let (store, log) = parts();
        let mut node: TestNode = Node::new(config(), store, log, 0);
        assert!(ask_vote(&mut node, 2, 1), "a fresh node grants its vote");
        let mut recorded = Vec::new();
        while let Some(persist) = node.poll_persist() {
            recorded.push(persist);
        }
        assert_eq!(
            recorded,
            [Persist::HardState(HardState {
                term: 1,
                voted_for: Some(NodeId(2)),
            })]
        );

        let (store, log) = parts();
        let nothing = LogPosition {
            term: Term(0),
            index: LogIndex(0),
        };
        let mut restore = Restore::new(store, log, nothing);
        for persist in recorded {
            if let Persist::HardState(state) = persist {
                restore.hard_state(state);
            }
        }
        let mut restarted: TestNode = restore.finish(config(), 0);
        assert_eq!(restarted.term(), 1);
        assert!(!ask_vote(&mut restarted, 3, 1), "voted twice in term 1");
        assert!(
            ask_vote(&mut restarted, 2, 1),
            "the same candidate may ask again"
        );
        assert!(ask_vote(&mut restarted, 3, 2), "a later term is a new vote");
    }
}
