//! Small value types shared by the client and peer protocols.
//!
//! Identifiers are newtypes rather than bare `u64`s so that a term can never be passed where a
//! log index is expected; postcard encodes a newtype exactly as its inner integer, so the
//! wrapping costs nothing on the wire. The option enums encode as a single varint variant
//! index, which is why their variant order is frozen: reordering them changes the bytes.

use serde::{Deserialize, Serialize};

/// Identifies one node of a cluster.
///
/// Peers name themselves with it in the handshake and the replication protocol addresses votes
/// and log entries by it, so it must stay stable across restarts of the same node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// Identifies one cluster.
///
/// Carried in every handshake so that a node never joins, or serves, a cluster it was not
/// configured for (two clusters on one network must not mix their logs). A client may send
/// `ClusterId(0)` to mean "whichever cluster this node belongs to".
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

/// A leader election term.
///
/// Terms only grow; a message from an older term is stale, which is how nodes detect a deposed
/// leader.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

/// The position of an entry in the replicated log, starting at 1 (0 means "no entry").
///
/// Kept separate from [`Term`] so that the two `u64`s of a [`LogPosition`] cannot be swapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogIndex(pub u64);

/// A log entry's identity: the term it was written in and its index.
///
/// The derived ordering compares by term first, then index, which is the "more up to date" rule
/// an election uses to decide whether a candidate's log is at least as complete as the voter's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPosition {
    /// The term in which the entry was created.
    pub term: Term,
    /// The entry's index in the log.
    pub index: LogIndex,
}

/// When a write is acknowledged to the client.
///
/// Lets each write trade latency for safety: a leader-level ack is fast but can be lost if the
/// leader dies before replicating, a quorum ack survives the loss of any minority of nodes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckLevel {
    /// Acknowledge once the write is applied in memory on the leader.
    Leader,
    /// Acknowledge once a majority of voters hold the write.
    Quorum,
}

/// Where a write must be before it is acknowledged.
///
/// Independent of [`AckLevel`]: a quorum of nodes holding a write in memory survives single
/// crashes, while a disk write also survives a whole-cluster power loss, at the cost of a sync.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Durability {
    /// Memory is enough.
    Memory,
    /// The write must be on stable storage (a node without storage answers `Unsupported`).
    Disk,
}

/// How fresh a read must be.
///
/// A linearizable read must go through the leader (and confirm it is still leader), while a
/// stale read may be answered by any node from its local copy, which is cheaper and keeps
/// working without a leader.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Observe every write acknowledged before the read started.
    Linearizable,
    /// Whatever the answering node has applied so far.
    Stale,
}

/// NX/XX: the store's own type, so the wire and the store cannot drift apart. Its
/// variant order is frozen like every enum here.
pub use crate::store::SetCondition;

/// What a write does to the key's time to live.
///
/// The client sends a relative duration because its clock is not the cluster's; the leader turns
/// it into an absolute `expires_at_ms` before replicating, so that every replica expires the key
/// at the same moment.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expiry {
    /// The key never expires (any existing TTL is cleared).
    None,
    /// Keep the key's existing TTL, if any (a new key gets none).
    Keep,
    /// Expire this many milliseconds after the leader applies the write.
    AfterMs(u64),
}

/// Per-write overrides of the node's acknowledgement defaults.
///
/// `None` in a field means "the node's configured default", so clients that do not care need
/// not know how the cluster is configured, and the default can change without touching them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteOptions {
    /// When to acknowledge, or `None` for the node's default.
    pub ack: Option<AckLevel>,
    /// Where the write must be, or `None` for the node's default.
    pub durability: Option<Durability>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_positions_compare_by_term_then_index() {
        let position = |term, index| LogPosition {
            term: Term(term),
            index: LogIndex(index),
        };
        assert!(position(1, 9) < position(2, 1));
        assert!(position(2, 1) < position(2, 2));
        assert_eq!(position(3, 3), position(3, 3));
    }
}
