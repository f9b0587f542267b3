//! The Redis front: RESP2 on `--resp-addr`, so that redis-cli, redis-benchmark and client
//! libraries work against any node of a cluster.
//!
//! Nothing here implements a command. Each command becomes the `wire::Request`s a native
//! client would send, encoded and handed to the node task exactly like a native client
//! frame (so a follower forwards writes to the leader as usual), and the `Response`s are
//! worded as Redis words its replies. The modules, one job each:
//! - [`auth`]: `--requirepass`: AUTH, HELLO's AUTH, what a stranger may send;
//! - [`parse`]: RESP2 and inline requests, with limits checked before buffering;
//! - [`encode`]: RESP2 replies;
//! - [`dispatch`]: arguments to a plan (a reply, a core job, a question for the node task);
//! - [`job`]: core answers to replies, Redis's error texts;
//! - [`table`]: the command table (arity, COMMAND INFO);
//! - [`glob`]: Redis's glob patterns;
//! - [`info`]: INFO, ROLE and CONFIG GET from the node's state.
//!
//! The connection task that drives them is `server::resp_conn`.

pub mod auth;
pub mod dispatch;
pub mod encode;
pub mod glob;
pub mod info;
pub mod job;
pub mod parse;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use memdi_core::cluster::Role;
use memdi_core::wire::NodeId;

/// The Redis version the front claims in INFO and HELLO: the command set and replies follow
/// Redis 7, and clients pick features by this number.
pub const REDIS_VERSION: &str = "7.0.0";

/// One RESP connection's own state.
#[derive(Debug, Clone)]
pub struct ClientState {
    /// CLIENT ID.
    pub id: u64,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// The client's address.
    pub addr: SocketAddr,
    /// This node's address the client connected to.
    pub local_addr: SocketAddr,
    /// The last command's name, for CLIENT INFO.
    pub last_command: String,
    /// Whether the connection has given the password (from the start, with none set).
    pub authenticated: bool,
    /// The last command's entry in the command table (`None`: unknown), kept with its
    /// name: a pipeline mostly repeats one command, and finding it is a scan of the table.
    pub last_spec: Option<&'static table::CommandSpec>,
}

impl ClientState {
    /// The CLIENT INFO line.
    pub fn info_line(&self) -> String {
        let name = self
            .name
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} fd=0 name={name} db=0 resp=2 cmd={}\n",
            self.id, self.addr, self.local_addr, self.last_command
        )
    }
}

/// What does not change while the node runs, plus counters and the node's role, which the
/// node task keeps current; shared by every RESP connection.
#[derive(Debug)]
pub struct NodeFacts {
    /// This node.
    pub node_id: NodeId,
    /// Voters needed for a quorum now: the node task updates it as the membership changes
    /// (nodes join and leave while the server runs).
    pub quorum: Arc<std::sync::atomic::AtomicUsize>,
    /// The store's index slots (SCAN cursors run below this).
    pub slot_count: u32,
    /// The store's limits.
    pub max_keys: u32,
    /// Largest value.
    pub max_value_bytes: u32,
    /// Bytes of keys and values the store holds at most (Redis's maxmemory).
    pub max_total_bytes: u64,
    /// Most client connections (native and RESP each).
    pub max_clients: u32,
    /// Idle timeout, 0 = never.
    pub idle_timeout_secs: u64,
    /// Seconds between snapshots, 0 = off.
    pub snapshot_every_secs: u64,
    /// The RESP listener.
    pub resp_addr: SocketAddr,
    /// When the server started.
    pub started: Instant,
    /// Whether this node leads now (kept by the node task).
    pub leader_now: Arc<AtomicBool>,
    /// RESP connections open now.
    pub connected_clients: AtomicU64,
    /// RESP connections accepted since start.
    pub connections_received: AtomicU64,
    /// RESP commands taken since start.
    pub commands_processed: AtomicU64,
    /// `--requirepass`; never reported by CONFIG GET or INFO.
    pub requirepass: Option<crate::secret::Password>,
}

impl NodeFacts {
    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leader_now.load(Ordering::Relaxed)
    }

    /// The settings CONFIG GET reports, by their Redis names.
    pub fn config_settings(&self) -> Vec<(&'static str, String)> {
        let save = if self.snapshot_every_secs == 0 {
            String::new()
        } else {
            format!("{} 1", self.snapshot_every_secs)
        };
        vec![
            ("maxmemory", self.max_total_bytes.to_string()),
            ("maxmemory-policy", "noeviction".into()),
            ("maxclients", self.max_clients.to_string()),
            ("proto-max-bulk-len", self.max_value_bytes.to_string()),
            ("timeout", self.idle_timeout_secs.to_string()),
            ("save", save),
            ("appendonly", "no".into()),
            ("databases", "1".into()),
            ("port", self.resp_addr.port().to_string()),
            ("bind", self.resp_addr.ip().to_string()),
        ]
    }
}

/// The node's state at one moment, as the node task reports it for INFO and ROLE.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Highest committed log index.
    pub commit_index: u64,
    /// Keys held (expired ones not yet reclaimed included).
    pub keys: u32,
    /// Keys held with a TTL.
    pub keys_with_expiry: u64,
    /// Bytes of the store in use.
    pub used_bytes: u64,
    /// Unix seconds of the last snapshot written (the start time, before any).
    pub last_save_unix_secs: u64,
    /// Store changes since that snapshot.
    pub changes_since_save: u64,
    /// The first entry of the in-memory log.
    pub log_first_index: u64,
    /// The last entry of the log.
    pub log_last_index: u64,
    /// The last entry the store reflects.
    pub applied_index: u64,
    /// The node task's totals since start.
    pub counters: crate::server::metrics::Counters,
    /// Leader: each other member and the highest entry it holds.
    pub followers: Vec<(NodeId, u64)>,
    /// Each member's peer address, from the membership (which changes as nodes join and
    /// leave, so it is read at each request).
    pub addresses: std::collections::BTreeMap<NodeId, std::net::SocketAddr>,
}
