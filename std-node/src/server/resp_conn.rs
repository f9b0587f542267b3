//! RESP connections: parse Redis commands, pass the requests they become to the node task
//! as a native client's frames, and write the answers back in command order.
//!
//! A RESP connection registers with the node task exactly as a native client does (a
//! `Hello` frame, then request frames), so forwarding, waiting for a quorum and every other
//! rule of the core apply unchanged. The requests of every command one read of the socket
//! gave go to the node task as one message, and the node task answers with one message of
//! frames per turn, so a pipeline costs a few channel hops rather than two per command. One task per connection owns the socket, the parse
//! buffer and the queue of commands awaiting answers:
//! - pipelined commands are answered in order (answers from the core may arrive out of
//!   order: a quorum write can still wait while a later read is answered);
//! - at most [`MAX_PENDING`] commands, and about as many core requests, wait at once; past
//!   that the task stops reading (so the node task's reply queue for it never fills);
//! - replies queue in an output buffer of at most `--client-output-limit-bytes`: a client that
//!   sends but never reads is disconnected, as Redis's client-output-buffer-limit does.
//! - a connection that sends nothing for `--idle-timeout-secs` while no command of it waits
//!   for the core is closed, as Redis's `timeout` does: without this a half-open connection,
//!   or one that sent part of a command and stopped (slowloris), held one of the
//!   `--max-clients` places for ever (found by `tests/tests/hostile.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memdi_core::wire::{
    decode, encode, ClientMessage, ClusterId, Hello, Request, Response, Sender, ServerMessage,
    FRAME_HEADER_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frames::split_frames;
use super::node_task::{frames_taken, ClientLink, ConnId, FrameBatch, Input, Outbound};
use super::request_ids::RequestIds;
use crate::resp::auth::{protocol_error_text, unauthenticated_limits};
use crate::resp::dispatch::{dispatch, Plan, StatusQuery};
use crate::resp::encode::reply_bytes;
use crate::resp::info::{info_text, write_role};
use crate::resp::job::{write_shape_reply, Job, RequestSink};
use crate::resp::parse::{parse_into, ParseLimits};
use crate::resp::{ClientState, NodeFacts};

/// Commands of one connection waiting for the core at once.
pub const MAX_PENDING: usize = 4096;
/// The idle timer's period when there is no idle timeout (it is then never polled).
const NEVER_IDLE: Duration = Duration::from_secs(24 * 60 * 60);
/// Replies the node task may queue for one connection.
const REPLY_QUEUE: usize = 16 * 1024;
/// RESP connection ids are kept apart from native ones (which count up from 1) by this bit.
const RESP_CONN_BIT: u64 = 1 << 63;

/// What every RESP connection shares.
#[derive(Debug, Clone)]
pub struct RespSettings {
    /// Where requests go.
    pub inputs: mpsc::Sender<Input>,
    /// The node's facts and counters.
    pub facts: Arc<NodeFacts>,
    /// Parse limits.
    pub limits: ParseLimits,
    /// Largest frame the node takes (the handshake says it).
    pub max_frame_bytes: u32,
    /// Reply bytes a client may leave unread (`--client-output-limit-bytes`).
    pub output_limit_bytes: usize,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// Tracks connection tasks.
    pub tasks: TaskTracker,
}

