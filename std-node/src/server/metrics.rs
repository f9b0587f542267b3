//! `--metrics-addr`: the node's figures in Prometheus's text exposition format, served over
//! HTTP at `GET /metrics`.
//!
//! A deliberately small HTTP/1.1 server: one request per connection, a request head of at
//! most 8 KiB read within 5 s, `Connection: close`. The figures come from the node task as
//! one consistent [`NodeStatus`] per scrape (the same report INFO uses), so a scrape costs
//! the node task what an INFO does. No keys or values are ever shown, and no secret: the
//! endpoint needs no password, and is bound where only monitoring should reach it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memdi_core::cluster::Role;
use memdi_core::wire::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node_task::Input;
use crate::resp::NodeStatus;

/// The longest request head taken.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait for a turn (a scraper is one process, usually).
const MAX_CONNECTIONS: usize = 16;

/// Running totals since the server started (Prometheus counters), kept by the node task.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Client requests handed to the core (native and RESP alike).
    pub client_requests: u64,
    /// Frames from other nodes handed to the core.
    pub peer_frames: u64,
    /// Snapshots written to disk.
    pub snapshots_saved: u64,
    /// Times this node learned of a new leader (or of none), elections included.
    pub leader_changes: u64,
}

/// What the exporter knows besides the node task's report.
#[derive(Debug, Clone)]
pub struct MetricsFacts {
    /// This node.
    pub node_id: NodeId,
    /// When the server started.
    pub started: Instant,
    /// The store's key limit.
    pub max_keys: u32,
    /// The store's byte limit.
    pub max_total_bytes: u64,
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn accept_loop(
    listener: TcpListener,
    inputs: mpsc::Sender<Input>,
    facts: Arc<MetricsFacts>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("accepting a metrics scrape failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let inputs = inputs.clone();
        let facts = facts.clone();
        tasks.spawn(async move {
            if let Err(error) = serve_one(stream, &inputs, &facts).await {
                tracing::debug!("metrics scrape from {addr}: {error}");
            }
            drop(permit);
        });
    }
}

/// Answers one request on `stream`.
async fn serve_one(
    mut stream: TcpStream,
    inputs: &mpsc::Sender<Input>,
    facts: &MetricsFacts,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request too slow"))??;
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => match node_status(inputs).await {
            Some(status) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(facts, &status),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "the node is shutting down\n".into(),
            ),
        },
        Route::NotFound => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        ),
        Route::Malformed => ("400 Bad Request", "text/plain", "bad request\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head (a blank line), at most
/// [`MAX_REQUEST_HEAD_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(head)
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Malformed,
}

fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Route::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Malformed;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics,
        ("GET", _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

/// The node task's report, or `None` once it has stopped.
async fn node_status(inputs: &mpsc::Sender<Input>) -> Option<NodeStatus> {
    let (answer, status) = oneshot::channel();
    inputs.send(Input::Status { answer }).await.ok()?;
    status.await.ok()
}

/// One metric family: its help, its type, and its samples (labels, value).
fn family(text: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(text, "{name} {value}");
        } else {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    }
}

/// The exposition text for one scrape.
pub fn render(facts: &MetricsFacts, status: &NodeStatus) -> String {
    let mut text = String::new();
    let one = |value: f64| vec![(String::new(), value)];
    let role = match status.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate | Role::Candidate => "candidate",
    };
    family(
        &mut text,
        "memdi_node_info",
        "gauge",
        "This node: its id and its current role (always 1).",
        &[(
            format!("node_id=\"{}\",role=\"{role}\"", facts.node_id.0),
            1.0,
        )],
    );
    family(
        &mut text,
        "memdi_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &one(facts.started.elapsed().as_secs_f64()),
    );
    family(
        &mut text,
        "memdi_is_leader",
        "gauge",
        "1 if this node leads its cluster now, else 0.",
        &one(f64::from(u8::from(status.role == Role::Leader))),
    );
    family(
        &mut text,
        "memdi_term",
        "gauge",
        "The current election term.",
        &one(status.term as f64),
    );
    family(
        &mut text,
        "memdi_leader_id",
        "gauge",
        "The leader this node knows of (0: none).",
        &one(status.leader.map_or(0, |id| id.0) as f64),
    );
    family(
        &mut text,
        "memdi_log_commit_index",
        "gauge",
        "The last log entry known committed.",
        &one(status.commit_index as f64),
    );
    family(
        &mut text,
        "memdi_log_applied_index",
        "gauge",
        "The last log entry the store reflects.",
        &one(status.applied_index as f64),
    );
    family(
        &mut text,
        "memdi_log_entries",
        "gauge",
        "Entries in the in-memory replication log.",
        &one((status.log_last_index + 1).saturating_sub(status.log_first_index) as f64),
    );
    let lags: Vec<(String, f64)> = status
        .followers
        .iter()
        .map(|(id, matched)| {
            (
                format!("follower=\"{}\"", id.0),
                status.log_last_index.saturating_sub(*matched) as f64,
            )
        })
        .collect();
    family(
        &mut text,
        "memdi_follower_lag_entries",
        "gauge",
        "Leader only: entries each follower lacks of the leader's log.",
        &lags,
    );
    family(
        &mut text,
        "memdi_keys",
        "gauge",
        "Keys held (expired keys not yet removed included).",
        &one(f64::from(status.keys)),
    );
    family(
        &mut text,
        "memdi_keys_with_expiry",
        "gauge",
        "Keys held that have a time to live.",
        &one(status.keys_with_expiry as f64),
    );
    family(
        &mut text,
        "memdi_max_keys",
        "gauge",
        "The store's key limit (--max-keys).",
        &one(f64::from(facts.max_keys)),
    );
    family(
        &mut text,
        "memdi_store_used_bytes",
        "gauge",
        "Bytes of keys, values and record headers the store holds.",
        &one(status.used_bytes as f64),
    );
    family(
        &mut text,
        "memdi_store_max_bytes",
        "gauge",
        "The store's byte limit (--max-memory).",
        &one(facts.max_total_bytes as f64),
    );
    family(
        &mut text,
        "memdi_last_snapshot_timestamp_seconds",
        "gauge",
        "Unix time of the last snapshot written (the start time before any).",
        &one(status.last_save_unix_secs as f64),
    );
    family(
        &mut text,
        "memdi_changes_since_snapshot",
        "gauge",
        "Store changes since the last snapshot.",
        &one(status.changes_since_save as f64),
    );
    let counters = &status.counters;
    for (name, help, value) in [
        (
            "memdi_client_requests_total",
            "Client requests handled (native and Redis protocol).",
            counters.client_requests,
        ),
        (
            "memdi_peer_frames_total",
            "Frames received from other nodes.",
            counters.peer_frames,
        ),
        (
            "memdi_snapshots_saved_total",
            "Snapshots written to disk.",
            counters.snapshots_saved,
        ),
        (
            "memdi_leader_changes_total",
            "Times this node learned of a new leader or of none.",
            counters.leader_changes,
        ),
    ] {
        family(&mut text, name, "counter", help, &one(value as f64));
    }
    text
}

