//! Hostile clients (issue 7): one `memdi-server` with its native and RESP ports on
//! loopback, a small `--max-clients` and a one-second idle timeout, is attacked on both
//! protocols by oversized frames, random bytes, half-open and slowloris connections, a
//! connection flood and a client that never reads its replies. During every attack a
//! well-behaved client (the native client library) keeps doing SET then GET.
//!
//! The test asserts correctness only: every request of the good client is answered
//! correctly, each attacker is refused or closed as the server promises, and the server
//! exits cleanly at the end. It never asserts on speed: it prints the good client's
//! latencies during each attack and the server's peak memory (run with `-- --nocapture` to
//! see them; docs/reliability.md keeps one run's figures).
//!
//! Attackers are plain blocking sockets on threads (`spawn_blocking`); every loop is bounded
//! in count, every read in time, and the server is killed if the test fails.

#[allow(dead_code)] // shared with the cluster, RESP and auth tests, which use other parts
mod process;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memdi_core::wire::{
    decode, encode_frame, ClientMessage, ClusterId, ErrorCode, Hello, ReadConsistency, Request,
    Response, Sender, ServerMessage, FRAME_HEADER_BYTES,
};
use memdi_node::client::{Client, ClientOptions, SetOptions};
use process::{free_port, Server};

/// The server's connection cap, per port.
const MAX_CLIENTS: u32 = 32;
/// The server's idle timeout (the flag counts whole seconds; one is the shortest).
const IDLE_TIMEOUT_SECS: u64 = 1;
/// The value the client that never reads asks for again and again.
const BIG_VALUE_BYTES: usize = 512 * 1024;
/// GETs of the big value that client sends: 1000 MiB of replies if all were kept.
const UNREAD_GETS: usize = 2000;
/// The length the oversized frames and bulks announce.
const ANNOUNCED_BYTES: u32 = 2_000_000_000;
/// Longest wait for the server to close a connection it should close.
const CLOSE_WAIT: Duration = Duration::from_secs(15);
/// Fewest requests the good client makes during an attack, so that its latencies mean
/// something even when the attack itself is over quickly.
const MIN_GOOD_REQUESTS: usize = 200;
/// Bounds of the good client's loop, whatever happens.
const MAX_GOOD_REQUESTS: usize = 2_000_000;
const GOOD_CLIENT_LIMIT: Duration = Duration::from_secs(120);
/// Seed of the random-bytes attack.
const RANDOM_SEED: u64 = 0x6d65_6d64_6901;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_and_a_good_client_keeps_being_served() {
    let dir = tempfile::Builder::new()
        .prefix("memdi-hostile-")
        .tempdir()
        .expect("temporary directory");
    let mut node = Node::start(dir.path());
    let good = node.good_client().await;
    let big = vec![b'b'; BIG_VALUE_BYTES];
    good.set(b"big", &big, SetOptions::default())
        .await
        .expect("storing the big value");

    let (native, resp) = (node.server.client_addr(), node.resp_addr.clone());
    under_attack("oversized frames and bulk lengths", &node, &good, {
        let (native, resp) = (native.clone(), resp.clone());
        move || oversized_frames(&native, &resp)
    })
    .await;
    let peak_kib = peak_rss_kib(node.pid());
    assert!(
        peak_kib * 1024 < u64::from(ANNOUNCED_BYTES) / 8,
        "peak RSS {peak_kib} KiB: the announced lengths were allocated"
    );
    under_attack("random bytes (200 connections)", &node, &good, {
        let (native, resp) = (native.clone(), resp.clone());
        move || random_bytes(&native, &resp, RANDOM_SEED)
    })
    .await;
    under_attack("half-open and slowloris connections", &node, &good, {
        let (native, resp) = (native.clone(), resp.clone());
        move || slowloris(&native, &resp)
    })
    .await;
    under_attack("connection flood beyond --max-clients", &node, &good, {
        let (native, resp) = (native.clone(), resp.clone());
        move || flood(&native, &resp)
    })
    .await;
    for port in [Port::Native, Port::Resp] {
        for per_write in [UNREAD_GETS, 10] {
            let addr = match port {
                Port::Native => native.clone(),
                Port::Resp => resp.clone(),
            };
            let name = format!("a {port:?} client that never reads, {per_write} GETs a write");
            under_attack(&name, &node, &good, move || {
                never_reads(port, &addr, per_write)
            })
            .await;
            let peak_kib = peak_rss_kib(node.pid());
            let unread_bytes = (UNREAD_GETS * BIG_VALUE_BYTES) as u64;
            assert!(
                peak_kib * 1024 < unread_bytes / 2,
                "{name}: peak RSS {peak_kib} KiB: the unread replies were kept"
            );
        }
    }

    assert_eq!(
        good.get(b"big").await.unwrap().expect("big is kept").value,
        big
    );
    drop(good);
    assert!(node.server.stop().success(), "{}", node.server.log());
}

