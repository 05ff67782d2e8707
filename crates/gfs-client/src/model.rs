//! The client's own types for what the master answers: entries and chunk locations, and the
//! detailed view `gfs stat` prints. Each serializes (serde) for programs that print it.

use gfs_proto::v1::{FileStat, StatReply};
use serde::Serialize;

use crate::error::ProtocolError;

/// A directory or file as the namespace describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

impl TryFrom<StatReply> for Entry {
    type Error = ProtocolError;

    fn try_from(r: StatReply) -> Result<Entry, ProtocolError> {
        r.stat
            .map(Entry::from)
            .ok_or_else(|| ProtocolError::new("stat reply without an entry"))
    }
}

impl Entry {
    /// Whether it is a directory or a file.
    pub fn kind(&self) -> EntryKind {
        if self.is_dir {
            EntryKind::Dir
        } else {
            EntryKind::File
        }
    }
}

/// A directory or a file; serializes and prints as `dir` or `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A file.
    File,
}

impl EntryKind {
    /// `dir` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A replica of a chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replica {
    /// Chunkserver id.
    pub id: String,
    /// Its data-plane address.
    pub data_addr: String,
}

/// One chunk of a file and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    /// The master's token for reading the chunk (sent with every read; not shown).
    #[serde(skip)]
    pub token: bytes::Bytes,
}

impl ChunkInfo {
    /// The chunk as a data-plane request names it.
    pub fn chunk_ref(&self) -> gfs_dataplane::ChunkRef {
        gfs_dataplane::ChunkRef::new(self.handle, self.version, self.token.clone())
    }
}

/// The chunks of a file as the master listed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Locations {
    /// Chunk size of the cluster.
    pub chunk_size: u64,
    /// Chunks in file order.
    pub chunks: Vec<ChunkInfo>,
}

/// What `gfs stat` shows of a path: its entry and, for a file, each chunk with its length and
/// replicas ([`Client::stat_detail`](crate::Client::stat_detail)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatDetail {
    /// Absolute path.
    pub path: String,
    /// Directory or file (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Bytes in the file: the sum of its chunks' known lengths (0 for a directory).
    pub size: u64,
    /// Last modification, ms since the Unix epoch.
    pub mtime_ms: u64,
    /// Replicas per chunk (files).
    pub replication: u32,
    /// Chunks with fewer current replicas than the goal.
    pub under_replicated: u64,
    /// Chunks no live server holds at the current version.
    pub lost_chunks: u64,
    /// Stale replicas still on live servers.
    pub stale_replicas: u64,
    /// The file's chunks in order (none for a directory).
    pub chunks: Vec<ChunkDetail>,
}

/// One chunk of a file with its length, as `gfs stat` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkDetail {
    /// Position in the file.
    pub index: u64,
    /// Chunk handle.
    pub handle: u64,
    /// Current version.
    pub version: u64,
    /// Its length: sealed, or what its replicas report; `None` when no replica could say (a
    /// lost unsealed chunk).
    pub length: Option<u64>,
    /// Whether it is sealed.
    pub sealed: bool,
    /// No current replica is on a live server.
    pub lost: bool,
    /// Current replicas, nearest first.
    pub replicas: Vec<Replica>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_stat_reply_converts_and_one_without_its_entry_is_a_protocol_error() {
        let e = Entry::try_from(StatReply {
            stat: Some(FileStat {
                path: "/d".into(),
                dir: true,
                mtime_ms: 5,
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            (e.path.as_str(), e.kind(), e.mtime_ms),
            ("/d", EntryKind::Dir, 5)
        );
        assert_eq!(
            Entry::try_from(StatReply { stat: None }),
            Err(ProtocolError::new("stat reply without an entry"))
        );
    }

    #[test]
    fn kinds_serialize_and_print_as_dir_and_file() {
        assert_eq!(serde_json::to_value(EntryKind::Dir).unwrap(), "dir");
        assert_eq!(serde_json::to_value(EntryKind::File).unwrap(), "file");
        assert_eq!(format!("[{:<5}]", EntryKind::Dir), "[dir  ]");
    }
}
