//! What operators watch: `--metrics-addr` (Prometheus's text format over HTTP) and
//! `--log-format json`. Part of the `cluster` test target:
//! `cargo test -p memdi-tests --release --test cluster observability`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use memdi_node::client::SetOptions;

use super::process::{free_port, Server};
use super::temp_dir;

/// Sends `request` to the metrics port and returns the status line and the body.
fn http(port: u16, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {response:?}"));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The samples of an exposition text, by series (`name` or `name{labels}`), after checking
/// that every line is a HELP or TYPE comment or a sample of a declared family with a
/// number as its value.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_string());
        } else if !line.starts_with("# HELP ") {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "sample before its TYPE: {line}");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            samples.insert(series.to_string(), value);
        }
    }
    samples
}

fn scrape(port: u16) -> std::collections::HashMap<String, f64> {
    let (status, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    samples(&body)
}

/// `/metrics` parses as Prometheus text, shows the node's role, and its counters and
/// gauges move when clients write; other paths and methods are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_requests() {
    let dir = temp_dir();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut server = Server::new(1, dir.path().join("n1"), &["--metrics-addr", &address]);
    server.start();
    let client = server.client().await;
    client
        .set(b"first", b"v", SetOptions::default())
        .await
        .unwrap();

    let before = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    assert_eq!(
        before["memdi_node_info{node_id=\"1\",role=\"leader\"}"],
        1.0
    );
    assert_eq!(before["memdi_is_leader"], 1.0);
    assert_eq!(before["memdi_keys"], 1.0);
    for i in 0..10 {
        let key = format!("k{i}");
        client
            .set(key.as_bytes(), b"v", SetOptions::default())
            .await
            .unwrap();
    }
    let after = tokio::task::spawn_blocking(move || scrape(port))
        .await
        .unwrap();
    assert_eq!(after["memdi_keys"], 11.0);
    assert!(
        after["memdi_client_requests_total"] >= before["memdi_client_requests_total"] + 10.0,
        "{before:?} -> {after:?}"
    );
    assert!(after["memdi_log_commit_index"] > before["memdi_log_commit_index"]);
    assert!(after["memdi_store_used_bytes"] > before["memdi_store_used_bytes"]);

    let (status, _) = tokio::task::spawn_blocking(move || http(port, "GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) =
        tokio::task::spawn_blocking(move || http(port, "DELETE /metrics HTTP/1.1\r\n\r\n"))
            .await
            .unwrap();
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(server.stop().success(), "{}", server.log());
}

/// `--log-format json`: every line the server writes is one JSON object with a level and a
/// message, from the start-up line to the last one of a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &["--log-format", "json"]);
    server.start();
    let client = server.client().await;
    client.set(b"k", b"v", SetOptions::default()).await.unwrap();
    assert!(server.stop().success(), "{}", server.log());
    let log = server.log();
    let mut messages = Vec::new();
    for line in log.lines().filter(|line| !line.is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(event["level"].is_string(), "no level: {line}");
        assert!(event["timestamp"].is_string(), "no timestamp: {line}");
        let message = event["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message: {line}"));
        messages.push(message.to_string());
    }
    assert!(
        messages.iter().any(|m| m.starts_with("starting node 1")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("final snapshot saved")),
        "{messages:?}"
    );
}

