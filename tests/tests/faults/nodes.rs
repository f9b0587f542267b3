//! The fault test's memdi-server processes, one per network namespace ("slot").
//!
//! A slot keeps its address for the whole run, but the node in it may change: a membership
//! fault removes the slot's node and adds a new one, with a new id and an empty data
//! directory, through `--join` (a removed node may not come back with its old log,
//! docs/protocol.md 4.9). Every process is killed when its [`Slot`] is dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::net::Network;
use crate::process;

/// Client port of every node (each node has an address of its own).
pub const CLIENT_PORT: u16 = 7379;
/// Peer port of every node.
pub const PEER_PORT: u16 = 7380;

/// One node namespace and the memdi-server in it.
#[derive(Debug)]
pub struct Slot {
    pub index: usize,
    /// The id of the node in the slot now.
    pub node_id: u64,
    namespace: String,
    /// `--cluster SPEC` for the first nodes, `--join ADDR` for a replacement.
    membership_args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The next start is given `--recover` (the data directory was lost).
    recover_next_start: bool,
}

impl Slot {
    /// Slot `index` of `network`, holding node `node_id` of the voters `cluster_spec`.
    pub fn new(
        network: &Network,
        index: usize,
        node_id: u64,
        cluster_spec: &str,
        dir: &Path,
    ) -> Self {
        let slot = Slot {
            index,
            node_id,
            namespace: network.node_namespace(index),
            membership_args: vec!["--cluster".into(), cluster_spec.into()],
            dir: dir.to_path_buf(),
            child: None,
            paused: false,
            recover_next_start: false,
        };
        std::fs::create_dir_all(slot.data_dir()).expect("creating a data directory");
        slot
    }

    pub fn client_addr(&self) -> String {
        client_addr(self.index)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join(format!("n{}", self.node_id))
    }

    /// Where every run of the slot's current node logs (stderr, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("n{}.log", self.node_id))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "slot {} already running", self.index);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening a node log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(process::server_binary())
            .args(["--node-id", &self.node_id.to_string()])
            .args(["--client-addr", &self.client_addr()])
            .args(["--peer-addr", &peer_addr(self.index)])
            .args(["--protected-mode", "no"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.membership_args)
            .args(self.recover_next_start.then_some("--recover"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting memdi-server");
        self.child = Some(child);
        self.paused = false;
        self.recover_next_start = false;
    }

    /// Whether the node can lose its data and recover (`--recover` needs the `--cluster`
    /// voters; a replacement joined with `--join`).
    pub fn can_recover(&self) -> bool {
        self.membership_args[0] == "--cluster"
    }

    /// Whether the node is still recovering from a loss of its data (its marker is there).
    pub fn is_recovering(&self) -> bool {
        memdi_node::server::recovery_marker::marker_path(&self.data_dir()).exists()
            || self.recover_next_start
    }

    /// SIGKILL, and the data directory is lost: the next start recovers (`--recover`).
    pub fn lose_data(&mut self) {
        self.kill();
        let dir = self.data_dir();
        std::fs::remove_dir_all(&dir).expect("removing a data directory");
        std::fs::create_dir_all(&dir).expect("creating a data directory");
        self.recover_next_start = true;
    }

    /// SIGKILL (`ip netns exec` execs the server, so the child is the server itself).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                self.signal("CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// The exit status, if the process ended by itself (it should run until the test ends).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing, like a long GC pause.
    pub fn pause(&mut self) {
        if self.child.is_some() && !self.paused {
            self.signal("STOP");
            self.paused = true;
        }
    }

    /// SIGCONT after [`Slot::pause`].
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("CONT");
            self.paused = false;
        }
    }

    /// Puts a new node, `node_id`, with an empty data directory, in the slot (stopped):
    /// started, it asks `seed_slot`'s node to add it.
    pub fn replace(&mut self, node_id: u64, seed_slot: usize) {
        self.kill();
        self.node_id = node_id;
        self.membership_args = vec!["--join".into(), peer_addr(seed_slot)];
        std::fs::create_dir_all(self.data_dir()).expect("creating a data directory");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// Everything the slot's current node has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn client_addr(slot: usize) -> String {
    format!("{}:{CLIENT_PORT}", Network::ip(slot))
}

pub fn peer_addr(slot: usize) -> String {
    format!("{}:{PEER_PORT}", Network::ip(slot))
}

/// `--cluster` naming nodes 1..=slots, node `i + 1` in slot `i`.
pub fn cluster_spec(slots: usize) -> String {
    (0..slots)
        .map(|slot| format!("{}={}", slot + 1, peer_addr(slot)))
        .collect::<Vec<_>>()
        .join(",")
}
