//! Real `memdi-server` processes for the multi-process tests.
//!
//! Finding the binary: cargo builds other packages' binaries only for `cargo run` or
//! `cargo build`, and `CARGO_BIN_EXE_*` exists only inside the package that owns the binary.
//! So the first test that needs the server runs `cargo build -p memdi-node --bin
//! memdi-server` (with `--release` when this test was built in release), with the same
//! cargo that built the test (`env!("CARGO")`) and the same target directory, and then
//! takes the binary next to this test executable (`target/<profile>/memdi-server`).
//! Cargo has released its build lock by the time tests run, and the build is a no-op when the
//! binary is fresh. `MEMDI_SERVER_BIN` overrides all this with a path.
//!
//! Every process is killed (SIGKILL) when its [`Server`] is dropped, so a failing test leaves
//! nothing running; every wait is bounded in time.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use memdi_node::client::{Client, ClientOptions};

/// Whether `tool` runs (`tool probe...` succeeds); if not, says so loudly, and fails under
/// CI (`CI` set), where `scripts/setup.sh` has installed every tool the tests use.
pub fn have(tool: &str, probe: &[&str]) -> bool {
    let present = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|output| output.status.success());
    if !present {
        let message = format!(
            "\n!!!!!!!! SKIPPED: `{tool}` is not installed; run scripts/setup.sh (apt-get install redis-server redis-tools; pip install redis) !!!!!!!!\n"
        );
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
    }
    present
}

/// `count` nodes with ids 1..=count and data in `dir/n<id>`, not started, each given
/// `--cluster` naming all of them as voters plus `extra(id)`.
pub fn cluster_of(dir: &Path, count: u64, extra: impl Fn(u64) -> Vec<String>) -> Vec<Server> {
    let mut nodes: Vec<Server> = (1..=count)
        .map(|id| Server::new(id, dir.join(format!("n{id}")), &[]))
        .collect();
    let spec = nodes
        .iter()
        .map(|node| format!("{}={}", node.node_id, node.peer_addr()))
        .collect::<Vec<_>>()
        .join(",");
    for node in &mut nodes {
        node.extra_args = vec!["--cluster".into(), spec.clone()];
        node.extra_args.extend(extra(node.node_id));
    }
    nodes
}

/// The memdi-server binary, built once per test process.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("MEMDI_SERVER_BIN") {
            return PathBuf::from(path);
        }
        build_binary("memdi-server")
    })
}

/// The `memdi` client CLI, built once per test process (as the server is).
pub fn cli_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_binary("memdi"))
}

/// The embedded node's host binary (memdi-embedded on a TAP device), built once per test
/// process (as the server is).
pub fn embedded_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| build_package_binary("memdi-embedded", "memdi-embedded-host"))
}

/// Builds binary `name` of memdi-node for this test's profile and target directory.
fn build_binary(name: &str) -> PathBuf {
    build_package_binary("memdi-node", name)
}

/// Builds binary `name` of `package` for this test's profile and target directory.
fn build_package_binary(package: &str, name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/cluster-<hash>
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps");
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ inside the workspace");
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(workspace)
        .args(["build", "-p", package, "--bin", name]);
    if release {
        build.arg("--release");
    }
    // Same target directory as this test, wherever it is.
    if let Some(target) = profile_dir.parent() {
        build.arg("--target-dir").arg(target);
    }
    let status = build
        .status()
        .unwrap_or_else(|error| panic!("running cargo build for {name}: {error}"));
    assert!(status.success(), "building {name} failed");
    let binary = profile_dir.join(name);
    assert!(binary.exists(), "{} not found", binary.display());
    binary
}

/// A free port on 127.0.0.1 (free when asked; the server binds it moments later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// One node: its ports, data directory and (while running) process.
#[derive(Debug)]
pub struct Server {
    pub node_id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    /// Every run's stderr is appended here.
    pub log_path: PathBuf,
    /// The server's RUST_LOG (default `info`; the auth test reads its debug lines).
    pub rust_log: String,
}

impl Server {
    /// A node whose data goes to `data_dir` (created), not started.
    pub fn new(node_id: u64, data_dir: PathBuf, extra_args: &[&str]) -> Self {
        std::fs::create_dir_all(&data_dir).expect("creating the data directory");
        Self {
            node_id,
            client_port: free_port(),
            peer_port: free_port(),
            log_path: data_dir.join("server.log"),
            data_dir,
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            rust_log: "info".into(),
        }
    }

    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// Starts the process (stderr appended to `log_path`).
    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "node {} already running",
            self.node_id
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the server log");
        let child = Command::new(server_binary())
            .arg("--node-id")
            .arg(self.node_id.to_string())
            .arg("--client-addr")
            .arg(self.client_addr())
            .arg("--peer-addr")
            .arg(self.peer_addr())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting memdi-server");
        self.child = Some(child);
    }

    /// The running process's id (the hostile-clients test reads its memory in /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("node not running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let status = wait_bounded(child, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("node {} ignored SIGTERM for 20 s", self.node_id));
        self.child = None;
        status
    }

    /// SIGKILL: the process dies at once, with no final snapshot.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for a process that should exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_bounded(child, limit)?;
        self.child = None;
        Some(status)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The role and term of the last `role:` line of the current run's log, if any.
    /// (Read from the log, so that it works whether or not the node answers requests.)
    pub fn last_role(&self) -> Option<(String, u64)> {
        last_role_in(current_run(&self.log()))
    }

    /// A client of this node, retrying the connection for up to 15 s while it starts.
    pub async fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let options = ClientOptions {
                pool_size: 2,
                ..ClientOptions::default()
            };
            match Client::connect_with(&self.client_addr(), options).await {
                Ok(client) => return client,
                Err(error) if Instant::now() > deadline => {
                    panic!(
                        "node {} not reachable: {error}\n{}",
                        self.node_id,
                        self.log()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The part of a server's log written by its current run (each run starts with a
/// `starting node` line).
pub fn current_run(log: &str) -> &str {
    log.rsplit("starting node").next().unwrap_or("")
}

/// The role and term of the last `role: ROLE in term N` line of `log`.
pub fn last_role_in(log: &str) -> Option<(String, u64)> {
    let line = log.lines().rev().find(|line| line.contains("role: "))?;
    let rest = line.split("role: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let role = words.next()?.to_string();
    let term = words.last()?.trim_matches('"').parse().ok()?;
    Some((role, term))
}

/// Waits (bounded) for `child` to exit by itself.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
