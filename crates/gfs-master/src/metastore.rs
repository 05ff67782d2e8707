//! The master's durable metadata: the namespace behind an operation log with group commit,
//! checkpoints, and recovery.
//!
//! A mutation is validated and applied in memory under the state lock, where it also gets its
//! sequence number and is queued for the log, so log order is apply order. One committer thread
//! writes every queued record and fsyncs once per batch; a mutation is answered only after its
//! record is durable. On a disk without threads (`Disk::threads`, a simulated disk) there is no
//! thread: each caller writes the batches queued before it waits, so a seed replays exactly. Reads wait until everything they can see is durable, so a crash never takes
//! back what a reader saw.
//!
//! Every `checkpoint_every` records the committer writes the whole state aside
//! (`checkpoint-<seq>.tmp`, fsync, rename, fsync the directory), starts a new log segment, and
//! removes older segments and checkpoints. Recovery = newest checkpoint + replay of the records
//! after it, in order (a gap in sequence numbers is an error). A torn tail of the last segment
//! is cut with a warning; a damaged record anywhere else is a startup error naming the file and
//! offset. Chunk locations are never persisted: heartbeats rebuild them.
//!
//! A segment's records are followed by zeros written ahead of them ([`SegmentTail`],
//! [`LOG_FILL`] at a time), so that most group commits write inside the file's size and their
//! `fdatasync` commits no new size through the file system's journal. A reader takes the zeros
//! after the last record for the segment's end; no record is all zeros (every frame names its
//! length).
//!
//! The data directory holds the log segments (`log-<first seq, 20 digits>`), the checkpoints
//! (`checkpoint-<seq, 20 digits>`; formats in `record.rs`), `LOCK` (a `flock`: one master per
//! directory) and `draining` (the servers being decommissioned, kept by `chunks::drain`).
//!
//! A failed write or fsync fails the log for good (every later mutation is refused) and cuts
//! the failed batch off the segment, so that a restart does not read back, from the page cache,
//! records whose callers were told they failed.
//!
//! A checkpoint holds exactly the state at the last *durable* record. Since mutations are
//! applied before their record is written, the in-memory state runs ahead of the log by the
//! records still queued; a checkpoint of that state would make them durable even if their
//! write then failed (and their callers were told so), or before they were answered at all.
//! So the committer captures the state under the state lock, where mutations are applied and
//! queued: holding it, every applied record is in the queue and none joins, so it writes what
//! is queued (one more group commit, under the lock) and then copies the namespace
//! (`to_checkpoint`, as before). If that write fails, no checkpoint is taken and the log is
//! failed as for any batch. Encoding and writing the checkpoint happen after the lock is
//! released. The cost is mutations (and reads) waiting for one fsync per checkpoint, every
//! `checkpoint_every` records; an undo log of queued operations (every `Op` would need an
//! inverse, `Delete{recursive}` a copy of the subtree), or applying only after the write
//! (validation would have to see queued-but-unapplied operations), would avoid that wait at far
//! more code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use gfs_util::crashsafe::{self, PathError};
use gfs_util::disk::{Disk, DiskFile, Open, OsDisk};
use gfs_util::framed::{self, ANY_LEN, FrameAt, Magic};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::error::{MasterError, Result};
use crate::namespace::Namespace;
use crate::record::{CHECKPOINT_MAGIC, Checkpoint, LOG_MAGIC, LogRecord, Op};

/// Tunables of the metadata store.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// Write a checkpoint after this many log records.
    pub checkpoint_every: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            checkpoint_every: 100_000,
        }
    }
}

struct State {
    ns: Namespace,
    next_seq: u64,
}

struct Queued {
    seq: u64,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<()>>,
}

