//! The fault schedule of a run, drawn from its seed.
//!
//! Faults come one after another at random intervals, each undone after a random time:
//! symmetric partitions (a minority cut off from a majority), the leader isolated, one-way
//! link failures, paused nodes (a process stopped: it resumes with its memory), crashed
//! nodes (a process killed: it restarts from what its disk holds), nodes that lose their
//! state (a board reset: it restarts with an empty store, log and vote and recovers, see
//! docs/protocol.md 4.10; one node without its state at a time), bad weather (loss,
//! duplication, long and reordering delays), and membership changes: the operator adds a
//! spare node (it joins
//! as a learner and the leader promotes it once caught up) or removes a member, the leader
//! included, sending the request to any member. A removed node is never added again (a
//! node that rejoins must come back with a new id or an empty disk).

use std::collections::BTreeMap;

use memdi_core::wire::{encode, ClientMessage, NodeId, Request};

use super::cluster::{Cluster, ADMIN_CLIENT};
use super::net::Weather;
use super::rng::SimRng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Partition,
    IsolateLeader,
    OneWay,
    Pause,
    PauseLeader,
    Weather,
    Crash,
    CrashLeader,
    Join,
    Leave,
    /// A member crashes and loses its disk (a board reset), then restarts empty.
    LoseState,
}

#[derive(Debug, Clone)]
enum Action {
    Start(FaultKind),
    HealLinks,
    Resume(u64),
    CalmWeather,
}

pub struct Faults {
    rng: SimRng,
    schedule: BTreeMap<(u64, u64), Action>,
    sequence: u64,
    next_fault_ms: u64,
    pub until_ms: u64,
    pub counts: BTreeMap<FaultKind, u64>,
    /// Nodes the operator asked to remove: never added again.
    removed: Vec<u64>,
    admin_requests: u32,
    /// When the operator last asked to remove a member (the change may take a while).
    last_leave_ms: Option<u64>,
}

impl Faults {
    pub fn new(seed: u64, until_ms: u64) -> Self {
        Self {
            rng: SimRng::new(seed ^ 0xFA17),
            schedule: BTreeMap::new(),
            sequence: 0,
            next_fault_ms: 500,
            until_ms,
            counts: BTreeMap::new(),
            removed: Vec::new(),
            admin_requests: 0,
            last_leave_ms: None,
        }
    }

    fn at(&mut self, when: u64, action: Action) {
        self.sequence += 1;
        self.schedule.insert((when, self.sequence), action);
    }

    pub fn next_event_ms(&self) -> Option<u64> {
        let scheduled = self.schedule.keys().next().map(|&(at, _)| at);
        let next = (self.next_fault_ms < self.until_ms).then_some(self.next_fault_ms);
        scheduled.into_iter().chain(next).min()
    }

    pub fn apply_due(&mut self, cluster: &mut Cluster) {
        let now = cluster.now_ms;
        if self.next_fault_ms <= now && now < self.until_ms {
            let kind = match self.rng.range(0, 11) {
                10 => FaultKind::LoseState,
                8 => FaultKind::Join,
                9 => FaultKind::Leave,
                0 => FaultKind::Partition,
                1 => FaultKind::IsolateLeader,
                2 => FaultKind::OneWay,
                3 => FaultKind::Pause,
                4 => FaultKind::PauseLeader,
                5 => FaultKind::Crash,
                6 => FaultKind::CrashLeader,
                _ => FaultKind::Weather,
            };
            self.at(now, Action::Start(kind));
            self.next_fault_ms = now + self.rng.range(300, 1_500);
        }
        while let Some((&key, _)) = self.schedule.iter().next() {
            if key.0 > now {
                break;
            }
            let action = self.schedule.remove(&key).unwrap();
            self.run(action, cluster);
        }
    }

