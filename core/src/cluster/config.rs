//! A node's configuration: identity, members, timing and limits.

use heapless::Vec;

use crate::wire::{AckLevel, ClusterId, Durability, NodeId};

/// Most members (voters and learners) a cluster can have. Fixed so that all per-peer state
/// is in arrays: a board must know its memory use at build time.
pub const MAX_MEMBERS: usize = 9;

/// How a node is configured. [`NodeConfig::new`] gives LAN defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node.
    pub node_id: NodeId,
    /// The cluster; peers of another cluster are refused at the handshake.
    pub cluster_id: ClusterId,
    /// The voting members, this node included if it votes.
    pub voters: Vec<NodeId, MAX_MEMBERS>,
    /// Shortest election timeout: a follower that hears no leader for a random time between
    /// the two bounds stands for election.
    pub election_timeout_min_ms: u64,
    /// Longest election timeout.
    pub election_timeout_max_ms: u64,
    /// How often a leader sends heartbeats (and at most how long it batches).
    pub heartbeat_interval_ms: u64,
    /// How long a request may wait for a leader, for its quorum, or for a forwarded answer
    /// before it fails with a clear error.
    pub request_timeout_ms: u64,
    /// The acknowledgement a write gets when the request does not ask for one.
    pub default_ack: AckLevel,
    /// Where a write must be before it is acknowledged when the request does not say
    /// (`Disk` needs `persistent`).
    pub default_durability: Durability,
    /// The shell keeps the node's state on disk: the node reports what to write through
    /// `poll_persist` and keeps log entries until they are reported (see `persist`).
    pub persistent: bool,
    /// Seed of the PRNG that draws election timeouts. Give each node a different one.
    pub rng_seed: u64,
    /// Most entry bytes in one `Append` message (keep it below the peers' frame size).
    pub max_append_bytes: usize,
    /// Most unacknowledged `Append` messages with entries in flight to one peer: pipelining.
    pub max_inflight_appends: u32,
    /// Largest frame this node accepts, announced at the handshake.
    pub max_frame_bytes: u32,
}

impl NodeConfig {
    /// A configuration with LAN defaults: a leader failure is noticed in 300 to 600 ms and a
    /// new leader elected within about one more round trip.
    pub fn new(node_id: NodeId, cluster_id: ClusterId, voters: &[NodeId]) -> Self {
        let mut members = Vec::new();
        for voter in voters.iter().take(MAX_MEMBERS) {
            // Bounded by MAX_MEMBERS above.
            let _ = members.push(*voter);
        }
        Self {
            node_id,
            cluster_id,
            voters: members,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 50,
            request_timeout_ms: 2_000,
            default_ack: AckLevel::Leader,
            default_durability: Durability::Memory,
            persistent: false,
            rng_seed: node_id.0,
            max_append_bytes: 256 * 1024,
            max_inflight_appends: 8,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME_BYTES,
        }
    }

    /// Votes needed to win an election or commit an entry: a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether this node is a voter.
    pub fn is_voter(&self) -> bool {
        self.voters.contains(&self.node_id)
    }
}
