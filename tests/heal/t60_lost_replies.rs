//! Lost replies and frozen servers (the findings of the 2026-12-01 review): never a duplicate, never an acknowledged record on one copy, never a replica counted without the appends.

use super::*;

/// The review's finding 3 as a user met it: acknowledgements lost (the append is durable,
/// its client hears a failure) on three in ten appends, with records near a quarter chunk so
/// that chunks seal every few records and retries race the seals. Every record is in the file
/// exactly once, at the offset its writer was finally given; none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_never_duplicate_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let mut servers = Server::with_master_env(dir.path(), 3, &master.addr, |_| {
        vec![("GFS_FAILPOINTS", "append-reply-lost:30")]
    });
    let c = patient(&master, Duration::from_secs(90)).await;
    c.create("/acks").await.unwrap();
    let h = Appenders::start(
        &c,
        Workload {
            size: |id| 150_000 + (id.writer as usize * 37 + id.seq as usize * 101) % 100_000,
            ..Workload::new("/acks", 0..6, Some(12))
        },
    )
    .join()
    .await;
    let chunks = c.refresh("/acks").await.unwrap().chunks.len();
    assert!(
        chunks >= 10,
        "only {chunks} chunks: seals were not exercised"
    );
    check_promise(&c, "/acks", &h, &mut servers).await;
}

/// Finding 2: secondaries that miss COMMITs (the message lost after READY) must never leave a
/// primary-only tail that is then sealed and acknowledged with one copy, nor stall the file
/// while every server is up. Every append succeeds within its deadline; right after the run,
/// before any repair (re-replication is off), every acknowledged record is on a quorum of
/// current replicas (I2) and nothing is in the file twice; after healing, the whole promise
/// holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_commits_never_leave_an_acknowledged_record_on_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--max-clones", "0"],
    );
    let mut servers = Server::with_master_env(dir.path(), 3, &master.addr, |_| {
        vec![("GFS_FAILPOINTS", "commit-lost:15")]
    });
    let c = patient(&master, Duration::from_secs(60)).await;
    c.create("/wedged").await.unwrap();
    let h = Appenders::start(
        &c,
        Workload {
            size: |id| 100_000 + (id.writer as usize * 37 + id.seq as usize * 101) % 100_000,
            must_succeed: false,
            ..Workload::new("/wedged", 0..4, Some(10))
        },
    )
    .join()
    .await;
    // Every server stays up: each append must succeed within its deadline.
    assert_eq!(
        h.acked.len(),
        h.sent.len(),
        "appends failed with every server up"
    );
    let seen = gfs_testkit::observe(&c, "/wedged").await;
    let dirs: Vec<(String, std::path::PathBuf)> = servers
        .iter_mut()
        .map(|s| {
            s.terminate(Duration::from_secs(10));
            (s.id.clone(), s.dir.clone())
        })
        .collect();
    gfs_testkit::assert_clean(&seen.check_quorum(&h, &dirs, 2));
    healed_then_checked(master, dir.path(), &mut servers, "/wedged", &h).await;
}

