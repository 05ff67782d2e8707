//! The durable Raft log of one master (format: `super::codec`; durability: `crate::raft`).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gfs_util::crashsafe;
use gfs_util::disk::{Disk, DiskFile, Open};
use gfs_util::framed::{self, ANY_LEN, FrameAt};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, Vote};
use parking_lot::Mutex;
use prost::Message;

use super::codec::{
    EntryRecord, LogFileOp, LogFileRecord, LogIdRecord, RAFT_LOG_MAGIC, VOTE_MAGIC, VoteRecord,
};
use super::{RaftStorageError, TypeConfig};
use crate::error::Result;
use crate::metastore::{SegmentTail, corrupt, fs_error, io, numbered, segment_frames};

/// The vote file's name.
const VOTE_FILE: &str = "raft-vote";
/// Held (`flock`) while a process has the log open: one master per directory.
const LOCK_FILE: &str = "raft.lock";
/// Log segments are `raft-log-<number, 20 digits>`.
const SEGMENT_PREFIX: &str = "raft-log-";

fn segment_name(no: u64) -> String {
    format!("{SEGMENT_PREFIX}{no:020}")
}

/// The Raft log of one master, in one directory; clones share it (Raft reads entries through
/// a clone while it appends through another).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Log>>,
    /// Writes run on the log's own thread (a disk with threads) or inline (a simulated disk,
    /// so that a seed replays exactly).
    writer: Option<std::sync::mpsc::Sender<Job>>,
}

/// Work for the log's thread.
type Job = Box<dyn FnOnce() + Send>;

/// Starts the thread that runs a log's writes; it ends once every sender is dropped.
fn writer_thread() -> std::io::Result<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("gfs-raft-log".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
    Ok(tx)
}

struct Log {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    segment: SegmentTail,
    segment_no: u64,
    /// Every entry not purged, by index.
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    /// Why the log takes no more writes (a write or fsync failed: what it covered is unknown).
    failed: Option<String>,
    /// The directory's lock, held while the log is open.
    _lock: Arc<dyn DiskFile>,
}

fn log_error(verb: ErrorVerb, e: std::io::Error) -> RaftStorageError {
    StorageError::from_io_error(ErrorSubject::Logs, verb, e)
}

fn failed_error(why: &str) -> std::io::Error {
    std::io::Error::other(format!(
        "the Raft log failed earlier ({why}); restart the master"
    ))
}

/// One framed segment record.
fn framed_record(op: LogFileOp, out: &mut Vec<u8>) {
    let rec = LogFileRecord { op: Some(op) };
    framed::frame(&rec.encode_to_vec(), out);
}

impl LogStore {
    /// Opens (creating if needed) the Raft log in `dir` on `disk`: the vote, and the newest
    /// segment replayed (a torn tail cut). `Locked` while another process has it open.
    pub fn open_on(disk: Arc<dyn Disk>, dir: impl AsRef<Path>) -> Result<LogStore> {
        let dir = dir.as_ref().to_path_buf();
        disk.create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = disk
            .open(&lock_path, Open::Create)
            .map_err(|e| io(&lock_path, e))?;
        if !lock.try_lock().map_err(|e| io(&lock_path, e))? {
            return Err(crate::MasterError::Locked(dir));
        }
        for e in disk.read_dir(&dir).map_err(|e| io(&dir, e))? {
            let name = e.name().unwrap_or_default();
            if name.starts_with("raft-") && name.ends_with(".tmp") {
                disk.remove_file(&e.path).map_err(|err| io(&e.path, err))?;
            }
        }
        let vote = read_vote(&*disk, &dir.join(VOTE_FILE))?;
        let mut segments = numbered(&*disk, &dir, SEGMENT_PREFIX)?;
        let (segment_no, path) = match segments.pop() {
            Some(newest) => newest,
            None => {
                let path = dir.join(segment_name(1));
                crashsafe::replace(&*disk, &path, RAFT_LOG_MAGIC).map_err(fs_error)?;
                (1, path)
            }
        };
        // Older segments were replaced by a rewrite that completed (it is renamed into place
        // whole) before they were removed.
        for (_, old) in segments {
            disk.remove_file(&old).map_err(|e| io(&old, e))?;
        }
        let (bytes, frames) = segment_frames(&*disk, &path, RAFT_LOG_MAGIC, true)?;
        let mut entries = BTreeMap::new();
        let mut last_purged: Option<LogId<u64>> = None;
        for (pos, range) in frames {
            let rec = LogFileRecord::decode(&bytes[range])
                .map_err(|e| corrupt(&path, pos as u64, format!("undecodable record: {e}")))?;
            match rec.op {
                Some(LogFileOp::Entry(e)) => {
                    let entry = Entry::<TypeConfig>::try_from(&e)
                        .map_err(|why| corrupt(&path, pos as u64, why))?;
                    entries.insert(entry.log_id.index, entry);
                }
                Some(LogFileOp::TruncateFrom(index)) => {
                    entries.split_off(&index);
                }
                Some(LogFileOp::Purged(id)) => {
                    let id = LogId::from(&id);
                    entries = entries.split_off(&(id.index + 1));
                    last_purged = Some(id);
                }
                None => return Err(corrupt(&path, pos as u64, "a record that records nothing")),
            }
        }
        let segment = disk.open(&path, Open::Write).map_err(|e| io(&path, e))?;
        let segment = SegmentTail::reopen(segment, bytes.len() as u64).map_err(|e| io(&path, e))?;
        tracing::info!(dir = %dir.display(), entries = entries.len(), last_purged = ?last_purged.map(|l| l.index), "Raft log recovered");
        let writer = match disk.threads() {
            true => Some(writer_thread().map_err(|e| io(&dir, e))?),
            false => None,
        };
        Ok(LogStore {
            writer,
            inner: Arc::new(Mutex::new(Log {
                disk,
                dir,
                segment,
                segment_no,
                entries,
                last_purged,
                vote,
                failed: None,
                _lock: lock,
            })),
        })
    }

