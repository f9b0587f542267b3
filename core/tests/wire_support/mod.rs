//! Random wire messages for the property tests in `wire_*.rs`.
//!
//! Messages borrow their bytes, so a strategy cannot hand one out by value. Each strategy makes
//! an owned mirror instead (`OwnedRequest`, `OwnedResponse`), which lends out the real message
//! with `borrowed()`. Packed lists are stored already encoded, built with `PackedWriter`.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use memdi_core::wire::{
    AckLevel, Capacities, ClientMessage, ClusterId, ClusterStatus, Durability, ErrorCode,
    ErrorReply, Expiry, Hello, HelloAck, NodeId, Packed, PackedWriter, ReadConsistency, Request,
    Response, SaveReport, Sender, ServerMessage, SetCondition, StatusRole, ValueRef, WriteOptions,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Mostly short byte strings, sometimes long ones that span many chunks.
pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(any::<u8>(), 0..=24),
        1 => vec(any::<u8>(), 0..=3000),
    ]
}

/// Encodes `items` with `PackedWriter`, the way a real sender builds a list.
pub fn encode_packed(items: &[Option<Vec<u8>>]) -> Vec<u8> {
    let capacity: usize = items
        .iter()
        .map(|item| 5 + item.as_ref().map_or(0, Vec::len))
        .sum();
    let mut buffer = vec![0u8; capacity];
    let mut writer = PackedWriter::new(&mut buffer);
    for item in items {
        writer
            .push(item.as_deref())
            .expect("buffer sized for the items");
    }
    let encoded_len = writer.finish().encoded().len();
    buffer.truncate(encoded_len);
    buffer
}

/// A packed list, stored encoded.
pub fn packed_list() -> impl Strategy<Value = Vec<u8>> {
    vec(option::weighted(0.8, vec(any::<u8>(), 0..=20)), 0..=12)
        .prop_map(|items| encode_packed(&items))
}

fn packed(encoded: &[u8]) -> Packed<'_> {
    Packed::from_encoded(encoded).expect("strategies store valid lists")
}

pub fn read() -> impl Strategy<Value = ReadConsistency> {
    prop_oneof![
        Just(ReadConsistency::Linearizable),
        Just(ReadConsistency::Stale)
    ]
}

pub fn write() -> impl Strategy<Value = WriteOptions> {
    let ack = prop_oneof![Just(AckLevel::Leader), Just(AckLevel::Quorum)];
    let durability = prop_oneof![Just(Durability::Memory), Just(Durability::Disk)];
    (option::of(ack), option::of(durability))
        .prop_map(|(ack, durability)| WriteOptions { ack, durability })
}

pub fn condition() -> impl Strategy<Value = SetCondition> {
    prop_oneof![
        Just(SetCondition::Always),
        Just(SetCondition::IfAbsent),
        Just(SetCondition::IfPresent)
    ]
}

pub fn expiry() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        Just(Expiry::None),
        Just(Expiry::Keep),
        any::<u64>().prop_map(Expiry::AfterMs)
    ]
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        any::<u16>(),
        any::<u64>(),
        option::of(any::<u64>()),
        any::<u32>(),
    )
        .prop_map(
            |(magic, protocol_version, cluster, peer, max_frame_bytes)| Hello {
                magic,
                protocol_version,
                cluster_id: ClusterId(cluster),
                sender: peer.map_or(Sender::Client, |node| Sender::Peer(NodeId(node))),
                max_frame_bytes,
            },
        )
}

pub fn hello_ack() -> impl Strategy<Value = HelloAck> {
    (
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<(u32, u32, u32, u64)>(),
    )
        .prop_map(
            |(protocol_version, cluster, node, max_frame_bytes, limits)| HelloAck {
                protocol_version,
                cluster_id: ClusterId(cluster),
                node_id: NodeId(node),
                max_frame_bytes,
                capacities: Capacities {
                    max_keys: limits.0,
                    max_key_bytes: limits.1,
                    max_value_bytes: limits.2,
                    max_total_bytes: limits.3,
                },
            },
        )
}

/// Owned mirror of [`Request`].
#[derive(Clone, Debug)]
pub enum OwnedRequest {
    Hello(Hello),
    Ping,
    Get {
        key: Vec<u8>,
        read: ReadConsistency,
    },
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        condition: SetCondition,
        expiry: Expiry,
        write: WriteOptions,
    },
    Delete {
        key: Vec<u8>,
        write: WriteOptions,
    },
    Exists {
        key: Vec<u8>,
        read: ReadConsistency,
    },
    IncrBy {
        key: Vec<u8>,
        delta: i64,
        write: WriteOptions,
    },
    CompareAndSet {
        key: Vec<u8>,
        expected_version: u64,
        value: Vec<u8>,
        expiry: Expiry,
        write: WriteOptions,
    },
    MultiGet {
        keys: Vec<u8>,
        read: ReadConsistency,
    },
    MultiSet {
        pairs: Vec<u8>,
        write: WriteOptions,
    },
    Scan {
        cursor: u64,
        prefix: Vec<u8>,
        count: u32,
        read: ReadConsistency,
    },
    DbSize {
        read: ReadConsistency,
    },
    Save,
    ClusterStatus,
}

