//! Links between nodes: one outgoing connection to every other member, which carries this
//! node's messages to it, and a listener that takes the other members' connections and
//! hands their frames to the node task under the sender's id.
//!
//! Connections are one-way (each node sends on the connection it opened), so a link never
//! needs to know which side "owns" it, and reconnecting is just the dialer's loop. A
//! message queued while the link is down is dropped, as a lossy network would drop it:
//! the protocol retries everything it needs (heartbeats, appends, votes).

use std::net::SocketAddr;
use std::time::Duration;

use memdi_core::wire::{
    decode, read_peer_answer, ClientMessage, ClusterId, FrameDecoder, Hello, NodeId, PeerAnswer,
    Request, Sender, FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use memdi_core::peer_auth::Link;

use super::client_conn::ClientGate;
use super::frames::peer_hello_frame;
use super::node_task::Input;
use super::peer_secret;
use crate::secret::Password;

/// Who this node is to the peers that connect to it, and the secret they must prove.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This node.
    pub me: NodeId,
    /// Its cluster.
    pub cluster_id: ClusterId,
    /// `--cluster-secret`, if any.
    pub secret: Option<Arc<Password>>,
}

/// Frames queued for one peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Accepts peer connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    inputs: mpsc::Sender<Input>,
    max_frame_bytes: u32,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    clients: ClientGate,
    identity: Identity,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let inputs = inputs.clone();
                let shutdown = shutdown.clone();
                let clients = clients.clone();
                let identity = identity.clone();
                tasks.spawn(async move {
                    let served = serve(
                        stream,
                        addr,
                        inputs,
                        max_frame_bytes,
                        shutdown,
                        clients,
                        identity,
                    );
                    if let Err(reason) = served.await {
                        tracing::debug!("peer connection from {addr} ended: {reason}");
                    }
                });
            }
            Err(error) => {
                tracing::warn!("accepting a peer failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends the ACK for what was just read now rather than after Linux's delayed-ACK timer
/// (40 ms). This side of a link never writes after the handshake (answers go on the link
/// this node dials), so no data carries the ACK, and a peer with a small send buffer (a
/// board's is 1 KiB) cannot send its next frame until it comes: the whole board waited
/// 40 ms at each short segment (docs/benchmarks.md, the embedded node's pipelined writes).
/// `TCP_QUICKACK` does not stick, so it is set after every read.
fn acknowledge_now(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// One incoming peer connection: the handshake (checked by the node task), then frames.
async fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    inputs: mpsc::Sender<Input>,
    max_frame_bytes: u32,
    shutdown: CancellationToken,
    clients: ClientGate,
    identity: Identity,
) -> Result<(), String> {
    let buffer = vec![0; max_frame_bytes as usize + FRAME_HEADER_BYTES];
    let mut decoder = FrameDecoder::new(buffer).expect("frame buffer above the header size");
    let mut from: Option<NodeId> = None;
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = stream.read(decoder.unfilled()) => read,
        };
        match read {
            Ok(0) => return Err("closed".into()),
            Ok(count) => {
                decoder.commit(count);
                acknowledge_now(&stream);
            }
            Err(error) => return Err(error.to_string()),
        }
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(payload)) => payload.to_vec(),
                Ok(None) => break,
                Err(error) => return Err(error.to_string()),
            };
            match from {
                Some(from) => {
                    let input = Input::PeerFrame { from, payload };
                    if inputs.send(input).await.is_err() {
                        return Ok(());
                    }
                }
                None if greets_as_client(&payload) => {
                    // A client at the peer address (`--join` of a new node, or `memdi
                    // --addr` pointed at it): served as any client. It waits for the
                    // handshake's answer before sending more, so nothing else is buffered.
                    if decoder.buffered_bytes() > 0 {
                        return Err("a client sent frames before its handshake was answered".into());
                    }
                    clients.admit(stream, addr, Some(payload));
                    return Ok(());
                }
                None => {
                    if let (Some(secret), Some(link)) =
                        (&identity.secret, claimed_link(&payload, &identity))
                    {
                        // Before the node task hears of it: a node that cannot prove the
                        // secret never gets a HelloAck, a vote, or a frame taken.
                        let proven = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            peer_secret::challenge(&mut stream, &mut decoder, secret, link),
                        )
                        .await
                        .unwrap_or_else(|_| Err("it did not answer the challenge in time".into()));
                        if let Err(reason) = proven {
                            tracing::warn!(
                                "refused node {} connecting from {addr}: {reason}",
                                link.dialer.0
                            );
                            let _ = stream.shutdown().await;
                            return Err(reason);
                        }
                    }
                    let (answer, reply) = oneshot::channel();
                    let input = Input::PeerHello { payload, answer };
                    if inputs.send(input).await.is_err() {
                        return Ok(());
                    }
                    let (frame, accepted) = reply.await.map_err(|_| "node stopped".to_string())?;
                    stream
                        .write_all(&frame)
                        .await
                        .map_err(|error| error.to_string())?;
                    match accepted {
                        Some(id) => {
                            tracing::debug!("peer node {} connected", id.0);
                            from = Some(id);
                        }
                        None => {
                            let reason = refusal_reason(&frame);
                            tracing::warn!("refused a peer connecting from {addr}: {reason}");
                            let _ = stream.shutdown().await;
                            return Err(reason);
                        }
                    }
                }
            }
        }
    }
}

