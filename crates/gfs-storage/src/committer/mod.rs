//! The committer thread: the only writer of chunk files, snapshots and the write-ahead log.
//!
//! It drains every queued job into one batch, writes large appends in place and every record
//! (with small appends inline) to the WAL, then fsyncs the WAL and the chunk files written in place,
//! all in one parallel round, before it publishes the new committed lengths and answers. The next
//! batch starts only after the previous one is durable, so recovery need only verify the newest
//! batch. When the WAL passes `checkpoint_bytes` (and at shutdown) dirty chunks are fsynced and
//! snapshotted, and the WAL starts empty.
//!
//! In detail: while appends are staged whose COMMIT is on its way, a batch waits up to
//! `commit_delay` (200 µs) for them. Appends up to `inline_max` (64 KiB) go into the WAL with
//! their bytes; larger ones are written in place, their whole pages past the page cache
//! (`DiskFile::write_direct_at`), and their chunk file joins the fsync round. A
//! chunk's records enter the WAL only if all of its work in the batch succeeded. The round is
//! one `fdatasync` of the WAL and of each chunk file written in place, in parallel on at most
//! `SYNC_THREADS` (8) threads. The WAL is filled with zeros `WAL_FILL` (256 KiB) past its
//! records by the round whose records reach the end of the zeros before (written and fsynced
//! with them), so most rounds overwrite blocks the file already has, and their `fdatasync`
//! flushes data only, with no change of size for the filesystem's journal to commit (ext4,
//! three stores on one disk: 0.37 → 0.25–0.32 ms a round, BENCHMARKS.md); a reopen reads the
//! zeros as the log's end. A larger fill costs the tail: 4 MiB of zeros written and flushed in
//! one round held its appends for milliseconds (16 appenders' p99 2.9 → 6.4–9.1 ms). A disk too full for them: the WAL goes on without. A checkpoint fsyncs the chunk files
//! holding inline bytes, writes the snapshots of dirty chunks aside (`.tmp`, fsync, rename,
//! fsync the directory: `gfs_util::crashsafe`), then replaces the WAL with an empty one the
//! same way.
//!
//! Creates join a batch as a Create record: the chunk's file is opened then (a `free-<n>` file
//! of the pool renamed, `pool.rs`), and the chunk is visible and answered once the record is
//! durable; its snapshot comes with the next checkpoint. So creation is group-committed. The
//! file's directory entry need not be durable yet: a replay makes the file again from the
//! Create record, and rewrites every inline append into it. Bytes written in place must be
//! found under the chunk's name, so the first round that writes any in place after a creation
//! fsyncs the directory too (`dir_pending`; a checkpoint or a delete round fsyncs it as well):
//! a small file's chunk pays no directory fsync of its own, which on ext4 is a journal commit
//! (BENCHMARKS.md). WAL records of an older chunk with the same handle are skipped at replay.
//!
//! Between batches it sweeps: staged appends past `staging_ttl` are dropped, and so are the op
//! tables of chunks sealed for longer than `op_retention` (`optable.rs`); the snapshots of those
//! chunks are then rewritten at once (their chunk files fsynced first, as in a checkpoint), so a
//! reopened store does not bring the tables back. The op-table sweep runs every
//! `op_retention / 60` (at most 10 s) and drops at most `FORGET_PER_SWEEP` (64) tables, about
//! 50 ms of snapshot writes; while more are due the next one comes a sweep interval later (a
//! second by default), so the chunks a restart found sealed, all due at once, never stall
//! commits for long. [`crate::ChunkStore::forget_ops`] does the same to one chunk on demand
//! (a copy of a replica whose table was dropped).
//!
//! Deletes run in rounds of their own, after every job queued before them and before any
//! queued after: all queued Delete jobs (one per [`crate::ChunkStore::delete`], or many chunks
//! in one [`crate::ChunkStore::delete_many`]) write their Delete records with one WAL fsync,
//! then unlink their files, then fsync the directory once: N deletes in one round cost 2
//! fsyncs, not 2N (figures in `BENCHMARKS.md`). The Delete records are durable before any file
//! goes, so a replay never brings back a chunk the WAL created.
//!
//! A failed write (e.g. `DiskFull`) fails that chunk's appends in the batch and rolls its queue
//! back; the store keeps serving. A failed chunk fsync poisons the chunk (`Poisoned` until the
//! store reopens), wherever it fails (a batch, a checkpoint, a restored block), and the store
//! asks to be reopened (`ChunkStore::broken`); a failed WAL fsync refuses every write, creates
//! and deletes included, until the store reopens.
//!
//! A failed fsync may drop every unsynced write to its file for good: Linux marks the pages
//! clean, and the next fsync succeeds without them. A chunk file holds the bytes of the
//! WAL-inline appends since the last checkpoint unsynced, so after its fsync failed (in a batch
//! or in a checkpoint) the WAL holds the only durable copy of appends already acknowledged.
//! Hence a poisoned chunk holds every checkpoint back (the WAL is not replaced) and keeps its
//! op table and snapshot, until the store reopens: recovery then rewrites those appends from
//! the WAL into the chunk file and fsyncs it (found by `tests/sim_crash.rs` on the simulated
//! disk, which forgets the writes of a failed fsync).
//!
//! A failed fsync round: a chunk's records enter the WAL buffer before the round, so when its
//! chunk file (or the directory, for a create, or the WAL itself) then fails to sync, they may
//! be durable although its callers are told the work failed. Before anyone is answered, the
//! committer appends one Cancel record per such chunk (`batch`, `handle`, `cancelled` = the
//! failed batch) in a write and fsync of its own; recovery skips every record a Cancel names.
//! This costs nothing unless an fsync fails, and keeps the single parallel round. If the Cancel
//! cannot be made durable either, the WAL is marked failed and the callers' outcome is unknown
//! (a reopen may replay the records). Once the WAL has failed, no batch, create or delete writes
//! to it again until the store reopens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;
use tokio::time::Instant;

