//! gfs-storage: the durable store of chunk replicas on one chunkserver.
//!
//! It owns a data directory holding one data file per chunk (`<dir>/<handle>`), one snapshot per
//! chunk (`<dir>/<handle>.meta`: version, committed length, sealed flag, op-id table and a CRC32C
//! per 64 KiB block; a sealed chunk's op table is dropped after a retention, see `optable.rs`) and a store-wide write-ahead log (`<dir>/wal`). Appends are staged in a
//! bounded memory area, then committed strictly in offset order by a single committer thread that
//! batches concurrent commits into one fsync round (group commit): small appends ride inside the
//! WAL, large ones are written in place. A commit returns only once its bytes and metadata are
//! durable.
//!
//! Invariant: after a crash at any instant, [`ChunkStore::open`] yields for every chunk a committed
//! prefix whose every block matches its checksum; bytes past it are truncated, never served.
//!
//! The crate knows nothing of the network or of protobuf.
//!
//! # The data directory
//!
//! [`ChunkStore::open`] holds an exclusive `flock` on `<dir>/LOCK` (a second open fails with
//! `Locked`). Formats of the WAL and snapshots: `record.rs`.
//!
//! | file | content |
//! |---|---|
//! | `<handle>` | the chunk's bytes (handle in decimal), cut to the committed length at open |
//! | `<handle>.meta` | its snapshot: `GFSMETA2` + one Snapshot frame |
//! | `wal` | `GFSWAL01` + the records since the last checkpoint |
//! | `LOCK` | the lock; [`ChunkStore::check_disk`] compares its device and inode |
//! | `ID` | the directory's identity ([`ChunkStore::identity`]): 16 hex digits, made once |
//! | `*.tmp` | a file being written aside; removed at open |
//! | `free-<n>` | an empty file made ahead for chunk creation (`pool.rs`); adopted at open |
//! | `*.corrupt` | a quarantined chunk (its snapshot did not parse); never served |

mod committer;
mod config;
mod driver;
mod error;
mod layout;
mod optable;
mod pool;
pub mod probe;
mod record;
mod recovery;
mod scrub;
mod state;
mod store;
mod types;

pub use config::StoreConfig;
pub use error::{Result, StorageError};
pub use scrub::ScrubReport;
pub use state::FsyncObserver;
pub use store::{ChunkStore, StoreStats};
pub use types::{AppendRecord, BLOCK_SIZE, ChunkHandle, ChunkInfo, CommitInfo, OpId, StageRequest};

/// The appends the bytes of a write-ahead log hold inline (those small enough to live in the
/// WAL), in order, as `(chunk, offset in the chunk, bytes)`: for checkers that look at a data
/// directory from outside a store. Anything but a WAL gives nothing; a damaged tail ends the
/// list.
pub fn wal_appends(bytes: bytes::Bytes) -> Vec<(ChunkHandle, u64, bytes::Bytes)> {
    let Ok(parsed) = record::parse(std::path::Path::new("wal"), record::WAL_MAGIC, bytes) else {
        return Vec::new();
    };
    parsed
        .records
        .into_iter()
        .filter_map(|(_, r)| match r {
            record::Record::Commit {
                handle,
                offset,
                data: Some(data),
                ..
            } => Some((handle, offset, data)),
            _ => None,
        })
        .collect()
}

/// The chunks the bytes of a write-ahead log create and do not delete after (creations whose
/// round failed, which a Cancel record voids, left out): those a replay brings back even if the
/// crash lost their files' directory entries. For checkers that look at a data directory from
/// outside a store; anything but a WAL gives nothing.
pub fn wal_created(bytes: bytes::Bytes) -> Vec<ChunkHandle> {
    let Ok(parsed) = record::parse(std::path::Path::new("wal"), record::WAL_MAGIC, bytes) else {
        return Vec::new();
    };
    let cancelled: std::collections::BTreeSet<(u64, ChunkHandle)> = parsed
        .records
        .iter()
        .filter_map(|(_, r)| match r {
            record::Record::Cancel {
                handle, cancelled, ..
            } => Some((*cancelled, *handle)),
            _ => None,
        })
        .collect();
    let mut created = std::collections::BTreeSet::new();
    for (_, r) in parsed.records {
        match r {
            record::Record::Create { batch, handle, .. }
                if !cancelled.contains(&(batch, handle)) =>
            {
                created.insert(handle);
            }
            record::Record::Delete { handle, .. } => {
                created.remove(&handle);
            }
            _ => {}
        }
    }
    created.into_iter().collect()
}
