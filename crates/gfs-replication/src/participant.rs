//! The secondary side of the replication plane: a thin tonic service over the chunk store.
//!
//! PREPARE stages exactly the announced number of bytes (for the current version, at an offset
//! past committed and staged data); COMMIT applies in offset order through the store's group
//! commit; ABORT drops; SEAL agrees on the final length; READCHUNK streams committed bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use gfs_proto::v1::replication_server::Replication;
use gfs_proto::v1::{
    AbortReply, AbortRequest, ChunkBytes, CommitReply, CommitRequest, PrepareReply, PrepareRequest,
    ReadChunkRequest, SealReply, SealRequest,
};
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError};
use tonic::{Request, Response, Status, Streaming};

/// Limits of the secondary side.
#[derive(Clone, Debug)]
pub struct ParticipantConfig {
    /// Largest record a PREPARE may announce.
    pub max_record: u64,
    /// How long a PREPARE waits for staging room.
    pub stage_timeout: Duration,
    /// How long a SEAL waits for in-flight commits to reach the sealed length.
    pub seal_wait: Duration,
    /// READCHUNK streams slices of this many bytes.
    pub read_slice: u64,
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        ParticipantConfig {
            max_record: 16 << 20,
            stage_timeout: Duration::from_secs(2),
            seal_wait: Duration::from_secs(2),
            read_slice: 1 << 20,
        }
    }
}

/// The replication-plane service of one chunkserver.
pub struct Participant {
    store: Arc<ChunkStore>,
    cfg: ParticipantConfig,
}

impl Participant {
    /// A service over `store`.
    pub fn new(store: Arc<ChunkStore>, cfg: ParticipantConfig) -> Participant {
        Participant { store, cfg }
    }
}

/// Maps a store error to the gRPC status a peer sees.
pub fn status(e: StorageError) -> Status {
    let msg = e.to_string();
    match e {
        StorageError::NotFound(_) => Status::not_found(msg),
        StorageError::AlreadyExists(_) => Status::already_exists(msg),
        StorageError::StaleVersion { .. } | StorageError::Sealed { .. } => {
            Status::failed_precondition(msg)
        }
        StorageError::ChunkFull { .. } | StorageError::OutOfRange { .. } => {
            Status::out_of_range(msg)
        }
        StorageError::Busy { .. } => Status::resource_exhausted(msg),
        StorageError::NotStaged { .. }
        | StorageError::AlreadyCommitted { .. }
        | StorageError::Overlap { .. }
        | StorageError::Hole { .. } => Status::aborted(msg),
        StorageError::ChecksumMismatch { .. } => Status::data_loss(msg),
        StorageError::Timeout(_) => Status::deadline_exceeded(msg),
        StorageError::InvalidConfig(_) => Status::invalid_argument(msg),
        StorageError::Closed => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChunkBytes, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Participant {
    async fn prepare(
        &self,
        request: Request<Streaming<PrepareRequest>>,
    ) -> Result<Response<PrepareReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty prepare stream"))?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first prepare message has no header"))?;
        let expected = u64::from(header.length);
        if expected > self.cfg.max_record {
            return Err(Status::invalid_argument(format!(
                "record of {expected} bytes exceeds {}",
                self.cfg.max_record
            )));
        }
        let data: Bytes = if first.data.len() as u64 == expected {
            first.data
        } else {
            let mut buf = BytesMut::with_capacity(expected as usize);
            buf.extend_from_slice(&first.data);
            while let Some(msg) = stream.message().await? {
                if msg.header.is_some() {
                    return Err(Status::invalid_argument("a header after the first message"));
                }
                if buf.len() as u64 + msg.data.len() as u64 > expected {
                    return Err(Status::invalid_argument(format!(
                        "more than the announced {expected} bytes"
                    )));
                }
                buf.extend_from_slice(&msg.data);
            }
            buf.freeze()
        };
        if data.len() as u64 != expected {
            return Err(Status::invalid_argument(format!(
                "received {} of the announced {expected} bytes",
                data.len()
            )));
        }
        let req = StageRequest {
            op: OpId(header.op_id),
            handle: ChunkHandle(header.handle),
            version: header.version,
            offset: header.offset,
            data,
        };
        self.store
            .stage_wait(req, self.cfg.stage_timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(PrepareReply {}))
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitReply>, Status> {
        let r = request.into_inner();
        let info = self
            .store
            .commit(ChunkHandle(r.handle), OpId(r.op_id))
            .await
            .map_err(status)?;
        Ok(Response::new(CommitReply {
            committed_length: info.committed_len,
        }))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<AbortReply>, Status> {
        let r = request.into_inner();
        self.store
            .abort(ChunkHandle(r.handle), OpId(r.op_id))
            .map_err(status)?;
        Ok(Response::new(AbortReply {}))
    }

    async fn seal(&self, request: Request<SealRequest>) -> Result<Response<SealReply>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        let info = self.store.info(handle).map_err(status)?;
        if info.version != r.version {
            return Err(status(StorageError::StaleVersion {
                handle,
                have: info.version,
                got: r.version,
            }));
        }
        // Commits of the last appends may still be on their way from the primary.
        let deadline = tokio::time::Instant::now() + self.cfg.seal_wait;
        while self.store.info(handle).map_err(status)?.committed_len < r.length
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let length = self.store.seal(handle).await.map_err(status)?;
        if length != r.length {
            return Err(Status::failed_precondition(format!(
                "chunk {handle} sealed at {length}, the primary sealed at {}",
                r.length
            )));
        }
        Ok(Response::new(SealReply {}))
    }

    type ReadChunkStream = ChunkStream;

    async fn read_chunk(
        &self,
        request: Request<ReadChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        let info = self.store.info(handle).map_err(status)?;
        if info.version != r.version {
            return Err(status(StorageError::StaleVersion {
                handle,
                have: info.version,
                got: r.version,
            }));
        }
        let store = Arc::clone(&self.store);
        let slice = self.cfg.read_slice.max(1);
        let end = info.committed_len;
        let stream = futures::stream::unfold(r.offset, move |off| {
            let store = Arc::clone(&store);
            async move {
                if off >= end {
                    return None;
                }
                let len = slice.min(end - off);
                let read = tokio::task::spawn_blocking(move || store.read(handle, off, len)).await;
                let item = match read {
                    Ok(Ok(data)) => Ok(ChunkBytes { offset: off, data }),
                    Ok(Err(e)) => Err(status(e)),
                    Err(e) => Err(Status::internal(e.to_string())),
                };
                let next = if item.is_ok() { off + len } else { end };
                Some((item, next))
            }
        });
        Ok(Response::new(stream.boxed()))
    }
}
