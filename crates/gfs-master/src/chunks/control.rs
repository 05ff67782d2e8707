//! The calls the master makes to chunkservers, behind one small trait ([`ChunkserverControl`]),
//! so that lease, seal and repair decisions can be driven in unit tests against a fake cluster
//! (`chunks/tests.rs`) as well as over gRPC ([`crate::TonicControl`], the only implementation
//! that knows the transport).
//!
//! Every call names the server it goes to and carries domain arguments; a failure is a
//! [`ControlError`]: the data-loss case (a copy whose source failed its checksums or ended
//! short) is told apart because repair marks the source corrupt on it.

use std::time::SystemTime;

use futures::future::BoxFuture;

use super::*;
use crate::error::Result;
use crate::registry::ServerInfo;

/// Why a call to a chunkserver failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A copy's source replica failed its checksums or ended short of the length asked for.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The server holds no replica of the chunk.
    #[error("not found: {0}")]
    NotFound(String),
    /// The call did not succeed: the server is unreachable, timed out or refused it.
    #[error("{0}")]
    Failed(String),
}

/// A lease the master grants to a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The chunk.
    pub handle: u64,
    /// The version the lease is at.
    pub version: u64,
    /// Replication-plane addresses of the secondaries, in order.
    pub secondaries: Vec<String>,
    /// When the lease ends.
    pub expires: SystemTime,
}

/// What a replica answers when a new version fences it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fenced {
    /// Its committed length once the new version is durable there: final for the old version,
    /// since nothing commits at it any more.
    pub length: u64,
    /// `(version, bound)` when this call ended the replica's own lease at `version`, the
    /// version it was fenced from: as that lease's primary it acknowledged no append ending
    /// past `bound` (the length a quorum held at its grant, then each append it acknowledged;
    /// its acknowledgements stop at the fence). `None` when it held no lease, or restarted
    /// since its grant and no longer knows.
    pub led: Option<(u64, u64)>,
    /// Whether the replica is sealed (at `length`): the chunk's length is decided.
    pub sealed: bool,
}

/// A chunk copy the master asks a server to make of another server's replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkCopy {
    /// The chunk.
    pub handle: u64,
    /// The version to copy at.
    pub version: u64,
    /// Replication-plane address of the server to copy from.
    pub source: String,
    /// The chunk's sealed length, if sealed: the copy must end exactly there.
    pub sealed_length: Option<u64>,
    /// Extend the target's shorter replica at the version instead of copying it whole.
    pub catch_up: bool,
}

/// The calls the master makes to chunkservers.
pub trait ChunkserverControl: Send + Sync + 'static {
    /// Creates an empty replica of `handle` at `version` on `server`.
    fn create_chunk<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Sets `server`'s replica of `handle` to `version`; answers once the new version is
    /// durable there ([`Fenced`]).
    fn set_version<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Fenced, ControlError>>;

    /// The committed length of `server`'s replica of `handle`, if it is at `version`.
    fn committed_length<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, ControlError>>;

    /// Grants `lease` to `server` as its primary.
    fn grant_lease<'a>(
        &'a self,
        server: &'a ServerInfo,
        lease: LeaseGrant,
    ) -> BoxFuture<'a, Result<(), ControlError>>;

    /// Has `target` make `copy` (within the copy deadline, longer than a call's); returns the
    /// length its replica reached.
    fn copy_chunk<'a>(
        &'a self,
        target: &'a ServerInfo,
        copy: ChunkCopy,
    ) -> BoxFuture<'a, Result<u64, ControlError>>;

    /// Seals `server`'s replica of `handle` (at `version`) at `length`; false when the replica
    /// is short of it and stays unsealed.
    fn seal<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
        length: u64,
    ) -> BoxFuture<'a, Result<bool, ControlError>>;
}

impl ChunkManager {
    /// Creates `handle` at `version` on each of `servers` at once; returns those it succeeded
    /// on.
    pub(super) async fn create_on_each(
        &self,
        servers: Vec<ServerInfo>,
        handle: u64,
        version: u64,
    ) -> Vec<ServerInfo> {
        let calls = servers.into_iter().map(|s| async move {
            match self.control.create_chunk(&s, handle, version).await {
                Ok(()) => Some(s),
                Err(e) => {
                    tracing::warn!(server = %s.id, error = %e, "chunkserver call failed");
                    None
                }
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
