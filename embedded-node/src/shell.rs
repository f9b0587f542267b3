//! The node and the bookkeeping around it that the tasks share: which connection waits for
//! which ticket, the answers held for other nodes, the bytes queued for each peer.
//!
//! Everything here runs inside the critical section of [`Context::with`], never across an
//! `await`: a task takes what it needs (bytes to write, a state to act on), leaves the
//! section, and only then does I/O.

use core::cell::RefCell;

use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::signal::Signal;
use memdi_core::cluster::{ClientAction, Node, NodeEvent, PeerAction, Role, Ticket, TicketEvent};
use memdi_core::wire::{
    encode_frame, ClusterId, ErrorCode, ErrorReply, NodeId, Response, ServerMessage,
};

use crate::capacity::*;
use crate::node_task::now_ms;

/// The node, on static buffers.
pub(crate) type BoardNode = Node<&'static mut [u8], &'static mut [u8], TICKETS>;

/// A wake-up without a value.
pub(crate) type Wake = Signal<CriticalSectionRawMutex, ()>;

/// What the tasks share.
pub(crate) struct Context {
    /// The node and its bookkeeping.
    pub shell: Mutex<CriticalSectionRawMutex, RefCell<Shell>>,
    /// How tasks wake each other.
    pub wakers: Wakers,
    /// The network.
    pub stack: Stack<'static>,
    /// This node.
    pub me: NodeId,
    /// Its cluster.
    pub cluster_id: ClusterId,
    /// Where clients connect.
    pub client_port: u16,
    /// Where peers connect.
    pub peer_port: u16,
    /// The password clients must give, if any (`Settings::password`).
    pub password: Option<heapless::Vec<u8, MAX_PASSWORD_BYTES>>,
    /// The secret peers prove, if any (`Settings::cluster_secret`).
    pub cluster_secret: Option<heapless::Vec<u8, MAX_PASSWORD_BYTES>>,
    /// Fills nonces for the cluster-secret exchange (`Settings::random`).
    pub random: fn(&mut [u8]),
}

impl Context {
    /// Runs `f` on the shell inside the critical section.
    pub fn with<R>(&self, f: impl FnOnce(&mut Shell) -> R) -> R {
        self.shell.lock(|cell| f(&mut cell.borrow_mut()))
    }
}

/// The signals tasks wait on, outside the mutex so that a task can wait while others use
/// the shell.
pub(crate) struct Wakers {
    /// The node task: the next timer may have moved earlier.
    pub node: Wake,
    /// Each connection task: its waiting request ended.
    pub connections: [Wake; CONNECTIONS],
    /// Each dialer task: bytes were queued, or its peer changed.
    pub links: [Wake; MAX_PEERS],
}

impl Wakers {
    pub fn new() -> Self {
        Self {
            node: Signal::new(),
            connections: [const { Signal::new() }; CONNECTIONS],
            links: [const { Signal::new() }; MAX_PEERS],
        }
    }
}

/// Where a connection's current request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Nothing waits.
    Idle,
    /// The request waits under `ticket`; `held` answer bytes are in the connection's
    /// buffer already (0 while the answer is still to come).
    On { ticket: Ticket, held: usize },
    /// The answer (`len` bytes) is in the connection's buffer: send it.
    Answered { len: usize },
    /// The node asks for the request again (a leader became known).
    Resubmit,
}

/// A connection's place in the shell: its waiting request, and while it waits, the
/// connection's own buffer, lent so that an answer arriving meanwhile is written straight
/// into it (one frame buffer a connection, not two).
pub(crate) struct Slot {
    pub waiting: Waiting,
    pub lent: Option<&'static mut [u8]>,
}

/// An answer held for a request another node forwarded here, until its ticket ends.
struct HeldAnswer {
    owner: Option<(Ticket, NodeId, usize)>,
    bytes: &'static mut [u8; FRAME_BUFFER_BYTES],
}

/// One outgoing link's assignment and queue.
pub(crate) struct Link {
    /// The member this link dials, and where.
    pub peer: Option<(NodeId, IpEndpoint)>,
    /// Bumped whenever `peer` changes, so the dialer notices and hangs up.
    pub generation: u32,
    /// The connection is up and has passed the handshake: bytes may be queued.
    pub up: bool,
    queue: &'static mut [u8; PEER_QUEUE_BYTES],
    queued: usize,
    /// Messages dropped because the queue was full or the link down.
    pub dropped: u64,
}

