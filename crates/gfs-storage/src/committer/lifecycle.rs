//! The committer's work besides batches of appends: creating and deleting chunks, the
//! sweeps (expired staged appends, op tables past their retention) and checkpoints (dirty
//! chunks snapshotted, the WAL started afresh). The rules are in the parent module's doc.

use crate::error::{Result, StorageError};
use crate::record::{ChunkMeta, Record, WAL_MAGIC};
use crate::state::{Chunk, ChunkState, Inner};
use crate::types::ChunkHandle;
use gfs_util::disk::Open;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::*;

impl Committer {
    /// Drops expired staging and op tables whose time has come (see the module docs). At most
    /// `FORGET_PER_SWEEP` tables go per sweep, so that a store that found many chunks sealed at
    /// open (all due one retention later) does not hold commits up for one long round of
    /// snapshot writes; while more are due, the next sweep comes after `sweep_interval`.
    pub(super) fn sweep(&mut self) {
        let cfg = &self.inner.cfg;
        if self.last_sweep.elapsed() >= sweep_interval(cfg) {
            self.inner.expire_staged();
            self.last_sweep = Instant::now();
        }
        if Instant::now() >= self.next_op_sweep {
            let (due, more) = self.inner.ops_due(FORGET_PER_SWEEP);
            if !due.is_empty() {
                let n = due.len();
                match self.forget(due) {
                    Ok(()) => tracing::info!(
                        chunks = n,
                        more,
                        "op tables of chunks sealed past the op retention dropped"
                    ),
                    Err(e) => tracing::error!(error = %e, chunks = n,
                        "op tables dropped, but their snapshots were not rewritten; the next checkpoint retries"),
                }
            }
            let cfg = &self.inner.cfg;
            let wait = if more {
                sweep_interval(cfg)
            } else {
                op_sweep_interval(cfg)
            };
            self.next_op_sweep = Instant::now() + wait;
        }
    }

