//! Golden bytes for every peer message and every log-entry command.
//!
//! These bytes ARE the protocol between nodes: two nodes built from different commits must
//! agree on them, and `Command` bytes also live in the log and in snapshots on disk. If one of
//! these assertions fails, the encoding changed. That is only allowed with a bump of
//! `PROTOCOL_VERSION` (and then these literals are updated in the same change), or, for a new
//! variant appended at the end of an enum, by adding a new line here without touching the
//! existing ones. Never "fix" a failing literal by pasting the new bytes without that bump.
//!
//! How to read the literals (postcard): integers are LEB128 varints (300 = `ac 02`), an enum
//! starts with its variant index as a varint, a byte string (and so a `Packed` list) is its
//! varint length then its bytes, an `Option` is a `00`/`01` tag, a `bool` is `00`/`01`, and
//! newtypes like `Term` are their inner integer.

use std::vec::Vec;

use memdi_core::cluster::Command;
use memdi_core::wire::{
    decode, encode, encode_frame, AppendOutcome, ClientMessage, DecodeError, LogIndex, LogPosition,
    Packed, PackedWriter, PeerMessage, Request, Response, Term,
};

mod golden_support;

use golden_support::{from_hex, to_hex, Golden};

/// Like `check`, through the log's own API: `Command::encoded_len`, `Command::encode`
/// and `Command::decode`.
fn check_command(golden: &mut Golden, command: &Command<'_>, expected_hex: &str, expected: &[u8]) {
    let len = command.encoded_len();
    if len != expected.len() {
        golden.fail(format!(
            "{command:?}\n    expected length {}, encoded_len says {len}",
            expected.len()
        ));
        return;
    }
    let mut out = vec![0u8; len];
    command.encode(&mut out);
    let actual_hex = to_hex(&out);
    if actual_hex != expected_hex {
        golden.fail(format!(
            "{command:?}\n    expected: {expected_hex}\n    actual:   {actual_hex}"
        ));
        return;
    }
    match Command::decode(expected) {
        Ok(decoded) if decoded == *command => {}
        other => golden.fail(format!(
            "{command:?} decoded from golden bytes as {other:?}"
        )),
    }
}

/// `golden!(g, Type, value, "hex")` checks one value against its frozen bytes.
macro_rules! golden {
    ($golden:expr, $ty:ty, $value:expr, $hex:expr) => {{
        let value: $ty = $value;
        let bytes = from_hex($hex);
        $golden.check(&value, $hex, &bytes);
    }};
}

/// `golden_command!(g, value, "hex")` checks one command against its frozen bytes.
macro_rules! golden_command {
    ($golden:expr, $value:expr, $hex:expr) => {{
        let value: Command<'_> = $value;
        let bytes = from_hex($hex);
        check_command(&mut $golden, &value, $hex, &bytes);
    }};
}

/// Bytes of a log entry's term at the front of each `Append` item.
const ENTRY_TERM_BYTES: usize = 8;

/// A `Packed` list of log entries as the leader builds it: each item is the entry's term
/// (8 bytes, little-endian) followed by the encoded command.
fn entries<'b>(buffer: &'b mut [u8], items: &[(u64, Command<'_>)]) -> Packed<'b> {
    let mut writer = PackedWriter::new(buffer);
    for (term, command) in items {
        writer
            .push_with(ENTRY_TERM_BYTES + command.encoded_len(), |item| {
                item[..ENTRY_TERM_BYTES].copy_from_slice(&term.to_le_bytes());
                command.encode(&mut item[ENTRY_TERM_BYTES..]);
            })
            .expect("golden entries fit");
    }
    writer.finish()
}

fn position(term: u64, index: u64) -> LogPosition {
    LogPosition {
        term: Term(term),
        index: LogIndex(index),
    }
}

/// 1_700_000_000_000 = `80 d0 95 ff bc 31` (the same instant as in wire_golden.rs).
const CLUSTER_TIME_MS: u64 = 1_700_000_000_000;

fn heartbeat() -> PeerMessage<'static> {
    PeerMessage::Append {
        term: Term(7),
        prev: position(6, 1000),
        commit: LogIndex(999),
        round: 42,
        cluster_time_ms: CLUSTER_TIME_MS,
        entries: Packed::default(),
    }
}

#[test]
fn golden_elections() {
    let mut g = Golden::default();
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::PreVote {
            term: Term(9),
            last_log: position(8, 300),
        },
        "00 09 08 ac 02"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::PreVoteReply {
            term: Term(9),
            granted: true,
        },
        "01 09 01"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::PreVoteReply {
            term: Term(9),
            granted: false,
        },
        "01 09 00"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Vote {
            term: Term(200),
            last_log: position(150, 70_000),
        },
        "02 c8 01 96 01 f0 a2 04"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::VoteReply {
            term: Term(200),
            granted: true,
        },
        "03 c8 01 01"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::VoteReply {
            term: Term(200),
            granted: false,
        },
        "03 c8 01 00"
    );
    g.finish();
}

