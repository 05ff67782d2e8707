//! The control plane (master -> chunkserver): a thin tonic service over the store and the
//! coordinator.
//!
//! `SetVersion` and `DeleteChunk` revoke this server's lease on the chunk first; `SetVersion`
//! answers the replica's committed length once the new version is durable (the master's fence:
//! nothing commits at the old version here any more). A `SetVersion` of a chunk this server
//! does not hold answers NOT_FOUND and is remembered ([`Absent`]): a `CreateChunk` of it at that
//! version or below, arriving later (a call the master gave up on), is refused, so the answer
//! stays true for the life of the process and the master may count the server as a witness
//! that it holds nothing of the chunk. Before the process has registered with its master, and
//! once the data directory is lost, such a fence answers UNAVAILABLE, never NOT_FOUND. `ReportChunks` may name the handles it wants (the master asks
//! for one chunk's length before a lease).
//!
//! `CloneChunk` copies a chunk from a peer: it creates the replica, reads the source's
//! `ReadChunk` stream (one message per committed append, checked against the source's CRCs by
//! its read), stages and commits each append with its original op id (`CLONE_WINDOW`, 64
//! commits in flight), seals at `sealed_length` if given, and deletes the partial replica on any
//! failure. From a source whose op table was dropped (`op_forgotten`) the copy drops its own
//! table, durably, before it seals, so it never answers a retry with "not here". A source that
//! fails its checksums, or ends short of the sealed length, fails the copy with DATA_LOSS.
//!
//! With `catch_up` it extends the local replica instead: same version, not sealed; whatever is
//! still staged for the chunk (leftovers of a dead primary) is dropped, and the source's appends
//! from the local committed length are replayed with their op ids. A failure leaves a longer
//! prefix, still a prefix. The bytes all copies receive keep to `clone_rate` together (`Throttle`:
//! a burst of one second's worth; 0: no cap).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gfs_proto::v1::chunk_control_server::ChunkControl;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::{
    ChunkInfo, CloneChunkReply, CloneChunkRequest, CreateChunkReply, CreateChunkRequest,
    DeleteChunkReply, DeleteChunkRequest, GrantLeaseReply, GrantLeaseRequest, LaggingReplica,
    LedLease, ReadChunkRequest, ReportChunksReply, ReportChunksRequest, SetVersionReply,
    SetVersionRequest,
};
use gfs_replication::{Coordinator, ReplicationError, status};
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError};
use gfs_util::collections::HashMap;
use gfs_util::time::from_unix_ms;

use crate::throttle::Throttle;
use tonic::{Request, Response, Status};

/// Commits of one clone in flight at once (each waits for its group commit).
const CLONE_WINDOW: usize = 64;

/// Chunks a fence found absent that [`Absent`] remembers; the oldest is dropped past it.
const ABSENT_MAX: usize = 1 << 16;

/// Chunks a `SetVersion` found absent here, with the highest version it carried: none of them
/// is created at or below that version while the process lives.
#[derive(Default)]
struct Absent {
    fenced: HashMap<ChunkHandle, u64>,
    order: std::collections::VecDeque<ChunkHandle>,
}

impl Absent {
    /// Notes that `handle` was absent when fenced at `version`.
    fn note(&mut self, handle: ChunkHandle, version: u64) {
        match self.fenced.get_mut(&handle) {
            Some(v) => *v = (*v).max(version),
            None => {
                if self.order.len() >= ABSENT_MAX
                    && let Some(old) = self.order.pop_front()
                {
                    self.fenced.remove(&old);
                }
                self.fenced.insert(handle, version);
                self.order.push_back(handle);
            }
        }
    }

    /// The version `handle` was fenced at while absent, if it was.
    fn fenced_at(&self, handle: ChunkHandle) -> Option<u64> {
        self.fenced.get(&handle).copied()
    }
}

/// The `ChunkControl` service of one chunkserver.
pub struct Control {
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
    /// Paces the bytes copies receive.
    clone_rate: Throttle,
    /// Counts the bytes copies receive.
    replicated: Option<prometheus_client::metrics::counter::Counter>,
    /// The network copies connect over.
    net: gfs_host::Net,
    /// Chunks fenced while absent. A creation checks it and runs under the read lock, so
    /// creations run side by side and share the store's commit rounds; a fence that found its
    /// chunk absent looks again and notes it under the write lock, once no creation is running.
    absent: tokio::sync::RwLock<Absent>,
    /// Set once this process has registered with the master (None: no master). Before, a
    /// fence of an absent chunk is not answered NOT_FOUND: the master still knows the server
    /// by an earlier process, which may have held the chunk on a disk since wiped.
    registered: Option<Arc<AtomicBool>>,
}

