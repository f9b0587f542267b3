//! Connection tasks: each listens on the client or the peer port, serves one connection at
//! a time, and takes one request at a time from it.
//!
//! The first frame says who connected: a client's hello (on either port: a node joining
//! through this one's peer address is a client) or, on the peer port, another member's.
//! A client's requests go to the node one by one; an answer that must wait (for a quorum,
//! for the leader) is waited for before the next request is read, so answers leave in
//! order and nothing but the slot's one answer is kept. A peer's frames go to the node as
//! they come; a peer expects no answer on this connection (this node answers on its own
//! link to that peer).

use embassy_net::tcp::{State, TcpSocket};
use embassy_time::{with_timeout, Duration, Instant, Timer};
use embedded_io_async::Write;
use memdi_core::wire::{
    decode, encode_frame, ClientMessage, ErrorCode, ErrorReply, FrameDecoder, NodeId, Request,
    Response, Sender, ServerMessage, FRAME_HEADER_BYTES,
};
use static_cell::ConstStaticCell;

use memdi_core::auth::Gate;
use memdi_core::peer_auth::{self, Link, PeerAuth, NONCE_BYTES};

use crate::capacity::*;
use crate::shell::{timeout_frame, ClientStep, Context, Shell, Waiting};

/// A client that sends nothing for this long is hung up on (its slot is scarce).
const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// A peer's link may be silent for good (a follower sends nothing to another follower), so
/// it has no idle limit; TCP keep-alive finds a peer that vanished without closing (a
/// board reset), and the connection is dropped when unanswered for `PEER_GONE`.
const PEER_KEEP_ALIVE: Duration = Duration::from_secs(5);
const PEER_GONE: Duration = Duration::from_secs(20);
/// A hello must come this soon after connecting.
const HELLO_WITHIN: Duration = Duration::from_secs(5);
/// A hello is a few dozen bytes; one longer is refused by the core anyway.
const HELLO_BYTES: usize = 128;
/// How long a request waits for the link to the leader to come up, and how often it
/// looks (the dialer retries within 50 ms of a failure).
const RETRY_FOR: Duration = Duration::from_secs(2);
const RETRY_EVERY: Duration = Duration::from_millis(20);
/// How often a request answered `Busy` is submitted again (`ClientStep::Full`): a full log
/// frees up as soon as a follower takes the next `Append`, in well under a millisecond.
const FULL_RETRY_EVERY: Duration = Duration::from_micros(500);

/// One connection task's buffers.
pub(crate) struct Buffers {
    rx: [u8; SOCKET_RX_BYTES],
    tx: [u8; SOCKET_TX_BYTES],
    frames: [u8; FRAME_BUFFER_BYTES],
    out: [u8; FRAME_BUFFER_BYTES],
}

const EMPTY: Buffers = Buffers {
    rx: [0; SOCKET_RX_BYTES],
    tx: [0; SOCKET_TX_BYTES],
    frames: [0; FRAME_BUFFER_BYTES],
    out: [0; FRAME_BUFFER_BYTES],
};

static BUFFERS: ConstStaticCell<[Buffers; CONNECTIONS]> =
    ConstStaticCell::new([EMPTY; CONNECTIONS]);

/// Each task's buffers, once.
pub(crate) fn buffers() -> Option<&'static mut [Buffers; CONNECTIONS]> {
    BUFFERS.try_take()
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The other end closed it or it broke.
    Closed,
    /// It was silent too long.
    Idle,
    /// It sent no hello, or the node ended it; the answer, if any, was sent.
    Refused,
    /// It announced a frame larger than this node takes: answered with `FrameTooLarge`.
    TooLarge,
}

