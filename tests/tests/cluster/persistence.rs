//! Multi-process tests of memdi-server's persistence: the append-only log, replayed at start
//! (docs/protocol.md 4.8). Part of the `cluster` test target:
//! `cargo test -p memdi-tests --release --test cluster`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memdi_core::wire::{LinkState, StatusRole};
use memdi_node::client::{Client, ClientError, SetOptions};

use super::process::Server;
use super::{eventually, stale_value, temp_dir, QUORUM};

/// Small limits: a large store is allocated (though not touched) at every start.
const SMALL_STORE: &[&str] = &["--max-keys", "20000", "--max-memory", "4000000"];

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    SMALL_STORE.iter().chain(extra).copied().collect()
}

/// The current log of a data directory (the one with the highest base).
fn current_log(data_dir: &Path) -> PathBuf {
    memdi_node::log_file::find_logs(data_dir)
        .expect("listing the data directory")
        .pop()
        .expect("a log file")
        .1
}

/// The current run's part of a server's log.
fn last_run(server: &Server) -> String {
    let log = server.log();
    log.rsplit("starting node").next().unwrap_or("").to_string()
}

/// Reads `key`, retrying while the restarted node elects itself.
async fn read(client: &Client, key: &str) -> Option<Vec<u8>> {
    eventually(Duration::from_secs(15), "a read", || async {
        match client.get(key.as_bytes()).await {
            Ok(value) => Some(value.map(|value| value.value)),
            Err(_) => None,
        }
    })
    .await
}

/// kill -9 while four clients write at `--durability disk` with `--fsync always` (and a
/// checkpoint every second, so logs are being switched too): every write that was
/// acknowledged is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fsync_always_every_acknowledged_write_survives_kill_9() {
    let dir = temp_dir();
    let mut server = Server::new(
        1,
        dir.path().join("n1"),
        &args(&[
            "--durability",
            "disk",
            "--fsync",
            "always",
            "--snapshot-every",
            "1",
        ]),
    );
    server.start();
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let client = server.client().await;
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..20_000 {
                let key = format!("w{writer}:{i}");
                let value = format!("value {writer} {i}");
                match client
                    .set(key.as_bytes(), value.as_bytes(), SetOptions::default())
                    .await
                {
                    Ok(_) => acknowledged.lock().unwrap().push((key, value)),
                    Err(_) => return, // the node was killed
                }
            }
        }));
    }
    // Killed once writes have gone to a log started by a checkpoint, too.
    eventually(
        Duration::from_secs(30),
        "writes to be acknowledged across a checkpoint",
        || async {
            let written = acknowledged.lock().unwrap().len();
            let checkpoints = server.log().matches("a new log started").count();
            (written >= 2_000 && checkpoints >= 1).then_some(())
        },
    )
    .await;
    server.kill();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("a writer did not notice the kill")
            .unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    println!("{} writes acknowledged before kill -9", acknowledged.len());

    server.start();
    let client = server.client().await;
    let mut lost = Vec::new();
    for (key, value) in &acknowledged {
        if read(&client, key).await.as_deref() != Some(value.as_bytes()) {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(5)],
        last_run(&server)
    );
    assert!(last_run(&server).contains("replayed log"));
    assert!(server.stop().success(), "{}", server.log());
}

