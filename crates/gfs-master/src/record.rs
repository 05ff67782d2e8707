//! The on-disk encoding of the master's metadata: prost messages (protobuf wire format, so
//! fields can be added compatibly) inside CRC32C frames, behind versioned magic headers.
//!
//! Log segment `log-<first seq, 20 digits>`: magic `GFSMLOG1`, then frames
//! `[len u32 LE][crc32c(payload) u32 LE][payload = LogRecord]`. Checkpoint
//! `checkpoint-<seq, 20 digits>`: magic `GFSMCKP1`, then one frame holding a `Checkpoint`.
//! The frame layer (and its torn-tail detection) is `gfs_util::framed`, shared with the chunk
//! store; the payloads are this module's.

use gfs_util::framed::Magic;

/// Magic and format version of a log segment.
pub const LOG_MAGIC: &Magic = b"GFSMLOG1";
/// Magic and format version of a checkpoint.
pub const CHECKPOINT_MAGIC: &Magic = b"GFSMCKP1";

/// One durable mutation of the namespace or the chunk map.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    /// Position in the log: every record's seq is its predecessor's plus one.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The mutation.
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9")]
    pub op: Option<Op>,
}

/// A mutation.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// Create a directory (its parent must exist).
    #[prost(message, tag = "2")]
    Mkdir(PathOp),
    /// Create an empty file (its parent must exist).
    #[prost(message, tag = "3")]
    Create(CreateOp),
    /// Remove a file, or a directory (with everything under it when recursive).
    #[prost(message, tag = "4")]
    Delete(DeleteOp),
    /// Move an entry to a path that does not exist.
    #[prost(message, tag = "5")]
    Rename(RenameOp),
    /// Append a new chunk to a file.
    #[prost(message, tag = "6")]
    AddChunk(AddChunkOp),
    /// Record a chunk's new version (every new lease bumps it).
    #[prost(message, tag = "7")]
    SetVersion(SetVersionOp),
    /// Record that a chunk is sealed at a length.
    #[prost(message, tag = "8")]
    Seal(SealOp),
    /// Create a file with its first chunk (a new record kind: a master that does not know it
    /// refuses the log instead of reading a file without its chunk).
    #[prost(message, tag = "9")]
    CreateWithChunk(CreateWithChunkOp),
}

/// A mutation naming one path.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathOp {
    /// Normalized absolute path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Wall-clock time of the mutation, ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub mtime_ms: u64,
}

/// Remove an entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteOp {
    /// Normalized absolute path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Wall-clock time, ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub mtime_ms: u64,
    /// Remove a non-empty directory with everything under it.
    #[prost(bool, tag = "3")]
    pub recursive: bool,
}

/// Create a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateOp {
    /// Normalized absolute path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Wall-clock time, ms since the Unix epoch.
    #[prost(uint64, tag = "2")]
    pub mtime_ms: u64,
    /// Replicas per chunk.
    #[prost(uint32, tag = "3")]
    pub replication: u32,
}

/// Create a file and append its first chunk, in one record: a small file's create and its
/// chunk cost one log write.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateWithChunkOp {
    /// The file.
    #[prost(message, optional, tag = "1")]
    pub create: Option<CreateOp>,
    /// Its first chunk (`path` is the file's).
    #[prost(message, optional, tag = "2")]
    pub chunk: Option<AddChunkOp>,
}

/// Rename.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenameOp {
    /// Source path.
    #[prost(string, tag = "1")]
    pub src: String,
    /// Target path.
    #[prost(string, tag = "2")]
    pub dst: String,
    /// Wall-clock time, ms since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub mtime_ms: u64,
}

/// Append a chunk to a file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddChunkOp {
    /// The file.
    #[prost(string, tag = "1")]
    pub path: String,
    /// The new chunk's handle.
    #[prost(uint64, tag = "2")]
    pub handle: u64,
    /// Its first version.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The chunkserver (id) its first lease is granted to, once this record is durable;
    /// empty: unknown (records of older versions).
    #[prost(string, tag = "4")]
    pub primary: String,
    /// The servers its creation failed on, whose data directories were known: while one runs
    /// on that directory and names no replica of the chunk, its "none here" witnesses that it
    /// never held one (`Registry::never_held`), across restarts of it and of the master.
    #[prost(message, repeated, tag = "5")]
    pub uncreated: Vec<Uncreated>,
    /// How many servers it was placed on: those it was created on and those its creation
    /// failed on, logged or not (its first lease's members); no unsealed chunk has more
    /// replicas. 0: unknown (records of older versions).
    #[prost(uint32, tag = "6")]
    pub placed: u32,
}

