//! # Re-replication ([`ChunkManager::rereplicate`], every heartbeat interval)
//!
//! Nothing happens in the first `dead_after` after the start, until every server has had time
//! to report (no false "lost" alarm, no needless copy; like HDFS's safe mode). One pass over the
//! chunk map joined with the registry's reports (`Registry::holder_counts`: counts only, in
//! `ChunkMap`s with the foldhash hasher; a chosen chunk's sources are looked up then) finds the
//! chunks with fewer live current replicas than `replication`, replicas on draining servers not
//! counted, corrupt ones being restored in place counted until their restore ends
//! (`Registry::restoring_counts`). Repair order: live files before those under `/.trash`, then fewest current
//! replicas, then chunks a client asked for (`get_chunks`) while they were below the goal within
//! the last 60 s (`wanted`, at most 65,536 remembered: the paper's boost for chunks blocking
//! client progress), then handle. A chunk being written (unsealed, with a live, non-doomed
//! lease) waits until its lease runs out.
//!
//! Only sealed chunks are copied. A copy of an unsealed chunk would be as short as its source
//! and would have been in no append's quorum, so it and one short replica could pass for a
//! quorum at the next decision, which would then continue the chunk over acknowledged bytes
//! (I2). An unsealed chunk below its goal with no lease out, for which a server could take a
//! copy, is therefore noted (`to_seal`), and so is one with a replica reported corrupt (a
//! corrupt replica longer than the good ones cannot go while the chunk is unsealed); once it
//! has stayed so for a lease period (a writer that pauses keeps its chunk),
//! [`ChunkManager::settle`] seals it at the longest length a quorum of its replicas reports
//! after a fence (`fence_and_seal`), and the next pass copies it sealed.
//! Without a server to copy to, it is left to its next lease, which continues it.
//!
//! Each copy has a source among the live current holders (draining ones included) and a
//! target: a server holding the sealed chunk short at its version (`Registry::short_of`, a
//! prefix) catches up first, else `Registry::place_new` picks a live server holding no replica
//! of the chunk, least used, on a new rack if it can. At most `max_clones` copies run in the
//! cluster and two per server, as source or target (0 turns it off). The target gets
//! `CloneChunk { handle, version, source, sealed_length }` within `clone_timeout`, on a channel
//! of its own (the shared ones cut every call at `rpc_timeout`), and the master then notes the
//! new replica. A copy that fails with DATA_LOSS (the source failed its checksums, or ended
//! short of the sealed length) marks the source corrupt, and a later pass copies from another
//! holder. A chunk with no live current replica is logged as lost (an event; found again when
//! one returns), and `get_chunks` lists no replica for it.
//!
//! Known limit: the pass scans the whole chunk map every heartbeat interval, most of it inside
//! the registry lock (482 ms at 1,000,000 chunks; `BENCHMARKS.md`). Past a few hundred thousand
//! chunks it should be driven by events (a server dies, a report changes) with a slow full
//! sweep behind.
//!
//! # Rebalancing ([`ChunkManager::rebalance`], after each re-replication pass)
//!
//! Only when the last pass found every chunk at its goal, no copy is running, `max_clones` is
//! not 0 and `rebalance_threshold` (0.1) is positive. If the live servers' shares of capacity
//! (`used_bytes / capacity_bytes` from heartbeats) differ by more than the threshold, one sealed
//! chunk on the fullest server that the emptiest lacks, at its goal, and whose move would not
//! leave the full one emptier than the empty one (no ping-pong), is copied there. The chunk then
//! has one replica too many, and the extra-replica rule below drops the one on the server using
//! the largest share: copy first, delete after, never below the goal.

use gfs_util::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;
use tokio::time::Instant;

use parking_lot::Mutex;

use super::*;
use crate::error::Result;
use crate::namespace::ChunkMeta;
use crate::registry::ChunkMap;
use crate::registry::{Replica, ServerInfo, Want};

/// How long a chunk a client asked for stays boosted in the repair order.
pub(super) const BOOST_FOR: Duration = Duration::from_secs(60);