/// Accepts RESP connections until shutdown.
pub async fn accept_loop(listener: TcpListener, settings: RespSettings) {
    let permits = Arc::new(Semaphore::new(settings.facts.max_clients as usize));
    let next_id = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = settings.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a RESP client failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!("refused RESP client {addr}: too many clients");
            settings.tasks.spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let settings = settings.clone();
        let tasks = settings.tasks.clone();
        tasks.spawn(async move {
            settings
                .facts
                .connections_received
                .fetch_add(1, Ordering::Relaxed);
            settings
                .facts
                .connected_clients
                .fetch_add(1, Ordering::Relaxed);
            let conn = Connection::open(stream, id, &settings).await;
            if let Some(conn) = conn {
                conn.serve(&settings).await;
            }
            settings
                .facts
                .connected_clients
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// One command awaiting its reply, in command order.
#[derive(Debug)]
struct Slot {
    job: Option<Job>,
    reply: Option<Vec<u8>>,
    close_after: bool,
}

/// Encodes a job's requests as native frames' payloads, each under a fresh request id
/// that maps back to the job's slot.
struct Outgoing<'c> {
    ids: &'c mut RequestIds,
    seq: u64,
    payloads: &'c mut FrameBatch,
    max_frame_bytes: usize,
    /// A request could not be encoded: the command is answered with an error instead.
    failed: bool,
}

impl RequestSink for Outgoing<'_> {
    fn send(&mut self, request: &Request<'_>) {
        let request_id = self.ids.assign(self.seq);
        let message = ClientMessage {
            request_id,
            request: *request,
        };
        // Parse limits keep requests far below this size.
        if let Err(error) = self.payloads.push_message(&message, self.max_frame_bytes) {
            tracing::error!("a RESP request could not be encoded: {error:?}");
            self.ids.take(request_id);
            self.failed = true;
        }
    }
}

struct Connection {
    conn: ConnId,
    stream: TcpStream,
    client: ClientState,
    replies: mpsc::Receiver<Outbound>,
    close: CancellationToken,
    /// Lowered as replies move to this task's own output buffer (which has its own limit).
    unwritten_bytes: Arc<AtomicUsize>,
}

impl Connection {
    /// Registers with the node task through a native handshake.
    async fn open(stream: TcpStream, id: u64, settings: &RespSettings) -> Option<Self> {
        let addr = stream.peer_addr().ok()?;
        let local_addr = stream.local_addr().ok()?;
        let conn = RESP_CONN_BIT | id;
        let (sender, mut replies) = mpsc::channel(REPLY_QUEUE);
        // Shutdown cancels it too: the connection's loop then waits on one token, not two.
        let close = settings.shutdown.child_token();
        let hello = ClientMessage {
            request_id: 0,
            request: Request::Hello(Hello::new(
                ClusterId(0),
                Sender::Client,
                settings.max_frame_bytes,
            )),
        };
        let mut payload = vec![0; 256];
        let len = encode(&hello, &mut payload).ok()?.len();
        payload.truncate(len);
        let link = ClientLink::new(sender, close.clone());
        let unwritten_bytes = link.unwritten_bytes.clone();
        settings
            .inputs
            .send(Input::ClientHello {
                conn,
                payload,
                link,
            })
            .await
            .ok()?;
        match replies.recv().await {
            Some(Outbound::Frames(frames)) => match split_frames(&frames)
                .next()
                .and_then(decode_response)
            {
                Some((_, Response::HelloAck(_))) => {}
                other => {
                    tracing::warn!("RESP client {addr}: the node refused the handshake: {other:?}");
                    return None;
                }
            },
            _ => return None,
        }
        Some(Self {
            conn,
            stream,
            client: ClientState {
                id,
                name: None,
                addr,
                local_addr,
                last_command: String::new(),
                authenticated: settings.facts.requirepass.is_none(),
                last_spec: None,
            },
            replies,
            close,
            unwritten_bytes,
        })
    }

    async fn serve(self, settings: &RespSettings) {
        let Self {
            conn,
            stream,
            mut client,
            mut replies,
            close,
            unwritten_bytes,
        } = self;
        let (mut reader, mut writer) = stream.into_split();
        let mut input: Vec<u8> = Vec::with_capacity(16 * 1024);
        let mut output: Vec<u8> = Vec::new();
        let mut written = 0usize;
        let mut pending: VecDeque<Slot> = VecDeque::new();
        let mut first_seq = 0u64;
        let mut ids = RequestIds::default();
        let mut closing = false;
        let max_frame_bytes = settings.max_frame_bytes as usize;
        let idle = idle_timeout(&settings.facts);
        let mut last_read = tokio::time::Instant::now();
        // When the first byte of a command still incomplete arrived: a command must arrive
        // whole within the idle timeout of its first byte (no slowloris by trickling).
        let mut partial_since: Option<tokio::time::Instant> = None;
        // One timer for the connection's life, not one made and dropped in every pass of
        // the loop (which showed in profiles): it goes off at or before the idle deadline
        // (which only moves later), and is put off when the deadline has moved.
        let idle_timer = tokio::time::sleep_until(last_read + idle.unwrap_or(NEVER_IDLE));
        // Where each request's arguments are parsed to, kept from one request to the next.
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        // Made once, not in every pass of the loop: each made anew registered a waiter with
        // its token and took it back, which showed in profiles of pipelined commands.
        // `close` is a child of the shutdown token, so this one future stands for both.
        let closed = close.cancelled();
        tokio::pin!(closed, idle_timer);
        let mut shutting_down = false;
        loop {
            // Replies ready at the front of the queue move to the output, in order.
            while pending.front().is_some_and(|slot| slot.reply.is_some()) {
                let slot = pending.pop_front().expect("front checked");
                first_seq += 1;
                output.extend_from_slice(&slot.reply.expect("checked"));
                closing |= slot.close_after;
            }
            if output.len() - written > settings.output_limit_bytes {
                tracing::warn!(
                    "RESP client {}: more than {} reply bytes unread; disconnecting",
                    client.addr,
                    settings.output_limit_bytes
                );
                break;
            }
            // Closing (QUIT, a protocol error, shutdown): every command taken is answered
            // and its reply written first.
            if closing && pending.is_empty() && written == output.len() {
                break;
            }
            let can_read = !closing && pending.len() < MAX_PENDING && ids.len() < MAX_PENDING;
            if input.capacity() - input.len() < 4096 {
                input.reserve(16 * 1024);
            }
            tokio::select! {
                // Shutdown: stop reading; the node task answers what it has taken (and
                // then drops this connection's reply queue, which ends it). Otherwise the
                // node task closed the connection.
                _ = &mut closed, if !shutting_down => {
                    if !settings.shutdown.is_cancelled() {
                        break;
                    }
                    shutting_down = true;
                    closing = true;
                    continue;
                }
                read = reader.read_buf(&mut input), if can_read => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => last_read = tokio::time::Instant::now(),
                },
                // Idle with nothing owed to it (a command waiting for a quorum is not idle).
                _ = &mut idle_timer, if idle.is_some() && pending.is_empty() => {
                    let deadline = partial_since.unwrap_or(last_read) + idle.unwrap_or(NEVER_IDLE);
                    if tokio::time::Instant::now() < deadline {
                        idle_timer.as_mut().reset(deadline);
                        continue;
                    }
                    tracing::debug!(
                        "RESP client {}: idle timeout{}; closing",
                        client.addr,
                        if partial_since.is_some() {
                            " (a command did not arrive whole within it)"
                        } else {
                            ""
                        }
                    );
                    break;
                }
                reply = replies.recv() => {
                    // Every message queued is taken now: the node task sends one per turn.
                    let mut payloads = FrameBatch::default();
                    let mut next = reply;
                    let mut ended = false;
                    loop {
                        match next {
                            Some(Outbound::Frames(bytes)) => {
                                frames_taken(&unwritten_bytes, bytes.len());
                                for frame in split_frames(&bytes) {
                                    let Some((request_id, response)) = decode_response(frame)
                                    else {
                                        continue;
                                    };
                                    let Some(seq) = ids.take(request_id) else {
                                        continue;
                                    };
                                    // The next command in order with a one-request job (GET,
                                    // SET, INCR...): its reply goes straight to the output.
                                    if seq == first_seq {
                                        if let Some(Slot {
                                            job: Some(Job::One(shape)),
                                            ..
                                        }) = pending.front()
                                        {
                                            write_shape_reply(shape, &response, &mut output);
                                            pending.pop_front();
                                            first_seq += 1;
                                            continue;
                                        }
                                    }
                                    let slot = &mut pending[(seq - first_seq) as usize];
                                    let mut sink = Outgoing {
                                        ids: &mut ids,
                                        seq,
                                        payloads: &mut payloads,
                                        max_frame_bytes,
                                        failed: false,
                                    };
                                    if let Some(job) = slot.job.as_mut() {
                                        if let Some(reply) = job.on_response(&response, &mut sink)
                                        {
                                            slot.reply = Some(reply);
                                            slot.job = None;
                                        } else if sink.failed {
                                            slot.reply = Some(too_large());
                                            slot.job = None;
                                        }
                                    }
                                }
                            }
                            Some(Outbound::Close) | None => {
                                ended = true;
                                break;
                            }
                        }
                        match replies.try_recv() {
                            Ok(more) => next = Some(more),
                            Err(_) => break,
                        }
                    }
                    if ended || !send_all(settings, conn, payloads).await {
                        break;
                    }
                    continue;
                }
                wrote = writer.write(&output[written..]), if written < output.len() => match wrote {
                    Ok(0) | Err(_) => break,
                    Ok(count) => {
                        written += count;
                        if written == output.len() {
                            output.clear();
                            written = 0;
                        }
                        continue;
                    }
                },
            }
            // New bytes: take every complete command.
            let mut consumed = 0;
            let mut incomplete = false;
            // A request's payload is about as long as its command (plus room to encode the
            // last one in), so one allocation usually holds them all.
            let mut payloads = FrameBatch::with_capacity(input.len() + 256);
            // The arguments of each request, borrowed from `input`: one list per read.
            let mut args: Vec<&[u8]> = Vec::new();
            // Commands taken from this read, added to the shared counter once (an atomic
            // add per command showed in profiles) and before INFO reads it.
            let mut commands = 0u64;
            let count = |commands: &mut u64| {
                settings
                    .facts
                    .commands_processed
                    .fetch_add(std::mem::take(commands), Ordering::Relaxed);
            };
            while !closing && pending.len() < MAX_PENDING && ids.len() < MAX_PENDING {
                // A stranger's requests are kept small (`resp::auth`); AUTH lifts the
                // limits for the requests after it, even in the same read.
                let limits = if client.authenticated {
                    settings.limits
                } else {
                    unauthenticated_limits(&settings.limits)
                };
                let used = match parse_into(&input[consumed..], &limits, &mut ranges) {
                    Ok(Some(used)) => used,
                    Ok(None) => {
                        incomplete = consumed < input.len();
                        break;
                    }
                    Err(error) => {
                        let text = protocol_error_text(&error, client.authenticated);
                        // Whatever was queued is answered first, then the connection closes.
                        pending.push_back(Slot {
                            job: None,
                            reply: Some(reply_bytes(|r| r.error(&text))),
                            close_after: true,
                        });
                        closing = true;
                        break;
                    }
                };
                let base = consumed;
                consumed += used;
                if ranges.is_empty() {
                    continue;
                }
                args.clear();
                args.extend(
                    ranges
                        .iter()
                        .map(|range| &input[base + range.start..base + range.end]),
                );
                commands += 1;
                let seq = first_seq + pending.len() as u64;
                let mut sink = Outgoing {
                    ids: &mut ids,
                    seq,
                    payloads: &mut payloads,
                    max_frame_bytes,
                    failed: false,
                };
                let plan = dispatch(&args, &mut client, &settings.facts, &mut sink);
                let plan = if sink.failed {
                    Plan::Reply(too_large())
                } else {
                    plan
                };
                let slot = match plan {
                    Plan::Reply(reply) => Slot {
                        job: None,
                        reply: Some(reply),
                        close_after: false,
                    },
                    Plan::ReplyAndClose(reply) => {
                        closing = true;
                        Slot {
                            job: None,
                            reply: Some(reply),
                            close_after: true,
                        }
                    }
                    Plan::Core(job) => Slot {
                        job: Some(job),
                        reply: None,
                        close_after: false,
                    },
                    Plan::Status(query) => {
                        count(&mut commands);
                        // Earlier commands reach the node first, so the state includes them.
                        if !send_all(settings, conn, std::mem::take(&mut payloads)).await {
                            return finish(settings, conn).await;
                        }
                        let reply = status_reply(settings, &query).await;
                        Slot {
                            job: None,
                            reply: Some(reply),
                            close_after: false,
                        }
                    }
                    Plan::Save { background } => {
                        if !send_all(settings, conn, std::mem::take(&mut payloads)).await {
                            return finish(settings, conn).await;
                        }
                        let reply = save_reply(settings, background).await;
                        Slot {
                            job: None,
                            reply: Some(reply),
                            close_after: false,
                        }
                    }
                };
                pending.push_back(slot);
            }
            count(&mut commands);
            input.drain(..consumed);
            partial_since = match (incomplete, partial_since) {
                (false, _) => None,
                // Still the same command: it began before this read.
                (true, Some(since)) if consumed == 0 => Some(since),
                (true, _) => Some(tokio::time::Instant::now()),
            };
            if !send_all(settings, conn, payloads).await {
                break;
            }
        }
        finish(settings, conn).await;
        let _ = writer.shutdown().await;
    }
}