impl OwnedRequest {
    pub fn borrowed(&self) -> Request<'_> {
        match self {
            Self::Hello(hello) => Request::Hello(*hello),
            Self::Ping => Request::Ping,
            Self::Get { key, read } => Request::Get { key, read: *read },
            Self::Set {
                key,
                value,
                condition,
                expiry,
                write,
            } => Request::Set {
                key,
                value,
                condition: *condition,
                expiry: *expiry,
                write: *write,
            },
            Self::Delete { key, write } => Request::Delete { key, write: *write },
            Self::Exists { key, read } => Request::Exists { key, read: *read },
            Self::IncrBy { key, delta, write } => Request::IncrBy {
                key,
                delta: *delta,
                write: *write,
            },
            Self::CompareAndSet {
                key,
                expected_version,
                value,
                expiry,
                write,
            } => Request::CompareAndSet {
                key,
                expected_version: *expected_version,
                value,
                expiry: *expiry,
                write: *write,
            },
            Self::MultiGet { keys, read } => Request::MultiGet {
                keys: packed(keys),
                read: *read,
            },
            Self::MultiSet { pairs, write } => Request::MultiSet {
                pairs: packed(pairs),
                write: *write,
            },
            Self::Scan {
                cursor,
                prefix,
                count,
                read,
            } => Request::Scan {
                cursor: *cursor,
                prefix,
                count: *count,
                read: *read,
            },
            Self::DbSize { read } => Request::DbSize { read: *read },
            Self::Save => Request::Save,
            Self::ClusterStatus => Request::ClusterStatus,
        }
    }
}

/// Every request variant, with random fields.
pub fn request() -> impl Strategy<Value = OwnedRequest> {
    prop_oneof![
        hello().prop_map(OwnedRequest::Hello),
        Just(OwnedRequest::Ping),
        (bytes(), read()).prop_map(|(key, read)| OwnedRequest::Get { key, read }),
        (bytes(), bytes(), condition(), expiry(), write()).prop_map(
            |(key, value, condition, expiry, write)| OwnedRequest::Set {
                key,
                value,
                condition,
                expiry,
                write,
            }
        ),
        (bytes(), write()).prop_map(|(key, write)| OwnedRequest::Delete { key, write }),
        (bytes(), read()).prop_map(|(key, read)| OwnedRequest::Exists { key, read }),
        (bytes(), any::<i64>(), write()).prop_map(|(key, delta, write)| OwnedRequest::IncrBy {
            key,
            delta,
            write
        }),
        (bytes(), any::<u64>(), bytes(), expiry(), write()).prop_map(
            |(key, expected_version, value, expiry, write)| OwnedRequest::CompareAndSet {
                key,
                expected_version,
                value,
                expiry,
                write,
            }
        ),
        (packed_list(), read()).prop_map(|(keys, read)| OwnedRequest::MultiGet { keys, read }),
        (packed_list(), write()).prop_map(|(pairs, write)| OwnedRequest::MultiSet { pairs, write }),
        (any::<u64>(), bytes(), any::<u32>(), read()).prop_map(|(cursor, prefix, count, read)| {
            OwnedRequest::Scan {
                cursor,
                prefix,
                count,
                read,
            }
        }),
        read().prop_map(|read| OwnedRequest::DbSize { read }),
        Just(OwnedRequest::Save),
        Just(OwnedRequest::ClusterStatus),
    ]
}

/// Owned mirror of [`ClientMessage`].
#[derive(Clone, Debug)]
pub struct OwnedClientMessage {
    pub request_id: u32,
    pub request: OwnedRequest,
}

impl OwnedClientMessage {
    pub fn borrowed(&self) -> ClientMessage<'_> {
        ClientMessage {
            request_id: self.request_id,
            request: self.request.borrowed(),
        }
    }
}

pub fn client_message() -> impl Strategy<Value = OwnedClientMessage> {
    (any::<u32>(), request()).prop_map(|(request_id, request)| OwnedClientMessage {
        request_id,
        request,
    })
}

/// Owned mirror of [`Response`].
#[derive(Clone, Debug)]
pub enum OwnedResponse {
    HelloAck(HelloAck),
    Pong,
    Value(Option<(Vec<u8>, u64, Option<u64>)>),
    Stored {
        version: u64,
    },
    NotStored,
    VersionMismatch {
        current_version: u64,
    },
    Integer(i64),
    Count(u64),
    Values(Vec<u8>),
    ScanPage {
        next_cursor: u64,
        keys: Vec<u8>,
    },
    Error {
        code: ErrorCode,
        detail: String,
    },
    Saved(SaveReport),
    /// The status with its member list replaced by the encoded list.
    ClusterStatus(OwnedStatusHead, Vec<u8>),
}

