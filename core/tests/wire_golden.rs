//! Golden bytes for every wire message and every value of the small wire types.
//!
//! These bytes ARE the protocol: a server and a client built from different commits must agree
//! on them. If one of these assertions fails, the encoding changed. That is only allowed with a
//! bump of `PROTOCOL_VERSION` (and then these literals are updated in the same change), or, for
//! a new variant appended at the end of an enum, by adding a new line here without touching the
//! existing ones. Never "fix" a failing literal by pasting the new bytes without that bump.

use memdi_core::wire::{
    encode_frame, write_members, AckLevel, Capacities, ClientMessage, ClusterId, ClusterStatus,
    Durability, ErrorCode, ErrorReply, Expiry, Hello, HelloAck, LinkState, LogIndex, LogPosition,
    MemberState, NodeId, Packed, PackedWriter, ReadConsistency, Request, Response, SaveReport,
    Sender, ServerMessage, SetCondition, StatusRole, Term, ValueRef, WriteOptions, MAGIC,
    PROTOCOL_VERSION, STATUS_SCRATCH_BYTES,
};

mod golden_support;

use golden_support::{from_hex, to_hex, Golden};

/// `golden!(g, Type, value, "hex")` checks one value against its frozen bytes.
macro_rules! golden {
    ($golden:expr, $ty:ty, $value:expr, $hex:expr) => {{
        let value: $ty = $value;
        let bytes = from_hex($hex);
        $golden.check(&value, $hex, &bytes);
    }};
}

fn packed<'b>(buffer: &'b mut [u8], items: &[Option<&[u8]>]) -> Packed<'b> {
    let mut writer = PackedWriter::new(buffer);
    for item in items {
        writer.push(*item).expect("golden list fits");
    }
    writer.finish()
}

const WRITE_DEFAULT: WriteOptions = WriteOptions {
    ack: None,
    durability: None,
};

const WRITE_QUORUM_DISK: WriteOptions = WriteOptions {
    ack: Some(AckLevel::Quorum),
    durability: Some(Durability::Disk),
};

fn hello() -> Hello {
    Hello {
        magic: MAGIC,
        protocol_version: PROTOCOL_VERSION,
        cluster_id: ClusterId(7),
        sender: Sender::Peer(NodeId(3)),
        max_frame_bytes: 1 << 20,
    }
}

/// A leader of term 4 with one follower in sync, and a learner behind that needs a
/// snapshot; the member list is written into `scratch`.
fn cluster_status(scratch: &mut [u8]) -> ClusterStatus<'_> {
    let members = [
        MemberState {
            id: NodeId(2),
            role: StatusRole::Follower,
            link: LinkState::Connected,
            match_index: Some(200),
            lag: Some(0),
            needs_snapshot: false,
        },
        MemberState {
            id: NodeId(3),
            role: StatusRole::Learner,
            link: LinkState::Unreachable,
            match_index: Some(0),
            lag: Some(200),
            needs_snapshot: true,
        },
    ];
    ClusterStatus {
        node_id: NodeId(1),
        role: StatusRole::Leader,
        term: 4,
        leader_id: Some(NodeId(1)),
        commit_index: 200,
        applied_index: 200,
        last_index: 200,
        members: write_members(members, scratch),
    }
}

fn hello_ack() -> HelloAck {
    HelloAck {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: ClusterId(7),
        node_id: NodeId(2),
        max_frame_bytes: 1 << 20,
        capacities: Capacities {
            max_keys: 1000,
            max_key_bytes: 250,
            max_value_bytes: 65_536,
            max_total_bytes: 1 << 32,
        },
    }
}