/// `--idle-timeout-secs` as a duration; `None` for 0 (never).
fn idle_timeout(facts: &NodeFacts) -> Option<Duration> {
    (facts.idle_timeout_secs > 0).then(|| Duration::from_secs(facts.idle_timeout_secs))
}

fn too_large() -> Vec<u8> {
    reply_bytes(|r| r.error("ERR request larger than this node's largest frame"))
}

async fn finish(settings: &RespSettings, conn: ConnId) {
    if !settings.shutdown.is_cancelled() {
        let _ = settings.inputs.send(Input::ClientClosed { conn }).await;
    }
}

/// Passes request payloads to the node task, as one message; false if it has stopped.
async fn send_all(settings: &RespSettings, conn: ConnId, frames: FrameBatch) -> bool {
    if frames.is_empty() {
        return true;
    }
    settings
        .inputs
        .send(Input::ClientFrames { conn, frames })
        .await
        .is_ok()
}

fn decode_response(frame: &[u8]) -> Option<(u32, Response<'_>)> {
    let message = decode::<ServerMessage<'_>>(frame.get(FRAME_HEADER_BYTES..)?).ok()?;
    Some((message.request_id, message.response))
}

async fn status_reply(settings: &RespSettings, query: &StatusQuery) -> Vec<u8> {
    let (answer, status) = oneshot::channel();
    if settings
        .inputs
        .send(Input::Status { answer })
        .await
        .is_err()
    {
        return reply_bytes(|r| r.error("ERR the node is shutting down"));
    }
    let Ok(status) = status.await else {
        return reply_bytes(|r| r.error("ERR the node is shutting down"));
    };
    let facts = &settings.facts;
    reply_bytes(|r| match query {
        StatusQuery::Info(sections) => r.bulk(info_text(sections, facts, &status).as_bytes()),
        StatusQuery::Role => write_role(r, &status),
        StatusQuery::LastSave => r.integer(status.last_save_unix_secs as i64),
    })
}

async fn save_reply(settings: &RespSettings, background: bool) -> Vec<u8> {
    let (answer, outcome) = oneshot::channel();
    if settings
        .inputs
        .send(Input::Save { background, answer })
        .await
        .is_err()
    {
        return reply_bytes(|r| r.error("ERR the node is shutting down"));
    }
    match outcome.await {
        Ok(Ok(())) if background => reply_bytes(|r| r.simple("Background saving started")),
        Ok(Ok(())) => reply_bytes(|r| r.simple("OK")),
        Ok(Err(error)) => reply_bytes(|r| r.error(&error)),
        Err(_) => reply_bytes(|r| r.error("ERR the node is shutting down")),
    }
}
