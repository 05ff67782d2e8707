//! Re-replication: chunks of dead or lost servers copied back to the goal, in the right order, at the configured rate.

use super::*;

/// kill -9 one of four chunkservers during a stream of appends: every acknowledged record
/// reads back, and every chunk gets back to three live replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chunkserver_s_chunks_are_copied_back_to_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 4).await;
    c.create("/log").await.unwrap();
    let writers = Appenders::start(&c, Workload::new("/log", 0..4, Some(60)));
    // A third of the way in, SIGKILL a server that holds the chunk being written.
    writers.until_acked(80, Duration::from_secs(60)).await;
    let l = c.refresh("/log").await.unwrap();
    let victim: usize = l.chunks.last().unwrap().replicas[0].id[2..]
        .parse()
        .unwrap();
    servers[victim].kill();
    let killed_at = Instant::now();
    let h = writers.join().await;
    assert_acked_read_back(&c, "/log", &h, "after the appends").await;
    let chunks = c.refresh("/log").await.unwrap().chunks.len();
    let took = until_replicated(&c, "/log", 3, Duration::from_secs(90)).await;
    println!(
        "{chunks} chunks back to 3 replicas {:?} after the kill ({took:?} after the appends ended)",
        killed_at.elapsed()
    );
    // The copies are real: with the victim gone, every record still reads from the copies.
    assert_acked_read_back(&c, "/log", &h, "after healing").await;
    check_promise(&c, "/log", &h, &mut servers).await;
}

/// The goGFS "disk error" case: the data directories of two of five chunkservers are removed
/// while they run. Those servers notice, report their replicas gone and take no new ones;
/// appends go on, and every chunk is back to three replicas on the healthy servers.
///
/// One of the two holds a replica of the chunk being appended to, the other does not: losing
/// two of the three replicas of an unsealed chunk is past what a quorum of two survives (an
/// append acknowledged by those two alone is gone, so no one knows the chunk's length), and
/// appends to that file then wait for a quorum, as they must. The test used to take two of the
/// last chunk's replicas and passed only when that chunk filled and was sealed before the
/// servers noticed (it once gave up after 90 s: "1 of the 2 replicas needed are alive").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lost_disks_under_appends_heal_onto_the_healthy_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 5);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 5).await;
    c.create("/d").await.unwrap();
    let (mut acked, mut h) = (Vec::new(), History::new());
    for n in 0..40 {
        acked.push(append(&c, "/d", &mut h, 3, n).await);
    }
    let chunk = c
        .refresh("/d")
        .await
        .unwrap()
        .chunks
        .last()
        .unwrap()
        .clone();
    let other = servers
        .iter()
        .map(|s| s.id.clone())
        .find(|id| chunk.replicas.iter().all(|r| r.id != *id))
        .unwrap();
    let lost: Vec<String> = vec![chunk.replicas[0].id.clone(), other];
    for s in servers.iter().filter(|s| lost.contains(&s.id)) {
        std::fs::remove_dir_all(&s.dir).unwrap();
    }
    // Once the master knows, no new chunk goes to them (before, a chunk placed on both could
    // be left with one replica).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.report().await.unwrap();
        let known = r
            .servers
            .iter()
            .filter(|s| lost.contains(&s.id) && s.state == gfs_client::ServerState::DiskLost)
            .count();
        if known == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "lost disks never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 40..120 {
        acked.push(append(&c, "/d", &mut h, 3, n).await);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = c.refresh("/d").await.unwrap();
        let bad: Vec<(u64, Vec<String>)> = l
            .chunks
            .iter()
            .map(|ch| {
                (
                    ch.index,
                    ch.replicas.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                )
            })
            .filter(|(_, ids)| ids.len() < 3 || ids.iter().any(|id| lost.contains(id)))
            .collect();
        if bad.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chunks not healed onto the healthy servers (lost {lost:?}): {bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (off, rec) in &acked {
        let got = c.read("/d", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "acknowledged record at {off} lost");
    }
    // The two servers without a disk hold nothing: only the healthy ones are checked.
    for s in servers.iter_mut().filter(|s| lost.contains(&s.id)) {
        s.kill();
    }
    check_promise(&c, "/d", &h, &mut servers).await;
}

