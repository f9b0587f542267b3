//! `--cluster-secret` on peer connections: the shell's half of the challenge-response in
//! `memdi_core::peer_auth` (which holds the protocol and its reasons). The acceptor runs
//! [`challenge`] between the dialer's `Hello` and its own `HelloAck`, the dialer runs
//! [`answer`]; neither hands the node task anything from the other before both proofs
//! checked out. Every step is bounded by the handshake's timeout, set by the caller.

use std::io::Read;

use memdi_core::peer_auth::{self, AnswerError, Link, PeerAuth, NONCE_BYTES};
use memdi_core::wire::{
    decode, encode_frame, ErrorCode, FrameDecoder, Response, ServerMessage, FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frames::error_frame;
use crate::secret::Password;

/// A fresh random nonce from the OS (`/dev/urandom`: memdi-server runs on Linux).
fn nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut nonce = [0; NONCE_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut nonce))
        .map_err(|error| format!("no randomness for a nonce: {error}"))?;
    Ok(nonce)
}

async fn send(stream: &mut TcpStream, message: &PeerAuth) -> Result<(), String> {
    let mut frame = [0; FRAME_HEADER_BYTES + 128];
    let len = encode_frame(message, &mut frame).map_err(|error| format!("{error:?}"))?;
    stream
        .write_all(&frame[..len])
        .await
        .map_err(|error| error.to_string())
}

/// The next frame's payload.
async fn next_frame<B: AsRef<[u8]> + AsMut<[u8]>>(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder<B>,
) -> Result<Vec<u8>, String> {
    loop {
        if let Some(payload) = decoder.next_frame().map_err(|error| error.to_string())? {
            return Ok(payload.to_vec());
        }
        let count = stream
            .read(decoder.unfilled())
            .await
            .map_err(|error| error.to_string())?;
        if count == 0 {
            return Err("closed during the cluster-secret exchange".into());
        }
        decoder.commit(count);
    }
}

/// What an error frame from the other side says, if `payload` is one.
fn refusal(payload: &[u8]) -> Option<String> {
    match decode::<ServerMessage<'_>>(payload) {
        Ok(ServerMessage {
            response: Response::Error(error),
            ..
        }) => Some(format!("refused: {}", error.detail)),
        _ => None,
    }
}

/// Acceptor: challenges the dialer of `link` and checks its proof; on success answers the
/// dialer's challenge. On failure the dialer is told why and the caller closes.
pub async fn challenge<B: AsRef<[u8]> + AsMut<[u8]>>(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder<B>,
    secret: &Password,
    link: Link,
) -> Result<(), String> {
    let ours = nonce()?;
    send(stream, &PeerAuth::Challenge { nonce: ours }).await?;
    let payload = next_frame(stream, decoder).await?;
    let Some(confirm) = peer_auth::check_proof(secret.expose(), link, &ours, &payload) else {
        let refusal = error_frame(
            0,
            ErrorCode::Unauthorized,
            "this node does not share your cluster secret (--cluster-secret)",
        );
        let _ = stream.write_all(&refusal).await;
        return Err("it did not prove the cluster secret (it has another one, or none)".into());
    };
    send(stream, &confirm).await
}

/// Dialer: answers the acceptor's challenge on `link` and checks the acceptor's own proof.
pub async fn answer<B: AsRef<[u8]> + AsMut<[u8]>>(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder<B>,
    secret: &Password,
    link: Link,
) -> Result<(), String> {
    let payload = next_frame(stream, decoder).await?;
    let ours = nonce()?;
    let Ok(proof) = peer_auth::answer_challenge(secret.expose(), link, &payload, ours) else {
        return Err(refusal(&payload).unwrap_or_else(|| {
            "it asked for no cluster secret: it has none (give every node the same --cluster-secret)"
                .into()
        }));
    };
    send(stream, &proof).await?;
    let payload = next_frame(stream, decoder).await?;
    match peer_auth::check_confirm(secret.expose(), link, &ours, &payload) {
        Ok(()) => Ok(()),
        Err(AnswerError::WrongConfirm) => {
            Err("its proof of the cluster secret is wrong: it does not share ours".into())
        }
        Err(_) => Err(refusal(&payload).unwrap_or_else(|| "unexpected answer to our proof".into())),
    }
}

/// Whether `payload` is the acceptor's challenge: a dialer with no secret gets one from a
/// node that has a secret, and says so.
pub fn is_challenge(payload: &[u8]) -> bool {
    matches!(decode::<PeerAuth>(payload), Ok(PeerAuth::Challenge { .. }))
}