/// Test-only ways to make the committer fail or wait at a chosen point.
#[cfg(test)]
#[derive(Default)]
struct Failpoints {
    /// Every log write from now on fails.
    fail_writes: AtomicBool,
    /// Run (once) by the committer when it starts a checkpoint.
    before_checkpoint: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// The namespace with its operation log in one directory: one master's.
struct LocalLog {
    state: Arc<Mutex<State>>,
    queue: Option<mpsc::Sender<Queued>>,
    durable: watch::Receiver<u64>,
    failed: Arc<AtomicBool>,
    committer: Option<Driver>,
    observer: Arc<std::sync::OnceLock<LogFsyncObserver>>,
    #[cfg(test)]
    failpoints: Arc<Failpoints>,
    _lock: Arc<dyn DiskFile>,
    disk: Arc<dyn Disk>,
}

/// Who runs the committer: its thread, or (on a disk without threads) the callers, each
/// running the batches queued before it waits.
enum Driver {
    Thread(JoinHandle<()>),
    /// The committer (`None` once it stopped on a failed log) and its queue.
    Inline(Mutex<(Option<Committer>, mpsc::Receiver<Queued>)>),
}

/// Hears how long each group commit of the operation log took (write and fsync).
pub type LogFsyncObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// The refusal of a group change on a single master.
fn no_group() -> MasterError {
    MasterError::InvalidArgument(
        "this master runs alone (no [raft]): it has no group of masters to change".into(),
    )
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> MasterError {
    MasterError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> MasterError {
    MasterError::CorruptLog {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn segment_name(start: u64) -> String {
    format!("log-{start:020}")
}

fn checkpoint_name(seq: u64) -> String {
    format!("checkpoint-{seq:020}")
}

/// The error of a crash-safe file step (`gfs_util::crashsafe`), on its path.
pub(crate) fn fs_error(e: PathError) -> MasterError {
    MasterError::Io {
        path: e.path,
        source: e.source,
    }
}

/// Replaces `path` with `bytes` durably: written aside (`<name>.tmp`), fsynced, renamed, and the
/// directory fsynced.
pub(crate) fn write_aside(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<()> {
    crashsafe::replace(disk, path, bytes).map_err(fs_error)
}

/// Creates an empty segment starting at `start` and opens it for appending.
fn new_segment(disk: &dyn Disk, dir: &Path, start: u64) -> Result<SegmentTail> {
    let path = dir.join(segment_name(start));
    write_aside(disk, &path, LOG_MAGIC)?;
    let f = disk.open(&path, Open::Write).map_err(|e| io(&path, e))?;
    Ok(SegmentTail::new(f, LOG_MAGIC.len() as u64))
}

/// Zeros a log segment is extended by at a time, written ahead of its records. The
/// chunkservers' WAL measured the gain on this kind of disk (three writers appending 4 KiB with
/// an `fdatasync` each: 3.4k/s each into growing files, 6.7k/s into files written ahead with
/// zeros) and the bound: the round that writes the zeros waits for them, and 256 KiB keeps it
/// short.
pub(crate) const LOG_FILL: usize = 256 * 1024;

/// The end of a log segment, where records are appended durably, each batch with one
/// `fdatasync`; zeros ([`LOG_FILL`]) are written after a batch that reaches past the last ones.
pub(crate) struct SegmentTail {
    file: Arc<dyn DiskFile>,
    /// The end of the records: where the next batch goes.
    len: u64,
    /// How far the file is known to hold records or zeros.
    filled: u64,
    /// Zeros could not be written (a disk too full for them): this segment goes on without.
    fill_failed: bool,
}

impl SegmentTail {
    /// The tail of `file`, whose records end at `len` and are all it holds.
    pub(crate) fn new(file: Arc<dyn DiskFile>, len: u64) -> SegmentTail {
        SegmentTail {
            file,
            len,
            filled: len,
            fill_failed: false,
        }
    }

    /// The tail of a segment read back ([`segment_frames`]), whose records end at `len` and
    /// are followed by nothing but zeros.
    pub(crate) fn reopen(file: Arc<dyn DiskFile>, len: u64) -> std::io::Result<SegmentTail> {
        let mut tail = SegmentTail::new(file, len);
        tail.filled = tail.file.len()?.max(len);
        Ok(tail)
    }

    /// Writes `records` (whole frames) after the last ones and fsyncs them.
    pub(crate) fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(records, self.len)?;
        let end = self.len + records.len() as u64;
        if end > self.filled && !self.fill_failed {
            self.fill(end);
        }
        self.file.sync_data()?;
        self.len = end;
        Ok(())
    }

    /// Writes zeros past the records that end at `end`, fsynced with them. Only a speed-up:
    /// on a failure the space goes back and the segment goes on without, so a disk too full
    /// for the zeros still takes the records (as the chunkservers' WAL does).
    fn fill(&mut self, end: u64) {
        match self.file.write_all_at(&[0u8; LOG_FILL], end) {
            Ok(()) => self.filled = end + LOG_FILL as u64,
            Err(e) => {
                tracing::warn!(error = %e, "a log segment goes on without zeros ahead");
                let _ = self.file.set_len(end);
                self.fill_failed = true;
            }
        }
    }

    /// Cuts the file back to the records appended durably, after an append failed: its
    /// records may sit in the page cache, and a restart must not read them back.
    pub(crate) fn cut(&mut self) -> std::io::Result<()> {
        self.filled = self.len;
        self.file.set_len(self.len)?;
        self.file.sync_data()
    }
}

/// Files of the directory with a numeric suffix after `prefix`, sorted by that number.
pub(crate) fn numbered(disk: &dyn Disk, dir: &Path, prefix: &str) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in disk.read_dir(dir).map_err(|e| io(dir, e))? {
        let Some(name) = e.name() else { continue };
        if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse().ok()) {
            out.push((n, e.path));
        }
    }
    out.sort();
    Ok(out)
}

/// A segment's bytes, and each frame's offset and payload range in them.
pub(crate) type SegmentFrames = (Vec<u8>, Vec<(usize, std::ops::Range<usize>)>);

/// The bytes of log segment `path` (headed by `magic`) up to the end of its records (zeros
/// after them were written ahead), and its frames' payloads in order, each with its offset. A
/// torn tail of the newest segment (`newest`) is cut, with a warning, and so
/// is a header cut short; damage anywhere else is an error naming the file and offset.
pub(crate) fn segment_frames(
    disk: &dyn Disk,
    path: &Path,
    magic: &Magic,
    newest: bool,
) -> Result<SegmentFrames> {
    let mut bytes = disk.read(path).map_err(|e| io(path, e))?;
    if newest && bytes.len() < magic.len() && magic.starts_with(&bytes) {
        // The newest segment cut inside its header: no records; restore the header so
        // appends land after it.
        tracing::warn!(file = %path.display(), "log segment cut inside its header");
        write_aside(disk, path, magic)?;
        bytes = magic.to_vec();
    }
    if !bytes.starts_with(magic) {
        let name = String::from_utf8_lossy(magic);
        return Err(corrupt(path, 0, format!("not a {name} log segment")));
    }
    // Zeros written ahead of the records ([`SegmentTail`]) end the segment: no frame is all
    // zeros, so a frame starts before the last byte that is not.
    let records_end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
        .max(magic.len());
    let mut frames = Vec::new();
    let mut pos = magic.len();
    loop {
        if pos >= records_end {
            bytes.truncate(pos);
            break;
        }
        let at = match framed::frame_at(&bytes, pos, ANY_LEN) {
            // Eight zeros read as a frame of nothing, which no writer makes: zeros written
            // ahead where a torn batch's first pages never reached the disk. What follows
            // them decides, as for any bad frame.
            FrameAt::Ok([], _) => FrameAt::Bad {
                next: bytes[pos..].iter().position(|&b| b != 0).map(|i| pos + i),
            },
            at => at,
        };
        match at {
            FrameAt::End => break,
            FrameAt::Ok(p, next) => {
                frames.push((pos, next - p.len()..next));
                pos = next;
            }
            FrameAt::Bad { next } => {
                let more = next.is_some_and(|n| {
                    n < records_end
                        && matches!(framed::frame_at(&bytes, n, ANY_LEN), FrameAt::Ok(p, _) if !p.is_empty())
                });
                if newest && !more {
                    tracing::warn!(file = %path.display(), offset = pos, "cutting a torn log tail");
                    cut_at(disk, path, pos)?;
                    bytes.truncate(pos);
                    break;
                }
                return Err(corrupt(path, pos as u64, "damaged record inside the log"));
            }
        }
    }
    Ok((bytes, frames))
}

/// Cuts the segment at `path` to its first `len` bytes, durably.
fn cut_at(disk: &dyn Disk, path: &Path, len: usize) -> Result<()> {
    let f = disk.open(path, Open::Write).map_err(|e| io(path, e))?;
    f.set_len(len as u64)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(path, e))
}

struct Recovered {
    ns: Namespace,
    last_seq: u64,
    segment: SegmentTail,
    segment_path: PathBuf,
}

fn recover(disk: &dyn Disk, dir: &Path) -> Result<Recovered> {
    for e in disk.read_dir(dir).map_err(|e| io(dir, e))? {
        let p = e.path;
        if p.extension().is_some_and(|x| x == "tmp") {
            disk.remove_file(&p).map_err(|e| io(&p, e))?;
        }
    }
    let (mut ns, base) = match numbered(disk, dir, "checkpoint-")?.pop() {
        Some((seq, path)) => {
            let bytes = disk.read(&path).map_err(|e| io(&path, e))?;
            if !bytes.starts_with(CHECKPOINT_MAGIC) {
                return Err(corrupt(&path, 0, "not a GFSMCKP1 checkpoint"));
            }
            let FrameAt::Ok(payload, _) = framed::frame_at(&bytes, CHECKPOINT_MAGIC.len(), ANY_LEN)
            else {
                return Err(corrupt(&path, 8, "damaged checkpoint frame"));
            };
            let ckpt = Checkpoint::decode(payload)
                .map_err(|e| corrupt(&path, 8, format!("undecodable checkpoint: {e}")))?;
            if ckpt.seq != seq {
                return Err(corrupt(
                    &path,
                    8,
                    "checkpoint sequence does not match its name",
                ));
            }
            (Namespace::from_checkpoint(ckpt), seq)
        }
        None => (Namespace::new(), 0),
    };
    let segments = numbered(disk, dir, "log-")?;
    let mut last_seq = base;
    let count = segments.len();
    let mut records_end = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        let (bytes, frames) = segment_frames(disk, path, LOG_MAGIC, i + 1 == count)?;
        records_end = bytes.len() as u64;
        for (pos, range) in frames {
            let rec = LogRecord::decode(&bytes[range])
                .map_err(|e| corrupt(path, pos as u64, format!("undecodable record: {e}")))?;
            if rec.seq > base {
                if rec.seq != last_seq + 1 {
                    return Err(corrupt(
                        path,
                        pos as u64,
                        format!("record {} follows {last_seq}: records are missing", rec.seq),
                    ));
                }
                let op = rec
                    .op
                    .ok_or_else(|| corrupt(path, pos as u64, "a record without an operation"))?;
                ns.apply(&op).map_err(|e| {
                    corrupt(
                        path,
                        pos as u64,
                        format!("record {} does not apply: {e}", rec.seq),
                    )
                })?;
                last_seq = rec.seq;
            }
        }
    }
    let (segment, segment_path) = match segments.last() {
        Some((_, path)) => {
            let f = disk.open(path, Open::Write).map_err(|e| io(path, e))?;
            let tail = SegmentTail::reopen(f, records_end).map_err(|e| io(path, e))?;
            (tail, path.clone())
        }
        None => (
            new_segment(disk, dir, base + 1)?,
            dir.join(segment_name(base + 1)),
        ),
    };
    Ok(Recovered {
        ns,
        last_seq,
        segment,
        segment_path,
    })
}

impl LocalLog {
    fn open_on(disk: Arc<dyn Disk>, dir: impl AsRef<Path>, cfg: MetaConfig) -> Result<LocalLog> {
        let dir = dir.as_ref().to_path_buf();
        disk.create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = disk
            .open(&lock_path, Open::Create)
            .map_err(|e| io(&lock_path, e))?;
        if !lock.try_lock().map_err(|e| io(&lock_path, e))? {
            return Err(MasterError::Locked(dir));
        }
        let rec = recover(&*disk, &dir)?;
        tracing::info!(dir = %dir.display(), seq = rec.last_seq, chunks = rec.ns.chunk_count(), "metadata recovered");
        let state = Arc::new(Mutex::new(State {
            ns: rec.ns,
            next_seq: rec.last_seq + 1,
        }));
        let (durable_tx, durable) = watch::channel(rec.last_seq);
        let failed = Arc::new(AtomicBool::new(false));
        let (queue, rx) = mpsc::channel();
        let mut committer = Committer {
            disk: Arc::clone(&disk),
            dir: dir.clone(),
            cfg,
            state: Arc::clone(&state),
            durable: durable_tx,
            failed: Arc::clone(&failed),
            segment: rec.segment,
            segment_path: rec.segment_path,
            since_checkpoint: 0,
            observer: Arc::new(std::sync::OnceLock::new()),
            #[cfg(test)]
            failpoints: Arc::default(),
        };
        let observer = Arc::clone(&committer.observer);
        #[cfg(test)]
        let failpoints = Arc::clone(&committer.failpoints);
        let driver = if committer.disk.threads() {
            Driver::Thread(
                std::thread::Builder::new()
                    .name("gfs-oplog".into())
                    .spawn(move || committer.run(rx))
                    .map_err(|e| io(&dir, e))?,
            )
        } else {
            Driver::Inline(Mutex::new((Some(committer), rx)))
        };
        Ok(LocalLog {
            state,
            queue: Some(queue),
            durable,
            failed,
            committer: Some(driver),
            observer,
            #[cfg(test)]
            failpoints,
            _lock: lock,
            disk,
        })
    }

