//! The fault test's network: one namespace per node, each joined by a veth pair to a bridge
//! in a namespace of its own, where the test's clients run. Links are cut with iptables rules
//! inside the node namespaces, so a cut never touches the clients' traffic (as in Jepsen,
//! where the control node always reaches every database node).
//!
//! Everything is created by [`Network::create`] and deleted when the [`Network`] is dropped
//! (deleting a namespace deletes its interfaces and rules), passed or failed.

use std::fs::File;
use std::process::{Command, Output};

/// The nodes' subnet: node slot `i` has `10.78.0.(i + 1)`, the bridge (the clients) `.254`.
const SUBNET: &str = "10.78.0";
const CLIENTS_HOST: u8 = 254;

/// Which links are cut, and how badly the others lose packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts {
    /// `(from, to)`: packets from slot `from` to slot `to` are dropped (at `to`'s input and
    /// `from`'s output, so that neither side's TCP sees the other through this direction).
    pub one_way: Vec<(usize, usize)>,
    /// Percent of packets between nodes dropped at random, each way, on every link not cut.
    pub loss_percent: u8,
}

impl Cuts {
    /// Both directions between every slot of `side` and every slot outside it.
    pub fn split(slots: usize, side: &[usize]) -> Self {
        let mut cuts = Cuts::default();
        for a in side {
            for b in (0..slots).filter(|b| !side.contains(b)) {
                cuts.one_way.push((*a, b));
                cuts.one_way.push((b, *a));
            }
        }
        cuts
    }

    /// Each node reaches only its two neighbours on a ring of `slots` (every node still
    /// reaches a majority when `slots` is 5, but no two non-neighbours agree on whom).
    pub fn ring(slots: usize) -> Self {
        let mut cuts = Cuts::default();
        for a in 0..slots {
            for b in 0..slots {
                let distance = a.abs_diff(b).min(slots - a.abs_diff(b));
                if distance > 1 {
                    cuts.one_way.push((a, b));
                }
            }
        }
        cuts
    }

    /// Both sets of cuts at once.
    pub fn and(mut self, other: Cuts) -> Self {
        self.one_way.extend(other.one_way);
        self.loss_percent = self.loss_percent.max(other.loss_percent);
        self
    }
}

/// The namespaces, the bridge and the veth pairs.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    slots: usize,
}

impl Network {
    /// `slots` node namespaces and the clients' namespace, named after this process.
    pub fn create(slots: usize) -> Self {
        let network = Network {
            prefix: format!("memdi-f{}", std::process::id()),
            slots,
        };
        let clients = network.clients_namespace();
        run(&["ip", "netns", "add", &clients]);
        network.in_namespace(&clients, &["ip", "link", "set", "lo", "up"]);
        network.in_namespace(&clients, &["ip", "link", "add", "br0", "type", "bridge"]);
        let bridge_addr = format!("{SUBNET}.{CLIENTS_HOST}/24");
        network.in_namespace(&clients, &["ip", "addr", "add", &bridge_addr, "dev", "br0"]);
        network.in_namespace(&clients, &["ip", "link", "set", "br0", "up"]);
        for slot in 0..slots {
            let node = network.node_namespace(slot);
            run(&["ip", "netns", "add", &node]);
            network.in_namespace(&node, &["ip", "link", "set", "lo", "up"]);
            let veth = format!("v{slot}");
            network.in_namespace(
                &clients,
                &[
                    "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                    &node,
                ],
            );
            network.in_namespace(&clients, &["ip", "link", "set", &veth, "master", "br0"]);
            network.in_namespace(&clients, &["ip", "link", "set", &veth, "up"]);
            let address = format!("{}/24", Self::ip(slot));
            network.in_namespace(&node, &["ip", "addr", "add", &address, "dev", "eth0"]);
            network.in_namespace(&node, &["ip", "link", "set", "eth0", "up"]);
        }
        network
    }

    /// Node slot `slot`'s address.
    pub fn ip(slot: usize) -> String {
        format!("{SUBNET}.{}", slot + 1)
    }

    /// The namespace node slot `slot` runs in.
    pub fn node_namespace(&self, slot: usize) -> String {
        format!("{}-n{slot}", self.prefix)
    }

    /// The namespace the clients run in (it holds the bridge).
    pub fn clients_namespace(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// Moves the calling thread into the clients' namespace: sockets it (and threads it
    /// starts afterwards) opens reach the nodes. Namespaces belong to threads, so the rest
    /// of the test process is untouched.
    pub fn enter_clients_namespace(&self) {
        let path = format!("/var/run/netns/{}", self.clients_namespace());
        let file = File::open(&path).unwrap_or_else(|error| panic!("opening {path}: {error}"));
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("entering the clients' namespace");
    }

    /// Replaces every node's rules with `cuts` (an empty `Cuts` heals everything).
    pub fn apply(&self, cuts: &Cuts) {
        for slot in 0..self.slots {
            let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
            for (from, to) in &cuts.one_way {
                if *to == slot {
                    rules.push_str(&format!("-A INPUT -s {} -j DROP\n", Self::ip(*from)));
                }
                if *from == slot {
                    rules.push_str(&format!("-A OUTPUT -d {} -j DROP\n", Self::ip(*to)));
                }
            }
            if cuts.loss_percent > 0 {
                let probability = f64::from(cuts.loss_percent) / 100.0;
                for other in (0..self.slots).filter(|other| *other != slot) {
                    rules.push_str(&format!(
                        "-A INPUT -s {} -m statistic --mode random --probability {probability} -j DROP\n",
                        Self::ip(other)
                    ));
                }
            }
            rules.push_str("COMMIT\n");
            let node = self.node_namespace(slot);
            let output = command_with_input(
                &["ip", "netns", "exec", &node, "iptables-restore"],
                rules.as_bytes(),
            );
            assert!(
                output.status.success(),
                "iptables-restore in {node} failed: {}\n{rules}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    fn in_namespace(&self, namespace: &str, command: &[&str]) {
        let mut args = vec!["ip", "netns", "exec", namespace];
        args.extend_from_slice(command);
        run(&args);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for slot in 0..self.slots {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.node_namespace(slot)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.clients_namespace()])
            .status();
    }
}

fn run(args: &[&str]) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|error| panic!("running {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn command_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {args:?}: {error}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("writing to iptables-restore");
    child
        .wait_with_output()
        .expect("waiting for iptables-restore")
}
