//! Sealing.
//!
//! An append that fills the chunk exactly seals it before its reply. The first append that does
//! not fit marks the lease sealing (nothing more is assigned) and waits, up to `seal_wait`, for
//! the appends in flight; the committed length is then final here. `Seal(length)` goes to the
//! secondaries first: each waits briefly for its last COMMITs, then seals only at exactly that
//! length (`ChunkStore::seal_exactly`); one that ends short (it missed COMMITs) drops what it
//! has staged and says where it ends, and the primary sends it the committed appends it lacks
//! (PREPARE and COMMIT in windows, original op ids) and seals it again. Once a quorum of
//! secondaries sealed, the primary seals itself, then waits up to `SEAL_GRACE` (2 s) for the
//! other secondaries. No replica is ever sealed at a length its primary did not seal at, and a
//! length a replica is sealed at is one a quorum holds. Every seal names the lease's version
//! (`ChunkStore::seal_exactly`): a replica a fence has moved on refuses it, the primary's own
//! included, so a primary fenced in the middle of its seal leaves at most a minority sealed. The appender that found the chunk full
//! looks its op up again once the seal is done (an earlier attempt of it may have been in
//! flight) before it answers `ChunkFull`.
//!
//! The seal listener ([`Coordinator::set_seal_listener`]) then reports the seal to the master
//! before any caller gets `ChunkFull` (the chunkserver sends `ReportSealed { handle, length,
//! replicas }`, the replicas known sealed there by replication address), so a writer's next
//! AppendChunk already gets a new chunk and the master counts those replicas current at once.
//! The master also adopts a seal at the current version from a chunk report, should that call
//! be lost.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gfs_storage::{AppendRecord, ChunkHandle, OpId, StageRequest};
use tokio::time::Instant;

use super::*;
use crate::error::{ReplicationError, Result};
use crate::quorum::call_quorum;

/// How long a seal waits, past its quorum, for the other secondaries to seal too.
const SEAL_GRACE: Duration = Duration::from_secs(2);

/// Appends (and bytes) staged at once on a secondary that is short at a seal.
const CATCH_UP_WINDOW: (usize, u64) = (16, 8 << 20);

impl Shared {
    /// Seals the chunk once, after the appends in flight, at this replica's committed length:
    /// first on a quorum of secondaries (each short one is first sent the appends it missed),
    /// then here. Every caller gets `ChunkFull` with the final length, or the error of an
    /// attempt that did not reach a quorum (the next caller tries again; no append is taken
    /// meanwhile). So a replica is sealed only at a length a quorum holds, and "sealed here"
    /// is a definite answer for every op (I2, I4).
    pub(super) async fn seal(self: &Arc<Self>, lease: &Lease) -> ReplicationError {
        let handle = lease.handle;
        match lease.sealed.get_or_try_init(|| self.seal_once(lease)).await {
            Ok(length) => ReplicationError::ChunkFull {
                handle,
                length: *length,
            },
            Err(e) => e,
        }
    }

