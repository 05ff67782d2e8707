//! A restarted master: appends resume, live leases are adopted, a silent primary is waited out, a library append issued while it is down succeeds.

use super::*;
use gfs_client::ServerState;

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
    let writers = appenders(&c, "/f", 0..2);
    writers.until_acked(20, Duration::from_secs(60)).await;
    let addr = master.addr.clone();
    master.kill();
    let master = MasterProc::start_with(&dir.path().join("master"), &addr, &args);
    let restarted = Instant::now();
    let fresh = patient(&master.addr, Duration::from_secs(120)).await;
    let mut h = History::new();
    tracked_append(&fresh, "/f", &mut h, 9, 0).await;
    let took = restarted.elapsed();
    println!("a new client's first append {took:?} after the master restarted (lease 30 s)");
    writers
        .until_acked(writers.acked() + 10, Duration::from_secs(60))
        .await;
    writers.stop();
    h.merge(writers.join().await);
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
            .map(|s| s.state);
        if state == Some(ServerState::Dead) {
            break;
        }
        assert!(Instant::now() < deadline, "the victim is still {state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A file written by the three others throughout the restart.
    c.create("/live").await.unwrap();
    let writers = appenders(&c, "/live", 0..2);
    writers.until_acked(10, Duration::from_secs(60)).await;
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
    // (it started after `spawned`), then the file goes on elsewhere.
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
    // Below its goal with a server free to take the victim's place, the silent chunk is
    // sealed (fenced at a new version first) and the file goes on in a new chunk on the live
    // servers (`better_ended`).
    assert_ne!(next.handle, silent_lease.handle);
    assert_eq!(next.index, silent_lease.index + 1);
    assert!(
        std::iter::once(id(&next))
            .chain(next.secondaries.iter().map(|r| r.id.clone()))
            .all(|h| h != servers[victim].id)
    );
    assert_eq!(next.secondaries.len(), 2);
    writers
        .until_acked(writers.acked() + 10, Duration::from_secs(60))
        .await;
    writers.stop();
    let h = writers.join().await;
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
