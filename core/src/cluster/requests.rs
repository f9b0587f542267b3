//! Client requests: the handshake, execution on the leader, forwarding from followers.
//!
//! - **Writes** are executed by the leader when they arrive, against its store: a condition
//!   (NX/XX), a compare-and-set or an increment is decided there, once, and the resulting
//!   change is logged (see `command`). With `ack: leader` the answer goes out at once;
//!   with `ack: quorum` it waits (a ticket) until the entry commits.
//! - **Linearizable reads** use ReadIndex: the leader reads its store when the request
//!   arrives, then holds the answer until (a) everything up to its last log index has
//!   committed, which covers the writes it acknowledged with `ack: leader` before the read,
//!   and (b) a majority has answered a heartbeat round begun after the read arrived, which
//!   proves no newer leader could have committed anything the read missed. ReadIndex rather
//!   than a lease because it needs no assumption about clock drift: the price is one round
//!   trip per batch of reads.
//! - **Stale reads** are answered by any node from its own store.
//! - A follower **forwards** writes and linearizable reads to the leader it knows and relays
//!   the answer; knowing none, it holds them until a leader is elected or the request
//!   timeout passes.

use core::fmt::Write as _;

use super::command::{ApplyError, Command, Pairs};
use super::membership::MembershipError;
use super::node::{Node, PeerAction, Role};
use super::reconfigure::ChangeError;
use super::replication::ProposeError;
use super::tickets::{ReplyTo, Ticket, Wait};
use crate::store::{integer, SetCondition, WriteError};
use crate::wire::{
    decode, encode, encode_frame, AckLevel, Capacities, ClientMessage, Durability, ErrorCode,
    ErrorReply, Expiry, HelloAck, LogIndex, NodeId, PackedWriter, PeerMessage, ReadConsistency,
    Request, Response, ServerMessage, ValueRef, WriteOptions, PROTOCOL_VERSION,
    STATUS_SCRATCH_BYTES,
};

/// What the shell does after [`Node::handle_client_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Send the first `len` bytes of the buffer to the client; then close the connection if
    /// `close`.
    Reply {
        /// Bytes written.
        len: usize,
        /// Whether to close the connection after sending.
        close: bool,
    },
    /// Hold the first `len` bytes of the buffer (the answer) under `ticket` until the node
    /// releases or replaces them.
    Wait {
        /// The ticket.
        ticket: Ticket,
        /// Bytes written.
        len: usize,
    },
    /// Send the first `len` bytes of the buffer to peer `to` (the request, forwarded to the
    /// leader); the client's answer comes later under `ticket`.
    Forward {
        /// The ticket.
        ticket: Ticket,
        /// The leader.
        to: NodeId,
        /// Bytes written.
        len: usize,
    },
    /// Keep the request's bytes under `ticket`: no leader is known yet. The node asks for
    /// them again ([`TicketEvent::Resubmit`](super::TicketEvent::Resubmit)) or answers with
    /// an error when the request timeout passes.
    Hold {
        /// The ticket.
        ticket: Ticket,
    },
    /// The client asked for a snapshot (`Request::Save`; only a
    /// [`persistent`](super::NodeConfig::persistent) node gives this): write a checkpoint
    /// ([`Node::checkpoint`]) and answer `request_id` with `Response::Saved` once its files
    /// are renamed and fsynced, or with an error. The shell owns the files, so it answers.
    Save {
        /// The request's id, for the answer.
        request_id: u32,
    },
    /// The node cannot take the request now and did nothing: its log is full of writes the
    /// followers have not confirmed, too many requests wait, or a membership change is in
    /// progress. The first `len` bytes of the buffer are an error `Busy` answering it. The
    /// shell may send that (a client retries after a pause), or keep the request and
    /// submit it again shortly, which is backpressure without a round trip (the board does).
    Busy {
        /// Bytes written.
        len: usize,
    },
    /// The client asked for the node's statistics (`Request::Info`): answer `request_id`
    /// with `Response::Info`. The shell knows what the core does not (memory, connections,
    /// files, uptime), so it writes the text.
    Info {
        /// The request's id, for the answer.
        request_id: u32,
    },
}

/// What executing a request came to.
enum Exec {
    Reply(usize),
    /// An answer `Busy`: nothing was done ([`ClientAction::Busy`]).
    Busy(usize),
    Wait(Ticket, usize),
    NeedsLeader,
}

/// Whether a request only reads.
fn read_consistency(request: &Request<'_>) -> Option<ReadConsistency> {
    match *request {
        Request::Get { read, .. }
        | Request::Exists { read, .. }
        | Request::MultiGet { read, .. }
        | Request::Scan { read, .. }
        | Request::DbSize { read }
        | Request::TimeToLive { read, .. } => Some(read),
        _ => None,
    }
}

fn write_options(request: &Request<'_>) -> Option<WriteOptions> {
    match *request {
        Request::Set { write, .. }
        | Request::Delete { write, .. }
        | Request::IncrBy { write, .. }
        | Request::CompareAndSet { write, .. }
        | Request::MultiSet { write, .. }
        | Request::GetDelete { write, .. }
        | Request::SetAndGet { write, .. }
        | Request::Append { write, .. }
        | Request::SetExpiry { write, .. }
        | Request::Clear { write } => Some(write),
        _ => None,
    }
}

fn error_response(code: ErrorCode, detail: &str) -> Response<'_> {
    Response::Error(ErrorReply { code, detail })
}

fn write_error(error: WriteError) -> Response<'static> {
    match error {
        WriteError::KeyTooLarge { .. } => error_response(ErrorCode::KeyTooLarge, "key too large"),
        WriteError::ValueTooLarge { .. } => {
            error_response(ErrorCode::ValueTooLarge, "value too large")
        }
        WriteError::Full(_) => error_response(
            ErrorCode::StoreFull,
            "OOM: the store is full; delete keys or raise its limits",
        ),
    }
}

fn propose_error(error: ProposeError) -> Response<'static> {
    match error {
        ProposeError::LogFull => error_response(
            ErrorCode::Busy,
            "the log is full of writes the followers have not confirmed; retry",
        ),
        ProposeError::TooLarge => {
            error_response(ErrorCode::ValueTooLarge, "entry larger than the log")
        }
    }
}

/// The expiry a key gets from a write: none, the one it had (`current`, if live), or the
/// TTL from now on the cluster clock.
fn expiry_after_write(expiry: Expiry, current: Option<u64>, cluster_now: u64) -> Option<u64> {
    match expiry {
        Expiry::None => None,
        Expiry::Keep => current,
        Expiry::AfterMs(ms) => Some(cluster_now.saturating_add(ms)),
    }
}

/// Most keys one MSET may write: checking that a batch fits compares each key with the
/// ones after it (the core cannot allocate a set), so the batch is bounded to keep that
/// check short on the node's one thread.
pub const MAX_MULTI_SET_KEYS: usize = 4096;

