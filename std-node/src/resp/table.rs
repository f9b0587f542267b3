//! The commands the RESP front knows, with Redis's arity and key positions: used to check
//! argument counts before anything runs and to answer COMMAND, COMMAND COUNT and COMMAND INFO
//! for clients that probe what the server speaks.

use super::encode::Reply;

/// One command as COMMAND INFO describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (the name included), `-n` at least n.
    pub arity: i64,
    /// Redis's flags.
    pub flags: &'static [&'static str],
    /// Position of the first key (0: none).
    pub first_key: i64,
    /// Position of the last key (-1: the last argument).
    pub last_key: i64,
    /// Step between keys.
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const A: &[&str] = &["admin", "noscript"];
const C: &[&str] = &["noscript", "loading", "stale", "fast"];
const NONE: (i64, i64, i64) = (0, 0, 0);
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);

/// Every command served, in COMMAND's order.
pub const COMMANDS: &[CommandSpec] = &[
    spec("get", 2, RF, ONE),
    spec("set", -3, W, ONE),
    spec("getdel", 2, WF, ONE),
    spec("getset", 3, WF, ONE),
    spec("setnx", 3, WF, ONE),
    spec("setex", 4, W, ONE),
    spec("psetex", 4, W, ONE),
    spec("mget", -2, RF, ALL),
    spec("mset", -3, W, (1, -1, 2)),
    spec("del", -2, &["write"], ALL),
    spec("unlink", -2, &["write", "fast"], ALL),
    spec("exists", -2, RF, ALL),
    spec("incr", 2, WF, ONE),
    spec("decr", 2, WF, ONE),
    spec("incrby", 3, WF, ONE),
    spec("decrby", 3, WF, ONE),
    spec("append", 3, WF, ONE),
    spec("strlen", 2, RF, ONE),
    spec("expire", -3, &["write", "fast"], ONE),
    spec("pexpire", -3, &["write", "fast"], ONE),
    spec("persist", 2, &["write", "fast"], ONE),
    spec("ttl", 2, RF, ONE),
    spec("pttl", 2, RF, ONE),
    spec("keys", 2, R, NONE),
    spec("scan", -2, R, NONE),
    spec("randomkey", 1, R, NONE),
    spec("type", 2, RF, ONE),
    spec("dbsize", 1, RF, NONE),
    spec("flushdb", -1, &["write"], NONE),
    spec("flushall", -1, &["write"], NONE),
    spec("ping", -1, &["fast", "stale"], NONE),
    spec("echo", 2, &["fast"], NONE),
    spec("quit", -1, C, NONE),
    spec("select", 2, C, NONE),
    spec("auth", -2, C, NONE),
    spec("hello", -1, C, NONE),
    spec("info", -1, &["loading", "stale"], NONE),
    spec("command", -1, &["loading", "stale"], NONE),
    spec("config", -2, A, NONE),
    spec(
        "client",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NONE,
    ),
    spec("save", 1, A, NONE),
    spec("bgsave", -1, A, NONE),
    spec("lastsave", 1, &["fast", "loading", "stale"], NONE),
    spec("wait", 3, &["noscript"], NONE),
    spec("role", 1, &["noscript", "loading", "stale", "fast"], NONE),
];

/// The spec of `name` (any case).
pub fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `count` arguments (the name included) suit `spec`.
pub fn arity_ok(spec: &CommandSpec, count: usize) -> bool {
    let count = count as i64;
    if spec.arity >= 0 {
        count == spec.arity
    } else {
        count >= -spec.arity
    }
}

/// One command's entry in COMMAND and COMMAND INFO (Redis 7's ten fields; the ACL
/// categories, tips, key specs and subcommands are left empty).
pub fn write_info(reply: &mut Reply<'_>, spec: &CommandSpec) {
    reply.array(10);
    reply.bulk(spec.name.as_bytes());
    reply.integer(spec.arity);
    reply.array(spec.flags.len());
    for flag in spec.flags {
        reply.simple(flag);
    }
    reply.integer(spec.first_key);
    reply.integer(spec.last_key);
    reply.integer(spec.step);
    for _ in 0..4 {
        reply.array(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_is_exact_or_a_minimum() {
        let get = find(b"GET").unwrap();
        assert!(arity_ok(get, 2));
        assert!(!arity_ok(get, 3));
        let set = find(b"set").unwrap();
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 7));
        assert!(find(b"nosuch").is_none());
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(COMMANDS[i + 1..]
                .iter()
                .all(|other| other.name != spec.name));
        }
    }
}