/// Connection task `index`: the first `CLIENT_CONNECTIONS` serve the client port, the rest
/// the peer port.
#[embassy_executor::task(pool_size = CONNECTIONS)]
pub(crate) async fn run(
    context: &'static Context,
    index: usize,
    buffers: &'static mut Buffers,
) -> ! {
    let peer_port = index >= CLIENT_CONNECTIONS;
    let port = if peer_port {
        context.peer_port
    } else {
        context.client_port
    };
    let Buffers {
        rx,
        tx,
        frames,
        out,
    } = buffers;
    // Lent to the shell while a request waits (`Slot::lent`), so held as a slice.
    let mut out: &'static mut [u8] = &mut out[..];
    loop {
        let mut socket = TcpSocket::new(context.stack, &mut rx[..], &mut tx[..]);
        if socket.accept(port).await.is_err() {
            embassy_time::Timer::after_millis(100).await;
            continue;
        }
        socket.set_nagle_enabled(false);
        let Ok(mut decoder) = FrameDecoder::new(&mut frames[..]) else {
            unreachable!("the frame buffer is larger than a header (checked at build time)");
        };
        let ended = serve(
            context,
            index,
            peer_port,
            &mut socket,
            &mut decoder,
            &mut out,
        )
        .await;
        debug!(
            "connection {} on port {} ended: {}",
            index, port, ended as u8
        );
        context.with(|shell| shell.slots[index].waiting = Waiting::Idle);
        if ended == End::TooLarge {
            // Said before hanging up, as memdi-server does: the stream cannot be resumed.
            let len = too_large_frame(out);
            let _ = with_timeout(Duration::from_secs(1), socket.write_all(&out[..len])).await;
        }
        socket.close();
        let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
        // Closed both ways already (the usual end: the client left first), the slot is free
        // at once; otherwise reset it, waiting only briefly for the reset to go out, so a
        // client that just left does not keep its slot from the next one.
        if socket.state() != State::Closed {
            socket.abort();
            let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
        }
    }
}

/// The acceptor's side of the cluster-secret exchange with peer `dialer` (the core's
/// `peer_auth`): challenge, check the proof, confirm; a wrong proof is refused and closed.
async fn challenge(
    context: &'static Context,
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    secret: &[u8],
    dialer: NodeId,
    out: &mut [u8],
) -> Result<(), End> {
    let link = Link {
        cluster_id: context.cluster_id,
        dialer,
        acceptor: context.me,
    };
    let mut ours = [0u8; NONCE_BYTES];
    (context.random)(&mut ours);
    let len = encode_frame(&PeerAuth::Challenge { nonce: ours }, out).map_err(|_| End::Refused)?;
    if socket.write_all(&out[..len]).await.is_err() || socket.flush().await.is_err() {
        return Err(End::Closed);
    }
    let confirm = next_frame(socket, decoder, Some(HELLO_WITHIN), |payload| {
        peer_auth::check_proof(secret, link, &ours, payload)
    })
    .await?;
    let len = match confirm {
        Some(confirm) => encode_frame(&confirm, out).map_err(|_| End::Refused)?,
        None => {
            warn!(
                "refused node {}: it did not prove the cluster secret",
                dialer.0
            );
            let message = ServerMessage {
                request_id: 0,
                response: Response::Error(ErrorReply {
                    code: ErrorCode::Unauthorized,
                    detail: "this node does not share your cluster secret (--cluster-secret)",
                }),
            };
            let len = encode_frame(&message, out).unwrap_or(0);
            let _ = socket.write_all(&out[..len]).await;
            return Err(End::Refused);
        }
    };
    if socket.write_all(&out[..len]).await.is_err() {
        return Err(End::Closed);
    }
    Ok(())
}

/// The error a connection gets before it is closed for an oversized frame.
fn too_large_frame(out: &mut [u8]) -> usize {
    let message = ServerMessage {
        request_id: 0,
        response: Response::Error(ErrorReply {
            code: ErrorCode::FrameTooLarge,
            detail: "frame larger than this node takes (see its handshake's max_frame_bytes)",
        }),
    };
    encode_frame(&message, out).unwrap_or(0)
}