/// Writes `count` keys `k0..` to a fresh single node and kills it with -9 (no final
/// snapshot, no periodic ones: the log alone holds them).
async fn node_with_keys_in_its_log(dir: &Path, count: usize) -> Server {
    let mut server = Server::new(
        1,
        dir.join("n1"),
        &args(&["--fsync", "always", "--snapshot-every", "0"]),
    );
    server.start();
    let client = server.client().await;
    for i in 0..count {
        client
            .set(
                format!("k{i}").as_bytes(),
                format!("v{i}").as_bytes(),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    drop(client);
    server.kill();
    server
}

/// A crash can cut the log's last write: the torn tail is cut off with a warning and the
/// node starts with every whole record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_cut_off_with_a_warning() {
    let dir = temp_dir();
    let mut server = node_with_keys_in_its_log(dir.path(), 50).await;
    let log = current_log(&server.data_dir);
    let length = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(length - 3).unwrap();
    drop(file);

    server.start();
    let client = server.client().await;
    // Every key but the last was followed by later records, so its entry is whole.
    for i in 0..49 {
        assert_eq!(
            read(&client, &format!("k{i}")).await,
            Some(format!("v{i}").into_bytes()),
            "k{i} lost\n{}",
            last_run(&server)
        );
    }
    let run = last_run(&server);
    assert!(run.contains("torn tail"), "no warning:\n{run}");
    assert!(run.contains(&log.display().to_string()), "{run}");
    assert!(server.stop().success(), "{}", server.log());
}

/// A damaged record before the end is not a torn write: the node refuses to start, naming
/// the file and the damaged record's byte offset, rather than drop what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_refuses_to_start_naming_file_and_offset() {
    let dir = temp_dir();
    let mut server = node_with_keys_in_its_log(dir.path(), 50).await;
    let log = current_log(&server.data_dir);
    let mut bytes = std::fs::read(&log).unwrap();
    // Walk the records (`len u32 | crc u32 | payload`) to the one at the middle of the file,
    // and flip a byte of its payload.
    let mut at = 0;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + 8 + len;
        assert!(end < bytes.len(), "no record in the middle");
        if end > bytes.len() / 2 {
            break;
        }
        at = end;
    }
    bytes[at + 8] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();

    server.start();
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("a node with a damaged log kept running");
    assert!(!status.success());
    let run = last_run(&server);
    assert!(
        run.contains(&log.display().to_string()),
        "the error does not name {}:\n{run}",
        log.display()
    );
    assert!(
        run.contains(&format!("byte {at}")),
        "the error does not name offset {at}:\n{run}"
    );
    // Nothing was changed: the same refusal again.
    assert_eq!(std::fs::read(&log).unwrap(), bytes);
}

