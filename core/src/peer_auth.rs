//! Peer authentication with a cluster secret (`--cluster-secret`): both sides of a peer
//! connection prove they know the secret, without sending it, before the node hears a
//! single message from the other.
//!
//! The exchange, right after the dialer's `Hello` and before the acceptor's `HelloAck`:
//!
//! 1. acceptor → dialer: [`PeerAuth::Challenge`] with a fresh random nonce;
//! 2. dialer → acceptor: [`PeerAuth::Proof`]: HMAC-SHA256 under the secret of the challenge
//!    and of who is talking to whom ([`dialer_mac`]), and a nonce of its own;
//! 3. acceptor → dialer: [`PeerAuth::Confirm`]: the acceptor's HMAC of the dialer's nonce
//!    ([`acceptor_mac`]); then the usual `HelloAck`.
//!
//! Each MAC covers a label naming its direction, the cluster id and both node ids, so a
//! proof cannot be replayed in the other direction, to another node or in another cluster,
//! and a fresh nonce from the verifying side makes every proof single-use. MACs are
//! compared in constant time ([`crate::auth::secrets_equal`]). The secret never travels.
//! Only the shells' random nonces and the secret come from outside: the core holds no
//! state and does no I/O here, so a board uses the same code.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::wire::{ClusterId, NodeId};

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a MAC (HMAC-SHA256).
pub const MAC_BYTES: usize = 32;

/// The frames of the exchange (postcard, in the usual frame).
///
/// VARIANT ORDER IS FROZEN: peers of other versions speak it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerAuth {
    /// The acceptor's challenge.
    Challenge {
        /// Random, fresh for this connection.
        nonce: [u8; NONCE_BYTES],
    },
    /// The dialer's answer, and its own challenge.
    Proof {
        /// [`dialer_mac`] of the acceptor's nonce.
        mac: [u8; MAC_BYTES],
        /// Random, fresh for this connection.
        nonce: [u8; NONCE_BYTES],
    },
    /// The acceptor's answer to the dialer's challenge.
    Confirm {
        /// [`acceptor_mac`] of the dialer's nonce.
        mac: [u8; MAC_BYTES],
    },
}

/// Who is talking to whom: what every MAC covers besides the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The cluster both claim.
    pub cluster_id: ClusterId,
    /// The node that connected.
    pub dialer: NodeId,
    /// The node that accepted.
    pub acceptor: NodeId,
}

fn mac(secret: &[u8], label: &[u8], link: Link, nonce: &[u8; NONCE_BYTES]) -> [u8; MAC_BYTES] {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(label);
    mac.update(&link.cluster_id.0.to_le_bytes());
    mac.update(&link.dialer.0.to_le_bytes());
    mac.update(&link.acceptor.0.to_le_bytes());
    mac.update(nonce);
    mac.finalize().into_bytes().into()
}

/// The dialer's proof: its MAC of the acceptor's `challenge`.
pub fn dialer_mac(secret: &[u8], link: Link, challenge: &[u8; NONCE_BYTES]) -> [u8; MAC_BYTES] {
    mac(secret, b"memdi peer dialer v1", link, challenge)
}

/// The acceptor's proof: its MAC of the dialer's `challenge`.
pub fn acceptor_mac(secret: &[u8], link: Link, challenge: &[u8; NONCE_BYTES]) -> [u8; MAC_BYTES] {
    mac(secret, b"memdi peer acceptor v1", link, challenge)
}

/// Whether `given` is the `expected` MAC, in constant time.
pub fn mac_matches(expected: &[u8; MAC_BYTES], given: &[u8; MAC_BYTES]) -> bool {
    crate::auth::secrets_equal(given, expected)
}

/// Why a dialer's exchange failed ([`answer_challenge`], [`check_confirm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// The acceptor's first frame is no challenge: it has no secret, or refused the hello.
    NoChallenge,
    /// The acceptor's confirmation is wrong: it does not share the secret.
    WrongConfirm,
    /// Not a confirmation at all (a refusal: the acceptor found this node's proof wrong).
    Unexpected,
}

/// Acceptor, step 2: reads the dialer's answer to the challenge `ours`; returns the
/// confirmation to send if it proves the secret, `None` if it does not (refuse, close).
pub fn check_proof(
    secret: &[u8],
    link: Link,
    ours: &[u8; NONCE_BYTES],
    payload: &[u8],
) -> Option<PeerAuth> {
    match crate::wire::decode::<PeerAuth>(payload) {
        Ok(PeerAuth::Proof { mac, nonce })
            if mac_matches(&dialer_mac(secret, link, ours), &mac) =>
        {
            Some(PeerAuth::Confirm {
                mac: acceptor_mac(secret, link, &nonce),
            })
        }
        _ => None,
    }
}

