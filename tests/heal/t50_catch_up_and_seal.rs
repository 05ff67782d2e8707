//! Replicas behind the longest prefix: caught up, or the chunk fenced and sealed; readers of the unsealed tail.

use super::*;

/// A secondary that missed the last appends (paused, then its primary died) catches up from a
/// replica holding them before the next lease: the chunk continues with it instead of being
/// sealed short, and every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_catches_up_and_the_chunk_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster_args(dir.path(), 3, TWO_ROUNDS);
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    c.create("/c").await.unwrap();
    let mut acked = Vec::new();
    for n in 0..5 {
        let rec = record(1, n);
        acked.push((c.append("/c", rec.clone()).await.unwrap(), rec));
    }
    // Who holds the lease the client is using.
    let (lease, [primary, ahead, behind]) = lease_roles(&master, "/c", &servers).await;
    // One secondary freezes; the primary and the other commit more appends without it (well
    // inside the PREPARE timeout, so the primary never reports it lagging), then the primary
    // dies before the frozen one could see a COMMIT.
    servers[behind].signal("STOP");
    for n in 5..10 {
        let rec = record(1, n);
        acked.push((c.append("/c", rec.clone()).await.unwrap(), rec));
    }
    servers[primary].kill();
    servers[behind].signal("CONT");
    let (v_ahead, l_ahead) = committed(&servers[ahead], lease.handle).await.unwrap();
    let (v_behind, l_behind) = committed(&servers[behind], lease.handle).await.unwrap();
    assert_eq!(v_ahead, v_behind);
    assert!(
        l_behind < l_ahead,
        "the paused replica is not behind: {l_behind} vs {l_ahead}"
    );
    // The next appends need a new lease: the replica behind catches up first.
    for n in 10..15 {
        let rec = record(1, n);
        acked.push((c.append("/c", rec.clone()).await.unwrap(), rec));
    }
    let l = c.refresh("/c").await.unwrap();
    assert_eq!(
        l.chunks.len(),
        1,
        "the chunk was sealed instead of continuing on the caught-up replica"
    );
    let (v1, len1) = committed(&servers[ahead], lease.handle).await.unwrap();
    let (v2, len2) = committed(&servers[behind], lease.handle).await.unwrap();
    assert!(v1 > v_ahead && v1 == v2, "versions {v1} and {v2}");
    assert_eq!(len1, len2);
    for (off, rec) in &acked {
        let got = c.read("/c", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "record at {off} lost");
    }
}

