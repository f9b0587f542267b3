//! The Redis front (`--resp-addr`) driven by the real Redis tools: `redis-cli` (Debian's
//! redis-tools), redis-py (PyPI) and `redis-benchmark`, against one node and through a
//! follower of a three-node cluster; plus raw-socket checks of pipelining, protocol errors
//! and the output buffer limit.
//!
//! Run: `cargo test -p memdi-tests --release --test resp`. `scripts/setup.sh` installs the
//! tools; a test whose tool is missing says so loudly and passes, except under CI (`CI` set),
//! where a missing tool fails the test. Loopback only; every process is killed when its
//! test ends; every wait is bounded.

#[allow(dead_code)] // shared with the cluster test, which uses more of it
mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use process::{free_port, have, Server};

const MAX_KEYS: &str = "200";

fn have_redis_cli() -> bool {
    have("redis-cli", &["--version"])
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("memdi-resp-test")
        .tempdir()
        .expect("temporary directory")
}

/// A node with a RESP port and a small store (so OOM is reachable).
struct RespNode {
    server: Server,
    resp_port: u16,
}

impl RespNode {
    fn new(node_id: u64, data_dir: &Path, extra: &[String]) -> Self {
        let resp_port = free_port();
        let mut args = vec![
            "--resp-addr".to_string(),
            format!("127.0.0.1:{resp_port}"),
            "--max-keys".into(),
            MAX_KEYS.into(),
        ];
        if !extra.iter().any(|arg| arg == "--max-memory") {
            args.extend(["--max-memory".into(), "200000".into()]);
        }
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self {
            server: Server::new(node_id, data_dir.join(format!("n{node_id}")), &args),
            resp_port,
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        cli(self.resp_port, args)
    }

    /// Waits (bounded) until the node answers PING on its RESP port.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "RESP port never answered\n{}",
                self.server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// With `--persistence none`, SAVE and BGSAVE answer an error that says why, and a restart
/// starts empty.
#[test]
fn without_persistence_save_is_refused_and_a_restart_starts_empty() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let mut node = RespNode::new(1, dir.path(), &["--persistence".into(), "none".into()]);
    node.server.start();
    node.wait_ready();
    assert_eq!(node.cli(&["SET", "a", "1"]), "OK");
    for save in ["SAVE", "BGSAVE"] {
        assert_eq!(
            node.cli(&[save]),
            "ERR snapshot not taken: this node keeps nothing on disk (--persistence none)"
        );
    }
    assert!(node.server.stop().success(), "{}", node.server.log());
    node.server.start();
    node.wait_ready();
    assert_eq!(node.cli(&["GET", "a"]), "");
    assert_eq!(node.cli(&["DBSIZE"]), "0");
    assert!(node.server.stop().success(), "{}", node.server.log());
}

/// Runs redis-cli against `port` (raw output, as when piped) and returns its trimmed stdout.
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("timeout")
        .arg("20")
        .arg("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Every command of the front through redis-cli, with Redis's replies and error texts.
#[test]
fn redis_cli_gets_redis_answers_from_one_node() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let mut node = RespNode::new(1, dir.path(), &[]);
    node.server.start();
    node.wait_ready();
    let cases: &[(&[&str], &str)] = &[
        (&["SET", "a", "1"], "OK"),
        (&["GET", "a"], "1"),
        (&["INCR", "a"], "2"),
        (&["INCRBY", "a", "10"], "12"),
        (&["DECR", "a"], "11"),
        (&["DECRBY", "a", "5"], "6"),
        (&["SET", "a", "x", "NX"], ""),
        (&["SET", "a", "y", "XX", "GET"], "6"),
        (&["SET", "a", "z", "EX", "100"], "OK"),
        (&["TTL", "a"], "100"),
        (&["SET", "a", "w", "KEEPTTL"], "OK"),
        (&["TTL", "a"], "100"),
        (&["PERSIST", "a"], "1"),
        (&["TTL", "a"], "-1"),
        (&["PEXPIRE", "a", "50000"], "1"),
        (&["EXPIRE", "a", "100"], "1"),
        (&["TTL", "nope"], "-2"),
        (&["PTTL", "nope"], "-2"),
        (&["APPEND", "a", "zz"], "3"),
        (&["STRLEN", "a"], "3"),
        (&["GETDEL", "a"], "wzz"),
        (&["EXISTS", "a"], "0"),
        (&["SETNX", "n", "1"], "1"),
        (&["SETNX", "n", "2"], "0"),
        (&["SETEX", "e", "10", "v"], "OK"),
        (&["MSET", "m1", "a", "m2", "b"], "OK"),
        (&["MGET", "m1", "nope", "m2"], "a\n\nb"),
        (&["EXISTS", "m1", "m2", "nope"], "2"),
        (&["DEL", "m1", "nope"], "1"),
        (&["UNLINK", "m2"], "1"),
        (&["TYPE", "n"], "string"),
        (&["TYPE", "nope"], "none"),
        (&["DBSIZE"], "2"),
        (&["KEYS", "n*"], "n"),
        (&["SCAN", "0", "MATCH", "e", "COUNT", "100"], "0\ne"),
        (&["ECHO", "hello"], "hello"),
        (&["PING", "msg"], "msg"),
        (&["SELECT", "0"], "OK"),
        (&["SELECT", "1"], "ERR DB index is out of range"),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (
            &["FOO", "bar", "baz"],
            "ERR unknown command 'FOO', with args beginning with: 'bar' 'baz'",
        ),
        (&["INCRBY", "n", "x"], "ERR value is not an integer or out of range"),
        (&["SET", "k", "v", "EX", "0"], "ERR invalid expire time in 'set' command"),
        (&["SET", "k", "v", "BOGUS"], "ERR syntax error"),
        (&["SCAN", "x"], "ERR invalid cursor"),
        (
            &["AUTH", "secret"],
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        (&["HELLO", "3"], "NOPROTO unsupported protocol version"),
        (&["CONFIG", "GET", "maxmemory"], "maxmemory\n200000"),
        (&["CONFIG", "SET", "x", "y"], "ERR unknown subcommand 'SET'. Try CONFIG HELP."),
        (&["CLIENT", "GETNAME"], ""),
        (&["CLIENT", "NOPE"], "ERR unknown subcommand 'NOPE'. Try CLIENT HELP."),
        (&["WAIT", "0", "100"], "0"),
        (&["SAVE"], "OK"),
        (&["BGSAVE"], "Background saving started"),
        (&["ROLE"], "master\n"),
        (&["FLUSHDB"], "OK"),
        (&["DBSIZE"], "0"),
        (&["RANDOMKEY"], ""),
        (&["FLUSHALL"], "OK"),
    ];
    let mut failures = Vec::new();
    for (args, expected) in cases {
        let got = node.cli(args);
        let matches = if expected.ends_with('\n') {
            got.starts_with(expected)
        } else {
            got == *expected
        };
        if !matches {
            failures.push(format!("{args:?}: got {got:?}, want {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let hello = node.cli(&["HELLO", "2"]);
    assert!(hello.starts_with("server\nredis\nversion\n7"), "{hello}");
    let info = node.cli(&["INFO"]);
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# Keyspace",
    ] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("role:master"), "{info}");
    assert!(node.cli(&["COMMAND", "COUNT"]).parse::<u32>().unwrap() > 40);
    let lastsave: u64 = node.cli(&["LASTSAVE"]).parse().unwrap();
    assert!(lastsave > 1_600_000_000, "LASTSAVE after SAVE: {lastsave}");
    // CLIENT SETNAME lives as long as its connection: one redis-cli session.
    let session = Command::new("timeout")
        .args(["20", "redis-cli", "-p", &node.resp_port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"CLIENT SETNAME tester\nCLIENT GETNAME\nQUIT\n")?;
            child.wait_with_output()
        })
        .expect("redis-cli session");
    // redis-cli prints nothing for QUIT.
    assert_eq!(String::from_utf8_lossy(&session.stdout), "OK\ntester\n");
    node.server.stop();
}

fn run_redis_py(port: u16, role: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/redis_py_check.py");
    let output = Command::new("timeout")
        .arg("120")
        .arg("python3")
        .arg(&script)
        .args([&port.to_string(), role, MAX_KEYS])
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "redis-py checks failed against {role} on port {port}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn have_redis_py() -> bool {
    have("python3", &["-c", "import redis"])
}

/// redis-py's view of every command, on a single node and through a follower, whose
/// writes the leader executes; INFO says which is which.
#[test]
fn redis_py_works_on_one_node_and_through_a_follower() {
    if !have_redis_py() || !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let mut single = RespNode::new(1, &dir.path().join("single"), &[]);
    single.server.start();
    single.wait_ready();
    run_redis_py(single.resp_port, "master");
    single.server.stop();

    let mut nodes: Vec<RespNode> = Vec::new();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let spec = peer_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    for (i, &peer_port) in peer_ports.iter().enumerate() {
        let mut node = RespNode::new(
            i as u64 + 1,
            &dir.path().join("cluster"),
            &["--cluster".into(), spec.clone()],
        );
        node.server.peer_port = peer_port;
        node.server.start();
        nodes.push(node);
    }
    // A leader is elected: one node's INFO says master, the others slave.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let roles: Vec<String> = nodes
            .iter()
            .map(|node| node.cli(&["INFO", "replication"]))
            .collect();
        let masters: Vec<usize> = (0..3)
            .filter(|&i| roles[i].contains("role:master"))
            .collect();
        let led = masters.len() == 1
            && roles
                .iter()
                .filter(|r| r.contains("master_link_status:up"))
                .count()
                == 2;
        if led {
            break masters[0];
        }
        assert!(Instant::now() < deadline, "no leader in 20 s: {roles:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let follower = &nodes[(leader + 1) % 3];
    let info = follower.cli(&["INFO", "replication"]);
    assert!(info.contains("role:slave"), "{info}");
    assert!(
        info.contains(&format!("master_port:{}", peer_ports[leader])),
        "the follower names the leader (its peer address): {info}"
    );
    run_redis_py(follower.resp_port, "slave");
    // A write through a follower is on the leader too.
    assert_eq!(follower.cli(&["SET", "via-follower", "1"]), "OK");
    assert_eq!(nodes[leader].cli(&["GET", "via-follower"]), "1");
    assert_eq!(nodes[leader].cli(&["ROLE"]).lines().next(), Some("master"));
    assert_eq!(follower.cli(&["ROLE"]).lines().next(), Some("slave"));
    assert_eq!(follower.cli(&["WAIT", "1", "1000"]), "1");
    for node in &mut nodes {
        node.server.stop();
    }
}

/// redis-benchmark's standard tests, MSET included, run to completion.
#[test]
fn redis_benchmark_runs_to_completion() {
    if !have("redis-benchmark", &["--version"]) || !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let mut node = RespNode::new(1, dir.path(), &[]);
    node.server.start();
    node.wait_ready();
    let output = Command::new("timeout")
        .arg("300")
        .arg("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &node.resp_port.to_string()])
        .args(["-t", "ping,set,get,incr,mset", "-q", "-n", "2000"])
        .output()
        .expect("running redis-benchmark");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for test in [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "MSET (10 keys)",
    ] {
        let done = stdout.split(['\r', '\n']).any(|line| {
            line.trim_start().starts_with(&format!("{test}: "))
                && line.contains("requests per second")
        });
        assert!(done, "{test} did not finish:\n{stdout}");
    }
    assert!(stdout.contains("MSET"), "{stdout}");
    assert_eq!(
        node.cli(&["EXISTS", "key:__rand_int__"]),
        "1",
        "SET wrote its key"
    );
    node.server.stop();
}

/// Reads from `stream` until `expected` bytes came or 20 s pass.
fn read_exactly(stream: &mut TcpStream, expected: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = vec![0; expected];
    stream.read_exact(&mut got).expect("reading replies");
    got
}

/// Pipelined commands are answered in order; a protocol error is answered as Redis words
/// it and closes the connection; a client that never reads is disconnected once its
/// unread replies pass the limit, and the node keeps serving others.
#[test]
fn pipelining_protocol_errors_and_the_output_limit() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let mut node = RespNode::new(
        1,
        dir.path(),
        &[
            "--max-value-bytes".into(),
            "1048576".into(),
            "--max-memory".into(),
            "8000000".into(),
            // Set below the 64 MiB default, to show the flag is obeyed.
            "--client-output-limit-bytes".into(),
            "8388608".into(),
        ],
    );
    node.server.start();
    node.wait_ready();
    let addr = format!("127.0.0.1:{}", node.resp_port);

    // 1,000 pipelined INCRs in one write, inline and multibulk mixed: answers 1..=1000.
    let mut stream = TcpStream::connect(&addr).unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=1000 {
        if i % 2 == 0 {
            requests.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n");
        } else {
            requests.extend_from_slice(b"INCR counter\r\n");
        }
        expected.extend_from_slice(format!(":{i}\r\n").as_bytes());
    }
    stream.write_all(&requests).unwrap();
    assert_eq!(read_exactly(&mut stream, expected.len()), expected);

    // A bulk longer than the largest value is refused before it is read, then closed.
    stream
        .write_all(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n")
        .unwrap();
    let expected = b"-ERR Protocol error: invalid bulk length\r\n";
    assert_eq!(read_exactly(&mut stream, expected.len()), expected);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "the connection closed after the error: {rest:?}"
    );

    // A 1 MiB value, asked for 100 times by a client that never reads: 100 MiB of replies,
    // more than the 8 MiB limit set above, so the node drops the connection.
    let value = vec![b'v'; 1 << 20];
    let mut setter = TcpStream::connect(&addr).unwrap();
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    setter.write_all(&set).unwrap();
    assert_eq!(read_exactly(&mut setter, 5), b"+OK\r\n");
    let mut hog = TcpStream::connect(&addr).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let gets: Vec<u8> = b"GET big\r\n".repeat(100);
    hog.write_all(&gets).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = node.server.log();
        if log.contains("more than 8388608 reply bytes unread; disconnecting") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the non-reading client was not disconnected:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Draining what the kernel buffered ends in EOF: the server closed the connection.
    hog.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut drained = 0usize;
    let mut buffer = vec![0; 1 << 16];
    loop {
        match hog.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => drained += count,
            Err(error) => panic!("reading the dropped connection: {error} after {drained} bytes"),
        }
    }
    assert!(
        drained < 100 << 20,
        "not every reply was sent: {drained} bytes"
    );
    assert_eq!(
        node.cli(&["STRLEN", "big"]),
        "1048576",
        "other clients are still served"
    );
    node.server.stop();
}

/// Reads one RESP2 reply (simple, error, integer or bulk) as its text: `+OK`, `-ERR ...`,
/// `:3`, `$v` (a bulk's content) or `$nil`.
fn read_reply(reader: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("reading a reply");
    let line = line.trim_end_matches("\r\n").to_string();
    match line.as_bytes().first() {
        Some(b'$') if line == "$-1" => "$nil".into(),
        Some(b'$') => {
            let len: usize = line[1..].parse().expect("bulk length");
            let mut bulk = vec![0; len + 2];
            reader.read_exact(&mut bulk).expect("reading a bulk");
            format!("${}", String::from_utf8_lossy(&bulk[..len]))
        }
        Some(b'+' | b'-' | b':') => line,
        _ => panic!("unexpected reply line {line:?}"),
    }
}

/// Pipelines `rounds` rounds of commands that take every path (answered by the RESP task
/// itself, reads and quorum writes executed or forwarded, errors from the front and from
/// the core) in one write, and checks that every answer comes in command order.
fn pipeline_keeps_answer_order(port: u16, tag: &str, rounds: usize) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    let mut values = std::collections::HashMap::new();
    let mut counter = 0;
    for i in 0..rounds {
        let key = format!("{tag}-k{}", i % 7);
        let value = format!("v{i}");
        requests.extend_from_slice(format!("SET {key} {value}\r\n").as_bytes());
        expected.push("+OK".to_string());
        values.insert(key.clone(), value.clone());
        requests.extend_from_slice(format!("GET {key}\r\n").as_bytes());
        expected.push(format!("${value}"));
        requests.extend_from_slice(format!("INCR {tag}-counter\r\n").as_bytes());
        counter += 1;
        expected.push(format!(":{counter}"));
        // An increment of a non-integer: the core's error, answered as a confirmed read.
        requests.extend_from_slice(format!("INCR {key}\r\n").as_bytes());
        expected.push("-ERR value is not an integer or out of range".into());
        requests.extend_from_slice(format!("GET {tag}-absent\r\n").as_bytes());
        expected.push("$nil".into());
        if i % 5 == 0 {
            // Answered by the RESP task without the core.
            requests.extend_from_slice(b"PING\r\n");
            expected.push("+PONG".into());
            requests.extend_from_slice(b"NOSUCHCOMMAND x\r\n");
            expected.push(
                "-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: 'x' ".into(),
            );
        }
        if i % 11 == 0 {
            requests.extend_from_slice(format!("DEL {tag}-k{}\r\n", (i + 3) % 7).as_bytes());
            let deleted = values.remove(&format!("{tag}-k{}", (i + 3) % 7)).is_some();
            expected.push(format!(":{}", u8::from(deleted)));
        }
    }
    stream.write_all(&requests).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    for (n, want) in expected.iter().enumerate() {
        let got = read_reply(&mut reader);
        assert_eq!(&got, want, "{tag}: reply {n} of {}", expected.len());
    }
}

/// Pipelines mixing reads, quorum writes and errors are answered in command order, on the
/// leader and through a follower (whose requests the leader executes), while the node task
/// takes each read's commands as one batch and answers with one message per turn.
#[test]
fn pipelined_reads_quorum_writes_and_errors_keep_their_order() {
    if !have_redis_cli() {
        return;
    }
    let dir = temp_dir();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let spec = peer_ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<RespNode> = Vec::new();
    for (i, &peer_port) in peer_ports.iter().enumerate() {
        let mut node = RespNode::new(
            i as u64 + 1,
            dir.path(),
            &[
                "--cluster".into(),
                spec.clone(),
                "--ack".into(),
                "quorum".into(),
                "--fsync".into(),
                "always".into(),
            ],
        );
        node.server.peer_port = peer_port;
        node.server.start();
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let masters: Vec<usize> = (0..3)
            .filter(|&i| nodes[i].cli(&["ROLE"]).lines().next() == Some("master"))
            .collect();
        let linked = nodes
            .iter()
            .filter(|node| {
                node.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            })
            .count();
        if masters.len() == 1 && linked == 2 {
            break masters[0];
        }
        assert!(Instant::now() < deadline, "no leader in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let follower = (leader + 1) % 3;
    // Both at once: the node tasks interleave the two connections' batches.
    let leader_port = nodes[leader].resp_port;
    let follower_port = nodes[follower].resp_port;
    let on_leader = std::thread::spawn(move || pipeline_keeps_answer_order(leader_port, "l", 300));
    pipeline_keeps_answer_order(follower_port, "f", 300);
    on_leader.join().expect("the leader's pipeline");
    for node in &mut nodes {
        node.server.stop();
    }
}
