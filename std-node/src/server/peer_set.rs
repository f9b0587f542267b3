//! The outgoing links to the other members, kept in step with the core's membership.
//!
//! The membership lives in the core's log (members join and leave while the node runs), so
//! the set of peers to dial is not fixed at start: after the core reports a membership
//! change, the node task asks this set to dial every member it does not dial yet (at the
//! address recorded in the membership) and to hang up on nodes that are no longer members.
//! A bootstrap voter's address comes from `--cluster`; a joined node's from its `--join`.

use std::sync::Arc;

use crate::secret::Password;
use std::collections::BTreeMap;

use memdi_core::cluster::Membership;
use memdi_core::wire::{ClusterId, NodeId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node_task::Input;
use super::peer_link::{Dialer, PEER_QUEUE};

/// One dialed peer: its frame queue and what stops its dialer.
#[derive(Debug)]
struct Link {
    frames: mpsc::Sender<Vec<u8>>,
    address: String,
    stop: CancellationToken,
}

/// The dialed peers.
#[derive(Debug)]
pub struct PeerSet {
    me: NodeId,
    cluster_id: ClusterId,
    max_frame_bytes: u32,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    links: BTreeMap<NodeId, Link>,
    /// `--cluster-secret`, which every link proves.
    secret: Option<Arc<Password>>,
}

impl PeerSet {
    /// No peers yet.
    pub fn new(
        me: NodeId,
        cluster_id: ClusterId,
        max_frame_bytes: u32,
        inputs: mpsc::Sender<Input>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        secret: Option<Arc<Password>>,
    ) -> Self {
        Self {
            secret,
            me,
            cluster_id,
            max_frame_bytes,
            inputs,
            shutdown,
            tasks,
            links: BTreeMap::new(),
        }
    }

    /// Dials `peer` at `address` ("host:port"), unless it is dialed there already.
    pub fn dial(&mut self, peer: NodeId, address: &str) {
        if peer == self.me || address.is_empty() {
            return;
        }
        if let Some(link) = self.links.get(&peer) {
            if link.address == address {
                return;
            }
            // A member that moved: hang up on the old address.
            link.stop.cancel();
        }
        let (frames, queue) = mpsc::channel(PEER_QUEUE);
        let stop = self.shutdown.child_token();
        let dialer = Dialer {
            me: self.me,
            peer,
            addr: address.to_string(),
            cluster_id: self.cluster_id,
            max_frame_bytes: self.max_frame_bytes,
            inputs: self.inputs.clone(),
            secret: self.secret.clone(),
        };
        self.tasks.spawn(dialer.run(queue, stop.clone()));
        self.links.insert(
            peer,
            Link {
                frames,
                address: address.to_string(),
                stop,
            },
        );
    }

    /// Dials every member of `membership` not dialed yet, and hangs up on nodes that are
    /// neither members nor `still_peer` (the core keeps a removed node as a peer until its
    /// removal commits). Members without an address are left as they are.
    pub fn follow(&mut self, membership: &Membership, still_peer: impl Fn(NodeId) -> bool) {
        let gone: Vec<NodeId> = self
            .links
            .keys()
            .copied()
            .filter(|&id| membership.get(id).is_none() && !still_peer(id))
            .collect();
        for id in gone {
            if let Some(link) = self.links.remove(&id) {
                tracing::info!("node {} left the cluster: no longer dialing it", id.0);
                link.stop.cancel();
            }
        }
        for member in membership.iter() {
            match std::str::from_utf8(member.address) {
                Ok(address) => self.dial(member.id, address),
                Err(_) => tracing::warn!(
                    "node {}'s address in the membership is not text; not dialing it",
                    member.id.0
                ),
            }
        }
    }

    /// The frame queue to `peer`, if it is dialed.
    pub fn get(&self, peer: &NodeId) -> Option<&mpsc::Sender<Vec<u8>>> {
        self.links.get(peer).map(|link| &link.frames)
    }
}
