//! An async client for memdi's native protocol.
//!
//! - **Pipelining:** one connection carries many requests at once; each gets a request id
//!   and a reader task matches answers to callers by id, so a quorum write that waits does
//!   not hold up a read behind it. Call methods concurrently on one [`Client`] (it is
//!   `Clone` and cheap to clone) to pipeline.
//! - **Pool:** a client keeps `pool_size` connections to one node and spreads requests over
//!   them; a connection that failed is replaced on next use.
//! - **Retries:** an answer of `NoLeader` or `Busy` means the request was not executed
//!   (an election is running, or the node is saturated), so it is sent again after a
//!   bounded, growing pause, up to `max_attempts` times. Other errors, including `Timeout`
//!   (a write's outcome is unknown), are returned as they are.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memdi_core::cluster::Membership;
use memdi_core::wire::{
    decode, encode_frame, AckLevel, ClientMessage, ClusterId, ErrorCode, Expiry, FrameDecoder,
    Hello, HelloAck, MemberState, NodeId, Packed, PackedWriter, ReadConsistency, Request, Response,
    SaveReport, Sender, ServerMessage, SetCondition, StatusRole, WriteOptions, FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub use crate::secret::Password;

/// Largest answer frame the client accepts.
const MAX_FRAME_BYTES: u32 = 8 << 20;

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached, or the connection broke.
    #[error("connection to {addr} failed: {reason}")]
    Connection {
        /// The node's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection closed while the request was out: a write's outcome is unknown.
    #[error("connection to {addr} closed before the answer arrived")]
    Closed {
        /// The node's address.
        addr: String,
    },
    /// The node answered with an error.
    #[error("server error {code:?}: {detail}")]
    Server {
        /// What went wrong.
        code: ErrorCode,
        /// The node's explanation.
        detail: String,
    },
    /// The node answered with something that does not fit the request.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the node answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// The version, for [`Client::compare_and_set`].
    pub version: u64,
    /// When it expires, in the cluster clock's milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// An answer, owned (the wire's `Response` borrows from the frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `Pong`.
    Pong,
    /// A value or none.
    Value(Option<Value>),
    /// Written with this version.
    Stored(u64),
    /// An NX/XX condition failed.
    NotStored,
    /// A compare-and-set found this version.
    VersionMismatch(u64),
    /// An integer.
    Integer(i64),
    /// A count.
    Count(u64),
    /// Values of MGET.
    Values(Vec<Option<Vec<u8>>>),
    /// A page of SCAN.
    ScanPage {
        /// 0 when done.
        next_cursor: u64,
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// An answer this client does not expect after the handshake.
    HelloAck,
    /// `SAVE` is done.
    Saved(SaveReport),
    /// `CLUSTER STATUS`.
    ClusterStatus(NodeStatus),
    /// A membership change committed at this log index; the membership now.
    MembershipChanged(u64, Box<Membership>),
    /// `Authenticated` (an `Auth` sent again on a connection that gave the password).
    Authenticated,
    /// `Info`: the node's statistics text.
    Info(String),
}

/// A node's answer to `CLUSTER STATUS`, owned (the wire's `ClusterStatus` borrows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The answering node.
    pub node_id: NodeId,
    /// Its role.
    pub role: StatusRole,
    /// Its term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader_id: Option<NodeId>,
    /// Its commit index.
    pub commit_index: u64,
    /// The last entry its store reflects.
    pub applied_index: u64,
    /// The last entry of its log.
    pub last_index: u64,
    /// The other members as it sees them.
    pub members: Vec<MemberState>,
}

/// Options of a SET.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    /// NX/XX.
    pub condition: SetCondition,
    /// Time to live in milliseconds (`None`: no expiry).
    pub ttl_ms: Option<u64>,
    /// Acknowledgement (`None`: the node's default).
    pub ack: Option<AckLevel>,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written with this version.
    Stored(u64),
    /// The key has another version (0: it does not exist); nothing was written.
    Mismatch(u64),
}