/// The address Prometheus would scrape, for the start-up log line.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> NodeStatus {
        NodeStatus {
            role: Role::Leader,
            term: 4,
            leader: Some(NodeId(1)),
            commit_index: 90,
            keys: 7,
            keys_with_expiry: 2,
            used_bytes: 700,
            last_save_unix_secs: 1_700_000_000,
            changes_since_save: 3,
            log_first_index: 1,
            log_last_index: 100,
            applied_index: 100,
            counters: Counters {
                client_requests: 12,
                peer_frames: 30,
                snapshots_saved: 1,
                leader_changes: 2,
            },
            followers: vec![(NodeId(2), 100), (NodeId(3), 40)],
            addresses: Default::default(),
        }
    }

    fn facts() -> MetricsFacts {
        MetricsFacts {
            node_id: NodeId(1),
            started: Instant::now(),
            max_keys: 1000,
            max_total_bytes: 1 << 20,
        }
    }

    /// Every line is a comment (`# HELP name text`, `# TYPE name kind`) or a sample
    /// (`name{labels} value` or `name value`), every sample's family was declared with a
    /// TYPE first, and names are valid Prometheus metric names.
    pub fn check_exposition(text: &str) -> Result<usize, String> {
        let valid_name = |name: &str| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        };
        let mut typed = std::collections::HashSet::new();
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split(' ');
                let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next())
                else {
                    return Err(format!("bad TYPE line: {line}"));
                };
                if !valid_name(name) || !["counter", "gauge"].contains(&kind) {
                    return Err(format!("bad TYPE line: {line}"));
                }
                typed.insert(name.to_string());
            } else if line.starts_with("# HELP ") {
                continue;
            } else {
                let (series, value) = line
                    .rsplit_once(' ')
                    .ok_or_else(|| format!("bad sample: {line}"))?;
                value
                    .parse::<f64>()
                    .map_err(|_| format!("bad value: {line}"))?;
                let name = series.split('{').next().unwrap_or_default();
                if !valid_name(name) || !typed.contains(name) {
                    return Err(format!("sample of an undeclared family: {line}"));
                }
                if series.contains('{') && !series.ends_with('}') {
                    return Err(format!("bad labels: {line}"));
                }
                samples += 1;
            }
        }
        Ok(samples)
    }

    #[test]
    fn the_text_is_valid_exposition_format_with_every_figure() {
        let text = render(&facts(), &status());
        let samples = check_exposition(&text).unwrap();
        assert!(samples >= 20, "{samples} samples\n{text}");
        for expected in [
            "memdi_node_info{node_id=\"1\",role=\"leader\"} 1",
            "memdi_is_leader 1",
            "memdi_term 4",
            "memdi_follower_lag_entries{follower=\"3\"} 60",
            "memdi_follower_lag_entries{follower=\"2\"} 0",
            "memdi_keys 7",
            "memdi_client_requests_total 12",
            "memdi_log_entries 100",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
    }

    #[test]
    fn the_checker_refuses_what_prometheus_would() {
        assert!(check_exposition("memdi_x 1\n").is_err(), "no TYPE");
        assert!(check_exposition("# TYPE memdi_x gauge\nmemdi_x one\n").is_err());
        assert!(check_exposition("# TYPE 9x gauge\n").is_err());
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route(b"hello\r\n\r\n"), Route::Malformed);
    }
}
