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

fn forgotten(r: &Result<u64, ReplicationError>) -> bool {
    matches!(
        r,
        Err(ReplicationError::Storage(
            gfs_storage::StorageError::OpRetentionExpired { .. }
        ))
    )
}

#[tokio::test]
async fn a_retry_after_the_op_retention_gets_outcome_unknown_never_chunk_full() {
    let d = tempfile::tempdir().unwrap();
    let (store, c) = primary(d.path(), Duration::from_millis(500)).await;
    assert_eq!(append(&c, 1, b"first").await.unwrap(), 0);
    // Quarter-chunk records until one does not fit: the chunk is sealed.
    let big = vec![7u8; (CHUNK / 4) as usize];
    let mut op = 100;
    let length = loop {
        op += 1;
        match append(&c, op, &big).await {
            Ok(_) => {}
            Err(ReplicationError::ChunkFull { length, .. }) => break length,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(store.info(H).unwrap().sealed);
    // Within the retention: a retry gets its first offset, an op never sent here ChunkFull.
    assert_eq!(append(&c, 1, b"first").await.unwrap(), 0);
    assert!(matches!(
        append(&c, 2, b"never sent").await,
        Err(ReplicationError::ChunkFull { length: l, .. }) if l == length
    ));
    // Past it: every answer about an op is "unknown", with the lease or without it. The retry
    // is never told ChunkFull, on which its client would append it to the next chunk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = append(&c, 1, b"first").await;
        if forgotten(&r) {
            break;
        }
        assert_eq!(r.unwrap(), 0, "before the table is dropped");
        assert!(std::time::Instant::now() < deadline, "table never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(forgotten(&append(&c, 2, b"never sent").await));
    c.revoke(H);
    assert!(forgotten(&append(&c, 1, b"first").await));
    assert!(forgotten(&append(&c, 3, b"new").await));
    // The bytes are all there.
    assert_eq!(&store.read(H, 0, 5).unwrap()[..], b"first");
    assert_eq!(store.info(H).unwrap().committed_len, length);
}

/// A bench run found a chunkserver's two runtime threads blocked for good: `grant_lease` took
/// the lease table, then the read limits; the heartbeat's `writing` took the read limits, then
/// the lease table. Both orders at once, on two threads, over and over: every call returns.
#[tokio::test]
async fn granting_leases_while_the_heartbeat_lists_them_never_deadlocks() {
    let d = tempfile::tempdir().unwrap();
    let (_store, c) = primary(d.path(), Duration::from_secs(600)).await;
    let c = Arc::new(c);
    let (done, finished) = std::sync::mpsc::channel();
    // A grant tells its secondaries in tasks of this runtime (they never connect here).
    let rt = tokio::runtime::Handle::current();
    let granter = {
        let (c, done) = (Arc::clone(&c), done.clone());
        std::thread::spawn(move || {
            let _in_runtime = rt.enter();
            for i in 0..20_000u32 {
                // Other secondaries each time: a new lease, which takes both locks.
                let secondaries = (i % 2 == 0)
                    .then(|| "127.0.0.1:9".to_string())
                    .into_iter()
                    .collect();
                let expires = SystemTime::now() + Duration::from_secs(60);
                c.grant_lease(H, 1, secondaries, expires).unwrap();
            }
            done.send("granter").unwrap();
        })
    };
    let lister = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            for _ in 0..20_000u32 {
                c.writing(Duration::from_secs(1));
            }
            done.send("lister").unwrap();
        })
    };
    for _ in 0..2 {
        let who = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a lease call blocked for good (lock order)");
        assert!(who == "granter" || who == "lister");
    }
    granter.join().unwrap();
    lister.join().unwrap();
}
