//! The chunk store's files on disk: where a chunk's data and snapshot live, the snapshot
//! bytes, snapshots replaced durably (`gfs_util::crashsafe`), a fresh WAL, and the parallel
//! fsync round the committer and recovery share.

use crate::error::{Result, StorageError};
use crate::record::{ChunkMeta, META_MAGIC, WAL_MAGIC};
use crate::types::ChunkHandle;
use gfs_util::crashsafe::{self, Aside};
use gfs_util::disk::{Disk, DiskFile, Open};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many fsyncs run at once in one round.
const SYNC_THREADS: usize = 8;

/// What one fsync of a round syncs.
#[derive(Clone, Copy)]
pub(crate) enum Sync<'a> {
    /// A file's data (`fdatasync`).
    File(&'a dyn DiskFile),
    /// A directory's entries.
    Dir,
}

/// fsyncs every file (`fdatasync`) or directory of `files`, up to `SYNC_THREADS` at once (one
/// after another on a disk without threads); returns the failures by index.
pub(crate) fn parallel_sync(
    disk: &dyn Disk,
    files: &[(Sync<'_>, &Path)],
) -> Vec<(usize, StorageError)> {
    let sync = |i: usize| {
        let (what, p) = files[i];
        #[cfg(test)]
        if failpoint::hit(p) {
            return Some((i, StorageError::io(p, std::io::Error::from_raw_os_error(5))));
        }
        let done = match what {
            Sync::File(f) => f.sync_data(),
            Sync::Dir => disk.sync_dir(p),
        };
        done.err().map(|e| (i, StorageError::io(p, e)))
    };
    if files.len() <= 1 || !disk.threads() {
        return (0..files.len()).filter_map(sync).collect();
    }
    let threads = files.len().min(SYNC_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..files.len())
                        .step_by(threads)
                        .filter_map(sync)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut errs: Vec<_> = (0..files.len()).step_by(threads).filter_map(sync).collect();
        for (t, h) in handles.into_iter().enumerate() {
            match h.join() {
                Ok(r) => errs.extend(r),
                Err(_) => errs.push((
                    t + 1,
                    StorageError::io(files[t + 1].1, std::io::Error::other("fsync thread died")),
                )),
            }
        }
        errs
    })
}

pub(crate) fn data_path(dir: &Path, handle: ChunkHandle) -> PathBuf {
    dir.join(handle.0.to_string())
}

pub(crate) fn meta_path(dir: &Path, handle: ChunkHandle) -> PathBuf {
    dir.join(format!("{}.meta", handle.0))
}

/// fsyncs the store's directory (`gfs_util::crashsafe::sync_dir`).
pub(crate) fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<()> {
    crashsafe::sync_dir(disk, dir).map_err(StorageError::fs)
}

pub(crate) fn snapshot_bytes(meta: &ChunkMeta) -> Vec<u8> {
    let mut bytes = META_MAGIC.to_vec();
    meta.snapshot().encode_into(&mut bytes);
    bytes
}

/// Writes each file aside (`<name>.tmp`), fsyncs them all in one [`parallel_sync`] round
/// (`fdatasync`), renames them into place and fsyncs their directory once
/// (`gfs_util::crashsafe`): after a crash each file is either the old or the new version, whole.
pub(crate) fn write_snapshots(disk: &dyn Disk, files: &[(&Path, Vec<u8>)]) -> Result<()> {
    let asides = files
        .iter()
        .map(|(path, bytes)| Aside::write(disk, path, bytes))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(StorageError::fs)?;
    let refs: Vec<(Sync<'_>, &Path)> = asides
        .iter()
        .map(|a| (Sync::File(a.file()), a.path()))
        .collect();
    if let Some((_, e)) = parallel_sync(disk, &refs).into_iter().next() {
        return Err(e);
    }
    crashsafe::rename_into_place(disk, asides).map_err(StorageError::fs)
}

/// The data directory's identity from `<dir>/ID`; made at random and written durably
/// (`crashsafe::replace`) when the file is missing or unreadable, as on a new or wiped disk;
/// 0 (unknown) when it cannot be written.
pub(crate) fn identity(disk: &dyn Disk, dir: &Path) -> Result<u64> {
    let path = dir.join("ID");
    match disk.read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match u64::from_str_radix(text.trim(), 16) {
                Ok(id) if id != 0 => return Ok(id),
                _ => {
                    tracing::warn!(path = %path.display(), "the data directory's identity does not parse: making a new one (the master takes this as a new disk)")
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&path, e)),
    }
    let id = gfs_util::random::random_range(1..=u64::MAX);
    if let Err(e) = crashsafe::replace(disk, &path, format!("{id:016x}\n").as_bytes()) {
        // A full disk must not keep the store from opening: without an identity it is taken
        // for a new disk at each start, as before identities.
        tracing::warn!(path = %path.display(), error = %e, "cannot write the data directory's identity; going on without one");
        return Ok(0);
    }
    tracing::info!(dir = %dir.display(), identity = format_args!("{id:016x}"), "the data directory has a new identity");
    Ok(id)
}

/// Creates an empty WAL aside and renames it into place.
pub(crate) fn new_wal(disk: &dyn Disk, dir: &Path) -> Result<Arc<dyn DiskFile>> {
    let path = dir.join("wal");
    write_snapshots(disk, &[(&path, WAL_MAGIC.to_vec())])?;
    disk.open(&path, Open::Write)
        .map_err(|e| StorageError::io(&path, e))
}

/// Test-only fault injection: the next fsync of a path in a [`parallel_sync`] round fails
/// with EIO without syncing.
#[cfg(test)]
pub(crate) mod failpoint {
    use std::path::{Path, PathBuf};

    static FAIL_SYNC: parking_lot::Mutex<Vec<PathBuf>> = parking_lot::Mutex::new(Vec::new());

    /// Makes the next fsync of `path` fail (paths are unique per test directory).
    pub(crate) fn fail_next_sync(path: &Path) {
        FAIL_SYNC.lock().push(path.to_owned());
    }

    /// Whether a failure was armed for `path`; disarms it.
    pub(super) fn hit(path: &Path) -> bool {
        let mut armed = FAIL_SYNC.lock();
        let at = armed.iter().position(|p| p == path);
        at.map(|i| armed.swap_remove(i)).is_some()
    }
}