    fn on_fsync(&self, observer: LogFsyncObserver) {
        let _ = self.observer.set(observer);
    }

    async fn mutate(&self, op: Op) -> Result<Vec<u64>> {
        // Applied and queued under one lock, so that the log's order is the namespace's.
        let queued = {
            let mut st = self.state.lock();
            if self.failed.load(Ordering::Acquire) {
                return Err(MasterError::LogFailed);
            }
            match st.ns.apply(&op) {
                Err(refused) => Err((refused, st.next_seq - 1)),
                Ok(removed) => {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    let rec = LogRecord { seq, op: Some(op) };
                    let mut bytes = Vec::with_capacity(rec.encoded_len() + 8);
                    framed::frame(&rec.encode_to_vec(), &mut bytes);
                    let (reply, rx) = oneshot::channel();
                    let sent = self
                        .queue
                        .as_ref()
                        .ok_or(MasterError::LogFailed)?
                        .send(Queued { seq, bytes, reply });
                    if sent.is_err() {
                        self.failed.store(true, Ordering::Release);
                        return Err(MasterError::LogFailed);
                    }
                    Ok((rx, removed))
                }
            }
        };
        let (rx, removed) = match queued {
            Ok(queued) => queued,
            Err((refused, needed)) => {
                // Refused by what the namespace holds (a name taken, a file gone): answered
                // once that is durable, as a read's answer is, since the mutation that made it
                // may still be lost with this master.
                self.wait_durable(needed).await?;
                return Err(refused);
            }
        };
        self.drive_soon().await;
        rx.await.map_err(|_| MasterError::LogFailed)??;
        Ok(removed)
    }

