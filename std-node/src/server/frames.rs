//! Frames the shell writes itself: error replies to connections the core never sees (too
//! many clients, an oversized frame), the password gate's answers, the answer to `Save` (the shell owns the files) and
//! the handshake a node sends its peers.

use memdi_core::wire::{
    encode_frame, encode_peer_hello, ClusterId, ErrorCode, ErrorReply, NodeId, Response,
    SaveReport, ServerMessage, FRAME_HEADER_BYTES,
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

/// The answer to an `Auth` with the right password.
pub fn authenticated_frame(request_id: u32) -> Vec<u8> {
    let message = ServerMessage {
        request_id,
        response: Response::Authenticated,
    };
    let mut out = vec![0; FRAME_HEADER_BYTES + 16];
    let len = encode_frame(&message, &mut out).expect("an Authenticated frame fits 16 bytes");
    out.truncate(len);
    out
}

/// The answer to `Info`.
pub fn info_frame(request_id: u32, text: &str) -> Vec<u8> {
    let message = ServerMessage {
        request_id,
        response: Response::Info(text),
    };
    let mut out = vec![0; FRAME_HEADER_BYTES + 16 + text.len()];
    let len = encode_frame(&message, &mut out).expect("an Info frame fits its buffer");
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
    let mut out = vec![0; 128];
    let len = encode_peer_hello(cluster_id, me, max_frame_bytes, &mut out)
        .expect("a hello fits 128 bytes");
    out.truncate(len);
    out
}

/// The whole frames (headers included) in `bytes`, which holds whole frames back to back;
/// stops at a torn one.
pub fn split_frames(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let header: [u8; FRAME_HEADER_BYTES] = bytes.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
        let len = FRAME_HEADER_BYTES + u32::from_le_bytes(header) as usize;
        let frame = bytes.get(..len)?;
        bytes = &bytes[len..];
        Some(frame)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frames_gives_each_whole_frame_in_order() {
        let mut bytes = error_frame(1, ErrorCode::Busy, "one");
        let second = error_frame(2, ErrorCode::Busy, "second");
        bytes.extend_from_slice(&second);
        bytes.extend_from_slice(&[9, 0, 0, 0, 1]); // torn
        let frames: Vec<&[u8]> = split_frames(&bytes).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], &error_frame(1, ErrorCode::Busy, "one")[..]);
        assert_eq!(frames[1], &second[..]);
        assert_eq!(split_frames(&[]).count(), 0);
    }
}
