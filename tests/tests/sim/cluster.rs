//! Simulated nodes: real `memdi_core::cluster::Node`s driven the way a shell drives them.
//!
//! The harness does what the tokio and embassy shells do: it hands each node the frames
//! that arrive and the time, holds the bytes of waiting requests under their tickets, and
//! sends what the node's `poll_*` calls give. Framing is left out (the 4-byte header of each
//! frame a node writes is stripped; framing has its own tests), and so is the handshake.

use std::collections::{BTreeMap, HashMap, HashSet};

use memdi_core::cluster::{
    ClientAction, Command, Log, LogLimits, Membership, Node, NodeConfig, NodeEvent, PeerAction,
    Role, Ticket, TicketEvent,
};
use memdi_core::store::{Store, StoreLimits};
use memdi_core::wire::{ClusterId, NodeId, FRAME_HEADER_BYTES};

use super::disk::Disk;
use super::net::{Endpoint, Network, Packet};
use super::rng::SimRng;

/// Waiting requests per node.
pub const TICKETS: usize = 256;
pub type CoreNode = Node<Vec<u8>, Vec<u8>, TICKETS>;

/// Scratch for a node's outputs: a frame and as much again for the node's own staging.
const OUT_BYTES: usize = 256 * 1024;

pub const STORE_LIMITS: StoreLimits = StoreLimits {
    max_keys: 512,
    max_key_bytes: 32,
    max_value_bytes: 64,
    max_total_bytes: 512 * 128,
};

/// How often a node writes a checkpoint (a snapshot and a new record file), plus a stagger
/// per node.
const CHECKPOINT_EVERY_MS: u64 = 1_500;

/// Small, so that followers regularly fall behind the log and need snapshots.
pub const LOG_LIMITS: LogLimits = LogLimits {
    max_entries: 64,
    max_bytes: 8 * 1024,
};

/// What a shell holds for a waiting request.
#[derive(Debug, Clone)]
enum Held {
    /// An answer to send to `to` when released.
    Answer { to: Endpoint, bytes: Vec<u8> },
    /// A request forwarded to the leader: its answer arrives as a `ClientReply`.
    Forwarded { client: u64 },
    /// A request to submit again when a leader is known.
    Request { client: u64, bytes: Vec<u8> },
}

#[derive(Debug, Default, Clone)]
pub struct NodeStats {
    pub elections_won: u64,
    pub stale_stores: u64,
    /// Deposed leaders that undid their uncommitted writes with the undo journal.
    pub rollbacks: u64,
    pub snapshots_installed: u64,
    pub apply_failures: u64,
    pub checkpoints: u64,
    pub restarts: u64,
    /// Membership changes a leader made or took (counted once per node and change).
    pub membership_changes: u64,
    /// Restarts with an empty store, log and vote (`LoseState`).
    pub restarts_without_state: u64,
    /// Of those, the ones that finished recovery (`NodeEvent::Recovered`).
    pub recoveries: u64,
    /// Of those, the ones that crashed again before they had recovered.
    pub crashed_while_recovering: u64,
}

pub struct SimNode {
    pub id: u64,
    pub core: CoreNode,
    /// A paused node (SIGSTOP, or a crashed process not yet restarted) receives nothing and
    /// its timers do not fire.
    pub paused: bool,
    /// Crashed: when resumed, it restarts from its disk, its memory lost.
    pub crashed: bool,
    /// Crashed and lost its disk too (or crashed before it had recovered, which its disk
    /// does not record): when resumed, it restarts with nothing and recovers.
    pub lost_state: bool,
    pub disk: Disk,
    config: NodeConfig,
    hash_seed: u64,
    /// Bytes of undo journal the node gets at every start (0: none).
    undo_bytes: usize,
    next_checkpoint_ms: u64,
    held: HashMap<Ticket, Held>,
    out: Vec<u8>,
    /// Highest commit index whose entries were recorded as committed.
    recorded_commit: u64,
    /// (applied index, version counter) after the last event, for tracing.
    last_seen: (u64, u64),
}

