//! A chunkserver whose store takes no writes until it is reopened (a failed WAL fsync, on a
//! simulated disk) stops at once with `NeedsRestart`, so that its supervisor restarts it:
//! serving on, it would hold its replicas back from every append and version bump for good
//! (found by gfs-sim, seed 4).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gfs_chunkserver::{ChunkServer, ChunkserverConfig, ChunkserverError};
use gfs_host::{Host, Net};
use gfs_storage::{ChunkHandle, OpId, StageRequest};
use gfs_util::disk::sim::SimDisk;
use gfs_util::time::Clock;

#[tokio::test]
async fn a_failed_wal_fsync_stops_the_server_for_a_restart() {
    let disk = SimDisk::new(1);
    let cfg = ChunkserverConfig {
        id: "cs".into(),
        data_dir: "/data".into(),
        host: "127.0.0.1".into(),
        data_port: 0,
        repl_port: 0,
        http_port: 0,
        ..ChunkserverConfig::default()
    };
    let host = Host {
        net: Net::os(),
        disk: disk.shared(),
        clock: Clock::system(),
    };
    let server = ChunkServer::start_on(cfg, host).await.unwrap();
    let store = Arc::clone(server.store());
    let h = ChunkHandle(1);
    store.create(h, 1).await.unwrap();
    let append = |op: u64, offset: u64| StageRequest {
        op: OpId(op),
        handle: h,
        version: 1,
        offset,
        data: Bytes::from_static(b"0123456789"),
    };
    store.stage(append(1, 0)).unwrap();
    store.commit(h, OpId(1)).await.unwrap();
    assert_eq!(store.needs_reopen(), None);

    disk.fail_next_sync(Path::new("/data/wal"));
    store.stage(append(2, 10)).unwrap();
    assert!(store.commit(h, OpId(2)).await.is_err());
    drop(store);
    let stopped = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server stops on its own");
    assert!(
        matches!(stopped, Err(ChunkserverError::NeedsRestart(_))),
        "{stopped:?}"
    );
}
