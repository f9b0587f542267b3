//! Multi-process tests: real `memdi-server` processes on 127.0.0.1, driven through the
//! client library (`memdi_node::client`).
//!
//! Run: `cargo test -p memdi-tests --release --test cluster` (the first test builds the
//! server binary; see `process/mod.rs`). Ports are picked free by each test, each node has
//! its own temporary data directory, every process is killed when its test ends, and every
//! wait is bounded. No test asserts on speed: times are printed, limits are generous.
//!
//! The leader is found by reading the nodes' logs (`role: Leader in term N`, the last such
//! line of the highest term), which works with a node that does not answer; the
//! `ClusterStatus` request is tested in persistence.rs.

#[path = "cluster/crash_loop.rs"]
mod crash_loop;
#[path = "cluster/disk_full.rs"]
mod disk_full;
#[path = "cluster/observability.rs"]
mod observability;
#[path = "cluster/persistence.rs"]
mod persistence;
#[allow(dead_code)] // shared with the RESP and auth tests, which use other parts of it
mod process;
#[path = "cluster/recover.rs"]
mod recover;
#[path = "cluster/secrets.rs"]
mod secrets;

use std::time::{Duration, Instant};

use memdi_core::wire::{AckLevel, ErrorCode, ReadConsistency, SetCondition};
use memdi_node::client::{CasOutcome, Client, ClientError, SetOptions};
use process::Server;

const QUORUM: SetOptions = SetOptions {
    condition: SetCondition::Always,
    ttl_ms: None,
    ack: Some(AckLevel::Quorum),
};

/// Small limits so that "full" is reachable.
const SMALL_STORE: &[&str] = &["--max-keys", "200", "--max-memory", "200000"];

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("memdi-cluster-test")
        .tempdir()
        .expect("temporary directory")
}

/// Retries `attempt` every 50 ms until it returns `Some` or `limit` passes.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_every_operation() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), SMALL_STORE);
    server.start();
    let client = server.client().await;
    client.ping().await.unwrap();

    // set / get / versions
    let v1 = client
        .set(b"k", b"one", SetOptions::default())
        .await
        .unwrap()
        .unwrap();
    let value = client.get(b"k").await.unwrap().unwrap();
    assert_eq!((value.value.as_slice(), value.version), (&b"one"[..], v1));
    // NX / XX
    let nx = SetOptions {
        condition: SetCondition::IfAbsent,
        ..SetOptions::default()
    };
    assert_eq!(client.set(b"k", b"two", nx).await.unwrap(), None);
    let xx = SetOptions {
        condition: SetCondition::IfPresent,
        ..SetOptions::default()
    };
    assert_eq!(client.set(b"absent", b"x", xx).await.unwrap(), None);
    assert!(client.get(b"absent").await.unwrap().is_none());
    // exists / delete
    assert!(client.exists(b"k").await.unwrap());
    assert!(client.delete(b"k").await.unwrap());
    assert!(!client.delete(b"k").await.unwrap());
    assert!(!client.exists(b"k").await.unwrap());
    // incr
    assert_eq!(client.incr_by(b"counter", 5).await.unwrap(), 5);
    assert_eq!(client.incr_by(b"counter", -7).await.unwrap(), -2);
    client
        .set(b"text", b"abc", SetOptions::default())
        .await
        .unwrap();
    let error = client.incr_by(b"text", 1).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotAnInteger), "{error}");
    // compare-and-set
    let created = match client.compare_and_set(b"cas", 0, b"a").await.unwrap() {
        CasOutcome::Stored(version) => version,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        client.compare_and_set(b"cas", 0, b"b").await.unwrap(),
        CasOutcome::Mismatch(created)
    );
    assert!(matches!(
        client.compare_and_set(b"cas", created, b"c").await.unwrap(),
        CasOutcome::Stored(_)
    ));
    assert_eq!(client.get(b"cas").await.unwrap().unwrap().value, b"c");
    // mget
    assert_eq!(
        client.mget(&[b"cas", b"nope", b"text"]).await.unwrap(),
        vec![Some(b"c".to_vec()), None, Some(b"abc".to_vec())]
    );
    // expiry
    let ttl = SetOptions {
        ttl_ms: Some(300),
        ..SetOptions::default()
    };
    client.set(b"short", b"lived", ttl).await.unwrap();
    assert!(client.get(b"short").await.unwrap().is_some());
    eventually(Duration::from_secs(10), "the key to expire", || async {
        client.get(b"short").await.unwrap().is_none().then_some(())
    })
    .await;
    // scan, across pages
    for i in 0..50 {
        let key = format!("scan:{i:02}");
        client
            .set(key.as_bytes(), b"v", SetOptions::default())
            .await
            .unwrap();
    }
    let keys = client.scan_all(b"scan:", 7).await.unwrap();
    let expected: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("scan:{i:02}").into_bytes())
        .collect();
    assert_eq!(keys, expected);
    // pipelining: many requests in flight on the client's connections at once
    let writes = (0..100).map(|i| {
        let client = client.clone();
        async move { client.incr_by(b"pipelined", i).await }
    });
    let mut tasks = tokio::task::JoinSet::new();
    for write in writes {
        tasks.spawn(write);
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(client.incr_by(b"pipelined", 0).await.unwrap(), 4950);
    // a full store refuses writes with StoreFull and keeps serving
    let mut full = None;
    for i in 0..400 {
        let key = format!("fill:{i}");
        match client
            .set(key.as_bytes(), &[7; 100], SetOptions::default())
            .await
        {
            Ok(_) => {}
            Err(error) => {
                full = Some(error);
                break;
            }
        }
    }
    let full = full.expect("the store never filled up");
    assert_eq!(full.code(), Some(ErrorCode::StoreFull), "{full}");
    assert!(client.get(b"cas").await.unwrap().is_some());
    assert!(client.dbsize().await.unwrap() > 50);
    assert!(server.stop().success());
}

