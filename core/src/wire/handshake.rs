//! The handshake: the first frame each side sends on a connection.
//!
//! Before any request is served both ends agree that they speak the same protocol version and
//! belong to the same cluster, and learn each other's frame size limit, so that neither sends a
//! frame the other must reject.

use core::fmt;

use serde::{Deserialize, Serialize};

use super::error_code::ErrorCode;
use super::types::{ClusterId, NodeId};

/// The first field of every [`Hello`]: "MEMD" read as a big-endian `u32`.
///
/// A connection from something that is not memdi (a port scanner, an HTTP client) fails on it
/// at once instead of being misread as a request.
pub const MAGIC: u32 = 0x4D45_4D44;

/// The version of this protocol's bytes.
///
/// Bumped whenever an encoding changes incompatibly (a field added to a message, a variant
/// reordered); appending a new variant at the end of an enum does not require it.
pub const PROTOCOL_VERSION: u16 = 1;

/// Who opened a connection.
///
/// Clients and peers share the listening port; a peer names itself so that the node can route
/// its frames to replication and check that it is a known member.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sender {
    /// An application using the client protocol.
    Client,
    /// Another node of the cluster.
    Peer(NodeId),
}

/// The first frame on every connection, sent by the side that connected.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The cluster the sender expects; a client may send `ClusterId(0)` for "any".
    pub cluster_id: ClusterId,
    /// Who is connecting.
    pub sender: Sender,
    /// The largest frame payload the sender accepts, so the node can size or split its replies.
    pub max_frame_bytes: u32,
}

impl Hello {
    /// A hello with this build's magic and protocol version, so callers cannot get them wrong.
    pub fn new(cluster_id: ClusterId, sender: Sender, max_frame_bytes: u32) -> Self {
        Self {
            magic: MAGIC,
            protocol_version: PROTOCOL_VERSION,
            cluster_id,
            sender,
            max_frame_bytes,
        }
    }

    /// Decides whether a node in cluster `expected` may serve this connection.
    ///
    /// A client may send `ClusterId(0)` because a client usually just wants "the cluster at this
    /// address"; a peer must name the cluster exactly, since joining the wrong cluster would mix
    /// two replicated logs.
    pub fn check(&self, expected: ClusterId) -> Result<(), HandshakeError> {
        if self.magic != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: self.protocol_version,
            });
        }
        let any_cluster = self.sender == Sender::Client && self.cluster_id == ClusterId(0);
        if !any_cluster && self.cluster_id != expected {
            return Err(HandshakeError::ClusterMismatch {
                ours: expected,
                theirs: self.cluster_id,
            });
        }
        Ok(())
    }
}

/// Why [`Hello::check`] refused a connection; each is answered with an error and a close.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeError {
    /// The magic number is wrong: the other end does not speak memdi.
    BadMagic,
    /// The other end speaks a different protocol version.
    VersionMismatch {
        /// This build's [`PROTOCOL_VERSION`].
        ours: u16,
        /// The version in the hello.
        theirs: u16,
    },
    /// The other end expects a different cluster.
    ClusterMismatch {
        /// This node's cluster.
        ours: ClusterId,
        /// The cluster in the hello.
        theirs: ClusterId,
    },
}

impl HandshakeError {
    /// The code to put in the error reply sent before closing the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::BadMagic => ErrorCode::BadMagic,
            Self::VersionMismatch { .. } => ErrorCode::VersionMismatch,
            Self::ClusterMismatch { .. } => ErrorCode::ClusterMismatch,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("bad magic: not a memdi connection"),
            Self::VersionMismatch { ours, theirs } => {
                write!(f, "protocol version mismatch: ours {ours}, theirs {theirs}")
            }
            Self::ClusterMismatch { ours, theirs } => write!(
                f,
                "another cluster: this node is in cluster {}, the hello names cluster {}",
                ours.0, theirs.0
            ),
        }
    }
}

/// The node's answer to an accepted [`Hello`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HelloAck {
    /// The node's [`PROTOCOL_VERSION`].
    pub protocol_version: u16,
    /// The node's cluster, so a client that sent `ClusterId(0)` learns which it reached.
    pub cluster_id: ClusterId,
    /// Which node answered, for logs and for reaching the same node again.
    pub node_id: NodeId,
    /// The largest frame payload the node accepts, so the client can size its requests.
    pub max_frame_bytes: u32,
    /// The store's limits, so a client can refuse an oversized write before sending it.
    pub capacities: Capacities,
}

/// The fixed limits of a node's store, as announced in [`HelloAck`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacities {
    /// The most keys the store holds.
    pub max_keys: u32,
    /// The longest key accepted.
    pub max_key_bytes: u32,
    /// The longest value accepted.
    pub max_value_bytes: u32,
    /// The most key and value bytes the store holds in total.
    pub max_total_bytes: u64,
}

