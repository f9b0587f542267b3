//! The node task: the one owner of the core's `Node`.
//!
//! Connection tasks only cut byte streams into frames; every frame comes here over one
//! bounded channel, and this task alone calls the core, so the protocol logic runs on one
//! thread with no locks. After every `handle_*` call it drains the core's outputs
//! (`poll_peer_transmit`, `poll_ticket_event`, `poll_event`) and re-arms its timer from
//! `poll_timeout`, as the core's call order asks. Outputs go to per-connection writer tasks
//! over channels; a writer writes whatever has queued up and flushes once, so replies to
//! pipelined requests leave in batches.
//!
//! Waiting requests: the core keeps no variable-size data for them, so this task holds the
//! bytes under each ticket ([`Held`]) and acts on the core's ticket events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memdi_core::cluster::{ClientAction, NodeEvent, PeerAction, Role, Ticket, TicketEvent};
use memdi_core::wire::{decode, ClientMessage, ErrorCode, NodeId, Request, Sender};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::frames::error_frame;
use super::CoreNode;
use crate::clock::Clock;
use crate::resp::NodeStatus;
use crate::snapshot_file;

/// Identifies one client connection.
pub type ConnId = u64;

/// What a connection's writer task is given.
#[derive(Debug)]
pub enum Outbound {
    /// Write these bytes (whole frames, headers included).
    Frame(Vec<u8>),
    /// Flush, then close the connection.
    Close,
}

/// A client connection the node task may answer.
#[derive(Debug, Clone)]
pub struct ClientLink {
    /// Its writer.
    pub replies: mpsc::Sender<Outbound>,
    /// Cancelled to make the connection's tasks stop.
    pub close: CancellationToken,
}

/// Everything connection tasks send the node task.
#[derive(Debug)]
pub enum Input {
    /// The first frame of a client connection.
    ClientHello {
        /// The connection.
        conn: ConnId,
        /// The frame's payload.
        payload: Vec<u8>,
        /// How to answer it.
        link: ClientLink,
    },
    /// A later frame of a client connection.
    ClientFrame {
        /// The connection.
        conn: ConnId,
        /// The frame's payload.
        payload: Vec<u8>,
    },
    /// A client connection ended.
    ClientClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The first frame of an incoming peer connection.
    PeerHello {
        /// The frame's payload.
        payload: Vec<u8>,
        /// The answer frame, and the peer if it was accepted.
        answer: oneshot::Sender<(Vec<u8>, Option<NodeId>)>,
    },
    /// A frame from a peer.
    PeerFrame {
        /// The peer.
        from: NodeId,
        /// The frame's payload.
        payload: Vec<u8>,
    },
    /// The node's state, for a RESP client's INFO or ROLE.
    Status {
        /// Where the answer goes.
        answer: oneshot::Sender<NodeStatus>,
    },
    /// Write a snapshot now (a RESP client's SAVE or BGSAVE).
    Save {
        /// Answer as soon as the snapshot is taken, before it is on disk (BGSAVE).
        background: bool,
        /// The outcome, as an error text for the client.
        answer: oneshot::Sender<Result<(), String>>,
    },
}

/// Where a held answer goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dest {
    Client(ConnId),
    Peer(NodeId),
}

/// What this task holds for a waiting request.
#[derive(Debug)]
pub(super) enum Held {
    /// An answer (a whole frame) to send when released.
    Answer { to: Dest, frame: Vec<u8> },
    /// A request forwarded to the leader; its answer comes as a `ClientReply`.
    Forwarded { conn: ConnId },
    /// A request payload to submit again when a leader is known.
    Request { conn: ConnId, payload: Vec<u8> },
}

