//! The disk a store writes through: a small object-safe seam ([`Disk`], [`DiskFile`]) over the
//! file operations gfs-rs uses, so that the same store code runs on the operating system's
//! files ([`OsDisk`]) or on a simulated disk with real crash semantics ([`sim::SimDisk`]).
//!
//! The operations are the ones whose durability the stores reason about: positional reads and
//! writes, `set_len`, `fdatasync`/`fsync` of a file, and creations, renames and removals in a
//! directory, made durable only by an fsync of the directory ([`Disk::sync_dir`]). Nothing here
//! buffers: each call is one system call on [`OsDisk`].
//!
//! **Writes past the page cache.** [`DiskFile::write_direct_at`] writes aligned bytes with
//! `O_DIRECT` on [`OsDisk`]: the device reads them from the caller's buffer, where a buffered
//! write first copies them into the page cache. On the 2-core VM the benchmarks run on, that
//! copy cost 0.5 to 2 s of CPU per 1.5 GiB (three writers of 512 MiB with an `fdatasync` every
//! 8 MiB: 0.69–2.95 s buffered, 0.08–0.09 s direct, 684–1,281 against 1,557–1,634 MB/s), and
//! a chunkserver writes every byte of a replica. Durability is unchanged: a direct write is
//! durable, as a buffered one, once `sync_data` returns (the device's cache and the file's
//! length need it).

pub mod sim;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The unit [`DiskFile::write_direct_at`] writes past the page cache: pages of the file (the
/// page size, a multiple of every common device's logical block), from a buffer aligned so.
pub const DIRECT_ALIGN: usize = 4096;

std::thread_local! {
    /// A buffer aligned to [`DIRECT_ALIGN`] for a direct write's bytes, per thread (a store's
    /// committer), grown to the largest write seen.
    static ALIGNED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

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
    /// As [`DiskFile::write_all_at`], with the whole pages of the file it covers written past
    /// the page cache where the file system allows (see the module doc) and the partial ones at
    /// either end buffered: durable only once `sync_data` returns, as any write.
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
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
struct OsFile {
    file: File,
    /// The file system refused to open this file with `O_DIRECT`: its writes are buffered.
    refused_direct: AtomicBool,
}

impl OsFile {
    /// The file opened again with `O_DIRECT`, through `/proc/self/fd` (the same inode, renamed
    /// or not), if the file system takes it. Opened for each direct write and closed after
    /// it (about 10 µs beside a write of at least 64 KiB), so that a store holding a file open
    /// per chunk does not hold two.
    fn direct(&self) -> Option<File> {
        if self.refused_direct.load(Ordering::Relaxed) {
            return None;
        }
        let path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        if opened.is_err() {
            self.refused_direct.store(true, Ordering::Relaxed);
        }
        opened.ok()
    }
}

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
        Ok(Arc::new(OsFile {
            file: o.open(path)?,
            refused_direct: AtomicBool::new(false),
        }))
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
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let a = DIRECT_ALIGN as u64;
        let end = offset + buf.len() as u64;
        let (first, last) = (offset.next_multiple_of(a), end / a * a);
        let direct = match first < last {
            true => self.direct(),
            false => None,
        };
        let Some(direct) = direct else {
            return self.file.write_all_at(buf, offset);
        };
        let head = (first - offset) as usize;
        let pages = &buf[head..head + (last - first) as usize];
        if head > 0 {
            self.file.write_all_at(&buf[..head], offset)?;
        }
        let written = if (pages.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) {
            direct.write_all_at(pages, first)
        } else {
            ALIGNED.with_borrow_mut(|scratch| {
                if scratch.len() < pages.len() + DIRECT_ALIGN {
                    *scratch = vec![0; pages.len() + DIRECT_ALIGN];
                }
                let at = scratch.as_ptr().align_offset(DIRECT_ALIGN);
                let aligned = &mut scratch[at..at + pages.len()];
                aligned.copy_from_slice(pages);
                direct.write_all_at(aligned, first)
            })
        };
        match written {
            // A device whose logical block is larger than a page: buffered.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.file.write_all_at(pages, first)?
            }
            r => r?,
        }
        if end > last {
            self.file.write_all_at(&buf[head + pages.len()..], last)?;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn try_lock(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn id(&self) -> io::Result<FileId> {
        let m = self.file.metadata()?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Bytes that differ at every position, so that a piece written at the wrong place shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn direct_writes_read_back_as_buffered_ones_at_any_offset_length_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let disk = OsDisk;
        let a = DIRECT_ALIGN;
        // (offset, length, where the bytes start in their buffer): whole pages from an aligned
        // buffer or not, partial pages at either end, less than a page, across one boundary.
        let cases = [
            (0, 4 * a, 0),
            (0, 4 * a, 1),
            (0, 4 * a + 100, 0),
            (100, 4 * a, 7),
            (a as u64 - 10, 20, 3),
            (3 * a as u64, 300, 0),
            (a as u64 + 1, 3 * a - 2, 5),
            (5 * a as u64, (1 << 20) + 17, 0),
        ];
        for (i, (offset, len, skew)) in cases.into_iter().enumerate() {
            let direct = disk
                .open(&dir.path().join(format!("d{i}")), Open::Create)
                .unwrap();
            let buffered = disk
                .open(&dir.path().join(format!("b{i}")), Open::Create)
                .unwrap();
            // What the file held before: bytes around the write that it must leave be.
            let before = pattern(offset as usize + len + 2 * a, 0xa5);
            direct.write_all_at(&before, 0).unwrap();
            buffered.write_all_at(&before, 0).unwrap();
            let mut buf = vec![0u8; len + skew];
            buf[skew..].copy_from_slice(&pattern(len, i as u8));
            direct.write_direct_at(&buf[skew..], offset).unwrap();
            buffered.write_all_at(&buf[skew..], offset).unwrap();
            direct.sync_data().unwrap();
            let n = direct.len().unwrap();
            assert_eq!(n, buffered.len().unwrap(), "case {i}");
            let (mut got, mut want) = (vec![0u8; n as usize], vec![0u8; n as usize]);
            direct.read_exact_at(&mut got, 0).unwrap();
            buffered.read_exact_at(&mut want, 0).unwrap();
            assert!(got == want, "case {i}: the direct write's file differs");
            // Read back by a new handle too (not through this one's page cache).
            let again = std::fs::read(dir.path().join(format!("d{i}"))).unwrap();
            assert!(again == want, "case {i}: read back anew, the file differs");
        }
    }

    #[test]
    fn the_test_directory_takes_direct_writes() {
        // Else the tests above would compare buffered writes with buffered writes.
        let dir = tempfile::tempdir().unwrap();
        let f = OsFile {
            file: File::create(dir.path().join("f")).unwrap(),
            refused_direct: AtomicBool::new(false),
        };
        assert!(
            f.direct().is_some(),
            "{} does not take O_DIRECT",
            dir.path().display()
        );
    }

    #[test]
    fn a_direct_write_extends_the_file_past_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let f = OsDisk.open(&dir.path().join("f"), Open::Create).unwrap();
        let data = pattern(3 * DIRECT_ALIGN, 9);
        f.write_direct_at(&data, 0).unwrap();
        f.write_direct_at(&data[..1000], 3 * DIRECT_ALIGN as u64)
            .unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.len().unwrap(), 3 * DIRECT_ALIGN as u64 + 1000);
        let back = std::fs::read(dir.path().join("f")).unwrap();
        assert_eq!(&back[..3 * DIRECT_ALIGN], &data[..]);
        assert_eq!(&back[3 * DIRECT_ALIGN..], &data[..1000]);
    }
}
