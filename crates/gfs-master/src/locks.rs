//! Namespace locks as in the GFS paper: an operation read-locks every ancestor of the paths it
//! touches and write-locks (or read-locks) the paths themselves, so mutations of unrelated
//! paths proceed side by side while a directory being renamed or deleted excludes everything
//! beneath it.
//!
//! Locks are taken in one global order (depth first, then bytewise), so no two operations can
//! wait on each other in a cycle. Entries exist only while someone holds or waits for them (a
//! cancelled request removes its own): the table stays as small as the set of paths in use.
//! The root is never locked.
//!
//! A lock is held across the whole operation, chunkserver RPCs and the log fsync included, so
//! two appenders of one new file get one chunk. Lease decisions (a new lease, the relegation of
//! lagging replicas, a seal) take a per-chunk lock as well (a [`LockTable`] of handles in the
//! chunk manager), always after any path lock. The in-memory apply itself is one short critical
//! section inside `MetaStore`; the log's fsync is what batches.

use gfs_util::collections::HashMap;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::path;

/// How one key is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// Shared with other readers.
    Read,
    /// Exclusive.
    Write,
}

enum Held {
    Read(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

struct Entry {
    lock: Arc<RwLock<()>>,
    /// Guards that hold or wait for this lock.
    users: usize,
}

type Table<K> = Arc<Mutex<HashMap<K, Entry>>>;

/// A table of reader-writer locks created on demand, one per key.
pub struct LockTable<K: Eq + Hash + Clone> {
    locks: Table<K>,
}

impl<K: Eq + Hash + Clone> Default for LockTable<K> {
    fn default() -> Self {
        LockTable {
            locks: Arc::new(Mutex::new(HashMap::default())),
        }
    }
}

/// Locks held on a set of keys; released on drop (also when dropped while still waiting).
#[must_use = "the locks are released when the guard is dropped"]
pub struct Guard<K: Eq + Hash + Clone> {
    keys: Vec<K>,
    held: Vec<Held>,
    locks: Table<K>,
}

impl<K: Eq + Hash + Clone> Drop for Guard<K> {
    fn drop(&mut self) {
        self.held.clear();
        let mut table = self.locks.lock();
        for k in &self.keys {
            if let Some(e) = table.get_mut(k) {
                e.users -= 1;
                if e.users == 0 {
                    table.remove(k);
                }
            }
        }
    }
}

impl<K: Eq + Hash + Clone> LockTable<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes every `(key, mode)` of `plan` in the order given; the caller sorts it the same way
    /// for every operation.
    async fn acquire(&self, plan: Vec<(K, Mode)>) -> Guard<K> {
        let mut locks = Vec::with_capacity(plan.len());
        let mut guard = Guard {
            keys: Vec::with_capacity(plan.len()),
            held: Vec::with_capacity(plan.len()),
            locks: Arc::clone(&self.locks),
        };
        {
            let mut table = self.locks.lock();
            for (k, m) in plan {
                let e = table.entry(k.clone()).or_insert_with(|| Entry {
                    lock: Arc::new(RwLock::new(())),
                    users: 0,
                });
                e.users += 1;
                locks.push((m, Arc::clone(&e.lock)));
                guard.keys.push(k);
            }
        }
        for (m, l) in locks {
            let held = match m {
                Mode::Read => Held::Read(l.read_owned().await),
                Mode::Write => Held::Write(l.write_owned().await),
            };
            guard.held.push(held);
        }
        guard
    }

    /// How many keys are held or waited for.
    pub fn len(&self) -> usize {
        self.locks.lock().len()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone + Ord> LockTable<K> {
    /// Locks each key in `keys` exclusively, in key order.
    pub async fn write(&self, keys: impl IntoIterator<Item = K>) -> Guard<K> {
        let mut plan: Vec<(K, Mode)> = keys.into_iter().map(|k| (k, Mode::Write)).collect();
        plan.sort_by(|a, b| a.0.cmp(&b.0));
        plan.dedup_by(|a, b| a.0 == b.0);
        self.acquire(plan).await
    }
}

/// The namespace's path locks.
pub type PathLocks = LockTable<String>;

/// Lock order of paths: shallower first, then bytewise; ancestors always precede descendants.
fn path_order(p: &str) -> (usize, &str) {
    (p.bytes().filter(|b| *b == b'/').count(), p)
}

impl PathLocks {
    /// Read-locks the ancestors of every path in `paths` and locks each path itself in its
    /// mode (write wins when a path is both). The root is never locked: nothing can rename or
    /// delete it.
    pub async fn paths(&self, paths: &[(&str, Mode)]) -> Guard<String> {
        let mut want: BTreeMap<(usize, &str), Mode> = BTreeMap::new();
        for (p, mode) in paths {
            for a in path::ancestors(p) {
                if a != "/" {
                    want.entry(path_order(a)).or_insert(Mode::Read);
                }
            }
            if *p != "/" {
                let m = want.entry(path_order(p)).or_insert(*mode);
                *m = (*m).max(*mode);
            }
        }
        let plan = want
            .into_iter()
            .map(|((_, p), m)| (p.to_string(), m))
            .collect();
        self.acquire(plan).await
    }

    /// Locks `path` exclusively and its ancestors shared: the lock of a mutation of `path`.
    pub async fn mutate(&self, path: &str) -> Guard<String> {
        self.paths(&[(path, Mode::Write)]).await
    }

    /// Locks `path` and its ancestors shared: the lock of a read of `path`.
    pub async fn read(&self, path: &str) -> Guard<String> {
        self.paths(&[(path, Mode::Read)]).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use rand::Rng;

    use super::*;

    /// Whether `fut` is still waiting after a moment.
    async fn blocks<F: std::future::Future>(fut: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), fut)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_write_lock_excludes_the_path_and_everything_beneath() {
        let t = PathLocks::new();
        let g = t.mutate("/a/b").await;
        assert!(blocks(t.mutate("/a/b")).await);
        assert!(blocks(t.read("/a/b")).await);
        assert!(blocks(t.mutate("/a/b/c")).await);
        assert!(blocks(t.read("/a/b/c/d")).await);
        // The parent is only read-locked: siblings and other trees go ahead.
        drop(t.mutate("/a/x").await);
        drop(t.read("/a").await);
        drop(t.mutate("/z/b").await);
        assert!(blocks(t.mutate("/a")).await);
        drop(g);
        drop(t.mutate("/a").await);
        assert!(t.is_empty(), "entries outlive their holders");
    }

    #[tokio::test]
    async fn readers_share() {
        let t = PathLocks::new();
        let _r1 = t.read("/a/b").await;
        let _r2 = t.read("/a/b").await;
        let _r3 = t.mutate("/a/b/c").await;
        assert!(blocks(t.mutate("/a/b")).await);
    }

    #[tokio::test]
    async fn a_rename_locks_both_ends() {
        let t = PathLocks::new();
        let g = t
            .paths(&[("/a/src", Mode::Write), ("/b/dst", Mode::Write)])
            .await;
        assert!(blocks(t.mutate("/a/src")).await);
        assert!(blocks(t.read("/b/dst/x")).await);
        drop(t.mutate("/a/other").await);
        drop(g);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_lock_is_taken_once_released() {
        let t = Arc::new(PathLocks::new());
        let g = t.mutate("/d").await;
        let t2 = Arc::clone(&t);
        let waiter = tokio::spawn(async move { drop(t2.mutate("/d/f").await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(g);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(t.is_empty());
    }

    /// Renames in both directions between random paths, deletes and creates, all at once:
    /// with one lock order nothing deadlocks, and every entry is gone afterwards.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crossing_operations_never_deadlock() {
        let t = Arc::new(PathLocks::new());
        let names = ["/a", "/a/b", "/a/b/c", "/b", "/b/a", "/c/a/b", "/c"];
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let t = Arc::clone(&t);
            tasks.push(tokio::spawn(async move {
                for _ in 0..300 {
                    let (x, y, two) = {
                        let mut rng = rand::rng();
                        (
                            names[rng.random_range(0..names.len())],
                            names[rng.random_range(0..names.len())],
                            rng.random_bool(0.5),
                        )
                    };
                    let g = if two {
                        t.paths(&[(x, Mode::Write), (y, Mode::Write)]).await
                    } else {
                        t.mutate(x).await
                    };
                    tokio::task::yield_now().await;
                    drop(g);
                }
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
            .await
            .expect("deadlock");
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn a_waiter_given_up_leaves_nothing_behind() {
        let t = PathLocks::new();
        let g = t.mutate("/a").await;
        // Waits on /a (read) with /a/b/c still to take; then is dropped mid-wait.
        assert!(blocks(t.mutate("/a/b/c")).await);
        assert_eq!(t.len(), 1, "only /a remains, held by g");
        drop(g);
        assert!(t.is_empty());
    }

    #[tokio::test]
    async fn chunk_locks_are_per_key() {
        let t: LockTable<u64> = LockTable::new();
        let g = t.write([7, 3, 7]).await;
        assert!(blocks(t.write([3])).await);
        drop(t.write([4]).await);
        drop(g);
        drop(t.write([3]).await);
        assert!(t.is_empty());
    }
}
