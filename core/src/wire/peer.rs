//! The peer protocol: the messages nodes of one cluster exchange after the handshake.
//!
//! A peer connection starts with a [`Hello`](super::Hello) whose sender is
//! [`Sender::Peer`](super::Sender::Peer); every later frame is one postcard-encoded
//! [`PeerMessage`]. The sender of a message is the node at the other end of the connection,
//! so messages do not repeat it. The meaning of each message, and why the protocol built
//! from them is safe, is in docs/protocol.md.

use serde::{Deserialize, Serialize};

use super::packed::Packed;
use super::types::{LogIndex, LogPosition, Term};

/// The most bytes a [`PeerMessage::Append`] or [`PeerMessage::Snapshot`] encodes besides
/// its entries, chunk and membership bytes (every integer at its longest): a sender fits
/// those into the receiver's frame limit less this.
pub const PEER_ENVELOPE_BYTES: usize = 128;

/// A message between two nodes of one cluster.
///
/// VARIANT ORDER IS FROZEN (postcard encodes the variant index); new messages go at the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage<'a> {
    /// "Would you vote for me in `term`?" (PreVote): sent before a real election, changes no
    /// state on the receiver, so a node that cannot win cannot disturb the cluster.
    PreVote {
        /// The term the sender would stand in (its current term + 1).
        term: Term,
        /// The sender's last log entry, for the up-to-date check.
        last_log: LogPosition,
    },
    /// Answer to `PreVote`.
    PreVoteReply {
        /// The term asked about if granted; the replier's current term if not (so that a
        /// node behind learns the term exists).
        term: Term,
        /// Whether the receiver would vote.
        granted: bool,
    },
    /// A vote request for `term` (Raft's RequestVote).
    Vote {
        /// The sender's new term.
        term: Term,
        /// The sender's last log entry, for the up-to-date check.
        last_log: LogPosition,
    },
    /// Answer to `Vote`.
    VoteReply {
        /// The receiver's current term.
        term: Term,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Log entries (none for a heartbeat) from the leader (Raft's AppendEntries).
    Append {
        /// The leader's term.
        term: Term,
        /// The entry just before `entries`, which the receiver must hold to accept them.
        prev: LogPosition,
        /// The leader's commit index.
        commit: LogIndex,
        /// The leader's heartbeat round, echoed in the reply: a reply for round r proves the
        /// receiver still followed this leader after round r began (read index, check quorum).
        round: u64,
        /// The cluster clock, so that followers agree on expiry without a wall clock.
        cluster_time_ms: u64,
        /// The entries, each encoded as `term` (8 bytes, little-endian) then the command.
        #[serde(borrow)]
        entries: Packed<'a>,
    },
    /// Answer to `Append`.
    AppendReply {
        /// The receiver's current term.
        term: Term,
        /// The round of the `Append` answered.
        round: u64,
        /// Whether the entries were accepted.
        outcome: AppendOutcome,
    },
    /// A client request a follower passes to the leader, which answers with `ForwardReply`.
    Forward {
        /// The follower's id for the request, echoed in the reply.
        forward_id: u64,
        /// The client's request, an encoded [`ClientMessage`](super::ClientMessage).
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        request: &'a [u8],
    },
    /// The leader's answer to a `Forward`.
    ForwardReply {
        /// The follower's id for the request.
        forward_id: u64,
        /// The answer, an encoded [`Response`](super::Response).
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        response: &'a [u8],
    },
    /// A chunk of a snapshot from the leader to a follower behind its log.
    Snapshot {
        /// The leader's term.
        term: Term,
        /// The log position the snapshot starts from: the follower replays entries after it.
        base: LogPosition,
        /// Which snapshot of this follower this chunk belongs to (a new one restarts).
        snapshot_id: u64,
        /// The chunk's position in the snapshot stream, starting at 0.
        offset: u64,
        /// Whether this is the last chunk.
        done: bool,
        /// The cluster's membership as of `base` (an encoded `Membership`): the log
        /// entries that set it may be gone from the leader's log.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        members: &'a [u8],
        /// Bytes of the snapshot stream (see [`crate::snapshot`]).
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        data: &'a [u8],
    },
    /// Answer to a `Snapshot` chunk: the next offset wanted.
    SnapshotReply {
        /// The receiver's current term.
        term: Term,
        /// The snapshot the answer is about.
        snapshot_id: u64,
        /// Bytes received so far; the leader sends from here.
        next_offset: u64,
        /// Set when the receiver could not load the snapshot (the leader starts again).
        failed: bool,
    },
    /// From a node that restarted without its state (a board after a reset): "what is your
    /// term, how far does your log go, and who are the members?" The receiver forgets what
    /// it knew the sender held (see the recovery rules in docs/protocol.md, 4.10).
    RecoveryQuery {
        /// Echoed in the answer, so that answers to an earlier life's query are not counted.
        nonce: u64,
    },
    /// Answer to `RecoveryQuery`, only from a node that has its state (a recovering node
    /// does not answer).
    RecoveryReply {
        /// The query's nonce.
        nonce: u64,
        /// The receiver's current term.
        term: Term,
        /// The receiver's last log entry: the most up-to-date answer's membership is the
        /// one whose majority the recovering node must hear from.
        last_log: LogPosition,
        /// The membership in force at the receiver (an encoded `Membership`).
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        members: &'a [u8],
    },
    /// From a voter that refused a candidate because the candidate's log is behind its own
    /// while it cannot lead itself (its store is stale, or it is not a voter in its own
    /// membership): the entries of its log that follow the candidate's last one, so that
    /// the candidate's log becomes as complete and the candidate can win (docs/protocol.md
    /// 4.7, "a node that cannot lead hands its log over"). Not an `Append`: no leader sent
    /// it, it advances nobody's commit index and it is taken only where `prev` is the
    /// receiver's last entry, so it never replaces anything.
    LogOffer {
        /// The receiver's last entry as its request said; the entries follow it.
        prev: LogPosition,
        /// The entries, packed as in `Append`.
        #[serde(borrow)]
        entries: Packed<'a>,
    },
}

/// Whether a follower took an `Append`.
///
/// VARIANT ORDER IS FROZEN, as for [`PeerMessage`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted {
        /// The last index known to match.
        match_index: LogIndex,
    },
    /// The follower does not hold `prev`: the leader retries from `next_hint + 1` (or
    /// sends a snapshot if it no longer has those entries).
    Rejected {
        /// The last index the follower may share with the leader.
        next_hint: LogIndex,
        /// The follower's last log index: what it holds, and would lose to a snapshot.
        last_index: LogIndex,
    },
    /// The follower's log took the entries (up to `match_index`), but its store must be
    /// replaced by a snapshot: it is a deposed leader whose applied entries were
    /// discarded, or it was loading a snapshot that was interrupted.
    NeedsSnapshot {
        /// The last index known to match (0 if none).
        match_index: LogIndex,
        /// The follower's last log index.
        last_index: LogIndex,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, PackedWriter};

    /// The envelope bound holds with every integer at its longest and empty payloads.
    #[test]
    fn the_envelope_bound_covers_the_longest_headers() {
        let mut buffer = [0u8; 64];
        let longest = LogPosition {
            term: Term(u64::MAX),
            index: LogIndex(u64::MAX),
        };
        let append = PeerMessage::Append {
            term: Term(u64::MAX),
            prev: longest,
            commit: LogIndex(u64::MAX),
            round: u64::MAX,
            cluster_time_ms: u64::MAX,
            entries: PackedWriter::new(&mut buffer).finish(),
        };
        let snapshot = PeerMessage::Snapshot {
            term: Term(u64::MAX),
            base: longest,
            snapshot_id: u64::MAX,
            offset: u64::MAX,
            done: true,
            members: &[],
            data: &[],
        };
        let offer = PeerMessage::LogOffer {
            prev: longest,
            entries: PackedWriter::new(&mut []).finish(),
        };
        let mut out = [0u8; 512];
        for message in [append, snapshot, offer] {
            let len = encode(&message, &mut out).unwrap().len();
            // Each byte slice's length prefix grows by up to 4 more bytes when it is full.
            assert!(len + 8 <= PEER_ENVELOPE_BYTES, "{message:?} is {len} bytes");
        }
    }
}