/// Everything the harness observed that the checkers need.
#[derive(Debug, Default)]
pub struct Observed {
    /// Term → the node that led it.
    pub leaders: BTreeMap<u64, u64>,
    /// Violations found while running.
    pub violations: Vec<String>,
    /// Values of every committed `Put` and `PutMany` (values are unique per write).
    pub committed_values: HashSet<Vec<u8>>,
    pub stats: NodeStats,
}

pub struct Cluster {
    pub now_ms: u64,
    pub nodes: Vec<SimNode>,
    pub net: Network,
    pub rng: SimRng,
    pub observed: Observed,
    /// Answers for clients delivered by the network, taken by the workload.
    pub client_inbox: Vec<(u64, Vec<u8>)>,
    /// Nodes crashed since the workload last looked: their clients' connections broke.
    pub crashed_nodes: Vec<u64>,
    /// (client, request id) of requests that reached a node that is down: connection
    /// refused, so they were certainly not executed.
    pub refused_requests: Vec<(u64, u32)>,
    /// Print every node event (`MEMDI_SIM_TRACE=1`), to debug a replayed seed.
    pub trace: bool,
    /// Answers to the operator's membership requests.
    pub admin_inbox: Vec<Vec<u8>>,
}

/// The client id of the operator who adds and removes nodes.
pub const ADMIN_CLIENT: u64 = u64::MAX;

impl Cluster {
    /// A cluster of `size` voters, and `spares` more nodes (ids after the voters') started
    /// with no membership, waiting to be added.
    pub fn new(seed: u64, size: u64, spares: u64) -> Self {
        let voters: Vec<NodeId> = (1..=size).map(NodeId).collect();
        // A quarter of the runs without an undo journal (deposed leaders wait for a
        // snapshot), a quarter with one so small it gives up often, the rest with room.
        let undo_bytes = match seed % 4 {
            0 => 0,
            1 => 300,
            _ => 16 * 1024,
        };
        let nodes = (1..=size + spares)
            .map(NodeId)
            .map(|id| {
                let bootstrap: &[NodeId] = if id.0 <= size { &voters } else { &[] };
                let mut config = NodeConfig::new(id, ClusterId(7), bootstrap);
                config.rng_seed = seed.wrapping_mul(31).wrapping_add(id.0);
                config.max_append_bytes = 16 * 1024;
                config.persistent = true;
                let hash_seed = seed ^ id.0;
                let store = Store::new(
                    vec![0; STORE_LIMITS.memory_bytes().unwrap()],
                    STORE_LIMITS,
                    hash_seed,
                )
                .unwrap();
                let log = Log::new(vec![0; LOG_LIMITS.memory_bytes()], LOG_LIMITS).unwrap();
                let mut core = Node::new(config.clone(), store, log, 0);
                if undo_bytes > 0 {
                    core.set_undo_memory(vec![0; undo_bytes]);
                }
                SimNode {
                    id: id.0,
                    core,
                    undo_bytes,
                    paused: false,
                    crashed: false,
                    lost_state: false,
                    disk: Disk::default(),
                    config,
                    hash_seed,
                    next_checkpoint_ms: CHECKPOINT_EVERY_MS + 100 * id.0,
                    held: HashMap::new(),
                    out: vec![0; OUT_BYTES],
                    recorded_commit: 0,
                    last_seen: (0, 0),
                }
            })
            .collect();
        Self {
            now_ms: 0,
            nodes,
            net: Network::new(),
            rng: SimRng::new(seed),
            observed: Observed::default(),
            client_inbox: Vec::new(),
            crashed_nodes: Vec::new(),
            refused_requests: Vec::new(),
            trace: std::env::var_os("MEMDI_SIM_TRACE").is_some(),
            admin_inbox: Vec::new(),
        }
    }

