//! Real memdi-server processes under network partitions, packet loss, crashes, pauses and
//! membership changes, with every client operation recorded and checked: Jepsen's method,
//! in one `cargo test`.
//!
//! Run: `cargo test -p memdi-tests --release --test faults` (as root: it creates network
//! namespaces and iptables rules). `MEMDI_FAULT_SECS` (default 40) sets how long faults are
//! injected per test and `MEMDI_FAULT_SEED` the seed of the fault schedule and the clients'
//! choices (the run prints it). Two tests, run one after the other: 3 nodes and 5 nodes.
//!
//! The set-up (net.rs): each node in a network namespace of its own, joined by veth pairs to
//! a bridge in the clients' namespace; partitions are iptables DROP rules in the node
//! namespaces. Everything is deleted at the end, and every process killed, passed or failed.
//!
//! The checks, after the last fault is healed:
//! - **Linearizability** of every `quorum` write, compare-and-set and linearizable read
//!   (tests/src/linearizability.rs: Wing-Gong-Lowe, outcome-unknown operations handled as
//!   Knossos does), including one final read of every key: so no `quorum`-acknowledged
//!   write was lost.
//! - **Convergence**: every node's own store (a stale read) ends with each key's value as a
//!   linearizable read gives it; and no node exited by itself.
//! - **`leader`-acknowledged writes lost** are counted and printed, not asserted: that ack
//!   level promises nothing across a failover (as Jepsen reports Redis's).
//!
//! A failing run keeps its directory (history, fault timeline, node logs) and prints it with
//! the command that replays the schedule. A replay draws the same faults at the same times;
//! which node a fault hits when it targets "the leader" (half the time) and how the clients'
//! operations interleave depend on the run, so a replay reproduces the conditions, not the
//! exact history.

#[allow(dead_code)] // shared with the other multi-process tests, which use other parts of it
mod process;
#[allow(dead_code)] // the simulator's PRNG; this test uses part of it
#[path = "sim/rng.rs"]
mod rng;

#[path = "faults/nemesis.rs"]
mod nemesis;
#[path = "faults/net.rs"]
mod net;
#[path = "faults/nodes.rs"]
mod nodes;
#[path = "faults/report.rs"]
mod report;
#[path = "faults/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use memdi_core::wire::{ReadConsistency, Request};
use memdi_node::client::Reply;
use memdi_tests::linearizability::{check, CheckResult, Limits, Op, Output};

use nemesis::Nemesis;
use net::{Cuts, Network};
use nodes::Slot;
use workload::{perform, Answer, Clients, Shared};

/// The two tests share the machine's two cores and the 10.78.0.0/24 subnet.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The history's client id of the final reads.
const FINAL_READER: u64 = 1_000;

#[test]
fn three_nodes_keep_their_promises_under_faults() {
    fault_run(3);
}

#[test]
fn five_nodes_keep_their_promises_under_faults() {
    fault_run(5);
}

/// Whether this machine can run the test: root, iproute2 and iptables; under CI a missing
/// one fails the test (CI runs as root and scripts/setup.sh installs iptables).
fn able() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    let ip = process::have("ip", &["-V"]);
    let iptables = process::have("iptables-restore", &["--version"]);
    if !(root && ip && iptables) {
        let message = format!(
            "\n!!!!!!!! SKIPPED: the fault test needs root, iproute2 and iptables (root {root}, ip {ip}, iptables {iptables}) !!!!!!!!\n"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
    }
    root && ip && iptables
}