    /// Drops the op tables of `chunks` and what is staged on them, then rewrites their
    /// snapshots (chunk files holding WAL-inline bytes fsynced first, as in a checkpoint: the
    /// snapshot covers their WAL records). Runs between batches, so no work of this committer
    /// touches them meanwhile. On failure the tables stay dropped in memory and the chunks
    /// dirty: the next checkpoint writes them.
    pub(super) fn forget(&mut self, chunks: Vec<Arc<Chunk>>) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let mut changed = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let mut st = chunk.st.lock();
            // A poisoned chunk keeps its table and its WAL records until the store reopens.
            if st.deleted || st.poisoned {
                continue;
            }
            inner.drop_staged(&chunk, &mut st, |_| true);
            st.sealed_at = None;
            if !st.meta.ops.is_dropped() {
                tracing::debug!(handle = %chunk.handle, ops = st.meta.ops.len(), "op table dropped");
                st.meta.ops.drop_table();
                st.dirty = true;
                drop(st);
                changed.push(chunk);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        if inner.wal_failed.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned(changed[0].handle));
        }
        write_chunk_snapshots(&self.inner, &changed, 0)
    }

    /// Writes a peer's copy of block `block` (or of its first bytes) over it and fsyncs the
    /// chunk file, if the copy, followed by the replica's own bytes past it, is the block's
    /// committed bytes by their stored CRC32C ([`crate::ChunkStore::restore_block`]).
    /// Runs between batches, so the block's length and CRC do not move meanwhile. It needs
    /// no directory fsync first (`dir_pending`): a chunk whose name a crash could still lose
    /// has had nothing written in place since its creation (that round would have fsynced the
    /// directory), so its committed bytes are all inline appends in the WAL, which a replay
    /// writes again into the file it makes.
    pub(super) fn restore(&mut self, chunk: &Chunk, block: u64, data: &[u8]) -> Result<()> {
        let handle = chunk.handle;
        let refuse = |reason: String| StorageError::NotRestored {
            handle,
            block,
            reason,
        };
        let (start, stop, crc) = {
            let st = chunk.st.lock();
            if st.deleted {
                return Err(StorageError::NotFound(handle));
            }
            if st.poisoned {
                return Err(StorageError::Poisoned(handle));
            }
            let Some(&crc) = st.meta.crcs.get(block as usize) else {
                return Err(refuse(format!(
                    "past the committed length {}",
                    st.meta.length
                )));
            };
            let start = block * BLOCK_SIZE;
            (start, (start + BLOCK_SIZE).min(st.meta.length), crc)
        };
        let len = data.len() as u64;
        if len == 0 || len > stop - start {
            return Err(refuse(format!(
                "it holds {} committed bytes here, the copy {len}",
                stop - start
            )));
        }
        // A shorter copy (a peer shorter than this replica) is the block's prefix: the rest is
        // this replica's own bytes, and the whole must match.
        let mut whole = data.to_vec();
        whole.resize((stop - start) as usize, 0);
        chunk
            .data
            .read_exact_at(&mut whole[data.len()..], start + len)
            .map_err(|e| StorageError::io(&chunk.data_path, e))?;
        if crc32c::crc32c(&whole) != crc {
            return Err(refuse(
                "the copy (with this replica's own bytes past it) does not match the stored checksum"
                    .into(),
            ));
        }
        chunk
            .data
            .write_all_at(data, start)
            .map_err(|e| StorageError::io(&chunk.data_path, e))?;
        let inner = &self.inner;
        inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let failed = parallel_sync(
            &*inner.disk,
            &[(Sync::File(&*chunk.data), chunk.data_path.as_path())],
        );
        if let Some((_, e)) = failed.into_iter().next() {
            // As in a batch: the failed fsync may have dropped the file's unsynced writes.
            tracing::error!(%handle, error = %e, "chunk file fsync failed; the chunk is poisoned");
            inner.poison(&mut chunk.st.lock());
            return Err(e);
        }
        inner
            .counters
            .restored_blocks
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%handle, block, "block restored from a peer's copy");
        Ok(())
    }

    /// Adds a new, empty chunk to the batch: its file now, its Create record in the WAL; it
    /// becomes visible (and is answered) once the batch is durable, directory entry included.
    pub(super) fn create_chunk(
        &mut self,
        handle: ChunkHandle,
        version: u64,
        reply: oneshot::Sender<Result<()>>,
    ) {
        let exists = self.inner.chunks.read().contains_key(&handle)
            || self.works.iter().any(|w| w.chunk.handle == handle);
        if exists {
            let _ = reply.send(Err(StorageError::AlreadyExists(handle)));
            return;
        }
        let dp = data_path(&self.inner.dir, handle);
        if let Some(free) = self.inner.pool.take()
            && let Err(e) = self.inner.disk.rename(&free, &dp)
        {
            tracing::warn!(error = %e, "cannot use a pool file; creating one");
        }
        let opened = self.inner.disk.open(&dp, Open::Truncate);
        let data = match opened {
            Ok(f) => f,
            Err(e) => {
                let _ = reply.send(Err(StorageError::io(&dp, e)));
                return;
            }
        };
        let meta = ChunkMeta {
            batch: self.batch,
            version,
            ..ChunkMeta::default()
        };
        let mut st = ChunkState::new(meta);
        // A new replica vouches for nothing until its primary says a quorum holds it.
        st.quorum_known = Some((version, 0));
        let chunk = Arc::new(Chunk {
            handle,
            data_path: dp,
            meta_path: meta_path(&self.inner.dir, handle),
            data,
            st: parking_lot::Mutex::new(st),
        });
        let batch = self.batch;
        let w = self.work(&chunk);
        w.created = true;
        w.replies.push(Reply::Created(reply));
        Record::Create {
            batch,
            handle,
            version,
        }
        .encode_into(&mut w.records);
    }

    /// Deletes the queued chunks in one round: their Delete records written and made durable
    /// with one WAL fsync first (so a replay never brings back a chunk the WAL created), then
    /// their files unlinked, then one directory fsync. Each caller is answered at the end.
    pub(super) fn run_deletes(&mut self) {
        if self.deletes.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let mut doomed = Vec::with_capacity(self.deletes.len());
        let mut rec = Vec::new();
        for (chunk, reply) in std::mem::take(&mut self.deletes) {
            if inner.wal_failed.load(Ordering::Acquire) {
                let _ = reply.send(Err(StorageError::Poisoned(chunk.handle)));
                continue;
            }
            {
                let mut st = chunk.st.lock();
                if st.deleted {
                    drop(st);
                    let _ = reply.send(Err(StorageError::NotFound(chunk.handle)));
                    continue;
                }
                st.deleted = true;
                inner.drop_staged(&chunk, &mut st, |_| true);
            }
            inner.chunks.write().remove(&chunk.handle);
            Record::Delete {
                batch: self.batch,
                handle: chunk.handle,
            }
            .encode_into(&mut rec);
            doomed.push((chunk, reply));
        }
        if doomed.is_empty() {
            return;
        }
        self.batch += 1;
        let wal_path = inner.dir.join("wal");
        let logged = self
            .wal
            .write_all_at(&rec, self.wal_len)
            .map_err(|e| StorageError::io(&wal_path, e))
            .and_then(|()| {
                inner.counters.batches.fetch_add(1, Ordering::Relaxed);
                inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                let failed = parallel_sync(&*inner.disk, &[(Sync::File(&*self.wal), &wal_path)]);
                failed.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
            });
        if let Err(e) = logged {
            inner.fail_wal();
            tracing::error!(error = %e, chunks = doomed.len(), "delete round failed");
            for (_, reply) in doomed {
                let _ = reply.send(Err(clone_err(&e)));
            }
            return;
        }
        self.wal_len += rec.len() as u64;
        self.wal_filled = self.wal_filled.max(self.wal_len);
        let mut results = Vec::with_capacity(doomed.len());
        for (chunk, reply) in doomed {
            let mut r = Ok(());
            for p in [&chunk.meta_path, &chunk.data_path] {
                match inner.disk.remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => r = Err(StorageError::io(p, e)),
                }
            }
            results.push((chunk.handle, reply, r));
        }
        inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        let dir = sync_dir(&*inner.disk, &inner.dir);
        if dir.is_ok() {
            self.dir_pending = false;
        }
        tracing::debug!(chunks = results.len(), "chunks deleted");
        for (handle, reply, r) in results {
            let r = r.and_then(|()| dir.as_ref().map_err(clone_err).copied());
            if let Err(e) = &r {
                tracing::error!(%handle, error = %e, "chunk delete failed");
            }
            let _ = reply.send(r);
        }
    }

    /// Snapshots every dirty chunk and starts an empty WAL; not while a chunk is poisoned
    /// (the WAL may hold the only durable copy of its inline appends: see the module docs).
    pub(super) fn checkpoint(&mut self) {
        // Poisoning lasts until the store reopens: once held, checkpoints stay held, and the
        // rounds that keep asking (the WAL stays long) do not scan every chunk each time.
        if self.checkpoints_held || self.inner.wal_failed.load(Ordering::Acquire) {
            return;
        }
        let poisoned = self
            .inner
            .chunks
            .read()
            .values()
            .filter(|c| c.st.lock().poisoned)
            .count();
        if poisoned > 0 {
            self.checkpoints_held = true;
            tracing::error!(
                poisoned,
                "checkpoints held until the store reopens: a chunk file failed to fsync, and the WAL keeps the only durable copy of its inline appends"
            );
            return;
        }
        match checkpoint(&self.inner, self.batch - 1) {
            Ok(wal) => {
                // Its snapshots and the new WAL were renamed into place, the directory fsynced.
                self.dir_pending = false;
                self.wal = wal;
                self.wal_len = WAL_MAGIC.len() as u64;
                self.wal_filled = self.wal_len;
                self.wal_fill_failed = false;
            }
            Err(e) => tracing::error!(error = %e, "checkpoint failed; keeping the WAL"),
        }
    }
}

