//! A data directory holding a WAL and one chunk's snapshot of any bytes (the input split at its
//! first byte): the store opens (chunks loaded, rolled back or quarantined) or refuses with an
//! error, and reads from what it opened never panic.
#![no_main]

use gfs_storage::{ChunkHandle, ChunkStore, StoreConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize * rest.len()) / 256;
    let (wal, meta) = rest.split_at(at);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wal"), wal).unwrap();
    std::fs::write(dir.path().join("42.meta"), meta).unwrap();
    std::fs::write(dir.path().join("42"), vec![7u8; 4096]).unwrap();
    let cfg = StoreConfig {
        chunk_size: 1 << 20,
        ..StoreConfig::default()
    };
    if let Ok(store) = ChunkStore::open(dir.path(), cfg) {
        for info in store.list() {
            let _ = store.read(info.handle, 0, info.committed_len.min(1 << 16));
        }
        let _ = store.info(ChunkHandle(42));
    }
});
