//! The chunk store: staging, the group-commit committer, recovery, checksummed reads and scrub.
//!
//! Every file mutation goes through one committer thread, which makes it the only writer of chunk
//! and metadata files. It drains all queued jobs into a batch, writes the data and the metadata
//! records of the whole batch, fsyncs every touched file once (in parallel), and only then publishes
//! the new committed lengths and answers the callers. The next batch starts writing only after the
//! previous one is durable, so recovery only has to verify the newest batch of each chunk.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};

use crate::config::StoreConfig;
use crate::error::{Result, StorageError};
use crate::meta::{self, ChunkMeta, Record};
use crate::types::{
    AppendRecord, BLOCK_SIZE, ChunkHandle, ChunkInfo, CommitInfo, OpId, StageRequest, block_of,
};

/// Counters describing the store's work since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends made durable.
    pub commits: u64,
    /// Group-commit rounds (each is one fsync round).
    pub batches: u64,
    /// Individual fsync calls.
    pub fsyncs: u64,
    /// Blocks whose bytes did not match their CRC32C, on read or scrub.
    pub checksum_failures: u64,
    /// Bytes held in the staging area now.
    pub staged_bytes: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    checksum_failures: AtomicU64,
    staged_bytes: AtomicU64,
}

/// What a [`ChunkStore::scrub`] pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks verified.
    pub chunks: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// `(chunk, block)` pairs whose checksum failed.
    pub corrupt: Vec<(ChunkHandle, u64)>,
}

/// A durable store of chunk replicas in one data directory.
pub struct ChunkStore {
    inner: Arc<Inner>,
    jobs: Option<mpsc::Sender<Job>>,
    committer: Option<JoinHandle<()>>,
}

struct Inner {
    dir: PathBuf,
    cfg: StoreConfig,
    chunks: RwLock<HashMap<ChunkHandle, Arc<Chunk>>>,
    /// Woken whenever staging room is released.
    staging_room: Notify,
    counters: Counters,
    /// Held for the store's lifetime: an exclusive lock on `<dir>/LOCK`.
    _lock: File,
}

struct Chunk {
    handle: ChunkHandle,
    data_path: PathBuf,
    meta_path: PathBuf,
    data: File,
    st: Mutex<ChunkState>,
    /// Woken whenever `enqueued` moves or staged entries disappear.
    progress: Notify,
}

struct ChunkState {
    /// Durable state (what the metadata log says).
    meta: ChunkMeta,
    /// Offset just past committed data and commits queued for the committer.
    enqueued: u64,
    /// Staged appends by offset.
    staged: BTreeMap<u64, Staged>,
    /// Offset of each staged op.
    staged_ops: HashMap<OpId, u64>,
    /// A seal is queued: no more staging.
    sealing: bool,
    /// A write or fsync failed: refuse writes until the store reopens.
    poisoned: bool,
    deleted: bool,
    meta_file: Arc<File>,
    meta_len: u64,
}

struct Staged {
    op: OpId,
    data: Bytes,
    at: Instant,
}

