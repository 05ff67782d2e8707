//! Opening a data directory after a clean stop or a crash.
//!
//! 0. Read the WAL before touching any file. A bad record with nothing valid after it is a torn
//!    tail (a crash cut the last write) and is left out with a warning. A bad record followed
//!    by records that were durable after it (see `record::parse_wal` for the rule) is damage in
//!    the middle: the open fails with `StorageError::CorruptWal` naming the file and offset,
//!    and nothing is truncated, rather than silently dropping every later committed append.
//! 1. Load every chunk snapshot (`<handle>.meta`). One that does not parse was damaged outside
//!    our control (snapshots are written aside and renamed): the chunk is quarantined
//!    (`*.corrupt`) so the server still starts and the master can re-replicate it.
//! 2. Replay the WAL records newer than each snapshot, in order. A Create record brings in a
//!    chunk that has no snapshot yet (its file is created if the crash beat it); a Delete record
//!    removes the chunk and its files. Inline appends are rewritten into
//!    the chunk file (redo). An in-place append from the newest batch is kept only if the chunk
//!    file holds bytes matching its CRCs; the first one that does not ends that chunk's replay.
//!    Older batches were fsynced before the next one began, so they are trusted. Records that a
//!    Cancel record names (a chunk's records of a batch whose fsync round failed for it, and
//!    whose callers were told so) are skipped, wherever the Cancel comes in the log.
//! 3. Remove chunk files that neither a snapshot nor the WAL accounts for (only after the
//!    Create and Delete records are replayed), truncate chunk files to their committed length,
//!    snapshot what changed, start an empty WAL.
//!
//! A `CorruptWal` keeps the chunkserver from starting until an operator acts (e.g. empties the
//! directory, and the master re-replicates its chunks). A chunk file shorter than its snapshot
//! (damage from outside) rolls back to its last whole append; that of a chunk without its op
//! table rolls back to empty.
//!
//! Known limits: bit rot inside the newest batch's in-place bytes, found here, is taken for a
//! torn write and truncated rather than reported, as is the damage `record::parse_wal` takes
//! for a torn tail. The replica is then shorter, and its primary or the master catches it up
//! from a peer.

use gfs_util::collections::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gfs_util::disk::{Disk, DiskFile, Open};

use crate::config::StoreConfig;
use crate::error::{Result, StorageError};
use crate::layout::{
    Sync, data_path, meta_path, new_wal, parallel_sync, snapshot_bytes, sync_dir, write_snapshots,
};
use crate::optable::OpTable;
use crate::record::{self, ChunkMeta, META_MAGIC, Record, WAL_MAGIC};
use crate::state::{Chunk, ChunkState};
use crate::types::{BLOCK_SIZE, ChunkHandle, block_of};

/// What `recover` hands to the store.
pub(crate) struct Recovered {
    pub chunks: HashMap<ChunkHandle, Arc<Chunk>>,
    pub quarantined: Vec<ChunkHandle>,
    pub wal: Arc<dyn DiskFile>,
    pub next_batch: u64,
}

struct Loading {
    meta: ChunkMeta,
    /// The batch the snapshot holds; WAL records of that batch or older are already in it.
    snapshot_batch: u64,
    data: Arc<dyn DiskFile>,
    data_len: u64,
    /// Replay stopped for this chunk.
    cut: bool,
    /// The state or the chunk file changed: needs an fsync and a new snapshot.
    changed: bool,
}

