//! Dialer tasks: each keeps a connection open to the member its link is assigned
//! ([`Shell::follow_membership`](crate::shell::Shell::follow_membership)) and writes what the
//! node queues for it. Connections are one-way, as memdi-server's: a node sends on the
//! connection it opened and listens on the ones others opened.

use embassy_futures::select::{select, Either};
use embassy_net::tcp::TcpSocket;
use embassy_time::{with_timeout, Duration, Timer};
use embedded_io_async::Write;
use memdi_core::peer_auth::{self, Link, NONCE_BYTES};
use memdi_core::wire::{
    encode_frame, encode_peer_hello, read_peer_answer, FrameDecoder, NodeId, PeerAnswer,
    FRAME_HEADER_BYTES,
};
use static_cell::ConstStaticCell;

use crate::capacity::*;
use crate::shell::Context;

const CONNECT_WITHIN: Duration = Duration::from_secs(2);
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);
const BACKOFF_MIN_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 2_000;
/// The handshake's answer is a `HelloAck` or an error: small.
const ANSWER_BYTES: usize = 256;

/// One dialer task's buffers.
pub(crate) struct Buffers {
    rx: [u8; 256],
    tx: [u8; SOCKET_TX_BYTES],
    answer: [u8; ANSWER_BYTES + FRAME_HEADER_BYTES],
}

const EMPTY: Buffers = Buffers {
    rx: [0; 256],
    tx: [0; SOCKET_TX_BYTES],
    answer: [0; ANSWER_BYTES + FRAME_HEADER_BYTES],
};

static BUFFERS: ConstStaticCell<[Buffers; MAX_PEERS]> = ConstStaticCell::new([EMPTY; MAX_PEERS]);

/// Each task's buffers, once.
pub(crate) fn buffers() -> Option<&'static mut [Buffers; MAX_PEERS]> {
    BUFFERS.try_take()
}

/// Dialer task `index`, for link `index`.
#[embassy_executor::task(pool_size = MAX_PEERS)]
pub(crate) async fn run(
    context: &'static Context,
    index: usize,
    buffers: &'static mut Buffers,
) -> ! {
    let mut backoff_ms = BACKOFF_MIN_MS;
    loop {
        let Some((peer, endpoint, generation)) = context.with(|shell| {
            let link = &shell.links[index];
            link.peer
                .map(|(peer, endpoint)| (peer, endpoint, link.generation))
        }) else {
            context.wakers.links[index].wait().await;
            continue;
        };
        let mut socket = TcpSocket::new(context.stack, &mut buffers.rx, &mut buffers.tx);
        socket.set_nagle_enabled(false);
        let connected = matches!(
            with_timeout(CONNECT_WITHIN, socket.connect(endpoint)).await,
            Ok(Ok(()))
        );
        let outcome = if connected {
            match handshake(context, &mut socket, peer, &mut buffers.answer).await {
                Ok(max_frame_bytes) => {
                    info!("connected to node {}", peer.0);
                    context.with(|shell| shell.peer_link_up(index, peer, max_frame_bytes));
                    backoff_ms = BACKOFF_MIN_MS;
                    pump(context, index, generation, &mut socket).await;
                    context.with(|shell| shell.peer_lost(index, peer, &context.wakers));
                    "connection lost"
                }
                Err(reason) => reason,
            }
        } else {
            "unreachable"
        };
        debug!("link to node {}: {}", peer.0, outcome);
        socket.abort();
        let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
        drop(socket);
        // A changed assignment is dialed at once; a failure waits, longer each time.
        let changed = context.with(|shell| shell.links[index].generation != generation);
        if !changed {
            let wake = context.wakers.links[index].wait();
            let _ = select(Timer::after_millis(backoff_ms), wake).await;
            backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
        }
    }
}