/// What the node task's answer to a refused peer hello says (its error's code and detail).
fn refusal_reason(frame: &[u8]) -> String {
    let payload = frame.get(FRAME_HEADER_BYTES..).unwrap_or_default();
    match read_peer_answer(payload, NodeId(0)) {
        PeerAnswer::Refused(error) => format!("{:?}: {}", error.code, error.detail),
        _ => "handshake refused".into(),
    }
}

/// The link a peer's handshake claims, if it names a peer of this node's cluster (a hello
/// for another cluster is refused by the node task, with its own message).
fn claimed_link(payload: &[u8], identity: &Identity) -> Option<Link> {
    match decode::<ClientMessage<'_>>(payload) {
        Ok(ClientMessage {
            request:
                Request::Hello(Hello {
                    sender: Sender::Peer(dialer),
                    cluster_id,
                    ..
                }),
            ..
        }) if cluster_id == identity.cluster_id => Some(Link {
            cluster_id,
            dialer,
            acceptor: identity.me,
        }),
        _ => None,
    }
}

/// Whether a connection's first frame is a client's handshake.
fn greets_as_client(payload: &[u8]) -> bool {
    matches!(
        decode::<ClientMessage<'_>>(payload),
        Ok(ClientMessage {
            request: Request::Hello(Hello {
                sender: Sender::Client,
                ..
            }),
            ..
        })
    )
}

/// Where and how to reach one peer.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// This node.
    pub me: NodeId,
    /// The peer.
    pub peer: NodeId,
    /// Its peer address ("host:port", resolved at each attempt).
    pub addr: String,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// Announced in the handshake.
    pub max_frame_bytes: u32,
    /// Told when the connection breaks, so that requests forwarded over it end at once.
    pub inputs: mpsc::Sender<Input>,
    /// `--cluster-secret`, proven to the peer and by it before anything else.
    pub secret: Option<Arc<Password>>,
}