/// The first pause before sending again a request answered `Busy` (a full log, a
/// membership change in progress): such a refusal ends quickly.
pub const BUSY_MIN_BACKOFF: Duration = Duration::from_millis(1);
/// The longest pause between tries after `Busy`: with the default 40 tries, about the
/// 600 ms a leader keeps its log for a follower that has stopped progressing.
pub const BUSY_MAX_BACKOFF: Duration = Duration::from_millis(16);

/// How a [`Client`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connections kept to the node.
    pub pool_size: usize,
    /// Tries per request while the answer is `NoLeader` or `Busy`.
    pub max_attempts: u32,
    /// First pause between tries; doubles up to `max_backoff`. After `Busy` the pauses are
    /// [`BUSY_MIN_BACKOFF`] to [`BUSY_MAX_BACKOFF`] at most.
    pub min_backoff: Duration,
    /// Longest pause between tries.
    pub max_backoff: Duration,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Consistency of reads made by the typed methods.
    pub read: ReadConsistency,
    /// The node's `--requirepass`, sent (`Request::Auth`) right after each handshake.
    pub password: Option<Password>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            pool_size: 2,
            max_attempts: 40,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(3),
            read: ReadConsistency::Linearizable,
            password: None,
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Reply, ClientError>>>>>;

/// One connection: a writer task, a reader task, and the callers waiting for answers.
#[derive(Debug)]
struct Connection {
    frames: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    next_id: AtomicU32,
    alive: Arc<AtomicBool>,
    addr: String,
}

/// Connects to `addr` and completes the handshake (and authentication, with a password),
/// without this library's reader and writer tasks: for callers that drive the frames
/// themselves, as `memdi bench` does so that it measures the server rather than this
/// library's per-request channels.
pub async fn connect_raw(
    addr: &str,
    options: &ClientOptions,
) -> Result<(TcpStream, HelloAck), ClientError> {
    let (reader, writer, ack) =
        handshake(addr, options.connect_timeout, options.password.as_ref()).await?;
    let stream = reader
        .reunite(writer)
        .map_err(|_| ClientError::Protocol("the halves of one stream did not match".into()))?;
    Ok((stream, ack))
}