/// Waits for the next whole frame (reading as needed) and gives its payload to `take`.
async fn next_frame<R>(
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    idle: Option<Duration>,
    take: impl FnOnce(&[u8]) -> R,
) -> Result<R, End> {
    loop {
        match decoder.next_frame() {
            Err(_) => return Err(End::TooLarge),
            Ok(Some(payload)) => return Ok(take(payload)),
            Ok(None) => {}
        }
        let read = socket.read(decoder.unfilled());
        let read = match idle {
            Some(idle) => with_timeout(idle, read).await.map_err(|_| End::Idle)?,
            None => read.await,
        };
        match read {
            Ok(0) | Err(_) => return Err(End::Closed),
            Ok(count) => decoder.commit(count),
        }
    }
}

async fn serve(
    context: &'static Context,
    index: usize,
    peer_port: bool,
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    out: &mut &'static mut [u8],
) -> End {
    // The hello, kept (it is small) while a peer proves the cluster secret.
    let mut hello = [0u8; HELLO_BYTES];
    let first = next_frame(socket, decoder, Some(HELLO_WITHIN), |payload| {
        let peer = match decode::<ClientMessage<'_>>(payload) {
            Ok(ClientMessage {
                request: Request::Hello(hello),
                ..
            }) => match hello.sender {
                Sender::Peer(id) => Some(id),
                Sender::Client => None,
            },
            _ => None,
        };
        if peer.is_some() && (!peer_port || peer == Some(context.me)) {
            // A peer on the client port, or a node claiming this one's id.
            return None;
        }
        let len = payload.len().min(HELLO_BYTES);
        hello[..len].copy_from_slice(&payload[..len]);
        Some((len, peer))
    })
    .await;
    let (hello_len, peer) = match first {
        Ok(Some(first)) => first,
        Ok(None) => return End::Refused,
        Err(end) => return end,
    };
    if let (Some(secret), Some(dialer)) = (&context.cluster_secret, peer) {
        // Before the node hears of it: a node that cannot prove the secret never gets a
        // HelloAck, a vote, or a frame taken (docs/protocol.md, "Peer authentication").
        if let Err(end) = challenge(context, socket, decoder, secret, dialer, out).await {
            return end;
        }
    }
    let (len, accepted) = context.with(|shell| shell.hello(&hello[..hello_len], out));
    if socket.write_all(&out[..len]).await.is_err() || socket.flush().await.is_err() {
        return End::Closed;
    }
    if !accepted {
        return End::Refused;
    }
    match peer {
        Some(peer) => serve_peer(context, peer, socket, decoder).await,
        None => serve_client(context, index, socket, decoder, out).await,
    }
}

async fn serve_peer(
    context: &'static Context,
    peer: NodeId,
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
) -> End {
    info!("node {} connected", peer.0);
    socket.set_keep_alive(Some(PEER_KEEP_ALIVE));
    socket.set_timeout(Some(PEER_GONE));
    context.with(|shell| shell.peer_connected(peer, &context.wakers));
    loop {
        let taken = next_frame(socket, decoder, None, |payload| {
            context.with(|shell| shell.peer_frame(peer, payload, &context.wakers))
        });
        if let Err(end) = taken.await {
            return end;
        }
    }
}