/// The term a restarted node says it restored.
fn restored_term(server: &Server) -> Option<u64> {
    let run = last_run(server);
    let rest = run.split("restored node").nth(1)?;
    let rest = rest.split("term ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Writes through `client` until one succeeds (a leader may be being elected).
async fn write_eventually(client: &Client, key: &str) {
    eventually(Duration::from_secs(30), "a quorum write", || async {
        let attempt = client.set(key.as_bytes(), b"v", QUORUM);
        match tokio::time::timeout(Duration::from_millis(2_500), attempt).await {
            Ok(Ok(_)) => Some(()),
            Ok(Err(ClientError::Server { .. } | ClientError::Closed { .. })) | Err(_) => None,
            Ok(Err(error)) => panic!("{error}"),
        }
    })
    .await;
}

/// In a three-node cluster, each node in turn is killed with -9 and restarted: it comes
/// back in at least the term it had reached (with its vote), keeps every quorum write, and
/// the cluster keeps taking writes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_node_keeps_its_term_and_its_writes() {
    let dir = temp_dir();
    let mut nodes = super::process::cluster_of(dir.path(), 3, |_| {
        ["--fsync", "always"]
            .iter()
            .chain(SMALL_STORE)
            .map(|arg| arg.to_string())
            .collect()
    });
    for node in &mut nodes {
        node.start();
    }
    let mut written = Vec::new();
    for round in 0..3 {
        let client = nodes[(round + 1) % 3].client().await;
        for i in 0..20 {
            let key = format!("r{round}:{i}");
            write_eventually(&client, &key).await;
            written.push(key);
        }
        drop(client);
        // The node's own view: its term, and a leader every node agrees on.
        let status = nodes[round].client().await.cluster_status().await.unwrap();
        let term_before = status.term;
        assert!(term_before >= 1, "{status:?}");
        let node = &mut nodes[round];
        node.kill();
        let runs = node.log().matches("starting node").count();
        node.start();
        let restored = eventually(Duration::from_secs(20), "the restart", || async {
            if node.log().matches("starting node").count() > runs {
                restored_term(node)
            } else {
                None
            }
        })
        .await;
        assert!(
            restored >= term_before,
            "node {} came back in term {restored} after reaching term {term_before}\n{}",
            node.node_id,
            node.log()
        );
        // It serves again: a write through it, and every earlier write readable on it.
        let client = node.client().await;
        write_eventually(&client, &format!("after-restart:{round}")).await;
        written.push(format!("after-restart:{round}"));
        for key in &written {
            eventually(
                Duration::from_secs(20),
                "the restarted node's data",
                || async { stale_value(&client, key.as_bytes()).await.map(|_| ()) },
            )
            .await;
        }
    }
    // CLUSTER STATUS: one leader, which every node names, and which sees both followers
    // connected with their replication lag.
    let statuses = eventually(Duration::from_secs(20), "agreement on a leader", || async {
        let mut statuses = Vec::new();
        for node in &nodes {
            statuses.push(node.client().await.cluster_status().await.ok()?);
        }
        let leader = statuses[0].leader_id?;
        let leader_status = statuses.iter().find(|status| status.node_id == leader)?;
        let all_agree = statuses
            .iter()
            .all(|status| status.leader_id == Some(leader));
        let followers_heard = leader_status
            .members
            .iter()
            .all(|member| member.link == LinkState::Connected && member.lag.is_some());
        (all_agree && followers_heard).then_some(statuses)
    })
    .await;
    let leaders = statuses
        .iter()
        .filter(|status| status.role == StatusRole::Leader)
        .count();
    assert_eq!(leaders, 1, "{statuses:?}");
    for status in &statuses {
        assert_eq!(status.members.len(), 2, "{status:?}");
    }
    for node in &mut nodes {
        assert!(node.stop().success(), "{}", node.log());
    }
}

/// SAVE answers once the snapshot is on disk: a node killed right after it, with its log
/// deleted, comes back from the snapshot alone with every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_answers_once_the_snapshot_is_on_disk() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &args(&["--snapshot-every", "0"]));
    server.start();
    let client = server.client().await;
    for i in 0..100 {
        client
            .set(format!("k{i}").as_bytes(), b"v", SetOptions::default())
            .await
            .unwrap();
    }
    let report = client.save().await.unwrap();
    assert!(report.applied_index >= 100, "{report:?}");
    let snapshot = server.data_dir.join("snapshot.memdi");
    assert_eq!(
        std::fs::metadata(&snapshot).unwrap().len(),
        report.snapshot_bytes
    );
    drop(client);
    server.kill();
    for (_, log) in memdi_node::log_file::find_logs(&server.data_dir).unwrap() {
        std::fs::remove_file(log).unwrap();
    }
    server.start();
    let client = server.client().await;
    for i in 0..100 {
        assert_eq!(
            read(&client, &format!("k{i}")).await,
            Some(b"v".to_vec()),
            "k{i}"
        );
    }
    assert!(server.stop().success(), "{}", server.log());
}

/// `--persistence none` keeps nothing on disk: SAVE is refused, a clean stop writes no
/// snapshot (and still exits 0), nothing is written to the data directory, and a restart
/// starts empty, as Redis does with `appendonly no` and `save ""`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_persistence_none_nothing_reaches_the_disk_and_a_restart_starts_empty() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &args(&["--persistence", "none"]));
    server.start();
    let client = server.client().await;
    for i in 0..50 {
        client
            .set(format!("k{i}").as_bytes(), b"v", SetOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(read(&client, "k49").await, Some(b"v".to_vec()));
    match client.save().await {
        Err(ClientError::Server { detail, .. }) => {
            assert!(detail.contains("nothing on disk"), "{detail}")
        }
        other => panic!("SAVE on a node without persistence answered {other:?}"),
    }
    drop(client);
    assert!(server.stop().success(), "{}", server.log());
    // The harness keeps the server's own log in its data directory: nothing else is there.
    let written: Vec<_> = std::fs::read_dir(&server.data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "server.log")
        .collect();
    assert!(
        written.is_empty(),
        "written to the data directory: {written:?}"
    );
    assert!(
        last_run(&server).contains("nothing on disk (--persistence none)"),
        "{}",
        server.log()
    );
    server.start();
    let client = server.client().await;
    assert_eq!(read(&client, "k0").await, None);
    drop(client);
    assert!(server.stop().success(), "{}", server.log());
}
