//! Every replica on stopped chunkservers' disks, read straight from their data directories.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use gfs_storage::{ChunkStore, StoreConfig};
use gfs_util::disk::{Disk, OsDisk};

use crate::checker::ReplicaState;

/// Opens each `(server id, data directory)` (its server must be stopped: the store takes an
/// exclusive lock) and reads every replica whole, by chunk handle.
pub fn read_replicas(
    dirs: &[(String, PathBuf)],
    chunk_size: u64,
) -> Result<BTreeMap<u64, Vec<ReplicaState>>, gfs_storage::StorageError> {
    let on: Vec<_> = dirs
        .iter()
        .map(|(id, dir)| (id.clone(), OsDisk::shared(), dir.clone()))
        .collect();
    read_replicas_on(&on, chunk_size)
}

/// [`read_replicas`] of `(server id, disk, data directory)`s (a simulator's disks).
pub fn read_replicas_on(
    dirs: &[(String, Arc<dyn Disk>, PathBuf)],
    chunk_size: u64,
) -> Result<BTreeMap<u64, Vec<ReplicaState>>, gfs_storage::StorageError> {
    let mut out: BTreeMap<u64, Vec<ReplicaState>> = BTreeMap::new();
    for (id, disk, dir) in dirs {
        if disk.read_dir(dir).is_err() {
            continue;
        }
        let store = ChunkStore::open_on(
            Arc::clone(disk),
            dir,
            StoreConfig {
                chunk_size,
                ..StoreConfig::default()
            },
        )?;
        for info in store.list() {
            let read = store.read(info.handle, 0, info.committed_len);
            out.entry(info.handle.0).or_default().push(ReplicaState {
                server: id.clone(),
                version: info.version,
                length: info.committed_len,
                sealed: info.sealed,
                corrupt: matches!(
                    read,
                    Err(gfs_storage::StorageError::ChecksumMismatch { .. })
                ),
                bytes: read.unwrap_or_default(),
            });
        }
    }
    Ok(out)
}