impl Dialer {
    /// Keeps a connection to the peer open (reconnecting with backoff) and writes the frames
    /// the node task queues for it, until shutdown.
    pub async fn run(self, mut frames: mpsc::Receiver<Vec<u8>>, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut was_connected = true; // so that the first failure is logged
        let mut last_reason: Option<String> = None;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok((stream, max_frame_bytes)) => {
                    tracing::info!("connected to node {} at {}", self.peer.0, self.addr);
                    let up = Input::PeerLinkUp {
                        peer: self.peer,
                        max_frame_bytes,
                    };
                    let _ = self.inputs.send(up).await;
                    backoff = BACKOFF_MIN;
                    was_connected = true;
                    // Frames queued while the link was down are stale: drop them.
                    while frames.try_recv().is_ok() {}
                    let reason = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        reason = pump(stream, &mut frames) => reason,
                    };
                    tracing::warn!("lost connection to node {}: {reason}", self.peer.0);
                    let _ = self.inputs.send(Input::PeerLost { peer: self.peer }).await;
                }
                Err(reason) => {
                    // Once per failure, and again whenever the reason changes (a refused
                    // cluster secret after "connection refused" must not go unsaid).
                    if was_connected || last_reason.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            "cannot reach node {} at {}: {reason}; retrying",
                            self.peer.0,
                            self.addr
                        );
                        was_connected = false;
                    } else {
                        tracing::debug!("node {} still unreachable: {reason}", self.peer.0);
                    }
                    last_reason = Some(reason);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            while frames.try_recv().is_ok() {}
        }
    }

    /// Connects and completes the handshake; returns the stream and the largest frame the
    /// peer takes.
    async fn connect(&self) -> Result<(TcpStream, u32), String> {
        let mut stream =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr.as_str()))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|error| error.to_string())?;
        let _ = stream.set_nodelay(true);
        let hello = peer_hello_frame(self.cluster_id, self.me, self.max_frame_bytes);
        let max_frame_bytes = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            stream.write_all(&hello).await.map_err(|e| e.to_string())?;
            let mut decoder = FrameDecoder::new(vec![0; 4096 + FRAME_HEADER_BYTES])
                .expect("frame buffer above the header size");
            if let Some(secret) = &self.secret {
                let link = Link {
                    cluster_id: self.cluster_id,
                    dialer: self.me,
                    acceptor: self.peer,
                };
                peer_secret::answer(&mut stream, &mut decoder, secret, link).await?;
            }
            loop {
                // What is buffered first: the acceptor may have sent its HelloAck in the
                // same segment as the cluster secret's confirmation (a board does), and
                // reading first would wait for bytes that already came.
                if let Some(payload) = decoder.next_frame().map_err(|e| e.to_string())? {
                    if peer_secret::is_challenge(payload) {
                        return Err(
                            "it asks for a cluster secret, and this node has none (give every node the same --cluster-secret)"
                                .into(),
                        );
                    }
                    return match read_peer_answer(payload, self.peer) {
                        PeerAnswer::Accepted { max_frame_bytes } => Ok(max_frame_bytes),
                        PeerAnswer::WrongNode { answered } => Err(format!(
                            "the address answers as node {}, not node {} (check --cluster)",
                            answered.0, self.peer.0
                        )),
                        PeerAnswer::Refused(error) => Err(format!(
                            "handshake refused: {:?}: {}",
                            error.code, error.detail
                        )),
                        PeerAnswer::Unexpected => Err("unexpected handshake answer".to_string()),
                    };
                }
                let count = stream
                    .read(decoder.unfilled())
                    .await
                    .map_err(|e| e.to_string())?;
                if count == 0 {
                    return Err("closed during the handshake".to_string());
                }
                decoder.commit(count);
            }
        })
        .await
        .map_err(|_| "handshake timed out".to_string())??;
        Ok((stream, max_frame_bytes))
    }
}

/// Writes queued frames to the peer (flushing once per batch) while watching the socket
/// for the peer closing it.
async fn pump(stream: TcpStream, frames: &mut mpsc::Receiver<Vec<u8>>) -> String {
    let (mut reader, writer) = stream.into_split();
    let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, writer);
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { return "node stopped".into() };
                if let Err(error) = writer.write_all(&frame).await {
                    return error.to_string();
                }
                while let Ok(frame) = frames.try_recv() {
                    if let Err(error) = writer.write_all(&frame).await {
                        return error.to_string();
                    }
                }
                if let Err(error) = writer.flush().await {
                    return error.to_string();
                }
            }
            read = reader.read(&mut scratch) => match read {
                Ok(0) => return "closed by the peer".into(),
                Ok(_) => {} // peers send nothing after the handshake; ignore
                Err(error) => return error.to_string(),
            },
        }
    }
}