impl Link {
    /// Moves up to `into.len()` queued bytes (whole frames or not: the stream does not
    /// care) into `into`; returns how many.
    pub fn take(&mut self, into: &mut [u8]) -> usize {
        let count = self.queued.min(into.len());
        into[..count].copy_from_slice(&self.queue[..count]);
        self.queue.copy_within(count..self.queued, 0);
        self.queued -= count;
        count
    }

    /// Bytes queued.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Forgets what is queued (the connection it was for is gone).
    pub fn clear(&mut self) {
        self.queued = 0;
    }
}

/// What a connection task does after the shell took a client's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientStep {
    /// Send `len` bytes of the connection's buffer; close afterwards if `close`.
    Send { len: usize, close: bool },
    /// Wait for the slot's request to end.
    Wait,
    /// Keep the request: the node will ask for it again.
    Keep,
    /// Submit the request again in a moment: the link it must be forwarded on is down.
    Retry,
    /// Submit the request again in a moment: the node answered `Busy` (its log is full of
    /// entries a follower still needs, docs/protocol.md 4.2), and the connection's buffer
    /// still holds the request. Holding it here is the backpressure: the client's next
    /// request is not read meanwhile, where an answer `Busy` had the client retry after a
    /// back-off (a p99 of 55 ms under pipelined writes).
    Full,
}

/// The node and what the shell keeps for it.
pub(crate) struct Shell {
    pub node: BoardNode,
    scratch: &'static mut [u8],
    pub slots: heapless::Vec<Slot, CONNECTIONS>,
    held: heapless::Vec<HeldAnswer, HELD_PEER_ANSWERS>,
    pub links: heapless::Vec<Link, MAX_PEERS>,
}

impl Shell {
    pub fn new(
        node: BoardNode,
        scratch: &'static mut [u8],
        held: &'static mut [[u8; FRAME_BUFFER_BYTES]; HELD_PEER_ANSWERS],
        queues: &'static mut [[u8; PEER_QUEUE_BYTES]; MAX_PEERS],
    ) -> Self {
        let mut shell = Self {
            node,
            scratch,
            slots: heapless::Vec::new(),
            held: heapless::Vec::new(),
            links: heapless::Vec::new(),
        };
        for _ in 0..CONNECTIONS {
            let _ = shell.slots.push(Slot {
                waiting: Waiting::Idle,
                lent: None,
            });
        }
        for bytes in held.iter_mut() {
            let _ = shell.held.push(HeldAnswer { owner: None, bytes });
        }
        for queue in queues.iter_mut() {
            let _ = shell.links.push(Link {
                peer: None,
                generation: 0,
                up: false,
                queue,
                queued: 0,
                dropped: 0,
            });
        }
        shell
    }

    /// A connection's first frame, a client's or a peer's hello: the answer goes into
    /// `out`; returns its length and whether the connection is accepted.
    pub fn hello(&mut self, payload: &[u8], out: &mut [u8]) -> (usize, bool) {
        let (len, accepted) = self.node.handle_client_hello(payload, self.scratch);
        out[..len].copy_from_slice(&self.scratch[..len]);
        (len, accepted)
    }

    /// A peer passed the handshake on an incoming connection.
    pub fn peer_connected(&mut self, peer: NodeId, wakers: &Wakers) {
        self.node.handle_peer_connected(peer);
        self.drain(wakers);
    }