/// Writes into `out` the frame a node sends first on each connection it opens to a peer:
/// a [`Hello`] naming it, in a [`ClientMessage`](super::ClientMessage) with request id 0.
pub fn encode_peer_hello(
    cluster_id: ClusterId,
    me: NodeId,
    max_frame_bytes: u32,
    out: &mut [u8],
) -> Result<usize, super::EncodeError> {
    let message = super::ClientMessage {
        request_id: 0,
        request: super::Request::Hello(Hello::new(cluster_id, Sender::Peer(me), max_frame_bytes)),
    };
    super::encode_frame(&message, out)
}

/// What the peer a node dialed answered to its hello (the frame's payload), read by
/// [`read_peer_answer`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PeerAnswer<'a> {
    /// The expected node accepted the connection; it takes frames up to this size (tell the
    /// node: `Node::handle_peer_link_up`).
    Accepted {
        /// From its [`HelloAck`].
        max_frame_bytes: u32,
    },
    /// Another node answered at the address: a configuration mistake worth naming.
    WrongNode {
        /// The node that answered.
        answered: NodeId,
    },
    /// The peer refused the hello (another cluster, another protocol version).
    Refused(super::ErrorReply<'a>),
    /// Something that is no answer to a hello.
    Unexpected,
}

/// Reads a peer's answer to this node's hello, expecting node `expected` to accept.
pub fn read_peer_answer(payload: &[u8], expected: NodeId) -> PeerAnswer<'_> {
    match super::decode::<super::ServerMessage<'_>>(payload) {
        Ok(super::ServerMessage {
            response: super::Response::HelloAck(ack),
            ..
        }) if ack.node_id == expected => PeerAnswer::Accepted {
            max_frame_bytes: ack.max_frame_bytes,
        },
        Ok(super::ServerMessage {
            response: super::Response::HelloAck(ack),
            ..
        }) => PeerAnswer::WrongNode {
            answered: ack.node_id,
        },
        Ok(super::ServerMessage {
            response: super::Response::Error(error),
            ..
        }) => PeerAnswer::Refused(error),
        _ => PeerAnswer::Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: ClusterId = ClusterId(7);

    /// A dialer learns the peer's frame size from its own node's answer, and is told when
    /// another node answers or the hello is refused.
    #[test]
    fn a_dialer_reads_the_answer_to_its_hello() {
        use crate::wire::{encode, ErrorReply, Response, ServerMessage};
        let answer = |response| {
            let mut out = [0u8; 128];
            let len = encode(
                &ServerMessage {
                    request_id: 0,
                    response,
                },
                &mut out,
            )
            .unwrap()
            .len();
            (out, len)
        };
        let ack = HelloAck {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: OURS,
            node_id: NodeId(2),
            max_frame_bytes: 2048,
            capacities: Capacities {
                max_keys: 1,
                max_key_bytes: 1,
                max_value_bytes: 1,
                max_total_bytes: 1,
            },
        };
        let (bytes, len) = answer(Response::HelloAck(ack));
        assert_eq!(
            read_peer_answer(&bytes[..len], NodeId(2)),
            PeerAnswer::Accepted {
                max_frame_bytes: 2048
            }
        );
        assert_eq!(
            read_peer_answer(&bytes[..len], NodeId(3)),
            PeerAnswer::WrongNode {
                answered: NodeId(2)
            }
        );
        let refusal = ErrorReply {
            code: ErrorCode::ClusterMismatch,
            detail: "x",
        };
        let (bytes, len) = answer(Response::Error(refusal));
        assert_eq!(
            read_peer_answer(&bytes[..len], NodeId(2)),
            PeerAnswer::Refused(refusal)
        );
        assert_eq!(
            read_peer_answer(&[0xff; 3], NodeId(2)),
            PeerAnswer::Unexpected
        );
        let mut hello = [0u8; 64];
        assert!(encode_peer_hello(OURS, NodeId(1), 2048, &mut hello).is_ok());
    }

    #[test]
    fn a_matching_hello_is_accepted() {
        assert_eq!(Hello::new(OURS, Sender::Client, 64).check(OURS), Ok(()));
        assert_eq!(
            Hello::new(OURS, Sender::Peer(NodeId(2)), 64).check(OURS),
            Ok(())
        );
    }

    #[test]
    fn only_a_client_may_ask_for_any_cluster() {
        let any = ClusterId(0);
        assert_eq!(Hello::new(any, Sender::Client, 64).check(OURS), Ok(()));
        assert_eq!(
            Hello::new(any, Sender::Peer(NodeId(2)), 64).check(OURS),
            Err(HandshakeError::ClusterMismatch {
                ours: OURS,
                theirs: any
            })
        );
        assert_eq!(
            Hello::new(ClusterId(8), Sender::Client, 64).check(OURS),
            Err(HandshakeError::ClusterMismatch {
                ours: OURS,
                theirs: ClusterId(8)
            })
        );
    }

    #[test]
    fn magic_and_version_are_checked_first() {
        let mut hello = Hello::new(ClusterId(8), Sender::Client, 64);
        hello.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(
            hello.check(OURS),
            Err(HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            })
        );
        hello.magic = 0x4854_5450;
        assert_eq!(hello.check(OURS), Err(HandshakeError::BadMagic));
        assert_eq!(HandshakeError::BadMagic.error_code(), ErrorCode::BadMagic);
    }
}
