//! Every size the node uses, fixed at build time: a board must know its memory use before
//! it runs, and a full buffer is an error the protocol already handles (a dropped message
//! is retried, a full store refuses the write, a busy node refuses the connection).
//!
//! The defaults hold 256 keys of up to 32-byte keys and 64-byte values, in a cluster of up
//! to five nodes. With the RP2040 firmware's network buffers, the board's static RAM is
//! within 128 KiB of its 264 KiB (docs/benchmarks.md, "Board firmware size", has the
//! measured figures; `scripts/build-firmware.sh` fails the build above the budget).
//!
//! Most of the memory besides the store is buffers of one frame each (the decoder and the
//! answer of each connection, queued and held messages, the scratch), so the frame size is
//! the lever: 1 KiB frames hold any request on keys and values at these limits, and a
//! membership of nine members (667 bytes).

use memdi_core::store::StoreLimits;

/// Keys the store holds.
pub const MAX_KEYS: u32 = 256;
/// Longest key.
pub const MAX_KEY_BYTES: u32 = 32;
/// Longest value.
pub const MAX_VALUE_BYTES: u32 = 64;
/// The store's arena: every key at its longest, with an expiry (20 + 8 bytes of header).
pub const ARENA_BYTES: u64 = MAX_KEYS as u64 * record_bytes(MAX_KEY_BYTES, MAX_VALUE_BYTES);

/// The store's limits.
pub const STORE_LIMITS: StoreLimits = StoreLimits {
    max_keys: MAX_KEYS,
    max_key_bytes: MAX_KEY_BYTES,
    max_value_bytes: MAX_VALUE_BYTES,
    max_total_bytes: ARENA_BYTES,
};

/// Memory of the store: its index (8 bytes a slot, a fifth more slots than keys) and its
/// arena. Checked against `StoreLimits::memory_bytes` by a test.
pub const STORE_BYTES: usize =
    (MAX_KEYS as usize + MAX_KEYS as usize / 4 + 1) * 8 + (ARENA_BYTES as usize & !3);

/// Entries the log holds (applied entries are dropped from the front as it fills; a
/// follower that falls further behind is sent a snapshot).
pub const LOG_ENTRIES: u32 = 128;
/// Entry bytes the log holds: about 80 writes of the longest key and value. It also bounds
/// what a leader holds uncommitted. (Half this, with 64 entries, made followers of a board
/// leader fall behind its log under pipelined writes and get snapshot after snapshot.)
pub const LOG_ENTRY_BYTES: u32 = 8 * 1024;
/// Memory of the log: 16 bytes of metadata an entry, and the entries.
pub const LOG_BYTES: usize = LOG_ENTRIES as usize * 16 + LOG_ENTRY_BYTES as usize;
/// The undo journal, which lets a deposed leader put its store back instead of waiting
/// for a snapshot (docs/protocol.md 4.7).
pub const UNDO_BYTES: usize = 2 * 1024;

/// Largest frame payload the node takes or sends, announced in its handshake: servers keep
/// what they send it within this. A log entry larger than this less the peer envelope
/// (896 bytes: an MSET of about eight keys at the longest) cannot reach the board, so
/// requests to the cluster's servers should stay within it too.
pub const MAX_FRAME_BYTES: usize = 1024;
/// A frame with its 4-byte length header.
pub const FRAME_BUFFER_BYTES: usize = MAX_FRAME_BYTES + memdi_core::wire::FRAME_HEADER_BYTES;

/// Bytes of the `Info` answer's text (built on the stack): its labels take about 190, and
/// each of its 8 numbers at most 20 digits; it fits a frame with room to spare.
pub const INFO_TEXT_BYTES: usize = 384;
const _: () = assert!(INFO_TEXT_BYTES + 64 < MAX_FRAME_BYTES);
/// Most entry bytes in one `Append` this node sends as leader.
pub const MAX_APPEND_BYTES: usize = MAX_FRAME_BYTES - memdi_core::wire::PEER_ENVELOPE_BYTES;
/// The buffer every `handle_*` and `poll_*` call writes into: a frame, and the same again
/// as scratch for packing entries (`Node::poll_peer_transmit`).
pub const SCRATCH_BYTES: usize = 2 * FRAME_BUFFER_BYTES;

/// Requests that may wait at once (for a quorum, a forwarded answer, a leader). The shell
/// keeps the answers of at most `CLIENT_CONNECTIONS + HELD_PEER_ANSWERS` of them (6), so
/// more tickets would only be answers it drops; each costs about 160 bytes in the node.
pub const TICKETS: usize = 16;
/// Client connections served at once on the client port.
pub const CLIENT_CONNECTIONS: usize = 2;
/// Connections served at once on the peer port: each other member's link to this node,
/// and a joining node's request.
pub const PEER_CONNECTIONS: usize = 4;
/// All accepted connections.
pub const CONNECTIONS: usize = CLIENT_CONNECTIONS + PEER_CONNECTIONS;
/// Other members this node dials: a cluster of up to `MAX_PEERS + 1` nodes.
pub const MAX_PEERS: usize = 4;
/// Bytes queued for one peer before its messages are dropped (as a lossy network would;
/// the protocol retries): two full frames. A leader's appends come faster than one frame
/// drains: with one, followers fell behind the log and were sent snapshot after snapshot
/// (the TAP host node as leader under pipelined writes: 2,200 writes/s instead of 6,000).
pub const PEER_QUEUE_BYTES: usize = 2 * FRAME_BUFFER_BYTES;
/// Answers held for requests other nodes forwarded here, while they wait for a quorum.
/// When all are taken, the answer is dropped and the forwarding node's client times out
/// (its outcome unknown, as after a lost message).
pub const HELD_PEER_ANSWERS: usize = 4;
/// The longest client password (`Settings::password`).
pub const MAX_PASSWORD_BYTES: usize = 64;
/// Each TCP socket's receive buffer.
pub const SOCKET_RX_BYTES: usize = 1024;
/// Each TCP socket's transmit buffer (also the size of the dialer's buffer between the
/// queue and the socket).
pub const SOCKET_TX_BYTES: usize = 1024;
/// Sockets the network stack must have room for.
pub const SOCKETS: usize = CONNECTIONS + MAX_PEERS;

/// `memdi_core::store::record_bytes` for the longest record, as a constant.
const fn record_bytes(key: u32, value: u32) -> u64 {
    let len = 20 + 8 + key as u64 + value as u64;
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constants_match_what_the_core_asks_for() {
        assert_eq!(STORE_LIMITS.memory_bytes().unwrap(), STORE_BYTES);
        let longest =
            memdi_core::store::record_bytes(MAX_KEY_BYTES as usize, MAX_VALUE_BYTES as usize, true);
        assert_eq!(longest, Some(record_bytes(MAX_KEY_BYTES, MAX_VALUE_BYTES)));
        let log = memdi_core::cluster::LogLimits {
            max_entries: LOG_ENTRIES,
            max_bytes: LOG_ENTRY_BYTES,
        };
        assert_eq!(log.memory_bytes(), LOG_BYTES);
    }
}
