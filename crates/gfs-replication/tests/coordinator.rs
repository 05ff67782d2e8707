//! The primary over a real chunk store, without secondaries (quorum 1): what a retry is told.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gfs_replication::{Coordinator, CoordinatorConfig, PeerConfig, Peers, ReplicationError};
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StoreConfig};

const CHUNK: u64 = 1 << 20;
const H: ChunkHandle = ChunkHandle(5);

/// A store with one chunk at version 1, and a coordinator holding its lease alone.
async fn primary(dir: &std::path::Path, op_retention: Duration) -> (Arc<ChunkStore>, Coordinator) {
    let store = Arc::new(
        ChunkStore::open(
            dir,
            StoreConfig {
                chunk_size: CHUNK,
                op_retention,
                ..StoreConfig::default()
            },
        )
        .unwrap(),
    );
    store.create(H, 1).await.unwrap();
    let c = Coordinator::new(
        Arc::clone(&store),
        Arc::new(Peers::new(PeerConfig::default())),
        CoordinatorConfig {
            quorum: 1,
            ..CoordinatorConfig::for_chunk_size(CHUNK)
        },
    );
    c.grant_lease(
        H,
        1,
        Vec::new(),
        SystemTime::now() + Duration::from_secs(60),
    )
    .unwrap();
    (store, c)
}

async fn append(c: &Coordinator, op: u64, data: &[u8]) -> Result<u64, ReplicationError> {
    c.append(H, 1, OpId(op), None, Bytes::copy_from_slice(data))
        .await
}

#[tokio::test]
async fn an_empty_record_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (store, c) = primary(d.path(), Duration::from_secs(600)).await;
    assert!(matches!(
        append(&c, 1, b"").await,
        Err(ReplicationError::EmptyRecord)
    ));
    assert_eq!(store.lookup_op(H, OpId(1)).unwrap(), None);
    assert_eq!(append(&c, 1, b"x").await.unwrap(), 0);
}
