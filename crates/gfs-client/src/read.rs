//! Chunk locations and reads on [`Client`].
//!
//! # Reads
//!
//! A chunk's length is its sealed length, else the longest committed length that
//! `length_quorum` of its replicas report ([`Client::chunk_length`]; with fewer answers it asks
//! the master again and waits). Replicas on this host come first, the rest shuffled; a replica
//! that fails, is stale, short or corrupt (`ChecksumMismatch`, logged) is skipped, and when none
//! serves the locations are asked again once. A read request asks for at most `read_piece` and
//! a quarter chunk (what a chunkserver sends in one frame). [`Client::read`] stays within the

use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use gfs_dataplane::DataError;
use gfs_proto::v1::GetChunksRequest;

use crate::client::*;
use crate::error::{ClientError, Result};
use crate::model::*;

/// Orders replicas on this host first (loopback or a local address), the rest shuffled.
pub(crate) fn nearest_first(replicas: &mut [Replica]) {
    gfs_util::random::shuffle(replicas);
    replicas.sort_by_key(|r| {
        let host = r.data_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        let local = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(host == "localhost");
        !local
    });
}

impl Client {
    pub(crate) fn forget(&self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.inner
            .locations
            .lock()
            .retain(|p, _| p != path && !p.starts_with(&prefix));
        self.inner
            .leases
            .lock()
            .retain(|p, _| p != path && !p.starts_with(&prefix));
    }

    /// The chunks of file `path`, from the cache while fresh.
    pub async fn locations(&self, path: &str) -> Result<Arc<Locations>> {
        let cached = self.inner.locations.lock().get(path).cloned();
        match cached {
            Some((at, l)) if at.elapsed() < self.inner.cfg.cache_ttl => Ok(l),
            _ => self.refresh(path).await,
        }
    }

    /// The chunks of file `path`, asked of the master now: every page of `GetChunks`
    /// (`chunks_per_page` at a time), so a file of any number of chunks lists whole. Each page
    /// must continue the one before (the next index, starting where the previous chunk ends);
    /// one that does not (the file was replaced in between) starts the listing over.
    pub async fn refresh(&self, path: &str) -> Result<Arc<Locations>> {
        self.refresh_with(path, &mut self.retry()).await
    }

    /// [`Client::refresh`] within `retry`'s deadline.
    pub(crate) async fn refresh_with(
        &self,
        path: &str,
        retry: &mut Retry,
    ) -> Result<Arc<Locations>> {
        let mut chunks: Vec<ChunkInfo> = Vec::new();
        let chunk_size = loop {
            let first_index = chunks.last().map_or(0, |c| c.index + 1);
            let req = GetChunksRequest {
                path: path.into(),
                first_index,
                max_chunks: self.inner.cfg.chunks_per_page,
            };
            let reply = self
                .ask(retry, |mut m| {
                    let req = req.clone();
                    async move { m.get_chunks(req).await }
                })
                .await?;
            let continues = reply.next_index == first_index + reply.chunks.len() as u64
                && (!reply.more || !reply.chunks.is_empty())
                && reply.chunks.first().is_none_or(|c| {
                    c.index == first_index
                        && chunks.last().is_none_or(|p| {
                            c.file_offset == p.file_offset + p.sealed_length.unwrap_or(0)
                        })
                });
            if !continues {
                tracing::debug!(
                    path,
                    first_index,
                    "chunk pages do not line up; listing again"
                );
                retry
                    .wait(format!(
                        "the chunk list of {path} changed while it was listed"
                    ))
                    .await?;
                chunks.clear();
                continue;
            }
            chunks.extend(reply.chunks.into_iter().map(|c| {
                let mut replicas: Vec<Replica> = c
                    .replicas
                    .into_iter()
                    .map(|r| Replica {
                        id: r.id,
                        data_addr: r.data_addr,
                    })
                    .collect();
                nearest_first(&mut replicas);
                ChunkInfo {
                    index: c.index,
                    file_offset: c.file_offset,
                    handle: c.handle,
                    version: c.version,
                    sealed_length: c.sealed_length,
                    length_quorum: (c.length_quorum as usize).max(1),
                    replicas,
                    token: c.token,
                }
            }));
            if !reply.more {
                break reply.chunk_size;
            }
        };
        let l = Arc::new(Locations { chunk_size, chunks });
        self.inner
            .locations
            .lock()
            .insert(path.to_string(), (Instant::now(), Arc::clone(&l)));
        Ok(l)
    }

