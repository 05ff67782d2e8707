//! The disk a store writes through: a small object-safe seam ([`Disk`], [`DiskFile`]) over the
//! file operations gfs-rs uses, so that the same store code runs on the operating system's
//! files ([`OsDisk`]) or on a simulated disk with real crash semantics ([`sim::SimDisk`]).
//!
//! The operations are the ones whose durability the stores reason about: positional reads and
//! writes, `set_len`, `fdatasync`/`fsync` of a file, and creations, renames and removals in a
//! directory, made durable only by an fsync of the directory ([`Disk::sync_dir`]). Nothing here
//! buffers: each call is one system call on [`OsDisk`].

pub mod sim;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How [`Disk::open`] opens a file; every mode can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// An existing file, read only.
    Read,
    /// An existing file, to read and write.
    Write,
    /// To read and write, created empty if missing.
    Create,
    /// Created empty; `AlreadyExists` if it exists.
    CreateNew,
    /// Created if missing, cut to length 0 if not.
    Truncate,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's path (the directory joined with its name).
    pub path: PathBuf,
    /// Its length in bytes.
    pub len: u64,
}

impl DirEntry {
    /// The entry's file name, if it is valid UTF-8.
    pub fn name(&self) -> Option<&str> {
        self.path.file_name().and_then(|n| n.to_str())
    }
}

/// Which file a path or handle is: equal ids are the same file (device and inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device (0 on a simulated disk).
    pub dev: u64,
    /// The inode.
    pub ino: u64,
}

/// A disk: the directory operations of a store.
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens the file at `path`.
    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>>;
    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The files directly in `dir`, in no particular order.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// Removes the file at `path` (durable once its directory is synced).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (durable once their directory is synced).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs the directory `dir`: the creations, renames and removals in it become durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Which file `path` names now.
    fn file_id(&self, path: &Path) -> io::Result<FileId>;
    /// Whether a file exists at `path`.
    fn exists(&self, path: &Path) -> bool {
        self.file_id(path).is_ok()
    }
    /// Whether work on this disk may run on background threads: the OS's disk yes; a
    /// simulated one no, so that its operations come in one order and a seed replays exactly
    /// (the stores then do their background work inline, in the callers' tasks).
    fn threads(&self) -> bool {
        true
    }
    /// How long the next round of a store's background work (its writes and fsyncs) takes, in
    /// the caller's time, on a disk without threads: a simulated disk's latency. Zero for the
    /// OS's disk, whose operations take their real time.
    fn latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// An open file of a [`Disk`].
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }
    /// `fdatasync`: the file's data (and its length) become durable.
    fn sync_data(&self) -> io::Result<()>;
    /// `fsync`: data and metadata become durable.
    fn sync_all(&self) -> io::Result<()>;
    /// Takes an exclusive advisory lock, held until the handle is dropped; `false` if another
    /// handle holds one.
    fn try_lock(&self) -> io::Result<bool>;
    /// Which file this handle has open.
    fn id(&self) -> io::Result<FileId>;
}

/// The operating system's files.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsDisk;

impl OsDisk {
    /// The operating system's disk, shared.
    pub fn shared() -> Arc<dyn Disk> {
        Arc::new(OsDisk)
    }
}

#[derive(Debug)]
struct OsFile(File);

impl Disk for OsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>> {
        let mut o = OpenOptions::new();
        o.read(true);
        match how {
            Open::Read => &mut o,
            Open::Write => o.write(true),
            Open::Create => o.write(true).create(true).truncate(false),
            Open::CreateNew => o.write(true).create_new(true),
            Open::Truncate => o.write(true).create(true).truncate(true),
        };
        Ok(Arc::new(OsFile(o.open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let meta = e.metadata()?;
            if meta.is_file() {
                out.push(DirEntry {
                    path: e.path(),
                    len: meta.len(),
                });
            }
        }
        Ok(out)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn file_id(&self, path: &Path) -> io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

impl DiskFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn try_lock(&self) -> io::Result<bool> {
        match self.0.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn id(&self) -> io::Result<FileId> {
        let m = self.0.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}
