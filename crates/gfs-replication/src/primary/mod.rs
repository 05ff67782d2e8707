//! The primary side: leases, offset assignment and the append's rounds (one or two).
//!
//! For each append the primary validates lease and version, answers a retried op id from the
//! committed op table (after confirming a quorum holds it), assigns the next offset and stages
//! locally under one lock (so offsets and staging agree), PREPAREs every secondary at once, and
//! COMMITs (locally and remotely) once a quorum — the primary included — is READY. The client gets
//! its offset only after a quorum has fsynced. Secondaries that miss a phase are recorded as
//! lagging. Failed appends roll the next offset back; appends staged after a failed one cannot
//! commit over the hole (the store refuses them), so they fail too and nothing is acknowledged
//! out of order.
//!
//! Secondaries are reached only through a [`ReplicaTransport`] (gRPC in production); the tests
//! beside this module (`primary/scenario_tests/`) run every step below over the in-memory one, with
//! faults on chosen calls.
//!
//! # One append, step by step ([`Coordinator::append`])
//!
//! 1. The record is at most a quarter of a chunk (`RecordTooLarge`) and not empty
//!    (`EmptyRecord`, BadRequest on the data plane: it would take an op-table entry and no
//!    byte). Then the op table, before any lease check (I4). An op committed here (at another
//!    length: `OpMismatch`) has, with a lease, its COMMIT sent again to the secondaries
//!    (idempotent there, and it finishes a still-staged one) and its first offset returned once
//!    a quorum holds it; without a lease, on a chunk sealed here, `SealedWith` its offset (the
//!    client takes it once a quorum of the replicas say the same). A chunk sealed
//!    here without the op answers `ChunkFull`, whatever version or lease the caller names (the
//!    table is final once sealed). A chunk sealed here longer than `op_retention` ago has
//!    dropped its table: every op gets `OpRetentionExpired` (not retriable), never `ChunkFull`.
//! 2. The lease is held (`NotPrimary`), at the caller's version (`StaleVersion`), not expired
//!    (`LeaseExpired`).
//! 3. Under the lease lock the next offset is assigned and the bytes are staged locally, so
//!    staging order is assignment order. A record that does not fit seals the chunk (below) and
//!    gets `ChunkFull`. A positioned append (`at`, APPEND_AT) ahead of the next offset waits up
//!    to `prepare_timeout` for its predecessors (a writer's requests run as separate tasks and
//!    may arrive out of order); one behind it, or at the deadline, gets `OffsetMismatch`. If an
//!    append was rolled back under later ones that then committed, the next offset first moves
//!    up to the committed length.
//! 4. PREPARE goes to every secondary at once ([`call_quorum`], deadline `prepare_timeout`).
//!    Fewer than quorum − 1 READY: ABORT locally and on every secondary but those still
//!    preparing (whose PREPARE is aborted when it ends, however it ends): a failed PREPARE may
//!    have staged the bytes with only its reply lost. Then `QuorumNotReached { got, need }`, and
//!    the next offset rolls back.
//! 5. COMMIT locally and to the READY secondaries; a secondary still preparing gets its COMMIT
//!    as soon as its PREPARE lands, and counts too ([`await_quorum`], deadline
//!    `commit_timeout`). The client gets the offset only once the primary and quorum − 1
//!    secondaries are durable; the quorum-commit watermark ([`Coordinator::read_limit`]) moves
//!    to the append's end, and goes to every secondary (`QuorumLength`, not awaited), which
//!    shows readers nothing past it: a secondary may have committed an append its primary
//!    failed to (a full disk, a crash), which no quorum holds.
//!
//!    In one round (`CoordinatorConfig::one_round`, experimental and off by default: a primary
//!    cut off commits every failed append alone, and the simulator found the master sealing
//!    chunks on such a lone tail, lost once that one replica rotted, seeds 230111401622358
//!    and 230111401622454; see ARCHITECTURE.md), steps 4 and 5 are one: the
//!    append goes to every secondary as a WRITE (stage and commit at once, answered when
//!    durable, deadline `commit_timeout`) while it commits here, and the client gets the
//!    offset once the primary and quorum − 1 secondaries are durable, as above. Nothing is
//!    aborted and the offset never rolls back once sent: any replica the WRITE reached may hold
//!    it, which is the state a two-round append reaches when its COMMIT phase falls short. A
//!    retry of the op (step 1) sends the WRITE again with the bytes read back here, so a
//!    secondary the first one missed gets them (one that holds the op answers with its record).
//!    What this keeps: every replica still commits in offset order at the lease's version (a
//!    WRITE waits in the store for the bytes before it, and is refused at any other version),
//!    and nothing is acknowledged or shown to readers before a quorum holds it (the watermark
//!    moves as in step 5). What it gives up: an append that fails is no longer undone, so a
//!    failed one leaves its bytes on the replicas it reached, where a retry finds them.
//! 6. Every secondary that failed or missed a deadline in any phase is recorded in
//!    [`Coordinator::lagging`]. The chunkserver reports it to the master (heartbeats and
//!    `ReportChunks`), which bumps the version past it, so it goes stale. A new lease at a new
//!    version (or with new secondaries), or the lease's revocation, clears the chunk's set.
//!
//! Sealing is in `seal`, leases in `lease`.