pub(crate) fn recover(disk: &dyn Disk, dir: &Path, cfg: &StoreConfig) -> Result<Recovered> {
    // The WAL first: damage in its middle refuses the open before any file is touched.
    let wal = read_wal(disk, dir)?;
    let mut metas = Vec::new();
    let mut datas = Vec::new();
    let mut removed = false;
    for entry in disk.read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let Some(name) = entry.name() else { continue };
        if name.ends_with(".tmp") {
            disk.remove_file(&entry.path)
                .map_err(|e| StorageError::io(&entry.path, e))?;
            removed = true;
        } else if let Some(h) = name.strip_suffix(".meta").and_then(|h| h.parse().ok()) {
            metas.push(ChunkHandle(h));
        } else if let Ok(h) = name.parse::<u64>() {
            datas.push(ChunkHandle(h));
        }
    }
    metas.sort();
    datas.sort();

    let mut quarantined = Vec::new();
    // Ordered by handle, so recovery's writes come in one order (a simulated disk replays).
    let mut chunks: BTreeMap<ChunkHandle, Loading> = BTreeMap::new();
    for h in &metas {
        match load_chunk(disk, dir, cfg, *h) {
            Ok(c) => {
                chunks.insert(*h, c);
            }
            Err(e @ StorageError::CorruptMetadata { .. }) => {
                tracing::error!(handle = %h, error = %e, "quarantining a damaged chunk");
                for p in [meta_path(dir, *h), data_path(dir, *h)] {
                    if disk.exists(&p) {
                        let to = p.with_file_name(format!(
                            "{}.corrupt",
                            p.file_name().and_then(|n| n.to_str()).unwrap_or("chunk")
                        ));
                        disk.rename(&p, &to).map_err(|e| StorageError::io(&p, e))?;
                    }
                }
                quarantined.push(*h);
                removed = true;
            }
            Err(e) => return Err(e),
        }
    }
    let mut max_batch = chunks.values().map(|c| c.meta.batch).max().unwrap_or(0);
    if let Some(parsed) = wal {
        let newest = parsed.records.iter().map(|(_, r)| r.batch()).max();
        if let Some(newest) = newest {
            removed |= replay(disk, dir, &mut chunks, parsed.records, newest)?;
            max_batch = max_batch.max(newest);
        }
    }
    for h in datas {
        if !chunks.contains_key(&h) && disk.exists(&data_path(dir, h)) {
            tracing::warn!(handle = %h, "removing a chunk file that neither a snapshot nor the WAL accounts for");
            let p = data_path(dir, h);
            disk.remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(disk, dir)?;
    }

    // Make the replayed state durable in the chunks' own files, then drop the WAL.
    let mut syncs = Vec::new();
    let mut snaps = Vec::new();
    let meta_paths: HashMap<ChunkHandle, _> =
        chunks.keys().map(|h| (*h, meta_path(dir, *h))).collect();
    for (h, c) in chunks.iter_mut() {
        if c.data_len > c.meta.length {
            c.data
                .set_len(c.meta.length)
                .map_err(|e| StorageError::io(data_path(dir, *h), e))?;
            c.changed = true;
        }
        if c.changed {
            c.meta.batch = max_batch;
            snaps.push((meta_paths[h].as_path(), snapshot_bytes(&c.meta)));
        }
    }
    let data_paths: HashMap<ChunkHandle, _> =
        chunks.keys().map(|h| (*h, data_path(dir, *h))).collect();
    for (h, c) in &chunks {
        if c.changed {
            syncs.push((Sync::File(&*c.data), data_paths[h].as_path()));
        }
    }
    if let Some((_, e)) = parallel_sync(disk, &syncs).into_iter().next() {
        return Err(e);
    }
    write_snapshots(disk, &snaps)?;
    let wal = new_wal(disk, dir)?;

    let chunks = chunks
        .into_iter()
        .map(|(h, c)| {
            let chunk = Chunk {
                handle: h,
                data_path: data_path(dir, h),
                meta_path: meta_path(dir, h),
                data: c.data,
                st: parking_lot::Mutex::new(ChunkState::new(c.meta)),
            };
            (h, Arc::new(chunk))
        })
        .collect();
    Ok(Recovered {
        chunks,
        quarantined,
        wal,
        next_batch: max_batch + 1,
    })
}

/// Reads and parses the WAL, if there is one; a torn tail is left out with a warning, damage
/// in the middle is an error (see [`record::parse_wal`]).
fn read_wal(disk: &dyn Disk, dir: &Path) -> Result<Option<record::Parsed>> {
    let wal_path = dir.join("wal");
    if !disk.exists(&wal_path) {
        return Ok(None);
    }
    let mut bytes = disk
        .read(&wal_path)
        .map_err(|e| StorageError::io(&wal_path, e))?;
    if bytes.len() < WAL_MAGIC.len() && WAL_MAGIC.starts_with(&bytes) {
        // Cut inside its header: a WAL with no records (a wrong header stays an error).
        tracing::warn!(
            len = bytes.len(),
            "the WAL is cut inside its header; no records to replay"
        );
        bytes = WAL_MAGIC.to_vec();
    }
    let bytes = Bytes::from(bytes);
    let parsed = record::parse_wal(&wal_path, bytes.clone()).inspect_err(|e| {
        tracing::error!(error = %e, "the write-ahead log is damaged in its middle; not opening");
    })?;
    let tail = &bytes[parsed.valid_end as usize..];
    if tail.iter().all(|b| *b == 0) {
        // The zeros the committer writes ahead of its records (`WAL_FILL`), or pages a crash
        // left unwritten: the log's end, nothing dropped.
        tracing::debug!(
            valid = parsed.valid_end,
            zeros = tail.len(),
            "the WAL ends in zeros"
        );
    } else if parsed.valid_end < parsed.file_len {
        tracing::warn!(
            valid = parsed.valid_end,
            file_len = parsed.file_len,
            dropped_records = parsed.dropped,
            "ignoring a torn WAL tail"
        );
    }
    Ok(Some(parsed))
}