    /// [`MetaStore::drive`] once the disk's latency has passed: on a simulated disk a group
    /// commit takes time, and the mutations queued meanwhile join it.
    async fn drive_soon(&self) {
        let takes = self.disk.latency();
        if !takes.is_zero() {
            tokio::time::sleep(takes).await;
        }
        self.drive();
    }

    /// Writes what is queued, when the committer has no thread (a no-op otherwise). Called
    /// with no lock held.
    fn drive(&self) {
        if let Some(Driver::Inline(c)) = &self.committer
            && let Some(mut c) = c.try_lock()
        {
            let (committer, rx) = &mut *c;
            if let Some(run) = committer.as_mut()
                && !run.drain(rx)
            {
                *committer = None;
            }
        }
    }

    async fn read<T>(&self, f: impl FnOnce(&Namespace) -> T) -> Result<T> {
        let (out, needed) = {
            let st = self.state.lock();
            (f(&st.ns), st.next_seq - 1)
        };
        self.wait_durable(needed).await?;
        Ok(out)
    }

    /// Waits until the record `needed` (and so every one before it) is durable.
    async fn wait_durable(&self, needed: u64) -> Result<()> {
        if needed > self.durable_seq() {
            self.drive_soon().await;
        }
        let mut durable = self.durable.clone();
        durable
            .wait_for(|d| *d >= needed)
            .await
            .map_err(|_| MasterError::LogFailed)?;
        Ok(())
    }

    fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }
}

/// The namespace and chunk map behind their operation log: one master's own log, or the log
/// the masters replicate by Raft ([`crate::raft`]). Either way a mutation is answered once it
/// is durable (on this master's disk, or on a majority of masters'), and a read sees only
/// what is.
pub struct MetaStore {
    backend: Backend,
    disk: Arc<dyn Disk>,
}

enum Backend {
    Local(Box<LocalLog>),
    Replicated(crate::raft::Replicated),
}

impl MetaStore {
    /// Opens (creating if needed) one master's metadata in `dir`, recovering it from the
    /// newest checkpoint and the log, and starts the committer thread.
    pub fn open(dir: impl AsRef<Path>, cfg: MetaConfig) -> Result<MetaStore> {
        MetaStore::open_on(OsDisk::shared(), dir, cfg)
    }

    /// [`MetaStore::open`] on `disk` (the operating system's, or a simulated one).
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: impl AsRef<Path>,
        cfg: MetaConfig,
    ) -> Result<MetaStore> {
        let log = LocalLog::open_on(Arc::clone(&disk), dir, cfg)?;
        Ok(MetaStore {
            backend: Backend::Local(Box::new(log)),
            disk,
        })
    }

    /// The metadata the masters replicate by Raft, as this master's `replicated` sees it
    /// (its other files stay on `disk`).
    pub fn replicated(replicated: crate::raft::Replicated, disk: Arc<dyn Disk>) -> MetaStore {
        MetaStore {
            backend: Backend::Replicated(replicated),
            disk,
        }
    }

    /// Sets what hears of each log group commit's duration (once; later calls are ignored;
    /// the replicated log has none of its own).
    pub fn on_fsync(&self, observer: LogFsyncObserver) {
        if let Backend::Local(l) = &self.backend {
            l.on_fsync(observer);
        }
    }

    /// Adds master `id` at `addr` to the replicated group: a learner until it holds the log,
    /// then a voter. A single master has no group to add to.
    pub async fn add_master(&self, id: u64, addr: String) -> Result<()> {
        match &self.backend {
            Backend::Local(_) => Err(no_group()),
            Backend::Replicated(r) => r.add_master(id, addr).await,
        }
    }

    /// Removes master `id` from the replicated group.
    pub async fn remove_master(&self, id: u64) -> Result<()> {
        match &self.backend {
            Backend::Local(_) => Err(no_group()),
            Backend::Replicated(r) => r.remove_master(id).await,
        }
    }

    /// Every master of a replicated group as this one (the leader) sees it; empty for a single
    /// master.
    pub fn masters(&self) -> Vec<crate::report::MasterStatus> {
        match &self.backend {
            Backend::Local(_) => Vec::new(),
            Backend::Replicated(r) => r.masters(),
        }
    }

    /// Applies `op` and returns once it is durable; returns the chunks a delete removed. On a
    /// master that does not lead the replicated log: `NotLeader`, naming the leader if known.
    pub async fn mutate(&self, op: Op) -> Result<Vec<u64>> {
        match &self.backend {
            Backend::Local(l) => l.mutate(op).await,
            Backend::Replicated(r) => r.mutate(op).await,
        }
    }

    /// Runs `f` on the namespace once everything it can see is durable.
    pub async fn read<T>(&self, f: impl FnOnce(&Namespace) -> T) -> Result<T> {
        match &self.backend {
            Backend::Local(l) => l.read(f).await,
            Backend::Replicated(r) => Ok(r.read(f)),
        }
    }

    /// Runs `f` on the namespace as it is now, what is not durable yet included: only for a
    /// decision that ends in a mutation before anyone hears of it (the log is durable as a
    /// prefix, so once that mutation is, so is all it saw), or that answers only with an error
    /// to try again. A [`MetaStore::read`] under load waits for the group commit in progress and
    /// often the next one; a decision made of several reads waited for each.
    pub fn peek<T>(&self, f: impl FnOnce(&Namespace) -> T) -> T {
        match &self.backend {
            Backend::Local(l) => f(&l.state.lock().ns),
            Backend::Replicated(r) => r.read(f),
        }
    }

    /// The disk the metadata lives on (the master's other files go there too).
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// The sequence number of the newest durable record (the replicated log: of the newest
    /// entry applied here).
    pub fn durable_seq(&self) -> u64 {
        match &self.backend {
            Backend::Local(l) => l.durable_seq(),
            Backend::Replicated(r) => r.applied(),
        }
    }

    /// The local log, for tests that make it fail.
    #[cfg(test)]
    fn local(&self) -> &LocalLog {
        match &self.backend {
            Backend::Local(l) => l,
            Backend::Replicated(_) => panic!("not a local log"),
        }
    }
}

