//! Who is in the cluster: the voters and learners, with the addresses their peers dial.
//!
//! A membership is a value carried by the log: a change is a log entry
//! ([`Command::Members`](super::Command::Members)) holding the whole new membership, and a
//! node uses the latest one in its log as soon as it is appended, committed or not (Raft's
//! single-server changes, thesis section 4.1). Changes go one at a time: a leader proposes a
//! change only when the previous one is committed and it has committed an entry of its own
//! term, so any two memberships in force at once differ by one voter and their majorities
//! overlap. The membership as of a log's base (the bootstrap voters, or what a snapshot or
//! a checkpoint carried) is kept beside the log, so that discarding entries never loses it.
//!
//! The encoding is the same everywhere (log entries, snapshot transfers, checkpoints), and
//! memberships are kept encoded: reading one is an iterator over the bytes, so a node holds
//! two of them in under 1.5 KiB and never allocates.
//!
//! ```text
//! membership  count u8 | member * count
//! member      id u64 LE | voter u8 (0 or 1) | address_len u8 | address
//! ```

use heapless::Vec;

use super::config::MAX_MEMBERS;
use crate::wire::NodeId;

/// Longest peer address a member may have ("host:port", as the shells parse it).
pub const MAX_ADDRESS_BYTES: usize = 64;

/// Bytes of one member's fixed fields.
const MEMBER_FIXED_BYTES: usize = 8 + 1 + 1;

/// Longest encoded membership.
pub const MAX_MEMBERSHIP_BYTES: usize = 1 + MAX_MEMBERS * (MEMBER_FIXED_BYTES + MAX_ADDRESS_BYTES);

/// Why a membership could not be decoded or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipError {
    /// The bytes are not a membership (cut short, a bad flag, a repeated id, trailing bytes).
    Malformed,
    /// The cluster already has [`MAX_MEMBERS`] members.
    TooManyMembers,
    /// An address is longer than [`MAX_ADDRESS_BYTES`].
    AddressTooLong,
}

impl core::fmt::Display for MembershipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed membership"),
            Self::TooManyMembers => write!(f, "a cluster has at most {MAX_MEMBERS} members"),
            Self::AddressTooLong => {
                write!(f, "a peer address is at most {MAX_ADDRESS_BYTES} bytes")
            }
        }
    }
}

/// One member, as read from a [`Membership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Its id.
    pub id: NodeId,
    /// Whether it votes (and counts for commitment); a learner only receives the log.
    pub voter: bool,
    /// Where its peer port is ("host:port"); empty when the shells know it otherwise (the
    /// bootstrap members of a `--cluster` list).
    pub address: &'a [u8],
}

/// A membership, kept in its encoded form (see the [module documentation](self)).
#[derive(Clone, PartialEq, Eq)]
pub struct Membership {
    bytes: Vec<u8, MAX_MEMBERSHIP_BYTES>,
}

impl core::fmt::Debug for Membership {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut list = f.debug_list();
        for member in self.iter() {
            list.entry(&(member.id.0, if member.voter { "voter" } else { "learner" }));
        }
        list.finish()
    }
}

impl Default for Membership {
    fn default() -> Self {
        Self::empty()
    }
}

impl Membership {
    /// No members (a node waiting to be added to a cluster).
    pub fn empty() -> Self {
        let mut bytes = Vec::new();
        // One byte always fits.
        let _ = bytes.push(0);
        Self { bytes }
    }

    /// Checks and copies an encoded membership.
    pub fn decode(encoded: &[u8]) -> Result<Self, MembershipError> {
        let mut rest = encoded;
        let (&count, tail) = rest.split_first().ok_or(MembershipError::Malformed)?;
        rest = tail;
        if usize::from(count) > MAX_MEMBERS {
            return Err(MembershipError::Malformed);
        }
        let mut seen: Vec<u64, MAX_MEMBERS> = Vec::new();
        for _ in 0..count {
            let (member, tail) = read_member(rest).ok_or(MembershipError::Malformed)?;
            if seen.contains(&member.id.0) {
                return Err(MembershipError::Malformed);
            }
            let _ = seen.push(member.id.0);
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(MembershipError::Malformed);
        }
        let mut bytes = Vec::new();
        bytes
            .extend_from_slice(encoded)
            .map_err(|_| MembershipError::Malformed)?;
        Ok(Self { bytes })
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The members, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = Member<'_>> + '_ {
        let mut rest = self.bytes.get(1..).unwrap_or(&[]);
        core::iter::from_fn(move || {
            // The bytes were checked when the membership was made.
            let (member, tail) = read_member(rest)?;
            rest = tail;
            Some(member)
        })
    }

    /// The member with this id.
    pub fn get(&self, id: NodeId) -> Option<Member<'_>> {
        self.iter().find(|member| member.id == id)
    }