/// A connection whose request waits for the cluster is not idle: with an idle timeout (1 s)
/// shorter than the request timeout (2 s), a write that cannot be acknowledged gets its own
/// answer, not the idle timeout's farewell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_waiting_for_an_answer_is_not_idle() {
    let dir = temp_dir();
    // One of two voters: no leader can be elected, so the write waits its full timeout.
    let mut nodes = process::cluster_of(dir.path(), 2, |_| {
        vec!["--idle-timeout-secs".into(), "1".into()]
    });
    nodes[0].start();
    let options = memdi_node::client::ClientOptions {
        max_attempts: 1,
        ..memdi_node::client::ClientOptions::default()
    };
    let client = eventually(Duration::from_secs(15), "the node", || async {
        Client::connect_with(&nodes[0].client_addr(), options.clone())
            .await
            .ok()
    })
    .await;
    let started = Instant::now();
    let answer = client.set(b"k", b"v", QUORUM).await;
    let error = answer.expect_err("a write with no leader succeeded");
    assert_eq!(error.code(), Some(ErrorCode::NoLeader), "{error}");
    assert!(
        !error.to_string().contains("idle timeout"),
        "the idle timeout closed a connection waiting for an answer: {error}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500), "{error}");
    assert!(nodes[0].stop().success(), "{}", nodes[0].log());
}

