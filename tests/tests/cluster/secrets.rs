//! `--cluster-secret`: peers prove they share the secret before anything else passes
//! between them. Part of the `cluster` test target:
//! `cargo test -p memdi-tests --release --test cluster secrets`.

use std::time::Duration;

use super::process::{cluster_of, Server};
use super::{eventually, stale_value, temp_dir, QUORUM};

/// Two voters, each with `secrets[i]` (none if empty), started.
fn two_voters(dir: &std::path::Path, secrets: [&str; 2]) -> Vec<Server> {
    let mut nodes = cluster_of(dir, 2, |id| match secrets[id as usize - 1] {
        "" => Vec::new(),
        secret => vec!["--cluster-secret".into(), secret.into()],
    });
    for node in &mut nodes {
        node.start();
    }
    nodes
}

/// Nodes that share the secret form a cluster and replicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_the_secret_form_a_cluster() {
    let dir = temp_dir();
    let mut nodes = two_voters(dir.path(), ["shared-s3cret", "shared-s3cret"]);
    let writer = nodes[0].client().await;
    writer
        .set(b"k", b"v", QUORUM)
        .await
        .expect("a quorum write with both nodes")
        .unwrap();
    let reader = nodes[1].client().await;
    eventually(Duration::from_secs(10), "replication", || async {
        (stale_value(&reader, b"k").await.as_deref() == Some(&b"v"[..])).then_some(())
    })
    .await;
    for node in &mut nodes {
        assert!(node.stop().success(), "{}", node.log());
        assert!(
            !node.log().contains("shared-s3cret"),
            "the secret was logged"
        );
    }
}

/// With another secret, or none, on one side, neither node accepts the other: no leader
/// is elected (two voters need both), a quorum write fails, and both sides say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_or_none_cannot_vote_or_receive() {
    for secrets in [["alpha-s3cret", "beta-s3cret"], ["alpha-s3cret", ""]] {
        let dir = temp_dir();
        let mut nodes = two_voters(dir.path(), secrets);
        let client = nodes[0].client().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        for node in &nodes {
            assert_ne!(
                node.last_role().map(|(role, _)| role).as_deref(),
                Some("Leader"),
                "{secrets:?}: a leader was elected without the other's vote\n{}",
                node.log()
            );
        }
        // As the cluster status says: no leader, and no link to the other node.
        let status = client.cluster_status().await.expect("cluster status");
        assert_eq!(status.leader_id, None, "{secrets:?}: {status:?}");
        assert!(
            status
                .members
                .iter()
                .all(|member| member.link != memdi_core::wire::LinkState::Connected),
            "{secrets:?}: node 1 is linked to node 2: {status:?}"
        );
        // Failed or still waiting after 5 s: either way not acknowledged.
        let write =
            tokio::time::timeout(Duration::from_secs(5), client.set(b"k", b"v", QUORUM)).await;
        assert!(
            !matches!(write, Ok(Ok(Some(_)))),
            "{secrets:?}: a quorum write succeeded: {write:?}"
        );
        // The node with a secret refuses the other's connections...
        let first = nodes[0].log();
        assert!(
            first.contains("refused node 2 connecting"),
            "{secrets:?}: node 1 did not say it refused node 2\n{first}"
        );
        // ...and the other says why it cannot reach node 1.
        let second = nodes[1].log();
        let reason = if secrets[1].is_empty() {
            "asks for a cluster secret, and this node has none"
        } else {
            "does not share your cluster secret"
        };
        assert!(
            second.contains(reason),
            "{secrets:?}: node 2 did not say {reason:?}\n{second}"
        );
        for node in &mut nodes {
            let log = node.log();
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                assert!(!log.contains(secret), "the secret {secret} was logged");
            }
            node.kill();
        }
    }
}

/// A node started with another `--cluster-id` is refused at the handshake: no leader is
/// elected (two voters need both), as each node's cluster status shows, and both sides log
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_id_cannot_vote_or_receive() {
    let dir = temp_dir();
    let mut nodes = cluster_of(dir.path(), 2, |id| {
        vec![
            "--cluster-id".into(),
            (if id == 1 { "7" } else { "8" }).into(),
        ]
    });
    for node in &mut nodes {
        node.start();
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client().await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (node, client) in nodes.iter().zip(&clients) {
        let status = client.cluster_status().await.expect("cluster status");
        assert_ne!(
            status.role,
            memdi_core::wire::StatusRole::Leader,
            "node {} leads without the other's vote",
            node.node_id
        );
        assert_eq!(status.leader_id, None, "node {}: {status:?}", node.node_id);
        for member in &status.members {
            assert_ne!(
                member.link,
                memdi_core::wire::LinkState::Connected,
                "node {} is connected to node {} of another cluster",
                node.node_id,
                member.id.0
            );
        }
    }
    let write =
        tokio::time::timeout(Duration::from_secs(3), clients[0].set(b"k", b"v", QUORUM)).await;
    assert!(
        !matches!(write, Ok(Ok(Some(_)))),
        "a quorum write succeeded: {write:?}"
    );
    for node in &mut nodes {
        node.kill();
        let log = node.log();
        // Each side says it refused the other, and each that the other refused it.
        for line in [
            "refused a peer connecting from",
            "handshake refused: another cluster",
        ] {
            assert!(
                log.contains(line),
                "node {} does not say {line:?}:\n{log}",
                node.node_id
            );
        }
    }
}
