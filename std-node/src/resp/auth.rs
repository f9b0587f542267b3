//! `--requirepass` on the RESP port: which commands a connection may send before it has
//! authenticated, how AUTH and HELLO's AUTH option are checked, and the limits and error
//! texts a stranger gets. The texts are Redis 7's, word for word, because client libraries
//! (redis-py's `AuthenticationError`, for one) match on them.

use memdi_core::auth::{secrets_equal, UNAUTHENTICATED_MAX_FRAME_BYTES};

use super::parse::{ParseError, ParseLimits};
use crate::secret::Password;

/// Any command but AUTH, HELLO and QUIT before the password.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// A wrong password (or a user other than `default`).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// `AUTH <password>` on a node with no password.
pub const NO_PASSWORD_SET: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
/// HELLO without its AUTH option before the password.
pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

/// The only user there is: Redis's `default`, which `--requirepass` protects.
const DEFAULT_USER: &[u8] = b"default";
/// Most arguments in one request before the password (Redis allows 10; HELLO with AUTH
/// and SETNAME needs 7).
const UNAUTHENTICATED_MAX_ARGS: usize = 10;

/// Whether a connection may run `name` before it has authenticated.
pub fn allowed_before_auth(name: &[u8]) -> bool {
    [&b"auth"[..], b"hello", b"quit"]
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

/// Checks `AUTH [user] password` (`user` is `None` for the one-argument form) against the
/// node's `password`: `Ok` opens the connection, `Err` is the error text to answer.
///
/// With no password set, Redis's `default` user takes any password in the two-argument
/// form, and the one-argument form is an error.
pub fn check(
    password: Option<&Password>,
    user: Option<&[u8]>,
    given: &[u8],
) -> Result<(), &'static str> {
    let default_user = user.is_none_or(|user| user == DEFAULT_USER);
    match password {
        None if user.is_none() => Err(NO_PASSWORD_SET),
        None if default_user => Ok(()),
        Some(password) if default_user && secrets_equal(given, password.expose()) => Ok(()),
        _ => Err(WRONGPASS),
    }
}

/// The parse limits before the password: requests too small to make the node buffer much
/// (Redis's fix for CVE-2021-32675).
pub fn unauthenticated_limits(limits: &ParseLimits) -> ParseLimits {
    let small = UNAUTHENTICATED_MAX_FRAME_BYTES as usize;
    ParseLimits {
        max_bulk_bytes: limits.max_bulk_bytes.min(small),
        max_args: limits.max_args.min(UNAUTHENTICATED_MAX_ARGS),
        max_inline_bytes: limits.max_inline_bytes.min(small),
        max_request_bytes: limits
            .max_request_bytes
            .min(small * UNAUTHENTICATED_MAX_ARGS),
    }
}

/// The protocol error a connection is answered before it closes, in Redis's words for a
/// stranger's oversized lengths.
pub fn protocol_error_text(error: &ParseError, authenticated: bool) -> String {
    match (authenticated, error) {
        (false, ParseError::BulkLength) => "ERR Protocol error: unauthenticated bulk length".into(),
        (false, ParseError::MultibulkLength) => {
            "ERR Protocol error: unauthenticated multibulk length".into()
        }
        _ => format!("ERR {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_is_checked_as_redis_checks_it() {
        let pw = Password::new("s3cret");
        let pw = Some(&pw);
        assert_eq!(check(pw, None, b"s3cret"), Ok(()));
        assert_eq!(check(pw, Some(b"default"), b"s3cret"), Ok(()));
        assert_eq!(check(pw, Some(b"admin"), b"s3cret"), Err(WRONGPASS));
        assert_eq!(check(pw, None, b"s3cre"), Err(WRONGPASS));
        assert_eq!(check(pw, Some(b"default"), b""), Err(WRONGPASS));
        assert_eq!(check(None, None, b"x"), Err(NO_PASSWORD_SET));
        assert_eq!(check(None, Some(b"default"), b"x"), Ok(()));
        assert_eq!(check(None, Some(b"admin"), b"x"), Err(WRONGPASS));
    }

    #[test]
    fn only_auth_hello_and_quit_come_before_the_password() {
        for name in [&b"AUTH"[..], b"auth", b"Hello", b"QUIT"] {
            assert!(allowed_before_auth(name));
        }
        for name in [&b"PING"[..], b"get", b"SET", b"authx", b"INFO"] {
            assert!(!allowed_before_auth(name));
        }
    }

    #[test]
    fn strangers_get_small_limits_and_redis_words() {
        let limits = ParseLimits {
            max_bulk_bytes: 1 << 20,
            max_args: 1 << 20,
            max_inline_bytes: 64 * 1024,
            max_request_bytes: 1 << 22,
        };
        let small = unauthenticated_limits(&limits);
        assert_eq!(small.max_bulk_bytes, 4096);
        assert_eq!(small.max_args, 10);
        assert_eq!(small.max_inline_bytes, 4096);
        assert!(small.max_request_bytes <= 64 * 1024);
        assert_eq!(
            protocol_error_text(&ParseError::BulkLength, false),
            "ERR Protocol error: unauthenticated bulk length"
        );
        assert_eq!(
            protocol_error_text(&ParseError::BulkLength, true),
            "ERR Protocol error: invalid bulk length"
        );
    }
}
