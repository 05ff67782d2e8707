//! `gfs`: the command-line client of a gfs cluster (mkdir, ls, stat, put, get, cat, append,
//! rm, mv).
//!
//! Thin by design: argument parsing, output formatting and wiring to `gfs-client`; no protocol
//! logic. Exit status: 0 on success, 1 with one `error: ...` line on stderr for any failure,
//! 2 for usage errors (clap's). stdout carries only the command's output (logs go to stderr,
//! `warn` unless `RUST_LOG` says otherwise), so scripts can parse it; `--json` prints one JSON
//! document.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use gfs_client::{Client, ClientError, Entry, Reader};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The master address when neither `--master` nor `GFS_MASTER` gives one.
const DEFAULT_MASTER: &str = "127.0.0.1:9000";

/// Bytes read from the local input per `Writer::write`.
const PUT_PIECE: usize = 1 << 20;

/// Command-line client of a gfs cluster.
///
/// Exit status: 0 on success; 1 on any failure (one `error: ...` line on stderr); 2 on a usage
/// error. Remote paths are absolute (`/dir/file`).
#[derive(Parser, Debug)]
#[command(name = "gfs", version)]
struct Cli {
    /// Master address HOST:PORT [default: $GFS_MASTER, then 127.0.0.1:9000].
    #[arg(long, global = true, value_name = "ADDR")]
    master: Option<String>,
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
    /// Upload a local file (or stdin) to a new remote file.
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
    /// at most a quarter of a chunk. REMOTE is created if it does not exist (concurrent
    /// appenders may all start on a missing file).
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
            let msg = format!("{e:#}").replace(['\n', '\r'], " ");
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
            client: gfs_client::ClientConfig::default(),
        })
        .context("printing the configuration")?;
        return print(&text);
    }
    let Some(cmd) = cli.cmd else {
        return Ok(());
    };
    // An append rides out a master that is down or restarting (it retries within its
    // deadline, like any transient failure); the other commands say at once that it is not
    // there.
    let client = if matches!(cmd, Cmd::Append { .. }) {
        Client::connect_lazy(&addr, gfs_client::ClientConfig::default())?
    } else {
        Client::connect(&addr).await?
    };
    match cmd {
        Cmd::Mkdir { parents, path } => Ok(client.mkdir(&path, parents).await?),
        Cmd::Ls { long, json, path } => ls(&client, &path, long, json).await,
        Cmd::Stat { json, path } => stat(&client, &path, json).await,
        Cmd::Put {
            force,
            local,
            remote,
        } => put(&client, &local, &remote, force).await,
        Cmd::Get { remote, local } => get(&client, &remote, &local).await,
        Cmd::Cat { remote } => to_stdout(&client, &remote).await,
        Cmd::Append {
            json,
            remote,
            local,
        } => append(&client, &remote, local.as_deref(), json).await,
        Cmd::Rm { recursive, path } => Ok(client.delete(&path, recursive).await?),
        Cmd::Mv { src, dst } => Ok(client.rename(&src, &dst).await?),
        Cmd::Fsck { json, path } => fsck(&client, &path, json).await,
        Cmd::Admin(AdminCmd::Report { json }) => report(&client, json).await,
        Cmd::Admin(AdminCmd::Decommission {
            no_wait,
            cancel,
            server,
        }) => {
            if cancel {
                client.decommission(&server, true).await?;
                return print(&format!("{server}: no longer draining\n"));
            }
            decommission(&client, &server, !no_wait).await
        }
    }
}

