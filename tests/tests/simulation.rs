//! The deterministic cluster simulator, over a range of seeds.
//!
//! `MEMDI_SIM_SEEDS` sets how many seeds run (default 200) and `MEMDI_SIM_FIRST_SEED` the
//! first one (default 0), so any seed or range can be replayed: a failing seed prints the
//! command that runs it alone, and reproduces exactly.
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

fn summarize(reports: &[RunReport]) -> String {
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (
        mut elections,
        mut resyncs,
        mut quorum,
        mut leader,
        mut lost,
        mut reads,
        mut stale,
        mut ops,
    ) = (0, 0, 0, 0, 0, 0, 0, 0);
    let (mut dropped, mut duplicated, mut blocked, mut errors, mut timeouts) = (0, 0, 0, 0, 0);
    let mut recovery: Vec<u64> = Vec::new();
    let mut converge: Vec<u64> = Vec::new();
    for r in reports {
        for (kind, count) in &r.faults {
            *faults.entry(format!("{kind:?}")).or_default() += count;
        }
        elections += r.node_stats.elections_won;
        resyncs += r.node_stats.resyncs;
        quorum += r.workload.quorum_writes_acked;
        leader += r.workload.leader_writes_acked;
        lost += r.leader_writes_lost;
        reads += r.workload.reads_ok;
        stale += r.workload.stale_reads_ok;
        errors += r.workload.errors;
        timeouts += r.workload.timeouts;
        ops += r.operations as u64;
        dropped += r.net.dropped;
        duplicated += r.net.duplicated;
        blocked += r.net.blocked;
        recovery.extend(r.recovery_ms);
        converge.extend(r.converge_ms);
    }
    recovery.sort_unstable();
    converge.sort_unstable();
    let faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "seeds: {}\n\
         faults injected: {}\n\
         network: {dropped} packets dropped, {duplicated} duplicated, {blocked} blocked by partitions\n\
         elections won: {elections}; resyncs of deposed leaders: {resyncs}\n\
         checked operations: {ops}; quorum writes acknowledged: {quorum}; leader writes acknowledged: {leader}; \
         linearizable reads: {reads}; stale reads: {stale}; errors: {errors}; client timeouts: {timeouts}\n\
         leader-acknowledged writes lost on failover: {lost} ({:.2}%)\n\
         time to first quorum write after healing (ms): p50 {} p99 {} max {}\n\
         time to converge after clients stop (ms): p50 {} p99 {} max {}",
        reports.len(),
        faults.join(", "),
        if leader == 0 { 0.0 } else { lost as f64 * 100.0 / leader as f64 },
        percentile(&recovery, 0.5),
        percentile(&recovery, 0.99),
        recovery.last().copied().unwrap_or(0),
        percentile(&converge, 0.5),
        percentile(&converge, 0.99),
        converge.last().copied().unwrap_or(0),
    )
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
                        .map(run)
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
