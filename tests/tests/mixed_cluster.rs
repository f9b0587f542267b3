//! A mixed cluster: the embedded node (memdi-embedded's host binary, on a TAP device, with
//! embassy-net's TCP/IP stack) and two memdi-server processes, as three voters.
//!
//! Run: `cargo test -p memdi-tests --release --test mixed_cluster` (as root: it creates a
//! network namespace). Everything happens inside a namespace the test creates, with a TAP
//! device in it (10.77.0.1 for the servers, 10.77.0.2 for the embedded node); deleting the
//! namespace at the end removes the device, and every process is killed when the test ends,
//! passed or failed. Nodes are driven with the `memdi` CLI run inside the namespace, each
//! call bounded to 10 s; every wait is bounded.
//!
//! What it shows, in order:
//! 1. The embedded node, started after the servers took more writes than their logs hold,
//!    is brought up to date by a snapshot.
//! 2. A write through the embedded node is readable on both servers, and the reverse; its
//!    client password (`--requirepass`) is asked for and checked; an answer larger than
//!    its frames is refused with an error; an
//!    oversized frame gets an error frame and random bytes a closed connection, and the node
//!    goes on serving.
//! 3. After `kill -9` of the server leader, the embedded node and the other server elect a
//!    leader and go on taking `quorum` writes, through either of them.
//! 4. After `kill -9` of the embedded node (which held half of every `quorum` write of
//!    step 3) and the restart of both, no `quorum`-acknowledged write is lost, and the
//!    embedded node holds every key again.

#[allow(dead_code)] // shared with the other multi-process tests, which use other parts of it
mod process;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_IP: &str = "10.77.0.1";
const EMBEDDED_IP: &str = "10.77.0.2";
const TAP: &str = "memditap0";
const EMBEDDED_ID: u64 = 3;
/// The embedded node's client password (`--requirepass`); the servers have none.
const EMBEDDED_PASSWORD: &str = "board-secret";