/// Finding 6 of the 2026-12-01 review, the unsealed part: a chunkserver whose CreateChunk
/// reply is lost (failpoint `create-reply-lost`) holds the new chunk at version 1, yet the
/// master took the creation as failed. The master must never count a replica that lacks
/// acknowledged appends of an unsealed chunk: every replica it lists holds every acknowledged
/// record of the chunk, and fsck, `stat` and the cluster report call the file healthy only
/// when three servers hold them all. Once the chunk is sealed, all three servers hold it at
/// its sealed length; the history checker finds nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_create_reply_was_lost_is_never_counted_without_the_appends() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    // cs2 creates every chunk it is asked to, and the master never hears that it did.
    let mut servers = Server::with_master_env(dir.path(), 3, &master.addr, |i| {
        if i == 2 {
            vec![("GFS_FAILPOINTS", "create-reply-lost:100")]
        } else {
            Vec::new()
        }
    });
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    c.create("/u").await.unwrap();
    let mut h = History::new();
    // About 180 KB: the chunk stays unsealed.
    let mut end = 0;
    for n in 0..8 {
        let (off, rec) = append(&c, "/u", &mut h, 1, n).await;
        end = end.max(off + rec.len() as u64);
    }
    let chunk = c.refresh("/u").await.unwrap().chunks[0].clone();
    assert_eq!(chunk.sealed_length, None);
    // The failpoint fired: cs2 holds the chunk, and its CreateChunk answered an error.
    let (_, metrics) = http_get(&servers[2].http, "/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with(
            r#"gfs_chunkserver_rpc_requests_total{op="ChunkControl/CreateChunk",outcome="error"}"#
        )),
        "cs2's CreateChunk never failed"
    );
    assert!(
        committed(&servers[2], chunk.handle).await.is_some(),
        "cs2 did not create the chunk"
    );
    counted_right(&c, "/u", 0, end, &servers).await;

    // Records of about a fifth of a chunk fill and seal it; the next chunk is created the
    // same way, cs2's reply lost again.
    let mut n = 0;
    while c.refresh("/u").await.unwrap().chunks.len() < 2 {
        assert!(n < 12, "the first chunk never sealed");
        let id = RecordId { writer: 2, seq: n };
        let rec = gfs_testkit::record(id, 200_000 + n as usize * 1_000);
        h.sent(id, rec.len());
        let off = c.append("/u", rec.clone()).await.unwrap();
        h.acked(id, off);
        n += 1;
    }
    // One more record in the new chunk, then both chunks are checked.
    let id = RecordId { writer: 2, seq: n };
    let rec = gfs_testkit::record(id, 30_000);
    h.sent(id, rec.len());
    let off = c.append("/u", rec.clone()).await.unwrap();
    h.acked(id, off);
    let l = c.refresh("/u").await.unwrap();
    let (first, last) = (l.chunks[0].clone(), l.chunks[1].clone());
    let sealed = first.sealed_length.unwrap();
    assert!(off >= last.file_offset, "the last record is not in chunk 1");
    counted_right(
        &c,
        "/u",
        1,
        off + rec.len() as u64 - last.file_offset,
        &servers,
    )
    .await;
    // The sealed chunk ends with three replicas at its sealed length, and no other.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ch = c.refresh("/u").await.unwrap().chunks[0].clone();
        let mut held = Vec::new();
        for s in &servers {
            held.push(committed(s, first.handle).await);
        }
        let whole = held
            .iter()
            .filter(|r| **r == Some((ch.version, sealed)))
            .count();
        if whole == 3 && ch.replicas.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sealed chunk has {whole} replicas at its sealed length {sealed}, {} listed: {held:?}",
            ch.replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_promise(&c, "/u", &h, &mut servers).await;
}

