//! Errors of the replicated append path.

use gfs_storage::{ChunkHandle, StorageError};

/// Why a replicated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This server holds no lease for the chunk.
    #[error("this server is not the primary of chunk {0}")]
    NotPrimary(ChunkHandle),
    /// The lease ran out; the client must ask the master again.
    #[error("the lease on chunk {0} expired")]
    LeaseExpired(ChunkHandle),
    /// The caller's version is not the lease's.
    #[error("chunk {handle}: version {got} does not match {have}")]
    StaleVersion {
        /// The chunk.
        handle: ChunkHandle,
        /// The version this server holds.
        have: u64,
        /// The caller's version.
        got: u64,
    },
    /// The record is larger than a quarter of a chunk.
    #[error("record of {len} bytes exceeds the limit of {max}")]
    RecordTooLarge {
        /// Record length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An empty record: it would take an op-table entry and no byte, so the table of an
    /// unsealed chunk would no longer be bounded by its size.
    #[error("empty record: a record holds at least one byte")]
    EmptyRecord,
    /// The chunk is sealed at `length`; append to the next chunk.
    #[error("chunk {handle} is full (sealed at {length})")]
    ChunkFull {
        /// The chunk.
        handle: ChunkHandle,
        /// Its final length.
        length: u64,
    },
    /// A retry of an op this replica holds in a chunk sealed here, with no lease: the op is at
    /// `offset`, on this replica's word alone. The master may have sealed the chunk at a length
    /// only this replica held (the others short or failed), so the op counts as acknowledged
    /// only once a quorum of the chunk's replicas answer the same (the client asks them).
    #[error("chunk {handle} is sealed here holding the op at {offset} (one replica's word)")]
    SealedWith {
        /// The chunk.
        handle: ChunkHandle,
        /// The op's offset in it.
        offset: u64,
    },
    /// This primary's disk failed its local commit (full, an I/O error, a poisoned chunk): it
    /// gave up the lease, so the master fences the chunk and leads it from the others once the
    /// lease runs out. The client retries with the same op id (a quorum may hold it).
    #[error("chunk {handle}: the primary's disk failed ({message}); it gave up the lease")]
    DiskFailed {
        /// The chunk.
        handle: ChunkHandle,
        /// What the store said.
        message: String,
    },
    /// A retry of an op id that committed with another length: not the same record (an op-id
    /// collision or a client bug), so it is refused rather than acknowledged.
    #[error("op {op} committed {have} bytes in chunk {handle}; this request has {got}")]
    OpMismatch {
        /// The chunk.
        handle: ChunkHandle,
        /// The op id.
        op: gfs_storage::OpId,
        /// Length of the committed record.
        have: u64,
        /// Length of this request.
        got: u64,
    },
    /// A positioned append named another offset than the chunk's next one.
    #[error("chunk {handle}: asked to append at {expected}, the chunk continues at {next}")]
    OffsetMismatch {
        /// The chunk.
        handle: ChunkHandle,
        /// The offset asked for.
        expected: u64,
        /// The offset the next append gets.
        next: u64,
    },
    /// Retry later (staging full, or the same op is already in flight).
    #[error("busy: {0}")]
    Busy(&'static str),
    /// Fewer than a quorum of replicas answered.
    #[error("quorum not reached: {got} of {need} replicas")]
    QuorumNotReached {
        /// Replicas that succeeded (the primary included).
        got: u64,
        /// Replicas needed.
        need: u64,
    },
    /// A peer refused or failed a call.
    #[error("peer {addr}: {message}")]
    Peer {
        /// The peer's replication-plane address.
        addr: String,
        /// What it said.
        message: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result alias for the replication crate.
pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;
