//! `--requirepass` and protected mode against real `memdi-server` processes: the native
//! client library and raw frames, redis-cli and redis-py on the RESP port, the peer port's
//! client greetings (joins), the small frame limit of strangers, and the server's log,
//! which must never hold the password.
//!
//! Run: `cargo test -p memdi-tests --release --test auth`. Loopback only: the protected-mode
//! test binds 0.0.0.0 on a free port but sends nothing to it, and stops the process at once.
//! Every process is killed when its test ends; every wait is bounded.

#[allow(dead_code)] // shared with the cluster and RESP tests, which use other parts of it
mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use memdi_core::wire::{
    decode, encode_frame, ClientMessage, ClusterId, ErrorCode, FrameDecoder, Hello, NodeId,
    Request, Response, Sender, ServerMessage, FRAME_HEADER_BYTES,
};
use memdi_node::client::{Client, ClientError, ClientOptions, Password, SetOptions};
use process::{cli_binary, free_port, have, server_binary, Server};

/// Distinctive, so that finding it in a log cannot be a coincidence.
const PASSWORD: &str = "pw-Zq81x-never-logged";
/// A wrong guess, also distinctive, also never to be logged.
const WRONG: &str = "guess-Kk52m-never-logged";

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("memdi-auth-test")
        .tempdir()
        .expect("temporary directory")
}

/// A node with `--requirepass PASSWORD` and a RESP port, logging at debug level.
fn protected_node(dir: &Path) -> (Server, u16) {
    let resp_port = free_port();
    let resp_addr = format!("127.0.0.1:{resp_port}");
    let mut server = Server::new(
        1,
        dir.join("n1"),
        &[
            "--requirepass",
            PASSWORD,
            "--resp-addr",
            &resp_addr,
            "--max-memory",
            "4000000",
        ],
    );
    server.rust_log = "debug".into();
    server.start();
    (server, resp_port)
}

fn options(password: Option<&str>) -> ClientOptions {
    ClientOptions {
        pool_size: 1,
        max_attempts: 1,
        password: password.map(Password::new),
        ..ClientOptions::default()
    }
}