    fn run(&mut self, action: Action, cluster: &mut Cluster) {
        let now = cluster.now_ms;
        let size = cluster.nodes.len() as u64;
        let lasting = self.rng.range(200, 2_500);
        match action {
            Action::Start(kind) => {
                // One node without its state at a time: the guarantees hold while the
                // others keep theirs.
                // And only with three voters or more: a voter of two that lost its state
                // cannot hear from a majority of the *other* voters, so it never votes again
                // and the other cannot be elected (the case the protocol refuses, 4.10).
                // A removal may still be on its way (held while no leader is known, up to
                // the request timeout) or uncommitted, so not within 3 s of one either, and
                // the count is the fewest voters any node's membership has.
                // And only in the runs whose nodes have an undo journal with room: without
                // one, a deposed leader's store goes stale, and a node that loses its state
                // may take the only store that can serve with it (a stale node can hand its
                // log over, but no node can rebuild its store: the step 4.10 leaves open;
                // 2 of 100,000 seeds showed it before this rule).
                let voters = cluster.membership().voter_count();
                let leaving = self.last_leave_ms.is_some_and(|at| now < at + 3_000);
                if kind == FaultKind::LoseState
                    && (cluster.any_without_state()
                        || cluster.fewest_voters() < 3
                        || leaving
                        || !cluster.undo_journal_with_room())
                {
                    return;
                }
                // For the same reason the operator does not go below three voters while a
                // node is without its state.
                if kind == FaultKind::Leave && cluster.any_without_state() && voters <= 3 {
                    return;
                }
                *self.counts.entry(kind).or_default() += 1;
                match kind {
                    FaultKind::Partition => {
                        // A random minority against the rest.
                        let minority = self.rng.range(1, size.div_ceil(2));
                        let mut ids: Vec<u64> = (1..=size).collect();
                        for i in (1..ids.len()).rev() {
                            ids.swap(i, self.rng.range(0, i as u64 + 1) as usize);
                        }
                        let (small, large) = ids.split_at(minority as usize);
                        for &a in small {
                            for &b in large {
                                cluster.net.block(a, b);
                                cluster.net.block(b, a);
                            }
                        }
                        self.at(now + lasting, Action::HealLinks);
                    }
                    FaultKind::IsolateLeader => {
                        if let Some(leader) = cluster.leader() {
                            for other in (1..=size).filter(|&o| o != leader) {
                                cluster.net.block(leader, other);
                                cluster.net.block(other, leader);
                            }
                        }
                        self.at(now + lasting, Action::HealLinks);
                    }
                    FaultKind::OneWay => {
                        let a = 1 + self.rng.range(0, size);
                        let b = 1 + (a + self.rng.range(0, size - 1)) % size;
                        cluster.net.block(a, b);
                        self.at(now + lasting, Action::HealLinks);
                    }
                    FaultKind::Pause | FaultKind::PauseLeader => {
                        let node = match (kind, cluster.leader()) {
                            (FaultKind::PauseLeader, Some(leader)) => leader,
                            _ => 1 + self.rng.range(0, size),
                        };
                        cluster.pause(node);
                        self.at(now + lasting, Action::Resume(node));
                    }
                    FaultKind::Crash | FaultKind::CrashLeader => {
                        let node = match (kind, cluster.leader()) {
                            (FaultKind::CrashLeader, Some(leader)) => leader,
                            _ => 1 + self.rng.range(0, size),
                        };
                        cluster.crash(node);
                        // Half the time a supervisor restarts it at once: an election it
                        // voted in may still be going on, which a node that forgot its vote
                        // would break.
                        let down_ms = if self.rng.chance(0.5) {
                            self.rng.range(1, 60)
                        } else {
                            lasting
                        };
                        self.at(now + down_ms, Action::Resume(node));
                    }
                    FaultKind::LoseState => {
                        // A member, a third of the time the leader; often while a member
                        // joins or leaves (the schedule mixes them), and, for bootstrap
                        // voters, with a configuration that no longer names the voters.
                        let members = cluster.member_ids();
                        let node = match (self.rng.chance(0.3), cluster.leader()) {
                            (true, Some(leader)) => leader,
                            _ => *self.rng.pick(&members),
                        };
                        cluster.crash_losing_state(node);
                        // Sometimes back at once (an election it voted in may be running),
                        // else after a while.
                        let down_ms = if self.rng.chance(0.5) {
                            self.rng.range(1, 60)
                        } else {
                            lasting
                        };
                        self.at(now + down_ms, Action::Resume(node));
                    }
                    FaultKind::Join => {
                        let members = cluster.member_ids();
                        let spares: Vec<u64> = (1..=size)
                            .filter(|id| !members.contains(id) && !self.removed.contains(id))
                            .collect();
                        // Every spare at once: the leader takes one change at a time
                        // and answers the others `Busy`, and learners caught up together
                        // are promoted one by one.
                        for id in spares {
                            let address = format!("node-{id}:7380");
                            let request = Request::AddMember {
                                node_id: NodeId(id),
                                address: address.as_bytes(),
                            };
                            self.admin(cluster, &members, &request);
                        }
                    }
                    FaultKind::Leave => {
                        let members = cluster.member_ids();
                        // Keep at least three members, so that most runs keep a cluster
                        // that survives a fault.
                        // Sometimes two at once (the second is refused while the first
                        // is not committed).
                        let mut count = if members.len() > 3 && self.rng.chance(0.3) {
                            2
                        } else {
                            1
                        };
                        if cluster.any_without_state() {
                            // Never below three voters while a node is without its state
                            // (the second request is usually refused, but may be held
                            // and taken later).
                            count = count.min(voters.saturating_sub(3));
                        }
                        for _ in 0..count {
                            if members.len() <= 2 {
                                break;
                            }
                            let id = match (self.rng.chance(0.3), cluster.leader()) {
                                (true, Some(leader)) if !self.removed.contains(&leader) => leader,
                                _ => *self.rng.pick(&members),
                            };
                            self.removed.push(id);
                            self.last_leave_ms = Some(now);
                            let request = Request::RemoveMember {
                                node_id: NodeId(id),
                            };
                            self.admin(cluster, &members, &request);
                        }
                    }
                    FaultKind::Weather => {
                        cluster.net.weather = Weather {
                            drop: self.rng.range(0, 30) as f64 / 100.0,
                            duplicate: self.rng.range(0, 15) as f64 / 100.0,
                            min_delay_ms: 1,
                            max_delay_ms: self.rng.range(2, 80),
                        };
                        self.at(now + lasting, Action::CalmWeather);
                    }
                }
            }
            Action::HealLinks => cluster.net.heal(),
            Action::Resume(node) => cluster.resume(node),
            Action::CalmWeather => cluster.net.weather = Weather::CALM,
        }
    }

    /// The operator sends a membership request to a random member; whether it succeeds
    /// is seen in the membership later.
    fn admin(&mut self, cluster: &mut Cluster, members: &[u64], request: &Request<'_>) {
        self.admin_requests += 1;
        let message = ClientMessage {
            request_id: self.admin_requests,
            request: *request,
        };
        let mut bytes = vec![0; 512];
        let len = encode(&message, &mut bytes).expect("small request").len();
        bytes.truncate(len);
        let node = *self.rng.pick(members);
        cluster.client_send(ADMIN_CLIENT, node, bytes);
    }

    /// Ends every fault now.
    pub fn heal_all(&mut self, cluster: &mut Cluster) {
        self.schedule.clear();
        cluster.net.heal();
        cluster.net.weather = Weather::CALM;
        for id in 1..=cluster.nodes.len() as u64 {
            cluster.resume(id);
        }
    }
}
