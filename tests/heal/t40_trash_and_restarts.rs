//! The trash purge and rolling restarts under load.

use super::*;

/// Deletion is lazy: a deleted file waits in the hidden trash (and can be moved back out),
/// then it is purged and its chunk files vanish from every server's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_files_wait_in_the_trash_then_their_chunks_vanish_from_every_disk() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--trash-retention", "3s"],
    );
    let servers = Server::with_master(dir.path(), 3, &master.addr);
    let c = Client::connect(&master.addr).await.unwrap();
    let data = vec![7u8; 1_500_000];
    put(&c, "/doomed", &data).await;
    let handles: Vec<u64> = c
        .refresh("/doomed")
        .await
        .unwrap()
        .chunks
        .iter()
        .map(|ch| ch.handle)
        .collect();
    assert_eq!(handles.len(), 2);
    let on_disk = |h: u64| {
        servers
            .iter()
            .filter(|s| s.dir.join(h.to_string()).exists())
            .count()
    };

    // Deleted: gone from its directory and from `ls /`, kept in /.trash with its chunks.
    c.delete("/doomed", false).await.unwrap();
    let root: Vec<String> = c
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert!(root.is_empty(), "ls / shows {root:?}");
    let slots = c.list("/.trash").await.unwrap();
    assert_eq!(slots.len(), 1);
    let trashed = format!("{}/doomed", slots[0].path);
    assert_eq!(c.stat(&trashed).await.unwrap().chunks, 2);
    // Undelete: move it back out, whole.
    c.rename(&trashed, "/doomed").await.unwrap();
    let back = get(&c, "/doomed").await;
    assert!(back == data);

    // Deleted again and left alone: after the retention period its chunks leave every disk.
    c.delete("/doomed", false).await.unwrap();
    let deleted_at = Instant::now();
    let deadline = deleted_at + Duration::from_secs(60);
    loop {
        let left: usize = handles.iter().map(|h| on_disk(*h)).sum();
        let trash = c.list("/.trash").await.unwrap();
        if left == 0 {
            let slot = &trash.iter().filter(|e| e.path != "/.trash").count();
            assert_eq!(
                *slot, 0,
                "chunks gone but the trash entry stayed: {trash:?}"
            );
            break;
        }
        if deleted_at.elapsed() < Duration::from_secs(2) {
            // Well inside the retention period, nothing is gone yet.
            assert_eq!(left, 6, "chunks went before the retention period");
        }
        assert!(Instant::now() < deadline, "{left} replicas still on disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted_at.elapsed() >= Duration::from_secs(3));
}

/// Every chunkserver in turn is SIGKILLed and started again on its disk while four clients
/// keep appending; each time the cluster heals before the next. No acknowledged record is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = patient(&master, Duration::from_secs(120)).await;
    registered(&c, 4).await;
    c.create("/roll").await.unwrap();
    let writers = Appenders::start(&c, Workload::new("/roll", 10..14, None));
    for server in servers.iter_mut() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restarted(&master.addr);
        until_replicated(&c, "/roll", 3, Duration::from_secs(90)).await;
    }
    writers.stop();
    let h = writers.join().await;
    assert!(
        h.acked.len() > 20,
        "only {} appends went through",
        h.acked.len()
    );
    assert_acked_read_back(&c, "/roll", &h, "after the restarts").await;
    until_replicated(&c, "/roll", 3, Duration::from_secs(90)).await;
    check_promise(&c, "/roll", &h, &mut servers).await;
}
