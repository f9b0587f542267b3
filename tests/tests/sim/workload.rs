//! Simulated clients and the history they record.
//!
//! Each client has one request in flight at a time, sent to a random node (any node takes
//! any request). Every write puts a value no other write puts, so a value read identifies
//! the write that made it. What goes into the history for the linearizability checker:
//!
//! - `quorum` writes: the output when answered; an error or no answer leaves the outcome
//!   unknown (the write may still commit);
//! - `leader` writes: always unknown (they may be lost on failover: that is their
//!   contract), but reads may observe them, so they must be in the history;
//! - linearizable reads: the output when answered; a failed read constrains nothing;
//! - stale reads are not checked for linearizability;
//! - an MSET (`quorum`) of two keys enters the history as one write per key, each
//!   linearizable on its own key (the checker is per key, so the batch's atomicity across
//!   keys is left to the core's unit tests; convergence checks every replica holds it whole).

use std::collections::HashMap;

use memdi_core::wire::{
    decode, encode, AckLevel, ClientMessage, ErrorCode, Expiry, PackedWriter, ReadConsistency,
    Request, Response, ServerMessage, SetCondition, WriteOptions,
};
use memdi_tests::linearizability::{CasOutput, History, Op, OpId, Output};

use super::cluster::Cluster;
use super::rng::SimRng;

/// How long a client waits for an answer: above the nodes' request timeout.
const CLIENT_TIMEOUT_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put(AckLevel),
    MultiSet,
    Cas,
    Incr,
    Delete,
    Get,
    StaleGet,
}

#[derive(Debug)]
struct InFlight {
    request_id: u32,
    kind: Kind,
    op: Option<OpId>,
    /// An MSET's write of its second key (its first is `op`).
    second_op: Option<OpId>,
    value: Vec<u8>,
    deadline_ms: u64,
    /// The node it was sent to: if that node's process dies, the connection breaks and the
    /// client learns at once that the outcome is unknown.
    node: u64,
}

#[derive(Debug)]
struct Client {
    id: u64,
    next_op_ms: u64,
    in_flight: Option<InFlight>,
    /// Last version this client saw per key, for compare-and-set.
    versions: HashMap<Vec<u8>, u64>,
}

#[derive(Debug, Default, Clone)]
pub struct WorkloadStats {
    pub quorum_writes_acked: u64,
    pub leader_writes_acked: u64,
    pub reads_ok: u64,
    pub stale_reads_ok: u64,
    pub errors: u64,
    pub timeouts: u64,
}

pub struct Workload {
    rng: SimRng,
    clients: Vec<Client>,
    keys: Vec<Vec<u8>>,
    next_value: u64,
    next_request_id: u32,
    pub history: History,
    /// Values of writes acknowledged with `ack: quorum` and `ack: leader`.
    pub quorum_acked: Vec<Vec<u8>>,
    pub leader_acked: Vec<Vec<u8>>,
    pub stats: WorkloadStats,
    /// When the last `quorum` write was acknowledged.
    pub last_quorum_ack_ms: Option<u64>,
    pub running: bool,
}

impl Workload {
    pub fn new(seed: u64, clients: u64, keys: u64) -> Self {
        Self {
            rng: SimRng::new(seed ^ 0xC11E_4775),
            clients: (1..=clients)
                .map(|id| Client {
                    id,
                    next_op_ms: id * 7,
                    in_flight: None,
                    versions: HashMap::new(),
                })
                .collect(),
            keys: (0..keys).map(|k| format!("key{k}").into_bytes()).collect(),
            next_value: 0,
            next_request_id: 0,
            history: History::new(),
            quorum_acked: Vec::new(),
            leader_acked: Vec::new(),
            stats: WorkloadStats::default(),
            last_quorum_ack_ms: None,
            running: true,
        }
    }

    pub fn next_event_ms(&self) -> Option<u64> {
        self.clients
            .iter()
            .filter_map(|c| match &c.in_flight {
                Some(flight) => Some(flight.deadline_ms),
                None if self.running => Some(c.next_op_ms),
                None => None,
            })
            .min()
    }