/// Connects with the right password, retrying (bounded) while the node starts.
async fn authenticated_client(server: &Server) -> Client {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Client::connect_with(&server.client_addr(), options(Some(PASSWORD))).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => {
                panic!("node not reachable: {error}\n{}", server.log())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn server_code(result: Result<impl std::fmt::Debug, ClientError>) -> Option<ErrorCode> {
    match result {
        Err(error) => error.code(),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}

/// Writes frames for `requests` (each a whole `ClientMessage`) to `stream`.
fn frame_of(message: &ClientMessage<'_>) -> Vec<u8> {
    let mut out = vec![0; 1024];
    let len = encode_frame(message, &mut out).expect("a small frame");
    out.truncate(len);
    out
}

fn hello_frame() -> Vec<u8> {
    frame_of(&ClientMessage {
        request_id: 1,
        request: Request::Hello(Hello::new(ClusterId(0), Sender::Client, 1 << 20)),
    })
}

/// Reads (bounded) every frame until the node closes the connection: (request id, response
/// variant as text).
fn read_until_closed(stream: &mut TcpStream) -> Vec<(u32, String)> {
    read_answers(stream, usize::MAX)
}

/// Reads (bounded) frames until `count` have come or the node closes the connection.
fn read_answers(stream: &mut TcpStream, count: usize) -> Vec<(u32, String)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut decoder = FrameDecoder::new(vec![0; 64 * 1024 + FRAME_HEADER_BYTES]).unwrap();
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        while let Ok(Some(payload)) = decoder.next_frame() {
            let message = decode::<ServerMessage<'_>>(payload).expect("a server message");
            let text = match message.response {
                Response::Error(error) => format!("{:?}", error.code),
                other => format!("{other:?}"),
            };
            answers.push((message.request_id, text));
            if answers.len() == count {
                return answers;
            }
        }
        match stream.read(decoder.unfilled()) {
            Ok(0) | Err(_) => return answers,
            Ok(count) => decoder.commit(count),
        }
    }
    panic!("the node did not close the connection within 10 s: {answers:?}");
}

/// The native protocol: no password, a wrong one and the right one, through the client
/// library; a stranger's large frame is refused before it is read while an authenticated
/// client's is served; the log never holds a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_must_give_the_password() {
    let dir = temp_dir();
    let (mut server, _) = protected_node(dir.path());
    let client = authenticated_client(&server).await;
    let big = vec![b'v'; 100_000];
    client
        .set(b"big", &big, SetOptions::default())
        .await
        .expect("an authenticated client writes a 100 kB value");
    assert_eq!(client.get(b"big").await.unwrap().unwrap().value, big);

    // No password: the handshake is answered, every request refused.
    let stranger = Client::connect_with(&server.client_addr(), options(None))
        .await
        .expect("the handshake itself is served");
    assert_eq!(
        server_code(stranger.get(b"big").await),
        Some(ErrorCode::AuthRequired)
    );
    assert_eq!(
        server_code(stranger.ping().await),
        Some(ErrorCode::AuthRequired)
    );
    assert_eq!(
        server_code(stranger.info().await),
        Some(ErrorCode::AuthRequired)
    );
    // INFO, to a client that gave the password, never shows it.
    let info = client.info().await.expect("INFO after the password");
    assert!(info.contains("role:leader"), "{info}");
    assert!(!info.contains(PASSWORD), "INFO shows the password:\n{info}");
    // A wrong password: refused at connection.
    let wrong = Client::connect_with(&server.client_addr(), options(Some(WRONG))).await;
    assert_eq!(server_code(wrong), Some(ErrorCode::WrongPassword));

    // Raw frames: a stranger announcing a 100 kB frame gets FrameTooLarge and a close,
    // and its data request before that gets AuthRequired.
    let mut stream = TcpStream::connect(server.client_addr()).unwrap();
    let mut bytes = hello_frame();
    bytes.extend(frame_of(&ClientMessage {
        request_id: 2,
        request: Request::Get {
            key: b"big",
            read: memdi_core::wire::ReadConsistency::Stale,
        },
    }));
    bytes.extend_from_slice(&100_000u32.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    stream.write_all(&bytes).unwrap();
    let answers = read_until_closed(&mut stream);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0].1.starts_with("HelloAck"), "{answers:?}");
    assert_eq!(answers[1], (2, "AuthRequired".to_string()));
    assert_eq!(answers[2], (0, "FrameTooLarge".to_string()));

    // The same large frame right after a pipelined Auth is read under the full limit.
    let mut stream = TcpStream::connect(server.client_addr()).unwrap();
    let mut bytes = hello_frame();
    bytes.extend(frame_of(&ClientMessage {
        request_id: 2,
        request: Request::Auth {
            password: PASSWORD.as_bytes(),
        },
    }));
    let mut set = vec![0; 200_000];
    let len = encode_frame(
        &ClientMessage {
            request_id: 3,
            request: Request::Set {
                key: b"big2",
                value: &big,
                condition: memdi_core::wire::SetCondition::Always,
                expiry: memdi_core::wire::Expiry::None,
                write: memdi_core::wire::WriteOptions::default(),
            },
        },
        &mut set,
    )
    .unwrap();
    bytes.extend_from_slice(&set[..len]);
    stream.write_all(&bytes).unwrap();
    let answers = read_answers(&mut stream, 3);
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[1], (2, "Authenticated".to_string()));
    assert!(answers[2].1.starts_with("Stored"), "{answers:?}");

    assert!(server.stop().success());
    let log = server.log();
    assert!(log.contains("DEBUG"), "the log is at debug level:\n{log}");
    for secret in [PASSWORD, WRONG] {
        assert!(!log.contains(secret), "the log holds a password:\n{log}");
    }
}