#[test]
fn golden_small_types() {
    let mut g = Golden::default();
    golden!(g, NodeId, NodeId(300), "ac 02");
    golden!(g, ClusterId, ClusterId(7), "07");
    golden!(g, Term, Term(5), "05");
    golden!(
        g,
        LogIndex,
        LogIndex(u64::MAX),
        "ff ff ff ff ff ff ff ff ff 01"
    );
    golden!(
        g,
        LogPosition,
        LogPosition {
            term: Term(2),
            index: LogIndex(128)
        },
        "02 80 01"
    );
    golden!(g, AckLevel, AckLevel::Leader, "00");
    golden!(g, AckLevel, AckLevel::Quorum, "01");
    golden!(g, Durability, Durability::Memory, "00");
    golden!(g, Durability, Durability::Disk, "01");
    golden!(g, ReadConsistency, ReadConsistency::Linearizable, "00");
    golden!(g, ReadConsistency, ReadConsistency::Stale, "01");
    golden!(g, SetCondition, SetCondition::Always, "00");
    golden!(g, SetCondition, SetCondition::IfAbsent, "01");
    golden!(g, SetCondition, SetCondition::IfPresent, "02");
    golden!(g, Expiry, Expiry::None, "00");
    golden!(g, Expiry, Expiry::Keep, "01");
    golden!(g, Expiry, Expiry::AfterMs(1500), "02 dc 0b");
    golden!(g, WriteOptions, WRITE_DEFAULT, "00 00");
    golden!(g, WriteOptions, WRITE_QUORUM_DISK, "01 01 01 01");
    golden!(
        g,
        WriteOptions,
        WriteOptions {
            ack: Some(AckLevel::Leader),
            durability: None,
        },
        "01 00 00"
    );
    golden!(g, Sender, Sender::Client, "00");
    golden!(g, Sender, Sender::Peer(NodeId(3)), "01 03");
    g.finish();
}

#[test]
fn golden_error_codes() {
    let mut g = Golden::default();
    let codes = [
        (ErrorCode::Malformed, "00"),
        (ErrorCode::FrameTooLarge, "01"),
        (ErrorCode::BadMagic, "02"),
        (ErrorCode::VersionMismatch, "03"),
        (ErrorCode::ClusterMismatch, "04"),
        (ErrorCode::StoreFull, "05"),
        (ErrorCode::KeyTooLarge, "06"),
        (ErrorCode::ValueTooLarge, "07"),
        (ErrorCode::NotAnInteger, "08"),
        (ErrorCode::IntegerOverflow, "09"),
        (ErrorCode::NoLeader, "0a"),
        (ErrorCode::Timeout, "0b"),
        (ErrorCode::Unauthorized, "0c"),
        (ErrorCode::Unsupported, "0d"),
        (ErrorCode::Internal, "0e"),
        (ErrorCode::Busy, "0f"),
        (ErrorCode::AuthRequired, "10"),
        (ErrorCode::WrongPassword, "11"),
    ];
    for (code, hex) in codes {
        golden!(g, ErrorCode, code, hex);
    }
    g.finish();
}

#[test]
fn golden_handshake() {
    let mut g = Golden::default();
    golden!(g, Hello, hello(), "c4 9a 95 ea 04 01 07 01 03 80 80 40");
    golden!(
        g,
        Hello,
        Hello::new(ClusterId(0), Sender::Client, 4096),
        "c4 9a 95 ea 04 01 00 00 80 20"
    );
    golden!(
        g,
        HelloAck,
        hello_ack(),
        "01 07 02 80 80 40 e8 07 fa 01 80 80 04 80 80 80 80 10"
    );
    g.finish();
}

