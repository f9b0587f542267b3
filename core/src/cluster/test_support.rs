//! What the cluster's unit tests share: a small node type and its parts.

use std::vec;
use std::vec::Vec;

use super::{ClientAction, Log, LogLimits, Node, NodeConfig, NodeEvent, Role, Ticket, TicketEvent};
use crate::store::{Store, StoreLimits};
use crate::wire::{
    encode, ClientMessage, ClusterId, Expiry, NodeId, Request, SetCondition, WriteOptions,
    FRAME_HEADER_BYTES,
};

/// A node on heap buffers with room for 8 waiting requests.
pub type TestNode = Node<Vec<u8>, Vec<u8>, 8>;

/// A store of 16 keys of up to 16 bytes each way.
pub const STORE: StoreLimits = StoreLimits {
    max_keys: 16,
    max_key_bytes: 16,
    max_value_bytes: 16,
    max_total_bytes: 1024,
};

/// A log of 16 entries within `max_bytes`.
pub const fn log_limits(max_bytes: u32) -> LogLimits {
    LogLimits {
        max_entries: 16,
        max_bytes,
    }
}

/// An empty store of [`STORE`]'s limits.
pub fn store(hash_seed: u64) -> Store<Vec<u8>> {
    Store::new(vec![0; STORE.memory_bytes().unwrap()], STORE, hash_seed).unwrap()
}

/// An empty log of `limits`.
pub fn log(limits: LogLimits) -> Log<Vec<u8>> {
    Log::new(vec![0; limits.memory_bytes()], limits).unwrap()
}

/// Nodes wired to each other by a lossless network that the test can cut, and a clock
/// (raft-rs's test harness, small).
pub struct Net {
    /// The nodes.
    pub nodes: Vec<TestNode>,
    /// The simulated time.
    pub now_ms: u64,
    /// Answers to the test's requests that waited on tickets, once released.
    pub answers: Vec<Vec<u8>>,
    /// Answers waiting on tickets: (node index, ticket, bytes).
    held: Vec<(usize, Ticket, Vec<u8>)>,
    /// Nodes cut off from every other: their frames are dropped both ways.
    isolated: Vec<NodeId>,
    /// Every event each node reported, in order.
    pub events: Vec<(NodeId, NodeEvent)>,
    /// The largest frame (header included) each node sent each other: (from, to, bytes).
    pub largest_frames: Vec<(NodeId, NodeId, usize)>,
}

impl Net {
    /// A network of `nodes`, at time 0.
    pub fn new(nodes: Vec<TestNode>) -> Self {
        Self {
            nodes,
            now_ms: 0,
            answers: Vec::new(),
            held: Vec::new(),
            isolated: Vec::new(),
            events: Vec::new(),
            largest_frames: Vec::new(),
        }
    }

