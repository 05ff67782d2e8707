//! `cargo bench -p gfs-master`: metadata throughput through the durable log, and memory per
//! chunk, with this disk's raw 4 KiB fsync rate measured in the same run.
//!
//! - creates: 16 concurrent clients creating files (each durable before it is answered);
//!   target >= 20,000 creates/s.
//! - the same through a real master over gRPC (tonic clients on loopback), with the 16 clients
//!   in 16 directories and all in one directory: path locks let both run side by side.
//! - stat and list rates on the resulting namespace.
//! - the same 16 clients through three masters replicating the log by Raft (in this process,
//!   gRPC on loopback, each master's log on its own directory of this disk): each create
//!   durable on a majority before it is answered (issue 16: >= 50 % of the single master);
//!   and through three real masters over gRPC, against one master over gRPC: what clients see.
//! - memory: resident bytes per chunk with 1,000,000 synthetic chunks; target <= 150.
//! - the re-replication pass's scan (chunk map joined with three full reports) at that size.
//!
//! `GFS_BENCH_ONLY=single|raft|group` runs one create row for 10 s and nothing else, to
//! profile it: the single master over gRPC, three masters in this process, three over gRPC.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gfs_master::record::{AddChunkOp, CreateOp, Op, PathOp};
use gfs_master::{
    ChunkMap, Master, MasterConfig, MetaConfig, MetaStore, Namespace, Registry, Replica, ServerInfo,
};
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::{CreateFileRequest, MkdirRequest};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn creates(dir: &std::path::Path, clients: u64, window: Duration) -> (f64, Arc<MetaStore>) {
    let store = Arc::new(MetaStore::open(dir, MetaConfig::default()).unwrap());
    create_load(store, clients, window).await
}

/// Creates per second by `clients` concurrent callers of `store`, each in a directory of its
/// own, for `window`.
async fn create_load(
    store: Arc<MetaStore>,
    clients: u64,
    window: Duration,
) -> (f64, Arc<MetaStore>) {
    for c in 0..clients {
        store
            .mutate(Op::Mkdir(PathOp {
                path: format!("/c{c}"),
                mtime_ms: 0,
            }))
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < window {
                store
                    .mutate(Op::Create(CreateOp {
                        path: format!("/c{c}/f{n}"),
                        mtime_ms: 0,
                        replication: 3,
                    }))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total as f64 / start.elapsed().as_secs_f64(), store)
}

/// Creates per second by `clients` concurrent callers of the leader's `MetaStore` in a group of
/// three masters replicating the log by Raft, their directories under `dir`.
async fn replicated_creates(dir: &std::path::Path, clients: u64, window: Duration) -> f64 {
    use gfs_master::raft::Member;
    let addrs: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let member = Member::open(
            gfs_util::disk::OsDisk::shared(),
            &dir.join(format!("m{i}")),
            (i as u64 + 1, &addrs, false),
            Arc::clone(&config),
            gfs_host::Net::os(),
        )
        .await
        .unwrap();
        let (service, token) = (member.service(), stop.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    token.cancelled(),
                )
                .await;
        });
        members.push(member);
    }
    // A leader that takes a mutation: a group just started may elect again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        let leader = members[0]
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .unwrap()
            .current_leader
            .unwrap();
        let store = Arc::new(MetaStore::replicated(
            members[leader as usize - 1].replicated(),
            gfs_util::disk::OsDisk::shared(),
        ));
        let ready = Op::Mkdir(PathOp {
            path: "/ready".into(),
            mtime_ms: 0,
        });
        if store.mutate(ready).await.is_ok() {
            break store;
        }
        assert!(Instant::now() < deadline, "no master leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (rate, _) = create_load(store, clients, window).await;
    for m in members {
        m.raft.shutdown().await.unwrap();
    }
    stop.cancel();
    rate
}

/// Creates per second by `clients` gRPC clients of a master in `dir`; `spread` puts each client
/// in its own directory, otherwise all share one.
async fn grpc_creates(dir: &std::path::Path, clients: u64, spread: bool, window: Duration) -> f64 {
    let master = Master::start(MasterConfig {
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..MasterConfig::default()
    })
    .await
    .unwrap();
    let rate = grpc_load(&master.addr.to_string(), clients, spread, window).await;
    master.shutdown_token().cancel();
    master.wait().await.unwrap();
    rate
}