use gfs_util::collections::{HashMap, HashSet};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use gfs_storage::{AppendRecord, ChunkHandle, ChunkStore, OpId, StageRequest, StorageError};
use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;

use crate::error::{ReplicationError, Result};
use crate::quorum::{Pending, QuorumOutcome, await_quorum, call_quorum};
use crate::transport::ReplicaTransport;

mod lease;
mod seal;

pub use lease::LeaseInfo;

/// How long after its expiry a lease is forgotten.
pub const FORGET_EXPIRED: Duration = Duration::from_secs(60);

/// Tunables of the primary side.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Replicas (the primary included) that must be READY, then durable, for an append.
    pub quorum: usize,
    /// Deadline of the READY phase.
    pub prepare_timeout: Duration,
    /// Deadline of the COMMIT phase, of a one-round WRITE and of SEAL.
    pub commit_timeout: Duration,
    /// Largest record (a quarter of a chunk).
    pub max_record: u64,
    /// Chunk size of the cluster.
    pub chunk_size: u64,
    /// How long a seal waits for appends in flight.
    pub seal_wait: Duration,
    /// Wall-clock time, against which lease expiries are checked.
    pub clock: gfs_util::time::Clock,
    /// Appends in one round (WRITE: each secondary stages and commits at once, beside the
    /// commit here) instead of two (PREPARE to a quorum, then COMMIT). Experimental: off by
    /// default (see the module docs).
    pub one_round: bool,
}

impl CoordinatorConfig {
    /// Defaults for a cluster with `chunk_size` chunks.
    pub fn for_chunk_size(chunk_size: u64) -> CoordinatorConfig {
        CoordinatorConfig {
            quorum: 2,
            prepare_timeout: Duration::from_secs(5),
            commit_timeout: Duration::from_secs(5),
            max_record: chunk_size / 4,
            chunk_size,
            seal_wait: Duration::from_secs(5),
            clock: gfs_util::time::Clock::system(),
            one_round: false,
        }
    }
}

/// Coordinates appends for the chunks this server holds a lease on.
pub struct Coordinator {
    shared: Arc<Shared>,
    leases: Mutex<HashMap<ChunkHandle, Arc<Lease>>>,
    /// Read limits of chunks whose lease was forgotten while this replica held committed
    /// bytes no quorum was known to hold: kept until the version changes.
    limits: Mutex<HashMap<ChunkHandle, u64>>,
    /// The version of the last lease this server held on each chunk since it started, once
    /// that lease left the table (revoked, given up on a failed disk, forgotten after it ran
    /// out): what it says at a fence ([`Coordinator::last_lease`]). Dropped at a new grant and
    /// when the chunk is deleted here.
    ended: Mutex<HashMap<ChunkHandle, u64>>,
}

/// Told of every chunk this server seals as primary (handle, final length, and the
/// secondaries known sealed at that length), before any caller learns the chunk is full: the
/// chunkserver reports it to the master.
pub type SealListener = Arc<
    dyn Fn(
            ChunkHandle,
            u64,
            Vec<String>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Where the time of one acknowledged append went, on its primary (see [`AppendStages`]).
pub type StageListener = Arc<dyn Fn(&AppendStages) + Send + Sync>;

/// The stages of one append this server acknowledged as primary, in order. The two commits
/// overlap; `total` covers the assignment, the prepare, the slower commit and what follows
/// (publishing the length, a seal when the append filled the chunk): what the client waited
/// beyond the network and its own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendStages {
    /// From arrival to an offset assigned and the bytes staged here: the checks, and the wait
    /// of a positioned append for its predecessors.
    pub assign: Duration,
    /// PREPARE to the secondaries until enough of them are READY for a quorum (zero in one
    /// round).
    pub prepare: Duration,
    /// This replica's COMMIT: the wait for its group commit's fsync round, and the round.
    pub commit_here: Duration,
    /// COMMIT (in one round: WRITE) to the secondaries until enough of them are durable for a
    /// quorum, beside `commit_here` (the two overlap; the slower one is on the append's path).
    pub commit_remote: Duration,
    /// From arrival to the answer.
    pub total: Duration,
}