/// The node task's state.
#[derive(Debug)]
pub struct NodeTask {
    pub(super) node: Box<CoreNode>,
    pub(super) clock: Clock,
    pub(super) inputs: mpsc::Receiver<Input>,
    pub(super) peers: BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>,
    pub(super) data_dir: PathBuf,
    pub(super) snapshot_every_secs: u64,
    pub(super) shutdown: CancellationToken,
    /// Scratch for the core's outputs.
    pub(super) out: Vec<u8>,
    pub(super) clients: HashMap<ConnId, ClientLink>,
    pub(super) held: HashMap<Ticket, Held>,
    /// Whether this node leads, for RESP connections (HELLO's role).
    pub(super) leader_now: Arc<AtomicBool>,
    /// Unix seconds of the last snapshot written (LASTSAVE), the start time before any.
    pub(super) last_save_unix_secs: Arc<AtomicU64>,
    /// The store's mutation count when the last snapshot was taken.
    pub(super) mutations_at_save: u64,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a clean shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most inputs taken at once before the timer and the shutdown signal are looked at again.
const INPUT_BATCH: usize = 256;

impl NodeTask {
    /// Runs until shutdown, then writes a final snapshot.
    pub async fn run(mut self) -> Result<(), snapshot_file::SaveError> {
        let mut snapshot_tick =
            tokio::time::interval(Duration::from_secs(self.snapshot_every_secs.max(1)));
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot_tick.tick().await; // the first tick is immediate
        let mut saving: Option<tokio::task::JoinHandle<Result<(), snapshot_file::SaveError>>> =
            None;
        let shutdown = self.shutdown.clone();
        loop {
            let deadline =
                tokio::time::Instant::from_std(self.clock.instant_of(self.node.poll_timeout()));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    self.handle_input(input);
                    for _ in 1..INPUT_BATCH {
                        match self.inputs.try_recv() {
                            Ok(input) => self.handle_input(input),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.clock.now_ms();
                    self.node.handle_timeout(now);
                    self.drain();
                }
                _ = snapshot_tick.tick(), if self.snapshot_every_secs > 0 => {
                    if saving.as_ref().is_some_and(|task| !task.is_finished()) {
                        tracing::warn!("previous snapshot still being written; skipping this one");
                    } else if let Some(bytes) = self.encode_snapshot() {
                        let dir = self.data_dir.clone();
                        let last_save = self.last_save_unix_secs.clone();
                        saving = Some(tokio::task::spawn_blocking(move || {
                            let result = snapshot_file::save(&dir, &bytes);
                            match &result {
                                Ok(()) => {
                                    last_save.store(unix_secs(), Ordering::Relaxed);
                                    tracing::info!("snapshot saved ({} bytes)", bytes.len())
                                }
                                Err(error) => tracing::error!("{error}"),
                            }
                            result
                        }));
                    }
                }
            }
        }
        self.finish_in_flight().await;
        if let Some(task) = saving {
            let _ = task.await;
        }
        match self.encode_snapshot() {
            Some(bytes) => {
                let dir = self.data_dir.clone();
                let len = bytes.len();
                tokio::task::spawn_blocking(move || snapshot_file::save(&dir, &bytes))
                    .await
                    .unwrap_or_else(|join| panic!("snapshot writer panicked: {join}"))?;
                tracing::info!("final snapshot saved ({len} bytes)");
            }
            None => tracing::warn!("no final snapshot: the store does not match the log yet"),
        }
        for link in self.clients.values() {
            let _ = link.replies.try_send(Outbound::Close);
        }
        Ok(())
    }

    /// Clean shutdown: the listeners and readers have stopped; keep serving peers until the
    /// requests already taken are answered, or the grace period ends.
    async fn finish_in_flight(&mut self) {
        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.node.waiting_requests() > 0 {
            let deadline =
                tokio::time::Instant::from_std(self.clock.instant_of(self.node.poll_timeout()))
                    .min(until);
            tokio::select! {
                input = self.inputs.recv() => match input {
                    Some(input) => self.handle_input(input),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if tokio::time::Instant::now() >= until {
                        tracing::warn!(
                            "shutting down with {} requests still waiting",
                            self.node.waiting_requests()
                        );
                        break;
                    }
                    let now = self.clock.now_ms();
                    self.node.handle_timeout(now);
                    self.drain();
                }
            }
        }
    }