async fn report(client: &Client, json: bool) -> anyhow::Result<()> {
    use gfs_util::human::{ago, bytes};
    let r = client.report().await?;
    if json {
        let servers: Vec<serde_json::Value> = r
            .servers
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "data_addr": s.data_addr, "repl_addr": s.repl_addr,
                    "rack": s.rack, "state": s.state,
                    "last_heartbeat_ms_ago": s.last_heartbeat_ms_ago, "chunks": s.chunks,
                    "capacity_bytes": s.capacity_bytes, "used_bytes": s.used_bytes,
                    "copies_in": s.copies_in, "copies_out": s.copies_out,
                    "copied_in_bytes": s.copied_in_bytes, "copied_out_bytes": s.copied_out_bytes,
                })
            })
            .collect();
        let events: Vec<serde_json::Value> = r
            .events
            .iter()
            .map(|e| serde_json::json!({"unix_ms": e.unix_ms, "kind": e.kind, "text": e.text}))
            .collect();
        return print_json(&serde_json::json!({
            "capacity_bytes": r.capacity_bytes, "used_bytes": r.used_bytes,
            "files": r.files, "directories": r.directories, "chunks": r.chunks,
            "replication_goal": r.replication_goal,
            "under_replicated": r.under_replicated, "lost": r.lost,
            "stale_replicas": r.stale_replicas, "repair_queue": r.repair_queue,
            "copies_in_flight": r.copies_in_flight, "trash_entries": r.trash_entries,
            "master_uptime_ms": r.master_uptime_ms, "warming_up": r.warming_up,
            "servers": servers, "events": events,
        }));
    }
    let alive = r.servers.iter().filter(|s| s.state == "alive").count();
    let pct = r.used_bytes as f64 * 100.0 / r.capacity_bytes.max(1) as f64;
    let mut out = String::new();
    if r.warming_up {
        out += "the master has just started: chunkservers are still reporting\n";
    }
    out += &format!(
        "chunkservers: {alive} of {} alive    capacity {}    used {} ({pct:.1}%)\n\
         files {}    directories {}    chunks {} (goal {} replicas)\n\
         under-replicated {}    lost {}    stale replicas {}\n\
         waiting for a copy {}    copying {}    in the trash {}    master up {}\n\n",
        r.servers.len(),
        bytes(r.capacity_bytes),
        bytes(r.used_bytes),
        r.files,
        r.directories,
        r.chunks,
        r.replication_goal,
        r.under_replicated,
        r.lost,
        r.stale_replicas,
        r.repair_queue,
        r.copies_in_flight,
        r.trash_entries,
        ago(r.master_uptime_ms),
    );
    out += &format!(
        "{:<10} {:<22} {:<8} {:<10} {:>10} {:>8} {:>11} {:>11} {:>9}\n",
        "ID", "ADDRESS", "RACK", "STATE", "HEARTBEAT", "CHUNKS", "USED", "FREE", "COPIES"
    );
    for s in &r.servers {
        out += &format!(
            "{:<10} {:<22} {:<8} {:<10} {:>10} {:>8} {:>11} {:>11} {:>9}\n",
            s.id,
            s.data_addr,
            if s.rack.is_empty() { "-" } else { &s.rack },
            s.state,
            ago(s.last_heartbeat_ms_ago),
            s.chunks,
            bytes(s.used_bytes),
            bytes(s.capacity_bytes.saturating_sub(s.used_bytes)),
            format!("{}/{}", s.copies_in, s.copies_out),
        );
    }
    if !r.events.is_empty() {
        out += "\nrecent events (newest first):\n";
        for e in r.events.iter().take(20) {
            out += &format!("  {}  {:<12} {}\n", mtime(e.unix_ms), e.kind, e.text);
        }
    }
    print(&out)
}

async fn fsck(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let r = client.fsck(path).await?;
    // The master lists what fits in one reply and counts the rest.
    let unhealthy = r.unhealthy_files.max(r.unhealthy.len() as u64);
    if json {
        let files: Vec<serde_json::Value> = r
            .unhealthy
            .iter()
            .map(|f| {
                let chunks: Vec<serde_json::Value> = f
                    .chunks
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "index": c.index, "handle": c.handle, "version": c.version,
                            "current": c.current, "stale": c.stale, "corrupt": c.corrupt,
                            "lost": c.current == 0,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "path": f.path, "chunks": chunks, "unlisted_chunks": f.unlisted_chunks,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "path": path, "files": r.files, "chunks": r.chunks,
            "replication_goal": r.replication_goal,
            "healthy": unhealthy == 0, "unhealthy": files,
            "unhealthy_files": unhealthy, "unlisted_files": r.unlisted_files,
        }))?;
    } else {
        let mut out = String::new();
        for f in &r.unhealthy {
            for c in &f.chunks {
                let what = if c.current == 0 {
                    "LOST".to_string()
                } else if c.current < r.replication_goal {
                    format!("UNDER-REPLICATED {}/{}", c.current, r.replication_goal)
                } else {
                    "replicated".to_string()
                };
                out += &format!(
                    "{} chunk {} (handle {}): {what}{}{}\n",
                    f.path,
                    c.index,
                    c.handle,
                    if c.stale > 0 {
                        format!(", {} stale", c.stale)
                    } else {
                        String::new()
                    },
                    if c.corrupt > 0 {
                        format!(", {} corrupt", c.corrupt)
                    } else {
                        String::new()
                    },
                );
            }
            if f.unlisted_chunks > 0 {
                out += &format!(
                    "{}: {} more bad chunks not listed\n",
                    f.path, f.unlisted_chunks
                );
            }
        }
        if r.unlisted_files > 0 {
            out += &format!(
                "{} more unhealthy files not listed (run fsck on a narrower path)\n",
                r.unlisted_files
            );
        }
        out += &format!(
            "{path}: {} files, {} chunks, {unhealthy} unhealthy files: {}\n",
            r.files,
            r.chunks,
            if unhealthy == 0 {
                "HEALTHY"
            } else {
                "UNHEALTHY"
            }
        );
        print(&out)?;
    }
    if unhealthy > 0 {
        bail!(
            "{unhealthy} of {} files under {path} are unhealthy",
            r.files
        );
    }
    Ok(())
}

