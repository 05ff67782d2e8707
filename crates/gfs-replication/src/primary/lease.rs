//! The primary's leases: granted, extended and revoked by the master, and what they say about
//! each chunk (writing, lagging secondaries, the read limit).

use gfs_util::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gfs_storage::ChunkHandle;
use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};

use super::*;
use crate::error::{ReplicationError, Result};

/// What a granted lease looks like to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The chunk.
    pub handle: ChunkHandle,
    /// The version the lease is for.
    pub version: u64,
    /// Replication-plane addresses of the secondaries.
    pub secondaries: Vec<String>,
    /// When the lease ends.
    pub expires: SystemTime,
}

impl Coordinator {
    /// Makes this server the primary of `handle` at `version` until `expires`; returns the
    /// committed length. Granting again at the same version extends the lease.
    pub fn grant_lease(
        &self,
        handle: ChunkHandle,
        version: u64,
        secondaries: Vec<String>,
        expires: SystemTime,
    ) -> Result<u64> {
        let info = self.shared.store.info(handle)?;
        if info.version != version {
            return Err(ReplicationError::StaleVersion {
                handle,
                have: info.version,
                got: version,
            });
        }
        let mut leases = self.leases.lock();
        let same = leases
            .get(&handle)
            .filter(|l| l.version == version && l.secondaries == secondaries);
        if let Some(l) = same {
            *l.expires.lock() = expires;
            return Ok(info.committed_len);
        }
        let full = info.committed_len >= self.shared.cfg.chunk_size;
        let sealed = OnceCell::new();
        if info.sealed {
            let _ = sealed.set(info.committed_len);
        }
        // A new lease (a new version, or new secondaries): what lagged under the old one was
        // dealt with by the bump that made it.
        self.shared.lagging.lock().retain(|(h, _)| *h != handle);
        leases.insert(
            handle,
            Arc::new(Lease {
                handle,
                version,
                secondaries,
                expires: Mutex::new(expires),
                assign: Mutex::new(Assign {
                    next: info.committed_len,
                    high: info.committed_len,
                    inflight: HashSet::default(),
                    sealing: full,
                }),
                idle: Notify::new(),
                advanced: Notify::new(),
                sealed,
                last_append: Mutex::new(tokio::time::Instant::now()),
                // Granted after a bump that left every replica of the lease at this length (or
                // at a chunk's creation): a quorum holds it.
                durable: Mutex::new(Watermark {
                    to: info.committed_len,
                }),
            }),
        );
        self.limits.lock().remove(&handle);
        self.ended.lock().remove(&handle);
        // The grant's premise: a quorum holds this length. Say so here and to the
        // secondaries, whose version change kept only what was known before it.
        if let Some(lease) = leases.get(&handle).cloned() {
            drop(leases);
            self.shared.publish(&lease);
            if full && !info.sealed {
                // Nothing more fits (its appends filled it under the last primary, which did
                // not seal it): seal it now, or a writer waiting for the file's next chunk
                // waits for good.
                tracing::info!(%handle, "a full chunk's lease: sealing it");
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    let _ = shared.seal(&lease).await;
                });
            }
        }
        tracing::info!(%handle, version, "lease granted");
        Ok(info.committed_len)
    }

    /// Moves the expiry of the lease on `handle` at `version`, if this server holds it; returns
    /// whether it did.
    pub fn extend_lease(&self, handle: ChunkHandle, version: u64, expires: SystemTime) -> bool {
        match self.leases.lock().get(&handle) {
            Some(l) if l.version == version => {
                *l.expires.lock() = expires;
                true
            }
            _ => false,
        }
    }

    /// Drops the lease on `handle` (its version changed, or the local disk failed it); returns
    /// the version of the lease it dropped, if there was one.
    pub fn revoke(&self, handle: ChunkHandle) -> Option<u64> {
        self.shared.lagging.lock().retain(|(h, _)| *h != handle);
        self.limits.lock().remove(&handle);
        let lease = self.leases.lock().remove(&handle)?;
        self.ended.lock().insert(handle, lease.version);
        tracing::info!(%handle, "lease revoked");
        Some(lease.version)
    }

    /// Drops everything held on `handle`: its replica is being deleted here.
    pub fn forget(&self, handle: ChunkHandle) {
        self.revoke(handle);
        self.ended.lock().remove(&handle);
    }

    /// The version of the last lease this server held on `handle` since it started, in force
    /// or ended (revoked, given up, run out), until a new grant or the chunk's deletion.
    /// Appends under it were acknowledged only while the replica was at that version, each
    /// after its quorum note held (`ChunkStore::note_quorum`): once the version moved past it,
    /// `ChunkStore::quorum_known` bounds every one of them.
    pub fn last_lease(&self, handle: ChunkHandle) -> Option<u64> {
        if let Some(l) = self.leases.lock().get(&handle) {
            return Some(l.version);
        }
        self.ended.lock().get(&handle).copied()
    }

    /// The leases this server holds now.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.leases
            .lock()
            .values()
            .map(|l| LeaseInfo {
                handle: l.handle,
                version: l.version,
                secondaries: l.secondaries.clone(),
                expires: *l.expires.lock(),
            })
            .collect()
    }

    /// The chunks whose lease took an append (or was granted) within `within`: the ones whose
    /// lease the master should extend. Leases that ran out more than `FORGET_EXPIRED` ago
    /// are dropped here (the master extends only leases in force), so the table holds the
    /// chunks led lately, not every chunk ever led.
    pub fn writing(&self, within: Duration) -> Vec<ChunkHandle> {
        let stale = self
            .shared
            .cfg
            .clock
            .now()
            .checked_sub(FORGET_EXPIRED)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let store = &self.shared.store;
        // Lock order, everywhere: the lease table, then the read limits, then the ended leases
        // (`grant_lease` holds the table while it clears a limit and an ended lease).
        let mut leases = self.leases.lock();
        let mut limits = self.limits.lock();
        let mut ended = self.ended.lock();
        leases.retain(|h, l| {
            if *l.expires.lock() > stale {
                return true;
            }
            ended.insert(*h, l.version);
            let to = l.durable.lock().to;
            if l.sealed.get().is_none()
                && store
                    .info(*h)
                    .is_ok_and(|i| !i.sealed && i.committed_len > to)
            {
                limits.insert(*h, to);
            }
            false
        });
        drop((limits, ended));
        leases
            .values()
            .filter(|l| l.last_append.lock().elapsed() <= within)
            .map(|l| l.handle)
            .collect()
    }

    /// Secondaries that missed a PREPARE, COMMIT or SEAL, by chunk.
    pub fn lagging(&self) -> Vec<(ChunkHandle, String)> {
        self.shared.lagging.lock().iter().cloned().collect()
    }

    /// How far reads of `handle` may see on this replica, when it is limited: the prefix a
    /// quorum is known to hold, for an unsealed chunk this server leads (or led, and holds
    /// more of than a quorum was known to). `None` when not primary: a secondary's limit is
    /// what its primary last told it (`ChunkStore::quorum_known`); a sealed chunk's bytes are
    /// all on a quorum.
    pub fn read_limit(&self, handle: ChunkHandle) -> Option<u64> {
        if let Some(l) = self.leases.lock().get(&handle) {
            return l.sealed.get().is_none().then(|| l.durable.lock().to);
        }
        self.limits.lock().get(&handle).copied()
    }

    pub(super) fn lease(&self, handle: ChunkHandle) -> Result<Arc<Lease>> {
        self.leases
            .lock()
            .get(&handle)
            .cloned()
            .ok_or(ReplicationError::NotPrimary(handle))
    }
}
