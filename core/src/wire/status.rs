//! The answers to the admin requests `Save` and `ClusterStatus`.
//!
//! A status carries its members as a [`Packed`] list of postcard-encoded [`MemberState`]s,
//! borrowed like every other list of the protocol: a fixed array of members would make
//! every `Response` value (which lives on a board's stack) half a kilobyte, and would freeze
//! the most members a cluster can have into the wire format. The core writes the list into
//! a scratch buffer of [`STATUS_SCRATCH_BYTES`] ([`write_members`]); readers decode each
//! member with [`ClusterStatus::members`].

use serde::{Deserialize, Serialize};

use super::codec::{decode, encode, DecodeError};
use super::packed::{Packed, PackedWriter};
use super::types::NodeId;

/// Most bytes one encoded [`MemberState`] takes (varints at their longest).
pub const MEMBER_STATE_MAX_BYTES: usize = 10 + 1 + 1 + 11 + 11 + 1;
/// A scratch buffer this large holds the member list of the largest cluster the core
/// supports (each item: a one-byte length tag and the member).
pub const STATUS_SCRATCH_BYTES: usize = crate::cluster::MAX_MEMBERS * (1 + MEMBER_STATE_MAX_BYTES);

/// A node's role as reported by `ClusterStatus`.
///
/// VARIANT ORDER IS FROZEN (postcard encodes the index).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusRole {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks the voters whether it could win an election (PreVote).
    PreCandidate,
    /// Stands for election.
    Candidate,
    /// Leads the current term.
    Leader,
    /// Receives the log but does not vote.
    Learner,
}

/// What a node knows of its link to another member.
///
/// VARIANT ORDER IS FROZEN (postcard encodes the index).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinkState {
    /// The member was heard from within the longest election timeout.
    Connected,
    /// The member has not been heard from for longer than that.
    Unreachable,
    /// This node does not track the member (a follower tracks only its leader).
    Unknown,
}

/// One other member, as this node sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberState {
    /// The member.
    pub id: NodeId,
    /// Its role as far as this node knows: `Leader` for the known leader, `Learner` for a
    /// non-voter, else `Follower`.
    pub role: StatusRole,
    /// Whether it is heard from.
    pub link: LinkState,
    /// On a leader: the highest entry known replicated on the member; else `None`.
    pub match_index: Option<u64>,
    /// On a leader: how many entries the member is behind the leader's log; else `None`.
    pub lag: Option<u64>,
    /// On a leader: the member needs (or is receiving) a snapshot.
    pub needs_snapshot: bool,
}

/// The answer to `ClusterStatus`: the answering node and the members it knows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterStatus<'a> {
    /// The answering node.
    pub node_id: NodeId,
    /// Its role.
    pub role: StatusRole,
    /// Its current term.
    pub term: u64,
    /// The leader it knows in this term, if any.
    pub leader_id: Option<NodeId>,
    /// Its commit index.
    pub commit_index: u64,
    /// The last entry its store reflects.
    pub applied_index: u64,
    /// The last entry of its log.
    pub last_index: u64,
    /// The other members, each a postcard-encoded [`MemberState`]: read them with
    /// [`ClusterStatus::members`].
    #[serde(borrow)]
    pub members: Packed<'a>,
}

impl<'a> ClusterStatus<'a> {
    /// The other members, decoded one by one (an item that is not a member is an error).
    pub fn members(&self) -> impl Iterator<Item = Result<MemberState, DecodeError>> + 'a {
        self.members.iter().map(|item| match item {
            Some(bytes) => decode::<MemberState>(bytes),
            None => Err(DecodeError::Malformed),
        })
    }
}

/// Encodes `members` into `scratch` as the list a [`ClusterStatus`] carries: as many as fit
/// ([`STATUS_SCRATCH_BYTES`] holds the core's largest cluster).
pub fn write_members(
    members: impl IntoIterator<Item = MemberState>,
    scratch: &mut [u8],
) -> Packed<'_> {
    let mut writer = PackedWriter::new(scratch);
    for member in members {
        let mut item = [0u8; MEMBER_STATE_MAX_BYTES];
        let Ok(bytes) = encode(&member, &mut item) else {
            break; // cannot happen: the buffer fits the longest encoding
        };
        if writer.push(Some(bytes)).is_err() {
            break; // full: a failed push writes nothing, so the list stays valid
        }
    }
    writer.finish()
}

/// The answer to `Save`: the snapshot written, renamed and fsynced.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SaveReport {
    /// The last log entry the snapshot reflects.
    pub applied_index: u64,
    /// The snapshot's size in bytes.
    pub snapshot_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> MemberState {
        MemberState {
            id: NodeId(id),
            role: StatusRole::Follower,
            link: LinkState::Connected,
            match_index: Some(u64::MAX),
            lag: Some(u64::MAX),
            needs_snapshot: false,
        }
    }

    #[test]
    fn the_scratch_size_holds_the_largest_cluster_and_a_small_one_lists_what_fits() {
        let all = (1..=crate::cluster::MAX_MEMBERS as u64).map(member);
        let mut scratch = [0u8; STATUS_SCRATCH_BYTES];
        let list = write_members(all, &mut scratch);
        assert_eq!(list.len(), crate::cluster::MAX_MEMBERS);
        let mut small = [0u8; 2 * (1 + MEMBER_STATE_MAX_BYTES)];
        let list = write_members((1..=5).map(member), &mut small);
        assert_eq!(list.len(), 2);
        let status = ClusterStatus {
            node_id: NodeId(9),
            role: StatusRole::Leader,
            term: 1,
            leader_id: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            members: list,
        };
        let read: Result<heapless::Vec<MemberState, 4>, _> = status.members().collect();
        assert_eq!(read.unwrap().as_slice(), [member(1), member(2)]);
    }
}
