//! Message sizes: the real master (`Master::start`) takes chunk reports, chunk lists and fsck
//! replies far past tonic's 4 MiB default (finding 8 of the 2026-12-01 review).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gfs_master::{Master, MasterConfig};
use gfs_proto::v1::admin_client::AdminClient;
use gfs_proto::v1::master_control_client::MasterControlClient;
use gfs_proto::v1::{ChunkInfo, HeartbeatRequest, RegisterRequest, ReportRequest};

async fn master(dir: &std::path::Path) -> Master {
    Master::start(MasterConfig {
        listen: "127.0.0.1:0".into(),
        http_listen: String::new(),
        data_dir: dir.join("master"),
        ..MasterConfig::default()
    })
    .await
    .unwrap()
}

/// `n` replicas with random-looking handles (as real handles are: 10-byte varints), sealed at
/// 64 MiB: about 22 bytes each on the wire.
fn replicas(n: u64, seed: u64) -> Vec<ChunkInfo> {
    (0..n)
        .map(|i| ChunkInfo {
            handle: (i + seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | (1 << 63),
            version: 7,
            committed_length: 64 << 20,
            sealed: true,
        })
        .collect()
}

async fn register(c: &mut MasterControlClient<tonic::transport::Channel>, id: &str) {
    c.register(RegisterRequest {
        id: id.into(),
        data_addr: "127.0.0.1:1".into(),
        repl_addr: "127.0.0.1:2".into(),
        rack: String::new(),
        capacity_bytes: 1 << 40,
        used_bytes: 0,
    })
    .await
    .unwrap();
}

/// Replicas the master holds for server `id`, from the Admin report.
async fn chunks_of(addr: &str, id: &str) -> (u64, String) {
    let mut a = AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let r = a.report(ReportRequest {}).await.unwrap().into_inner();
    let s = r.servers.into_iter().find(|s| s.id == id).unwrap();
    (s.chunks, s.state)
}

/// A chunkserver holding 300,000 replicas (about 6.6 MB of report, past tonic's default 4 MiB
/// decode limit) heartbeats in one message: the master takes it and the server stays alive.
#[tokio::test]
async fn a_heartbeat_of_300_000_replicas_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let m = master(dir.path()).await;
    let addr = m.addr.to_string();
    let mut c = MasterControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    register(&mut c, "big").await;
    let report = replicas(300_000, 1);
    let hb = HeartbeatRequest {
        id: "big".into(),
        used_bytes: 1 << 40,
        chunks: report,
        ..HeartbeatRequest::default()
    };
    let reply = tokio::time::timeout(Duration::from_secs(60), c.heartbeat(hb))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(!reply.reregister);
    assert_eq!(chunks_of(&addr, "big").await, (300_000, "alive".into()));
    m.shutdown_token().cancel();
    m.wait().await.unwrap();
}