/// Makes every dirty chunk durable in its own files, then replaces the WAL with an empty one.
pub(crate) fn checkpoint(inner: &Inner, through_batch: u64) -> Result<Arc<dyn DiskFile>> {
    let dirty: Vec<Arc<Chunk>> = inner
        .chunks
        .read()
        .values()
        .filter(|c| c.st.lock().dirty)
        .cloned()
        .collect();
    write_chunk_snapshots(inner, &dirty, through_batch)?;
    let wal = new_wal(&*inner.disk, &inner.dir)?;
    tracing::debug!(chunks = dirty.len(), "checkpoint written");
    Ok(wal)
}

/// Makes `chunks` durable in their own files: first their chunk files holding WAL-inline bytes
/// (a snapshot through batch N makes recovery skip their WAL records up to N), then their
/// snapshots, each through at least `through_batch`. Committer thread only, between batches.
fn write_chunk_snapshots(inner: &Inner, chunks: &[Arc<Chunk>], through_batch: u64) -> Result<()> {
    let disk = &*inner.disk;
    // By handle: the same files in the same order whatever the map's order (a simulated disk
    // replays a seed exactly).
    let mut chunks: Vec<&Arc<Chunk>> = chunks.iter().collect();
    chunks.sort_by_key(|c| c.handle);
    let unsynced: Vec<&Arc<Chunk>> = chunks
        .iter()
        .copied()
        .filter(|c| c.st.lock().unsynced)
        .collect();
    let syncs: Vec<(Sync<'_>, &Path)> = unsynced
        .iter()
        .map(|c| (Sync::File(&*c.data), c.data_path.as_path()))
        .collect();
    let failed = parallel_sync(disk, &syncs);
    for (i, e) in &failed {
        // The failed fsync may have dropped the file's unsynced writes for good: its WAL-inline
        // appends are durable only in the WAL now.
        tracing::error!(handle = %unsynced[*i].handle, error = %e, "chunk file fsync failed; the chunk is poisoned");
        inner.poison(&mut unsynced[*i].st.lock());
    }
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(e);
    }
    let snaps: Vec<(&Path, Vec<u8>)> = chunks
        .iter()
        .map(|c| {
            let mut st = c.st.lock();
            st.meta.batch = st.meta.batch.max(through_batch);
            (c.meta_path.as_path(), snapshot_bytes(&st.meta))
        })
        .collect();
    write_snapshots(disk, &snaps)?;
    for c in chunks {
        let mut st = c.st.lock();
        st.dirty = false;
        st.unsynced = false;
    }
    Ok(())
}
