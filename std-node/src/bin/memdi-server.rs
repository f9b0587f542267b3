//! `memdi-server`: one node of a memdi cluster. `memdi-server --help` lists every flag.

use std::process::ExitCode;

use clap::Parser;
use memdi_node::config::{LogFormat, ServerArgs};
use memdi_node::server::Prepared;

/// Sends log lines to stderr in `format`, at the level RUST_LOG sets (default: info).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => lines.json().with_ansi(false).init(),
    }
}

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    let config = match args.merged_with_file().and_then(ServerArgs::resolve) {
        Ok(config) => config,
        Err(error) => {
            // Before the log exists: the configuration decides its format.
            eprintln!("memdi-server: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    tracing::info!(
        "starting node {} (store: {} keys, {} bytes; snapshots every {} s)",
        config.node_id.0,
        config.store_limits.max_keys,
        config.store_limits.max_total_bytes,
        config.snapshot_every_secs
    );
    let prepared = match Prepared::new(config) {
        Ok(prepared) => prepared,
        Err(error) => {
            eprintln!("memdi-server: {error}");
            tracing::error!("{error}");
            return ExitCode::from(1);
        }
    };
    // One thread for the node task and every connection: the node task owns the core and
    // is the one place every request passes, so connection tasks on other threads only
    // added a cross-thread wake-up to each batch each way (measured in docs/benchmarks.md:
    // 1.1x to 1.4x the throughput over RESP on two cores). The disk writer keeps a thread
    // of its own, so fsyncs and snapshot encoding never stall the network.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memdi-server: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(prepared.run(shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memdi-server: {error}");
            tracing::error!("{error}");
            ExitCode::from(1)
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
