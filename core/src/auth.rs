//! Client authentication (`--requirepass`): the gate a connection passes before the node
//! serves it, shared by every shell so a board and a server refuse the same things.
//!
//! The rules, modelled on Redis (and its fix for CVE-2021-32675):
//! - before the right password, a connection is served only its `Hello` and `Auth`; any
//!   other request is answered `AuthRequired` and goes no further;
//! - before the right password, frames are capped at [`UNAUTHENTICATED_MAX_FRAME_BYTES`], so
//!   a stranger cannot make the node buffer a large frame;
//! - passwords are compared by [`secrets_equal`], whose time does not depend on where the
//!   bytes differ.

use crate::wire::{decode, ClientMessage, Request};

/// The largest frame payload (and, on the RESP port, bulk string) a connection may send
/// before it has given the password. `Auth` with any sensible password fits; anything larger
/// is refused before it is buffered.
pub const UNAUTHENTICATED_MAX_FRAME_BYTES: u32 = 4096;

/// Whether `given` equals `secret`, in time that depends only on their lengths.
///
/// Every byte of the longer input is looked at whatever the contents, and the differences
/// are folded together with no early exit, so timing tells an attacker nothing about how
/// many leading bytes they guessed right.
pub fn secrets_equal(given: &[u8], secret: &[u8]) -> bool {
    let longest = given.len().max(secret.len());
    // Lengths that differ already make the inputs unequal; fold that in too.
    let mut difference = u8::from(given.len() != secret.len());
    for i in 0..longest {
        let a = given.get(i).copied().unwrap_or(0);
        let b = secret.get(i).copied().unwrap_or(0);
        difference |= a ^ b;
    }
    // Read the result through `black_box` so the compiler cannot turn the loop into an
    // early-exit comparison.
    core::hint::black_box(difference) == 0
}

/// What to do with one frame from a connection that has not yet given the password.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// An `Auth` with the right password: answer `Authenticated` and serve everything from
    /// now on (the frame limit may grow).
    Accepted {
        /// The request's id, for the answer.
        request_id: u32,
    },
    /// An `Auth` with another password: answer `WrongPassword`.
    WrongPassword {
        /// The request's id, for the answer.
        request_id: u32,
    },
    /// Any other request (or an undecodable frame): answer `AuthRequired`.
    Refused {
        /// The request's id (0 if the frame could not be decoded).
        request_id: u32,
    },
}

/// Decides what an unauthenticated connection's frame `payload` gets, given the node's
/// `password`.
pub fn gate(password: &[u8], payload: &[u8]) -> Gate {
    match decode::<ClientMessage<'_>>(payload) {
        Ok(ClientMessage {
            request_id,
            request: Request::Auth { password: given },
        }) => {
            if secrets_equal(given, password) {
                Gate::Accepted { request_id }
            } else {
                Gate::WrongPassword { request_id }
            }
        }
        Ok(message) => Gate::Refused {
            request_id: message.request_id,
        },
        Err(_) => Gate::Refused { request_id: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode;

    fn payload<'b>(request: Request<'_>, out: &'b mut [u8]) -> &'b [u8] {
        let message = ClientMessage {
            request_id: 9,
            request,
        };
        encode(&message, out).unwrap()
    }

    #[test]
    fn secrets_are_equal_only_when_every_byte_and_the_length_match() {
        assert!(secrets_equal(b"hunter2", b"hunter2"));
        assert!(secrets_equal(b"", b""));
        assert!(!secrets_equal(b"hunter3", b"hunter2"));
        assert!(!secrets_equal(b"hunter", b"hunter2"));
        assert!(!secrets_equal(b"hunter2\0", b"hunter2"));
        assert!(!secrets_equal(b"", b"x"));
        assert!(!secrets_equal(b"Hunter2", b"hunter2"));
    }

    #[test]
    fn only_the_right_auth_opens_the_gate() {
        let mut out = [0u8; 64];
        let right = payload(Request::Auth { password: b"pw" }, &mut out);
        assert_eq!(gate(b"pw", right), Gate::Accepted { request_id: 9 });
        let mut out = [0u8; 64];
        let wrong = payload(Request::Auth { password: b"pX" }, &mut out);
        assert_eq!(gate(b"pw", wrong), Gate::WrongPassword { request_id: 9 });
        let mut out = [0u8; 64];
        let ping = payload(Request::Ping, &mut out);
        assert_eq!(gate(b"pw", ping), Gate::Refused { request_id: 9 });
        assert_eq!(gate(b"pw", &[0xff, 0xff]), Gate::Refused { request_id: 0 });
    }
}