/// A server a chunk's creation failed on, and the identity of its data directory then.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Uncreated {
    /// The chunkserver (id).
    #[prost(string, tag = "1")]
    pub server: String,
    /// Its data directory's identity (never 0 here).
    #[prost(uint64, tag = "2")]
    pub disk_id: u64,
}

/// A chunk's new version.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetVersionOp {
    /// The chunk.
    #[prost(uint64, tag = "1")]
    pub handle: u64,
    /// The version.
    #[prost(uint64, tag = "2")]
    pub version: u64,
    /// The chunkserver (id) the lease at this version is granted to, once this record is
    /// durable; empty: unknown (records of older versions, a version adopted from a report:
    /// no lease was granted at it).
    #[prost(string, tag = "3")]
    pub primary: String,
}

/// A chunk sealed at a length.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SealOp {
    /// The chunk.
    #[prost(uint64, tag = "1")]
    pub handle: u64,
    /// Its final length.
    #[prost(uint64, tag = "2")]
    pub length: u64,
}

/// The whole metadata state through log record `seq`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Checkpoint {
    /// The last record the checkpoint includes.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// Every directory and file but `/`, parents before children.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<Entry>,
    /// The chunkserver ids `ChunkEntry::primary` points into: entry `i` is index `i + 1`.
    #[prost(string, repeated, tag = "3")]
    pub servers: Vec<String>,
}

/// One namespace entry in a checkpoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// Normalized absolute path.
    #[prost(string, tag = "1")]
    pub path: String,
    /// Whether it is a directory.
    #[prost(bool, tag = "2")]
    pub dir: bool,
    /// Last modification, ms since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub mtime_ms: u64,
    /// Replicas per chunk (files).
    #[prost(uint32, tag = "4")]
    pub replication: u32,
    /// The file's chunks in order (files).
    #[prost(message, repeated, tag = "5")]
    pub chunks: Vec<ChunkEntry>,
}

/// One chunk of a file in a checkpoint.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkEntry {
    /// Handle.
    #[prost(uint64, tag = "1")]
    pub handle: u64,
    /// Version.
    #[prost(uint64, tag = "2")]
    pub version: u64,
    /// Sealed length, when sealed.
    #[prost(uint64, optional, tag = "3")]
    pub sealed_length: Option<u64>,
    /// The chunkserver the last lease was granted to: an index into `Checkpoint::servers`
    /// plus one; 0: unknown.
    #[prost(uint32, tag = "4")]
    pub primary: u32,
    /// The servers its creation failed on (`AddChunkOp::uncreated`), until it is sealed.
    #[prost(message, repeated, tag = "5")]
    pub uncreated: Vec<Uncreated>,
    /// How many servers it was placed on (`AddChunkOp::placed`); 0: unknown.
    #[prost(uint32, tag = "6")]
    pub placed: u32,
    /// How far `version` is past the chunk's last leased version, plus one
    /// (`ChunkMeta::since_lease`); 0: unknown.
    #[prost(uint32, tag = "7")]
    pub since_lease: u32,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_log_record_frame_is_pinned_to_its_bytes() {
        // The format of every existing master directory: these bytes must never change.
        let rec = LogRecord {
            seq: 1,
            op: Some(Op::Mkdir(PathOp {
                path: "/a".into(),
                mtime_ms: 5,
            })),
        };
        let mut out = LOG_MAGIC.to_vec();
        gfs_util::framed::frame(&rec.encode_to_vec(), &mut out);
        let mut want = b"GFSMLOG1".to_vec();
        want.extend_from_slice(&[10, 0, 0, 0, 0x9b, 0x06, 0x4c, 0x48]);
        want.extend_from_slice(&[0x08, 1, 0x12, 6, 0x0a, 2, b'/', b'a', 0x10, 5]);
        assert_eq!(out, want);
    }
}
