//! Two jobs before the firmware is compiled:
//!
//! 1. The link: `memory.x` on the linker's path, and the linker scripts of cortex-m-rt
//!    (`link.x`), embassy-rp (`link-rp.x`, the boot loader's section) and defmt (`defmt.x`).
//! 2. The board's settings: `memdi-board.toml` (or the file `MEMDI_BOARD_CONFIG` names), with
//!    each key overridden by `MEMDI_<KEY>` from the environment, checked and written as
//!    constants to `$OUT_DIR/board.rs`, which `src/main.rs` includes. A bad value stops the
//!    build and says which key, where it came from, and why.
//!
//! The file is `key = value` lines, a value bare or in double quotes, `#` starting a comment
//! (a subset of TOML, read by hand to keep the build free of dependencies).

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::exit;

/// Every key, with its default (None: it must be given).
const KEYS: &[(&str, Option<&str>)] = &[
    ("node_id", None),
    ("cluster_id", Some("1")),
    ("cluster", Some("")),
    ("ip", None),
    ("prefix", Some("24")),
    ("gateway", Some("")),
    ("mac", Some("")),
    ("client_port", Some("7379")),
    ("peer_port", Some("7380")),
    ("ack", Some("leader")),
    ("requirepass", Some("")),
    ("cluster_secret", Some("")),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    link(&out);
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    match board(&manifest_dir) {
        Ok(source) => {
            fs::write(out.join("board.rs"), source).expect("cannot write $OUT_DIR/board.rs");
        }
        Err(message) => {
            eprintln!("error: the board's settings: {message}");
            exit(1);
        }
    }
}

fn link(out: &Path) {
    fs::write(out.join("memory.x"), include_bytes!("memory.x"))
        .expect("cannot write $OUT_DIR/memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=--nmagic");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tlink-rp.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}

/// A value and where it came from, for messages.
struct Value {
    text: String,
    origin: String,
}

/// Reads the file and the environment, checks every value, and returns `board.rs`.
fn board(manifest_dir: &Path) -> Result<String, String> {
    println!("cargo:rerun-if-env-changed=MEMDI_BOARD_CONFIG");
    let path = match env::var_os("MEMDI_BOARD_CONFIG") {
        Some(path) => manifest_dir.join(path),
        None => manifest_dir.join("memdi-board.toml"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut values = parse(&text, &name)?;
    for &(key, _) in KEYS {
        let variable = format!("MEMDI_{}", key.to_uppercase());
        println!("cargo:rerun-if-env-changed={variable}");
        if let Ok(text) = env::var(&variable) {
            values.insert(
                key,
                Value {
                    text: text.trim().to_owned(),
                    origin: format!("${variable}"),
                },
            );
        }
    }
    for &(key, default) in KEYS {
        if !values.contains_key(key) {
            match default {
                Some(text) => {
                    values.insert(
                        key,
                        Value {
                            text: text.to_owned(),
                            origin: "the default".to_owned(),
                        },
                    );
                }
                None => {
                    return Err(format!(
                        "`{key}` is missing: set it in {name} or in $MEMDI_{}",
                        key.to_uppercase()
                    ))
                }
            }
        }
    }
    Board::check(&values)?.source()
}

/// `key = value` lines into a map; unknown and repeated keys are errors.
fn parse(text: &str, name: &str) -> Result<BTreeMap<&'static str, Value>, String> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let origin = format!("{name} line {}", index + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = line.split_once('=') else {
            return Err(format!("{origin}: `{line}` is not `key = value`"));
        };
        let key = key.trim();
        let Some(&(key, _)) = KEYS.iter().find(|(known, _)| *known == key) else {
            let known: Vec<&str> = KEYS.iter().map(|(known, _)| *known).collect();
            return Err(format!(
                "{origin}: unknown key `{key}` (the keys: {})",
                known.join(", ")
            ));
        };
        let rest = rest.trim();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let Some((value, after)) = quoted.split_once('"') else {
                return Err(format!("{origin}: the quote after `{key} =` is not closed"));
            };
            let after = after.trim();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(format!("{origin}: `{after}` after the value of `{key}`"));
            }
            value
        } else {
            rest.split_once('#').map_or(rest, |(value, _)| value).trim()
        };
        let previous = values.insert(
            key,
            Value {
                text: value.to_owned(),
                origin: origin.clone(),
            },
        );
        if let Some(previous) = previous {
            return Err(format!(
                "{origin}: `{key}` again (first at {})",
                previous.origin
            ));
        }
    }
    Ok(values)
}

/// The checked settings.
struct Board {
    node_id: u64,
    cluster_id: u64,
    voters: Vec<(u64, SocketAddrV4)>,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    mac: [u8; 6],
    client_port: u16,
    peer_port: u16,
    quorum_ack: bool,
    password: Option<String>,
    cluster_secret: Option<String>,
}

