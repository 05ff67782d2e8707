//! Chunk allocation, leases and versions, seals, re-replication, rebalancing, and the deletes
//! the master asks of chunkservers.
//!
//! # Allocation
//!
//! `replication` live servers (least used first, spread across racks), a random non-zero
//! handle, the chunk created on each (at least a quorum must succeed), then `AddChunk` logged,
//! naming the first of them as the primary of the chunk's first lease. Orphans of a failed
//! allocation are collected later by garbage collection.
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
//! extra round is paid only when a creation failed. A rule counting replicas by lease
//! membership would live in memory only (lost at a restart) and would have to outlast the
//! lease (a small file's chunk is often never written again); a membership made right at the
//! source needs neither.
//!
//! # Leases
//!
//! One primary per chunk. `append_chunk` hands out the current lease again while its primary is
//! alive and it has more than a second to run; an unexpired lease of a dead primary, or a
//! doomed one, is waited out (UNAVAILABLE; [`lease_decision`]). A new lease needs a quorum of
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
//! alone. Then the server counts as reported, so its other chunks can be leased at once. A chunk
//! this process did not allocate, whose logged primary has not reported (it has not registered,
//! is an older server, or is unknown), gets no lease until one lease period after this process
//! started, by its own monotonic clock: no skew to allow for (`append_chunk`). Only the master
//! grants leases and this one grants none on a server's logged chunks before that server's
//! report, so a report cannot miss one: never two primaries at once.
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
//! marked doomed: no longer extended nor handed out, so it runs out first.
//!
//! # Chunks that cannot continue
//!
//! When a new lease is needed and fewer than a quorum of replicas hold the longest prefix: if a
//! quorum answered, the longest length is final (any quorum includes a replica with every
//! acknowledged append) and the master seals the chunk there on its own, fenced first
//! (`fence_and_seal`, I5): a new version on the live replicas, the longest length a quorum of
//! them reports after it, those behind caught up, the version and the seal logged, then the
//! replicas sealed; `append_chunk` then allocates the next chunk. If fewer than a quorum answer,
//! the length is unknown and the file cannot move on: UNAVAILABLE until a quorum returns (or
//! re-replication restores one). Chunks abandoned unsealed by older versions (`unsettled`:
//! unsealed chunks that are not last in their file, found in the log at start) are fenced and
//! sealed the same way by [`ChunkManager::settle`], every heartbeat interval, once a quorum
//! reports again; until then `append_chunk` on their file answers UNAVAILABLE.
//!
//! # Re-replication ([`ChunkManager::rereplicate`], every heartbeat interval)
//!
//! Nothing happens in the first `dead_after` after the start, until every server has had time
//! to report (no false "lost" alarm, no needless copy; like HDFS's safe mode). One pass over the
//! chunk map joined with the registry's reports (`Registry::holder_counts`: counts only, in
//! `ChunkMap`s with the foldhash hasher; a chosen chunk's sources are looked up then) finds the
//! chunks with fewer live current replicas than `replication`, replicas on draining servers not
//! counted. Repair order: live files before those under `/.trash`, then fewest current
//! replicas, then chunks a client asked for (`get_chunks`) while they were below the goal within
//! the last 60 s (`wanted`, at most 65,536 remembered: the paper's boost for chunks blocking
//! client progress), then handle. A chunk being written (unsealed, with a live, non-doomed
//! lease) waits until its lease runs out.
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
//!
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
//!   fresh copy.
//! - Extra replicas past `replication` (a rebalancing move, a copy that finished after a master
//!   restart, a server back after its chunks were copied): the holder using the largest share of
//!   its capacity (then the greatest id) drops its replica, never the primary of a live lease;
//!   replicas on draining servers stay and do not count. The master forgets that replica at once
//!   (`Registry::forget_replica`), so another holder's heartbeat before the next report cannot
//!   also see one too many and drop a second (shares of capacity change as copies land).
//!
//! # Invariants (ARCHITECTURE.md)
//!
//! A replica counts as current only at the chunk's version and, once sealed, exactly its sealed
//! length (`Want`, I1); every chunk but a file's last is sealed before the next is allocated, so
//! a lease names where its chunk starts in the file and offsets are final (I3); a last chunk
//! without a quorum of live replicas is waited for, never skipped.
//!
//! # Listing
//!
//! `get_chunks` answers one page of a file's chunks (at most [`GET_CHUNKS_PAGE`] and
//! `gfs_proto::PAGE_BYTES`), each chunk with its index, its live current replicas and its file
//! offset counted over the whole file (earlier pages' chunks included); an unsealed chunk also
//! says how many replicas a reader must hear for its length (`length_quorum`: replicas −
//! quorum + 1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::{
    ChunkDelete, ChunkLease, ChunkLocation, CloneChunkRequest, CreateChunkRequest, GetChunksReply,
    GrantLeaseRequest, ReplicaAddr, SealRequest, SetVersionRequest,
};
use parking_lot::Mutex;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::locks::LockTable;
use crate::metastore::MetaStore;
use crate::namespace::ChunkMeta;
use crate::record::{AddChunkOp, Op, SealOp, SetVersionOp};
use crate::registry::{ChunkMap, ChunkSet};
use crate::registry::{Registry, Replica, ServerInfo, Want};
use crate::service::status;

/// Cluster-wide chunk settings of the master.
#[derive(Clone, Debug)]
pub struct ChunkConfig {
    /// Chunk size of the cluster.
    pub chunk_size: u64,
    /// Replicas per new chunk.
    pub replication: usize,
    /// Replicas (the primary included) an append needs.
    pub quorum: usize,
    /// Lease duration.
    pub lease: Duration,
    /// Deadline of each call to a chunkserver.
    pub rpc_timeout: Duration,
    /// A reported chunk the master does not know is deleted after being unknown this long.
    pub orphan_grace: Duration,
    /// Re-replication: copies in flight in the whole cluster (each server takes part in at
    /// most two at once, as source or target); 0 turns it off.
    pub max_clones: usize,
    /// Re-replication: deadline of one chunk copy.
    pub clone_timeout: Duration,
    /// Rebalancing: move a sealed chunk from the fullest server to the emptiest while their
    /// shares of capacity differ by more than this (0 turns it off).
    pub rebalance_threshold: f64,
}

struct Granted {
    version: u64,
    primary: ServerInfo,
    /// An adopted lease names its secondaries by replication address only until they
    /// register (`id` empty): see `resolve_secondaries`.
    secondaries: Vec<ServerInfo>,
    expires: SystemTime,
    /// Where the chunk sits in its file, as the last AppendChunk found it (an adopted lease
    /// learns it from the first AppendChunk that hands it out).
    at: Position,
    /// Too few good replicas are left to continue the chunk: the lease is no longer extended
    /// nor handed out, and once it runs out the file moves on to a new chunk.
    doomed: bool,
}

/// Where a chunk sits in its file.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    /// Index of the chunk in the file.
    index: u64,
    /// Where it starts in the file: the sum of the sealed lengths of the earlier chunks.
    file_offset: u64,
}

/// Decides where chunks live and who is primary.
pub struct ChunkManager {
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) cfg: ChunkConfig,
    controls: Mutex<HashMap<String, ChunkControlClient<Channel>>>,
    leases: Mutex<HashMap<u64, Granted>>,
    /// Chunks allocated by this master process: no lease from before can exist on them.
    fresh: Mutex<HashSet<u64>>,
    /// Servers that reported the leases they hold when they registered with this master
    /// process: the lease table is complete for the chunks whose logged primary is one of
    /// them (`append_chunk`, `adopt_leases`).
    reported: Mutex<HashSet<String>>,
    /// `(chunk, replication address)` of replicas a primary reported as lagging: left out of
    /// the next version bump, so they become stale.
    lagging: Mutex<HashMap<(u64, String), u64>>,
    /// Chunks left behind (unsealed) when they lost their quorum; sealed at their longest
    /// committed length once a quorum of replicas reports again.
    unsettled: Mutex<HashSet<u64>>,
    /// Re-replication in flight: chunk -> (source, target) server ids.
    pub(crate) cloning: Mutex<HashMap<u64, (String, String)>>,
    /// Bytes copied into and out of each server since the master started.
    pub(crate) copied: Mutex<HashMap<String, (u64, u64)>>,
    /// Chunks the last re-replication pass found waiting for a copy.
    pub(crate) repair_queue: std::sync::atomic::AtomicU64,
    /// Draining servers already announced as safe to stop.
    drained: Mutex<HashSet<String>>,
    /// What the master exports to Prometheus.
    pub(crate) metrics: crate::metrics::MasterMetrics,
    /// Where the draining set is kept across restarts.
    pub(crate) draining_file: std::sync::OnceLock<std::path::PathBuf>,
    /// The last re-replication pass found chunks below the goal or above it: rebalancing
    /// waits for the cluster to settle.
    unsettled_replicas: std::sync::atomic::AtomicBool,
    /// Chunks of files deleted for good, and when: servers drop them on their next heartbeat
    /// (not after `orphan_grace`).
    purged: Mutex<HashMap<u64, Instant>>,
    /// Chunks with no live current replica, as last seen (logged when it changes).
    pub(crate) lost: Mutex<HashSet<u64>>,
    /// Chunks a client asked for while they were below the goal, and when: repaired before
    /// others with as many replicas (the paper's boost for chunks blocking client progress).
    wanted: Mutex<HashMap<u64, Instant>>,
    /// Handles being allocated: created on servers, not yet logged. Never orphans.
    allocating: Mutex<HashSet<u64>>,
    /// When each server first reported each replica the master does not know, by server.
    unknown_since: Mutex<HashMap<String, ChunkMap<Instant>>>,
    /// One lease decision at a time per chunk (callers hold the file's path lock around
    /// allocation).
    deciding: LockTable<u64>,
    pub(crate) started: Instant,
}

