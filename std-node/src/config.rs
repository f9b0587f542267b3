//! `memdi-server`'s configuration: command-line flags, an optional TOML file with the same
//! keys, the checks that refuse what is not built yet, and protected mode.
//!
//! Every field of [`ServerArgs`] is an `Option` so that a flag that was not given can be told
//! apart from one given with the default value: the file fills what the flags left out, and
//! [`ServerArgs::resolve`] fills the rest with defaults. The defaults give a working single
//! node with no flags at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use memdi_core::store::StoreLimits;
use memdi_core::wire::{AckLevel, ClusterId, Durability, NodeId};
use serde::Deserialize;

pub use crate::secret::Password;

/// Acknowledgement level of writes that do not ask for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckFlag {
    /// Applied in memory on the leader (may be lost on failover).
    Leader,
    /// Stored on a majority of voters.
    Quorum,
}

impl From<AckFlag> for AckLevel {
    fn from(flag: AckFlag) -> Self {
        match flag {
            AckFlag::Leader => AckLevel::Leader,
            AckFlag::Quorum => AckLevel::Quorum,
        }
    }
}

/// Where a write must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityFlag {
    /// In memory (the log and snapshots still go to --data-dir).
    Memory,
    /// In the log on disk, to the --fsync policy, before the answer.
    Disk,
}

impl From<DurabilityFlag> for Durability {
    fn from(flag: DurabilityFlag) -> Self {
        match flag {
            DurabilityFlag::Memory => Durability::Memory,
            DurabilityFlag::Disk => Durability::Disk,
        }
    }
}

/// Whether the node keeps anything on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// The append-only log and snapshots in --data-dir, loaded at start.
    Disk,
    /// Nothing on disk, as Redis with `appendonly no` and `save ""`: every start is empty.
    /// A single node only: a voter that forgets its vote and log at a restart could elect a
    /// leader lacking a committed write (docs/protocol.md 4.10).
    None,
}

/// When the append-only log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every batch of records, before it counts as written (and before anything the
    /// node said after it leaves).
    Always,
    /// About once a second by the disk writer; a record counts as written once the OS has
    /// it, so a machine crash loses up to about a second.
    Everysec,
    /// Never explicitly; the OS decides. A record counts as written once the OS has it.
    No,
}

/// How the server writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`), for
    /// log collectors.
    Json,
}

/// A yes/no setting, spelled as Redis spells its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// On.
    Yes,
    /// Off.
    No,
}