/// Creates per second by `clients` gRPC clients, each in its own directory, of the leader of
/// three `Master`s replicating their log by Raft (their directories under `dir`).
async fn grpc_group_creates(dir: &std::path::Path, clients: u64, window: Duration) -> f64 {
    let members: Vec<String> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let mut masters = Vec::new();
    for (i, addr) in members.iter().enumerate() {
        masters.push(
            Master::start(MasterConfig {
                listen: addr.clone(),
                http_listen: "127.0.0.1:0".into(),
                data_dir: dir.join(format!("m{i}")),
                raft: Some(gfs_master::RaftSettings {
                    id: i as u64 + 1,
                    members: members.clone(),
                    ..Default::default()
                }),
                ..MasterConfig::default()
            })
            .await
            .unwrap(),
        );
    }
    // A leader that takes a mutation: a group just started may elect again (a master that
    // came up later than the others times out once).
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(m) = masters.iter().find(|m| m.leads()) {
            let url = format!("http://{}", m.addr);
            let ready = MkdirRequest {
                path: "/ready".into(),
                parents: true,
            };
            if let Ok(mut c) = MasterClient::connect(url).await
                && c.mkdir(ready).await.is_ok()
            {
                break m.addr.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no master leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rate = grpc_load(&leader, clients, true, window).await;
    for m in masters {
        m.shutdown_token().cancel();
        m.wait().await.unwrap();
    }
    rate
}

/// Creates per second by `clients` gRPC clients of the master at `addr`, each with its own
/// connection; `spread` puts each client in its own directory, otherwise all share one.
async fn grpc_load(addr: &str, clients: u64, spread: bool, window: Duration) -> f64 {
    let url = format!("http://{addr}");
    let mut m = MasterClient::connect(url.clone()).await.unwrap();
    for c in 0..clients {
        m.mkdir(MkdirRequest {
            path: format!("/c{c}"),
            parents: false,
        })
        .await
        .unwrap();
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        // One connection per client, as separate client processes would have.
        let mut m = MasterClient::connect(url.clone()).await.unwrap();
        let d = if spread { c } else { 0 };
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < window {
                m.create(CreateFileRequest {
                    path: format!("/c{d}/f{c}-{n}"),
                    replication: 0,
                    first_chunk: false,
                })
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let base = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = std::env::var("GFS_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (mut raw, mut cr, mut st, mut ls) = (vec![], vec![], vec![], vec![]);
    let (mut g16, mut g1, mut rep, mut grep) = (vec![], vec![], vec![], vec![]);
    if let Ok(what) = std::env::var("GFS_BENCH_ONLY") {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let w = Duration::from_secs(10);
        let r = match what.as_str() {
            "single" => rt.block_on(grpc_creates(&dir.path().join("g16"), 16, true, w)),
            "raft" => rt.block_on(replicated_creates(&dir.path().join("raft"), 16, w)),
            "group" => rt.block_on(grpc_group_creates(&dir.path().join("graft"), 16, w)),
            _ => panic!("GFS_BENCH_ONLY is single, raft or group, not {what}"),
        };
        println!("{what}: {r:.0} creates/s");
        return;
    }
    for run in 1..=runs {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let before = gfs_storage::probe::fsync_rate(dir.path(), Duration::from_secs(1)).unwrap();
        let (rate, store) = rt.block_on(creates(dir.path(), 16, Duration::from_secs(3)));
        // stat: one caller, paths that exist.
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            let p = format!("/c{}/f{}", n % 16, n % 100);
            rt.block_on(store.read(|ns| ns.stat(&p).map(|_| ())))
                .unwrap()
                .unwrap();
            n += 1;
        }
        let stat_rate = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_secs(1) {
            rt.block_on(store.read(|ns| ns.list("/c0").map(|l| l.len())))
                .unwrap()
                .unwrap();
            n += 1;
        }
        let list_rate = n as f64 / t.elapsed().as_secs_f64();
        drop(store);
        let window = Duration::from_secs(3);
        let spread = rt.block_on(grpc_creates(&dir.path().join("g16"), 16, true, window));
        let shared = rt.block_on(grpc_creates(&dir.path().join("g1"), 16, false, window));
        let replicated = rt.block_on(replicated_creates(&dir.path().join("raft"), 16, window));
        let grpc_replicated =
            rt.block_on(grpc_group_creates(&dir.path().join("graft"), 16, window));
        let after = gfs_storage::probe::fsync_rate(dir.path(), Duration::from_secs(1)).unwrap();
        raw.push(before.max(after));
        println!(
            "run {run}: raw 4K fsync {:.0}/s, creates {rate:.0}/s, gRPC creates {spread:.0}/s (16 dirs) {shared:.0}/s (one dir), 3 masters (Raft) {replicated:.0}/s, over gRPC {grpc_replicated:.0}/s, stat {stat_rate:.0}/s, list(/c0) {list_rate:.0}/s",
            before.max(after)
        );
        rep.push(replicated);
        grep.push(grpc_replicated);
        g16.push(spread);
        g1.push(shared);
        cr.push(rate);
        st.push(stat_rate);
        ls.push(list_rate);
    }
    // Memory: 1,000,000 chunks in 10,000 files.
    let rss0 = rss_bytes();
    let mut ns = Namespace::new();
    for f in 0..10_000u64 {
        let path = format!("/f{f}");
        ns.apply(&Op::Create(CreateOp {
            path: path.clone(),
            mtime_ms: 0,
            replication: 3,
        }))
        .unwrap();
        for c in 0..100u64 {
            ns.apply(&Op::AddChunk(AddChunkOp {
                path: path.clone(),
                handle: f * 100 + c + 1,
                version: 1,
                // As in a real cluster: every chunk names the server its lease went to.
                primary: format!("cs{}", c % 8),
                uncreated: Vec::new(),
                placed: 0,
            }))
            .unwrap();
        }
    }
    let per_chunk = (rss_bytes() - rss0) as f64 / ns.chunk_count() as f64;
    // The scan each re-replication pass makes at this size: the chunk map copied and joined
    // with three servers' reports of every chunk.
    let mut reg = Registry::new(Duration::from_secs(60));
    let now = tokio::time::Instant::now();
    let report: Vec<Replica> = ns
        .chunk_metas()
        .iter()
        .map(|(h, m)| Replica {
            handle: *h,
            version: m.version,
            length: 0,
            sealed: true,
        })
        .collect();
    for id in ["a", "b", "c"] {
        reg.register(
            ServerInfo {
                id: id.into(),
                data_addr: format!("{id}:1"),
                repl_addr: format!("{id}:2"),
                rack: String::new(),
                capacity_bytes: 1 << 40,
                used_bytes: 0,
            },
            now,
        );
        reg.heartbeat_with(id, 0, report.clone(), false, now);
    }
    let mut scan = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let metas = ns.chunk_metas();
        let versions: ChunkMap<gfs_master::Want> =
            metas.iter().map(|(h, m)| (*h, (*m).into())).collect();
        let counts = reg.holder_counts(&versions, &reg.draining());
        assert_eq!(counts.len(), metas.len());
        scan.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let single = median(cr.clone());
    let (g16, grep) = (median(g16), median(grep));
    println!();
    println!("median of {runs} runs");
    println!("raw 4 KiB write+fdatasync     {:>9.0} ops/s", median(raw));
    println!(
        "16 clients creating files     {:>9.0} creates/s (target >= 20000)",
        median(cr)
    );
    println!("  the same over gRPC, 16 dirs  {g16:>9.0} creates/s");
    println!(
        "  the same over gRPC, one dir  {:>9.0} creates/s",
        median(g1)
    );
    let three = median(rep);
    println!(
        "  the same, 3 masters (Raft)   {three:>9.0} creates/s = {:.2} x one master (target >= 0.5)",
        three / single
    );
    println!(
        "  3 masters over gRPC, 16 dirs {grep:>9.0} creates/s = {:.2} x one master over gRPC (what clients see)",
        grep / g16
    );
    println!("stat, one caller              {:>9.0} ops/s", median(st));
    println!("list of a directory           {:>9.0} ops/s", median(ls));
    println!(
        "memory at {} chunks          {per_chunk:>9.1} bytes/chunk (target <= 150)",
        ns.chunk_count()
    );
    println!(
        "re-replication scan, same     {:>9.0} ms per pass (3 servers report every chunk)",
        median(scan)
    );
}
