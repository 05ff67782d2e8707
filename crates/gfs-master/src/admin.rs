//! What operators ask of the master: the cluster report and fsck (decommissioning is in
//! `chunks::drain`), as [`crate::report`] types.
//!
//! The report is everything operators see (the status page, `/metrics` gauges, `gfs admin
//! report`): one pass over the namespace for the counts, and one over the servers' reports for
//! chunk health, not one per chunk; `warming_up` during the first `dead_after` after the start.
//! `/health` uses [`ChunkManager::liveness`] instead, which makes no pass at all.

use std::sync::atomic::Ordering;
use tokio::time::Instant;

use crate::chunks::{ChunkHealth, ChunkManager};
use crate::error::Result;
use crate::registry::{ChunkMap, Want};
use crate::report::{ClusterReport, FileHealth, FsckReport, ServerCondition, ServerReport};
use crate::trash::TRASH;

impl ChunkManager {
    /// The cluster summary, every registered chunkserver, and recent events.
    pub async fn report(&self) -> Result<ClusterReport> {
        let (metas, (files, directories), trash_entries) = self
            .meta
            .read(|ns| {
                (
                    ns.chunk_metas(),
                    ns.counts(),
                    ns.list(TRASH).map_or(0, |l| l.len() as u64),
                )
            })
            .await?;
        let goal = self.cfg.replication;
        let versions: ChunkMap<Want> = metas.iter().map(|(h, m)| (*h, Want::from(*m))).collect();
        let cloning = self.repair.cloning.lock().clone();
        let copied = self.repair.copied.lock().clone();
        // One pass over the servers' reports for each figure, not one per chunk.
        let reg = self.registry.lock();
        let draining = reg.draining();
        let counts = reg.holder_counts(&versions, &draining);
        let stale_replicas = reg
            .stale(|h| versions.get(&h).copied())
            .iter()
            .filter(|(id, _)| reg.is_alive(id))
            .count() as u64;
        let events = reg.events.newest_first();
        let warming_up = self.started.elapsed() < reg.dead_after();
        let snapshot = reg.snapshot(Instant::now());
        drop(reg);
        let mut servers = Vec::new();
        let (mut capacity_bytes, mut used_bytes) = (0, 0);
        for s in snapshot {
            let id = s.info.id.clone();
            let state = if !s.alive {
                ServerCondition::Dead
            } else if s.disk_lost {
                ServerCondition::DiskLost
            } else if s.draining {
                if self.left_on(&id, &counts, &versions) == 0 {
                    ServerCondition::Drained
                } else {
                    ServerCondition::Draining
                }
            } else {
                ServerCondition::Alive
            };
            if s.alive && !s.disk_lost {
                capacity_bytes += s.info.capacity_bytes;
                used_bytes += s.info.used_bytes;
            }
            let (copied_in_bytes, copied_out_bytes) = copied.get(&id).copied().unwrap_or_default();
            servers.push(ServerReport {
                copies_in: cloning.values().filter(|(_, t)| *t == id).count() as u32,
                copies_out: cloning.values().filter(|(f, _)| *f == id).count() as u32,
                copied_in_bytes,
                copied_out_bytes,
                id,
                data_addr: s.info.data_addr,
                repl_addr: s.info.repl_addr,
                rack: s.info.rack,
                state,
                since_heartbeat: s.since_heartbeat,
                chunks: s.replicas.len() as u64,
                capacity_bytes: s.info.capacity_bytes,
                used_bytes: s.info.used_bytes,
            });
        }
        let current = |h: &u64| counts.get(h).map_or(0, |c| c.all as usize);
        let under_replicated = metas.iter().filter(|(h, _)| current(h) < goal).count() as u64;
        let lost = metas.iter().filter(|(h, _)| current(h) == 0).count() as u64;
        Ok(ClusterReport {
            generated_unix_ms: self.cfg.clock.now_ms(),
            capacity_bytes,
            used_bytes,
            files,
            directories,
            chunks: metas.len() as u64,
            under_replicated,
            lost,
            stale_replicas,
            repair_queue: self.repair.queue.load(Ordering::Acquire),
            copies_in_flight: cloning.len() as u64,
            trash_entries,
            replication_goal: goal as u32,
            servers,
            events,
            master_uptime: self.started.elapsed(),
            warming_up,
            insecure: self.cfg.insecure,
            masters: self.meta.masters(),
        })
    }

    /// Live chunkservers, and chunks the last re-replication pass found lost: what `/health`
    /// says, without a pass over the namespace.
    pub fn liveness(&self) -> (usize, usize) {
        let alive = self.registry.lock().live().len();
        (alive, self.repair.lost.lock().len())
    }

    /// Every file at or under `path` (a file or a directory), and the chunks of each that are
    /// short of the goal, lost, or have stale or corrupt replicas.
    pub async fn fsck(&self, path: &str) -> Result<FsckReport> {
        let p = path.to_string();
        let files = self
            .meta
            .read(move |ns| {
                ns.stat(&p).map(|_| {
                    ns.files_under(&p)
                        .into_iter()
                        .map(|(path, chunks)| {
                            let chunks: Vec<(u64, Want)> = chunks
                                .iter()
                                .map(|h| (*h, ns.chunk(*h).map_or(Want::from(0), Want::from)))
                                .collect();
                            (path, chunks)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .await??;
        let goal = self.cfg.replication;
        let reg = self.registry.lock();
        let mut report = FsckReport {
            files: files.len() as u64,
            replication_goal: goal as u32,
            ..FsckReport::default()
        };
        for (path, chunks) in files {
            report.chunks += chunks.len() as u64;
            let bad: Vec<ChunkHealth> = chunks
                .iter()
                .enumerate()
                .filter_map(|(i, (handle, want))| {
                    let replicas = reg.health(*handle, *want);
                    let unhealthy =
                        replicas.current < goal || replicas.stale > 0 || replicas.corrupt > 0;
                    unhealthy.then_some(ChunkHealth {
                        index: i as u64,
                        handle: *handle,
                        version: want.version,
                        replicas,
                    })
                })
                .collect();
            if !bad.is_empty() {
                report.unhealthy.push(FileHealth { path, chunks: bad });
            }
        }
        Ok(report)
    }
}