/// A memdi node: serves the native client protocol and replicates with its peers.
///
/// Every flag can also be set in a TOML file given with --config, under the same name
/// (for example `node-id = 2`, `cluster = "1=127.0.0.1:7380,2=127.0.0.1:7382"`); a flag on the
/// command line wins over the file. With no flags at all this is a single node on
/// 127.0.0.1:7379 keeping its snapshot and log in ./memdi-data.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(name = "memdi-server", version)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerArgs {
    /// TOML file with any of these settings (flags given here win).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id, unique in the cluster and stable across restarts [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<u64>,
    /// Address for native (postcard) clients [default: 127.0.0.1:7379].
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<SocketAddr>,
    /// Address for the other nodes of the cluster [default: 127.0.0.1:7380].
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<SocketAddr>,
    /// Address for Redis (RESP2) clients; off unless given.
    #[arg(long, value_name = "HOST:PORT")]
    pub resp_addr: Option<SocketAddr>,
    /// Address for Prometheus to scrape (`GET /metrics`, text format); off unless given.
    /// It answers without a password, and shows figures only (no keys or values): bind it
    /// where only your monitoring reaches.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,
    /// The initial voters as id=host:port of their peer address, this node included, e.g.
    /// 1=127.0.0.1:7380,2=127.0.0.1:7382,3=127.0.0.1:7384. Absent: a single-node cluster.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub cluster: Option<String>,
    /// Join a running cluster through any member's peer address: this node asks to be
    /// added (as a learner, promoted to voter once it holds every key) and announces its
    /// --peer-addr, which the members must be able to reach. Not with --cluster. A node
    /// that restarts keeps its membership from its data directory.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// This node lost its data directory (a failed disk, a replaced machine) and must not
    /// vote until it has caught up: it asks a majority of the voters for their terms, votes
    /// only in later terms, and follows the leader until it holds everything committed
    /// (docs/protocol.md 4.10). Give it with --cluster naming at least three voters and an
    /// empty --data-dir; a marker file in the directory keeps the node recovering across
    /// restarts until it has recovered and saved a snapshot. Not in the TOML file: it is
    /// for one start.
    #[arg(long)]
    #[serde(skip)]
    pub recover: bool,
    /// Directory for the snapshot and the append-only log [default: ./memdi-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// disk (the append-only log and snapshots in --data-dir, loaded at start) or none
    /// (nothing on disk, every start empty, SAVE refused: a cache, as Redis with appendonly
    /// no and save ""; a single node only) [default: disk].
    #[arg(long, value_enum)]
    pub persistence: Option<Persistence>,
    /// Acknowledgement of writes that do not ask for one: leader (applied in memory on the
    /// leader; may be lost on failover) or quorum (on a majority of voters) [default: leader].
    #[arg(long, value_enum)]
    pub ack: Option<AckFlag>,
    /// Where a write must be before it is answered, when the request does not say: memory,
    /// or disk (in the log, to the --fsync policy: fsynced with --fsync always)
    /// [default: memory].
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityFlag>,
    /// When the append-only log is fsynced: always (before anything that depends on it is
    /// sent), everysec (about once a second) or no (the OS decides), as Redis's appendfsync
    /// [default: everysec].
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncPolicy>,
    /// Seconds between snapshots to --data-dir, each of which starts a new log; 0 = no
    /// periodic snapshots (one is still written on SAVE, on a clean shutdown and when the
    /// log passes 256 MiB)
    /// [default: 60].
    #[arg(long, value_name = "SECS")]
    pub snapshot_every: Option<u64>,
    /// Most keys the store holds [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_keys: Option<u32>,
    /// Longest key accepted, in bytes [default: 512].
    #[arg(long, value_name = "BYTES")]
    pub max_key_bytes: Option<u32>,
    /// Longest value accepted, in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_value_bytes: Option<u32>,
    /// Bytes of records (keys, values, headers) the store holds; allocated once at start
    /// (the OS commits pages as they are used) [default: 1073741824].
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<u64>,
    /// Most client connections at once; more are refused with an error [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_clients: Option<u32>,
    /// Close a client connection that sends nothing for this long; 0 = never [default: 300].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Answers a client may leave unread before it is disconnected (Redis's
    /// client-output-buffer-limit), on each port [default: 67108864, 64 MiB].
    #[arg(long, value_name = "BYTES")]
    pub client_output_limit_bytes: Option<u64>,
    /// The cluster's id; peers of another cluster are refused [default: 1].
    #[arg(long, value_name = "N")]
    pub cluster_id: Option<u64>,
    /// Password every client must give before anything else is served: AUTH on the RESP
    /// port (redis-cli -a), `Auth` on the native port (memdi --password). Without one, the
    /// client ports must be on loopback unless --protected-mode no.
    #[arg(long, value_name = "SECRET")]
    pub requirepass: Option<Password>,
    /// With no --requirepass, refuse to start when a client port (--client-addr,
    /// --resp-addr) is on an address other than loopback, as Redis's protected mode does
    /// [default: yes].
    #[arg(long, value_enum)]
    pub protected_mode: Option<YesNo>,
    /// Log lines as text [default] or as one JSON object per line (for log collectors).
    /// RUST_LOG sets the level, as always (default: info).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Secret every node of the cluster shares: peers prove they know it (HMAC-SHA256
    /// challenge-response, never sending it) before any message is taken from them. Give
    /// every node the same one, or none.
    #[arg(long, value_name = "SECRET")]
    pub cluster_secret: Option<Password>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node.
    pub node_id: NodeId,
    /// The cluster.
    pub cluster_id: ClusterId,
    /// Where clients connect.
    pub client_addr: SocketAddr,
    /// Where peers connect.
    pub peer_addr: SocketAddr,
    /// Every voter's peer address, this node's included (just this node when single).
    pub voters: BTreeMap<NodeId, SocketAddr>,
    /// The snapshot and the log go here.
    pub data_dir: PathBuf,
    /// Whether anything goes to disk at all.
    pub persistence: Persistence,
    /// Default acknowledgement.
    pub default_ack: AckLevel,
    /// Default durability.
    pub default_durability: Durability,
    /// Append-only log fsync policy.
    pub fsync: FsyncPolicy,
    /// Seconds between snapshots, 0 = off.
    pub snapshot_every_secs: u64,
    /// The store's capacity.
    pub store_limits: StoreLimits,
    /// Most client connections at once.
    pub max_clients: u32,
    /// Idle client connections close after this long; 0 = never.
    pub idle_timeout_ms: u64,
    /// Unread answer bytes after which a client is disconnected.
    pub client_output_limit_bytes: usize,
    /// A member's peer address to ask for this node to be added (`--join`).
    pub join: Option<String>,
    /// `--recover`: this node lost its data and recovers before it votes.
    pub recover: bool,
    /// Where Redis clients connect (RESP2), if anywhere.
    pub resp_addr: Option<SocketAddr>,
    /// Where Prometheus scrapes `/metrics`, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The secret peers prove they know (`--cluster-secret`), if any. Never logged.
    pub cluster_secret: Option<Password>,
    /// The password clients must give (`--requirepass`), if any. Never logged or shown.
    pub requirepass: Option<Password>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The --config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The --config file is not valid TOML with known keys.
    #[error("invalid config file {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The flag.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// A setting asks for something memdi-server cannot do yet.
    #[error("{0} is not built yet")]
    NotBuilt(&'static str),
}

