//! # Allocation
//!
//! `replication` live servers (least used first, spread across racks), a random non-zero
//! handle, the chunk created on each (at least a quorum must succeed), then `AddChunk` logged,
//! naming the first of them as the primary of the chunk's first lease, and that lease given
//! to it while the record is written (no client can use the lease before the reply, which
//! waits for the record; a lease on a chunk whose record was lost is never adopted). Orphans
//! of a failed allocation are collected later by garbage collection.
//!
//! The first lease is granted at the creation version (1), without a bump (a `SetVersion`
//! round, an fsync on every replica, would sit on the path of every small file), so it must
//! leave no replica at version 1 outside it: every server the chunk was placed on is in it.
//! A server whose `CreateChunk` failed may hold the chunk all the same (the reply was lost, the
//! call timed out after the work was done), and such a replica, outside the lease, would miss
//! every append yet count as current while the chunk is unsealed (finding 6 of the 2026-12-01
//! review). So those servers are secondaries too, after the ones the chunk was created on:
//! a server that holds the chunk takes every append like any secondary; one that does not
//! (or is down) fails its PREPAREs, its primary reports it lagging, and the master bumps the
//! version past it (`relegate_lagging`), the path of any secondary that misses an append. The
//! extra round is paid only when a creation failed. Before that, while other live servers can
//! take the failed ones' place, the chunk is abandoned unlogged (its replicas are orphans) and
//! made again without them, once: so a chunk is not written below its goal from its start
//! (seed 10648 of the simulator). A rule counting replicas by lease
//! membership would live in memory only (lost at a restart) and would have to outlast the
//! lease (a small file's chunk is often never written again); a membership made right at the
//! source needs neither.
//!
//! A file's first chunk may come with its creation (`create_with_chunk`, asked by a writer of
//! a new file): the same allocation, logged in one record with the file
//! (`Op::CreateWithChunk`), so a small file costs one log write and one call to the master,
//! and the file and its chunk are there together or not at all.
//!
//! # Listing
//!
//! `get_chunks` answers one page of a file's chunks (at most [`GET_CHUNKS_PAGE`] and
//! `gfs_proto::PAGE_BYTES`), each chunk with its index, its live current replicas and its file
//! offset counted over the whole file (earlier pages' chunks included); an unsealed chunk also
//! says how many replicas a reader must hear for its length (`length_quorum`: replicas −
//! quorum + 1).

use tokio::time::Instant;

use gfs_proto::v1::{ChunkLease, ChunkLocation, GetChunksReply};

use super::lease::Position;
use super::repair::MAX_WANTED;
use super::*;
use crate::error::Result;
use crate::namespace::{ChunkMeta, Namespace};
use crate::record::{AddChunkOp, CreateOp, CreateWithChunkOp, Op, Uncreated};
use crate::registry::{Replica, ServerInfo, Want};

/// The longest an `AppendChunk` call waits for a previous primary's lease to run out before
/// it answers `UNAVAILABLE` (the client's longest pause between retries, with its jitter, so a
/// retrying client finds the wait short enough).
pub const IN_CALL_WAIT: Duration = Duration::from_secs(3);

/// A handle in [`ChunkManager`]'s `allocating` set while its allocation runs, taken out when
/// it ends however it ends: an `AppendChunk` call dropped midway (its client gone, its deadline
/// passed) left its handle there for good, and re-replication skips such chunks.
struct Allocating<'a> {
    set: &'a Mutex<HashSet<u64>>,
    handle: u64,
}

impl<'a> Allocating<'a> {
    fn new(set: &'a Mutex<HashSet<u64>>, handle: u64) -> Allocating<'a> {
        set.lock().insert(handle);
        Allocating { set, handle }
    }
}

impl Drop for Allocating<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.handle);
    }
}

/// One try at a lease for an append.
enum Attempt {
    /// Granted, or the one in force.
    Leased(ChunkLease),
    /// The previous primary of the chunk may hold a lease until then.
    WaitUntil(u64, std::time::SystemTime),
}

/// Chunks in one page of `GetChunks` at most (and when the client asks for 0): about 2 MB at
/// three replicas a chunk; a page is cut sooner at `gfs_proto::PAGE_BYTES`.
pub const GET_CHUNKS_PAGE: usize = 10_000;

