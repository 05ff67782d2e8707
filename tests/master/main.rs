//! End-to-end tests of the write path through a real `gfs-master` process.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

use gfs_testkit::fixture;
use gfs_testkit::master_proc;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fixture::{Server, append, check_promise, record};
use gfs_client::{Client, ClientConfig};
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::{
    AppendChunkRequest, ChunkLease, CreateFileRequest, GetChunksRequest, ListRequest,
};
use gfs_testkit::{History, RecordId};
use master_proc::MasterProc;
use tonic::transport::Channel;

/// A master, three chunkservers registered with it, a client, and the file `path`.
async fn cluster(
    dir: &Path,
    master_args: &[&str],
    path: &str,
) -> (MasterProc, Vec<Server>, MasterClient<Channel>) {
    let master = MasterProc::start_with(&dir.join("master"), "127.0.0.1:0", master_args);
    let servers = Server::with_master(dir, 3, &master.addr);
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    m.create(CreateFileRequest {
        path: path.into(),
        replication: 0,
    })
    .await
    .unwrap();
    (master, servers, m)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_path_through_the_master_survives_a_master_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, servers, mut m) = cluster(dir.path(), &[], "/log").await;
    let l = lease(&mut m, "/log").await;
    assert_eq!((l.index, l.chunk_size), (0, 1 << 20));
    assert_eq!(l.secondaries.len(), 2);
    assert_eq!(
        l.version, 1,
        "the first lease, granted with the allocation, is at the creation version"
    );
    let primary = primary_of(&l).await;
    let mut end = 0;
    for i in 0..10 {
        let data = record(7, i);
        let off = append(&primary, l.handle, l.version, i, &data)
            .await
            .unwrap();
        assert_eq!(off, end);
        end += data.len() as u64;
    }
    // Reads come from the replicas the master lists.
    let chunks = m
        .get_chunks(GetChunksRequest {
            path: "/log".into(),
            ..GetChunksRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chunks.chunks.len(), 1);
    assert_eq!(chunks.chunks[0].replicas.len(), 3);
    for r in &chunks.chunks[0].replicas {
        let c = gfs_dataplane::DataClient::connect(
            &r.data_addr,
            gfs_dataplane::ClientConfig::default(),
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = c.read(l.handle, l.version, 0, end as u32).await.unwrap();
            if got.len() as u64 == end {
                let want: Vec<u8> = (0..10).flat_map(|i| record(7, i)).collect();
                assert_eq!(&got[..], &want[..], "replica {} differs", r.id);
                break;
            }
            assert!(Instant::now() < deadline, "replica {} stays short", r.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // kill -9 the master; the namespace and the chunk's version come back from its log.
    master.kill();
    let master = MasterProc::start(&dir.path().join("master"), &master.addr.clone());
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let names: Vec<String> = m
        .list(ListRequest { path: "/".into() })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["/log"]);
    // The primary reported its lease as it registered again: if still in force, it is
    // adopted as it is (same primary, same version); if it ran out meanwhile, the new lease
    // bumps the version. Appends continue at the committed length either way.
    let l2 = lease(&mut m, "/log").await;
    assert_eq!(l2.handle, l.handle);
    let same = l2.version == l.version;
    assert!(same || l2.version == 2, "version {}", l2.version);
    if same {
        assert_eq!(l2.primary, l.primary, "an adopted lease changed primary");
    }
    let primary = primary_of(&l2).await;
    let off = append(&primary, l2.handle, l2.version, 100, b"after the crash")
        .await
        .unwrap();
    assert_eq!(off, end);
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_appends_is_left_stale_by_the_next_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, mut servers, mut m) = cluster(dir.path(), &[], "/f").await;
    let l = lease(&mut m, "/f").await;
    let primary_id = l.primary.as_ref().unwrap().id.clone();
    let victim = servers.iter().position(|s| s.id != primary_id).unwrap();
    let primary = primary_of(&l).await;
    append(&primary, l.handle, l.version, 1, b"before")
        .await
        .unwrap();
    // One secondary misses the next appends while it is down.
    servers[victim].kill();
    let missed = b"while one replica is down";
    if let Err(e) = append(&primary, l.handle, l.version, 2, missed).await {
        // The primary reports the dead secondary lagging at once, and the master may bump the
        // version past it (re-granting the lease) while this append is in flight: retry it,
        // same op id, under the lease the master hands out now.
        assert!(
            matches!(e, gfs_dataplane::DataError::LeaseExpired { .. }),
            "{e:?}"
        );
        let now = lease(&mut m, "/f").await;
        append(&primary_of(&now).await, now.handle, now.version, 2, missed)
            .await
            .unwrap();
    }
    servers[victim].restart(&[]);
    // The old lease (2 s) runs out; the next one bumps only the replicas with the longest prefix.
    let deadline = Instant::now() + Duration::from_secs(20);
    let l2 = loop {
        let l2 = lease(&mut m, "/f").await;
        if l2.version > l.version {
            break l2;
        }
        assert!(Instant::now() < deadline, "no new lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let victim_id = servers[victim].id.clone();
    let chosen: Vec<String> = std::iter::once(l2.primary.clone().unwrap())
        .chain(l2.secondaries.clone())
        .map(|r| r.id)
        .collect();
    assert_eq!(chosen.len(), 2, "{chosen:?}");
    assert!(
        !chosen.contains(&victim_id),
        "the stale replica got the new version: {chosen:?}"
    );
    let listed = m
        .get_chunks(GetChunksRequest {
            path: "/f".into(),
            ..GetChunksRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .chunks[0]
        .replicas
        .iter()
        .map(|r| r.id.clone())
        .collect::<Vec<_>>();
    assert!(
        !listed.contains(&victim_id),
        "a stale replica is listed for reads: {listed:?}"
    );
    // Appends continue on the up-to-date pair.
    let p2 = primary_of(&l2).await;
    let off = append(&p2, l2.handle, l2.version, 3, b"after")
        .await
        .unwrap();
    assert_eq!(off, 6 + 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_extend_the_lease_of_a_writing_primary_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, _servers, mut m) =
        cluster(dir.path(), &["--heartbeat-interval", "200ms"], "/x").await;
    let l = lease(&mut m, "/x").await;
    let primary = primary_of(&l).await;
    // Appending for well past the 2 s the lease was granted for: it is extended throughout.
    let start = Instant::now();
    let mut op = 0;
    while start.elapsed() < Duration::from_secs(3) {
        op += 1;
        let got = primary
            .append(l.handle, l.version, op, bytes::Bytes::from_static(b"x"))
            .await;
        assert!(got.is_ok(), "append {op} under the lease: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Idle past a lease term: the lease runs out (the chunk can then be moved or copied).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = primary
        .append(
            l.handle,
            l.version,
            op + 1,
            bytes::Bytes::from_static(b"late"),
        )
        .await;
    assert!(
        matches!(got, Err(gfs_dataplane::DataError::LeaseExpired { .. })),
        "an idle lease was extended: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_replicas_are_deleted_after_the_grace_period_and_real_ones_stay() {
    use gfs_proto::v1::{CreateChunkRequest, ReportChunksRequest};

    let dir = tempfile::tempdir().unwrap();
    let (_master, servers, mut m) = cluster(
        dir.path(),
        &["--heartbeat-interval", "200ms", "--orphan-grace", "1s"],
        "/kept",
    )
    .await;
    let l = lease(&mut m, "/kept").await;
    // A replica the master never allocated (as a half-done allocation would leave).
    let mut ctl = gfs_bins::control_client(&servers[0].repl).await.unwrap();
    ctl.create_chunk(CreateChunkRequest {
        handle: 424_242,
        version: 1,
    })
    .await
    .unwrap();
    let handles = |r: gfs_proto::v1::ReportChunksReply| {
        r.chunks.into_iter().map(|c| c.handle).collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = handles(
            ctl.report_chunks(ReportChunksRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
        if !have.contains(&424_242) {
            assert!(
                have.contains(&l.handle),
                "the real chunk was deleted too: {have:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the real chunk still works.
    let primary = primary_of(&l).await;
    append(&primary, l.handle, l.version, 1, b"still here")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_during_creates_loses_no_acknowledged_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("master.toml");
    // Small checkpoints: recovery crosses checkpoint + log, not just log.
    std::fs::write(&cfg, "checkpoint_every = 50\n").unwrap();
    let meta = dir.path().join("master");
    let mut acked: Vec<String> = Vec::new();
    for round in 0..3u32 {
        let mut master =
            MasterProc::start_with(&meta, "127.0.0.1:0", &["--config", cfg.to_str().unwrap()]);
        let addr = master.addr.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..8u32 {
            let (addr, stop) = (addr.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut m = MasterClient::connect(format!("http://{addr}"))
                    .await
                    .unwrap();
                let mut ok = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = format!("/r{round}-w{w}-{i}");
                    let req = CreateFileRequest {
                        path: path.clone(),
                        replication: 0,
                    };
                    match m.create(req).await {
                        Ok(_) => ok.push(path),
                        Err(_) => break, // the master is gone
                    }
                    i += 1;
                }
                ok
            }));
        }
        tokio::time::sleep(Duration::from_millis(400 + 300 * u64::from(round))).await;
        master.kill(); // SIGKILL, mid-stream
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
    }
    let master = MasterProc::start(&meta, "127.0.0.1:0");
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let present: std::collections::HashSet<String> = m
        .list(ListRequest { path: "/".into() })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(
        acked.len() > 200,
        "too few creates ({}) to prove anything",
        acked.len()
    );
    for p in &acked {
        assert!(present.contains(p), "acknowledged create {p} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_report_bumps_the_good_replicas_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, mut servers, mut m) =
        cluster(dir.path(), &["--heartbeat-interval", "200ms"], "/g").await;
    let l = lease(&mut m, "/g").await;
    let primary_id = l.primary.as_ref().unwrap().id.clone();
    let victim = servers.iter().position(|s| s.id != primary_id).unwrap();
    let victim_id = servers[victim].id.clone();
    let primary = primary_of(&l).await;
    append(&primary, l.handle, l.version, 1, b"one")
        .await
        .unwrap();
    servers[victim].kill();
    // The primary finds the secondary gone, reports it lagging, and the master bumps the
    // version on the other two without waiting for the next lease.
    primary
        .append(l.handle, l.version, 2, bytes::Bytes::from_static(b"two"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let chunk = loop {
        let c = m
            .get_chunks(GetChunksRequest {
                path: "/g".into(),
                ..GetChunksRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .chunks
            .remove(0);
        if c.version > l.version {
            break c;
        }
        assert!(Instant::now() < deadline, "the version was never bumped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<String> = chunk.replicas.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        !ids.contains(&victim_id),
        "the lagging replica kept the version: {ids:?}"
    );
    // The primary kept its role at the new version: the client learns it from the master.
    let l2 = lease(&mut m, "/g").await;
    assert_eq!(l2.primary.as_ref().unwrap().id, primary_id);
    let off = append(&primary, l2.handle, l2.version, 3, b"three")
        .await
        .unwrap();
    assert_eq!(off, 6);
}

/// Many clients ask where to append to the same new files at once, while other files are
/// created and renamed beside them: each file gets exactly one chunk, and every client of a
/// file is sent to the same chunk and primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_of_a_new_file_share_one_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (_master, servers, mut m) = cluster(dir.path(), &[], "/warm").await;
    // Wait until the chunkservers registered.
    lease(&mut m, "/warm").await;
    let files: Vec<String> = (0..6).map(|i| format!("/d{}/f", i % 2)).collect();
    for d in ["/d0", "/d1", "/other"] {
        m.mkdir(gfs_proto::v1::MkdirRequest {
            path: d.into(),
            parents: false,
        })
        .await
        .unwrap();
    }
    let files: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| format!("{f}{i}"))
        .collect();
    for f in &files {
        m.create(CreateFileRequest {
            path: f.clone(),
            replication: 0,
        })
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for f in &files {
        for _ in 0..4 {
            let (mut m, f) = (m.clone(), f.clone());
            tasks.push(tokio::spawn(async move {
                let l = lease(&mut m, &f).await;
                (f, l.handle, l.primary.unwrap().id)
            }));
        }
    }
    // Namespace traffic elsewhere at the same time.
    for i in 0..20 {
        let p = format!("/other/x{i}");
        m.create(CreateFileRequest {
            path: p.clone(),
            replication: 0,
        })
        .await
        .unwrap();
        m.rename(gfs_proto::v1::RenameRequest {
            src: p,
            dst: format!("/other/y{i}"),
        })
        .await
        .unwrap();
    }
    let mut seen: std::collections::HashMap<String, (u64, String)> = Default::default();
    for t in tasks {
        let (f, handle, primary) = t.await.unwrap();
        let first = seen.entry(f.clone()).or_insert((handle, primary.clone()));
        assert_eq!(
            *first,
            (handle, primary),
            "{f}: two chunks or two primaries"
        );
    }
    for f in &files {
        let chunks = m
            .get_chunks(GetChunksRequest {
                path: f.clone(),
                ..GetChunksRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(chunks.chunks.len(), 1, "{f}");
        assert_eq!(chunks.chunks[0].handle, seen[f].0);
    }
    let listed = m
        .list(ListRequest {
            path: "/other".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(listed.len(), 20);
    assert!(listed.iter().all(|e| e.path.starts_with("/other/y")));
    drop(servers);
}

/// A library client of the master at `addr` that retries through failures for `deadline`.
async fn patient(addr: &str, deadline: Duration) -> Client {
    let cfg = ClientConfig {
        op_deadline: deadline,
        ..ClientConfig::default()
    };
    Client::connect_with(addr, cfg).await.unwrap()
}

/// Record `n` of writer `w`, self-describing for the history checker; small (1 to 3 KB).
fn tracked(w: u32, n: u32) -> (RecordId, bytes::Bytes) {
    let id = RecordId { writer: w, seq: n };
    let len = 1_000 + (w as usize * 7 + n as usize * 13) % 2_000;
    (id, gfs_testkit::record(id, len))
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

/// Writers `ws`, each appending its records to `path` one after another (50 ms apart) until
/// `stop`; `acked` counts the acknowledged ones. Each returns its history.
fn appenders(
    c: &Client,
    path: &str,
    ws: std::ops::Range<u32>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<History>> {
    ws.map(|w| {
        let (c, path) = (c.clone(), path.to_string());
        let (stop, acked) = (Arc::clone(stop), Arc::clone(acked));
        tokio::spawn(async move {
            let mut h = History::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                tracked_append(&c, &path, &mut h, w, n).await;
                acked.fetch_add(1, Ordering::SeqCst);
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            h
        })
    })
    .collect()
}

/// Waits until `acked` reaches `n`.
async fn until_acked(acked: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "appends did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the appenders and merges their histories into `h`.
async fn stop_appenders(
    stop: &AtomicBool,
    writers: Vec<tokio::task::JoinHandle<History>>,
    h: &mut History,
) {
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        h.merge(w.await.unwrap());
    }
}

/// Issue 12, part 3: kill -9 of the master under appends to an existing file, restarted on
/// its directory and port: a new appender (no cached lease, as a new `gfs append` process
/// would be) gets in within seconds, because the primary reported its lease when it
/// registered again and the master adopted it. Before, the master refused any lease on the
/// file's chunk for one lease period after its start (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_an_existing_file_resume_within_seconds_of_a_master_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--lease", "30s"];
    let mut master = MasterProc::start_with(&dir.path().join("master"), "127.0.0.1:0", &args);
    let mut servers = Server::with_master(dir.path(), 3, &master.addr);
    let c = patient(&master.addr, Duration::from_secs(120)).await;
    c.create("/f").await.unwrap();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let writers = appenders(&c, "/f", 0..2, &stop, &acked);
    until_acked(&acked, 20).await;
    let addr = master.addr.clone();
    master.kill();
    let master = MasterProc::start_with(&dir.path().join("master"), &addr, &args);
    let restarted = Instant::now();
    let fresh = patient(&master.addr, Duration::from_secs(120)).await;
    let mut h = History::new();
    tracked_append(&fresh, "/f", &mut h, 9, 0).await;
    let took = restarted.elapsed();
    println!("a new client's first append {took:?} after the master restarted (lease 30 s)");
    until_acked(&acked, acked.load(Ordering::SeqCst) + 10).await;
    stop_appenders(&stop, writers, &mut h).await;
    assert!(
        took < Duration::from_secs(5),
        "the first append after the restart took {took:?}"
    );
    check_promise(&fresh, "/f", &h, &mut servers).await;
}

/// Issue 12, part 3, safety (I5): a master restarted while the primary of a chunk is alive
/// and holding its lease never grants a second primary: the lease is adopted as it is (same
/// primary, same version, no bump) and the appends going on keep exactly-once. A chunk whose
/// last primary is down at the restart (it cannot report) gets no lease before one lease
/// period after the master started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_adopts_a_live_lease_and_waits_out_a_silent_primary() {
    let lease_period = Duration::from_secs(10);
    let args = ["--lease", "10s", "--dead-after", "2s"];
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start_with(&dir.path().join("master"), "127.0.0.1:0", &args);
    let mut servers = Server::with_master(dir.path(), 4, &master.addr);
    let c = patient(&master.addr, Duration::from_secs(120)).await;
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let id = |l: &ChunkLease| l.primary.as_ref().unwrap().id.clone();
    // A chunk whose primary then dies: it cannot report its leases to the restarted master.
    let silent_path = "/silent";
    c.create(silent_path).await.unwrap();
    let silent_lease = lease(&mut m, silent_path).await;
    let victim = servers
        .iter()
        .position(|s| s.id == id(&silent_lease))
        .unwrap();
    servers[victim].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = c.report().await.unwrap();
        let state = report
            .servers
            .iter()
            .find(|s| s.id == servers[victim].id)
            .map(|s| s.state.clone());
        if state.as_deref() == Some("dead") {
            break;
        }
        assert!(Instant::now() < deadline, "the victim is still {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A file written by the three others throughout the restart.
    c.create("/live").await.unwrap();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let writers = appenders(&c, "/live", 0..2, &stop, &acked);
    until_acked(&acked, 10).await;
    // /live's lease as its appenders use it, right before the crash.
    let live = lease(&mut m, "/live").await;
    assert!(
        std::iter::once(id(&live))
            .chain(live.secondaries.iter().map(|r| r.id.clone()))
            .all(|h| h != servers[victim].id)
    );
    let addr = master.addr.clone();
    master.kill();
    let spawned = Instant::now();
    let master = MasterProc::start_with(&dir.path().join("master"), &addr, &args);
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let adopted = lease(&mut m, "/live").await;
    assert_eq!(
        (adopted.handle, adopted.version, id(&adopted)),
        (live.handle, live.version, id(&live)),
        "the live primary's lease was not adopted as it is"
    );
    println!(
        "/live's lease adopted {:?} after the restart",
        spawned.elapsed()
    );
    // The silent primary's chunk: refused until one lease period after the master started
    // (it started after `spawned`), then leased elsewhere at a new version.
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        match m
            .append_chunk(AppendChunkRequest {
                path: silent_path.into(),
            })
            .await
        {
            Ok(l) => break l.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                assert!(Instant::now() < deadline, "never leased again: {s}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("append_chunk: {s}"),
        }
    };
    let waited = spawned.elapsed();
    println!("the silent primary's chunk leased again {waited:?} after the restart");
    assert!(
        waited >= lease_period,
        "a lease was granted {waited:?} after the restart, inside the silent primary's lease period"
    );
    assert_eq!(next.handle, silent_lease.handle);
    assert!(next.version > silent_lease.version);
    assert_ne!(id(&next), id(&silent_lease));
    until_acked(&acked, acked.load(Ordering::SeqCst) + 10).await;
    let mut h = History::new();
    stop_appenders(&stop, writers, &mut h).await;
    check_promise(&c, "/live", &h, &mut servers).await;
}

/// Issue 12, part 3: the library treats an unreachable master like any other transient
/// failure: an append that needs the master while it is down retries, and succeeds once the
/// master is back, within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_append_issued_while_the_master_is_down_succeeds_once_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let mut servers = Server::with_master(dir.path(), 3, &master.addr);
    let c = patient(&master.addr, Duration::from_secs(60)).await;
    c.create("/f").await.unwrap();
    let mut h = History::new();
    tracked_append(&c, "/f", &mut h, 0, 0).await;
    // No cached lease: the next append must ask the master.
    let c = patient(&master.addr, Duration::from_secs(60)).await;
    let addr = master.addr.clone();
    master.kill();
    let pending = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut h = History::new();
            tracked_append(&c, "/f", &mut h, 1, 0).await;
            h
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "an append finished with the master down"
    );
    let _master = MasterProc::start(&dir.path().join("master"), &addr);
    h.merge(pending.await.unwrap());
    check_promise(&c, "/f", &h, &mut servers).await;
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

/// A `gfs-chunkserver` registering with `master`, with `chunk_size`, its stderr collected.
fn chunkserver(
    dir: &Path,
    id: &str,
    chunk_size: &str,
    master: &str,
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_gfs-chunkserver"))
        .args(["-p", "0", "-r", "0", "--http-port", "0", "-h", "127.0.0.1"])
        .args(["-id", id, "--chunk-size", chunk_size, "--master", master])
        .arg("-d")
        .arg(dir.join(id))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    (child, err)
}

/// Waits for `child` to exit on its own within `within`; its exit status and stderr.
async fn exits_within(
    mut child: std::process::Child,
    err: std::thread::JoinHandle<String>,
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the chunkserver still runs after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = err.join().unwrap();
    eprint!("{err}");
    (status, err)
}

/// Waits (15 s at most) until the chunkserver `child` exits: non-zero, by itself (not by a
/// signal, not by a panic), with `line` on its stderr.
async fn refused(child: std::process::Child, err: std::thread::JoinHandle<String>, line: &str) {
    let (status, err) = exits_within(child, err, Duration::from_secs(15)).await;
    assert!(!status.success(), "{status}");
    assert!(
        status.code().is_some(),
        "exits, not killed by a signal: {status}"
    );
    assert!(err.contains(line), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
}

/// The one line a chunkserver with `ours` prints when the master at `master` runs `theirs`.
fn mismatch_line(ours: u64, master: &str, theirs: u64) -> String {
    format!(
        "gfs-chunkserver: error: chunk_size {ours} in this chunkserver's config, the master at \
         {master} runs with {theirs}: set chunk_size (or --chunk-size) in the chunkserver's \
         config to match"
    )
}

/// Issue 13, item 4: the chunk size and quorum come from the master. A chunkserver configured
/// with another chunk size than the master's (1 MiB here) refuses to serve: it exits non-zero
/// within seconds with one line naming both values, and the master never lists it as alive;
/// one with the master's values registers and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunkserver_with_another_chunk_size_than_the_master_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let (child, err) = chunkserver(dir.path(), "wrong", "4MiB", &master.addr);
    refused(child, err, &mismatch_line(4 << 20, &master.addr, 1 << 20)).await;
    assert!(alive_servers(&master.addr).await.is_empty());

    // The master's values: it registers and stays up.
    let good = Server::with_master(dir.path(), 1, &master.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive_servers(&master.addr).await != ["cs0"] {
        assert!(Instant::now() < deadline, "cs0 never listed as alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(alive_servers(&master.addr).await, ["cs0"]);
    assert!(good[0].is_running());
}

/// Issue 13, item 4: a serving chunkserver checks again when it registers with a restarted
/// master, and stops (non-zero, the same line) when that master runs with another chunk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_chunkserver_stops_when_a_restarted_master_runs_another_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start(&dir.path().join("master"), "127.0.0.1:0");
    let addr = master.addr.clone();
    let (child, err) = chunkserver(dir.path(), "cs", "1MiB", &addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive_servers(&addr).await != ["cs"] {
        assert!(Instant::now() < deadline, "cs never listed as alive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    master.kill();
    let _master = MasterProc::start_with(
        &dir.path().join("master2"),
        &addr,
        &["--chunk-size", "2MiB"],
    );
    refused(child, err, &mismatch_line(1 << 20, &addr, 2 << 20)).await;
    assert!(alive_servers(&addr).await.is_empty());
}
