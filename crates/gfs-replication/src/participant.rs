//! The secondary side of the replication plane: [`Participant`]'s domain calls over the chunk
//! store (`prepare`, `commit`, `write`, `abort`, `quorum_length`, `seal_at`), and the tonic
//! service that decodes the wire into them (the only place here that sees protobuf types or
//! makes a gRPC status). The in-memory transport of the tests (`testing`) calls the same domain
//! calls.
//!
//! A primary opens one `Replicate` session per secondary. PREPARE stages exactly the announced
//! number of bytes (for the current version, at an offset past committed and staged data) and is
//! answered in order; COMMIT applies in offset order through the store's group commit and is
//! answered when durable (COMMITs run concurrently, bounded per session); a WRITE (a PREPARE
//! marked `commit`: the one-round append) stages in order as PREPARE does, then commits as
//! COMMIT does and is answered when durable; ABORT drops; the
//! quorum's length (the primary's watermark, sent after it moves) is noted in the store, and
//! caps what readers see of the unsealed replica (I3). Sessions end on the shutdown token.
//!
//! SEAL waits briefly for the last COMMITs, then seals only at exactly the primary's length; a
//! replica that ends short drops what it staged and answers `short` with its length, so the
//! primary can send it what it lacks; one that ends past it stays unsealed. READCHUNK streams
//! one message per committed append, with its op id, checked against the CRCs by the read; a
//! replica whose op table was dropped sends pieces of at most 1 MiB with stand-in op ids, marked
//! `op_forgotten`, and the copy drops its own table too.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use gfs_proto::v1::replicate_request::Op;
use gfs_proto::v1::replication_server::Replication;
use gfs_proto::v1::{
    ChunkBytes, CommitRequest, Prepare, ReadChunkRequest, ReplicateReply, ReplicateRequest,
    SealReply, SealRequest,
};
use gfs_storage::{
    AppendRecord, ChunkHandle, ChunkInfo, ChunkStore, OpId, StageRequest, StorageError,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{ReplicationError, Result};

/// Limits of the secondary side.
#[derive(Clone, Debug)]
pub struct ParticipantConfig {
    /// Largest record a PREPARE may announce.
    pub max_record: u64,
    /// How long a PREPARE waits for staging room.
    pub stage_timeout: Duration,
    /// How long a SEAL waits for in-flight commits to reach the sealed length.
    pub seal_wait: Duration,
    /// COMMITs in flight per replication session.
    pub max_in_flight: usize,
}

impl Default for ParticipantConfig {
    fn default() -> Self {
        ParticipantConfig {
            max_record: 16 << 20,
            stage_timeout: Duration::from_secs(2),
            seal_wait: Duration::from_secs(2),
            max_in_flight: 1024,
        }
    }
}

/// The replication-plane service of one chunkserver.
pub struct Participant {
    store: Arc<ChunkStore>,
    cfg: ParticipantConfig,
    shutdown: CancellationToken,
}

impl Participant {
    /// A service over `store`; cancelling `shutdown` ends its replication sessions.
    pub fn new(
        store: Arc<ChunkStore>,
        cfg: ParticipantConfig,
        shutdown: CancellationToken,
    ) -> Participant {
        Participant {
            store,
            cfg,
            shutdown,
        }
    }
}

/// Maps a store error to the gRPC status a peer sees.
pub fn status(e: StorageError) -> Status {
    let msg = e.to_string();
    match e {
        StorageError::NotFound(_) => Status::not_found(msg),
        StorageError::AlreadyExists(_) => Status::already_exists(msg),
        StorageError::StaleVersion { .. }
        | StorageError::Sealed { .. }
        | StorageError::LengthMismatch { .. }
        | StorageError::OpRetentionExpired { .. } => Status::failed_precondition(msg),
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
        StorageError::Closed | StorageError::DiskLost(_) => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

/// The stream of a chunk's bytes `ReadChunk` answers with.
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChunkBytes, Status>> + Send>>;

/// Largest piece a copy of a chunk without its op table is sent in.
const FORGOTTEN_PIECE: u64 = 1 << 20;

/// `[from, length)` in pieces of at most `piece` bytes, each with a stand-in op id unique in
/// the chunk (what a copy stages them under; never looked up, the copy drops its table).
fn stand_ins(from: u64, length: u64, piece: u64) -> Vec<(OpId, AppendRecord)> {
    let piece = piece.max(1);
    (from..length)
        .step_by(piece as usize)
        .map(|offset| {
            let len = piece.min(length - offset) as u32;
            (OpId(u64::MAX - offset), AppendRecord { offset, len })
        })
        .collect()
}

impl Participant {
    /// The replica's report entry, if it is at `version`.
    fn current(&self, handle: ChunkHandle, version: u64) -> Result<ChunkInfo, StorageError> {
        let info = self.store.info(handle)?;
        if info.version != version {
            return Err(StorageError::StaleVersion {
                handle,
                have: info.version,
                got: version,
            });
        }
        Ok(info)
    }

    /// PREPARE: stages `append` (for the replica's current version, at an offset past its
    /// committed and staged data), waiting up to `stage_timeout` for staging room. A record
    /// over `max_record` is refused (`RecordTooLarge`).
    pub async fn prepare(&self, append: StageRequest) -> Result<()> {
        stage(&self.store, &self.cfg, append).await
    }

    /// COMMIT: makes the staged append `op` durable, in offset order, only while the replica
    /// is at `version` (an op already durable answers again); returns the committed length.
    pub async fn commit(&self, handle: ChunkHandle, version: u64, op: OpId) -> Result<u64> {
        commit(&self.store, handle, version, op).await
    }

    /// WRITE, the one-round append: stages `append` as PREPARE does, then commits it as COMMIT
    /// does; returns the committed length once durable. An op already durable here answers
    /// again.
    pub async fn write(&self, append: StageRequest) -> Result<u64> {
        let (handle, version, op) = (append.handle, append.version, append.op);
        stage_to_write(&self.store, &self.cfg, append).await?;
        commit(&self.store, handle, version, op).await
    }

    /// ABORT: drops the staged append `op` made at `version`; returns whether there was one.
    pub fn abort(&self, handle: ChunkHandle, version: u64, op: OpId) -> Result<bool> {
        Ok(self.store.abort_at(handle, version, op)?)
    }

    /// The quorum's length: the primary at `version` knows a quorum to hold the first `length`
    /// bytes of `handle` durably ([`ChunkStore::note_quorum`]).
    pub fn quorum_length(&self, handle: ChunkHandle, version: u64, length: u64) -> Result<()> {
        self.store.note_quorum(handle, version, length)?;
        Ok(())
    }

    /// SEAL at the primary's `length`, at `version`: waits up to `seal_wait` for the last
    /// COMMITs, then seals only at exactly that length. `Ok(None)`: sealed there.
    /// `Ok(Some(have))`: the replica ends short at `have`; it dropped what it staged and stays
    /// unsealed, so the primary can send it what it lacks. A replica that ends past `length`
    /// stays unsealed and is refused (`LengthMismatch`).
    pub async fn seal_at(
        &self,
        handle: ChunkHandle,
        version: u64,
        length: u64,
    ) -> Result<Option<u64>> {
        self.current(handle, version)?;
        // Commits of the last appends may still be on their way from the primary.
        let deadline = tokio::time::Instant::now() + self.cfg.seal_wait;
        while self.store.info(handle)?.committed_len < length
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Only at exactly the primary's length: a replica that ends elsewhere stays unsealed,
        // so no replica is ever sealed at a length that was not agreed. One that ends short
        // (it missed a COMMIT) says where it ends, with nothing staged (the primary has no
        // append in flight while it seals), so the primary can send it what it lacks.
        match self.store.seal_exactly(handle, version, length).await {
            Ok(_) => Ok(None),
            Err(StorageError::LengthMismatch { have, want, .. }) if have < want => {
                let dropped = self.store.abort_all(handle)?;
                let info = self.current(handle, version)?;
                tracing::warn!(%handle, have = info.committed_len, want, dropped, "replica short of the primary's seal");
                Ok(Some(info.committed_len))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The append a PREPARE announces: exactly the announced number of bytes, with its header.
fn announced(p: Prepare) -> Result<StageRequest, Status> {
    let header = p
        .header
        .ok_or_else(|| Status::invalid_argument("a prepare without its header"))?;
    let expected = u64::from(header.length);
    if p.data.len() as u64 != expected {
        return Err(Status::invalid_argument(format!(
            "received {} of the announced {expected} bytes",
            p.data.len()
        )));
    }
    Ok(StageRequest {
        op: OpId(header.op_id),
        handle: ChunkHandle(header.handle),
        version: header.version,
        offset: header.offset,
        data: p.data,
    })
}

/// The gRPC status a peer sees for a refusal of [`Participant`]'s domain calls.
pub(crate) fn refusal(e: ReplicationError) -> Status {
    match e {
        ReplicationError::Storage(e) => status(e),
        ReplicationError::RecordTooLarge { len, max } => {
            Status::invalid_argument(format!("record of {len} bytes exceeds {max}"))
        }
        e => Status::internal(e.to_string()),
    }
}

/// READY: stages the append, at most `max_record` bytes.
async fn stage(store: &ChunkStore, cfg: &ParticipantConfig, req: StageRequest) -> Result<()> {
    let len = req.data.len() as u64;
    if len > cfg.max_record {
        return Err(ReplicationError::RecordTooLarge {
            len,
            max: cfg.max_record,
        });
    }
    Ok(store.stage_wait(req, cfg.stage_timeout).await?)
}

/// The staging of a WRITE: an op already durable here is not staged again (sealed since or
/// not), and its COMMIT answers with its record.
async fn stage_to_write(
    store: &ChunkStore,
    cfg: &ParticipantConfig,
    req: StageRequest,
) -> Result<()> {
    if store.lookup_op(req.handle, req.op)?.is_some() {
        return Ok(());
    }
    match stage(store, cfg, req).await {
        Err(ReplicationError::Storage(StorageError::AlreadyCommitted { .. })) => Ok(()),
        staged => staged,
    }
}

/// COMMIT: the committed length once the append is durable.
async fn commit(store: &ChunkStore, handle: ChunkHandle, version: u64, op: OpId) -> Result<u64> {
    Ok(store.commit_at(handle, version, op).await?.committed_len)
}

/// Runs one COMMIT and turns its outcome into the session's reply.
async fn commit_reply(store: &ChunkStore, id: u64, c: CommitRequest) -> ReplicateReply {
    if crate::failpoint_fires("commit-lost") {
        tracing::warn!(
            handle = c.handle,
            op = c.op_id,
            "failpoint commit-lost: the COMMIT is dropped"
        );
        return failure(
            id,
            Status::unavailable("failpoint commit-lost: the COMMIT was lost"),
        );
    }
    if crate::failpoint_fires("commit-slow") {
        // Applied, but later than the primary waits: the secondary is reported lagging while
        // it stays in step.
        tracing::warn!(
            handle = c.handle,
            op = c.op_id,
            "failpoint commit-slow: the COMMIT waits 6 s"
        );
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    }
    match commit(store, ChunkHandle(c.handle), c.version, OpId(c.op_id)).await {
        Ok(committed_length) => ReplicateReply {
            id,
            code: 0,
            message: String::new(),
            committed_length,
        },
        Err(e) => failure(id, refusal(e)),
    }
}

/// Runs the COMMIT `c` (request `id`) beside its session, at most `in_flight` at once, its reply
/// sent on `tx`; false once the session is closing.
async fn spawn_commit(
    in_flight: &Arc<Semaphore>,
    store: &Arc<ChunkStore>,
    tx: &mpsc::Sender<Result<ReplicateReply, Status>>,
    id: u64,
    c: CommitRequest,
) -> bool {
    let Ok(permit) = Arc::clone(in_flight).acquire_owned().await else {
        return false;
    };
    let (store, tx) = (Arc::clone(store), tx.clone());
    tokio::spawn(async move {
        let reply = commit_reply(&store, id, c).await;
        let _ = tx.send(Ok(reply)).await;
        drop(permit);
    });
    true
}

fn failure(id: u64, s: Status) -> ReplicateReply {
    ReplicateReply {
        id,
        code: s.code() as u32,
        message: s.message().to_string(),
        committed_length: 0,
    }
}

fn ok(id: u64) -> ReplicateReply {
    ReplicateReply {
        id,
        code: 0,
        message: String::new(),
        committed_length: 0,
    }
}

/// The stream of replies a replication session answers with.
pub(crate) type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReplicateReply, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Participant {
    type ReplicateStream = ReplyStream;

    async fn replicate(
        &self,
        request: Request<Streaming<ReplicateRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<ReplicateReply, Status>>(1024);
        let (store, cfg) = (Arc::clone(&self.store), self.cfg.clone());
        let shutdown = self.shutdown.clone();
        let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight.max(1)));
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    _ = shutdown.cancelled() => {
                        let busy = cfg.max_in_flight.max(1) - in_flight.available_permits();
                        tracing::debug!(commits_in_flight = busy, "replication session closed for shutdown");
                        break;
                    }
                };
                let req = match next {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        tracing::debug!("replication session ended by the primary");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "replication session ended");
                        break;
                    }
                };
                let id = req.id;
                match req.op {
                    // A WRITE stages in order on the session, then commits beside it, as a
                    // COMMIT does.
                    Some(Op::Prepare(p)) if p.commit => {
                        let staged = match announced(p) {
                            Ok(req) => {
                                let commit = CommitRequest {
                                    handle: req.handle.0,
                                    op_id: req.op.0,
                                    version: req.version,
                                };
                                stage_to_write(&store, &cfg, req)
                                    .await
                                    .map(|()| commit)
                                    .map_err(refusal)
                            }
                            Err(s) => Err(s),
                        };
                        let c = match staged {
                            Ok(c) => c,
                            Err(s) => {
                                if tx.send(Ok(failure(id, s))).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        };
                        if !spawn_commit(&in_flight, &store, &tx, id, c).await {
                            break;
                        }
                    }
                    // PREPARE and ABORT are quick: answered in order on the session.
                    Some(Op::Prepare(p)) => {
                        let staged = match announced(p) {
                            Ok(req) => stage(&store, &cfg, req).await.map_err(refusal),
                            Err(s) => Err(s),
                        };
                        let reply = match staged {
                            Ok(()) => ok(id),
                            Err(s) => failure(id, s),
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Some(Op::Abort(a)) => {
                        let reply =
                            match store.abort_at(ChunkHandle(a.handle), a.version, OpId(a.op_id)) {
                                Ok(_) => ok(id),
                                Err(e) => failure(id, status(e)),
                            };
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Some(Op::QuorumLength(q)) => {
                        let reply =
                            match store.note_quorum(ChunkHandle(q.handle), q.version, q.length) {
                                Ok(_) => ok(id),
                                Err(e) => failure(id, status(e)),
                            };
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    // A COMMIT waits for its group commit: it runs beside the session.
                    Some(Op::Commit(c)) => {
                        if !spawn_commit(&in_flight, &store, &tx, id, c).await {
                            break;
                        }
                    }
                    None => {
                        let reply = failure(id, Status::invalid_argument("an empty request"));
                        if tx.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn seal(&self, request: Request<SealRequest>) -> Result<Response<SealReply>, Status> {
        let r = request.into_inner();
        let short = self
            .seal_at(ChunkHandle(r.handle), r.version, r.length)
            .await
            .map_err(refusal)?;
        Ok(Response::new(SealReply {
            short: short.is_some(),
            committed_length: short.unwrap_or(r.length),
        }))
    }

    type ReadChunkStream = ChunkStream;

    async fn read_chunk(
        &self,
        request: Request<ReadChunkRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = request.into_inner();
        let handle = ChunkHandle(r.handle);
        self.current(handle, r.version).map_err(status)?;
        // One message per committed append (checksums verified by the read), so a copy keeps
        // the op table and exactly-once retries still work on it. A chunk that dropped its op
        // table (sealed past the op retention) sends its bytes in pieces marked
        // `op_forgotten`: the copy then drops its table too.
        let (appends, op_forgotten) = match self.store.appends(handle) {
            Ok(all) => (
                all.into_iter()
                    .filter(|(_, a)| a.offset >= r.offset)
                    .collect(),
                false,
            ),
            Err(StorageError::OpRetentionExpired { length, .. }) => {
                let piece = (self.store.config().chunk_size / 4).min(FORGOTTEN_PIECE);
                (stand_ins(r.offset, length, piece), true)
            }
            Err(e) => return Err(status(e)),
        };
        let store = Arc::clone(&self.store);
        let stream = futures::stream::iter(appends).then(move |(op, a): (OpId, AppendRecord)| {
            let store = Arc::clone(&store);
            async move {
                let len = u64::from(a.len);
                let disk = Arc::clone(store.disk());
                let read = gfs_host::blocking(&*disk, move || store.read(handle, a.offset, len));
                match read.await {
                    Ok(data) => Ok(ChunkBytes {
                        offset: a.offset,
                        data,
                        op_id: op.0,
                        op_forgotten,
                    }),
                    Err(e) => Err(status(e)),
                }
            }
        });
        Ok(Response::new(stream.boxed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_tile_the_range_with_distinct_ids() {
        let p = stand_ins(5, 25, 8);
        let spans: Vec<_> = p.iter().map(|(_, a)| (a.offset, a.len)).collect();
        assert_eq!(spans, vec![(5, 8), (13, 8), (21, 4)]);
        let mut ids: Vec<_> = p.iter().map(|(op, _)| *op).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        assert!(stand_ins(25, 25, 8).is_empty());
    }
}
