//! # Leases
//!
//! One primary per chunk. `append_chunk` hands out the current lease again while its primary is
//! alive and it has more than a second to run; an unexpired lease of a dead primary, or a
//! doomed one, is waited out ([`lease_decision`]): within the call when it ends within
//! `IN_CALL_WAIT` (3 s, a retrying client's longest pause), else UNAVAILABLE. A new lease needs a quorum of
//! live replicas at the master's version. The master asks each live holder for its committed
//! length (`ReportChunks` naming just that chunk), those reported lagging too: every replica at
//! one version holds a prefix of one sequence of appends, so the ones behind first catch up
//! from a holder of the longest (`CloneChunk` with `catch_up`, within `clone_timeout` on a
//! channel of its own); the chunkserver drops what is still staged for the chunk (leftovers of
//! a dead primary) and replays the source's appends from its own length. Those that reach the
//! longest length count; the others go stale. So a chunk with one replica at the longest length
//! and one behind continues instead of being sealed short.
//!
//! The bump (`bump_and_grant`) sets the next version on those replicas first (`fence`): each
//! answers its committed length once the new version is durable there, so it is fenced and
//! that length is final for the old version (finding 4: an append committed between a length
//! query and the bump is never left on one replica). Only the replicas at the longest of those
//! lengths continue; shorter ones catch up at the new version or are left out of the lease.
//! Then the version is logged with the primary chosen (`SetVersionOp.primary`: the first at the
//! longest length, in the caller's order), and the lease is granted to it with the others as
//! secondaries. A crash between the bump and the log leaves replicas one version ahead of the
//! log, and the master adopts that version once a quorum of them report it, naming no primary:
//! no lease was granted at it (`adopt_reports`; a report further ahead is ignored). A bump that
//! reached fewer (a fence cut short, perhaps on a short replica alone) is not adopted: the next
//! decision on the chunk fences every replica past it and keeps the longest (`lineage`).
//! Every grant thus follows
//! a durable record naming its version and primary (`ChunkMeta::primary`, 0 when unknown), so
//! after a restart the only lease that can still be in force on a chunk is the one at its
//! logged version held by its logged primary.
//!
//! Heartbeats extend only the leases whose primary reports the chunk `writing` (an append
//! within two heartbeat intervals), so an idle lease runs out and the chunk can be copied or
//! moved.
//!
//! # After a restart (I5)
//!
//! Each chunkserver lists the leases it holds when it registers (`HeldLease`: handle, version,
//! expiry, secondaries' replication addresses; `reports_leases` says the list is complete).
//! Under each chunk's decision lock (`adopt_leases`), a reported lease at the chunk's logged
//! version, naming the reporting server as logged primary, unexpired, on an unsealed chunk, is
//! adopted as it is (handed out again, extended by heartbeats, no bump; secondaries not
//! registered yet are filled in when they are); any other unexpired one is entered doomed
//! (waited out, never extended nor handed out); a lease this process already decided on is left
//! alone if the server reports it, and dropped if not (the server restarted, and its leases
//! died with its process: the next append gets a new lease, with a bump). Then the server
//! counts as reported, so its other chunks can be leased at once. A chunk
//! this process did not allocate, whose logged primary has not reported (it has not registered,
//! is an older server, or is unknown), gets no lease until one lease period after this process
//! started, by its own monotonic clock: no skew to allow for (`append_chunk`). Only the master
//! grants leases and this one grants none on a server's logged chunks before that server's
//! report, so a report cannot miss one: never two primaries at once.
//!
//! # A dead primary's lease
//!
//! A lease whose primary the registry counts dead is fenced out rather than waited out: the
//! next `AppendChunk` decides as if no lease were out, and its fence must leave the old
//! lease's version on fewer than a quorum of its members (`ChunkManager::left_in_lease`,
//! checked by every fence), so the old primary can commit nothing more wherever it is.
//!
//! # Lagging replicas
//!
//! A primary's heartbeat lists the secondaries that missed a phase. A new report triggers an
//! immediate bump ([`ChunkManager::relegate_lagging`]): the good replicas (live, at the version,
//! not reported lagging), the primary first so that it keeps the lease, go to the next version
//! and the lease is granted again at it; the lagging one is stale from then on. Reports are
//! kept per `(chunk, replication address)` with the lease version they were made at (a fresh
//! copy at that address after the bump is good again); a failed relegation forgets them, so the
//! primary's next report retries it. When the good replicas fall below a quorum the lease is
//! marked doomed: no longer extended nor handed out, so it runs out first. When they fall
//! below the replication goal and a new chunk can be placed in full on servers that did not
//! fail this one ([`ChunkManager::better_ended`]), the chunk is fenced and sealed at once
//! instead (its lease ends with the fence), copied back to its goal like any sealed chunk, and
//! the file goes on in a new chunk; a lease decision with too few replicas at the longest
//! length does the same (`append_chunk`).