/// Bytes of a refused handshake's explanation ("handshake refused: another cluster: ..."
/// with two 20-digit ids at most).
const HANDSHAKE_DETAIL_BYTES: usize = 128;

/// A write's result: the answer, and the log entry to wait for (none if nothing changed).
/// The answer may borrow the scratch buffer the write was given (GETDEL's old value).
struct WriteOutcome<'s> {
    response: Response<'s>,
    index: Option<u64>,
    /// The log had no room: nothing was done, and the same write may be tried again.
    busy: bool,
}

impl<'s> WriteOutcome<'s> {
    fn immediate(response: Response<'s>) -> Self {
        Self {
            response,
            index: None,
            busy: false,
        }
    }

    /// The entry could not be proposed.
    fn refused(error: ProposeError) -> Self {
        Self {
            busy: error == ProposeError::LogFull,
            ..Self::immediate(propose_error(error))
        }
    }
}

impl<M, L, const TICKETS: usize> Node<M, L, TICKETS>
where
    M: AsRef<[u8]> + AsMut<[u8]>,
    L: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Answers the first frame of a client connection, which must be a `Hello`. Returns the
    /// bytes written into `out` and whether the connection is accepted (if not, send the
    /// answer and close).
    pub fn handle_client_hello(&self, payload: &[u8], out: &mut [u8]) -> (usize, bool) {
        let (request_id, checked) = match decode::<ClientMessage<'_>>(payload) {
            Ok(ClientMessage {
                request_id,
                request: Request::Hello(hello),
            }) => (
                request_id,
                hello.check(self.config.cluster_id).map_err(Some),
            ),
            Ok(message) => (message.request_id, Err(None)),
            Err(_) => (0, Err(None)),
        };
        let reply_to = ReplyTo::Client { request_id };
        match checked {
            Ok(()) => {
                let limits = self.store.limits();
                let ack = HelloAck {
                    protocol_version: PROTOCOL_VERSION,
                    cluster_id: self.config.cluster_id,
                    node_id: self.config.node_id,
                    max_frame_bytes: self.config.max_frame_bytes,
                    capacities: Capacities {
                        max_keys: limits.max_keys,
                        max_key_bytes: limits.max_key_bytes,
                        max_value_bytes: limits.max_value_bytes,
                        max_total_bytes: limits.max_total_bytes,
                    },
                };
                (self.reply(reply_to, &Response::HelloAck(ack), out), true)
            }
            Err(refusal) => {
                // The reason, for the log lines on both sides (the numbers fit easily).
                let mut detail = heapless::String::<HANDSHAKE_DETAIL_BYTES>::new();
                let code = match refusal {
                    Some(error) => {
                        let _ = write!(detail, "handshake refused: {error}");
                        error.error_code()
                    }
                    None => {
                        let _ =
                            detail.push_str("handshake refused: the first frame must be a Hello");
                        ErrorCode::Malformed
                    }
                };
                (self.error_frame(reply_to, code, &detail, out), false)
            }
        }
    }

    /// Takes one frame payload from a client whose handshake was accepted.
    pub fn handle_client_frame(
        &mut self,
        now_ms: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> ClientAction {
        let message = match decode::<ClientMessage<'_>>(payload) {
            Ok(message) => message,
            Err(_) => {
                let reply_to = ReplyTo::Client { request_id: 0 };
                let len =
                    self.error_frame(reply_to, ErrorCode::Malformed, "undecodable request", out);
                return ClientAction::Reply { len, close: false };
            }
        };
        let reply_to = ReplyTo::Client {
            request_id: message.request_id,
        };
        // Admin requests about this node itself: answered here, never forwarded.
        match message.request {
            Request::ClusterStatus => {
                let mut scratch = [0u8; STATUS_SCRATCH_BYTES];
                let status = self.cluster_status(now_ms, &mut scratch);
                let len = self.reply(reply_to, &Response::ClusterStatus(status), out);
                return ClientAction::Reply { len, close: false };
            }
            Request::Info => {
                return ClientAction::Info {
                    request_id: message.request_id,
                };
            }
            Request::Save if self.config.persistent => {
                return ClientAction::Save {
                    request_id: message.request_id,
                };
            }
            Request::Save => {
                let len = self.error_frame(
                    reply_to,
                    ErrorCode::Unsupported,
                    "this node keeps nothing on disk",
                    out,
                );
                return ClientAction::Reply { len, close: false };
            }
            _ => {}
        }
        match self.execute(now_ms, &message.request, reply_to, out) {
            Exec::Reply(len) => ClientAction::Reply { len, close: false },
            Exec::Busy(len) => ClientAction::Busy { len },
            Exec::Wait(ticket, len) => ClientAction::Wait { ticket, len },
            Exec::NeedsLeader => self.forward_or_hold(now_ms, reply_to, payload, out),
        }
    }

    /// A follower passes the request to the leader, or holds it while there is none.
    fn forward_or_hold(
        &mut self,
        now_ms: u64,
        reply_to: ReplyTo,
        payload: &[u8],
        out: &mut [u8],
    ) -> ClientAction {
        let deadline_ms = now_ms + self.config.request_timeout_ms;
        let busy = |node: &Self, out: &mut [u8]| {
            let len = node.error_frame(reply_to, ErrorCode::Busy, "too many requests waiting", out);
            ClientAction::Busy { len }
        };
        // A leader whose link the shell reported broken is not forwarded to: the request
        // would wait for the whole request timeout and end with an unknown outcome, while
        // held it goes as soon as a leader is reachable (a new one is elected, or the link
        // comes back), or fails with a clear "no leader" (found by the failover benchmark:
        // one-at-a-time writers waited 2 s after a leader's kill -9).
        let reachable = |node: &Self, leader: NodeId| {
            !node
                .peers
                .iter()
                .any(|peer| peer.id == leader && peer.link_down)
        };
        match self
            .leader_id
            .filter(|&leader| leader != self.config.node_id && reachable(self, leader))
        {
            Some(leader) => {
                let Some(ticket) =
                    self.tickets
                        .open(reply_to, Wait::Forwarded { to: leader }, deadline_ms)
                else {
                    return busy(self, out);
                };
                let message = PeerMessage::Forward {
                    forward_id: ticket.0,
                    request: payload,
                };
                match encode_frame(&message, out) {
                    Ok(len) => ClientAction::Forward {
                        ticket,
                        to: leader,
                        len,
                    },
                    Err(_) => {
                        self.tickets.take(ticket);
                        let len = self.error_frame(
                            reply_to,
                            ErrorCode::FrameTooLarge,
                            "request too large to forward",
                            out,
                        );
                        ClientAction::Reply { len, close: false }
                    }
                }
            }
            None => match self.tickets.open(reply_to, Wait::Leader, deadline_ms) {
                Some(ticket) => ClientAction::Hold { ticket },
                None => busy(self, out),
            },
        }
    }

    /// Leader: a request a follower forwarded.
    pub(crate) fn handle_forward(
        &mut self,
        now_ms: u64,
        from: NodeId,
        forward_id: u64,
        request: &[u8],
        out: &mut [u8],
    ) -> PeerAction {
        let reply_to = ReplyTo::Peer {
            node: from,
            forward_id,
        };
        let exec = match decode::<ClientMessage<'_>>(request) {
            Ok(message) if !matches!(message.request, Request::Hello(_)) => {
                self.execute(now_ms, &message.request, reply_to, out)
            }
            _ => Exec::Reply(self.error_frame(
                reply_to,
                ErrorCode::Malformed,
                "undecodable forwarded request",
                out,
            )),
        };
        match exec {
            Exec::Reply(len) | Exec::Busy(len) => PeerAction::Send { to: from, len },
            Exec::Wait(ticket, len) => PeerAction::Wait {
                ticket,
                to: from,
                len,
            },
            // Leadership moved while the request travelled: the client retries.
            Exec::NeedsLeader => PeerAction::Send {
                to: from,
                len: self.error_frame(
                    reply_to,
                    ErrorCode::NoLeader,
                    "this node is no longer the leader; retry",
                    out,
                ),
            },
        }
    }

    /// Follower: the leader's answer to a forwarded request.
    pub(crate) fn handle_forward_reply(
        &mut self,
        forward_id: u64,
        response: &[u8],
        out: &mut [u8],
    ) -> PeerAction {
        let ticket = Ticket(forward_id);
        if !matches!(
            self.tickets.get(ticket).map(|p| p.wait),
            Some(Wait::Forwarded { .. })
        ) {
            return PeerAction::None;
        }
        let Some(pending) = self.tickets.take(ticket) else {
            return PeerAction::None;
        };
        let len = match decode::<Response<'_>>(response) {
            Ok(response) => self.reply(pending.reply_to, &response, out),
            Err(_) => self.error_frame(
                pending.reply_to,
                ErrorCode::Internal,
                "undecodable answer from the leader",
                out,
            ),
        };
        PeerAction::ClientReply { ticket, len }
    }

    /// The shell's connection to `peer` broke (reset, closed, or its process died): the
    /// requests forwarded to it will get no answer, so they end now, with their outcome
    /// unknown, rather than at the request timeout. If `peer` leads, new requests are held
    /// rather than forwarded to it until it is heard from again, it reconnects, or another
    /// leader is known. Messages of the protocol itself need nothing: they are retried.
    pub fn handle_peer_lost(&mut self, peer: NodeId) {
        use super::tickets::Ending;
        if let Some(link) = self.peers.iter_mut().find(|p| p.id == peer) {
            link.link_down = true;
        }
        self.tickets.end_where(|pending| match pending.wait {
            Wait::Forwarded { to } if to == peer => Some(Ending::Fail {
                code: ErrorCode::Timeout,
                detail: "the connection to the leader broke; outcome unknown",
            }),
            _ => None,
        });
    }

    /// This node's connection to `peer` is up, and the peer's handshake answer said it takes
    /// frames of at most `max_frame_bytes`: appends and snapshot chunks to it are kept that
    /// small from now on. A board announces a few kilobytes where a server takes a megabyte;
    /// without this a server leader would send it frames it must refuse, and it would never
    /// catch up. An entry larger than the peer's frame cannot reach it at all: give the
    /// servers store limits no larger than the smallest member's.
    pub fn handle_peer_link_up(&mut self, peer: NodeId, max_frame_bytes: u32) {
        self.peer_frame_limits.retain(|(id, _)| *id != peer);
        if self.peer_frame_limits.is_full() {
            // Links to nodes no longer members: forget the oldest.
            self.peer_frame_limits.remove(0);
        }
        let _ = self.peer_frame_limits.push((peer, max_frame_bytes));
    }

    /// The largest frame payload `peer` announced it takes (unbounded if it did not).
    pub(crate) fn frame_limit_bytes(&self, peer: NodeId) -> usize {
        self.peer_frame_limits
            .iter()
            .find(|(id, _)| *id == peer)
            .map_or(usize::MAX, |&(_, limit)| limit as usize)
    }

    /// The most entry (or snapshot chunk) bytes one message to `peer` may carry: this node's
    /// `max_append_bytes`, or less if the peer takes only small frames.
    pub(crate) fn message_budget_bytes(&self, peer: NodeId) -> usize {
        let ours = self.config.max_append_bytes;
        match self.peer_frame_limits.iter().find(|(id, _)| *id == peer) {
            Some(&(_, limit)) => {
                ours.min((limit as usize).saturating_sub(crate::wire::PEER_ENVELOPE_BYTES))
            }
            None => ours,
        }
    }

    /// A new connection from `peer` passed the handshake. It may be a new process, whose
    /// numbering of forwarded requests started again, so the record of the ids already
    /// taken from it is forgotten; that is safe because a connection delivers each frame
    /// once, and the core never sends a forwarded request twice.
    pub fn handle_peer_connected(&mut self, peer: NodeId) {
        if let Some(link) = self.peers.iter_mut().find(|p| p.id == peer) {
            link.forwards = super::node::ReplayWindow::default();
            if link.link_down {
                link.link_down = false;
                if self.leader_id == Some(peer) {
                    self.resubmit_held_requests();
                }
            }
        }
    }

    /// Fails waiting requests whose deadline has passed.
    pub(crate) fn expire_tickets(&mut self, now_ms: u64) {
        use super::tickets::Ending;
        self.tickets.end_where(|pending| {
            if pending.deadline_ms > now_ms {
                return None;
            }
            let (code, detail) = match pending.wait {
                Wait::Leader => (
                    ErrorCode::NoLeader,
                    "no leader elected within the request timeout",
                ),
                Wait::Forwarded { .. } => (
                    ErrorCode::Timeout,
                    "the leader did not answer in time; outcome unknown",
                ),
                Wait::Commit { .. } => (
                    ErrorCode::Timeout,
                    "the write was not acknowledged (by a quorum, or by the disk) in time; outcome unknown",
                ),
                Wait::Read { .. } => (
                    ErrorCode::Timeout,
                    "the read could not be confirmed in time",
                ),
            };
            Some(Ending::Fail { code, detail })
        });
    }

    /// Encodes `response` for `reply_to` into `out`: a client frame, or a `ForwardReply`
    /// frame to the follower that forwarded the request.
    pub(crate) fn reply(
        &self,
        reply_to: ReplyTo,
        response: &Response<'_>,
        out: &mut [u8],
    ) -> usize {
        let encoded = match reply_to {
            ReplyTo::Client { request_id } => encode_frame(
                &ServerMessage {
                    request_id,
                    response: *response,
                },
                out,
            ),
            ReplyTo::Peer { node, forward_id } => {
                // Within the frame the follower takes (a board's is small): a larger answer
                // becomes the error below rather than a frame that would break its link.
                let limit = self
                    .frame_limit_bytes(node)
                    .saturating_add(crate::wire::FRAME_HEADER_BYTES);
                let out_len = out.len();
                let out = &mut out[..out_len.min(limit.saturating_mul(2))];
                let (front, back) = out.split_at_mut(out.len() / 2);
                match encode(response, back) {
                    Ok(bytes) => encode_frame(
                        &PeerMessage::ForwardReply {
                            forward_id,
                            response: bytes,
                        },
                        front,
                    ),
                    Err(error) => Err(error),
                }
            }
        };
        match encoded {
            Ok(len) => len,
            Err(_) if !matches!(response, Response::Error(_)) => self.error_frame(
                reply_to,
                ErrorCode::FrameTooLarge,
                "answer larger than a frame",
                out,
            ),
            Err(_) => 0,
        }
    }

    pub(crate) fn error_frame(
        &self,
        reply_to: ReplyTo,
        code: ErrorCode,
        detail: &str,
        out: &mut [u8],
    ) -> usize {
        self.reply(reply_to, &error_response(code, detail), out)
    }

    fn execute(
        &mut self,
        now_ms: u64,
        request: &Request<'_>,
        reply_to: ReplyTo,
        out: &mut [u8],
    ) -> Exec {
        match *request {
            Request::Hello(_) => {
                return Exec::Reply(self.error_frame(
                    reply_to,
                    ErrorCode::Malformed,
                    "Hello after the handshake",
                    out,
                ))
            }
            Request::Ping => return Exec::Reply(self.reply(reply_to, &Response::Pong, out)),
            // A shell with a password answers `Auth` itself (see `crate::auth`); one reaching
            // the node means there is no password to check, which Redis also reports.
            Request::Auth { .. } => {
                return Exec::Reply(self.error_frame(
                    reply_to,
                    ErrorCode::Unsupported,
                    "Auth sent but this node has no password set",
                    out,
                ))
            }
            _ => {}
        }
        if let Some(read) = read_consistency(request) {
            if read == ReadConsistency::Stale {
                if self.store_stale || self.incoming.is_some() {
                    // This node's store is being replaced: ask the leader instead.
                    return Exec::NeedsLeader;
                }
                return Exec::Reply(self.read(now_ms, request, reply_to, out));
            }
            if self.role != Role::Leader {
                return Exec::NeedsLeader;
            }
            let len = self.read(now_ms, request, reply_to, out);
            if self.quorum() <= 1 {
                return Exec::Reply(len);
            }
            let wait = Wait::Read {
                index: self.log.last_index(),
                round: self.round + 1,
                term: self.term,
            };
            return self.wait(now_ms, reply_to, wait, len, out);
        }
        if let Some(exec) = self.execute_membership_change(now_ms, request, reply_to, out) {
            return exec;
        }
        let Some(write) = write_options(request) else {
            return Exec::Reply(self.error_frame(
                reply_to,
                ErrorCode::Unsupported,
                "unknown request",
                out,
            ));
        };
        if self.role != Role::Leader {
            return Exec::NeedsLeader;
        }
        let disk = write.durability.unwrap_or(self.config.default_durability) == Durability::Disk;
        if disk && !self.config.persistent {
            return Exec::Reply(self.error_frame(
                reply_to,
                ErrorCode::Unsupported,
                "durability disk needs a node that keeps its state on disk",
                out,
            ));
        }
        let (front, scratch) = out.split_at_mut(out.len() / 2);
        let outcome = self.write(now_ms, request, scratch);
        let len = self.reply(reply_to, &outcome.response, front);
        if outcome.busy {
            return Exec::Busy(len);
        }
        let outcome_index = outcome.index;
        let quorum =
            write.ack.unwrap_or(self.config.default_ack) == AckLevel::Quorum && self.quorum() > 1;
        if !quorum && !disk {
            return Exec::Reply(len);
        }
        match outcome_index {
            Some(index)
                if (quorum && index > self.commit_index)
                    || (disk && index > self.persisted_index) =>
            {
                let wait = Wait::Commit {
                    index,
                    term: self.term,
                    quorum,
                    disk,
                };
                self.wait(now_ms, reply_to, wait, len, out)
            }
            Some(_) => Exec::Reply(len),
            // Nothing changed, so there is nothing to write to disk.
            None if !quorum => Exec::Reply(len),
            // A write that changed nothing (a condition not met, a version mismatch, an
            // absent key deleted, a value that is not an integer) reported what the state
            // is: that answer is a read, and is confirmed like one, or a deposed leader
            // could give it from a state already overwritten.
            None => {
                let wait = Wait::Read {
                    index: self.log.last_index(),
                    round: self.round + 1,
                    term: self.term,
                };
                self.wait(now_ms, reply_to, wait, len, out)
            }
        }
    }

    /// Executes `AddMember` and `RemoveMember` (`None` for any other request).
    fn execute_membership_change(
        &mut self,
        now_ms: u64,
        request: &Request<'_>,
        reply_to: ReplyTo,
        out: &mut [u8],
    ) -> Option<Exec> {
        let change = match *request {
            Request::AddMember { node_id, address } => (node_id, Some(address)),
            Request::RemoveMember { node_id } => (node_id, None),
            _ => return None,
        };
        if self.role != Role::Leader {
            return Some(Exec::NeedsLeader);
        }
        let result = match change {
            (node_id, Some(address)) => self.add_member(now_ms, node_id, address),
            (node_id, None) => self.remove_member(now_ms, node_id),
        };
        let (code, detail) = match result {
            Ok(index) => {
                let index = index.unwrap_or(self.membership_index);
                let membership = self.membership.clone();
                let response = Response::MembershipChanged {
                    log_index: LogIndex(index),
                    members: membership.as_bytes(),
                };
                let len = self.reply(reply_to, &response, out);
                if index <= self.commit_index {
                    return Some(Exec::Reply(len));
                }
                let wait = Wait::Commit {
                    index,
                    term: self.term,
                    quorum: true,
                    disk: false,
                };
                return Some(self.wait(now_ms, reply_to, wait, len, out));
            }
            Err(ChangeError::InProgress) => {
                return Some(Exec::Busy(self.error_frame(
                    reply_to,
                    ErrorCode::Busy,
                    "a membership change is in progress; retry when it has committed",
                    out,
                )));
            }
            Err(ChangeError::LastVoter) => {
                (ErrorCode::Unsupported, "the last voter cannot be removed")
            }
            Err(ChangeError::Membership(MembershipError::TooManyMembers)) => (
                ErrorCode::Unsupported,
                "the cluster has the most members it can have",
            ),
            Err(ChangeError::Membership(_)) => {
                (ErrorCode::Malformed, "peer address longer than 64 bytes")
            }
            Err(ChangeError::Propose(error)) => {
                let len = self.reply(reply_to, &propose_error(error), out);
                return Some(if error == ProposeError::LogFull {
                    Exec::Busy(len)
                } else {
                    Exec::Reply(len)
                });
            }
        };
        Some(Exec::Reply(self.error_frame(reply_to, code, detail, out)))
    }

    /// Opens a ticket for an answer already written into `out`.
    fn wait(
        &mut self,
        now_ms: u64,
        reply_to: ReplyTo,
        wait: Wait,
        len: usize,
        out: &mut [u8],
    ) -> Exec {
        if matches!(wait, Wait::Read { .. }) {
            self.read_round_requested = true;
        }
        let deadline_ms = now_ms + self.config.request_timeout_ms;
        match self.tickets.open(reply_to, wait, deadline_ms) {
            Some(ticket) => Exec::Wait(ticket, len),
            // The write is in the log: its outcome is unknown, not refused.
            None if matches!(wait, Wait::Commit { .. }) => Exec::Reply(self.error_frame(
                reply_to,
                ErrorCode::Timeout,
                "too many requests waiting; a write's outcome is unknown",
                out,
            )),
            None => Exec::Busy(self.error_frame(
                reply_to,
                ErrorCode::Busy,
                "too many requests waiting",
                out,
            )),
        }
    }

    /// Answers a read from this node's store, as of the cluster clock.
    fn read(
        &mut self,
        now_ms: u64,
        request: &Request<'_>,
        reply_to: ReplyTo,
        out: &mut [u8],
    ) -> usize {
        let cluster_now = self.clock.now(now_ms);
        let store = &self.store;
        match *request {
            Request::Get { key, .. } => {
                let value = store.get(key, cluster_now).map(|entry| ValueRef {
                    value: entry.value,
                    version: entry.version,
                    expires_at_ms: entry.expires_at_ms,
                });
                self.reply(reply_to, &Response::Value(value), out)
            }
            Request::Exists { key, .. } => {
                let count = u64::from(store.exists(key, cluster_now));
                self.reply(reply_to, &Response::Count(count), out)
            }
            Request::DbSize { .. } => {
                self.reply(reply_to, &Response::Count(u64::from(store.len())), out)
            }
            Request::TimeToLive { key, .. } => {
                let ttl_ms = match store.get(key, cluster_now) {
                    None => -2,
                    Some(entry) => entry.expires_at_ms.map_or(-1, |at| {
                        i64::try_from(at.saturating_sub(cluster_now)).unwrap_or(i64::MAX)
                    }),
                };
                self.reply(reply_to, &Response::Integer(ttl_ms), out)
            }
            Request::MultiGet { keys, .. } => {
                let (front, back) = out.split_at_mut(out.len() / 2);
                let mut writer = PackedWriter::new(back);
                let mut fits = true;
                for key in keys.iter() {
                    let value = key
                        .and_then(|key| store.get(key, cluster_now))
                        .map(|e| e.value);
                    fits &= writer.push(value).is_ok();
                }
                let values = writer.finish();
                if !fits {
                    return self.error_frame(
                        reply_to,
                        ErrorCode::FrameTooLarge,
                        "MGET answer larger than a frame",
                        front,
                    );
                }
                self.reply(reply_to, &Response::Values(values), front)
            }
            Request::Scan {
                cursor,
                prefix,
                count,
                ..
            } => {
                let (front, back) = out.split_at_mut(out.len() / 2);
                let mut writer = PackedWriter::new(back);
                let next_cursor =
                    store.scan(cursor, prefix, count as usize, cluster_now, |entry| {
                        writer.push(Some(entry.key)).is_ok()
                    });
                self.reply(
                    reply_to,
                    &Response::ScanPage {
                        next_cursor,
                        keys: writer.finish(),
                    },
                    front,
                )
            }
            _ => self.error_frame(reply_to, ErrorCode::Unsupported, "not a read", out),
        }
    }

    /// Leader: executes a write against the store and logs the change. `scratch` holds
    /// bytes the answer or the change is built from (an old value, an appended value).
    fn write<'s>(
        &mut self,
        now_ms: u64,
        request: &Request<'_>,
        scratch: &'s mut [u8],
    ) -> WriteOutcome<'s> {
        let cluster_now = self.clock.now(now_ms);
        match *request {
            Request::Set {
                key,
                value,
                condition,
                expiry,
                ..
            } => {
                // A plain SET (no NX/XX, no KEEPTTL) needs nothing of the key it replaces:
                // the store's own lookup in `put` is then the only one.
                let current = if condition == SetCondition::Always && expiry != Expiry::Keep {
                    None
                } else {
                    self.store.get(key, cluster_now).map(|e| e.expires_at_ms)
                };
                let allowed = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => current.is_none(),
                    SetCondition::IfPresent => current.is_some(),
                };
                if !allowed {
                    return WriteOutcome::immediate(Response::NotStored);
                }
                let expires_at_ms = expiry_after_write(expiry, current.flatten(), cluster_now);
                self.store_value(now_ms, key, value, expires_at_ms)
            }
            Request::CompareAndSet {
                key,
                expected_version,
                value,
                expiry,
                ..
            } => {
                let current = self
                    .store
                    .get(key, cluster_now)
                    .map(|e| (e.version, e.expires_at_ms));
                let current_version = current.map_or(0, |(version, _)| version);
                if current_version != expected_version {
                    return WriteOutcome::immediate(Response::VersionMismatch { current_version });
                }
                let expires_at_ms = expiry_after_write(
                    expiry,
                    current.and_then(|(_, expires)| expires),
                    cluster_now,
                );
                self.store_value(now_ms, key, value, expires_at_ms)
            }
            Request::IncrBy { key, delta, .. } => {
                let current = match self.store.get(key, cluster_now) {
                    Some(entry) => match integer::parse_i64(entry.value) {
                        Some(value) => Some((value, entry.expires_at_ms)),
                        None => {
                            return WriteOutcome::immediate(error_response(
                                ErrorCode::NotAnInteger,
                                "value is not an integer or out of range",
                            ))
                        }
                    },
                    None => None,
                };
                let (value, expires_at_ms) = current.unwrap_or((0, None));
                let Some(value) = value.checked_add(delta) else {
                    return WriteOutcome::immediate(error_response(
                        ErrorCode::IntegerOverflow,
                        "increment or decrement would overflow",
                    ));
                };
                let mut text = [0; integer::MAX_DECIMAL_BYTES];
                let text = integer::format_i64(value, &mut text);
                self.put(
                    now_ms,
                    Command::Put {
                        key,
                        value: text,
                        expires_at_ms,
                    },
                    |_| Response::Integer(value),
                )
            }
            Request::Delete { key, .. } => {
                let live = self.store.exists(key, cluster_now);
                // An expired key still held is deleted too (through the log), but counts 0.
                if !live && self.store.get(key, 0).is_none() {
                    return WriteOutcome::immediate(Response::Count(0));
                }
                match self.propose(now_ms, Command::Delete { key }) {
                    Ok(index) => WriteOutcome {
                        response: Response::Count(u64::from(live)),
                        index: Some(index),
                        busy: false,
                    },
                    Err(error) => WriteOutcome::refused(error),
                }
            }
            Request::MultiSet { pairs, .. } => self.multi_set(now_ms, pairs),
            Request::GetDelete { key, .. } => self.get_delete(now_ms, key, scratch),
            Request::SetAndGet {
                key,
                value,
                condition,
                expiry,
                ..
            } => {
                let Some(old) = self.copy_value(key, cluster_now, scratch) else {
                    return WriteOutcome::immediate(error_response(
                        ErrorCode::FrameTooLarge,
                        "the old value is larger than a frame",
                    ));
                };
                let set = Request::Set {
                    key,
                    value,
                    condition,
                    expiry,
                    write: WriteOptions::default(),
                };
                let outcome = self.write(now_ms, &set, &mut []);
                let response = match outcome.response {
                    Response::Stored { .. } | Response::NotStored => {
                        Response::Value(old.map(|(len, version, expires_at_ms)| ValueRef {
                            value: &scratch[..len],
                            version,
                            expires_at_ms,
                        }))
                    }
                    error => error,
                };
                WriteOutcome {
                    response,
                    index: outcome.index,
                    busy: outcome.busy,
                }
            }
            Request::Append { key, value, .. } => self.append(now_ms, key, value, scratch),
            Request::SetExpiry { key, expiry, .. } => self.set_expiry(now_ms, key, expiry, scratch),
            Request::Clear { .. } => {
                let live = self
                    .store
                    .iter()
                    .filter(|e| e.expires_at_ms.is_none_or(|at| at > cluster_now))
                    .count();
                match self.propose(now_ms, Command::Clear) {
                    Ok(index) => WriteOutcome {
                        response: Response::Count(live as u64),
                        index: Some(index),
                        busy: false,
                    },
                    Err(error) => WriteOutcome::refused(error),
                }
            }
            _ => WriteOutcome::immediate(error_response(ErrorCode::Unsupported, "not a write")),
        }
    }

    /// Copies the live value of `key` into `scratch`; answers its length, version and
    /// expiry, `Some(None)` for a missing key, `None` if it does not fit.
    #[allow(clippy::option_option)]
    fn copy_value(
        &self,
        key: &[u8],
        cluster_now: u64,
        scratch: &mut [u8],
    ) -> Option<Option<(usize, u64, Option<u64>)>> {
        match self.store.get(key, cluster_now) {
            None => Some(None),
            Some(entry) => {
                let len = entry.value.len();
                scratch.get_mut(..len)?.copy_from_slice(entry.value);
                Some(Some((len, entry.version, entry.expires_at_ms)))
            }
        }
    }

    /// MSET: every pair in one `PutMany` entry, applied only if all of them fit.
    fn multi_set(&mut self, now_ms: u64, pairs: crate::wire::Packed<'_>) -> WriteOutcome<'static> {
        if Pairs::new(pairs).is_none() || pairs.is_empty() {
            return WriteOutcome::immediate(error_response(
                ErrorCode::Malformed,
                "MSET needs an even, non-zero number of items, none of them None",
            ));
        }
        if pairs.len() / 2 > MAX_MULTI_SET_KEYS {
            return WriteOutcome::immediate(error_response(
                ErrorCode::Unsupported,
                "MSET of more than 4096 keys; split it into several",
            ));
        }
        self.put(now_ms, Command::PutMany { pairs }, |version| {
            Response::Stored { version }
        })
    }

    /// GETDEL: answers the old value (copied into `scratch`) and logs the delete.
    fn get_delete<'s>(
        &mut self,
        now_ms: u64,
        key: &[u8],
        scratch: &'s mut [u8],
    ) -> WriteOutcome<'s> {
        let cluster_now = self.clock.now(now_ms);
        let old = match self.copy_value(key, cluster_now, scratch) {
            Some(old) => old,
            None => {
                return WriteOutcome::immediate(error_response(
                    ErrorCode::FrameTooLarge,
                    "the value is larger than a frame",
                ))
            }
        };
        let Some((len, version, expires_at_ms)) = old else {
            // Absent (or expired): the ordinary delete path reclaims an expired record.
            let outcome = self.write(
                now_ms,
                &Request::Delete {
                    key,
                    write: WriteOptions::default(),
                },
                &mut [],
            );
            return WriteOutcome {
                response: match outcome.response {
                    Response::Count(_) => Response::Value(None),
                    error => error,
                },
                index: outcome.index,
                busy: outcome.busy,
            };
        };
        match self.propose(now_ms, Command::Delete { key }) {
            Ok(index) => WriteOutcome {
                response: Response::Value(Some(ValueRef {
                    value: &scratch[..len],
                    version,
                    expires_at_ms,
                })),
                index: Some(index),
                busy: false,
            },
            Err(error) => WriteOutcome::refused(error),
        }
    }

    /// APPEND: builds the new value in `scratch` and logs it as a `Put` keeping the TTL.
    fn append<'s>(
        &mut self,
        now_ms: u64,
        key: &[u8],
        suffix: &[u8],
        scratch: &'s mut [u8],
    ) -> WriteOutcome<'s> {
        let cluster_now = self.clock.now(now_ms);
        let max = self.store.limits().max_value_bytes as usize;
        let (old_len, expires_at_ms) = match self.store.get(key, cluster_now) {
            Some(entry) => (entry.value.len(), entry.expires_at_ms),
            None => (0, None),
        };
        let new_len = old_len.saturating_add(suffix.len());
        if new_len > max || new_len > scratch.len() {
            return WriteOutcome::immediate(write_error(WriteError::ValueTooLarge {
                len: new_len,
                max: self.store.limits().max_value_bytes,
            }));
        }
        if let Some(entry) = self.store.get(key, cluster_now) {
            scratch[..old_len].copy_from_slice(entry.value);
        }
        scratch[old_len..new_len].copy_from_slice(suffix);
        let command = Command::Put {
            key,
            value: &scratch[..new_len],
            expires_at_ms,
        };
        self.put(now_ms, command, |_| Response::Count(new_len as u64))
    }

    /// EXPIRE, PEXPIRE, PERSIST: logs the key's value again with its new expiry (or its
    /// delete, for a TTL of 0), so that replicas need nothing but the entry.
    fn set_expiry<'s>(
        &mut self,
        now_ms: u64,
        key: &[u8],
        expiry: Expiry,
        scratch: &'s mut [u8],
    ) -> WriteOutcome<'s> {
        let cluster_now = self.clock.now(now_ms);
        let Some(current) = self.store.get(key, cluster_now).map(|e| e.expires_at_ms) else {
            return WriteOutcome::immediate(Response::Count(0));
        };
        let expires_at_ms = match expiry {
            Expiry::Keep => return WriteOutcome::immediate(Response::Count(1)),
            Expiry::None if current.is_none() => {
                return WriteOutcome::immediate(Response::Count(0))
            }
            Expiry::None => None,
            Expiry::AfterMs(0) => {
                return match self.propose(now_ms, Command::Delete { key }) {
                    Ok(index) => WriteOutcome {
                        response: Response::Count(1),
                        index: Some(index),
                        busy: false,
                    },
                    Err(error) => WriteOutcome::refused(error),
                }
            }
            Expiry::AfterMs(ms) => Some(cluster_now.saturating_add(ms)),
        };
        let len = match self.copy_value(key, cluster_now, scratch) {
            Some(Some((len, ..))) => len,
            _ => {
                return WriteOutcome::immediate(error_response(
                    ErrorCode::FrameTooLarge,
                    "the value is larger than the node's scratch buffer",
                ))
            }
        };
        let command = Command::Put {
            key,
            value: &scratch[..len],
            expires_at_ms,
        };
        self.put(now_ms, command, |_| Response::Count(1))
    }

    /// Applies and logs a `Put` of `value` (SET, compare-and-set), answered `Stored`.
    fn store_value(
        &mut self,
        now_ms: u64,
        key: &[u8],
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> WriteOutcome<'static> {
        let command = Command::Put {
            key,
            value,
            expires_at_ms,
        };
        self.put(now_ms, command, |version| Response::Stored { version })
    }

    /// Applies and logs a `Put`. If the store is full and expired keys are held, logs their
    /// deletes first and tries once more.
    fn put<'s>(
        &mut self,
        now_ms: u64,
        command: Command<'_>,
        answer: impl Fn(u64) -> Response<'s>,
    ) -> WriteOutcome<'s> {
        for attempt in 0..2 {
            if let Err(error) = self.make_room(now_ms, &command) {
                return WriteOutcome::refused(error);
            }
            let applied = command.check(&self.store).and_then(|()| {
                self.journal_next(&command);
                command.apply(&mut self.store)
            });
            match applied {
                Ok(()) => {
                    let version = self.store.last_version();
                    return match self.append_applied(&command) {
                        Ok(index) => {
                            self.advance_commit(now_ms);
                            WriteOutcome {
                                response: answer(version),
                                index: Some(index),
                                busy: false,
                            }
                        }
                        // Room was made above, so this cannot happen.
                        Err(error) => WriteOutcome::refused(error),
                    };
                }
                Err(ApplyError::Store(WriteError::Full(reason))) if attempt == 0 => {
                    if !self.reclaim_expired(now_ms) {
                        return WriteOutcome::immediate(write_error(WriteError::Full(reason)));
                    }
                }
                Err(ApplyError::Store(error)) => {
                    return WriteOutcome::immediate(write_error(error))
                }
                Err(ApplyError::Malformed) => {
                    return WriteOutcome::immediate(error_response(
                        ErrorCode::Internal,
                        "malformed command",
                    ))
                }
            }
        }
        WriteOutcome::immediate(write_error(WriteError::Full(
            crate::store::FullReason::Bytes,
        )))
    }

    /// Leader: logs deletes for every expired key; returns whether it removed any.
    fn reclaim_expired(&mut self, now_ms: u64) -> bool {
        let cluster_now = self.clock.now(now_ms);
        let mut removed = false;
        let mut slot = 0;
        while let Some(found) = self.store.expired_slot(cluster_now, slot) {
            if self.expire_at_slot(now_ms, found, cluster_now) {
                removed = true;
                slot = found;
            } else {
                // No room in the log for the delete: give up for now.
                break;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::cluster::{Log, LogLimits, NodeConfig};
    use crate::store::{Store, StoreLimits};
    use crate::wire::{ClusterId, Packed, FRAME_HEADER_BYTES};

    type TestNode = Node<Vec<u8>, Vec<u8>, 8>;

    const STORE: StoreLimits = StoreLimits {
        max_keys: 4,
        max_key_bytes: 8,
        max_value_bytes: 32,
        max_total_bytes: 4 * 64,
    };
    const LOG: LogLimits = LogLimits {
        max_entries: 64,
        max_bytes: 4096,
    };

    fn new_store() -> Store<Vec<u8>> {
        Store::new(vec![0; STORE.memory_bytes().unwrap()], STORE, 1).unwrap()
    }

    /// A single-voter node that has elected itself.
    fn leader() -> TestNode {
        let config = NodeConfig::new(NodeId(1), ClusterId(7), &[NodeId(1)]);
        let log = Log::new(vec![0; LOG.memory_bytes()], LOG).unwrap();
        let mut node: TestNode = Node::new(config, new_store(), log, 0);
        for step in 1..100 {
            if node.role() == Role::Leader {
                return node;
            }
            node.handle_timeout(step * 100);
        }
        panic!("a single voter did not elect itself");
    }

    /// Sends `request` at `now_ms` and returns the reply frame's payload.
    fn ask(node: &mut TestNode, now_ms: u64, request: Request<'_>) -> Vec<u8> {
        let mut payload = [0u8; 512];
        let message = ClientMessage {
            request_id: 9,
            request,
        };
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 1 << 14];
        match node.handle_client_frame(now_ms, &payload[..len], &mut out) {
            ClientAction::Reply { len, .. } => out[FRAME_HEADER_BYTES..len].to_vec(),
            other => panic!("a single voter answers at once, got {other:?}"),
        }
    }

    fn response(payload: &[u8]) -> Response<'_> {
        decode::<ServerMessage<'_>>(payload).unwrap().response
    }

    fn value(payload: &[u8]) -> Option<&[u8]> {
        match response(payload) {
            Response::Value(value) => value.map(|v| v.value),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn set(key: &[u8], value: &[u8], expiry: Expiry) -> Request<'static> {
        // Leaked only in tests, to keep the request builders short.
        let key = Vec::leak(key.to_vec());
        let value = Vec::leak(value.to_vec());
        Request::Set {
            key,
            value,
            condition: SetCondition::Always,
            expiry,
            write: WriteOptions::default(),
        }
    }

    fn get(key: &[u8]) -> Request<'_> {
        Request::Get {
            key,
            read: ReadConsistency::Linearizable,
        }
    }

    fn pairs<'b>(buffer: &'b mut [u8], items: &[&[u8]]) -> Packed<'b> {
        let mut writer = PackedWriter::new(buffer);
        for item in items {
            writer.push(Some(item)).unwrap();
        }
        writer.finish()
    }

    /// A replica built from the leader's log alone holds exactly the leader's keys.
    fn assert_replica_matches(node: &TestNode) {
        let mut replica = new_store();
        for index in node.log().first_index()..=node.log().last_index() {
            let (_, bytes) = node.log().entry(index).unwrap();
            Command::decode(bytes).unwrap().apply(&mut replica).unwrap();
        }
        let mut leader_keys: Vec<_> = node
            .store()
            .iter()
            .map(|e| (e.key, e.value, e.expires_at_ms))
            .collect();
        let mut replica_keys: Vec<_> = replica
            .iter()
            .map(|e| (e.key, e.value, e.expires_at_ms))
            .collect();
        leader_keys.sort();
        replica_keys.sort();
        assert_eq!(leader_keys, replica_keys);
    }

    #[test]
    fn multi_set_writes_every_pair_in_one_entry() {
        let mut node = leader();
        let before = node.log().last_index();
        let mut buffer = [0u8; 64];
        let request = Request::MultiSet {
            pairs: pairs(&mut buffer, &[b"a", b"1", b"b", b"2", b"a", b"3"]),
            write: WriteOptions::default(),
        };
        assert!(matches!(
            response(&ask(&mut node, 1000, request)),
            Response::Stored { .. }
        ));
        assert_eq!(
            node.log().last_index(),
            before + 1,
            "one entry for the batch"
        );
        assert_eq!(value(&ask(&mut node, 1000, get(b"a"))), Some(&b"3"[..]));
        assert_eq!(value(&ask(&mut node, 1000, get(b"b"))), Some(&b"2"[..]));
        assert_replica_matches(&node);
    }

    #[test]
    fn multi_set_that_does_not_fit_changes_nothing() {
        let mut node = leader();
        ask(&mut node, 1000, set(b"a", b"old", Expiry::None));
        let before = node.log().last_index();
        let mut buffer = [0u8; 64];
        let request = Request::MultiSet {
            pairs: pairs(
                &mut buffer,
                &[b"a", b"new", b"b", b"1", b"c", b"1", b"d", b"1", b"e", b"1"],
            ),
            write: WriteOptions::default(),
        };
        match response(&ask(&mut node, 1000, request)) {
            Response::Error(error) => assert_eq!(error.code, ErrorCode::StoreFull),
            other => panic!("five keys in a four-key store: {other:?}"),
        }
        assert_eq!(node.log().last_index(), before, "nothing logged");
        assert_eq!(node.store().len(), 1);
        assert_eq!(value(&ask(&mut node, 1000, get(b"a"))), Some(&b"old"[..]));
        let mut odd = [0u8; 16];
        let request = Request::MultiSet {
            pairs: pairs(&mut odd, &[b"a"]),
            write: WriteOptions::default(),
        };
        match response(&ask(&mut node, 1000, request)) {
            Response::Error(error) => assert_eq!(error.code, ErrorCode::Malformed),
            other => panic!("odd MSET: {other:?}"),
        }
    }

    #[test]
    fn get_delete_answers_the_old_value_and_removes_it() {
        let mut node = leader();
        ask(&mut node, 1000, set(b"k", b"v1", Expiry::None));
        let request = Request::GetDelete {
            key: b"k",
            write: WriteOptions::default(),
        };
        assert_eq!(value(&ask(&mut node, 1000, request)), Some(&b"v1"[..]));
        assert_eq!(value(&ask(&mut node, 1000, request)), None);
        assert_eq!(value(&ask(&mut node, 1000, get(b"k"))), None);
        assert_replica_matches(&node);
    }

    #[test]
    fn set_and_get_answers_the_previous_value_whether_or_not_it_wrote() {
        let mut node = leader();
        let request = |value: &'static [u8], condition| Request::SetAndGet {
            key: b"k",
            value,
            condition,
            expiry: Expiry::None,
            write: WriteOptions::default(),
        };
        assert_eq!(
            value(&ask(&mut node, 1000, request(b"one", SetCondition::Always))),
            None
        );
        assert_eq!(
            value(&ask(&mut node, 1000, request(b"two", SetCondition::Always))),
            Some(&b"one"[..])
        );
        assert_eq!(
            value(&ask(
                &mut node,
                1000,
                request(b"three", SetCondition::IfAbsent)
            )),
            Some(&b"two"[..])
        );
        assert_eq!(value(&ask(&mut node, 1000, get(b"k"))), Some(&b"two"[..]));
        assert_replica_matches(&node);
    }

    #[test]
    fn append_keeps_the_ttl_and_refuses_past_the_value_limit() {
        let mut node = leader();
        ask(&mut node, 1000, set(b"k", b"ab", Expiry::AfterMs(60_000)));
        let append = |value: &'static [u8]| Request::Append {
            key: b"k",
            value,
            write: WriteOptions::default(),
        };
        assert_eq!(
            response(&ask(&mut node, 1000, append(b"cd"))),
            Response::Count(4)
        );
        assert_eq!(value(&ask(&mut node, 1000, get(b"k"))), Some(&b"abcd"[..]));
        let ttl = Request::TimeToLive {
            key: b"k",
            read: ReadConsistency::Linearizable,
        };
        assert!(
            matches!(response(&ask(&mut node, 1000, ttl)), Response::Integer(ms) if ms > 0 && ms <= 60_000)
        );
        match response(&ask(&mut node, 1000, append(&[b'x'; 29]))) {
            Response::Error(error) => assert_eq!(error.code, ErrorCode::ValueTooLarge),
            other => panic!("33 bytes over a 32-byte limit: {other:?}"),
        }
        let missing = Request::Append {
            key: b"new",
            value: b"xyz",
            write: WriteOptions::default(),
        };
        assert_eq!(response(&ask(&mut node, 1000, missing)), Response::Count(3));
        assert_replica_matches(&node);
    }

    #[test]
    fn set_expiry_sets_removes_and_deletes() {
        let mut node = leader();
        ask(&mut node, 1000, set(b"k", b"v", Expiry::None));
        let expire = |expiry| Request::SetExpiry {
            key: b"k",
            expiry,
            write: WriteOptions::default(),
        };
        let ttl = Request::TimeToLive {
            key: b"k",
            read: ReadConsistency::Linearizable,
        };
        assert_eq!(response(&ask(&mut node, 1000, ttl)), Response::Integer(-1));
        assert_eq!(
            response(&ask(&mut node, 1000, expire(Expiry::None))),
            Response::Count(0)
        );
        assert_eq!(
            response(&ask(&mut node, 1000, expire(Expiry::AfterMs(5000)))),
            Response::Count(1)
        );
        assert!(
            matches!(response(&ask(&mut node, 1000, ttl)), Response::Integer(ms) if ms > 0 && ms <= 5000)
        );
        assert_replica_matches(&node);
        assert_eq!(
            response(&ask(&mut node, 1000, expire(Expiry::None))),
            Response::Count(1)
        );
        assert_eq!(response(&ask(&mut node, 1000, ttl)), Response::Integer(-1));
        assert_eq!(
            response(&ask(&mut node, 1000, expire(Expiry::AfterMs(0)))),
            Response::Count(1)
        );
        assert_eq!(response(&ask(&mut node, 1000, ttl)), Response::Integer(-2));
        assert_eq!(
            response(&ask(&mut node, 1000, expire(Expiry::AfterMs(10)))),
            Response::Count(0)
        );
        assert_replica_matches(&node);
    }

    #[test]
    fn clear_removes_every_key_and_counts_them() {
        let mut node = leader();
        ask(&mut node, 1000, set(b"a", b"1", Expiry::None));
        ask(&mut node, 1000, set(b"b", b"2", Expiry::None));
        let clear = Request::Clear {
            write: WriteOptions::default(),
        };
        assert_eq!(response(&ask(&mut node, 1000, clear)), Response::Count(2));
        assert_eq!(node.store().len(), 0);
        assert_eq!(response(&ask(&mut node, 1000, clear)), Response::Count(0));
        assert_replica_matches(&node);
    }
}
