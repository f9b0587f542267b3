//! Client connections: accept, cut frames, pass them to the node task, write its replies.
//!
//! Each connection has a reader (this module's [`serve`]) and a writer task. The reader
//! reads straight into the core's `FrameDecoder`, whose fixed buffer refuses an oversized
//! frame header before any of its payload is buffered; such a connection gets an error frame
//! and is closed, and no other connection notices. Every complete frame one read gives goes
//! to the node task as one message (pipelined requests cost one channel hop per read). Backpressure: the reader waits when the
//! node task's queue is full; the node task drops a client whose reply queue is full
//! (it sent requests but does not read the answers).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memdi_core::auth::UNAUTHENTICATED_MAX_FRAME_BYTES;
use memdi_core::wire::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames::{error_frame, split_frames};
use super::node_task::{frames_taken, ClientLink, ConnId, FrameBatch, Input, Outbound};
use super::password_gate::{self, Screened};
use crate::config::Password;

/// Replies queued for one connection before the node task gives up on it.
const REPLY_QUEUE: usize = 16 * 1024;
/// Longest wait for a connection's last bytes (a farewell error frame, the end of the
/// write buffer): a client that does not read would hold them for ever.
const FAREWELL_WAIT: Duration = Duration::from_secs(2);

/// What every client connection shares.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Where frames go.
    pub inputs: mpsc::Sender<Input>,
    /// Largest frame payload accepted.
    pub max_frame_bytes: u32,
    /// 0 = never.
    pub idle_timeout_ms: u64,
    /// Most connections at once.
    pub max_clients: u32,
    /// Cancelled on shutdown: stop accepting and reading.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks, so shutdown can wait for replies to be written.
    pub tasks: TaskTracker,
    /// `--requirepass`: until a connection sends it, only `Hello` and `Auth` are served and
    /// frames are capped at `UNAUTHENTICATED_MAX_FRAME_BYTES`.
    pub password: Option<Arc<Password>>,
}

/// Admits client connections under the `--max-clients` cap, from the client listener and
/// from the peer listener (which hands over connections that greet it as a client: a node
/// started with `--join` asks a member's peer address to add it).
#[derive(Debug, Clone)]
pub struct ClientGate {
    settings: ClientSettings,
    permits: Arc<Semaphore>,
    next_id: Arc<AtomicU64>,
}

impl ClientGate {
    /// A gate for `settings.max_clients` connections.
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_clients as usize)),
            next_id: Arc::new(AtomicU64::new(1)),
            settings,
        }
    }

    /// Serves `stream` as a client connection, or refuses it when the cap is reached.
    /// `hello` is the first frame's payload when the caller has read it already.
    pub fn admit(&self, stream: TcpStream, addr: std::net::SocketAddr, hello: Option<Vec<u8>>) {
        let settings = &self.settings;
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(
                "refused client {addr}: already {} clients (--max-clients)",
                settings.max_clients
            );
            settings.tasks.spawn(refuse(stream, settings.max_clients));
            return;
        };
        let conn = self.next_id.fetch_add(1, Ordering::Relaxed);
        let settings = settings.clone();
        let tasks = settings.tasks.clone();
        tasks.spawn(async move {
            tracing::debug!("client {conn} connected from {addr}");
            serve(stream, conn, settings, hello).await;
            drop(permit);
            tracing::debug!("client {conn} disconnected");
        });
    }
}

/// Accepts client connections until shutdown.
pub async fn accept_loop(listener: TcpListener, gate: ClientGate) {
    let shutdown = gate.settings.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("accepting a client failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        gate.admit(stream, addr, None);
    }
}

async fn refuse(mut stream: TcpStream, max_clients: u32) {
    let detail = format!("too many clients (the node's --max-clients is {max_clients})");
    let frame = error_frame(0, ErrorCode::Busy, &detail);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&frame).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves one connection until it closes, misbehaves, idles out or the node shuts down.
