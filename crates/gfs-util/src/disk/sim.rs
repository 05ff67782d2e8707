//! A simulated disk with the failure semantics of a real one, driven by a seed.
//!
//! - Writes and `set_len` change what reads see at once but are *pending* until an fsync of
//!   their file (`sync_data` or `sync_all`) makes them durable.
//! - Creations, renames and removals change the namespace at once but are logged until an fsync
//!   of their directory ([`Disk::sync_dir`]) makes them durable.
//! - [`SimDisk::crash`] is a power loss: each pending write of each file is kept, dropped or
//!   torn (kept in some 4 KiB pages and not others), each pending `set_len` kept or dropped,
//!   and a prefix of the logged namespace changes survives (a journaling file system commits
//!   them in order), all chosen by the seed. Handles opened before the crash fail with EIO from
//!   then on, and advisory locks are released.
//! - Faults: a failed fsync ([`SimDisk::fail_next_sync`], or at a seeded rate) returns EIO and
//!   forgets the file's pending writes, which stay visible until a crash loses them (Linux's
//!   behaviour: a retried fsync then succeeds without them); a capacity past which writes fail
//!   with `ENOSPC` ([`SimDisk::set_capacity`]); a bit flipped at rest ([`SimDisk::flip_bit`]);
//!   a crash armed to strike at the `n`-th mutating operation ([`SimDisk::crash_after`]), which
//!   fails instead of running.
//! - Latency ([`SimDisk::set_latency`]): a store's round of writes and fsyncs takes a seeded
//!   time, so the windows a real disk's fsync opens (a version change queued, a seal in
//!   progress) stay open in simulated time while other messages arrive.
//!
//! Directories exist once created and are never lost. Everything is in memory, behind one
//! mutex; the same seed and the same sequence of calls give the same disk.

use crate::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{DirEntry, Disk, DiskFile, FileId, Open};

/// Granularity of torn writes.
const PAGE: usize = 4096;

/// A seeded simulated disk; clones share the same disk.
///
/// A `SimDisk` from [`SimDisk::new`] (and its clones) is the test's own hand on the disk: it
/// always works. [`SimDisk::shared`] gives the [`Disk`] a process runs on, bound to the current
/// power cycle: after a crash every operation through it fails, as the process it served died
/// with the power.
#[derive(Clone, Debug)]
pub struct SimDisk {
    shared: Arc<Mutex<State>>,
    /// The power cycle this view belongs to; `None`: any.
    boot: Option<u64>,
}

#[derive(Debug)]
enum DirOp {
    Link { path: PathBuf, ino: u64 },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

impl DirOp {
    fn dir(&self) -> &Path {
        let p = match self {
            DirOp::Link { path, .. } | DirOp::Unlink { path } => path,
            DirOp::Rename { to, .. } => to,
        };
        p.parent().unwrap_or(Path::new(""))
    }

