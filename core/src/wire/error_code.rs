//! [`ErrorCode`]: the machine-readable part of an error reply.

use serde::{Deserialize, Serialize};

/// Why a request failed, in a form a client can act on without parsing the detail text.
///
/// Each code says when a node sends it and whether the connection survives. Codes that close
/// the connection are sent with the request id of the frame that caused them, or 0 when that
/// frame was never read. Variant order is frozen (postcard encodes the variant index); new codes
/// go at the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame's payload is not a valid message (undecodable, trailing bytes), or a request
    /// breaks a rule of its own (a `None` in MGET keys, an odd number of MSET items, a second
    /// `Hello`). The framing is still in step, so the connection stays open, except during the
    /// handshake, when a first frame that is not a valid `Hello` closes it.
    Malformed,
    /// A frame header announced a payload above the receiver's `max_frame_bytes`. The payload
    /// is never read, so the stream cannot be resynchronised: sent with request id 0, then the
    /// connection closes. Also sent, connection kept, when the reply to a request would not
    /// fit the client's `max_frame_bytes`.
    FrameTooLarge,
    /// The `Hello` carries the wrong magic number; the connection closes.
    BadMagic,
    /// The `Hello` carries another protocol version; the connection closes.
    VersionMismatch,
    /// The `Hello` names another cluster; the connection closes.
    ClusterMismatch,
    /// The write needs a key slot or bytes the store does not have; nothing was changed and
    /// the connection stays open.
    StoreFull,
    /// The key is longer than the store's `max_key_bytes`; connection stays open.
    KeyTooLarge,
    /// The value is longer than the store's `max_value_bytes`; connection stays open.
    ValueTooLarge,
    /// INCRBY on a value that is not a decimal `i64`; nothing changed, connection stays open.
    NotAnInteger,
    /// INCRBY would overflow an `i64`; nothing changed, connection stays open.
    IntegerOverflow,
    /// A write or linearizable read reached a node that is not the leader and knows of none
    /// (an election is running); retry later. The connection stays open.
    NoLeader,
    /// The requested acknowledgement did not arrive in time. The write may still commit, so
    /// its outcome is unknown; the connection stays open.
    Timeout,
    /// The request is not allowed on this connection (for example a peer-only request from a
    /// client); connection stays open.
    Unauthorized,
    /// The node understood the request but cannot perform it as configured (for example
    /// `Durability::Disk` on a node without storage); connection stays open.
    Unsupported,
    /// A bug or an I/O failure on the node; the outcome of a write is unknown. The connection
    /// stays open.
    Internal,
    /// The node cannot take more requests now: too many are waiting, or its log is full of
    /// writes the followers have not yet confirmed. Nothing changed; retry after a pause.
    /// The connection stays open.
    Busy,
    /// The node requires a password (`--requirepass`) and this connection has not given the
    /// right one yet: only `Hello` and `Auth` are served before it. Connection stays open.
    AuthRequired,
    /// `Auth` carried a password that is not the node's. The connection stays open (and
    /// stays as authenticated as it was), so a client can correct itself.
    WrongPassword,
}
