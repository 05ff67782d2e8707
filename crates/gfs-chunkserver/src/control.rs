//! The control plane (master -> chunkserver): a thin tonic service over the store and the
//! coordinator.
//!
//! `SetVersion` and `DeleteChunk` revoke this server's lease on the chunk first; `SetVersion`
//! answers the replica's committed length once the new version is durable (the master's fence:
//! nothing commits at the old version here any more). `ReportChunks` may name the handles it
//! wants (the master asks for one chunk's length before a lease).
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
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest};
use gfs_util::time::from_unix_ms;

use crate::throttle::Throttle;
use tonic::{Request, Response, Status};

/// Commits of one clone in flight at once (each waits for its group commit).
const CLONE_WINDOW: usize = 64;

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
        }
    }

    /// Connects copies over `net` (the operating system's by default).
    pub fn with_net(mut self, net: gfs_host::Net) -> Control {
        self.net = net;
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
        self.store
            .create(ChunkHandle(r.handle), r.version)
            .await
            .map_err(status)?;
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
        self.store
            .set_version(handle, r.version)
            .await
            .map_err(status)?;
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