impl ServerArgs {
    /// Flags over the --config file (if any).
    pub fn merged_with_file(self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = load_file(&path)?;
        Ok(self.or(file))
    }

    /// Each field from `self` if given, else from `other`.
    fn or(self, other: Self) -> Self {
        Self {
            config: self.config,
            node_id: self.node_id.or(other.node_id),
            client_addr: self.client_addr.or(other.client_addr),
            peer_addr: self.peer_addr.or(other.peer_addr),
            resp_addr: self.resp_addr.or(other.resp_addr),
            metrics_addr: self.metrics_addr.or(other.metrics_addr),
            cluster: self.cluster.or(other.cluster),
            join: self.join.or(other.join),
            recover: self.recover || other.recover,
            data_dir: self.data_dir.or(other.data_dir),
            persistence: self.persistence.or(other.persistence),
            ack: self.ack.or(other.ack),
            durability: self.durability.or(other.durability),
            fsync: self.fsync.or(other.fsync),
            snapshot_every: self.snapshot_every.or(other.snapshot_every),
            max_keys: self.max_keys.or(other.max_keys),
            max_key_bytes: self.max_key_bytes.or(other.max_key_bytes),
            max_value_bytes: self.max_value_bytes.or(other.max_value_bytes),
            max_memory: self.max_memory.or(other.max_memory),
            max_clients: self.max_clients.or(other.max_clients),
            idle_timeout_secs: self.idle_timeout_secs.or(other.idle_timeout_secs),
            client_output_limit_bytes: self
                .client_output_limit_bytes
                .or(other.client_output_limit_bytes),
            cluster_id: self.cluster_id.or(other.cluster_id),
            requirepass: self.requirepass.or(other.requirepass),
            protected_mode: self.protected_mode.or(other.protected_mode),
            log_format: self.log_format.or(other.log_format),
            cluster_secret: self.cluster_secret.or(other.cluster_secret),
        }
    }