    /// Bytes per read request: the configured piece, at most what a chunkserver sends in one
    /// reply (a quarter of a chunk).
    pub(crate) fn read_piece(&self, chunk_size: u64) -> u64 {
        (self.inner.cfg.read_piece as u64)
            .min(chunk_size / 4)
            .max(1)
    }

    /// What `gfs stat` shows of `path`: its entry and, for a file, every chunk with its
    /// length ([`Client::chunk_length`], asked of all chunks at once) and replicas; the size
    /// is the sum of the lengths. A lost chunk (no replica) that is not sealed has no known
    /// length; any other chunk whose length cannot be learned fails the call
    /// ([`ClientError::ChunkLength`]).
    pub async fn stat_detail(&self, path: &str) -> Result<StatDetail> {
        let e = self.stat(path).await?;
        let mut chunks = Vec::new();
        if !e.is_dir {
            let l = self.refresh(path).await?;
            let lengths =
                futures::future::join_all(l.chunks.iter().map(|c| self.chunk_length(path, c)));
            for (c, len) in l.chunks.iter().zip(lengths.await) {
                let lost = c.replicas.is_empty();
                let length = match len {
                    Ok(l) => Some(l),
                    Err(_) if lost => c.sealed_length,
                    Err(error) => {
                        return Err(ClientError::ChunkLength {
                            path: path.to_string(),
                            index: c.index,
                            error: Box::new(error),
                        });
                    }
                };
                chunks.push(ChunkDetail {
                    index: c.index,
                    handle: c.handle,
                    version: c.version,
                    length,
                    sealed: c.sealed_length.is_some(),
                    lost,
                    replicas: c.replicas.clone(),
                });
            }
        }
        Ok(StatDetail {
            kind: e.kind(),
            size: chunks.iter().filter_map(|c| c.length).sum(),
            path: e.path,
            mtime_ms: e.mtime_ms,
            replication: e.replication,
            under_replicated: e.under_replicated,
            lost_chunks: e.lost_chunks,
            stale_replicas: e.stale_replicas,
            chunks,
        })
    }

    /// The length of `chunk` of file `path`: its sealed length, or the longest committed length
    /// that [`ChunkInfo::length_quorum`] of its replicas report (a primary reports only the
    /// prefix a quorum holds). Fewer answers could all come from replicas short of an
    /// acknowledged append, so it asks the master again and retries until enough answer or
    /// the client's deadline passes.
    pub async fn chunk_length(&self, path: &str, chunk: &ChunkInfo) -> Result<u64> {
        let mut retry = self.retry();
        let mut chunk = std::borrow::Cow::Borrowed(chunk);
        loop {
            if let Some(l) = chunk.sealed_length {
                return Ok(l);
            }
            let lengths = self.committed_lengths(&chunk).await;
            let told = lengths.len();
            if told >= chunk.length_quorum
                && let Some(l) = lengths.into_iter().max()
            {
                return Ok(l);
            }
            let why = format!(
                "chunk {} of {path}: {told} of its {} listed replicas told their length, {} needed",
                chunk.handle,
                chunk.replicas.len(),
                chunk.length_quorum
            );
            tracing::debug!(path, handle = chunk.handle, "{why}; asking again");
            retry.wait(&why).await?;
            let l = self.refresh_with(path, &mut retry).await?;
            let Some(now) = l.chunks.iter().find(|c| c.handle == chunk.handle) else {
                return Err(ClientError::NoReplica {
                    path: path.to_string(),
                    handle: chunk.handle,
                    last: "the chunk is no longer part of the file".into(),
                });
            };
            chunk = std::borrow::Cow::Owned(now.clone());
        }
    }