    /// Members.
    pub fn len(&self) -> usize {
        usize::from(self.bytes[0])
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Voters.
    pub fn voter_count(&self) -> usize {
        self.iter().filter(|member| member.voter).count()
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.get(id).is_some_and(|member| member.voter)
    }

    /// The same membership with `id` added or replaced (its address and vote as given).
    pub fn with(&self, id: NodeId, voter: bool, address: &[u8]) -> Result<Self, MembershipError> {
        if address.len() > MAX_ADDRESS_BYTES {
            return Err(MembershipError::AddressTooLong);
        }
        let mut next = Self::empty();
        let mut replaced = false;
        for member in self.iter() {
            if member.id == id {
                next.push(id, voter, address)?;
                replaced = true;
            } else {
                next.push(member.id, member.voter, member.address)?;
            }
        }
        if !replaced {
            next.push(id, voter, address)?;
        }
        Ok(next)
    }

    /// The same membership without `id`.
    pub fn without(&self, id: NodeId) -> Self {
        let mut next = Self::empty();
        for member in self.iter().filter(|member| member.id != id) {
            // Fewer members than `self`, which fitted.
            let _ = next.push(member.id, member.voter, member.address);
        }
        next
    }

    fn push(&mut self, id: NodeId, voter: bool, address: &[u8]) -> Result<(), MembershipError> {
        if self.len() >= MAX_MEMBERS {
            return Err(MembershipError::TooManyMembers);
        }
        let address_len = u8::try_from(address.len())
            .ok()
            .filter(|&len| usize::from(len) <= MAX_ADDRESS_BYTES)
            .ok_or(MembershipError::AddressTooLong)?;
        // Within MAX_MEMBERSHIP_BYTES: at most MAX_MEMBERS members of bounded size.
        let _ = self.bytes.extend_from_slice(&id.0.to_le_bytes());
        let _ = self.bytes.push(u8::from(voter));
        let _ = self.bytes.push(address_len);
        let _ = self.bytes.extend_from_slice(address);
        self.bytes[0] += 1;
        Ok(())
    }
}

/// Reads one member from the front of `bytes`.
fn read_member(bytes: &[u8]) -> Option<(Member<'_>, &[u8])> {
    if bytes.len() < MEMBER_FIXED_BYTES {
        return None;
    }
    let mut id = [0; 8];
    id.copy_from_slice(&bytes[..8]);
    let voter = match bytes[8] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let address_len = usize::from(bytes[9]);
    if address_len > MAX_ADDRESS_BYTES {
        return None;
    }
    let rest = &bytes[MEMBER_FIXED_BYTES..];
    if rest.len() < address_len {
        return None;
    }
    let (address, rest) = rest.split_at(address_len);
    Some((
        Member {
            id: NodeId(u64::from_le_bytes(id)),
            voter,
            address,
        },
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_round_trips_through_its_encoding() {
        let membership = Membership::empty()
            .with(NodeId(1), true, b"10.0.0.1:7380")
            .unwrap()
            .with(NodeId(7), false, b"")
            .unwrap();
        let decoded = Membership::decode(membership.as_bytes()).unwrap();
        assert_eq!(decoded, membership);
        let members: std::vec::Vec<_> = decoded.iter().collect();
        assert_eq!(
            members,
            [
                Member {
                    id: NodeId(1),
                    voter: true,
                    address: b"10.0.0.1:7380"
                },
                Member {
                    id: NodeId(7),
                    voter: false,
                    address: b""
                }
            ]
        );
        assert_eq!(decoded.voter_count(), 1);
        assert!(decoded.is_voter(NodeId(1)) && !decoded.is_voter(NodeId(7)));
    }

    #[test]
    fn with_replaces_a_member_in_place_and_without_removes_it() {
        let membership = Membership::empty()
            .with(NodeId(1), true, b"a")
            .unwrap()
            .with(NodeId(2), false, b"b")
            .unwrap()
            .with(NodeId(2), true, b"b")
            .unwrap();
        assert_eq!(membership.len(), 2);
        assert!(membership.is_voter(NodeId(2)));
        let without = membership.without(NodeId(1));
        assert_eq!(without.len(), 1);
        assert!(without.get(NodeId(1)).is_none());
        assert_eq!(membership.without(NodeId(9)), membership);
    }

    #[test]
    fn limits_are_refused_with_their_error() {
        let mut membership = Membership::empty();
        for id in 0..MAX_MEMBERS as u64 {
            membership = membership
                .with(NodeId(id), true, &[b'x'; MAX_ADDRESS_BYTES])
                .unwrap();
        }
        assert_eq!(membership.as_bytes().len(), MAX_MEMBERSHIP_BYTES);
        assert_eq!(
            membership.with(NodeId(99), false, b"").unwrap_err(),
            MembershipError::TooManyMembers
        );
        assert_eq!(
            Membership::empty()
                .with(NodeId(1), true, &[b'x'; MAX_ADDRESS_BYTES + 1])
                .unwrap_err(),
            MembershipError::AddressTooLong
        );
    }

    #[test]
    fn damaged_encodings_are_refused() {
        let good = Membership::empty()
            .with(NodeId(1), true, b"addr")
            .unwrap()
            .with(NodeId(2), true, b"")
            .unwrap();
        let bytes = good.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                Membership::decode(&bytes[..cut]),
                Err(MembershipError::Malformed),
                "cut at {cut}"
            );
        }
        let mut trailing = std::vec::Vec::from(bytes);
        trailing.push(0);
        assert!(Membership::decode(&trailing).is_err());
        let mut bad_flag = std::vec::Vec::from(bytes);
        bad_flag[1 + 8] = 2;
        assert!(Membership::decode(&bad_flag).is_err());
        let twice = Membership::empty().with(NodeId(1), true, b"").unwrap();
        let mut repeated = std::vec::Vec::from(twice.as_bytes());
        repeated.extend_from_slice(&twice.as_bytes()[1..]);
        repeated[0] = 2;
        assert!(Membership::decode(&repeated).is_err());
        assert!(Membership::decode(&[MAX_MEMBERS as u8 + 1]).is_err());
    }
}