use gfs_util::disk::DiskFile;
use tokio::sync::oneshot;

use crate::config::StoreConfig;
use crate::error::{Result, StorageError};
use crate::layout::*;
use crate::record::{Record, WAL_MAGIC};
use crate::state::{Chunk, Inner, Job};
use crate::types::{AppendRecord, BLOCK_SIZE, ChunkHandle, CommitInfo, OpId, block_of};

mod lifecycle;

/// Most op tables one sweep drops: each is a snapshot rewrite, 8 fsyncs at a time, and
/// commits wait meanwhile. On the dev VM 64 took 46-57 ms, 256 took 140-165 ms (test
/// `more_tables_than_one_sweep_drops_are_all_dropped`, timed by hand).
pub(crate) const FORGET_PER_SWEEP: usize = 64;

/// How far past its records a batch fills the WAL with zeros when it reaches the end of the
/// zeros already there (up to `checkpoint_bytes`): the later batches' records overwrite them,
/// so their fsync flushes data only, with no change of the file's size to journal.
pub(crate) const WAL_FILL: u64 = 256 << 10;

pub(crate) struct Committer {
    inner: Arc<Inner>,
    wal: Arc<dyn DiskFile>,
    wal_len: u64,
    /// The WAL file's end: its records, then zeros up to here (`WAL_FILL`).
    wal_filled: u64,
    /// Whether zeros could not be written ahead in this WAL (until a checkpoint renews it).
    wal_fill_failed: bool,
    /// Number of the batch being built.
    batch: u64,
    works: Vec<Work>,
    /// Deletes waiting for their round (never at the same time as works).
    deletes: Vec<(Arc<Chunk>, oneshot::Sender<Result<()>>)>,
    /// A poisoned chunk holds every checkpoint back until the store reopens (logged once).
    checkpoints_held: bool,
    /// Chunk files were created (renamed from the pool) since the directory was last fsynced:
    /// the next round that writes bytes in place fsyncs it too.
    dir_pending: bool,
    /// When expired staging was last swept.
    last_sweep: Instant,
    /// When op tables past their retention are next looked for.
    next_op_sweep: Instant,
}

enum Reply {
    Commit(oneshot::Sender<Result<CommitInfo>>, AppendRecord, u64),
    Seal(oneshot::Sender<Result<u64>>, u64),
    Version(oneshot::Sender<Result<()>>),
    Created(oneshot::Sender<Result<()>>),
}

/// Whose durability an fsync of a round decides.
#[derive(Clone, Copy)]
enum Owner {
    /// The WAL: every record of the batch.
    Wal,
    /// The data directory: the entries of the chunks created since it was last fsynced.
    Dir,
    /// A chunk file written in place (index into the batch's works).
    Work(usize),
}