/// kill -9 of the master while it re-replicates a dead server's chunks: after its restart the
/// work resumes; every chunk ends with exactly three replicas and the file reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restart_during_re_replication_resumes_without_loss_or_excess() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = Client::connect(&master.addr).await.unwrap();
    registered(&c, 4).await;
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| i.wrapping_mul(2_246_822_519).to_le_bytes()[2])
        .collect();
    put(&c, "/big", &data).await;
    let before = c.refresh("/big").await.unwrap();
    assert_eq!(before.chunks.len(), 6);
    // A server holding chunk 0 dies; once the master has begun copying (the chunk lists a
    // replica elsewhere), the master is killed too and restarted on its directory and port.
    let victim = before.chunks[0].replicas[0].id.clone();
    let v: usize = victim[2..].parse().unwrap();
    servers[v].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = c.refresh("/big").await.unwrap();
        let copied = l.chunks.iter().any(|ch| {
            ch.replicas.len() == 3
                && before.chunks[ch.index as usize]
                    .replicas
                    .iter()
                    .any(|r| r.id == victim)
        });
        if copied {
            break;
        }
        assert!(Instant::now() < deadline, "re-replication never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let addr = master.addr.clone();
    let mut master = master;
    master.kill();
    let master = MasterProc::start_with(&dir.path().join("master"), &addr, &["--dead-after", "2s"]);
    let c = Client::connect(&master.addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = c.refresh("/big").await.unwrap();
        let counts: Vec<usize> = l.chunks.iter().map(|ch| ch.replicas.len()).collect();
        let victim_listed = l
            .chunks
            .iter()
            .any(|ch| ch.replicas.iter().any(|r| r.id == victim));
        if counts.iter().all(|n| *n == 3) && !victim_listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica counts after the restart: {counts:?} (victim listed: {victim_listed})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = get(&c, "/big").await;
    assert!(back == data, "the file changed");
}

/// A new, empty chunkserver joins three full ones: sealed chunks move to it one at a time
/// (copy first, then the fullest server's replica goes), every chunk keeps three replicas
/// throughout, and the file reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_takes_its_share_and_no_chunk_drops_below_three() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let start = |i: usize| {
        Server::start_with(
            &dir.path().join(format!("cs{i}")),
            &format!("cs{i}"),
            None,
            &[],
            &["--master", &master.addr, "--capacity", "8MiB"],
        )
    };
    let mut servers: Vec<Server> = (0..3).map(start).collect();
    let c = patient(&master, Duration::from_secs(60)).await;
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    put(&c, "/bal", &data).await;
    servers.push(start(3));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = c.refresh("/bal").await.unwrap();
        let counts: Vec<usize> = l.chunks.iter().map(|ch| ch.replicas.len()).collect();
        assert!(
            counts.iter().all(|n| *n >= 3),
            "a chunk dropped below three replicas: {counts:?}"
        );
        let on_new = l
            .chunks
            .iter()
            .filter(|ch| ch.replicas.iter().any(|r| r.id == "cs3"))
            .count();
        // 18 replicas over 4 servers: the new one ends with 4 or 5 of them.
        if on_new >= 4 && counts.iter().all(|n| *n == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new server holds {on_new} chunks; replica counts {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = get(&c, "/bal").await;
    assert!(back == data);
}

/// Re-replication copies into a server stay under its `--clone-rate`: a 1 MB copy at
/// 256 KiB/s takes at least 2.8 s (one second of burst, then the rate), where uncapped it takes
/// tens of milliseconds here. The put's lease outlasts the copy (30 s): once it ends, the
/// master may settle the chunk (the copy's partial replica reports it unvouched), and the
/// fence's new version would end the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_into_a_server_keep_to_its_clone_rate() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--max-clones", "0", "--lease", "30s"],
    );
    let servers =
        Server::with_master_args(dir.path(), 4, &master.addr, &["--clone-rate", "256KiB"]);
    let c = Client::connect(&master.addr).await.unwrap();
    let data = record(3, 1_000_000);
    let data: Vec<u8> = data.iter().cycle().take(1_000_000).copied().collect();
    put(&c, "/r", &data).await;
    let chunk = c.refresh("/r").await.unwrap().chunks[0].clone();
    let source = servers
        .iter()
        .find(|s| s.id == chunk.replicas[0].id)
        .unwrap();
    let target = servers
        .iter()
        .find(|s| chunk.replicas.iter().all(|r| r.id != s.id))
        .unwrap();
    let mut ctl = gfs_bins::control_client(&target.repl).await.unwrap();
    let started = Instant::now();
    let reply = ctl
        .clone_chunk(gfs_proto::v1::CloneChunkRequest {
            handle: chunk.handle,
            version: chunk.version,
            source: source.repl.clone(),
            sealed_length: None,
            catch_up: false,
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert_eq!(reply.length, data.len() as u64);
    assert!(
        took >= Duration::from_millis(2_800),
        "1 MB copied in {took:?} under a 256 KiB/s cap"
    );
}

/// A chunk a client keeps asking for while it is below the goal is repaired before others
/// with as many replicas: copies are slow (256 KiB/s) and one at a time, and the file with the
/// highest handle (last in the order otherwise) is the one read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_clients_wait_on_is_repaired_first() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--max-clones", "1"],
    );
    let mut servers =
        Server::with_master_args(dir.path(), 4, &master.addr, &["--clone-rate", "256KiB"]);
    let c = patient(&master, Duration::from_secs(60)).await;
    // Exactly one chunk per file, so it is sealed: no lease keeps it from being copied.
    let one_chunk = vec![7u8; 1 << 20];
    let mut chunks = Vec::new();
    for i in 0..5 {
        put(&c, &format!("/f{i}"), &one_chunk).await;
        chunks.push((
            i,
            c.refresh(&format!("/f{i}")).await.unwrap().chunks[0].clone(),
        ));
    }
    // The server holding the most of them dies (15 replicas on 4 servers: at least 4).
    let held = |id: &str| {
        chunks
            .iter()
            .filter(|(_, ch)| ch.replicas.iter().any(|r| r.id == id))
            .count()
    };
    let victim = servers
        .iter()
        .map(|s| s.id.clone())
        .max_by_key(|id| held(id))
        .unwrap();
    let mut hit: Vec<(usize, u64)> = chunks
        .iter()
        .filter(|(_, ch)| ch.replicas.iter().any(|r| r.id == victim))
        .map(|(i, ch)| (*i, ch.handle))
        .collect();
    hit.sort_by_key(|(_, h)| *h);
    let (wanted_file, wanted) = *hit.last().unwrap();
    servers.iter_mut().find(|s| s.id == victim).unwrap().kill();
    let live: Vec<&Server> = servers.iter().filter(|s| s.id != victim).collect();
    // Replicas of `handle` on the live servers, asked of the servers themselves (asking the
    // master would boost the chunk).
    let replicas = async |handle: u64| {
        let mut n = 0;
        for s in &live {
            n += usize::from(committed(s, handle).await.is_some());
        }
        n
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The client keeps asking where the wanted file's chunk is.
        c.refresh(&format!("/f{wanted_file}")).await.unwrap();
        if replicas(wanted).await == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wanted chunk was never repaired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At most the one copy that may have started before the client first asked came first.
    let mut before = 0;
    for (_, h) in &hit[..hit.len() - 1] {
        before += usize::from(replicas(*h).await == 3);
    }
    assert!(
        before <= 1,
        "{before} of {} other chunks were repaired before the wanted one",
        hit.len() - 1
    );
}

