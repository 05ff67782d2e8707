//! gfs-replication: the two-phase commit between the replicas of a chunk.
//!
//! - [`Coordinator`] (primary side): leases, offset assignment, READY/COMMIT fan-out with a
//!   2-of-3 quorum (the primary included), exactly-once retries by op id, sealing, and the record
//!   of lagging secondaries.
//! - [`Participant`] (secondary side): the tonic `Replication` service over a chunk store.
//! - [`call_quorum`]: the one fan-out helper both phases use.
//! - [`ReplicaTransport`]: the seam between them, the calls the primary makes to one
//!   secondary, in domain types. [`Peers`] is its gRPC implementation; `testing::MemTransport`
//!   (feature `testing`, and this crate's unit tests) delivers the calls in memory to real
//!   participants over real chunk stores, and can fail, drop, delay or hang chosen calls, so
//!   the two-phase commit is tested here, at exact interleavings, without processes.
//!
//! Invariants this crate keeps (ARCHITECTURE.md states all five):
//! - an append is acknowledged only after a quorum of replicas has fsynced it, and every replica
//!   applies commits of a chunk in offset order, so committed bytes of replicas at one version
//!   are prefixes of the same sequence (I1, I2);
//! - a secondary seals only at exactly its primary's length, never at its own, and the primary
//!   seals itself only after a quorum of secondaries did (sending a short one the committed
//!   appends it missed first), so a replica is sealed only at a length a quorum holds (I1, I2);
//! - a retry is answered from the op table before anything else, lease or not; once the chunk
//!   is sealed here the table is final, so "sealed, and the op is not in it" (`ChunkFull`) is a
//!   definite "not applied, and never will be" that a client may act on (I4); "sealed, and
//!   the op is in it" (`SealedWith`) is one replica's word, which the client takes only once
//!   a quorum of replicas say it (the master may seal a chunk at a length one replica held,
//!   before copies of it land: I2). The table is
//!   kept for the store's `op_retention` after the seal (well past any client's retries);
//!   after that every retry gets `StorageError::OpRetentionExpired` (outcome unknown, never
//!   retried, never taken for `ChunkFull`).

mod error;
mod participant;
mod peers;
mod primary;
mod quorum;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transport;

use std::sync::OnceLock;

pub use error::{ReplicationError, Result};
pub use participant::{Participant, ParticipantConfig, status};
pub use peers::{FRAME, PeerConfig, Peers, WINDOW};
pub use primary::{
    AppendStages, Coordinator, CoordinatorConfig, LeaseInfo, SealListener, StageListener,
};
pub use quorum::{Pending, QuorumOutcome, await_quorum, call_quorum};
pub use transport::ReplicaTransport;

fn failpoints() -> &'static [String] {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("GFS_FAILPOINTS")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
}

/// Whether the named fault-injection point is enabled (`GFS_FAILPOINTS=a,b` in the environment,
/// read once). Used by crash tests to stop a process at an exact step.
pub fn failpoint(name: &str) -> bool {
    failpoints().iter().any(|p| p == name)
}

/// Whether the named fault-injection point fires this time: `GFS_FAILPOINTS=name:P` fires
/// with probability P percent, `name:P:N` likewise but at most N times in the process (read
/// once; off when not set).
pub fn failpoint_fires(name: &str) -> bool {
    static FIRED: OnceLock<parking_lot::Mutex<gfs_util::collections::HashMap<String, u64>>> =
        OnceLock::new();
    failpoints().iter().any(|p| {
        let Some(spec) = p.strip_prefix(name).and_then(|s| s.strip_prefix(':')) else {
            return false;
        };
        let mut parts = spec.splitn(2, ':');
        let Some(Ok(pct)) = parts.next().map(str::parse::<u32>) else {
            return false;
        };
        let limit = parts.next().and_then(|n| n.parse::<u64>().ok());
        if gfs_util::random::random_range(0..100) >= pct {
            return false;
        }
        let Some(limit) = limit else {
            return true;
        };
        let mut fired = FIRED.get_or_init(Default::default).lock();
        let n = fired.entry(name.to_string()).or_insert(0);
        *n += 1;
        *n <= limit
    })
}