/// How many replicas of an unsealed chunk with `listed` live current replicas a reader must
/// hear to be sure the longest committed length among them covers every acknowledged append:
/// each append is on `quorum` of at most `max(replication, listed)` replicas, so any
/// `replicas - quorum + 1` of them include one that holds it.
pub(super) fn length_quorum(replication: usize, quorum: usize, listed: usize) -> u32 {
    let replicas = replication.max(listed);
    let needed = replicas.saturating_sub(quorum) + 1;
    u32::try_from(needed).unwrap_or(u32::MAX)
}

/// A random, non-zero chunk handle (random, so handles of deleted chunks are not reused while
/// stale replicas of them may still exist).
pub(super) fn rand_handle() -> u64 {
    loop {
        let v: u64 = gfs_util::random::random();
        if v != 0 {
            return v;
        }
    }
}

impl ChunkManager {
    /// Where to append to `path`: its last chunk, or a new one, with a valid lease.
    ///
    /// Every chunk before the last is sealed at an agreed length before the next one is handed
    /// out, so the lease names where its chunk starts in the file and the offsets clients are
    /// given are final. A last chunk that lost its quorum is never skipped (its length is not
    /// known): appends wait, `UNAVAILABLE`, until a quorum of its replicas is back.
    ///
    /// The last moments of a lease that must be waited out (its primary died or gave it up)
    /// are waited out here, within the call (at most `IN_CALL_WAIT`, and half the deadline of
    /// the master's own calls, so 2.5 s by default), not by the client, whose
    /// backoff would add up to its longest pause to every failover and let the master's own
    /// seal of an idle chunk below its goal come first.
    pub async fn append_chunk(&self, path: &str) -> Result<ChunkLease> {
        let mut waited = false;
        loop {
            match self.try_append_chunk(path).await? {
                Attempt::Leased(lease) => return Ok(lease),
                Attempt::WaitUntil(handle, until) => {
                    let left = until
                        .duration_since(self.cfg.clock.now())
                        .unwrap_or_default();
                    if waited || left > IN_CALL_WAIT.min(self.cfg.rpc_timeout / 2) {
                        return Err(unavailable(format!(
                            "chunk {handle}: the previous primary's lease runs for another {left:?}"
                        )));
                    }
                    waited = true;
                    tokio::time::sleep(left + Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// [`ChunkManager::append_chunk`] once: a lease, or when the previous one runs out.
    async fn try_append_chunk(&self, path: &str) -> Result<Attempt> {
        // Peeked, not read: every answer below but an error comes after a mutation (a new
        // chunk's AddChunk, a version) or after the read under the chunk's lock, each durable
        // only once all this saw is (the log is durable as a prefix), so the decision need not
        // wait for the group commit in progress as well. An error that says what the namespace
        // holds (no such file, a directory) is read again, waiting as a read does: a deletion
        // not durable yet may still be lost.
        let list = |ns: &Namespace| {
            ns.chunks_of(path).map(|c| {
                c.iter()
                    .map(|h| (*h, ns.chunk(*h)))
                    .collect::<Vec<(u64, Option<ChunkMeta>)>>()
            })
        };
        let last = match self.meta.peek(list) {
            Ok(last) => last,
            Err(_) => self.meta.read(list).await??,
        };
        let n = last.len() as u64;
        // Where each chunk starts: the sealed lengths of the ones before it.
        let mut start = 0u64;
        for (i, (h, m)) in last.iter().enumerate() {
            let is_last = i + 1 == last.len();
            match m.as_ref().and_then(|m| m.sealed_length) {
                Some(l) if !is_last => start += l,
                None if !is_last => {
                    return Err(unavailable(format!(
                        "chunk {h} of {path} is not settled yet (its length is unknown)"
                    )));
                }
                _ => {}
            }
        }
        // A new chunk comes with its first lease.
        let (index, handle, version, file_offset) = match last.last() {
            Some((h, Some(m))) if m.sealed_length.is_none() => (n - 1, *h, m.version, start),
            Some((_, m)) => {
                let end = start + m.as_ref().and_then(|m| m.sealed_length).unwrap_or(0);
                let at = Position {
                    index: n,
                    file_offset: end,
                };
                return self.allocate(path, at).await.map(Attempt::Leased);
            }
            None => {
                let at = Position {
                    index: 0,
                    file_offset: 0,
                };
                return self.allocate(path, at).await.map(Attempt::Leased);
            }
        };
        let _deciding = self.deciding.write([handle]).await;
        let at = Position { index, file_offset };
        // Another decision may have sealed or fenced the chunk while this one waited for the
        // lock (seed 215: a second seal at another length): go on only from the chunk as it is
        // now. Read, not peeked: what the peek above saw is durable once this returns.
        let now = self.meta.read(move |ns| ns.chunk(handle)).await?;
        if now.is_none_or(|m| m.sealed_length.is_some() || m.version != version) {
            return Err(unavailable(format!(
                "chunk {handle} of {path} changed while this decision waited for it; ask again"
            )));
        }
        // Read under the chunk's lock: only a decision holding it changes who the log says
        // the lease went to.
        let last_primary = self
            .meta
            .read(move |ns| ns.last_primary(handle).map(str::to_string))
            .await?;
        let now = self.cfg.clock.now();
        {
            let mut leases = self.lease.table.lock();
            let existing = leases.get_mut(&handle);
            let alive = existing
                .as_ref()
                .is_some_and(|l| !l.doomed && self.registry.lock().is_alive(&l.primary.id));
            match lease_decision(
                existing.as_ref().map(|l| (l.version, l.expires)),
                version,
                alive,
                now,
            ) {
                LeaseDecision::Reuse => {
                    if let Some(l) = existing {
                        l.at = at;
                        self.resolve_secondaries(l);
                        return Ok(Attempt::Leased(self.lease_reply(handle, l)));
                    }
                }
                LeaseDecision::WaitUntil(t) => {
                    // A primary the registry counts dead (silent for `dead_after`, or gone) is
                    // fenced out below instead of waited out: the bump must leave its lease's
                    // version on fewer than a quorum of its members (`fence` checks it), so
                    // it can commit nothing more even if it is alive behind a partition.
                    let dead = existing
                        .as_ref()
                        .filter(|l| !l.doomed && !self.registry.lock().is_alive(&l.primary.id))
                        .map(|l| l.primary.id.clone());
                    let Some(dead) = dead else {
                        return Ok(Attempt::WaitUntil(handle, t));
                    };
                    tracing::warn!(%handle, primary = %dead, "the primary is counted dead: fencing its lease out instead of waiting it out");
                }
                LeaseDecision::Grant => {}
            }
        }
        // After a restart, a lease granted before it may still be in force. The log names the
        // server every lease went to; once that server has reported its leases (registering
        // with this process), the table above holds the one it still has, if any. A chunk
        // whose last primary is unknown or has not reported waits out one lease period from
        // this process's start (its own clock: no skew to allow for).
        if !self.knows_leases(handle, last_primary.as_deref()) {
            let since_start = self.started.elapsed();
            let who = last_primary.as_deref().unwrap_or("unknown");
            return Err(unavailable(format!(
                "chunk {handle}: the master restarted {since_start:?} ago and the chunk's last primary ({who}) has not reported its leases; a lease from before the restart runs out within {:?}",
                self.cfg.lease - since_start
            )));
        }
        // No lease is out: every live holder counts, those a primary reported lagging too.
        // Each holds a prefix of the chunk's one sequence of appends at this version (commits
        // apply in offset order), so the ones behind catch up from the longest below. Leaving
        // them out would stall the file while they are alive. Replicas a bump left ahead of
        // the log are fenced with the rest first (`lineage`). Only the replicas holding the
        // longest committed prefix may continue the chunk; the others become stale.
        let (version, live) = self.lineage(handle, version).await?;
        let alive = live.len();
        if alive < self.cfg.quorum {
            // Too few replicas are alive to know the chunk's length, so the file cannot move
            // on to a new chunk either: appends wait until a quorum returns.
            return Err(unavailable(format!(
                "chunk {handle} of {path}: {alive} of the {} replicas needed are alive; appends wait until a quorum returns",
                self.cfg.quorum
            )));
        }
        let mut longest = self.longest(handle, version, live.clone()).await;
        // Replicas behind the longest at this version catch up from one holding it, so they
        // count toward the quorum again instead of going stale.
        let caught = self.catch_up(handle, version, &longest).await;
        longest.holders.extend(caught);
        // A source the catch-up found corrupt holds its length for no one to continue from.
        longest
            .holders
            .retain(|s| !self.registry.lock().is_corrupt(&s.id, handle));
        let below_goal = self.better_ended(handle, &longest.holders);
        if longest.holders.len() >= self.cfg.quorum && !below_goal {
            return self
                .bump_and_grant(handle, version, at, longest.holders)
                .await
                .map(Attempt::Leased);
        }
        // The chunk cannot continue. Every acknowledged append is on a quorum, so any quorum of
        // replicas includes one holding all of them.
        if longest.answered < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle}: only {} of {alive} live replicas answered",
                longest.answered
            )));
        }
        // A quorum answered: the chunk ends at the longest length (too few hold it to go on, or
        // too few for the goal while a full new chunk can be placed: `better_ended`). Seal it
        // there (fenced first: see `fence_and_seal`); the file continues on a new chunk.
        tracing::warn!(%handle, length = longest.length, holders = longest.holders.len(), below_goal, "too few replicas hold the longest prefix: sealing the chunk");
        let length = self.fence_and_seal(handle, version, live).await?;
        let at = Position {
            index: index + 1,
            file_offset: file_offset + length,
        };
        self.allocate(path, at).await.map(Attempt::Leased)
    }