#[test]
fn golden_replication() {
    let mut g = Golden::default();
    // A heartbeat: no entries, so `entries` is the empty byte string `00`.
    golden!(
        g,
        PeerMessage<'_>,
        heartbeat(),
        "04 07 06 e8 07 e7 07 2a 80 d0 95 ff bc 31 00"
    );
    // Two entries of term 7: a Noop (item of 8 + 1 bytes, tag 0a) and a Put of "k" = "v"
    // without expiry (item of 8 + 6 bytes, tag 0f); 1 + 9 + 1 + 14 = 25 = 0x19 bytes in all.
    let mut entries_buffer = [0u8; 64];
    let two_entries = entries(
        &mut entries_buffer,
        &[
            (7, Command::Noop),
            (
                7,
                Command::Put {
                    key: b"k",
                    value: b"v",
                    expires_at_ms: None,
                },
            ),
        ],
    );
    assert_eq!(two_entries.len(), 2);
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Append {
            term: Term(7),
            prev: position(6, 1000),
            commit: LogIndex(1000),
            round: 43,
            cluster_time_ms: CLUSTER_TIME_MS,
            entries: two_entries,
        },
        "04 07 06 e8 07 e8 07 2b 80 d0 95 ff bc 31 19 \
         0a 07 00 00 00 00 00 00 00 00 \
         0f 07 00 00 00 00 00 00 00 01 01 6b 01 76 00"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::AppendReply {
            term: Term(7),
            round: 42,
            outcome: AppendOutcome::Accepted {
                match_index: LogIndex(1000),
            },
        },
        "05 07 2a 00 e8 07"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::AppendReply {
            term: Term(7),
            round: 42,
            outcome: AppendOutcome::Rejected {
                next_hint: LogIndex(500),
                last_index: LogIndex(1200),
            },
        },
        "05 07 2a 01 f4 03 b0 09"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::AppendReply {
            term: Term(7),
            round: 42,
            outcome: AppendOutcome::NeedsSnapshot {
                match_index: LogIndex(0),
                last_index: LogIndex(1200),
            },
        },
        "05 07 2a 02 00 b0 09"
    );
    g.finish();
}

#[test]
fn golden_append_entries_decode_to_their_commands() {
    let bytes = from_hex(
        "04 07 06 e8 07 e8 07 2b 80 d0 95 ff bc 31 19 \
         0a 07 00 00 00 00 00 00 00 00 \
         0f 07 00 00 00 00 00 00 00 01 01 6b 01 76 00",
    );
    let Ok(PeerMessage::Append { entries, .. }) = decode::<PeerMessage<'_>>(&bytes) else {
        panic!("golden Append decodes");
    };
    let decoded: Vec<(u64, Command<'_>)> = entries
        .iter()
        .map(|item| {
            let item = item.expect("log entries are never None");
            let (term, command) = item.split_at(ENTRY_TERM_BYTES);
            let term = u64::from_le_bytes(term.try_into().unwrap());
            (
                term,
                Command::decode(command).expect("entry holds a command"),
            )
        })
        .collect();
    assert_eq!(
        decoded,
        [
            (7, Command::Noop),
            (
                7,
                Command::Put {
                    key: b"k",
                    value: b"v",
                    expires_at_ms: None,
                }
            ),
        ]
    );
}

