//! Stale replicas of returning servers: never served, deleted once a quorum is current elsewhere.

use super::*;

/// A server stopped while appends go on (versions move past its replicas) and started again:
/// its replicas are stale, never served, deleted, and the chunk is whole on three others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_server_s_stale_replicas_are_never_served_and_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 4).await;
    c.create("/s").await.unwrap();
    let mut acked = Vec::new();
    for n in 0..10 {
        let rec = record(9, n);
        acked.push((c.append("/s", rec.clone()).await.unwrap(), rec));
    }
    let chunk = c.refresh("/s").await.unwrap().chunks[0].clone();
    let away: usize = chunk.replicas[1].id[2..].parse().unwrap();
    servers[away].kill();
    // Appends go on without it: the lease moves past its version.
    for n in 10..30 {
        let rec = record(9, n);
        acked.push((c.append("/s", rec.clone()).await.unwrap(), rec));
    }
    // The primary reports the missing secondary as lagging; the master bumps past it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let version = loop {
        let v = c.refresh("/s").await.unwrap().chunks[0].version;
        if v > chunk.version {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the version never moved past the lost replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // It comes back with its old replica (same disk, new ports).
    servers[away].restarted(&master.addr);
    let id = servers[away].id.clone();
    let stale = gfs_dataplane::DataClient::connect(
        &servers[away].data,
        gfs_dataplane::ClientConfig::default(),
    )
    .await
    .unwrap();
    // Its replica's version as it reports it (None once deleted).
    let held = |repl: String| async move {
        let mut ctl = gfs_bins::control_client(&repl).await.unwrap();
        ctl.report_chunks(gfs_proto::v1::ReportChunksRequest {
            handles: vec![chunk.handle],
        })
        .await
        .unwrap()
        .into_inner()
        .chunks
        .first()
        .map(|c| c.version)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stale_seen_gone = false;
    loop {
        let before = held(servers[away].repl.clone()).await;
        // Never served at the current version while stale; only a fresh copy (made after the
        // stale one was deleted) may answer.
        // A token for the current version, so only the replica's version can refuse it.
        let now = c.refresh("/s").await.unwrap().chunks[0].chunk_ref();
        match stale.read(&now, 0, 100).await {
            Err(gfs_dataplane::DataError::StaleVersion { .. })
            | Err(gfs_dataplane::DataError::NotFound { .. }) => {}
            // Not registered again yet: without the master's token key it serves nothing.
            Err(gfs_dataplane::DataError::BadToken(m)) if m.contains("not registered") => {}
            Ok(b) => {
                let now = held(servers[away].repl.clone()).await;
                assert!(
                    before.is_none_or(|v| v >= version) && now.is_some_and(|v| v >= version),
                    "a stale replica (version {before:?}) answered a read: {} bytes",
                    b.len()
                );
            }
            other => panic!("unexpected read result: {other:?}"),
        }
        stale_seen_gone |= before.is_none_or(|v| v >= version);
        let l = c.refresh("/s").await.unwrap();
        if stale_seen_gone && l.chunks[0].replicas.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stale replica on {id} still there ({before:?} < {version}) or the chunk short: {:?}",
            l.chunks[0].replicas
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (off, rec) in &acked {
        let got = c.read("/s", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "record at {off} lost");
    }
}

/// Two of a chunk's three replicas are SIGKILLed during appends on five servers. The last
/// chunk's length is unknown without a quorum of its own replicas (the survivor may lack
/// appends the two acknowledged), so appends wait: the chunk is neither copied nor continued
/// from the survivor alone. Once both servers return, appends go on, every acknowledged record
/// reads back, and the old replicas are dropped or brought to the current version: in the end
/// every chunk has exactly three replicas, none stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_under_appends_then_returning_leave_no_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 5);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 5).await;
    c.create("/k").await.unwrap();
    let writers = Appenders::start(&c, Workload::new("/k", 20..22, Some(50)));
    writers.until_acked(30, Duration::from_secs(60)).await;
    let chunk = c
        .refresh("/k")
        .await
        .unwrap()
        .chunks
        .last()
        .unwrap()
        .clone();
    let gone: Vec<usize> = chunk.replicas[..2]
        .iter()
        .map(|r| servers.iter().position(|s| s.id == r.id).unwrap())
        .collect();
    for &i in &gone {
        servers[i].kill();
    }
    // Well past the dead-after period, so re-replication sees the chunk below its goal.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for &i in &gone {
        servers[i].restarted(&master.addr);
    }
    let h = writers.join().await;
    assert_acked_read_back(&c, "/k", &h, "after the appends").await;
    // Every chunk settles at three replicas, all at the master's version, as the servers
    // themselves report them.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = c.refresh("/k").await.unwrap();
        let mut wrong = Vec::new();
        for ch in &l.chunks {
            let mut current = 0;
            for s in &servers {
                match committed(s, ch.handle).await {
                    Some((v, _)) if v == ch.version => current += 1,
                    Some((v, _)) => wrong.push(format!(
                        "{} holds {} at {v} < {}",
                        s.id, ch.index, ch.version
                    )),
                    None => {}
                }
            }
            if current != 3 {
                wrong.push(format!("chunk {} has {current} current replicas", ch.index));
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {wrong:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_acked_read_back(&c, "/k", &h, "after healing").await;
    check_promise(&c, "/k", &h, &mut servers).await;
}