struct Shared {
    store: Arc<ChunkStore>,
    peers: Arc<dyn ReplicaTransport>,
    cfg: CoordinatorConfig,
    lagging: Mutex<BTreeSet<(ChunkHandle, String)>>,
    on_seal: Mutex<Option<SealListener>>,
    on_stages: std::sync::OnceLock<StageListener>,
}

struct Lease {
    handle: ChunkHandle,
    version: u64,
    secondaries: Vec<String>,
    expires: Mutex<SystemTime>,
    assign: Mutex<Assign>,
    /// Woken when no append is in flight.
    idle: Notify,
    /// Woken when the next offset moves (an append assigned or rolled back).
    advanced: Notify,
    /// The length the chunk was sealed at, once sealed.
    sealed: OnceCell<u64>,
    /// When the lease was granted or last took an append.
    last_append: Mutex<tokio::time::Instant>,
    /// The prefix of the chunk a quorum holds durably: what reads may see (I3).
    durable: Mutex<Watermark>,
}

/// The quorum-commit watermark of a chunk under a lease: every byte below `to` is durable on
/// a quorum. An append that reached a quorum moves it to its end at once, whatever came
/// before: each replica commits in offset order, so every replica that committed it holds the
/// whole prefix below it too.
#[derive(Debug, Default)]
struct Watermark {
    to: u64,
}

impl Watermark {
    /// Notes that a quorum holds an append ending at `end` (and so everything before it).
    fn held(&mut self, end: u64) {
        self.to = self.to.max(end);
    }
}

struct Assign {
    next: u64,
    /// The end of the furthest append ever assigned: above `next` after a failed append was
    /// rolled back while later ones were in flight.
    high: u64,
    inflight: HashSet<OpId>,
    sealing: bool,
}

impl Coordinator {
    /// A coordinator over `store`, talking to secondaries through `peers` ([`Peers`](crate::Peers)
    /// in production).
    pub fn new(
        store: Arc<ChunkStore>,
        peers: Arc<dyn ReplicaTransport>,
        cfg: CoordinatorConfig,
    ) -> Coordinator {
        Coordinator {
            shared: Arc::new(Shared {
                store,
                peers,
                cfg,
                lagging: Mutex::new(BTreeSet::new()),
                on_seal: Mutex::new(None),
                on_stages: std::sync::OnceLock::new(),
            }),
            leases: Mutex::new(HashMap::default()),
            limits: Mutex::new(HashMap::default()),
            ended: Mutex::new(HashMap::default()),
        }
    }

    /// The wall clock leases are checked against.
    pub fn clock(&self) -> &gfs_util::time::Clock {
        &self.shared.cfg.clock
    }

    /// Calls `listener` for every chunk sealed here as primary, before answering `ChunkFull`.
    pub fn set_seal_listener(&self, listener: SealListener) {
        *self.shared.on_seal.lock() = Some(listener);
    }

    /// Calls `listener` with the stages of every append acknowledged here as primary (the
    /// first listener set stays).
    pub fn set_stage_listener(&self, listener: StageListener) {
        let _ = self.shared.on_stages.set(listener);
    }

    /// As the primary of `handle` at `version`: makes the length a quorum holds known to
    /// enough secondaries that a reader finds it with this primary gone; returns it.
    pub async fn flush(&self, handle: ChunkHandle, version: u64) -> Result<u64> {
        let lease = self.lease(handle)?;
        if lease.version != version {
            return Err(ReplicationError::StaleVersion {
                handle,
                have: lease.version,
                got: version,
            });
        }
        self.shared.flush(&lease).await
    }