    /// Takes the answers delivered to clients, times out old requests, starts new ones.
    pub fn step(&mut self, cluster: &mut Cluster) {
        let now = cluster.now_ms;
        for (client, bytes) in std::mem::take(&mut cluster.client_inbox) {
            self.answer(now, client, &bytes);
        }
        let crashed = std::mem::take(&mut cluster.crashed_nodes);
        for (client, request_id) in std::mem::take(&mut cluster.refused_requests) {
            let client = &mut self.clients[(client - 1) as usize];
            // A duplicated packet of an earlier request may be the one refused.
            let current = client
                .in_flight
                .as_ref()
                .is_some_and(|f| f.request_id == request_id);
            if let Some(flight) = client.in_flight.take_if(|_| current) {
                // Not executed: the node was down. Try again after a pause, as a client
                // backs off from a refused connection.
                self.stats.errors += 1;
                for op in [flight.op, flight.second_op].into_iter().flatten() {
                    self.history.fail(op);
                }
                client.next_op_ms = now + 50;
            }
        }
        for i in 0..self.clients.len() {
            let timed_out = self.clients[i]
                .in_flight
                .as_ref()
                .is_some_and(|flight| flight.deadline_ms <= now || crashed.contains(&flight.node));
            if timed_out {
                let flight = self.clients[i].in_flight.take().unwrap();
                self.stats.timeouts += 1;
                if let (Some(op), Kind::Get) = (flight.op, flight.kind) {
                    self.history.fail(op);
                }
                self.clients[i].next_op_ms = now;
            }
            if self.running
                && self.clients[i].in_flight.is_none()
                && self.clients[i].next_op_ms <= now
            {
                self.start(i, cluster);
            }
        }
    }

    fn start(&mut self, i: usize, cluster: &mut Cluster) {
        let now = cluster.now_ms;
        let key = self.rng.pick(&self.keys).clone();
        self.next_value += 1;
        // Values far apart, so increments rarely land on another write's value.
        let value = (1_000_000 + self.next_value * 1_000)
            .to_string()
            .into_bytes();
        let quorum = WriteOptions {
            ack: Some(AckLevel::Quorum),
            durability: None,
        };
        let roll = self.rng.range(0, 100);
        let kind = match roll {
            0..=29 => Kind::Get,
            30..=37 => Kind::StaleGet,
            38..=53 => Kind::Put(AckLevel::Quorum),
            54..=59 => Kind::MultiSet,
            60..=71 => Kind::Put(AckLevel::Leader),
            72..=83 => Kind::Cas,
            84..=91 => Kind::Incr,
            _ => Kind::Delete,
        };
        // An MSET writes the value to `key` and to the next key of the list.
        let position = self.keys.iter().position(|k| *k == key).unwrap_or(0);
        let second_key = self.keys[(position + 1) % self.keys.len()].clone();
        let mut pairs_buffer = [0u8; 128];
        let mut pairs = PackedWriter::new(&mut pairs_buffer);
        for item in [&key, &value, &second_key, &value] {
            pairs
                .push(Some(item))
                .expect("two small pairs fit 128 bytes");
        }
        let pairs = pairs.finish();
        let client = &mut self.clients[i];
        let expected_version = *client.versions.get(&key).unwrap_or(&0);
        let delta = 1 + self.rng.range(0, 5) as i64;
        let (request, op) = match kind {
            Kind::Get => (
                Request::Get {
                    key: &key,
                    read: ReadConsistency::Linearizable,
                },
                Some(Op::Get),
            ),
            Kind::StaleGet => (
                Request::Get {
                    key: &key,
                    read: ReadConsistency::Stale,
                },
                None,
            ),
            Kind::Put(ack) => (
                Request::Set {
                    key: &key,
                    value: &value,
                    condition: SetCondition::Always,
                    expiry: Expiry::None,
                    write: WriteOptions {
                        ack: Some(ack),
                        durability: None,
                    },
                },
                Some(Op::Put {
                    value: value.clone(),
                }),
            ),
            Kind::MultiSet => (
                Request::MultiSet {
                    pairs,
                    write: quorum,
                },
                Some(Op::Put {
                    value: value.clone(),
                }),
            ),
            Kind::Cas => (
                Request::CompareAndSet {
                    key: &key,
                    expected_version,
                    value: &value,
                    expiry: Expiry::None,
                    write: quorum,
                },
                Some(Op::CompareAndSet {
                    expected_version,
                    value: value.clone(),
                }),
            ),
            Kind::Incr => (
                Request::IncrBy {
                    key: &key,
                    delta,
                    write: quorum,
                },
                Some(Op::IncrBy { delta }),
            ),
            Kind::Delete => (
                Request::Delete {
                    key: &key,
                    write: quorum,
                },
                Some(Op::Delete),
            ),
        };
        self.next_request_id += 1;
        let request_id = self.next_request_id;
        let mut bytes = vec![0; 512];
        let len = encode(
            &ClientMessage {
                request_id,
                request,
            },
            &mut bytes,
        )
        .unwrap()
        .len();
        bytes.truncate(len);
        let op = op.map(|op| self.history.invoke(client.id, key.clone(), op, now));
        let second_op = (kind == Kind::MultiSet && second_key != key).then(|| {
            let put = Op::Put {
                value: value.clone(),
            };
            self.history.invoke(client.id, second_key.clone(), put, now)
        });
        // Clients know the members, as a client of a real cluster is configured with them.
        let node = *self.rng.pick(&cluster.member_ids());
        client.in_flight = Some(InFlight {
            request_id,
            kind,
            op,
            second_op,
            value,
            deadline_ms: now + CLIENT_TIMEOUT_MS,
            node,
        });
        cluster.client_send(client.id, node, bytes);
    }