/// ...but one whose answers wait unwritten because it does not read them is idle: a client
/// that asks for 20 MiB (under the 64 MiB output limit) and never reads is closed by the
/// idle timeout, as the node's count of connected clients shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_read_its_answers_is_idle() {
    let dir = temp_dir();
    let mut node = Server::new(1, dir.path().join("n1"), &["--idle-timeout-secs", "1"]);
    node.start();
    let client = node.client().await;
    let big = vec![b'v'; 512 * 1024];
    client
        .set(b"big", &big, SetOptions::default())
        .await
        .unwrap();
    let connected = |info: String| -> Option<u64> {
        info.lines()
            .find_map(|line| line.strip_prefix("connected_clients:"))?
            .trim()
            .parse()
            .ok()
    };
    let before = connected(client.info().await.unwrap()).expect("connected_clients");
    let addr = node.client_addr();
    let stream = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut stream = raw::connect(&addr);
        raw::send_hello(&mut stream);
        let mut gets = Vec::new();
        for id in 0..40u32 {
            let mut frame = [0; 64];
            let get = memdi_core::wire::ClientMessage {
                request_id: id + 2,
                request: memdi_core::wire::Request::Get {
                    key: b"big",
                    read: ReadConsistency::Stale,
                },
            };
            let len = memdi_core::wire::encode_frame(&get, &mut frame).unwrap();
            gets.extend_from_slice(&frame[..len]);
        }
        stream.write_all(&gets).unwrap();
        stream // kept open, never read
    })
    .await
    .unwrap();
    eventually(
        Duration::from_secs(15),
        "the non-reader's close",
        || async {
            let now = connected(client.info().await.ok()?)?;
            (now == before).then_some(())
        },
    )
    .await;
    drop(stream);
    assert!(node.stop().success(), "{}", node.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_key() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &[]);
    server.start();
    let client = server.client().await;
    let mut versions = Vec::new();
    for i in 0..500 {
        let key = format!("key:{i}");
        let version = client
            .set(
                key.as_bytes(),
                format!("value {i}").as_bytes(),
                SetOptions::default(),
            )
            .await
            .unwrap()
            .unwrap();
        versions.push(version);
    }
    client.incr_by(b"counter", 41).await.unwrap();
    drop(client);
    let status = server.stop();
    assert!(status.success(), "exit {status}:\n{}", server.log());
    assert!(server.log().contains("final snapshot saved"));

    server.start();
    let client = server.client().await;
    for (i, version) in versions.iter().enumerate() {
        let key = format!("key:{i}");
        let value = eventually(Duration::from_secs(10), "the restarted node", || async {
            client.get(key.as_bytes()).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("{key} lost across the restart"));
        assert_eq!(value.value, format!("value {i}").into_bytes());
        assert_eq!(value.version, *version);
    }
    assert_eq!(client.incr_by(b"counter", 1).await.unwrap(), 42);
    assert_eq!(client.dbsize().await.unwrap(), 501);
    // Versions keep rising after the load.
    let next = client
        .set(b"key:0", b"again", SetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert!(next > *versions.iter().max().unwrap());
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_snapshot_refuses_to_start_naming_the_file() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &[]);
    server.start();
    let client = server.client().await;
    for i in 0..20 {
        client
            .set(
                format!("k{i}").as_bytes(),
                b"some value",
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    drop(client);
    assert!(server.stop().success());
    let path = server.data_dir.join("snapshot.memdi");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    server.start();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("a node with a corrupted snapshot kept running");
    assert!(!status.success());
    let log = server.log();
    let last_run = log.rsplit("starting node").next().unwrap();
    assert!(
        last_run.contains(&path.display().to_string()),
        "the error does not name {}:\n{last_run}",
        path.display()
    );
}

/// Three nodes on one host.
struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    fn start(dir: &std::path::Path) -> Self {
        let mut nodes = process::cluster_of(dir, 3, |_| {
            SMALL_STORE.iter().map(|arg| arg.to_string()).collect()
        });
        for node in &mut nodes {
            node.start();
        }
        Self { nodes }
    }

    /// The running node that logged leadership of the highest term, once one has.
    async fn leader(&self) -> usize {
        eventually(Duration::from_secs(20), "a leader", || async {
            self.nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.is_running())
                .filter_map(|(i, node)| node.last_role().map(|(role, term)| (i, role, term)))
                // A follower's last line may be of the leader's term too (it was a
                // pre-candidate in it before the leader's first heartbeat reached it): the
                // leader wins the tie. (`max_by_key` returns the last of equal keys, which
                // failed a CI run whenever the follower came after the leader.)
                .max_by_key(|(_, role, term)| (*term, role == "Leader"))
                .filter(|(_, role, _)| role == "Leader")
                .map(|(i, _, _)| i)
        })
        .await
    }
}