/// Sends this node's hello and reads the answer; returns the peer's frame limit.
async fn handshake(
    context: &'static Context,
    socket: &mut TcpSocket<'_>,
    peer: NodeId,
    answer: &mut [u8; ANSWER_BYTES + FRAME_HEADER_BYTES],
) -> Result<u32, &'static str> {
    let mut frame = [0u8; 160];
    let len = encode_peer_hello(
        context.cluster_id,
        context.me,
        MAX_FRAME_BYTES as u32,
        &mut frame,
    )
    .map_err(|_| "hello does not fit")?;
    let exchange = async {
        socket
            .write_all(&frame[..len])
            .await
            .map_err(|_| "closed")?;
        socket.flush().await.map_err(|_| "closed")?;
        let mut decoder = FrameDecoder::new(&mut answer[..]).map_err(|_| "buffer")?;
        if let Some(secret) = &context.cluster_secret {
            // The acceptor challenges before it answers the hello (the core's `peer_auth`).
            let link = Link {
                cluster_id: context.cluster_id,
                dialer: context.me,
                acceptor: peer,
            };
            let mut ours = [0u8; NONCE_BYTES];
            (context.random)(&mut ours);
            let proof = next_small(socket, &mut decoder, |payload| {
                peer_auth::answer_challenge(secret, link, payload, ours)
            })
            .await?
            .map_err(|_| "it asks for no cluster secret, or refused ours")?;
            let len = encode_frame(&proof, &mut frame).map_err(|_| "proof does not fit")?;
            socket
                .write_all(&frame[..len])
                .await
                .map_err(|_| "closed")?;
            socket.flush().await.map_err(|_| "closed")?;
            next_small(socket, &mut decoder, |payload| {
                peer_auth::check_confirm(secret, link, &ours, payload)
            })
            .await?
            .map_err(|_| "it does not share the cluster secret")?;
        }
        next_small(socket, &mut decoder, |payload| {
            match read_peer_answer(payload, peer) {
                PeerAnswer::Accepted { max_frame_bytes } => Ok(max_frame_bytes),
                PeerAnswer::WrongNode { .. } => Err("another node answers there"),
                PeerAnswer::Refused(_) => Err("refused (cluster id or secret)"),
                PeerAnswer::Unexpected => Err("unexpected answer (a cluster secret?)"),
            }
        })
        .await?
    };
    with_timeout(HANDSHAKE_WITHIN, exchange)
        .await
        .unwrap_or(Err("handshake timed out"))
}

/// Reads the next frame of the handshake and gives it to `take`.
async fn next_small<R>(
    socket: &mut TcpSocket<'_>,
    decoder: &mut FrameDecoder<&mut [u8]>,
    take: impl FnOnce(&[u8]) -> R,
) -> Result<R, &'static str> {
    loop {
        match decoder.next_frame() {
            Err(_) => return Err("answer too large"),
            Ok(Some(payload)) => return Ok(take(payload)),
            Ok(None) => {}
        }
        match socket.read(decoder.unfilled()).await {
            Ok(0) | Err(_) => return Err("closed during the handshake"),
            Ok(count) => decoder.commit(count),
        }
    }
}

/// Moves the link's queue into the socket until the connection breaks or the link is given
/// another peer. The bytes go straight from the queue into the socket's transmit buffer,
/// inside the critical section, so the dialer needs no buffer of its own.
async fn pump(
    context: &'static Context,
    index: usize,
    generation: u32,
    socket: &mut TcpSocket<'_>,
) {
    let (mut reader, mut writer) = socket.split();
    let mut discard = [0u8; 16];
    loop {
        let state = context.with(|shell| {
            let link = &shell.links[index];
            (link.generation == generation).then_some(link.queued() > 0)
        });
        match state {
            None => return, // reassigned
            Some(true) => {
                // Waits for room in the socket, then copies what fits.
                let moved = writer
                    .write_with(|room| {
                        let count = context.with(|shell| shell.links[index].take(room));
                        (count, count)
                    })
                    .await;
                if moved.is_err() {
                    return;
                }
            }
            Some(false) => {
                if writer.flush().await.is_err() {
                    return;
                }
                // Peers send nothing on this connection; a read ends only when it closes.
                match select(
                    context.wakers.links[index].wait(),
                    reader.read(&mut discard),
                )
                .await
                {
                    Either::First(()) => {}
                    Either::Second(Ok(0)) | Either::Second(Err(_)) => return,
                    Either::Second(Ok(_)) => {}
                }
            }
        }
    }
}
