//! `--requirepass` on the native client port: what a connection's reader does with each
//! frame after the handshake, and the frame buffer that grows once the password is given.
//!
//! The reader applies the core's gate (`memdi_core::auth`) itself, in frame order, so it
//! knows at once when to widen its buffer; the answers still go through the node task
//! (`Input::ClientReply`) so that they reach the client in order with the node's own.

use memdi_core::auth::{self, Gate};
use memdi_core::wire::{
    decode, ClientMessage, ErrorCode, FrameDecoder, Request, FRAME_HEADER_BYTES,
};

use super::frames::{authenticated_frame, error_frame};
use crate::config::Password;

/// A decoder whose buffer takes frames of at most `max_frame_bytes`.
pub fn frame_decoder(max_frame_bytes: u32) -> FrameDecoder<Vec<u8>> {
    let buffer = vec![0; max_frame_bytes as usize + FRAME_HEADER_BYTES];
    FrameDecoder::new(buffer).expect("frame buffer above the header size")
}

/// What the password gate does with one frame after the handshake.
pub enum Screened {
    /// The node serves it.
    Pass,
    /// The connection answers it with `frame`; `opens` when it carried the right password.
    Answer { frame: Vec<u8>, opens: bool },
}

/// Before the password: everything is answered here (`memdi_core::auth::gate`). After it:
/// only `Auth` is, since the node itself has no password to check it against.
pub fn screen(password: &Password, authenticated: bool, payload: &[u8]) -> Screened {
    let verdict = if authenticated {
        match decode::<ClientMessage<'_>>(payload) {
            Ok(ClientMessage {
                request: Request::Auth { .. },
                ..
            }) => auth::gate(password.expose(), payload),
            _ => return Screened::Pass,
        }
    } else {
        auth::gate(password.expose(), payload)
    };
    match verdict {
        Gate::Accepted { request_id } => Screened::Answer {
            frame: authenticated_frame(request_id),
            opens: true,
        },
        Gate::WrongPassword { request_id } => Screened::Answer {
            frame: error_frame(request_id, ErrorCode::WrongPassword, "invalid password"),
            opens: false,
        },
        Gate::Refused { request_id } => Screened::Answer {
            frame: error_frame(
                request_id,
                ErrorCode::AuthRequired,
                "authentication required: send Auth with the node's password first",
            ),
            opens: false,
        },
    }
}

/// A decoder with room for `max_frame_bytes` holding what `small` had received but not yet
/// returned: the bytes after an accepted `Auth` are read again under the full limit.
///
/// The only bytes it may not take are those after a header above even the full limit; the
/// new decoder refuses that header, and the connection closes as for any oversized frame.
pub fn widened(small: &FrameDecoder<Vec<u8>>, max_frame_bytes: u32) -> FrameDecoder<Vec<u8>> {
    let mut full = frame_decoder(max_frame_bytes);
    full.feed(small.pending());
    full
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdi_core::wire::{encode_frame, FrameError};

    fn frame(request: Request<'_>) -> Vec<u8> {
        let mut out = vec![0; 64];
        let len = encode_frame(
            &ClientMessage {
                request_id: 5,
                request,
            },
            &mut out,
        )
        .unwrap();
        out.truncate(len);
        out
    }

    #[test]
    fn widening_keeps_the_bytes_after_the_auth() {
        let mut small = frame_decoder(64);
        let mut bytes = frame(Request::Auth { password: b"pw" });
        let ping = frame(Request::Ping);
        bytes.extend_from_slice(&ping);
        bytes.extend_from_slice(&1000u32.to_le_bytes()); // announces more than 64 bytes
        assert_eq!(small.feed(&bytes), bytes.len());
        let auth = small.next_frame().unwrap().unwrap().to_vec();
        assert!(matches!(
            screen(&Password::new("pw"), false, &auth),
            Screened::Answer { opens: true, .. }
        ));
        let mut full = widened(&small, 4096);
        assert_eq!(
            full.next_frame().unwrap().unwrap(),
            &ping[FRAME_HEADER_BYTES..]
        );
        assert_eq!(
            full.next_frame().unwrap(),
            None,
            "the 1000-byte frame now fits"
        );
        let mut tiny = widened(&small, 512);
        tiny.next_frame().unwrap();
        assert!(matches!(
            tiny.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn after_the_password_only_auth_is_answered_here() {
        let password = Password::new("pw");
        let ping = frame(Request::Ping);
        let ping = &ping[FRAME_HEADER_BYTES..];
        assert!(matches!(screen(&password, true, ping), Screened::Pass));
        assert!(matches!(
            screen(&password, false, ping),
            Screened::Answer { opens: false, .. }
        ));
        let wrong = frame(Request::Auth { password: b"nope" });
        assert!(matches!(
            screen(&password, true, &wrong[FRAME_HEADER_BYTES..]),
            Screened::Answer { opens: false, .. }
        ));
    }
}