async fn stale_value(client: &Client, key: &[u8]) -> Option<Vec<u8>> {
    match client.get_with(key, ReadConsistency::Stale).await {
        Ok(value) => value.map(|value| value.value),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_catch_up() {
    let started = Instant::now();
    let dir = temp_dir();
    let mut cluster = Cluster::start(dir.path());
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    println!(
        "leader: node {} after {:?}",
        cluster.nodes[leader].node_id,
        started.elapsed()
    );

    // A write sent to a follower is forwarded, and readable (stale) on all three.
    let via_follower = cluster.nodes[follower].client().await;
    via_follower
        .set(b"replicated", b"yes", QUORUM)
        .await
        .unwrap()
        .unwrap();
    for node in &cluster.nodes {
        let client = node.client().await;
        eventually(
            Duration::from_secs(10),
            "replication to every node",
            || async {
                (stale_value(&client, b"replicated").await.as_deref() == Some(&b"yes"[..]))
                    .then_some(())
            },
        )
        .await;
    }
    for i in 0..50 {
        via_follower
            .set(format!("before:{i}").as_bytes(), b"v", QUORUM)
            .await
            .unwrap();
    }

    // kill -9 the leader; a survivor takes quorum writes again.
    let old_leader = leader;
    cluster.nodes[old_leader].kill();
    let killed_at = Instant::now();
    let survivor = cluster.nodes[(old_leader + 1) % 3].client().await;
    eventually(
        Duration::from_secs(30),
        "a new leader to take writes",
        // Each try is cut short after 500 ms: a write the follower forwarded to the dead
        // leader waits for the core's request timeout (2 s, outcome unknown) to fail.
        || async {
            let attempt = survivor.set(b"after-failover", b"1", QUORUM);
            match tokio::time::timeout(Duration::from_millis(500), attempt).await {
                Ok(Ok(_)) => Some(()),
                Ok(Err(ClientError::Server { .. } | ClientError::Closed { .. })) | Err(_) => None,
                Ok(Err(error)) => panic!("{error}"),
            }
        },
    )
    .await;
    let failover = killed_at.elapsed();
    println!("quorum writes accepted again {failover:?} after kill -9 of the leader");
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    for i in 0..50 {
        survivor
            .set(format!("during:{i}").as_bytes(), b"v", QUORUM)
            .await
            .unwrap();
    }

    // The old leader restarts from its snapshot and log (its term, vote and entries; not
    // fsynced with the default --fsync everysec, but kill -9 leaves the OS's page cache)
    // and catches up: every key, including those written while it was down.
    cluster.nodes[old_leader].start();
    let rejoined = cluster.nodes[old_leader].client().await;
    let keys: Vec<String> = (0..50)
        .map(|i| format!("before:{i}"))
        .chain((0..50).map(|i| format!("during:{i}")))
        .chain(["replicated".to_string(), "after-failover".to_string()])
        .collect();
    eventually(
        Duration::from_secs(30),
        "the old leader to catch up",
        || async {
            for key in &keys {
                stale_value(&rejoined, key.as_bytes()).await?;
            }
            Some(())
        },
    )
    .await;
    // And it serves writes again, forwarding them to the leader.
    rejoined
        .set(b"from-old-leader", b"ok", QUORUM)
        .await
        .unwrap();
    println!("three-node test took {:?}", started.elapsed());
    for node in &mut cluster.nodes {
        assert!(node.stop().success(), "{}", node.log());
    }
}

/// Raw connections, to misbehave in ways the client library never does.
mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use memdi_core::wire::{
        decode, encode_frame, ClientMessage, ClusterId, ErrorCode, Hello, Request, Response,
        Sender, ServerMessage,
    };

    pub fn connect(addr: &str) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    pub fn send_hello(stream: &mut TcpStream) {
        let hello = ClientMessage {
            request_id: 1,
            request: Request::Hello(Hello::new(ClusterId(0), Sender::Client, 1 << 20)),
        };
        let mut frame = [0; 128];
        let len = encode_frame(&hello, &mut frame).unwrap();
        stream.write_all(&frame[..len]).unwrap();
    }

    /// Reads one frame; `None` at end of stream.
    pub fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut header = [0; 4];
        stream.read_exact(&mut header).ok()?;
        let mut payload = vec![0; u32::from_le_bytes(header) as usize];
        stream.read_exact(&mut payload).ok()?;
        Some(payload)
    }

    /// The error code of a frame, if it is an error.
    pub fn error_code(payload: &[u8]) -> Option<ErrorCode> {
        match decode::<ServerMessage<'_>>(payload).ok()?.response {
            Response::Error(error) => Some(error.code),
            _ => None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_are_closed_and_others_keep_being_served() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &["--max-clients", "3"]);
    server.start();
    let client = server.client().await; // connection 1
    client.set(b"k", b"v", SetOptions::default()).await.unwrap();
    let addr = server.client_addr();
    tokio::task::spawn_blocking(move || {
        // An oversized frame header: an error frame, then the connection closes.
        let mut oversized = raw::connect(&addr);
        raw::send_hello(&mut oversized);
        assert!(raw::read_frame(&mut oversized).is_some(), "no HelloAck");
        use std::io::Write;
        oversized.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let error = raw::read_frame(&mut oversized).expect("no error frame");
        assert_eq!(raw::error_code(&error), Some(ErrorCode::FrameTooLarge));
        assert!(raw::read_frame(&mut oversized).is_none(), "still open");
        drop(oversized);
        // A first frame that is not a Hello: refused and closed. The closed connection
        // above frees its slot a moment later; until then a new one is refused as Busy.
        let mut code = None;
        for _ in 0..50 {
            let mut rude = raw::connect(&addr);
            rude.write_all(&[3, 0, 0, 0, 1, 2, 3]).unwrap();
            let error = raw::read_frame(&mut rude).expect("no error frame");
            code = raw::error_code(&error);
            if code != Some(ErrorCode::Busy) {
                assert!(raw::read_frame(&mut rude).is_none(), "still open");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(code, Some(ErrorCode::Malformed));
        // --max-clients 3: with connections 1 to 3 open, a fourth is refused with Busy.
        let mut keep = Vec::new();
        for _ in 0..20 {
            let mut stream = raw::connect(&addr);
            raw::send_hello(&mut stream);
            let first = raw::read_frame(&mut stream).expect("no answer");
            if raw::error_code(&first) == Some(ErrorCode::Busy) {
                return keep.len();
            }
            keep.push(stream);
            // Closed connections free their slot a moment later.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("--max-clients was not enforced");
    })
    .await
    .map(|accepted| assert!(accepted <= 2, "{accepted} extra connections accepted"))
    .unwrap();
    // The well-behaved connection was served throughout.
    assert_eq!(client.get(b"k").await.unwrap().unwrap().value, b"v");
    assert!(server.stop().success());
}

/// A fourth node joins a running cluster through a member's peer address, gets every key,
/// becomes a voter and serves; then the leader is removed, the others elect a new one, and
/// the removed node, restarted with `--join`, refuses to come back with its old log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_running_cluster_and_the_leader_leaves() {
    use memdi_core::wire::StatusRole;

    let dir = temp_dir();
    let mut cluster = Cluster::start(dir.path());
    let leader = cluster.leader().await;
    let via_leader = cluster.nodes[leader].client().await;
    for i in 0..50 {
        let key = format!("before-{i}");
        via_leader
            .set(key.as_bytes(), b"v", QUORUM)
            .await
            .unwrap()
            .unwrap();
    }

    let seed = cluster.nodes[(leader + 1) % 3].peer_addr();
    let mut joiner = Server::new(4, dir.path().join("n4"), &["--join", &seed]);
    joiner
        .extra_args
        .extend(SMALL_STORE.iter().map(|arg| arg.to_string()));
    joiner.start();
    let joined = joiner.client().await;
    // Every key arrives, and the leader promotes the node once it holds them.
    eventually(Duration::from_secs(20), "node 4 to be a voter", || async {
        let status = via_leader.cluster_status().await.ok()?;
        let member = status.members.iter().find(|m| m.id.0 == 4)?;
        (member.role != StatusRole::Learner).then_some(())
    })
    .await;
    for i in 0..50 {
        let key = format!("before-{i}");
        eventually(Duration::from_secs(10), "a key on node 4", || async {
            stale_value(&joined, key.as_bytes()).await
        })
        .await;
    }
    // It takes writes (forwarded to the leader) like any member.
    joined.set(b"via-4", b"yes", QUORUM).await.unwrap().unwrap();
    assert!(joiner.log().contains("joined the cluster through"));

    // The leader leaves: it steps down once the change commits, the others elect a leader
    // among themselves, and quorum writes go on through the new node.
    let old_leader_id = cluster.nodes[leader].node_id;
    joined.remove_member(old_leader_id).await.unwrap();
    eventually(Duration::from_secs(20), "a new leader", || async {
        let status = joined.cluster_status().await.ok()?;
        status
            .leader_id
            .filter(|id| id.0 != old_leader_id)
            .map(|_| ())
    })
    .await;
    joined
        .set(b"after-leave", b"yes", QUORUM)
        .await
        .unwrap()
        .unwrap();
    let status = joined.cluster_status().await.unwrap();
    assert!(
        status.members.iter().all(|m| m.id.0 != old_leader_id),
        "{status:?}"
    );

    // The removed node no longer counts for quorum: with it stopped and one more node
    // killed, two of the three voters left still take quorum writes (had it still counted,
    // two of four could not).
    cluster.nodes[leader].stop();
    let other = (0..3)
        .find(|&i| i != leader)
        .expect("another original node");
    cluster.nodes[other].kill();
    eventually(
        Duration::from_secs(20),
        "a quorum write with 2 of 3 voters",
        || async {
            let attempt = joined.set(b"two-of-three", b"yes", QUORUM);
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(_)) => Some(()),
                _ => None,
            }
        },
    )
    .await;

    // The removed node refuses to rejoin with the log the cluster has moved past.
    let removed = &mut cluster.nodes[leader];
    removed.extra_args = vec!["--join".into(), joiner.peer_addr()];
    removed.start();
    let status = removed
        .wait_exit(Duration::from_secs(20))
        .expect("a removed node restarted with --join kept running");
    assert!(!status.success());
    assert!(
        removed.log().contains("was removed from the cluster"),
        "{}",
        removed.log()
    );
    joiner.stop();
}
