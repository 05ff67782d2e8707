//! gfs-replication: the two-phase commit between the replicas of a chunk.
//!
//! - [`Coordinator`] (primary side): leases, offset assignment, READY/COMMIT fan-out with a
//!   2-of-3 quorum (the primary included), exactly-once retries by op id, sealing, and the record
//!   of lagging secondaries.
//! - [`Participant`] (secondary side): the tonic `Replication` service over a chunk store.
//! - [`call_quorum`]: the one fan-out helper both phases use.
//!
//! Invariant: an append is acknowledged only after a quorum of replicas has fsynced it, and
//! every replica applies commits of a chunk in offset order, so committed bytes of replicas at one
//! version are prefixes of the same sequence.

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

/// Whether the named fault-injection point is enabled (`GFS_FAILPOINTS=a,b` in the environment,
/// read once). Used by crash tests to stop a process at an exact step.
pub fn failpoint(name: &str) -> bool {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS
        .get_or_init(|| {
            std::env::var("GFS_FAILPOINTS")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|p| p == name)
}