use gfs_util::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use gfs_proto::v1::ChunkLease;
use parking_lot::Mutex;

use super::version::Longest;
use super::*;
use crate::error::Result;
use crate::record::{Op, SetVersionOp};
use crate::registry::ServerInfo;

pub(super) struct Granted {
    pub(super) version: u64,
    pub(super) primary: ServerInfo,
    /// An adopted lease names its secondaries by replication address only until they
    /// register (`id` empty): see `resolve_secondaries`.
    pub(super) secondaries: Vec<ServerInfo>,
    pub(super) expires: SystemTime,
    /// Where the chunk sits in its file, as the last AppendChunk found it (an adopted lease
    /// learns it from the first AppendChunk that hands it out).
    pub(super) at: Position,
    /// Too few good replicas are left to continue the chunk: the lease is no longer extended
    /// nor handed out, and once it runs out the file moves on to a new chunk.
    pub(super) doomed: bool,
}

/// Where a chunk sits in its file.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Position {
    /// Index of the chunk in the file.
    pub(super) index: u64,
    /// Where it starts in the file: the sum of the sealed lengths of the earlier chunks.
    pub(super) file_offset: u64,
}

/// A lease a chunkserver reports holding as primary when it registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The chunk.
    pub handle: u64,
    /// The version the lease is at.
    pub version: u64,
    /// When it ends (the time the master granted or last extended it to).
    pub expires: SystemTime,
    /// Replication-plane addresses of its secondaries.
    pub secondaries: Vec<String>,
}

/// What to do about the lease of a chunk at `version`.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The current lease is good: hand it out again.
    Reuse,
    /// A new lease may be granted.
    Grant,
    /// Another primary may still hold a lease until then: never two primaries at once
    /// (unless the caller fences that lease out: `append_chunk` does for a dead primary).
    WaitUntil(SystemTime),
}

/// Decides on a lease given the existing one (`(version, expiry)`), the chunk's version,
/// whether the existing primary is alive, and the time.
pub fn lease_decision(
    existing: Option<(u64, SystemTime)>,
    version: u64,
    primary_alive: bool,
    now: SystemTime,
) -> LeaseDecision {
    match existing {
        None => LeaseDecision::Grant,
        Some((_, expires)) if expires <= now => LeaseDecision::Grant,
        // Reused only with a margin, so a client does not get a lease about to lapse.
        Some((v, expires))
            if v == version && primary_alive && expires > now + Duration::from_secs(1) =>
        {
            LeaseDecision::Reuse
        }
        Some((_, expires)) => LeaseDecision::WaitUntil(expires),
    }
}

/// The lease table and what the master knows of leases from before its start.
#[derive(Default)]
pub(super) struct Leases {
    /// The lease of each chunk, as granted, adopted or waited out.
    pub(super) table: Mutex<HashMap<u64, Granted>>,
    /// Chunks allocated by this master process: no lease from before can exist on them.
    pub(super) fresh: Mutex<HashSet<u64>>,
    /// Servers that reported the leases they hold when they registered with this master
    /// process: the lease table is complete for the chunks whose logged primary is one of
    /// them (`append_chunk`, `adopt_leases`).
    pub(super) reported: Mutex<HashSet<String>>,
    /// `(chunk, replication address)` of replicas a primary reported as lagging, with the
    /// lease version of the report: left out of the next version bump, so they become stale.
    pub(super) lagging: Mutex<HashMap<(u64, String), u64>>,
}