    /// Appends `data` to the chunk as operation `op` (only at offset `at`, when given); returns
    /// its offset inside the chunk once a quorum of replicas has it durably. A retry of a
    /// committed op returns its first offset. An append that fills the chunk exactly seals it.
    /// An empty record is refused (`EmptyRecord`): every op-table entry then holds a byte, so
    /// an unsealed chunk's table has at most `chunk_size` entries. When the local disk fails
    /// (full, an I/O error, the chunk poisoned), the lease is given up (`DiskFailed`).
    pub async fn append(
        &self,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        at: Option<u64>,
        data: Bytes,
    ) -> Result<u64> {
        let req = AppendRequest {
            handle,
            version,
            op,
            at,
            data,
        };
        match self.append_here(req).await {
            Err(ReplicationError::Storage(e)) if disk_failed(&e) => {
                // This replica cannot commit here (and its secondaries may have): only a new
                // lease, fenced from a quorum's longest, can go on. Give this one up so it is
                // no longer extended; the client's retries reach the next primary once it
                // runs out.
                if self.leases.lock().contains_key(&handle) {
                    tracing::error!(%handle, %op, error = %e, "the local disk failed an append; giving up the lease");
                    self.revoke(handle);
                }
                Err(ReplicationError::DiskFailed {
                    handle,
                    message: e.to_string(),
                })
            }
            res => res,
        }
    }

    /// [`Coordinator::append`], up to what a failed disk means for the lease.
    async fn append_here(&self, req: AppendRequest) -> Result<u64> {
        let arrived = Instant::now();
        let AppendRequest {
            handle,
            version,
            op,
            at,
            data,
        } = req;
        let len = data.len() as u64;
        if len > self.shared.cfg.max_record {
            return Err(ReplicationError::RecordTooLarge {
                len,
                max: self.shared.cfg.max_record,
            });
        }
        if len == 0 {
            return Err(ReplicationError::EmptyRecord);
        }
        // The op table first, whatever the lease: a retry must learn what became of its first
        // attempt even after the lease moved on (I4). A table dropped past the op retention
        // answers `OpRetentionExpired` here, before anything could say `ChunkFull`.
        if let Some(rec) = self.shared.store.lookup_op(handle, op)? {
            if u64::from(rec.len) != len {
                return Err(ReplicationError::OpMismatch {
                    handle,
                    op,
                    have: u64::from(rec.len),
                    got: len,
                });
            }
            return match self.lease(handle) {
                Ok(lease) => self.shared.confirm(&lease, op, rec).await,
                Err(e) => self.settled(handle, op).unwrap_or(Err(e)),
            };
        }
        // Sealed here without the op: it is not in this chunk and never will be, whatever
        // version or lease the caller names.
        if let Some(answer) = self.settled(handle, op) {
            return answer;
        }
        let lease = self.lease(handle)?;
        *lease.last_append.lock() = tokio::time::Instant::now();
        if lease.version != version {
            return Err(ReplicationError::StaleVersion {
                handle,
                have: lease.version,
                got: version,
            });
        }
        if self.shared.cfg.clock.now() >= *lease.expires.lock() {
            return Err(ReplicationError::LeaseExpired(handle));
        }
        if let Some(length) = lease.sealed.get() {
            return Err(ReplicationError::ChunkFull {
                handle,
                length: *length,
            });
        }
        // A positioned append that arrived before its predecessors waits for them, bounded:
        // requests of one writer may be dispatched out of order.
        let deadline = tokio::time::Instant::now() + self.shared.cfg.prepare_timeout;
        let offset = loop {
            let advanced = lease.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            let next = {
                let mut a = lease.assign.lock();
                if a.inflight.contains(&op) {
                    return Err(ReplicationError::Busy("the same op is in flight"));
                }
                if a.next < a.high {
                    // An append was rolled back under later ones, which may have committed
                    // since.
                    let committed = self.shared.store.info(handle)?.committed_len;
                    a.next = a.next.max(committed);
                }
                match at {
                    Some(expected) if expected < a.next => {
                        return Err(ReplicationError::OffsetMismatch {
                            handle,
                            expected,
                            next: a.next,
                        });
                    }
                    Some(expected) if expected > a.next => Some(a.next),
                    _ => {
                        break self.assign(&lease, &mut a, op, version, &data)?;
                    }
                }
            };
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return Err(ReplicationError::OffsetMismatch {
                    handle,
                    expected: at.unwrap_or(0),
                    next: next.unwrap_or(0),
                });
            }
        };
        lease.advanced.notify_waiters();
        let Some(offset) = offset else {
            let full = self.shared.seal(&lease).await;
            // The seal waited for the appends in flight, an earlier attempt of this op among
            // them: once sealed, the op table is final here.
            if let Some(rec) = self.shared.store.lookup_op(handle, op)? {
                return self.shared.confirm(&lease, op, rec).await;
            }
            return Err(full);
        };
        let mut stages = AppendStages {
            assign: arrived.elapsed(),
            ..AppendStages::default()
        };
        let (res, maybe_committed) = self
            .shared
            .replicate(&lease, op, offset, data, &mut stages)
            .await;
        {
            let mut a = lease.assign.lock();
            a.inflight.remove(&op);
            if res.is_err() && !maybe_committed {
                a.next = a.next.min(offset);
                lease.advanced.notify_waiters();
            }
            if a.inflight.is_empty() {
                lease.idle.notify_waiters();
            }
        }
        if res.is_ok() && offset + len == self.shared.cfg.chunk_size {
            // Nothing more fits: seal now, so the writer's next request for the file's last
            // chunk gets a new one.
            self.shared.seal(&lease).await;
        }
        if res.is_ok()
            && let Some(listener) = self.shared.on_stages.get()
        {
            stages.total = arrived.elapsed();
            listener(&stages);
        }
        res
    }
}

