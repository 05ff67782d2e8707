//! Restoring a replica's bad blocks in place from good copies on its peers.
//!
//! A read or the scrubber that fails a block's checksum reports the replica corrupt
//! (`ReportCorrupt`); the master's reply lists the chunk's other live replicas, those not
//! reported corrupt first (a corrupt one's other blocks may be good), each longest first.
//! [`Restorer::restore`] then finds the replica's bad blocks (`ChunkStore::scrub_one`) and,
//! for each, reads that block's bytes from a source, longest first (`Replication.ReadChunk` at
//! the source's version, from the start of the local append holding the block's first byte; a
//! source shorter than the block gives its first bytes, and the replica's own follow them),
//! and writes them over the block only if the block then holds its committed bytes by its own
//! stored CRC32C (`ChunkStore::restore_block`): only data bits rot, and the length and CRCs,
//! in checksummed records, still say what the block held. Once
//! every bad block is restored the server reports the replica `repaired`, and the master counts
//! it again. Otherwise it reports the replica `unrestorable` and it stays corrupt: the master
//! copies the chunk from a good replica and deletes this one once a quorum of good replicas
//! lives elsewhere (at the latest `RESTORE_GRACE` after the first report, if this word is lost).
//!
//! It matters most where the corrupt replica holds bytes no other replica holds whole: the
//! longest replica of an unsealed chunk whose third replica was never made, its one bad block
//! within a shorter replica's length (simulator seed 13798), or its rot within the part of its
//! last block a shorter replica holds (seed 40853). HDFS and GFS drop a corrupt
//! replica and copy the chunk again; that needs a good source of the whole chunk.
//!
//! One restore runs per chunk at a time (later reports of it are dropped meanwhile); each read
//! from a source is bounded by [`READ_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gfs_proto::v1::{BlockSource, ReadChunkRequest};
use gfs_storage::{BLOCK_SIZE, ChunkHandle, ChunkStore};
use gfs_util::collections::HashSet;
use parking_lot::Mutex;

/// Bound on reading one block's bytes from one source, connection included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Restores the bad blocks of this server's replicas from their peers.
pub struct Restorer {
    store: Arc<ChunkStore>,
    net: gfs_host::Net,
    /// Chunks being restored now.
    running: Mutex<HashSet<ChunkHandle>>,
}

impl Restorer {
    /// A restorer of `store`'s replicas, reading from peers over `net`.
    pub fn new(store: Arc<ChunkStore>, net: gfs_host::Net) -> Restorer {
        Restorer {
            store,
            net,
            running: Mutex::new(HashSet::default()),
        }
    }

    /// Restores every bad block of `handle` from `sources`; returns the blocks restored (none:
    /// the replica passes its checksums already). `None` when a restore of it is running.
    pub async fn restore(
        &self,
        handle: ChunkHandle,
        sources: &[BlockSource],
    ) -> Option<Result<Vec<u64>, String>> {
        if !self.running.lock().insert(handle) {
            return None;
        }
        let r = self.restore_all(handle, sources).await;
        self.running.lock().remove(&handle);
        Some(r)
    }

    async fn restore_all(
        &self,
        handle: ChunkHandle,
        sources: &[BlockSource],
    ) -> Result<Vec<u64>, String> {
        let s = Arc::clone(&self.store);
        let disk = Arc::clone(s.disk());
        let bad = gfs_host::blocking(&*disk, move || s.scrub_one(handle))
            .await
            .map_err(|e| e.to_string())?;
        if !bad.is_empty() && gfs_replication::failpoint_fires("restore-fails") {
            tracing::warn!(%handle, "failpoint restore-fails: no source is read");
            return Err("failpoint: the restore failed (as when every source is down)".into());
        }
        for &block in &bad {
            self.restore_block(handle, block, sources).await?;
        }
        Ok(bad)
    }

    /// Restores one block from the first source that has it.
    async fn restore_block(
        &self,
        handle: ChunkHandle,
        block: u64,
        sources: &[BlockSource],
    ) -> Result<(), String> {
        let length = self
            .store
            .info(handle)
            .map_err(|e| e.to_string())?
            .committed_len;
        let start = block * BLOCK_SIZE;
        let stop = (start + BLOCK_SIZE).min(length);
        // Sources send whole appends from where one starts: ask from the local append holding
        // the block's first byte (replicas hold the same appends at the same offsets). Without
        // an op table here, any offset will do (a source without one sends pieces from there).
        let from = self
            .store
            .appends(handle)
            .ok()
            .and_then(|all| {
                all.iter()
                    .rev()
                    .find(|(_, a)| a.offset <= start)
                    .map(|(_, a)| a.offset)
            })
            .unwrap_or(start);
        let mut why = format!("no source holds byte {start}");
        // A shorter source gives the block's first bytes; the replica's own follow them.
        for src in sources.iter().filter(|s| s.length > start) {
            let upto = stop.min(src.length);
            let fetched =
                tokio::time::timeout(READ_TIMEOUT, self.fetch(src, handle, from, start, upto))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {READ_TIMEOUT:?}")));
            let outcome = match fetched {
                Ok(data) => self
                    .store
                    .restore_block(handle, block, data)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(%handle, block, source = %src.id, "bad block restored from a peer");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(%handle, block, source = %src.id, error = %e, "cannot restore a bad block from this peer");
                    why = format!("{}: {e}", src.id);
                }
            }
        }
        Err(format!("block {block}: {why}"))
    }

    /// Bytes `start..stop` of `handle` on `src`, read from offset `from` (≤ `start`).
    async fn fetch(
        &self,
        src: &BlockSource,
        handle: ChunkHandle,
        from: u64,
        start: u64,
        stop: u64,
    ) -> Result<Bytes, String> {
        let mut client = crate::control::source_client(
            &self.net,
            &src.repl_addr,
            self.store.config().chunk_size,
            READ_TIMEOUT,
        )
        .await
        .map_err(|e| e.message().to_string())?;
        let mut stream = client
            .read_chunk(ReadChunkRequest {
                handle: handle.0,
                version: src.version,
                offset: from,
            })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        let mut out = BytesMut::with_capacity((stop - start) as usize);
        while let Some(piece) = stream
            .message()
            .await
            .map_err(|e| e.message().to_string())?
        {
            let pos = start + out.len() as u64;
            let end = piece.offset + piece.data.len() as u64;
            if piece.offset > pos {
                return Err(format!(
                    "it sent offset {} where {pos} was next",
                    piece.offset
                ));
            }
            if end > pos {
                let take = (pos - piece.offset) as usize..(end.min(stop) - piece.offset) as usize;
                out.extend_from_slice(&piece.data[take]);
            }
            if start + out.len() as u64 == stop {
                return Ok(out.freeze());
            }
        }
        Err(format!("it ended at {}", start + out.len() as u64))
    }
}