fn load_chunk(disk: &dyn Disk, dir: &Path, cfg: &StoreConfig, h: ChunkHandle) -> Result<Loading> {
    let mp = meta_path(dir, h);
    let dp = data_path(dir, h);
    let bytes = disk.read(&mp).map_err(|e| StorageError::io(&mp, e))?;
    let parsed = record::parse(&mp, META_MAGIC, Bytes::from(bytes))?;
    let corrupt = |reason: String| StorageError::CorruptMetadata {
        path: mp.clone(),
        offset: 0,
        reason,
    };
    if parsed.valid_end != parsed.file_len || parsed.records.len() != 1 {
        return Err(corrupt("not exactly one whole snapshot record".into()));
    }
    let Some((_, Record::Snapshot(snap))) = parsed.records.into_iter().next() else {
        return Err(corrupt("the record is not a snapshot".into()));
    };
    let mut meta = ChunkMeta::from_snapshot(*snap).map_err(corrupt)?;
    if meta.length > cfg.chunk_size {
        return Err(corrupt(format!(
            "committed length {} exceeds the chunk size {}",
            meta.length, cfg.chunk_size
        )));
    }
    let expected_blocks = meta.length.div_ceil(BLOCK_SIZE) as usize;
    if meta.crcs.len() != expected_blocks {
        return Err(corrupt(format!(
            "{} block checksums for {} bytes",
            meta.crcs.len(),
            meta.length
        )));
    }
    let data = disk
        .open(&dp, Open::Create)
        .map_err(|e| StorageError::io(&dp, e))?;
    let data_len = data.len().map_err(|e| StorageError::io(&dp, e))?;
    let mut changed = false;
    if data_len < meta.length {
        // Only outside damage shortens a chunk file below a snapshot: keep the whole appends
        // that are still there.
        tracing::error!(handle = %h, data_len, committed = meta.length,
            "chunk file shorter than its snapshot; rolling back to the last whole append");
        roll_back(&mut meta, &*data, data_len).map_err(|e| StorageError::io(&dp, e))?;
        changed = true;
    }
    Ok(Loading {
        snapshot_batch: meta.batch,
        meta,
        data,
        data_len,
        cut: false,
        changed,
    })
}

/// Shrinks `meta` to the appends that end at or before `limit`, recomputing the CRC of a new
/// partial last block from the file. A chunk whose op table was dropped no longer knows where
/// its appends end: it rolls back to empty, where an empty table is exact again.
fn roll_back(meta: &mut ChunkMeta, data: &dyn DiskFile, limit: u64) -> std::io::Result<()> {
    if meta.ops.is_dropped() {
        meta.ops = OpTable::default();
    }
    let len = meta.ops.keep_ending_by(limit);
    meta.length = len;
    meta.sealed = false;
    meta.crcs.truncate(len.div_ceil(BLOCK_SIZE) as usize);
    if !len.is_multiple_of(BLOCK_SIZE) {
        let start = block_of(len) * BLOCK_SIZE;
        let mut buf = vec![0u8; (len - start) as usize];
        data.read_exact_at(&mut buf, start)?;
        if let Some(last) = meta.crcs.last_mut() {
            *last = crc32c::crc32c(&buf);
        }
    }
    Ok(())
}

