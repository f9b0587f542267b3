//! Crash consistency of the data directory: `kill -9` at random moments while clients write
//! and snapshots are being written, many times over. Part of the `cluster` test target:
//! `cargo test -p memdi-tests --release --test cluster crash_loop`.
//!
//! `MEMDI_CRASH_ITERATIONS` sets the number of kills (default 200) and `MEMDI_CRASH_SEED`
//! the seed of the kill moments (default: from the clock; printed, so that a failing run can
//! be replayed with the same moments, though not the same interleaving).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memdi_node::client::{Client, ClientOptions, SetOptions};

use super::process::Server;
use super::temp_dir;

const WRITERS: u64 = 3;
/// Keys each writer overwrites in turn, so that the store stays small and a restart's
/// check reads every key.
const KEYS_PER_WRITER: u64 = 100;
/// The longest a node runs before it is killed.
const MAX_RUN_MS: u64 = 300;

/// What a writer did to one key: the counters in its values only grow.
#[derive(Debug, Clone, Copy, Default)]
struct KeyHistory {
    /// The highest counter acknowledged.
    acknowledged: u64,
    /// The highest counter sent (acknowledged or not: a kill leaves the last unknown).
    attempted: u64,
}

type Histories = Arc<Mutex<HashMap<String, KeyHistory>>>;

/// A small deterministic generator for the kill moments (xorshift64*).
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % max
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// A client of `server` that gives up at the first failure (the kill), connecting as soon
/// as the restarted node listens (bounded: 15 s).
async fn connect(server: &Server) -> Client {
    let options = ClientOptions {
        pool_size: 4,
        max_attempts: 1,
        ..ClientOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Client::connect_with(&server.client_addr(), options.clone()).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => {
                panic!("the node did not come back: {error}\n{}", server.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Writes `value {counter}` to this writer's keys in turn until an error (the kill), recording
/// each attempt before it is sent and each acknowledgement after.
async fn write_until_killed(client: Client, writer: u64, histories: Histories) {
    for round in 0.. {
        let key = format!("w{writer}:{}", round % KEYS_PER_WRITER);
        let counter = {
            let mut histories = histories.lock().unwrap();
            let history = histories.entry(key.clone()).or_default();
            history.attempted += 1;
            history.attempted
        };
        let value = format!("value {counter}");
        let sent = client.set(key.as_bytes(), value.as_bytes(), SetOptions::default());
        match tokio::time::timeout(Duration::from_secs(5), sent).await {
            Ok(Ok(_)) => {
                let mut histories = histories.lock().unwrap();
                let history = histories.get_mut(&key).expect("recorded above");
                history.acknowledged = history.acknowledged.max(counter);
            }
            _ => return,
        }
    }
}

/// Asks for snapshots back to back until an error, so that kills land in their writing.
async fn save_until_killed(client: Client, stop: Arc<AtomicBool>) -> u64 {
    let mut saved = 0;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(5), client.save()).await {
            Ok(Ok(_)) => saved += 1,
            _ => break,
        }
    }
    saved
}

/// Checks, after a restart, that every key holds its last acknowledged value or a later
/// attempt, and returns how many keys were checked.
async fn check_every_key(client: &Client, histories: &Histories, run: &str) -> usize {
    let expected: Vec<(String, KeyHistory)> = histories
        .lock()
        .unwrap()
        .iter()
        .map(|(key, history)| (key.clone(), *history))
        .collect();
    let keys: Vec<&[u8]> = expected.iter().map(|(key, _)| key.as_bytes()).collect();
    let found = client
        .mget(&keys)
        .await
        .unwrap_or_else(|error| panic!("reading every key after a restart: {error}\n{run}"));
    for ((key, history), value) in expected.iter().zip(&found) {
        let counter = value
            .as_deref()
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|text| text.strip_prefix("value "))
            .and_then(|counter| counter.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            counter >= history.acknowledged && counter <= history.attempted,
            "{key}: found counter {counter}, but {} was acknowledged and {} attempted\n{run}",
            history.acknowledged,
            history.attempted
        );
    }
    expected.len()
}

/// `kill -9` at random moments while three clients write with `--fsync always` and
/// `--durability disk` and a fourth asks for snapshots back to back: every restart starts
/// (a torn log tail is cut off, a half-written snapshot file is ignored), loads the last
/// snapshot once one was saved, and holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_write() {
    crash_loop("always").await;
}

