//! The write path through the master: creates and appends across master crashes, leases and their extension, lagging replicas, one chunk for concurrent appenders of a new file.

use super::*;

/// A file made with its first chunk (`CreateFileRequest::first_chunk`, one log record for
/// both, issue 17): the reply's lease takes appends at once on all three replicas, a second
/// create of the name is refused, and after kill -9 the restarted master has the file with
/// that chunk from its log, and the appends go on after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_made_with_its_first_chunk_takes_appends_and_survives_a_master_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, servers, mut m) = cluster(dir.path(), &[], "/other").await;
    let made = |path: &str| CreateFileRequest {
        path: path.into(),
        replication: 0,
        first_chunk: true,
    };
    let l = m
        .create(made("/small"))
        .await
        .unwrap()
        .into_inner()
        .first_chunk
        .expect("the first chunk's lease");
    assert_eq!((l.index, l.version, l.file_offset), (0, 1, 0));
    assert_eq!(l.secondaries.len(), 2);
    let primary = primary_of(&l).await;
    let first = record(3, 0);
    assert_eq!(append(&primary, &chunk_of(&l), 1, &first).await.unwrap(), 0);
    let taken = m.create(made("/small")).await.unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken}");
    let chunks = chunks_of(&mut m, "/small").await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].handle, l.handle);
    assert_eq!(chunks[0].replicas.len(), 3);

    master.kill();
    let master = MasterProc::start(&dir.path().join("master"), &master.addr.clone());
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    assert_eq!(listed(&mut m, "/").await, ["/other", "/small"]);
    let chunks = chunks_of(&mut m, "/small").await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].handle, l.handle);
    let l2 = lease(&mut m, "/small").await;
    assert_eq!(l2.handle, l.handle);
    let primary = primary_of(&l2).await;
    let after = b"after the crash";
    let off = append(&primary, &chunk_of(&l2), 2, after).await.unwrap();
    assert_eq!(off, first.len() as u64);
    let want: Vec<u8> = first.iter().chain(after).copied().collect();
    replicas_hold(&mut m, "/small", &l2, &want).await;
    drop(servers);
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
        let off = append(&primary, &chunk_of(&l), i, &data).await.unwrap();
        assert_eq!(off, end);
        end += data.len() as u64;
    }
    // Reads come from the replicas the master lists.
    let want: Vec<u8> = (0..10).flat_map(|i| record(7, i)).collect();
    replicas_hold(&mut m, "/log", &l, &want).await;

    // kill -9 the master; the namespace and the chunk's version come back from its log.
    master.kill();
    let master = MasterProc::start(&dir.path().join("master"), &master.addr.clone());
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let names = listed(&mut m, "/").await;
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
    let off = append(&primary, &chunk_of(&l2), 100, b"after the crash")
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
    append(&primary, &chunk_of(&l), 1, b"before").await.unwrap();
    // One secondary misses the next appends while it is down.
    servers[victim].kill();
    let missed = b"while one replica is down";
    if let Err(e) = append(&primary, &chunk_of(&l), 2, missed).await {
        // The primary reports the dead secondary lagging at once, and the master may bump the
        // version past it (re-granting the lease) while this append is in flight: retry it,
        // same op id, under the lease the master hands out now.
        assert!(
            matches!(e, gfs_dataplane::DataError::LeaseExpired { .. }),
            "{e:?}"
        );
        let now = lease(&mut m, "/f").await;
        append(&primary_of(&now).await, &chunk_of(&now), 2, missed)
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
    let listed = chunks_of(&mut m, "/f").await[0]
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
    let off = append(&p2, &chunk_of(&l2), 3, b"after").await.unwrap();
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
            .append(&chunk_of(&l), op, bytes::Bytes::from_static(b"x"))
            .await;
        assert!(got.is_ok(), "append {op} under the lease: {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Idle past a lease term: the lease runs out (the chunk can then be moved or copied).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = primary
        .append(&chunk_of(&l), op + 1, bytes::Bytes::from_static(b"late"))
        .await;
    assert!(
        matches!(got, Err(gfs_dataplane::DataError::LeaseExpired { .. })),
        "an idle lease was extended: {got:?}"
    );
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
                        first_chunk: false,
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
    let present: gfs_util::collections::HashSet<String> =
        listed(&mut m, "/").await.into_iter().collect();
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
    append(&primary, &chunk_of(&l), 1, b"one").await.unwrap();
    servers[victim].kill();
    // The primary finds the secondary gone, reports it lagging, and the master bumps the
    // version on the other two without waiting for the next lease.
    primary
        .append(&chunk_of(&l), 2, bytes::Bytes::from_static(b"two"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let chunk = loop {
        let c = chunks_of(&mut m, "/g").await.remove(0);
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
    let off = append(&primary, &chunk_of(&l2), 3, b"three").await.unwrap();
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
            first_chunk: false,
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
            first_chunk: false,
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
    let mut seen: gfs_util::collections::HashMap<String, (u64, String)> = Default::default();
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
        let chunks = chunks_of(&mut m, f).await;
        assert_eq!(chunks.len(), 1, "{f}");
        assert_eq!(chunks[0].handle, seen[f].0);
    }
    let other = listed(&mut m, "/other").await;
    assert_eq!(other.len(), 20);
    assert!(other.iter().all(|p| p.starts_with("/other/y")));
    drop(servers);
}
