//! memdi-embedded: the embassy-net shell around memdi-core.
//!
//! The same node as memdi-server (the same core, the same postcard protocol on the same
//! ports), for a microcontroller on Ethernet, or for Linux over a TAP device in tests. The
//! shell only moves bytes and time between the network and the core; every rule of the
//! protocol is in the core.
//!
//! # Shape
//!
//! [`start`] takes an [`embassy_net::Stack`] (whatever drives it: a W5500, a TAP device)
//! and spawns:
//! - the **node task**, which fires the core's timers (`Node::poll_timeout`);
//! - **connection tasks**, [`CLIENT_CONNECTIONS`](capacity::CLIENT_CONNECTIONS) on the
//!   client port and [`PEER_CONNECTIONS`](capacity::PEER_CONNECTIONS) on the peer port, each
//!   serving one connection at a time, one request at a time (a client's pipelined requests
//!   wait in its socket: replies stay in order and memory stays fixed);
//! - **dialer tasks**, one for each other member (up to [`MAX_PEERS`](capacity::MAX_PEERS)),
//!   which keep a connection open to it and write what the core sends it.
//!
//! The tasks share the node through a critical-section mutex that is never held across an
//! `await`; they wake each other with signals. Every buffer is a static array sized in
//! [`capacity`].
//!
//! # What a board lacks
//!
//! No disk: a node keeps nothing across a reset and comes back empty, catching up from the
//! leader by snapshot. Peer addresses must be IPv4 literals.

#![no_std]
#![deny(missing_docs)]

#[macro_use]
mod fmt;

pub mod capacity;
mod connection;
mod dialer;
mod node_task;
mod settings;
mod shell;

pub use settings::Settings;

use core::cell::RefCell;

use embassy_executor::{SpawnError, Spawner};
use embassy_net::Stack;
use embassy_sync::blocking_mutex::Mutex;
use memdi_core::cluster::{Log, LogLimits, Node, NodeConfig};
use memdi_core::store::{Store, StoreInitError};
use memdi_core::wire::{ClusterId, NodeId};
use static_cell::{ConstStaticCell, StaticCell};

use capacity::*;
use shell::{Context, Shell, Wakers};

/// Why [`start`] could not start the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// [`start`] was called twice: the node's memory is static and taken once.
    AlreadyStarted,
    /// The store's limits in [`capacity`] do not fit its memory.
    Store,
    /// More voters than a cluster may have, or an address longer than 64 bytes.
    Voters,
    /// A password or cluster secret longer than
    /// [`MAX_PASSWORD_BYTES`](capacity::MAX_PASSWORD_BYTES).
    Password,
    /// The executor's task pools are full.
    Spawn,
}

impl From<StoreInitError> for StartError {
    fn from(_: StoreInitError) -> Self {
        Self::Store
    }
}

impl From<SpawnError> for StartError {
    fn from(_: SpawnError) -> Self {
        Self::Spawn
    }
}

static STORE_MEMORY: ConstStaticCell<[u8; STORE_BYTES]> = ConstStaticCell::new([0; STORE_BYTES]);
static LOG_MEMORY: ConstStaticCell<[u8; LOG_BYTES]> = ConstStaticCell::new([0; LOG_BYTES]);
static UNDO_MEMORY: ConstStaticCell<[u8; UNDO_BYTES]> = ConstStaticCell::new([0; UNDO_BYTES]);
static SCRATCH: ConstStaticCell<[u8; SCRATCH_BYTES]> = ConstStaticCell::new([0; SCRATCH_BYTES]);
static HELD: ConstStaticCell<[[u8; FRAME_BUFFER_BYTES]; HELD_PEER_ANSWERS]> =
    ConstStaticCell::new([[0; FRAME_BUFFER_BYTES]; HELD_PEER_ANSWERS]);
static QUEUES: ConstStaticCell<[[u8; PEER_QUEUE_BYTES]; MAX_PEERS]> =
    ConstStaticCell::new([[0; PEER_QUEUE_BYTES]; MAX_PEERS]);
static CONTEXT: StaticCell<Context> = StaticCell::new();

