//! Identifiers and value types shared by the store's API.

use std::fmt;

/// Size of a checksum block: every 64 KiB of a chunk carries its own CRC32C.
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// The 64-bit identifier of a chunk, assigned by the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHandle(pub u64);

impl fmt::Display for ChunkHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client-chosen append operation id; a retry reuses it to get exactly-once appends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where a committed append landed inside its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendRecord {
    /// Offset of the first byte inside the chunk.
    pub offset: u64,
    /// Number of bytes.
    pub len: u32,
}

impl AppendRecord {
    /// Offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// What a chunk report says about one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk's handle.
    pub handle: ChunkHandle,
    /// The replica's version.
    pub version: u64,
    /// Bytes durably committed.
    pub committed_len: u64,
    /// Whether the chunk is sealed (no more appends).
    pub sealed: bool,
    /// Unsealed, with committed bytes past the prefix a quorum is known to hold here
    /// ([`crate::ChunkStore::quorum_known`]): the replica restarted since, or committed them
    /// alone. The master settles such a chunk once no lease is out on it.
    pub unvouched: bool,
}

/// The outcome of a durable commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Where the append landed.
    pub record: AppendRecord,
    /// Committed length of the chunk once this append is durable.
    pub committed_len: u64,
}

/// One append to stage: the data plane or the replication plane fills it in.
#[derive(Clone, Debug)]
pub struct StageRequest {
    /// The append's operation id.
    pub op: OpId,
    /// Target chunk.
    pub handle: ChunkHandle,
    /// The version the caller believes current; a mismatch is refused.
    pub version: u64,
    /// Offset inside the chunk, assigned by the primary.
    pub offset: u64,
    /// The bytes.
    pub data: bytes::Bytes,
}

/// Index of the checksum block holding byte `offset`.
pub(crate) fn block_of(offset: u64) -> u64 {
    offset / BLOCK_SIZE
}