async fn decommission(client: &Client, server: &str, wait: bool) -> anyhow::Result<()> {
    let mut remaining = client.decommission(server, false).await?;
    print(&format!(
        "{server}: draining; {remaining} chunks still need a copy elsewhere\n"
    ))?;
    while wait && remaining > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = client.decommission(server, false).await?;
        if now != remaining {
            print(&format!(
                "{server}: {now} chunks still need a copy elsewhere\n"
            ))?;
        }
        remaining = now;
    }
    if remaining == 0 {
        print(&format!("{server}: drained; safe to stop\n"))?;
    }
    Ok(())
}

/// Writes `s` to stdout and flushes (an error, e.g. a closed pipe, is returned, not a panic).
fn print(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v).context("encoding JSON")?;
    s.push('\n');
    print(&s)
}

fn kind(e: &Entry) -> &'static str {
    if e.is_dir { "dir" } else { "file" }
}

/// `mtime_ms` as RFC 3339 UTC, to the second.
fn mtime(ms: u64) -> String {
    humantime::format_rfc3339_seconds(gfs_util::time::from_unix_ms(ms)).to_string()
}

/// One entry of `ls --json`.
#[derive(Serialize)]
struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    chunks: u64,
    mtime_ms: u64,
}

async fn ls(client: &Client, path: &str, long: bool, json: bool) -> anyhow::Result<()> {
    let entries = match client.list(path).await {
        Ok(entries) => entries,
        // The master lists directories only; a file lists as itself, as ls(1) does.
        Err(ClientError::FailedPrecondition(e)) => match client.stat(path).await {
            Ok(entry) if !entry.is_dir => vec![entry],
            _ => return Err(ClientError::FailedPrecondition(e).into()),
        },
        Err(e) => return Err(e.into()),
    };
    if !long && !json {
        let mut s = String::new();
        for e in &entries {
            s.push_str(&e.path);
            s.push('\n');
        }
        return print(&s);
    }
    // Sizes come from the chunkservers: ask for several files at once.
    let sizes: Vec<Option<u64>> = futures::stream::iter(&entries)
        .map(|e| async move {
            if e.is_dir {
                Ok(None)
            } else {
                client
                    .size(&e.path)
                    .await
                    .map(Some)
                    .with_context(|| format!("size of {}", e.path))
            }
        })
        .buffered(16)
        .collect::<Vec<anyhow::Result<Option<u64>>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    if json {
        let out: Vec<LsEntry> = entries
            .iter()
            .zip(sizes)
            .map(|(e, size)| LsEntry {
                path: e.path.clone(),
                kind: kind(e),
                size,
                chunks: e.chunks,
                mtime_ms: e.mtime_ms,
            })
            .collect();
        return print_json(&out);
    }
    let mut s = String::new();
    for (e, size) in entries.iter().zip(sizes) {
        let (t, size, chunks) = match size {
            None => ('d', "-".to_string(), "-".to_string()),
            Some(n) => ('-', n.to_string(), e.chunks.to_string()),
        };
        s.push_str(&format!(
            "{t} {size:>14} {chunks:>6}  {}  {}\n",
            mtime(e.mtime_ms),
            e.path
        ));
    }
    print(&s)
}