impl ChunkManager {
    /// Bumps the version on `replicas` (then in the log) and grants the lease to the first,
    /// with the others as secondaries. Needs a quorum of them to take the new version.
    pub(super) async fn bump_and_grant(
        &self,
        handle: u64,
        version: u64,
        at: Position,
        replicas: Vec<ServerInfo>,
    ) -> Result<ChunkLease> {
        // Every new lease bumps the version on the replicas, then in the log.
        let super::version::Fence {
            version: new_version,
            replicas: bumped,
            sealed,
            ..
        } = self.fence(handle, version, replicas).await?;
        if let Some(length) = sealed {
            // Its primary sealed it before the fence: no lease on it; the next call goes on
            // in the next chunk.
            tracing::warn!(%handle, length, "the fence found replicas sealed: the chunk ends there");
            self.keep_seal(handle, new_version, length, bumped).await?;
            return Err(unavailable(format!(
                "chunk {handle} was found sealed at {length}: it is sealed there; ask again"
            )));
        }
        // Only replicas at the longest length continue; shorter ones catch up from one of
        // them at the new version, or are left out of the lease (I1, I2). The primary is the
        // first at the longest length in the caller's order (the current primary first), and
        // the log names it: after a restart the master asks that server whether the lease is
        // still in force (I5).
        let length = bumped.iter().map(|(_, l)| *l).max().unwrap_or(0);
        let (mut at_max, behind): (Vec<_>, Vec<_>) =
            bumped.iter().cloned().partition(|(_, l)| *l == length);
        let primary = at_max
            .first()
            .map(|(s, _)| s.id.clone())
            .unwrap_or_default();
        // A lease may be in force at the new version from here on: no earlier primary's word
        // bounds what it acknowledges.
        self.forget_word(handle);
        self.meta
            .mutate(Op::SetVersion(SetVersionOp {
                handle,
                version: new_version,
                primary: primary.clone(),
            }))
            .await?;
        self.last_lease.lock().insert(handle, new_version);
        self.note_unsealed(handle, new_version, behind.iter().map(|(s, l)| (s, *l)));
        let mut holders: Vec<ServerInfo> = at_max.drain(..).map(|(s, _)| s).collect();
        self.note_unsealed(handle, new_version, holders.iter().map(|s| (s, length)));
        if !behind.is_empty() {
            tracing::warn!(%handle, length, behind = behind.len(), "replicas came out of the bump shorter than the longest: catching them up");
            let longest = Longest {
                holders: holders.clone(),
                behind: behind.into_iter().map(|(s, _)| s).collect(),
                answered: bumped.len(),
                length,
            };
            holders.extend(self.catch_up(handle, new_version, &longest).await);
            if holders
                .iter()
                .any(|s| self.registry.lock().is_corrupt(&s.id, handle))
            {
                // The catch-up's source failed its checksums: its length is no one's to
                // continue from. The next decision goes without it.
                return Err(unavailable(format!(
                    "chunk {handle}: its longest replica failed its checksums; deciding again"
                )));
            }
            // The logged primary first, then the caller's order.
            let order: Vec<String> = bumped.iter().map(|(s, _)| s.id.clone()).collect();
            holders.sort_by_key(|s| (s.id != primary, order.iter().position(|id| *id == s.id)));
        }
        if holders.len() < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle}: only {} replicas hold its longest length {length} at version {new_version}",
                holders.len()
            )));
        }
        // The bump relegated every replica reported lagging at the old version.
        self.lease
            .lagging
            .lock()
            .retain(|(h, _), v| *h != handle || *v >= new_version);
        self.grant(handle, new_version, at, holders).await
    }

    /// Grants the lease of `handle` at `version` to the first of `replicas`, with the others
    /// as secondaries.
    pub(super) async fn grant(
        &self,
        handle: u64,
        new_version: u64,
        at: Position,
        replicas: Vec<ServerInfo>,
    ) -> Result<ChunkLease> {
        let granted = self.send_grant(handle, new_version, at, replicas).await?;
        Ok(self.note_grant(handle, granted))
    }

    /// Gives the lease of `handle` at `version` to the first of `replicas` (the others its
    /// secondaries), not yet noted in the lease table ([`ChunkManager::note_grant`]).
    pub(super) async fn send_grant(
        &self,
        handle: u64,
        new_version: u64,
        at: Position,
        replicas: Vec<ServerInfo>,
    ) -> Result<Granted> {
        let Some((primary, secondaries)) = replicas.split_first() else {
            return Err(unavailable(format!("chunk {handle}: no replica to lease")));
        };
        let (primary, secondaries) = (primary.clone(), secondaries.to_vec());
        let expires = self.cfg.clock.now() + self.cfg.lease;
        let grant = LeaseGrant {
            handle,
            version: new_version,
            secondaries: secondaries.iter().map(|s| s.repl_addr.clone()).collect(),
            expires,
        };
        self.control
            .grant_lease(&primary, grant)
            .await
            .map_err(|e| unavailable(format!("granting the lease to {}: {e}", primary.id)))?;
        Ok(Granted {
            version: new_version,
            primary,
            secondaries,
            expires,
            at,
            doomed: false,
        })
    }

    /// Notes a lease [`ChunkManager::send_grant`] gave in the lease table; its reply.
    pub(super) fn note_grant(&self, handle: u64, granted: Granted) -> ChunkLease {
        let ids: Vec<&str> = granted.secondaries.iter().map(|s| s.id.as_str()).collect();
        tracing::info!(%handle, version = granted.version, primary = %granted.primary.id, secondaries = %ids.join(","), "lease granted");
        self.metrics.lease_grants.inc();
        let reply = self.lease_reply(handle, &granted);
        self.lease.table.lock().insert(handle, granted);
        reply
    }

    pub(super) fn lease_reply(&self, handle: u64, l: &Granted) -> ChunkLease {
        ChunkLease {
            handle,
            version: l.version,
            index: l.at.index,
            file_offset: l.at.file_offset,
            chunk_size: self.cfg.chunk_size,
            primary: Some(addr(&l.primary)),
            // Secondaries of an adopted lease not registered yet are left out.
            secondaries: l
                .secondaries
                .iter()
                .filter(|s| !s.id.is_empty())
                .map(addr)
                .collect(),
            lease_expires_unix_ms: gfs_util::time::unix_ms(l.expires),
            // Stamped by the service for its caller.
            token: Default::default(),
            // Those left out above count: a client resolving an op needs a majority of all.
            members: u32::try_from(1 + l.secondaries.len()).unwrap_or(u32::MAX),
        }
    }

    /// Fills in the secondaries of an adopted lease that were not registered when it was
    /// adopted (known by replication address only).
    pub(super) fn resolve_secondaries(&self, l: &mut Granted) {
        if l.secondaries.iter().all(|s| !s.id.is_empty()) {
            return;
        }
        let live = self.registry.lock().live();
        for s in l.secondaries.iter_mut().filter(|s| s.id.is_empty()) {
            if let Some(found) = live.iter().find(|x| x.repl_addr == s.repl_addr) {
                *s = found.clone();
            }
        }
    }

    /// Takes in the leases `server` reports holding as it registers: after a restart, a
    /// lease this master logged (the chunk's current version, `server` as the logged
    /// primary) and still in force is adopted as it is: handed out again and extended by
    /// heartbeats, no bump. Any other unexpired lease reported on an unsealed chunk is
    /// waited out (never handed out nor extended). A lease already in the table (decided by
    /// this process) is left alone if `server` reports it, dropped if not
    /// ([`ChunkManager::forget_unheld`]). Then `server` counts as reported: its other chunks
    /// hold no lease from before the restart, and may be leased at once (`append_chunk`).
    pub async fn adopt_leases(&self, server: &ServerInfo, held: &[HeldLease]) {
        self.forget_unheld(server, held).await;
        let mut held = held.to_vec();
        held.sort_by_key(|l| l.handle);
        for h in held {
            let handle = h.handle;
            // Under the chunk's lock: no decision on it runs meanwhile.
            let _deciding = self.deciding.write([handle]).await;
            let Ok(logged) = self
                .meta
                .read(move |ns| {
                    ns.chunk(handle)
                        .map(|m| (m, ns.last_primary(handle).map(str::to_string)))
                })
                .await
            else {
                // The server is not marked reported: its chunks wait out the lease period.
                tracing::warn!(server = %server.id, "cannot read the log to adopt leases");
                return;
            };
            let Some((m, last_primary)) = logged else {
                continue;
            };
            let now = self.cfg.clock.now();
            if m.sealed_length.is_some() || h.expires <= now {
                continue;
            }
            let adopt = h.version == m.version && last_primary.as_deref() == Some(&server.id);
            let secondaries = {
                let live = self.registry.lock().live();
                h.secondaries
                    .iter()
                    .map(|a| {
                        live.iter()
                            .find(|s| s.repl_addr == *a)
                            .cloned()
                            .unwrap_or_else(|| ServerInfo {
                                id: String::new(),
                                data_addr: String::new(),
                                repl_addr: a.clone(),
                                rack: String::new(),
                                capacity_bytes: 0,
                                used_bytes: 0,
                            })
                    })
                    .collect()
            };
            let mut leases = self.lease.table.lock();
            if leases.contains_key(&handle) {
                continue;
            }
            if adopt {
                tracing::info!(%handle, version = h.version, primary = %server.id, expires_in = ?h.expires.duration_since(now).unwrap_or_default(), "lease from before the restart adopted");
            } else {
                tracing::warn!(%handle, version = h.version, logged_version = m.version, primary = %server.id, logged_primary = ?last_primary, "a reported lease the log does not name: waited out");
            }
            leases.insert(
                handle,
                Granted {
                    version: h.version,
                    primary: server.clone(),
                    secondaries,
                    expires: h.expires,
                    at: Position::default(),
                    doomed: !adopt,
                },
            );
        }
        self.lease.reported.lock().insert(server.id.clone());
    }

    /// Drops the leases this process handed to `server` that it does not report holding as it
    /// registers: its process restarted (its leases died with it) or they ran out there, so it
    /// answers every append "not the primary". Left in the table, they would be handed out
    /// until they expire (a lease period of failed appends); dropped, the next append gets a
    /// new lease, whose bump fences the old version on every replica.
    async fn forget_unheld(&self, server: &ServerInfo, held: &[HeldLease]) {
        let unheld: Vec<u64> = self
            .lease
            .table
            .lock()
            .iter()
            .filter(|(h, l)| l.primary.id == server.id && held.iter().all(|x| x.handle != **h))
            .map(|(h, _)| *h)
            .collect();
        for handle in unheld {
            let _deciding = self.deciding.write([handle]).await;
            let mut leases = self.lease.table.lock();
            if leases
                .get(&handle)
                .is_some_and(|l| l.primary.id == server.id)
            {
                tracing::info!(%handle, primary = %server.id, "the primary registered again without its lease: the next append gets a new one");
                leases.remove(&handle);
            }
        }
    }

    /// Extends the unexpired leases whose primary is `server` and that it reports `writing`;
    /// returns `(handle, version, expiry)` for the heartbeat reply.
    pub fn extend_leases(&self, server: &str, writing: &[u64]) -> Vec<(u64, u64, SystemTime)> {
        let now = self.cfg.clock.now();
        let mut out = Vec::new();
        for (handle, l) in self.lease.table.lock().iter_mut() {
            if l.primary.id == server && l.expires > now && !l.doomed && writing.contains(handle) {
                l.expires = now + self.cfg.lease;
                out.push((*handle, l.version, l.expires));
            }
        }
        out
    }

    /// Whether a lease is out on `handle` that is neither expired nor doomed.
    pub(super) fn leased(&self, handle: u64) -> bool {
        let now = self.cfg.clock.now();
        self.lease
            .table
            .lock()
            .get(&handle)
            .is_some_and(|l| l.expires > now && !l.doomed)
    }

    /// Whether this process knows every lease that can be out on `handle`, whose log names
    /// `last_primary` as the server its last lease went to: it has been up for a lease period
    /// (one granted before it started has run out), allocated the chunk, or heard that server
    /// report its leases (registering with it).
    pub(super) fn knows_leases(&self, handle: u64, last_primary: Option<&str>) -> bool {
        self.started.elapsed() >= self.cfg.lease
            || self.lease.fresh.lock().contains(&handle)
            || last_primary.is_some_and(|p| self.lease.reported.lock().contains(p))
    }

    /// Records replicas a primary reported as lagging (at the lease's current version);
    /// returns the chunks with news. A pair whose relegation failed is forgotten again
    /// (`relegation_failed`), so the primary's next report retries it.
    pub fn note_lagging(&self, lagging: impl IntoIterator<Item = (u64, String)>) -> Vec<u64> {
        let versions: HashMap<u64, u64> = self
            .lease
            .table
            .lock()
            .iter()
            .map(|(h, l)| (*h, l.version))
            .collect();
        let mut l = self.lease.lagging.lock();
        let mut fresh = Vec::new();
        for (handle, addr) in lagging {
            // Only against a lease the master knows: a report of an old lease says nothing
            // about the replica as it is now.
            let Some(&version) = versions.get(&handle) else {
                continue;
            };
            if l.get(&(handle, addr.clone())) != Some(&version) {
                l.insert((handle, addr.clone()), version);
                tracing::warn!(%handle, replica = %addr, version, "replica reported lagging");
                fresh.push(handle);
            }
        }
        fresh.sort_unstable();
        fresh.dedup();
        fresh
    }

    /// Forgets the lagging reports of `handle` whose relegation failed, so they are retried.
    pub fn relegation_failed(&self, handle: u64) {
        self.lease.lagging.lock().retain(|(h, _), _| *h != handle);
    }

    /// Bumps the version of `handle` on its good replicas now, so lagging ones become stale at
    /// once; the current primary keeps the lease (at the new version). A no-op without a live
    /// lease (the next lease leaves lagging replicas out anyway).
    pub async fn relegate_lagging(&self, handle: u64) -> Result<()> {
        let _deciding = self.deciding.write([handle]).await;
        let current = {
            let leases = self.lease.table.lock();
            leases
                .get(&handle)
                .filter(|l| l.expires > self.cfg.clock.now())
                .map(|l| (l.version, l.at, l.primary.id.clone()))
        };
        let Some((version, at, primary)) = current else {
            tracing::debug!(%handle, "no live lease: the next lease leaves lagging replicas out");
            return Ok(());
        };
        let live = self.good_replicas(handle, version);
        tracing::debug!(%handle, live = live.len(), "asking the good replicas for their lengths");
        let mut replicas = self.longest(handle, version, live).await.holders;
        if replicas.len() < self.cfg.quorum {
            // The chunk cannot continue: let its lease run out, then the next AppendChunk
            // settles or abandons it and opens a new chunk.
            if let Some(l) = self.lease.table.lock().get_mut(&handle) {
                l.doomed = true;
            }
            return Err(unavailable(format!(
                "chunk {handle}: {} good replicas left, {} needed",
                replicas.len(),
                self.cfg.quorum
            )));
        }
        // A fence follows (the simulator strikes at this event).
        tracing::debug!(%handle, longest = replicas.len(), "lengths known");
        if self.better_ended(handle, &replicas) {
            // Seal it now, ending the lease (the fence revokes it), with every live replica
            // at the version so the lagging one is caught up and sealed too if it can be.
            let live = self.registry.lock().holders_of(handle, version);
            let length = self.fence_and_seal(handle, version, live).await?;
            tracing::warn!(%handle, length, good = replicas.len(), goal = self.cfg.replication, "a lagging replica left the chunk below its goal: sealed, for its file to go on in a chunk placed in full");
            return Ok(());
        }
        // Keep the primary first, so the lease stays where it is.
        replicas.sort_by_key(|s| s.id != primary);
        let l = self.bump_and_grant(handle, version, at, replicas).await?;
        tracing::info!(%handle, version = l.version, "version bumped past lagging replicas");
        Ok(())
    }

    /// Whether `handle`, going on with `holders` alone, would stay short of the replication
    /// goal while its file could go on in a new chunk placed in full on servers that did not
    /// fail this one: then the chunk is sealed instead (and copied back to its goal), as HDFS
    /// replaces a failed pipeline node. An unsealed chunk being written is never copied, so
    /// going on below the goal leaves acknowledged appends on fewer disks for as long as the
    /// lease is extended (seed 10648 of the simulator: a chunk written on two replicas, a bit
    /// rotted at rest on each, neither could be sealed nor copied). Servers that failed it:
    /// those holding a replica outside `holders`, and those a primary reported lagging on it.
    pub(super) fn better_ended(&self, handle: u64, holders: &[ServerInfo]) -> bool {
        let goal = self.cfg.replication;
        if holders.len() >= goal {
            return false;
        }
        let lagging: HashSet<String> = self
            .lease
            .lagging
            .lock()
            .keys()
            .filter(|(h, _)| *h == handle)
            .map(|(_, a)| a.clone())
            .collect();
        let registry = self.registry.lock();
        let free = registry
            .place(usize::MAX)
            .into_iter()
            .filter(|s| {
                holders.iter().any(|h| h.id == s.id)
                    || !(registry.holds(&s.id, handle) || lagging.contains(&s.repl_addr))
            })
            .count();
        free >= goal
    }

    /// Live servers holding `handle` at `version` that no primary reported lagging at it.
    pub(super) fn good_replicas(&self, handle: u64, version: u64) -> Vec<ServerInfo> {
        let lagging: HashSet<String> = self
            .lease
            .lagging
            .lock()
            .iter()
            .filter(|((h, _), v)| *h == handle && **v == version)
            .map(|((_, a), _)| a.clone())
            .collect();
        self.registry
            .lock()
            .holders_of(handle, version)
            .into_iter()
            .filter(|s| !lagging.contains(&s.repl_addr))
            .collect()
    }
}