/// Runs the `memdi` CLI (bounded by `timeout`) with `password` in MEMDI_PASSWORD, or none:
/// exit code, stdout, stderr.
fn memdi(env_password: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new("timeout");
    command.arg("20").arg(cli_binary()).args(args);
    match env_password {
        Some(password) => command.env("MEMDI_PASSWORD", password),
        None => command.env_remove("MEMDI_PASSWORD"),
    };
    let output = command.output().expect("running memdi");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `memdi` CLI: refused without the password or with a wrong one (exit 3, a server
/// error), served with `--password` or `MEMDI_PASSWORD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_password_from_a_flag_or_the_environment() {
    let dir = temp_dir();
    let (mut server, _) = protected_node(dir.path());
    drop(authenticated_client(&server).await); // started
    let addr = server.client_addr();
    let (code, _, stderr) = memdi(None, &["--addr", &addr, "set", "k", "v"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("AuthRequired"), "{stderr}");
    let (code, _, stderr) = memdi(None, &["--addr", &addr, "--password", WRONG, "get", "k"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("WrongPassword"), "{stderr}");
    let (code, _, stderr) = memdi(Some(WRONG), &["--addr", &addr, "get", "k"]);
    assert_eq!(code, 3, "{stderr}");
    let (code, _, stderr) = memdi(
        None,
        &["--addr", &addr, "--password", PASSWORD, "set", "k", "v"],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = memdi(Some(PASSWORD), &["--addr", &addr, "get", "k"]);
    assert_eq!((code, stdout.as_str()), (0, "v"), "{stderr}");

    // `memdi bench` drives its own connections (`client::connect_raw`): refused without
    // the password, and with it every request is answered and every key written.
    let bench = [
        "--addr",
        &addr,
        "bench",
        "--clients",
        "3",
        "--requests",
        "3000",
        "--pipeline",
        "8",
        "--keyspace",
        "64",
        "--csv",
    ];
    let (code, _, stderr) = memdi(None, &bench);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("AuthRequired"), "{stderr}");
    let (code, stdout, stderr) = memdi(Some(PASSWORD), &bench);
    assert_eq!(code, 0, "{stderr}");
    let fields: Vec<&str> = stdout.split(',').collect();
    assert_eq!(fields.len(), 12, "{stdout}");
    assert_eq!(
        &fields[..6],
        ["set", "leader", "3", "8", "3000", "0"],
        "{stdout}"
    );
    let (code, stdout, stderr) = memdi(Some(PASSWORD), &["--addr", &addr, "dbsize"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "65"),
        "64 bench keys and k: {stderr}"
    );
    assert!(server.stop().success());
    let log = server.log();
    for secret in [PASSWORD, WRONG] {
        assert!(!log.contains(secret), "the log holds a password:\n{log}");
    }
}

/// A node without a password refuses `Auth` (as Redis refuses AUTH with none configured),
/// so a client configured with one learns that the node is not the one it expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_sent_to_a_node_without_one_is_refused() {
    let dir = temp_dir();
    let mut server = Server::new(1, dir.path().join("n1"), &[]);
    server.start();
    drop(server.client().await); // started
    let result = Client::connect_with(&server.client_addr(), options(Some(PASSWORD))).await;
    assert_eq!(server_code(result), Some(ErrorCode::Unsupported));
    assert!(server.stop().success());
    assert!(!server.log().contains(PASSWORD));
}

/// The peer port serves client greetings (a node joining through `--join`): they need the
/// password too, and a node given it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_through_the_peer_port_need_the_password() {
    let dir = temp_dir();
    let mut first = Server::new(1, dir.path().join("n1"), &["--requirepass", PASSWORD]);
    first.start();
    let client = authenticated_client(&first).await;

    // The peer port takes nothing after a client's hello until it is answered.
    let mut stream = TcpStream::connect(first.peer_addr()).unwrap();
    stream.write_all(&hello_frame()).unwrap();
    let answers = read_answers(&mut stream, 1);
    assert!(answers[0].1.starts_with("HelloAck"), "{answers:?}");
    stream
        .write_all(&frame_of(&ClientMessage {
            request_id: 2,
            request: Request::AddMember {
                node_id: NodeId(9),
                address: b"127.0.0.1:1",
            },
        }))
        .unwrap();
    let answers = read_answers(&mut stream, 1);
    assert_eq!(answers, vec![(2, "AuthRequired".to_string())]);

    let join = first.peer_addr();
    let mut second = Server::new(
        2,
        dir.path().join("n2"),
        &["--requirepass", PASSWORD, "--join", &join],
    );
    second.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = client.cluster_status().await.expect("cluster status");
        if status.members.iter().any(|member| member.id == NodeId(2)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never joined\n{}\n{}",
            first.log(),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.stop().success());
    assert!(first.stop().success());
    for log in [first.log(), second.log()] {
        assert!(
            !log.contains(PASSWORD),
            "the log holds the password:\n{log}"
        );
    }
}

/// redis-cli against `port`: its trimmed stdout (raw output, as when piped).
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

/// Sends `request` on a fresh RESP connection and reads (bounded) until the node closes it.
fn raw_resp(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => answer.extend_from_slice(&buffer[..count]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn set_command(key: &str, value_bytes: usize) -> Vec<u8> {
    let mut command = format!(
        "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_bytes}\r\n",
        key.len()
    )
    .into_bytes();
    command.extend(std::iter::repeat_n(b'v', value_bytes));
    command.extend_from_slice(b"\r\n");
    command
}

/// The RESP port: redis-cli without a password, with a wrong one (`AUTH`, `AUTH default`,
/// `HELLO 2 AUTH`, `-a`) and with the right one, in Redis's words; a stranger's large bulk
/// is refused before it is read; redis-py's `password=` works.
#[test]
fn redis_clients_must_give_the_password() {
    if !have("redis-cli", &["--version"]) {
        return;
    }
    let dir = temp_dir();
    let (mut server, port) = protected_node(dir.path());
    let authed = |args: &[&str]| {
        let mut all = vec!["-a", PASSWORD, "--no-auth-warning"];
        all.extend_from_slice(args);
        cli(port, &all)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while authed(&["PING"]) != "PONG" {
        assert!(
            Instant::now() < deadline,
            "RESP port never answered\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    const NOAUTH: &str = "NOAUTH Authentication required.";
    const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
    let cases: &[(&[&str], &str)] = &[
        (&["SET", "a", "1"], NOAUTH),
        (&["PING"], NOAUTH),
        (&["INFO"], NOAUTH),
        (&["NOSUCHCOMMAND"], NOAUTH),
        (&["AUTH", WRONG], WRONGPASS),
        (&["AUTH", "default", WRONG], WRONGPASS),
        (&["AUTH", "admin", PASSWORD], WRONGPASS),
        (&["HELLO", "2", "AUTH", "default", WRONG], WRONGPASS),
        (
            &["HELLO", "2"],
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ),
        (&["AUTH", PASSWORD], "OK"),
        (&["AUTH", "default", PASSWORD], "OK"),
    ];
    for (args, expected) in cases {
        assert_eq!(cli(port, args), *expected, "redis-cli {args:?}");
    }
    assert_eq!(authed(&["SET", "a", "1"]), "OK");
    assert_eq!(authed(&["GET", "a"]), "1");
    assert_eq!(
        cli(port, &["-a", WRONG, "--no-auth-warning", "GET", "a"]),
        NOAUTH
    );
    // HELLO with AUTH authenticates: the next command on the connection is served.
    let hello = raw_resp(
        port,
        format!("HELLO 2 AUTH default {PASSWORD}\r\nGET a\r\nQUIT\r\n").as_bytes(),
    );
    assert!(hello.contains("$5\r\nredis\r\n"), "{hello:?}");
    assert!(hello.ends_with("$1\r\n1\r\n+OK\r\n"), "{hello:?}");

    // A stranger's 100 kB bulk is refused on its header; after AUTH it is served, even in
    // the same write.
    let refused = raw_resp(port, &set_command("big", 100_000));
    assert_eq!(
        refused,
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    let many_args = raw_resp(port, b"*11\r\n");
    assert_eq!(
        many_args,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut request = format!("AUTH {PASSWORD}\r\n").into_bytes();
    request.extend(set_command("big", 100_000));
    request.extend_from_slice(b"STRLEN big\r\nQUIT\r\n");
    assert_eq!(raw_resp(port, &request), "+OK\r\n+OK\r\n:100000\r\n+OK\r\n");

    if have("python3", &["-c", "import redis"]) {
        let script = format!(
            r#"
import redis
port = {port}
r = redis.Redis(port=port, protocol=2, password="{PASSWORD}")
r.set("py", "1")
assert r.get("py") == b"1", r.get("py")
for password in (None, "{WRONG}"):
    try:
        redis.Redis(port=port, protocol=2, password=password).get("py")
    except redis.exceptions.AuthenticationError as error:
        print("refused:", error)
    else:
        raise SystemExit("served without the password: %r" % password)
"#
        );
        let output = Command::new("timeout")
            .args(["60", "python3", "-c", &script])
            .output()
            .expect("running python3");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "redis-py:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(stdout.matches("refused:").count(), 2, "{stdout}");
    }
    assert!(server.stop().success());
    let log = server.log();
    for secret in [PASSWORD, WRONG] {
        assert!(!log.contains(secret), "the log holds a password:\n{log}");
    }
}

/// memdi-server with `args`, stderr captured; the caller stops it.
fn spawn_server(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(server_binary())
        .args(["--peer-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting memdi-server")
}

/// Protected mode: no password and a client port on 0.0.0.0 is refused with a message that
/// says why and what to do; `--protected-mode no` (or a password) lets it start.
#[test]
fn protected_mode_refuses_open_ports_without_a_password() {
    let dir = temp_dir();
    let open = || format!("0.0.0.0:{}", free_port());
    for flag in ["--client-addr", "--resp-addr"] {
        let addr = open();
        let mut child = spawn_server(&dir.path().join("refused"), &[flag, &addr]);
        let status = process::wait_bounded(&mut child, Duration::from_secs(20));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("memdi-server started with {flag} {addr} and no password");
        }
        assert!(!status.unwrap().success());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        for words in [
            "protected mode",
            "--requirepass",
            "--protected-mode no",
            &addr,
        ] {
            assert!(stderr.contains(words), "{words:?} missing from:\n{stderr}");
        }
    }
    for extra in [
        &["--protected-mode", "no"][..],
        &["--requirepass", PASSWORD],
    ] {
        let addr = open();
        let mut args = vec!["--client-addr", &addr];
        args.extend_from_slice(extra);
        let mut child = spawn_server(&dir.path().join("started"), &args);
        // Started once it says it serves clients there; nothing is sent to the port. A
        // thread reads stderr so that the wait stays bounded whatever the process does.
        let stderr = child.stderr.take().unwrap();
        let (lines, seen_lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains("serving clients on") {
            let left = deadline.saturating_duration_since(Instant::now());
            match seen_lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        reader.join().expect("stderr reader");
        assert!(
            seen.contains(&format!("serving clients on {addr}")),
            "{extra:?}: did not start:\n{seen}"
        );
        assert!(
            !seen.contains(PASSWORD),
            "the log holds the password:\n{seen}"
        );
    }
}