/// With one copy at a time, the chunk of a live file is copied before those of trashed files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_files_are_repaired_before_the_trash() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s", "--max-clones", "1"],
    );
    let mut servers = Server::with_master(dir.path(), 4, &master.addr);
    let c = patient(&master, Duration::from_secs(60)).await;
    // Exactly one chunk per file, so it is sealed: no lease keeps it from being copied.
    let one_chunk = vec![1u8; 1 << 20];
    let put_one = async |path: &str| {
        put(&c, path, &one_chunk).await;
        c.refresh(path).await.unwrap().chunks[0].clone()
    };
    let mut trashed = Vec::new();
    for i in 0..5 {
        trashed.push(put_one(&format!("/t{i}")).await);
    }
    let keep = put_one("/keep").await;
    for i in 0..5 {
        c.delete(&format!("/t{i}"), false).await.unwrap();
    }
    // A server holding the live chunk and at least one trashed chunk dies.
    let victim = keep
        .replicas
        .iter()
        .map(|r| r.id.clone())
        .find(|id| {
            trashed
                .iter()
                .any(|t| t.replicas.iter().any(|r| &r.id == id))
        })
        .unwrap();
    let hit: Vec<u64> = trashed
        .iter()
        .filter(|t| t.replicas.iter().any(|r| r.id == victim))
        .map(|t| t.handle)
        .collect();
    servers.iter_mut().find(|s| s.id == victim).unwrap().kill();
    let trash_paths: Vec<String> = c
        .list("/.trash")
        .await
        .unwrap()
        .into_iter()
        .map(|slot| slot.path)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Repaired: three replicas, none on the dead server (listed until it is declared dead).
        let repaired = |ch: &gfs_client::ChunkInfo| {
            ch.replicas.len() == 3 && ch.replicas.iter().all(|r| r.id != victim)
        };
        let live_done = repaired(&c.refresh("/keep").await.unwrap().chunks[0]);
        let mut trash_done = 0;
        for slot in &trash_paths {
            for e in c.list(slot).await.unwrap() {
                let l = c.refresh(&e.path).await.unwrap();
                if hit.contains(&l.chunks[0].handle) && repaired(&l.chunks[0]) {
                    trash_done += 1;
                }
            }
        }
        assert!(
            live_done || trash_done == 0,
            "a trashed chunk was repaired before the live file's"
        );
        if live_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live file's chunk was never repaired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `gfs stat` of a file tells its health: chunks short of the goal while a holder is dead,