/// The review's own case of finding 6: a server frozen (SIGSTOP) while a chunk is created on
/// it, so the master's CreateChunk times out, and the creation runs once it is thawed. Appends
/// go on without it meanwhile (with the fix it is a member of the first lease without the
/// chunk: its primary reports it lagging and the master bumps the version past it, which the
/// test waits for, 15 s at most). Thawed, whatever its delayed creation left must never be
/// counted without the appends, and the chunk ends with three whole replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_frozen_while_a_chunk_is_created_is_never_counted_without_the_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 3);
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    c.create("/z").await.unwrap();
    // Frozen before its first chunk exists: the master still counts it alive and places the
    // chunk there; its CreateChunk times out.
    servers[2].signal("STOP");
    let mut h = History::new();
    let mut end = 0;
    let started = Instant::now();
    let mut n = 0;
    // Small records, spaced out: the chunk stays unsealed while the lease goes on.
    loop {
        let id = RecordId { writer: 3, seq: n };
        let rec = gfs_testkit::record(id, 2_000 + n as usize % 500);
        h.sent(id, rec.len());
        let off = c.append("/z", rec.clone()).await.unwrap();
        h.acked(id, off);
        end = end.max(off + rec.len() as u64);
        n += 1;
        let ch = c.refresh("/z").await.unwrap().chunks[0].clone();
        assert_eq!(ch.sealed_length, None);
        if ch.version > 1 || started.elapsed() > Duration::from_secs(15) {
            println!(
                "version {} after {n} appends, {:?}: the frozen server goes on",
                ch.version,
                started.elapsed()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    servers[2].signal("CONT");
    for _ in 0..5 {
        let id = RecordId { writer: 3, seq: n };
        let rec = gfs_testkit::record(id, 2_000);
        h.sent(id, rec.len());
        let off = c.append("/z", rec.clone()).await.unwrap();
        h.acked(id, off);
        end = end.max(off + rec.len() as u64);
        n += 1;
    }
    counted_right(&c, "/z", 0, end, &servers).await;
    check_promise(&c, "/z", &h, &mut servers).await;
}

/// Finding 4: a relegation measured lengths, then bumped, with no fence. A secondary whose
/// COMMIT is slow (applied after the primary gave up on it) is reported lagging while it stays
/// in step; the master bumps the other two, and the primary takes the new version last
/// (failpoint), still appending meanwhile with the lagging one as its quorum. Those appends
/// must not end on the primary alone: right after the run, with repair off, every
/// acknowledged record is on a quorum of current replicas (I2); after healing, the whole
/// promise holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_during_a_relegation_never_end_on_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--max-clones", "0"],
    );
    let mut servers = Server::with_master_env(dir.path(), 3, &master.addr, |_| {
        vec![("GFS_FAILPOINTS", "slow-primary-set-version")]
    });
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    let path = "/relegated";
    c.create(path).await.unwrap();
    let mut h = History::new();
    let first = RecordId { writer: 99, seq: 0 };
    let rec = gfs_testkit::record(first, 1000);
    h.sent(first, rec.len());
    h.acked(first, c.append(path, rec).await.unwrap());
    // Which server is the primary: only it takes an append (the others answer NotPrimary).
    // The lease's token allows appends (a location's allows reads only).
    let (lease, _) = lease_roles(&master, path, &servers).await;
    let chunk = gfs_dataplane::ChunkRef::new(lease.handle, lease.version, lease.token.clone());
    let mut primary = None;
    for (i, s) in servers.iter().enumerate() {
        let id = RecordId {
            writer: 99,
            seq: 1 + i as u32,
        };
        let rec = gfs_testkit::record(id, 1000);
        h.sent(id, rec.len());
        let dc =
            gfs_dataplane::DataClient::connect(&s.data, gfs_dataplane::ClientConfig::default())
                .await
                .unwrap();
        if let Ok(off) = dc.append(&chunk, 1000 + i as u64, rec).await {
            h.acked(id, lease.file_offset + off);
            primary = Some(i);
        }
    }
    let primary = primary.expect("no server took the append as primary");
    // A secondary restarts (no append in flight, so it misses none) to make its first COMMIT
    // slow.
    let lagging = (primary + 1) % 3;
    let ports = servers[lagging].ports();
    servers[lagging].kill();
    servers[lagging] = Server::start_with(
        &dir.path().join(format!("cs{lagging}")),
        &format!("cs{lagging}"),
        Some(ports),
        &[(
            "GFS_FAILPOINTS",
            "slow-primary-set-version,commit-slow:100:1",
        )],
        &["--master", &master.addr],
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Small and paced: the chunk must not fill (and seal) before the relegation. At most 4
    // writers x 12 s / 40 ms x 600 B on average = 720 KB, under the 1 MiB chunk however fast
    // the appends are.
    let writers = Appenders::start(
        &c,
        Workload {
            size: |id| 200 + (id.writer as usize * 37 + id.seq as usize * 101) % 800,
            pace: Duration::from_millis(40),
            must_succeed: false,
            ..Workload::new(path, 0..4, None)
        },
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    writers.stop();
    h.merge(writers.join().await);
    let chunks = c.refresh(path).await.unwrap().chunks.clone();
    assert!(
        chunks[0].version >= 2,
        "no relegation happened (version {})",
        chunks[0].version
    );
    // Every replica the master lists holds every acknowledged record, chunk by chunk, and no
    // chunk is called healthy with fewer whole copies than the goal. (Once the relegated
    // replica is deleted, its server is free for a new chunk: the master then seals the first,
    // below its goal, and the file goes on in a chunk on all three: `better_ended`.)
    for (i, ch) in chunks.iter().enumerate() {
        let next = chunks.get(i + 1).map_or(u64::MAX, |n| n.file_offset);
        let end = h
            .acked
            .iter()
            .filter(|(_, off)| (ch.file_offset..next).contains(off))
            .map(|(id, off)| off - ch.file_offset + h.sent[id] as u64)
            .max();
        if let Some(end) = end {
            counted_right(&c, path, i, end, &servers).await;
        }
    }
    let seen = gfs_testkit::observe(&c, path).await;
    let dirs: Vec<(String, std::path::PathBuf)> = servers
        .iter_mut()
        .map(|s| {
            s.terminate(Duration::from_secs(10));
            (s.id.clone(), s.dir.clone())
        })
        .collect();
    gfs_testkit::assert_clean(&seen.check_quorum(&h, &dirs, 2));
    master.kill();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    for s in &mut servers {
        s.restarted(&master.addr);
    }
    let c = patient(&master, Duration::from_secs(90)).await;
    check_promise(&c, path, &h, &mut servers).await;
}