/// One append as [`Coordinator::append`] was asked it.
struct AppendRequest {
    handle: ChunkHandle,
    version: u64,
    op: OpId,
    at: Option<u64>,
    data: Bytes,
}

/// Whether a local store error means this replica's disk can take no more writes for now (full,
/// failing, or the chunk poisoned by an earlier failed fsync).
fn disk_failed(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::DiskFull { .. }
            | StorageError::Io { .. }
            | StorageError::Poisoned(_)
            | StorageError::PermissionDenied { .. }
            | StorageError::DiskLost(_)
            // A retry in one round reads the op's bytes back here to send them again: a copy
            // rotten at rest cannot lead the chunk (seed 148412570704197 of the simulator: the
            // checksum error reached the client as final).
            | StorageError::ChecksumMismatch { .. }
    )
}

impl Coordinator {
    /// The answer of a replica whose chunk is sealed here: `SealedWith` its offset if it is in
    /// the sealed content (a quorum of the replicas must say so before the client takes it:
    /// the master may have sealed the chunk at a length this replica alone held), else
    /// `ChunkFull` (it is not in this chunk, and never will be); once the
    /// table was dropped (sealed longer than `op_retention` ago), `OpRetentionExpired`: nobody
    /// knows any more, and "not here" would make the client append it elsewhere. `None` while
    /// the chunk is not sealed here. The op table is read after the sealed flag: a seal
    /// follows every commit before it, so the table is final by then.
    fn settled(&self, handle: ChunkHandle, op: OpId) -> Option<Result<u64>> {
        let info = self.shared.store.info(handle).ok()?;
        if !info.sealed {
            return None;
        }
        Some(match self.shared.store.lookup_op(handle, op) {
            Ok(Some(r)) => Err(ReplicationError::SealedWith {
                handle,
                offset: r.offset,
            }),
            Ok(None) => Err(ReplicationError::ChunkFull {
                handle,
                length: info.committed_len,
            }),
            Err(e) => Err(e.into()),
        })
    }

    /// Stages `data` at the chunk's next offset and returns that offset; `None` when it does
    /// not fit (the chunk is to be sealed).
    fn assign(
        &self,
        lease: &Lease,
        a: &mut Assign,
        op: OpId,
        version: u64,
        data: &Bytes,
    ) -> Result<Option<u64>> {
        let handle = lease.handle;
        let len = data.len() as u64;
        if a.sealing || a.next + len > self.shared.cfg.chunk_size {
            a.sealing = true;
            return Ok(None);
        }
        let offset = a.next;
        let staged = self.shared.store.stage(StageRequest {
            op,
            handle,
            version,
            offset,
            data: data.clone(),
        });
        match staged {
            Ok(()) => {}
            Err(StorageError::Busy { .. }) => {
                return Err(ReplicationError::Busy("staging area full"));
            }
            Err(StorageError::AlreadyCommitted { .. }) => {
                return Err(ReplicationError::Busy("the same op just committed"));
            }
            Err(e) => return Err(e.into()),
        }
        a.next += len;
        a.high = a.high.max(a.next);
        a.inflight.insert(op);
        Ok(Some(offset))
    }
}

impl Shared {
    /// Tells the secondaries the quorum's length and returns it once `quorum - 1` of them took
    /// it: any `replicas - quorum + 1` replicas a reader asks then include one that knows it,
    /// this primary gone or not (a writer's last step, so that a reader right after finds
    /// every byte it wrote; I3). A sealed chunk answers its sealed length.
    async fn flush(&self, lease: &Lease) -> Result<u64> {
        if let Some(length) = lease.sealed.get() {
            return Ok(*length);
        }
        let length = lease.durable.lock().to;
        let (handle, version) = (lease.handle, lease.version);
        let need = self.need_remote();
        let timeout = self.cfg.commit_timeout;
        let out = call_quorum(
            lease.secondaries.clone(),
            need,
            Instant::now() + timeout,
            |addr: String| {
                let peers = Arc::clone(&self.peers);
                async move {
                    peers
                        .quorum_length(&addr, handle, version, length, timeout)
                        .await
                }
            },
        )
        .await;
        if out.ok.len() < need {
            return Err(ReplicationError::QuorumNotReached {
                got: out.ok.len() as u64 + 1,
                need: self.cfg.quorum as u64,
            });
        }
        Ok(length)
    }