/// Dialer, step 1: reads the acceptor's first frame; returns the proof to send, carrying
/// the dialer's own fresh nonce `ours`.
pub fn answer_challenge(
    secret: &[u8],
    link: Link,
    payload: &[u8],
    ours: [u8; NONCE_BYTES],
) -> Result<PeerAuth, AnswerError> {
    match crate::wire::decode::<PeerAuth>(payload) {
        Ok(PeerAuth::Challenge { nonce }) => Ok(PeerAuth::Proof {
            mac: dialer_mac(secret, link, &nonce),
            nonce: ours,
        }),
        _ => Err(AnswerError::NoChallenge),
    }
}

/// Dialer, step 2: checks the acceptor's confirmation of the dialer's nonce `ours`.
pub fn check_confirm(
    secret: &[u8],
    link: Link,
    ours: &[u8; NONCE_BYTES],
    payload: &[u8],
) -> Result<(), AnswerError> {
    match crate::wire::decode::<PeerAuth>(payload) {
        Ok(PeerAuth::Confirm { mac }) if mac_matches(&acceptor_mac(secret, link, ours), &mac) => {
            Ok(())
        }
        Ok(PeerAuth::Confirm { .. }) => Err(AnswerError::WrongConfirm),
        _ => Err(AnswerError::Unexpected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: Link = Link {
        cluster_id: ClusterId(7),
        dialer: NodeId(2),
        acceptor: NodeId(1),
    };

    #[test]
    fn the_same_secret_proves_and_any_change_does_not() {
        let nonce = [9; NONCE_BYTES];
        let proof = dialer_mac(b"s3cret", LINK, &nonce);
        assert!(mac_matches(&dialer_mac(b"s3cret", LINK, &nonce), &proof));
        assert!(!mac_matches(&dialer_mac(b"other", LINK, &nonce), &proof));
        assert!(!mac_matches(
            &dialer_mac(b"s3cret", LINK, &[8; NONCE_BYTES]),
            &proof
        ));
        // Not valid in the other direction, to another node, or in another cluster.
        assert!(!mac_matches(&acceptor_mac(b"s3cret", LINK, &nonce), &proof));
        let other_node = Link {
            acceptor: NodeId(3),
            ..LINK
        };
        assert!(!mac_matches(
            &dialer_mac(b"s3cret", other_node, &nonce),
            &proof
        ));
        let other_cluster = Link {
            cluster_id: ClusterId(8),
            ..LINK
        };
        assert!(!mac_matches(
            &dialer_mac(b"s3cret", other_cluster, &nonce),
            &proof
        ));
    }

    /// RFC 4231 test case 2: the HMAC is the standard one.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let expected = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
            0x64, 0xec, 0x38, 0x43,
        ];
        assert_eq!(<[u8; 32]>::from(mac.finalize().into_bytes()), expected);
    }

    /// The three steps, as both shells drive them: the right secret passes both ways, a
    /// wrong one fails on the side that checks it.
    #[test]
    fn the_exchange_passes_with_the_secret_and_fails_without() {
        let encode = |message: &PeerAuth| {
            let mut out = [0u8; 128];
            let len = crate::wire::encode(message, &mut out).unwrap().len();
            (out, len)
        };
        let acceptor_nonce = [1u8; NONCE_BYTES];
        let dialer_nonce = [2u8; NONCE_BYTES];
        let (challenge, len) = encode(&PeerAuth::Challenge {
            nonce: acceptor_nonce,
        });
        let proof = answer_challenge(b"s", LINK, &challenge[..len], dialer_nonce).unwrap();
        let (proof_bytes, proof_len) = encode(&proof);
        let confirm = check_proof(b"s", LINK, &acceptor_nonce, &proof_bytes[..proof_len]).unwrap();
        let (confirm_bytes, confirm_len) = encode(&confirm);
        assert_eq!(
            check_confirm(b"s", LINK, &dialer_nonce, &confirm_bytes[..confirm_len]),
            Ok(())
        );
        // The acceptor with another secret refuses the proof; the dialer with another
        // secret refuses the confirmation.
        assert_eq!(
            check_proof(b"other", LINK, &acceptor_nonce, &proof_bytes[..proof_len]),
            None
        );
        assert_eq!(
            check_confirm(b"other", LINK, &dialer_nonce, &confirm_bytes[..confirm_len]),
            Err(AnswerError::WrongConfirm)
        );
        // A proof of another nonce is refused, and no challenge is no challenge.
        assert_eq!(
            check_proof(b"s", LINK, &[9u8; NONCE_BYTES], &proof_bytes[..proof_len]),
            None
        );
        assert_eq!(
            answer_challenge(b"s", LINK, &proof_bytes[..proof_len], dialer_nonce),
            Err(AnswerError::NoChallenge)
        );
    }
}
