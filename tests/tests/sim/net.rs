//! The simulated network: every packet's fate comes from the run's seed.
//!
//! Between nodes, a packet can be dropped, duplicated, delayed by a random time (so
//! packets overtake each other), or blocked by a partition (directed: a one-way partition
//! blocks one direction). Between a client and a node, packets are delayed but never lost,
//! as on a local TCP connection; they are lost only if the node is down when they arrive.

use std::collections::{BTreeMap, HashSet};

use super::rng::SimRng;

/// More packets in flight than a sane cluster of a few nodes ever has.
const MAX_IN_FLIGHT: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Node(u64),
    Client(u64),
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub from: Endpoint,
    pub to: Endpoint,
    pub bytes: Vec<u8>,
}

/// How lossy the network between nodes is.
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    pub drop: f64,
    pub duplicate: f64,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Weather {
    pub const CALM: Weather = Weather {
        drop: 0.0,
        duplicate: 0.0,
        min_delay_ms: 1,
        max_delay_ms: 3,
    };
}

#[derive(Debug, Default, Clone)]
pub struct NetStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub blocked: u64,
}

#[derive(Debug)]
pub struct Network {
    /// Packets in flight, by (delivery time, sequence number): the order is deterministic.
    in_flight: BTreeMap<(u64, u64), Packet>,
    sequence: u64,
    pub weather: Weather,
    /// Blocked directions (from, to) between nodes.
    blocked: HashSet<(u64, u64)>,
    pub stats: NetStats,
}

impl Network {
    pub fn new() -> Self {
        Self {
            in_flight: BTreeMap::new(),
            sequence: 0,
            weather: Weather::CALM,
            blocked: HashSet::new(),
            stats: NetStats::default(),
        }
    }

    fn enqueue(&mut self, at: u64, packet: Packet) {
        // Bounded: a protocol that floods the network fails the run instead of the machine.
        assert!(
            self.in_flight.len() < MAX_IN_FLIGHT,
            "message storm: {MAX_IN_FLIGHT} packets in flight, the last from {:?} to {:?} starting {:?}",
            packet.from,
            packet.to,
            &packet.bytes[..packet.bytes.len().min(24)]
        );
        self.sequence += 1;
        self.in_flight.insert((at, self.sequence), packet);
    }

    pub fn send(&mut self, rng: &mut SimRng, now_ms: u64, packet: Packet) {
        self.stats.sent += 1;
        let (Endpoint::Node(from), Endpoint::Node(to)) = (packet.from, packet.to) else {
            let delay = rng.range(0, 2);
            self.enqueue(now_ms + delay, packet);
            return;
        };
        if self.blocked.contains(&(from, to)) {
            self.stats.blocked += 1;
            return;
        }
        if rng.chance(self.weather.drop) {
            self.stats.dropped += 1;
            return;
        }
        let w = self.weather;
        if rng.chance(w.duplicate) {
            self.stats.duplicated += 1;
            let delay = rng.range(w.min_delay_ms, w.max_delay_ms + 1);
            self.enqueue(now_ms + delay, packet.clone());
        }
        let delay = rng.range(w.min_delay_ms, w.max_delay_ms + 1);
        self.enqueue(now_ms + delay, packet);
    }

    pub fn next_delivery_ms(&self) -> Option<u64> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    /// The next packet due by `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Packet> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now_ms {
            return None;
        }
        self.in_flight.remove(&key)
    }

    /// A node's process died: the packets on its connections are gone with them.
    pub fn drop_connections_of(&mut self, node: u64) {
        let endpoint = Endpoint::Node(node);
        self.in_flight
            .retain(|_, packet| packet.from != endpoint && packet.to != endpoint);
    }

    pub fn block(&mut self, from: u64, to: u64) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