    fn apply(&self, names: &mut BTreeMap<PathBuf, u64>) {
        match self {
            DirOp::Link { path, ino } => {
                names.insert(path.clone(), *ino);
            }
            DirOp::Unlink { path } => {
                names.remove(path);
            }
            DirOp::Rename { from, to } => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What a crash keeps for sure.
    durable: Vec<u8>,
    /// What reads see.
    current: Vec<u8>,
    /// Changes since the last fsync, in order.
    pending: Vec<Pending>,
    /// Which change of the disk last changed `durable` (0: none yet).
    stamp: u64,
    /// Which change of the disk last changed `current` (0: none yet).
    changed: u64,
    /// Offsets of durable bytes a [`SimDisk::flip_bit`] changed that no durable write or
    /// truncation has touched since.
    flips: BTreeSet<u64>,
}

impl Inode {
    /// Forgets the flips a durable change of `range` overwrote or cut off.
    fn overwrite(&mut self, range: std::ops::Range<u64>) {
        self.flips.retain(|o| !range.contains(o));
    }
}

#[derive(Debug)]
struct State {
    /// Bumped by every crash: handles of an older generation fail.
    generation: u64,
    next_ino: u64,
    next_handle: u64,
    inodes: BTreeMap<u64, Inode>,
    /// The namespace reads see.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace a crash keeps for sure.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Namespace changes not yet made durable, in order.
    log: Vec<DirOp>,
    dirs: BTreeSet<PathBuf>,
    /// Inode -> the handle holding its lock.
    locks: HashMap<u64, u64>,
    rng: u64,
    capacity: Option<u64>,
    fail_syncs: Vec<PathBuf>,
    /// Chance in a million that an fsync fails.
    sync_failure_ppm: u32,
    /// Each round of background work takes up to this long (microseconds), by the seed.
    latency_us: u64,
    /// Changes to durable bytes so far (each inode's `stamp` is one of them).
    stamps: u64,
    crash_in: Option<u64>,
    crashes: u64,
    /// FNV-1a over every operation and its arguments, in order.
    trace: u64,
    /// Every operation in words, when asked for ([`SimDisk::keep_log`]).
    words: Option<Vec<String>>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn apply_write(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

impl State {
    fn next_random(&mut self) -> u64 {
        // splitmix64: stable across builds, so a seed replays.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_random() % n }
    }

    /// Folds `parts` into the trace (and the log, if kept).
    fn note(&mut self, parts: &[&[u8]]) {
        if let Some(log) = self.words.as_mut() {
            let words: Vec<String> = parts
                .iter()
                .map(|p| match std::str::from_utf8(p) {
                    Ok(t) if p.len() < 64 => t.to_string(),
                    _ => {
                        let h = p.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                        });
                        format!("{} bytes #{:08x}", p.len(), h as u32)
                    }
                })
                .collect();
            log.push(words.join(" "));
        }
        for part in parts {
            for b in part.iter().chain(&[0xff]) {
                self.trace = (self.trace ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Counts a mutating operation; crashes instead of it when an armed crash is due.
    fn mutate(&mut self, what: &str) -> io::Result<()> {
        self.note(&[what.as_bytes()]);
        if let Some(n) = self.crash_in.as_mut() {
            if *n == 0 {
                self.crash_in = None;
                self.crash();
                return Err(eio(&format!("power lost before {what}")));
            }
            *n -= 1;
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len() as u64).sum()
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn check_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(d) if !d.as_os_str().is_empty() && !self.dirs.contains(d) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", d.display()),
            )),
            _ => Ok(()),
        }
    }

    fn crash(&mut self) {
        self.note(&[b"crash"]);
        self.crash_in = None;
        self.generation += 1;
        self.crashes += 1;
        self.locks.clear();
        // A prefix of the namespace log survives, in order.
        let keep = self.below(self.log.len() as u64 + 1) as usize;
        let log = std::mem::take(&mut self.log);
        let mut names = std::mem::take(&mut self.durable_names);
        for op in &log[..keep] {
            op.apply(&mut names);
        }
        // Each file: durable bytes, then each pending change kept, dropped or torn.
        let live: BTreeSet<u64> = names.values().copied().collect();
        let mut inodes = std::mem::take(&mut self.inodes);
        inodes.retain(|ino, _| live.contains(ino));
        for inode in inodes.values_mut() {
            if !inode.pending.is_empty() {
                self.stamps += 1;
                inode.stamp = self.stamps;
                inode.changed = self.stamps;
            }
            let mut data = std::mem::take(&mut inode.durable);
            for p in std::mem::take(&mut inode.pending) {
                match p {
                    Pending::SetLen(len) => {
                        if self.below(2) == 0 {
                            data.resize(len as usize, 0);
                            inode.overwrite(len..u64::MAX);
                        }
                    }
                    Pending::Write { offset, bytes } => match self.below(3) {
                        0 => {}
                        1 => {
                            apply_write(&mut data, offset, &bytes);
                            inode.overwrite(offset..offset + bytes.len() as u64);
                        }
                        _ => {
                            for (i, page) in bytes.chunks(PAGE).enumerate() {
                                if self.below(2) == 0 {
                                    let at = offset + (i * PAGE) as u64;
                                    apply_write(&mut data, at, page);
                                    inode.overwrite(at..at + page.len() as u64);
                                }
                            }
                        }
                    },
                }
            }
            inode.current = data.clone();
            inode.durable = data;
        }
        self.inodes = inodes;
        self.names = names.clone();
        self.durable_names = names;
    }
}

impl SimDisk {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as consistent as any crash would.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, if this view's power cycle is the current one.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = self.state();
        match self.boot {
            Some(b) if b != st.generation => Err(eio("the power was lost")),
            _ => Ok(st),
        }
    }

    /// An empty disk whose crash outcomes and random faults follow `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            shared: Arc::new(Mutex::new(State {
                generation: 0,
                next_ino: 1,
                next_handle: 1,
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                log: Vec::new(),
                dirs: BTreeSet::new(),
                locks: HashMap::default(),
                rng: seed,
                capacity: None,
                fail_syncs: Vec::new(),
                sync_failure_ppm: 0,
                latency_us: 0,
                stamps: 0,
                crash_in: None,
                crashes: 0,
                trace: 0xcbf2_9ce4_8422_2325,
                words: None,
            })),
            boot: None,
        }
    }

    /// The disk as a process sees it from now until the next crash.
    pub fn shared(&self) -> Arc<dyn Disk> {
        let boot = Some(self.state().generation);
        Arc::new(SimDisk {
            shared: Arc::clone(&self.shared),
            boot,
        })
    }

    /// Loses power now (see the module docs); the disk is usable again at once, as after a
    /// reboot, but every handle and view opened before fails. Disarms an armed crash.
    pub fn crash(&self) {
        self.state().crash();
    }

    /// Arms a crash at the `n`-th mutating operation from now (writes, `set_len`, fsyncs,
    /// creations, renames, removals; 0: the next one), which fails with EIO instead of running.
    pub fn crash_after(&self, n: u64) {
        self.state().crash_in = Some(n);
    }

    /// Whether an armed crash struck since [`SimDisk::crash_after`]; crashes so far.
    pub fn crashes(&self) -> u64 {
        self.state().crashes
    }

    /// A hash of every operation so far but positional reads (whose order changes nothing),
    /// with its arguments, in order, crashes included: two runs that did the same are equal.
    pub fn trace_hash(&self) -> u64 {
        self.state().trace
    }

    /// Keeps every operation from now on in words, for [`SimDisk::log`] (a failing seed's
    /// trace, to read or diff).
    pub fn keep_log(&self) {
        self.state().words.get_or_insert_with(Vec::new);
    }

    /// The operations kept since [`SimDisk::keep_log`].
    pub fn log(&self) -> Vec<String> {
        self.state().words.clone().unwrap_or_default()
    }

    /// Makes the next fsync of `path` fail with EIO.
    pub fn fail_next_sync(&self, path: &Path) {
        self.state().fail_syncs.push(path.to_path_buf());
    }

    /// Makes each fsync fail with EIO with chance `ppm` in a million, by the seed.
    pub fn set_sync_failure_ppm(&self, ppm: u32) {
        self.state().sync_failure_ppm = ppm;
    }

    /// Makes each round of a store's background work on this disk take up to `max` (drawn by
    /// the seed), as a real disk's writes and fsyncs do; zero (the default): no time at all.
    pub fn set_latency(&self, max: Duration) {
        self.state().latency_us = max.as_micros() as u64;
    }

    /// Bytes all files may hold together (`None`: no limit); writes past it fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` of the file at `path`, at rest (durable
    /// and visible); false if there is no such byte.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> bool {
        let mut st = self.state();
        let Some(ino) = st.names.get(path).copied() else {
            return false;
        };
        st.stamps += 1;
        let stamp = st.stamps;
        let Some(inode) = st.inodes.get_mut(&ino) else {
            return false;
        };
        inode.stamp = stamp;
        inode.changed = stamp;
        let at = offset as usize;
        let mask = 1u8 << (bit % 8);
        let mut hit = false;
        for data in [&mut inode.current, &mut inode.durable] {
            if let Some(b) = data.get_mut(at) {
                *b ^= mask;
                hit = true;
            }
        }
        if hit {
            inode.flips.insert(offset);
        }
        hit
    }

    /// Whether the durable byte at `offset` of the file at `path` is still as a
    /// [`SimDisk::flip_bit`] left it: no durable write or truncation has touched it since
    /// (a redo of a log rewrites bytes, and a crash may have kept them wrong before the flip).
    pub fn still_flipped(&self, path: &Path, offset: u64) -> bool {
        let st = self.state();
        st.names
            .get(path)
            .and_then(|ino| st.inodes.get(ino))
            .is_some_and(|i| i.flips.contains(&offset))
    }

    /// The durable byte at `offset` of the file at `path` (what a crash would keep); `None`
    /// past its end or without such a file.
    pub fn durable_byte(&self, path: &Path, offset: u64) -> Option<u8> {
        let st = self.state();
        let ino = st.names.get(path)?;
        st.inodes.get(ino)?.durable.get(offset as usize).copied()
    }

    /// `f` of the durable bytes of the file at `path` (what a crash now would keep of it).
    pub fn with_durable<R>(&self, path: &Path, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let st = self.state();
        let ino = st.names.get(path)?;
        Some(f(&st.inodes.get(ino)?.durable))
    }

    /// A number that changes whenever the durable bytes of the file at `path` change (an fsync
    /// of pending writes, a crash, a flipped bit) or another file takes its name: unchanged,
    /// so are they.
    pub fn durable_stamp(&self, path: &Path) -> Option<(u64, u64)> {
        let st = self.state();
        let ino = st.names.get(path)?;
        Some((*ino, st.inodes.get(ino)?.stamp))
    }

    /// A number that changes whenever what reads of the file at `path` see changes, or
    /// another file takes its name.
    pub fn current_stamp(&self, path: &Path) -> Option<(u64, u64)> {
        let st = self.state();
        let ino = st.names.get(path)?;
        Some((*ino, st.inodes.get(ino)?.changed))
    }

    /// `f` of the bytes of the file at `path` as reads see them now.
    pub fn with_current<R>(&self, path: &Path, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let st = self.state();
        let ino = st.names.get(path)?;
        Some(f(&st.inodes.get(ino)?.current))
    }

    /// The durable length of the file at `path`.
    pub fn durable_len(&self, path: &Path) -> Option<u64> {
        let st = self.state();
        let ino = st.names.get(path)?;
        Some(st.inodes.get(ino)?.durable.len() as u64)
    }

    /// The paths of the files that exist now, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state().names.keys().cloned().collect()
    }

    fn handle(&self, ino: u64, st: &mut State) -> Arc<dyn DiskFile> {
        st.next_handle += 1;
        Arc::new(SimFile {
            disk: self.clone(),
            ino,
            generation: st.generation,
            id: st.next_handle,
        })
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        for d in dir.ancestors() {
            if !d.as_os_str().is_empty() {
                st.dirs.insert(d.to_path_buf());
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn DiskFile>> {
        let mut st = self.live()?;
        st.note(&[
            b"open",
            path.as_os_str().as_encoded_bytes(),
            format!("{how:?}").as_bytes(),
        ]);
        st.check_dir(path)?;
        let existing = st.names.get(path).copied();
        let ino = match (how, existing) {
            (Open::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists", path.display()),
                ));
            }
            (Open::Read | Open::Write, None) => return Err(not_found(path)),
            (Open::Truncate, Some(ino)) => {
                st.mutate("truncate")?;
                st.stamps += 1;
                let stamp = st.stamps;
                let inode = st.inodes.entry(ino).or_default();
                inode.changed = stamp;
                inode.current.clear();
                inode.pending.push(Pending::SetLen(0));
                ino
            }
            (_, Some(ino)) => ino,
            (Open::Create | Open::CreateNew | Open::Truncate, None) => {
                st.mutate("create")?;
                let ino = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(ino, Inode::default());
                st.names.insert(path.to_path_buf(), ino);
                st.log.push(DirOp::Link {
                    path: path.to_path_buf(),
                    ino,
                });
                ino
            }
        };
        Ok(self.handle(ino, &mut st))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.live()?;
        st.note(&[b"read", path.as_os_str().as_encoded_bytes()]);
        let ino = st.lookup(path)?;
        Ok(st
            .inodes
            .get(&ino)
            .map(|i| i.current.clone())
            .unwrap_or_default())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let st = self.live()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, ino)| DirEntry {
                path: p.clone(),
                len: st.inodes.get(ino).map_or(0, |i| i.current.len() as u64),
            })
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        st.note(&[path.as_os_str().as_encoded_bytes()]);
        st.lookup(path)?;
        st.mutate("unlink")?;
        st.names.remove(path);
        st.log.push(DirOp::Unlink {
            path: path.to_path_buf(),
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        st.note(&[
            from.as_os_str().as_encoded_bytes(),
            to.as_os_str().as_encoded_bytes(),
        ]);
        let ino = st.lookup(from)?;
        st.check_dir(to)?;
        st.mutate("rename")?;
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), ino);
        st.log.push(DirOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.live()?;
        st.note(&[dir.as_os_str().as_encoded_bytes()]);
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        st.mutate("directory fsync")?;
        let log = std::mem::take(&mut st.log);
        let (here, rest): (Vec<DirOp>, Vec<DirOp>) =
            log.into_iter().partition(|op| op.dir() == dir);
        for op in &here {
            op.apply(&mut st.durable_names);
        }
        st.log = rest;
        Ok(())
    }

    fn threads(&self) -> bool {
        false
    }

    fn latency(&self) -> Duration {
        let mut st = self.state();
        let max = st.latency_us;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(1 + st.below(max))
    }

    fn file_id(&self, path: &Path) -> io::Result<FileId> {
        let st = self.live()?;
        Ok(FileId {
            dev: 0,
            ino: st.lookup(path)?,
        })
    }
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    ino: u64,
    generation: u64,
    id: u64,
}

