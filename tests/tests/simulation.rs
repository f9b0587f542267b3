//! The deterministic cluster simulator, over a range of seeds.
//!
//! `MEMDI_SIM_SEEDS` sets how many seeds run (default 200) and `MEMDI_SIM_FIRST_SEED` the
//! first one (default 0), so any seed or range can be replayed: a failing seed prints the
//! command that runs it alone, and reproduces exactly. `MEMDI_SIM_TRACE=1` prints every
//! node event; with `MEMDI_SIM_TRACE_STATE=1` too, every change of a node's applied index,
//! version counter, log, commit index, role and term.
//!
//! Run: `cargo test -p memdi-tests --release --test simulation -- --nocapture`.

mod sim;

use std::collections::BTreeMap;

use sim::run::{run, RunReport};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

/// Counts added up over every run.
#[derive(Default)]
struct Totals {
    elections: u64,
    stale_stores: u64,
    rollbacks: u64,
    snapshots: u64,
    quorum_writes: u64,
    leader_writes: u64,
    leader_writes_lost: u64,
    restarts: u64,
    checkpoints: u64,
    reads: u64,
    stale_reads: u64,
    operations: u64,
    errors: u64,
    timeouts: u64,
    dropped: u64,
    duplicated: u64,
    blocked: u64,
    membership_changes: u64,
    spares_promoted: u64,
    spares_learning: u64,
    voters_removed: u64,
    restarts_without_state: u64,
    recoveries: u64,
    recoveries_refused: u64,
    crashed_while_recovering: u64,
    removed_while_recovering: u64,
}

fn summarize(reports: &[RunReport]) -> String {
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut t = Totals::default();
    let mut recovery: Vec<u64> = Vec::new();
    let mut converge: Vec<u64> = Vec::new();
    for r in reports {
        for (kind, count) in &r.faults {
            *faults.entry(format!("{kind:?}")).or_default() += count;
        }
        t.elections += r.node_stats.elections_won;
        t.stale_stores += r.node_stats.stale_stores;
        t.rollbacks += r.node_stats.rollbacks;
        t.snapshots += r.node_stats.snapshots_installed;
        t.restarts += r.node_stats.restarts;
        t.checkpoints += r.node_stats.checkpoints;
        t.quorum_writes += r.workload.quorum_writes_acked;
        t.leader_writes += r.workload.leader_writes_acked;
        t.leader_writes_lost += r.leader_writes_lost;
        t.reads += r.workload.reads_ok;
        t.stale_reads += r.workload.stale_reads_ok;
        t.errors += r.workload.errors;
        t.timeouts += r.workload.timeouts;
        t.operations += r.operations as u64;
        t.dropped += r.net.dropped;
        t.duplicated += r.net.duplicated;
        t.blocked += r.net.blocked;
        t.membership_changes += r.node_stats.membership_changes;
        t.spares_promoted += r.spares_promoted;
        t.spares_learning += r.spares_learning;
        t.voters_removed += r.voters_removed;
        t.restarts_without_state += r.node_stats.restarts_without_state;
        t.recoveries += r.node_stats.recoveries;
        t.recoveries_refused += r.recoveries_refused;
        t.crashed_while_recovering += r.node_stats.crashed_while_recovering;
        t.removed_while_recovering += r.removed_while_recovering;
        recovery.extend(r.recovery_ms);
        converge.extend(r.converge_ms);
    }
    recovery.sort_unstable();
    converge.sort_unstable();
    let faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let lost_percent = if t.leader_writes == 0 {
        0.0
    } else {
        t.leader_writes_lost as f64 * 100.0 / t.leader_writes as f64
    };
    format!(
        "seeds: {}\n\
         faults injected: {}\n\
         network: {} packets dropped, {} duplicated, {} blocked by partitions\n\
         elections won: {}; deposed leaders rolled back by their undo journal: {}; \
         with a stale store: {}; snapshots installed: {}\n\
         restarts from disk: {}; checkpoints written: {}\n\
         restarts without state: {}; recoveries completed: {}; crashed again before \
         recovering: {}; removed before recovering: {}; still recovering at the end with \
         fewer than three voters (refused): {}\n\
         membership: {} changes taken by nodes; at the end, {} added nodes are voters, {} \
         learners, and {} bootstrap voters were removed\n\
         checked operations: {}; quorum writes acknowledged: {}; leader writes acknowledged: {}; \
         linearizable reads: {}; stale reads: {}; errors: {}; client timeouts: {}\n\
         leader-acknowledged writes lost on failover: {} ({lost_percent:.2}%)\n\
         time to first quorum write after healing (ms): p50 {} p99 {} max {}\n\
         time to converge after clients stop (ms): p50 {} p99 {} max {}",
        reports.len(),
        faults.join(", "),
        t.dropped,
        t.duplicated,
        t.blocked,
        t.elections,
        t.rollbacks,
        t.stale_stores,
        t.snapshots,
        t.restarts,
        t.checkpoints,
        t.restarts_without_state,
        t.recoveries,
        t.crashed_while_recovering,
        t.removed_while_recovering,
        t.recoveries_refused,
        t.membership_changes,
        t.spares_promoted,
        t.spares_learning,
        t.voters_removed,
        t.operations,
        t.quorum_writes,
        t.leader_writes,
        t.reads,
        t.stale_reads,
        t.errors,
        t.timeouts,
        t.leader_writes_lost,
        percentile(&recovery, 0.5),
        percentile(&recovery, 0.99),
        recovery.last().copied().unwrap_or(0),
        percentile(&converge, 0.5),
        percentile(&converge, 0.99),
        converge.last().copied().unwrap_or(0),
    )
}