/// Connects and completes the handshake: the stream's halves and the node's answer.
async fn handshake(
    addr: &str,
    timeout: Duration,
    password: Option<&Password>,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, HelloAck), ClientError> {
    let failed = |reason: String| ClientError::Connection {
        addr: addr.to_owned(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| failed("connect timed out".into()))?
        .map_err(|error| failed(error.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let hello = encode(&ClientMessage {
        request_id: 0,
        request: Request::Hello(Hello::new(ClusterId(0), Sender::Client, MAX_FRAME_BYTES)),
    })?;
    writer
        .write_all(&hello)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let mut decoder = FrameDecoder::new(vec![0; 64 * 1024 + FRAME_HEADER_BYTES])
        .expect("frame buffer above the header size");
    let ack = tokio::time::timeout(timeout, async {
        let mut ack = None;
        loop {
            if let Some(payload) = decoder.next_frame().map_err(|e| failed(e.to_string()))? {
                match decode::<ServerMessage<'_>>(payload) {
                    Ok(ServerMessage {
                        response: Response::HelloAck(hello_ack),
                        ..
                    }) if ack.is_none() => {
                        let Some(password) = password else {
                            return Ok(hello_ack);
                        };
                        // Only once the hello is answered: a member's peer port (a
                        // join) takes nothing before its handshake is answered.
                        let auth = encode(&ClientMessage {
                            request_id: 0,
                            request: Request::Auth {
                                password: password.expose(),
                            },
                        })?;
                        writer
                            .write_all(&auth)
                            .await
                            .map_err(|error| failed(error.to_string()))?;
                        ack = Some(hello_ack);
                    }
                    Ok(ServerMessage {
                        response: Response::Authenticated,
                        ..
                    }) if ack.is_some() => return Ok(ack.expect("checked")),
                    Ok(ServerMessage {
                        response: Response::Error(error),
                        ..
                    }) => {
                        return Err(ClientError::Server {
                            code: error.code,
                            detail: error.detail.to_owned(),
                        })
                    }
                    _ => return Err(ClientError::Protocol("no HelloAck".into())),
                }
                continue;
            }
            let count = reader
                .read(decoder.unfilled())
                .await
                .map_err(|e| failed(e.to_string()))?;
            if count == 0 {
                return Err(failed("closed during the handshake".into()));
            }
            decoder.commit(count);
        }
    })
    .await
    .map_err(|_| failed("handshake timed out".into()))??;
    Ok((reader, writer, ack))
}

impl Connection {
    async fn open(
        addr: &str,
        timeout: Duration,
        password: Option<&Password>,
    ) -> Result<(Self, HelloAck), ClientError> {
        let (reader, writer, ack) = handshake(addr, timeout, password).await?;
        let (frames, outgoing) = mpsc::channel(4096);
        let waiters: Waiters = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(write_loop(writer, outgoing, alive.clone()));
        tokio::spawn(read_loop(
            reader,
            waiters.clone(),
            alive.clone(),
            addr.to_owned(),
        ));
        let connection = Self {
            frames,
            waiters,
            next_id: AtomicU32::new(1),
            alive,
            addr: addr.to_owned(),
        };
        Ok((connection, ack))
    }

    async fn request(&self, request: &Request<'_>) -> Result<Reply, ClientError> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        let frame = encode(&ClientMessage {
            request_id,
            request: *request,
        })?;
        let (done, answer) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(request_id, done);
        let broken = || ClientError::Closed {
            addr: self.addr.clone(),
        };
        if self.frames.send(frame).await.is_err() {
            self.waiters
                .lock()
                .expect("waiters lock")
                .remove(&request_id);
            return Err(broken());
        }
        answer.await.map_err(|_| broken())?
    }
}

fn encode(message: &ClientMessage<'_>) -> Result<Vec<u8>, ClientError> {
    let payload_estimate = match message.request {
        Request::Set { key, value, .. } | Request::CompareAndSet { key, value, .. } => {
            key.len() + value.len()
        }
        Request::Get { key, .. }
        | Request::Delete { key, .. }
        | Request::Exists { key, .. }
        | Request::IncrBy { key, .. } => key.len(),
        Request::MultiGet { keys, .. } => keys.encoded().len(),
        Request::MultiSet { pairs, .. } => pairs.encoded().len(),
        Request::Scan { prefix, .. } => prefix.len(),
        _ => 0,
    };
    let mut out = vec![0; FRAME_HEADER_BYTES + payload_estimate + 128];
    let len = encode_frame(message, &mut out)
        .map_err(|error| ClientError::Protocol(format!("cannot encode the request: {error}")))?;
    out.truncate(len);
    Ok(out)
}

