//! One simulated run, and the checks made on it.
//!
//! A run has three phases: faults (clients work while the schedule injects faults), heal
//! (every fault ends; clients go on, and a `quorum` write must succeed soon: the cluster
//! makes progress when a majority can talk), and quiet (clients stop; every node must reach
//! the same store). Checked on every run:
//!
//! - at most one leader per term (checked after every event);
//! - every `quorum`-acknowledged write is in the committed log;
//! - the history of `quorum` writes, `leader` writes (as unknown outcomes) and
//!   linearizable reads is linearizable;
//! - after healing, a `quorum` write is acknowledged within `PROGRESS_MS`;
//! - after clients stop, all members converge to the same store within `CONVERGE_MS`.

use std::collections::{BTreeMap, BTreeSet};

use memdi_tests::linearizability::{check, CheckResult, Limits};

use super::cluster::{Cluster, NodeStats};
use super::faults::{FaultKind, Faults};
use super::net::NetStats;
use super::workload::{Workload, WorkloadStats};

const FAULT_PHASE_MS: u64 = 8_000;
/// Nodes started outside the cluster, for the operator to add.
const SPARE_NODES: u64 = 2;
/// After healing, clients go on this long; a quorum write must succeed in it.
pub const PROGRESS_MS: u64 = 3_000;
/// After clients stop, the nodes must converge within this.
pub const CONVERGE_MS: u64 = 5_000;

#[derive(Debug, Default)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub violations: Vec<String>,
    pub faults: BTreeMap<FaultKind, u64>,
    pub node_stats: NodeStats,
    pub net: NetStats,
    pub workload: WorkloadStats,
    pub leader_writes_lost: u64,
    /// From healing to the first acknowledged quorum write.
    pub recovery_ms: Option<u64>,
    /// From clients stopping to all stores equal.
    pub converge_ms: Option<u64>,
    pub operations: usize,
    /// Spare nodes that ended the run as voters: added, caught up and promoted.
    pub spares_promoted: u64,
    /// Spare nodes that ended the run as learners.
    pub spares_learning: u64,
    /// Bootstrap voters no longer members at the end.
    pub voters_removed: u64,
    /// Members still recovering at the end because their membership has fewer than three
    /// voters (a majority of the *other* voters cannot exist: the refused case, 4.10).
    pub recoveries_refused: u64,
    /// Nodes removed from the membership before they had recovered.
    pub removed_while_recovering: u64,
}

/// Whether every member holds the same committed state, with nothing left to apply (spares
/// never added, and removed nodes, are not members).
fn converged(cluster: &Cluster) -> bool {
    let members = cluster.member_ids();
    let mut nodes = cluster
        .nodes
        .iter()
        .filter(|node| members.contains(&node.id));
    let Some(first) = nodes.next() else {
        return false;
    };
    let commit = first.core.commit_index();
    let contents = |node: &super::cluster::SimNode| {
        let mut entries: Vec<(Vec<u8>, Vec<u8>, u64)> = node
            .core
            .store()
            .iter()
            .map(|e| (e.key.to_vec(), e.value.to_vec(), e.version))
            .collect();
        entries.sort();
        entries
    };
    let reference = contents(first);
    let mut all = cluster
        .nodes
        .iter()
        .filter(|node| members.contains(&node.id));
    all.all(|node| {
        let core = &node.core;
        core.commit_index() == commit
            && core.applied_index() == commit
            && core.log().last_index() == commit
            && contents(node) == reference
    })
}