    /// A request from the client of connection `slot`; an answer to send at once, or one
    /// held until its ticket ends, goes into `out`. While the request waits (`Wait`,
    /// `Keep`), `out` is lent to the slot (left empty here) and the caller takes it back
    /// from `Slot::lent` when woken: lent before the node's outputs are drained, so that an
    /// answer the drain itself brings has somewhere to go.
    ///
    /// With `hold_when_busy`, an answer `Busy` is not given: the request is left in `out`
    /// and the step is `Full`.
    pub fn client_frame(
        &mut self,
        slot: usize,
        payload: &[u8],
        out: &mut &'static mut [u8],
        hold_when_busy: bool,
        wakers: &Wakers,
    ) -> ClientStep {
        // One frame at most: what the client (and `out`) takes. A larger answer becomes the
        // core's `FrameTooLarge` error.
        let frame = &mut self.scratch[..FRAME_BUFFER_BYTES];
        let action = self.node.handle_client_frame(now_ms(), payload, frame);
        let step = match action {
            ClientAction::Busy { .. } if hold_when_busy => {
                self.slots[slot].waiting = Waiting::Idle;
                ClientStep::Full
            }
            ClientAction::Busy { len } => {
                out[..len].copy_from_slice(&self.scratch[..len]);
                self.slots[slot].waiting = Waiting::Idle;
                ClientStep::Send { len, close: false }
            }
            ClientAction::Reply { len, close } => {
                out[..len].copy_from_slice(&self.scratch[..len]);
                self.slots[slot].waiting = Waiting::Idle;
                ClientStep::Send { len, close }
            }
            ClientAction::Wait { ticket, len } => {
                out[..len].copy_from_slice(&self.scratch[..len]);
                self.slots[slot].waiting = Waiting::On { ticket, held: len };
                ClientStep::Wait
            }
            ClientAction::Forward { ticket, to, len } if link_up(&self.links, to) => {
                self.slots[slot].waiting = Waiting::On { ticket, held: 0 };
                queue_frame(&mut self.links, to, &self.scratch[..len], wakers);
                ClientStep::Wait
            }
            ClientAction::Forward { to, .. } => {
                // This node's link to the leader is not up (it is connecting): nothing can
                // be sent, so nothing was. Telling the node ends the ticket (its error goes
                // nowhere: the slot waits for nothing), and the task submits the request
                // again shortly, as if it had just arrived.
                self.slots[slot].waiting = Waiting::Idle;
                self.node.handle_peer_lost(to);
                ClientStep::Retry
            }
            ClientAction::Hold { ticket } => {
                self.slots[slot].waiting = Waiting::On { ticket, held: 0 };
                ClientStep::Keep
            }
            ClientAction::Save { request_id } => {
                // Only a persistent node asks its shell to save; this one has no disk.
                let message = ServerMessage {
                    request_id,
                    response: Response::Error(ErrorReply {
                        code: ErrorCode::Unsupported,
                        detail: "this node has no disk to save to",
                    }),
                };
                let len = encode_frame(&message, out).unwrap_or(0);
                self.slots[slot].waiting = Waiting::Idle;
                ClientStep::Send { len, close: false }
            }
            ClientAction::Info { request_id } => {
                let text = self.info_text();
                let message = ServerMessage {
                    request_id,
                    response: Response::Info(&text),
                };
                let len = encode_frame(&message, out).unwrap_or(0);
                self.slots[slot].waiting = Waiting::Idle;
                ClientStep::Send { len, close: false }
            }
        };
        if matches!(step, ClientStep::Wait | ClientStep::Keep) {
            self.slots[slot].lent = Some(core::mem::take(out));
        }
        self.drain(wakers);
        step
    }

    /// The `Info` answer: what the core knows, in the layout memdi-server uses (a board has
    /// no process, files or uptime worth reporting, and its frames are small).
    fn info_text(&self) -> heapless::String<INFO_TEXT_BYTES> {
        use core::fmt::Write;
        let node = &self.node;
        let role = match node.role() {
            Role::Leader => "leader",
            Role::Follower => "follower",
            _ => "candidate",
        };
        let mut text = heapless::String::new();
        // The fields fit INFO_TEXT_BYTES whatever their values (20 digits at most each).
        let _ = write!(
            text,
            "# Server\r\nnode_id:{}\r\nnode_kind:embedded\r\n\r\n# Keyspace\r\nkeys:{}\r\nused_memory:{}\r\n\r\n# Replication\r\nrole:{role}\r\nterm:{}\r\nleader_id:{}\r\ncommit_index:{}\r\napplied_index:{}\r\nlog_last_index:{}\r\n",
            node.id().0,
            node.store().len(),
            node.store().used_bytes(),
            node.term(),
            node.leader_id().map_or(0, |id| id.0),
            node.commit_index(),
            node.applied_index(),
            node.log().last_index(),
        );
        text
    }

    /// A frame from peer `from` on its incoming connection.
    pub fn peer_frame(&mut self, from: NodeId, payload: &[u8], wakers: &Wakers) {
        // One frame at most, as for a client: answers held here and relayed to clients fit
        // their buffers.
        let frame = &mut self.scratch[..FRAME_BUFFER_BYTES];
        let action = self.node.handle_peer_frame(now_ms(), from, payload, frame);
        match action {
            PeerAction::None => {}
            PeerAction::Send { to, len } => {
                queue_frame(&mut self.links, to, &self.scratch[..len], wakers)
            }
            PeerAction::Wait { ticket, to, len } => {
                match self.held.iter_mut().find(|held| held.owner.is_none()) {
                    Some(held) => {
                        held.bytes[..len].copy_from_slice(&self.scratch[..len]);
                        held.owner = Some((ticket, to, len));
                    }
                    None => warn!(
                        "no room to hold an answer for node {}: its client will time out",
                        to.0
                    ),
                }
            }
            PeerAction::ClientReply { ticket, len } => self.answer_slot(ticket, len, wakers),
        }
        self.drain(wakers);
    }

