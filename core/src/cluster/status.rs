//! A node's view of the cluster, for the `ClusterStatus` admin request and for shells
//! (logs, INFO).

use super::node::{Node, Role};
use crate::wire::{write_members, ClusterStatus, LinkState, MemberState, StatusRole};

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// This node's view of the cluster at `now_ms`. A leader reports each member's
    /// replication (match index, lag, link); a follower knows only whether it hears its
    /// leader, so other members' links are `Unknown`. A member counts as `Connected` when it
    /// was heard from within the longest election timeout. The member list is written into
    /// `scratch`; [`STATUS_SCRATCH_BYTES`](crate::wire::STATUS_SCRATCH_BYTES) holds any
    /// cluster (a smaller buffer lists the members that fit).
    pub fn cluster_status<'b>(&self, now_ms: u64, scratch: &'b mut [u8]) -> ClusterStatus<'b> {
        let recent_ms = self.config.election_timeout_max_ms;
        let heard = |last_ms: u64| {
            if now_ms.saturating_sub(last_ms) <= recent_ms {
                LinkState::Connected
            } else {
                LinkState::Unreachable
            }
        };
        let leading = self.role == Role::Leader;
        let last_index = self.log.last_index();
        let members = self.peers.iter().map(|peer| {
            let role = if Some(peer.id) == self.leader_id {
                StatusRole::Leader
            } else if peer.voter {
                StatusRole::Follower
            } else {
                StatusRole::Learner
            };
            let link = if leading {
                heard(peer.last_heard_ms)
            } else if Some(peer.id) == self.leader_id {
                self.last_leader_contact_ms
                    .map_or(LinkState::Unreachable, heard)
            } else {
                LinkState::Unknown
            };
            MemberState {
                id: peer.id,
                role,
                link,
                match_index: leading.then_some(peer.match_index),
                lag: leading.then(|| last_index.saturating_sub(peer.match_index)),
                needs_snapshot: leading && (peer.needs_snapshot || peer.snapshot.is_some()),
            }
        });
        let members = write_members(members, scratch);
        let role = match self.role {
            _ if !self.is_voter() => StatusRole::Learner,
            Role::Follower => StatusRole::Follower,
            Role::PreCandidate => StatusRole::PreCandidate,
            Role::Candidate => StatusRole::Candidate,
            Role::Leader => StatusRole::Leader,
        };
        ClusterStatus {
            node_id: self.config.node_id,
            role,
            term: self.term,
            leader_id: self.leader_id,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            last_index,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::cluster::Log;
    use crate::cluster::{ClientAction, LogLimits, NodeConfig};
    use crate::store::{Store, StoreLimits};
    use crate::wire::{
        decode, encode, ClientMessage, ClusterId, ErrorCode, NodeId, Request, Response,
        ServerMessage, FRAME_HEADER_BYTES,
    };

    type TestNode = Node<Vec<u8>, Vec<u8>, 8>;

    fn node(persistent: bool) -> TestNode {
        let store_limits = StoreLimits {
            max_keys: 16,
            max_key_bytes: 16,
            max_value_bytes: 16,
            max_total_bytes: 1024,
        };
        let log_limits = LogLimits {
            max_entries: 16,
            max_bytes: 1024,
        };
        let mut config =
            NodeConfig::new(NodeId(1), ClusterId(7), &[NodeId(1), NodeId(2), NodeId(3)]);
        config.persistent = persistent;
        let store = Store::new(
            vec![0; store_limits.memory_bytes().unwrap()],
            store_limits,
            1,
        );
        let log = Log::new(vec![0; log_limits.memory_bytes()], log_limits);
        Node::new(config, store.unwrap(), log.unwrap(), 0)
    }

    fn request(node: &mut TestNode, request: Request<'_>) -> (ClientAction, Vec<u8>) {
        let mut payload = [0u8; 64];
        let message = ClientMessage {
            request_id: 5,
            request,
        };
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 4096];
        let action = node.handle_client_frame(0, &payload[..len], &mut out);
        (action, out)
    }

    #[test]
    fn a_fresh_follower_reports_itself_and_members_it_does_not_track() {
        let mut node = node(false);
        let (action, out) = request(&mut node, Request::ClusterStatus);
        let ClientAction::Reply { len, .. } = action else {
            panic!("{action:?}");
        };
        let message: ServerMessage<'_> = decode(&out[FRAME_HEADER_BYTES..len]).unwrap();
        let Response::ClusterStatus(status) = message.response else {
            panic!("{message:?}");
        };
        assert_eq!(message.request_id, 5);
        assert_eq!(status.node_id, NodeId(1));
        assert_eq!(status.role, StatusRole::Follower);
        assert_eq!((status.term, status.leader_id), (0, None));
        let members: Vec<MemberState> = status.members().map(Result::unwrap).collect();
        assert_eq!(
            members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [NodeId(2), NodeId(3)]
        );
        for member in members {
            assert_eq!(member.link, LinkState::Unknown);
            assert_eq!((member.match_index, member.lag), (None, None));
        }
    }

    #[test]
    fn save_goes_to_a_persistent_nodes_shell_and_is_refused_without_a_disk() {
        let mut persistent = node(true);
        assert_eq!(
            request(&mut persistent, Request::Save).0,
            ClientAction::Save { request_id: 5 }
        );
        let mut volatile = node(false);
        let (action, out) = request(&mut volatile, Request::Save);
        let ClientAction::Reply { len, .. } = action else {
            panic!("{action:?}");
        };
        let message: ServerMessage<'_> = decode(&out[FRAME_HEADER_BYTES..len]).unwrap();
        let Response::Error(error) = message.response else {
            panic!("{message:?}");
        };
        assert_eq!(error.code, ErrorCode::Unsupported);
    }
}