    fn need_remote(&self) -> usize {
        self.cfg.quorum.saturating_sub(1)
    }

    fn mark_lagging(&self, handle: ChunkHandle, addr: &str, why: &ReplicationError) {
        tracing::warn!(%handle, peer = addr, error = %why, "secondary is lagging");
        self.lagging.lock().insert((handle, addr.to_string()));
    }

    /// Tells every secondary the quorum's length after it moved, beside the append's answer
    /// (which does not wait for it): a secondary shows readers no byte past what it last heard
    /// (I3), so a reader that finds the primary gone still sees every append acknowledged
    /// before the last one it heard of. Returns whether the note holds here: `false` once a
    /// fence moved this replica past the lease's version, after which nothing more may be
    /// acknowledged under the lease (its answer to the fence told the master the most it
    /// acknowledged: `Coordinator::revoke`).
    fn publish(self: &Arc<Self>, lease: &Lease) -> bool {
        let length = lease.durable.lock().to;
        let (handle, version) = (lease.handle, lease.version);
        // Here too: once the lease is gone, the replica still says what it vouches for (its
        // reads, and its chunk reports: the master settles chunks whose replicas cannot).
        let noted = match self.store.note_quorum(handle, version, length) {
            Ok(noted) => noted,
            Err(e) => {
                tracing::debug!(%handle, error = %e, "quorum length not noted here");
                false
            }
        };
        for addr in &lease.secondaries {
            let (shared, addr) = (Arc::clone(self), addr.clone());
            tokio::spawn(async move {
                let timeout = shared.cfg.commit_timeout;
                let told = shared
                    .peers
                    .quorum_length(&addr, handle, version, length, timeout)
                    .await;
                if let Err(e) = told {
                    tracing::debug!(%handle, peer = addr, error = %e, "quorum length not delivered");
                }
            });
        }
        noted
    }

