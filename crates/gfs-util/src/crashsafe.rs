//! Durable file replacement: after a crash at any instant a replaced file is its old version or
//! its new one, whole, and a replacement that returned `Ok` survives the crash.
//!
//! The steps, in this order: write the new bytes to the aside file (`<name>.tmp` beside the
//! target, [`aside_path`]), fsync it, rename it over the target, fsync the directory (the rename
//! is durable only then). [`replace`] does all four for one file. A caller replacing many files
//! at once (the chunk store's snapshots) writes each with [`Aside::write`], fsyncs them its own
//! way (in parallel, with `fdatasync`), then puts them all in place with [`rename_into_place`],
//! which fsyncs their directory once, after the last rename.
//!
//! A crash between a write and its rename leaves an aside file behind: whoever opens the
//! directory removes leftover `*.tmp` files first (gfs-storage's recovery, gfs-master's
//! metastore). A directory fsync ([`sync_dir`]) is also what makes a creation, a rename or a
//! removal durable on its own.
//!
//! Errors name the file or directory they happened on ([`PathError`], the OS error unchanged);
//! callers wrap them into their own error types.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::disk::{Disk, DiskFile, Open};

/// An I/O error and the file or directory it happened on.
#[derive(Debug)]
pub struct PathError {
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error, unchanged (its kind and errno still tell, e.g., a full disk).
    pub source: io::Error,
}