async fn write_loop(
    writer: OwnedWriteHalf,
    mut frames: mpsc::Receiver<Vec<u8>>,
    alive: Arc<AtomicBool>,
) {
    let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, writer);
    while let Some(frame) = frames.recv().await {
        let mut result = writer.write_all(&frame).await;
        while let (Ok(()), Ok(frame)) = (&result, frames.try_recv()) {
            result = writer.write_all(&frame).await;
        }
        if result.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
    alive.store(false, Ordering::Relaxed);
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    waiters: Waiters,
    alive: Arc<AtomicBool>,
    addr: String,
) {
    let mut decoder = FrameDecoder::new(vec![0; MAX_FRAME_BYTES as usize + FRAME_HEADER_BYTES])
        .expect("frame buffer above the header size");
    let mut closing_error: Option<ClientError> = None;
    'reading: loop {
        match reader.read(decoder.unfilled()).await {
            Ok(0) | Err(_) => break,
            Ok(count) => decoder.commit(count),
        }
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(payload)) => payload,
                Ok(None) => break,
                Err(_) => break 'reading,
            };
            let Ok(message) = decode::<ServerMessage<'_>>(payload) else {
                break 'reading;
            };
            let reply = to_reply(message.response);
            if message.request_id == 0 {
                // About the connection itself (idle timeout, an oversized frame): it closes.
                if let Err(error) = reply {
                    closing_error = Some(error);
                }
                continue;
            }
            let waiter = waiters
                .lock()
                .expect("waiters lock")
                .remove(&message.request_id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(reply);
            }
        }
    }
    alive.store(false, Ordering::Relaxed);
    let error = closing_error.unwrap_or(ClientError::Closed { addr });
    for (_, waiter) in waiters.lock().expect("waiters lock").drain() {
        let _ = waiter.send(Err(error.clone()));
    }
}

fn to_reply(response: Response<'_>) -> Result<Reply, ClientError> {
    Ok(match response {
        Response::HelloAck(_) => Reply::HelloAck,
        Response::Authenticated => Reply::Authenticated,
        Response::Info(text) => Reply::Info(text.to_owned()),
        Response::Pong => Reply::Pong,
        Response::Value(value) => Reply::Value(value.map(|v| Value {
            value: v.value.to_vec(),
            version: v.version,
            expires_at_ms: v.expires_at_ms,
        })),
        Response::Stored { version } => Reply::Stored(version),
        Response::MembershipChanged { log_index, members } => Reply::MembershipChanged(
            log_index.0,
            Box::new(Membership::decode(members).map_err(|error| {
                ClientError::Protocol(format!("membership in the answer: {error}"))
            })?),
        ),
        Response::NotStored => Reply::NotStored,
        Response::VersionMismatch { current_version } => Reply::VersionMismatch(current_version),
        Response::Integer(value) => Reply::Integer(value),
        Response::Count(count) => Reply::Count(count),
        Response::Values(values) => {
            Reply::Values(values.iter().map(|v| v.map(<[u8]>::to_vec)).collect())
        }
        Response::ScanPage { next_cursor, keys } => Reply::ScanPage {
            next_cursor,
            keys: keys.iter().flatten().map(<[u8]>::to_vec).collect(),
        },
        Response::Saved(report) => Reply::Saved(report),
        Response::ClusterStatus(status) => Reply::ClusterStatus(NodeStatus {
            node_id: status.node_id,
            role: status.role,
            term: status.term,
            leader_id: status.leader_id,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            last_index: status.last_index,
            members: status
                .members()
                .collect::<Result<_, _>>()
                .map_err(|error| ClientError::Protocol(format!("cluster status: {error}")))?,
        }),
        Response::Error(error) => {
            return Err(ClientError::Server {
                code: error.code,
                detail: error.detail.to_owned(),
            })
        }
    })
}

/// A client of one memdi node. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: String,
    options: ClientOptions,
    pool: Vec<tokio::sync::Mutex<Option<Arc<Connection>>>>,
    next: AtomicUsize,
    hello: Mutex<Option<HelloAck>>,
}

fn unexpected(reply: Reply) -> ClientError {
    ClientError::Protocol(format!("{reply:?}"))
}