/// What one batch does to one chunk.
struct Work {
    chunk: Arc<Chunk>,
    /// Length after the batch's commits so far.
    len: u64,
    /// CRC of the partial last block (0 when the length is block-aligned).
    tail_crc: u32,
    crc_updates: Vec<(u64, u32)>,
    ops: Vec<(OpId, AppendRecord)>,
    version: Option<u64>,
    sealed: bool,
    /// The chunk's op table was dropped: it takes no appends.
    ops_dropped: bool,
    /// Bytes were written in place and need an fsync in this round.
    sync_data: bool,
    /// Bytes were written whose durability is the WAL's.
    inline_data: bool,
    staged_bytes: u64,
    replies: Vec<Reply>,
    /// This chunk's WAL records; they reach the WAL only if the whole work succeeds.
    records: Vec<u8>,
    failed: Option<StorageError>,
    /// An fsync failed: the chunk refuses writes until the store reopens.
    poison: bool,
    /// The batch creates this chunk: it becomes visible once the batch is durable.
    created: bool,
}

impl Committer {
    pub(crate) fn new(inner: Arc<Inner>, wal: Arc<dyn DiskFile>, batch: u64) -> Committer {
        let next_op_sweep = Instant::now() + op_sweep_interval(&inner.cfg);
        Committer {
            inner,
            wal,
            wal_len: WAL_MAGIC.len() as u64,
            wal_filled: WAL_MAGIC.len() as u64,
            wal_fill_failed: false,
            batch,
            works: Vec::new(),
            deletes: Vec::new(),
            checkpoints_held: false,
            dir_pending: false,
            last_sweep: Instant::now(),
            next_op_sweep,
        }
    }