    /// The dialer's connection to `peer` broke.
    pub fn peer_lost(&mut self, link: usize, peer: NodeId, wakers: &Wakers) {
        self.links[link].up = false;
        self.links[link].clear();
        self.node.handle_peer_lost(peer);
        self.drain(wakers);
    }

    /// The dialer's connection to `peer` passed the handshake.
    pub fn peer_link_up(&mut self, link: usize, peer: NodeId, max_frame_bytes: u32) {
        self.links[link].up = true;
        self.links[link].clear();
        self.node.handle_peer_link_up(peer, max_frame_bytes);
    }

    /// The node's timers are due.
    pub fn timeout(&mut self, wakers: &Wakers) {
        self.node.handle_timeout(now_ms());
        self.drain(wakers);
    }

    /// Takes the answer of the request waiting under `ticket`, now in the scratch buffer.
    fn answer_slot(&mut self, ticket: Ticket, len: usize, wakers: &Wakers) {
        let found = self
            .slots
            .iter()
            .position(|slot| matches!(slot.waiting, Waiting::On { ticket: t, .. } if t == ticket));
        if let Some(at) = found {
            // A connection waits with its buffer lent; without it the answer has nowhere to go.
            if let Some(buffer) = self.slots[at].lent.as_deref_mut() {
                buffer[..len].copy_from_slice(&self.scratch[..len]);
                self.slots[at].waiting = Waiting::Answered { len };
                wakers.connections[at].signal(());
            }
        }
    }

    /// Sends everything the node has to send and acts on ended tickets and events.
    pub fn drain(&mut self, wakers: &Wakers) {
        let now = now_ms();
        // Bounded: each poll consumes queued work; the core never produces endlessly.
        for _ in 0..10_000 {
            if let Some((to, len)) = self.node.poll_peer_transmit(now, self.scratch) {
                queue_frame(&mut self.links, to, &self.scratch[..len], wakers);
                continue;
            }
            if let Some(event) = self.node.poll_ticket_event(self.scratch) {
                self.ticket_event(event, wakers);
                continue;
            }
            if let Some(event) = self.node.poll_event() {
                self.event(event, wakers);
                continue;
            }
            break;
        }
        // The next timer may be earlier now.
        wakers.node.signal(());
    }

    fn ticket_event(&mut self, event: TicketEvent, wakers: &Wakers) {
        match event {
            TicketEvent::Release { ticket } => {
                for (at, slot) in self.slots.iter_mut().enumerate() {
                    if let Waiting::On { ticket: t, held } = slot.waiting {
                        if t == ticket {
                            slot.waiting = Waiting::Answered { len: held };
                            wakers.connections[at].signal(());
                            return;
                        }
                    }
                }
                if let Some(held) = held_for(&mut self.held, ticket) {
                    let (_, to, len) = held.owner.take().expect("found by its owner");
                    queue_frame(&mut self.links, to, &held.bytes[..len], wakers);
                }
            }
            TicketEvent::Reply { ticket, len } => {
                if let Some(held) = held_for(&mut self.held, ticket) {
                    let (_, to, _) = held.owner.take().expect("found by its owner");
                    queue_frame(&mut self.links, to, &self.scratch[..len], wakers);
                } else {
                    self.answer_slot(ticket, len, wakers);
                }
            }
            TicketEvent::Resubmit { ticket } => {
                let found = self.slots.iter().position(
                    |slot| matches!(slot.waiting, Waiting::On { ticket: t, .. } if t == ticket),
                );
                if let Some(at) = found {
                    self.slots[at].waiting = Waiting::Resubmit;
                    wakers.connections[at].signal(());
                }
            }
        }
    }

    fn event(&mut self, event: NodeEvent, wakers: &Wakers) {
        match event {
            NodeEvent::RoleChanged { role, term } => {
                let role = match role {
                    Role::Follower => "follower",
                    Role::PreCandidate => "pre-candidate",
                    Role::Candidate => "candidate",
                    Role::Leader => "leader",
                };
                info!("now {} in term {}", role, term);
            }
            NodeEvent::LeaderChanged { leader, term } => match leader {
                Some(leader) => info!("node {} leads term {}", leader.0, term),
                None => debug!("no known leader in term {}", term),
            },
            NodeEvent::SnapshotInstalled { index } => {
                info!("installed a snapshot through entry {}", index)
            }
            NodeEvent::MembershipChanged {
                voters, members, ..
            } => {
                info!("membership: {} voters, {} members", voters, members);
                self.follow_membership(wakers);
            }
            NodeEvent::PeerDeparted { peer } => {
                info!("node {} left the cluster", peer.0);
                self.follow_membership(wakers);
            }
            NodeEvent::StoreStale { term } => {
                warn!("store stale after term {}: waiting for a snapshot", term)
            }
            NodeEvent::ApplyFailed { index } => {
                warn!("entry {} does not fit this node's store", index)
            }
            NodeEvent::RolledBack { from, entries } => {
                info!("undid {} entries from {}", entries, from)
            }
            NodeEvent::Recovered { term } => {
                info!("recovered in term {}: votes again", term)
            }
            NodeEvent::SnapshotStarted { to, index } => {
                info!("sending node {} a snapshot through entry {}", to.0, index)
            }
        }
    }