    /// Runs `f` on the log: on the log's own thread when the disk has threads (its writes
    /// and fsyncs would stall the runtime; a thread of its own wakes sooner than the blocking
    /// pool's, measured), inline otherwise.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Log) -> T + Send + 'static) -> T {
        let Some(writer) = &self.writer else {
            return f(&mut self.inner.lock());
        };
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The log is let go before the answer: a caller that drops the store on it and
            // opens the directory again finds it unlocked.
            let work = move || f(&mut inner.lock());
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(out);
        });
        if writer.send(job).is_err() {
            panic!("the Raft log's thread is gone");
        }
        match rx.await {
            Ok(Ok(t)) => t,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the Raft log's thread is gone"),
        }
    }
}

/// The vote in `path`, if one was saved.
fn read_vote(disk: &dyn Disk, path: &Path) -> Result<Option<Vote<u64>>> {
    if !disk.exists(path) {
        return Ok(None);
    }
    let bytes = disk.read(path).map_err(|e| io(path, e))?;
    if !bytes.starts_with(VOTE_MAGIC) {
        return Err(corrupt(path, 0, "not a GFSRVOT1 vote file"));
    }
    let FrameAt::Ok(payload, _) = framed::frame_at(&bytes, VOTE_MAGIC.len(), ANY_LEN) else {
        return Err(corrupt(path, VOTE_MAGIC.len() as u64, "damaged vote frame"));
    };
    let rec = VoteRecord::decode(payload).map_err(|e| {
        corrupt(
            path,
            VOTE_MAGIC.len() as u64,
            format!("undecodable vote: {e}"),
        )
    })?;
    Ok(Some(Vote::from(&rec)))
}

impl Log {
    /// Appends `bytes` (whole records) to the segment and fsyncs it; a failure cuts them off
    /// again (so that a restart does not read back from the page cache what Raft was told
    /// failed) and fails the log for good.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(failed_error(why));
        }
        if let Err(e) = self.segment.append(bytes) {
            tracing::error!(dir = %self.dir.display(), error = %e, "writing the Raft log failed: it takes no more writes");
            let _ = self.segment.cut();
            self.failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the segment with a new one holding the purge mark and every entry left,
    /// written aside and renamed into place, then removes the old one.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut bytes = RAFT_LOG_MAGIC.to_vec();
        if let Some(p) = &self.last_purged {
            framed_record(LogFileOp::Purged(LogIdRecord::from(p)), &mut bytes);
        }
        for e in self.entries.values() {
            framed_record(LogFileOp::Entry(EntryRecord::from(e)), &mut bytes);
        }
        let no = self.segment_no + 1;
        let path = self.dir.join(segment_name(no));
        let old = self.dir.join(segment_name(self.segment_no));
        let opened = crashsafe::replace(&*self.disk, &path, &bytes)
            .map_err(|e| e.source)
            .and_then(|_| self.disk.open(&path, Open::Write));
        let segment = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "rewriting the Raft log failed: it takes no more writes");
                self.failed = Some(e.to_string());
                return Err(e);
            }
        };
        self.segment = SegmentTail::new(segment, bytes.len() as u64);
        self.segment_no = no;
        if let Err(e) = self.disk.remove_file(&old) {
            // Removed at the next start: the newest segment wins.
            tracing::warn!(file = %old.display(), error = %e, "cannot remove a replaced Raft log segment");
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry<TypeConfig>>, RaftStorageError> {
        Ok(self
            .inner
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(
        &mut self,
    ) -> std::result::Result<LogState<TypeConfig>, RaftStorageError> {
        let log = self.inner.lock();
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: last.or(log.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> std::result::Result<(), RaftStorageError> {
        let vote = *vote;
        self.run(move |log| {
            if let Some(why) = &log.failed {
                return Err(failed_error(why));
            }
            let mut bytes = VOTE_MAGIC.to_vec();
            framed::frame(&VoteRecord::from(&vote).encode_to_vec(), &mut bytes);
            crashsafe::replace(&*log.disk, &log.dir.join(VOTE_FILE), &bytes)
                .map_err(|e| e.source)?;
            log.vote = Some(vote);
            Ok(())
        })
        .await
        .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<u64>>, RaftStorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let r: std::io::Result<()> = self
            .run(move |log| {
                let mut bytes = Vec::new();
                for e in &entries {
                    framed_record(LogFileOp::Entry(EntryRecord::from(e)), &mut bytes);
                }
                log.write(&bytes)?;
                for e in entries {
                    log.entries.insert(e.log_id.index, e);
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = log_error(
                    ErrorVerb::Write,
                    std::io::Error::new(e.kind(), e.to_string()),
                );
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> std::result::Result<(), RaftStorageError> {
        self.run(move |log| {
            let mut bytes = Vec::new();
            framed_record(LogFileOp::TruncateFrom(log_id.index), &mut bytes);
            log.write(&bytes)?;
            log.entries.split_off(&log_id.index);
            Ok(())
        })
        .await
        .map_err(|e| log_error(ErrorVerb::Write, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> std::result::Result<(), RaftStorageError> {
        self.run(move |log| {
            if let Some(why) = &log.failed {
                return Err(failed_error(why));
            }
            if log.last_purged.is_some_and(|p| p.index >= log_id.index) {
                return Ok(());
            }
            log.entries = log.entries.split_off(&(log_id.index + 1));
            log.last_purged = Some(log_id);
            log.rewrite()
        })
        .await
        .map_err(|e| log_error(ErrorVerb::Delete, e))
    }
}