    /// The membership as the most advanced live node sees it.
    pub fn membership(&self) -> &Membership {
        let node = self
            .nodes
            .iter()
            .filter(|n| !n.paused && !n.core.membership().is_empty())
            .max_by_key(|n| (n.core.commit_index(), n.core.term()))
            .unwrap_or(&self.nodes[0]);
        node.core.membership()
    }

    /// The members' ids: where clients send requests.
    pub fn member_ids(&self) -> Vec<u64> {
        self.membership().iter().map(|m| m.id.0).collect()
    }

    fn index_of(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// The earliest time anything is due: a packet or a node timer.
    pub fn next_event_ms(&self) -> Option<u64> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| !n.paused)
            .map(|n| n.core.poll_timeout());
        timers.chain(self.net.next_delivery_ms()).min()
    }

    /// Runs everything due at `now_ms`.
    pub fn step_to(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        while let Some(packet) = self.net.pop_due(self.now_ms) {
            self.deliver(packet);
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].paused && self.nodes[i].core.poll_timeout() <= self.now_ms {
                self.nodes[i].core.handle_timeout(self.now_ms);
                self.drain(i);
            }
            let node = &mut self.nodes[i];
            if !node.paused && node.next_checkpoint_ms <= self.now_ms {
                node.next_checkpoint_ms = self.now_ms + CHECKPOINT_EVERY_MS;
                node.disk.checkpoint(&mut node.core);
            }
        }
    }

    /// A client sends a request payload to a node.
    pub fn client_send(&mut self, client: u64, node: u64, bytes: Vec<u8>) {
        let packet = Packet {
            from: Endpoint::Client(client),
            to: Endpoint::Node(node),
            bytes,
        };
        self.net.send(&mut self.rng, self.now_ms, packet);
    }

    fn send(&mut self, from: u64, to: Endpoint, bytes: Vec<u8>) {
        let packet = Packet {
            from: Endpoint::Node(from),
            to,
            bytes,
        };
        self.net.send(&mut self.rng, self.now_ms, packet);
    }

    fn deliver(&mut self, packet: Packet) {
        match packet.to {
            Endpoint::Client(ADMIN_CLIENT) => self.admin_inbox.push(packet.bytes),
            Endpoint::Client(client) => self.client_inbox.push((client, packet.bytes)),
            Endpoint::Node(id) => {
                let i = self.index_of(id);
                if self.nodes[i].paused {
                    if let (true, Endpoint::Node(from)) = (self.nodes[i].crashed, packet.from) {
                        // The sender's connection to it is refused.
                        let sender = self.index_of(from);
                        if !self.nodes[sender].paused {
                            self.nodes[sender].core.handle_peer_lost(NodeId(id));
                            self.drain(sender);
                        }
                    }
                    if let (true, Endpoint::Client(client)) = (self.nodes[i].crashed, packet.from) {
                        if client == ADMIN_CLIENT {
                            // The operator tries again with a later change.
                            return;
                        }
                        // Connection refused: the client learns at once.
                        if let Ok(message) = memdi_core::wire::decode::<
                            memdi_core::wire::ClientMessage<'_>,
                        >(&packet.bytes)
                        {
                            self.refused_requests.push((client, message.request_id));
                        }
                    }
                    return;
                }
                match packet.from {
                    Endpoint::Client(client) => self.client_request(i, client, &packet.bytes),
                    Endpoint::Node(from) => self.peer_frame(i, from, &packet.bytes),
                }
                self.drain(i);
            }
        }
    }

    fn client_request(&mut self, i: usize, client: u64, payload: &[u8]) {
        let now = self.now_ms;
        let node = &mut self.nodes[i];
        let action = node.core.handle_client_frame(now, payload, &mut node.out);
        let id = node.id;
        match action {
            // A busy answer goes back too: the simulated client retries, as the real one.
            ClientAction::Reply { len, .. } | ClientAction::Busy { len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                self.send(id, Endpoint::Client(client), bytes);
            }
            ClientAction::Wait { ticket, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                node.held.insert(
                    ticket,
                    Held::Answer {
                        to: Endpoint::Client(client),
                        bytes,
                    },
                );
            }
            ClientAction::Forward { ticket, to, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                node.held.insert(ticket, Held::Forwarded { client });
                self.send(id, Endpoint::Node(to.0), bytes);
            }
            ClientAction::Hold { ticket } => {
                node.held.insert(
                    ticket,
                    Held::Request {
                        client,
                        bytes: payload.to_vec(),
                    },
                );
            }
            ClientAction::Save { .. } | ClientAction::Info { .. } => {
                unreachable!("the simulated clients never send SAVE or INFO")
            }
        }
    }

    fn peer_frame(&mut self, i: usize, from: u64, payload: &[u8]) {
        let now = self.now_ms;
        let node = &mut self.nodes[i];
        let action = node
            .core
            .handle_peer_frame(now, NodeId(from), payload, &mut node.out);
        let id = node.id;
        match action {
            PeerAction::None => {}
            PeerAction::Send { to, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                self.send(id, Endpoint::Node(to.0), bytes);
            }
            PeerAction::Wait { ticket, to, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                node.held.insert(
                    ticket,
                    Held::Answer {
                        to: Endpoint::Node(to.0),
                        bytes,
                    },
                );
            }
            PeerAction::ClientReply { ticket, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                if let Some(Held::Forwarded { client }) = node.held.remove(&ticket) {
                    self.send(id, Endpoint::Client(client), bytes);
                }
            }
        }
    }

    /// Sends everything the node has to send, and records what the checkers need.
    fn drain(&mut self, i: usize) {
        let now = self.now_ms;
        // Bounded: each poll consumes queued work; a node never produces endlessly.
        for polls in 0..100_000 {
            if polls == 1_000 && self.trace {
                let node = &self.nodes[i];
                println!("{now} ms node {}: 1000 outputs in one drain; log {}..={} commit {} applied {}; members {:?}",
                    node.id, node.core.log().first_index(), node.core.log().last_index(), node.core.commit_index(), node.core.applied_index(),
                    node.core.members().collect::<Vec<_>>());
            }
            let node = &mut self.nodes[i];
            let id = node.id;
            // What the node asks to persist is on disk before anything it gives after.
            if let Some(persist) = node.core.poll_persist() {
                if node.disk.write(&mut node.core, persist) {
                    node.disk.checkpoint(&mut node.core);
                }
                continue;
            }
            if let Some((to, len)) = node.core.poll_peer_transmit(now, &mut node.out) {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                self.send(id, Endpoint::Node(to.0), bytes);
                continue;
            }
            if let Some(event) = node.core.poll_ticket_event(&mut node.out) {
                self.ticket_event(i, event);
                continue;
            }
            if let Some(event) = node.core.poll_event() {
                if self.trace {
                    let core = &node.core;
                    println!(
                        "{now:>6} ms node {id}: {event:?} (applied {} commit {} versions {}; members {:?})",
                        core.applied_index(),
                        core.commit_index(),
                        core.store().last_version(),
                        core.membership()
                    );
                }
                match event {
                    NodeEvent::RoleChanged {
                        role: Role::Leader, ..
                    } => self.observed.stats.elections_won += 1,
                    NodeEvent::StoreStale { .. } => self.observed.stats.stale_stores += 1,
                    NodeEvent::RolledBack { .. } => self.observed.stats.rollbacks += 1,
                    NodeEvent::MembershipChanged { .. } => {
                        self.observed.stats.membership_changes += 1
                    }
                    NodeEvent::SnapshotInstalled { .. } => {
                        self.observed.stats.snapshots_installed += 1
                    }
                    NodeEvent::Recovered { .. } => self.observed.stats.recoveries += 1,
                    NodeEvent::ApplyFailed { index } => {
                        self.observed.stats.apply_failures += 1;
                        self.observed
                            .violations
                            .push(format!("node {id} failed to apply entry {index}"));
                    }
                    _ => {}
                }
                continue;
            }
            break;
        }
        self.record(i);
    }

    fn ticket_event(&mut self, i: usize, event: TicketEvent) {
        let node = &mut self.nodes[i];
        let id = node.id;
        match event {
            TicketEvent::Release { ticket } => {
                if let Some(Held::Answer { to, bytes }) = node.held.remove(&ticket) {
                    self.send(id, to, bytes);
                }
            }
            TicketEvent::Reply { ticket, len } => {
                let bytes = node.out[FRAME_HEADER_BYTES..len].to_vec();
                let to = match node.held.remove(&ticket) {
                    Some(Held::Answer { to, .. }) => Some(to),
                    Some(Held::Forwarded { client }) | Some(Held::Request { client, .. }) => {
                        Some(Endpoint::Client(client))
                    }
                    None => None,
                };
                if let Some(to) = to {
                    self.send(id, to, bytes);
                }
            }
            TicketEvent::Resubmit { ticket } => {
                if let Some(Held::Request { client, bytes }) = node.held.remove(&ticket) {
                    self.client_request(i, client, &bytes);
                }
            }
        }
    }

    /// Checks one leader per term, and records newly committed entries.
    fn record(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let seen = (node.core.applied_index(), node.core.store().last_version());
        if self.trace
            && seen != node.last_seen
            && std::env::var_os("MEMDI_SIM_TRACE_STATE").is_some()
        {
            println!(
                "{} ms node {}: applied {} versions {} log {}..={} commit {} {:?} term {}",
                self.now_ms,
                node.id,
                seen.0,
                seen.1,
                node.core.log().first_index(),
                node.core.log().last_index(),
                node.core.commit_index(),
                node.core.role(),
                node.core.term()
            );
        }
        if self.trace && seen.1 != node.last_seen.1 && seen.0 == node.last_seen.0 {
            println!(
                "{} ms node {}: versions {} -> {} with applied index {} unchanged ({:?})",
                self.now_ms,
                node.id,
                node.last_seen.1,
                seen.1,
                seen.0,
                node.core.role()
            );
        }
        node.last_seen = seen;
        if node.core.role() == Role::Leader {
            let term = node.core.term();
            match self.observed.leaders.get(&term) {
                Some(&other) if other != node.id => self.observed.violations.push(format!(
                    "two leaders in term {term}: nodes {other} and {} (at {} ms)",
                    node.id, self.now_ms
                )),
                _ => {
                    self.observed.leaders.insert(term, node.id);
                }
            }
        }
        let commit = node.core.commit_index();
        let log = node.core.log();
        let from = node
            .recorded_commit
            .max(log.first_index().saturating_sub(1))
            + 1;
        for index in from..=commit {
            if let Some((_, bytes)) = log.entry(index) {
                match Command::decode(bytes) {
                    Ok(Command::Put { value, .. }) => {
                        self.observed.committed_values.insert(value.to_vec());
                    }
                    Ok(Command::PutMany { pairs }) => {
                        let values = pairs.iter().skip(1).step_by(2).flatten();
                        self.observed
                            .committed_values
                            .extend(values.map(<[u8]>::to_vec));
                    }
                    _ => {}
                }
            }
        }
        node.recorded_commit = node.recorded_commit.max(commit);
    }

    pub fn pause(&mut self, id: u64) {
        let i = self.index_of(id);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, id: u64) {
        let i = self.index_of(id);
        if self.nodes[i].crashed {
            // Its new connections to the others.
            for j in 0..self.nodes.len() {
                if j != i {
                    self.nodes[j].core.handle_peer_connected(NodeId(id));
                }
            }
            let node = &mut self.nodes[i];
            node.crashed = false;
            node.held.clear();
            if node.lost_state {
                node.lost_state = false;
                self.observed.stats.restarts_without_state += 1;
                let store = Store::new(
                    vec![0; STORE_LIMITS.memory_bytes().unwrap()],
                    STORE_LIMITS,
                    node.hash_seed,
                )
                .unwrap();
                let log = Log::new(vec![0; LOG_LIMITS.memory_bytes()], LOG_LIMITS).unwrap();
                let mut core =
                    Node::restarted_without_state(node.config.clone(), store, log, self.now_ms);
                if node.undo_bytes > 0 {
                    core.set_undo_memory(vec![0; node.undo_bytes]);
                }
                node.core = core;
                // A new, empty disk: what the node writes from now on.
                node.disk = Disk::default();
                if self.trace {
                    println!("{} ms node {id}: restarted without state", self.now_ms);
                }
                self.nodes[i].paused = false;
                return;
            }
            self.observed.stats.restarts += 1;
            match node
                .disk
                .restore(node.config.clone(), node.hash_seed, self.now_ms)
            {
                Ok(mut core) => {
                    if node.undo_bytes > 0 {
                        core.set_undo_memory(vec![0; node.undo_bytes]);
                    }
                    node.core = core;
                }
                Err(error) => self.observed.violations.push(format!(
                    "node {id} could not restart from its disk: {error}"
                )),
            }
            if self.trace {
                let core = &node.core;
                println!(
                    "{} ms node {id}: restarted from disk: term {} log {}..={} commit {} applied {}",
                    self.now_ms,
                    core.term(),
                    core.log().first_index(),
                    core.log().last_index(),
                    core.commit_index(),
                    core.applied_index()
                );
            }
        }
        self.nodes[i].paused = false;
    }

    /// Kills a node's process: it stops at once, and restarts (on `resume`) with only what
    /// its disk holds.
    pub fn crash(&mut self, id: u64) {
        let i = self.index_of(id);
        // A node that had not recovered yet: its disk holds what it wrote since, but not
        // that it must not vote (memdi-server does not use recovery yet), so it comes back
        // without state again.
        if self.nodes[i].core.is_recovering() && !self.nodes[i].crashed {
            self.nodes[i].lost_state = true;
            self.observed.stats.crashed_while_recovering += 1;
        }
        self.nodes[i].paused = true;
        self.nodes[i].crashed = true;
        self.crashed_nodes.push(id);
        self.net.drop_connections_of(id);
        // The others' connections to it break.
        for j in 0..self.nodes.len() {
            if j == i || self.nodes[j].paused {
                continue;
            }
            self.nodes[j].core.handle_peer_lost(NodeId(id));
            self.drain(j);
        }
    }

    /// Kills a node and loses its disk: it restarts (on `resume`) with an empty store, log
    /// and vote, and recovers (a board after a reset).
    pub fn crash_losing_state(&mut self, id: u64) {
        let i = self.index_of(id);
        if self.nodes[i].crashed {
            // Already down: its disk goes too.
            self.nodes[i].lost_state = true;
            return;
        }
        self.crash(id);
        self.nodes[i].lost_state = true;
    }

    /// Whether the nodes have an undo journal with room (16 KiB: half of the runs), rather
    /// than none or one so small that it gives up often.
    pub fn undo_journal_with_room(&self) -> bool {
        self.nodes.iter().all(|n| n.undo_bytes >= 16 * 1024)
    }

    /// The fewest voters any node's membership has (removed nodes and spares not yet added
    /// included, which only makes it smaller when a change is uncommitted somewhere).
    pub fn fewest_voters(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.core.membership())
            .filter(|m| !m.is_empty())
            .map(|m| m.voter_count())
            .min()
            .unwrap_or(0)
    }

    /// Whether some node is without its state (down after losing it, or recovering).
    pub fn any_without_state(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.lost_state || n.core.is_recovering())
    }

    /// The leader a majority would recognize now, if any: a live leader of the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| !n.paused && n.core.role() == Role::Leader)
            .max_by_key(|n| n.core.term())
            .map(|n| n.id)
    }
}