/// and chunks lost (listed, not dropped from the file) when every holder is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_under_replicated_and_lost_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 3);
    let c = patient(&master, Duration::from_secs(30)).await;
    registered(&c, 3).await;
    let data = vec![5u8; 1_500_000];
    put(&c, "/h", &data).await;
    let e = c.stat("/h").await.unwrap();
    assert_eq!(
        (
            e.chunks,
            e.under_replicated,
            e.lost_chunks,
            e.stale_replicas
        ),
        (2, 0, 0, 0)
    );
    let gfs_stat = || {
        let out = std::process::Command::new(gfs_testkit::bin("gfs"))
            .args(["--master", &master.addr, "stat", "/h"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(gfs_stat().contains("health:      ok"));
    // Until some server is back there is no copy target: the chunks stay short.
    servers[0].kill();
    let until = async |want: (u64, u64)| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e = c.stat("/h").await.unwrap();
            if (e.under_replicated, e.lost_chunks) == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stat says {} under-replicated, {} lost; expected {want:?}",
                e.under_replicated,
                e.lost_chunks
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until((2, 0)).await;
    assert!(gfs_stat().contains("health:      2 chunks under-replicated, 0 lost"));
    servers[1].kill();
    servers[2].kill();
    until((2, 2)).await;
    let text = gfs_stat();
    assert!(text.contains("2 lost"), "{text}");
    assert_eq!(text.matches("none (LOST)").count(), 2, "{text}");
}