/// A network namespace with a TAP device, deleted (with the device) when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    /// A namespace named after this process and `test` (tests run in parallel).
    fn create(test: &str) -> Self {
        let name = format!("memdi-{test}-{}", std::process::id());
        let namespace = Namespace { name };
        namespace.ip(&["netns", "add", &namespace.name]);
        namespace.run_in(&["ip", "link", "set", "lo", "up"]);
        namespace.run_in(&["ip", "tuntap", "add", "name", TAP, "mode", "tap"]);
        namespace.run_in(&["ip", "link", "set", TAP, "up"]);
        let server_net = format!("{SERVER_IP}/24");
        namespace.run_in(&["ip", "addr", "add", &server_net, "dev", TAP]);
        namespace
    }

    fn ip(&self, args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("running ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    fn run_in(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(command);
        self.ip(&args);
    }

    /// `program args...` inside the namespace.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A node process inside the namespace, killed when dropped.
struct Node {
    id: u64,
    client_addr: String,
    args: Vec<String>,
    binary: &'static Path,
    log_path: PathBuf,
    child: Option<Child>,
    /// The client password it was started with (`--requirepass`), if any.
    password: Option<String>,
}

impl Node {
    fn server(id: u64, dir: &Path, cluster: &str) -> Self {
        let client_addr = format!("{SERVER_IP}:{}", 7377 + 2 * id);
        let peer_addr = format!("{SERVER_IP}:{}", 7378 + 2 * id);
        let args = [
            "--node-id",
            &id.to_string(),
            "--client-addr",
            &client_addr,
            "--peer-addr",
            &peer_addr,
            "--cluster",
            cluster,
            "--protected-mode",
            "no",
            "--data-dir",
            &dir.join(format!("n{id}")).display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        Node {
            id,
            client_addr,
            args,
            binary: process::server_binary(),
            log_path: dir.join(format!("n{id}.log")),
            child: None,
            password: None,
        }
    }

    fn embedded(dir: &Path, cluster: &str) -> Self {
        let args = [
            "--tap",
            TAP,
            "--address",
            &format!("{EMBEDDED_IP}/24"),
            "--node-id",
            &EMBEDDED_ID.to_string(),
            "--cluster",
            cluster,
            "--requirepass",
            EMBEDDED_PASSWORD,
        ]
        .map(String::from)
        .to_vec();
        Node {
            password: Some(EMBEDDED_PASSWORD.into()),
            id: EMBEDDED_ID,
            client_addr: format!("{EMBEDDED_IP}:7379"),
            args,
            binary: process::embedded_binary(),
            log_path: dir.join("embedded.log"),
            child: None,
        }
    }

    fn start(&mut self, namespace: &Namespace) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening a node log");
        let child = namespace
            .command(self.binary)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting a node");
        self.child = Some(child);
    }

    /// SIGKILL (`ip netns exec` runs the node in its own process, so this is the node).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `memdi` CLI in the namespace, bounded to 10 s: exit code and stdout.
fn cli(namespace: &Namespace, args: &[&str]) -> (i32, String) {
    cli_within(namespace, args, Duration::from_secs(10))
}

/// Runs the `memdi` CLI in the namespace, bounded to `limit`: exit code and stdout.
fn cli_within(namespace: &Namespace, args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = namespace
        .command(process::cli_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running memdi");
    let Some(status) = process::wait_bounded(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        return (-1, String::new());
    };
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    let code = status.code().unwrap_or(-1);
    if code != 0 {
        // What went wrong, for the assertions (a successful call's stdout stays clean).
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut out);
        }
    }
    (code, out.trim().to_string())
}

/// Runs `memdi ARGS --addr NODE [--password ...]` in the namespace, bounded to 10 s (see
/// `cli_when_a_slot_is_free`).
fn node_cli(namespace: &Namespace, node: &Node, args: &[&str]) -> (i32, String) {
    let mut args = args.to_vec();
    args.extend(["--addr", &node.client_addr]);
    if let Some(password) = &node.password {
        args.extend(["--password", password]);
    }
    cli_when_a_slot_is_free(namespace, &args)
}

/// Runs `memdi ARGS` in the namespace, bounded to 10 s. A refused connection is tried again
/// for up to 3 s: the embedded node serves two clients at once, and a slot frees up moments
/// after its client left. (Without this, a check that expects a refusal of the password
/// met a refused connection instead, in 1 of 10 runs.)
fn cli_when_a_slot_is_free(namespace: &Namespace, args: &[&str]) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (code, out) = cli(namespace, args);
        if !(code == 4 && out.contains("Connection refused")) || Instant::now() > deadline {
            return (code, out);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quorum_set(namespace: &Namespace, node: &Node, key: &str, value: &str) -> bool {
    node_cli(namespace, node, &["set", "--ack", "quorum", key, value]).0 == 0
}

/// Retries a `quorum` write for up to 10 s (an election may be under way); panics if it
/// never succeeds.
fn quorum_set_eventually(namespace: &Namespace, node: &Node, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !quorum_set(namespace, node, key, value) {
        assert!(
            Instant::now() < deadline,
            "a quorum write of {key} through node {} failed for 10 s\n{}",
            node.id,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(namespace: &Namespace, node: &Node, key: &str, stale: bool) -> Option<String> {
    let args: &[&str] = if stale {
        &["get", "--stale", key]
    } else {
        &["get", key]
    };
    let (code, out) = node_cli(namespace, node, args);
    (code == 0).then_some(out)
}

/// The leader `node` reports, if it answers and knows one.
fn leader_seen_by(namespace: &Namespace, node: &Node) -> Option<u64> {
    let (code, out) = node_cli(namespace, node, &["cluster", "status", "--json"]);
    if code != 0 {
        return None;
    }
    let status: serde_json::Value = serde_json::from_str(&out).ok()?;
    status["leader_id"].as_u64()
}

/// Waits (up to 20 s) until every node in `nodes` names the same leader; returns it.
fn agreed_leader(namespace: &Namespace, nodes: &[&Node]) -> u64 {
    agreed_leader_other_than(namespace, nodes, None)
}

/// Waits (up to 20 s) until every node in `nodes` names the same leader, not `gone`.
fn agreed_leader_other_than(namespace: &Namespace, nodes: &[&Node], gone: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<Option<u64>> = nodes
            .iter()
            .map(|node| leader_seen_by(namespace, node))
            .collect();
        if let Some(Some(leader)) = seen.first() {
            if Some(*leader) != gone && seen.iter().all(|other| *other == Some(*leader)) {
                return *leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within 20 s: {seen:?}\n{}",
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn logs(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|node| format!("--- node {} ---\n{}", node.id, node.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (up to 20 s) until `node`'s own store (stale reads) holds every key of `written`.
fn wait_for_keys(namespace: &Namespace, node: &Node, written: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<&String> = written
            .iter()
            .filter(|(key, value)| get(namespace, node, key, true).as_ref() != Some(value))
            .map(|(key, _)| key)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} lacks {} keys after 20 s, e.g. {:?}\n{}",
            node.id,
            missing.len(),
            missing.first(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends an oversized frame header and then random bytes to `addr` from inside the
/// namespace (python3, bounded to 30 s); exit code 0 and "ok" if the node answered the first
/// with a whole frame before closing and closed the second.
fn hostile_client(namespace: &Namespace, addr: &str) -> (i32, String) {
    const SCRIPT: &str = r#"
import os, socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def connect():
    # The node serves two clients at once; a slot frees up moments after its client left.
    for _ in range(50):
        try:
            return socket.create_connection((host, int(port)), timeout=10)
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise SystemExit("connection refused for 5 s")
def drain(s):
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return data, True
            data += chunk
    except (ConnectionResetError, socket.timeout):
        return data, False
s = connect()
s.sendall(struct.pack("<I", 1 << 20) + b"x" * 64)
data, closed = drain(s)
assert closed, "still open after an oversized frame"
assert len(data) > 4, "no error frame before the close"
assert struct.unpack("<I", data[:4])[0] == len(data) - 4, "a torn error frame"
s = connect()
s.sendall(os.urandom(300))
drain(s)
print("ok")
"#;
    let mut child = namespace
        .command(Path::new("python3"))
        .args(["-c", SCRIPT, addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python3");
    let Some(status) = process::wait_bounded(&mut child, Duration::from_secs(30)) else {
        let _ = child.kill();
        let _ = child.wait();
        return (-1, "timed out".into());
    };
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    let code = status.code().unwrap_or(-1);
    (
        if out.trim() == "ok" {
            code
        } else {
            code.max(1)
        },
        out,
    )
}

/// Whether this machine lets the test build its namespace; if not, says so loudly, and
/// fails under CI (`CI` set), which runs as root.
fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    let tun = Path::new("/dev/net/tun").exists();
    let ip = process::have("ip", &["-V"]);
    let able = root && tun && ip;
    if !able {
        let message = format!(
            "\n!!!!!!!! SKIPPED: the mixed-cluster test needs root, /dev/net/tun and iproute2 (root {root}, tun {tun}, ip {ip}) !!!!!!!!\n"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
    }
    able
}

/// The set-up both tests share, nothing started: a temporary directory, the namespace
/// (named after `test`), two servers and the embedded node as the three voters. `None` if
/// this machine cannot run it (see `can_run`). The binaries are built first, before the
/// clock of any wait starts.
fn three_voters(test: &str) -> Option<(tempfile::TempDir, Namespace, [Node; 2], Node)> {
    if !can_run() {
        return None;
    }
    process::server_binary();
    process::cli_binary();
    process::embedded_binary();
    let dir = tempfile::Builder::new()
        .prefix(&format!("memdi-{test}-"))
        .tempdir()
        .expect("temporary directory");
    let namespace = Namespace::create(test);
    let cluster = format!("1={SERVER_IP}:7380,2={SERVER_IP}:7382,{EMBEDDED_ID}={EMBEDDED_IP}:7380");
    let servers = [
        Node::server(1, dir.path(), &cluster),
        Node::server(2, dir.path(), &cluster),
    ];
    let embedded = Node::embedded(dir.path(), &cluster);
    Some((dir, namespace, servers, embedded))
}

#[test]
fn an_embedded_node_is_a_full_member_of_a_cluster_of_servers() {
    let Some((_dir, namespace, mut servers, mut embedded)) = three_voters("mixed") else {
        return;
    };
    let mut written: BTreeMap<String, String> = BTreeMap::new();

    // 1. The servers start alone (two of three voters: a majority), take writes and
    //    compact their logs; the embedded node, started late, needs a snapshot.
    for server in &mut servers {
        server.start(&namespace);
    }
    agreed_leader(&namespace, &[&servers[0], &servers[1]]);
    for i in 0..40 {
        let (key, value) = (format!("early-{i}"), format!("value-{i}"));
        quorum_set_eventually(&namespace, &servers[i % 2], &key, &value);
        written.insert(key, value);
    }
    // More writes than the servers' logs hold (65,536 entries), so that the early ones are
    // gone from every log by the time the embedded node starts.
    let bench = [
        "bench",
        "--addr",
        &servers[0].client_addr,
        "--requests",
        "70000",
        "--keyspace",
        "100",
        "--clients",
        "4",
        "--pipeline",
        "16",
        "--csv",
    ];
    let (code, out) = cli_within(&namespace, &bench, Duration::from_secs(120));
    assert_eq!(code, 0, "memdi bench failed: {out}");
    assert!(out.contains(",0,"), "memdi bench had errors: {out}");
    embedded.start(&namespace);
    wait_for_keys(&namespace, &embedded, &written);
    assert!(
        embedded.log().contains("installed a snapshot"),
        "the late node caught up without a snapshot\n{}",
        embedded.log()
    );
    let leader = agreed_leader(&namespace, &[&servers[0], &servers[1], &embedded]);
    assert_ne!(
        leader, EMBEDDED_ID,
        "a late follower took over a healthy leader"
    );

    // 2. Writes through the embedded node reach the servers, and the reverse.
    quorum_set_eventually(&namespace, &embedded, "from-embedded", "e");
    written.insert("from-embedded".into(), "e".into());
    quorum_set_eventually(&namespace, &servers[1], "from-server", "s");
    written.insert("from-server".into(), "s".into());
    for server in &servers {
        assert_eq!(
            get(&namespace, server, "from-embedded", false).as_deref(),
            Some("e")
        );
        wait_for_keys(&namespace, server, &written);
    }
    assert_eq!(
        get(&namespace, &embedded, "from-server", false).as_deref(),
        Some("s")
    );
    wait_for_keys(&namespace, &embedded, &written);

    // The native `Info` request, answered by the board's shell: its id, role and leader.
    let (code, info) = node_cli(&namespace, &embedded, &["info"]);
    assert_eq!(code, 0, "memdi info on the embedded node failed: {info}");
    for line in [
        format!("node_id:{EMBEDDED_ID}"),
        "node_kind:embedded".into(),
        "role:follower".into(),
        format!("leader_id:{leader}"),
    ] {
        assert!(info.lines().any(|l| l == line), "no {line:?} in:\n{info}");
    }

    // The embedded node's password: refused without it and with a wrong one.
    for password in [None, Some("wrong")] {
        let mut args = vec!["get", "from-server", "--addr", &embedded.client_addr];
        if let Some(password) = password {
            args.extend(["--password", password]);
        }
        let (code, out) = cli_when_a_slot_is_free(&namespace, &args);
        assert_eq!(
            code, 3,
            "a get with password {password:?} was not refused: {out}"
        );
    }

    // An answer larger than the embedded node's 1 KiB frames is refused with an error, and
    // the node goes on serving: 20 values of 60 bytes asked for at once.
    let long_value = "v".repeat(60);
    let long_keys: Vec<String> = (0..20).map(|i| format!("long-{i}")).collect();
    for key in &long_keys {
        quorum_set_eventually(&namespace, &servers[0], key, &long_value);
        written.insert(key.clone(), long_value.clone());
    }
    wait_for_keys(&namespace, &embedded, &written);
    let mut mget: Vec<&str> = vec!["mget"];
    mget.extend(long_keys.iter().map(String::as_str));
    let (code, out) = node_cli(&namespace, &embedded, &mget);
    assert_eq!(
        code, 3,
        "an MGET past the frame size was not refused: {out}"
    );
    assert!(
        out.contains("larger than a frame"),
        "an MGET past the frame size was not answered FrameTooLarge (a link broke?): {out}"
    );

    // Bad input to the embedded node: an oversized frame is answered with an error frame,
    // random bytes end their connection, and the node goes on serving.
    let (code, out) = hostile_client(&namespace, &embedded.client_addr);
    assert_eq!(code, 0, "the hostile client saw: {out}\n{}", embedded.log());
    wait_for_keys(&namespace, &embedded, &written);

    // 3. kill -9 of the server leader: the embedded node and the other server elect a
    //    leader and take quorum writes through either.
    let (dead, alive) = if leader == 1 { (0, 1) } else { (1, 0) };
    servers[dead].kill();
    let gone = Some(servers[dead].id);
    agreed_leader_other_than(&namespace, &[&servers[alive], &embedded], gone);
    for i in 0..30 {
        let (key, value) = (format!("after-failover-{i}"), format!("value-{i}"));
        let through = if i % 2 == 0 {
            &embedded
        } else {
            &servers[alive]
        };
        quorum_set_eventually(&namespace, through, &key, &value);
        written.insert(key, value);
    }

    // 4. kill -9 of the embedded node, which holds half of every write of step 3; then
    //    both come back. No quorum-acknowledged write may be lost.
    embedded.kill();
    // Long enough for the surviving server to give up leading (it lost its majority), so
    // that the restarted server, whose log lacks the writes of step 3, may stand against
    // it: an embedded node that voted as if it had never acknowledged them would elect it.
    std::thread::sleep(Duration::from_millis(1500));
    servers[dead].start(&namespace);
    embedded.start(&namespace);
    agreed_leader(&namespace, &[&servers[0], &servers[1], &embedded]);
    quorum_set_eventually(&namespace, &embedded, "after-restart", "r");
    written.insert("after-restart".into(), "r".into());
    for (key, value) in &written {
        assert_eq!(
            get(&namespace, &servers[alive], key, false).as_ref(),
            Some(value),
            "the quorum-acknowledged write of {key} was lost\n{}",
            logs(&[&servers[0], &servers[1], &embedded])
        );
    }
    for node in [&servers[0], &servers[1], &embedded] {
        wait_for_keys(&namespace, node, &written);
    }
}

/// With `--cluster-secret` on every node, the embedded node proves it and is proven to
/// (the core's HMAC exchange, driven by the embedded shell as by memdi-server): it votes in
/// the cluster; restarted with another secret, the servers refuse it and it takes no part.
#[test]
fn an_embedded_node_proves_the_cluster_secret_and_one_without_it_is_kept_out() {
    let Some((_dir, namespace, mut servers, mut embedded)) = three_voters("secret") else {
        return;
    };
    let secret = ["--cluster-secret".to_string(), "mixed-secret".to_string()];
    for node in servers.iter_mut().chain([&mut embedded]) {
        node.args.extend(secret.iter().cloned());
        node.start(&namespace);
    }
    let leader = agreed_leader(&namespace, &[&servers[0], &servers[1], &embedded]);
    quorum_set_eventually(&namespace, &embedded, "proven", "yes");
    // With a server down, a quorum needs the embedded node's vote and acknowledgement.
    let (dead, alive) = if leader == 1 { (0, 1) } else { (1, 0) };
    servers[dead].kill();
    agreed_leader_other_than(&namespace, &[&servers[alive], &embedded], Some(leader));
    quorum_set_eventually(&namespace, &embedded, "with-one-server", "yes");
    assert_eq!(
        get(&namespace, &servers[alive], "with-one-server", false).as_deref(),
        Some("yes")
    );

    // Another secret: the surviving server refuses it, so no quorum forms.
    embedded.kill();
    let position = embedded
        .args
        .iter()
        .position(|arg| arg == "mixed-secret")
        .unwrap();
    embedded.args[position] = "another-secret".into();
    embedded.start(&namespace);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !quorum_set(&namespace, &servers[alive], "without-a-quorum", "no"),
        "a quorum formed with a node that has another cluster secret\n{}",
        logs(&[&servers[alive], &embedded])
    );
    assert!(
        servers[alive]
            .log()
            .contains(&format!("refused node {EMBEDDED_ID}")),
        "the server did not say it refused the embedded node\n{}",
        servers[alive].log()
    );
}
