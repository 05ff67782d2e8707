//! The chunk store's shared in-memory state: the store's `Inner` (its chunks, counters, staging
//! room and pool), each chunk's `Chunk` and `ChunkState` (durable metadata, staged appends,
//! fences), and the `Job`s the API hands the committer thread (`committer`), which recovery
//! (`recovery`) also builds. The API (`store`) and the committer share it; neither owns it.

use gfs_util::collections::HashMap;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use gfs_util::disk::{Disk, DiskFile};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};

use crate::config::StoreConfig;
use crate::error::{Result, StorageError};
use crate::record::ChunkMeta;
use crate::types::{BLOCK_SIZE, ChunkHandle, ChunkInfo, CommitInfo, OpId};

#[derive(Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub fsyncs: AtomicU64,
    pub checksum_failures: AtomicU64,
    pub restored_blocks: AtomicU64,
    pub staged_bytes: AtomicU64,
    /// Staged appends not yet handed to the committer.
    pub staged_waiting: AtomicU64,
}

pub(crate) struct Inner {
    /// The disk every file operation goes through.
    pub disk: Arc<dyn Disk>,
    pub dir: PathBuf,
    pub cfg: StoreConfig,
    pub chunks: RwLock<HashMap<ChunkHandle, Arc<Chunk>>>,
    /// Chunks found damaged at open and moved aside.
    pub quarantined: Vec<ChunkHandle>,
    /// Woken whenever staging room is released.
    pub staging_room: Notify,
    pub counters: Counters,
    /// A write or fsync of the WAL failed: every write is refused until the store reopens.
    pub wal_failed: AtomicBool,
    /// Chunks poisoned by a failed fsync since the store opened.
    pub poisoned: AtomicUsize,
    /// Woken when the store stops taking writes until it reopens (`wal_failed`, `poisoned`).
    pub broken: Notify,
    /// The data directory is gone or replaced under the store: it holds nothing any more.
    pub lost: AtomicBool,
    /// Empty files ready to become chunk files.
    pub pool: crate::pool::FilePool,
    /// Held for the store's lifetime: an exclusive lock on `<dir>/LOCK`.
    pub _lock: Arc<dyn DiskFile>,
    /// The data directory's identity (`<dir>/ID`).
    pub identity: u64,
    /// Told how long each group commit's fsync round took.
    pub fsync_observer: std::sync::OnceLock<FsyncObserver>,
}

/// Hears how long each group commit's fsync round took.
pub type FsyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

pub(crate) struct Chunk {
    pub handle: ChunkHandle,
    pub data_path: PathBuf,
    pub meta_path: PathBuf,
    pub data: Arc<dyn DiskFile>,
    pub st: Mutex<ChunkState>,
}

pub(crate) struct ChunkState {
    /// Durable state (snapshot plus WAL).
    pub meta: ChunkMeta,
    /// Offset just past committed data and commits queued for the committer.
    pub enqueued: u64,
    /// Staged appends by offset.
    pub staged: BTreeMap<u64, Staged>,
    /// Offset of each staged op.
    pub staged_ops: HashMap<OpId, u64>,
    /// A seal is queued: no more staging.
    pub sealing: bool,
    /// A version change to this version is queued: nothing is staged or committed at any
    /// version until it is durable (it fences the old version's primary, I5).
    pub versioning: Option<u64>,
    /// A write or fsync failed: refuse writes until the store reopens.
    pub poisoned: bool,
    pub deleted: bool,
    /// The state changed since the last snapshot.
    pub dirty: bool,
    /// The chunk file holds WAL-inline bytes that are not fsynced yet.
    pub unsynced: bool,
    /// Since when the chunk is sealed here with its op table (or since the store opened, for
    /// a chunk found sealed): the table is dropped `op_retention` later (`optable.rs`).
    pub sealed_at: Option<Instant>,
    /// `(version, length)`: a quorum is known to hold the chunk's first `length` bytes at that
    /// version: 0 at creation, the fenced length at a version change, then what the primary
    /// told (in memory only: unknown when the store opens; see `ChunkStore::quorum_known`).
    pub quorum_known: Option<(u64, u64)>,
}

impl ChunkState {
    /// The state of a chunk nothing is staged on.
    pub(crate) fn new(meta: ChunkMeta) -> ChunkState {
        ChunkState {
            sealed_at: (meta.sealed && !meta.ops.is_dropped()).then(Instant::now),
            enqueued: meta.length,
            staged: BTreeMap::new(),
            staged_ops: HashMap::default(),
            sealing: false,
            versioning: None,
            poisoned: false,
            deleted: false,
            dirty: false,
            unsynced: false,
            // Found when the store opened: what its primary last told was in memory (an
            // empty replica has nothing to hide).
            quorum_known: (meta.length == 0).then_some((meta.version, 0)),
            meta,
        }
    }
}