enum Job {
    Create {
        handle: ChunkHandle,
        version: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Delete {
        chunk: Arc<Chunk>,
        reply: oneshot::Sender<Result<()>>,
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
}

impl Job {
    fn bytes(&self) -> u64 {
        match self {
            Job::Commit { data, .. } => data.len() as u64,
            _ => 0,
        }
    }
}

impl ChunkStore {
    /// Opens (creating if needed) the store in `dir`, recovering every chunk to a consistent
    /// committed prefix, and starts the committer thread.
    pub fn open(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<ChunkStore> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked(dir));
        }
        let (chunks, max_batch) = recover_dir(&dir, &cfg)?;
        let inner = Arc::new(Inner {
            dir,
            cfg,
            chunks: RwLock::new(chunks),
            staging_room: Notify::new(),
            counters: Counters::default(),
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel();
        let worker = Arc::clone(&inner);
        let committer = std::thread::Builder::new()
            .name("gfs-committer".into())
            .spawn(move || committer_loop(worker, rx, max_batch + 1))
            .map_err(|e| StorageError::io(&inner.dir, e))?;
        Ok(ChunkStore {
            inner,
            jobs: Some(tx),
            committer: Some(committer),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            checksum_failures: c.checksum_failures.load(Ordering::Relaxed),
            staged_bytes: c.staged_bytes.load(Ordering::Relaxed),
        }
    }

    /// Creates an empty replica at `version`; durable when this returns.
    pub async fn create(&self, handle: ChunkHandle, version: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Create {
            handle,
            version,
            reply,
        })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Deletes a replica and its files; staged appends to it are dropped.
    pub async fn delete(&self, handle: ChunkHandle) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Delete { chunk, reply })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Durably sets a replica's version; staged appends made for another version are dropped.
    pub async fn set_version(&self, handle: ChunkHandle, version: u64) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        {
            let mut st = chunk.st.lock();
            st.check_writable(handle)?;
            self.inner.drop_staged(&chunk, &mut st, |_| true);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::SetVersion {
            chunk,
            version,
            reply,
        })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Seals a chunk after every commit already queued; returns its final length. Staged appends
    /// that were not yet committing are dropped. Sealing a sealed chunk returns its length.
    pub async fn seal(&self, handle: ChunkHandle) -> Result<u64> {
        let chunk = self.inner.chunk(handle)?;
        {
            let mut st = chunk.st.lock();
            if st.meta.sealed {
                return Ok(st.meta.length);
            }
            st.check_writable(handle)?;
            st.sealing = true;
            self.inner.drop_staged(&chunk, &mut st, |_| true);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Seal { chunk, reply })?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Stages an append in memory. Fails with `Busy` when the staging bound would be exceeded.
    ///
    /// Staging the same op again replaces its earlier staging. The range must start at or past
    /// the end of committed and committing data and must not overlap another staged append.
    pub fn stage(&self, req: StageRequest) -> Result<()> {
        let StageRequest {
            op,
            handle,
            version,
            offset,
            data,
        } = req;
        let chunk = self.inner.chunk(handle)?;
        let len = data.len() as u64;
        let mut st = chunk.st.lock();
        st.check_writable(handle)?;
        if version != st.meta.version {
            return Err(StorageError::StaleVersion {
                handle,
                have: st.meta.version,
                got: version,
            });
        }
        if st.meta.sealed || st.sealing {
            return Err(StorageError::Sealed {
                handle,
                length: st.meta.length,
            });
        }
        if let Some(r) = st.meta.ops.get(&op) {
            return Err(StorageError::AlreadyCommitted {
                handle,
                op,
                offset: r.offset,
                len: r.len,
            });
        }
        let chunk_size = self.inner.cfg.chunk_size;
        if offset.checked_add(len).is_none_or(|end| end > chunk_size) {
            return Err(StorageError::ChunkFull {
                handle,
                offset,
                len,
                chunk_size,
            });
        }
        if st.staged_ops.contains_key(&op) {
            self.inner.drop_staged(&chunk, &mut st, |s| s.op == op);
        }
        let overlap = StorageError::Overlap {
            handle,
            offset,
            len,
            next: st.enqueued,
        };
        if offset < st.enqueued {
            return Err(overlap);
        }
        let prev_overlaps = st
            .staged
            .range(..=offset)
            .next_back()
            .is_some_and(|(&o, s)| o + s.data.len() as u64 > offset || o == offset);
        let next_overlaps = st
            .staged
            .range(offset..)
            .next()
            .is_some_and(|(&o, _)| o < offset + len || o == offset);
        if prev_overlaps || next_overlaps {
            return Err(overlap);
        }
        self.inner.reserve(len)?;
        st.staged.insert(
            offset,
            Staged {
                op,
                data,
                at: Instant::now(),
            },
        );
        st.staged_ops.insert(op, offset);
        Ok(())
    }

    /// Like [`ChunkStore::stage`], but waits up to `timeout` for staging room instead of `Busy`.
    pub async fn stage_wait(&self, req: StageRequest, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let room = self.inner.staging_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.stage(req.clone()) {
                Err(StorageError::Busy { .. }) => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(StorageError::Timeout("staging room"));
            }
        }
    }

    /// Drops a staged append; returns whether there was one.
    pub fn abort(&self, handle: ChunkHandle, op: OpId) -> Result<bool> {
        let chunk = self.inner.chunk(handle)?;
        let mut st = chunk.st.lock();
        Ok(self.inner.drop_staged(&chunk, &mut st, |s| s.op == op) > 0)
    }

    /// Makes a staged append durable and returns where it landed.
    ///
    /// Commits of one chunk apply strictly in offset order: a commit waits (up to
    /// `commit_wait`) while the appends before it are staged and not yet committing, and is
    /// refused with `Hole` when they are not staged at all. Committing an op that is already
    /// durable returns its record again.
    pub async fn commit(&self, handle: ChunkHandle, op: OpId) -> Result<CommitInfo> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.commit_wait;
        let chunk = self.inner.chunk(handle)?;
        loop {
            let progress = chunk.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if let Some(rx) = self.try_enqueue_commit(&chunk, op)? {
                return rx.await.map_err(|_| StorageError::Closed)?;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return Err(StorageError::Timeout("the preceding commit"));
            }
        }
    }

    /// Queues the commit of `op` if it is next in offset order; `None` means "wait for the
    /// staged appends before it".
    fn try_enqueue_commit(
        &self,
        chunk: &Arc<Chunk>,
        op: OpId,
    ) -> Result<Option<oneshot::Receiver<Result<CommitInfo>>>> {
        let handle = chunk.handle;
        let mut st = chunk.st.lock();
        if let Some(r) = st.meta.ops.get(&op) {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Ok(CommitInfo {
                record: *r,
                committed_len: st.meta.length,
            }));
            return Ok(Some(rx));
        }
        st.check_writable(handle)?;
        let Some(&offset) = st.staged_ops.get(&op) else {
            return Err(StorageError::NotStaged { handle, op });
        };
        if offset != st.enqueued {
            return if st.covered(st.enqueued, offset) {
                Ok(None)
            } else {
                Err(StorageError::Hole {
                    handle,
                    offset,
                    next: st.enqueued,
                })
            };
        }
        let Some(staged) = st.staged.remove(&offset) else {
            return Err(StorageError::NotStaged { handle, op });
        };
        st.staged_ops.remove(&op);
        st.enqueued += staged.data.len() as u64;
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Commit {
            chunk: Arc::clone(chunk),
            op,
            offset,
            data: staged.data,
            reply,
        })?;
        Ok(Some(rx))
    }

    /// The committed record of `op` on a chunk, if it committed.
    pub fn lookup_op(&self, handle: ChunkHandle, op: OpId) -> Result<Option<AppendRecord>> {
        let chunk = self.inner.chunk(handle)?;
        let st = chunk.st.lock();
        Ok(st.meta.ops.get(&op).copied())
    }

    /// One replica's report entry.
    pub fn info(&self, handle: ChunkHandle) -> Result<ChunkInfo> {
        Ok(self.inner.chunk(handle)?.info())
    }

    /// Every replica, for the chunk report, ordered by handle.
    pub fn list(&self) -> Vec<ChunkInfo> {
        let mut all: Vec<_> = self
            .inner
            .chunks
            .read()
            .values()
            .map(|c| c.info())
            .collect();
        all.sort_by_key(|c| c.handle);
        all
    }

    /// Reads up to `len` committed bytes at `offset`, verifying the CRC32C of every block touched.
    ///
    /// The result is shorter than `len` when the committed length ends first; it never includes
    /// bytes past the committed length.
    pub fn read(&self, handle: ChunkHandle, offset: u64, len: u64) -> Result<Bytes> {
        let chunk = self.inner.chunk(handle)?;
        let (end, committed_end, crcs) = {
            let st = chunk.st.lock();
            let committed = st.meta.length;
            if offset > committed {
                return Err(StorageError::OutOfRange {
                    handle,
                    offset,
                    committed,
                });
            }
            let end = offset.saturating_add(len).min(committed);
            if end == offset {
                return Ok(Bytes::new());
            }
            let first = block_of(offset) as usize;
            let last = block_of(end - 1) as usize;
            (end, committed, st.meta.crcs[first..=last].to_vec())
        };
        // Blocks are verified whole, up to the committed length captured with their CRCs.
        let first = block_of(offset);
        let start = first * BLOCK_SIZE;
        let stop = ((first + crcs.len() as u64) * BLOCK_SIZE).min(committed_end);
        let buf = self
            .inner
            .read_verified(&chunk, start, stop, first, &crcs)?;
        Ok(buf.slice((offset - start) as usize..(end - start) as usize))
    }

    /// Verifies every block of every chunk; counts and returns the corrupt ones.
    pub fn scrub(&self) -> ScrubReport {
        let chunks: Vec<_> = self.inner.chunks.read().values().cloned().collect();
        let mut report = ScrubReport::default();
        for chunk in chunks {
            let corrupt = self.scrub_chunk(&chunk);
            report.chunks += 1;
            report.bytes += chunk.st.lock().meta.length;
            report
                .corrupt
                .extend(corrupt.into_iter().map(|b| (chunk.handle, b)));
        }
        report
    }

    /// Verifies one chunk; returns the indexes of its corrupt blocks.
    pub fn scrub_one(&self, handle: ChunkHandle) -> Result<Vec<u64>> {
        let chunk = self.inner.chunk(handle)?;
        Ok(self.scrub_chunk(&chunk))
    }

    fn scrub_chunk(&self, chunk: &Chunk) -> Vec<u64> {
        let (length, crcs) = {
            let st = chunk.st.lock();
            (st.meta.length, st.meta.crcs.clone())
        };
        let mut bad = Vec::new();
        for (block, crc) in crcs.iter().enumerate() {
            let block = block as u64;
            let start = block * BLOCK_SIZE;
            let stop = ((block + 1) * BLOCK_SIZE).min(length);
            match self.inner.read_verified(chunk, start, stop, block, &[*crc]) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(handle = %chunk.handle, block, error = %e, "scrub found a bad block");
                    bad.push(block);
                }
            }
        }
        bad
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(job)
            .map_err(|_| StorageError::Closed)
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        // Closing the queue lets the committer finish what is queued, then exit.
        self.jobs.take();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn chunk(&self, handle: ChunkHandle) -> Result<Arc<Chunk>> {
        self.chunks
            .read()
            .get(&handle)
            .cloned()
            .ok_or(StorageError::NotFound(handle))
    }

    fn reserve(&self, len: u64) -> Result<()> {
        let limit = self.cfg.staging_limit;
        self.counters
            .staged_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (cur + len <= limit).then_some(cur + len)
            })
            .map(|_| ())
            .map_err(|staged| StorageError::Busy { staged, len, limit })
    }

    fn release(&self, len: u64) {
        if len > 0 {
            self.counters.staged_bytes.fetch_sub(len, Ordering::AcqRel);
            self.staging_room.notify_waiters();
        }
    }

    /// Drops the staged appends of `chunk` matching `pred`; returns how many.
    fn drop_staged(
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
                st.staged_ops.remove(&s.op);
                self.release(s.data.len() as u64);
            }
        }
        if !doomed.is_empty() {
            chunk.progress.notify_waiters();
        }
        doomed.len()
    }

    /// Drops staged appends older than the TTL.
    fn expire_staged(&self) {
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
    fn read_verified(
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
    fn info(&self) -> ChunkInfo {
        let st = self.st.lock();
        ChunkInfo {
            handle: self.handle,
            version: st.meta.version,
            committed_len: st.meta.length,
            sealed: st.meta.sealed,
        }
    }
}

impl ChunkState {
    fn check_writable(&self, handle: ChunkHandle) -> Result<()> {
        if self.deleted {
            return Err(StorageError::NotFound(handle));
        }
        if self.poisoned {
            return Err(StorageError::Poisoned(handle));
        }
        Ok(())
    }

    /// Whether staged appends cover `[from, to)` without a gap.
    fn covered(&self, from: u64, to: u64) -> bool {
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

// ---------------------------------------------------------------------------------------------
// The committer
// ---------------------------------------------------------------------------------------------

/// How often the committer sweeps expired staging when idle.
fn sweep_interval(cfg: &StoreConfig) -> Duration {
    (cfg.staging_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn committer_loop(inner: Arc<Inner>, rx: mpsc::Receiver<Job>, mut batch: u64) {
    let sweep = sweep_interval(&inner.cfg);
    let mut last_sweep = Instant::now();
    loop {
        let first = match rx.recv_timeout(sweep) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                inner.expire_staged();
                last_sweep = Instant::now();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut bytes = first.bytes();
        let mut jobs = vec![first];
        while bytes < inner.cfg.max_batch_bytes {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut group = Group::new(batch);
        for job in jobs {
            group.add(&inner, job);
        }
        group.flush(&inner);
        batch = group.batch;
        if last_sweep.elapsed() >= sweep {
            inner.expire_staged();
            last_sweep = Instant::now();
        }
    }
    tracing::debug!("committer stopped");
}

enum Reply {
    Commit(oneshot::Sender<Result<CommitInfo>>, AppendRecord, u64),
    Seal(oneshot::Sender<Result<u64>>, u64),
    Version(oneshot::Sender<Result<()>>),
}

/// The pending writes of one chunk inside a batch.
struct Work {
    chunk: Arc<Chunk>,
    meta_file: Arc<File>,
    meta_off: u64,
    meta_buf: Vec<u8>,
    /// Length after the batch's commits so far.
    len: u64,
    /// CRC of the partial last block (0 when the length is block-aligned).
    tail_crc: u32,
    crc_updates: Vec<(u64, u32)>,
    ops: Vec<(OpId, AppendRecord)>,
    version: Option<u64>,
    sealed: bool,
    wrote_data: bool,
    staged_bytes: u64,
    replies: Vec<Reply>,
    failed: Option<(String, bool)>,
}

/// The jobs of one fsync round, grouped by chunk.
struct Group {
    batch: u64,
    works: Vec<Work>,
}

impl Group {
    fn new(batch: u64) -> Self {
        Group {
            batch,
            works: Vec::new(),
        }
    }

    fn work(&mut self, chunk: &Arc<Chunk>) -> &mut Work {
        if let Some(i) = self.works.iter().position(|w| Arc::ptr_eq(&w.chunk, chunk)) {
            return &mut self.works[i];
        }
        let st = chunk.st.lock();
        let len = st.meta.length;
        let tail_crc = if !len.is_multiple_of(BLOCK_SIZE) {
            st.meta.crcs[block_of(len) as usize]
        } else {
            0
        };
        let w = Work {
            chunk: Arc::clone(chunk),
            meta_file: Arc::clone(&st.meta_file),
            meta_off: st.meta_len,
            meta_buf: Vec::new(),
            len,
            tail_crc,
            crc_updates: Vec::new(),
            ops: Vec::new(),
            version: None,
            sealed: st.meta.sealed,
            wrote_data: false,
            staged_bytes: 0,
            replies: Vec::new(),
            failed: st.poisoned.then(|| ("poisoned".to_string(), true)),
        };
        drop(st);
        self.works.push(w);
        let last = self.works.len() - 1;
        &mut self.works[last]
    }

    fn add(&mut self, inner: &Inner, job: Job) {
        let batch = self.batch;
        match job {
            Job::Commit {
                chunk,
                op,
                offset,
                data,
                reply,
            } => {
                let w = self.work(&chunk);
                w.staged_bytes += data.len() as u64;
                let handle = chunk.handle;
                if w.failed.is_some() {
                    let _ = reply.send(Err(StorageError::Poisoned(handle)));
                    return;
                }
                if w.sealed {
                    let _ = reply.send(Err(StorageError::Sealed {
                        handle,
                        length: w.len,
                    }));
                    return;
                }
                if offset != w.len {
                    let _ = reply.send(Err(StorageError::Hole {
                        handle,
                        offset,
                        next: w.len,
                    }));
                    return;
                }
                if let Err(e) = chunk.data.write_all_at(&data, offset) {
                    let err = StorageError::io(&chunk.data_path, e);
                    w.failed = Some((err.to_string(), true));
                    let _ = reply.send(Err(err));
                    return;
                }
                w.wrote_data = true;
                let first_block = block_of(offset);
                let mut crcs = Vec::new();
                let mut pos = offset;
                let mut rest = &data[..];
                let mut cur = w.tail_crc;
                while !rest.is_empty() {
                    let in_block = pos % BLOCK_SIZE;
                    let n = ((BLOCK_SIZE - in_block) as usize).min(rest.len());
                    let seed = if in_block == 0 { 0 } else { cur };
                    cur = crc32c::crc32c_append(seed, &rest[..n]);
                    crcs.push(cur);
                    pos += n as u64;
                    rest = &rest[n..];
                }
                w.tail_crc = if pos % BLOCK_SIZE == 0 { 0 } else { cur };
                for (i, c) in crcs.iter().enumerate() {
                    w.crc_updates.push((first_block + i as u64, *c));
                }
                let len = data.len() as u32;
                Record::Commit {
                    batch,
                    op,
                    offset,
                    len,
                    first_block,
                    crcs,
                }
                .encode_into(&mut w.meta_buf);
                w.len = pos;
                let rec = AppendRecord { offset, len };
                w.ops.push((op, rec));
                w.replies.push(Reply::Commit(reply, rec, pos));
            }
            Job::Seal { chunk, reply } => {
                let w = self.work(&chunk);
                if let Some((why, _)) = &w.failed {
                    tracing::debug!(handle = %chunk.handle, why, "seal refused");
                    let _ = reply.send(Err(StorageError::Poisoned(chunk.handle)));
                    return;
                }
                if !w.sealed {
                    Record::Seal { length: w.len }.encode_into(&mut w.meta_buf);
                    w.sealed = true;
                }
                w.replies.push(Reply::Seal(reply, w.len));
            }
            Job::SetVersion {
                chunk,
                version,
                reply,
            } => {
                let w = self.work(&chunk);
                if w.failed.is_some() {
                    let _ = reply.send(Err(StorageError::Poisoned(chunk.handle)));
                    return;
                }
                Record::Version { version }.encode_into(&mut w.meta_buf);
                w.version = Some(version);
                w.replies.push(Reply::Version(reply));
            }
            // Control jobs touch the directory: they run alone, after everything before them.
            Job::Create {
                handle,
                version,
                reply,
            } => {
                self.flush(inner);
                let _ = reply.send(create_chunk(inner, handle, version));
            }
            Job::Delete { chunk, reply } => {
                self.flush(inner);
                let _ = reply.send(delete_chunk(inner, &chunk));
            }
        }
    }

    /// Writes the metadata, fsyncs every touched file once, then publishes and answers.
    fn flush(&mut self, inner: &Inner) {
        if self.works.is_empty() {
            return;
        }
        // 1. Metadata records.
        for w in &mut self.works {
            if w.failed.is_some() || w.meta_buf.is_empty() {
                continue;
            }
            if let Err(e) = w.meta_file.write_all_at(&w.meta_buf, w.meta_off) {
                let err = StorageError::io(&w.chunk.meta_path, e);
                w.failed = Some((err.to_string(), true));
            }
        }
        // 2. One fsync round over every touched file, in parallel.
        let mut syncs: Vec<(usize, &File, &Path)> = Vec::new();
        for (i, w) in self.works.iter().enumerate() {
            if w.failed.is_some() {
                continue;
            }
            if w.wrote_data {
                syncs.push((i, &w.chunk.data, &w.chunk.data_path));
            }
            if !w.meta_buf.is_empty() {
                syncs.push((i, &w.meta_file, &w.chunk.meta_path));
            }
        }
        let failures = parallel_sync(&syncs);
        inner
            .counters
            .fsyncs
            .fetch_add(syncs.len() as u64, Ordering::Relaxed);
        if !syncs.is_empty() {
            inner.counters.batches.fetch_add(1, Ordering::Relaxed);
        }
        for (i, err) in failures {
            self.works[i].failed = Some((err.to_string(), true));
        }
        // 3. Publish and answer.
        for w in self.works.drain(..) {
            publish(inner, w);
        }
        self.batch += 1;
    }
}

fn parallel_sync(files: &[(usize, &File, &Path)]) -> Vec<(usize, StorageError)> {
    let sync = |(i, f, p): &(usize, &File, &Path)| {
        f.sync_data().err().map(|e| (*i, StorageError::io(*p, e)))
    };
    match files {
        [] => Vec::new(),
        [one] => sync(one).into_iter().collect(),
        [first, rest @ ..] => std::thread::scope(|s| {
            let handles: Vec<_> = rest.iter().map(|f| s.spawn(move || sync(f))).collect();
            let mut errs: Vec<_> = sync(first).into_iter().collect();
            for h in handles {
                match h.join() {
                    Ok(r) => errs.extend(r),
                    Err(_) => errs.push((
                        first.0,
                        StorageError::io(first.2, std::io::Error::other("fsync thread panicked")),
                    )),
                }
            }
            errs
        }),
    }
}

fn publish(inner: &Inner, w: Work) {
    let handle = w.chunk.handle;
    let mut st = w.chunk.st.lock();
    if let Some((why, poison)) = &w.failed {
        // Nothing of this batch is acknowledged. Rewind the metadata file so a later record
        // cannot follow garbage, and refuse writes until a reopen recovers from disk.
        tracing::error!(%handle, error = why, "commit batch failed; chunk poisoned");
        if *poison {
            st.poisoned = true;
        }
        let _ = w.meta_file.set_len(st.meta_len);
        st.enqueued = st.meta.length;
        st.sealing = st.meta.sealed;
        drop(st);
        inner.release(w.staged_bytes);
        let err = || StorageError::Poisoned(handle);
        for r in w.replies {
            match r {
                Reply::Commit(tx, ..) => drop(tx.send(Err(err()))),
                Reply::Seal(tx, _) => drop(tx.send(Err(err()))),
                Reply::Version(tx) => drop(tx.send(Err(err()))),
            }
        }
        w.chunk.progress.notify_waiters();
        return;
    }
    for (block, crc) in &w.crc_updates {
        let b = *block as usize;
        if b < st.meta.crcs.len() {
            st.meta.crcs[b] = *crc;
        } else {
            st.meta.crcs.push(*crc);
        }
    }
    st.meta.length = w.len;
    let commits = w.ops.len() as u64;
    st.meta.ops.extend(w.ops.iter().copied());
    if let Some(v) = w.version {
        st.meta.version = v;
    }
    st.meta.sealed = w.sealed;
    st.meta_len = w.meta_off + w.meta_buf.len() as u64;
    let compact = st.meta_len > inner.cfg.compact_meta_bytes && !st.deleted;
    if let Err(e) = compact
        .then(|| compact_meta(inner, &w.chunk, &mut st))
        .transpose()
    {
        tracing::warn!(%handle, error = %e, "metadata compaction failed; keeping the log");
    }
    drop(st);
    inner.release(w.staged_bytes);
    inner.counters.commits.fetch_add(commits, Ordering::Relaxed);
    for r in w.replies {
        match r {
            Reply::Commit(tx, record, committed_len) => drop(tx.send(Ok(CommitInfo {
                record,
                committed_len,
            }))),
            Reply::Seal(tx, len) => drop(tx.send(Ok(len))),
            Reply::Version(tx) => drop(tx.send(Ok(()))),
        }
    }
    w.chunk.progress.notify_waiters();
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn data_path(dir: &Path, handle: ChunkHandle) -> PathBuf {
    dir.join(handle.0.to_string())
}

fn meta_path(dir: &Path, handle: ChunkHandle) -> PathBuf {
    dir.join(format!("{}.meta", handle.0))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

/// Writes `bytes` to `path.tmp`, fsyncs it, renames it over `path` and fsyncs the directory.
fn write_aside(dir: &Path, path: &Path, bytes: &[u8]) -> Result<File> {
    let tmp = path.with_extension("meta.tmp");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| StorageError::io(&tmp, e))?;
    f.write_all_at(bytes, 0)
        .and_then(|_| f.sync_all())
        .map_err(|e| StorageError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StorageError::io(path, e))?;
    sync_dir(dir)?;
    Ok(f)
}

fn create_chunk(inner: &Inner, handle: ChunkHandle, version: u64) -> Result<()> {
    if inner.chunks.read().contains_key(&handle) {
        return Err(StorageError::AlreadyExists(handle));
    }
    let dp = data_path(&inner.dir, handle);
    let mp = meta_path(&inner.dir, handle);
    let data = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&dp)
        .map_err(|e| StorageError::io(&dp, e))?;
    data.sync_all().map_err(|e| StorageError::io(&dp, e))?;
    let mut bytes = meta::MAGIC.to_vec();
    Record::Create { version }.encode_into(&mut bytes);
    let meta_file = write_aside(&inner.dir, &mp, &bytes)?;
    let chunk = Chunk {
        handle,
        data_path: dp,
        meta_path: mp,
        data,
        st: Mutex::new(ChunkState {
            meta: ChunkMeta {
                version,
                ..ChunkMeta::default()
            },
            enqueued: 0,
            staged: BTreeMap::new(),
            staged_ops: HashMap::new(),
            sealing: false,
            poisoned: false,
            deleted: false,
            meta_file: Arc::new(meta_file),
            meta_len: bytes.len() as u64,
        }),
        progress: Notify::new(),
    };
    inner.chunks.write().insert(handle, Arc::new(chunk));
    tracing::debug!(%handle, version, "chunk created");
    Ok(())
}

fn delete_chunk(inner: &Inner, chunk: &Arc<Chunk>) -> Result<()> {
    {
        let mut st = chunk.st.lock();
        if st.deleted {
            return Err(StorageError::NotFound(chunk.handle));
        }
        st.deleted = true;
        inner.drop_staged(chunk, &mut st, |_| true);
    }
    inner.chunks.write().remove(&chunk.handle);
    // The metadata goes first: a data file without metadata is an orphan that open() removes.
    for p in [&chunk.meta_path, &chunk.data_path] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(p, e)),
        }
    }
    sync_dir(&inner.dir)?;
    chunk.progress.notify_waiters();
    tracing::debug!(handle = %chunk.handle, "chunk deleted");
    Ok(())
}

fn compact_meta(inner: &Inner, chunk: &Chunk, st: &mut ChunkState) -> Result<()> {
    let mut bytes = meta::MAGIC.to_vec();
    st.meta.snapshot().encode_into(&mut bytes);
    let f = write_aside(&inner.dir, &chunk.meta_path, &bytes)?;
    st.meta_file = Arc::new(f);
    st.meta_len = bytes.len() as u64;
    tracing::debug!(handle = %chunk.handle, bytes = st.meta_len, "metadata compacted");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

/// Opens every chunk of `dir`; returns them with the highest batch number seen.
fn recover_dir(dir: &Path, cfg: &StoreConfig) -> Result<(HashMap<ChunkHandle, Arc<Chunk>>, u64)> {
    let mut metas = Vec::new();
    let mut datas = Vec::new();
    let mut removed = false;
    let entries = fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            fs::remove_file(entry.path()).map_err(|e| StorageError::io(entry.path(), e))?;
            removed = true;
        } else if let Some(h) = name.strip_suffix(".meta") {
            if let Ok(h) = h.parse::<u64>() {
                metas.push(ChunkHandle(h));
            }
        } else if let Ok(h) = name.parse::<u64>() {
            datas.push(ChunkHandle(h));
        }
    }
    metas.sort();
    for h in datas {
        if metas.binary_search(&h).is_err() {
            tracing::warn!(handle = %h, "removing a chunk data file without metadata");
            let p = data_path(dir, h);
            fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    let mut chunks = HashMap::new();
    let mut max_batch = 0;
    for h in metas {
        let (chunk, batch) = recover_chunk(dir, cfg, h)?;
        max_batch = max_batch.max(batch);
        chunks.insert(h, Arc::new(chunk));
    }
    Ok((chunks, max_batch))
}

fn recover_chunk(dir: &Path, cfg: &StoreConfig, handle: ChunkHandle) -> Result<(Chunk, u64)> {
    let mp = meta_path(dir, handle);
    let dp = data_path(dir, handle);
    let bytes = fs::read(&mp).map_err(|e| StorageError::io(&mp, e))?;
    let parsed = meta::parse(&mp, &bytes)?;
    let data = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&dp)
        .map_err(|e| StorageError::io(&dp, e))?;
    let data_len = data.metadata().map_err(|e| StorageError::io(&dp, e))?.len();

    let max_batch = parsed
        .records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::Commit { batch, .. } => Some(*batch),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let tail_start = parsed
        .records
        .iter()
        .position(|(_, r)| matches!(r, Record::Commit { batch, .. } if *batch == max_batch))
        .unwrap_or(parsed.records.len());

    let mut meta = ChunkMeta::default();
    let mut cut = parsed.records.len();
    for (i, (pos, rec)) in parsed.records.iter().enumerate() {
        if i == 0 && !matches!(rec, Record::Create { .. } | Record::Snapshot(_)) {
            return Err(StorageError::CorruptMetadata {
                path: mp,
                offset: *pos,
                reason: "the log does not start with a create or snapshot record".into(),
            });
        }
        if let Record::Commit {
            offset,
            len,
            first_block,
            crcs,
            ..
        } = rec
        {
            let end = offset + u64::from(*len);
            let intact = end <= data_len
                && (i < tail_start || verify_commit(&data, end, *first_block, crcs));
            if !intact {
                cut = i;
                break;
            }
        }
        if !meta.apply(rec) {
            tracing::warn!(%handle, offset = pos, "metadata record does not follow; log cut here");
            cut = i;
            break;
        }
    }
    if cut == 0 {
        return Err(StorageError::CorruptMetadata {
            path: mp,
            offset: meta::MAGIC.len() as u64,
            reason: "no valid create record".into(),
        });
    }
    if meta.length > cfg.chunk_size {
        return Err(StorageError::CorruptMetadata {
            path: mp,
            offset: 0,
            reason: format!(
                "committed length {} exceeds the chunk size {}",
                meta.length, cfg.chunk_size
            ),
        });
    }
    let keep = parsed
        .records
        .get(cut)
        .map(|(pos, _)| *pos)
        .unwrap_or(parsed.valid_end);
    let meta_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mp)
        .map_err(|e| StorageError::io(&mp, e))?;
    if keep < parsed.file_len {
        tracing::warn!(%handle, keep, file_len = parsed.file_len, "truncating a torn metadata tail");
        meta_file
            .set_len(keep)
            .and_then(|_| meta_file.sync_all())
            .map_err(|e| StorageError::io(&mp, e))?;
    }
    if data_len > meta.length {
        tracing::info!(%handle, committed = meta.length, data_len, "truncating uncommitted chunk bytes");
        data.set_len(meta.length)
            .and_then(|_| data.sync_all())
            .map_err(|e| StorageError::io(&dp, e))?;
    }
    let enqueued = meta.length;
    Ok((
        Chunk {
            handle,
            data_path: dp,
            meta_path: mp,
            data,
            st: Mutex::new(ChunkState {
                meta,
                enqueued,
                staged: BTreeMap::new(),
                staged_ops: HashMap::new(),
                sealing: false,
                poisoned: false,
                deleted: false,
                meta_file: Arc::new(meta_file),
                meta_len: keep,
            }),
            progress: Notify::new(),
        },
        max_batch,
    ))
}

/// Whether the data file holds the bytes a commit record describes.
fn verify_commit(data: &File, end: u64, first_block: u64, crcs: &[u32]) -> bool {
    crcs.iter().enumerate().all(|(i, crc)| {
        let block = first_block + i as u64;
        let start = block * BLOCK_SIZE;
        let stop = ((block + 1) * BLOCK_SIZE).min(end);
        let mut buf = vec![0u8; (stop - start) as usize];
        data.read_exact_at(&mut buf, start).is_ok() && crc32c::crc32c(&buf) == *crc
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