impl SimFile {
    fn with<R>(
        &self,
        what: &str,
        f: impl FnOnce(&mut State, u64) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut st = self.disk.state();
        if st.generation != self.generation {
            return Err(eio(&format!("{what} on a file opened before a crash")));
        }
        f(&mut st, self.ino)
    }

    fn sync(&self) -> io::Result<()> {
        self.with("fsync", |st, ino| {
            st.note(&[&ino.to_le_bytes()]);
            st.mutate("fsync")?;
            let path = st
                .names
                .iter()
                .find(|(_, i)| **i == ino)
                .map(|(p, _)| p.clone());
            let armed = path
                .as_ref()
                .and_then(|p| st.fail_syncs.iter().position(|f| f == p));
            let ppm = u64::from(st.sync_failure_ppm);
            let random = ppm > 0 && st.below(1_000_000) < ppm;
            st.stamps += 1;
            let stamp = st.stamps;
            let inode = st.inodes.entry(ino).or_default();
            if armed.is_some() || random {
                // The pages are marked clean all the same: these writes are never made durable.
                inode.pending.clear();
                if let Some(i) = armed {
                    st.fail_syncs.swap_remove(i);
                }
                return Err(eio("fsync failed"));
            }
            if !inode.pending.is_empty() {
                inode.stamp = stamp;
            }
            for p in std::mem::take(&mut inode.pending) {
                match p {
                    Pending::SetLen(len) => {
                        inode.durable.resize(len as usize, 0);
                        inode.overwrite(len..u64::MAX);
                    }
                    Pending::Write { offset, bytes } => {
                        apply_write(&mut inode.durable, offset, &bytes);
                        inode.overwrite(offset..offset + bytes.len() as u64);
                    }
                }
            }
            Ok(())
        })
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.disk.state();
        if st.locks.get(&self.ino) == Some(&self.id) {
            st.locks.remove(&self.ino);
        }
    }
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with("read", |st, ino| {
            let data = st
                .inodes
                .get(&ino)
                .map(|i| &i.current[..])
                .unwrap_or_default();
            let start = offset as usize;
            let end = start + buf.len();
            if end > data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end",
                ));
            }
            buf.copy_from_slice(&data[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with("write", |st, ino| {
            st.note(&[&ino.to_le_bytes(), &offset.to_le_bytes(), buf]);
            st.mutate("write")?;
            let len = st.inodes.get(&ino).map_or(0, |i| i.current.len() as u64);
            let grows = (offset + buf.len() as u64).saturating_sub(len);
            if let Some(cap) = st.capacity
                && st.used() + grows > cap
            {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            st.stamps += 1;
            let stamp = st.stamps;
            let inode = st.inodes.entry(ino).or_default();
            inode.changed = stamp;
            apply_write(&mut inode.current, offset, buf);
            inode.pending.push(Pending::Write {
                offset,
                bytes: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with("set_len", |st, ino| {
            st.note(&[&ino.to_le_bytes(), &len.to_le_bytes()]);
            st.mutate("set_len")?;
            st.stamps += 1;
            let stamp = st.stamps;
            let inode = st.inodes.entry(ino).or_default();
            inode.changed = stamp;
            inode.current.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with("stat", |st, ino| {
            Ok(st.inodes.get(&ino).map_or(0, |i| i.current.len() as u64))
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn try_lock(&self) -> io::Result<bool> {
        let id = self.id;
        self.with("lock", |st, ino| match st.locks.get(&ino) {
            Some(holder) if *holder != id => Ok(false),
            _ => {
                st.locks.insert(ino, id);
                Ok(true)
            }
        })
    }

    fn id(&self) -> io::Result<FileId> {
        self.with("stat", |_, ino| Ok(FileId { dev: 0, ino }))
    }
}

#[cfg(test)]
mod tests;
