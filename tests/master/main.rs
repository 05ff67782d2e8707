//! End-to-end tests of the write path through a real `gfs-master` process.
//!
//! One file per theme (`t10_*` ...); the helpers they share are below.

#![allow(clippy::unwrap_used, missing_docs)]

mod t10_write_path;
mod t20_orphans;
mod t30_master_restart;
mod t40_cluster_values;
mod t50_failover;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig};
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::{
    AppendChunkRequest, ChunkLease, ChunkLocation, CreateFileRequest, GetChunksRequest, ListRequest,
};
use gfs_testkit::fixture::{Server, append, check_promise, record};
use gfs_testkit::master_proc::MasterProc;
use gfs_testkit::{Appenders, History, RecordId, Workload};
use tonic::transport::Channel;

/// The paths of the entries of directory `path`, as the master lists them.
async fn listed(m: &mut MasterClient<Channel>, path: &str) -> Vec<String> {
    let r = m.list(ListRequest { path: path.into() }).await.unwrap();
    r.into_inner().entries.into_iter().map(|e| e.path).collect()
}

/// The chunks of file `path` (its first page), as the master lists them.
async fn chunks_of(m: &mut MasterClient<Channel>, path: &str) -> Vec<ChunkLocation> {
    let r = m.get_chunks(GetChunksRequest {
        path: path.into(),
        ..GetChunksRequest::default()
    });
    r.await.unwrap().into_inner().chunks
}

/// A master, three chunkservers registered with it, a client, and the file `path`.
async fn cluster(
    dir: &Path,
    master_args: &[&str],
    path: &str,
) -> (MasterProc, Vec<Server>, MasterClient<Channel>) {
    let master = MasterProc::start_with(&dir.join("master"), "127.0.0.1:0", master_args);
    let servers = Server::with_master(dir, 3, &master.addr);
    // All three before the chunk is made: with two it would get two replicas.
    let c = Client::connect(&master.addr).await.unwrap();
    gfs_testkit::fixture::registered(&c, 3).await;
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    m.create(CreateFileRequest {
        path: path.into(),
        replication: 0,
        first_chunk: false,
    })
    .await
    .unwrap();
    (master, servers, m)
}

/// The chunk of lease `l` as data-plane requests name it, with the lease's token.
fn chunk_of(l: &ChunkLease) -> gfs_dataplane::ChunkRef {
    gfs_dataplane::ChunkRef::new(l.handle, l.version, l.token.clone())
}

/// A data-plane connection to the primary a lease names.
async fn primary_of(l: &ChunkLease) -> gfs_dataplane::DataClient {
    let addr = &l
        .primary
        .as_ref()
        .expect("a lease names its primary")
        .data_addr;
    gfs_dataplane::DataClient::connect(addr, gfs_dataplane::ClientConfig::default())
        .await
        .unwrap()
}

/// Checks that the master lists three replicas of the first chunk of `path` (within 20 s:
/// after a master restart, each server's report brings its replica back) and that every one
/// reads back `want` byte for byte (a secondary may show it a moment after the append's
/// reply, until the primary's next message tells it what a quorum holds).
async fn replicas_hold(m: &mut MasterClient<Channel>, path: &str, l: &ChunkLease, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let chunks = loop {
        let chunks = chunks_of(m, path).await;
        assert_eq!(chunks[0].handle, l.handle);
        if chunks[0].replicas.len() == 3 {
            break chunks;
        }
        assert!(
            Instant::now() < deadline,
            "{} replicas listed",
            chunks[0].replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for r in &chunks[0].replicas {
        let c = gfs_dataplane::DataClient::connect(
            &r.data_addr,
            gfs_dataplane::ClientConfig::default(),
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = c.read(&chunk_of(l), 0, want.len() as u32).await.unwrap();
            if got.len() == want.len() {
                assert_eq!(&got[..], want, "replica {} differs", r.id);
                break;
            }
            assert!(Instant::now() < deadline, "replica {} stays short", r.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn lease(m: &mut MasterClient<Channel>, path: &str) -> ChunkLease {
    // Until enough chunkservers registered (or old leases ran out), the master says UNAVAILABLE.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match m
            .append_chunk(AppendChunkRequest { path: path.into() })
            .await
        {
            Ok(l) => return l.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("append_chunk: {s}"),
        }
    }
}

/// A library client of the master at `addr` that retries through failures for `deadline`.
async fn patient(addr: &str, deadline: Duration) -> Client {
    let cfg = ClientConfig {
        op_deadline: deadline,
        ..ClientConfig::default()
    };
    Client::connect_with(addr, cfg).await.unwrap()
}

/// The servers the master lists as alive (`Admin.Report`).
async fn alive_servers(master: &str) -> Vec<String> {
    let mut admin = gfs_proto::v1::admin_client::AdminClient::connect(format!("http://{master}"))
        .await
        .unwrap();
    let report = admin
        .report(gfs_proto::v1::ReportRequest {})
        .await
        .unwrap()
        .into_inner();
    report
        .servers
        .into_iter()
        .filter(|s| s.state == "alive")
        .map(|s| s.id)
        .collect()
}

/// The length of record `id` here: small (1 to 3 KB).
fn tracked_len(id: RecordId) -> usize {
    1_000 + (id.writer as usize * 7 + id.seq as usize * 13) % 2_000
}

/// Record `n` of writer `w`, self-describing for the history checker.
fn tracked(w: u32, n: u32) -> (RecordId, bytes::Bytes) {
    let id = RecordId { writer: w, seq: n };
    (id, gfs_testkit::record(id, tracked_len(id)))
}

/// Appends `tracked(w, n)` to `path` through `c`, noting it in `h`; returns how long it took.
async fn tracked_append(c: &Client, path: &str, h: &mut History, w: u32, n: u32) -> Duration {
    let (id, rec) = tracked(w, n);
    h.sent(id, rec.len());
    let start = Instant::now();
    let off = c.append(path, rec).await.unwrap();
    h.acked(id, off);
    start.elapsed()
}

/// Writers `ws` appending `tracked` records to `path`, 50 ms apart, until stopped.
fn appenders(c: &Client, path: &str, ws: std::ops::Range<u32>) -> Appenders {
    Appenders::start(
        c,
        Workload {
            size: tracked_len,
            pace: Duration::from_millis(50),
            ..Workload::new(path, ws, None)
        },
    )
}