/// Runs one seed; a harness panic (an answer the workload cannot take, say) names the seed
/// and how to replay it before it unwinds.
fn run_naming_the_seed(seed: u64) -> RunReport {
    match std::panic::catch_unwind(|| run(seed)) {
        Ok(report) => report,
        Err(panic) => {
            eprintln!(
                "seed {seed} panicked; replay: MEMDI_SIM_FIRST_SEED={seed} MEMDI_SIM_SEEDS=1 cargo test -p memdi-tests --release --test simulation -- --nocapture"
            );
            std::panic::resume_unwind(panic)
        }
    }
}

#[test]
fn simulation() {
    let seeds = env_u64("MEMDI_SIM_SEEDS", 200);
    let first = env_u64("MEMDI_SIM_FIRST_SEED", 0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut reports: Vec<RunReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (first + t..first + seeds)
                        .step_by(threads as usize)
                        .map(run_naming_the_seed)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread panicked"))
            .collect()
    });
    reports.sort_by_key(|r| r.seed);
    println!("{}", summarize(&reports));
    let failures: Vec<&RunReport> = reports
        .iter()
        .filter(|r| !r.violations.is_empty())
        .collect();
    for failure in failures.iter().take(10) {
        println!(
            "\nseed {} ({} nodes) FAILED; replay: MEMDI_SIM_FIRST_SEED={} MEMDI_SIM_SEEDS=1 cargo test -p memdi-tests --release --test simulation -- --nocapture",
            failure.seed, failure.nodes, failure.seed
        );
        for violation in failure.violations.iter().take(5) {
            println!("  {violation}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed",
        failures.len(),
        reports.len()
    );
}

/// Expiry is the leader's decision, replicated as a delete: a key written with a TTL
/// through the cluster is gone from every node's store once the cluster clock passes its
/// expiry, and the stores agree.
#[test]
fn expiry_is_decided_by_the_leader_and_replicated() {
    use memdi_core::wire::{
        decode, encode, AckLevel, ClientMessage, Expiry, Request, Response, ServerMessage,
        SetCondition, WriteOptions,
    };
    use sim::cluster::Cluster;

    let mut cluster = Cluster::new(42, 3, 0);
    let run_until = |cluster: &mut Cluster, until_ms: u64| {
        // Bounded by the time limit: each step moves virtual time forward.
        while cluster.now_ms < until_ms {
            let next = cluster
                .next_event_ms()
                .unwrap_or(until_ms)
                .clamp(cluster.now_ms + 1, until_ms);
            cluster.step_to(next);
        }
    };
    run_until(&mut cluster, 2_000);
    let leader = cluster.leader().expect("a leader within 2 s");
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let request = Request::Set {
        key: b"session",
        value: b"token",
        condition: SetCondition::Always,
        expiry: Expiry::AfterMs(500),
        write: WriteOptions {
            ack: Some(AckLevel::Quorum),
            durability: None,
        },
    };
    let mut bytes = vec![0; 256];
    let len = encode(
        &ClientMessage {
            request_id: 1,
            request,
        },
        &mut bytes,
    )
    .unwrap()
    .len();
    bytes.truncate(len);
    // Sent to a follower, which forwards it.
    cluster.client_send(1, follower, bytes);
    run_until(&mut cluster, 2_100);
    let answer = cluster.client_inbox.pop().expect("an answer within 100 ms");
    let ServerMessage { response, .. } = decode::<ServerMessage<'_>>(&answer.1).unwrap();
    assert!(matches!(response, Response::Stored { .. }), "{response:?}");
    let expiries: Vec<Option<u64>> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.core
                .store()
                .get(b"session", 0)
                .and_then(|e| e.expires_at_ms)
        })
        .collect();
    assert!(
        expiries[0].is_some() && expiries.iter().all(|e| *e == expiries[0]),
        "{expiries:?}"
    );
    run_until(&mut cluster, 3_500);
    for node in &cluster.nodes {
        // `now` 0 shows expired keys too: the key must be physically deleted everywhere.
        assert!(
            node.core.store().get(b"session", 0).is_none(),
            "node {} still holds the key",
            node.id
        );
        assert_eq!(
            node.core.commit_index(),
            cluster.nodes[0].core.commit_index()
        );
    }
}