/// Bound on the boosted chunks remembered at once.
pub(super) const MAX_WANTED: usize = 65_536;

/// One chunk of a file and how its replicas stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHealth {
    /// Position in the file.
    pub index: u64,
    /// The chunk's handle.
    pub handle: u64,
    /// The master's current version of it.
    pub version: u64,
    /// Live replicas by state.
    pub replicas: crate::registry::ReplicaCounts,
}

/// What re-replication and rebalancing keep between passes.
#[derive(Default)]
pub(crate) struct Repair {
    /// Copies in flight: chunk -> (source, target) server ids.
    pub(crate) cloning: Mutex<HashMap<u64, (String, String)>>,
    /// Bytes copied into and out of each server since the master started.
    pub(crate) copied: Mutex<HashMap<String, (u64, u64)>>,
    /// Chunks the last pass found waiting for a copy.
    pub(crate) queue: AtomicU64,
    /// The last pass found chunks below the goal or above it: rebalancing waits for the
    /// cluster to settle.
    pub(super) unsettled: AtomicBool,
    /// Chunks with no live current replica, as last seen (logged when it changes).
    pub(crate) lost: Mutex<HashSet<u64>>,
    /// Chunks the last pass found with no live current replica: lost if the next finds them
    /// so too. A decision changes the log, then the registry (a seal logged, then its
    /// replicas noted sealed), and a pass reads one, then the other: one pass may see a
    /// healthy chunk between the two.
    pub(super) suspect: Mutex<HashSet<u64>>,
    /// Chunks a client asked for while they were below the goal, and when: repaired before
    /// others with as many replicas (the paper's boost for chunks blocking client progress).
    pub(super) wanted: Mutex<HashMap<u64, Instant>>,
    /// Unsealed chunks below the goal with no lease out (and a server that could take a copy),
    /// since when: once that is a lease period, `settle` seals them (when a quorum of their
    /// replicas answers), then they are copied as sealed chunks.
    pub(super) to_seal: Mutex<HashMap<u64, Instant>>,
}

