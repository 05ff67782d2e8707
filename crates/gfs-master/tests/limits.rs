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
            unvouched: false,
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
        ..RegisterRequest::default()
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

/// Sends `report` as one pass of heartbeat pieces of at most `budget` bytes (as a chunkserver
/// does), leaving out the pieces `skip` names; returns how many pieces the pass had.
async fn send_pass(
    c: &mut MasterControlClient<tonic::transport::Channel>,
    id: &str,
    report_id: u64,
    report: Vec<ChunkInfo>,
    budget: usize,
    skip: &[u32],
) -> usize {
    let full = HeartbeatRequest {
        id: id.into(),
        used_bytes: 1 << 40,
        chunks: report,
        report_id,
        ..HeartbeatRequest::default()
    };
    let pieces = gfs_proto::report::heartbeat_pieces(full, budget);
    let n = pieces.len();
    for p in pieces {
        assert!(prost::Message::encoded_len(&p) <= budget);
        if skip.contains(&p.piece) {
            continue;
        }
        let reply = c.heartbeat(p).await.unwrap().into_inner();
        assert!(!reply.reregister);
    }
    n
}

/// A server holding 1,000,000 replicas (22 MB of report, past even the 16 MiB limit) reports
/// them in 1 MiB pieces. The master keeps every replica it has not heard yet while a pass is
/// under way, drops none after a pass that missed a piece, and drops exactly the replicas a
/// whole pass no longer names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_a_million_replicas_goes_in_pieces_and_keeps_full_report_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let m = master(dir.path()).await;
    let addr = m.addr.to_string();
    let mut c = MasterControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    register(&mut c, "huge").await;
    let all = replicas(1_000_000, 1);
    let budget = gfs_proto::report::REPORT_PIECE_BYTES;
    let n = send_pass(&mut c, "huge", 1, all.clone(), budget, &[]).await;
    assert!(n > 16, "{n} pieces");
    assert_eq!(chunks_of(&addr, "huge").await, (1_000_000, "alive".into()));

    // The first 100,000 replicas are gone, and 5,000 new ones arrive.
    let mut next: Vec<ChunkInfo> = all[100_000..].to_vec();
    next.extend(replicas(5_000, 2_000_000));
    // A pass that loses its second piece adds the new replicas and drops nothing.
    send_pass(&mut c, "huge", 2, next.clone(), budget, &[1]).await;
    assert_eq!(chunks_of(&addr, "huge").await, (1_005_000, "alive".into()));
    // Half a pass: nothing dropped yet.
    let half: Vec<ChunkInfo> = next[..450_000].to_vec();
    let mut first = HeartbeatRequest {
        id: "huge".into(),
        chunks: half,
        report_id: 3,
        ..HeartbeatRequest::default()
    };
    first.more = true;
    for mut p in gfs_proto::report::heartbeat_pieces(first, budget) {
        p.more = true;
        c.heartbeat(p).await.unwrap();
    }
    assert_eq!(chunks_of(&addr, "huge").await, (1_005_000, "alive".into()));
    // A whole pass drops exactly the replicas it does not name.
    send_pass(&mut c, "huge", 4, next, budget, &[]).await;
    assert_eq!(chunks_of(&addr, "huge").await, (905_000, "alive".into()));
    m.shutdown_token().cancel();
    m.wait().await.unwrap();
}
