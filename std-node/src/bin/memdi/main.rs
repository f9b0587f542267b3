//! `memdi`: the command-line client of memdi-server, and a benchmark.

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use memdi_core::wire::{AckLevel, ReadConsistency, SetCondition};
use memdi_node::client::{CasOutcome, Client, ClientError, ClientOptions, Password, SetOptions};
use memdi_node::status_text;

/// Talks to a memdi node.
///
/// Exit codes: 0 success; 1 key not found (get); 2 usage error; 3 the server answered with
/// an error (or a condition was not met: set --nx/--xx, cas); 4 the node could not be
/// reached or the connection broke.
#[derive(Debug, Parser)]
#[command(name = "memdi", version)]
struct Cli {
    /// The node's client address.
    #[arg(long, default_value = "127.0.0.1:7379", global = true)]
    addr: String,
    /// The node's --requirepass, sent after the handshake. The MEMDI_PASSWORD environment
    /// variable is read when this is not given, and keeps the password out of `ps`.
    #[arg(long, value_name = "SECRET", global = true)]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ack {
    Leader,
    Quorum,
}

impl From<Ack> for AckLevel {
    fn from(ack: Ack) -> Self {
        match ack {
            Ack::Leader => AckLevel::Leader,
            Ack::Quorum => AckLevel::Quorum,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BenchOp {
    Set,
    Get,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// This node's role, term and leader, and each member's role, link and replication lag
    /// (lag and match index only as a leader sees them).
    Status {
        /// Print one JSON object (fields node_id, role, term, leader_id, commit_index,
        /// applied_index, last_index, members).
        #[arg(long)]
        json: bool,
    },
    /// Add a node to the cluster (as a learner, promoted to voter once it holds every key).
    /// The node itself must run (started with --join, or with no --cluster) and listen on
    /// PEER_ADDR. Prints the log index of the change once it is committed.
    Join {
        /// The new node's id.
        node_id: u64,
        /// Its peer address, which the members dial.
        peer_addr: String,
    },
    /// Remove a node from the cluster (the leader too: it steps down once the change is
    /// committed). Without NODE_ID, the node at --addr. A removed node must come back with an
    /// empty data directory or a new id.
    Leave {
        /// The node to remove [default: the node at --addr].
        node_id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a key's value (exit 1 if it does not exist).
    Get {
        key: String,
        /// Answer from the node's own store, without asking the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Write a key.
    Set {
        key: String,
        value: String,
        /// Acknowledgement: leader or quorum (default: the node's).
        #[arg(long, value_enum)]
        ack: Option<Ack>,
        /// Only if the key does not exist.
        #[arg(long, conflicts_with = "xx")]
        nx: bool,
        /// Only if the key exists.
        #[arg(long)]
        xx: bool,
        /// Expire after this many milliseconds.
        #[arg(long, conflicts_with = "ex")]
        px: Option<u64>,
        /// Expire after this many seconds.
        #[arg(long)]
        ex: Option<u64>,
    },
    /// Delete a key; prints 1 if it existed, else 0.
    Del { key: String },
    /// Prints 1 if the key exists, else 0.
    Exists { key: String },
    /// Add BY (default 1) to an integer value; prints the new value.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
    /// Write VALUE only if the key's version is VERSION (0: the key must not exist).
    Cas {
        key: String,
        version: u64,
        value: String,
    },
    /// Print the values of several keys, one line each ("(nil)" when missing).
    Mget {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print every key (all pages), one per line.
    Scan {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Keys per page (a hint).
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
    /// Print the number of keys.
    Dbsize,
    /// Print the node's statistics (INFO-style: role, term, leader, keys, memory, log,
    /// snapshots, lag per follower, counters).
    Info,
    /// Make the node write a snapshot now (it also starts a new log); returns once the file
    /// is renamed and fsynced.
    Save,
    /// Cluster administration.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Check the node answers.
    Ping,
    /// Measure throughput and latency, like redis-benchmark. Exits 3 if any request ended
    /// in an error (after printing the figures), so that a script notices.
    Bench {
        /// Concurrent connections.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Requests in all.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Bytes per value.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Bytes per key.
        #[arg(long, default_value_t = 16)]
        key_size: usize,
        /// Distinct keys used.
        #[arg(long, default_value_t = 10_000)]
        keyspace: u64,
        /// Acknowledgement of writes.
        #[arg(long, value_enum, default_value = "leader")]
        ack: Ack,
        /// The operation.
        #[arg(long, value_enum, default_value = "set")]
        op: BenchOp,
        /// Print one CSV line instead of the text report: op, ack, clients, pipeline,
        /// requests, errors, requests/s, then p50, p99, p99.9 and max latency in
        /// microseconds, then retries (answers `NoLeader` or `Busy`, sent again).
        #[arg(long)]
        csv: bool,
        /// Threads driving the connections (redis-benchmark's --threads); one per core by
        /// default. (One thread halved the figures of two clients one request at a time:
        /// each answer then waits for the other connection's turn.)
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match error {
            ClientError::Connection { .. } | ClientError::Closed { .. } => 4,
            _ => 3,
        };
        Self {
            code,
            message: error.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = match cli.command {
        Command::Bench {
            threads: Some(threads),
            ..
        } if threads <= 1 => tokio::runtime::Builder::new_current_thread(),
        Command::Bench {
            threads: Some(threads),
            ..
        } => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !failure.message.is_empty() {
                eprintln!("memdi: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

/// --password, else MEMDI_PASSWORD (an empty one counts as none).
fn password(flag: Option<String>) -> Option<Password> {
    flag.or_else(|| std::env::var("MEMDI_PASSWORD").ok())
        .filter(|password| !password.is_empty())
        .map(Password::new)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let password = password(cli.password);
    if let Command::Bench { .. } = cli.command {
        return bench(&cli.addr, password, cli.command).await;
    }
    let client = Client::connect_with(
        &cli.addr,
        ClientOptions {
            pool_size: 1,
            password,
            ..ClientOptions::default()
        },
    )
    .await?;
    match cli.command {
        Command::Get { key, stale } => {
            let read = if stale {
                ReadConsistency::Stale
            } else {
                ReadConsistency::Linearizable
            };
            match client.get_with(key.as_bytes(), read).await? {
                Some(value) => println!("{}", String::from_utf8_lossy(&value.value)),
                None => {
                    return Err(Failure {
                        code: 1,
                        message: String::new(),
                    })
                }
            }
        }
        Command::Set {
            key,
            value,
            ack,
            nx,
            xx,
            px,
            ex,
        } => {
            let condition = match (nx, xx) {
                (true, _) => SetCondition::IfAbsent,
                (_, true) => SetCondition::IfPresent,
                _ => SetCondition::Always,
            };
            let options = SetOptions {
                condition,
                ttl_ms: px.or(ex.map(|secs| secs.saturating_mul(1000))),
                ack: ack.map(AckLevel::from),
            };
            match client
                .set(key.as_bytes(), value.as_bytes(), options)
                .await?
            {
                Some(version) => println!("OK (version {version})"),
                None => {
                    return Err(Failure {
                        code: 3,
                        message: "not stored: the --nx/--xx condition was not met".into(),
                    })
                }
            }
        }
        Command::Del { key } => println!("{}", u8::from(client.delete(key.as_bytes()).await?)),
        Command::Exists { key } => {
            println!("{}", u8::from(client.exists(key.as_bytes()).await?))
        }
        Command::Incr { key, by } => println!("{}", client.incr_by(key.as_bytes(), by).await?),
        Command::Cas {
            key,
            version,
            value,
        } => match client
            .compare_and_set(key.as_bytes(), version, value.as_bytes())
            .await?
        {
            CasOutcome::Stored(version) => println!("OK (version {version})"),
            CasOutcome::Mismatch(current) => {
                return Err(Failure {
                    code: 3,
                    message: format!("version mismatch: the key's version is {current}"),
                })
            }
        },
        Command::Mget { keys } => {
            let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
            for value in client.mget(&keys).await? {
                match value {
                    Some(value) => println!("{}", String::from_utf8_lossy(&value)),
                    None => println!("(nil)"),
                }
            }
        }
        Command::Scan { prefix, count } => {
            for key in client.scan_all(prefix.as_bytes(), count).await? {
                println!("{}", String::from_utf8_lossy(&key));
            }
        }
        Command::Dbsize => println!("{}", client.dbsize().await?),
        Command::Info => print!("{}", client.info().await?.replace("\r\n", "\n")),
        Command::Save => {
            let report = client.save().await?;
            println!(
                "OK (snapshot through entry {}, {} bytes)",
                report.applied_index, report.snapshot_bytes
            );
        }
        Command::Cluster {
            command: ClusterCommand::Status { json },
        } => {
            let status = client.cluster_status().await?;
            if json {
                println!("{}", status_text::to_json(&status));
            } else {
                print!("{}", status_text::to_text(&status));
            }
        }
        Command::Cluster {
            command: ClusterCommand::Join { node_id, peer_addr },
        } => {
            let (index, _) = client.add_member(node_id, &peer_addr).await?;
            println!("OK (node {node_id} added at {peer_addr}: membership entry {index})");
        }
        Command::Cluster {
            command: ClusterCommand::Leave { node_id },
        } => {
            let node_id = match node_id {
                Some(id) => id,
                None => client.cluster_status().await?.node_id.0,
            };
            let index = client.remove_member(node_id).await?;
            println!("OK (node {node_id} removed: membership entry {index})");
        }
        Command::Ping => {
            client.ping().await?;
            println!("PONG");
        }
        Command::Bench { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `memdi bench`: runs the plan (see `bench`) and prints its figures.
async fn bench(addr: &str, password: Option<Password>, command: Command) -> Result<(), Failure> {
    let Command::Bench {
        clients,
        requests,
        pipeline,
        value_size,
        key_size,
        keyspace,
        ack,
        op,
        csv,
        threads: _,
    } = command
    else {
        unreachable!("called with bench")
    };
    let plan = bench::Plan {
        addr: addr.to_owned(),
        password,
        clients,
        requests,
        pipeline,
        value_size,
        key_size,
        keyspace,
        ack: ack.into(),
        op: match op {
            BenchOp::Set => bench::Op::Set,
            BenchOp::Get => bench::Op::Get,
        },
    };
    let outcome = bench::run(plan).await?;
    if let Some(error) = &outcome.first_error {
        eprintln!("memdi bench: first error: {error}");
    }
    let rate = outcome.rate();
    if csv {
        println!(
            "{},{},{clients},{pipeline},{},{},{rate:.0},{},{},{},{},{}",
            format!("{op:?}").to_lowercase(),
            format!("{ack:?}").to_lowercase(),
            outcome.latencies_us.len(),
            outcome.errors,
            outcome.percentile(0.50).as_micros(),
            outcome.percentile(0.99).as_micros(),
            outcome.percentile(0.999).as_micros(),
            outcome.percentile(1.0).as_micros(),
            outcome.retries
        );
        return bench_verdict(&outcome);
    }
    println!(
        "{op:?}: {} requests, {clients} clients, pipeline {pipeline}, {value_size} B values, {key_size} B keys, ack {ack:?}",
        outcome.latencies_us.len()
    );
    println!(
        "  {rate:.0} requests/s over {:.2} s; {} errors; {} retries (no leader, busy)",
        outcome.elapsed.as_secs_f64(),
        outcome.errors,
        outcome.retries
    );
    println!(
        "  latency p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
        outcome.percentile(0.50),
        outcome.percentile(0.99),
        outcome.percentile(0.999),
        outcome.percentile(1.0)
    );
    bench_verdict(&outcome)
}

/// A bench whose requests all succeeded exits 0; otherwise 3, as for a server error.
fn bench_verdict(outcome: &bench::Outcome) -> Result<(), Failure> {
    if outcome.errors == 0 {
        return Ok(());
    }
    Err(Failure {
        code: 3,
        message: format!(
            "bench: {} of {} requests ended in an error",
            outcome.errors,
            outcome.latencies_us.len()
        ),
    })
}
