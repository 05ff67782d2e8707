//! # Spare chunks
//!
//! A new chunk costs a round of `CreateChunk` calls (a WAL fsync on each server) before the
//! master can log it, and a small file pays that round inside its create. So the master keeps
//! up to `spare_chunks` chunks made ahead of need, and an allocation takes one instead of
//! making its own: the create then waits only for its log record (the first lease goes beside
//! it). Once half of them are taken, a refill in the background makes the missing ones at
//! once, so that their creations share each server's group commit (one WAL fsync for many).
//!
//! What it buys is latency, not work: the same creations are made, off the caller's path. A
//! writer making small files one after another waits about a millisecond less per file
//! (gfs-bench, one writer: the create 1.5 → 0.7 ms, 324 → 408 files/s); sixteen writers on
//! two cores already use all the machine, and there the time saved in the create moved to
//! the appends that follow (BENCHMARKS.md, issue 17).
//! The pool fills at the first allocation, not before: an idle master (a follower, a cluster
//! nobody writes) makes none.
//!
//! A spare is unknown to the log: its handle stays in `allocating` while it is kept, so it is
//! never deleted as an orphan nor judged by repair. One is used only when it was made on
//! `replication` servers, all of which still take new chunks on the data directory they had
//! then (a server back on an empty disk lost it); any other is dropped, its handle taken out
//! of `allocating`, and its replicas are orphans, deleted after `orphan_grace` like those of a
//! failed allocation. Spares do not age out: kept until used, they cost one empty file per
//! replica, where an age limit made a cluster that creates a file every few minutes drop and
//! make the whole pool again at each one. A term's spares live in its `ChunkManager`: a
//! master that stops or loses its leadership leaves them as orphans, and one elected again
//! starts with none, so no spare outlives the term whose collector spares it.
//!
//! The first lease of a spare is granted at version 1 without a bump as for any new chunk
//! (`alloc`): every server it was made on is in the lease.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gfs_util::collections::HashSet;
use parking_lot::Mutex;

use super::alloc::rand_handle;
use super::{ChunkManager, ChunkserverControl};
use crate::metastore::MetaStore;
use crate::registry::{Registry, ServerInfo};

/// A chunk made ahead of need at version 1, empty, on every server of `servers`.
pub(super) struct Spare {
    pub(super) handle: u64,
    pub(super) servers: Vec<ServerInfo>,
    /// Each server's data directory identity when the chunk was made (0: unknown).
    disks: Vec<u64>,
}

/// The spares a term's chunk manager keeps, and whether a refill runs.
#[derive(Default)]
pub(super) struct Spares {
    kept: Mutex<VecDeque<Spare>>,
    filling: AtomicBool,
}

/// What a refill needs of its chunk manager, owned, so that it runs in a task of its own.
struct Filler {
    spares: Arc<Spares>,
    allocating: Arc<Mutex<HashSet<u64>>>,
    registry: Arc<Mutex<Registry>>,
    meta: Arc<MetaStore>,
    control: Arc<dyn ChunkserverControl>,
    want: usize,
    replication: usize,
}

impl ChunkManager {
    /// Takes a spare chunk that can be used now (see the module docs), dropping those that
    /// cannot, and starts a refill once half are gone; `None` when spares are off or none is
    /// usable. Its handle is in `allocating`.
    pub(super) fn take_spare(&self) -> Option<Spare> {
        if self.cfg.spare_chunks == 0 {
            return None;
        }
        let taken = loop {
            let Some(s) = self.spares.kept.lock().pop_front() else {
                break None;
            };
            let usable = {
                let reg = self.registry.lock();
                s.servers.len() >= self.cfg.replication
                    && s.servers.iter().zip(&s.disks).all(|(srv, disk)| {
                        reg.takes_new(&srv.id) && reg.disk_id(&srv.id) == Some(*disk)
                    })
            };
            if usable {
                break Some(s);
            }
            tracing::debug!(
                handle = s.handle,
                "a spare chunk is no longer usable: dropped"
            );
            self.allocating.lock().remove(&s.handle);
        };
        if self.spares.kept.lock().len() <= self.cfg.spare_chunks / 2 {
            self.refill();
        }
        taken
    }

    /// Starts making the missing spares in the background, unless a refill runs.
    fn refill(&self) {
        if self.spares.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let f = Filler {
            spares: Arc::clone(&self.spares),
            allocating: Arc::clone(&self.allocating),
            registry: Arc::clone(&self.registry),
            meta: Arc::clone(&self.meta),
            control: Arc::clone(&self.control),
            want: self.cfg.spare_chunks,
            replication: self.cfg.replication,
        };
        tokio::spawn(async move {
            f.fill().await;
            f.spares.filling.store(false, Ordering::Release);
        });
    }

    /// The spares kept now (for tests and the status of a term).
    #[cfg(test)]
    pub(super) fn spare_handles(&self) -> Vec<u64> {
        self.spares.kept.lock().iter().map(|s| s.handle).collect()
    }
}

impl Filler {
    /// Makes spares until `want` are kept; stops early when a creation fails or too few
    /// servers take new chunks (the next allocation that takes a spare tries again).
    async fn fill(&self) {
        loop {
            let missing = self.want.saturating_sub(self.spares.kept.lock().len());
            if missing == 0 {
                return;
            }
            let made = futures::future::join_all((0..missing).map(|_| self.make_one())).await;
            if made.iter().any(|ok| !ok) {
                return;
            }
        }
    }

    /// Makes one spare; whether it was made on `replication` servers and kept.
    async fn make_one(&self) -> bool {
        let (servers, disks) = {
            let reg = self.registry.lock();
            let servers = reg.place(self.replication);
            let disks: Vec<u64> = servers
                .iter()
                .map(|s| reg.disk_id(&s.id).unwrap_or(0))
                .collect();
            (servers, disks)
        };
        if servers.len() < self.replication {
            return false;
        }
        let handle = loop {
            let h = rand_handle();
            if !self.meta.peek(move |ns| ns.chunk(h).is_some()) && self.allocating.lock().insert(h)
            {
                break h;
            }
        };
        let created = super::control::create_on(&*self.control, servers.clone(), handle, 1).await;
        if created.len() < servers.len() {
            // The replicas made are orphans, deleted after the grace period.
            self.allocating.lock().remove(&handle);
            return false;
        }
        self.spares.kept.lock().push_back(Spare {
            handle,
            servers,
            disks,
        });
        true
    }
}