async fn serve_client(
    context: &'static Context,
    index: usize,
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    out: &mut &'static mut [u8],
) -> End {
    if let Some(password) = &context.password {
        if let Err(end) = authenticate(socket, decoder, password, out).await {
            return end;
        }
    }
    loop {
        let taken = next_frame(socket, decoder, Some(CLIENT_IDLE), |payload| {
            // Kept for a resubmission while no leader is known (`ClientStep::Keep`).
            out[..payload.len()].copy_from_slice(payload);
            let step = context
                .with(|shell| shell.client_frame(index, payload, out, true, &context.wakers));
            (payload.len(), step)
        });
        let (request_len, mut step) = match taken.await {
            Ok(taken) => taken,
            Err(end) => return end,
        };
        let retry_until = Instant::now() + RETRY_FOR;
        let (len, close) = loop {
            match step {
                ClientStep::Send { len, close } => break (len, close),
                ClientStep::Retry if Instant::now() >= retry_until => {
                    let detail = "no connection to the leader; the request was not sent";
                    break (timeout_frame(out, request_len, detail), false);
                }
                ClientStep::Retry => Timer::after(RETRY_EVERY).await,
                ClientStep::Full => Timer::after(FULL_RETRY_EVERY).await,
                // Bounded by the node's request timeout: every ticket ends, with an error
                // if nothing else.
                ClientStep::Wait | ClientStep::Keep => {
                    context.wakers.connections[index].wait().await
                }
            }
            step = context.with(|shell| {
                if let Some(lent) = shell.slots[index].lent.take() {
                    *out = lent;
                }
                match (step, shell.slots[index].waiting) {
                    (ClientStep::Retry | ClientStep::Full, _) | (_, Waiting::Resubmit) => {
                        // Past the deadline, a `Busy` is answered as it is.
                        let hold = Instant::now() < retry_until;
                        resubmit(shell, index, out, request_len, hold, &context.wakers)
                    }
                    (_, Waiting::Answered { len }) => {
                        shell.slots[index].waiting = Waiting::Idle;
                        ClientStep::Send { len, close: false }
                    }
                    (step, Waiting::On { .. } | Waiting::Idle) => {
                        // Woken early: lend the buffer again and go on waiting.
                        if matches!(step, ClientStep::Wait | ClientStep::Keep) {
                            shell.slots[index].lent = Some(core::mem::take(out));
                        }
                        step
                    }
                }
            });
        };
        if socket.write_all(&out[..len]).await.is_err() {
            return End::Closed;
        }
        // Flushed only when no further request is buffered: pipelined answers leave
        // together.
        if decoder.buffered_bytes() == 0 && socket.flush().await.is_err() {
            return End::Closed;
        }
        if close {
            return End::Refused;
        }
    }
}

/// Serves a client nothing but `Auth` until it gives `password` (the core's gate, the same
/// rules as memdi-server's: docs/protocol.md, "Authentication").
async fn authenticate(
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    password: &[u8],
    out: &mut [u8],
) -> Result<(), End> {
    loop {
        let gate = next_frame(socket, decoder, Some(CLIENT_IDLE), |payload| {
            memdi_core::auth::gate(password, payload)
        })
        .await?;
        let (request_id, response) = match gate {
            Gate::Accepted { request_id } => (request_id, Response::Authenticated),
            Gate::WrongPassword { request_id } => (
                request_id,
                Response::Error(ErrorReply {
                    code: ErrorCode::WrongPassword,
                    detail: "invalid password",
                }),
            ),
            Gate::Refused { request_id } => (
                request_id,
                Response::Error(ErrorReply {
                    code: ErrorCode::AuthRequired,
                    detail: "authentication required: send Auth with the node's password first",
                }),
            ),
        };
        let message = ServerMessage {
            request_id,
            response,
        };
        let len = encode_frame(&message, out).map_err(|_| End::Refused)?;
        if socket.write_all(&out[..len]).await.is_err() || socket.flush().await.is_err() {
            return Err(End::Closed);
        }
        if matches!(gate, Gate::Accepted { .. }) {
            return Ok(());
        }
    }
}

/// Submits the request in `out` again; its answer replaces it there.
fn resubmit(
    shell: &mut Shell,
    index: usize,
    out: &mut &'static mut [u8],
    request_len: usize,
    hold_when_busy: bool,
    wakers: &crate::shell::Wakers,
) -> ClientStep {
    // On the stack for the call only: the request and its answer share `out`.
    let mut request = [0u8; FRAME_BUFFER_BYTES];
    request[..request_len].copy_from_slice(&out[..request_len]);
    shell.client_frame(index, &request[..request_len], out, hold_when_busy, wakers)
}

const _: () = assert!(FRAME_BUFFER_BYTES > FRAME_HEADER_BYTES);
