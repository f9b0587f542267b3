//! Frames the shell writes itself: error replies to connections the core never sees (too
//! many clients, an oversized frame), the answer to `Save` (the shell owns the files) and
//! the handshake a node sends its peers.

use memdi_core::wire::{
    encode_frame, ClientMessage, ClusterId, ErrorCode, ErrorReply, Hello, NodeId, Request,
    Response, SaveReport, Sender, ServerMessage, FRAME_HEADER_BYTES,
};

/// The answer to a `Save` request: the snapshot is renamed and fsynced.
pub fn saved_frame(request_id: u32, report: SaveReport) -> Vec<u8> {
    let message = ServerMessage {
        request_id,
        response: Response::Saved(report),
    };
    let mut out = vec![0; FRAME_HEADER_BYTES + 64];
    let len = encode_frame(&message, &mut out).expect("a Saved frame fits 64 bytes");
    out.truncate(len);
    out
}

/// An error reply frame for request `request_id` (0 when the request was never read).
pub fn error_frame(request_id: u32, code: ErrorCode, detail: &str) -> Vec<u8> {
    let message = ServerMessage {
        request_id,
        response: Response::Error(ErrorReply { code, detail }),
    };
    let mut out = vec![0; FRAME_HEADER_BYTES + 64 + detail.len()];
    let len = encode_frame(&message, &mut out).expect("an error frame fits its buffer");
    out.truncate(len);
    out
}

/// The handshake a node sends on each connection it opens to a peer.
pub fn peer_hello_frame(cluster_id: ClusterId, me: NodeId, max_frame_bytes: u32) -> Vec<u8> {
    let message = ClientMessage {
        request_id: 0,
        request: Request::Hello(Hello::new(cluster_id, Sender::Peer(me), max_frame_bytes)),
    };
    let mut out = vec![0; 128];
    let len = encode_frame(&message, &mut out).expect("a hello fits 128 bytes");
    out.truncate(len);
    out
}