    /// Creates a new chunk at the end of `path` (at `at` in it), logs it and grants its first
    /// lease: to the first server it was created on, which the log names as its primary; its
    /// secondaries the other servers it was created on, then those whose creation failed (it
    /// may have worked all the same: see the module doc). A chunk whose creation failed
    /// somewhere is abandoned before it is logged when other servers can take the failed
    /// ones' place, and made again without them, as HDFS abandons a block whose pipeline
    /// could not be set up and asks again excluding those nodes: written below its goal, it
    /// would hold every append on fewer disks until it is sealed and copied (seed 10648 of the
    /// simulator: a chunk made on two servers, a bit rotted at rest on each). Its replicas are
    /// orphans, deleted after the grace period.
    pub(super) async fn allocate(&self, path: &str, at: Position) -> Result<ChunkLease> {
        self.allocate_for(path, at, None).await
    }

    /// Creates the file `create` makes with its first chunk, both logged in one record, and
    /// grants that chunk's first lease, as [`ChunkManager::allocate`] does: a small file's
    /// create and its chunk cost one log write, and its writer one call to the master. The
    /// caller holds the path's lock. A refusal by the namespace (the name taken, no parent
    /// directory) comes before any chunk is made, answered once what refused it is durable,
    /// as a create's is. When no chunk can be made now (too few chunkservers), the file is
    /// created alone, as by a plain create, and so it is when the record was logged but the
    /// lease not granted: `None`, the writer asks `AppendChunk` for its chunk.
    pub async fn create_with_chunk(&self, create: CreateOp) -> Result<Option<ChunkLease>> {
        let op = Op::Create(create.clone());
        if self.meta.peek(|ns| ns.check(&op)).is_err() {
            self.meta.read(|ns| ns.check(&op)).await??;
        }
        let at = Position {
            index: 0,
            file_offset: 0,
        };
        let e = match self.allocate_for(&create.path, at, Some(&create)).await {
            Ok(lease) => return Ok(Some(lease)),
            Err(e) => e,
        };
        // The caller holds the path's lock: the file is there only if the record is.
        let path = create.path.clone();
        if self
            .meta
            .read(move |ns| ns.chunks_of(&path).is_ok())
            .await?
        {
            tracing::warn!(path = %create.path, error = %e, "a file was created with its first chunk, whose lease was not granted");
            return Ok(None);
        }
        tracing::warn!(path = %create.path, error = %e, "no first chunk for a new file: creating it alone");
        self.meta.mutate(op).await?;
        Ok(None)
    }