pub(crate) struct Staged {
    pub op: OpId,
    pub data: Bytes,
    pub at: Instant,
    /// A caller waiting for this append's commit, once it asked for it.
    pub waiter: Option<oneshot::Sender<Result<CommitInfo>>>,
}

pub(crate) enum Job {
    Create {
        handle: ChunkHandle,
        version: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Chunks to delete together: one WAL fsync and one directory fsync for all of them.
    Delete {
        chunks: Vec<(Arc<Chunk>, oneshot::Sender<Result<()>>)>,
    },
    Commit {
        chunk: Arc<Chunk>,
        op: OpId,
        offset: u64,
        data: Bytes,
        reply: oneshot::Sender<Result<CommitInfo>>,
    },
    Seal {
        chunk: Arc<Chunk>,
        reply: oneshot::Sender<Result<u64>>,
    },
    SetVersion {
        chunk: Arc<Chunk>,
        version: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Write a block's bytes from a peer over a block that failed its checksum.
    Restore {
        chunk: Arc<Chunk>,
        block: u64,
        data: Bytes,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Drop a chunk's op table now and rewrite its snapshot without it.
    Forget {
        chunk: Arc<Chunk>,
        reply: oneshot::Sender<Result<()>>,
    },
}

impl Job {
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Job::Commit { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

impl Inner {
    /// The chunk, or `NotFound`; `DiskLost` once the data directory is found lost (not
    /// `NotFound`: a replica this store lost is not one it never held).
    pub(crate) fn chunk(&self, handle: ChunkHandle) -> Result<Arc<Chunk>> {
        if self.lost.load(Ordering::Acquire) {
            return Err(StorageError::DiskLost(self.dir.clone()));
        }
        self.chunks
            .read()
            .get(&handle)
            .cloned()
            .ok_or(StorageError::NotFound(handle))
    }

    /// Marks the WAL failed: every write is refused until the store reopens.
    pub fn fail_wal(&self) {
        self.wal_failed.store(true, Ordering::Release);
        self.broken.notify_waiters();
    }

    /// Marks a chunk poisoned by a failed fsync (its state `st`); the first time, the store
    /// then asks to be reopened ([`Inner::needs_reopen`]), wherever the fsync failed: in a
    /// batch, a checkpoint or a restore.
    pub fn poison(&self, st: &mut ChunkState) {
        if st.poisoned {
            return;
        }
        st.poisoned = true;
        self.poisoned.fetch_add(1, Ordering::AcqRel);
        self.broken.notify_waiters();
    }

    /// Why the store takes no writes until it reopens, if it does not (None once its disk is
    /// lost: that is reported, not restarted).
    pub fn needs_reopen(&self) -> Option<&'static str> {
        if self.lost.load(Ordering::Acquire) {
            None
        } else if self.wal_failed.load(Ordering::Acquire) {
            Some("a write or fsync of the WAL failed")
        } else if self.poisoned.load(Ordering::Acquire) > 0 {
            Some("a chunk's fsync failed")
        } else {
            None
        }
    }

    /// Refuses writes to a deleted or poisoned chunk, or to any chunk once the WAL failed.
    pub(crate) fn writable(&self, st: &ChunkState, handle: ChunkHandle) -> Result<()> {
        if st.deleted {
            return Err(StorageError::NotFound(handle));
        }
        if st.poisoned || self.wal_failed.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned(handle));
        }
        Ok(())
    }

    pub(crate) fn reserve(&self, len: u64) -> Result<()> {
        let limit = self.cfg.staging_limit;
        self.counters
            .staged_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur + len <= limit).then_some(cur + len)
            })
            .map(|_| ())
            .map_err(|staged| StorageError::Busy { staged, len, limit })
    }

    pub(crate) fn release(&self, len: u64) {
        if len > 0 {
            self.counters.staged_bytes.fetch_sub(len, Ordering::AcqRel);
            self.staging_room.notify_waiters();
        }
    }

    /// Drops the staged appends of `chunk` matching `pred`; returns how many.
    pub(crate) fn drop_staged(
        &self,
        chunk: &Chunk,
        st: &mut ChunkState,
        pred: impl Fn(&Staged) -> bool,
    ) -> usize {
        let doomed: Vec<u64> = st
            .staged
            .iter()
            .filter(|(_, s)| pred(s))
            .map(|(o, _)| *o)
            .collect();
        for off in &doomed {
            if let Some(s) = st.staged.remove(off) {
                self.counters.staged_waiting.fetch_sub(1, Ordering::AcqRel);
                st.staged_ops.remove(&s.op);
                self.release(s.data.len() as u64);
            }
        }
        if let Some(&first) = doomed.first() {
            // Commits waiting behind a dropped append can never apply: tell them now.
            let next = st.enqueued;
            let mut pos = Some(next);
            for (&off, s) in st.staged.iter_mut() {
                pos = pos.filter(|p| *p == off).map(|p| p + s.data.len() as u64);
                let orphan = off > first && pos.is_none();
                if let Some(w) = s.waiter.take_if(|_| orphan) {
                    let _ = w.send(Err(StorageError::Hole {
                        handle: chunk.handle,
                        offset: off,
                        next,
                    }));
                }
            }
        }
        doomed.len()
    }

    /// Withdraws a commit request that timed out. `None` when the commit already started;
    /// otherwise whether the bytes before it were all staged.
    pub(crate) fn withdraw(&self, chunk: &Chunk, op: OpId) -> Option<bool> {
        let mut st = chunk.st.lock();
        let off = st.staged_ops.get(&op).copied()?;
        let covered = st.covered(st.enqueued, off);
        st.staged
            .get_mut(&off)
            .and_then(|s| s.waiter.take())
            .map(|_| covered)
    }

    pub(crate) fn staged_offset(&self, chunk: &Chunk, op: OpId) -> Option<u64> {
        chunk.st.lock().staged_ops.get(&op).copied()
    }

    /// Up to `limit` of the chunks sealed here, with their op table, for longer than
    /// `op_retention`, the longest sealed first; and whether more are due.
    pub(crate) fn ops_due(&self, limit: usize) -> (Vec<Arc<Chunk>>, bool) {
        let Some(cutoff) = Instant::now().checked_sub(self.cfg.op_retention) else {
            return (Vec::new(), false);
        };
        let mut due: Vec<(Instant, Arc<Chunk>)> = self
            .chunks
            .read()
            .values()
            .filter_map(|c| {
                let at = c.st.lock().sealed_at.filter(|t| *t <= cutoff)?;
                Some((at, Arc::clone(c)))
            })
            .collect();
        let more = due.len() > limit;
        if more {
            due.select_nth_unstable_by_key(limit, |(at, _)| *at);
            due.truncate(limit);
        }
        (due.into_iter().map(|(_, c)| c).collect(), more)
    }

    /// Drops staged appends older than the TTL.
    pub(crate) fn expire_staged(&self) {
        let Some(cutoff) = Instant::now().checked_sub(self.cfg.staging_ttl) else {
            return;
        };
        let chunks: Vec<_> = self.chunks.read().values().cloned().collect();
        for chunk in chunks {
            let mut st = chunk.st.lock();
            let n = self.drop_staged(&chunk, &mut st, |s| s.at < cutoff);
            if n > 0 {
                tracing::info!(handle = %chunk.handle, dropped = n, "staged appends expired");
            }
        }
    }

    /// Reads `[start, stop)` and verifies the blocks from `first` against `crcs`.
    pub(crate) fn read_verified(
        &self,
        chunk: &Chunk,
        start: u64,
        stop: u64,
        first: u64,
        crcs: &[u32],
    ) -> Result<Bytes> {
        let mut buf = vec![0u8; (stop - start) as usize];
        chunk
            .data
            .read_exact_at(&mut buf, start)
            .map_err(|e| StorageError::io(&chunk.data_path, e))?;
        for (i, piece) in buf.chunks(BLOCK_SIZE as usize).enumerate() {
            if crc32c::crc32c(piece) != crcs[i] {
                self.counters
                    .checksum_failures
                    .fetch_add(1, Ordering::Relaxed);
                let block = first + i as u64;
                tracing::error!(handle = %chunk.handle, block, "checksum mismatch");
                return Err(StorageError::ChecksumMismatch {
                    handle: chunk.handle,
                    block,
                });
            }
        }
        Ok(Bytes::from(buf))
    }
}

impl Chunk {
    pub(crate) fn info(&self) -> ChunkInfo {
        let st = self.st.lock();
        ChunkInfo {
            handle: self.handle,
            version: st.meta.version,
            committed_len: st.meta.length,
            sealed: st.meta.sealed,
            unvouched: !st.meta.sealed
                && st.meta.length > 0
                && st
                    .quorum_known
                    .filter(|(v, _)| *v == st.meta.version)
                    .is_none_or(|(_, l)| l < st.meta.length),
        }
    }
}

impl ChunkState {
    /// Whether staged appends cover `[from, to)` without a gap.
    pub(crate) fn covered(&self, from: u64, to: u64) -> bool {
        let mut pos = from;
        for (&off, s) in self.staged.range(from..to) {
            if off != pos {
                return false;
            }
            pos += s.data.len() as u64;
        }
        pos == to
    }
}
