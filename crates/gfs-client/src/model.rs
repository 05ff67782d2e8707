//! The client's own types for what the master answers: entries and chunk locations.

use gfs_proto::v1::FileStat;

/// A directory or file as the namespace describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path.
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Last modification, ms since the Unix epoch.
    pub mtime_ms: u64,
    /// Replicas per chunk (files).
    pub replication: u32,
    /// Number of chunks (files).
    pub chunks: u64,
    /// Chunks with fewer current replicas than the goal (`stat` of a file only).
    pub under_replicated: u64,
    /// Chunks with no current replica on a live server (`stat` of a file only).
    pub lost_chunks: u64,
    /// Stale replicas still on live servers (`stat` of a file only).
    pub stale_replicas: u64,
}

impl From<FileStat> for Entry {
    fn from(s: FileStat) -> Entry {
        Entry {
            path: s.path,
            is_dir: s.dir,
            mtime_ms: s.mtime_ms,
            replication: s.replication,
            chunks: s.chunks,
            under_replicated: s.under_replicated,
            lost_chunks: s.lost_chunks,
            stale_replicas: s.stale_replicas,
        }
    }
}

/// A replica of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Chunkserver id.
    pub id: String,
    /// Its data-plane address.
    pub data_addr: String,
}

/// One chunk of a file and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Position in the file.
    pub index: u64,
    /// Where the chunk starts in the file: the sum of the lengths of the earlier chunks.
    pub file_offset: u64,
    /// Chunk handle.
    pub handle: u64,
    /// Current version; older replicas are never read.
    pub version: u64,
    /// Final length, once sealed.
    pub sealed_length: Option<u64>,
    /// Unsealed: how many replicas' committed lengths a reader must hear before it takes the
    /// longest for the chunk's length (any this many hold every acknowledged append).
    pub length_quorum: usize,
    /// Current replicas, nearest first.
    pub replicas: Vec<Replica>,
}

/// The chunks of a file as the master listed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locations {
    /// Chunk size of the cluster.
    pub chunk_size: u64,
    /// Chunks in file order.
    pub chunks: Vec<ChunkInfo>,
}