    /// The committer thread: waits for jobs (sweeping when idle), gathers a batch (waiting up
    /// to `commit_delay` for commits on their way), runs a round; checkpoints when the queue
    /// closes.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<Job>) {
        let idle = sweep_interval(&self.inner.cfg).min(op_sweep_interval(&self.inner.cfg));
        loop {
            let first = match rx.recv_timeout(idle) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sweep();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut bytes = first.bytes();
            // Each job is added as it comes (an append's bytes are written then), so the
            // writes overlap the wait for more.
            self.add(first);
            // Take what is queued; then, while appends are staged whose COMMIT is on its way,
            // wait up to `commit_delay` for them to share this fsync.
            let delay_until = Instant::now() + self.inner.cfg.commit_delay;
            while bytes < self.inner.cfg.max_batch_bytes {
                let job = match rx.try_recv() {
                    Ok(job) => job,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {
                        let now = Instant::now();
                        let waiting = self.inner.counters.staged_waiting.load(Ordering::Acquire);
                        if waiting == 0 || now >= delay_until {
                            break;
                        }
                        match rx.recv_timeout(delay_until - now) {
                            Ok(job) => job,
                            Err(_) => break,
                        }
                    }
                };
                bytes += job.bytes();
                self.add(job);
            }
            self.round();
        }
        self.close();
    }

    /// Without a thread (a disk without threads): runs rounds of what is queued until nothing
    /// is, in the caller's task. No `commit_delay` wait: what is queued is the batch.
    pub(crate) fn drain(&mut self, rx: &mpsc::Receiver<Job>) {
        loop {
            let (mut bytes, mut taken) = (0, 0);
            while bytes < self.inner.cfg.max_batch_bytes {
                let Ok(job) = rx.try_recv() else { break };
                bytes += job.bytes();
                taken += 1;
                self.add(job);
            }
            if taken == 0 {
                return;
            }
            self.round();
        }
    }

    /// The rest of a round, once its jobs are added: their group commit, the deletes queued, a
    /// checkpoint when the WAL is long, the sweeps when due.
    fn round(&mut self) {
        self.flush();
        self.run_deletes();
        if self.wal_len > self.inner.cfg.checkpoint_bytes {
            self.checkpoint();
        }
        self.sweep();
    }

    /// The last act when the store closes: a checkpoint.
    pub(crate) fn close(mut self) {
        self.checkpoint();
        tracing::debug!("committer stopped");
    }

    fn work(&mut self, chunk: &Arc<Chunk>) -> &mut Work {
        if let Some(i) = self.works.iter().position(|w| Arc::ptr_eq(&w.chunk, chunk)) {
            return &mut self.works[i];
        }
        let st = chunk.st.lock();
        let len = st.meta.length;
        let tail_crc = if len.is_multiple_of(BLOCK_SIZE) {
            0
        } else {
            st.meta.crcs[block_of(len) as usize]
        };
        let w = Work {
            chunk: Arc::clone(chunk),
            len,
            tail_crc,
            crc_updates: Vec::new(),
            ops: Vec::new(),
            version: None,
            sealed: st.meta.sealed,
            ops_dropped: st.meta.ops.is_dropped(),
            sync_data: false,
            inline_data: false,
            staged_bytes: 0,
            replies: Vec::new(),
            records: Vec::new(),
            failed: st.poisoned.then_some(StorageError::Poisoned(chunk.handle)),
            poison: false,
            created: false,
        };
        drop(st);
        self.works.push(w);
        let last = self.works.len() - 1;
        &mut self.works[last]
    }

    fn add(&mut self, job: Job) {
        // Deletes run after everything queued before them, and before anything queued after.
        if matches!(job, Job::Delete { .. }) {
            self.flush();
        } else {
            self.run_deletes();
        }
        let batch = self.batch;
        let inline_max = self.inner.cfg.inline_max;
        match job {
            Job::Commit {
                chunk,
                op,
                offset,
                data,
                reply,
            } => {
                let handle = chunk.handle;
                let w = self.work(&chunk);
                w.staged_bytes += data.len() as u64;
                if let Some(e) = &w.failed {
                    let _ = reply.send(Err(clone_err(e)));
                    return;
                }
                if w.sealed || w.ops_dropped {
                    let length = w.len;
                    let _ = reply.send(Err(StorageError::Sealed { handle, length }));
                    return;
                }
                if offset != w.len {
                    let next = w.len;
                    let _ = reply.send(Err(StorageError::Hole {
                        handle,
                        offset,
                        next,
                    }));
                    return;
                }
                let inline = data.len() as u64 <= inline_max;
                // Bytes made durable by the chunk file's fsync go past the page cache, whose
                // copy of each byte cost more CPU than the rest of a replica's work
                // (`gfs_util::disk`); those the WAL makes durable are written as before.
                let written = match inline {
                    true => chunk.data.write_all_at(&data, offset),
                    false => chunk.data.write_direct_at(&data, offset),
                };
                if let Err(e) = written {
                    // Bytes past the committed length are never served and get overwritten.
                    let err = StorageError::io(&chunk.data_path, e);
                    tracing::error!(%handle, error = %err, "chunk write failed");
                    let _ = reply.send(Err(clone_err(&err)));
                    w.failed = Some(err);
                    return;
                }
                if inline {
                    w.inline_data = true;
                } else {
                    w.sync_data = true;
                }
                let (first_block, crcs) = block_crcs(&mut w.tail_crc, offset, &data);
                for (i, c) in crcs.iter().enumerate() {
                    w.crc_updates.push((first_block + i as u64, *c));
                }
                let len = data.len() as u32;
                w.len = offset + u64::from(len);
                let rec = AppendRecord { offset, len };
                w.ops.push((op, rec));
                let end = w.len;
                w.replies.push(Reply::Commit(reply, rec, end));
                Record::Commit {
                    batch,
                    handle,
                    op,
                    offset,
                    len,
                    first_block,
                    crcs,
                    data: inline.then_some(data),
                }
                .encode_into(&mut w.records);
            }
            Job::Seal { chunk, reply } => {
                let handle = chunk.handle;
                let w = self.work(&chunk);
                if let Some(e) = &w.failed {
                    let _ = reply.send(Err(clone_err(e)));
                    return;
                }
                let length = w.len;
                let newly = !w.sealed;
                w.sealed = true;
                w.replies.push(Reply::Seal(reply, length));
                if newly {
                    Record::Seal {
                        batch,
                        handle,
                        length,
                    }
                    .encode_into(&mut w.records);
                }
            }
            Job::SetVersion {
                chunk,
                version,
                reply,
            } => {
                let handle = chunk.handle;
                let w = self.work(&chunk);
                if let Some(e) = &w.failed {
                    let _ = reply.send(Err(clone_err(e)));
                    return;
                }
                w.version = Some(version);
                w.replies.push(Reply::Version(reply));
                Record::Version {
                    batch,
                    handle,
                    version,
                }
                .encode_into(&mut w.records);
            }
            Job::Create {
                handle,
                version,
                reply,
            } => self.create_chunk(handle, version, reply),
            Job::Restore {
                chunk,
                block,
                data,
                reply,
            } => {
                // After everything queued before it: the block's length and CRC are final.
                self.flush();
                let _ = reply.send(self.restore(&chunk, block, &data));
            }
            Job::Forget { chunk, reply } => {
                // After everything queued before it: its commits are in the table first.
                self.flush();
                if chunk.st.lock().deleted {
                    let _ = reply.send(Err(StorageError::NotFound(chunk.handle)));
                    return;
                }
                let _ = reply.send(self.forget(vec![chunk]));
            }
            // Consecutive deletes join one round (see `run_deletes`).
            Job::Delete { chunks } => self.deletes.extend(chunks),
        }
    }

    /// Writes the batch's WAL records, fsyncs the WAL and in-place chunk files in one round,
    /// then publishes and answers.
    fn flush(&mut self) {
        if self.works.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let wal_path = inner.dir.join("wal");
        if inner.wal_failed.load(Ordering::Acquire) {
            // Nothing more goes into a WAL whose durability is unknown (creates too).
            for w in &mut self.works {
                w.failed
                    .get_or_insert(StorageError::Poisoned(w.chunk.handle));
            }
        }
        let mut buf = Vec::new();
        // Works whose records go into the WAL now: if they fail after all, they are cancelled.
        let mut in_wal = Vec::with_capacity(self.works.len());
        for w in &self.works {
            let written = w.failed.is_none() && !w.records.is_empty();
            if written {
                buf.extend_from_slice(&w.records);
            }
            in_wal.push(written);
        }
        let mut wal_err = None;
        let records = buf.len() as u64;
        let end = self.wal_len + records;
        if let Err(e) = self.wal.write_all_at(&buf, self.wal_len) {
            // Nothing was fsynced: rewind, fail the batch, keep serving.
            wal_err = Some(StorageError::io(&wal_path, e));
            if self.wal.set_len(self.wal_len).is_err() {
                inner.fail_wal();
            }
            self.wal_filled = self.wal_len;
            in_wal.fill(false);
        } else {
            if records > 0 && end > self.wal_filled {
                self.fill_wal(end);
            }
            let mut files: Vec<(Sync<'_>, &Path)> = Vec::new();
            let mut owners: Vec<Owner> = Vec::new();
            if records > 0 {
                files.push((Sync::File(&*self.wal), &wal_path));
                owners.push(Owner::Wal);
            }
            // A new chunk is durable by its Create record (a replay makes its file again), so
            // its directory entry waits: until the first round that writes bytes in place
            // (they must be found under the chunk's name after a crash), a checkpoint, or a
            // delete round, whichever fsyncs the directory first.
            if self.works.iter().any(|w| w.created && w.failed.is_none()) {
                self.dir_pending = true;
            }
            let in_place = self.works.iter().any(|w| w.sync_data && w.failed.is_none());
            if self.dir_pending && in_place {
                files.push((Sync::Dir, &inner.dir));
                owners.push(Owner::Dir);
            }
            for (i, w) in self.works.iter().enumerate() {
                if w.sync_data && w.failed.is_none() {
                    files.push((Sync::File(&*w.chunk.data), &w.chunk.data_path));
                    owners.push(Owner::Work(i));
                }
            }
            let synced = std::time::Instant::now();
            let failures = parallel_sync(&*inner.disk, &files);
            let dir_synced = owners
                .iter()
                .position(|o| matches!(o, Owner::Dir))
                .is_some_and(|d| failures.iter().all(|(i, _)| *i != d));
            if !files.is_empty()
                && let Some(observe) = inner.fsync_observer.get()
            {
                observe(synced.elapsed());
            }
            inner
                .counters
                .fsyncs
                .fetch_add(files.len() as u64, Ordering::Relaxed);
            if !files.is_empty() {
                inner.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            for (idx, err) in failures {
                tracing::error!(error = %err, "fsync failed");
                match owners[idx] {
                    Owner::Dir => {
                        // Bytes written in place may be unreachable by the chunk's name.
                        for w in self.works.iter_mut().filter(|w| w.created || w.sync_data) {
                            w.failed.get_or_insert_with(|| clone_err(&err));
                        }
                    }
                    Owner::Wal => {
                        // The WAL's durability is unknown: refuse writes until a reopen.
                        inner.fail_wal();
                        wal_err = Some(err);
                    }
                    Owner::Work(i) => {
                        self.works[i].failed = Some(err);
                        self.works[i].poison = true;
                    }
                }
            }
            if dir_synced {
                self.dir_pending = false;
            }
            // Past the batch's bytes even when the WAL fsync failed: they may be durable.
            self.wal_len = end;
            self.wal_filled = self.wal_filled.max(end);
        }
        if let Some(err) = wal_err {
            tracing::error!(error = %err, "write-ahead log write failed; batch refused");
            for w in &mut self.works {
                w.failed.get_or_insert_with(|| clone_err(&err));
            }
        }
        let batch = self.batch;
        // Records in the WAL of works that failed all the same are voided before anyone hears.
        let void: Vec<ChunkHandle> = self
            .works
            .iter()
            .zip(&in_wal)
            .filter(|(w, logged)| **logged && w.failed.is_some())
            .map(|(w, _)| w.chunk.handle)
            .collect();
        if !void.is_empty() {
            self.batch += 1;
            self.cancel(&void, batch);
        }
        for w in self.works.drain(..) {
            publish(&inner, w, batch);
        }
        self.batch += 1;
    }

    /// Writes zeros past the records that end at `end` (`WAL_FILL`, up to `checkpoint_bytes`),
    /// fsynced in the same round as they are. Only a speed-up: on a failure (a disk too full
    /// for them) the WAL goes on without, and tries again only once a checkpoint renewed it.
    fn fill_wal(&mut self, end: u64) {
        let filled = (end + WAL_FILL).min(self.inner.cfg.checkpoint_bytes.max(end));
        if filled <= end || self.wal_fill_failed {
            return;
        }
        let zeros = vec![0u8; (filled - end) as usize];
        match self.wal.write_all_at(&zeros, end) {
            Ok(()) => self.wal_filled = filled,
            Err(e) => {
                tracing::debug!(error = %e, "the WAL goes on without zeros ahead");
                // Zeros that did land are harmless (the log's end); the space goes back.
                let _ = self.wal.set_len(end);
                self.wal_fill_failed = true;
            }
        }
    }

    /// Makes a Cancel record durable for each chunk in `void`: its records of batch `cancelled`
    /// reached the WAL, but the round failed for it and its callers are about to hear so. If
    /// this fails too, the WAL is marked failed (no write until reopen) and a reopen may still
    /// replay those records: the callers' outcome is then unknown, as after any crash.
    fn cancel(&mut self, void: &[ChunkHandle], cancelled: u64) {
        let mut rec = Vec::new();
        for handle in void {
            Record::Cancel {
                batch: self.batch,
                handle: *handle,
                cancelled,
            }
            .encode_into(&mut rec);
        }
        let wal_path = self.inner.dir.join("wal");
        let written = self
            .wal
            .write_all_at(&rec, self.wal_len)
            .map_err(|e| StorageError::io(&wal_path, e));
        let synced = written.and_then(|()| {
            let r = parallel_sync(&*self.inner.disk, &[(Sync::File(&*self.wal), &wal_path)]);
            self.inner.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.inner.counters.batches.fetch_add(1, Ordering::Relaxed);
            r.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
        });
        self.wal_len += rec.len() as u64;
        self.wal_filled = self.wal_filled.max(self.wal_len);
        match synced {
            Ok(()) => {
                tracing::warn!(chunks = ?void, batch = cancelled, "records of a failed round voided in the WAL");
            }
            Err(e) => {
                self.inner.fail_wal();
                tracing::error!(error = %e, chunks = ?void, batch = cancelled,
                    "cannot void the records of a failed round; a reopen may replay them");
            }
        }
    }
}

/// The CRCs of the blocks `data` touches when appended at `offset`; `tail_crc` is the running
/// CRC of the partial block the append starts in, and is updated.
pub(crate) fn block_crcs(tail_crc: &mut u32, offset: u64, data: &[u8]) -> (u64, Vec<u32>) {
    let first_block = block_of(offset);
    let mut crcs = Vec::with_capacity(data.len() / BLOCK_SIZE as usize + 2);
    let mut pos = offset;
    let mut rest = data;
    let mut cur = *tail_crc;
    while !rest.is_empty() {
        let in_block = pos % BLOCK_SIZE;
        let n = ((BLOCK_SIZE - in_block) as usize).min(rest.len());
        let seed = if in_block == 0 { 0 } else { cur };
        cur = crc32c::crc32c_append(seed, &rest[..n]);
        crcs.push(cur);
        pos += n as u64;
        rest = &rest[n..];
    }
    *tail_crc = if pos.is_multiple_of(BLOCK_SIZE) {
        0
    } else {
        cur
    };
    (first_block, crcs)
}

fn publish(inner: &Inner, w: Work, batch: u64) {
    let handle = w.chunk.handle;
    let mut st = w.chunk.st.lock();
    if let Some(err) = &w.failed {
        // Nothing of this chunk's batch is acknowledged or logged: roll the queue back.
        tracing::error!(%handle, error = %err, poison = w.poison, "commit batch failed");
        if w.created {
            // Never visible; its file goes (a replay skips a Create that never became durable).
            let _ = inner.disk.remove_file(&w.chunk.data_path);
        }
        if w.poison {
            inner.poison(&mut st);
        }
        st.enqueued = st.meta.length;
        st.sealing = st.meta.sealed;
        if w.version.is_some() {
            st.versioning = None;
        }
        drop(st);
        inner.release(w.staged_bytes);
        for r in w.replies {
            match r {
                Reply::Commit(tx, ..) => drop(tx.send(Err(clone_err(err)))),
                Reply::Seal(tx, _) => drop(tx.send(Err(clone_err(err)))),
                Reply::Version(tx) | Reply::Created(tx) => drop(tx.send(Err(clone_err(err)))),
            }
        }
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
    for (op, rec) in &w.ops {
        // Never refused: offsets stay below the chunk size (under 4 GiB), and a chunk without
        // its table takes no appends (`stage` refuses them, `forget` drops what was staged).
        let recorded = st.meta.ops.insert(*op, *rec);
        debug_assert!(recorded, "op {op} of chunk {handle} not recorded");
    }
    if let Some(v) = w.version {
        // What a quorum was known to hold at the old version stays known (the master goes on
        // from a quorum's longest, which includes it), nothing more: this replica's reply to
        // the fence may not be among those the master decided from (lost, late, or a fence
        // that reached too few), so its own length says nothing (seed 268: an old primary's
        // tail, which it alone held, was shown at the new version). The new lease's primary
        // tells the rest (I3). Unknown stays unknown (seed 1645: a restarted primary, fenced
        // before the master sealed, answered readers 0 with a put's bytes on its disk), but
        // for an empty replica.
        let kept = match st.quorum_known {
            Some((known, l)) if known == st.meta.version => Some(l.min(st.meta.length)),
            _ => (st.meta.length == 0).then_some(0),
        };
        st.meta.version = v;
        st.versioning = None;
        st.quorum_known = kept.map(|l| (v, l));
    }
    if w.sealed && !st.meta.sealed {
        st.sealed_at = Some(Instant::now());
    }
    st.meta.sealed = w.sealed;
    st.meta.batch = batch;
    st.dirty = true;
    st.unsynced |= w.inline_data;
    drop(st);
    if w.created {
        inner.chunks.write().insert(handle, Arc::clone(&w.chunk));
    }
    inner.release(w.staged_bytes);
    inner.counters.commits.fetch_add(commits, Ordering::Relaxed);
    for r in w.replies {
        match r {
            Reply::Commit(tx, record, committed_len) => drop(tx.send(Ok(CommitInfo {
                record,
                committed_len,
            }))),
            Reply::Seal(tx, len) => drop(tx.send(Ok(len))),
            Reply::Version(tx) | Reply::Created(tx) => drop(tx.send(Ok(()))),
        }
    }
}

/// A copy of an error for each caller of a failed batch (I/O errors keep their kind and code).
fn clone_err(e: &StorageError) -> StorageError {
    let io = |source: &std::io::Error| match source.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(source.kind(), source.to_string()),
    };
    match e {
        StorageError::DiskFull { path, source }
        | StorageError::PermissionDenied { path, source }
        | StorageError::Io { path, source } => StorageError::io(path, io(source)),
        StorageError::Poisoned(h) => StorageError::Poisoned(*h),
        other => StorageError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// How often the committer sweeps expired staging when idle.
fn sweep_interval(cfg: &StoreConfig) -> Duration {
    (cfg.staging_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// How often the committer looks for op tables past their retention: a table lives at most
/// this much longer than `op_retention` (10 s for the default 10 minutes).
fn op_sweep_interval(cfg: &StoreConfig) -> Duration {
    (cfg.op_retention / 60).clamp(Duration::from_millis(10), Duration::from_secs(10))
}