    /// Applies defaults, checks every value, and refuses what is not built yet.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        if let Some(join) = &self.join {
            parse_host_port(join).map_err(|reason| ConfigError::Invalid {
                setting: "--join",
                reason,
            })?;
            if self.cluster.is_some() {
                return Err(invalid(
                    "--join",
                    "give either --cluster (start a new cluster with these voters) or --join (join a running one), not both",
                ));
            }
        }
        if self
            .requirepass
            .as_ref()
            .is_some_and(|password| password.expose().is_empty())
        {
            return Err(invalid(
                "--requirepass",
                "an empty password would let anyone in; give a password or leave it out",
            ));
        }
        if self
            .cluster_secret
            .as_ref()
            .is_some_and(|secret| secret.expose().is_empty())
        {
            return Err(invalid(
                "--cluster-secret",
                "an empty secret proves nothing; give a secret or leave it out",
            ));
        }
        let client_output_limit_bytes = match self.client_output_limit_bytes.unwrap_or(64 << 20) {
            0 => {
                return Err(invalid(
                    "--client-output-limit-bytes",
                    "0 would disconnect every client at its first answer",
                ))
            }
            limit => usize::try_from(limit).unwrap_or(usize::MAX),
        };
        let node_id = NodeId(self.node_id.unwrap_or(1));
        if node_id.0 == 0 {
            return Err(invalid("--node-id", "must be at least 1"));
        }
        let cluster_id = ClusterId(self.cluster_id.unwrap_or(1));
        if cluster_id.0 == 0 {
            return Err(invalid(
                "--cluster-id",
                "0 means \"any cluster\" to clients; use 1 or more",
            ));
        }
        let client_addr = self
            .client_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7379)));
        let peer_addr = self
            .peer_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7380)));
        let voters = match (&self.cluster, &self.join) {
            // Joining: the membership comes from the cluster.
            (None, Some(_)) => BTreeMap::new(),
            (None, None) => BTreeMap::from([(node_id, peer_addr)]),
            (Some(spec), _) => {
                parse_cluster(spec).map_err(|reason| invalid("--cluster", reason))?
            }
        };
        if self.join.is_some() && peer_addr.ip().is_unspecified() {
            return Err(invalid(
                "--peer-addr",
                format!(
                    "with --join the members dial this node at its --peer-addr, so it must be an address they can reach, not {peer_addr}"
                ),
            ));
        }
        if self.join.is_none() && !voters.contains_key(&node_id) {
            return Err(invalid(
                "--cluster",
                format!("it must include this node (--node-id {})", node_id.0),
            ));
        }
        if self.recover && (self.join.is_some() || voters.len() < 3) {
            return Err(invalid(
                "--recover",
                "it needs --cluster naming at least three voters: a recovering node must hear from a majority of the others before it votes again (with two voters the other could never be elected without it). A node that joined with --join and lost its data must be removed (memdi cluster leave ID) and added again with an empty data directory",
            ));
        }
        let persistence = self.persistence.unwrap_or(Persistence::Disk);
        if persistence == Persistence::None {
            if self.join.is_some() || voters.len() > 1 {
                return Err(invalid(
                    "--persistence none",
                    "it is for a single node: a voter that forgets its vote and its log at a restart could help elect a leader that lacks a write a majority acknowledged (docs/protocol.md 4.10)",
                ));
            }
            if self.durability == Some(DurabilityFlag::Disk) {
                return Err(invalid(
                    "--durability disk",
                    "it needs the log on disk, and --persistence none keeps nothing there",
                ));
            }
        }
        if voters.len() > memdi_core::cluster::MAX_MEMBERS {
            return Err(invalid(
                "--cluster",
                format!("at most {} members", memdi_core::cluster::MAX_MEMBERS),
            ));
        }
        let requirepass = self.requirepass;
        if requirepass.is_none() && self.protected_mode != Some(YesNo::No) {
            refuse_open_client_ports(client_addr, self.resp_addr)?;
        }
        let store_limits = StoreLimits {
            max_keys: self.max_keys.unwrap_or(1_000_000),
            max_key_bytes: self.max_key_bytes.unwrap_or(512),
            max_value_bytes: self.max_value_bytes.unwrap_or(1 << 20),
            max_total_bytes: self.max_memory.unwrap_or(1 << 30),
        };
        store_limits
            .memory_bytes()
            .map_err(|error| invalid("store limits", format!("{error:?}")))?;
        Ok(ServerConfig {
            node_id,
            cluster_id,
            client_addr,
            peer_addr,
            voters,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./memdi-data")),
            persistence,
            default_ack: self.ack.unwrap_or(AckFlag::Leader).into(),
            default_durability: self.durability.unwrap_or(DurabilityFlag::Memory).into(),
            fsync: self.fsync.unwrap_or(FsyncPolicy::Everysec),
            snapshot_every_secs: self.snapshot_every.unwrap_or(60),
            store_limits,
            max_clients: self.max_clients.unwrap_or(10_000).max(1),
            idle_timeout_ms: self.idle_timeout_secs.unwrap_or(300).saturating_mul(1000),
            client_output_limit_bytes,
            join: self.join,
            recover: self.recover,
            resp_addr: self.resp_addr,
            metrics_addr: self.metrics_addr,
            log_format: self.log_format.unwrap_or_default(),
            cluster_secret: self.cluster_secret,
            requirepass,
        })
    }
}