/// `stat --json`.
#[derive(Serialize)]
struct StatOut {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime_ms: u64,
    replication: u32,
    /// Chunks with fewer current replicas than the goal.
    under_replicated: u64,
    /// Chunks no live server holds at the current version.
    lost_chunks: u64,
    /// Stale replicas still on live servers.
    stale_replicas: u64,
    chunks: Vec<ChunkOut>,
}

#[derive(Serialize)]
struct ChunkOut {
    index: u64,
    handle: u64,
    version: u64,
    /// None when no replica could say (a lost chunk).
    length: Option<u64>,
    sealed: bool,
    lost: bool,
    replicas: Vec<ReplicaOut>,
}

#[derive(Serialize)]
struct ReplicaOut {
    id: String,
    data_addr: String,
}

async fn stat(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let e = client.stat(path).await?;
    let mut chunks = Vec::new();
    if !e.is_dir {
        let l = client.refresh(path).await?;
        let lengths =
            futures::future::join_all(l.chunks.iter().map(|c| client.chunk_length(path, c)));
        for (c, len) in l.chunks.iter().zip(lengths.await) {
            let lost = c.replicas.is_empty();
            let length = match len {
                Ok(l) => Some(l),
                Err(_) if lost => c.sealed_length,
                Err(e) => {
                    return Err(e).with_context(|| format!("{path}: length of chunk {}", c.index));
                }
            };
            chunks.push(ChunkOut {
                index: c.index,
                handle: c.handle,
                version: c.version,
                length,
                sealed: c.sealed_length.is_some(),
                lost,
                replicas: c
                    .replicas
                    .iter()
                    .map(|r| ReplicaOut {
                        id: r.id.clone(),
                        data_addr: r.data_addr.clone(),
                    })
                    .collect(),
            });
        }
    }
    let out = StatOut {
        path: e.path.clone(),
        kind: kind(&e),
        size: chunks.iter().filter_map(|c| c.length).sum(),
        mtime_ms: e.mtime_ms,
        replication: e.replication,
        under_replicated: e.under_replicated,
        lost_chunks: e.lost_chunks,
        stale_replicas: e.stale_replicas,
        chunks,
    };
    if json {
        return print_json(&out);
    }
    let mut s = format!("path:        {}\ntype:        {}\n", out.path, out.kind);
    if !e.is_dir {
        s.push_str(&format!(
            "size:        {}\nreplication: {}\nchunks:      {}\n",
            out.size,
            out.replication,
            out.chunks.len()
        ));
        s.push_str(&format!(
            "health:      {}\n",
            if out.under_replicated + out.lost_chunks + out.stale_replicas == 0 {
                "ok".to_string()
            } else {
                format!(
                    "{} chunks under-replicated, {} lost, {} stale replicas",
                    out.under_replicated, out.lost_chunks, out.stale_replicas
                )
            }
        ));
    }
    s.push_str(&format!(
        "mtime:       {} ({} ms)\n",
        mtime(out.mtime_ms),
        out.mtime_ms
    ));
    for c in &out.chunks {
        let replicas: Vec<String> = c
            .replicas
            .iter()
            .map(|r| format!("{}@{}", r.id, r.data_addr))
            .collect();
        s.push_str(&format!(
            "chunk {}: handle {} version {} length {}{} replicas {}\n",
            c.index,
            c.handle,
            c.version,
            c.length.map_or("unknown".to_string(), |l| l.to_string()),
            if c.sealed { " sealed" } else { "" },
            if c.lost {
                "none (LOST)".to_string()
            } else {
                replicas.join(",")
            }
        ));
    }
    print(&s)
}