    /// The index of node `id`.
    pub fn at(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id() == NodeId(id))
            .unwrap()
    }

    /// Cuts node `id` off from every other.
    pub fn isolate(&mut self, id: u64) {
        self.isolated.push(NodeId(id));
    }

    /// Reconnects every node.
    pub fn heal(&mut self) {
        self.isolated.clear();
    }

    /// The leader of the highest term, if any node leads.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id().0)
    }

    /// Delivers every frame and fires every timer, for `ms` of simulated time.
    pub fn run(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        let mut out = vec![0u8; 1 << 16];
        while self.now_ms < end {
            self.now_ms += 1;
            let now = self.now_ms;
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout() <= now {
                    self.nodes[i].handle_timeout(now);
                }
            }
            // Bounded: a node's outputs are finite at each instant.
            for _ in 0..1_000 {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    while let Some(event) = self.nodes[i].poll_ticket_event(&mut out) {
                        if let TicketEvent::Release { ticket } = event {
                            if let Some(at) =
                                self.held.iter().position(|h| h.0 == i && h.1 == ticket)
                            {
                                let (_, _, bytes) = self.held.remove(at);
                                self.answers.push(bytes);
                            }
                        }
                    }
                    let from = self.nodes[i].id();
                    while let Some(event) = self.nodes[i].poll_event() {
                        self.events.push((from, event));
                    }
                    if let Some((to, len)) = self.nodes[i].poll_peer_transmit(now, &mut out) {
                        moved = true;
                        if self.isolated.contains(&from) || self.isolated.contains(&to) {
                            continue;
                        }
                        match self
                            .largest_frames
                            .iter_mut()
                            .find(|(a, b, _)| (*a, *b) == (from, to))
                        {
                            Some(largest) => largest.2 = largest.2.max(len),
                            None => self.largest_frames.push((from, to, len)),
                        }
                        let payload = out[FRAME_HEADER_BYTES..len].to_vec();
                        let Some(j) = self.nodes.iter().position(|n| n.id() == to) else {
                            continue;
                        };
                        let mut reply = vec![0u8; 1 << 16];
                        self.nodes[j].handle_peer_frame(now, from, &payload, &mut reply);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
    }

    /// Sends `request` to node `id`; returns the answer's bytes if it came at once (else
    /// it lands in `answers` when released).
    pub fn request(&mut self, id: u64, request: Request<'_>) -> Option<Vec<u8>> {
        let message = ClientMessage {
            request_id: 1,
            request,
        };
        let mut payload = [0u8; 256];
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0u8; 1 << 16];
        let i = self.at(id);
        let now = self.now_ms;
        match self.nodes[i].handle_client_frame(now, &payload[..len], &mut out) {
            action @ (ClientAction::Reply { len, .. } | ClientAction::Busy { len }) => {
                let answer = out[FRAME_HEADER_BYTES..len].to_vec();
                // The contract a shell relies on to hold a request instead of answering it.
                let busy_answer = matches!(
                    crate::wire::decode::<crate::wire::ServerMessage<'_>>(&answer),
                    Ok(crate::wire::ServerMessage {
                        response: crate::wire::Response::Error(crate::wire::ErrorReply {
                            code: crate::wire::ErrorCode::Busy,
                            ..
                        }),
                        ..
                    })
                );
                assert_eq!(
                    matches!(action, ClientAction::Busy { .. }),
                    busy_answer,
                    "ClientAction::Busy exactly when the answer is an error Busy: {action:?}"
                );
                Some(answer)
            }
            ClientAction::Wait { ticket, len } => {
                self.held
                    .push((i, ticket, out[FRAME_HEADER_BYTES..len].to_vec()));
                None
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A 3-node cluster of nodes with undo journals of `undo_bytes` (none if 0), whose
/// leader took `requests` while cut off, then was deposed and reconnected. Returns the
/// network and the deposed leader's id.
pub fn depose_a_leader_after(undo_bytes: usize, requests: &[Request<'static>]) -> (Net, u64) {
    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let nodes = (1..=3)
        .map(|id| {
            let config = NodeConfig::new(NodeId(id), ClusterId(7), &voters);
            let log = log(log_limits(2048));
            let mut node = Node::new(config, store(id), log, 0);
            if undo_bytes > 0 {
                node.set_undo_memory(vec![0; undo_bytes]);
            }
            node
        })
        .collect();
    let mut net = Net::new(nodes);
    net.run(1_000);
    let old = net.leader().expect("a leader within a second");
    assert!(net.request(old, set(b"a", b"committed")).is_some());
    net.run(100);

    net.isolate(old);
    for request in requests {
        net.request(old, *request);
    }
    net.run(2_000);
    let new = net.leader().filter(|&id| id != old).expect("a new leader");
    assert!(net.request(new, set(b"c", b"kept")).is_some());
    net.run(100);

    net.heal();
    net.run(500);
    (net, old)
}

/// Two writes, answered at once (`leader` acknowledgement), never replicated.
pub fn lost_writes() -> [Request<'static>; 2] {
    [set(b"a", b"lost"), set(b"b", b"lost")]
}

pub fn set(key: &'static [u8], value: &'static [u8]) -> Request<'static> {
    Request::Set {
        key,
        value,
        condition: SetCondition::Always,
        expiry: Expiry::None,
        write: WriteOptions::default(),
    }
}
