//! `gfs-master`: the namespace, chunk map and leases, from a TOML file and flags.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gfs_master::MasterConfig;
use gfs_util::human::parse_duration;

/// Serve the gfs namespace and chunk map to clients and chunkservers (gRPC).
#[derive(Parser, Debug)]
#[command(name = "gfs-master", version)]
struct Args {
    /// TOML configuration file (see config/master.toml); flags override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Status page, /metrics and /health address (host:port; port 0 picks a free one; "" turns
    /// it off).
    #[arg(long = "http-listen", value_name = "ADDR")]
    http_listen: Option<String>,
    /// Directory of the operation log and checkpoints.
    #[arg(long = "dir", short = 'd', value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Chunk size of the cluster ("64MiB", "1MiB", bytes); must match the chunkservers'.
    #[arg(long = "chunk-size", value_name = "SIZE")]
    chunk_size: Option<String>,
    /// Lease duration ("60s").
    #[arg(long, value_name = "DURATION")]
    lease: Option<String>,
    /// How often chunkservers heartbeat ("3s"); dead_after stays at least five of them.
    #[arg(long = "heartbeat-interval", value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// How long a reported chunk unknown to the master lives before it is deleted ("10m").
    #[arg(long = "orphan-grace", value_name = "DURATION")]
    orphan_grace: Option<String>,
    /// A chunkserver silent this long is dead and its chunks are re-replicated ("15s"; more
    /// than the heartbeat interval).
    #[arg(long = "dead-after", value_name = "DURATION")]
    dead_after: Option<String>,
    /// How long deleted entries stay in /.trash before they and their chunks go ("72h").
    #[arg(long = "trash-retention", value_name = "DURATION")]
    trash_retention: Option<String>,
    /// Re-replication copies in flight in the cluster (0 turns re-replication off).
    #[arg(long = "max-clones", value_name = "N")]
    max_clones: Option<usize>,
    /// Every master of a replicated group, comma separated (host:port of each one's gRPC
    /// service, the same list in the same order on each); sets `[raft] members`.
    #[arg(long = "raft-members", value_name = "ADDRS")]
    raft_members: Option<String>,
    /// This master's position in the group's list, from 1; sets `[raft] id`.
    #[arg(long = "raft-id", value_name = "N")]
    raft_id: Option<u64>,
    /// A new master joining a group that runs: it waits to be added (`gfs admin add-master`);
    /// sets `[raft] join`.
    #[arg(long = "raft-join")]
    raft_join: bool,
    #[command(flatten)]
    common: gfs_bins::CommonArgs,
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse_from(gfs_bins::go_style_args(std::env::args_os(), &["config"]));
    let mut cfg = match &args.config {
        Some(p) => MasterConfig::load(p)?,
        None => MasterConfig::default(),
    };
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.http_listen {
        cfg.http_listen = l;
    }
    if let Some(d) = args.dir {
        cfg.data_dir = d;
    }
    if let Some(s) = args.chunk_size {
        cfg.chunk_size = s
            .parse::<gfs_util::Size>()
            .map_err(|e| anyhow::anyhow!("--chunk-size: {e}"))?;
    }
    if let Some(l) = args.lease {
        cfg.lease = parse_duration(&l).map_err(|e| anyhow::anyhow!("--lease: {e}"))?;
    }
    if let Some(h) = args.heartbeat_interval {
        cfg.heartbeat_interval =
            parse_duration(&h).map_err(|e| anyhow::anyhow!("--heartbeat-interval: {e}"))?;
        cfg.dead_after = cfg.dead_after.max(cfg.heartbeat_interval * 5);
    }
    if let Some(d) = args.dead_after {
        cfg.dead_after = parse_duration(&d).map_err(|e| anyhow::anyhow!("--dead-after: {e}"))?;
    }
    if let Some(n) = args.max_clones {
        cfg.max_clones = n;
    }
    if let Some(t) = args.trash_retention {
        cfg.trash_retention =
            parse_duration(&t).map_err(|e| anyhow::anyhow!("--trash-retention: {e}"))?;
    }
    if let Some(g) = args.orphan_grace {
        cfg.orphan_grace =
            parse_duration(&g).map_err(|e| anyhow::anyhow!("--orphan-grace: {e}"))?;
    }
    if args.raft_members.is_some() || args.raft_id.is_some() || args.raft_join {
        let raft = cfg.raft.get_or_insert_with(Default::default);
        if let Some(m) = &args.raft_members {
            raft.members = gfs_host::master_list(m);
        }
        if let Some(id) = args.raft_id {
            raft.id = id;
        }
        raft.join |= args.raft_join;
    }
    args.common.apply_tls(&mut cfg.tls, "master");
    cfg.validate()?;
    if args.common.printed(&cfg)? {
        return Ok(());
    }
    gfs_bins::serve_master(cfg, gfs_bins::shutdown_signal()).await
}

#[tokio::main]
async fn main() -> ExitCode {
    gfs_bins::main_of("gfs-master", run()).await
}
