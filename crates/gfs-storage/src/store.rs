//! The chunk store's API: staging, ordered commits, checksummed reads, scrub (its in-memory
//! state is `state`'s).
//!
//! Every file mutation goes through the committer thread (`committer`), the only writer of
//! chunk files, snapshots and the write-ahead log. Readers and stagers only take short locks.
//! On a disk without threads (`Disk::threads`, a simulated disk) there is no thread: each
//! caller runs the committer's rounds of what is queued before it waits for its reply, so a
//! seed's disk operations come in one order.
//!
//! # Staging and commit order
//!
//! 1. [`ChunkStore::stage`] puts an append's bytes in memory, bounded by `staging_limit` bytes
//!    across the store (`Busy` past it; [`ChunkStore::stage_wait`] waits with a deadline). It
//!    refuses a wrong version (`StaleVersion`), a sealed chunk or one whose op table was
//!    dropped (`Sealed`), an op already committed (`AlreadyCommitted`, with its first offset),
//!    bytes past `chunk_size` (`ChunkFull`), and bytes overlapping committed or staged ones
//!    (`Overlap`). Entries older than `staging_ttl` are dropped by the committer's sweep.
//! 2. [`ChunkStore::commit`] registers a reply on the staged entry. The run of requested
//!    entries that starts at the chunk's committing edge (`enqueued`) moves to the committer's
//!    queue in offset order; a commit behind an unrequested predecessor waits up to
//!    `commit_wait`; one behind a gap fails with `Hole` (also when its predecessor is aborted
//!    while it waits).
//! 3. The committer makes the queue durable in group commits, and only then publishes the new
//!    lengths, CRCs and op ids and answers (`committer`).
//!
//! # Reads
//!
//! [`ChunkStore::read`] clips at the committed length, reads whole 64 KiB blocks and checks
//! each CRC32C; a mismatch returns `ChecksumMismatch { handle, block }` and counts in
//! `stats().checksum_failures`. [`ChunkStore::scrub`] verifies every block of every chunk,
//! [`ChunkStore::scrub_one`] those of one chunk (the chunkserver's scrubber). The CRC of a
//! partial last block covers the committed prefix of that block, extended with
//! `crc32c_append` as appends arrive. [`ChunkStore::restore_block`] writes a peer's copy over
//! a bad block (or over its first bytes), only if the block then matches its stored CRC32C (the committer does it between
//! batches, with one fsync).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use gfs_util::disk::{Disk, Open, OsDisk};
use parking_lot::RwLock;
use tokio::sync::{Notify, oneshot};

use crate::committer::Committer;
use crate::config::StoreConfig;
use crate::driver::Driver;
use crate::error::{Result, StorageError};
use crate::state::{Chunk, Counters, FsyncObserver, Inner, Job, Staged};
use crate::types::{
    AppendRecord, BLOCK_SIZE, ChunkHandle, ChunkInfo, CommitInfo, OpId, StageRequest, block_of,
};

/// Counters describing the store's work since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends made durable.
    pub commits: u64,
    /// Group-commit rounds (each is one fsync round): batches of appends, seals, versions and
    /// creates; rounds of deletes; Cancel records after a failed round.
    pub batches: u64,
    /// Individual fsync calls in those rounds (a delete round is two: the WAL, the directory).
    pub fsyncs: u64,
    /// Blocks whose bytes did not match their CRC32C, on read or scrub.
    pub checksum_failures: u64,
    /// Blocks rewritten from a peer's copy that matched their CRC32C ([`ChunkStore::restore_block`]).
    pub restored_blocks: u64,
    /// Bytes held in the staging area now.
    pub staged_bytes: u64,
}

/// A durable store of chunk replicas in one data directory.
pub struct ChunkStore {
    pub(crate) inner: Arc<Inner>,
    jobs: Option<mpsc::Sender<Job>>,
    committer: Option<Driver>,
}

