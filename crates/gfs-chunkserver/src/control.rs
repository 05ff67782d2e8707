//! The control plane (master -> chunkserver): a thin tonic service over the store and the
//! coordinator.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use gfs_proto::v1::chunk_control_server::ChunkControl;
use gfs_proto::v1::{
    ChunkInfo, CreateChunkReply, CreateChunkRequest, DeleteChunkReply, DeleteChunkRequest,
    GrantLeaseReply, GrantLeaseRequest, LaggingReplica, ReportChunksReply, ReportChunksRequest,
    SetVersionReply, SetVersionRequest,
};
use gfs_replication::{Coordinator, ReplicationError, status};
use gfs_storage::{ChunkHandle, ChunkStore};
use tonic::{Request, Response, Status};

/// The `ChunkControl` service of one chunkserver.
pub struct Control {
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
}

impl Control {
    /// A service over `store` and `coordinator`.
    pub fn new(store: Arc<ChunkStore>, coordinator: Arc<Coordinator>) -> Control {
        Control { store, coordinator }
    }
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
        Ok(Response::new(CreateChunkReply {}))
    }

    async fn grant_lease(
        &self,
        request: Request<GrantLeaseRequest>,
    ) -> Result<Response<GrantLeaseReply>, Status> {
        let r = request.into_inner();
        let expires = UNIX_EPOCH + Duration::from_millis(r.expires_unix_ms);
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
        self.coordinator.revoke(handle);
        self.store
            .set_version(handle, r.version)
            .await
            .map_err(status)?;
        Ok(Response::new(SetVersionReply {}))
    }

    async fn delete_chunk(
        &self,
        request: Request<DeleteChunkRequest>,
    ) -> Result<Response<DeleteChunkReply>, Status> {
        let handle = ChunkHandle(request.into_inner().handle);
        self.coordinator.revoke(handle);
        self.store.delete(handle).await.map_err(status)?;
        tracing::info!(%handle, "chunk deleted");
        Ok(Response::new(DeleteChunkReply {}))
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