impl Control {
    /// A service over `store` and `coordinator`; copies receive at most `clone_rate` bytes per
    /// second together (0: no cap).
    pub fn new(store: Arc<ChunkStore>, coordinator: Arc<Coordinator>, clone_rate: u64) -> Control {
        Control {
            store,
            coordinator,
            clone_rate: Throttle::new(clone_rate),
            replicated: None,
            net: gfs_host::Net::os(),
            absent: tokio::sync::RwLock::default(),
            registered: None,
        }
    }

    /// Connects copies over `net` (the operating system's by default).
    pub fn with_net(mut self, net: gfs_host::Net) -> Control {
        self.net = net;
        self
    }

    /// Answers no fence NOT_FOUND until `registered` is set (by the first registration of
    /// this process with the master).
    pub fn after_registration(mut self, registered: Arc<AtomicBool>) -> Control {
        self.registered = Some(registered);
        self
    }

    /// Counts the bytes copies receive in `counter`.
    pub fn count_replicated(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Control {
        self.replicated = Some(counter);
        self
    }
}

impl Control {
    /// Copies every append of `r.handle` past `from` (the local replica's committed length)
    /// from the source into the local replica, then seals it if asked; returns the length.
    /// From a source that no longer knows its op ids (`op_forgotten`), the copy drops its op
    /// table too.
    async fn copy_from(&self, r: &CloneChunkRequest, from: u64) -> Result<u64, Status> {
        let handle = ChunkHandle(r.handle);
        let mut source = source_client(
            &self.net,
            &r.source,
            self.store.config().chunk_size,
            Duration::from_secs(5),
        )
        .await?;
        let mut stream = source
            .read_chunk(ReadChunkRequest {
                handle: r.handle,
                version: r.version,
                offset: from,
            })
            .await?
            .into_inner();
        let mut commits = tokio::task::JoinSet::new();
        let mut length = from;
        // The source no longer knows its op ids: neither may the copy.
        let mut op_forgotten = false;
        let wait_commit = |res: Result<gfs_storage::Result<gfs_storage::CommitInfo>, _>| match res {
            Ok(Ok(c)) => Ok(c.committed_len),
            Ok(Err(e)) => Err(status(e)),
            Err(e) => Err(Status::internal(format!("commit task: {e}"))),
        };
        while let Some(piece) = stream.message().await.map_err(|e| {
            // DataLoss: the source's own replica failed its checksums.
            let msg = format!("reading from {}: {}", r.source, e.message());
            if e.code() == tonic::Code::DataLoss {
                Status::data_loss(msg)
            } else {
                Status::unavailable(msg)
            }
        })? {
            if piece.offset != length {
                return Err(Status::data_loss(format!(
                    "source {} sent offset {} where {length} was next",
                    r.source, piece.offset
                )));
            }
            length += piece.data.len() as u64;
            op_forgotten |= piece.op_forgotten;
            self.clone_rate.take(piece.data.len() as u64).await;
            if let Some(c) = &self.replicated {
                c.inc_by(piece.data.len() as u64);
            }
            let op = OpId(piece.op_id);
            self.store
                .stage_wait(
                    StageRequest {
                        op,
                        handle,
                        version: r.version,
                        offset: piece.offset,
                        data: piece.data,
                    },
                    Duration::from_secs(30),
                )
                .await
                .map_err(status)?;
            let store = Arc::clone(&self.store);
            commits.spawn(async move { store.commit(handle, op).await });
            while commits.len() >= CLONE_WINDOW {
                if let Some(res) = commits.join_next().await {
                    wait_commit(res)?;
                }
            }
        }
        while let Some(res) = commits.join_next().await {
            wait_commit(res)?;
        }
        if op_forgotten {
            // Its stand-in op ids must not answer anybody (I4): drop the table, durably,
            // before the replica is sealed and can be listed.
            self.store.forget_ops(handle).await.map_err(status)?;
        }
        if let Some(sealed) = r.sealed_length {
            if sealed != length {
                return Err(Status::data_loss(format!(
                    "source {} holds {length} bytes of a chunk sealed at {sealed}",
                    r.source
                )));
            }
            self.store.seal(handle).await.map_err(status)?;
        }
        Ok(length)
    }
}

impl Control {
    /// Extends the local replica of `r.handle` (same version, shorter, not sealed) from the
    /// source; on failure it keeps the prefix it reached, which is still a prefix.
    async fn catch_up(&self, r: &CloneChunkRequest) -> Result<u64, Status> {
        let handle = ChunkHandle(r.handle);
        let info = self.store.info(handle).map_err(status)?;
        if info.version != r.version {
            return Err(Status::failed_precondition(format!(
                "chunk {handle}: replica at version {}, catch-up asked for {}",
                info.version, r.version
            )));
        }
        if info.sealed {
            return Err(Status::failed_precondition(format!(
                "chunk {handle}: replica sealed at {}",
                info.committed_len
            )));
        }
        if gfs_replication::failpoint_fires("catch-up-fails") {
            tracing::warn!(%handle, "failpoint catch-up-fails: the copy fails");
            return Err(Status::unavailable(
                "failpoint: the catch-up copy failed (as when its source dies mid-copy)",
            ));
        }
        // Appends staged for a primary that is gone would overlap the copied ones.
        let dropped = self.store.abort_all(handle).map_err(status)?;
        tracing::info!(%handle, from = info.committed_len, dropped, source = %r.source, "catching up");
        self.copy_from(r, info.committed_len).await
    }
}

/// A replication-plane client of the peer at `addr` (a copy's or a restore's source), taking
/// messages of the largest record of a `chunk_size` chunk plus 1 MiB. INVALID_ARGUMENT for a
/// bad address, UNAVAILABLE when it cannot be reached.
pub(crate) async fn source_client(
    net: &gfs_host::Net,
    addr: &str,
    chunk_size: u64,
    connect_timeout: Duration,
) -> Result<ReplicationClient<tonic::transport::Channel>, Status> {
    let endpoint = net
        .endpoint(addr)
        .map_err(|e| Status::invalid_argument(format!("source {addr:?}: {e}")))?
        .connect_timeout(connect_timeout);
    let channel = net
        .connect_channel(&endpoint)
        .await
        .map_err(|e| Status::unavailable(format!("source {addr}: {e}")))?;
    let max_message = (chunk_size / 4 + (1 << 20)) as usize;
    Ok(ReplicationClient::new(channel).max_decoding_message_size(max_message))
}

fn repl_status(e: ReplicationError) -> Status {
    match e {
        ReplicationError::Storage(e) => status(e),
        ReplicationError::StaleVersion { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl ChunkControl for Control {
    async fn create_chunk(
        &self,
        request: Request<CreateChunkRequest>,
    ) -> Result<Response<CreateChunkReply>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        {
            let absent = self.absent.read().await;
            if let Some(fenced) = absent.fenced_at(handle).filter(|v| r.version <= *v) {
                tracing::warn!(%handle, version = r.version, fenced, "a creation below a fence that found the chunk absent is refused");
                return Err(Status::failed_precondition(format!(
                    "chunk {handle} was fenced at version {fenced} while absent here: \
                     not created at version {}",
                    r.version
                )));
            }
            self.store.create(handle, r.version).await.map_err(status)?;
        }
        tracing::info!(handle = r.handle, version = r.version, "chunk created");
        if gfs_replication::failpoint_fires("create-reply-lost") {
            // Fault injection: the chunk is created (durably), but the master hears a
            // failure, as when its call times out after the work was done.
            tracing::warn!(
                handle = r.handle,
                "failpoint create-reply-lost: the reply is lost"
            );
            return Err(Status::unavailable("failpoint: the reply was lost"));
        }
        Ok(Response::new(CreateChunkReply {}))
    }

    async fn grant_lease(
        &self,
        request: Request<GrantLeaseRequest>,
    ) -> Result<Response<GrantLeaseReply>, Status> {
        let r = request.into_inner();
        let expires = from_unix_ms(r.expires_unix_ms);
        let committed_length = self
            .coordinator
            .grant_lease(ChunkHandle(r.handle), r.version, r.secondaries, expires)
            .map_err(repl_status)?;
        Ok(Response::new(GrantLeaseReply { committed_length }))
    }

    async fn set_version(
        &self,
        request: Request<SetVersionRequest>,
    ) -> Result<Response<SetVersionReply>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        tracing::debug!(%handle, version = r.version, "changing the version");
        if gfs_replication::failpoint("slow-primary-set-version")
            && self.coordinator.leases().iter().any(|l| l.handle == handle)
        {
            // Fault injection: the primary takes the new version last, appending meanwhile.
            tracing::warn!(%handle, "failpoint slow-primary-set-version: applied in 500 ms");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if gfs_replication::failpoint_fires("set-version-fails") {
            // Fault injection: the bump does not happen here (a server dying under the call).
            tracing::warn!(%handle, "failpoint set-version-fails: the version is not set");
            return Err(Status::unavailable("failpoint: SetVersion failed"));
        }
        self.coordinator.revoke(handle);
        let set = match self.store.set_version(handle, r.version).await {
            Err(StorageError::NotFound(_)) => {
                // Looked at again with no creation running: one that ran meanwhile takes the
                // version; otherwise none will below it.
                let mut absent = self.absent.write().await;
                if self
                    .registered
                    .as_ref()
                    .is_some_and(|r| !r.load(Ordering::Acquire))
                {
                    return Err(Status::unavailable(format!(
                        "chunk {handle} is not here, and this server has not registered with \
                         the master yet"
                    )));
                }
                if self.store.info(handle).is_ok() {
                    drop(absent);
                    self.store.set_version(handle, r.version).await
                } else {
                    absent.note(handle, r.version);
                    tracing::info!(%handle, version = r.version, "fenced while absent: never created here below this version");
                    Err(StorageError::NotFound(handle))
                }
            }
            other => other,
        };
        set.map_err(status)?;
        let info = self.store.info(handle).map_err(status)?;
        // We held a lease on this chunk at a version it has now left (ended by this call, or
        // earlier: given up on a failed disk, run out, or by a fence whose answer was lost):
        // what a quorum was known to hold under it, kept through the changes, is the most it
        // acknowledged (an append whose quorum note came after the change is not
        // acknowledged). Unknown after a restart (the lease and the notes were in memory).
        let led = self
            .coordinator
            .last_lease(handle)
            .filter(|v| *v < info.version)
            .and_then(|v| {
                let bound = self.store.quorum_known(handle)?;
                Some(LedLease {
                    version: v,
                    acknowledged_up_to: bound,
                })
            });
        if let Some(l) = &led {
            tracing::info!(%handle, version = l.version, acknowledged_up_to = l.acknowledged_up_to, "fenced past our own lease");
        }
        Ok(Response::new(SetVersionReply {
            committed_length: info.committed_len,
            led,
            sealed: info.sealed,
        }))
    }

    async fn delete_chunk(
        &self,
        request: Request<DeleteChunkRequest>,
    ) -> Result<Response<DeleteChunkReply>, Status> {
        let handle = ChunkHandle(request.into_inner().handle);
        self.coordinator.forget(handle);
        self.store.delete(handle).await.map_err(status)?;
        tracing::info!(%handle, "chunk deleted");
        Ok(Response::new(DeleteChunkReply {}))
    }

    async fn clone_chunk(
        &self,
        request: Request<CloneChunkRequest>,
    ) -> Result<Response<CloneChunkReply>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        if r.catch_up {
            return self.catch_up(&r).await.map(|length| {
                tracing::info!(%handle, version = r.version, length, source = %r.source, "replica caught up");
                Response::new(CloneChunkReply { length })
            });
        }
        self.store.create(handle, r.version).await.map_err(status)?;
        match self.copy_from(&r, 0).await {
            Ok(length) => {
                tracing::info!(%handle, version = r.version, length, source = %r.source, "chunk cloned");
                Ok(Response::new(CloneChunkReply { length }))
            }
            Err(e) => {
                // Leave nothing half-copied behind.
                if let Err(d) = self.store.delete(handle).await {
                    tracing::warn!(%handle, error = %d, "cannot drop a failed clone");
                }
                tracing::warn!(%handle, source = %r.source, error = %e.message(), "clone failed");
                Err(e)
            }
        }
    }

    async fn report_chunks(
        &self,
        request: Request<ReportChunksRequest>,
    ) -> Result<Response<ReportChunksReply>, Status> {
        let only = request.into_inner().handles;
        let (chunks, lagging) = if only.is_empty() {
            chunk_report(&self.store, &self.coordinator)
        } else {
            let chunks = only
                .iter()
                .filter_map(|h| self.store.info(ChunkHandle(*h)).ok())
                .map(wire_info)
                .collect();
            let lagging = lagging_report(&self.coordinator)
                .into_iter()
                .filter(|l| only.contains(&l.handle))
                .collect();
            (chunks, lagging)
        };
        Ok(Response::new(ReportChunksReply { chunks, lagging }))
    }
}

/// This server's replicas and the secondaries it saw lag, as the wire reports them (to the
/// master's heartbeat and to `ReportChunks`).
pub fn chunk_report(
    store: &ChunkStore,
    coordinator: &Coordinator,
) -> (Vec<ChunkInfo>, Vec<LaggingReplica>) {
    let chunks = store.list().into_iter().map(wire_info).collect();
    (chunks, lagging_report(coordinator))
}

fn wire_info(c: gfs_storage::ChunkInfo) -> ChunkInfo {
    ChunkInfo {
        handle: c.handle.0,
        version: c.version,
        committed_length: c.committed_len,
        sealed: c.sealed,
        unvouched: c.unvouched,
    }
}

fn lagging_report(coordinator: &Coordinator) -> Vec<LaggingReplica> {
    coordinator
        .lagging()
        .into_iter()
        .map(|(h, address)| LaggingReplica {
            handle: h.0,
            address,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A control service over a fresh store in `dir` (1 MiB chunks).
    fn control_in(dir: &std::path::Path) -> Control {
        let store = Arc::new(
            ChunkStore::open(
                dir,
                gfs_storage::StoreConfig {
                    chunk_size: 1 << 20,
                    ..gfs_storage::StoreConfig::default()
                },
            )
            .unwrap(),
        );
        let coordinator = Arc::new(Coordinator::new(
            Arc::clone(&store),
            Arc::new(gfs_replication::Peers::new(
                gfs_replication::PeerConfig::default(),
            )),
            gfs_replication::CoordinatorConfig::for_chunk_size(1 << 20),
        ));
        Control::new(store, coordinator, 0)
    }

    async fn fence(c: &Control, handle: u64, version: u64) -> Result<u64, Status> {
        c.set_version(Request::new(SetVersionRequest { handle, version }))
            .await
            .map(|r| r.into_inner().committed_length)
    }

    async fn create(c: &Control, handle: u64, version: u64) -> Result<(), Status> {
        c.create_chunk(Request::new(CreateChunkRequest { handle, version }))
            .await
            .map(|_| ())
    }

    /// Creations of different chunks run side by side and share the store's commit rounds:
    /// many writers of small files each have a chunk created on three servers at once, and one
    /// creation at a time cost each its own round with a directory fsync (issue 17).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creations_share_the_store_s_commit_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let c = control_in(dir.path());
        let before = c.store.stats().batches;
        let all = (1..=16u64).map(|h| create(&c, h, 1));
        for r in futures::future::join_all(all).await {
            r.unwrap();
        }
        let rounds = c.store.stats().batches - before;
        assert!(rounds <= 8, "16 creations took {rounds} commit rounds");
        for h in 1..=16u64 {
            assert_eq!(c.store.info(ChunkHandle(h)).unwrap().version, 1);
        }
    }

    /// A fence of a chunk this server does not hold answers NOT_FOUND, and a creation of it at
    /// or below the fence's version arriving afterwards (a call the master gave up on) is
    /// refused: the server never holds the chunk where the fenced versions were in force.
    #[tokio::test]
    async fn a_creation_after_a_fence_that_found_the_chunk_absent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = control_in(dir.path());
        let e = fence(&c, 7, 3).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        for version in [1, 3] {
            let e = create(&c, 7, version).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
        }
        assert!(c.store.info(ChunkHandle(7)).is_err());
        // Other chunks, and this one past the fence, are created as before.
        create(&c, 8, 1).await.unwrap();
        create(&c, 7, 4).await.unwrap();
        assert_eq!(fence(&c, 7, 5).await.unwrap(), 0);
    }

    /// Before this process has registered with its master, a fence of an absent chunk answers
    /// UNAVAILABLE: the master knows the server by an earlier process, which may have held it.
    #[tokio::test]
    async fn a_fence_before_the_first_registration_is_not_answered_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let registered = Arc::new(AtomicBool::new(false));
        let c = control_in(dir.path()).after_registration(Arc::clone(&registered));
        let e = fence(&c, 7, 2).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        create(&c, 7, 1).await.unwrap();
        registered.store(true, Ordering::Release);
        let e = fence(&c, 8, 2).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    }

    /// Once the data directory is lost, a fence answers UNAVAILABLE, not NOT_FOUND: the
    /// replicas that were here are lost, not never held.
    #[tokio::test]
    async fn a_fence_on_a_lost_disk_is_not_answered_not_found() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let c = control_in(&dir);
        create(&c, 7, 1).await.unwrap();
        // Moved away in one step: removing it file by file races the store's own writes.
        std::fs::rename(&dir, parent.path().join("gone")).unwrap();
        assert!(c.store.check_disk().is_err());
        for handle in [7, 8] {
            let e = fence(&c, handle, 2).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        }
    }
}
