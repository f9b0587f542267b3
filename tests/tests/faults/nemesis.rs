//! The fault schedule: faults drawn from the run's seed, each held for a while and healed,
//! with quiet spells between them.
//!
//! Kinds (as Jepsen's nemeses): a majority/minority split, the leader isolated, one-way cuts,
//! a ring (5 nodes), random packet loss, `kill -9` and restart, SIGSTOP/SIGCONT, and a
//! membership change (a node removed and replaced by a new one); and combinations of two.
//! At most one node is killed at a time: a `quorum` write is in memory on a majority, so it
//! survives any minority of crashes, and the test holds memdi to exactly that promise. A node
//! that loses its data directory comes back with `--recover`, and no other node loses its
//! data until it has recovered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use memdi_core::wire::StatusRole;
use memdi_node::client::{Client, ClientOptions};
use tokio::runtime::Handle;

use super::net::{Cuts, Network};
use super::nodes::{self, Slot};
use crate::process::{self, last_role_in};
use crate::rng::SimRng;

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A random minority cut off from the majority, both ways.
    Split,
    /// The leader cut off from everyone, both ways.
    IsolateLeader,
    /// The leader's (or a random node's) packets to one or two others dropped, one way.
    OneWay,
    /// Every node reaches only its two neighbours (5 nodes).
    Ring,
    /// 20% of packets between nodes dropped at random.
    Loss,
    /// The leader (or a random node) killed with SIGKILL, restarted at the heal.
    Kill,
    /// The leader (or a random node) stopped with SIGSTOP, continued at the heal.
    Pause,
    /// The leader (or a random node) killed and its data directory deleted; restarted at
    /// the heal with `--recover` (it votes again only once caught up).
    LoseData,
    /// A non-leader removed from the membership, and a new node with a new id and an empty
    /// data directory added in its place (`--join`).
    Replace,
}

/// A fault that happened: when, what, and when it was healed.
#[derive(Debug, Clone)]
pub struct Event {
    pub kinds: Vec<Kind>,
    pub start_us: u64,
    pub heal_us: u64,
    pub detail: String,
}

/// What must be undone at the heal.
#[derive(Debug, Default)]
struct Active {
    cuts: Cuts,
    killed: Vec<usize>,
    paused: Vec<usize>,
}

