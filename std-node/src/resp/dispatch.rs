//! From a command's arguments to what answers it: a reply made here (PING's echo, SELECT,
//! CLIENT, errors), a [`Job`] for the core, or a question for the node task (INFO, ROLE,
//! SAVE). Arguments are checked here, with Redis's error texts, before anything is sent.

use std::time::{SystemTime, UNIX_EPOCH};

use memdi_core::wire::{
    Expiry, PackedWriter, ReadConsistency, Request, SetCondition, WriteOptions,
};

use super::encode::reply_bytes;
use super::job::{one, sum, Job, RequestSink, Shape, SumOf, KEYS_MAX_PAGES, KEYS_PAGE};
use super::{auth, glob, table, ClientState, NodeFacts};

/// What a command needs.
#[derive(Debug)]
pub enum Plan {
    /// Answer with these bytes.
    Reply(Vec<u8>),
    /// Answer with these bytes, then close the connection (QUIT).
    ReplyAndClose(Vec<u8>),
    /// The core answers; the job's first requests were sent.
    Core(Job),
    /// The node task's state answers (INFO, ROLE, LASTSAVE).
    Status(StatusQuery),
    /// Write a snapshot (SAVE), or start writing one (BGSAVE).
    Save {
        /// BGSAVE: answer before the snapshot is written.
        background: bool,
    },
}

/// Which command a node status answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusQuery {
    /// INFO with these section names (lower case; empty for the default set).
    Info(Vec<String>),
    /// ROLE.
    Role,
    /// LASTSAVE.
    LastSave,
}

fn error(text: &str) -> Plan {
    Plan::Reply(reply_bytes(|r| r.error(text)))
}

fn ok() -> Plan {
    Plan::Reply(reply_bytes(|r| r.simple("OK")))
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn integer(arg: &[u8]) -> Result<i64, Plan> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| error(NOT_AN_INTEGER))
}

/// Redis's reply to a command it does not know, arguments quoted up to 128 bytes each.
pub fn unknown_command(args: &[&[u8]]) -> Vec<u8> {
    let name = String::from_utf8_lossy(&args[0][..args[0].len().min(128)]);
    let mut text = format!("ERR unknown command '{name}', with args beginning with: ");
    for arg in &args[1..] {
        if text.len() >= 128 + 64 {
            break;
        }
        let arg = String::from_utf8_lossy(&arg[..arg.len().min(128)]);
        text.push_str(&format!("'{arg}' "));
    }
    reply_bytes(|r| r.error(&text))
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Plan {
    error(&format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(sub)
    ))
}

fn write() -> WriteOptions {
    WriteOptions::default()
}

const READ: ReadConsistency = ReadConsistency::Linearizable;

