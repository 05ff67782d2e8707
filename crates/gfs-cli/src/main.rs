//! `gfs`: the command-line client of a gfs cluster (mkdir, ls, stat, put, get, cat, append,
//! rm, mv, fsck, admin report and decommission, health).
//!
//! Thin by design: argument parsing (here), output formatting (`out`) and wiring to
//! `gfs-client`, one module per command group (`namespace`, `transfer`, `admin`); no protocol
//! logic, and no server crate linked. Exit status: 0 on success, 1 with one `error: ...` line
//! on stderr for any failure, 2 for usage errors (clap's). stdout carries only the command's
//! output (logs go to stderr, `warn` unless `RUST_LOG` says otherwise), so scripts can parse
//! it; `--json` prints one JSON document, the serde form of gfs-client's types.

mod admin;
mod namespace;
mod out;
mod transfer;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gfs_client::Client;
use serde::Serialize;

use crate::out::print;

/// The master address when neither `--master` nor `GFS_MASTER` gives one.
const DEFAULT_MASTER: &str = "127.0.0.1:9000";

/// Command-line client of a gfs cluster.
///
/// Exit status: 0 on success; 1 on any failure (one `error: ...` line on stderr); 2 on a usage
/// error. Remote paths are absolute (`/dir/file`).
#[derive(Parser, Debug)]
#[command(name = "gfs", version)]
struct Cli {
    /// Master address HOST:PORT, or a group of masters A:PORT,B:PORT,C:PORT (calls follow
    /// their leader) [default: $GFS_MASTER, then 127.0.0.1:9000].
    #[arg(long, global = true, value_name = "ADDR")]
    master: Option<String>,
    /// Directory of the cluster's certificates: ca.pem and client.pem/.key (admin.pem/.key for
    /// fsck and admin) [default: $GFS_CERTS, then ./data/certs if there, as gfs-cluster
    /// makes it; else no TLS].
    #[arg(long, global = true, value_name = "DIR")]
    certs: Option<std::path::PathBuf>,
    /// TLS on the data plane too, with the same certificate (needed by chunkservers that set
    /// `[tls] data_plane = true`) [default: on when $GFS_DATA_TLS is 1].
    #[arg(long = "data-tls", global = true)]
    data_tls: bool,
    /// `ls` and `stat` may be answered by any master of a group from its own state, which
    /// may lag the leader's (`--master` naming one follower reads that one's).
    #[arg(long, global = true)]
    stale: bool,
    /// Print the effective configuration (master address, client timeouts and sizes) as TOML
    /// and exit.
    #[arg(long = "print-config", global = true)]
    print_config: bool,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a directory.
    Mkdir {
        /// Create missing parent directories too; an existing directory is not an error.
        #[arg(short, long)]
        parents: bool,
        /// Remote directory.
        path: String,
    },
    /// List a directory (or show a file): one path per line.
    Ls {
        /// Long listing: type (d or -), size in bytes, chunks, mtime (UTC), path.
        #[arg(short, long)]
        long: bool,
        /// Print one JSON array of {path, type, size (files), chunks, mtime_ms}.
        #[arg(long)]
        json: bool,
        /// Remote directory or file.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Show a file's or directory's metadata and, for a file, its chunks and replicas.
    Stat {
        /// Print one JSON object (path, type, size, mtime_ms, replication, chunks).
        #[arg(long)]
        json: bool,
        /// Remote path.
        path: String,
    },
    /// Upload a local file (or stdin) to a new remote file (missing parent directories are
    /// created).
    Put {
        /// Replace REMOTE if it exists (it is deleted, then written anew).
        #[arg(short, long)]
        force: bool,
        /// Local file, or `-` for stdin.
        local: String,
        /// Remote file; must not exist unless --force.
        remote: String,
    },
    /// Download a remote file to a local file (or stdout).
    Get {
        /// Remote file.
        remote: String,
        /// Local file (written as LOCAL.part, renamed when complete), an existing directory,
        /// or `-` for stdout.
        local: String,
    },
    /// Write a remote file to stdout.
    Cat {
        /// Remote file.
        remote: String,
    },
    /// Append the input as one record and print the file offset it landed at.
    ///
    /// The whole input is one record append: atomic, at an offset the chunk's primary picks,
    /// at most a quarter of a chunk. REMOTE is created if it does not exist, with its missing
    /// parent directories (concurrent appenders may all start on a missing file).
    Append {
        /// Print {"offset": N, "length": M}.
        #[arg(long)]
        json: bool,
        /// Remote file.
        remote: String,
        /// Local file holding the record; stdin when omitted or `-`.
        local: Option<String>,
    },
    /// Delete a file or an empty directory.
    Rm {
        /// Delete a directory and everything beneath it.
        #[arg(short, long)]
        recursive: bool,
        /// Remote path.
        path: String,
    },
    /// Rename SRC to DST atomically; fails if DST exists.
    Mv {
        /// Remote source path.
        src: String,
        /// Remote destination path.
        dst: String,
    },
    /// Check the health of every file at or under PATH: chunks short of the replication goal,
    /// lost chunks, stale or corrupt replicas (past 4 MiB of them, the rest are counted, not
    /// listed). Exits 1 when anything is unhealthy.
    Fsck {
        /// Print one JSON object (files, chunks, replication_goal, unhealthy, unhealthy_files,
        /// unlisted_files).
        #[arg(long)]
        json: bool,
        /// Remote file or directory.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Operator commands.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Ask a master's or chunkserver's HTTP `/health` (plain HTTP, no TLS) and print its
    /// answer; exits 0 only on 200 (a container's health check: no curl in the image).
    Health {
        /// HOST:PORT of the server's HTTP listener [default: $GFS_HEALTH_ADDR, then
        /// 127.0.0.1:9001].
        addr: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// The cluster summary, every chunkserver and recent events (as on the status page).
    Report {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Drain a chunkserver: its chunks are copied elsewhere, then it is safe to stop. Waits
    /// until then, printing progress.
    Decommission {
        /// Return at once with how many chunks still need a copy.
        #[arg(long)]
        no_wait: bool,
        /// Stop draining it: it takes new replicas again.
        #[arg(long, conflicts_with = "no_wait")]
        cancel: bool,
        /// The chunkserver's id (as `gfs admin report` lists it).
        server: String,
    },
    /// Add a master to the replicated group: start it first with `--raft-join` (its own id
    /// and address); it catches up, then votes. Prints the group.
    AddMaster {
        /// Its number in the group (one no master uses).
        id: u64,
        /// Its gRPC address (host:port), as the other masters and clients reach it.
        addr: String,
    },
    /// Remove a master from the replicated group (the leader too: another is elected); stop
    /// it afterwards. Prints the group.
    RemoveMaster {
        /// Its number in the group (as `gfs admin report` lists it).
        id: u64,
    },
}

fn main() -> ExitCode {
    // Usage errors exit 2 (and --help / --version 0) inside clap.
    let cli = Cli::parse();
    if cli.cmd.is_none() && !cli.print_config {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required (see --help)",
            )
            .exit();
    }
    init_tracing();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("{e:#}").replace(['\n', '\r'], " ");
            if msg.contains("h2 protocol error") || msg.contains("InvalidContentType") {
                // What a plain client meets at a TLS port, and a TLS client at a plain one.
                msg += " (does the master serve TLS? give --certs DIR or $GFS_CERTS, or none for \
                        an insecure cluster)";
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, `warn` unless `RUST_LOG` is set: stdout stays clean for scripts.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Where the certificates are: `--certs`, `$GFS_CERTS`, then `./data/certs` (gfs-cluster's)
/// if it holds a CA; none means no TLS.
fn certs_dir(flag: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    flag.or_else(|| {
        std::env::var_os("GFS_CERTS")
            .filter(|d| !d.is_empty())
            .map(Into::into)
    })
    .or_else(|| {
        let local = std::path::PathBuf::from("data/certs");
        local.join("ca.pem").exists().then_some(local)
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let addr = cli
        .master
        .or_else(|| std::env::var("GFS_MASTER").ok().filter(|a| !a.is_empty()))
        .unwrap_or_else(|| DEFAULT_MASTER.to_string());
    if cli.print_config {
        #[derive(Serialize)]
        struct Effective<'a> {
            master: &'a str,
            client: gfs_client::ClientConfig,
        }
        let text = toml::to_string(&Effective {
            master: &addr,
            client: gfs_client::ClientConfig {
                stale_reads: cli.stale,
                ..gfs_client::ClientConfig::default()
            },
        })
        .context("printing the configuration")?;
        return print(&text);
    }
    let Some(cmd) = cli.cmd else {
        return Ok(());
    };
    if let Cmd::Health { addr } = cmd {
        let addr = addr
            .or_else(|| {
                std::env::var("GFS_HEALTH_ADDR")
                    .ok()
                    .filter(|a| !a.is_empty())
            })
            .unwrap_or_else(|| "127.0.0.1:9001".into());
        return admin::health(&addr).await;
    }
    let mut cfg = gfs_client::ClientConfig {
        stale_reads: cli.stale,
        ..gfs_client::ClientConfig::default()
    };
    if let Some(dir) = certs_dir(cli.certs) {
        let admin = matches!(cmd, Cmd::Fsck { .. } | Cmd::Admin(_));
        let order = if admin {
            ["admin", "client"]
        } else {
            ["client", "admin"]
        };
        let name = order
            .into_iter()
            .find(|n| dir.join(format!("{n}.pem")).exists())
            .ok_or_else(|| anyhow::anyhow!("{}: no client.pem or admin.pem", dir.display()))?;
        let files = gfs_client::tls::TlsFiles::in_dir(&dir, name);
        let tls = gfs_client::tls::Tls::load(&files)
            .with_context(|| format!("the certificates in {}", dir.display()))?;
        let data_tls = cli.data_tls || std::env::var("GFS_DATA_TLS").is_ok_and(|v| v == "1");
        cfg.net = cfg
            .net
            .with_tls(std::sync::Arc::new(tls.with_data_plane(data_tls)));
    }
    // An append rides out a master that is down or restarting (it retries within its
    // deadline, like any transient failure); the other commands say at once that it is not
    // there.
    let client = if matches!(cmd, Cmd::Append { .. }) {
        Client::connect_lazy(&addr, cfg)?
    } else {
        Client::connect_with(&addr, cfg).await?
    };
    match cmd {
        Cmd::Mkdir { parents, path } => namespace::mkdir(&client, &path, parents).await,
        Cmd::Ls { long, json, path } => namespace::ls(&client, &path, long, json).await,
        Cmd::Stat { json, path } => namespace::stat(&client, &path, json).await,
        Cmd::Put {
            force,
            local,
            remote,
        } => transfer::put(&client, &local, &remote, force).await,
        Cmd::Get { remote, local } => transfer::get(&client, &remote, &local).await,
        Cmd::Cat { remote } => transfer::cat(&client, &remote).await,
        Cmd::Append {
            json,
            remote,
            local,
        } => transfer::append(&client, &remote, local.as_deref(), json).await,
        Cmd::Rm { recursive, path } => namespace::rm(&client, &path, recursive).await,
        Cmd::Mv { src, dst } => namespace::mv(&client, &src, &dst).await,
        Cmd::Fsck { json, path } => admin::fsck(&client, &path, json).await,
        Cmd::Admin(AdminCmd::Report { json }) => admin::report(&client, json).await,
        Cmd::Admin(AdminCmd::AddMaster { id, addr }) => {
            admin::print_masters(&client.add_master(id, &addr).await?)
        }
        Cmd::Admin(AdminCmd::RemoveMaster { id }) => {
            admin::print_masters(&client.remove_master(id).await?)
        }
        Cmd::Health { .. } => unreachable!("answered before connecting"),
        Cmd::Admin(AdminCmd::Decommission {
            no_wait,
            cancel,
            server,
        }) => {
            if cancel {
                client.decommission(&server, true).await?;
                return print(&format!("{server}: no longer draining\n"));
            }
            admin::decommission(&client, &server, !no_wait).await
        }
    }
}