impl PathError {
    fn new(path: &Path, source: io::Error) -> PathError {
        PathError {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<PathError> for io::Error {
    /// An `io::Error` of the same kind whose message names the path.
    fn from(e: PathError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// Where a new version of `path` is written before it replaces `path`: `path` with `.tmp`
/// appended (`wal` → `wal.tmp`, `7.meta` → `7.meta.tmp`).
pub fn aside_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(".tmp");
    PathBuf::from(s)
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the directory `dir` of `disk`, making the creations, renames and removals in it
/// durable.
pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<(), PathError> {
    disk.sync_dir(dir).map_err(|e| PathError::new(dir, e))
}

/// Replaces `path` with `bytes` durably: written aside, fsynced (`fsync`, data and metadata),
/// renamed over `path`, then `path`'s directory fsynced. Creates `path` if it does not exist.
pub fn replace(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    let aside = Aside::write(disk, path, bytes)?;
    aside.sync()?;
    rename_into_place(disk, vec![aside])
}

/// A new version of a file, written aside and not yet in place.
#[derive(Debug)]
pub struct Aside {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    target: PathBuf,
}

impl Aside {
    /// Creates (or truncates) the aside file of `target` and writes `bytes` to it, unsynced.
    pub fn write(disk: &dyn Disk, target: &Path, bytes: &[u8]) -> Result<Aside, PathError> {
        let path = aside_path(target);
        let file = disk
            .open(&path, Open::Truncate)
            .map_err(|e| PathError::new(&path, e))?;
        file.write_all_at(bytes, 0)
            .map_err(|e| PathError::new(&path, e))?;
        Ok(Aside {
            file,
            path,
            target: target.to_path_buf(),
        })
    }

    /// The open aside file, for a caller that fsyncs it its own way.
    pub fn file(&self) -> &dyn DiskFile {
        &*self.file
    }

    /// Where the new version is written ([`aside_path`] of the target).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file it replaces.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// fsyncs the aside file (`fsync`: data and metadata).
    pub fn sync(&self) -> Result<(), PathError> {
        self.file
            .sync_all()
            .map_err(|e| PathError::new(&self.path, e))
    }
}

/// Renames each aside file over its target, in order, then fsyncs the targets' directory once
/// (each distinct directory, in order of first appearance). The aside files must already be
/// durable (fsynced): the rename only makes them visible. Stops at the first failure; targets
/// renamed before it stay replaced, and their directory is not fsynced.
pub fn rename_into_place(disk: &dyn Disk, asides: Vec<Aside>) -> Result<(), PathError> {
    let mut dirs: Vec<&Path> = Vec::new();
    for a in &asides {
        disk.rename(&a.path, &a.target)
            .map_err(|e| PathError::new(&a.target, e))?;
        let dir = dir_of(&a.target);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        sync_dir(disk, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::disk::OsDisk;
    use crate::disk::sim::SimDisk;

    #[test]
    fn the_aside_file_is_the_name_with_tmp_appended() {
        assert_eq!(aside_path(Path::new("d/wal")), Path::new("d/wal.tmp"));
        assert_eq!(aside_path(Path::new("d/7.meta")), Path::new("d/7.meta.tmp"));
        assert_eq!(
            aside_path(Path::new("/m/checkpoint-00000000000000000005")),
            Path::new("/m/checkpoint-00000000000000000005.tmp")
        );
        assert_eq!(aside_path(Path::new("draining")), Path::new("draining.tmp"));
    }

    #[test]
    fn replace_creates_then_replaces_and_leaves_no_aside_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        replace(&OsDisk, &p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        replace(&OsDisk, &p, b"two, longer").unwrap();
        replace(&OsDisk, &p, b"3").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"3");
        assert!(!aside_path(&p).exists());
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_bare_file_name_is_replaced_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("draining")), Path::new("."));
        assert_eq!(dir_of(Path::new("a/b")), Path::new("a"));
    }

    #[test]
    fn an_aside_file_not_renamed_leaves_the_old_version() {
        // A crash between the write (or fsync) and the rename.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("snap");
        replace(&OsDisk, &p, b"old").unwrap();
        let a = Aside::write(&OsDisk, &p, b"new").unwrap();
        a.sync().unwrap();
        assert_eq!(a.target(), p);
        assert_eq!(a.path(), aside_path(&p));
        drop(a);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read(aside_path(&p)).unwrap(), b"new");
        // The next replacement truncates a leftover aside file.
        replace(&OsDisk, &p, b"n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"n");
    }

    #[test]
    fn many_files_go_in_place_together() {
        let d = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..5).map(|i| d.path().join(format!("{i}.meta"))).collect();
        let asides: Vec<Aside> = paths
            .iter()
            .map(|p| Aside::write(&OsDisk, p, p.to_str().unwrap().as_bytes()).unwrap())
            .collect();
        for a in &asides {
            a.file().sync_data().unwrap();
        }
        rename_into_place(&OsDisk, asides).unwrap();
        for p in &paths {
            assert_eq!(std::fs::read(p).unwrap(), p.to_str().unwrap().as_bytes());
            assert!(!aside_path(p).exists());
        }
        rename_into_place(&OsDisk, Vec::new()).unwrap();
    }

    #[test]
    fn errors_name_the_path_and_keep_the_os_error() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("no-such-dir");
        let e = replace(&OsDisk, &missing.join("f"), b"x").unwrap_err();
        assert_eq!(e.path, missing.join("f.tmp"));
        assert_eq!(e.source.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-dir/f.tmp"), "{e}");
        let e = sync_dir(&OsDisk, &missing).unwrap_err();
        assert_eq!(e.path, missing);
        let plain: io::Error = e.into();
        assert_eq!(plain.kind(), io::ErrorKind::NotFound);
        assert!(plain.to_string().contains("no-such-dir"), "{plain}");
    }

    #[test]
    fn a_failed_rename_names_the_target() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let a = Aside::write(&OsDisk, &p, b"x").unwrap();
        std::fs::remove_file(a.path()).unwrap();
        let e = rename_into_place(&OsDisk, vec![a]).unwrap_err();
        assert_eq!((e.path, e.source.kind()), (p, io::ErrorKind::NotFound));
    }

    /// The module's promise, at every instant: a crash at each operation of a replacement (and
    /// of the one before it) leaves the old version or the new one, whole; once `replace`
    /// returned, the new one.
    #[test]
    fn a_crash_at_any_operation_leaves_the_old_version_or_the_new_one() {
        let dir = Path::new("/d");
        let p = dir.join("f");
        for seed in 0..40 {
            for n in 0.. {
                let disk = SimDisk::new(seed);
                disk.create_dir_all(dir).unwrap();
                replace(&disk, &p, b"old version").unwrap();
                disk.crash_after(n);
                let done = replace(&disk, &p, b"the new version, longer").is_ok();
                let struck = disk.crashes() > 0;
                disk.crash();
                let got = disk.read(&p).unwrap();
                if done && !struck {
                    assert_eq!(
                        got, b"the new version, longer",
                        "seed {seed}, crash after {n}"
                    );
                    break;
                }
                assert!(
                    got == b"old version" || got == b"the new version, longer",
                    "seed {seed}, crash after {n}: {got:?}"
                );
            }
        }
    }
}