pub fn run(seed: u64) -> RunReport {
    let size = if seed % 2 == 0 { 3 } else { 5 };
    let mut cluster = Cluster::new(seed, size, SPARE_NODES);
    let mut workload = Workload::new(seed, 4, 3);
    let mut faults = Faults::new(seed, FAULT_PHASE_MS);
    let heal_ms = FAULT_PHASE_MS;
    let stop_ms = heal_ms + PROGRESS_MS;
    let end_ms = stop_ms + CONVERGE_MS;
    let mut report = RunReport {
        seed,
        nodes: size as usize,
        ..RunReport::default()
    };
    let mut healed = false;
    // Bounded: virtual time advances on every pass but a bounded number at the same time.
    let mut passes_at_same_time = 0;
    let mut last_now = 0;
    while cluster.now_ms < end_ms {
        let next = [
            cluster.next_event_ms(),
            workload.next_event_ms(),
            faults.next_event_ms(),
            Some(if healed { end_ms } else { heal_ms }),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(end_ms)
        .max(cluster.now_ms);
        if next == last_now {
            passes_at_same_time += 1;
            assert!(
                passes_at_same_time < 100_000,
                "seed {seed}: no progress at {next} ms"
            );
        } else {
            passes_at_same_time = 0;
            last_now = next;
        }
        cluster.now_ms = next;
        if !healed && next >= heal_ms {
            faults.heal_all(&mut cluster);
            healed = true;
        }
        faults.apply_due(&mut cluster);
        cluster.step_to(next);
        workload.step(&mut cluster);
        if healed && report.recovery_ms.is_none() {
            if let Some(at) = workload.last_quorum_ack_ms.filter(|&at| at >= heal_ms) {
                report.recovery_ms = Some(at - heal_ms);
            }
        }
        if workload.running && next >= stop_ms {
            workload.running = false;
        }
        if !workload.running && report.converge_ms.is_none() && converged(&cluster) {
            report.converge_ms = Some(cluster.now_ms - stop_ms);
            break;
        }
    }

    report.violations.append(&mut cluster.observed.violations);
    if report.recovery_ms.is_none() {
        report.violations.push(format!(
            "no quorum write acknowledged within {PROGRESS_MS} ms of healing"
        ));
    }
    if report.converge_ms.is_none() {
        let states: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| {
                let mut keys: Vec<String> = n
                    .core
                    .store()
                    .iter()
                    .map(|e| {
                        format!(
                            "{}={}@v{}",
                            String::from_utf8_lossy(e.key),
                            String::from_utf8_lossy(e.value),
                            e.version
                        )
                    })
                    .collect();
                keys.sort();
                format!(
                    "node {}: {:?}{} term {} commit {} applied {} last {} keys {} {keys:?}",
                    n.id,
                    n.core.role(),
                    if n.core.is_recovering() {
                        " (recovering)"
                    } else {
                        ""
                    },
                    n.core.term(),
                    n.core.commit_index(),
                    n.core.applied_index(),
                    n.core.log().last_index(),
                    n.core.store().len()
                )
            })
            .collect();
        report.violations.push(format!(
            "nodes did not converge within {CONVERGE_MS} ms of clients stopping: {}",
            states.join("; ")
        ));
    }
    let committed = &cluster.observed.committed_values;
    for value in &workload.quorum_acked {
        if !committed.contains(value) {
            report.violations.push(format!(
                "quorum-acknowledged write {} is not in the committed log",
                String::from_utf8_lossy(value)
            ));
        }
    }
    let leader_acked: BTreeSet<&Vec<u8>> = workload.leader_acked.iter().collect();
    report.leader_writes_lost = leader_acked
        .iter()
        .filter(|v| !committed.contains(**v))
        .count() as u64;
    match check(
        &workload.history,
        Limits {
            max_states_per_key: 2_000_000,
        },
    ) {
        CheckResult::Linearizable => {}
        other => report.violations.push(format!("{other}")),
    }
    report.operations = workload.history.len();
    let membership = cluster.membership();
    report.spares_promoted = membership
        .iter()
        .filter(|m| m.id.0 > size && m.voter)
        .count() as u64;
    report.spares_learning = membership
        .iter()
        .filter(|m| m.id.0 > size && !m.voter)
        .count() as u64;
    // Every member that lost its state must have recovered by the end, except where the
    // protocol refuses to (fewer than three voters).
    for node in &cluster.nodes {
        if !node.core.is_recovering() {
            continue;
        }
        if membership.get(memdi_core::wire::NodeId(node.id)).is_none() {
            report.removed_while_recovering += 1;
            continue;
        }
        if membership.voter_count() < 3 {
            report.recoveries_refused += 1;
        } else {
            report.violations.push(format!(
                "node {} is still recovering {CONVERGE_MS} ms after clients stopped",
                node.id
            ));
        }
    }
    report.voters_removed = (1..=size)
        .filter(|&id| membership.get(memdi_core::wire::NodeId(id)).is_none())
        .count() as u64;
    report.faults = faults.counts;
    report.node_stats = cluster.observed.stats.clone();
    report.node_stats.checkpoints = cluster.nodes.iter().map(|n| n.disk.checkpoints).sum();
    report.net = cluster.net.stats.clone();
    report.workload = workload.stats.clone();
    report
}