impl ChunkManager {
    /// Starts copies of chunks with fewer live current replicas than `replication`, chunks of
    /// live files before those in the trash, fewest replicas first, bounded by `max_clones` in
    /// the cluster and two per server; nothing in the first `dead_after` after the start. A chunk being written
    /// (unsealed, with a live lease) waits for its lease to end. Chunks two passes in a row find
    /// with no live replica are logged as lost (and found again when a replica returns).
    pub async fn rereplicate(self: &Arc<Self>) {
        // Right after a start every chunk looks unreplicated until the servers report: wait
        // until each live server has had time to heartbeat (like HDFS's safe mode), so no
        // false "lost" alarm and no needless copy.
        let warm_up = self.registry.lock().dead_after();
        if self.started.elapsed() < warm_up {
            // Nor any rebalancing.
            self.repair
                .unsettled
                .store(true, std::sync::atomic::Ordering::Release);
            return;
        }
        let Ok((metas, trashed)) = self
            .meta
            .read(|ns| (ns.chunk_metas(), ns.chunks_under(crate::trash::TRASH)))
            .await
        else {
            return;
        };
        let versions: ChunkMap<Want> = metas.iter().map(|(h, m)| (*h, Want::from(*m))).collect();
        let now = self.cfg.clock.now();
        let (counts, restoring, draining) = {
            let reg = self.registry.lock();
            let draining = reg.draining();
            let counts = reg.holder_counts(&versions, &draining);
            let restoring = reg.restoring_counts(&versions, &draining, Instant::now());
            (counts, restoring, draining)
        };
        // Replicas on draining servers are sources, but do not count toward the goal; corrupt
        // replicas being restored in place do, until their restore ends.
        let counted = |h: &u64| {
            let restoring = restoring.get(h).map_or(0, |n| *n as usize);
            counts.get(h).map_or(0, |c| c.counted as usize) + restoring
        };
        let mut want = Vec::new();
        let extra = counts
            .values()
            .any(|c| c.all as usize > self.cfg.replication);
        let mut events = Vec::new();
        {
            let leases = self.lease.table.lock();
            let cloning = self.repair.cloning.lock();
            // A chunk being allocated may be in the log before its replicas are noted: not lost.
            let allocating = self.allocating.lock();
            let mut lost = self.repair.lost.lock();
            let mut suspect = self.repair.suspect.lock();
            let was_suspect = std::mem::take(&mut *suspect);
            for (h, m) in &metas {
                let have = counted(h);
                if allocating.contains(h) {
                    continue;
                }
                if counts.get(h).is_none_or(|c| c.all == 0) {
                    suspect.insert(*h);
                    if was_suspect.contains(h) && lost.insert(*h) {
                        tracing::error!(handle = %h, "chunk lost: no live replica holds its current version");
                        events.push((
                            "chunk-lost",
                            format!("chunk {h}: no live replica holds its current version"),
                        ));
                    }
                    continue;
                }
                if lost.remove(h) {
                    tracing::info!(handle = %h, replicas = have, "lost chunk found again");
                    events.push((
                        "chunk-found",
                        format!("chunk {h} found again ({have} replicas)"),
                    ));
                }
                if have >= self.cfg.replication || cloning.contains_key(h) {
                    continue;
                }
                let writing = m.sealed_length.is_none()
                    && leases.get(h).is_some_and(|l| l.expires > now && !l.doomed);
                if !writing {
                    want.push((have, *h, *m));
                }
            }
        }
        self.repair.unsettled.store(
            extra || !want.is_empty(),
            std::sync::atomic::Ordering::Release,
        );
        self.repair
            .queue
            .store(want.len() as u64, std::sync::atomic::Ordering::Release);
        // A draining server whose every chunk has its goal elsewhere is safe to stop.
        for id in &draining {
            let left = self.left_on(id, &counts, &versions);
            let mut drained = self.drain.drained.lock();
            if left == 0 && drained.insert(id.clone()) {
                tracing::info!(id, "decommissioned chunkserver drained: safe to stop");
                events.push((
                    "drained",
                    format!("chunkserver {id} is drained: safe to stop"),
                ));
            } else if left > 0 {
                drained.remove(id);
            }
        }
        if !events.is_empty() {
            let mut reg = self.registry.lock();
            for (kind, text) in events {
                reg.events.push(kind, text);
            }
        }
        // Live files before the trash, then fewest replicas first, then chunks clients asked
        // for lately.
        let wanted = {
            let below: HashSet<u64> = want.iter().map(|w| w.1).collect();
            let mut wanted = self.repair.wanted.lock();
            wanted.retain(|h, at| at.elapsed() < BOOST_FOR && below.contains(h));
            wanted.clone()
        };
        want.sort_by_key(|(have, h, _)| (trashed.contains(h), *have, !wanted.contains_key(h), *h));
        let mut unsealed = HashSet::default();
        for (_, handle, m) in want {
            // Sources: every live current holder, draining ones included.
            let from: Vec<ServerInfo> = self.registry.lock().holders_of(handle, m);
            if from.is_empty() {
                continue;
            }
            if m.sealed_length.is_none() {
                // Never copied unsealed: the copy would become a replica that was in no
                // append's quorum, as short as its source, and two such could pass for a
                // quorum at the next decision, which would continue the chunk over
                // acknowledged bytes (I2; soak seed 13538366429911670341). Sealed first, at the
                // longest length a quorum reports after a fence, then copied; only when a
                // server could take the copy (else the chunk may as well continue), and once
                // it has had no lease for a lease period (a writer pausing keeps its chunk).
                if self.cfg.max_clones > 0
                    && self
                        .registry
                        .lock()
                        .place_new(handle, &from, |_| false)
                        .is_some()
                {
                    unsealed.insert(handle);
                }
                continue;
            }
            let from = &from;
            let pick = {
                let mut cloning = self.repair.cloning.lock();
                if cloning.len() >= self.cfg.max_clones {
                    // No copy starts now; unsealed chunks further on are still noted above.
                    continue;
                }
                let busy =
                    |id: &str| cloning.values().filter(|(s, t)| s == id || t == id).count() >= 2;
                let source = from.iter().find(|s| !busy(&s.id)).cloned();
                // A server holding a prefix of the chunk (short at its version, e.g. left
                // behind when the master sealed the chunk) catches up first: otherwise, with
                // stale replicas on every other server, the chunk would find no target.
                let target = source.as_ref().and_then(|_| {
                    let reg = self.registry.lock();
                    let short = reg.short_of(handle, m);
                    match short.into_iter().find(|s| !busy(&s.id)) {
                        Some(t) => Some((t, true)),
                        None => reg.place_new(handle, from, busy).map(|t| (t, false)),
                    }
                });
                match (source, target) {
                    (Some(s), Some((t, catch_up))) => {
                        cloning.insert(handle, (s.id.clone(), t.id.clone()));
                        Some((s, t, catch_up))
                    }
                    _ => None,
                }
            };
            let Some((source, target, catch_up)) = pick else {
                continue;
            };
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.clone_one(handle, m, source, target, catch_up).await;
                me.repair.cloning.lock().remove(&handle);
            });
        }
        // An unsealed chunk with a corrupt replica no restore mended (longer than every good
        // one, say: its tail was never acknowledged, and it cannot go while the good ones are
        // shorter) is sealed too once unleased for a lease period; then it goes (seed 40853).
        let rotten = self.registry.lock().corrupt_chunks();
        {
            let leases = self.lease.table.lock();
            let now = self.cfg.clock.now();
            for h in rotten {
                let open = versions.get(&h).is_some_and(|w| w.sealed.is_none());
                let writing = leases.get(&h).is_some_and(|l| l.expires > now && !l.doomed);
                if open && !writing {
                    unsealed.insert(h);
                }
            }
        }
        // A chunk that got a lease, reached its goal, was sealed or mended starts over.
        let mut to_seal = self.repair.to_seal.lock();
        to_seal.retain(|h, _| unsealed.contains(h));
        let now = Instant::now();
        for h in unsealed {
            to_seal.entry(h).or_insert(now);
        }
    }

    /// One move at a time, once every chunk is at its goal: copies a sealed chunk from the
    /// server using the largest share of its capacity to the one using the smallest, when they
    /// differ by more than `rebalance_threshold`. The chunk then has one replica too many, and
    /// the heartbeat reply drops the one on the fullest server: the copy comes first, so no
    /// chunk goes below the goal.
    pub async fn rebalance(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.cfg.rebalance_threshold <= 0.0
            || self.cfg.max_clones == 0
            || self.repair.unsettled.load(Ordering::Acquire)
            || !self.repair.cloning.lock().is_empty()
        {
            return;
        }
        let usage = self.registry.lock().usage();
        let by = |a: &&(ServerInfo, f64), b: &&(ServerInfo, f64)| a.1.total_cmp(&b.1);
        let (Some(full), Some(empty)) = (usage.iter().max_by(by), usage.iter().min_by(by)) else {
            return;
        };
        if full.1 - empty.1 <= self.cfg.rebalance_threshold {
            return;
        }
        let (full, empty) = (full.0.clone(), empty.0.clone());
        let sealed: Vec<u64> = self
            .registry
            .lock()
            .replicas_of(&full.id)
            .into_iter()
            .filter(|r| r.sealed)
            .map(|r| r.handle)
            .collect();
        let metas = {
            let handles = sealed.clone();
            match self
                .meta
                .read(move |ns| handles.iter().map(|h| ns.chunk(*h)).collect::<Vec<_>>())
                .await
            {
                Ok(m) => m,
                Err(_) => return,
            }
        };
        let pick = {
            let reg = self.registry.lock();
            sealed.into_iter().zip(metas).find_map(|(h, m)| {
                let m = m.filter(|m| m.sealed_length.is_some())?;
                // Only a move that leaves the full server at least as full as the empty one:
                // no ping-pong.
                let len = m.sealed_length.unwrap_or(0);
                let after = |s: &ServerInfo, delta: i128| {
                    (s.used_bytes as i128 + delta) as f64 / s.capacity_bytes.max(1) as f64
                };
                if after(&full, -(len as i128)) < after(&empty, len as i128) {
                    return None;
                }
                let holders = reg.locations(h, m);
                let here = holders.iter().any(|(s, _)| s.id == full.id);
                let there = holders.iter().any(|(s, _)| s.id == empty.id);
                (here && !there && holders.len() == self.cfg.replication).then_some((h, m))
            })
        };
        let Some((handle, m)) = pick else {
            return;
        };
        self.repair
            .cloning
            .lock()
            .insert(handle, (full.id.clone(), empty.id.clone()));
        tracing::info!(%handle, from = %full.id, to = %empty.id, "rebalancing");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.clone_one(handle, m, full, empty, false).await;
            me.repair.cloning.lock().remove(&handle);
        });
    }

    /// Copies `handle` from `source` to `target` and records the new replica; with
    /// `catch_up`, extends `target`'s shorter replica at the version instead (sealing it at the
    /// chunk's sealed length).
    pub(super) async fn clone_one(
        &self,
        handle: u64,
        m: ChunkMeta,
        source: ServerInfo,
        target: ServerInfo,
        catch_up: bool,
    ) {
        let started = Instant::now();
        tracing::info!(%handle, from = %source.id, to = %target.id, catch_up, "re-replicating");
        let copy = ChunkCopy {
            handle,
            version: m.version,
            source: source.repl_addr.clone(),
            sealed_length: m.sealed_length,
            catch_up,
        };
        match self.control.copy_chunk(&target, copy).await {
            Ok(length) => {
                self.registry.lock().note_replica(
                    &target.id,
                    Replica {
                        handle,
                        version: m.version,
                        length,
                        sealed: m.sealed_length.is_some(),
                    },
                );
                tracing::info!(%handle, to = %target.id, length, took = ?started.elapsed(), "chunk re-replicated");
                self.registry.lock().events.push(
                    "repaired",
                    format!(
                        "chunk {handle} copied from {} to {} ({length} bytes in {:?})",
                        source.id,
                        target.id,
                        started.elapsed()
                    ),
                );
                self.metrics.copied_bytes.inc_by(length);
                let mut copied = self.repair.copied.lock();
                copied.entry(target.id.clone()).or_default().0 += length;
                copied.entry(source.id.clone()).or_default().1 += length;
            }
            Err(ControlError::DataLoss(why)) => {
                // The source's replica is bad (its checksums failed, or it ended short of the
                // sealed length): treat it as corrupt and copy from another.
                tracing::error!(%handle, source = %source.id, error = %why, "re-replication source is corrupt");
                let mut reg = self.registry.lock();
                reg.mark_corrupt(&source.id, handle);
                reg.events
                    .push("corrupt", format!("chunk {handle} on {}: {why}", source.id));
            }
            Err(e) => {
                tracing::warn!(%handle, from = %source.id, to = %target.id, error = %e, "re-replication failed; will retry");
            }
        }
    }

    /// The replicas of each chunk of the file at `path`, by state, as the live servers last
    /// reported them.
    pub async fn health(&self, path: &str) -> Result<Vec<ChunkHealth>> {
        let p = path.to_string();
        let chunks = self
            .meta
            .read(move |ns| {
                ns.chunks_of(&p).map(|c| {
                    c.iter()
                        .map(|h| (*h, ns.chunk(*h).map_or(Want::from(0), Want::from)))
                        .collect::<Vec<_>>()
                })
            })
            .await??;
        let reg = self.registry.lock();
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(i, (handle, want))| ChunkHealth {
                index: i as u64,
                handle,
                version: want.version,
                replicas: reg.health(handle, want),
            })
            .collect())
    }
}
