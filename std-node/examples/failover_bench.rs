//! Leader failover time of a three-node memdi cluster on 127.0.0.1, measured from outside.
//!
//! ```sh
//! cargo run --release -p memdi-node --example failover_bench -- \
//!     target/release/memdi-server /tmp/failover-work 20
//! ```
//!
//! Starts three `memdi-server` processes with `--cluster` (data directories, logs and pid
//! files `node<N>.pid` under the work directory, which must exist; `bench/cluster-bench.sh`
//! kills what the pid files name on exit). A client writes continuously with `ack quorum`
//! through every node: every 10 ms it sends a new SET to each node (one connection per node,
//! each write given up after 2 s; the client library's own retries are off). Beside it, one
//! closed-loop client per node sends one quorum SET at a time (given up after 5 s), 10 ms
//! apart, as a simple application would. Each trial finds the leader (`cluster status` →
//! `leader_id`), sends it SIGKILL and measures the time from just before the kill to the completion of the first write that
//! was *sent* after the kill and succeeded (a write sent before the kill may have been
//! committed by the old leader and says nothing about the new one). Then it restarts the
//! killed node on its data directory (the closed-loop figure is the same measure for the
//! one-at-a-time clients) and waits until writes through every node succeed again
//! before the next trial. Prints one line per trial, then the median, p90 and max.
//!
//! Not a test: it prints figures and asserts nothing. Every wait is bounded; every process it
//! started is killed when it exits (also on panic).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memdi_core::wire::{AckLevel, StatusRole};
use memdi_node::client::{Client, ClientOptions, SetOptions};

const NODES: usize = 3;
/// Slow enough that 20 trials stay well below the 65,536 entries of the server's in-memory
/// log, so that a restarted node is caught up from the log; `FAILOVER_SEND_EVERY_MS` sets
/// another period (2 to 5 ms pass that size within a few trials, and exercise catching up by
/// snapshot: docs/benchmarks.md, "Leader failover").
const SEND_EVERY: Duration = Duration::from_millis(10);

fn send_every() -> Duration {
    std::env::var("FAILOVER_SEND_EVERY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(SEND_EVERY, Duration::from_millis)
}
/// Never reached: 2 s / 10 ms = 200 writes can be pending per node.
const MAX_IN_FLIGHT: u64 = 1024;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const TRIAL_LIMIT: Duration = Duration::from_secs(20);

struct Node {
    id: usize,
    client_addr: String,
    peer_addr: String,
    data_dir: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, server: &Path, cluster: &str) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening a server log");
        let child = Command::new(server)
            .args(["--node-id", &self.id.to_string()])
            .args(["--client-addr", &self.client_addr])
            .args(["--peer-addr", &self.peer_addr])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--cluster", cluster])
            .args(["--snapshot-every", "0", "--fsync", "no"])
            // A small store: this measures elections, not memory.
            .args(["--max-keys", "2000000", "--max-memory", "268435456"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting memdi-server");
        std::fs::write(&self.pid_file, child.id().to_string()).expect("writing a pid file");
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.0 {
            node.kill();
        }
    }
}

fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address").to_string()
}

/// What the writers saw, shared with the trial loop.
#[derive(Default)]
struct Seen {
    /// Per node: when the last write *sent* at or after `since[node]` succeeded.
    ok_after: [Option<Instant>; NODES],
    since: [Option<Instant>; NODES],
    /// The kill of the current trial, and the first success of a write sent after it.
    kill_at: Option<Instant>,
    first_after_kill: Option<Instant>,
    /// The same for the closed-loop clients.
    first_closed_after_kill: Option<Instant>,
}

