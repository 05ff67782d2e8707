//! `gfs-chunkserver`: one chunkserver, from a TOML file and/or the seed's flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser};
use gfs_chunkserver::ChunkserverConfig;
use gfs_util::Size;
use gfs_util::human::parse_duration;

/// Serve chunk replicas: the client data plane (TCP) and the replication/control planes (gRPC).
///
/// The seed's command line works as is: `gfs-chunkserver -p 8080 -r 8081 -h localhost -d tmp/cs1 -id cs1`.
#[derive(Parser, Debug)]
#[command(name = "gfs-chunkserver", version, disable_help_flag = true)]
struct Args {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// TOML configuration file (see config/chunkserver.toml); flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data-plane TCP port (0 picks a free one).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Option<u16>,
    /// Replication/control-plane gRPC port (0 picks a free one).
    #[arg(short = 'r', long = "repl-port", value_name = "PORT")]
    repl_port: Option<u16>,
    /// HTTP port of /metrics and /health (0 picks a free one).
    #[arg(long = "http-port", value_name = "PORT")]
    http_port: Option<u16>,
    /// Host to bind and advertise.
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    host: Option<String>,
    /// Host name or address to register with the master when it differs from the bound one
    /// (e.g. -h 0.0.0.0 in a container).
    #[arg(long = "advertise-host", value_name = "HOST")]
    advertise_host: Option<String>,
    /// Data directory.
    #[arg(short = 'd', long = "dir", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Server id.
    #[arg(long = "id", value_name = "ID")]
    id: Option<String>,
    /// Chunk size of the cluster ("64MiB", "1MiB", bytes).
    #[arg(long = "chunk-size", value_name = "SIZE")]
    chunk_size: Option<String>,
    /// The master's address (host:port): register and heartbeat there.
    #[arg(long = "master", value_name = "ADDR")]
    master: Option<String>,
    /// Disk capacity reported to the master, for placement and rebalancing ("100GiB").
    #[arg(long = "capacity", value_name = "SIZE")]
    capacity: Option<String>,
    /// The scrubber verifies one idle chunk every this long ("10s"; "0s" turns it off).
    #[arg(long = "scrub-every", value_name = "DURATION")]
    scrub_every: Option<String>,
    /// Bytes per second re-replication copies into this server may receive ("50MiB"; 0: no cap).
    #[arg(long = "clone-rate", value_name = "SIZE")]
    clone_rate: Option<String>,
    /// How long a sealed chunk keeps its op table ("10m"; must exceed the clients' op deadline
    /// plus the lease period).
    #[arg(long = "op-retention", value_name = "DURATION")]
    op_retention: Option<String>,
    /// Appends in one round (true: WRITE) or two (false: PREPARE, then COMMIT).
    #[arg(long = "one-round", value_name = "BOOL")]
    one_round: Option<bool>,
    #[command(flatten)]
    common: gfs_bins::CommonArgs,
}

fn config(args: &Args) -> anyhow::Result<ChunkserverConfig> {
    let mut cfg = match &args.config {
        Some(path) => ChunkserverConfig::load(path)?,
        None => ChunkserverConfig::default(),
    };
    if let Some(p) = args.port {
        cfg.data_port = p;
    }
    if let Some(p) = args.repl_port {
        cfg.repl_port = p;
    }
    if let Some(p) = args.http_port {
        cfg.http_port = p;
    }
    if let Some(h) = args.host.clone() {
        cfg.host = h;
    }
    if let Some(h) = args.advertise_host.clone() {
        cfg.advertise_host = h;
    }
    if let Some(d) = args.dir.clone() {
        cfg.data_dir = d;
    }
    if let Some(id) = args.id.clone() {
        cfg.id = id;
    }
    if let Some(m) = args.master.clone() {
        cfg.master = m;
    }
    if let Some(s) = args.chunk_size.clone() {
        cfg.chunk_size = s
            .parse::<Size>()
            .map_err(|e| anyhow::anyhow!("--chunk-size: {e}"))?;
    }
    if let Some(s) = args.scrub_every.clone() {
        cfg.storage.scrub_every =
            parse_duration(&s).map_err(|e| anyhow::anyhow!("--scrub-every: {e}"))?;
    }
    if let Some(s) = args.op_retention.clone() {
        cfg.storage.store.op_retention =
            parse_duration(&s).map_err(|e| anyhow::anyhow!("--op-retention: {e}"))?;
    }
    if let Some(s) = args.capacity.clone() {
        cfg.capacity = s
            .parse::<Size>()
            .map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
    }
    if let Some(s) = args.clone_rate.clone() {
        cfg.replication.clone_rate = s
            .parse::<Size>()
            .map_err(|e| anyhow::anyhow!("--clone-rate: {e}"))?;
    }
    if let Some(one_round) = args.one_round {
        cfg.replication.one_round = one_round;
    }
    let id = cfg.id.clone();
    args.common.apply_tls(&mut cfg.tls, &id);
    cfg.validate()?;
    Ok(cfg)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse_from(gfs_bins::go_style_args(
        std::env::args_os(),
        &["id", "config"],
    ));
    let cfg = config(&args)?;
    if args.common.printed(&cfg)? {
        return Ok(());
    }
    gfs_bins::serve_chunkserver(cfg, gfs_bins::shutdown_signal()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    gfs_bins::main_of("gfs-chunkserver", run()).await
}
