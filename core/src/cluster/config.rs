//! A node's configuration: identity, members, timing and limits.

use heapless::Vec;

use super::membership::{Membership, MembershipError, MAX_ADDRESS_BYTES};
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
    /// The voters a new cluster starts with (`--cluster`), this node included if it votes.
    /// Empty for a node that waits to be added to a running cluster: it learns the
    /// membership from the leader. After the start, the membership lives in the log (see
    /// `membership`) and this list is not read again.
    pub voters: Vec<NodeId, MAX_MEMBERS>,
    /// Peer addresses of the bootstrap voters, recorded in the membership so that nodes
    /// added later can dial them. A voter without one gets an empty address.
    pub addresses: Vec<(NodeId, Vec<u8, MAX_ADDRESS_BYTES>), MAX_MEMBERS>,
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
            addresses: Vec::new(),
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

    /// Records the peer address of bootstrap voter `id`.
    pub fn set_address(&mut self, id: NodeId, address: &[u8]) -> Result<(), MembershipError> {
        let mut bytes = Vec::new();
        bytes
            .extend_from_slice(address)
            .map_err(|_| MembershipError::AddressTooLong)?;
        self.addresses.retain(|(other, _)| *other != id);
        self.addresses
            .push((id, bytes))
            .map_err(|_| MembershipError::TooManyMembers)
    }

    /// The membership a new cluster starts with: the bootstrap voters and their addresses.
    pub fn initial_membership(&self) -> Membership {
        let mut membership = Membership::empty();
        for &id in &self.voters {
            let address = self
                .addresses
                .iter()
                .find(|(other, _)| *other == id)
                .map_or(&[][..], |(_, address)| address.as_slice());
            // At most MAX_MEMBERS voters, each address within bounds.
            if let Ok(next) = membership.with(id, true, address) {
                membership = next;
            }
        }
        membership
    }
}