/// Decides how `args` (the command name first) is answered, sending the core whatever it
/// must be asked through `sink`.
pub fn dispatch(
    args: &[&[u8]],
    client: &mut ClientState,
    facts: &NodeFacts,
    sink: &mut dyn RequestSink,
) -> Plan {
    // Most pipelines repeat one command: its name and table entry are kept, rather than
    // allocated and searched for anew.
    let same_name =
        args[0].is_ascii() && client.last_command.as_bytes().eq_ignore_ascii_case(args[0]);
    if !same_name {
        client.last_command = String::from_utf8_lossy(args[0]).to_lowercase();
        client.last_spec = table::find(args[0]);
    }
    // Before the password nothing else is told, not even whether a command exists.
    if !client.authenticated && !auth::allowed_before_auth(args[0]) {
        return error(auth::NOAUTH);
    }
    let Some(spec) = client.last_spec else {
        return Plan::Reply(unknown_command(args));
    };
    if !table::arity_ok(spec, args.len()) {
        return error(&format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    match run(spec.name, args, client, facts, sink) {
        Ok(plan) | Err(plan) => plan,
    }
}

fn run(
    name: &str,
    args: &[&[u8]],
    client: &mut ClientState,
    facts: &NodeFacts,
    sink: &mut dyn RequestSink,
) -> Result<Plan, Plan> {
    let key = args.get(1).copied().unwrap_or_default();
    let core = |job| Ok(Plan::Core(job));
    match name {
        "get" => core(one(sink, &Request::Get { key, read: READ }, Shape::Bulk)),
        "set" => set(args, sink),
        "getdel" => core(one(
            sink,
            &Request::GetDelete {
                key,
                write: write(),
            },
            Shape::Bulk,
        )),
        "getset" => core(one(
            sink,
            &Request::SetAndGet {
                key,
                value: args[2],
                condition: SetCondition::Always,
                expiry: Expiry::None,
                write: write(),
            },
            Shape::Bulk,
        )),
        "setnx" => core(one(
            sink,
            &set_request(key, args[2], SetCondition::IfAbsent, Expiry::None),
            Shape::Flag,
        )),
        "setex" | "psetex" => {
            let ttl = integer(args[2])?;
            let ms = if name == "setex" {
                ttl.checked_mul(1000)
            } else {
                Some(ttl)
            };
            let ms = ms
                .filter(|&ms| ms > 0)
                .ok_or_else(|| error(&format!("ERR invalid expire time in '{name}' command")))?;
            core(one(
                sink,
                &set_request(
                    key,
                    args[3],
                    SetCondition::Always,
                    Expiry::AfterMs(ms as u64),
                ),
                Shape::Ok,
            ))
        }
        "mget" => {
            let mut buffer = vec![0; args[1..].iter().map(|a| a.len() + 5).sum()];
            let keys = pack(&mut buffer, &args[1..]);
            core(one(
                sink,
                &Request::MultiGet { keys, read: READ },
                Shape::Values,
            ))
        }
        "mset" => {
            if args.len() % 2 == 0 {
                return Err(error("ERR wrong number of arguments for 'mset' command"));
            }
            let mut buffer = vec![0; args[1..].iter().map(|a| a.len() + 5).sum()];
            let pairs = pack(&mut buffer, &args[1..]);
            core(one(
                sink,
                &Request::MultiSet {
                    pairs,
                    write: write(),
                },
                Shape::Ok,
            ))
        }
        "del" | "unlink" => core(sum(SumOf::Deleted, &args[1..], sink)),
        "exists" => core(sum(SumOf::Existing, &args[1..], sink)),
        "incr" | "decr" | "incrby" | "decrby" => {
            let amount = match args.get(2) {
                Some(arg) => integer(arg)?,
                None => 1,
            };
            let delta = if name.starts_with("decr") {
                amount
                    .checked_neg()
                    .ok_or_else(|| error("ERR decrement would overflow"))?
            } else {
                amount
            };
            core(one(
                sink,
                &Request::IncrBy {
                    key,
                    delta,
                    write: write(),
                },
                Shape::Integer,
            ))
        }
        "append" => core(one(
            sink,
            &Request::Append {
                key,
                value: args[2],
                write: write(),
            },
            Shape::Count,
        )),
        "strlen" => core(one(sink, &Request::Get { key, read: READ }, Shape::Length)),
        "expire" | "pexpire" => {
            if args.len() > 3 {
                return Err(error(&format!(
                    "ERR the NX, XX, GT and LT options of {} are not supported by memdi",
                    name.to_uppercase()
                )));
            }
            let ttl = integer(args[2])?;
            let ms = if name == "expire" {
                ttl.checked_mul(1000)
            } else {
                Some(ttl)
            };
            let ms =
                ms.ok_or_else(|| error(&format!("ERR invalid expire time in '{name}' command")))?;
            let expiry = Expiry::AfterMs(ms.max(0) as u64);
            core(one(
                sink,
                &Request::SetExpiry {
                    key,
                    expiry,
                    write: write(),
                },
                Shape::Changed,
            ))
        }
        "persist" => core(one(
            sink,
            &Request::SetExpiry {
                key,
                expiry: Expiry::None,
                write: write(),
            },
            Shape::Changed,
        )),
        "ttl" | "pttl" => core(one(
            sink,
            &Request::TimeToLive { key, read: READ },
            if name == "ttl" {
                Shape::Seconds
            } else {
                Shape::Integer
            },
        )),
        "keys" => {
            sink.send(&Request::Scan {
                cursor: 0,
                prefix: glob::literal_prefix(key),
                count: KEYS_PAGE,
                read: READ,
            });
            core(Job::Keys {
                pattern: key.to_vec(),
                found: Vec::new(),
                pages_left: KEYS_MAX_PAGES,
            })
        }
        "scan" => scan(args, sink),
        "randomkey" => {
            let slots = u64::from(facts.slot_count.max(1));
            let cursor = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs())
                % slots;
            sink.send(&Request::Scan {
                cursor,
                prefix: b"",
                count: 1,
                read: READ,
            });
            core(Job::RandomKey {
                from_start: cursor == 0,
            })
        }
        "type" => core(one(sink, &Request::Exists { key, read: READ }, Shape::Type)),
        "dbsize" => core(one(sink, &Request::DbSize { read: READ }, Shape::Count)),
        "flushdb" | "flushall" => {
            if args[1..]
                .iter()
                .any(|a| !a.eq_ignore_ascii_case(b"async") && !a.eq_ignore_ascii_case(b"sync"))
                || args.len() > 2
            {
                return Err(error(SYNTAX));
            }
            core(one(sink, &Request::Clear { write: write() }, Shape::Done))
        }
        "ping" => {
            if args.len() > 2 {
                return Err(error("ERR wrong number of arguments for 'ping' command"));
            }
            core(one(
                sink,
                &Request::Ping,
                Shape::Pong(args.get(1).map(|m| m.to_vec())),
            ))
        }
        "echo" => Ok(Plan::Reply(reply_bytes(|r| r.bulk(args[1])))),
        "quit" => Ok(Plan::ReplyAndClose(reply_bytes(|r| r.simple("OK")))),
        "select" => match integer(args[1])? {
            0 => Ok(ok()),
            _ => Err(error("ERR DB index is out of range")),
        },
        "auth" => {
            // AUTH password | AUTH user password (arity allows 2 or more arguments).
            let (user, given) = match args.len() {
                2 => (None, args[1]),
                3 => (Some(args[1]), args[2]),
                _ => return Err(error("ERR syntax error")),
            };
            auth::check(facts.requirepass.as_ref(), user, given).map_err(error)?;
            client.authenticated = true;
            Ok(ok())
        }
        "hello" => hello(args, client, facts),
        "info" => Ok(Plan::Status(StatusQuery::Info(
            args[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).to_lowercase())
                .collect(),
        ))),
        "role" => Ok(Plan::Status(StatusQuery::Role)),
        "lastsave" => Ok(Plan::Status(StatusQuery::LastSave)),
        "save" => Ok(Plan::Save { background: false }),
        "bgsave" => match args.get(1) {
            None => Ok(Plan::Save { background: true }),
            Some(arg) if arg.eq_ignore_ascii_case(b"schedule") && args.len() == 2 => {
                Ok(Plan::Save { background: true })
            }
            Some(_) => Err(error(SYNTAX)),
        },
        "command" => Ok(command(args)),
        "config" => config(args, facts),
        "client" => client_command(args, client),
        "wait" => {
            integer(args[1])?;
            if integer(args[2])? < 0 {
                return Err(error("ERR timeout is negative"));
            }
            // A confirmed linearizable read proves every earlier write committed, i.e.
            // is held by a quorum: quorum - 1 replicas besides the leader.
            sink.send(&Request::Exists {
                key: b"",
                read: READ,
            });
            let quorum = facts.quorum.load(std::sync::atomic::Ordering::Relaxed);
            core(Job::One(Shape::Replicas(quorum as i64 - 1)))
        }
        other => unreachable!("command {other} is in the table but not dispatched"),
    }
}