/// Builds the node and spawns its tasks on `spawner`; the node then runs as long as the
/// executor does. The network stack must be up (its runner spawned by the caller), with
/// the address this node's peer address names.
pub fn start(
    spawner: Spawner,
    stack: Stack<'static>,
    settings: Settings<'_>,
) -> Result<(), StartError> {
    let (Some(store_memory), Some(log_memory), Some(undo_memory), Some(scratch)) = (
        STORE_MEMORY.try_take(),
        LOG_MEMORY.try_take(),
        UNDO_MEMORY.try_take(),
        SCRATCH.try_take(),
    ) else {
        return Err(StartError::AlreadyStarted);
    };
    let (Some(held), Some(queues)) = (HELD.try_take(), QUEUES.try_take()) else {
        return Err(StartError::AlreadyStarted);
    };
    let (Some(connection_buffers), Some(dialer_buffers)) =
        (connection::buffers(), dialer::buffers())
    else {
        return Err(StartError::AlreadyStarted);
    };
    let store = Store::new(&mut store_memory[..], STORE_LIMITS, settings.rng_seed)?;
    let log_limits = LogLimits {
        max_entries: LOG_ENTRIES,
        max_bytes: LOG_ENTRY_BYTES,
    };
    let log = Log::new(&mut log_memory[..], log_limits).map_err(|_| StartError::Store)?;
    let voters: heapless::Vec<NodeId, { memdi_core::cluster::MAX_MEMBERS }> =
        settings.voters.iter().map(|&(id, _)| NodeId(id)).collect();
    if voters.len() < settings.voters.len() {
        return Err(StartError::Voters);
    }
    let mut config = NodeConfig::new(
        NodeId(settings.node_id),
        ClusterId(settings.cluster_id),
        &voters,
    );
    for &(id, address) in settings.voters {
        config
            .set_address(NodeId(id), address.as_bytes())
            .map_err(|_| StartError::Voters)?;
    }
    config.default_ack = settings.default_ack;
    config.rng_seed = settings.rng_seed ^ settings.node_id;
    config.max_append_bytes = MAX_APPEND_BYTES;
    config.max_frame_bytes = MAX_FRAME_BYTES as u32;
    let now_ms = node_task::now_ms();
    // Every start is a restart without state (a board has no disk): the node recovers
    // before it votes, so that it cannot vote twice in a term or elect a leader missing a
    // write it acknowledged before the reset (docs/protocol.md 4.10). The first start of a
    // new cluster is no exception: the other voters elect a leader without it. A node that
    // is its cluster's only voter has nobody to recover from, and nobody to disagree with:
    // it starts afresh.
    let alone = settings.voters.len() == 1 && settings.voters[0].0 == settings.node_id;
    let mut node = if alone {
        Node::new(config, store, log, now_ms)
    } else {
        Node::restarted_without_state(config, store, log, now_ms)
    };
    node.set_undo_memory(&mut undo_memory[..]);
    let shell = Shell::new(node, &mut scratch[..], held, queues);
    let password = match settings.password {
        Some(password) => {
            Some(heapless::Vec::from_slice(password.as_bytes()).map_err(|_| StartError::Password)?)
        }
        None => None,
    };
    let cluster_secret = match settings.cluster_secret {
        Some(secret) => {
            Some(heapless::Vec::from_slice(secret.as_bytes()).map_err(|_| StartError::Password)?)
        }
        None => None,
    };
    let context = CONTEXT.init(Context {
        shell: Mutex::new(RefCell::new(shell)),
        wakers: Wakers::new(),
        stack,
        me: NodeId(settings.node_id),
        cluster_id: ClusterId(settings.cluster_id),
        client_port: settings.client_port,
        peer_port: settings.peer_port,
        password,
        cluster_secret,
        random: settings.random,
    });
    context.with(|shell| {
        shell.follow_membership(&context.wakers);
    });
    info!(
        "memdi node {} of cluster {}: clients on port {}, peers on port {}",
        settings.node_id, settings.cluster_id, settings.client_port, settings.peer_port
    );
    spawner.spawn(node_task::run(context)?);
    for (index, buffers) in connection_buffers.iter_mut().enumerate() {
        spawner.spawn(connection::run(context, index, buffers)?);
    }
    for (index, buffers) in dialer_buffers.iter_mut().enumerate() {
        spawner.spawn(dialer::run(context, index, buffers)?);
    }
    Ok(())
}
