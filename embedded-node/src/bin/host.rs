//! memdi-embedded-host: the embedded node on Linux, over a TAP device.
//!
//! The same library a board runs, on embassy's std platform, with embassy-net's own TCP/IP
//! stack on a TAP device instead of a W5500: the tests put it in a cluster with
//! memdi-server nodes to show that a board-sized node is a full member.
//!
//! ```text
//! ip tuntap add name tap0 mode tap && ip link set tap0 up && ip addr add 10.7.0.1/24 dev tap0
//! memdi-embedded-host --tap tap0 --address 10.7.0.2/24 --node-id 3 \
//!     --cluster 1=10.7.0.1:7380,2=10.7.0.1:7382,3=10.7.0.2:7380
//! ```

use clap::Parser;
use embassy_executor::Spawner;
use embassy_net::{Config, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use memdi_core::wire::AckLevel;
use memdi_embedded::capacity::SOCKETS;
use memdi_embedded::Settings;
use static_cell::StaticCell;

/// The embedded node on a TAP device.
#[derive(Debug, Parser)]
#[command(name = "memdi-embedded-host", version)]
struct Flags {
    /// The TAP device (it must exist and be up: see `ip tuntap add`).
    #[arg(long, default_value = "tap0")]
    tap: String,
    /// This node's IPv4 address on the TAP network, with its prefix length.
    #[arg(long, default_value = "10.7.0.2/24")]
    address: String,
    /// The gateway, if the cluster is beyond the TAP network.
    #[arg(long)]
    gateway: Option<std::net::Ipv4Addr>,
    /// This node's id, unique in the cluster.
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// The cluster's id (memdi-server's `--cluster-id`).
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
    /// The initial voters: `id=ip:port,...`, peer addresses, this node included.
    #[arg(long)]
    cluster: Option<String>,
    /// Port of native clients.
    #[arg(long, default_value_t = 7379)]
    client_port: u16,
    /// Port of the other members.
    #[arg(long, default_value_t = 7380)]
    peer_port: u16,
    /// The acknowledgement writes get unless they ask: `leader` or `quorum`.
    #[arg(long, default_value = "leader")]
    ack: String,
    /// The password clients must give first (memdi-server's `--requirepass`); read from
    /// MEMDI_REQUIREPASS when not given, which keeps it out of `ps`.
    #[arg(long)]
    requirepass: Option<String>,
    /// The secret every member of the cluster proves to the others (memdi-server's
    /// `--cluster-secret`); read from MEMDI_CLUSTER_SECRET when not given.
    #[arg(long)]
    cluster_secret: Option<String>,
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let flags = Flags::parse();
    if let Err(message) = run(spawner, flags) {
        eprintln!("memdi-embedded-host: {message}");
        std::process::exit(2);
    }
}

fn run(spawner: Spawner, flags: Flags) -> Result<(), String> {
    let (ip, prefix) = flags
        .address
        .split_once('/')
        .ok_or("--address needs a prefix length, as in 10.7.0.2/24")?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|e| format!("--address: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|e| format!("--address prefix: {e}"))?;
    let voters = parse_voters(
        flags.cluster.as_deref().unwrap_or(""),
        flags.node_id,
        ip,
        flags.peer_port,
    )?;
    let default_ack = match flags.ack.as_str() {
        "leader" => AckLevel::Leader,
        "quorum" => AckLevel::Quorum,
        other => return Err(format!("--ack: `{other}` is neither `leader` nor `quorum`")),
    };
    let device =
        TunTapDevice::new(&flags.tap).map_err(|e| format!("TAP device {}: {e}", flags.tap))?;
    let config = Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ip, prefix),
        dns_servers: heapless::Vec::new(),
        gateway: flags.gateway,
    });
    let rng_seed = random_seed();
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        config,
        RESOURCES.init(StackResources::new()),
        rng_seed,
    );
    spawner.spawn(net_task(runner).map_err(|e| format!("{e:?}"))?);
    let settings = Settings {
        node_id: flags.node_id,
        cluster_id: flags.cluster_id,
        voters,
        client_port: flags.client_port,
        peer_port: flags.peer_port,
        rng_seed,
        default_ack,
        password: flags
            .requirepass
            .or_else(|| std::env::var("MEMDI_REQUIREPASS").ok())
            .map(|password| &*Box::leak(password.into_boxed_str())),
        cluster_secret: flags
            .cluster_secret
            .or_else(|| std::env::var("MEMDI_CLUSTER_SECRET").ok())
            .map(|secret| &*Box::leak(secret.into_boxed_str())),
        random: fill_random,
    };
    memdi_embedded::start(spawner, stack, settings).map_err(|e| format!("cannot start: {e:?}"))
}

/// Reads `id=ip:port,...`; with no list, this node alone (at its own address).
fn parse_voters(
    list: &str,
    me: u64,
    ip: std::net::Ipv4Addr,
    peer_port: u16,
) -> Result<&'static [(u64, &'static str)], String> {
    let mut voters = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item
            .split_once('=')
            .ok_or_else(|| format!("--cluster: `{item}` is not id=ip:port"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("--cluster: `{id}` is not a node id"))?;
        address
            .parse::<std::net::SocketAddrV4>()
            .map_err(|_| format!("--cluster: `{address}` is not an IPv4 address and port"))?;
        voters.push((id, &*Box::leak(address.to_string().into_boxed_str())));
    }
    if voters.is_empty() {
        let own = format!("{ip}:{peer_port}");
        voters.push((me, &*Box::leak(own.into_boxed_str())));
    }
    Ok(Box::leak(voters.into_boxed_slice()))
}

/// Eight bytes from the OS, for election jitter and the store's hash seed.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes) ^ u64::from(std::process::id())
}

/// Bytes from the OS's randomness (the cluster-secret nonces); the node cannot run safely
/// without them, so it stops if there are none.
fn fill_random(bytes: &mut [u8]) {
    use std::io::Read;
    let read = std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(bytes));
    if let Err(error) = read {
        eprintln!("memdi-embedded-host: no randomness from /dev/urandom: {error}");
        std::process::exit(1);
    }
}