    /// The whole store as snapshot bytes, unless it does not match the log (the core
    /// gives no checkpoint while a snapshot from the leader is loading or the store is
    /// stale: saving it would replace a good file with a bad one).
    fn encode_snapshot(&mut self) -> Option<Vec<u8>> {
        let applied = self.node.checkpoint()?.applied;
        self.mutations_at_save = self.node.store().mutations();
        let started = std::time::Instant::now();
        match snapshot_file::encode(self.node.store(), applied.term.0, applied.index.0) {
            Ok(bytes) => {
                tracing::debug!(
                    "snapshot encoded: {} keys, {} bytes in {} ms",
                    self.node.store().len(),
                    bytes.len(),
                    started.elapsed().as_millis()
                );
                Some(bytes)
            }
            Err(error) => {
                tracing::error!("snapshot encoding failed: {error:?}");
                None
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        let now = self.clock.now_ms();
        match input {
            Input::ClientHello {
                conn,
                payload,
                link,
            } => self.client_hello(conn, &payload, link),
            Input::ClientFrame { conn, payload } => {
                if self.clients.contains_key(&conn) {
                    self.client_request(now, conn, &payload);
                    self.drain();
                }
            }
            Input::ClientClosed { conn } => {
                self.clients.remove(&conn);
            }
            Input::PeerHello { payload, answer } => {
                let _ = answer.send(self.peer_hello(&payload));
            }
            Input::PeerFrame { from, payload } => {
                self.peer_frame(now, from, &payload);
                self.drain();
            }
            Input::Status { answer } => {
                let _ = answer.send(self.status());
            }
            Input::Save { background, answer } => self.save_now(background, answer),
        }
    }

    fn status(&self) -> NodeStatus {
        let store = self.node.store();
        let followers = if self.node.role() == Role::Leader {
            self.node
                .members()
                .filter(|member| member.id != self.node.id())
                .map(|member| (member.id, member.match_index))
                .collect()
        } else {
            Vec::new()
        };
        NodeStatus {
            role: self.node.role(),
            term: self.node.term(),
            leader: self.node.leader_id(),
            commit_index: self.node.commit_index(),
            keys: store.len(),
            keys_with_expiry: store
                .iter()
                .filter(|entry| entry.expires_at_ms.is_some())
                .count() as u64,
            used_bytes: store.used_bytes(),
            last_save_unix_secs: self.last_save_unix_secs.load(Ordering::Relaxed),
            changes_since_save: store.mutations().saturating_sub(self.mutations_at_save),
            followers,
        }
    }

    /// SAVE and BGSAVE: the same snapshot as the periodic one, written now.
    fn save_now(&mut self, background: bool, answer: oneshot::Sender<Result<(), String>>) {
        let Some(bytes) = self.encode_snapshot() else {
            let _ = answer.send(Err(
                "ERR no snapshot can be taken now: this node's store is being replaced by the leader's; retry".into(),
            ));
            return;
        };
        let mut answer = Some(answer);
        if background {
            if let Some(answer) = answer.take() {
                let _ = answer.send(Ok(()));
            }
        }
        let dir = self.data_dir.clone();
        let last_save = self.last_save_unix_secs.clone();
        tokio::task::spawn_blocking(move || {
            let result = snapshot_file::save(&dir, &bytes);
            match &result {
                Ok(()) => {
                    last_save.store(unix_secs(), Ordering::Relaxed);
                    tracing::info!("snapshot saved on request ({} bytes)", bytes.len());
                }
                Err(error) => tracing::error!("{error}"),
            }
            if let Some(answer) = answer {
                let _ = answer.send(result.map_err(|error| format!("ERR {error}")));
            }
        });
    }

    fn client_hello(&mut self, conn: ConnId, payload: &[u8], link: ClientLink) {
        if let Ok(ClientMessage {
            request_id,
            request: Request::Hello(hello),
        }) = decode::<ClientMessage<'_>>(payload)
        {
            if matches!(hello.sender, Sender::Peer(_)) {
                let frame = error_frame(
                    request_id,
                    ErrorCode::Unauthorized,
                    "peers connect to the peer address, not the client address",
                );
                let _ = link.replies.try_send(Outbound::Frame(frame));
                let _ = link.replies.try_send(Outbound::Close);
                return;
            }
        }
        let (len, accepted) = self.node.handle_client_hello(payload, &mut self.out);
        let _ = link
            .replies
            .try_send(Outbound::Frame(self.out[..len].to_vec()));
        if accepted {
            self.clients.insert(conn, link);
        } else {
            let _ = link.replies.try_send(Outbound::Close);
        }
    }

    fn peer_hello(&mut self, payload: &[u8]) -> (Vec<u8>, Option<NodeId>) {
        let sender = match decode::<ClientMessage<'_>>(payload) {
            Ok(ClientMessage {
                request: Request::Hello(hello),
                ..
            }) => hello.sender,
            _ => Sender::Client,
        };
        let Sender::Peer(id) = sender else {
            let frame = error_frame(
                0,
                ErrorCode::Unauthorized,
                "the peer address takes only peer handshakes; clients use the client address",
            );
            return (frame, None);
        };
        if id == self.node.id() || !self.node.config().voters.contains(&id) {
            let frame = error_frame(0, ErrorCode::Unauthorized, "not a member of this cluster");
            tracing::warn!("refused a peer connection from node {}: not a member", id.0);
            return (frame, None);
        }
        let (len, accepted) = self.node.handle_client_hello(payload, &mut self.out);
        (self.out[..len].to_vec(), accepted.then_some(id))
    }

    fn send_client(&mut self, conn: ConnId, frame: Vec<u8>) {
        let Some(link) = self.clients.get(&conn) else {
            return; // gone: its answer has nowhere to go
        };
        if let Err(mpsc::error::TrySendError::Full(_)) =
            link.replies.try_send(Outbound::Frame(frame))
        {
            tracing::warn!("client connection {conn} does not read its replies; closing it");
            link.close.cancel();
            self.clients.remove(&conn);
        }
    }

    fn send_peer(&self, to: NodeId, frame: Vec<u8>) {
        if let Some(link) = self.peers.get(&to) {
            // A full queue (the peer is down or slow) drops the frame, as a lossy network
            // would: the protocol retries.
            let _ = link.try_send(frame);
        }
    }

    fn send(&mut self, to: Dest, frame: Vec<u8>) {
        match to {
            Dest::Client(conn) => self.send_client(conn, frame),
            Dest::Peer(node) => self.send_peer(node, frame),
        }
    }

    fn client_request(&mut self, now: u64, conn: ConnId, payload: &[u8]) {
        let action = self.node.handle_client_frame(now, payload, &mut self.out);
        match action {
            ClientAction::Reply { len, close } => {
                let frame = self.out[..len].to_vec();
                self.send_client(conn, frame);
                if close {
                    if let Some(link) = self.clients.remove(&conn) {
                        let _ = link.replies.try_send(Outbound::Close);
                    }
                }
            }
            ClientAction::Wait { ticket, len } => {
                let frame = self.out[..len].to_vec();
                self.held.insert(
                    ticket,
                    Held::Answer {
                        to: Dest::Client(conn),
                        frame,
                    },
                );
            }
            ClientAction::Forward { ticket, to, len } => {
                self.held.insert(ticket, Held::Forwarded { conn });
                self.send_peer(to, self.out[..len].to_vec());
            }
            ClientAction::Hold { ticket } => {
                self.held.insert(
                    ticket,
                    Held::Request {
                        conn,
                        payload: payload.to_vec(),
                    },
                );
            }
        }
    }

    fn peer_frame(&mut self, now: u64, from: NodeId, payload: &[u8]) {
        match self
            .node
            .handle_peer_frame(now, from, payload, &mut self.out)
        {
            PeerAction::None => {}
            PeerAction::Send { to, len } => self.send_peer(to, self.out[..len].to_vec()),
            PeerAction::Wait { ticket, to, len } => {
                let frame = self.out[..len].to_vec();
                self.held.insert(
                    ticket,
                    Held::Answer {
                        to: Dest::Peer(to),
                        frame,
                    },
                );
            }
            PeerAction::ClientReply { ticket, len } => {
                if let Some(Held::Forwarded { conn }) = self.held.remove(&ticket) {
                    let frame = self.out[..len].to_vec();
                    self.send_client(conn, frame);
                }
            }
        }
    }

    /// Sends everything the core has to send, acts on ended tickets and logs events.
    fn drain(&mut self) {
        let now = self.clock.now_ms();
        // Bounded: each poll consumes queued work; the core never produces endlessly.
        for _ in 0..1_000_000 {
            if let Some((to, len)) = self.node.poll_peer_transmit(now, &mut self.out) {
                self.send_peer(to, self.out[..len].to_vec());
                continue;
            }
            if let Some(event) = self.node.poll_ticket_event(&mut self.out) {
                self.ticket_event(now, event);
                continue;
            }
            if let Some(event) = self.node.poll_event() {
                self.log_event(event);
                continue;
            }
            return;
        }
        tracing::error!("the core kept producing output for a million polls");
    }

    fn ticket_event(&mut self, now: u64, event: TicketEvent) {
        match event {
            TicketEvent::Release { ticket } => {
                if let Some(Held::Answer { to, frame }) = self.held.remove(&ticket) {
                    self.send(to, frame);
                }
            }
            TicketEvent::Reply { ticket, len } => {
                let frame = self.out[..len].to_vec();
                match self.held.remove(&ticket) {
                    Some(Held::Answer { to, .. }) => self.send(to, frame),
                    Some(Held::Forwarded { conn }) | Some(Held::Request { conn, .. }) => {
                        self.send_client(conn, frame)
                    }
                    None => {}
                }
            }
            TicketEvent::Resubmit { ticket } => {
                if let Some(Held::Request { conn, payload }) = self.held.remove(&ticket) {
                    // Submitted again even if the client has gone: a write it sent is
                    // executed once, as it would have been had it stayed.
                    self.client_request(now, conn, &payload);
                }
            }
        }
    }

    fn log_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::RoleChanged { role, term } => {
                self.leader_now.store(role == Role::Leader, Ordering::Relaxed);
                tracing::info!("role: {role:?} in term {term}")
            }
            NodeEvent::LeaderChanged { leader, term } => match leader {
                Some(leader) => tracing::info!("leader: node {} in term {term}", leader.0),
                None => tracing::info!("leader: none known in term {term}"),
            },
            NodeEvent::ApplyFailed { index } => tracing::error!(
                "entry {index} could not be applied: this node's store is smaller than the leader's"
            ),
            NodeEvent::StoreStale { term } => tracing::warn!(
                "term {term}: a new leader discarded entries this node applied; its store waits for a snapshot"
            ),
            NodeEvent::SnapshotInstalled { index } => {
                tracing::info!("snapshot from the leader installed through entry {index}")
            }
            NodeEvent::SnapshotStarted { to, index } => {
                tracing::info!("sending a snapshot through entry {index} to node {}", to.0)
            }
        }
    }
}