/// With the primary and the up-to-date secondary of the last chunk down, only a secondary
/// short of the last acknowledged appends is left: a reader of those appends waits for a
/// quorum of lengths (here, for the other secondary to come back) instead of taking the short
/// replica's length for the end of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_secondary_alone_never_hides_acknowledged_appends_from_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster_args(dir.path(), 3, TWO_ROUNDS);
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    c.create("/tail").await.unwrap();
    for n in 0..3 {
        c.append("/tail", record(1, n)).await.unwrap();
    }
    let (lease, [primary, ahead, behind]) = lease_roles(&master, "/tail", &servers).await;
    // One secondary freezes while the others commit more appends; then the primary and the
    // other secondary die, and the frozen one, short, is the only replica left.
    servers[behind].signal("STOP");
    let mut tail = Vec::new();
    for n in 3..6 {
        let rec = record(1, n);
        tail.push((c.append("/tail", rec.clone()).await.unwrap(), rec));
    }
    servers[primary].kill();
    servers[ahead].kill();
    servers[behind].signal("CONT");
    let (_, short) = committed(&servers[behind], lease.handle).await.unwrap();
    assert!(
        short <= tail[0].0,
        "the frozen replica holds the tail: {short}"
    );
    // Wait until the master lists the short replica alone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = c.refresh("/tail").await.unwrap();
        if l.chunks[0].replicas.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead servers are still listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A fresh reader of the tail waits; the up-to-date secondary comes back meanwhile.
    let reader = patient(&master, Duration::from_secs(60)).await;
    let reads: Vec<_> = tail
        .iter()
        .map(|(off, rec)| {
            let (reader, off, len) = (reader.clone(), *off, rec.len() as u64);
            tokio::spawn(async move { reader.read("/tail", off, len).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[ahead].restarted(&master.addr);
    for ((off, rec), read) in tail.iter().zip(reads) {
        let got = read.await.unwrap().unwrap();
        assert!(
            got[..] == rec[..],
            "the acknowledged record at {off} read back as {} of its {} bytes",
            got.len(),
            rec.len()
        );
    }
}

/// When too few replicas hold a chunk's longest length to continue it (here a catch-up fails),
/// the master seals the chunk on its own, and first fences its replicas with a new version:
/// a PREPARE and COMMIT of the old primary that arrive after that decision (sent late, as by a
/// primary paused between its lease check and its messages) are refused, so no byte lands
/// past the sealed length and no acknowledgement can name an offset the file does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_the_master_seals_on_its_own_takes_no_late_append_of_the_old_primary() {
    use gfs_replication::{PeerConfig, Peers, ReplicaTransport};
    use gfs_storage::{ChunkHandle, OpId, StageRequest};
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--lease", "3s", "--max-clones", "0"],
    );
    let mut servers = Server::with_master_env_args(
        dir.path(),
        3,
        &master.addr,
        |_| vec![("GFS_FAILPOINTS", "catch-up-fails:100")],
        TWO_ROUNDS,
    );
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 3).await;
    c.create("/fenced").await.unwrap();
    let mut h = History::new();
    for n in 0..3 {
        append(&c, "/fenced", &mut h, 1, n).await;
    }
    let (lease, [primary, ahead, behind]) = lease_roles(&master, "/fenced", &servers).await;
    // One secondary falls behind; then the primary dies. The one ahead alone holds the
    // longest length, and the catch-up of the other fails: the master must seal the chunk.
    servers[behind].signal("STOP");
    for n in 3..6 {
        append(&c, "/fenced", &mut h, 1, n).await;
    }
    servers[primary].kill();
    servers[behind].signal("CONT");
    let (_, length) = committed(&servers[ahead], lease.handle).await.unwrap();
    append(&c, "/fenced", &mut h, 1, 6).await;
    let l = c.refresh("/fenced").await.unwrap();
    assert_eq!(
        l.chunks[0].sealed_length,
        Some(length),
        "the master did not seal the chunk at the longest length"
    );
    // The old primary's late append, at its lease's version, right after the sealed end.
    let peers = Peers::new(PeerConfig::default());
    let late = gfs_testkit::record(RecordId { writer: 9, seq: 0 }, 1000);
    let append = StageRequest {
        op: OpId(0x1a7e),
        handle: ChunkHandle(lease.handle),
        version: lease.version,
        offset: length,
        data: late,
    };
    let wait = Duration::from_secs(5);
    let repl = servers[ahead].repl.clone();
    let prepared = peers.prepare(&repl, append, wait).await;
    let committed_late = peers
        .commit(
            &repl,
            ChunkHandle(lease.handle),
            lease.version,
            OpId(0x1a7e),
            wait,
        )
        .await;
    let (_, now) = committed(&servers[ahead], lease.handle).await.unwrap();
    assert!(
        prepared.is_err() && committed_late.is_err() && now == length,
        "a replica of the chunk sealed at {length} took an append of the old primary: \
         PREPARE {prepared:?}, COMMIT {committed_late:?}, committed length now {now}"
    );
    healed_then_checked(master, dir.path(), &mut servers, "/fenced", &h).await;
}

/// A fence the master cuts short (it reached only the short replica: the long one failed its
/// SetVersion) leaves that replica one version ahead of the log. That version is never adopted
/// from its report (a bump on fewer than a quorum says nothing of the data), so the long
/// replica never turns stale and the short one is never copied as the chunk; the next decision
/// fences every replica past it and keeps the longest. Every acknowledged record stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_that_reached_only_a_short_replica_is_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--lease", "3s"],
    );
    let mut servers = Server::with_master_env_args(
        dir.path(),
        4,
        &master.addr,
        |_| vec![("GFS_FAILPOINTS", "catch-up-fails:100")],
        TWO_ROUNDS,
    );
    let c = patient(&master, Duration::from_secs(60)).await;
    registered(&c, 4).await;
    c.create("/partial").await.unwrap();
    let mut h = History::new();
    for n in 0..3 {
        append(&c, "/partial", &mut h, 1, n).await;
    }
    let (lease, [primary, ahead, behind]) = lease_roles(&master, "/partial", &servers).await;
    // One secondary falls behind; the primary dies; the one ahead will refuse the master's
    // next SetVersion once, while its catch-up copies fail: the master's fence before its own
    // seal reaches the short replica alone.
    servers[behind].signal("STOP");
    for n in 3..6 {
        append(&c, "/partial", &mut h, 1, n).await;
    }
    servers[primary].kill();
    servers[behind].signal("CONT");
    servers[ahead].kill();
    let (dir_ahead, id_ahead) = (servers[ahead].dir.clone(), servers[ahead].id.clone());
    servers[ahead] = Server::start_with(
        &dir_ahead,
        &id_ahead,
        None,
        &[(
            "GFS_FAILPOINTS",
            "catch-up-fails:100,set-version-fails:100:1",
        )],
        &["--master", &master.addr],
    );
    registered(&c, 3).await;
    // The next appends need a decision on the chunk: it continues or is sealed, from the
    // longest replica either way.
    for n in 6..9 {
        append(&c, "/partial", &mut h, 1, n).await;
    }
    let l = c.refresh("/partial").await.unwrap();
    let first = &l.chunks[0];
    assert!(
        first.version > lease.version + 1,
        "the replicas were not fenced past the short one's version: chunk at {}",
        first.version
    );
    healed_then_checked(master, dir.path(), &mut servers, "/partial", &h).await;
}