impl Board {
    fn check(values: &BTreeMap<&str, Value>) -> Result<Self, String> {
        let value = |key: &str| &values[key];
        let bad = |key: &str, why: &str| {
            let v = value(key);
            format!("`{key}` = \"{}\" ({}): {why}", v.text, v.origin)
        };
        let number = |key: &str, min: u64, max: u64| -> Result<u64, String> {
            match value(key).text.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(bad(
                    key,
                    &format!("must be a whole number from {min} to {max}"),
                )),
            }
        };

        let node_id = number("node_id", 1, u64::MAX)?;
        let cluster_id = number("cluster_id", 1, u64::MAX)?;
        let ip: Ipv4Addr = value("ip")
            .text
            .parse()
            .map_err(|_| bad("ip", "not an IPv4 address like 192.168.1.53"))?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            return Err(bad("ip", "not an address a board can have"));
        }
        let prefix = number("prefix", 1, 32)? as u8;
        let mask = u32::MAX << (32 - u32::from(prefix));
        let same_network = |other: Ipv4Addr| u32::from(other) & mask == u32::from(ip) & mask;
        let gateway = match value("gateway").text.as_str() {
            "" => None,
            text => {
                let gateway: Ipv4Addr = text
                    .parse()
                    .map_err(|_| bad("gateway", "not an IPv4 address (empty: none)"))?;
                if gateway == ip || !same_network(gateway) {
                    return Err(bad(
                        "gateway",
                        &format!("must be another address in {ip}/{prefix}"),
                    ));
                }
                Some(gateway)
            }
        };
        let mac = match value("mac").text.as_str() {
            // Locally administered, unicast: 02, "md", and the node id's low three bytes.
            "" => {
                let id = node_id.to_be_bytes();
                [0x02, 0x6d, 0x64, id[5], id[6], id[7]]
            }
            text => {
                let bytes: Vec<u8> = text
                    .split([':', '-'])
                    .map(|byte| match byte.len() {
                        1 | 2 => u8::from_str_radix(byte, 16).ok(),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("mac", "not six hex bytes like 02:6d:64:00:00:03"))?;
                let mac: [u8; 6] = bytes
                    .try_into()
                    .map_err(|_| bad("mac", "not six hex bytes like 02:6d:64:00:00:03"))?;
                if mac[0] & 1 != 0 || mac == [0; 6] {
                    return Err(bad(
                        "mac",
                        "a multicast or zero address (the first byte must be even)",
                    ));
                }
                mac
            }
        };
        let client_port = number("client_port", 1, u16::MAX.into())? as u16;
        let peer_port = number("peer_port", 1, u16::MAX.into())? as u16;
        if client_port == peer_port {
            return Err(bad("peer_port", "the same port as client_port"));
        }
        let quorum_ack = match value("ack").text.as_str() {
            "leader" => false,
            "quorum" => true,
            _ => return Err(bad("ack", "neither `leader` nor `quorum`")),
        };
        let password = match value("requirepass").text.as_str() {
            "" => None,
            text if text.len() > 64 => {
                return Err(format!(
                    "`requirepass` ({}): longer than 64 bytes",
                    value("requirepass").origin
                ))
            }
            text => Some(text.to_owned()),
        };
        let cluster_secret = match value("cluster_secret").text.as_str() {
            "" => None,
            text if text.len() > 64 => {
                return Err(format!(
                    "`cluster_secret` ({}): longer than 64 bytes",
                    value("cluster_secret").origin
                ))
            }
            text => Some(text.to_owned()),
        };

        let own = SocketAddrV4::new(ip, peer_port);
        let mut voters = Vec::new();
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for item in value("cluster")
            .text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (id, address) = item
                .split_once('=')
                .ok_or_else(|| bad("cluster", &format!("`{item}` is not id=ip:port")))?;
            let id: u64 = match id.trim().parse() {
                Ok(id) if id >= 1 => id,
                _ => {
                    return Err(bad(
                        "cluster",
                        &format!("`{id}` is not a node id (1 or more)"),
                    ))
                }
            };
            let address: SocketAddrV4 = address.trim().parse().map_err(|_| {
                bad(
                    "cluster",
                    &format!(
                        "`{address}` is not an IPv4 address and port (a board resolves no names)"
                    ),
                )
            })?;
            if address.port() == 0 || address.ip().is_unspecified() {
                return Err(bad("cluster", &format!("`{address}` cannot be dialled")));
            }
            if !ids.insert(id) {
                return Err(bad("cluster", &format!("node {id} is listed twice")));
            }
            if !addresses.insert(address) {
                return Err(bad("cluster", &format!("{address} is listed twice")));
            }
            if id == node_id && address != own {
                return Err(bad(
                    "cluster",
                    &format!(
                        "it lists this node ({node_id}) at {address}, but `ip` and `peer_port` put it at {own}"
                    ),
                ));
            }
            if id != node_id && gateway.is_none() && !same_network(*address.ip()) {
                return Err(bad(
                    "cluster",
                    &format!(
                        "node {id} at {address} is outside {ip}/{prefix} and there is no `gateway`"
                    ),
                ));
            }
            voters.push((id, address));
        }
        if voters.is_empty() {
            voters.push((node_id, own));
        } else if !ids.contains(&node_id) {
            return Err(bad(
                "cluster",
                &format!("it must list this node (node_id {node_id}) at {own}"),
            ));
        }
        Ok(Self {
            node_id,
            cluster_id,
            voters,
            ip,
            prefix,
            gateway,
            mac,
            client_port,
            peer_port,
            quorum_ack,
            password,
            cluster_secret,
        })
    }

    fn source(&self) -> Result<String, String> {
        let mut s = String::new();
        let octets = |ip: Ipv4Addr| format!("{:?}", ip.octets());
        let voters: Vec<String> = self
            .voters
            .iter()
            .map(|(id, address)| format!("{id}={address}"))
            .collect();
        let mac: Vec<String> = self.mac.iter().map(|b| format!("{b:02x}")).collect();
        let summary = format!(
            "node {} of cluster {} at {}/{}{}, MAC {}, clients on port {}, peers on port {}, voters {}, {} acks",
            self.node_id,
            self.cluster_id,
            self.ip,
            self.prefix,
            self.gateway
                .map_or(String::new(), |gateway| format!(" via {gateway}")),
            mac.join(":"),
            self.client_port,
            self.peer_port,
            voters.join(","),
            if self.quorum_ack { "quorum" } else { "leader" },
        ) + if self.password.is_some() { ", a client password" } else { "" };
        let result = (|| -> std::fmt::Result {
            writeln!(
                s,
                "// Generated by build.rs from the board's settings: do not edit."
            )?;
            writeln!(s, "/// This node's id.")?;
            writeln!(s, "pub const NODE_ID: u64 = {};", self.node_id)?;
            writeln!(s, "/// The cluster's id.")?;
            writeln!(s, "pub const CLUSTER_ID: u64 = {};", self.cluster_id)?;
            writeln!(
                s,
                "/// The voters the cluster starts with, this node included."
            )?;
            write!(s, "pub const VOTERS: &[(u64, &str)] = &[")?;
            for (id, address) in &self.voters {
                write!(s, "({id}, \"{address}\"), ")?;
            }
            writeln!(s, "];")?;
            writeln!(s, "/// This node's IPv4 address.")?;
            writeln!(s, "pub const IP: [u8; 4] = {};", octets(self.ip))?;
            writeln!(s, "/// The network's prefix length.")?;
            writeln!(s, "pub const PREFIX: u8 = {};", self.prefix)?;
            writeln!(s, "/// The gateway, if any.")?;
            match self.gateway {
                Some(gateway) => writeln!(
                    s,
                    "pub const GATEWAY: Option<[u8; 4]> = Some({});",
                    octets(gateway)
                )?,
                None => writeln!(s, "pub const GATEWAY: Option<[u8; 4]> = None;")?,
            }
            writeln!(s, "/// The W5500's MAC address.")?;
            writeln!(s, "pub const MAC: [u8; 6] = {:?};", self.mac)?;
            writeln!(s, "/// Port of native clients.")?;
            writeln!(s, "pub const CLIENT_PORT: u16 = {};", self.client_port)?;
            writeln!(s, "/// Port of the other members.")?;
            writeln!(s, "pub const PEER_PORT: u16 = {};", self.peer_port)?;
            writeln!(s, "/// The acknowledgement writes get unless they ask.")?;
            writeln!(
                s,
                "pub const DEFAULT_ACK: memdi_core::wire::AckLevel = memdi_core::wire::AckLevel::{};",
                if self.quorum_ack { "Quorum" } else { "Leader" }
            )?;
            writeln!(
                s,
                "/// The password clients must give (`requirepass`), if any."
            )?;
            match &self.password {
                Some(password) => {
                    writeln!(s, "pub const PASSWORD: Option<&str> = Some({password:?});")?
                }
                None => writeln!(s, "pub const PASSWORD: Option<&str> = None;")?,
            }
            writeln!(s, "/// The secret peers prove (`cluster_secret`), if any.")?;
            match &self.cluster_secret {
                Some(secret) => writeln!(
                    s,
                    "pub const CLUSTER_SECRET: Option<&str> = Some({secret:?});"
                )?,
                None => writeln!(s, "pub const CLUSTER_SECRET: Option<&str> = None;")?,
            }
            writeln!(s, "/// All of the above, for the log.")?;
            writeln!(s, "pub const SUMMARY: &str = {summary:?};")?;
            Ok(())
        })();
        result.map_err(|_| "cannot format board.rs".to_owned())?;
        Ok(s)
    }
}