    /// [`ChunkManager::allocate`], logged with the creation of the file when `create` is
    /// given.
    async fn allocate_for(
        &self,
        path: &str,
        at: Position,
        create: Option<&CreateOp>,
    ) -> Result<ChunkLease> {
        let mut failed: Vec<String> = Vec::new();
        loop {
            let servers = self
                .registry
                .lock()
                .place_without(self.cfg.replication, |id| failed.iter().any(|f| f == id));
            if servers.len() < self.cfg.quorum {
                return Err(unavailable(format!(
                    "{} live chunkservers, {} needed for a new chunk",
                    servers.len(),
                    self.cfg.quorum
                )));
            }
            // Peeked: a handle taken by a mutation not durable yet fails the AddChunk below.
            let handle = loop {
                let h: u64 = rand_handle();
                if !self.meta.peek(move |ns| ns.chunk(h).is_some()) {
                    break h;
                }
            };
            let allocating = Allocating::new(&self.allocating, handle);
            let created = self.create_on_each(servers.clone(), handle, 1).await;
            let in_doubt: Vec<ServerInfo> = servers
                .into_iter()
                .filter(|s| created.iter().all(|c| c.id != s.id))
                .collect();
            let ids: Vec<&str> = in_doubt.iter().map(|s| s.id.as_str()).collect();
            let elsewhere = || {
                self.registry
                    .lock()
                    .place_without(self.cfg.replication, |id| ids.contains(&id))
                    .len()
                    >= self.cfg.replication
            };
            // Once per allocation: a second failure goes on with what was created.
            if !in_doubt.is_empty() && failed.is_empty() && elsewhere() {
                drop(allocating);
                tracing::warn!(%handle, servers = ?ids, "creation failed on some servers: abandoning the chunk and placing it again without them");
                failed.extend(ids.iter().map(|id| id.to_string()));
                continue;
            }
            // Every server it was placed on is in the lease, so no replica at version 1 is
            // outside it and the first lease needs no bump. No lease is out on it, and this
            // process knows every lease that can be (it allocated the chunk: `knows_leases`).
            // The lease is given while the AddChunk record is written: the primary takes no
            // append before a client holds the lease, which only this reply gives, after the
            // record is durable. If the record fails, the lease is on an orphan, unknown to
            // the log (`adopt_leases` skips it after a restart), and goes with it.
            let _deciding = self.deciding.write([handle]).await;
            let mut members = created.clone();
            members.extend(in_doubt.iter().cloned());
            let (logged, granted) = futures::future::join(
                self.log_allocation(path, handle, &created, &in_doubt, create),
                self.send_grant(handle, 1, at, members),
            )
            .await;
            drop(allocating);
            logged?;
            if !in_doubt.is_empty() {
                tracing::warn!(%handle, servers = ?ids, "creation failed, yet may have worked: those servers are secondaries of the first lease");
                let mut reg = self.registry.lock();
                for s in &in_doubt {
                    reg.note_uncreated(&s.id, handle);
                }
            }
            tracing::info!(%handle, path, servers = created.len(), "chunk allocated");
            return Ok(self.note_grant(handle, granted?));
        }
    }

