//! # Deletes in heartbeat replies ([`ChunkManager::to_delete`])
//!
//! A reply carries at most `MAX_DELETES_PER_REPLY` (1,024) deletes, the rest going with later
//! replies, each a `ChunkDelete { handle, below_version, unless_length }`: the server skips it
//! when its replica is at or above `below_version` (the report may predate a bump), or reached
//! `unless_length` (the sealed length) since its report.
//! - Orphans: chunks unknown to the master for `orphan_grace` (never one being allocated:
//!   allocation creates replicas before it logs), and at once the chunks of files purged from
//!   the trash.
//! - Stale replicas (an older version, or at the version but not at a sealed chunk's length),
//!   once a quorum of current live replicas elsewhere is at least as long (I2): a stale replica
//!   is never served nor copied, and would keep re-replication off its server.
//! - Corrupt replicas (reported by a read, the scrubber or a failed copy), once a quorum of good
//!   live replicas lives elsewhere (`below_version` = `u64::MAX`), so that the server can take a
//!   fresh copy; not while their server may still be restoring their bad blocks in place from
//!   the sources its report was given (`RESTORE_GRACE`, `Registry::is_restoring`).
//! - Extra replicas past `replication` (a rebalancing move, a copy that finished after a master
//!   restart, a server back after its chunks were copied): the holder using the largest share of
//!   its capacity (then the greatest id) drops its replica, never the primary of a live lease;
//!   replicas on draining servers stay and do not count.
//!
//! Every replica a reply deletes leaves the locations at once (`Registry::forget_replica`, here
//! and again once the heartbeat's own report is taken, in the service): another holder's
//! heartbeat before the next report cannot see one too many and drop a second (shares of
//! capacity change as copies land), and repair does not start catching up a replica on its way
//! out. No replica is deleted while a copy or catch-up into its server runs (`repair.cloning`):
//! the server checks a delete's conditions when the reply arrives and deletes a moment later,
//! so a catch-up ending in between would be deleted while the master counted it current.

use gfs_util::collections::{HashMap, HashSet};
use tokio::time::Instant;

use gfs_proto::v1::ChunkDelete;
use parking_lot::Mutex;

use super::*;
use crate::error::Result;
use crate::registry::ChunkMap;
use crate::registry::ChunkSet;
use crate::registry::{Replica, ServerInfo, Want};

/// Deletes one heartbeat reply carries at most.
pub(super) const MAX_DELETES_PER_REPLY: usize = 1024;

/// What the delete rules remember between heartbeats.
#[derive(Default)]
pub(super) struct Gc {
    /// Chunks of files deleted for good, and when: servers drop them on their next heartbeat
    /// (not after `orphan_grace`).
    pub(super) purged: Mutex<HashMap<u64, Instant>>,
    /// When each server first reported each replica the master does not know, by server.
    pub(super) unknown_since: Mutex<HashMap<String, ChunkMap<Instant>>>,
}

impl ChunkManager {
    /// Notes chunks of files deleted for good: servers drop them at once.
    pub fn purged(&self, handles: &[u64]) {
        let now = Instant::now();
        let mut p = self.gc.purged.lock();
        for h in handles {
            p.insert(*h, now);
        }
        let mut leases = self.lease.table.lock();
        for h in handles {
            leases.remove(h);
        }
    }