impl Client {
    /// Connects to the node at `addr` (`host:port`) with default options.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        Self::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects with `options`; fails if the first connection cannot be made.
    pub async fn connect_with(addr: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let pool = (0..options.pool_size.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let client = Self {
            inner: Arc::new(Inner {
                addr: addr.to_owned(),
                options,
                pool,
                next: AtomicUsize::new(0),
                hello: Mutex::new(None),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// What the node said in its handshake (its id, cluster and limits).
    pub fn hello(&self) -> Option<HelloAck> {
        *self.inner.hello.lock().expect("hello lock")
    }

    /// A live connection from the pool, opened if needed.
    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let slot = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.pool.len();
        let mut slot = self.inner.pool[slot].lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.alive.load(Ordering::Relaxed) {
                return Ok(connection.clone());
            }
        }
        let (connection, ack) = Connection::open(
            &self.inner.addr,
            self.inner.options.connect_timeout,
            self.inner.options.password.as_ref(),
        )
        .await?;
        *self.inner.hello.lock().expect("hello lock") = Some(ack);
        let connection = Arc::new(connection);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Sends one request, retrying while the answer says it was not executed.
    pub async fn request(&self, request: &Request<'_>) -> Result<Reply, ClientError> {
        let options = &self.inner.options;
        let mut backoff = None;
        let mut attempt = 1;
        loop {
            let result = match self.connection().await {
                Ok(connection) => connection.request(request).await,
                Err(error) => Err(error),
            };
            let retry = match &result {
                Err(ClientError::Server { code, .. }) => {
                    matches!(code, ErrorCode::NoLeader | ErrorCode::Busy)
                }
                // Could not connect: nothing was sent.
                Err(ClientError::Connection { .. }) => true,
                _ => false,
            };
            if !retry || attempt >= options.max_attempts {
                return result;
            }
            attempt += 1;
            // A full log (`Busy`) frees up as soon as followers catch up, in a millisecond
            // or so; a leader takes an election timeout to appear.
            let busy = matches!(
                &result,
                Err(ClientError::Server {
                    code: ErrorCode::Busy,
                    ..
                })
            );
            let (first, longest) = if busy {
                (
                    BUSY_MIN_BACKOFF.min(options.min_backoff),
                    BUSY_MAX_BACKOFF.min(options.max_backoff),
                )
            } else {
                (options.min_backoff, options.max_backoff)
            };
            let pause = backoff.unwrap_or(first).min(longest);
            tokio::time::sleep(pause).await;
            backoff = Some((pause * 2).min(options.max_backoff));
        }
    }

    /// Checks the node answers.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(&Request::Ping).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Reads a key with the client's read consistency.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, ClientError> {
        self.get_with(key, self.inner.options.read).await
    }

    /// Reads a key; `ReadConsistency::Stale` is answered by the node from its own store.
    pub async fn get_with(
        &self,
        key: &[u8],
        read: ReadConsistency,
    ) -> Result<Option<Value>, ClientError> {
        match self.request(&Request::Get { key, read }).await? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a key; `Ok(Some(version))` if stored, `Ok(None)` if an NX/XX condition failed.
    pub async fn set(
        &self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
    ) -> Result<Option<u64>, ClientError> {
        let request = Request::Set {
            key,
            value,
            condition: options.condition,
            expiry: options.ttl_ms.map_or(Expiry::None, Expiry::AfterMs),
            write: WriteOptions {
                ack: options.ack,
                durability: None,
            },
        };
        match self.request(&request).await? {
            Reply::Stored(version) => Ok(Some(version)),
            Reply::NotStored => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a key; whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, ClientError> {
        let request = Request::Delete {
            key,
            write: WriteOptions::default(),
        };
        match self.request(&request).await? {
            Reply::Count(count) => Ok(count > 0),
            other => Err(unexpected(other)),
        }
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: &[u8]) -> Result<bool, ClientError> {
        let read = self.inner.options.read;
        match self.request(&Request::Exists { key, read }).await? {
            Reply::Count(count) => Ok(count > 0),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `delta` to a decimal integer value (absent counts as 0); the new value.
    pub async fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, ClientError> {
        let request = Request::IncrBy {
            key,
            delta,
            write: WriteOptions::default(),
        };
        match self.request(&request).await? {
            Reply::Integer(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` only if the key's version is `expected_version` (0: must not exist).
    pub async fn compare_and_set(
        &self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
    ) -> Result<CasOutcome, ClientError> {
        let request = Request::CompareAndSet {
            key,
            expected_version,
            value,
            expiry: Expiry::None,
            write: WriteOptions::default(),
        };
        match self.request(&request).await? {
            Reply::Stored(version) => Ok(CasOutcome::Stored(version)),
            Reply::VersionMismatch(current) => Ok(CasOutcome::Mismatch(current)),
            other => Err(unexpected(other)),
        }
    }

    /// Reads many keys; one item per key, in order.
    pub async fn mget(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let mut buffer = vec![0; keys.iter().map(|key| key.len() + 5).sum::<usize>()];
        let mut writer = PackedWriter::new(&mut buffer);
        for key in keys {
            writer
                .push(Some(key))
                .map_err(|error| ClientError::Protocol(error.to_string()))?;
        }
        let keys: Packed<'_> = writer.finish();
        let read = self.inner.options.read;
        match self.request(&Request::MultiGet { keys, read }).await? {
            Reply::Values(values) => Ok(values),
            other => Err(unexpected(other)),
        }
    }

    /// One page of keys starting with `prefix`: the next cursor (0 when done) and the keys.
    pub async fn scan(
        &self,
        cursor: u64,
        prefix: &[u8],
        count: u32,
    ) -> Result<(u64, Vec<Vec<u8>>), ClientError> {
        let read = self.inner.options.read;
        let request = Request::Scan {
            cursor,
            prefix,
            count,
            read,
        };
        match self.request(&request).await? {
            Reply::ScanPage { next_cursor, keys } => Ok((next_cursor, keys)),
            other => Err(unexpected(other)),
        }
    }

    /// Every key starting with `prefix` (each once), paging through SCAN.
    pub async fn scan_all(&self, prefix: &[u8], count: u32) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut keys = std::collections::BTreeSet::new();
        let mut cursor = 0;
        loop {
            let (next, page) = self.scan(cursor, prefix, count).await?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// The number of keys.
    pub async fn dbsize(&self) -> Result<u64, ClientError> {
        let read = self.inner.options.read;
        match self.request(&Request::DbSize { read }).await? {
            Reply::Count(count) => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the node to write a snapshot now; returns once it is renamed and fsynced.
    pub async fn save(&self) -> Result<SaveReport, ClientError> {
        match self.request(&Request::Save).await? {
            Reply::Saved(report) => Ok(report),
            other => Err(unexpected(other)),
        }
    }

    /// Adds node `node_id`, whose peer port is at `address`, to the cluster as a learner
    /// (promoted to voter once caught up). Returns the log index of the change and the
    /// membership with it.
    pub async fn add_member(
        &self,
        node_id: u64,
        address: &str,
    ) -> Result<(u64, Box<Membership>), ClientError> {
        let request = Request::AddMember {
            node_id: NodeId(node_id),
            address: address.as_bytes(),
        };
        match self.request(&request).await? {
            Reply::MembershipChanged(index, membership) => Ok((index, membership)),
            other => Err(unexpected(other)),
        }
    }

    /// The node's statistics, as INFO-style text (`# Section`, then `key:value` lines).
    pub async fn info(&self) -> Result<String, ClientError> {
        match self.request(&Request::Info).await? {
            Reply::Info(text) => Ok(text),
            other => Err(unexpected(other)),
        }
    }

    /// The node's view of the cluster.
    pub async fn cluster_status(&self) -> Result<NodeStatus, ClientError> {
        match self.request(&Request::ClusterStatus).await? {
            Reply::ClusterStatus(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// Removes node `node_id` from the cluster. Returns the log index of the change.
    pub async fn remove_member(&self, node_id: u64) -> Result<u64, ClientError> {
        let request = Request::RemoveMember {
            node_id: NodeId(node_id),
        };
        match self.request(&request).await? {
            Reply::MembershipChanged(index, _) => Ok(index),
            other => Err(unexpected(other)),
        }
    }
}