    /// Points the links at the members of the membership in force: a new member gets a
    /// free link, a moved one its new address, a departed one (no longer a member, nor a
    /// peer the core keeps until its removal commits) loses its link.
    pub fn follow_membership(&mut self, wakers: &Wakers) {
        let me = self.node.id();
        for at in 0..self.links.len() {
            let Some((id, _)) = self.links[at].peer else {
                continue;
            };
            let member = self.node.membership().get(id).is_some();
            let peer = self.node.members().any(|m| m.id == id);
            if !member && !peer {
                self.links[at].peer = None;
                self.links[at].generation = self.links[at].generation.wrapping_add(1);
                wakers.links[at].signal(());
            }
        }
        let mut wanted: heapless::Vec<(NodeId, IpEndpoint), { memdi_core::cluster::MAX_MEMBERS }> =
            heapless::Vec::new();
        for member in self.node.membership().iter() {
            if member.id == me {
                continue;
            }
            match parse_endpoint(member.address) {
                Some(endpoint) => {
                    let _ = wanted.push((member.id, endpoint));
                }
                None => warn!(
                    "node {}'s address is not an IPv4 address and port; not dialing it",
                    member.id.0
                ),
            }
        }
        for (id, endpoint) in wanted {
            let existing = self
                .links
                .iter()
                .position(|link| matches!(link.peer, Some((other, _)) if other == id));
            let at = match existing {
                Some(at) if self.links[at].peer == Some((id, endpoint)) => continue,
                Some(at) => at,
                None => match self.links.iter().position(|link| link.peer.is_none()) {
                    Some(at) => at,
                    None => {
                        warn!("more members than links: not dialing node {}", id.0);
                        continue;
                    }
                },
            };
            self.links[at].peer = Some((id, endpoint));
            self.links[at].generation = self.links[at].generation.wrapping_add(1);
            wakers.links[at].signal(());
        }
    }
}

/// The answer held for `ticket`, if any.
fn held_for(held: &mut [HeldAnswer], ticket: Ticket) -> Option<&mut HeldAnswer> {
    held.iter_mut()
        .find(|held| matches!(held.owner, Some((t, _, _)) if t == ticket))
}

/// Whether the link to `peer` is up.
fn link_up(links: &[Link], peer: NodeId) -> bool {
    links
        .iter()
        .any(|link| link.up && matches!(link.peer, Some((id, _)) if id == peer))
}

/// Replaces the request in `out[..request_len]` with a `Timeout` error answering it;
/// returns the answer's length.
pub(crate) fn timeout_frame(out: &mut [u8], request_len: usize, detail: &str) -> usize {
    let request_id =
        memdi_core::wire::decode::<memdi_core::wire::ClientMessage<'_>>(&out[..request_len])
            .map_or(0, |message| message.request_id);
    let message = ServerMessage {
        request_id,
        response: Response::Error(ErrorReply {
            code: ErrorCode::Timeout,
            detail,
        }),
    };
    encode_frame(&message, out).unwrap_or(0)
}

/// Queues a frame for `to`; drops it if its link is down or full, as a lossy network
/// would (the protocol retries).
fn queue_frame(links: &mut [Link], to: NodeId, frame: &[u8], wakers: &Wakers) {
    let Some(at) = links
        .iter()
        .position(|link| matches!(link.peer, Some((id, _)) if id == to))
    else {
        return;
    };
    let link = &mut links[at];
    if !link.up || link.queued + frame.len() > link.queue.len() {
        link.dropped += 1;
        return;
    }
    link.queue[link.queued..link.queued + frame.len()].copy_from_slice(frame);
    link.queued += frame.len();
    wakers.links[at].signal(());
}

/// Reads a membership address, `a.b.c.d:port`.
fn parse_endpoint(address: &[u8]) -> Option<IpEndpoint> {
    let text = core::str::from_utf8(address).ok()?;
    let address: core::net::SocketAddrV4 = text.parse().ok()?;
    Some(IpEndpoint::new(
        embassy_net::IpAddress::Ipv4(*address.ip()),
        address.port(),
    ))
}
