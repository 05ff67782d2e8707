//! `gfs put`, `get`, `cat` and `append`: bytes between local files (or stdin/stdout) and the
//! cluster, with a progress bar on a terminal and no partial file left behind on failure or
//! Ctrl-C.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use gfs_client::{Client, ClientError, Reader};
use gfs_util::disk::{Disk, DiskFile, Open, OsDisk};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::out::{print, print_json};

/// Bytes read from the local input per `Writer::write`.
const PUT_PIECE: usize = 1 << 20;

/// Pieces a download holds for the output's writer beyond the one it writes (each a read
/// piece, 4 MiB by default).
const WRITES_AHEAD: usize = 2;

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

/// `gfs put [-f] LOCAL REMOTE`: streams the local file (or stdin) into a new remote file,
/// creating its missing parent directories; a failed put leaves no partial file.
pub async fn put(client: &Client, local: &str, remote: &str, force: bool) -> anyhow::Result<()> {
    let (mut input, len) = open_input(local).await?;
    let mut buf = vec![0u8; PUT_PIECE];
    // The first bytes are read before the file is made: a file with bytes comes with its
    // first chunk (a small file costs one call to the master), an empty one has none.
    let mut n = input
        .read(&mut buf)
        .await
        .with_context(|| format!("reading {local}"))?;
    let make = |parents: bool| async move {
        match (n > 0, parents) {
            (true, true) => client.create_writer_with_parents(remote).await,
            (true, false) => client.create_writer(remote).await,
            (false, true) => client
                .create_with_parents(remote)
                .await
                .map(|()| client.writer(remote)),
            (false, false) => client.create(remote).await.map(|()| client.writer(remote)),
        }
    };
    let mut w = match make(true).await {
        Ok(w) => w,
        Err(ClientError::AlreadyExists(_)) if force => {
            if client.stat(remote).await?.is_dir {
                bail!("{remote} is a directory");
            }
            client.delete(remote, false).await?;
            make(false).await?
        }
        Err(ClientError::AlreadyExists(_)) => bail!("already exists: {remote}"),
        Err(e) => return Err(e.into()),
    };
    let bar = progress(len);
    let res = interruptible(async {
        let mut total = 0u64;
        while n > 0 {
            total += n as u64;
            w.write(&buf[..n]).await?;
            bar.set_position(w.acked());
            n = input
                .read(&mut buf)
                .await
                .with_context(|| format!("reading {local}"))?;
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

/// `gfs append [--json] REMOTE [LOCAL]`: the input as one record append; prints its offset.
/// A missing REMOTE is created, with its missing parent directories.
pub async fn append(
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

/// Copies all that `reader` yields into `out` and flushes it; fails unless every byte the file
/// held (when the reader opened it) arrived. Each piece goes to `out` whole, as the reader
/// received it, from a thread of its own: the reads ahead go on while it writes, and no
/// byte is copied on the way (small writes through the runtime's file and stdout handles,
/// a thread hop each, held `gfs get` to a quarter of the library's speed). Gives `out` back.
async fn copy_out<W: std::io::Write + Send + 'static>(
    mut reader: Reader,
    remote: &str,
    out: W,
) -> anyhow::Result<W> {
    let size = reader.size();
    let bar = progress(Some(size));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITES_AHEAD);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = out;
        while let Some(piece) = rx.blocking_recv() {
            out.write_all(&piece)?;
        }
        out.flush()?;
        std::io::Result::Ok(out)
    });
    let mut n = 0u64;
    let mut failed = None;
    while let Some(piece) = reader.next_piece().await {
        match piece {
            Ok(piece) => {
                n += piece.len() as u64;
                bar.set_position(n);
                if tx.send(piece).await.is_err() {
                    break; // The writer failed: its error says why.
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    bar.finish_and_clear();
    let written = writer.await.context("the output's writer")?;
    if let Some(e) = failed {
        return Err(anyhow::Error::new(e).context(format!("copying {remote}")));
    }
    let out = written.context("writing the output")?;
    if n != size {
        bail!("{remote}: read {n} of {size} bytes");
    }
    Ok(out)
}

/// `gfs cat REMOTE`: the file to stdout.
pub async fn cat(client: &Client, remote: &str) -> anyhow::Result<()> {
    let reader = client.reader(remote).await?;
    copy_out(reader, remote, raw_stdout()?).await?;
    Ok(())
}

/// Bytes a pipe on stdout is asked to hold (Linux's default is 64 KiB; an unprivileged
/// process may ask for up to `/proc/sys/fs/pipe-max-size`, 1 MiB by default).
const PIPE_BYTES: usize = 1 << 20;

/// Stdout as a plain file: each piece goes to the descriptor whole (no line buffer in the
/// way), and a pipe on it is widened to [`PIPE_BYTES`], so that the reader at its other end
/// wakes once per megabyte instead of once per 64 KiB. A reader that shares the two cores
/// with busy servers gains most: `gfs-bench`'s drain of `gfs cat`, 548 / 542 → 843 / 968 MB/s
/// (`dd bs=1M` on an idle machine: no change).
fn raw_stdout() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("stdout")?;
    let out = std::fs::File::from(fd);
    widen_pipe(&out);
    Ok(out)
}

/// Asks for a larger buffer when `f` is a pipe; a refusal (not a pipe, or past the system's
/// limit) leaves it as it was.
fn widen_pipe(f: &std::fs::File) {
    use std::os::unix::fs::FileTypeExt;
    if f.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        let _ = rustix::pipe::fcntl_setpipe_size(f, PIPE_BYTES);
    }
}

/// `gfs get REMOTE LOCAL`: the file to a local file (through `LOCAL.part`), into a local
/// directory, or to stdout (`-`).
pub async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    if local == "-" {
        return cat(client, remote).await;
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

/// A local file written from its start, its whole pages past the page cache
/// (`gfs_util::disk`: the page cache's copy of each byte cost more than the download's own
/// work on two cores).
struct DirectOut {
    file: Arc<dyn DiskFile>,
    at: u64,
}

impl std::io::Write for DirectOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_direct_at(buf, self.at)?;
        self.at += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes what `reader` yields to `part`, syncs it, then renames it to `target`: `target`
/// never holds a partial file.
async fn get_into(reader: Reader, remote: &str, part: &Path, target: &Path) -> anyhow::Result<()> {
    let shown = part.display();
    let file = OsDisk
        .open(part, Open::Truncate)
        .with_context(|| format!("creating {shown}"))?;
    let f = copy_out(reader, remote, DirectOut { file, at: 0 }).await?;
    tokio::task::spawn_blocking(move || f.file.sync_all())
        .await
        .context("syncing")?
        .with_context(|| format!("syncing {shown}"))?;
    tokio::fs::rename(part, target)
        .await
        .with_context(|| format!("renaming {shown} to {}", target.display()))
}