    /// Which of `server`'s reported replicas it should delete: chunks unknown to the master for
    /// longer than `orphan_grace` (never one being allocated), replicas of purged files, stale
    /// versions of chunks with a quorum of current live replicas elsewhere (a stale replica is
    /// never served nor copied, and would block a new copy on its server), corrupt replicas
    /// once a quorum of good ones lives elsewhere, and extra replicas past the goal.
    pub async fn to_delete(&self, server: &str, report: &[Replica]) -> Result<Vec<ChunkDelete>> {
        let handles: Vec<u64> = report.iter().map(|r| r.handle).collect();
        let versions = self
            .meta
            .read(move |ns| {
                handles
                    .iter()
                    .map(|h| ns.chunk(*h).map(Want::from))
                    .collect::<Vec<_>>()
            })
            .await?;
        let now = Instant::now();
        let mut out = Vec::new();
        let allocating = self.allocating.lock().clone();
        let purged = {
            let mut p = self.gc.purged.lock();
            // After the grace period the orphan rule covers them anyway.
            p.retain(|_, at| now.duration_since(*at) < self.cfg.orphan_grace);
            p.keys().copied().collect::<HashSet<u64>>()
        };
        // `report` may be one piece of a pass: what the server stopped reporting is forgotten
        // only when a pass completes (`forget_unreported`).
        let mut unknown_since = self.gc.unknown_since.lock();
        let unknown = unknown_since.entry(server.to_string()).or_default();
        // Chunks being copied or caught up into `server` (before the registry: repair locks
        // them in that order). Its replica there is not deleted meanwhile: a catch-up that
        // ends between this decision and the delete would see its work deleted while the
        // master counts it current (the CI rehearsal of 2026-12-06: "cs1 is counted but
        // holds no replica").
        let copying_in: HashSet<u64> = self
            .repair
            .cloning
            .lock()
            .iter()
            .filter(|(_, (_, target))| target == server)
            .map(|(h, _)| *h)
            .collect();
        // Lease primaries first: elsewhere the lease table is locked before the registry.
        let primaries: HashMap<u64, String> = self
            .lease
            .table
            .lock()
            .iter()
            .map(|(h, l)| (*h, l.primary.id.clone()))
            .collect();
        let mut reg = self.registry.lock();
        let draining = reg.draining();
        for (r, current) in report.iter().zip(versions) {
            if copying_in.contains(&r.handle) {
                continue;
            }
            if reg.is_corrupt(server, r.handle) {
                if reg.is_restoring(server, r.handle, now) {
                    // Its server is restoring the bad blocks in place from good copies.
                    continue;
                }
                // Deleted once a quorum of good replicas lives elsewhere (its server can then
                // take a fresh copy), each holding at least as much of a chunk still being
                // written: its other blocks may hold acknowledged appends (I2).
                let good = current.map_or(0, |w| {
                    reg.locations(r.handle, w)
                        .iter()
                        .filter(|(s, x)| {
                            s.id != server && (w.sealed.is_some() || x.length >= r.length)
                        })
                        .count()
                });
                if good >= self.cfg.quorum {
                    tracing::info!(server, handle = r.handle, "deleting a corrupt replica");
                    out.push(ChunkDelete {
                        handle: r.handle,
                        below_version: u64::MAX,
                        unless_length: None,
                    });
                }
                continue;
            }
            match current {
                None if purged.contains(&r.handle) => {
                    tracing::info!(
                        server,
                        handle = r.handle,
                        "deleting a replica of a purged file"
                    );
                    out.push(ChunkDelete {
                        handle: r.handle,
                        below_version: u64::MAX,
                        unless_length: None,
                    });
                }
                None if !allocating.contains(&r.handle) => {
                    let since = *unknown.entry(r.handle).or_insert(now);
                    if now.duration_since(since) >= self.cfg.orphan_grace {
                        tracing::info!(server, handle = r.handle, "deleting an orphan replica");
                        out.push(ChunkDelete {
                            handle: r.handle,
                            below_version: u64::MAX,
                            unless_length: None,
                        });
                    }
                }
                None => {}
                // Only once a quorum of current replicas elsewhere holds at least as much (of
                // a chunk still being written: a sealed one's current replicas hold exactly
                // its agreed length), so no acknowledged append ever loses a copy (I2).
                Some(w)
                    if w.is_stale(r)
                        && reg
                            .locations(r.handle, w)
                            .iter()
                            .filter(|(s, x)| {
                                s.id != server && (w.sealed.is_some() || x.length >= r.length)
                            })
                            .count()
                            >= self.cfg.quorum =>
                {
                    tracing::info!(
                        server,
                        handle = r.handle,
                        version = r.version,
                        length = r.length,
                        "deleting a stale replica"
                    );
                    // A replica at the version but short of the sealed length is stale too
                    // (I1): it never grows again, so it goes whatever its version's number.
                    let by_length = r.version == w.version;
                    out.push(ChunkDelete {
                        handle: r.handle,
                        below_version: w.version + u64::from(by_length),
                        unless_length: w.sealed.filter(|_| by_length),
                    });
                }
                Some(w) if w.is_stale(r) => {}
                // Ahead of the log on a sealed chunk (a fence that reached fewer than a quorum):
                // a sealed chunk takes no lease again, so no decision will fence it back into
                // the chunk's lineage. Its bytes are the sealed chunk's or garbage past it; it
                // goes once the goal's worth of current replicas lives elsewhere.
                Some(w)
                    if w.sealed.is_some()
                        && r.version > w.version
                        && reg
                            .locations(r.handle, w)
                            .iter()
                            .filter(|(s, _)| s.id != server)
                            .count()
                            >= self.cfg.replication =>
                {
                    unknown.remove(&r.handle);
                    tracing::info!(
                        server,
                        handle = r.handle,
                        version = r.version,
                        "deleting a replica of a sealed chunk left ahead of the log"
                    );
                    out.push(ChunkDelete {
                        handle: r.handle,
                        below_version: r.version.saturating_add(1),
                        unless_length: None,
                    });
                }
                Some(w) => {
                    let v = w.version;
                    unknown.remove(&r.handle);
                    // More current replicas than the goal (a rebalancing move, a copy that
                    // finished after a master restart, a server back after its chunks were
                    // copied): the holder using the largest share of its capacity (then the
                    // greatest id) drops its replica, unless it is the primary of a live lease.
                    // Replicas on draining servers stay until the server is stopped, and do
                    // not count.
                    let holders: Vec<_> = reg
                        .locations(r.handle, w)
                        .into_iter()
                        .filter(|(s, _)| !draining.contains(&s.id))
                        .collect();
                    let primary = primaries.get(&r.handle);
                    let share =
                        |s: &ServerInfo| s.used_bytes as f64 / s.capacity_bytes.max(1) as f64;
                    let extra = holders
                        .iter()
                        .map(|(s, _)| s)
                        .filter(|s| Some(&s.id) != primary)
                        .max_by(|a, b| share(a).total_cmp(&share(b)).then(a.id.cmp(&b.id)))
                        .map(|s| s.id.as_str());
                    if holders.len() > self.cfg.replication && extra == Some(server) {
                        tracing::info!(
                            server,
                            handle = r.handle,
                            holders = holders.len(),
                            "deleting an extra replica"
                        );
                        out.push(ChunkDelete {
                            handle: r.handle,
                            below_version: v + 1,
                            unless_length: None,
                        });
                    }
                }
            }
        }
        // Bounded per reply (the rest goes with later heartbeats, as the replicas are still
        // reported): a purge of many files never sends one server an unbounded list.
        out.truncate(MAX_DELETES_PER_REPLY);
        // Every replica told to go is gone from the locations now, not at this server's next
        // report: another holder's heartbeat in between must not see one replica too many
        // (its share of capacity may have become the largest meanwhile) and drop a second
        // one, and repair must not start catching up a replica on its way out (the delete
        // would take the caught-up copy with it while the master counted it). One the server
        // keeps after all (it became current first) is listed again by its next report.
        for d in &out {
            reg.forget_replica(server, d.handle);
        }
        Ok(out)
    }

    /// A pass of `server`'s chunk report completed, naming `reported`: replicas unknown to the
    /// master that it no longer holds are forgotten (a later one starts its grace period
    /// afresh). Linear in the server's unknown replicas.
    pub fn forget_unreported(&self, server: &str, reported: &ChunkSet) {
        let mut unknown_since = self.gc.unknown_since.lock();
        if let Some(unknown) = unknown_since.get_mut(server) {
            unknown.retain(|h, _| reported.contains(h));
            if unknown.is_empty() {
                unknown_since.remove(server);
            }
        }
    }
}