/// Runs the schedule.
#[derive(Debug)]
pub struct Nemesis<'a> {
    network: &'a Network,
    slots: &'a mut [Slot],
    rng: SimRng,
    start: Instant,
    runtime: Handle,
    next_node_id: u64,
    pub events: Vec<Event>,
    /// The timeline, written to the run's directory.
    pub timeline: String,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        network: &'a Network,
        slots: &'a mut [Slot],
        seed: u64,
        start: Instant,
        runtime: Handle,
    ) -> Self {
        let next_node_id = slots.len() as u64 + 1;
        Nemesis {
            network,
            slots,
            rng: SimRng::new(seed ^ 0x006E_656D_6573_6973),
            start,
            runtime,
            next_node_id,
            events: Vec::new(),
            timeline: String::new(),
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn note(&mut self, line: &str) {
        let _ = writeln!(
            self.timeline,
            "{:>10.3} s  {line}",
            self.now_us() as f64 / 1e6
        );
    }

    /// Faults until `until` (from the run's start); each is healed before the next.
    pub fn run(&mut self, until: Duration) {
        while self.start.elapsed() + Duration::from_secs(2) < until {
            std::thread::sleep(Duration::from_millis(self.rng.range(1_000, 3_000)));
            let kinds = self.draw();
            let start_us = self.now_us();
            if kinds == [Kind::Replace] {
                let detail = self.replace();
                self.events.push(Event {
                    kinds,
                    start_us,
                    heal_us: self.now_us(),
                    detail,
                });
                continue;
            }
            let mut active = Active::default();
            let mut details = Vec::new();
            for kind in &kinds {
                details.push(self.begin(*kind, &mut active));
            }
            self.network.apply(&active.cuts);
            let detail = details.join("; ");
            self.note(&format!("fault {kinds:?}: {detail}"));
            let hold = Duration::from_millis(self.rng.range(2_000, 6_000));
            std::thread::sleep(hold.min(until.saturating_sub(self.start.elapsed())));
            self.heal(active);
            let heal_us = self.now_us();
            self.note("healed");
            self.events.push(Event {
                kinds,
                start_us,
                heal_us,
                detail,
            });
        }
    }

    /// One fault kind, or two at once (one time in five), never two crashes.
    fn draw(&mut self) -> Vec<Kind> {
        let mut simple = vec![
            Kind::Split,
            Kind::IsolateLeader,
            Kind::OneWay,
            Kind::Loss,
            Kind::Kill,
            Kind::Pause,
            Kind::LoseData,
        ];
        if self.slots.len() >= 5 {
            simple.push(Kind::Ring);
        }
        if self.rng.chance(0.1) {
            return vec![Kind::Replace];
        }
        let first = *self.rng.pick(&simple);
        if !self.rng.chance(0.2) {
            return vec![first];
        }
        let others: Vec<Kind> = simple
            .into_iter()
            .filter(|kind| {
                *kind != first
                    && !matches!(
                        (first, *kind),
                        (
                            Kind::Kill | Kind::LoseData,
                            Kind::Kill | Kind::Pause | Kind::LoseData
                        ) | (Kind::Pause, Kind::Kill | Kind::LoseData)
                    )
            })
            .collect();
        vec![first, *self.rng.pick(&others)]
    }

    /// The slot whose node logged itself leader in the highest term, if any is running.
    fn leader_slot(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for slot in self.slots.iter().filter(|slot| slot.is_running()) {
            if let Some((role, term)) = last_role_in(process::current_run(&slot.log())) {
                if role == "Leader" && best.is_none_or(|(best_term, _)| term > best_term) {
                    best = Some((term, slot.index));
                }
            }
        }
        best.map(|(_, slot)| slot)
    }

    /// The leader's slot half the time (when one is known), else a random one.
    fn target(&mut self, avoid: &[usize]) -> usize {
        let leader = self.leader_slot().filter(|slot| !avoid.contains(slot));
        match leader {
            Some(slot) if self.rng.chance(0.5) => slot,
            _ => {
                let choices: Vec<usize> = (0..self.slots.len())
                    .filter(|slot| !avoid.contains(slot))
                    .collect();
                *self.rng.pick(&choices)
            }
        }
    }

    fn begin(&mut self, kind: Kind, active: &mut Active) -> String {
        let count = self.slots.len();
        let taken: Vec<usize> = active
            .killed
            .iter()
            .chain(&active.paused)
            .copied()
            .collect();
        match kind {
            Kind::Split => {
                let mut order: Vec<usize> = (0..count).collect();
                shuffle(&mut self.rng, &mut order);
                let minority = &order[..self.rng.range(1, (count as u64 - 1) / 2 + 1) as usize];
                active.cuts = std::mem::take(&mut active.cuts).and(Cuts::split(count, minority));
                format!("slots {minority:?} cut off from the rest")
            }
            Kind::IsolateLeader => {
                let slot = self.leader_slot().unwrap_or(0);
                active.cuts = std::mem::take(&mut active.cuts).and(Cuts::split(count, &[slot]));
                format!("slot {slot} (the leader) isolated")
            }
            Kind::OneWay => {
                let from = self.target(&[]);
                let mut cuts = Cuts::default();
                let mut to_list = Vec::new();
                for _ in 0..self.rng.range(1, 3) {
                    let choices: Vec<usize> = (0..count).filter(|to| *to != from).collect();
                    let to = *self.rng.pick(&choices);
                    if !to_list.contains(&to) {
                        to_list.push(to);
                        cuts.one_way.push((from, to));
                    }
                }
                active.cuts = std::mem::take(&mut active.cuts).and(cuts);
                format!("packets from slot {from} to {to_list:?} dropped")
            }
            Kind::Ring => {
                active.cuts = std::mem::take(&mut active.cuts).and(Cuts::ring(count));
                "ring".into()
            }
            Kind::Loss => {
                active.cuts.loss_percent = 20;
                "20% packet loss between nodes".into()
            }
            Kind::Kill => {
                let slot = self.target(&taken);
                self.slots[slot].kill();
                active.killed.push(slot);
                format!("slot {slot} (node {}) killed", self.slots[slot].node_id)
            }
            Kind::LoseData => {
                // One loss of data at a time: a second node losing its data before the first
                // has recovered would take entries committed by the two of them (a majority
                // of three) with it, which no protocol survives.
                if self.slots.iter().any(Slot::is_recovering) {
                    return self.begin(Kind::Kill, active)
                        + " (instead of a loss of data: a node is still recovering)";
                }
                let cannot: Vec<usize> = (0..count)
                    .filter(|slot| taken.contains(slot) || !self.slots[*slot].can_recover())
                    .collect();
                if cannot.len() == count {
                    return "no node can lose its data (every one joined with --join)".into();
                }
                let slot = self.target(&cannot);
                self.slots[slot].lose_data();
                active.killed.push(slot);
                format!(
                    "slot {slot} (node {}) killed and its data directory deleted",
                    self.slots[slot].node_id
                )
            }
            Kind::Pause => {
                let slot = self.target(&taken);
                self.slots[slot].pause();
                active.paused.push(slot);
                format!("slot {slot} (node {}) paused", self.slots[slot].node_id)
            }
            Kind::Replace => unreachable!("replacements run alone"),
        }
    }

    fn heal(&mut self, active: Active) {
        self.network.apply(&Cuts::default());
        for slot in active.paused {
            self.slots[slot].resume();
        }
        for slot in active.killed {
            self.slots[slot].start();
        }
    }

    /// Removes a non-leader's node from the membership, then puts a new node in its slot,
    /// which joins through the leader; waits until the new node votes. Panics if the cluster
    /// (healed) cannot do it within a minute.
    fn replace(&mut self) -> String {
        let leader = self.leader_slot().unwrap_or(0);
        let choices: Vec<usize> = (0..self.slots.len())
            .filter(|slot| *slot != leader)
            .collect();
        let victim = *self.rng.pick(&choices);
        let old_id = self.slots[victim].node_id;
        let new_id = self.next_node_id;
        self.next_node_id += 1;
        self.note(&format!(
            "replacing node {old_id} in slot {victim} by node {new_id}"
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        // Removed once a leader's membership no longer has it (a retry after an unknown
        // outcome finds it gone).
        loop {
            let members = self.membership(leader, &choices);
            if !members.is_empty() && !members.contains_key(&old_id) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {old_id} could not be removed within 60 s: {members:?}\n{}",
                self.timeline
            );
            let _ = self.on_node(leader, |client| async move {
                client.remove_member(old_id).await.map(|_| ())
            });
            std::thread::sleep(Duration::from_millis(200));
        }
        self.slots[victim].replace(new_id, leader);
        self.slots[victim].start();
        loop {
            let members = self.membership(leader, &choices);
            if members.get(&new_id) == Some(&true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {new_id} did not become a voter within 60 s: {members:?}\n{}",
                self.timeline
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.note(&format!("node {new_id} votes"));
        format!("node {old_id} in slot {victim} replaced by node {new_id}")
    }

    /// The membership (id → voter) as a leader reports it, asking `first` and then `others`;
    /// empty if no node answers as leader.
    fn membership(&self, first: usize, others: &[usize]) -> BTreeMap<u64, bool> {
        for slot in std::iter::once(first).chain(others.iter().copied()) {
            let status = self.on_node(slot, |client| async move { client.cluster_status().await });
            if let Some(status) = status {
                if status.role == StatusRole::Leader {
                    let mut members: BTreeMap<u64, bool> = status
                        .members
                        .iter()
                        .map(|member| (member.id.0, member.role != StatusRole::Learner))
                        .collect();
                    members.insert(status.node_id.0, true);
                    return members;
                }
            }
        }
        BTreeMap::new()
    }

    /// Runs `request` on a fresh client of `slot`, bounded to 5 s; `None` on any failure.
    fn on_node<T, F, Fut>(&self, slot: usize, request: F) -> Option<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, memdi_node::client::ClientError>>,
    {
        let options = ClientOptions {
            pool_size: 1,
            max_attempts: 1,
            connect_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        };
        self.runtime.block_on(async move {
            let attempt = async {
                let client = Client::connect_with(&nodes::client_addr(slot), options)
                    .await
                    .ok()?;
                request(client).await.ok()
            };
            tokio::time::timeout(Duration::from_secs(5), attempt)
                .await
                .ok()
                .flatten()
        })
    }
}

fn shuffle(rng: &mut SimRng, items: &mut [usize]) {
    for i in (1..items.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}