impl ChunkStore {
    /// Opens (creating if needed) the store in `dir`, recovering every chunk to a consistent
    /// committed prefix, and starts the committer thread.
    pub fn open(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<ChunkStore> {
        ChunkStore::open_on(OsDisk::shared(), dir, cfg)
    }

    /// The disk the store is on.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.inner.disk
    }

    /// [`ChunkStore::open`] on `disk` (the operating system's, or a simulated one).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        cfg: StoreConfig,
    ) -> Result<ChunkStore> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        disk.create_dir_all(&dir)
            .map_err(|e| StorageError::io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = disk
            .open(&lock_path, Open::Create)
            .map_err(|e| StorageError::io(&lock_path, e))?;
        if !lock
            .try_lock()
            .map_err(|e| StorageError::io(&lock_path, e))?
        {
            return Err(StorageError::Locked(dir));
        }
        let rec = crate::recovery::recover(&*disk, &dir, &cfg)?;
        let identity = crate::layout::identity(&*disk, &dir)?;
        let pool = crate::pool::FilePool::start(Arc::clone(&disk), &dir)
            .map_err(|e| StorageError::io(&dir, e))?;
        let inner = Arc::new(Inner {
            disk,
            pool,
            dir,
            cfg,
            chunks: RwLock::new(rec.chunks),
            quarantined: rec.quarantined,
            staging_room: Notify::new(),
            counters: Counters::default(),
            wal_failed: AtomicBool::new(false),
            poisoned: Default::default(),
            broken: Notify::new(),
            lost: AtomicBool::new(false),
            _lock: lock,
            identity,
            fsync_observer: std::sync::OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel();
        let committer = Committer::new(Arc::clone(&inner), rec.wal, rec.next_batch);
        let committer = Driver::start(committer, rx, inner.disk.threads())
            .map_err(|e| StorageError::io(&inner.dir, e))?;
        Ok(ChunkStore {
            inner,
            jobs: Some(tx),
            committer: Some(committer),
        })
    }

    /// The data directory's identity: made at random when the directory was first used, the same
    /// at every open after, new on a replaced or wiped disk (HDFS's storage ID); 0 if it could
    /// not be written.
    pub fn identity(&self) -> u64 {
        self.inner.identity
    }

    /// Checks that the data directory is still the one the store opened (its `LOCK` file is the
    /// same file). If it was removed or replaced (a failed or swapped disk, an `rm -rf`), the
    /// store is marked lost for good: it lists nothing, serves nothing, accepts nothing, and this
    /// returns `DiskLost`, so the server can report its replicas gone.
    pub fn check_disk(&self) -> Result<()> {
        if self.inner.lost.load(Ordering::Acquire) {
            return Err(StorageError::DiskLost(self.inner.dir.clone()));
        }
        let held = self.inner._lock.id();
        let there = self.inner.disk.file_id(&self.inner.dir.join("LOCK"));
        match (held, there) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            _ => {
                if !self.inner.lost.swap(true, Ordering::AcqRel) {
                    self.inner.fail_wal();
                    tracing::error!(dir = %self.inner.dir.display(), "the data directory is gone or replaced: every replica here is lost");
                }
                Err(StorageError::DiskLost(self.inner.dir.clone()))
            }
        }
    }

    /// Why the store takes no writes until it is reopened, if it does not: the WAL failed, or
    /// a chunk's fsync did (what a failed fsync covered may be lost, and only recovery from
    /// the disk knows what is durable). A server stops on it, so that a restart recovers. None
    /// while the store is healthy, or once its disk is lost (see [`ChunkStore::check_disk`]).
    pub fn needs_reopen(&self) -> Option<&'static str> {
        self.inner.needs_reopen()
    }

    /// Resolves with [`ChunkStore::needs_reopen`]'s reason once there is one. It holds the
    /// store's shared state, not the store: waiting keeps nothing open.
    pub fn broken(&self) -> impl Future<Output = &'static str> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move {
            loop {
                let woken = inner.broken.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if let Some(why) = inner.needs_reopen() {
                    return why;
                }
                woken.await;
            }
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Chunks found damaged when the store opened; their files were renamed `*.corrupt`.
    pub fn quarantined(&self) -> &[ChunkHandle] {
        &self.inner.quarantined
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            checksum_failures: c.checksum_failures.load(Ordering::Relaxed),
            restored_blocks: c.restored_blocks.load(Ordering::Relaxed),
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
        self.reply(rx).await
    }

    /// Deletes a replica and its files; staged appends to it are dropped. Durable when this
    /// returns. Deletes queued together share one WAL fsync and one directory fsync.
    pub async fn delete(&self, handle: ChunkHandle) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Delete {
            chunks: vec![(chunk, reply)],
        })?;
        self.reply(rx).await
    }

    /// Deletes many replicas as one round: one WAL write and fsync for all their Delete records,
    /// then the unlinks, then one directory fsync (N single deletes cost N of each). Returns
    /// each handle's outcome, in the order asked; an unknown handle, or one asked twice, gets
    /// `NotFound`.
    pub async fn delete_many(&self, handles: &[ChunkHandle]) -> Vec<(ChunkHandle, Result<()>)> {
        let mut chunks = Vec::with_capacity(handles.len());
        let mut waits = Vec::with_capacity(handles.len());
        for &h in handles {
            match self.inner.chunk(h) {
                Ok(chunk) => {
                    let (reply, rx) = oneshot::channel();
                    chunks.push((chunk, reply));
                    waits.push((h, Ok(rx)));
                }
                Err(e) => waits.push((h, Err(e))),
            }
        }
        if !chunks.is_empty() {
            // On failure the replies are dropped with the job: each wait below sees `Closed`.
            let _ = self.submit(Job::Delete { chunks });
        }
        self.drive_soon().await;
        let mut out = Vec::with_capacity(waits.len());
        for (h, wait) in waits {
            let r = match wait {
                Ok(rx) => rx.await.unwrap_or(Err(StorageError::Closed)),
                Err(e) => Err(e),
            };
            out.push((h, r));
        }
        out
    }

    /// Durably sets a replica's version; staged appends made for another version are dropped.
    pub async fn set_version(&self, handle: ChunkHandle, version: u64) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        {
            let mut st = chunk.st.lock();
            self.inner.writable(&st, handle)?;
            st.versioning = Some(version);
            self.inner.drop_staged(&chunk, &mut st, |_| true);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::SetVersion {
            chunk,
            version,
            reply,
        })?;
        self.reply(rx).await
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
            self.inner.writable(&st, handle)?;
            st.sealing = true;
            self.inner.drop_staged(&chunk, &mut st, |_| true);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Seal { chunk, reply })?;
        self.reply(rx).await
    }

    /// Seals a chunk at exactly `length`, at `version`: only if its committed and committing
    /// bytes end there (a secondary sealing at the primary's length) and the replica is at that
    /// version with no change of version under way. Otherwise nothing changes and the error
    /// says where the replica ends, or its version: a replica never seals at a length its
    /// primary did not, nor for a lease a fence has ended (a fence and a seal of one replica
    /// are ordered: whichever comes second sees the first).
    pub async fn seal_exactly(
        &self,
        handle: ChunkHandle,
        version: u64,
        length: u64,
    ) -> Result<u64> {
        let chunk = self.inner.chunk(handle)?;
        {
            let mut st = chunk.st.lock();
            if version != st.meta.version || st.versioning.is_some() {
                return Err(StorageError::StaleVersion {
                    handle,
                    have: st.versioning.unwrap_or(st.meta.version),
                    got: version,
                });
            }
            if st.meta.sealed {
                return if st.meta.length == length {
                    Ok(length)
                } else {
                    Err(StorageError::Sealed {
                        handle,
                        length: st.meta.length,
                    })
                };
            }
            self.inner.writable(&st, handle)?;
            if st.enqueued != length {
                return Err(StorageError::LengthMismatch {
                    handle,
                    have: st.enqueued,
                    want: length,
                });
            }
            st.sealing = true;
            self.inner.drop_staged(&chunk, &mut st, |_| true);
        }
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Seal { chunk, reply })?;
        self.reply(rx).await
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
        self.inner.writable(&st, handle)?;
        if version != st.meta.version || st.versioning.is_some() {
            // Changing version: the replica is as good as at the new one already.
            return Err(StorageError::StaleVersion {
                handle,
                have: st.versioning.unwrap_or(st.meta.version),
                got: version,
            });
        }
        // A chunk without its op table could not tell a retry from a new op: no more appends.
        if st.meta.sealed || st.sealing || st.meta.ops.is_dropped() {
            return Err(StorageError::Sealed {
                handle,
                length: st.meta.length,
            });
        }
        if let Ok(Some(r)) = st.meta.ops.get(&op) {
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
                waiter: None,
            },
        );
        st.staged_ops.insert(op, offset);
        self.inner
            .counters
            .staged_waiting
            .fetch_add(1, Ordering::AcqRel);
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

    /// Drops a staged append made at `version`; a no-op (false) while the replica is at
    /// another version or changing version (everything staged then belongs to the new one).
    pub fn abort_at(&self, handle: ChunkHandle, version: u64, op: OpId) -> Result<bool> {
        let chunk = self.inner.chunk(handle)?;
        let mut st = chunk.st.lock();
        if st.meta.version != version || st.versioning.is_some() {
            return Ok(false);
        }
        Ok(self.inner.drop_staged(&chunk, &mut st, |s| s.op == op) > 0)
    }

    /// Sets what hears of each fsync round's duration (once; later calls are ignored).
    pub fn on_fsync(&self, observer: FsyncObserver) {
        let _ = self.inner.fsync_observer.set(observer);
    }

    /// Drops every staged append of a chunk (leftovers of a primary that is gone); returns how
    /// many.
    pub fn abort_all(&self, handle: ChunkHandle) -> Result<usize> {
        let chunk = self.inner.chunk(handle)?;
        let mut st = chunk.st.lock();
        Ok(self.inner.drop_staged(&chunk, &mut st, |_| true))
    }

    /// Makes a staged append durable and returns where it landed.
    ///
    /// Commits of one chunk apply strictly in offset order: a commit waits (up to
    /// `commit_wait`) until every byte before it is staged and committing — on a secondary the
    /// PREPAREs of earlier appends may still be on their way. It is refused with `Hole` when the
    /// bytes before it are still missing at the deadline, or at once when an append before it is
    /// aborted or expires, and with `Timeout` when they are staged but nobody commits them.
    /// Committing an op that is already durable returns its record again.
    pub async fn commit(&self, handle: ChunkHandle, op: OpId) -> Result<CommitInfo> {
        self.commit_checked(handle, None, op).await
    }

    /// [`ChunkStore::commit`], only while the replica is at `version` with no version change
    /// queued (`StaleVersion` otherwise): a COMMIT of an old version's primary is never applied
    /// after the version moved on (I5). An op already durable returns its record whatever the
    /// version.
    pub async fn commit_at(
        &self,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
    ) -> Result<CommitInfo> {
        self.commit_checked(handle, Some(version), op).await
    }

    async fn commit_checked(
        &self,
        handle: ChunkHandle,
        version: Option<u64>,
        op: OpId,
    ) -> Result<CommitInfo> {
        let chunk = self.inner.chunk(handle)?;
        let mut rx = match self.request_commit(&chunk, version, op)? {
            Ok(done) => return Ok(done),
            Err(rx) => rx,
        };
        let gone = || StorageError::NotStaged { handle, op };
        self.drive_soon().await;
        match tokio::time::timeout(self.inner.cfg.commit_wait, &mut rx).await {
            Ok(reply) => reply.map_err(|_| gone())?,
            Err(_) => {
                if let Some(covered) = self.inner.withdraw(&chunk, op) {
                    let next = chunk.st.lock().enqueued;
                    return Err(if covered {
                        StorageError::Timeout("the preceding commits")
                    } else {
                        StorageError::Hole {
                            handle,
                            offset: self.inner.staged_offset(&chunk, op).unwrap_or(next),
                            next,
                        }
                    });
                }
                // The commit started meanwhile: its outcome is on the way.
                rx.await.map_err(|_| gone())?
            }
        }
    }

    /// Registers the caller's wish to commit `op` and queues every commit that is now next in
    /// offset order. Returns the record at once when `op` is already durable.
    fn request_commit(
        &self,
        chunk: &Arc<Chunk>,
        version: Option<u64>,
        op: OpId,
    ) -> Result<Result<CommitInfo, oneshot::Receiver<Result<CommitInfo>>>> {
        let handle = chunk.handle;
        let mut st = chunk.st.lock();
        if let Ok(Some(r)) = st.meta.ops.get(&op) {
            return Ok(Ok(CommitInfo {
                record: r,
                committed_len: st.meta.length,
            }));
        }
        self.inner.writable(&st, handle)?;
        if let Some(v) = version
            && (v != st.meta.version || st.versioning.is_some())
        {
            return Err(StorageError::StaleVersion {
                handle,
                have: st.versioning.unwrap_or(st.meta.version),
                got: v,
            });
        }
        let Some(&offset) = st.staged_ops.get(&op) else {
            return Err(StorageError::NotStaged { handle, op });
        };
        let (tx, rx) = oneshot::channel();
        if let Some(entry) = st.staged.get_mut(&offset) {
            entry.waiter = Some(tx);
        }
        // Queue the run of requested commits that starts at the committing edge.
        while let Some(entry) = st.staged.get(&st.enqueued) {
            if entry.waiter.is_none() {
                break;
            }
            let offset = st.enqueued;
            let Some(staged) = st.staged.remove(&offset) else {
                break;
            };
            self.inner
                .counters
                .staged_waiting
                .fetch_sub(1, Ordering::AcqRel);
            st.staged_ops.remove(&staged.op);
            st.enqueued += staged.data.len() as u64;
            let Some(reply) = staged.waiter else { break };
            self.submit(Job::Commit {
                chunk: Arc::clone(chunk),
                op: staged.op,
                offset,
                data: staged.data,
                reply,
            })?;
        }
        Ok(Err(rx))
    }

    /// The committed record of `op` on a chunk, if it committed. `OpRetentionExpired` once the
    /// chunk's op table was dropped (sealed here for longer than `op_retention`): then nobody
    /// knows, and the caller must not take it for "not here" (`optable.rs`).
    pub fn lookup_op(&self, handle: ChunkHandle, op: OpId) -> Result<Option<AppendRecord>> {
        let chunk = self.inner.chunk(handle)?;
        let st = chunk.st.lock();
        st.meta
            .ops
            .get(&op)
            .map_err(|_| StorageError::OpRetentionExpired {
                handle,
                length: st.meta.length,
            })
    }

    /// The committed appends of a replica, in offset order (op id, offset and length): what a
    /// copy replays to get the same bytes and the same op table. `OpRetentionExpired` once the
    /// op table was dropped: a copy then takes the bytes without op ids, and drops its own
    /// table ([`ChunkStore::forget_ops`]).
    pub fn appends(&self, handle: ChunkHandle) -> Result<Vec<(OpId, AppendRecord)>> {
        let chunk = self.inner.chunk(handle)?;
        let st = chunk.st.lock();
        st.meta
            .ops
            .by_offset()
            .ok_or(StorageError::OpRetentionExpired {
                handle,
                length: st.meta.length,
            })
    }

    /// Drops the op table of a chunk now, durably (its snapshot is rewritten without it), and
    /// drops what is staged on it: the chunk takes no more appends, and every lookup of an op
    /// answers `OpRetentionExpired`. For a copy of a replica whose table was dropped: the
    /// stand-in op ids it was filled with must not answer anybody. The committer's sweep does
    /// the same to every chunk sealed for longer than `op_retention`.
    pub async fn forget_ops(&self, handle: ChunkHandle) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Forget { chunk, reply })?;
        self.reply(rx).await
    }

    /// Writes `data`, a peer's copy of block `block` of a replica or of the block's first
    /// bytes (a shorter peer's), over it and fsyncs the chunk file, once every job queued
    /// before it is durable; only if `data` followed by the replica's own bytes past it is
    /// the block's committed bytes here by their stored CRC32C (`NotRestored` otherwise, and
    /// nothing is written). Only data bits rot: the length and CRCs, in checksummed records,
    /// say what the block held. A failed fsync poisons the chunk, as in a batch.
    pub async fn restore_block(&self, handle: ChunkHandle, block: u64, data: Bytes) -> Result<()> {
        let chunk = self.inner.chunk(handle)?;
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Restore {
            chunk,
            block,
            data,
            reply,
        })?;
        self.reply(rx).await
    }

    /// One replica's report entry.
    pub fn info(&self, handle: ChunkHandle) -> Result<ChunkInfo> {
        Ok(self.inner.chunk(handle)?.info())
    }

    /// Notes that the chunk's primary at `version` knows a quorum to hold the chunk's first
    /// `length` bytes durably; returns whether the note holds. A note at another version than
    /// the replica's is ignored (`false`: a fence moved it on, so a primary must not
    /// acknowledge what the note was for); notes only ever move the length up.
    pub fn note_quorum(&self, handle: ChunkHandle, version: u64, length: u64) -> Result<bool> {
        let chunk = self.inner.chunk(handle)?;
        let mut st = chunk.st.lock();
        if st.meta.version != version {
            return Ok(false);
        }
        let known = match st.quorum_known {
            Some((v, l)) if v == version => l.max(length),
            _ => length,
        };
        st.quorum_known = Some((version, known));
        Ok(true)
    }

    /// The prefix of this replica a quorum is known to hold at the replica's current version:
    /// what its primary last told ([`ChunkStore::note_quorum`]), else what was known when the
    /// version was set (0 for a replica created here: bytes a primary that then died committed
    /// here alone are not shown). `None` for a replica found when the store opened, until a
    /// primary tells: the notes were in memory, and it may hold bytes it committed alone, or the
    /// only copy but one of an acknowledged append (a version change keeps it unknown). Like HDFS's replicas waiting for recovery, such a
    /// replica serves no read of an unsealed chunk (ARCHITECTURE.md, I3).
    pub fn quorum_known(&self, handle: ChunkHandle) -> Option<u64> {
        let chunk = self.inner.chunk(handle).ok()?;
        let st = chunk.st.lock();
        st.quorum_known
            .filter(|(v, _)| *v == st.meta.version)
            .map(|(_, l)| l)
    }

    /// Every replica, for the chunk report, ordered by handle.
    pub fn list(&self) -> Vec<ChunkInfo> {
        if self.inner.lost.load(Ordering::Acquire) {
            return Vec::new();
        }
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

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(job)
            .map_err(|_| StorageError::Closed)
    }

    /// Runs what is queued, when the committer has no thread (a no-op otherwise). Called with
    /// no lock held, before waiting for a reply.
    fn drive(&self) {
        if let Some(d) = &self.committer {
            d.drive();
        }
    }

    /// [`ChunkStore::drive`] once the disk's latency has passed: on a simulated disk a round
    /// takes time, and the jobs other tasks queue meanwhile join it (a group commit).
    async fn drive_soon(&self) {
        let takes = self.inner.disk.latency();
        if !takes.is_zero() {
            tokio::time::sleep(takes).await;
        }
        self.drive();
    }

    /// The reply to a submitted job, once it is done.
    async fn reply<T>(&self, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.drive_soon().await;
        rx.await.map_err(|_| StorageError::Closed)?
    }
}

impl Drop for ChunkStore {
    fn drop(&mut self) {
        // Closing the queue lets the committer finish what is queued, then exit.
        self.jobs.take();
        if let Some(d) = self.committer.take() {
            d.stop();
        }
    }
}

#[cfg(test)]
#[path = "store_tests/mod.rs"]
mod tests;