/// Protected mode: with no password, a client port on an address other than loopback
/// would let anyone who can reach the machine read and write every key.
fn refuse_open_client_ports(
    client_addr: SocketAddr,
    resp_addr: Option<SocketAddr>,
) -> Result<(), ConfigError> {
    let ports = [
        ("--client-addr", Some(client_addr)),
        ("--resp-addr", resp_addr),
    ];
    for (setting, addr) in ports {
        let Some(addr) = addr else { continue };
        if !addr.ip().is_loopback() {
            return Err(invalid(
                setting,
                format!(
                    "protected mode: {addr} is not a loopback address and no --requirepass is set, so anyone who can reach this machine could read and write every key. Set --requirepass <secret> (clients then authenticate), bind to 127.0.0.1 or ::1, or, if a firewall already keeps strangers out, start with --protected-mode no"
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

fn load_file(path: &Path) -> Result<ServerArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// `host:port` with a numeric port (host names are resolved when used).
fn parse_host_port(text: &str) -> Result<(), String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("{text:?} is not host:port")),
    }
}

/// `1=127.0.0.1:7380,2=127.0.0.1:7382`.
pub fn parse_cluster(spec: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut voters = BTreeMap::new();
    for item in spec
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        if id == 0 {
            return Err("node ids start at 1".into());
        }
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an ip:port address"))?;
        if voters.insert(NodeId(id), addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if voters.is_empty() {
        return Err("no members".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ServerArgs {
        ServerArgs::try_parse_from(std::iter::once("memdi-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn no_flags_give_a_single_node_on_the_default_ports() {
        let config = parse(&[]).resolve().unwrap();
        assert_eq!(config.node_id, NodeId(1));
        assert_eq!(config.client_addr.to_string(), "127.0.0.1:7379");
        assert_eq!(config.voters.len(), 1);
        assert_eq!(config.data_dir, PathBuf::from("./memdi-data"));
        assert_eq!(config.snapshot_every_secs, 60);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memdi.toml");
        std::fs::write(
            &path,
            "node-id = 2\nmax-keys = 10\ncluster = \"1=127.0.0.1:1,2=127.0.0.1:2\"\nack = \"quorum\"\n",
        )
        .unwrap();
        let args = parse(&["--config", path.to_str().unwrap(), "--max-keys", "20"]);
        let config = args.merged_with_file().unwrap().resolve().unwrap();
        assert_eq!(config.node_id, NodeId(2));
        assert_eq!(config.store_limits.max_keys, 20);
        assert_eq!(config.default_ack, AckLevel::Quorum);
        assert_eq!(config.voters.len(), 2);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memdi.toml");
        std::fs::write(&path, "nodeid = 2\n").unwrap();
        let error = parse(&["--config", path.to_str().unwrap()])
            .merged_with_file()
            .unwrap_err();
        assert!(error.to_string().contains("memdi.toml"), "{error}");
    }

    #[test]
    fn bad_values_are_refused_clearly() {
        let error = parse(&["--cluster-secret", ""]).resolve().unwrap_err();
        assert!(error.to_string().contains("empty secret"), "{error}");
        let error = parse(&["--client-output-limit-bytes", "0"])
            .resolve()
            .unwrap_err();
        assert!(error.to_string().contains("first answer"), "{error}");
        let config = parse(&["--client-output-limit-bytes", "1024"])
            .resolve()
            .unwrap();
        assert_eq!(config.client_output_limit_bytes, 1024);
        let config = parse(&["--cluster-secret", "peer-s3cret"])
            .resolve()
            .unwrap();
        assert!(!format!("{config:?}").contains("peer-s3cret"));
        assert!(matches!(
            parse(&["--join", "nonsense"]).resolve(),
            Err(ConfigError::Invalid { .. })
        ));
    }

    /// The sample configuration in `deploy/` stays a valid one as flags change.
    #[test]
    fn the_sample_configuration_file_is_accepted() {
        let file: ServerArgs = toml::from_str(include_str!("../../deploy/memdi.toml")).unwrap();
        let config = file.resolve().unwrap();
        assert_eq!(config.node_id, NodeId(1));
        assert_eq!(config.voters.len(), 3);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.metrics_addr.is_some() && config.resp_addr.is_some());
        assert!(config.cluster_secret.is_some() && config.requirepass.is_some());
        assert_eq!(config.persistence, Persistence::Disk);
    }

    #[test]
    fn requirepass_is_taken_from_flags_and_file_and_never_printed() {
        let config = parse(&["--requirepass", "s3cret-pw"]).resolve().unwrap();
        let password = config.requirepass.as_ref().unwrap();
        assert_eq!(password.expose(), b"s3cret-pw");
        assert!(!format!("{config:?}").contains("s3cret-pw"));
        assert!(!format!("{:?}", parse(&["--requirepass", "s3cret-pw"])).contains("s3cret-pw"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memdi.toml");
        std::fs::write(
            &path,
            "requirepass = \"from-file\"\nprotected-mode = \"no\"\n",
        )
        .unwrap();
        let args = parse(&["--config", path.to_str().unwrap()]);
        let config = args.merged_with_file().unwrap().resolve().unwrap();
        assert_eq!(config.requirepass.unwrap().expose(), b"from-file");
        assert!(matches!(
            parse(&["--requirepass", ""]).resolve(),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn protected_mode_refuses_open_client_ports_without_a_password() {
        for args in [
            &["--client-addr", "0.0.0.0:7379"][..],
            &["--client-addr", "[::]:7379"],
            &["--client-addr", "192.0.2.1:7379"],
            &["--resp-addr", "0.0.0.0:6379"],
            &["--resp-addr", "0.0.0.0:6379", "--protected-mode", "yes"],
        ] {
            let error = parse(args).resolve().unwrap_err();
            let text = error.to_string();
            assert!(text.contains("protected mode"), "{args:?}: {text}");
            assert!(text.contains("--protected-mode no"), "{text}");
            assert!(text.contains("--requirepass"), "{text}");
        }
        for args in [
            &["--client-addr", "0.0.0.0:7379", "--protected-mode", "no"][..],
            &["--client-addr", "0.0.0.0:7379", "--requirepass", "pw"],
            &["--resp-addr", "[::]:6379", "--requirepass", "pw"],
            &[
                "--client-addr",
                "127.0.0.2:7379",
                "--resp-addr",
                "[::1]:6379",
            ],
            // The peer port is for nodes, not clients: --cluster-secret guards it.
            &["--peer-addr", "0.0.0.0:7380"],
        ] {
            assert!(parse(args).resolve().is_ok(), "{args:?}");
        }
    }

    #[test]
    fn join_starts_with_no_voters_and_refuses_what_cannot_work() {
        let config = parse(&[
            "--node-id",
            "4",
            "--join",
            "127.0.0.1:7380",
            "--peer-addr",
            "127.0.0.1:7386",
        ])
        .resolve()
        .unwrap();
        assert!(config.voters.is_empty());
        assert_eq!(config.join.as_deref(), Some("127.0.0.1:7380"));
        for args in [
            &["--join", "127.0.0.1:7380", "--cluster", "1=127.0.0.1:7380"][..],
            &["--join", "127.0.0.1:7380", "--peer-addr", "0.0.0.0:7386"],
        ] {
            assert!(
                matches!(parse(args).resolve(), Err(ConfigError::Invalid { .. })),
                "{args:?}"
            );
        }
    }

    #[test]
    fn durability_and_fsync_flags_are_taken() {
        let config = parse(&["--durability", "disk", "--fsync", "always"])
            .resolve()
            .unwrap();
        assert_eq!(config.default_durability, Durability::Disk);
        assert_eq!(config.fsync, FsyncPolicy::Always);
        let config = parse(&[]).resolve().unwrap();
        assert_eq!(config.default_durability, Durability::Memory);
        assert_eq!(config.fsync, FsyncPolicy::Everysec);
        assert!(ServerArgs::try_parse_from(["memdi-server", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn persistence_none_is_for_a_single_node_without_disk_durability() {
        assert_eq!(parse(&[]).resolve().unwrap().persistence, Persistence::Disk);
        let config = parse(&["--persistence", "none"]).resolve().unwrap();
        assert_eq!(config.persistence, Persistence::None);
        for args in [
            &[
                "--persistence",
                "none",
                "--cluster",
                "1=127.0.0.1:7380,2=127.0.0.1:7382",
            ][..],
            &["--persistence", "none", "--join", "127.0.0.1:7382"],
            &["--persistence", "none", "--durability", "disk"],
        ] {
            assert!(
                matches!(parse(args).resolve(), Err(ConfigError::Invalid { .. })),
                "{args:?}"
            );
        }
    }

    #[test]
    fn cluster_lists_are_checked() {
        assert!(parse_cluster("1=127.0.0.1:1, 2=127.0.0.1:2").is_ok());
        assert!(parse_cluster("1=127.0.0.1:1,1=127.0.0.1:2").is_err());
        assert!(parse_cluster("x=127.0.0.1:1").is_err());
        assert!(parse_cluster("1=nowhere").is_err());
        assert!(parse(&["--node-id", "3", "--cluster", "1=127.0.0.1:1"])
            .resolve()
            .is_err());
    }
}
