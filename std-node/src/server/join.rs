//! `--join`: asking a running cluster, through any member's peer address, to add this node.
//!
//! The request is the client protocol's `AddMember` (the member forwards it to the leader),
//! sent on the member's peer port, which serves a connection that greets it as a client.
//! The leader adds the node as a learner and promotes it once it holds every key; the
//! members then dial this node at the address announced here (its `--peer-addr`). Adding a
//! member that is already one at the same address changes nothing, so a restarted node may
//! ask again.

use std::time::Duration;

use memdi_core::cluster::Membership;
use memdi_core::wire::{ErrorCode, NodeId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::node_task::Input;

use crate::client::{Client, ClientError, ClientOptions, Password};

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a node started with `--join` does, given the membership it restored from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinPlan {
    /// It knows no cluster yet: ask to be added.
    Ask,
    /// It is a member already (a restart): ask again, which changes nothing unless its
    /// address changed.
    Confirm,
    /// It was a member and was removed: it must not come back with its old log, which the
    /// cluster has moved past (docs/protocol.md 4.9).
    Refuse,
}

impl JoinPlan {
    /// The plan for node `me` whose restored membership is `membership`.
    pub fn for_node(me: NodeId, membership: &Membership) -> Self {
        if membership.is_empty() {
            Self::Ask
        } else if membership.get(me).is_some() {
            Self::Confirm
        } else {
            Self::Refuse
        }
    }
}

/// Asks `seed` to add node `me` at peer address `address`, retrying until it is done, the
/// cluster refuses for good, or the node shuts down.
///
/// The answer carries the membership with the members' addresses: it goes to the node task,
/// which dials them at once. This node's own log tells it the membership only once the
/// leader's entries reach it, and they reach it only if it can answer the leader.
pub async fn run(
    seed: String,
    me: NodeId,
    address: String,
    inputs: mpsc::Sender<Input>,
    shutdown: CancellationToken,
    password: Option<Password>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let attempt = async {
            // A cluster with a password takes joins only from nodes that know it (the
            // member's peer port gates client greetings as its client port does).
            let options = ClientOptions {
                password: password.clone(),
                ..ClientOptions::default()
            };
            let client = Client::connect_with(&seed, options).await?;
            client.add_member(me.0, &address).await
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = attempt => result,
        };
        match result {
            Ok((index, membership)) => {
                let _ = inputs.send(Input::Members(membership)).await;
                tracing::info!(
                    "joined the cluster through {seed}: node {} is a member at {address} (membership entry {index}); it becomes a voter once it holds every key",
                    me.0
                );
                return;
            }
            Err(ClientError::Server {
                code:
                    ErrorCode::Unsupported
                    | ErrorCode::Malformed
                    | ErrorCode::WrongPassword
                    | ErrorCode::AuthRequired,
                detail,
            }) => {
                tracing::error!(
                    "the cluster refused to add node {} through {seed}: {detail}",
                    me.0
                );
                return;
            }
            Err(error) => {
                tracing::warn!("cannot join through {seed} yet: {error}; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_node_does_not_ask_again() {
        let me = NodeId(4);
        assert_eq!(JoinPlan::for_node(me, &Membership::empty()), JoinPlan::Ask);
        let with_me = Membership::empty().with(me, false, b"h:1").unwrap();
        assert_eq!(JoinPlan::for_node(me, &with_me), JoinPlan::Confirm);
        let without_me = Membership::empty().with(NodeId(1), true, b"h:2").unwrap();
        assert_eq!(JoinPlan::for_node(me, &without_me), JoinPlan::Refuse);
    }
}
