//! What a node is told at start: who it is, whom it starts with, where it listens.

use memdi_core::wire::AckLevel;

/// A node's settings: flags on the host, constants generated from a file at build time on a
/// board.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// This node's id, unique in the cluster.
    pub node_id: u64,
    /// The cluster's id (memdi-server's `--cluster-id`, 1 unless set).
    pub cluster_id: u64,
    /// The voters a new cluster starts with and their peer addresses (`IPv4:port`), this
    /// node included: memdi-server's `--cluster`. Empty for a node that waits to be added.
    pub voters: &'a [(u64, &'a str)],
    /// Port of native clients (memdi-server's `--client-addr`).
    pub client_port: u16,
    /// Port of the other members (memdi-server's `--peer-addr`).
    pub peer_port: u16,
    /// Seeds election jitter and the store's hash: draw it from a hardware source.
    pub rng_seed: u64,
    /// The acknowledgement writes get when the request does not ask.
    pub default_ack: AckLevel,
    /// memdi-server's `--requirepass`: clients (on either port) must send `Auth` with it
    /// before anything but their hello is served. Peers are not asked for it.
    pub password: Option<&'a str>,
    /// memdi-server's `--cluster-secret`: peers prove it both ways (HMAC challenge and
    /// response, docs/protocol.md, "Peer authentication") before anything else.
    pub cluster_secret: Option<&'a str>,
    /// Fills a buffer with unpredictable bytes (the nonces of the cluster-secret exchange:
    /// predictable ones would let a node that saw an exchange impersonate a peer). The
    /// OS's randomness on the host, the ring oscillator on an RP2040.
    pub random: fn(&mut [u8]),
}