fn fault_run(count: usize) {
    if !able() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let secs: u64 = std::env::var("MEMDI_FAULT_SECS")
        .ok()
        .map(|secs| secs.parse().expect("MEMDI_FAULT_SECS: a number of seconds"))
        .unwrap_or(40);
    let seed: u64 = std::env::var("MEMDI_FAULT_SEED")
        .ok()
        .map(|seed| seed.parse().expect("MEMDI_FAULT_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
                % 1_000_000_000
        });
    let replay = format!(
        "MEMDI_FAULT_SEED={seed} MEMDI_FAULT_SECS={secs} cargo test -p memdi-tests --release --test faults {} -- --nocapture",
        if count == 3 { "three_nodes" } else { "five_nodes" }
    );
    eprintln!("fault run: {count} nodes, {secs} s of faults, seed {seed}\nreplay: {replay}");
    process::server_binary();
    // Kept if the run fails in any way (a panic included), removed at the end of a pass.
    let dir = tempfile::Builder::new()
        .prefix(&format!("memdi-faults-{count}n-{seed}-"))
        .tempdir()
        .expect("creating a temporary directory")
        .keep();
    eprintln!("fault run: node logs in {}", dir.display());

    let network = Network::create(count);
    network.apply(&Cuts::default());
    // This thread and the runtime's threads (started below, so they inherit it) reach the
    // nodes from the clients' namespace.
    network.enter_clients_namespace();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    let spec = nodes::cluster_spec(count);
    let mut slots: Vec<Slot> = (0..count)
        .map(|index| Slot::new(&network, index, index as u64 + 1, &spec, dir.as_path()))
        .collect();
    for slot in &mut slots {
        slot.start();
    }

    let start = Instant::now();
    let shared = Shared::new(start, count);
    wait_for_quorum_writes(&runtime, &shared, Duration::from_secs(30));
    let quorum_workers = 2 * count as u64;
    let mut workers = Vec::new();
    for worker in 0..quorum_workers {
        workers.push(runtime.spawn(workload::quorum_worker(
            shared.clone(),
            worker,
            seed.wrapping_mul(31).wrapping_add(worker),
        )));
    }
    for worker in 0..2 {
        workers.push(runtime.spawn(workload::leader_worker(
            shared.clone(),
            worker,
            seed.wrapping_mul(37).wrapping_add(worker),
        )));
    }

    let mut nemesis = Nemesis::new(&network, &mut slots, seed, start, runtime.handle().clone());
    let faults_until = start.elapsed() + Duration::from_secs(secs);
    nemesis.run(faults_until);
    let events = nemesis.events.clone();
    let timeline = nemesis.timeline.clone();
    drop(nemesis);
    // A last quiet spell of clients on the healed cluster, then the final reads.
    std::thread::sleep(Duration::from_secs(2));
    shared.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for worker in workers {
            // Each worker's operation is bounded by OP_TIMEOUT (plus a connect).
            let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
        }
    });

    let mut failures: Vec<String> = Vec::new();
    for slot in &mut slots {
        if let Some(status) = slot.exited() {
            failures.push(format!(
                "node {} (slot {}) exited by itself ({status}); its log: {}",
                slot.node_id,
                slot.index,
                slot.log_path().display()
            ));
        }
    }
    let final_values = final_reads(&runtime, &shared, &mut failures);
    let lost = leader_writes_lost(&runtime, &shared, &mut failures);
    if failures.is_empty() {
        converge(&runtime, count, &final_values, &mut failures);
    }
    let anomalies = shared.anomalies.lock().expect("anomalies lock").clone();
    failures.extend(anomalies);

    let history = shared.history.lock().expect("history lock").clone();
    let checked = Instant::now();
    let verdict = check(
        &history,
        Limits {
            max_states_per_key: 5_000_000,
        },
    );
    let check_secs = checked.elapsed().as_secs_f64();
    if !verdict.is_linearizable() {
        failures.push(match &verdict {
            CheckResult::Unknown { .. } => format!("the checker could not decide: {verdict}"),
            _ => format!("{verdict}"),
        });
    }

    let recovery = report::recovery(&events, &history);
    let after_heal: Vec<f64> = recovery.iter().flatten().map(|r| r.after_heal_ms).collect();
    let longest_gap: Vec<f64> = recovery
        .iter()
        .flatten()
        .map(|r| r.longest_gap_ms)
        .collect();
    eprintln!(
        "fault run: {count} nodes, seed {seed}, {:.0} s\n\
         operations ({} recorded, {} keys):\n{}\
         faults: {}\n\
         from a heal to the next successful quorum write: {}\n\
         longest time without a successful quorum write, per fault: {}\n\
         leader-acknowledged writes: {} acknowledged, {} lost\n\
         linearizability: {verdict} (checked in {check_secs:.1} s)",
        start.elapsed().as_secs_f64(),
        history.len(),
        final_values.len(),
        report::operations_by_outcome(&history),
        report::faults_by_kind(&events),
        report::percentiles(&after_heal),
        report::percentiles(&longest_gap),
        lost.acknowledged,
        lost.lost,
    );

    std::fs::write(
        dir.as_path().join("history.txt"),
        report::history_text(&history),
    )
    .expect("writing the history");
    std::fs::write(dir.as_path().join("timeline.txt"), &timeline).expect("writing the timeline");
    std::fs::write(
        dir.as_path().join("faults.txt"),
        report::faults_text(&events, &recovery),
    )
    .expect("writing the faults");
    drop(slots);
    drop(network);
    if !failures.is_empty() {
        panic!(
            "fault run failed (seed {seed}):\n{}\n\nhistory, fault timeline and node logs kept in {}\nreplay: {replay}",
            failures.join("\n"),
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until a `quorum` write succeeds through slot 0: the cluster has a leader.
fn wait_for_quorum_writes(runtime: &tokio::runtime::Runtime, shared: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    runtime.block_on(async {
        let mut clients = Clients::new(shared.slots);
        loop {
            let request = Request::Set {
                key: b"warm-up",
                value: b"1",
                condition: memdi_core::wire::SetCondition::Always,
                expiry: memdi_core::wire::Expiry::None,
                write: memdi_core::wire::WriteOptions {
                    ack: Some(memdi_core::wire::AckLevel::Quorum),
                    durability: None,
                },
            };
            if let Ok(client) = clients.get(0).await {
                if let Answer::Reply(Reply::Stored(_)) = perform(client, &request).await {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// One linearizable read of every key the quorum workers used, recorded in the history
/// (tried through other nodes until one answers, for up to 60 s in all): each key's value and
/// version at the end.
fn final_reads(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    failures: &mut Vec<String>,
) -> BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>> {
    let keys: Vec<Vec<u8>> = shared
        .quorum_keys
        .lock()
        .expect("keys lock")
        .iter()
        .cloned()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut values = BTreeMap::new();
    runtime.block_on(async {
        let mut clients = Clients::new(shared.slots);
        let mut slot = 0;
        for key in keys {
            loop {
                slot = (slot + 1) % shared.slots;
                let id = shared.history.lock().expect("history lock").invoke(
                    FINAL_READER,
                    key.clone(),
                    Op::Get,
                    shared.now_us(),
                );
                let request = Request::Get {
                    key: &key,
                    read: ReadConsistency::Linearizable,
                };
                let answer = match clients.get(slot).await {
                    Ok(client) => perform(client, &request).await,
                    Err(_) => Answer::Failed,
                };
                let returned = shared.now_us();
                match answer {
                    Answer::Reply(Reply::Value(value)) => {
                        let value = value.map(|value| (value.value, value.version));
                        shared.history.lock().expect("history lock").complete(
                            id,
                            Output::Value(value.clone()),
                            returned,
                        );
                        values.insert(key.clone(), value);
                        break;
                    }
                    Answer::Failed => shared.history.lock().expect("history lock").fail(id),
                    // Unknown (a read: dropped by the checker) or an answer of another kind.
                    _ => {}
                }
                if Instant::now() > deadline {
                    failures.push(format!(
                        "no node answered a linearizable read of {} within 60 s of the heal",
                        String::from_utf8_lossy(&key)
                    ));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    values
}

/// `leader`-acknowledged writes: how many were acknowledged and how many the final reads no
/// longer find (a key's acknowledged counters above its final value).
#[derive(Debug, Default)]
struct LeaderLosses {
    acknowledged: u64,
    lost: u64,
}

fn leader_writes_lost(
    runtime: &tokio::runtime::Runtime,
    shared: &Arc<Shared>,
    failures: &mut Vec<String>,
) -> LeaderLosses {
    let ledger = std::mem::take(&mut *shared.leader_ledger.lock().expect("ledger lock"));
    let mut losses = LeaderLosses::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    runtime.block_on(async {
        let mut clients = Clients::new(shared.slots);
        for (key, entry) in &ledger.keys {
            losses.acknowledged += entry.acknowledged.len() as u64;
            let final_counter = loop {
                let request = Request::Get {
                    key,
                    read: ReadConsistency::Linearizable,
                };
                if let Ok(client) = clients.get(0).await {
                    if let Answer::Reply(Reply::Value(value)) = perform(client, &request).await {
                        break value.map_or(Some(0), |value| {
                            String::from_utf8_lossy(&value.value).parse::<u64>().ok()
                        });
                    }
                }
                if Instant::now() > deadline {
                    failures.push("the final reads of the leader-acknowledged keys failed".into());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let Some(final_counter) = final_counter.filter(|c| *c <= entry.highest_attempted)
            else {
                failures.push(format!(
                    "{} ends with a value no client wrote",
                    String::from_utf8_lossy(key)
                ));
                continue;
            };
            losses.lost += entry
                .acknowledged
                .iter()
                .filter(|counter| **counter > final_counter)
                .count() as u64;
        }
    });
    losses
}

/// Waits (up to 30 s) until every node's own store holds each key's value and version as a
/// linearizable read gives it (usually the final read's; a write whose outcome was unknown
/// may still land after it, and the stores must then agree on that).
fn converge(
    runtime: &tokio::runtime::Runtime,
    count: usize,
    finals: &BTreeMap<Vec<u8>, Option<(Vec<u8>, u64)>>,
    failures: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    runtime.block_on(async {
        let mut clients = Clients::new(count);
        for slot in 0..count {
            let mut pending: Vec<&Vec<u8>> = finals.keys().collect();
            while !pending.is_empty() {
                let mut still = Vec::new();
                for key in pending {
                    let now = read(&mut clients, (slot + 1) % count, key, true).await;
                    let held = read(&mut clients, slot, key, false).await;
                    if now.is_none() || held != now {
                        still.push(key);
                    }
                }
                pending = still;
                if !pending.is_empty() {
                    if Instant::now() > deadline {
                        failures.push(format!(
                            "slot {slot}'s store did not converge within 30 s: {} keys differ, such as {}",
                            pending.len(),
                            String::from_utf8_lossy(pending[0])
                        ));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

/// A read of `key` through `slot` (linearizable or from its own store): the value and version,
/// or `None` if it did not answer.
async fn read(
    clients: &mut Clients,
    slot: usize,
    key: &[u8],
    linearizable: bool,
) -> Option<Option<(Vec<u8>, u64)>> {
    let read = if linearizable {
        ReadConsistency::Linearizable
    } else {
        ReadConsistency::Stale
    };
    let client = clients.get(slot).await.ok()?;
    match perform(client, &Request::Get { key, read }).await {
        Answer::Reply(Reply::Value(value)) => Some(value.map(|value| (value.value, value.version))),
        _ => None,
    }
}
