//! A full disk: appends fail with `DiskFull`, the store keeps serving, acknowledged data stays.
//!
//! Runs on a 3 MiB tmpfs mounted for the test (needs root, as CI has; elsewhere it says it
//! did not run).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError, StoreConfig};
use gfs_testkit::storage::test_config;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

async fn append(
    store: &ChunkStore,
    h: ChunkHandle,
    op: u64,
    off: u64,
    data: &Bytes,
) -> Result<(), StorageError> {
    store.stage(StageRequest {
        op: OpId(op),
        handle: h,
        version: 1,
        offset: off,
        data: data.clone(),
    })?;
    store.commit(h, OpId(op)).await.map(|_| ())
}

#[tokio::test]
async fn a_full_disk_fails_appends_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_mount) = Mount::tmpfs(dir.path(), "3m") else {
        println!(
            "a_full_disk_fails_appends_and_keeps_serving: cannot mount tmpfs (not root?); not run"
        );
        return;
    };
    let cfg = StoreConfig {
        inline_max: 8 << 10,
        ..test_config()
    };
    let store = ChunkStore::open(dir.path(), cfg.clone()).unwrap();
    let big = Bytes::from(vec![0x11u8; 256 << 10]);
    let small = Bytes::from(vec![0x22u8; 4 << 10]);
    let mut acked: Vec<(ChunkHandle, u64, Bytes)> = Vec::new();
    let mut full = None;
    'fill: for c in 0..8u64 {
        let h = ChunkHandle(c);
        store.create(h, 1).await.unwrap();
        let mut off = 0;
        for i in 0..4u64 {
            let data = if i % 2 == 0 { &big } else { &small };
            match append(&store, h, c * 100 + i, off, data).await {
                Ok(()) => {
                    acked.push((h, off, data.clone()));
                    off += data.len() as u64;
                }
                Err(e) => {
                    full = Some(e);
                    break 'fill;
                }
            }
        }
    }
    let err = full.expect("3 MiB never filled up");
    assert!(
        matches!(err, StorageError::DiskFull { .. }),
        "expected DiskFull, got {err:?}"
    );
    // Still serving: reads of acknowledged data work, and freeing space lets appends through.
    for (h, off, data) in &acked {
        assert_eq!(
            &store.read(*h, *off, data.len() as u64).unwrap()[..],
            &data[..]
        );
    }
    store.delete(ChunkHandle(0)).await.unwrap();
    acked.retain(|(h, ..)| *h != ChunkHandle(0));
    let h = ChunkHandle(99);
    store.create(h, 1).await.unwrap();
    append(&store, h, 9_999, 0, &small).await.unwrap();
    acked.push((h, 0, small.clone()));
    drop(store);
    let store = ChunkStore::open(dir.path(), cfg).unwrap();
    for (h, off, data) in &acked {
        assert_eq!(
            &store.read(*h, *off, data.len() as u64).unwrap()[..],
            &data[..]
        );
    }
}