async fn serve(stream: TcpStream, conn: ConnId, settings: ClientSettings, hello: Option<Vec<u8>>) {
    let (mut reader, writer) = stream.into_split();
    let (replies, outbound) = mpsc::channel(REPLY_QUEUE);
    let close = CancellationToken::new();
    let link = ClientLink::new(replies.clone(), close.clone());
    // Frames read whose answers are not yet written: a connection waiting for the core to
    // answer (a quorum write in a partition) is not idle. Every frame gets one answer,
    // within the core's request timeout. One whose answers wait unwritten is not waiting
    // for the core but for itself to read: the idle timeout applies.
    let answers_owed = Arc::new(AtomicUsize::new(0));
    let unwritten_bytes = link.unwritten_bytes.clone();
    settings.tasks.spawn(write_loop(
        writer,
        outbound,
        close.clone(),
        link.unwritten_bytes.clone(),
        answers_owed.clone(),
    ));
    let mut authenticated = settings.password.is_none();
    // A stranger gets a small buffer: the full one is allocated only once it has
    // authenticated (Redis's fix for CVE-2021-32675).
    let first_cap_bytes = if authenticated {
        settings.max_frame_bytes
    } else {
        UNAUTHENTICATED_MAX_FRAME_BYTES.min(settings.max_frame_bytes)
    };
    let mut decoder = password_gate::frame_decoder(first_cap_bytes);
    let idle =
        (settings.idle_timeout_ms > 0).then(|| Duration::from_millis(settings.idle_timeout_ms));
    let mut greeted = false;
    if let Some(payload) = hello {
        greeted = true;
        answers_owed.fetch_add(1, Ordering::Relaxed);
        let input = Input::ClientHello {
            conn,
            payload,
            link: link.clone(),
        };
        if settings.inputs.send(input).await.is_err() {
            return;
        }
    }
    // When the bytes of a frame not yet whole began to arrive: a frame must arrive whole
    // within the idle timeout of its first byte, so that a client trickling a byte at a
    // time (slowloris) cannot hold its place for ever.
    let mut partial_since: Option<Instant> = None;
    'connection: loop {
        let wait = idle.map(|idle| match partial_since {
            Some(since) => idle.saturating_sub(since.elapsed()),
            None => idle,
        });
        let read = tokio::select! {
            _ = settings.shutdown.cancelled() => break,
            _ = close.cancelled() => break,
            read = read_some(&mut reader, decoder.unfilled(), wait) => read,
        };
        match read {
            ReadOutcome::Bytes(count) => decoder.commit(count),
            ReadOutcome::Eof => break,
            ReadOutcome::Idle
                if partial_since.is_none()
                    && answers_owed.load(Ordering::Relaxed) > 0
                    && unwritten_bytes.load(Ordering::Relaxed) == 0 =>
            {
                continue 'connection;
            }
            ReadOutcome::Idle => {
                let detail = if partial_since.is_some() {
                    "idle timeout: a request did not arrive whole within the idle timeout of its first byte; connection closed"
                } else {
                    "idle timeout: connection closed"
                };
                let frame = error_frame(0, ErrorCode::Timeout, detail);
                let _ = replies.try_send(Outbound::Frames(frame));
                let _ = replies.try_send(Outbound::Close);
                // The writer cancels `close` once it has written them; one stuck behind
                // replies this client does not read is stopped, so the socket is freed.
                let _ = tokio::time::timeout(FAREWELL_WAIT, close.cancelled()).await;
                close.cancel();
                break;
            }
            ReadOutcome::Error(error) => {
                tracing::debug!("client {conn}: read failed: {error}");
                break;
            }
        }
        let mut frames = FrameBatch::default();
        let mut failed = None;
        let mut completed_a_frame = false;
        loop {
            let mut just_authenticated = false;
            loop {
                let next = decoder.next_frame();
                if matches!(next, Ok(Some(_))) {
                    completed_a_frame = true;
                    answers_owed.fetch_add(1, Ordering::Relaxed);
                }
                match next {
                    Ok(Some(payload)) if !greeted => {
                        greeted = true;
                        let input = Input::ClientHello {
                            conn,
                            payload: payload.to_vec(),
                            link: link.clone(),
                        };
                        if settings.inputs.send(input).await.is_err() {
                            break 'connection; // the node task has stopped
                        }
                    }
                    Ok(Some(payload)) => {
                        let screened = match &settings.password {
                            None => Screened::Pass,
                            Some(password) => {
                                password_gate::screen(password, authenticated, payload)
                            }
                        };
                        let Screened::Answer { frame, opens } = screened else {
                            frames.push(payload);
                            continue;
                        };
                        // Requests before it reach the node first, then this answer.
                        let earlier = std::mem::take(&mut frames);
                        let inputs = [
                            (!earlier.is_empty()).then_some(Input::ClientFrames {
                                conn,
                                frames: earlier,
                            }),
                            Some(Input::ClientReply {
                                conn,
                                frame,
                                close: false,
                            }),
                        ];
                        for input in inputs.into_iter().flatten() {
                            if settings.inputs.send(input).await.is_err() {
                                break 'connection; // the node task has stopped
                            }
                        }
                        if opens && !authenticated {
                            authenticated = true;
                            just_authenticated = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            if !just_authenticated {
                break;
            }
            decoder = password_gate::widened(&decoder, settings.max_frame_bytes);
        }
        // A frame completed in this read: what is left began in it.
        partial_since = match (decoder.buffered_bytes(), partial_since) {
            (0, _) => None,
            (_, Some(since)) if !completed_a_frame => Some(since),
            _ => Some(Instant::now()),
        };
        if !frames.is_empty() {
            let input = Input::ClientFrames { conn, frames };
            if settings.inputs.send(input).await.is_err() {
                break 'connection; // the node task has stopped
            }
        }
        if let Some(error) = failed {
            tracing::info!("client {conn}: {error}; closing the connection");
            let frame = error_frame(0, error.error_code(), &error.to_string());
            if greeted {
                // Through the node task, after the answers to the frames before it (the
                // handshake's among them); it closes the connection and forgets it.
                let close = Input::ClientReply {
                    conn,
                    frame,
                    close: true,
                };
                let _ = settings.inputs.send(close).await;
                return;
            }
            let _ = replies.send(Outbound::Frames(frame)).await;
            let _ = replies.send(Outbound::Close).await;
            break 'connection;
        }
    }
    // On shutdown the node task keeps the connection to deliver the answers to requests
    // already taken; otherwise it can forget it.
    if !settings.shutdown.is_cancelled() {
        let _ = settings.inputs.send(Input::ClientClosed { conn }).await;
    }
}

enum ReadOutcome {
    Bytes(usize),
    Eof,
    Idle,
    Error(std::io::Error),
}

async fn read_some(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    buffer: &mut [u8],
    idle: Option<Duration>,
) -> ReadOutcome {
    let read = match idle {
        Some(idle) => match tokio::time::timeout(idle, reader.read(buffer)).await {
            Ok(read) => read,
            Err(_) => return ReadOutcome::Idle,
        },
        None => reader.read(buffer).await,
    };
    match read {
        Ok(0) => ReadOutcome::Eof,
        Ok(count) => ReadOutcome::Bytes(count),
        Err(error) => ReadOutcome::Error(error),
    }
}

/// Writes frames as they come, flushing once whatever has queued up is written; ends on
/// `Close`, a write error, when every sender is gone (the node task has finished), or at
/// once when `close` is cancelled (the node task dropped a client that does not read its
/// replies: a write to it would wait for ever, holding the socket and the queue).
pub async fn write_loop(
    writer: OwnedWriteHalf,
    mut outbound: mpsc::Receiver<Outbound>,
    close: CancellationToken,
    unwritten_bytes: Arc<AtomicUsize>,
    answers_owed: Arc<AtomicUsize>,
) {
    let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, writer);
    let dropped = tokio::select! {
        _ = close.cancelled() => true,
        () = write_frames(&mut writer, &mut outbound, &unwritten_bytes, &answers_owed) => false,
    };
    if !dropped {
        let _ = tokio::time::timeout(FAREWELL_WAIT, async {
            let _ = writer.flush().await;
            let _ = writer.shutdown().await;
        })
        .await;
    }
    close.cancel();
}

/// [`write_loop`]'s work until `Close`, a write error or the end of the queue.
async fn write_frames(
    writer: &mut tokio::io::BufWriter<OwnedWriteHalf>,
    outbound: &mut mpsc::Receiver<Outbound>,
    unwritten_bytes: &AtomicUsize,
    answers_owed: &AtomicUsize,
) {
    while let Some(first) = outbound.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Frames(frames) => {
                    if writer.write_all(&frames).await.is_err() {
                        return;
                    }
                    frames_taken(unwritten_bytes, frames.len());
                    // Connection-level frames (request id 0) are counted too: the
                    // connection closes after them.
                    let answered = split_frames(&frames).count();
                    let _ =
                        answers_owed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |owed| {
                            Some(owed.saturating_sub(answered))
                        });
                }
                Outbound::Close => return,
            }
            next = outbound.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
}
