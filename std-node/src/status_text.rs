//! How `memdi cluster status` prints a node's [`NodeStatus`]: a table for people, or
//! JSON for scripts (`--json`; written by hand, since every field is a number, null or one
//! of a few fixed words, which needs no escaping).

use std::fmt::Write;

use memdi_core::wire::{LinkState, StatusRole};

use crate::client::NodeStatus;

/// The word for a role, as both formats print it.
pub fn role_name(role: StatusRole) -> &'static str {
    match role {
        StatusRole::Follower => "follower",
        StatusRole::PreCandidate => "precandidate",
        StatusRole::Candidate => "candidate",
        StatusRole::Leader => "leader",
        StatusRole::Learner => "learner",
    }
}

/// The word for a link state.
pub fn link_name(link: LinkState) -> &'static str {
    match link {
        LinkState::Connected => "connected",
        LinkState::Unreachable => "unreachable",
        LinkState::Unknown => "unknown",
    }
}

fn or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |value| value.to_string())
}

fn or_null(value: Option<u64>) -> String {
    value.map_or_else(|| "null".into(), |value| value.to_string())
}

/// Lines for people.
pub fn to_text(status: &NodeStatus) -> String {
    let mut text = String::new();
    let leader = status
        .leader_id
        .map_or_else(|| "none".into(), |id| id.0.to_string());
    let _ = writeln!(
        text,
        "node {}: {} in term {}, leader {leader}",
        status.node_id.0,
        role_name(status.role),
        status.term
    );
    let _ = writeln!(
        text,
        "log: last {}, commit {}, applied {}",
        status.last_index, status.commit_index, status.applied_index
    );
    let _ = writeln!(
        text,
        "{:>6}  {:<12} {:<12} {:>8} {:>8}",
        "member", "role", "link", "match", "lag"
    );
    for member in &status.members {
        let _ = writeln!(
            text,
            "{:>6}  {:<12} {:<12} {:>8} {:>8}{}",
            member.id.0,
            role_name(member.role),
            link_name(member.link),
            or_dash(member.match_index),
            or_dash(member.lag),
            if member.needs_snapshot {
                "  (snapshot)"
            } else {
                ""
            }
        );
    }
    text
}

/// One JSON object.
pub fn to_json(status: &NodeStatus) -> String {
    let members: Vec<String> = status
        .members
        .iter()
        .map(|member| {
            format!(
                r#"{{"id":{},"role":"{}","link":"{}","match_index":{},"lag":{},"needs_snapshot":{}}}"#,
                member.id.0,
                role_name(member.role),
                link_name(member.link),
                or_null(member.match_index),
                or_null(member.lag),
                member.needs_snapshot
            )
        })
        .collect();
    format!(
        r#"{{"node_id":{},"role":"{}","term":{},"leader_id":{},"commit_index":{},"applied_index":{},"last_index":{},"members":[{}]}}"#,
        status.node_id.0,
        role_name(status.role),
        status.term,
        or_null(status.leader_id.map(|id| id.0)),
        status.commit_index,
        status.applied_index,
        status.last_index,
        members.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdi_core::wire::{MemberState, NodeId};

    fn status() -> NodeStatus {
        let members = vec![
            MemberState {
                id: NodeId(2),
                role: StatusRole::Follower,
                link: LinkState::Connected,
                match_index: Some(7),
                lag: Some(3),
                needs_snapshot: false,
            },
            MemberState {
                id: NodeId(3),
                role: StatusRole::Follower,
                link: LinkState::Unreachable,
                match_index: None,
                lag: None,
                needs_snapshot: true,
            },
        ];
        NodeStatus {
            node_id: NodeId(1),
            role: StatusRole::Leader,
            term: 4,
            leader_id: Some(NodeId(1)),
            commit_index: 9,
            applied_index: 10,
            last_index: 10,
            members,
        }
    }

    #[test]
    fn json_has_every_field() {
        assert_eq!(
            to_json(&status()),
            r#"{"node_id":1,"role":"leader","term":4,"leader_id":1,"commit_index":9,"applied_index":10,"last_index":10,"members":[{"id":2,"role":"follower","link":"connected","match_index":7,"lag":3,"needs_snapshot":false},{"id":3,"role":"follower","link":"unreachable","match_index":null,"lag":null,"needs_snapshot":true}]}"#
        );
        let mut leaderless = status();
        leaderless.leader_id = None;
        leaderless.members.clear();
        assert!(to_json(&leaderless).contains(r#""leader_id":null"#));
        assert!(to_json(&leaderless).ends_with(r#""members":[]}"#));
    }

    #[test]
    fn text_lists_the_node_and_each_member() {
        let text = to_text(&status());
        assert!(
            text.starts_with("node 1: leader in term 4, leader 1\n"),
            "{text}"
        );
        assert!(text.contains("unreachable"), "{text}");
        assert!(text.contains("(snapshot)"), "{text}");
        assert_eq!(text.lines().count(), 5, "{text}");
    }
}
