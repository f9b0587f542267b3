//! INFO and ROLE from the node's state: Redis's `key:value` layout, with `role:master` on
//! the leader and `role:slave` plus the leader's address on followers, which is how
//! clients and tools tell a primary from a replica.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use memdi_core::cluster::Role;

use super::encode::Reply;
use super::{NodeFacts, NodeStatus, REDIS_VERSION};

/// Sections INFO prints with no argument, `default` or `all`.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// The INFO text for `requested` sections (empty: the default set).
pub fn info_text(requested: &[String], facts: &NodeFacts, status: &NodeStatus) -> String {
    let all = requested.is_empty()
        || requested
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
    let mut text = String::new();
    for &section in SECTIONS {
        if all || requested.iter().any(|s| s == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            write_section(&mut text, section, facts, status);
        }
    }
    text
}

/// The leader's address as INFO and ROLE give it: its peer address (the node does not know
/// the other nodes' RESP addresses).
fn leader_address(status: &NodeStatus) -> Option<std::net::SocketAddr> {
    status
        .leader
        .and_then(|id| status.addresses.get(&id).copied())
}

fn write_section(text: &mut String, section: &str, facts: &NodeFacts, status: &NodeStatus) {
    let uptime = facts.started.elapsed().as_secs();
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        if key.starts_with('#') {
            let _ = write!(text, "{key}\r\n");
        } else {
            let _ = write!(text, "{key}:{value}\r\n");
        }
    };
    match section {
        "server" => {
            line("# Server", &"");
            line("redis_version", &REDIS_VERSION);
            line("memdi_version", &env!("CARGO_PKG_VERSION"));
            line("redis_mode", &"standalone");
            line("os", &std::env::consts::OS);
            line("arch_bits", &(usize::BITS));
            line("process_id", &std::process::id());
            line("tcp_port", &facts.resp_addr.port());
            line("uptime_in_seconds", &uptime);
            line("uptime_in_days", &(uptime / 86_400));
            line("memdi_node_id", &facts.node_id.0);
        }
        "clients" => {
            line("# Clients", &"");
            line(
                "connected_clients",
                &facts.connected_clients.load(Ordering::Relaxed),
            );
            line("maxclients", &facts.max_clients);
            line("blocked_clients", &0);
        }
        "memory" => {
            line("# Memory", &"");
            line("used_memory", &status.used_bytes);
            line("used_memory_human", &human(status.used_bytes));
            line("maxmemory", &facts.max_total_bytes);
            line("maxmemory_human", &human(facts.max_total_bytes));
            line("maxmemory_policy", &"noeviction");
        }
        "persistence" => {
            line("# Persistence", &"");
            line("loading", &0);
            line("rdb_changes_since_last_save", &status.changes_since_save);
            line("rdb_bgsave_in_progress", &0);
            line("rdb_last_save_time", &status.last_save_unix_secs);
            line("rdb_last_bgsave_status", &"ok");
            line("aof_enabled", &0);
        }
        "stats" => {
            line("# Stats", &"");
            line(
                "total_connections_received",
                &facts.connections_received.load(Ordering::Relaxed),
            );
            line(
                "total_commands_processed",
                &facts.commands_processed.load(Ordering::Relaxed),
            );
        }
        "replication" => {
            line("# Replication", &"");
            if status.role == Role::Leader {
                line("role", &"master");
                line("connected_slaves", &status.followers.len());
                for (i, (id, offset)) in status.followers.iter().enumerate() {
                    let addr = status
                        .addresses
                        .get(id)
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    let (ip, port) = addr.rsplit_once(':').unwrap_or(("", ""));
                    line(
                        &format!("slave{i}"),
                        &format!("ip={ip},port={port},state=online,offset={offset},lag=0"),
                    );
                }
            } else {
                line("role", &"slave");
                match leader_address(status) {
                    Some(addr) => {
                        line("master_host", &addr.ip());
                        line("master_port", &addr.port());
                        line("master_link_status", &"up");
                    }
                    None => {
                        line("master_host", &"");
                        line("master_port", &0);
                        line("master_link_status", &"down");
                    }
                }
            }
            line("master_repl_offset", &status.commit_index);
            line("memdi_term", &status.term);
            line(
                "memdi_leader_id",
                &status.leader.map_or(0, |leader| leader.0),
            );
        }
        "keyspace" => {
            line("# Keyspace", &"");
            if status.keys > 0 {
                line(
                    "db0",
                    &format!(
                        "keys={},expires={},avg_ttl=0",
                        status.keys, status.keys_with_expiry
                    ),
                );
            }
        }
        _ => {}
    }
}

fn human(bytes: u64) -> String {
    const UNITS: &[(u64, &str)] = &[(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for &(size, unit) in UNITS {
        if bytes >= size {
            return format!("{:.2}{unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes}B")
}

/// ROLE: `master` with its followers' offsets, or `slave` with the leader's address.
pub fn write_role(reply: &mut Reply<'_>, status: &NodeStatus) {
    if status.role == Role::Leader {
        reply.array(3);
        reply.bulk(b"master");
        reply.integer(status.commit_index as i64);
        reply.array(status.followers.len());
        for (id, offset) in &status.followers {
            let addr = status.addresses.get(id);
            reply.array(3);
            reply.bulk(
                addr.map(|a| a.ip().to_string())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            reply.bulk(addr.map_or(0, |a| a.port()).to_string().as_bytes());
            reply.bulk(offset.to_string().as_bytes());
        }
    } else {
        let addr = leader_address(status);
        reply.array(5);
        reply.bulk(b"slave");
        reply.bulk(
            addr.map(|a| a.ip().to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        reply.integer(i64::from(addr.map_or(0, |a| a.port())));
        reply.bulk(if addr.is_some() {
            b"connected"
        } else {
            b"connect"
        });
        reply.integer(status.commit_index as i64);
    }
}