fn set_request<'a>(
    key: &'a [u8],
    value: &'a [u8],
    condition: SetCondition,
    expiry: Expiry,
) -> Request<'a> {
    Request::Set {
        key,
        value,
        condition,
        expiry,
        write: write(),
    }
}

fn pack<'b>(buffer: &'b mut [u8], items: &[&[u8]]) -> memdi_core::wire::Packed<'b> {
    let mut writer = PackedWriter::new(buffer);
    for item in items {
        writer
            .push(Some(item))
            .expect("the buffer has 5 bytes of tag room per item");
    }
    writer.finish()
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL], as Redis 7 parses it.
fn set(args: &[&[u8]], sink: &mut dyn RequestSink) -> Result<Plan, Plan> {
    let mut condition = SetCondition::Always;
    let mut expiry = Expiry::None;
    let mut expiry_given = false;
    let mut get = false;
    let mut i = 3;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        match option.as_slice() {
            b"NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            b"XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            b"GET" => get = true,
            b"KEEPTTL" if !expiry_given => {
                expiry = Expiry::Keep;
                expiry_given = true;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !expiry_given && i + 1 < args.len() => {
                i += 1;
                let value = integer(args[i])?;
                let invalid = || error("ERR invalid expire time in 'set' command");
                if value <= 0 {
                    return Err(invalid());
                }
                let ms = match option.as_slice() {
                    b"EX" => value.checked_mul(1000).ok_or_else(invalid)?,
                    b"PX" => value,
                    b"EXAT" => value.checked_mul(1000).ok_or_else(invalid)? - now_unix_ms(),
                    _ => value - now_unix_ms(),
                };
                // An absolute time already past: the key is written and expires at once.
                expiry = Expiry::AfterMs(ms.max(0) as u64);
                expiry_given = true;
            }
            _ => return Err(error(SYNTAX)),
        }
        i += 1;
    }
    let (key, value) = (args[1], args[2]);
    if get {
        let request = Request::SetAndGet {
            key,
            value,
            condition,
            expiry,
            write: write(),
        };
        return Ok(Plan::Core(one(sink, &request, Shape::Bulk)));
    }
    let request = set_request(key, value, condition, expiry);
    Ok(Plan::Core(one(sink, &request, Shape::Ok)))
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t].
fn scan(args: &[&[u8]], sink: &mut dyn RequestSink) -> Result<Plan, Plan> {
    let cursor = std::str::from_utf8(args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let mut pattern: Option<&[u8]> = None;
    let mut count = 10u32;
    let mut only_strings = true;
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        let Some(value) = args.get(i + 1) else {
            return Err(error(SYNTAX));
        };
        match option.as_slice() {
            b"MATCH" => pattern = Some(value),
            b"COUNT" => {
                let n = integer(value)?;
                if n < 1 {
                    return Err(error(SYNTAX));
                }
                count = u32::try_from(n).unwrap_or(u32::MAX);
            }
            b"TYPE" => only_strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(error(SYNTAX)),
        }
        i += 2;
    }
    if !only_strings {
        // Every memdi key is a string: no key of another type exists.
        return Ok(Plan::Reply(reply_bytes(|r| {
            r.array(2);
            r.bulk(b"0");
            r.array(0);
        })));
    }
    let prefix = pattern.map_or(&b""[..], glob::literal_prefix);
    sink.send(&Request::Scan {
        cursor,
        prefix,
        count,
        read: READ,
    });
    Ok(Plan::Core(Job::ScanPage {
        pattern: pattern.map(<[u8]>::to_vec),
    }))
}