/// One write at a time through `addr`, forever (until `stop`).
async fn closed_loop_writer(
    node: usize,
    addr: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicU64>,
) {
    let options = ClientOptions {
        pool_size: 1,
        max_attempts: 1,
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while stop.load(Ordering::Relaxed) == 0 {
        let Some(c) = client.clone() else {
            if let Ok(Ok(c)) = tokio::time::timeout(
                Duration::from_millis(500),
                Client::connect_with(&addr, options.clone()),
            )
            .await
            {
                client = Some(c);
            } else {
                tokio::time::sleep(send_every()).await;
            }
            continue;
        };
        n += 1;
        let key = format!("fc:{node}:{n:08}");
        let sent = Instant::now();
        let options = SetOptions {
            ack: Some(AckLevel::Quorum),
            ..SetOptions::default()
        };
        let result =
            tokio::time::timeout(Duration::from_secs(5), c.set(key.as_bytes(), b"v", options))
                .await;
        let done = Instant::now();
        if let Ok(Ok(_)) = result {
            let mut seen = seen.lock().expect("seen lock");
            if seen.kill_at.is_some_and(|kill| sent >= kill)
                && seen
                    .first_closed_after_kill
                    .is_none_or(|first| done < first)
            {
                seen.first_closed_after_kill = Some(done);
            }
        }
        tokio::time::sleep(send_every()).await;
    }
}

async fn writer(node: usize, addr: String, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicU64>) {
    let options = ClientOptions {
        pool_size: 1,
        max_attempts: 1,
        connect_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let mut client: Option<Client> = None;
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut n = 0u64;
    let mut tick = tokio::time::interval(send_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while stop.load(Ordering::Relaxed) == 0 {
        tick.tick().await;
        if client.is_none() {
            // The node may be down; try again on a later tick.
            if let Ok(Ok(c)) = tokio::time::timeout(
                Duration::from_millis(500),
                Client::connect_with(&addr, options.clone()),
            )
            .await
            {
                client = Some(c);
            }
            continue;
        }
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            continue;
        }
        let c = client.clone().expect("checked above");
        let (seen, in_flight) = (seen.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        n += 1;
        let key = format!("fo:{node}:{n:08}");
        tokio::spawn(async move {
            let sent = Instant::now();
            let options = SetOptions {
                ack: Some(AckLevel::Quorum),
                ..SetOptions::default()
            };
            let result =
                tokio::time::timeout(WRITE_TIMEOUT, c.set(key.as_bytes(), b"v", options)).await;
            let done = Instant::now();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Ok(Ok(_)) = result {
                let mut seen = seen.lock().expect("seen lock");
                if seen.since[node].is_some_and(|since| sent >= since) {
                    seen.ok_after[node] = Some(done);
                }
                if seen.kill_at.is_some_and(|kill| sent >= kill)
                    && seen.first_after_kill.is_none_or(|first| done < first)
                {
                    seen.first_after_kill = Some(done);
                }
            }
        });
    }
}

/// Waits (bounded) until writes sent through every running node after now succeed.
async fn wait_healthy(seen: &Mutex<Seen>, running: &[bool; NODES]) -> Result<(), String> {
    let since = Instant::now();
    {
        let mut seen = seen.lock().expect("seen lock");
        for node in 0..NODES {
            seen.since[node] = Some(since);
            seen.ok_after[node] = None;
        }
    }
    let deadline = since + TRIAL_LIMIT;
    loop {
        let healthy = {
            let seen = seen.lock().expect("seen lock");
            (0..NODES).all(|node| !running[node] || seen.ok_after[node].is_some())
        };
        if healthy {
            return Ok(());
        }
        if Instant::now() > deadline {
            let seen = seen.lock().expect("seen lock");
            let missing: Vec<usize> = (0..NODES)
                .filter(|&node| running[node] && seen.ok_after[node].is_none())
                .map(|node| node + 1)
                .collect();
            return Err(format!(
                "writes through node(s) {missing:?} did not succeed within {TRIAL_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Prints what every running node says of itself and what one quorum write through it
/// answers: the state to look at when a trial fails.
async fn describe_nodes(nodes: &[Node], running: &[bool]) {
    for (node, _) in nodes.iter().zip(running).filter(|(_, &up)| up) {
        let Ok(Ok(client)) =
            tokio::time::timeout(Duration::from_secs(1), Client::connect(&node.client_addr)).await
        else {
            eprintln!("node {}: cannot connect", node.id);
            continue;
        };
        let status = tokio::time::timeout(Duration::from_secs(1), client.cluster_status()).await;
        eprintln!("node {}: {status:?}", node.id);
        let options = SetOptions {
            ack: Some(AckLevel::Quorum),
            ..SetOptions::default()
        };
        let write = tokio::time::timeout(
            Duration::from_secs(3),
            client.set(b"failover-probe", b"v", options),
        )
        .await;
        eprintln!("node {}: a quorum write answers {write:?}", node.id);
    }
}

/// The leader every running node agrees on, as (index, term).
async fn find_leader(nodes: &[Node]) -> Result<(usize, u64), String> {
    let deadline = Instant::now() + TRIAL_LIMIT;
    loop {
        let mut leader = None;
        let mut seen = Vec::new();
        for node in nodes {
            let Ok(Ok(client)) = tokio::time::timeout(
                Duration::from_millis(500),
                Client::connect_with(
                    &node.client_addr,
                    ClientOptions {
                        pool_size: 1,
                        max_attempts: 1,
                        ..ClientOptions::default()
                    },
                ),
            )
            .await
            else {
                seen.push(format!("node {}: no connection", node.id));
                continue;
            };
            match tokio::time::timeout(Duration::from_millis(500), client.cluster_status()).await {
                Ok(Ok(status)) => {
                    seen.push(format!(
                        "node {}: {:?} in term {}, leader {:?}",
                        node.id, status.role, status.term, status.leader_id
                    ));
                    if status.role == StatusRole::Leader {
                        leader = Some((status.node_id.0 as usize - 1, status.term));
                    }
                }
                Ok(Err(error)) => seen.push(format!("node {}: {error}", node.id)),
                Err(_) => seen.push(format!("node {}: no status within 500 ms", node.id)),
            }
        }
        if let Some(leader) = leader {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            return Err(format!("no node says it leads: {}", seen.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: failover_bench MEMDI_SERVER WORK_DIR [TRIALS]");
        return ExitCode::from(2);
    }
    let server = PathBuf::from(&args[1]);
    let work = PathBuf::from(&args[2]);
    let trials: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(20);
    match run(&server, &work, trials).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("failover_bench: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run(server: &Path, work: &Path, trials: usize) -> Result<(), String> {
    let mut nodes = Nodes(
        (1..=NODES)
            .map(|id| Node {
                id,
                client_addr: free_addr(),
                peer_addr: free_addr(),
                data_dir: work.join(format!("failover-n{id}")),
                pid_file: work.join(format!("failover-n{id}.pid")),
                log: work.join(format!("failover-n{id}.log")),
                child: None,
            })
            .collect(),
    );
    let cluster = nodes
        .0
        .iter()
        .map(|node| format!("{}={}", node.id, node.peer_addr))
        .collect::<Vec<_>>()
        .join(",");
    for node in &mut nodes.0 {
        node.start(server, &cluster);
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for node in &nodes.0 {
        writers.push(tokio::spawn(writer(
            node.id - 1,
            node.client_addr.clone(),
            seen.clone(),
            stop.clone(),
        )));
        writers.push(tokio::spawn(closed_loop_writer(
            node.id - 1,
            node.client_addr.clone(),
            seen.clone(),
            stop.clone(),
        )));
    }
    let mut running = [true; NODES];
    wait_healthy(&seen, &running).await?;
    println!(
        "{trials} trials: 3 nodes, quorum SETs every {:?} through each node; kill -9 the leader",
        send_every()
    );
    let mut times = Vec::new();
    let mut closed_times = Vec::new();
    for trial in 1..=trials {
        // Let the restarted node settle as a follower before the next kill.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (leader, term) = find_leader(&nodes.0).await?;
        let kill_at = {
            let mut seen = seen.lock().expect("seen lock");
            seen.first_after_kill = None;
            seen.first_closed_after_kill = None;
            let now = Instant::now();
            seen.kill_at = Some(now);
            now
        };
        nodes.0[leader].kill();
        running[leader] = false;
        let deadline = kill_at + TRIAL_LIMIT;
        let first = loop {
            if let Some(first) = seen.lock().expect("seen lock").first_after_kill {
                break first;
            }
            if Instant::now() > deadline {
                describe_nodes(&nodes.0, &running).await;
                return Err(format!(
                    "trial {trial}: no write succeeded within {TRIAL_LIMIT:?} of the kill"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let took = first - kill_at;
        // The closed-loop clients may still be waiting for an answer (bounded: 5 s each).
        let closed = loop {
            if let Some(first) = seen.lock().expect("seen lock").first_closed_after_kill {
                break first - kill_at;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "trial {trial}: no closed-loop write succeeded within {TRIAL_LIMIT:?} of the kill"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        seen.lock().expect("seen lock").kill_at = None;
        let (new_leader, new_term) = find_leader(&nodes.0).await?;
        println!(
            "trial {trial:>2}: killed node {} (leader, term {term}); first write after {:7.1} ms (closed-loop client {:7.1} ms); new leader node {} term {new_term}",
            leader + 1,
            ms(took),
            ms(closed),
            new_leader + 1
        );
        times.push(took);
        closed_times.push(closed);
        nodes.0[leader].start(server, &cluster);
        running[leader] = true;
        wait_healthy(&seen, &running).await?;
    }
    let (leader, _) = find_leader(&nodes.0).await?;
    if let Ok(client) = Client::connect(&nodes.0[leader].client_addr).await {
        if let Ok(status) = client.cluster_status().await {
            println!(
                "the leader's log ends at entry {} (the server's in-memory log holds 65,536)",
                status.last_index
            );
        }
    }
    stop.store(1, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    for (name, mut times) in [("open-loop", times), ("closed-loop", closed_times)] {
        times.sort_unstable();
        println!(
            "failover ({name} writers) over {} trials: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.9)),
            ms(*times.last().expect("at least one trial")),
            ms(times[0])
        );
    }
    Ok(())
}
