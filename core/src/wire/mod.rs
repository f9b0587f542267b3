//! Wire messages and the framing of byte streams.
//!
//! Everything a node and its clients (and, later, its peers) exchange goes through three
//! layers. The modules are private and everything is re-exported here, so the files can be
//! split further without changing any path:
//!
//! 1. **Frame** (`frame.rs`): a 4-byte little-endian payload length, then the payload.
//!    [`FrameDecoder`] cuts a byte stream, delivered in arbitrary pieces, back into payloads,
//!    and refuses a header above its `max_frame_bytes` before reading the payload.
//! 2. **Envelope** (`message.rs`, `codec.rs`): each payload is one postcard-encoded [`ClientMessage`] or
//!    [`ServerMessage`], a request or response with a `request_id`, so requests can be
//!    pipelined and answered out of order. [`encode`] and [`decode`] convert one envelope, and
//!    `decode` rejects trailing bytes.
//! 3. **Message** (`message.rs`, `handshake.rs`, `types.rs`, `packed.rs`): the [`Request`] and [`Response`]
//!    themselves. They borrow keys and values from the frame, and multi-key requests carry
//!    their lists as a [`Packed`] byte string, so decoding never copies or allocates.
//!
//! # Handshake
//!
//! The first frame on every connection, from the side that connected, is a
//! [`Request::Hello`]. The node checks it with [`Hello::check`]: if it is accepted it answers
//! [`Response::HelloAck`] and serves requests; if the magic, protocol version or cluster does
//! not match, or the first frame is not a `Hello`, it answers [`Response::Error`] with the
//! matching [`ErrorCode`] and then closes the connection. A [`FrameError`] likewise gets an
//! error reply and a close, since the stream can no longer be followed.
//!
//! On a node with a password, [`Request::Auth`] must follow the handshake before anything
//! else is served; the rules are in [`crate::auth`].
//!
//! # Compatibility
//!
//! Postcard encodes structs as their fields in order and enums as a variant index, with no
//! names or tags. So the field order of every struct and the variant order of every enum here
//! is frozen; new variants go at the end, and any other change to the bytes needs a bump of
//! [`PROTOCOL_VERSION`]. `core/tests/wire_golden.rs` pins the bytes of every message.

pub(crate) mod bytes;
mod codec;
mod error_code;
mod frame;
mod handshake;
mod message;
mod packed;
mod peer;
mod status;
mod types;
mod varint;

pub use codec::{decode, encode, DecodeError, EncodeError};
pub use error_code::ErrorCode;
pub use frame::{
    encode_frame, FrameBufferTooSmall, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_BYTES,
};
pub use handshake::{
    encode_peer_hello, read_peer_answer, Capacities, HandshakeError, Hello, HelloAck, PeerAnswer,
    Sender, MAGIC, PROTOCOL_VERSION,
};
pub use message::{ClientMessage, ErrorReply, Request, Response, ServerMessage, ValueRef};
pub use packed::{Packed, PackedError, PackedIter, PackedPushError, PackedWriter};
pub use peer::{AppendOutcome, PeerMessage, PEER_ENVELOPE_BYTES};
pub use status::{
    write_members, ClusterStatus, LinkState, MemberState, SaveReport, StatusRole,
    MEMBER_STATE_MAX_BYTES, STATUS_SCRATCH_BYTES,
};
pub use types::{
    AckLevel, ClusterId, Durability, Expiry, LogIndex, LogPosition, NodeId, ReadConsistency,
    SetCondition, Term, WriteOptions,
};
