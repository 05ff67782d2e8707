//! Chunk allocation, leases and versions, seals, re-replication, rebalancing, and the deletes
//! the master asks of chunkservers: [`ChunkManager`], cut by concept.
//!
//! - [`alloc`]: where a file's next append goes (`append_chunk`), new chunks, and listing a
//!   file's chunks for readers (`get_chunks`).
//! - [`lease`]: granting, reusing, adopting and extending leases; relegating lagging
//!   secondaries.
//! - [`version`]: fencing replicas with a new version, the longest committed prefix, catch-up,
//!   and versions adopted from reports.
//! - [`seal`]: sealing a chunk at an agreed length, on a primary's report or the master's own
//!   decision.
//! - [`repair`]: re-replication, rebalancing and each file's health.
//! - [`gc`]: the deletes heartbeat replies carry (orphans, stale, corrupt, extra replicas).
//! - [`drain`]: what a draining server still holds alone.
//! - [`control`]: the calls the master makes to chunkservers.
//!
//! # Invariants (ARCHITECTURE.md)
//!
//! A replica counts as current only at the chunk's version and, once sealed, exactly its sealed
//! length (`Want`, I1); every chunk but a file's last is sealed before the next is allocated, so
//! a lease names where its chunk starts in the file and offsets are final (I3); a last chunk
//! without a quorum of live replicas is waited for, never skipped.

use gfs_util::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use gfs_proto::v1::ReplicaAddr;
use parking_lot::Mutex;

use crate::error::MasterError;
use crate::locks::LockTable;
use crate::metastore::MetaStore;
use crate::registry::{Registry, ServerInfo};

mod alloc;
mod control;
mod drain;
#[cfg(test)]
mod fake;
#[cfg(test)]
mod fake_tests;
mod gc;
mod lease;
mod repair;
mod seal;
#[cfg(test)]
mod tests;
mod version;

pub use alloc::GET_CHUNKS_PAGE;
pub use control::{ChunkCopy, ChunkserverControl, ControlError, Fenced, LeaseGrant};
pub use lease::{HeldLease, LeaseDecision, lease_decision};
pub use repair::ChunkHealth;

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
    /// Wall-clock time: lease expiries, event and modification times.
    pub clock: gfs_util::time::Clock,
    /// The gRPC planes serve without TLS (shown to operators).
    pub insecure: bool,
}

/// Decides where chunks live and who is primary.
pub struct ChunkManager {
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) cfg: ChunkConfig,
    /// The calls to chunkservers.
    control: Arc<dyn ChunkserverControl>,
    /// Leases out, and what the master knows of leases from before its start.
    lease: lease::Leases,
    /// Handles being allocated: created on servers, not yet logged. Never orphans.
    allocating: Mutex<HashSet<u64>>,
    /// The highest version a fence of each chunk sent that a quorum did not take: some
    /// replica may hold it unlogged with its reports lost, so no later decision uses it
    /// again (in memory: a restarted master learns such versions from reports only).
    tried: Mutex<HashMap<u64, u64>>,
    /// What the primary of each chunk's last leased version said at a fence of the most it
    /// acknowledged under that lease (`version::Led`): kept through the unleased versions
    /// after it, dropped when a new lease is logged or the chunk sealed (in memory: a
    /// restarted master hears it again at its next fence, from a primary that did not
    /// restart).
    words: Mutex<HashMap<u64, version::Led>>,
    /// The version of each chunk's last lease, set when this master logs one and noted from
    /// the log at each fence (`ChunkMeta::last_leased`): every replica at or past it holds
    /// all it committed under the chunk's leases, so it is a witness for a seal
    /// (`fence_and_seal`). Dropped when the chunk is sealed.
    last_lease: Mutex<HashMap<u64, u64>>,
    /// Chunks left behind (unsealed) when they lost their quorum; sealed at their longest
    /// committed length once a quorum of replicas reports again (`seal`).
    unsettled: Mutex<HashSet<u64>>,
    /// Chunks sealed in the log a seal call of which failed on a replica at the sealed
    /// length: `settle` calls it again.
    failed_seals: Mutex<HashSet<u64>>,
    /// Unsealed chunks a replica reported unvouched (committed bytes past what it knows a
    /// quorum to hold: it restarted, or committed them alone), with when first reported:
    /// `settle` seals them once no lease has been out on them for a lease period.
    unvouched: Mutex<HashMap<u64, Instant>>,
    /// Re-replication and rebalancing.
    pub(crate) repair: repair::Repair,
    /// Deletes of replicas nobody needs.
    gc: gc::Gc,
    /// Decommissioning.
    pub(crate) drain: drain::Drain,
    /// What the master exports to Prometheus.
    pub(crate) metrics: Arc<crate::metrics::MasterMetrics>,
    /// One lease decision at a time per chunk (callers hold the file's path lock around
    /// allocation).
    deciding: LockTable<u64>,
    pub(crate) started: Instant,
}

fn unavailable(msg: impl Into<String>) -> MasterError {
    MasterError::Unavailable(msg.into())
}

fn addr(s: &ServerInfo) -> ReplicaAddr {
    ReplicaAddr {
        id: s.id.clone(),
        data_addr: s.data_addr.clone(),
        repl_addr: s.repl_addr.clone(),
    }
}

impl ChunkManager {
    /// Notes replicas of `handle` the master just fenced or bumped, before their servers
    /// report them: unsealed, at `version`, each at its length.
    fn note_unsealed<'a>(
        &self,
        handle: u64,
        version: u64,
        replicas: impl IntoIterator<Item = (&'a ServerInfo, u64)>,
    ) {
        let mut reg = self.registry.lock();
        for (s, length) in replicas {
            reg.note_replica(
                &s.id,
                crate::registry::Replica {
                    handle,
                    version,
                    length,
                    sealed: false,
                },
            );
        }
    }

    /// A manager over the metadata and the membership table, reaching chunkservers through
    /// `control`.
    pub fn new(
        meta: Arc<MetaStore>,
        registry: Arc<Mutex<Registry>>,
        cfg: ChunkConfig,
        control: Arc<dyn ChunkserverControl>,
    ) -> Self {
        ChunkManager {
            meta,
            registry,
            cfg,
            control,
            lease: lease::Leases::default(),
            allocating: Mutex::new(HashSet::default()),
            tried: Mutex::new(HashMap::default()),
            words: Mutex::new(HashMap::default()),
            last_lease: Mutex::new(HashMap::default()),
            unsettled: Mutex::new(HashSet::default()),
            failed_seals: Mutex::new(HashSet::default()),
            unvouched: Mutex::new(HashMap::default()),
            repair: repair::Repair::default(),
            gc: gc::Gc::default(),
            drain: drain::Drain::default(),
            metrics: Arc::default(),
            deciding: LockTable::new(),
            started: Instant::now(),
        }
    }

    /// This manager, counting in `metrics` (shared by every term a master leads).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::MasterMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metadata this manager works on.
    pub fn metastore(&self) -> &MetaStore {
        &self.meta
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

    /// Replicas each chunk should have.
    pub fn goal(&self) -> usize {
        self.cfg.replication
    }
}