/// The fixed fields of a [`ClusterStatus`].
#[derive(Clone, Copy, Debug)]
pub struct OwnedStatusHead {
    pub node_id: u64,
    pub role: StatusRole,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
}

impl OwnedResponse {
    pub fn borrowed(&self) -> Response<'_> {
        match self {
            Self::HelloAck(ack) => Response::HelloAck(*ack),
            Self::Pong => Response::Pong,
            Self::Value(value) => Response::Value(value.as_ref().map(
                |(value, version, expires_at_ms)| ValueRef {
                    value,
                    version: *version,
                    expires_at_ms: *expires_at_ms,
                },
            )),
            Self::Stored { version } => Response::Stored { version: *version },
            Self::NotStored => Response::NotStored,
            Self::VersionMismatch { current_version } => Response::VersionMismatch {
                current_version: *current_version,
            },
            Self::Integer(value) => Response::Integer(*value),
            Self::Count(count) => Response::Count(*count),
            Self::Values(values) => Response::Values(packed(values)),
            Self::ScanPage { next_cursor, keys } => Response::ScanPage {
                next_cursor: *next_cursor,
                keys: packed(keys),
            },
            Self::Error { code, detail } => Response::Error(ErrorReply {
                code: *code,
                detail,
            }),
            Self::Saved(report) => Response::Saved(*report),
            Self::ClusterStatus(head, members) => Response::ClusterStatus(ClusterStatus {
                node_id: NodeId(head.node_id),
                role: head.role,
                term: head.term,
                leader_id: head.leader_id.map(NodeId),
                commit_index: head.commit_index,
                applied_index: head.applied_index,
                last_index: head.last_index,
                members: packed(members),
            }),
        }
    }
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Malformed,
        ErrorCode::FrameTooLarge,
        ErrorCode::BadMagic,
        ErrorCode::VersionMismatch,
        ErrorCode::ClusterMismatch,
        ErrorCode::StoreFull,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::NotAnInteger,
        ErrorCode::IntegerOverflow,
        ErrorCode::NoLeader,
        ErrorCode::Timeout,
        ErrorCode::Unauthorized,
        ErrorCode::Unsupported,
        ErrorCode::Internal,
    ])
}

/// Every response variant, with random fields.
pub fn response() -> impl Strategy<Value = OwnedResponse> {
    prop_oneof![
        hello_ack().prop_map(OwnedResponse::HelloAck),
        Just(OwnedResponse::Pong),
        option::of((bytes(), any::<u64>(), option::of(any::<u64>())))
            .prop_map(OwnedResponse::Value),
        any::<u64>().prop_map(|version| OwnedResponse::Stored { version }),
        Just(OwnedResponse::NotStored),
        any::<u64>().prop_map(|current_version| OwnedResponse::VersionMismatch { current_version }),
        any::<i64>().prop_map(OwnedResponse::Integer),
        any::<u64>().prop_map(OwnedResponse::Count),
        packed_list().prop_map(OwnedResponse::Values),
        (any::<u64>(), packed_list())
            .prop_map(|(next_cursor, keys)| OwnedResponse::ScanPage { next_cursor, keys }),
        (error_code(), ".{0,40}").prop_map(|(code, detail)| OwnedResponse::Error { code, detail }),
        (any::<u64>(), any::<u64>()).prop_map(|(applied_index, snapshot_bytes)| {
            OwnedResponse::Saved(SaveReport {
                applied_index,
                snapshot_bytes,
            })
        }),
        (status_head(), packed_list())
            .prop_map(|(head, members)| OwnedResponse::ClusterStatus(head, members)),
    ]
}

pub fn status_head() -> impl Strategy<Value = OwnedStatusHead> {
    (
        any::<u64>(),
        prop::sample::select(vec![
            StatusRole::Follower,
            StatusRole::PreCandidate,
            StatusRole::Candidate,
            StatusRole::Leader,
            StatusRole::Learner,
        ]),
        any::<u64>(),
        option::of(any::<u64>()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(node_id, role, term, leader_id, (commit_index, applied_index, last_index))| {
                OwnedStatusHead {
                    node_id,
                    role,
                    term,
                    leader_id,
                    commit_index,
                    applied_index,
                    last_index,
                }
            },
        )
}

/// Owned mirror of [`ServerMessage`].
#[derive(Clone, Debug)]
pub struct OwnedServerMessage {
    pub request_id: u32,
    pub response: OwnedResponse,
}

impl OwnedServerMessage {
    pub fn borrowed(&self) -> ServerMessage<'_> {
        ServerMessage {
            request_id: self.request_id,
            response: self.response.borrowed(),
        }
    }
}

pub fn server_message() -> impl Strategy<Value = OwnedServerMessage> {
    (any::<u32>(), response()).prop_map(|(request_id, response)| OwnedServerMessage {
        request_id,
        response,
    })
}
