//! The store's error type: one variant per condition a caller branches on.

use std::io;
use std::path::PathBuf;

use crate::types::{ChunkHandle, OpId};

/// Everything that can go wrong in the chunk store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No replica with this handle.
    #[error("chunk {0} not found")]
    NotFound(ChunkHandle),
    /// A replica with this handle already exists.
    #[error("chunk {0} already exists")]
    AlreadyExists(ChunkHandle),
    /// The caller's version is not the replica's.
    #[error("chunk {handle}: version {got} does not match the replica's version {have}")]
    StaleVersion {
        /// The chunk.
        handle: ChunkHandle,
        /// The replica's version.
        have: u64,
        /// The caller's version.
        got: u64,
    },
    /// The chunk is sealed: no more appends.
    #[error("chunk {handle} is sealed at length {length}")]
    Sealed {
        /// The chunk.
        handle: ChunkHandle,
        /// Its final length.
        length: u64,
    },
    /// A seal at a length the replica does not end at.
    #[error("chunk {handle} ends at {have}, not at the sealed length {want}")]
    LengthMismatch {
        /// The chunk.
        handle: ChunkHandle,
        /// Where its committed and committing bytes end.
        have: u64,
        /// The length asked for.
        want: u64,
    },
    /// The append would cross the end of the chunk.
    #[error("chunk {handle} is full: {offset}+{len} exceeds the chunk size {chunk_size}")]
    ChunkFull {
        /// The chunk.
        handle: ChunkHandle,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The configured chunk size.
        chunk_size: u64,
    },
    /// The staging area is full; retry later.
    #[error("staging area full: {staged} + {len} bytes exceed the bound of {limit}")]
    Busy {
        /// Bytes staged now.
        staged: u64,
        /// Bytes requested.
        len: u64,
        /// The configured bound.
        limit: u64,
    },
    /// The op was never staged, or it was aborted or expired.
    #[error("op {op} on chunk {handle} is not staged")]
    NotStaged {
        /// The chunk.
        handle: ChunkHandle,
        /// The op.
        op: OpId,
    },
    /// The op id is already committed on this chunk; its first offset is returned.
    #[error("op {op} is already committed on chunk {handle} at offset {offset}")]
    AlreadyCommitted {
        /// The chunk.
        handle: ChunkHandle,
        /// The op.
        op: OpId,
        /// Offset of its first, durable success.
        offset: u64,
        /// Its length.
        len: u32,
    },
    /// The chunk has been sealed here for longer than the op retention and its op table was
    /// dropped (`optable.rs`): whether an op is in it is no longer known. Unlike `Sealed` or
    /// `ChunkFull` this does not say "not here": a client whose earlier attempt of the op may
    /// have reached this chunk must take the append's outcome as unknown, and never send the op
    /// to another chunk.
    #[error(
        "chunk {handle} was sealed at length {length} longer than the op retention ago and no \
         longer knows which ops it holds: whether this op is in it is unknown"
    )]
    OpRetentionExpired {
        /// The chunk.
        handle: ChunkHandle,
        /// The chunk's committed length.
        length: u64,
    },
    /// The staged range overlaps committed bytes or another staged op.
    #[error(
        "chunk {handle}: range {offset}+{len} overlaps committed or staged data (next free {next})"
    )]
    Overlap {
        /// The chunk.
        handle: ChunkHandle,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// First offset past committed and in-flight data.
        next: u64,
    },
    /// A commit whose predecessor bytes are not staged: committing would leave a hole.
    #[error("chunk {handle}: commit at {offset} would leave a hole after {next}")]
    Hole {
        /// The chunk.
        handle: ChunkHandle,
        /// The refused commit's offset.
        offset: u64,
        /// First offset past committed and in-flight data.
        next: u64,
    },
    /// A block's bytes do not match their CRC32C.
    #[error("checksum mismatch in chunk {handle} block {block}")]
    ChecksumMismatch {
        /// The chunk.
        handle: ChunkHandle,
        /// Index of the 64 KiB block.
        block: u64,
    },
    /// A peer's copy of a block is not this replica's block: another length, or not its
    /// stored CRC32C.
    #[error("chunk {handle}: block {block} not restored: {reason}")]
    NotRestored {
        /// The chunk.
        handle: ChunkHandle,
        /// Index of the 64 KiB block.
        block: u64,
        /// Why the copy was refused.
        reason: String,
    },
    /// A read starts past the committed length.
    #[error("chunk {handle}: offset {offset} is past the committed length {committed}")]
    OutOfRange {
        /// The chunk.
        handle: ChunkHandle,
        /// Requested offset.
        offset: u64,
        /// Committed length.
        committed: u64,
    },
    /// A wait for staging room or for a predecessor commit ran out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// An earlier fsync of this chunk failed; the replica refuses writes until the store reopens.
    #[error("chunk {0} is poisoned by an earlier I/O failure; reopen the store")]
    Poisoned(ChunkHandle),
    /// The disk is full.
    #[error("disk full writing {path}")]
    DiskFull {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The process may not read or write a file.
    #[error("permission denied on {path}")]
    PermissionDenied {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A metadata file is damaged beyond a torn tail.
    #[error("corrupt metadata in {path} at byte {offset}: {reason}")]
    CorruptMetadata {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The write-ahead log is damaged in its middle: a record that does not check out is
    /// followed by records that do, so it is not a torn tail. The store refuses to open rather
    /// than drop the committed appends after the damage; nothing was truncated.
    #[error(
        "corrupt write-ahead log {path} at byte {offset}: {reason}; refusing to open rather than \
         drop the committed appends after it (nothing was truncated)"
    )]
    CorruptWal {
        /// The WAL file.
        path: PathBuf,
        /// Byte offset of the first damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The data directory was removed or replaced under a running store.
    #[error("data directory {0} is gone or replaced: its replicas are lost")]
    DiskLost(PathBuf),
    /// Another process holds the data directory.
    #[error("data directory {0} is locked by another process")]
    Locked(PathBuf),
    /// The configuration is unusable.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The store is shutting down.
    #[error("the chunk store is closed")]
    Closed,
}

impl StorageError {
    /// Wraps an I/O error on `path`, telling disk-full and permission errors apart.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                StorageError::DiskFull { path, source }
            }
            _ if matches!(source.raw_os_error(), Some(ENOSPC) | Some(EDQUOT)) => {
                StorageError::DiskFull { path, source }
            }
            io::ErrorKind::PermissionDenied => StorageError::PermissionDenied { path, source },
            _ => StorageError::Io { path, source },
        }
    }

    /// Wraps the error of a crash-safe file step (`gfs_util::crashsafe`) as [`Self::io`] does.
    pub(crate) fn fs(e: gfs_util::crashsafe::PathError) -> Self {
        Self::io(e.path, e.source)
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StorageError::Busy { .. } | StorageError::Timeout(_))
    }
}

/// Result alias for the store.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
