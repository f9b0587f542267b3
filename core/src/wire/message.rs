//! The client protocol's messages and the envelopes that carry them.
//!
//! Messages borrow their keys and values from the received frame (`&'a [u8]`), so a request is
//! decoded without copying or allocating. Postcard encodes an enum as its variant index, so the
//! order of variants in every enum here is part of the protocol: it is frozen, and new variants
//! only ever go at the end.

use serde::{Deserialize, Serialize};

use super::error_code::ErrorCode;
use super::handshake::{Hello, HelloAck};
use super::packed::Packed;
use super::status::{ClusterStatus, SaveReport};
use super::types::{Expiry, LogIndex, NodeId, ReadConsistency, SetCondition, WriteOptions};

/// A request from a client to a node.
///
/// VARIANT ORDER IS FROZEN: postcard encodes the variant index, so reordering, removing or
/// inserting a variant changes the bytes of every variant after it. New requests are appended
/// at the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// The handshake; valid only as the first frame of a connection. Answered by `HelloAck`.
    Hello(Hello),
    /// A liveness check that touches no data. Answered by `Pong`.
    Ping,
    /// Read one key. Answered by `Value`.
    Get {
        /// The key to read.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// Write one key. Answered by `Stored`, or `NotStored` when the condition is not met.
    Set {
        /// The key to write.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The new value.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        value: &'a [u8],
        /// NX/XX precondition.
        condition: SetCondition,
        /// What happens to the key's TTL.
        expiry: Expiry,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Remove one key. Answered by `Count` (1 if it existed, else 0).
    Delete {
        /// The key to remove.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Whether a key exists. Answered by `Count` (1 or 0).
    Exists {
        /// The key to look up.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// Add `delta` to a decimal integer value (a missing key counts as 0). Answered by
    /// `Integer` with the new value.
    IncrBy {
        /// The key holding the integer.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The amount to add (negative to subtract).
        delta: i64,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Write a key only if its version is still `expected_version`, for optimistic
    /// concurrency. Answered by `Stored`, or `VersionMismatch` with the current version.
    CompareAndSet {
        /// The key to write.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The version last read; 0 means "the key must not exist".
        expected_version: u64,
        /// The new value.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        value: &'a [u8],
        /// What happens to the key's TTL.
        expiry: Expiry,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Read many keys at once. Every item must be `Some`. Answered by `Values`, one item per
    /// key in the same order, `None` for a missing key.
    MultiGet {
        /// The keys to read.
        #[serde(borrow)]
        keys: Packed<'a>,
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// Write many keys atomically. Answered by `Stored` with the version of the last key
    /// written (each key gets its own version, in the order given).
    MultiSet {
        /// Alternating key, value, key, value...; an even number of items, all `Some`.
        #[serde(borrow)]
        pairs: Packed<'a>,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Page through the keys. Answered by `ScanPage`.
    Scan {
        /// 0 to start, then the `next_cursor` of the previous page.
        cursor: u64,
        /// Only keys starting with these bytes (empty for all keys).
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        prefix: &'a [u8],
        /// A hint for how many keys to return; a page may hold fewer or more.
        count: u32,
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// The number of keys in the store. Answered by `Count`.
    DbSize {
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// Admin: write a snapshot of this node now (it also starts a new log). Answered by
    /// `Saved` once the file is renamed and fsynced, or by an error (`Unsupported` on a node
    /// that keeps nothing on disk). Never forwarded: each node saves its own.
    Save,
    /// Admin: this node's view of the cluster. Answered by `ClusterStatus`. Never forwarded.
    ClusterStatus,
    /// Add a node to the cluster as a learner; the leader promotes it to voter once it
    /// holds every committed entry. Answered by `MembershipChanged` once the change is
    /// committed (at once if the node is already a member at that address).
    AddMember {
        /// The new node's id.
        node_id: NodeId,
        /// Where its peer port is ("host:port"), for the members to dial.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        address: &'a [u8],
    },
    /// Remove a node from the cluster (the leader itself included: it steps down once the
    /// change commits). Answered by `MembershipChanged` once committed.
    RemoveMember {
        /// The node to remove.
        node_id: NodeId,
    },
    /// Read one key and remove it (Redis's GETDEL). Answered by `Value` with what the key
    /// held, `None` if it did not exist.
    GetDelete {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Write one key and answer with the value it held before (Redis's SET ... GET and
    /// GETSET). Answered by `Value` with the previous value (`None` if there was none),
    /// whether or not the condition let the write happen.
    SetAndGet {
        /// The key to write.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The new value.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        value: &'a [u8],
        /// NX/XX precondition.
        condition: SetCondition,
        /// What happens to the key's TTL.
        expiry: Expiry,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Append bytes to a key's value, keeping its TTL; a missing key counts as empty.
    /// Answered by `Count` with the value's new length.
    Append {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The bytes to add at the end.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        value: &'a [u8],
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Change a live key's TTL (Redis's EXPIRE, PEXPIRE, PERSIST): `AfterMs` sets it (0
    /// removes the key at once), `None` removes it, `Keep` changes nothing. Answered by
    /// `Count`: 1 if the key exists and (for `None`) had a TTL to remove, else 0.
    SetExpiry {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The new TTL.
        expiry: Expiry,
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// A key's remaining time to live (Redis's PTTL). Answered by `Integer`: milliseconds
    /// left, -1 if the key never expires, -2 if it does not exist.
    TimeToLive {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// How fresh the answer must be.
        read: ReadConsistency,
    },
    /// Remove every key (Redis's FLUSHDB). Answered by `Count` with the number of live keys
    /// removed.
    Clear {
        /// Acknowledgement overrides.
        write: WriteOptions,
    },
    /// Give the node's password (`--requirepass`). Answered by `Authenticated`, or by an
    /// error: `WrongPassword`, or `Unsupported` when the node has no password set. The only
    /// request served, with `Hello`, before a node with a password has seen the right one.
    Auth {
        /// The password, compared in constant time; never logged.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        password: &'a [u8],
    },
    /// The node's statistics as text, in Redis's INFO layout (`# Section` headers and
    /// `key:value` lines): role, term, leader, keys, memory, log, snapshots, replication lag
    /// per follower, counters. Answered by `Info`, from the node asked (never forwarded). The
    /// text is for people and scripts; its lines may grow between versions.
    Info,
}

/// A node's answer to one [`Request`].
///
/// VARIANT ORDER IS FROZEN, as for [`Request`]: new responses are appended at the end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// The handshake was accepted.
    HelloAck(HelloAck),
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Get`: the value, or `None` if the key does not exist.
    Value(#[serde(borrow)] Option<ValueRef<'a>>),
    /// The write was applied (and acknowledged at the requested level).
    Stored {
        /// The version the key (or keys, for MSET) now has.
        version: u64,
    },
    /// An NX/XX condition was not met; nothing was written.
    NotStored,
    /// A compare-and-set found another version; nothing was written.
    VersionMismatch {
        /// The key's version now, or 0 if it does not exist.
        current_version: u64,
    },
    /// Answer to `IncrBy`: the new value.
    Integer(i64),
    /// Answer to `Delete`, `Exists` and `DbSize`.
    Count(u64),
    /// Answer to `MultiGet`: one item per requested key, `None` where missing.
    Values(#[serde(borrow)] Packed<'a>),
    /// Answer to `Scan`.
    ScanPage {
        /// The cursor for the next page, or 0 when the scan is complete.
        next_cursor: u64,
        /// The keys of this page (all `Some`).
        #[serde(borrow)]
        keys: Packed<'a>,
    },
    /// The request failed.
    Error(#[serde(borrow)] ErrorReply<'a>),
    /// Answer to `Save`.
    Saved(SaveReport),
    /// Answer to `ClusterStatus`.
    ClusterStatus(#[serde(borrow)] ClusterStatus<'a>),
    /// Answer to `AddMember` and `RemoveMember`: the membership change is committed.
    MembershipChanged {
        /// The log entry that made the change (or the one in force, if nothing changed).
        log_index: LogIndex,
        /// The membership now (an encoded `Membership`), with the members' peer addresses:
        /// a node that asked to be added dials them from it, before its own log tells it.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        members: &'a [u8],
    },
    /// Answer to `Auth`: the password is right and every request is served from now on.
    Authenticated,
    /// Answer to `Info`: the statistics text.
    Info(#[serde(borrow)] &'a str),
}

/// A stored value as returned by a read, borrowed from the response frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueRef<'a> {
    /// The value's bytes.
    #[serde(borrow)]
    #[serde(serialize_with = "crate::wire::bytes::serialize")]
    pub value: &'a [u8],
    /// The key's version, to pass to a later `CompareAndSet`.
    pub version: u64,
    /// When the key expires, in the cluster's `now_ms` clock, or `None` if it never does.
    pub expires_at_ms: Option<u64>,
}

/// The body of an error response.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorReply<'a> {
    /// What went wrong, for the client's code to act on.
    pub code: ErrorCode,
    /// A human-readable explanation, for logs; may be empty and is not meant to be parsed.
    #[serde(borrow)]
    pub detail: &'a str,
}

/// A request with the id that its response will carry.
///
/// The id lets a client pipeline requests and lets the node answer out of order, for example
/// when a quorum write is still waiting while a later read is already answered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMessage<'a> {
    /// Chosen by the client; echoed in the response.
    pub request_id: u32,
    /// The request itself.
    #[serde(borrow)]
    pub request: Request<'a>,
}

/// A response with the id of the request it answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage<'a> {
    /// The id of the request being answered (0 for an error about a frame that was not read).
    pub request_id: u32,
    /// The response itself.
    #[serde(borrow)]
    pub response: Response<'a>,
}
