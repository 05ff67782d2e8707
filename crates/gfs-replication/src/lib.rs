//! gfs-replication: the two-phase commit between the replicas of a chunk.
//!
//! - [`Coordinator`] (primary side): leases, offset assignment, READY/COMMIT fan-out with a
//!   2-of-3 quorum (the primary included), exactly-once retries by op id, sealing, and the record
//!   of lagging secondaries.
//! - [`Participant`] (secondary side): the tonic `Replication` service over a chunk store.
//! - [`call_quorum`]: the one fan-out helper both phases use.
//!
//! Invariants this crate keeps (ARCHITECTURE.md states all five):
//! - an append is acknowledged only after a quorum of replicas has fsynced it, and every replica
//!   applies commits of a chunk in offset order, so committed bytes of replicas at one version
//!   are prefixes of the same sequence (I1, I2);
//! - a secondary seals only at exactly its primary's length, never at its own (I1);
//! - a retry is answered from the op table before anything else, lease or not; once the chunk
//!   is sealed here the table is final, so "sealed, and the op is not in it" (`ChunkFull`) is a
//!   definite "not applied, and never will be" that a client may act on (I4).

mod error;
mod participant;
mod peers;
mod primary;
mod quorum;

use std::sync::OnceLock;

pub use error::{ReplicationError, Result};
pub use participant::{Participant, ParticipantConfig, status};
pub use peers::{PeerConfig, Peers, WINDOW};
pub use primary::{Coordinator, CoordinatorConfig, LeaseInfo, SealListener};
pub use quorum::{Pending, QuorumOutcome, await_quorum, call_quorum};

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
/// with probability P percent (read once; off when not set).
pub fn failpoint_fires(name: &str) -> bool {
    failpoints()
        .iter()
        .filter_map(|p| p.strip_prefix(name)?.strip_prefix(':')?.parse::<u32>().ok())
        .any(|pct| rand::random_range(0..100) < pct)
}