/// Deletes one heartbeat reply carries at most.
const MAX_DELETES_PER_REPLY: usize = 1024;

/// Chunks in one page of `GetChunks` at most (and when the client asks for 0): about 2 MB at
/// three replicas a chunk; a page is cut sooner at `gfs_proto::PAGE_BYTES`.
pub const GET_CHUNKS_PAGE: usize = 10_000;

/// How long a chunk a client asked for stays boosted in the repair order.
const BOOST_FOR: Duration = Duration::from_secs(60);
/// Bound on the boosted chunks remembered at once.
const MAX_WANTED: usize = 65_536;

fn unavailable(msg: impl Into<String>) -> Status {
    Status::unavailable(msg.into())
}

/// How many replicas of an unsealed chunk with `listed` live current replicas a reader must
/// hear to be sure the longest committed length among them covers every acknowledged append:
/// each append is on `quorum` of at most `max(replication, listed)` replicas, so any
/// `replicas - quorum + 1` of them include one that holds it.
fn length_quorum(replication: usize, quorum: usize, listed: usize) -> u32 {
    let replicas = replication.max(listed);
    let needed = replicas.saturating_sub(quorum) + 1;
    u32::try_from(needed).unwrap_or(u32::MAX)
}

fn addr(s: &ServerInfo) -> ReplicaAddr {
    ReplicaAddr {
        id: s.id.clone(),
        data_addr: s.data_addr.clone(),
        repl_addr: s.repl_addr.clone(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ChunkManager {
    /// A manager over the metadata and the membership table.
    pub fn new(meta: Arc<MetaStore>, registry: Arc<Mutex<Registry>>, cfg: ChunkConfig) -> Self {
        ChunkManager {
            meta,
            registry,
            cfg,
            controls: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashSet::new()),
            reported: Mutex::new(HashSet::new()),
            lagging: Mutex::new(HashMap::new()),
            allocating: Mutex::new(HashSet::new()),
            unsettled: Mutex::new(HashSet::new()),
            cloning: Mutex::new(HashMap::new()),
            copied: Mutex::new(HashMap::new()),
            repair_queue: std::sync::atomic::AtomicU64::new(0),
            drained: Mutex::new(HashSet::new()),
            metrics: crate::metrics::MasterMetrics::default(),
            draining_file: std::sync::OnceLock::new(),
            purged: Mutex::new(HashMap::new()),
            unsettled_replicas: std::sync::atomic::AtomicBool::new(false),
            lost: Mutex::new(HashSet::new()),
            wanted: Mutex::new(HashMap::new()),
            unknown_since: Mutex::new(HashMap::new()),
            deciding: LockTable::new(),
            started: Instant::now(),
        }
    }

    /// What the master exports to Prometheus.
    pub fn metrics(&self) -> &crate::metrics::MasterMetrics {
        &self.metrics
    }

    /// The chunk size of the cluster.
    pub fn chunk_size(&self) -> u64 {
        self.cfg.chunk_size
    }

    /// Replicas (the primary included) that must accept an append.
    pub fn quorum(&self) -> usize {
        self.cfg.quorum
    }

    fn control(&self, repl_addr: &str) -> Result<ChunkControlClient<Channel>, Status> {
        let mut c = self.controls.lock();
        if let Some(client) = c.get(repl_addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{repl_addr}"))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(self.cfg.rpc_timeout)
            .timeout(self.cfg.rpc_timeout);
        let client = ChunkControlClient::new(endpoint.connect_lazy());
        c.insert(repl_addr.to_string(), client.clone());
        Ok(client)
    }

    /// Runs `call` against each server at once; returns the servers it succeeded on.
    async fn on_each<F, Fut>(&self, servers: Vec<ServerInfo>, call: F) -> Vec<ServerInfo>
    where
        F: Fn(ChunkControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let calls = servers.into_iter().map(|s| {
            let client = self.control(&s.repl_addr);
            let fut = client.map(&call);
            async move {
                let r = match fut {
                    Ok(f) => f.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    tracing::warn!(server = %s.id, error = %e, "chunkserver call failed");
                }
                r.ok().map(|()| s)
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Where to append to `path`: its last chunk, or a new one, with a valid lease.
    ///
    /// Every chunk before the last is sealed at an agreed length before the next one is handed
    /// out, so the lease names where its chunk starts in the file and the offsets clients are
    /// given are final. A last chunk that lost its quorum is never skipped (its length is not
    /// known): appends wait, `UNAVAILABLE`, until a quorum of its replicas is back.
    pub async fn append_chunk(&self, path: &str) -> Result<ChunkLease, Status> {
        let p = path.to_string();
        let last = self
            .meta
            .read(move |ns| {
                ns.chunks_of(&p).map(|c| {
                    c.iter()
                        .map(|h| (*h, ns.chunk(*h)))
                        .collect::<Vec<(u64, Option<ChunkMeta>)>>()
                })
            })
            .await
            .map_err(status)?
            .map_err(status)?;
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
        // A new chunk comes with the members of its first lease, its logged primary first.
        let (index, handle, version, file_offset, allocated) = match last.last() {
            Some((h, Some(m))) if m.sealed_length.is_none() => (n - 1, *h, m.version, start, None),
            Some((_, m)) => {
                let end = start + m.as_ref().and_then(|m| m.sealed_length).unwrap_or(0);
                let (h, created) = self.allocate(path).await?;
                (n, h, 1, end, Some(created))
            }
            None => {
                let (h, created) = self.allocate(path).await?;
                (0, h, 1, 0, Some(created))
            }
        };
        let _deciding = self.deciding.write([handle]).await;
        let at = Position { index, file_offset };
        // Read under the chunk's lock: only a decision holding it changes who the log says
        // the lease went to.
        let last_primary = self
            .meta
            .read(move |ns| ns.last_primary(handle).map(str::to_string))
            .await
            .map_err(status)?;
        let now = SystemTime::now();
        {
            let mut leases = self.leases.lock();
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
                        return Ok(self.lease_reply(handle, l));
                    }
                }
                LeaseDecision::WaitUntil(t) => {
                    return Err(unavailable(format!(
                        "chunk {handle}: the previous primary's lease runs for another {:?}",
                        t.duration_since(now).unwrap_or_default()
                    )));
                }
                LeaseDecision::Grant => {}
            }
        }
        // After a restart, a lease granted before it may still be in force. The log names the
        // server every lease went to; once that server has reported its leases (registering
        // with this process), the table above holds the one it still has, if any. A chunk
        // whose last primary is unknown or has not reported waits out one lease period from
        // this process's start (its own clock: no skew to allow for).
        let since_start = self.started.elapsed();
        if since_start < self.cfg.lease
            && !self.fresh.lock().contains(&handle)
            && !last_primary
                .as_ref()
                .is_some_and(|p| self.reported.lock().contains(p))
        {
            let who = last_primary.as_deref().unwrap_or("unknown");
            return Err(unavailable(format!(
                "chunk {handle}: the master restarted {since_start:?} ago and the chunk's last primary ({who}) has not reported its leases; a lease from before the restart runs out within {:?}",
                self.cfg.lease - since_start
            )));
        }
        if let Some(members) = allocated {
            // Created empty by this call at version 1, and every server it was placed on is in
            // the lease (a failed creation may have worked: see the module doc), so no replica
            // at version 1 is outside it and the first lease needs no bump. It goes to the
            // primary the AddChunk record names.
            return self.grant(handle, version, at, members).await;
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
        if longest.holders.len() >= self.cfg.quorum {
            return self
                .bump_and_grant(handle, version, at, longest.holders)
                .await;
        }
        // The chunk cannot continue. Every acknowledged append is on a quorum, so any quorum of
        // replicas includes one holding all of them.
        if longest.answered < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle}: only {} of {alive} live replicas answered",
                longest.answered
            )));
        }
        // A quorum answered: the chunk ends at the longest length. Seal it there (fenced first:
        // see `fence_and_seal`); the file continues on a new chunk.
        tracing::warn!(%handle, length = longest.length, "too few replicas hold the longest prefix: sealing the chunk");
        let length = self.fence_and_seal(handle, version, live).await?;
        let (next, members) = self.allocate(path).await?;
        let _deciding = self.deciding.write([next]).await;
        let at = Position {
            index: index + 1,
            file_offset: file_offset + length,
        };
        self.grant(next, 1, at, members).await
    }

    /// Seals `handle` at `length` in the log and drops its lease.
    async fn seal_at(&self, handle: u64, length: u64) -> Result<(), Status> {
        self.meta
            .mutate(Op::Seal(SealOp { handle, length }))
            .await
            .map_err(status)?;
        self.leases.lock().remove(&handle);
        self.unsettled.lock().remove(&handle);
        tracing::info!(%handle, length, "chunk sealed");
        Ok(())
    }

    /// Starts copies of chunks with fewer live current replicas than `replication`, chunks of
    /// live files before those in the trash, fewest replicas first, bounded by `max_clones` in
    /// the cluster and two per server; nothing in the first `dead_after` after the start. A chunk being written
    /// (unsealed, with a live lease) waits for its lease to end. Chunks with no live replica
    /// are logged as lost (and found again when a replica returns).
    pub async fn rereplicate(self: &Arc<Self>) {
        // Right after a start every chunk looks unreplicated until the servers report: wait
        // until each live server has had time to heartbeat (like HDFS's safe mode), so no
        // false "lost" alarm and no needless copy.
        let warm_up = self.registry.lock().dead_after();
        if self.started.elapsed() < warm_up {
            // Nor any rebalancing.
            self.unsettled_replicas
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
        let (counts, draining) = {
            let reg = self.registry.lock();
            let draining = reg.draining();
            (reg.holder_counts(&versions, &draining), draining)
        };
        // Replicas on draining servers are sources, but do not count toward the goal.
        let counted = |h: &u64| counts.get(h).map_or(0, |c| c.counted as usize);
        let now = SystemTime::now();
        let mut want = Vec::new();
        let extra = counts
            .values()
            .any(|c| c.all as usize > self.cfg.replication);
        let mut events = Vec::new();
        {
            let leases = self.leases.lock();
            let cloning = self.cloning.lock();
            let mut lost = self.lost.lock();
            for (h, m) in &metas {
                let have = counted(h);
                if counts.get(h).is_none_or(|c| c.all == 0) {
                    if lost.insert(*h) {
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
        self.unsettled_replicas.store(
            extra || !want.is_empty(),
            std::sync::atomic::Ordering::Release,
        );
        self.repair_queue
            .store(want.len() as u64, std::sync::atomic::Ordering::Release);
        // A draining server whose every chunk has its goal elsewhere is safe to stop.
        for id in &draining {
            let left = self.left_on(id, &counts, &versions);
            let mut drained = self.drained.lock();
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
            let mut wanted = self.wanted.lock();
            wanted.retain(|h, at| at.elapsed() < BOOST_FOR && below.contains(h));
            wanted.clone()
        };
        want.sort_by_key(|(have, h, _)| (trashed.contains(h), *have, !wanted.contains_key(h), *h));
        for (_, handle, m) in want {
            // Sources: every live current holder, draining ones included.
            let from: Vec<ServerInfo> = self.registry.lock().holders_of(handle, m);
            if from.is_empty() {
                continue;
            }
            let from = &from;
            let pick = {
                let mut cloning = self.cloning.lock();
                if cloning.len() >= self.cfg.max_clones {
                    break;
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
                me.cloning.lock().remove(&handle);
            });
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
            || self.unsettled_replicas.load(Ordering::Acquire)
            || !self.cloning.lock().is_empty()
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
        self.cloning
            .lock()
            .insert(handle, (full.id.clone(), empty.id.clone()));
        tracing::info!(%handle, from = %full.id, to = %empty.id, "rebalancing");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            me.clone_one(handle, m, full, empty, false).await;
            me.cloning.lock().remove(&handle);
        });
    }

    /// Runs a copy (a clone or a catch-up) on `repl_addr` within `clone_timeout`, on a channel
    /// of its own: the shared ones cut every call at `rpc_timeout`, too short for a replica
    /// tens of MB behind or a copy under `clone_rate`.
    async fn copy(
        &self,
        repl_addr: &str,
        req: CloneChunkRequest,
    ) -> Result<tonic::Response<gfs_proto::v1::CloneChunkReply>, Status> {
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.cfg.clone_timeout);
        let endpoint = Endpoint::from_shared(format!("http://{repl_addr}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        let channel = endpoint
            .connect_timeout(self.cfg.rpc_timeout)
            .connect_lazy();
        ChunkControlClient::new(channel).clone_chunk(req).await
    }

    /// Copies `handle` from `source` to `target` and records the new replica; with
    /// `catch_up`, extends `target`'s shorter replica at the version instead (sealing it at the
    /// chunk's sealed length).
    async fn clone_one(
        &self,
        handle: u64,
        m: ChunkMeta,
        source: ServerInfo,
        target: ServerInfo,
        catch_up: bool,
    ) {
        let started = Instant::now();
        tracing::info!(%handle, from = %source.id, to = %target.id, catch_up, "re-replicating");
        let req = CloneChunkRequest {
            handle,
            version: m.version,
            source: source.repl_addr.clone(),
            sealed_length: m.sealed_length,
            catch_up,
        };
        let res = self.copy(&target.repl_addr, req).await;
        match res {
            Ok(r) => {
                let length = r.into_inner().length;
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
                let mut copied = self.copied.lock();
                copied.entry(target.id.clone()).or_default().0 += length;
                copied.entry(source.id.clone()).or_default().1 += length;
            }
            Err(e) if e.code() == tonic::Code::DataLoss => {
                // The source's replica is bad (its checksums failed, or it ended short of the
                // sealed length): treat it as corrupt and copy from another.
                tracing::error!(%handle, source = %source.id, error = %e.message(), "re-replication source is corrupt");
                let mut reg = self.registry.lock();
                reg.mark_corrupt(&source.id, handle);
                reg.events.push(
                    "corrupt",
                    format!("chunk {handle} on {}: {}", source.id, e.message()),
                );
            }
            Err(e) => {
                tracing::warn!(%handle, from = %source.id, to = %target.id, error = %e.message(), "re-replication failed; will retry");
            }
        }
    }

    /// Notes chunks of files deleted for good: servers drop them at once.
    pub fn purged(&self, handles: &[u64]) {
        let now = Instant::now();
        let mut p = self.purged.lock();
        for h in handles {
            p.insert(*h, now);
        }
        let mut leases = self.leases.lock();
        for h in handles {
            leases.remove(h);
        }
    }

    /// Finds the chunks left unsettled in the log (after a restart).
    pub async fn load_unsettled(&self) -> Result<(), Status> {
        let found = self.meta.read(|ns| ns.unsettled()).await.map_err(status)?;
        if !found.is_empty() {
            tracing::warn!(
                chunks = found.len(),
                "chunks abandoned with their length unknown"
            );
        }
        self.unsettled.lock().extend(found);
        Ok(())
    }

    /// Seals each abandoned chunk once a quorum of its replicas is alive again, at the longest
    /// length they hold.
    pub async fn settle(&self) {
        let pending: Vec<u64> = self.unsettled.lock().iter().copied().collect();
        for handle in pending {
            let _deciding = self.deciding.write([handle]).await;
            let Ok(Some(m)) = self.meta.read(move |ns| ns.chunk(handle)).await else {
                self.unsettled.lock().remove(&handle);
                continue;
            };
            if m.sealed_length.is_some() {
                self.unsettled.lock().remove(&handle);
                continue;
            }
            let (version, live) = match self.lineage(handle, m.version).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(%handle, error = %e, "cannot settle the chunk yet");
                    continue;
                }
            };
            if live.len() < self.cfg.quorum {
                continue;
            }
            // Sealed at the longest length, fenced first; the others catch up first, so the
            // chunk does not come out with fewer current replicas than it could have.
            match self.fence_and_seal(handle, version, live).await {
                Ok(length) => tracing::info!(%handle, length, "abandoned chunk settled"),
                Err(e) => tracing::warn!(%handle, error = %e, "cannot settle the chunk yet"),
            }
        }
    }

    /// Logs `version` of `handle` as one no lease was granted at (a fence of the master's own,
    /// or a bump adopted from reports): it names no primary.
    async fn log_unleased_version(&self, handle: u64, version: u64) -> Result<(), Status> {
        self.meta
            .mutate(Op::SetVersion(SetVersionOp {
                handle,
                version,
                primary: String::new(),
            }))
            .await
            .map_err(status)?;
        Ok(())
    }

    /// The live replicas a decision on `handle` (logged at `version`) must count, and the
    /// version they are at. Normally the holders at `version`. When some replicas are ahead of
    /// the log (a bump that did not reach a quorum, or a crash before its record), they are
    /// the same appends (no lease is granted at an unlogged version, so nothing was appended
    /// at it) but possibly shorter: all of them are fenced past the highest version, that
    /// version is logged, and the decision goes on from there with every replica counted.
    async fn lineage(&self, handle: u64, version: u64) -> Result<(u64, Vec<ServerInfo>), Status> {
        let (mut live, ahead) = {
            let reg = self.registry.lock();
            (
                reg.holders_of(handle, version),
                reg.ahead_of(handle, version),
            )
        };
        let Some(top) = ahead.iter().map(|(_, v)| *v).max() else {
            return Ok((version, live));
        };
        live.extend(ahead.into_iter().map(|(s, _)| s));
        tracing::warn!(%handle, version, top, "replicas ahead of the log: fencing them all past it");
        let (new_version, fenced) = self.fence(handle, top, live).await?;
        self.log_unleased_version(handle, new_version).await?;
        let mut reg = self.registry.lock();
        for (s, length) in &fenced {
            reg.note_replica(
                &s.id,
                Replica {
                    handle,
                    version: new_version,
                    length: *length,
                    sealed: false,
                },
            );
        }
        Ok((new_version, fenced.into_iter().map(|(s, _)| s).collect()))
    }

    /// Sets the version after `version` on each of `replicas`; returns it and the replicas
    /// that took it, each with its committed length once the new version is durable there, or
    /// `Unavailable` unless a quorum took it. That length is final for the old version: the
    /// replica is fenced, nothing commits at the old version there any more, so an append that
    /// committed between an earlier length query and this call is seen (finding 4).
    async fn fence(
        &self,
        handle: u64,
        version: u64,
        replicas: Vec<ServerInfo>,
    ) -> Result<(u64, Vec<(ServerInfo, u64)>), Status> {
        let Some(new_version) = version.checked_add(1) else {
            return Err(Status::internal(format!(
                "chunk {handle}: version {version} overflows"
            )));
        };
        let asks = replicas.into_iter().map(|s| {
            let client = self.control(&s.repl_addr);
            async move {
                let req = SetVersionRequest {
                    handle,
                    version: new_version,
                };
                let r = async { Ok::<_, Status>(client?.set_version(req).await?.into_inner()) };
                match r.await {
                    Ok(reply) => Some((s, reply.committed_length)),
                    Err(e) => {
                        tracing::warn!(server = %s.id, error = %e, "chunkserver call failed");
                        None
                    }
                }
            }
        });
        let fenced: Vec<(ServerInfo, u64)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if fenced.len() < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle}: only {} replicas took version {new_version}",
                fenced.len()
            )));
        }
        Ok((new_version, fenced))
    }

    /// Seals `handle` on the master's own decision, with no lease out (too few replicas hold
    /// its longest length to continue it, or it was abandoned): fences `live` with a new
    /// version first, so an old primary's appends still on their way are refused everywhere;
    /// takes the longest length a quorum of them reports after the fence (every acknowledged
    /// append is on a quorum, so on one of them); catches up those behind; logs the version and
    /// the seal; then seals the replicas there, so clients resolving an earlier attempt get a
    /// final answer from them. Returns the sealed length.
    async fn fence_and_seal(
        &self,
        handle: u64,
        version: u64,
        live: Vec<ServerInfo>,
    ) -> Result<u64, Status> {
        let (new_version, fenced) = self.fence(handle, version, live).await?;
        let longest = Longest::of(fenced);
        let length = longest.length;
        let mut holders = longest.holders.clone();
        holders.extend(self.catch_up(handle, new_version, &longest).await);
        self.log_unleased_version(handle, new_version).await?;
        self.seal_at(handle, length).await?;
        let seals = holders.iter().map(|s| {
            let req = SealRequest {
                handle,
                version: new_version,
                length,
            };
            async move {
                let endpoint = Endpoint::from_shared(format!("http://{}", s.repl_addr))
                    .map_err(|e| Status::internal(e.to_string()))?
                    .connect_timeout(self.cfg.rpc_timeout)
                    .timeout(self.cfg.rpc_timeout);
                let reply = ReplicationClient::new(endpoint.connect_lazy())
                    .seal(req)
                    .await?
                    .into_inner();
                Ok::<_, Status>(!reply.short)
            }
        });
        let sealed = futures::future::join_all(seals).await;
        let mut reg = self.registry.lock();
        for (s, r) in holders.iter().zip(sealed) {
            let sealed = match r {
                Ok(sealed) => sealed,
                Err(e) => {
                    tracing::warn!(%handle, server = %s.id, error = %e.message(), "sealing the replica failed; it reports its state later");
                    false
                }
            };
            reg.note_replica(
                &s.id,
                Replica {
                    handle,
                    version: new_version,
                    length,
                    sealed,
                },
            );
        }
        for s in &longest.behind {
            if !holders.iter().any(|h| h.id == s.id) {
                tracing::warn!(%handle, server = %s.id, length, "replica left short of the sealed length");
            }
        }
        Ok(length)
    }

    /// Bumps the version on `replicas` (then in the log) and grants the lease to the first,
    /// with the others as secondaries. Needs a quorum of them to take the new version.
    async fn bump_and_grant(
        &self,
        handle: u64,
        version: u64,
        at: Position,
        replicas: Vec<ServerInfo>,
    ) -> Result<ChunkLease, Status> {
        // Every new lease bumps the version on the replicas, then in the log.
        let (new_version, bumped) = self.fence(handle, version, replicas).await?;
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
        self.meta
            .mutate(Op::SetVersion(SetVersionOp {
                handle,
                version: new_version,
                primary: primary.clone(),
            }))
            .await
            .map_err(status)?;
        let note = |ids: &[ServerInfo], length: u64| {
            let mut reg = self.registry.lock();
            for s in ids {
                reg.note_replica(
                    &s.id,
                    Replica {
                        handle,
                        version: new_version,
                        length,
                        sealed: false,
                    },
                );
            }
        };
        for (s, l) in &behind {
            note(std::slice::from_ref(s), *l);
        }
        let mut holders: Vec<ServerInfo> = at_max.drain(..).map(|(s, _)| s).collect();
        note(&holders, length);
        if !behind.is_empty() {
            tracing::warn!(%handle, length, behind = behind.len(), "replicas came out of the bump shorter than the longest: catching them up");
            let longest = Longest {
                holders: holders.clone(),
                behind: behind.into_iter().map(|(s, _)| s).collect(),
                answered: bumped.len(),
                length,
            };
            holders.extend(self.catch_up(handle, new_version, &longest).await);
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
        self.lagging
            .lock()
            .retain(|(h, _), v| *h != handle || *v >= new_version);
        self.grant(handle, new_version, at, holders).await
    }

    /// Grants the lease of `handle` at `version` to the first of `replicas`, with the others
    /// as secondaries.
    async fn grant(
        &self,
        handle: u64,
        new_version: u64,
        at: Position,
        replicas: Vec<ServerInfo>,
    ) -> Result<ChunkLease, Status> {
        let Some((primary, secondaries)) = replicas.split_first() else {
            return Err(unavailable(format!("chunk {handle}: no replica to lease")));
        };
        let (primary, secondaries) = (primary.clone(), secondaries.to_vec());
        let expires = SystemTime::now() + self.cfg.lease;
        let grant = GrantLeaseRequest {
            handle,
            version: new_version,
            secondaries: secondaries.iter().map(|s| s.repl_addr.clone()).collect(),
            expires_unix_ms: unix_ms(expires),
        };
        self.control(&primary.repl_addr)?
            .grant_lease(grant)
            .await
            .map_err(|e| unavailable(format!("granting the lease to {}: {e}", primary.id)))?;
        tracing::info!(%handle, version = new_version, primary = %primary.id, "lease granted");
        self.metrics.lease_grants.inc();
        let granted = Granted {
            version: new_version,
            primary,
            secondaries,
            expires,
            at,
            doomed: false,
        };
        let reply = self.lease_reply(handle, &granted);
        self.leases.lock().insert(handle, granted);
        Ok(reply)
    }

    fn lease_reply(&self, handle: u64, l: &Granted) -> ChunkLease {
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
            lease_expires_unix_ms: unix_ms(l.expires),
        }
    }

    /// Fills in the secondaries of an adopted lease that were not registered when it was
    /// adopted (known by replication address only).
    fn resolve_secondaries(&self, l: &mut Granted) {
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
    /// this process) is left alone. Then `server` counts as reported: its other chunks hold
    /// no lease from before the restart, and may be leased at once (`append_chunk`).
    pub async fn adopt_leases(&self, server: &ServerInfo, held: &[HeldLease]) {
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
            let now = SystemTime::now();
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
            let mut leases = self.leases.lock();
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
        self.reported.lock().insert(server.id.clone());
    }

    /// Creates a new chunk at the end of `path` and logs it, naming the first server it was
    /// created on as the primary of its first lease; returns its handle and the members of that
    /// lease: the servers it was created on, in that order, then those whose creation failed
    /// (it may have worked all the same: see the module doc).
    async fn allocate(&self, path: &str) -> Result<(u64, Vec<ServerInfo>), Status> {
        let servers = self.registry.lock().place(self.cfg.replication);
        if servers.len() < self.cfg.quorum {
            return Err(unavailable(format!(
                "{} live chunkservers, {} needed for a new chunk",
                servers.len(),
                self.cfg.quorum
            )));
        }
        let handle = loop {
            let h: u64 = rand_handle();
            let taken = self
                .meta
                .read(move |ns| ns.chunk(h).is_some())
                .await
                .map_err(status)?;
            if !taken {
                break h;
            }
        };
        self.allocating.lock().insert(handle);
        let created = self
            .on_each(servers.clone(), |mut c| async move {
                c.create_chunk(CreateChunkRequest { handle, version: 1 })
                    .await
                    .map(|_| ())
            })
            .await;
        let logged = self.log_allocation(path, handle, &created).await;
        self.allocating.lock().remove(&handle);
        logged?;
        let in_doubt: Vec<ServerInfo> = servers
            .into_iter()
            .filter(|s| created.iter().all(|c| c.id != s.id))
            .collect();
        if !in_doubt.is_empty() {
            let ids: Vec<&str> = in_doubt.iter().map(|s| s.id.as_str()).collect();
            tracing::warn!(%handle, servers = ?ids, "creation failed, yet may have worked: those servers are secondaries of the first lease");
        }
        tracing::info!(%handle, path, servers = created.len(), "chunk allocated");
        let mut members = created;
        members.extend(in_doubt);
        Ok((handle, members))
    }

    async fn log_allocation(
        &self,
        path: &str,
        handle: u64,
        created: &[ServerInfo],
    ) -> Result<(), Status> {
        if created.len() < self.cfg.quorum {
            return Err(unavailable(format!(
                "chunk {handle} created on {} servers, {} needed",
                created.len(),
                self.cfg.quorum
            )));
        }
        self.meta
            .mutate(Op::AddChunk(AddChunkOp {
                path: path.to_string(),
                handle,
                version: 1,
                primary: created.first().map(|s| s.id.clone()).unwrap_or_default(),
            }))
            .await
            .map_err(status)?;
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
        self.fresh.lock().insert(handle);
        Ok(())
    }

    /// Which of `server`'s reported replicas it should delete: chunks unknown to the master for
    /// longer than `orphan_grace` (never one being allocated), replicas of purged files, stale
    /// versions of chunks with a quorum of current live replicas elsewhere (a stale replica is
    /// never served nor copied, and would block a new copy on its server), corrupt replicas
    /// once a quorum of good ones lives elsewhere, and extra replicas past the goal.
    pub async fn to_delete(
        &self,
        server: &str,
        report: &[Replica],
    ) -> Result<Vec<ChunkDelete>, Status> {
        let handles: Vec<u64> = report.iter().map(|r| r.handle).collect();
        let versions = self
            .meta
            .read(move |ns| {
                handles
                    .iter()
                    .map(|h| ns.chunk(*h).map(Want::from))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(status)?;
        let now = Instant::now();
        let mut out = Vec::new();
        let allocating = self.allocating.lock().clone();
        let purged = {
            let mut p = self.purged.lock();
            // After the grace period the orphan rule covers them anyway.
            p.retain(|_, at| now.duration_since(*at) < self.cfg.orphan_grace);
            p.keys().copied().collect::<HashSet<u64>>()
        };
        // `report` may be one piece of a pass: what the server stopped reporting is forgotten
        // only when a pass completes (`forget_unreported`).
        let mut unknown_since = self.unknown_since.lock();
        let unknown = unknown_since.entry(server.to_string()).or_default();
        // Lease primaries first: elsewhere the lease table is locked before the registry.
        let primaries: HashMap<u64, String> = self
            .leases
            .lock()
            .iter()
            .map(|(h, l)| (*h, l.primary.id.clone()))
            .collect();
        let mut reg = self.registry.lock();
        let draining = reg.draining();
        let mut extras = Vec::new();
        for (r, current) in report.iter().zip(versions) {
            if reg.is_corrupt(server, r.handle) {
                // Deleted once a quorum of good replicas lives elsewhere (its server can then
                // take a fresh copy).
                let good = current.map_or(0, |w| reg.locations(r.handle, w).len());
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
                        extras.push(r.handle);
                    }
                }
            }
        }
        // Bounded per reply (the rest goes with later heartbeats, as the replicas are still
        // reported): a purge of many files never sends one server an unbounded list.
        out.truncate(MAX_DELETES_PER_REPLY);
        let kept: HashSet<u64> = out.iter().map(|d| d.handle).collect();
        extras.retain(|h| kept.contains(h));
        // Gone from the locations now, not at this server's next report: another holder's
        // heartbeat in between must not see one replica too many (its share of capacity may
        // have become the largest meanwhile) and drop a second one.
        for handle in extras {
            reg.forget_replica(server, handle);
        }
        Ok(out)
    }

    /// A pass of `server`'s chunk report completed, naming `reported`: replicas unknown to the
    /// master that it no longer holds are forgotten (a later one starts its grace period
    /// afresh). Linear in the server's unknown replicas.
    pub fn forget_unreported(&self, server: &str, reported: &ChunkSet) {
        let mut unknown_since = self.unknown_since.lock();
        if let Some(unknown) = unknown_since.get_mut(server) {
            unknown.retain(|h, _| reported.contains(h));
            if unknown.is_empty() {
                unknown_since.remove(server);
            }
        }
    }

    /// One page of the chunks of `path`, with their live replicas at the current version:
    /// from chunk `first`, at most `max` (0, or more than [`GET_CHUNKS_PAGE`]: that many) and
    /// at most `gfs_proto::PAGE_BYTES` encoded (never fewer than one chunk). Each chunk's
    /// `file_offset` is the sum of the sealed lengths of all the file's earlier chunks, earlier
    /// pages' included.
    pub async fn get_chunks(
        &self,
        path: &str,
        first: u64,
        max: u32,
    ) -> Result<GetChunksReply, Status> {
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
            .await
            .map_err(status)?
            .map_err(status)?;
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
            };
            bytes += prost::encoding::message::encoded_len(2, &c);
            if bytes > gfs_proto::PAGE_BYTES && !page.is_empty() {
                break;
            }
            file_offset += sealed_length.unwrap_or(0);
            page.push(c);
        }
        drop(reg);
        let now = Instant::now();
        let mut wanted = self.wanted.lock();
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

    /// The replicas of each chunk of the file at `path`, by state, as the live servers last
    /// reported them.
    pub async fn health(&self, path: &str) -> Result<Vec<ChunkHealth>, Status> {
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
            .await
            .map_err(status)?
            .map_err(status)?;
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

    /// Replicas each chunk should have.
    pub fn goal(&self) -> usize {
        self.cfg.replication
    }

    /// Records that `handle` is sealed at `length`, and that the replicas at `sealed_on`
    /// (replication-plane addresses) hold it sealed there: they count as current at once.
    pub async fn report_sealed(
        &self,
        handle: u64,
        length: u64,
        sealed_on: &[String],
    ) -> Result<(), Status> {
        let _deciding = self.deciding.write([handle]).await;
        let known = self
            .meta
            .read(move |ns| ns.chunk(handle))
            .await
            .map_err(status)?;
        let Some(m) = known else {
            return Err(Status::not_found(format!("chunk {handle} not found")));
        };
        if length > self.cfg.chunk_size {
            return Err(Status::invalid_argument(
                "sealed length exceeds the chunk size",
            ));
        }
        if m.sealed_length.is_none() {
            self.seal_at(handle, length).await?;
        }
        if m.sealed_length.is_none_or(|l| l == length) {
            let mut reg = self.registry.lock();
            let ids: Vec<String> = reg
                .live()
                .into_iter()
                .filter(|s| sealed_on.contains(&s.repl_addr))
                .map(|s| s.id)
                .collect();
            for id in ids {
                reg.note_replica(
                    &id,
                    Replica {
                        handle,
                        version: m.version,
                        length,
                        sealed: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Extends the unexpired leases whose primary is `server` and that it reports `writing`;
    /// returns `(handle, version, expiry)` for the heartbeat reply.
    pub fn extend_leases(&self, server: &str, writing: &[u64]) -> Vec<(u64, u64, SystemTime)> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (handle, l) in self.leases.lock().iter_mut() {
            if l.primary.id == server && l.expires > now && !l.doomed && writing.contains(handle) {
                l.expires = now + self.cfg.lease;
                out.push((*handle, l.version, l.expires));
            }
        }
        out
    }

    /// Records replicas a primary reported as lagging (at the lease's current version);
    /// returns the chunks with news. A pair whose relegation failed is forgotten again
    /// (`relegation_failed`), so the primary's next report retries it.
    pub fn note_lagging(&self, lagging: impl IntoIterator<Item = (u64, String)>) -> Vec<u64> {
        let versions: HashMap<u64, u64> = self
            .leases
            .lock()
            .iter()
            .map(|(h, l)| (*h, l.version))
            .collect();
        let mut l = self.lagging.lock();
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
        self.lagging.lock().retain(|(h, _), _| *h != handle);
    }

    /// Chunks `id` holds at the current version that lack the goal on servers not draining.
    pub(crate) fn left_on(
        &self,
        id: &str,
        counts: &ChunkMap<crate::registry::HolderCount>,
        versions: &ChunkMap<Want>,
    ) -> usize {
        let held = self.registry.lock().replicas_of(id);
        held.iter()
            .filter(|r| versions.get(&r.handle).is_some_and(|w| w.admits(r)))
            .filter(|r| {
                counts.get(&r.handle).map_or(0, |c| c.counted as usize) < self.cfg.replication
            })
            .count()
    }

    /// Bumps the version of `handle` on its good replicas now, so lagging ones become stale at
    /// once; the current primary keeps the lease (at the new version). A no-op without a live
    /// lease (the next lease leaves lagging replicas out anyway).
    pub async fn relegate_lagging(&self, handle: u64) -> Result<(), Status> {
        let _deciding = self.deciding.write([handle]).await;
        let current = {
            let leases = self.leases.lock();
            leases
                .get(&handle)
                .filter(|l| l.expires > SystemTime::now())
                .map(|l| (l.version, l.at, l.primary.id.clone()))
        };
        let Some((version, at, primary)) = current else {
            tracing::debug!(%handle, "no live lease: the next lease leaves lagging replicas out");
            return Ok(());
        };
        let live = self.good_replicas(handle, version);
        tracing::debug!(%handle, live = live.len(), "asking the good replicas for their lengths");
        let mut replicas = self.longest(handle, version, live).await.holders;
        tracing::debug!(%handle, longest = replicas.len(), "lengths known");
        if replicas.len() < self.cfg.quorum {
            // The chunk cannot continue: let its lease run out, then the next AppendChunk
            // settles or abandons it and opens a new chunk.
            if let Some(l) = self.leases.lock().get_mut(&handle) {
                l.doomed = true;
            }
            return Err(unavailable(format!(
                "chunk {handle}: {} good replicas left, {} needed",
                replicas.len(),
                self.cfg.quorum
            )));
        }
        // Keep the primary first, so the lease stays where it is.
        replicas.sort_by_key(|s| s.id != primary);
        let l = self.bump_and_grant(handle, version, at, replicas).await?;
        tracing::info!(%handle, version = l.version, "version bumped past lagging replicas");
        Ok(())
    }

    /// Live servers holding `handle` at `version` that no primary reported lagging at it.
    fn good_replicas(&self, handle: u64, version: u64) -> Vec<ServerInfo> {
        let lagging: HashSet<String> = self
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

    /// The replicas among `live` whose committed length, asked now, is the longest.
    async fn longest(&self, handle: u64, version: u64, live: Vec<ServerInfo>) -> Longest {
        use gfs_proto::v1::ReportChunksRequest;
        let asks = live.into_iter().map(|s| {
            let client = self.control(&s.repl_addr);
            async move {
                let mut c = client.ok()?;
                let report = c
                    .report_chunks(ReportChunksRequest {
                        handles: vec![handle],
                    })
                    .await
                    .ok()?
                    .into_inner();
                let info = report
                    .chunks
                    .into_iter()
                    .find(|c| c.handle == handle && c.version == version)?;
                Some((s, info.committed_length))
            }
        });
        let answers: Vec<(ServerInfo, u64)> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let longest = Longest::of(answers);
        for s in &longest.behind {
            tracing::warn!(%handle, replica = %s.id, longest = longest.length, "replica behind the longest");
        }
        longest
    }

    /// Has each replica `longest` found behind copy the appends it lacks from a holder (with
    /// no lease out, nothing else is appending), within `clone_timeout`; returns those now at
    /// the longest length.
    /// Those that fail are left behind, to go stale at the next version bump.
    async fn catch_up(&self, handle: u64, version: u64, longest: &Longest) -> Vec<ServerInfo> {
        let Some(source) = longest.holders.first() else {
            return Vec::new();
        };
        let length = longest.length;
        let asks = longest.behind.iter().map(|s| {
            let req = CloneChunkRequest {
                handle,
                version,
                source: source.repl_addr.clone(),
                sealed_length: None,
                catch_up: true,
            };
            async move {
                let reached = self
                    .copy(&s.repl_addr, req)
                    .await
                    .map(|r| r.into_inner().length);
                match reached {
                    Ok(l) if l == length => Ok(s.clone()),
                    Ok(l) => Err((s.id.clone(), Status::data_loss(format!("caught up to {l}")))),
                    Err(e) => Err((s.id.clone(), e)),
                }
            }
        });
        let mut caught = Vec::new();
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(s) => {
                    tracing::info!(%handle, replica = %s.id, length, "replica caught up");
                    self.registry.lock().note_replica(
                        &s.id,
                        Replica {
                            handle,
                            version,
                            length,
                            sealed: false,
                        },
                    );
                    caught.push(s);
                }
                Err((id, e)) => {
                    tracing::warn!(%handle, replica = %id, error = %e.message(), "catch-up failed: the replica goes stale");
                }
            }
        }
        caught
    }

    /// Adopts from a chunk report what the log missed: a newer version (a crash between
    /// bumping the replicas and logging the bump), and a seal at the current version (a lost
    /// seal report; every replica seals at the primary's length).
    pub async fn adopt_reports(&self, server: &str, report: &[Replica]) -> Result<(), Status> {
        let handles: Vec<u64> = report.iter().map(|r| r.handle).collect();
        let known = self
            .meta
            .read(move |ns| handles.iter().map(|h| ns.chunk(*h)).collect::<Vec<_>>())
            .await
            .map_err(status)?;
        for (r, current) in report.iter().zip(known) {
            let handle = r.handle;
            if let Some(m) = current
                && r.sealed
                && r.version == m.version
                && m.sealed_length.is_none()
            {
                self.report_sealed(handle, r.length, &[]).await?;
            }
            // Only one step ahead: a crash between a bump and its log record leaves replicas
            // at the next version, never further (anything else is a lie or a bug).
            if current.is_some_and(|m| r.version > m.version && r.version - m.version > 1) {
                tracing::warn!(%handle, version = r.version, "a reported version more than one ahead of the log is ignored");
                continue;
            }
            // Only a bump that reached a quorum: its replicas then hold every acknowledged
            // append. One that reached fewer (a fence cut short) may have reached only a short
            // replica; adopting it would make the longer ones stale. Such replicas stay ahead
            // of the log until the next decision on the chunk fences them all (`lineage`).
            if current.is_some_and(|m| r.version > m.version) {
                let at_it = 1 + self
                    .registry
                    .lock()
                    .ahead_of(handle, r.version - 1)
                    .iter()
                    .filter(|(s, v)| *v == r.version && s.id != server)
                    .count();
                if at_it < self.cfg.quorum {
                    tracing::debug!(%handle, version = r.version, replicas = at_it, "a version one ahead of the log on fewer replicas than a quorum: not adopted");
                    continue;
                }
                tracing::warn!(%handle, version = r.version, "adopting a newer version from a chunk report");
                // No lease was granted at it (the master crashed before logging it).
                self.log_unleased_version(handle, r.version).await?;
            }
        }
        Ok(())
    }
}

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

/// The committed lengths replicas of a chunk reported.
struct Longest {
    /// The replicas at the longest length.
    holders: Vec<ServerInfo>,
    /// The replicas that answered with less.
    behind: Vec<ServerInfo>,
    /// How many replicas answered.
    answered: usize,
    /// The longest length.
    length: u64,
}

impl Longest {
    /// Splits `answers` (a replica and its committed length) at the longest length.
    fn of(answers: Vec<(ServerInfo, u64)>) -> Longest {
        let answered = answers.len();
        let length = answers.iter().map(|(_, l)| *l).max().unwrap_or(0);
        let (holders, behind): (Vec<_>, Vec<_>) =
            answers.into_iter().partition(|(_, l)| *l == length);
        Longest {
            holders: holders.into_iter().map(|(s, _)| s).collect(),
            behind: behind.into_iter().map(|(s, _)| s).collect(),
            answered,
            length,
        }
    }
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
    /// Another primary may still hold a lease until then: never two primaries at once.
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

/// A random, non-zero chunk handle (random, so handles of deleted chunks are not reused while
/// stale replicas of them may still exist).
fn rand_handle() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metastore::MetaConfig;
    use crate::record::{AddChunkOp, CreateOp};

    #[test]
    fn readers_of_an_unsealed_chunk_hear_enough_replicas_to_meet_every_quorum() {
        // 2 of 3: any 2 replicas include one of every 2 that hold an append.
        assert_eq!(length_quorum(3, 2, 3), 2);
        assert_eq!(length_quorum(3, 2, 1), 2);
        // An extra replica listed widens the set a quorum may sit in.
        assert_eq!(length_quorum(3, 2, 4), 3);
        // Every replica needed to append: any one has it all.
        assert_eq!(length_quorum(3, 3, 3), 1);
        assert_eq!(length_quorum(1, 1, 1), 1);
        // One needed to append: every replica must be heard.
        assert_eq!(length_quorum(3, 1, 2), 3);
    }

    #[tokio::test]
    async fn an_extra_replica_is_dropped_once_even_as_shares_change() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (m, registry) = one_chunk(dir.path(), None, &[]).await;
        let now = Instant::now();
        let r = Replica {
            handle: 7,
            version: 1,
            length: 10,
            sealed: true,
        };
        // Four holders (a rebalancing copy landed on d); a uses the largest share.
        for (id, used) in [("a", 50), ("b", 10), ("c", 10), ("d", 40)] {
            let mut reg = registry.lock();
            reg.register(
                ServerInfo {
                    id: id.into(),
                    data_addr: format!("{id}:0"),
                    repl_addr: format!("{id}:1"),
                    rack: String::new(),
                    capacity_bytes: 100,
                    used_bytes: used,
                },
                now,
            );
            reg.heartbeat_with(id, used, vec![r], false, now);
        }
        assert_eq!(m.to_delete("b", &[r]).await.unwrap(), vec![]);
        assert_eq!(m.to_delete("a", &[r]).await.unwrap().len(), 1);
        // Before a reports again, d's share grows past a's: d keeps its replica, so three
        // remain.
        registry.lock().heartbeat_with("d", 90, vec![r], false, now);
        assert_eq!(m.to_delete("d", &[r]).await.unwrap(), vec![]);
        assert_eq!(registry.lock().locations(7, 1).len(), 3);
    }

    /// A manager over a fresh log in `dir` holding file `/f` with chunk 7 at version 1
    /// (sealed at `sealed` if given), and a registry with servers `ids`.
    async fn one_chunk(
        dir: &std::path::Path,
        sealed: Option<u64>,
        ids: &[&str],
    ) -> (ChunkManager, Arc<Mutex<Registry>>) {
        #![allow(clippy::unwrap_used)]
        let meta = Arc::new(
            MetaStore::open(
                dir,
                MetaConfig {
                    checkpoint_every: 1000,
                },
            )
            .unwrap(),
        );
        meta.mutate(Op::Create(CreateOp {
            path: "/f".into(),
            mtime_ms: 0,
            replication: 3,
        }))
        .await
        .unwrap();
        meta.mutate(Op::AddChunk(AddChunkOp {
            path: "/f".into(),
            handle: 7,
            version: 1,
            primary: String::new(),
        }))
        .await
        .unwrap();
        if let Some(length) = sealed {
            meta.mutate(Op::Seal(SealOp { handle: 7, length }))
                .await
                .unwrap();
        }
        let registry = Arc::new(Mutex::new(Registry::new(Duration::from_secs(60))));
        for id in ids {
            registry.lock().register(
                ServerInfo {
                    id: (*id).into(),
                    data_addr: format!("{id}:0"),
                    repl_addr: format!("{id}:1"),
                    rack: String::new(),
                    capacity_bytes: 100,
                    used_bytes: 10,
                },
                Instant::now(),
            );
        }
        let m = ChunkManager::new(
            meta,
            Arc::clone(&registry),
            ChunkConfig {
                chunk_size: 1 << 20,
                replication: 3,
                quorum: 2,
                lease: Duration::from_secs(60),
                rpc_timeout: Duration::from_secs(5),
                orphan_grace: Duration::from_secs(600),
                max_clones: 8,
                clone_timeout: Duration::from_secs(300),
                rebalance_threshold: 0.1,
            },
        );
        (m, registry)
    }

    /// I1: a replica at the chunk's version that ends short of the sealed length is not a
    /// current replica (not listed, not counted), and goes once three current ones live
    /// elsewhere; its delete spares it if it reached the sealed length since its report.
    #[tokio::test]
    async fn a_replica_short_of_the_sealed_length_is_stale_not_current() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (m, registry) = one_chunk(dir.path(), Some(10), &["a", "b", "c", "d"]).await;
        let full = Replica {
            handle: 7,
            version: 1,
            length: 10,
            sealed: true,
        };
        let short = Replica {
            length: 6,
            sealed: false,
            ..full
        };
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            registry
                .lock()
                .heartbeat_with(id, 10, vec![full], false, now);
        }
        registry
            .lock()
            .heartbeat_with("d", 10, vec![short], false, now);
        let want = Want {
            version: 1,
            sealed: Some(10),
        };
        let listed: Vec<String> = registry
            .lock()
            .locations(7, want)
            .into_iter()
            .map(|(s, _)| s.id)
            .collect();
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert!(!listed.contains(&"d".to_string()));
        let h = registry.lock().health(7, want);
        assert_eq!((h.current, h.stale), (3, 1));
        assert_eq!(
            m.to_delete("d", &[short]).await.unwrap(),
            vec![ChunkDelete {
                handle: 7,
                below_version: 2,
                unless_length: Some(10),
            }]
        );
        assert_eq!(m.to_delete("a", &[full]).await.unwrap(), vec![]);
    }

    /// Finding 11: lagging reports count against the version they were made at, a replica
    /// at that address after a bump is good again, and a report whose relegation failed is
    /// news again the next time it comes (so the relegation is retried).
    #[tokio::test]
    async fn lagging_reports_are_per_version_and_retried_after_a_failed_relegation() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (m, registry) = one_chunk(dir.path(), None, &["a", "b", "c"]).await;
        let at = |v: u64| Replica {
            handle: 7,
            version: v,
            length: 10,
            sealed: false,
        };
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            registry
                .lock()
                .heartbeat_with(id, 10, vec![at(1)], false, now);
        }
        let live = registry.lock().live();
        let info = |id: &str| live.iter().find(|s| s.id == id).unwrap().clone();
        m.leases.lock().insert(
            7,
            Granted {
                version: 1,
                primary: info("a"),
                secondaries: vec![info("b"), info("c")],
                expires: SystemTime::now() + Duration::from_secs(60),
                at: Position {
                    index: 0,
                    file_offset: 0,
                },
                doomed: false,
            },
        );
        let good = |m: &ChunkManager, v: u64| -> Vec<String> {
            let mut ids: Vec<String> = m.good_replicas(7, v).into_iter().map(|s| s.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(m.note_lagging([(7, "c:1".to_string())]), vec![7]);
        assert_eq!(m.note_lagging([(7, "c:1".to_string())]), Vec::<u64>::new());
        assert_eq!(good(&m, 1), ["a", "b"]);
        m.relegation_failed(7);
        assert_eq!(m.note_lagging([(7, "c:1".to_string())]), vec![7]);
        // A bump to version 2 happened (a fresh copy landed on c at it): c is good at 2.
        m.leases.lock().get_mut(&7).unwrap().version = 2;
        for id in ["a", "b", "c"] {
            registry
                .lock()
                .heartbeat_with(id, 10, vec![at(2)], false, now);
        }
        assert_eq!(good(&m, 2), ["a", "b", "c"]);
        // A report of a chunk with no lease known here is ignored.
        assert_eq!(m.note_lagging([(8, "c:1".to_string())]), Vec::<u64>::new());
    }

    /// Finding 9: however many replicas a server should drop, one heartbeat reply names at
    /// most `MAX_DELETES_PER_REPLY` of them.
    #[tokio::test]
    async fn one_heartbeat_reply_carries_a_bounded_number_of_deletes() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
        let handles: Vec<u64> = (1000..4000).collect();
        m.purged(&handles);
        let report: Vec<Replica> = handles
            .iter()
            .map(|&handle| Replica {
                handle,
                version: 1,
                length: 0,
                sealed: false,
            })
            .collect();
        assert_eq!(
            m.to_delete("a", &report).await.unwrap().len(),
            MAX_DELETES_PER_REPLY
        );
    }

    /// The review's "other observation": forgetting the unknown replicas a server no longer
    /// reports was O(unknown x report) under a mutex, quadratic after a metadata loss (every
    /// replica unknown). 200,000 unknown replicas reported twice: linear time.
    #[tokio::test]
    async fn a_report_of_many_unknown_replicas_is_checked_in_linear_time() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
        let report: Vec<Replica> = (1_000_000..1_200_000)
            .map(|handle| Replica {
                handle,
                version: 1,
                length: 0,
                sealed: false,
            })
            .collect();
        let reported: ChunkSet = report.iter().map(|r| r.handle).collect();
        // The first report notes them all as unknown; the second is the costly one.
        assert!(m.to_delete("a", &report).await.unwrap().is_empty());
        m.forget_unreported("a", &reported);
        let t = Instant::now();
        assert!(m.to_delete("a", &report).await.unwrap().is_empty());
        m.forget_unreported("a", &reported);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    /// Finding 8: a file of 30,000 chunks at three replicas lists in about 5.5 MB, past
    /// tonic's default 4 MiB. GetChunks pages it: 10,000 chunks a page by default, within
    /// `PAGE_BYTES`, each chunk at its index and file offset (the sum of the sealed lengths
    /// of every earlier chunk, earlier pages' included), `more` and `next_index` to go on.
    #[tokio::test]
    async fn get_chunks_pages_a_file_of_30_000_chunks_with_offsets_right() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        // Names as long as real ones (host names in the addresses).
        let ids = [
            "cs-a.rack-1.example.net",
            "cs-b.rack-2.example.net",
            "cs-c.rack-3.example.net",
        ];
        let (m, registry) = one_chunk(dir.path(), Some(3), &ids).await;
        const N: u64 = 30_000;
        // Chunk 7 is the first; then 8.. in order, all sealed at lengths that vary but the last.
        let adds = (1..N).map(|i| {
            m.meta.mutate(Op::AddChunk(AddChunkOp {
                path: "/f".into(),
                handle: 7 + i,
                version: 1,
                primary: String::new(),
            }))
        });
        futures::future::try_join_all(adds).await.unwrap();
        let seals = (1..N - 1).map(|i| {
            m.meta.mutate(Op::Seal(SealOp {
                handle: 7 + i,
                length: 1000 + i,
            }))
        });
        futures::future::try_join_all(seals).await.unwrap();
        let sealed = |i: u64| match i {
            0 => Some(3),
            i if i < N - 1 => Some(1000 + i),
            _ => None,
        };
        let report: Vec<Replica> = (0..N)
            .map(|i| Replica {
                handle: 7 + i,
                version: 1,
                length: sealed(i).unwrap_or(5),
                sealed: sealed(i).is_some(),
            })
            .collect();
        for id in ids {
            registry
                .lock()
                .heartbeat_with(id, 10, report.clone(), false, Instant::now());
        }

        let mut all = Vec::new();
        let mut next = 0;
        let mut pages = 0;
        loop {
            let r = m.get_chunks("/f", next, 0).await.unwrap();
            assert!(prost::Message::encoded_len(&r) <= gfs_proto::PAGE_BYTES);
            assert!(r.chunks.len() <= GET_CHUNKS_PAGE);
            assert_eq!(r.next_index, next + r.chunks.len() as u64);
            pages += 1;
            all.extend(r.chunks);
            next = r.next_index;
            if !r.more {
                break;
            }
        }
        assert_eq!(pages, 3);
        let whole = GetChunksReply {
            chunks: all.clone(),
            ..GetChunksReply::default()
        };
        assert!(prost::Message::encoded_len(&whole) > 4 << 20);
        let mut offset = 0;
        for (i, c) in all.iter().enumerate() {
            let i = i as u64;
            assert_eq!((c.index, c.handle), (i, 7 + i));
            assert_eq!(c.sealed_length, sealed(i));
            assert_eq!(c.file_offset, offset, "chunk {i}");
            assert_eq!(c.replicas.len(), 3);
            offset += sealed(i).unwrap_or(0);
        }
        assert_eq!(all.len() as u64, N);

        // A small page from the middle, the end, and past the end.
        let r = m.get_chunks("/f", 12_345, 2).await.unwrap();
        let starts: Vec<(u64, u64)> = r.chunks.iter().map(|c| (c.index, c.file_offset)).collect();
        let want: Vec<(u64, u64)> = all[12_345..12_347]
            .iter()
            .map(|c| (c.index, c.file_offset))
            .collect();
        assert_eq!(starts, want);
        assert!(r.more);
        assert_eq!(r.next_index, 12_347);
        let r = m.get_chunks("/f", N - 3, 7).await.unwrap();
        assert_eq!((r.chunks.len(), r.more, r.next_index), (3, false, N));
        let r = m.get_chunks("/f", N + 5, 0).await.unwrap();
        assert_eq!((r.chunks.len(), r.more, r.next_index), (0, false, N));
    }

    /// Finding 8: fsck of a large, badly degraded tree stays within its budget: unhealthy
    /// files and their bad chunks are listed while they fit, the rest counted; the totals
    /// cover everything.
    #[tokio::test]
    async fn fsck_lists_what_fits_and_counts_the_rest() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        // No server reports anything: every chunk is lost.
        let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
        let meta = Arc::clone(&m.meta);
        let mkdir =
            |path: String| meta.mutate(Op::Mkdir(crate::record::PathOp { path, mtime_ms: 0 }));
        mkdir("/d".into()).await.unwrap();
        let create = |path: String| {
            m.meta.mutate(Op::Create(CreateOp {
                path,
                mtime_ms: 0,
                replication: 3,
            }))
        };
        let add = |path: String, handle: u64| {
            m.meta.mutate(Op::AddChunk(AddChunkOp {
                path,
                handle,
                version: 1,
                primary: String::new(),
            }))
        };
        create("/d/many".into()).await.unwrap();
        futures::future::try_join_all((0..200).map(|i| add("/d/many".into(), 100 + i)))
            .await
            .unwrap();
        for i in 0..20u64 {
            create(format!("/d/x{i:02}")).await.unwrap();
            add(format!("/d/x{i:02}"), 1000 + i).await.unwrap();
        }

        let r = m.fsck_within("/", 1000).await.unwrap();
        assert!(prost::Message::encoded_len(&r) <= 1000);
        assert_eq!((r.files, r.chunks, r.unhealthy_files), (22, 221, 22));
        assert_eq!(r.unhealthy.len() as u64 + r.unlisted_files, 22);
        assert!(r.unlisted_files > 0);
        let many = &r.unhealthy[0];
        assert_eq!(many.path, "/d/many");
        assert_eq!(many.chunks.len() as u64 + many.unlisted_chunks, 200);
        assert!(many.unlisted_chunks > 0);
        // The whole budget lists everything.
        let r = m.fsck("/").await.unwrap();
        assert_eq!((r.unhealthy.len(), r.unlisted_files), (22, 0));
        assert!(r.unhealthy.iter().all(|f| f.unlisted_chunks == 0));

        // 2,000 files with 3.8 KB paths, one lost chunk each: about 7.7 MB unlisted in full
        // (what the old reply was), past tonic's 4 MiB default.
        let mut deep = String::new();
        for level in 0..14 {
            deep += &format!("/{}", format!("{level:02}").repeat(125));
            mkdir(deep.clone()).await.unwrap();
        }
        let name = |i: u64| format!("{deep}/{i:04}{}", "n".repeat(240));
        futures::future::try_join_all((0..2000).map(|i| create(name(i))))
            .await
            .unwrap();
        futures::future::try_join_all((0..2000).map(|i| add(name(i), 10_000 + i)))
            .await
            .unwrap();
        let all = m.fsck_within("/", usize::MAX).await.unwrap();
        assert!(prost::Message::encoded_len(&all) > 7 << 20);
        let r = m.fsck("/").await.unwrap();
        let len = prost::Message::encoded_len(&r);
        // Nearly full (the count is high by a few bytes an entry).
        assert!(
            len <= gfs_proto::PAGE_BYTES && len + (32 << 10) > gfs_proto::PAGE_BYTES,
            "{len}"
        );
        assert_eq!((r.files, r.unhealthy_files), (2022, 2022));
        assert!(r.unlisted_files > 0);
        assert_eq!(r.unhealthy.len() as u64 + r.unlisted_files, 2022);
    }

    #[test]
    fn never_two_primaries_at_once() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        assert_eq!(lease_decision(None, 3, false, t0), LeaseDecision::Grant);
        // A live primary with time left keeps its lease.
        assert_eq!(
            lease_decision(Some((3, t0 + s(30))), 3, true, t0),
            LeaseDecision::Reuse
        );
        // A dead (or partitioned) primary still holds its lease until it expires.
        assert_eq!(
            lease_decision(Some((3, t0 + s(30))), 3, false, t0),
            LeaseDecision::WaitUntil(t0 + s(30))
        );
        assert_eq!(
            lease_decision(Some((3, t0 + s(30))), 3, false, t0 + s(30)),
            LeaseDecision::Grant
        );
        // A lease about to lapse is waited out rather than handed out.
        assert_eq!(
            lease_decision(
                Some((3, t0 + s(30))),
                3,
                true,
                t0 + s(29) + Duration::from_millis(500)
            ),
            LeaseDecision::WaitUntil(t0 + s(30))
        );
        // A lease of an older version (the chunk moved on) blocks until it ends too.
        assert_eq!(
            lease_decision(Some((2, t0 + s(5))), 3, true, t0),
            LeaseDecision::WaitUntil(t0 + s(5))
        );
    }
}
