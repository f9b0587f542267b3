//! The native protocol's `Info` answer: the node's statistics as text, in Redis's INFO
//! layout (`# Section` headers, `key:value` lines), with memdi's own names where Redis has
//! none. The RESP port's INFO (`crate::resp::info`) speaks Redis's dialect for Redis tools
//! (`role:master`, `connected_slaves`); this one says what memdi is (leader, term, follower
//! lag in log entries), from the same report of the node task as `/metrics`.

use std::fmt::Write;

use memdi_core::cluster::Role;

use super::metrics::MetricsFacts;
use crate::resp::NodeStatus;

/// The whole text. `native_clients` is the number of native client connections open.
pub fn info_text(facts: &MetricsFacts, status: &NodeStatus, native_clients: usize) -> String {
    let mut text = Text::default();
    text.header("Server");
    text.field("memdi_version", env!("CARGO_PKG_VERSION"));
    text.field("node_id", facts.node_id.0);
    text.field("process_id", std::process::id());
    text.field("uptime_in_seconds", facts.started.elapsed().as_secs());
    text.header("Clients");
    text.field("connected_clients", native_clients);
    text.header("Memory");
    text.field("used_memory", status.used_bytes);
    text.field("maxmemory", facts.max_total_bytes);
    text.header("Keyspace");
    text.field("keys", status.keys);
    text.field("keys_with_expiry", status.keys_with_expiry);
    text.field("max_keys", facts.max_keys);
    text.header("Persistence");
    text.field("last_save_time", status.last_save_unix_secs);
    text.field("changes_since_last_save", status.changes_since_save);
    text.field("snapshots_saved", status.counters.snapshots_saved);
    text.header("Replication");
    let role = match status.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::PreCandidate | Role::Candidate => "candidate",
    };
    text.field("role", role);
    text.field("term", status.term);
    text.field("leader_id", status.leader.map_or(0, |id| id.0));
    text.field("commit_index", status.commit_index);
    text.field("applied_index", status.applied_index);
    text.field("log_first_index", status.log_first_index);
    text.field("log_last_index", status.log_last_index);
    text.field(
        "log_entries",
        (status.log_last_index + 1).saturating_sub(status.log_first_index),
    );
    text.field("followers", status.followers.len());
    for (id, matched) in &status.followers {
        text.field(
            &format!("follower_{}", id.0),
            format!(
                "match_index={matched},lag_entries={}",
                status.log_last_index.saturating_sub(*matched)
            ),
        );
    }
    text.header("Stats");
    text.field("client_requests", status.counters.client_requests);
    text.field("peer_frames", status.counters.peer_frames);
    text.field("leader_changes", status.counters.leader_changes);
    text.0
}

/// INFO text being written: sections separated by a blank line, lines ending in CRLF.
#[derive(Default)]
struct Text(String);

impl Text {
    fn header(&mut self, name: &str) {
        if !self.0.is_empty() {
            self.0.push_str("\r\n");
        }
        let _ = write!(self.0, "# {name}\r\n");
    }

    fn field(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = write!(self.0, "{key}:{value}\r\n");
    }
}
