//! The server: rebuilds the core's node from the data directory (snapshot and log), binds
//! the listeners, and runs the node task, the disk writer and the connection tasks until
//! shutdown.
//!
//! Start-up is split in two: [`Prepared::new`] is synchronous (it allocates the store once,
//! loads the snapshot, replays the log and builds the node, which is large, on an ordinary
//! thread stack) and [`Prepared::run`] is the async part.

mod client_conn;
mod disk_link;
pub mod disk_writer;
mod frames;
mod info;
mod join;
pub mod metrics;
mod node_task;
mod password_gate;
mod peer_link;
mod peer_secret;
mod peer_set;
#[cfg(test)]
mod persist_tests;
pub mod recovery_marker;
mod request_ids;
mod resp_conn;
pub mod restore;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use memdi_core::cluster::{Log, LogLimits, Node, NodeConfig};
use memdi_core::store::{Store, StoreInitError};
use memdi_core::wire::{NodeId, DEFAULT_MAX_FRAME_BYTES};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Persistence, ServerConfig};
use crate::resp::parse::ParseLimits;
use crate::resp::NodeFacts;

/// A map keyed by numbers this node hands out itself (connection ids, tickets, request
/// ids), hashed with a fixed fast hasher: no client chooses its keys, so SipHash's
/// defence against chosen keys bought nothing and cost 2% of a pipelined write's CPU.
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Requests that may wait at once on a server node (quorum writes, reads being confirmed,
/// forwarded requests, requests waiting for a leader).
pub const TICKETS: usize = 4096;
/// The core's node as this shell instantiates it.
pub type CoreNode = Node<Vec<u8>, Vec<u8>, TICKETS>;
/// Queue of inputs to the node task.
const INPUT_QUEUE: usize = 8192;
/// Most entries in the replication log (a bounded backlog, as Redis's).
const LOG_ENTRIES: u32 = 1 << 16;
/// Bytes of the replication log, at least.
const LOG_BYTES: u32 = 64 << 20;
/// Most entries in the replication log of a node without a disk (`--persistence none`).
const DISKLESS_LOG_ENTRIES: u32 = 1 << 12;
/// Bytes of that log, at least.
const DISKLESS_LOG_BYTES: u32 = 1 << 20;
/// Bytes of the undo journal (what a leader's uncommitted writes overwrote, so that a
/// deposed leader rolls back instead of waiting for a snapshot): as much as the log, which
/// bounds the writes a leader holds uncommitted. Pages are touched only when used.
const UNDO_BYTES: usize = 64 << 20;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be built with these limits.
    #[error("invalid store limits: {0:?}")]
    StoreLimits(StoreInitError),
    /// The snapshot and log on disk cannot rebuild the node.
    #[error(transparent)]
    Restore(#[from] restore::RestoreFilesError),
    /// The log cannot be opened for appending.
    #[error("cannot open log in {path}: {source}")]
    OpenLog {
        /// The data directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--recover` (or its marker) could not be honoured.
    #[error(transparent)]
    Recover(#[from] recovery_marker::RecoverError),
    /// The disk writer failed: what the node acknowledged after it may not be on disk.
    #[error("{0}")]
    Disk(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The final snapshot could not be written (its records went to the log).
    #[error("final snapshot not written: {0}")]
    FinalSnapshot(String),
    /// Started with `--join`, but the data directory says this node was removed from the
    /// cluster: its log is behind the cluster's and must not come back.
    #[error("node {0} was removed from the cluster (its data directory says so): to add it again, start it with an empty --data-dir or a new --node-id")]
    Removed(u64),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Sizes of frames and appends, derived from the largest record the store accepts: an
/// `Append` must carry at least one whole entry, and a frame one whole `Append` (the core's
/// output buffer holds a frame plus as much again as scratch).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    max_frame_bytes: u32,
    max_append_bytes: usize,
}

impl Sizes {
    fn for_config(config: &ServerConfig) -> Self {
        let record = config.store_limits.max_key_bytes as usize
            + config.store_limits.max_value_bytes as usize
            + 1024;
        let max_append_bytes = (256 * 1024).max(record);
        let max_frame = (DEFAULT_MAX_FRAME_BYTES as usize).max(max_append_bytes * 2 + 64 * 1024);
        Self {
            max_frame_bytes: u32::try_from(max_frame).unwrap_or(u32::MAX),
            max_append_bytes,
        }
    }
}

/// A node ready to run: store loaded, node built, nothing bound yet.
#[derive(Debug)]
pub struct Prepared {
    config: ServerConfig,
    node: Box<CoreNode>,
    log_base_index: u64,
    log_bytes: u64,
    clock: Clock,
    sizes: Sizes,
    /// Started recovering (`--recover`, or its marker): the node task removes the marker
    /// once the node has recovered and saved a snapshot.
    recovering: bool,
}

impl Prepared {
    /// Allocates the store and the log, and rebuilds the node from the snapshot and the
    /// log in the data directory (refusing damaged files by name). Blocking.
    pub fn new(config: ServerConfig) -> Result<Self, ServerError> {
        let on_disk = config.persistence == Persistence::Disk;
        if on_disk {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        }
        let limits = config.store_limits;
        let memory_bytes = limits.memory_bytes().map_err(ServerError::StoreLimits)?;
        // One allocation for the store's whole life; zeroed pages are committed by the OS
        // only when first written.
        let hash_seed = std::collections::hash_map::RandomState::new();
        let hash_seed = std::hash::BuildHasher::hash_one(&hash_seed, config.node_id.0);
        let store = Store::new(vec![0; memory_bytes], limits, hash_seed)
            .map_err(ServerError::StoreLimits)?;
        let sizes = Sizes::for_config(&config);
        // A node that keeps nothing on disk is a lone node: its log only has to hold the
        // entries a node added later might catch up from (one further behind gets a
        // snapshot), as Redis's replication backlog (1 MB by default) does. A small ring
        // (4 MiB with the default 1 MiB values: room for four of the largest entries)
        // also keeps the entry each write discards in the processor's caches.
        let (log_entries, log_bytes) = if on_disk {
            (LOG_ENTRIES, LOG_BYTES)
        } else {
            (DISKLESS_LOG_ENTRIES, DISKLESS_LOG_BYTES)
        };
        let log_limits = LogLimits {
            max_entries: log_entries,
            max_bytes: log_bytes.max(u32::try_from(sizes.max_append_bytes * 4).unwrap_or(u32::MAX)),
        };
        let log = Log::new(vec![0; log_limits.memory_bytes()], log_limits)
            .expect("log limits are constants above zero");
        let voters: Vec<NodeId> = config.voters.keys().copied().collect();
        let mut node_config = NodeConfig::new(config.node_id, config.cluster_id, &voters);
        for (&id, addr) in &config.voters {
            // Recorded in the membership, so that nodes added later can dial the voters.
            node_config
                .set_address(id, addr.to_string().as_bytes())
                .expect("a socket address is shorter than 64 bytes");
        }
        node_config.default_ack = config.default_ack;
        node_config.default_durability = config.default_durability;
        // The log is what keeps the term, the vote and the acknowledged entries across
        // restarts (docs/protocol.md 4.8); --fsync only says how often it is synced. Without
        // it (--persistence none, a single node only) the core asks for no records, refuses
        // `durability: disk` and `Save`, and answers as soon as it applies a write.
        node_config.persistent = on_disk;
        node_config.rng_seed = hash_seed ^ config.node_id.0;
        node_config.max_append_bytes = sizes.max_append_bytes;
        node_config.max_frame_bytes = sizes.max_frame_bytes;
        let clock = Clock::start();
        let recovering = on_disk && recovery_marker::prepare(&config.data_dir, config.recover)?;
        let mut restored = if !on_disk {
            restore::Restored {
                node: Box::new(CoreNode::new(node_config, store, log, clock.now_ms())),
                log_base_index: 0,
                log_bytes: 0,
            }
        } else if recovering {
            if config.voters.len() < 3 {
                return Err(ServerError::Recover(
                    recovery_marker::RecoverError::TooFewVoters {
                        path: recovery_marker::marker_path(&config.data_dir),
                    },
                ));
            }
            tracing::warn!(
                "recovering after a loss of state ({} is in the data directory): this node votes again once a majority of the voters has told it their terms and it holds what the leader committed",
                recovery_marker::MARKER_FILE
            );
            restore::Restored {
                node: Box::new(CoreNode::restarted_without_state(
                    node_config,
                    store,
                    log,
                    clock.now_ms(),
                )),
                log_base_index: 0,
                log_bytes: 0,
            }
        } else {
            restore::restore(&config.data_dir, store, log, node_config, clock.now_ms())?
        };
        restored.node.set_undo_memory(vec![0; UNDO_BYTES]);
        if config.join.is_some()
            && join::JoinPlan::for_node(config.node_id, restored.node.membership())
                == join::JoinPlan::Refuse
        {
            return Err(ServerError::Removed(config.node_id.0));
        }
        Ok(Self {
            config,
            node: restored.node,
            log_base_index: restored.log_base_index,
            log_bytes: restored.log_bytes,
            clock,
            sizes,
            recovering,
        })
    }

    /// Binds the listeners and serves until `shutdown` completes (SIGTERM or SIGINT in the
    /// binary), then stops accepting, finishes the requests in flight, writes the final
    /// snapshot and returns.
    pub async fn run(self, shutdown_signal: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Self {
            config,
            node,
            log_base_index,
            log_bytes,
            clock,
            sizes,
            recovering,
        } = self;
        let (disk, disk_thread) = match config.persistence {
            Persistence::Disk => {
                let writer =
                    disk_writer::DiskWriter::open(&config.data_dir, log_base_index, config.fsync)
                        .map_err(|source| ServerError::OpenLog {
                        path: config.data_dir.clone(),
                        source,
                    })?;
                let direct_log = writer.direct_log();
                let (disk_jobs, jobs) = std::sync::mpsc::channel();
                let (reports, disk_reports) = mpsc::unbounded_channel();
                let disk_thread = std::thread::Builder::new()
                    .name("memdi-disk".into())
                    .spawn(move || writer.run(jobs, reports))
                    .map_err(|source| ServerError::OpenLog {
                        path: config.data_dir.clone(),
                        source,
                    })?;
                let disk = node_task::DiskLink::new(disk_jobs, disk_reports, log_bytes, direct_log);
                (disk, Some(disk_thread))
            }
            Persistence::None => (node_task::DiskLink::in_memory(), None),
        };
        let snapshot_every_secs = match config.persistence {
            Persistence::Disk => config.snapshot_every_secs,
            Persistence::None => 0,
        };
        let bind = |what, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { what, addr, source })
        };
        let client_listener = bind("--client-addr", config.client_addr).await?;
        let peer_listener = bind("--peer-addr", config.peer_addr).await?;
        let resp_listener = match config.resp_addr {
            Some(addr) => Some(bind("--resp-addr", addr).await?),
            None => None,
        };
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(bind("--metrics-addr", addr).await?),
            None => None,
        };
        let leader_now = Arc::new(AtomicBool::new(false));
        let quorum_now = Arc::new(std::sync::atomic::AtomicUsize::new(
            node.membership().voter_count() / 2 + 1,
        ));
        // As in Redis, LASTSAVE starts at the server's start (its data was loaded then).
        let started_unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let last_save_unix_secs = Arc::new(AtomicU64::new(started_unix_secs));
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (inputs, receiver) = mpsc::channel(INPUT_QUEUE);

        let cluster_secret = config.cluster_secret.clone().map(Arc::new);
        let mut peers = peer_set::PeerSet::new(
            config.node_id,
            config.cluster_id,
            sizes.max_frame_bytes,
            inputs.clone(),
            shutdown.clone(),
            tasks.clone(),
            cluster_secret.clone(),
        );
        // The membership restored from disk (or the bootstrap voters), with its addresses;
        // later changes arrive as core events.
        peers.follow(node.membership(), |_| false);
        let clients = client_conn::ClientGate::new(client_conn::ClientSettings {
            inputs: inputs.clone(),
            max_frame_bytes: sizes.max_frame_bytes,
            idle_timeout_ms: config.idle_timeout_ms,
            max_clients: config.max_clients,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            password: config.requirepass.clone().map(Arc::new),
        });
        tasks.spawn(peer_link::accept_loop(
            peer_listener,
            inputs.clone(),
            sizes.max_frame_bytes,
            shutdown.clone(),
            tasks.clone(),
            clients.clone(),
            peer_link::Identity {
                me: config.node_id,
                cluster_id: config.cluster_id,
                secret: cluster_secret,
            },
        ));
        tasks.spawn(client_conn::accept_loop(client_listener, clients));
        let join_inputs = inputs.clone();
        if let (Some(listener), Some(resp_addr)) = (resp_listener, config.resp_addr) {
            let limits = config.store_limits;
            let facts = NodeFacts {
                node_id: config.node_id,
                quorum: quorum_now.clone(),
                slot_count: limits.slot_count(),
                max_keys: limits.max_keys,
                max_value_bytes: limits.max_value_bytes,
                max_total_bytes: limits.max_total_bytes,
                max_clients: config.max_clients,
                idle_timeout_secs: config.idle_timeout_ms / 1000,
                snapshot_every_secs,
                resp_addr,
                started: std::time::Instant::now(),
                leader_now: leader_now.clone(),
                connected_clients: AtomicU64::new(0),
                connections_received: AtomicU64::new(0),
                commands_processed: AtomicU64::new(0),
                requirepass: config.requirepass.clone(),
            };
            let max_frame = sizes.max_frame_bytes as usize;
            tasks.spawn(resp_conn::accept_loop(
                listener,
                resp_conn::RespSettings {
                    inputs: inputs.clone(),
                    facts: Arc::new(facts),
                    limits: ParseLimits {
                        max_bulk_bytes: (limits.max_value_bytes.max(limits.max_key_bytes)) as usize,
                        max_args: 1 << 20,
                        max_inline_bytes: 64 * 1024,
                        max_request_bytes: max_frame / 2,
                    },
                    max_frame_bytes: sizes.max_frame_bytes,
                    output_limit_bytes: config.client_output_limit_bytes,
                    shutdown: shutdown.clone(),
                    tasks: tasks.clone(),
                },
            ));
            tracing::info!("serving Redis clients (RESP2) on {resp_addr}");
        }
        let facts = Arc::new(metrics::MetricsFacts {
            node_id: config.node_id,
            started: std::time::Instant::now(),
            max_keys: config.store_limits.max_keys,
            max_total_bytes: config.store_limits.max_total_bytes,
        });
        if let (Some(listener), Some(addr)) = (metrics_listener, config.metrics_addr) {
            tasks.spawn(metrics::accept_loop(
                listener,
                inputs.clone(),
                facts.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
            tracing::info!("serving metrics on {}", metrics::describe(addr));
        }
        drop(inputs);
        let data_where = match config.persistence {
            Persistence::Disk => format!("data in {}", config.data_dir.display()),
            Persistence::None => "nothing on disk (--persistence none)".to_owned(),
        };
        tracing::info!(
            "memdi-server node {} of cluster {} ({} voters) serving clients on {}, peers on {}, {data_where}",
            config.node_id.0,
            config.cluster_id.0,
            config.voters.len(),
            config.client_addr,
            config.peer_addr,
        );
        let node_task = node_task::NodeTask {
            node,
            clock,
            inputs: receiver,
            peers,
            disk,
            snapshot_every_secs,
            shutdown: shutdown.clone(),
            out: vec![0; 2 * (sizes.max_frame_bytes as usize + 64)],
            clients: IdMap::default(),
            client_out: IdMap::default(),
            held: IdMap::default(),
            facts,
            recovery: recovering.then(|| node_task::MarkerRemoval::waiting(&config.data_dir)),
            checkpoint_in_flight: None,
            disk_failed: None,
            store_replaced_checkpoint: None,
            saves: Vec::new(),
            resp_saves: Vec::new(),
            leader_now,
            quorum_now,
            last_save_unix_secs,
            mutations_at_save: 0,
            counters: metrics::Counters::default(),
            client_output_limit_bytes: config.client_output_limit_bytes,
        };
        let node_handle = tokio::spawn(node_task.run());
        if let Some(seed) = config.join.clone() {
            tasks.spawn(join::run(
                seed,
                config.node_id,
                config.peer_addr.to_string(),
                join_inputs,
                shutdown.clone(),
                config.requirepass.clone(),
            ));
        }
        tokio::pin!(shutdown_signal);
        tokio::select! {
            _ = &mut shutdown_signal => {
                tracing::info!("shutting down: no new connections or requests; finishing requests in flight");
                shutdown.cancel();
            }
            _ = shutdown.cancelled() => {}
        }
        let result = node_handle
            .await
            .unwrap_or_else(|join| panic!("the node task panicked: {join}"));
        // The node task dropped its sender: the writer fsyncs and ends.
        if let Some(disk_thread) = disk_thread {
            let joined = tokio::task::spawn_blocking(move || disk_thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the disk writer panicked");
            }
        }
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish writing within 2 s");
        }
        result?;
        tracing::info!("memdi-server node {} stopped", config.node_id.0);
        Ok(())
    }
}