    pub(super) async fn seal_once(self: &Arc<Self>, lease: &Lease) -> Result<u64> {
        let handle = lease.handle;
        let deadline = Instant::now() + self.cfg.seal_wait;
        loop {
            let idle = lease.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if lease.assign.lock().inflight.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!(%handle, "appends still in flight: the seal waits");
                return Err(ReplicationError::Busy(
                    "appends in flight; the chunk is sealing",
                ));
            }
        }
        // Nothing is in flight and nothing new is taken: the committed length is final here.
        let length = self.store.info(handle)?.committed_len;
        let timeout = self.cfg.commit_timeout;
        let version = lease.version;
        let need = self.need_remote();
        let out = call_quorum(
            lease.secondaries.clone(),
            need,
            Instant::now() + 2 * timeout,
            |addr: String| {
                let shared = Arc::clone(self);
                async move { shared.seal_peer(&addr, handle, version, length).await }
            },
        )
        .await;
        for (addr, e) in &out.failed {
            self.mark_lagging(handle, addr, e);
        }
        let mut sealed_on: Vec<String> = out.ok.iter().map(|(a, _)| a.clone()).collect();
        if sealed_on.len() < need {
            self.drain(handle, out.pending, None);
            let got = sealed_on.len() as u64 + 1;
            tracing::warn!(%handle, length, got, "too few secondaries sealed: not sealed yet");
            return Err(ReplicationError::QuorumNotReached {
                got,
                need: self.cfg.quorum as u64,
            });
        }
        self.store
            .seal_exactly(handle, lease.version, length)
            .await?;
        // The master counts a sealed chunk's replicas current only at the sealed length: give
        // the other secondaries a moment, so the report names them too.
        let mut pending = out.pending;
        let grace = Instant::now() + SEAL_GRACE;
        while !pending.is_empty() {
            match tokio::time::timeout_at(grace, pending.next()).await {
                Ok(Some((addr, Ok(())))) => sealed_on.push(addr),
                Ok(Some((addr, Err(e)))) => self.mark_lagging(handle, &addr, &e),
                Ok(None) | Err(_) => break,
            }
        }
        self.drain(handle, pending, None);
        tracing::info!(%handle, length, sealed_on = sealed_on.len() + 1, "chunk sealed");
        let listener = self.on_seal.lock().clone();
        if let Some(listener) = listener
            && tokio::time::timeout(timeout, listener(handle, length, sealed_on))
                .await
                .is_err()
        {
            tracing::warn!(%handle, "seal listener timed out");
        }
        Ok(length)
    }

    /// Seals the secondary at `addr` at `length`; when it is short (it missed COMMITs), sends
    /// it the committed appends it lacks, then seals it.
    pub(super) async fn seal_peer(
        &self,
        addr: &str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
    ) -> Result<()> {
        let timeout = self.cfg.commit_timeout;
        let Some(have) = self
            .peers
            .seal(addr, handle, version, length, timeout)
            .await?
        else {
            return Ok(());
        };
        self.send_missing(addr, handle, version, have, length)
            .await?;
        match self
            .peers
            .seal(addr, handle, version, length, timeout)
            .await?
        {
            None => Ok(()),
            Some(still) => Err(ReplicationError::Peer {
                addr: addr.to_string(),
                message: format!("still short at {still} of {length} after catching up"),
            }),
        }
    }

    /// PREPAREs and COMMITs to `addr`, in offset order, every append committed here in
    /// `[from, to)`: the peer holds exactly `from` committed bytes and nothing staged.
    pub(super) async fn send_missing(
        &self,
        addr: &str,
        handle: ChunkHandle,
        version: u64,
        from: u64,
        to: u64,
    ) -> Result<()> {
        let missing: Vec<(OpId, AppendRecord)> = self
            .store
            .appends(handle)?
            .into_iter()
            .filter(|(_, a)| a.offset >= from && a.offset < to)
            .collect();
        if missing.first().map(|(_, a)| a.offset) != Some(from) {
            return Err(ReplicationError::Peer {
                addr: addr.to_string(),
                message: format!("holds {from} bytes, which ends inside an append"),
            });
        }
        tracing::warn!(%handle, peer = addr, from, to, appends = missing.len(), "sending a short secondary the appends it missed");
        let timeout = self.cfg.commit_timeout;
        // In windows: PREPAREs in order on the session, then the window's COMMITs together.
        let mut window: Vec<OpId> = Vec::new();
        let mut bytes = 0u64;
        for (i, (op, a)) in missing.iter().enumerate() {
            let store = Arc::clone(&self.store);
            let (offset, len) = (a.offset, u64::from(a.len));
            let disk = Arc::clone(store.disk());
            let data = gfs_host::blocking(&*disk, move || store.read(handle, offset, len)).await?;
            let append = StageRequest {
                op: *op,
                handle,
                version,
                offset,
                data,
            };
            self.peers.prepare(addr, append, timeout).await?;
            window.push(*op);
            bytes += len;
            if window.len() >= CATCH_UP_WINDOW.0
                || bytes >= CATCH_UP_WINDOW.1
                || i + 1 == missing.len()
            {
                let commits = window
                    .drain(..)
                    .map(|op| self.peers.commit(addr, handle, version, op, timeout));
                for r in futures::future::join_all(commits).await {
                    r?;
                }
                bytes = 0;
            }
        }
        Ok(())
    }
}