/// Applies the WAL; returns whether it removed files.
fn replay(
    disk: &dyn Disk,
    dir: &Path,
    chunks: &mut BTreeMap<ChunkHandle, Loading>,
    records: Vec<(u64, Record)>,
    newest: u64,
) -> Result<bool> {
    let mut removed = false;
    // Records of a chunk in a batch whose fsync round failed for it (its callers were told).
    let cancelled: HashSet<(u64, ChunkHandle)> = records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Cancel {
                handle, cancelled, ..
            } => Some((*cancelled, *handle)),
            _ => None,
        })
        .collect();
    // A handle deleted and created again (a stale replica deleted, then the chunk copied back)
    // names one file for two incarnations: only the last one's records (from its Create on)
    // may touch it. The older records describe bytes that file no longer holds, and the older
    // Delete would remove the new incarnation's file.
    let mut incarnation: HashMap<ChunkHandle, u64> = HashMap::default();
    for (pos, rec) in &records {
        if let Record::Create { handle, batch, .. } = rec
            && !cancelled.contains(&(*batch, *handle))
        {
            incarnation.insert(*handle, *pos);
        }
    }
    for (pos, rec) in records {
        let Some(h) = rec.handle() else { continue };
        if cancelled.contains(&(rec.batch(), h)) {
            tracing::warn!(handle = %h, wal_offset = pos, batch = rec.batch(),
                "skipping a WAL record its failed fsync round cancelled");
            continue;
        }
        if incarnation.get(&h).is_some_and(|&last| pos < last) {
            continue;
        }
        match rec {
            Record::Cancel { .. } => continue,
            Record::Create { batch, version, .. } => {
                if chunks.get(&h).is_some_and(|c| c.snapshot_batch >= batch) {
                    continue;
                }
                let dp = data_path(dir, h);
                let data = disk
                    .open(&dp, Open::Create)
                    .map_err(|e| StorageError::io(&dp, e))?;
                let data_len = data.len().map_err(|e| StorageError::io(&dp, e))?;
                let meta = ChunkMeta {
                    batch,
                    version,
                    ..ChunkMeta::default()
                };
                chunks.insert(
                    h,
                    Loading {
                        meta,
                        snapshot_batch: batch - 1,
                        data,
                        data_len,
                        cut: false,
                        changed: true,
                    },
                );
                continue;
            }
            Record::Delete { batch, .. } => {
                if chunks.get(&h).is_some_and(|c| c.snapshot_batch < batch) {
                    chunks.remove(&h);
                    for p in [meta_path(dir, h), data_path(dir, h)] {
                        match disk.remove_file(&p) {
                            Ok(()) => removed = true,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(StorageError::io(&p, e)),
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        // Records of deleted chunks, and those a snapshot already holds, are skipped.
        let Some(c) = chunks.get_mut(&h) else {
            continue;
        };
        if c.cut || rec.batch() <= c.snapshot_batch {
            continue;
        }
        let intact = match &rec {
            Record::Commit {
                offset,
                len,
                data: Some(bytes),
                ..
            } => {
                if *offset == c.meta.length {
                    c.data
                        .write_all_at(bytes, *offset)
                        .map_err(|e| StorageError::io(format!("chunk {h}"), e))?;
                    c.data_len = c.data_len.max(offset + u64::from(*len));
                }
                true
            }
            Record::Commit {
                offset,
                len,
                first_block,
                crcs,
                data: None,
                ..
            } => {
                let end = offset + u64::from(*len);
                end <= c.data_len
                    && (rec.batch() < newest || verify(&*c.data, end, *first_block, crcs))
            }
            _ => true,
        };
        if !intact || !c.meta.apply(&rec) {
            tracing::warn!(handle = %h, wal_offset = pos, batch = rec.batch(),
                "WAL replay of this chunk stops at an append that never became durable");
            c.cut = true;
            continue;
        }
        c.changed = true;
    }
    Ok(removed)
}

/// Whether the chunk file holds the bytes an in-place commit record describes.
fn verify(data: &dyn DiskFile, end: u64, first_block: u64, crcs: &[u32]) -> bool {
    crcs.iter().enumerate().all(|(i, crc)| {
        let block = first_block + i as u64;
        let start = block * BLOCK_SIZE;
        let stop = ((block + 1) * BLOCK_SIZE).min(end);
        let mut buf = vec![0u8; (stop - start) as usize];
        data.read_exact_at(&mut buf, start).is_ok() && crc32c::crc32c(&buf) == *crc
    })
}