/// The same with `--fsync everysec`: a write at `--durability disk` is answered once the
/// OS has its record, which a killed process does not lose. Here the node appends its
/// records to the log itself and goes on while a checkpoint is written, carrying what it
/// appended meanwhile into the new log (docs/protocol.md 4.8): kills land in the middle of
/// that too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_with_fsync_everysec_loses_no_acknowledged_write() {
    crash_loop("everysec").await;
}

async fn crash_loop(fsync: &str) {
    let iterations = env_u64("MEMDI_CRASH_ITERATIONS").unwrap_or(200);
    let seed = env_u64("MEMDI_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    }) | 1;
    println!("crash loop (--fsync {fsync}): {iterations} kills, MEMDI_CRASH_SEED={seed}");
    let mut moments = Moments(seed);
    let dir = temp_dir();
    let mut server = Server::new(
        1,
        dir.path().join("n1"),
        &[
            "--max-keys",
            "2000",
            "--max-memory",
            "2000000",
            "--fsync",
            fsync,
            "--durability",
            "disk",
            "--snapshot-every",
            "0",
        ],
    );
    let histories: Histories = Arc::default();
    let mut snapshots_saved = 0;
    let mut checked = 0;
    let mut slowest_restart = Duration::ZERO;
    let started = Instant::now();
    for iteration in 0..iterations {
        let timing = Instant::now();
        server.start();
        let client = connect(&server).await;
        let log = server.log();
        let run = log.rsplit("starting node").next().unwrap_or("").to_string();
        if snapshots_saved > 0 {
            assert!(
                run.contains("loaded snapshot"),
                "iteration {iteration}: a snapshot was saved before, but none was loaded \
                 (MEMDI_CRASH_SEED={seed})\n{run}"
            );
        }
        checked += check_every_key(&client, &histories, &run).await;
        let restarted = timing.elapsed();

        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let histories = histories.clone();
                let client = client.clone();
                tokio::spawn(write_until_killed(client, writer, histories))
            })
            .collect();
        let saver = tokio::spawn(save_until_killed(client.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(1 + moments.next_ms(MAX_RUN_MS))).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            tokio::time::timeout(Duration::from_secs(10), writer)
                .await
                .expect("a writer did not notice the kill")
                .unwrap();
        }
        snapshots_saved += tokio::time::timeout(Duration::from_secs(10), saver)
            .await
            .expect("the saver did not notice the kill")
            .unwrap();
        slowest_restart = slowest_restart.max(restarted);
    }
    // A last start, checked like the others, then a clean stop.
    server.start();
    let client = connect(&server).await;
    let log = server.log();
    let run = log.rsplit("starting node").next().unwrap_or("").to_string();
    checked += check_every_key(&client, &histories, &run).await;
    assert!(server.stop().success(), "{}", server.log());

    let log = server.log();
    let acknowledged: u64 = histories
        .lock()
        .unwrap()
        .values()
        .map(|history| history.acknowledged)
        .sum();
    println!(
        "crash loop (--fsync {fsync}): {iterations} kills in {:.1} s; {acknowledged} writes acknowledged; \
         {snapshots_saved} snapshots saved; {checked} key checks after restarts; \
         slowest restart and check {slowest_restart:?}; torn log tails cut off: {}; \
         snapshots loaded: {}",
        started.elapsed().as_secs_f64(),
        log.matches("torn tail").count(),
        log.matches("loaded snapshot").count(),
    );
    assert!(
        snapshots_saved > 0 && acknowledged > 0,
        "the loop neither wrote nor saved: it tested nothing"
    );
}
