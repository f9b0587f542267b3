//! The cluster logic: elections, replication, client requests, as a sans-IO state machine.
//!
//! A [`Node`] is one member of a cluster. It owns the [`Store`](crate::store::Store) and a
//! bounded [`Log`], and is driven by its shell through `handle_*` calls (frames from peers
//! and clients, timeouts), each given the current time, and drained through `poll_*` calls
//! (frames for peers, ends of waiting requests, events to log). The protocol and the
//! argument for each guarantee are in docs/protocol.md.

mod clock;
mod command;
mod config;
mod election;
mod handover;
mod log;
mod membership;
mod node;
mod persist;
mod reconfigure;
mod recovery;
mod replication;
mod requests;
mod rng;
mod snapshot_transfer;
mod status;
#[cfg(test)]
mod test_support;
mod tickets;
mod undo;

pub use command::{ApplyError, Command, Pairs};
pub use config::{NodeConfig, MAX_MEMBERS};
pub use log::{AppendError, Log, LogInitError, LogLimits};
pub use membership::{
    Member, Membership, MembershipError, MAX_ADDRESS_BYTES, MAX_MEMBERSHIP_BYTES,
};
pub use node::{MemberStatus, Node, NodeEvent, PeerAction, Role};
pub use persist::{Checkpoint, HardState, Persist, Restore, RestoreError};
pub use requests::ClientAction;
pub use tickets::{Ticket, TicketEvent};

#[cfg(test)]
mod tests {
    /// Requests that may wait at once on a board (the default for the embedded shell).
    const BOARD_TICKETS: usize = 32;

    /// The cluster state of a node (everything but the store's and log's buffers, which the
    /// caller sizes) must fit a board's RAM with room to spare: an RP2040 has 264 KiB.
    #[test]
    fn cluster_state_fits_a_board() {
        type BoardNode = super::Node<&'static mut [u8], &'static mut [u8], BOARD_TICKETS>;
        let bytes = core::mem::size_of::<BoardNode>();
        std::println!("cluster state of a node (up to {} members, {BOARD_TICKETS} waiting requests): {bytes} bytes", super::MAX_MEMBERS);
        assert!(bytes <= 20 * 1024, "cluster state grew to {bytes} bytes");
    }
}