    /// Drives calls still running after a quorum decision: failures mark peers lagging, and
    /// with `abort` each PREPARE is aborted, a failed one too (its reply may be what was lost,
    /// and an ABORT of nothing staged does nothing).
    fn drain<T: Send + 'static>(
        self: &Arc<Self>,
        handle: ChunkHandle,
        mut pending: Pending<String, T, ReplicationError>,
        abort: Option<(u64, OpId)>,
    ) {
        if pending.is_empty() {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            while let Some((addr, res)) = pending.next().await {
                let res = match (res, abort) {
                    (Ok(_), Some((version, op))) => {
                        shared
                            .peers
                            .abort(&addr, handle, version, op, shared.cfg.commit_timeout)
                            .await
                    }
                    (Err(e), Some((version, op))) => {
                        let _ = shared
                            .peers
                            .abort(&addr, handle, version, op, shared.cfg.commit_timeout)
                            .await;
                        Err(e)
                    }
                    (Ok(_), None) => Ok(()),
                    (Err(e), None) => Err(e),
                };
                if let Err(e) = res {
                    shared.mark_lagging(handle, &addr, &e);
                }
            }
        });
    }

    /// The rounds of one append. Returns the outcome and whether the append may have
    /// committed on some replica (then its offset is never handed out again).
    async fn replicate(
        self: &Arc<Self>,
        lease: &Lease,
        op: OpId,
        offset: u64,
        data: Bytes,
        stages: &mut AppendStages,
    ) -> (Result<u64>, bool) {
        let handle = lease.handle;
        let end = offset + data.len() as u64;
        let append = StageRequest {
            op,
            handle,
            version: lease.version,
            offset,
            data,
        };
        if self.cfg.one_round {
            return (self.write(lease, append, stages).await, true);
        }
        let started = Instant::now();
        let need = self.need_remote();
        let quorum = self.cfg.quorum as u64;
        let timeout = self.cfg.prepare_timeout;
        let prep = self
            .to_secondaries(lease, timeout, |peers, addr| {
                let append = append.clone();
                async move { peers.prepare(&addr, append, timeout).await }
            })
            .await;
        if !prep.reached(need) {
            let _ = self.store.abort_at(handle, lease.version, op);
            let got = prep.ok.len() as u64 + 1;
            // The READY ones, and the failed ones too: a PREPARE whose reply was lost staged
            // the bytes all the same, and would refuse every later PREPARE at this offset
            // (which the next append reuses) until the staging TTL or a version bump.
            let answered = prep.ok.into_iter().map(|(addr, ())| addr);
            let ready = futures::stream::FuturesUnordered::new();
            for addr in answered.chain(prep.failed.into_iter().map(|(addr, _)| addr)) {
                let fut: futures::future::BoxFuture<'static, _> =
                    Box::pin(async move { (addr, Ok::<(), ReplicationError>(())) });
                ready.push(fut);
            }
            self.drain(handle, ready, Some((lease.version, op)));
            self.drain(handle, prep.pending, Some((lease.version, op)));
            tracing::warn!(%handle, %op, got, need = quorum, "READY quorum not reached; aborted");
            return (
                Err(ReplicationError::QuorumNotReached { got, need: quorum }),
                false,
            );
        }
        stages.prepare = started.elapsed();
        if crate::failpoint("primary-crash-after-ready") {
            tracing::error!(%handle, %op, "failpoint primary-crash-after-ready: aborting the process");
            std::process::abort();
        }
        // COMMIT to every READY secondary, and to each straggler as soon as its PREPARE lands:
        // all of them count toward the durable quorum. COMMIT carries the lease's version: a
        // replica that moved on refuses it (I5).
        let timeout = self.cfg.commit_timeout;
        let version = lease.version;
        let commits: Pending<String, u64, ReplicationError> = FuturesUnordered::new();
        for (addr, ()) in prep.ok {
            let peers = Arc::clone(&self.peers);
            commits.push(Box::pin(async move {
                let r = peers.commit(&addr, handle, version, op, timeout).await;
                (addr, r)
            }));
        }
        for prepare in prep.pending {
            let peers = Arc::clone(&self.peers);
            commits.push(Box::pin(async move {
                match prepare.await {
                    (addr, Ok(())) => {
                        let r = peers.commit(&addr, handle, version, op, timeout).await;
                        (addr, r)
                    }
                    (addr, Err(e)) => (addr, Err(e)),
                }
            }));
        }
        let committing = Instant::now();
        let local = async {
            let r = self.store.commit_at(handle, lease.version, op).await;
            (r, committing.elapsed())
        };
        let remote = async {
            let r = await_quorum(commits, need, Instant::now() + timeout).await;
            (r, committing.elapsed())
        };
        let ((local, here), (remote, there)) = tokio::join!(local, remote);
        (stages.commit_here, stages.commit_remote) = (here, there);
        for (addr, e) in &remote.failed {
            self.mark_lagging(handle, addr, e);
        }
        self.drain(handle, remote.pending, None);
        if let Err(e) = local {
            // The secondaries may have committed it: the offset is not free again.
            tracing::error!(%handle, %op, error = %e, "local commit failed");
            return (Err(e.into()), true);
        }
        (self.answer(lease, op, offset, end, remote.ok.len()), true)
    }

    /// The one-round append: WRITE to every secondary and COMMIT here at once. The offset is
    /// taken whatever the outcome: any replica the WRITE reached may have committed it.
    async fn write(
        self: &Arc<Self>,
        lease: &Lease,
        append: StageRequest,
        stages: &mut AppendStages,
    ) -> Result<u64> {
        let (handle, op, offset) = (lease.handle, append.op, append.offset);
        let end = offset + append.data.len() as u64;
        let started = Instant::now();
        let local = async {
            let r = self.store.commit_at(handle, lease.version, op).await;
            (r, started.elapsed())
        };
        let remote = async {
            let r = self.write_secondaries(lease, append).await;
            (r, started.elapsed())
        };
        let ((local, here), (remote, there)) = tokio::join!(local, remote);
        (stages.commit_here, stages.commit_remote) = (here, there);
        if crate::failpoint("primary-crash-after-write") {
            tracing::error!(%handle, %op, "failpoint primary-crash-after-write: aborting the process");
            std::process::abort();
        }
        if let Err(e) = local {
            // The secondaries may have committed it: the offset is not free again.
            tracing::error!(%handle, %op, error = %e, "local commit failed");
            return Err(e.into());
        }
        self.answer(lease, op, offset, end, remote)
    }

    /// WRITE of `append` to the lease's secondaries until enough of them are durable for a
    /// quorum (deadline: `commit_timeout`, as a COMMIT's, so a secondary is lagging after as
    /// long in either mode); returns how many are. Failures mark peers lagging, as do the calls
    /// still running that fail later.
    async fn write_secondaries(self: &Arc<Self>, lease: &Lease, append: StageRequest) -> usize {
        let timeout = self.cfg.commit_timeout;
        let out = self
            .to_secondaries(lease, timeout, |peers, addr| {
                let append = append.clone();
                async move { peers.write(&addr, append, timeout).await }
            })
            .await;
        self.drain(lease.handle, out.pending, None);
        out.ok.len()
    }

    /// `call` to each of the lease's secondaries at once, until quorum − 1 of them succeeded
    /// (or cannot), within `timeout` ([`call_quorum`]); those that failed are marked lagging.
    async fn to_secondaries<T, F, Fut>(
        self: &Arc<Self>,
        lease: &Lease,
        timeout: Duration,
        call: F,
    ) -> QuorumOutcome<String, T, ReplicationError>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ReplicaTransport>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let out = call_quorum(
            lease.secondaries.clone(),
            self.need_remote(),
            Instant::now() + timeout,
            |addr: String| call(Arc::clone(&self.peers), addr),
        )
        .await;
        for (addr, e) in &out.failed {
            self.mark_lagging(lease.handle, addr, e);
        }
        out
    }

    /// The answer to an append of `[offset, end)` committed here that `durable` secondaries
    /// hold durably: its offset once that makes a quorum, the watermark moved and published.
    fn answer(
        self: &Arc<Self>,
        lease: &Lease,
        op: OpId,
        offset: u64,
        end: u64,
        durable: usize,
    ) -> Result<u64> {
        let (handle, quorum) = (lease.handle, self.cfg.quorum as u64);
        let durable = durable as u64 + 1;
        if durable < quorum {
            tracing::warn!(%handle, %op, durable, need = quorum, "durable quorum not reached");
            return Err(ReplicationError::QuorumNotReached {
                got: durable,
                need: quorum,
            });
        }
        lease.durable.lock().held(end);
        if !self.publish(lease) {
            return Err(fenced_before_the_answer(handle, op));
        }
        Ok(offset)
    }

    /// Answers a retry of an op this replica committed: it is acknowledged only once a quorum
    /// holds it durably (COMMIT is idempotent on the secondaries, and finishes a staged one).
    async fn confirm(self: &Arc<Self>, lease: &Lease, op: OpId, rec: AppendRecord) -> Result<u64> {
        let handle = lease.handle;
        let end = rec.offset + u64::from(rec.len);
        if self.cfg.one_round {
            // A secondary the first WRITE missed has nothing staged to commit: it is sent the
            // bytes again (one that holds the op answers with its record).
            let data = self.store.read(handle, rec.offset, u64::from(rec.len))?;
            let append = StageRequest {
                op,
                handle,
                version: lease.version,
                offset: rec.offset,
                data,
            };
            let durable = self.write_secondaries(lease, append).await;
            return self.answer(lease, op, rec.offset, end, durable);
        }
        let timeout = self.cfg.commit_timeout;
        let version = lease.version;
        let out = self
            .to_secondaries(lease, timeout, |peers, addr| async move {
                peers.commit(&addr, handle, version, op, timeout).await
            })
            .await;
        self.drain(handle, out.pending, None);
        self.answer(lease, op, rec.offset, end, out.ok.len())
    }
}

/// An append a quorum holds, whose lease a fence ended before it was acknowledged: the
/// master decides the chunk's length from the fence's answers, which may not include it, so
/// its outcome is for the client to learn by retrying (I4).
fn fenced_before_the_answer(handle: ChunkHandle, op: OpId) -> ReplicationError {
    tracing::warn!(%handle, %op, "a fence ended the lease before the append was acknowledged");
    ReplicationError::LeaseExpired(handle)
}

#[cfg(test)]
mod tests {
    use super::Watermark;

    #[test]
    fn the_watermark_moves_to_the_end_of_every_append_a_quorum_holds() {
        let mut w = Watermark { to: 100 };
        // Out of order: an append that reached a quorum covers everything before it (each
        // replica commits in offset order), even an earlier one still unconfirmed.
        w.held(200);
        assert_eq!(w.to, 200);
        w.held(150);
        assert_eq!(w.to, 200, "an earlier one confirmed late moves nothing");
        w.held(210);
        assert_eq!(w.to, 210);
    }
}

#[cfg(test)]
mod scenario_tests;