#[test]
fn golden_requests() {
    let mut g = Golden::default();
    let mut keys_buffer = [0u8; 16];
    let keys = packed(&mut keys_buffer, &[Some(b"a"), Some(b"bc")]);
    let mut pairs_buffer = [0u8; 16];
    let pairs = packed(
        &mut pairs_buffer,
        &[Some(b"k"), Some(b"v"), Some(b"j"), Some(b"")],
    );
    golden!(
        g,
        Request<'_>,
        Request::Hello(hello()),
        "00 c4 9a 95 ea 04 01 07 01 03 80 80 40"
    );
    golden!(g, Request<'_>, Request::Ping, "01");
    golden!(
        g,
        Request<'_>,
        Request::Get {
            key: b"key",
            read: ReadConsistency::Stale,
        },
        "02 03 6b 65 79 01"
    );
    golden!(
        g,
        Request<'_>,
        Request::Set {
            key: b"k",
            value: b"val",
            condition: SetCondition::IfAbsent,
            expiry: Expiry::AfterMs(1500),
            write: WRITE_QUORUM_DISK,
        },
        "03 01 6b 03 76 61 6c 01 02 dc 0b 01 01 01 01"
    );
    golden!(
        g,
        Request<'_>,
        Request::Delete {
            key: b"k",
            write: WRITE_DEFAULT,
        },
        "04 01 6b 00 00"
    );
    golden!(
        g,
        Request<'_>,
        Request::Exists {
            key: b"k",
            read: ReadConsistency::Linearizable,
        },
        "05 01 6b 00"
    );
    golden!(
        g,
        Request<'_>,
        Request::IncrBy {
            key: b"n",
            delta: -2,
            write: WRITE_DEFAULT,
        },
        "06 01 6e 03 00 00"
    );
    golden!(
        g,
        Request<'_>,
        Request::CompareAndSet {
            key: b"k",
            expected_version: 300,
            value: b"v",
            expiry: Expiry::Keep,
            write: WRITE_QUORUM_DISK,
        },
        "07 01 6b ac 02 01 76 01 01 01 01 01"
    );
    golden!(
        g,
        Request<'_>,
        Request::MultiGet {
            keys,
            read: ReadConsistency::Stale,
        },
        "08 05 02 61 03 62 63 01"
    );
    golden!(
        g,
        Request<'_>,
        Request::MultiSet {
            pairs,
            write: WRITE_DEFAULT,
        },
        "09 07 02 6b 02 76 02 6a 01 00 00"
    );
    golden!(
        g,
        Request<'_>,
        Request::Scan {
            cursor: 1000,
            prefix: b"p:",
            count: 100,
            read: ReadConsistency::Linearizable,
        },
        "0a e8 07 02 70 3a 64 00"
    );
    golden!(
        g,
        Request<'_>,
        Request::DbSize {
            read: ReadConsistency::Stale,
        },
        "0b 01"
    );
    golden!(g, Request<'_>, Request::Save, "0c");
    golden!(g, Request<'_>, Request::ClusterStatus, "0d");
    golden!(
        g,
        Request<'_>,
        Request::AddMember {
            node_id: NodeId(4),
            address: b"h:1",
        },
        "0e 04 03 68 3a 31"
    );
    golden!(
        g,
        Request<'_>,
        Request::RemoveMember { node_id: NodeId(2) },
        "0f 02"
    );
    golden!(
        g,
        Request<'_>,
        Request::Auth { password: b"pw" },
        "16 02 70 77"
    );
    golden!(g, Request<'_>, Request::Info, "17");
    g.finish();
}

#[test]
fn golden_responses() {
    let mut g = Golden::default();
    let mut values_buffer = [0u8; 16];
    let values = packed(&mut values_buffer, &[Some(b"x"), None, Some(b"yz")]);
    let mut keys_buffer = [0u8; 16];
    let keys = packed(&mut keys_buffer, &[Some(b"k1"), Some(b"k2")]);
    golden!(
        g,
        Response<'_>,
        Response::HelloAck(hello_ack()),
        "00 01 07 02 80 80 40 e8 07 fa 01 80 80 04 80 80 80 80 10"
    );
    golden!(g, Response<'_>, Response::Pong, "01");
    golden!(g, Response<'_>, Response::Value(None), "02 00");
    golden!(
        g,
        Response<'_>,
        Response::Value(Some(ValueRef {
            value: b"val",
            version: 300,
            expires_at_ms: None,
        })),
        "02 01 03 76 61 6c ac 02 00"
    );
    golden!(
        g,
        Response<'_>,
        Response::Value(Some(ValueRef {
            value: b"",
            version: 1,
            expires_at_ms: Some(1_700_000_000_000),
        })),
        "02 01 00 01 01 80 d0 95 ff bc 31"
    );
    golden!(g, Response<'_>, Response::Stored { version: 42 }, "03 2a");
    golden!(g, Response<'_>, Response::NotStored, "04");
    golden!(
        g,
        Response<'_>,
        Response::VersionMismatch { current_version: 0 },
        "05 00"
    );
    golden!(g, Response<'_>, Response::Integer(-1), "06 01");
    golden!(g, Response<'_>, Response::Integer(64), "06 80 01");
    golden!(g, Response<'_>, Response::Count(3), "07 03");
    golden!(
        g,
        Response<'_>,
        Response::Values(values),
        "08 06 02 78 00 03 79 7a"
    );
    golden!(
        g,
        Response<'_>,
        Response::ScanPage {
            next_cursor: 0,
            keys,
        },
        "09 00 06 03 6b 31 03 6b 32"
    );
    golden!(
        g,
        Response<'_>,
        Response::Error(ErrorReply {
            code: ErrorCode::NoLeader,
            detail: "election",
        }),
        "0a 0a 08 65 6c 65 63 74 69 6f 6e"
    );
    golden!(
        g,
        Response<'_>,
        Response::Error(ErrorReply {
            code: ErrorCode::Malformed,
            detail: "",
        }),
        "0a 00 00"
    );
    golden!(
        g,
        Response<'_>,
        Response::Saved(SaveReport {
            applied_index: 300,
            snapshot_bytes: 5,
        }),
        "0b ac 02 05"
    );
    let mut scratch = [0u8; STATUS_SCRATCH_BYTES];
    golden!(
        g,
        Response<'_>,
        Response::ClusterStatus(cluster_status(&mut scratch)),
        "0c 01 03 04 01 01 c8 01 c8 01 c8 01 14 0a 02 00 00 01 c8 01 01 00 00 0a 03 04 01 01 00 01 c8 01 01"
    );
    // The member list reads back.
    let status = cluster_status(&mut scratch);
    let members: Vec<MemberState> = status.members().map(Result::unwrap).collect();
    assert_eq!(members.len(), 2);
    assert_eq!(members[1].lag, Some(200));
    golden!(
        g,
        Response<'_>,
        Response::MembershipChanged {
            log_index: LogIndex(300),
            members: &[0],
        },
        "0d ac 02 01 00"
    );
    golden!(g, Response<'_>, Response::Authenticated, "0e");
    golden!(
        g,
        Response<'_>,
        Response::Info("role:leader"),
        "0f 0b 72 6f 6c 65 3a 6c 65 61 64 65 72"
    );
    g.finish();
}

#[test]
fn golden_envelopes() {
    let mut g = Golden::default();
    golden!(
        g,
        ClientMessage<'_>,
        ClientMessage {
            request_id: 1,
            request: Request::Ping,
        },
        "01 01"
    );
    golden!(
        g,
        ClientMessage<'_>,
        ClientMessage {
            request_id: 200,
            request: Request::Get {
                key: b"k",
                read: ReadConsistency::Linearizable,
            },
        },
        "c8 01 02 01 6b 00"
    );
    golden!(
        g,
        ServerMessage<'_>,
        ServerMessage {
            request_id: 200,
            response: Response::Count(1),
        },
        "c8 01 07 01"
    );
    golden!(
        g,
        ServerMessage<'_>,
        ServerMessage {
            request_id: 0,
            response: Response::Error(ErrorReply {
                code: ErrorCode::FrameTooLarge,
                detail: "",
            }),
        },
        "00 0a 01 00"
    );
    g.finish();
}

#[test]
fn the_magic_reads_memd() {
    assert_eq!(&MAGIC.to_be_bytes(), b"MEMD");
    assert_eq!(PROTOCOL_VERSION, 1);
}

#[test]
fn golden_frame() {
    let mut out = [0u8; 16];
    let message = ClientMessage {
        request_id: 1,
        request: Request::Ping,
    };
    let frame_len = encode_frame(&message, &mut out).unwrap();
    // 4-byte little-endian payload length, then the payload.
    assert_eq!(to_hex(&out[..frame_len]), "02 00 00 00 01 01");
}
