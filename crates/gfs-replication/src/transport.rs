//! The seam between the primary and its secondaries: [`ReplicaTransport`], the calls the
//! primary's append (two-phase or one-round) and seal make to one secondary, in domain types.
//!
//! [`Coordinator`](crate::Coordinator) sees its secondaries only through this trait, so its
//! quorum and commit logic can be driven without a network. Production uses
//! [`Peers`](crate::Peers) (gRPC sessions, `peers.rs`, the only place that builds the wire's
//! messages); tests use `testing::MemTransport` (feature `testing`), which delivers the same
//! calls to real [`Participant`](crate::Participant)s and drops, delays or fails chosen ones.
//!
//! Contract of every call: it returns within `timeout` (then with an error naming it); an error
//! is a [`ReplicationError::Peer`](crate::ReplicationError::Peer) naming the peer, whether it
//! was unreachable, silent past the deadline, or refused the call (the message then carries the
//! refusal). An error says nothing of whether the call took effect on the peer (a lost reply,
//! a call still on its way); the primary never relies on that.

use std::time::Duration;

use futures::future::BoxFuture;
use gfs_storage::{ChunkHandle, OpId, StageRequest};

use crate::error::Result;

/// What the primary sends one secondary, by its replication-plane address.
pub trait ReplicaTransport: Send + Sync {
    /// PREPARE (READY phase): `addr` stages `append` in memory.
    fn prepare<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>>;

    /// WRITE (the one-round append): `addr` stages `append` and commits it at once, in offset
    /// order at its version; returns its committed length once durable. Idempotent: an op
    /// already durable there answers again.
    fn write<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>>;

    /// COMMIT: `addr` makes the staged append `op` at `version` durable; returns its committed
    /// length. Idempotent: an op already durable there answers again.
    fn commit<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>>;

    /// ABORT: `addr` drops the staged append `op` made at `version`.
    fn abort<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>>;

    /// The quorum's length: a quorum holds the first `length` bytes of `handle` at `version`
    /// durably, so `addr` may show readers that much of its unsealed replica.
    fn quorum_length<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>>;

    /// SEAL: `addr` seals its replica at exactly `length`; `Ok(Some(l))` when it is short,
    /// holding `l` committed bytes (unsealed, nothing staged).
    fn seal<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>>;
}