#[test]
fn golden_forwarding() {
    let mut g = Golden::default();
    // The forwarded request is an encoded `ClientMessage { request_id: 1, request: Ping }`,
    // the reply an encoded `Response::Count(3)`; the peer message carries them as opaque bytes.
    let request = from_hex("01 01");
    assert_eq!(
        decode::<ClientMessage<'_>>(&request),
        Ok(ClientMessage {
            request_id: 1,
            request: Request::Ping,
        })
    );
    let response = from_hex("07 03");
    assert_eq!(decode::<Response<'_>>(&response), Ok(Response::Count(3)));
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Forward {
            forward_id: 77,
            request: &request,
        },
        "06 4d 02 01 01"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Forward {
            forward_id: 0,
            request: b"",
        },
        "06 00 00"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::ForwardReply {
            forward_id: 77,
            response: &response,
        },
        "07 4d 02 07 03"
    );
    g.finish();
}

#[test]
fn golden_snapshot_transfer() {
    let mut g = Golden::default();
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Snapshot {
            term: Term(7),
            base: position(6, 1000),
            snapshot_id: 3,
            offset: 65_536,
            done: true,
            members: &[1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'h'],
            data: b"snap",
        },
        "08 07 06 e8 07 03 80 80 04 01 0c 01 02 00 00 00 00 00 00 00 01 01 68 04 73 6e 61 70"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::Snapshot {
            term: Term(7),
            base: position(0, 0),
            snapshot_id: 1,
            offset: 0,
            done: false,
            members: &[0],
            data: b"",
        },
        "08 07 00 00 01 00 00 01 00 00"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::SnapshotReply {
            term: Term(7),
            snapshot_id: 3,
            next_offset: 65_540,
            failed: false,
        },
        "09 07 03 84 80 04 00"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::SnapshotReply {
            term: Term(7),
            snapshot_id: 3,
            next_offset: 0,
            failed: true,
        },
        "09 07 03 00 01"
    );
    g.finish();
}

/// Appended after `SnapshotReply` (indexes 10 and 11): recovery after a restart without
/// state (docs/protocol.md 4.10). New lines, no existing literal touched.
#[test]
fn golden_recovery() {
    let mut g = Golden::default();
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::RecoveryQuery { nonce: 300 },
        "0a ac 02"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::RecoveryQuery { nonce: u64::MAX },
        "0a ff ff ff ff ff ff ff ff ff 01"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::RecoveryReply {
            nonce: 300,
            term: Term(7),
            last_log: position(6, 1000),
            members: &[1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'h'],
        },
        "0b ac 02 07 06 e8 07 0c 01 02 00 00 00 00 00 00 00 01 01 68"
    );
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::RecoveryReply {
            nonce: 0,
            term: Term(0),
            last_log: position(0, 0),
            members: &[0],
        },
        "0b 00 00 00 00 01 00"
    );
    g.finish();
}

/// Appended after `RecoveryReply` (index 12): a node that cannot lead hands its log to a
/// candidate (docs/protocol.md 4.1). A new line, no existing literal touched.
#[test]
fn golden_log_offer() {
    let mut g = Golden::default();
    // One entry of term 7: a Noop (item of 8 + 1 bytes, tag 0a, as in `Append`); 10 bytes.
    let mut entries_buffer = [0u8; 32];
    let one_entry = entries(&mut entries_buffer, &[(7, Command::Noop)]);
    golden!(
        g,
        PeerMessage<'_>,
        PeerMessage::LogOffer {
            prev: position(6, 1000),
            entries: one_entry,
        },
        "0c 06 e8 07 0a 0a 07 00 00 00 00 00 00 00 00"
    );
    g.finish();
}