    /// The committed lengths the replicas of `chunk` that answer report now.
    pub(crate) async fn committed_lengths(&self, chunk: &ChunkInfo) -> Vec<u64> {
        let probes = chunk.replicas.iter().map(|r| async move {
            let c = self.conn(&r.data_addr).await.ok()?;
            // A read past the end names the committed length.
            match c.read(&chunk.chunk_ref(), u64::MAX, 0).await {
                Err(DataError::OutOfRange { committed, .. }) => Some(committed),
                Ok(_) => None,
                Err(e) => {
                    self.drop_conn_on(&r.data_addr, &e);
                    None
                }
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The number of bytes of file `path` (padding after sealed chunks not counted).
    pub async fn size(&self, path: &str) -> Result<u64> {
        let l = self.refresh(path).await?;
        let mut total = 0;
        for c in &l.chunks {
            total += self.chunk_length(path, c).await?;
        }
        Ok(total)
    }

    /// Reads up to `len` bytes of `chunk` at `offset`, from the first replica that has them;
    /// a replica that fails (dead, stale, corrupt, short) is skipped, and a corrupt one logged.
    pub(crate) async fn read_chunk(
        &self,
        path: &str,
        chunk: &ChunkInfo,
        offset: u64,
        len: u32,
    ) -> Result<Bytes> {
        let mut last = String::from("the chunk has no live replica");
        for r in &chunk.replicas {
            let res = match self.conn(&r.data_addr).await {
                Ok(c) => c.read(&chunk.chunk_ref(), offset, len).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(b) if b.len() == len as usize => return Ok(b),
                Ok(b) => {
                    last = format!("replica {} is short ({} of {len} bytes)", r.id, b.len());
                }
                Err(e) => {
                    if let DataError::ChecksumMismatch { block, .. } = e {
                        tracing::warn!(path, handle = chunk.handle, replica = %r.id, block, "corrupt replica; reading another");
                    }
                    self.drop_conn_on(&r.data_addr, &e);
                    last = format!("replica {}: {e}", r.id);
                }
            }
        }
        Err(ClientError::NoReplica {
            path: path.to_string(),
            handle: chunk.handle,
            last,
        })
    }

    /// Reads up to `len` bytes at file offset `offset` (as [`Client::append`] returns), within
    /// the chunk holding it: short at the end of that chunk's data. Fails over between
    /// replicas, and asks the master again when none can serve.
    pub async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes> {
        let mut fresh = false;
        loop {
            let l = if fresh {
                self.refresh(path).await?
            } else {
                self.locations(path).await?
            };
            // The chunk holding `offset`: the last one starting at or before it (every chunk
            // but the last is sealed, so their starts are final).
            let Some(chunk) = l.chunks.iter().rev().find(|c| c.file_offset <= offset) else {
                // No chunk at all in what we knew of the file: it may have grown since.
                if !fresh {
                    fresh = true;
                    continue;
                }
                return Ok(Bytes::new());
            };
            let in_chunk = offset - chunk.file_offset;
            let is_last = l.chunks.last().is_some_and(|c| c.handle == chunk.handle);
            let res = async {
                let end = self.chunk_length(path, chunk).await?;
                let n = len.min(end.saturating_sub(in_chunk));
                if n == 0 {
                    return Ok(Bytes::new());
                }
                let mut out = bytes::BytesMut::with_capacity(n as usize);
                let piece = self.read_piece(l.chunk_size);
                let mut at = in_chunk;
                while at < in_chunk + n {
                    let want = piece.min(in_chunk + n - at) as u32;
                    out.extend_from_slice(&self.read_chunk(path, chunk, at, want).await?);
                    at += u64::from(want);
                }
                Ok(out.freeze())
            }
            .await;
            match res {
                Err(ClientError::NoReplica { .. }) if !fresh => fresh = true,
                // Past the end of the last chunk we knew of: the file may have grown since.
                Ok(b) if b.is_empty() && is_last && !fresh => fresh = true,
                other => return other,
            }
        }
    }
}