/// The server under attack and its RESP address.
struct Node {
    server: Server,
    resp_addr: String,
}

impl Node {
    fn start(dir: &Path) -> Self {
        let resp_addr = format!("127.0.0.1:{}", free_port());
        let mut server = Server::new(
            1,
            dir.join("n1"),
            &[
                "--resp-addr",
                &resp_addr,
                "--max-clients",
                &MAX_CLIENTS.to_string(),
                "--idle-timeout-secs",
                &IDLE_TIMEOUT_SECS.to_string(),
                "--snapshot-every",
                "0",
            ],
        );
        server.start();
        Self { server, resp_addr }
    }

    /// The well-behaved client: one connection, kept busy, so that the one-second idle
    /// timeout never closes it between two requests.
    async fn good_client(&self) -> Client {
        drop(self.server.client().await); // waits until the server takes connections
        let options = ClientOptions {
            pool_size: 1,
            ..ClientOptions::default()
        };
        Client::connect_with(&self.server.client_addr(), options)
            .await
            .expect("connecting the good client")
    }

    fn pid(&self) -> u32 {
        self.server.pid().expect("the server is running")
    }
}

/// Runs `attack` on a thread while the good client works, then prints the good client's
/// latencies and the server's peak memory during the attack.
async fn under_attack<T: Send + 'static>(
    name: &str,
    node: &Node,
    good: &Client,
    attack: impl FnOnce() -> T + Send + 'static,
) -> T {
    let peak_is_this_attacks = reset_peak_rss(node.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let worker = tokio::spawn(good_client(good.clone(), stop.clone()));
    let outcome = tokio::task::spawn_blocking(attack).await;
    stop.store(true, Ordering::Relaxed);
    let latencies = worker
        .await
        .unwrap_or_else(|panic| panic!("the good client failed during \"{name}\": {panic}"));
    let outcome = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    print_figures(
        name,
        latencies,
        peak_rss_kib(node.pid()),
        peak_is_this_attacks,
    );
    outcome
}

/// SET then GET of a fresh value, again and again until told to stop (and at least
/// [`MIN_GOOD_REQUESTS`] times): every answer must be the right one. Returns each request's
/// latency.
async fn good_client(client: Client, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    for round in 0..MAX_GOOD_REQUESTS / 2 {
        let stopped = stop.load(Ordering::Relaxed) && latencies.len() >= MIN_GOOD_REQUESTS;
        if stopped || started.elapsed() > GOOD_CLIENT_LIMIT {
            break;
        }
        let key = format!("good-{}", round % 10_000);
        let value = format!("value of round {round}");
        let sent = Instant::now();
        client
            .set(key.as_bytes(), value.as_bytes(), SetOptions::default())
            .await
            .unwrap_or_else(|error| panic!("SET {key} in round {round}: {error}"));
        latencies.push(sent.elapsed());
        let sent = Instant::now();
        let got = client
            .get(key.as_bytes())
            .await
            .unwrap_or_else(|error| panic!("GET {key} in round {round}: {error}"));
        latencies.push(sent.elapsed());
        assert_eq!(
            got.map(|got| got.value),
            Some(value.into_bytes()),
            "GET {key} in round {round}"
        );
    }
    latencies
}

fn print_figures(name: &str, mut latencies: Vec<Duration>, peak_kib: u64, own_peak: bool) {
    latencies.sort();
    let at = |fraction: f64| {
        let index = ((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1000.0
    };
    let since = if own_peak {
        "during the attack"
    } else {
        "since start"
    };
    println!(
        "hostile: {name}: good client {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; \
         server peak RSS {since} {:.1} MiB",
        latencies.len(),
        at(0.50),
        at(0.99),
        at(1.0),
        peak_kib as f64 / 1024.0
    );
}

/// The peak resident set (VmHWM) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// Resets the peak resident set of `pid` to its current one (`echo 5 > clear_refs`), so
/// that each attack's peak is its own; false if the kernel did not allow it.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

// ---- the attacks -------------------------------------------------------------------

/// Frame headers and RESP lengths announcing 2 GB: each is refused with an error at once
/// (without waiting for, or buffering, what was announced) and the connection is closed.
fn oversized_frames(native: &str, resp: &str) {
    for round in 0..20 {
        // Before the handshake, and after it.
        for greeted in [false, true] {
            let mut stream = connect(native);
            if greeted {
                greet(&mut stream);
            }
            send(&mut stream, &ANNOUNCED_BYTES.to_le_bytes());
            let closed = read_until_closed(&mut stream)
                .unwrap_or_else(|| panic!("round {round}: an oversized frame left it open"));
            assert_eq!(
                error_codes(&closed.head),
                [ErrorCode::FrameTooLarge],
                "round {round}, greeted {greeted}"
            );
        }
        let bulk = format!("*1\r\n${ANNOUNCED_BYTES}\r\n");
        let count = format!("*{ANNOUNCED_BYTES}\r\n");
        for (request, answer) in [
            (bulk, "-ERR Protocol error: invalid bulk length\r\n"),
            (count, "-ERR Protocol error: invalid multibulk length\r\n"),
        ] {
            let mut stream = connect(resp);
            send(&mut stream, request.as_bytes());
            let closed = read_until_closed(&mut stream)
                .unwrap_or_else(|| panic!("round {round}: {request:?} left it open"));
            assert_eq!(String::from_utf8_lossy(&closed.head), answer);
        }
    }
}

/// 200 connections (8 threads of 25), each sending 1 to 8 KiB of seeded random bytes: on
/// the native port raw or after a handshake, on the RESP port raw or after a `*`. Each is
/// answered with an error and closed (by a protocol error or by the idle timeout).
fn random_bytes(native: &str, resp: &str, seed: u64) {
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let (native, resp) = (native.to_string(), resp.to_string());
            std::thread::spawn(move || {
                for index in thread * 25..(thread + 1) * 25 {
                    random_connection(&native, &resp, seed ^ index, index);
                }
            })
        })
        .collect();
    for thread in threads {
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

fn random_connection(native: &str, resp: &str, seed: u64, index: u64) {
    let mut rng = SplitMix(seed);
    let mut garbage = vec![0; 1024 + (rng.next() % (7 * 1024)) as usize];
    garbage.iter_mut().for_each(|byte| *byte = rng.next() as u8);
    match index % 4 {
        0 | 1 => {
            let mut stream = connect(native);
            if index % 4 == 1 {
                greet(&mut stream);
            }
            send(&mut stream, &garbage);
            let closed = read_until_closed(&mut stream)
                .unwrap_or_else(|| panic!("native random connection {index} left open"));
            assert!(
                !error_codes(&closed.head).is_empty(),
                "native random connection {index}: no error frame in {:?}",
                closed.head
            );
        }
        kind => {
            let mut stream = connect(resp);
            if kind == 3 {
                garbage[0] = b'*';
            } else if garbage[0] == b'*' {
                garbage[0] = b'x';
            }
            send(&mut stream, &garbage);
            let closed = read_until_closed(&mut stream)
                .unwrap_or_else(|| panic!("RESP random connection {index} left open"));
            assert_eq!(
                closed.head.first(),
                Some(&b'-'),
                "RESP random connection {index}: {:?}",
                String::from_utf8_lossy(&closed.head)
            );
        }
    }
}

/// Connections that send nothing, or part of a frame or command and then nothing. The idle
/// timeout closes every one (a native one with a `Timeout` error frame); while they hang,
/// a new RESP connection is served.
fn slowloris(native: &str, resp: &str) {
    let partial_native: [&[u8]; 3] = [b"", &[100, 0], &[100, 0, 0, 0, 1, 2, 3, 4, 5]];
    let partial_resp: [&[u8]; 3] = [b"", b"*3\r\n$3\r\nSET\r\n$1\r\nk", b"GET k"];
    let mut hanging = Vec::new();
    for copy in 0..4 {
        for (kind, bytes) in partial_native.iter().enumerate() {
            let mut stream = connect(native);
            if kind > 0 {
                greet(&mut stream);
            }
            send(&mut stream, bytes);
            hanging.push((format!("native {kind}.{copy}"), stream, Instant::now()));
        }
        for (kind, bytes) in partial_resp.iter().enumerate() {
            let mut stream = connect(resp);
            send(&mut stream, bytes);
            hanging.push((format!("RESP {kind}.{copy}"), stream, Instant::now()));
        }
    }
    let mut other = connect(resp);
    send(&mut other, b"PING\r\n");
    assert_eq!(read_some(&mut other), b"+PONG\r\n");
    drop(other);
    let mut longest = Duration::ZERO;
    for (name, mut stream, since) in hanging {
        let closed = read_until_closed(&mut stream)
            .unwrap_or_else(|| panic!("{name}: not closed by the idle timeout"));
        longest = longest.max(since.elapsed());
        if name.starts_with("native") {
            let codes = error_codes(&closed.head);
            assert_eq!(codes.last(), Some(&ErrorCode::Timeout), "{name}");
        }
    }
    println!("hostile: slowloris: the last hanging connection was closed after {longest:?}");

    // Trickling: a request that never ends, a byte every 300 ms (well inside the idle
    // timeout): closed once it has not arrived whole within the idle timeout of its first
    // byte, on both ports.
    let tricklers: [(&str, &[u8]); 2] = [
        ("native", &200u32.to_le_bytes()),
        ("RESP", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n"),
    ];
    for (name, start) in tricklers {
        // Connected now: a connection left waiting would meet the plain idle timeout.
        let mut stream = if name == "native" {
            let mut stream = connect(native);
            greet(&mut stream);
            stream
        } else {
            connect(resp)
        };
        let since = Instant::now();
        send(&mut stream, start);
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("a read timeout");
        let mut buffer = [0u8; 4096];
        let mut head = Vec::new();
        let mut closed = false;
        // Bounded: 50 bytes over 15 s at most.
        for _ in 0..50 {
            if stream.write_all(b"x").is_err() {
                closed = true;
                break;
            }
            match stream.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(count) => head.extend_from_slice(&buffer[..count]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "{name}: a trickled request was never closed");
        let after = since.elapsed();
        assert!(
            after < Duration::from_secs(8),
            "{name}: a trickled request held its connection for {after:?}"
        );
        if name == "native" {
            assert_eq!(
                error_codes(&head).last(),
                Some(&ErrorCode::Timeout),
                "{name}"
            );
        }
        println!("hostile: slowloris: a {name} request trickled a byte every 300 ms was closed after {after:?}");
    }
}

/// Opens connections on each port until four are refused: the native ones with a `Busy`
/// error frame, the RESP ones with `-ERR max number of clients reached`. Never more than
/// `--max-clients` are admitted, and once the flood is gone new connections are served.
fn flood(native: &str, resp: &str) {
    let bound = MAX_CLIENTS as usize + 16;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..bound {
        let mut stream = connect(native);
        send(&mut stream, &hello_frame());
        let first = read_frame(&mut stream).expect("no answer to the handshake");
        match decode::<ServerMessage<'_>>(&first).map(|message| message.response) {
            Ok(Response::HelloAck(_)) => admitted.push(stream),
            Ok(Response::Error(error)) => {
                assert_eq!(error.code, ErrorCode::Busy, "{}", error.detail);
                assert!(
                    error.detail.contains("too many clients"),
                    "{}",
                    error.detail
                );
                refused += 1;
                if refused == 4 {
                    break;
                }
            }
            other => panic!("unexpected answer to a handshake: {other:?}"),
        }
    }
    assert_eq!(
        refused, 4,
        "native: fewer than 4 refused in {bound} connections"
    );
    assert!(
        admitted.len() <= MAX_CLIENTS as usize,
        "{} admitted",
        admitted.len()
    );
    println!(
        "hostile: flood: native {} admitted, then refused",
        admitted.len()
    );
    let native_admitted = std::mem::take(&mut admitted);

    let mut refused = 0;
    for _ in 0..bound {
        let mut stream = connect(resp);
        send(&mut stream, b"PING\r\n");
        let answer = read_some(&mut stream);
        if answer == b"+PONG\r\n" {
            admitted.push(stream);
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "-ERR max number of clients reached\r\n"
        );
        refused += 1;
        if refused == 4 {
            break;
        }
    }
    assert_eq!(
        refused, 4,
        "RESP: fewer than 4 refused in {bound} connections"
    );
    assert!(
        admitted.len() <= MAX_CLIENTS as usize,
        "{} admitted",
        admitted.len()
    );
    println!(
        "hostile: flood: RESP {} admitted, then refused",
        admitted.len()
    );
    drop(native_admitted);
    drop(admitted);
    served_again(native, resp);
}

/// After a flood, a new connection on each port is served (closed connections free their
/// place a moment after they close: up to 50 tries).
fn served_again(native: &str, resp: &str) {
    let native_ok = (0..50).any(|_| {
        let mut stream = connect(native);
        send(&mut stream, &hello_frame());
        let first = read_frame(&mut stream).expect("no answer to the handshake");
        let accepted = matches!(
            decode::<ServerMessage<'_>>(&first).map(|message| message.response),
            Ok(Response::HelloAck(_))
        );
        if !accepted {
            std::thread::sleep(Duration::from_millis(20));
        }
        accepted
    });
    assert!(
        native_ok,
        "native connections still refused after the flood"
    );
    let resp_ok = (0..50).any(|_| {
        let mut stream = connect(resp);
        send(&mut stream, b"PING\r\n");
        let accepted = read_some(&mut stream) == b"+PONG\r\n";
        if !accepted {
            std::thread::sleep(Duration::from_millis(20));
        }
        accepted
    });
    assert!(resp_ok, "RESP connections still refused after the flood");
}

/// Which protocol an attacker speaks.
#[derive(Debug, Clone, Copy)]
enum Port {
    Native,
    Resp,
}

/// A client pipelines [`UNREAD_GETS`] GETs of the big value (1000 MiB of replies),
/// `per_write` to a write (5 ms apart), and reads nothing; the server must drop it once its
/// unwritten replies pass the output limit. Reading afterwards gives what the kernels
/// buffered, then the end. All in one write, the replies pile up within one turn of the
/// node task; in small writes, over many turns while a write to the client is blocked.
fn never_reads(port: Port, addr: &str, per_write: usize) {
    let announced = UNREAD_GETS * BIG_VALUE_BYTES;
    let mut stream = connect(addr);
    if let Port::Native = port {
        greet(&mut stream);
    }
    for first in (0..UNREAD_GETS).step_by(per_write) {
        let gets: Vec<u8> = match port {
            Port::Native => (first..first + per_write)
                .flat_map(|id| get_frame(id as u32 + 1, b"big"))
                .collect(),
            Port::Resp => b"GET big\r\n".repeat(per_write),
        };
        if stream.write_all(&gets).is_err() {
            break; // the server has given up on it
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    settle();
    assert!(
        closed_without_reading(&mut stream),
        "{port:?}: the server kept the socket of a client that does not read"
    );
    let closed = read_until_closed(&mut stream)
        .unwrap_or_else(|| panic!("{port:?}: the non-reader was not dropped"));
    assert!(
        closed.total_bytes < announced,
        "{port:?}: every reply was kept ({} bytes)",
        closed.total_bytes
    );
    println!(
        "hostile: never reads: {port:?} client, {per_write} GETs a write, got {} of \
         {announced} reply bytes before the close",
        closed.total_bytes
    );
}

/// Whether the server has closed this socket, found without reading from it: once it has,
/// a write is answered by a reset and a later write fails. (Reading would let a server
/// whose write to the client is blocked finish it, and close only then.)
fn closed_without_reading(stream: &mut TcpStream) -> bool {
    (0..40).any(|_| {
        let failed = stream.write_all(b"\0").is_err();
        std::thread::sleep(Duration::from_millis(50));
        failed
    })
}

/// Gives the server time to take a non-reader's requests and queue its replies, so that
/// reading afterwards does not let it catch up.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

// ---- raw sockets -------------------------------------------------------------------

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connecting to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("sending to the server");
}

/// One read's worth of bytes (empty at the end of the stream).
fn read_some(stream: &mut TcpStream) -> Vec<u8> {
    let mut buffer = vec![0; 4096];
    let count = stream.read(&mut buffer).expect("reading an answer");
    buffer.truncate(count);
    buffer
}

/// What a connection received until the server closed it.
struct Closed {
    /// The first 64 KiB.
    head: Vec<u8>,
    /// Every byte.
    total_bytes: usize,
}

/// Reads until the server closes the connection (end of stream or reset); `None` if it is
/// still open after [`CLOSE_WAIT`].
fn read_until_closed(stream: &mut TcpStream) -> Option<Closed> {
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut closed = Closed {
        head: Vec::new(),
        total_bytes: 0,
    };
    let mut buffer = vec![0; 64 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(closed),
            Ok(count) => {
                let keep = count.min((64 * 1024usize).saturating_sub(closed.head.len()));
                closed.head.extend_from_slice(&buffer[..keep]);
                closed.total_bytes += count;
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(closed), // reset: closed too
        }
    }
    None
}

fn hello_frame() -> Vec<u8> {
    frame(&ClientMessage {
        request_id: 1,
        request: Request::Hello(Hello::new(ClusterId(0), Sender::Client, 8 << 20)),
    })
}

fn get_frame(request_id: u32, key: &[u8]) -> Vec<u8> {
    frame(&ClientMessage {
        request_id,
        request: Request::Get {
            key,
            read: ReadConsistency::Stale,
        },
    })
}

fn frame(message: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = vec![0; 256];
    let len = encode_frame(message, &mut out).expect("a small frame");
    out.truncate(len);
    out
}

/// Sends the handshake and checks that it is accepted.
fn greet(stream: &mut TcpStream) {
    send(stream, &hello_frame());
    let answer = read_frame(stream).expect("no answer to the handshake");
    assert!(
        matches!(
            decode::<ServerMessage<'_>>(&answer).map(|message| message.response),
            Ok(Response::HelloAck(_))
        ),
        "handshake refused: {answer:?}"
    );
}

/// Reads one frame's payload; `None` at the end of the stream.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header).ok()?;
    let mut payload = vec![0; u32::from_le_bytes(header) as usize];
    stream.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// The error codes of the whole frames in `bytes`, in order (other frames skipped).
fn error_codes(mut bytes: &[u8]) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    while let Some(header) = bytes.get(..FRAME_HEADER_BYTES) {
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
            break;
        };
        if let Ok(ServerMessage {
            response: Response::Error(error),
            ..
        }) = decode::<ServerMessage<'_>>(payload)
        {
            codes.push(error.code);
        }
        bytes = &bytes[FRAME_HEADER_BYTES + len..];
    }
    codes
}

/// SplitMix64: a small seeded generator, so that a failing run replays exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