/// Runs `transfer` unless SIGINT (Ctrl-C) comes first, which makes it fail with `interrupted`
/// so that the caller cleans up (no partial remote file after put, no `.part` after get).
async fn interruptible<T>(
    transfer: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        res = transfer => res,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// A progress bar on stderr when it is a terminal, else a hidden one.
fn progress(len: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::new(n),
            "{wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} {binary_bytes_per_sec} {elapsed}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// Opens the local input: stdin for `-`, else a regular file (with its length).
async fn open_input(
    local: &str,
) -> anyhow::Result<(Box<dyn AsyncRead + Unpin + Send>, Option<u64>)> {
    if local == "-" {
        return Ok((Box::new(tokio::io::stdin()), None));
    }
    let f = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("opening {local}"))?;
    let meta = f
        .metadata()
        .await
        .with_context(|| format!("reading {local}"))?;
    if meta.is_dir() {
        bail!("{local} is a directory");
    }
    Ok((Box::new(f), meta.is_file().then_some(meta.len())))
}

async fn put(client: &Client, local: &str, remote: &str, force: bool) -> anyhow::Result<()> {
    let (mut input, len) = open_input(local).await?;
    match client.create(remote).await {
        Ok(()) => {}
        Err(ClientError::AlreadyExists(_)) if force => {
            if client.stat(remote).await?.is_dir {
                bail!("{remote} is a directory");
            }
            client.delete(remote, false).await?;
            client.create(remote).await?;
        }
        Err(ClientError::AlreadyExists(_)) => bail!("already exists: {remote}"),
        Err(e) => return Err(e.into()),
    }
    let bar = progress(len);
    let res = interruptible(async {
        let mut w = client.writer(remote);
        let mut buf = vec![0u8; PUT_PIECE];
        let mut total = 0u64;
        loop {
            let n = input
                .read(&mut buf)
                .await
                .with_context(|| format!("reading {local}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.write(&buf[..n]).await?;
            bar.set_position(w.acked());
        }
        let written = w.finish().await?;
        bar.set_position(written);
        if written != total {
            bail!("{remote}: wrote {written} of {total} bytes");
        }
        anyhow::Ok(())
    })
    .await;
    bar.finish_and_clear();
    if let Err(e) = res {
        // Leave no partial file behind; say so if that fails too.
        return Err(match client.delete(remote, false).await {
            Ok(()) => e.context(format!(
                "put {remote} failed (the partial file was removed)"
            )),
            Err(d) => e.context(format!(
                "put {remote} failed (the partial file could not be removed: {d})"
            )),
        });
    }
    Ok(())
}

async fn append(
    client: &Client,
    remote: &str,
    local: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let (mut input, _) = open_input(local.unwrap_or("-")).await?;
    let mut data = Vec::new();
    input
        .read_to_end(&mut data)
        .await
        .with_context(|| format!("reading {}", local.unwrap_or("stdin")))?;
    // Many appenders may start at once: whoever creates first wins, the others append too.
    client.ensure_file(remote).await?;
    let length = data.len() as u64;
    let offset = client.append(remote, data).await?;
    if json {
        #[derive(Serialize)]
        struct Out {
            offset: u64,
            length: u64,
        }
        print_json(&Out { offset, length })
    } else {
        print(&format!("{offset}\n"))
    }
}

/// Copies all that `reader` yields into `out`; fails unless every byte the file held (when the
/// reader opened it) arrived.
async fn copy_out(
    reader: Reader,
    remote: &str,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let size = reader.size();
    let bar = progress(Some(size));
    let res = tokio::io::copy(&mut bar.wrap_async_read(reader), out).await;
    bar.finish_and_clear();
    let n = res.with_context(|| format!("copying {remote}"))?;
    out.flush().await.context("flushing the output")?;
    if n != size {
        bail!("{remote}: read {n} of {size} bytes");
    }
    Ok(())
}

async fn to_stdout(client: &Client, remote: &str) -> anyhow::Result<()> {
    let reader = client.reader(remote).await?;
    copy_out(reader, remote, &mut tokio::io::stdout()).await
}

async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    if local == "-" {
        return to_stdout(client, remote).await;
    }
    let mut target = PathBuf::from(local);
    if target.is_dir() {
        let name = remote.rsplit('/').next().unwrap_or_default();
        if name.is_empty() {
            bail!("{remote} has no file name to create in {local}");
        }
        target.push(name);
    }
    let reader = client.reader(remote).await?;
    let mut part = target.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let res = interruptible(get_into(reader, remote, &part, &target)).await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    res
}

/// Writes what `reader` yields to `part`, syncs it, then renames it to `target`: `target`
/// never holds a partial file.
async fn get_into(reader: Reader, remote: &str, part: &Path, target: &Path) -> anyhow::Result<()> {
    let shown = part.display();
    let mut f = tokio::fs::File::create(part)
        .await
        .with_context(|| format!("creating {shown}"))?;
    copy_out(reader, remote, &mut f).await?;
    f.sync_all()
        .await
        .with_context(|| format!("syncing {shown}"))?;
    drop(f);
    tokio::fs::rename(part, target)
        .await
        .with_context(|| format!("renaming {shown} to {}", target.display()))
}