/// HELLO [protover [AUTH user pass] [SETNAME name]]: only RESP2 is spoken.
fn hello(args: &[&[u8]], client: &mut ClientState, facts: &NodeFacts) -> Result<Plan, Plan> {
    if let Some(version) = args.get(1) {
        let version = integer(version)
            .map_err(|_| error("ERR Protocol version is not an integer or out of range"))?;
        if version != 2 {
            return Err(error("NOPROTO unsupported protocol version"));
        }
    }
    let mut i = 2;
    let mut credentials = None;
    let mut name = None;
    while i < args.len() {
        let option = args[i].to_ascii_uppercase();
        match option.as_slice() {
            b"AUTH" if i + 2 < args.len() => {
                credentials = Some((args[i + 1], args[i + 2]));
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                name = Some(args[i + 1]);
                i += 2;
            }
            _ => {
                return Err(error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(args[i])
                )))
            }
        }
    }
    // The password first, as Redis does: a stranger's SETNAME changes nothing.
    match credentials {
        Some((user, given)) => {
            auth::check(facts.requirepass.as_ref(), Some(user), given).map_err(error)?;
            client.authenticated = true;
        }
        None if !client.authenticated => return Err(error(auth::HELLO_NOAUTH)),
        None => {}
    }
    if let Some(name) = name {
        set_name(client, name)?;
    }
    Ok(Plan::Reply(reply_bytes(|r| {
        r.array(14);
        r.bulk(b"server");
        r.bulk(b"redis");
        r.bulk(b"version");
        r.bulk(super::REDIS_VERSION.as_bytes());
        r.bulk(b"proto");
        r.integer(2);
        r.bulk(b"id");
        r.integer(client.id as i64);
        r.bulk(b"mode");
        r.bulk(b"standalone");
        r.bulk(b"role");
        r.bulk(if facts.is_leader() {
            b"master"
        } else {
            b"slave"
        });
        r.bulk(b"modules");
        r.array(0);
    })))
}