#[test]
fn golden_commands() {
    let mut g = Golden::default();
    golden_command!(g, Command::Noop, "00");
    golden_command!(
        g,
        Command::Put {
            key: b"key",
            value: b"value",
            expires_at_ms: None,
        },
        "01 03 6b 65 79 05 76 61 6c 75 65 00"
    );
    golden_command!(
        g,
        Command::Put {
            key: b"key",
            value: b"value",
            expires_at_ms: Some(CLUSTER_TIME_MS),
        },
        "01 03 6b 65 79 05 76 61 6c 75 65 01 80 d0 95 ff bc 31"
    );
    golden_command!(
        g,
        Command::Put {
            key: b"",
            value: b"",
            expires_at_ms: Some(0),
        },
        "01 00 00 01 00"
    );
    golden_command!(g, Command::Delete { key: b"key" }, "02 03 6b 65 79");
    golden_command!(g, Command::Clear, "03");
    golden_command!(
        g,
        Command::Members {
            members: &[1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        },
        "04 0b 01 03 00 00 00 00 00 00 00 00 00"
    );
    // MSET a=1: the pairs travel as one packed byte string (tag = length + 1).
    let pairs = memdi_core::wire::Packed::from_encoded(&[2, b'a', 2, b'1']).unwrap();
    golden_command!(g, Command::PutMany { pairs }, "05 04 02 61 02 31");
    g.finish();
}

#[test]
fn commands_encode_as_plain_postcard() {
    // The log's `Command::encode` and the wire's `encode` are the same encoding.
    let command = Command::Put {
        key: b"key",
        value: b"value",
        expires_at_ms: Some(CLUSTER_TIME_MS),
    };
    let mut out = [0u8; 64];
    let via_wire = encode(&command, &mut out).unwrap();
    let mut via_log = vec![0u8; command.encoded_len()];
    command.encode(&mut via_log);
    assert_eq!(via_wire, &via_log[..]);
}

#[test]
fn unknown_variants_are_rejected() {
    // The first unused variant index of each enum is not a message: a peer of a newer version
    // gets an error, not a misread message. `Malformed` (unknown variant), not `Truncated`:
    // when a variant is appended, this test fails until the index here is moved past it.
    assert_eq!(
        decode::<PeerMessage<'_>>(&from_hex("0d")),
        Err(DecodeError::Malformed)
    );
    assert_eq!(
        decode::<PeerMessage<'_>>(&from_hex("05 07 2a 03")),
        Err(DecodeError::Malformed)
    );
    assert_eq!(
        decode::<Command<'_>>(&from_hex("06")),
        Err(DecodeError::Malformed)
    );
    assert!(Command::decode(&from_hex("06")).is_err());
    // Bytes after a whole command are refused too.
    assert!(Command::decode(&from_hex("00 00")).is_err());
}

#[test]
fn golden_peer_frame() {
    let mut out = [0u8; 64];
    let frame_len = encode_frame(&heartbeat(), &mut out).unwrap();
    // 4-byte little-endian payload length (15 = 0x0f), then the payload.
    assert_eq!(
        to_hex(&out[..frame_len]),
        "0f 00 00 00 04 07 06 e8 07 e7 07 2a 80 d0 95 ff bc 31 00"
    );
    let payload_len = u32::from_le_bytes(out[..4].try_into().unwrap());
    assert_eq!(payload_len as usize, frame_len - 4);
    assert_eq!(
        decode::<PeerMessage<'_>>(&out[4..frame_len]),
        Ok(heartbeat())
    );
}

/// A command has one byte form: an overlong varint (here the key length 0 written as
/// `80 00`) is refused, so replicas' logs and snapshots cannot hold different bytes for the
/// same change (found by the `peer_messages` fuzz target).
#[test]
fn command_decode_refuses_non_canonical_bytes() {
    use memdi_core::cluster::Command;
    assert!(
        Command::decode(&[0x02, 0x00]).is_ok(),
        "Delete of the empty key"
    );
    assert!(
        Command::decode(&[0x02, 0x80, 0x00]).is_err(),
        "overlong key length"
    );
    assert!(
        Command::decode(&[0x80, 0x00]).is_err(),
        "overlong variant index"
    );
}
