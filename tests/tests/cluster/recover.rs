//! `--recover`: a memdi-server that lost its data directory comes back without voting until
//! it has caught up (docs/protocol.md 4.10), and a marker file keeps it recovering across a
//! crash in the middle. Part of the `cluster` test target (`cargo test -p memdi-tests
//! --release --test cluster recover`). The voting rules themselves are proven by the core's
//! unit tests and the simulator's `LoseState` fault; this test shows memdi-server wires them
//! to its disk.

use std::time::Duration;

use memdi_core::wire::{AckLevel, ReadConsistency, SetCondition};
use memdi_node::client::SetOptions;
use memdi_node::server::recovery_marker::marker_path;

use super::process::{cluster_of, current_run, Server};
use super::{eventually, temp_dir};

const QUORUM: SetOptions = SetOptions {
    condition: SetCondition::Always,
    ttl_ms: None,
    ack: Some(AckLevel::Quorum),
};

/// The log of the node's current run.
fn this_run(node: &Server) -> String {
    current_run(&node.log()).to_string()
}

/// Waits (up to 30 s) until `node`, which started recovering in its current run, has
/// recovered and its marker is gone.
async fn recovered(node: &Server) {
    eventually(
        Duration::from_secs(30),
        "recovery and the marker's removal",
        || async {
            let run = this_run(node);
            (run.contains("recovered from a restart without state")
                && !marker_path(&node.data_dir).exists())
            .then_some(())
        },
    )
    .await;
    assert!(
        this_run(node).contains("recovering after a loss of state"),
        "{}",
        node.log()
    );
}

/// Waits (up to 30 s) until `node`'s own store holds `keys` keys `k0..`, each with its value.
async fn holds_keys(node: &Server, keys: usize) {
    let client = node.client().await;
    eventually(Duration::from_secs(30), "every key on the node", || async {
        for i in 0..keys {
            let key = format!("k{i}");
            let value = client
                .get_with(key.as_bytes(), ReadConsistency::Stale)
                .await
                .ok()??;
            if value.value != format!("v{i}").as_bytes() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Writes `k{from}..k{to}` with `quorum` acks through whichever node takes them.
async fn write_keys(nodes: &[Server], from: usize, to: usize) {
    let mut clients = Vec::new();
    for node in nodes.iter().filter(|node| node.is_running()) {
        clients.push(node.client().await);
    }
    for i in from..to {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        eventually(Duration::from_secs(20), "a quorum write", || async {
            for client in &clients {
                if client
                    .set(key.as_bytes(), value.as_bytes(), QUORUM)
                    .await
                    .is_ok()
                {
                    return Some(());
                }
            }
            None
        })
        .await;
    }
}

fn lose_data(node: &mut Server) {
    node.kill();
    let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
    std::fs::remove_dir_all(&node.data_dir).expect("removing the data directory");
    std::fs::create_dir_all(&node.data_dir).expect("creating the data directory");
    // The log lived in the data directory: keep what it said.
    std::fs::write(&node.log_path, log).expect("keeping the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_disk_recovers_with_recover() {
    let dir = temp_dir();
    let mut nodes = cluster_of(dir.path(), 3, |_| Vec::new());
    for node in &mut nodes {
        node.start();
    }
    write_keys(&nodes, 0, 50).await;

    // The disk of node 3 is lost; it comes back with --recover and catches up.
    lose_data(&mut nodes[2]);
    nodes[2].extra_args.push("--recover".into());
    nodes[2].start();
    recovered(&nodes[2]).await;
    holds_keys(&nodes[2], 50).await;

    // Recovered and saved: a restart, with or without the flag, is a normal one, and
    // --recover on its data directory is refused.
    nodes[2].kill();
    nodes[2].start();
    let refused = nodes[2].wait_exit(Duration::from_secs(20));
    assert!(
        refused.is_some_and(|status| !status.success()),
        "--recover on a directory with state: {refused:?}"
    );
    assert!(
        this_run(&nodes[2]).contains("holds a snapshot")
            || this_run(&nodes[2]).contains("holds a log"),
        "--recover on a directory with state was not refused:\n{}",
        nodes[2].log()
    );
    nodes[2].extra_args.pop();
    nodes[2].start();
    holds_keys(&nodes[2], 50).await;
    assert!(!this_run(&nodes[2]).contains("recovering"));
    write_keys(&nodes, 50, 60).await;

    // Killed in the middle of recovering, it recovers again on the next start, even
    // without the flag: the marker says so.
    lose_data(&mut nodes[2]);
    nodes[2].extra_args.push("--recover".into());
    nodes[2].start();
    eventually(Duration::from_secs(15), "the marker", || async {
        marker_path(&nodes[2].data_dir).exists().then_some(())
    })
    .await;
    nodes[2].kill();
    nodes[2].extra_args.pop();
    nodes[2].start();
    recovered(&nodes[2]).await;
    holds_keys(&nodes[2], 60).await;
    for node in &mut nodes {
        assert!(node.stop().success(), "{}", node.log());
    }
}