/// COMMAND, COMMAND COUNT, COMMAND INFO name..., COMMAND DOCS [name...].
fn command(args: &[&[u8]]) -> Plan {
    let Some(sub) = args.get(1) else {
        return Plan::Reply(reply_bytes(|r| {
            r.array(table::COMMANDS.len());
            for spec in table::COMMANDS {
                table::write_info(r, spec);
            }
        }));
    };
    let sub = sub.to_ascii_uppercase();
    match sub.as_slice() {
        b"COUNT" if args.len() == 2 => {
            Plan::Reply(reply_bytes(|r| r.integer(table::COMMANDS.len() as i64)))
        }
        b"INFO" => Plan::Reply(reply_bytes(|r| {
            let names = &args[2..];
            if names.is_empty() {
                r.array(table::COMMANDS.len());
                table::COMMANDS
                    .iter()
                    .for_each(|spec| table::write_info(r, spec));
                return;
            }
            r.array(names.len());
            for name in names {
                match table::find(name) {
                    Some(spec) => table::write_info(r, spec),
                    None => r.null_array(),
                }
            }
        })),
        // Documentation is not served: an empty map (as an array) tells redis-cli to go
        // without hints.
        b"DOCS" => Plan::Reply(reply_bytes(|r| r.array(0))),
        _ => unknown_subcommand(args[1], "COMMAND"),
    }
}

/// CONFIG GET pattern...: the settings clients and redis-benchmark read.
fn config(args: &[&[u8]], facts: &NodeFacts) -> Result<Plan, Plan> {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"GET" if args.len() >= 3 => {
            let settings = facts.config_settings();
            let mut found: Vec<(&str, &str)> = Vec::new();
            for (name, value) in &settings {
                if args[2..]
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
                {
                    found.push((name, value));
                }
            }
            Ok(Plan::Reply(reply_bytes(|r| {
                r.array(found.len() * 2);
                for (name, value) in found {
                    r.bulk(name.as_bytes());
                    r.bulk(value.as_bytes());
                }
            })))
        }
        b"GET" => Err(error(
            "ERR wrong number of arguments for 'config|get' command",
        )),
        _ => Err(unknown_subcommand(args[1], "CONFIG")),
    }
}

fn set_name(client: &mut ClientState, name: &[u8]) -> Result<(), Plan> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    client.name = (!name.is_empty()).then(|| name.to_vec());
    Ok(())
}

/// CLIENT ID | SETNAME | GETNAME | INFO | SETINFO.
fn client_command(args: &[&[u8]], client: &mut ClientState) -> Result<Plan, Plan> {
    let sub = args[1].to_ascii_uppercase();
    let arity = |n: usize, name: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(error(&format!(
                "ERR wrong number of arguments for 'client|{name}' command"
            )))
        }
    };
    match sub.as_slice() {
        b"ID" => {
            arity(2, "id")?;
            Ok(Plan::Reply(reply_bytes(|r| r.integer(client.id as i64))))
        }
        b"SETNAME" => {
            arity(3, "setname")?;
            set_name(client, args[2])?;
            Ok(ok())
        }
        b"GETNAME" => {
            arity(2, "getname")?;
            Ok(Plan::Reply(reply_bytes(|r| match &client.name {
                Some(name) => r.bulk(name),
                None => r.null(),
            })))
        }
        b"INFO" => {
            arity(2, "info")?;
            Ok(Plan::Reply(reply_bytes(|r| {
                r.bulk(client.info_line().as_bytes())
            })))
        }
        b"SETINFO" => {
            arity(4, "setinfo")?;
            Ok(ok())
        }
        _ => Err(unknown_subcommand(args[1], "CLIENT")),
    }
}