    /// Notes, for server `id` registered on data directory `disk_id`, the unsealed chunks whose
    /// creation the log says failed there on that directory (`AddChunkOp::uncreated`): its
    /// word that it holds none of them witnesses that it never did, after a restart of the
    /// master as before (seed 73346212800128 of the simulator). Peeked, not read: a chunk
    /// whose record is not durable yet is asked nothing before it is, and if it is lost the
    /// chunk never was.
    pub fn note_failed_creations(&self, id: &str, disk_id: u64) {
        if disk_id == 0 {
            return;
        }
        let handles = self.meta.peek(|ns| ns.uncreated_on(id, disk_id));
        let mut reg = self.registry.lock();
        for h in handles {
            reg.note_uncreated(id, h);
        }
    }

    /// Logs chunk `handle` of `path`, created on `created` (its first lease's primary first),
    /// its creation failed on `in_doubt` (those whose data directories are known are logged
    /// too: `AddChunkOp::uncreated`), in one record with the file's creation when `create` is
    /// given; notes its replicas.
    pub(super) async fn log_allocation(
        &self,
        path: &str,
        handle: u64,
        created: &[ServerInfo],
        in_doubt: &[ServerInfo],
        create: Option<&CreateOp>,
    ) -> Result<()> {
        if created.len() < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle} created on {} servers, {} needed",
                created.len(),
                self.cfg.quorum
            )));
        }
        let uncreated: Vec<Uncreated> = {
            let reg = self.registry.lock();
            in_doubt
                .iter()
                .filter_map(|s| {
                    let disk_id = reg.disk_id(&s.id).filter(|d| *d != 0)?;
                    Some(Uncreated {
                        server: s.id.clone(),
                        disk_id,
                    })
                })
                .collect()
        };
        let chunk = AddChunkOp {
            path: path.to_string(),
            handle,
            version: 1,
            primary: created.first().map(|s| s.id.clone()).unwrap_or_default(),
            uncreated,
            placed: u32::try_from(created.len() + in_doubt.len()).unwrap_or(u32::MAX),
        };
        let op = match create {
            Some(c) => Op::CreateWithChunk(CreateWithChunkOp {
                create: Some(c.clone()),
                chunk: Some(chunk),
            }),
            None => Op::AddChunk(chunk),
        };
        self.meta.mutate(op).await?;
        let mut reg = self.registry.lock();
        for s in created {
            reg.note_replica(
                &s.id,
                Replica {
                    handle,
                    version: 1,
                    length: 0,
                    sealed: false,
                },
            );
        }
        self.lease.fresh.lock().insert(handle);
        Ok(())
    }

    /// One page of the chunks of `path`, with their live replicas at the current version:
    /// from chunk `first`, at most `max` (0, or more than [`GET_CHUNKS_PAGE`]: that many) and
    /// at most `gfs_proto::PAGE_BYTES` encoded (never fewer than one chunk). Each chunk's
    /// `file_offset` is the sum of the sealed lengths of all the file's earlier chunks, earlier
    /// pages' included.
    pub async fn get_chunks(&self, path: &str, first: u64, max: u32) -> Result<GetChunksReply> {
        let p = path.to_string();
        let max = match max as usize {
            0 => GET_CHUNKS_PAGE,
            n => n.min(GET_CHUNKS_PAGE),
        };
        let (total, start, mut file_offset, chunks) = self
            .meta
            .read(move |ns| {
                ns.chunks_of(&p).map(|c| {
                    let start = usize::try_from(first).unwrap_or(usize::MAX).min(c.len());
                    // Only the last chunk is unsealed (a legacy unsettled one counts as empty
                    // until it is settled).
                    let before: u64 = c[..start]
                        .iter()
                        .map(|h| ns.chunk(*h).and_then(|m| m.sealed_length).unwrap_or(0))
                        .sum();
                    let page: Vec<_> = c[start..]
                        .iter()
                        .take(max)
                        .map(|h| (*h, ns.chunk(*h)))
                        .collect();
                    (c.len(), start, before, page)
                })
            })
            .await??;
        let reg = self.registry.lock();
        let mut bytes = 0;
        let mut page: Vec<ChunkLocation> = Vec::with_capacity(chunks.len());
        for (i, (handle, m)) in chunks.into_iter().enumerate() {
            let (version, sealed_length) =
                m.map(|m| (m.version, m.sealed_length)).unwrap_or((0, None));
            let replicas: Vec<_> = reg
                .locations(
                    handle,
                    Want {
                        version,
                        sealed: sealed_length,
                    },
                )
                .iter()
                .map(|(s, _)| addr(s))
                .collect();
            let length_quorum = match sealed_length {
                Some(_) => 0,
                None => length_quorum(self.cfg.replication, self.cfg.quorum, replicas.len()),
            };
            let c = ChunkLocation {
                index: (start + i) as u64,
                handle,
                version,
                sealed_length,
                file_offset,
                replicas,
                length_quorum,
                // Stamped by the service for its caller: room for it is counted below.
                token: Default::default(),
            };
            bytes +=
                prost::encoding::message::encoded_len(2, &c) + gfs_host::token::MAX_TOKEN_LEN + 3;
            if bytes > gfs_proto::PAGE_BYTES && !page.is_empty() {
                break;
            }
            file_offset += sealed_length.unwrap_or(0);
            page.push(c);
        }
        drop(reg);
        let now = Instant::now();
        let mut wanted = self.repair.wanted.lock();
        for c in &page {
            if c.replicas.len() < self.cfg.replication && wanted.len() < MAX_WANTED {
                wanted.insert(c.handle, now);
            }
        }
        drop(wanted);
        let next_index = start + page.len();
        Ok(GetChunksReply {
            chunk_size: self.cfg.chunk_size,
            chunks: page,
            more: next_index < total,
            next_index: next_index as u64,
        })
    }
}