impl Drop for LocalLog {
    fn drop(&mut self) {
        // Closing the queue lets the committer write what is queued, checkpoint, and exit.
        self.queue.take();
        match self.committer.take() {
            Some(Driver::Thread(t)) => {
                let _ = t.join();
            }
            Some(Driver::Inline(c)) => {
                let (committer, rx) = c.into_inner();
                if let Some(mut committer) = committer
                    && committer.drain(&rx)
                {
                    committer.close(&rx);
                }
            }
            None => {}
        }
    }
}

struct Committer {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    cfg: MetaConfig,
    state: Arc<Mutex<State>>,
    durable: watch::Sender<u64>,
    failed: Arc<AtomicBool>,
    segment: SegmentTail,
    segment_path: PathBuf,
    since_checkpoint: u64,
    observer: Arc<std::sync::OnceLock<LogFsyncObserver>>,
    #[cfg(test)]
    failpoints: Arc<Failpoints>,
}

impl Committer {
    /// The committer thread: a batch of everything queued at once, then a checkpoint when
    /// due; a last checkpoint when the queue closes.
    fn run(&mut self, rx: mpsc::Receiver<Queued>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            if !self.batch(batch, &rx) {
                return;
            }
        }
        self.close(&rx);
    }

    /// Without a thread: batches of what is queued until nothing is, in the caller's task;
    /// false once the log failed (the committer must stop).
    fn drain(&mut self, rx: &mpsc::Receiver<Queued>) -> bool {
        loop {
            let batch: Vec<Queued> = rx.try_iter().collect();
            if batch.is_empty() {
                return true;
            }
            if !self.batch(batch, rx) {
                return false;
            }
        }
    }

    /// One group commit and, when due, a checkpoint; false once the log failed.
    fn batch(&mut self, batch: Vec<Queued>, rx: &mpsc::Receiver<Queued>) -> bool {
        if !self.commit(batch) {
            return false;
        }
        self.since_checkpoint < self.cfg.checkpoint_every || self.checkpoint_or_log(rx)
    }

    /// The last act when the store closes: a checkpoint of what the log holds beyond the last.
    fn close(&mut self, rx: &mpsc::Receiver<Queued>) {
        if self.since_checkpoint > 0 {
            self.checkpoint_or_log(rx);
        }
    }

    /// Writes `batch` with one fsync and answers its callers; false if the write failed (the
    /// log is then failed for good and the committer must stop).
    fn commit(&mut self, batch: Vec<Queued>) -> bool {
        let mut buf = Vec::with_capacity(batch.iter().map(|q| q.bytes.len()).sum());
        for q in &batch {
            buf.extend_from_slice(&q.bytes);
        }
        let started = std::time::Instant::now();
        let written = self.write(&buf);
        if let Some(observe) = self.observer.get() {
            observe(started.elapsed());
        }
        match written {
            Ok(()) => {
                self.since_checkpoint += batch.len() as u64;
                let last = batch.last().map(|q| q.seq).unwrap_or(0);
                self.durable.send_replace(last);
                for q in batch {
                    let _ = q.reply.send(Ok(()));
                }
                true
            }
            Err(e) => {
                // The in-memory state is ahead of the disk: refuse everything from now on.
                tracing::error!(error = %e, file = %self.segment_path.display(), "operation log write failed");
                self.failed.store(true, Ordering::Release);
                // Cut the failed records off: after a failed fsync they may sit in the page
                // cache, and a restart (no power loss needed) would read them back although
                // their callers are told they failed.
                if let Err(c) = self.segment.cut() {
                    tracing::error!(error = %c, file = %self.segment_path.display(), "cannot cut the failed records off the log: they may come back at the next start");
                }
                for q in batch {
                    let _ = q.reply.send(Err(io(
                        &self.segment_path,
                        std::io::Error::new(e.kind(), e.to_string()),
                    )));
                }
                false
            }
        }
    }

    /// Appends `buf` to the segment and fsyncs it.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self.failpoints.fail_writes.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected log write failure"));
        }
        self.segment.append(buf)
    }

    /// Takes a checkpoint; a failure to write it is logged (the log keeps everything). False if
    /// the log itself failed on the way, and the committer must stop.
    fn checkpoint_or_log(&mut self, rx: &mpsc::Receiver<Queued>) -> bool {
        #[cfg(test)]
        {
            let hook = self.failpoints.before_checkpoint.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        let Some(ckpt) = self.capture(rx) else {
            return false;
        };
        if let Err(e) = self.checkpoint(ckpt) {
            tracing::error!(error = %e, "checkpoint failed; the log keeps everything");
        }
        true
    }

    /// The state exactly at the last durable record; `None` if the log failed on the way.
    ///
    /// Mutations are applied and queued under the state lock, so while the committer holds it
    /// every applied record is in the queue and no new one joins: the records still queued are
    /// written (one group commit, under the lock) and then the state is the durable state.
    fn capture(&mut self, rx: &mpsc::Receiver<Queued>) -> Option<Checkpoint> {
        let state = Arc::clone(&self.state);
        let st = state.lock();
        let pending: Vec<Queued> = rx.try_iter().collect();
        if !pending.is_empty() && !self.commit(pending) {
            return None;
        }
        let seq = st.next_seq - 1;
        debug_assert_eq!(seq, *self.durable.borrow(), "applied records not durable");
        Some(st.ns.to_checkpoint(seq))
    }

    /// Writes `ckpt` aside, starts a new segment, and drops what the checkpoint covers.
    fn checkpoint(&mut self, ckpt: Checkpoint) -> Result<()> {
        let seq = ckpt.seq;
        let mut bytes = CHECKPOINT_MAGIC.to_vec();
        framed::frame(&ckpt.encode_to_vec(), &mut bytes);
        let path = self.dir.join(checkpoint_name(seq));
        write_aside(&*self.disk, &path, &bytes)?;
        // Every record applied so far has seq <= `seq` and is written: older segments are
        // covered, and the new segment gets only later records.
        self.segment = new_segment(&*self.disk, &self.dir, seq + 1)?;
        self.segment_path = self.dir.join(segment_name(seq + 1));
        self.since_checkpoint = 0;
        for (n, old) in numbered(&*self.disk, &self.dir, "log-")? {
            if n < seq + 1 {
                self.disk.remove_file(&old).map_err(|e| io(&old, e))?;
            }
        }
        for (n, old) in numbered(&*self.disk, &self.dir, "checkpoint-")? {
            if n < seq {
                self.disk.remove_file(&old).map_err(|e| io(&old, e))?;
            }
        }
        crashsafe::sync_dir(&*self.disk, &self.dir).map_err(fs_error)?;
        tracing::info!(seq, bytes = bytes.len(), "checkpoint written");
        Ok(())
    }
}