/// The `key:value` fields of an INFO text (section headers and blank lines skipped).
fn info_fields(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("not key:value: {line:?}"));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The native `Info` request: the leader reports itself, its term, every follower with its
/// lag, the keys it holds and counters that move with requests; a follower names the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_info_reports_roles_lag_keys_and_moving_counters() {
    let dir = temp_dir();
    let mut nodes = super::process::cluster_of(dir.path(), 3, |_| Vec::new());
    for node in &mut nodes {
        node.start();
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.client().await);
    }
    // Bounded: an election takes well under the 20 s allowed.
    let (leader, before) = super::eventually(Duration::from_secs(20), "a leader", || async {
        for (index, client) in clients.iter().enumerate() {
            let fields = info_fields(&client.info().await.ok()?);
            if fields["role"] == "leader" {
                return Some((index, fields));
            }
        }
        None
    })
    .await;
    let quorum = SetOptions {
        ack: Some(memdi_core::wire::AckLevel::Quorum),
        ..SetOptions::default()
    };
    for i in 0..10 {
        let key = format!("k{i}");
        clients[leader]
            .set(key.as_bytes(), b"v", quorum)
            .await
            .unwrap();
    }
    let after = info_fields(&clients[leader].info().await.unwrap());
    let number = |fields: &std::collections::HashMap<String, String>, key: &str| -> u64 {
        fields[key]
            .parse()
            .unwrap_or_else(|_| panic!("{key}: {:?}", fields[key]))
    };
    assert_eq!(number(&after, "keys"), 10, "{after:?}");
    assert_eq!(number(&after, "node_id"), nodes[leader].node_id);
    assert_eq!(number(&after, "followers"), 2, "{after:?}");
    for node in nodes
        .iter()
        .filter(|node| node.node_id != nodes[leader].node_id)
    {
        let line = &after[&format!("follower_{}", node.node_id)];
        assert!(line.starts_with("match_index="), "{line}");
    }
    assert!(
        number(&after, "client_requests") >= number(&before, "client_requests") + 10,
        "{before:?} -> {after:?}"
    );
    assert!(number(&after, "commit_index") >= number(&before, "commit_index") + 10);
    assert!(number(&after, "used_memory") > number(&before, "used_memory"));
    let follower = (leader + 1) % 3;
    let seen = info_fields(&clients[follower].info().await.unwrap());
    assert_eq!(seen["role"], "follower", "{seen:?}");
    assert_eq!(number(&seen, "leader_id"), nodes[leader].node_id);
    assert_eq!(number(&seen, "term"), number(&after, "term"));
}

/// Neither `/metrics` nor INFO (native or RESP) nor the log ever shows the client password
/// or the cluster secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_secret_in_metrics_info_or_logs() {
    const PASSWORD: &str = "pa55-in-metrics?";
    const SECRET: &str = "s3cret-in-metrics?";
    let dir = temp_dir();
    let port = free_port();
    let resp_port = free_port();
    let metrics_address = format!("127.0.0.1:{port}");
    let resp_address = format!("127.0.0.1:{resp_port}");
    let mut server = Server::new(
        1,
        dir.path().join("n1"),
        &[
            "--metrics-addr",
            &metrics_address,
            "--resp-addr",
            &resp_address,
            "--requirepass",
            PASSWORD,
            "--cluster-secret",
            SECRET,
        ],
    );
    server.rust_log = "debug".into();
    server.start();
    let options = memdi_node::client::ClientOptions {
        password: Some(memdi_node::secret::Password::new(PASSWORD)),
        ..memdi_node::client::ClientOptions::default()
    };
    let client = super::eventually(Duration::from_secs(15), "the node", || async {
        memdi_node::client::Client::connect_with(&server.client_addr(), options.clone())
            .await
            .ok()
    })
    .await;
    client.set(b"k", b"v", SetOptions::default()).await.unwrap();
    let info = client.info().await.unwrap();
    let (_, metrics) = tokio::task::spawn_blocking(move || {
        http(port, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
    })
    .await
    .unwrap();
    let resp_info = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", resp_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!("AUTH {PASSWORD}\r\nINFO\r\nQUIT\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap();
    assert!(resp_info.contains("role:master"), "{resp_info}");
    assert!(server.stop().success(), "{}", server.log());
    let log = server.log();
    for (what, text) in [
        ("native INFO", &info),
        ("/metrics", &metrics),
        ("RESP INFO", &resp_info),
        ("the log", &log),
    ] {
        for secret in [PASSWORD, SECRET] {
            assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        }
    }
}