    fn answer(&mut self, now: u64, client_id: u64, bytes: &[u8]) {
        let Ok(ServerMessage {
            request_id,
            response,
        }) = decode::<ServerMessage<'_>>(bytes)
        else {
            panic!("undecodable answer to client {client_id}");
        };
        let client = &mut self.clients[(client_id - 1) as usize];
        if client
            .in_flight
            .as_ref()
            .is_none_or(|f| f.request_id != request_id)
        {
            return; // A late answer to a request already given up on.
        }
        let flight = client.in_flight.take().unwrap();
        if std::env::var_os("MEMDI_SIM_TRACE_CLIENTS").is_some() {
            println!(
                "{now} ms client {client_id}: {:?} via node {} -> {response:?}",
                flight.kind, flight.node
            );
        }
        client.next_op_ms = now + self.rng.range(0, 20);
        let Some(op) = flight.op else {
            if matches!(response, Response::Value(_)) {
                self.stats.stale_reads_ok += 1;
            }
            return;
        };
        let output = match (flight.kind, response) {
            (_, Response::Error(error)) => {
                self.stats.errors += 1;
                // A read had no effect. A write answered NoLeader or Busy was refused before
                // it was executed; any other error leaves its outcome unknown (left open).
                let refused = matches!(error.code, ErrorCode::NoLeader | ErrorCode::Busy);
                if flight.kind == Kind::Get || refused {
                    self.history.fail(op);
                    if let Some(second) = flight.second_op {
                        self.history.fail(second);
                    }
                }
                return;
            }
            (Kind::Put(AckLevel::Leader), Response::Stored { .. }) => {
                self.stats.leader_writes_acked += 1;
                self.leader_acked.push(flight.value);
                // Left unknown in the history: a leader-acknowledged write may be lost.
                return;
            }
            (Kind::Get, Response::Value(value)) => {
                self.stats.reads_ok += 1;
                let value = value.map(|v| (v.value.to_vec(), v.version));
                if let Some((_, version)) = &value {
                    let key = self.history.operations()[op.index()].key.clone();
                    client.versions.insert(key, *version);
                }
                Output::Value(value)
            }
            (Kind::Put(AckLevel::Quorum), Response::Stored { version }) => {
                let key = self.history.operations()[op.index()].key.clone();
                client.versions.insert(key, version);
                self.quorum_acked.push(flight.value);
                Output::Ok {
                    version: Some(version),
                }
            }
            (Kind::MultiSet, Response::Stored { version }) => {
                // The answer carries the version of the last key written; the first key's
                // goes unchecked.
                self.quorum_acked.push(flight.value);
                match flight.second_op {
                    Some(second) => {
                        let key = self.history.operations()[second.index()].key.clone();
                        client.versions.insert(key, version);
                        self.history.complete(
                            second,
                            Output::Ok {
                                version: Some(version),
                            },
                            now,
                        );
                        Output::Ok { version: None }
                    }
                    None => Output::Ok {
                        version: Some(version),
                    },
                }
            }
            (Kind::Cas, Response::Stored { version }) => {
                let key = self.history.operations()[op.index()].key.clone();
                client.versions.insert(key, version);
                self.quorum_acked.push(flight.value);
                Output::Cas(CasOutput::Ok {
                    version: Some(version),
                })
            }
            (Kind::Cas, Response::VersionMismatch { current_version }) => {
                Output::Cas(CasOutput::Mismatch { current_version })
            }
            (Kind::Incr, Response::Integer(value)) => Output::Integer(value),
            (Kind::Delete, Response::Count(count)) => Output::Deleted(count == 1),
            (kind, response) => panic!("unexpected answer {response:?} to {kind:?}"),
        };
        if !matches!(flight.kind, Kind::Get) {
            self.stats.quorum_writes_acked += 1;
            self.last_quorum_ack_ms = Some(now);
        }
        self.history.complete(op, output, now);
    }
}