#[cfg(test)]
#[path = "metastore_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::record::CreateOp;

    fn create(p: &str) -> Op {
        Op::Create(CreateOp {
            path: p.into(),
            mtime_ms: 1,
            replication: 3,
        })
    }

    /// A mutation refused by what the namespace holds (here a name taken) is answered once
    /// that is durable, as a read is: the mutation that made it may still be lost with the
    /// master, and the caller would have seen a namespace that never was.
    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_answered_once_what_refused_it_is_durable() {
        let sim = gfs_util::disk::sim::SimDisk::new(5);
        sim.set_latency(Duration::from_millis(10));
        let store = MetaStore::open_on(sim.shared(), "/m", MetaConfig::default()).unwrap();
        let before = store.durable_seq();
        // /a is applied in memory and queued by its first poll, not yet durable.
        let mut a = Box::pin(store.mutate(create("/a")));
        assert!(futures::poll!(&mut a).is_pending());
        assert_eq!(store.durable_seq(), before);
        let refused = store.mutate(create("/a")).await;
        assert!(
            matches!(refused, Err(MasterError::AlreadyExists(_))),
            "{refused:?}"
        );
        assert!(
            store.durable_seq() > before,
            "refused before what refused it was durable"
        );
        a.await.unwrap();
    }

    /// Zeros written ahead are only a speed-up: a disk with room for the records but not for
    /// the zeros takes the records, and the log goes on (it once failed for good there).
    #[tokio::test]
    async fn a_disk_too_full_for_the_zeros_still_takes_the_records() {
        let sim = gfs_util::disk::sim::SimDisk::new(7);
        let store = MetaStore::open_on(sim.shared(), "/m", MetaConfig::default()).unwrap();
        let used: u64 = sim
            .files()
            .iter()
            .filter_map(|f| sim.with_current(f, |b| b.len() as u64))
            .sum();
        sim.set_capacity(Some(used + 16 * 1024));
        for i in 0..20 {
            store.mutate(create(&format!("/f{i}"))).await.unwrap();
        }
        drop(store);
        sim.set_capacity(None);
        sim.crash();
        let store = MetaStore::open_on(sim.shared(), "/m", MetaConfig::default()).unwrap();
        let n = store.read(|ns| ns.list("/").unwrap().len()).await.unwrap();
        assert_eq!(n, 20);
    }

    /// Finding 15: a mutation still in the queue when a checkpoint is taken must not be made
    /// durable by that checkpoint if writing its record then fails.
    #[tokio::test]
    async fn a_mutation_whose_log_write_fails_is_not_in_a_concurrent_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(
            dir.path(),
            MetaConfig {
                checkpoint_every: 1,
            },
        )
        .unwrap();
        // Hold the committer at the start of the checkpoint that follows /a.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        *store.local().failpoints.before_checkpoint.lock() = Some(Box::new(move || {
            let _ = entered_tx.send(());
            let _ = go_rx.recv();
        }));
        store.mutate(create("/a")).await.unwrap();
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // /b is applied in memory and queued (its first poll does both), not yet written.
        let b = store.mutate(create("/b"));
        let mut b = Box::pin(b);
        assert!(futures::poll!(&mut b).is_pending());
        // Its write will fail; let the checkpoint go on meanwhile.
        store
            .local()
            .failpoints
            .fail_writes
            .store(true, Ordering::Release);
        go_tx.send(()).unwrap();
        assert!(b.await.is_err(), "/b was answered with success");
        drop(store);

        let store = MetaStore::open(dir.path(), MetaConfig::default()).unwrap();
        store
            .read(|ns| ns.stat("/a").map(|_| ()))
            .await
            .unwrap()
            .unwrap();
        let b = store.read(|ns| ns.stat("/b").is_ok()).await.unwrap();
        assert!(
            !b,
            "/b was answered with an error but is durable after a restart"
        );
    }
}
