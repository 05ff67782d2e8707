//! `gfs ls`, `stat`, `mkdir`, `rm` and `mv`: the namespace, one call to the master each (and,
//! for sizes and chunk lengths, to the chunkservers).

use anyhow::Context;
use futures::StreamExt;
use gfs_client::{Client, ClientError, EntryKind};
use serde::Serialize;

use crate::out::{mtime, print, print_json};

/// `gfs mkdir [-p] PATH`.
pub async fn mkdir(client: &Client, path: &str, parents: bool) -> anyhow::Result<()> {
    Ok(client.mkdir(path, parents).await?)
}

/// `gfs rm [-r] PATH`.
pub async fn rm(client: &Client, path: &str, recursive: bool) -> anyhow::Result<()> {
    Ok(client.delete(path, recursive).await?)
}

/// `gfs mv SRC DST`.
pub async fn mv(client: &Client, src: &str, dst: &str) -> anyhow::Result<()> {
    Ok(client.rename(src, dst).await?)
}

/// One line of `ls --json`: an entry with its size (files), the shape `ls` has always printed.
#[derive(Serialize)]
struct LsEntry {
    path: String,
    #[serde(rename = "type")]
    kind: EntryKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    chunks: u64,
    mtime_ms: u64,
}

/// `gfs ls [-l] [--json] PATH`: a directory's entries, or a file as itself (as ls(1) does).
pub async fn ls(client: &Client, path: &str, long: bool, json: bool) -> anyhow::Result<()> {
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
                kind: e.kind(),
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

/// `gfs stat [--json] PATH`: the entry and, for a file, its chunks with their lengths and
/// replicas (`--json`: the [`gfs_client::StatDetail`]).
pub async fn stat(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let out = client.stat_detail(path).await?;
    if json {
        return print_json(&out);
    }
    let mut s = format!("path:        {}\ntype:        {}\n", out.path, out.kind);
    if out.kind == EntryKind::File {
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
