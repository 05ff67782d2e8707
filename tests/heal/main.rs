//! Self-healing with real processes: chunkservers SIGKILLed under load, their chunks copied to
//! the survivors by the master.

#![allow(clippy::unwrap_used, missing_docs, dead_code)]

#[path = "../replication/fixture.rs"]
mod fixture;
#[path = "../common/master.rs"]
mod master_proc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fixture::{Server, check_promise};
use gfs_client::{Client, ClientConfig};
use gfs_testkit::{History, RecordId};
use master_proc::MasterProc;

/// A master (dead after 2 s of silence) and `n` chunkservers registered with it.
fn cluster(dir: &std::path::Path, n: usize) -> (MasterProc, Vec<Server>) {
    let master =
        MasterProc::start_with(&dir.join("master"), "127.0.0.1:0", &["--dead-after", "2s"]);
    let servers = Server::with_master(dir, n, &master.addr);
    (master, servers)
}

/// Record `n` of writer `w`: self-describing, for the history checker.
fn record(w: usize, n: usize) -> Vec<u8> {
    let id = RecordId {
        writer: w as u32,
        seq: n as u32,
    };
    gfs_testkit::record(id, 20_000 + (w * 7 + n * 13) % 5_000).to_vec()
}

/// Appends record `n` of writer `w` to `path`, noting in `h` that it was sent and, once it
/// is, where it was acknowledged.
async fn append(c: &Client, path: &str, h: &mut History, w: usize, n: usize) -> (u64, Vec<u8>) {
    let rec = record(w, n);
    let id = RecordId {
        writer: w as u32,
        seq: n as u32,
    };
    h.sent(id, rec.len());
    let off = c.append(path, rec.clone()).await.unwrap();
    h.acked(id, off);
    (off, rec)
}

/// A client of `master` that keeps retrying through failures for `deadline`.
async fn patient(master: &MasterProc, deadline: Duration) -> Client {
    let cfg = ClientConfig {
        op_deadline: deadline,
        ..ClientConfig::default()
    };
    Client::connect_with(&master.addr, cfg).await.unwrap()
}

/// Waits (20 s at most) until the master counts `n` chunkservers alive, so a chunk created
/// next is placed on all of them even on a loaded machine.
async fn registered(c: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.report().await.unwrap();
        if r.servers.iter().filter(|s| s.state == "alive").count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} servers registered",
            r.servers.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `path` and writes `data` into it with a streaming writer.
async fn put(c: &Client, path: &str, data: &[u8]) {
    c.create(path).await.unwrap();
    let mut w = c.writer(path);
    w.write(data).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), data.len() as u64);
}

/// The whole of `path`, read with a streaming reader.
async fn get(c: &Client, path: &str) -> Vec<u8> {
    let mut r = c.reader(path).await.unwrap();
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
        .await
        .unwrap();
    back
}

/// Damages one byte of a replica's chunk file on disk.
fn flip_byte(file: &std::path::Path, at: usize, mask: u8) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= mask;
    std::fs::write(file, bytes).unwrap();
}

/// Whether the bad replica of `path`'s first chunk on server `bad` (its chunk file `file`) is
/// gone: deleted from disk, and three replicas listed elsewhere. Fails past `deadline`;
/// pauses 100 ms before saying no.
async fn replaced(
    c: &Client,
    path: &str,
    bad: &str,
    file: &std::path::Path,
    deadline: Instant,
) -> bool {
    let l = c.refresh(path).await.unwrap();
    let ids: Vec<&str> = l.chunks[0].replicas.iter().map(|r| r.id.as_str()).collect();
    if ids.len() == 3 && !ids.contains(&bad) && !file.exists() {
        return true;
    }
    assert!(
        Instant::now() < deadline,
        "the corrupt replica on {bad} was not replaced and deleted: replicas {ids:?}, file there: {}",
        file.exists()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    false
}

/// Waits until every chunk of `path` has `want` live replicas; returns how long it took.
async fn until_replicated(c: &Client, path: &str, want: usize, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let l = c.refresh(path).await.unwrap();
        let short: Vec<(u64, usize)> = l
            .chunks
            .iter()
            .filter(|ch| ch.replicas.len() < want)
            .map(|ch| (ch.index, ch.replicas.len()))
            .collect();
        if short.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "chunks (index, replicas) still short of {want} after {deadline:?}: {short:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kill -9 one of four chunkservers during a stream of appends: every acknowledged record
/// reads back, and every chunk gets back to three live replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_chunkserver_s_chunks_are_copied_back_to_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 4).await;
    c.create("/log").await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, acked) = (c.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let (mut out, mut h) = (Vec::new(), History::new());
            for n in 0..60 {
                out.push(append(&c, "/log", &mut h, w, n).await);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            (out, h)
        }));
    }
    // A third of the way in, SIGKILL a server that holds the chunk being written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 80 {
        assert!(Instant::now() < deadline, "appends did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let l = c.refresh("/log").await.unwrap();
    let victim: usize = l.chunks.last().unwrap().replicas[0].id[2..]
        .parse()
        .unwrap();
    servers[victim].kill();
    let killed_at = Instant::now();
    let (mut all, mut h) = (Vec::new(), History::new());
    for w in writers {
        let (out, hw) = w.await.unwrap();
        all.extend(out);
        h.merge(hw);
    }
    for (off, rec) in &all {
        let got = c.read("/log", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "acknowledged record at {off} lost");
    }
    let chunks = c.refresh("/log").await.unwrap().chunks.len();
    let took = until_replicated(&c, "/log", 3, Duration::from_secs(90)).await;
    println!(
        "{chunks} chunks back to 3 replicas {:?} after the kill ({took:?} after the appends ended)",
        killed_at.elapsed()
    );
    // The copies are real: with the victim gone, every record still reads from the copies.
    for (off, rec) in &all {
        let got = c.read("/log", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "record at {off} differs after healing");
    }
    check_promise(&c, "/log", &h, &mut servers).await;
}

/// A flipped byte in one replica's chunk file: reads stay byte-exact (served by another
/// replica), the bad replica is reported, replaced by a copy elsewhere, and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_replica_is_replaced_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (master, servers) = cluster(dir.path(), 4);
    let c = Client::connect(&master.addr).await.unwrap();
    registered(&c, 4).await;
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    put(&c, "/f", &data).await;
    let chunk = c.refresh("/f").await.unwrap().chunks[0].clone();
    assert_eq!(chunk.replicas.len(), 3);
    let bad = &chunk.replicas[0].id;
    let bad_server = servers.iter().find(|s| &s.id == bad).unwrap();
    let file = bad_server.dir.join(chunk.handle.to_string());
    flip_byte(&file, 300_000, 0x20);
    // Read until the bad replica has been hit (replicas are tried in random order), each read
    // byte-exact.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = c.read("/f", 0, 1 << 20).await.unwrap();
        assert!(got[..] == data[..1 << 20], "a read returned corrupt bytes");
        if replaced(&c, "/f", bad, &file, deadline).await {
            break;
        }
    }
    // Everything still reads back whole.
    let back = get(&c, "/f").await;
    assert!(back == data);
}

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
        match stale.read(chunk.handle, version, 0, 100).await {
            Err(gfs_dataplane::DataError::StaleVersion { .. })
            | Err(gfs_dataplane::DataError::NotFound { .. }) => {}
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

/// The goGFS "disk error" case: the data directories of two of five chunkservers are removed
/// while they run. Those servers notice, report their replicas gone and take no new ones;
/// appends go on, and every chunk is back to three replicas on the healthy servers.
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
    let lost: Vec<String> = chunk.replicas[..2].iter().map(|r| r.id.clone()).collect();
    for s in servers.iter().filter(|s| lost.contains(&s.id)) {
        std::fs::remove_dir_all(&s.dir).unwrap();
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

/// Every chunkserver in turn is SIGKILLed and started again on its disk while four clients
/// keep appending; each time the cluster heals before the next. No acknowledged record is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 4);
    let c = patient(&master, Duration::from_secs(120)).await;
    registered(&c, 4).await;
    c.create("/roll").await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let (mut out, mut h) = (Vec::new(), History::new());
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                out.push(append(&c, "/roll", &mut h, 10 + w, n).await);
                n += 1;
            }
            (out, h)
        }));
    }
    for server in servers.iter_mut() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.restarted(&master.addr);
        until_replicated(&c, "/roll", 3, Duration::from_secs(90)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut all, mut h) = (Vec::new(), History::new());
    for w in writers {
        let (out, hw) = w.await.unwrap();
        all.extend(out);
        h.merge(hw);
    }
    assert!(all.len() > 20, "only {} appends went through", all.len());
    for (off, rec) in &all {
        let got = c.read("/roll", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "acknowledged record at {off} lost");
    }
    until_replicated(&c, "/roll", 3, Duration::from_secs(90)).await;
    check_promise(&c, "/roll", &h, &mut servers).await;
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

/// A flipped byte that no client reads: the scrubber finds it, and the replica is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrubber_finds_a_corrupt_replica_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let servers = Server::with_master_args(dir.path(), 4, &master.addr, &["--scrub-every", "50ms"]);
    let c = patient(&master, Duration::from_secs(60)).await;
    let data = vec![0x5au8; 1_200_000];
    put(&c, "/quiet", &data).await;
    let chunk = c.refresh("/quiet").await.unwrap().chunks[0].clone();
    let bad = chunk.replicas[2].id.clone();
    let file = servers
        .iter()
        .find(|s| s.id == bad)
        .unwrap()
        .dir
        .join(chunk.handle.to_string());
    flip_byte(&file, 700_000, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !replaced(&c, "/quiet", &bad, &file, deadline).await {}
    let back = get(&c, "/quiet").await;
    assert!(back == data);
}

/// Re-replication whose source turns out corrupt (no client or scrubber has noticed): the copy
/// fails with DataLoss, the master marks the source corrupt, copies from a good replica, and
/// the bad one is deleted and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_source_is_dropped_and_another_used() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--dead-after", "2s"],
    );
    let mut servers =
        Server::with_master_args(dir.path(), 4, &master.addr, &["--scrub-every", "0s"]);
    let c = patient(&master, Duration::from_secs(60)).await;
    let data: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
    put(&c, "/src", &data).await;
    let chunk = c.refresh("/src").await.unwrap().chunks[0].clone();
    let mut ids: Vec<String> = chunk.replicas.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    // The master copies from the first holder by id: damage that one, kill the last.
    let (bad, dead) = (ids[0].clone(), ids[2].clone());
    let file = dir.path().join(&bad).join(chunk.handle.to_string());
    flip_byte(&file, 100_000, 0x80);
    servers.iter_mut().find(|s| s.id == dead).unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let l = c.refresh("/src").await.unwrap();
        let now: Vec<&str> = l.chunks[0].replicas.iter().map(|r| r.id.as_str()).collect();
        // Three good replicas, none on the dead server; the bad file gone or rewritten whole
        // (a copy being written in its place is shorter for a while: not yet).
        let bad_fixed =
            std::fs::read(&file).map_or(true, |b| b.get(100_000) == Some(&data[100_000]));
        if now.len() == 3 && !now.contains(&dead.as_str()) && bad_fixed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not healed around the corrupt source {bad}: replicas {now:?}, bad bytes still there: {}",
            !bad_fixed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = get(&c, "/src").await;
    assert!(back == data);
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

/// Restarts the master on its directory without the test's limits (repair on) and every
/// server without failpoints, then checks the whole promise over `path` once healed.
async fn healed_then_checked(
    mut master: MasterProc,
    dir: &std::path::Path,
    servers: &mut [Server],
    path: &str,
    h: &History,
) {
    master.kill();
    let master =
        MasterProc::start_with(&dir.join("master"), "127.0.0.1:0", &["--dead-after", "2s"]);
    for s in servers.iter_mut() {
        s.restarted(&master.addr);
    }
    let c = patient(&master, Duration::from_secs(90)).await;
    check_promise(&c, path, h, servers).await;
}

/// The lease of `path`'s last chunk as the master hands it out now, and the indexes in
/// `servers` of its primary, first secondary and second secondary.
async fn lease_roles(
    master: &MasterProc,
    path: &str,
    servers: &[Server],
) -> (gfs_proto::v1::ChunkLease, [usize; 3]) {
    use gfs_proto::v1::AppendChunkRequest;
    use gfs_proto::v1::master_client::MasterClient;
    let mut m = MasterClient::connect(format!("http://{}", master.addr))
        .await
        .unwrap();
    let lease = m
        .append_chunk(AppendChunkRequest { path: path.into() })
        .await
        .unwrap()
        .into_inner();
    let index = |id: &str| servers.iter().position(|s| s.id == id).unwrap();
    let roles = [
        index(&lease.primary.as_ref().unwrap().id),
        index(&lease.secondaries[0].id),
        index(&lease.secondaries[1].id),
    ];
    (lease, roles)
}

/// The committed length `server` reports for `handle` at `version` (None: no such replica).
async fn committed(server: &Server, handle: u64) -> Option<(u64, u64)> {
    let mut ctl = gfs_bins::control_client(&server.repl).await.unwrap();
    ctl.report_chunks(gfs_proto::v1::ReportChunksRequest {
        handles: vec![handle],
    })
    .await
    .unwrap()
    .into_inner()
    .chunks
    .first()
    .map(|c| (c.version, c.committed_length))
}

/// A secondary that missed the last appends (paused, then its primary died) catches up from a
/// replica holding them before the next lease: the chunk continues with it instead of being
/// sealed short, and every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_catches_up_and_the_chunk_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 3);
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
    let (master, mut servers) = cluster(dir.path(), 3);
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
    let mut servers = Server::with_master_env(dir.path(), 3, &master.addr, |_| {
        vec![("GFS_FAILPOINTS", "catch-up-fails:100")]
    });
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
    let mut servers = Server::with_master_env(dir.path(), 4, &master.addr, |_| {
        vec![("GFS_FAILPOINTS", "catch-up-fails:100")]
    });
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

/// Re-replication copies into a server stay under its `--clone-rate`: a 1 MB copy at
/// 256 KiB/s takes at least 2.8 s (one second of burst, then the rate), where uncapped it takes
/// tens of milliseconds here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_into_a_server_keep_to_its_clone_rate() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProc::start_with(
        &dir.path().join("master"),
        "127.0.0.1:0",
        &["--max-clones", "0"],
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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gfs"))
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

/// Two of a chunk's three replicas are SIGKILLed during appends on five servers: appends
/// continue (on a new chunk), and once both servers return every acknowledged record reads
/// back, and their old replicas are dropped or brought to the current version: in the end
/// every chunk has exactly three replicas, none stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_killed_under_appends_then_returning_leave_no_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (master, mut servers) = cluster(dir.path(), 5);
    let c = patient(&master, Duration::from_secs(90)).await;
    registered(&c, 5).await;
    c.create("/k").await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (c, acked) = (c.clone(), Arc::clone(&acked));
        writers.push(tokio::spawn(async move {
            let (mut out, mut h) = (Vec::new(), History::new());
            for n in 0..50 {
                out.push(append(&c, "/k", &mut h, 20 + w, n).await);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            (out, h)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 30 {
        assert!(Instant::now() < deadline, "appends did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let (mut all, mut h) = (Vec::new(), History::new());
    for w in writers {
        let (out, hw) = w.await.unwrap();
        all.extend(out);
        h.merge(hw);
    }
    for &i in &gone {
        servers[i].restarted(&master.addr);
    }
    for (off, rec) in &all {
        let got = c.read("/k", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "acknowledged record at {off} lost");
    }
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
    for (off, rec) in &all {
        let got = c.read("/k", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "record at {off} differs after healing");
    }
    check_promise(&c, "/k", &h, &mut servers).await;
}

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
    let mut writers = Vec::new();
    for w in 0..6u32 {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut h = History::new();
            for n in 0..12u32 {
                let id = RecordId { writer: w, seq: n };
                let rec =
                    gfs_testkit::record(id, 150_000 + ((w * 37 + n * 101) as usize % 100_000));
                h.sent(id, rec.len());
                let off = c.append("/acks", rec).await.unwrap();
                h.acked(id, off);
            }
            h
        }));
    }
    let mut h = History::new();
    for w in writers {
        h.merge(w.await.unwrap());
    }
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
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut h = History::new();
            for n in 0..10u32 {
                let id = RecordId { writer: w, seq: n };
                let rec =
                    gfs_testkit::record(id, 100_000 + ((w * 37 + n * 101) as usize % 100_000));
                h.sent(id, rec.len());
                match c.append("/wedged", rec).await {
                    Ok(off) => h.acked(id, off),
                    Err(e) => println!("record {w}/{n} not acknowledged: {e}"),
                }
            }
            h
        }));
    }
    let mut h = History::new();
    for w in writers {
        h.merge(w.await.unwrap());
    }
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

/// A GET of `path` from the HTTP server at `addr`: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// What is wrong with how the master counts the replicas of chunk `index` of `path`, whose
/// acknowledged records end at `end` inside the chunk, judged by the servers' own reports:
/// a server listed as a replica that lacks some of those records, and fsck, `stat` or the
/// cluster report calling the file healthy while fewer than three servers hold them all.
async fn miscounted(
    c: &Client,
    path: &str,
    index: usize,
    end: u64,
    servers: &[Server],
) -> Vec<String> {
    let l = c.refresh(path).await.unwrap();
    let ch = &l.chunks[index];
    let mut whole = Vec::new();
    let mut held = Vec::new();
    for s in servers {
        let r = committed(s, ch.handle).await;
        held.push(format!("{}: {r:?}", s.id));
        if r.is_some_and(|(v, len)| v == ch.version && len >= end) {
            whole.push(s.id.clone());
        }
    }
    let mut wrong: Vec<String> = ch
        .replicas
        .iter()
        .filter(|r| !whole.contains(&r.id))
        .map(|r| {
            format!(
                "{} is listed as a replica of chunk {index} (version {}) but lacks acknowledged records ending at {end}; (version, length) held: {held:?}",
                r.id, ch.version
            )
        })
        .collect();
    if whole.len() < 3 {
        let fsck = c.fsck(path).await.unwrap();
        if fsck.unhealthy.is_empty() {
            wrong.push(format!(
                "fsck calls {path} healthy with {} whole copies of chunk {index}: {held:?}",
                whole.len()
            ));
        }
        if c.stat(path).await.unwrap().under_replicated == 0 {
            wrong.push(format!(
                "stat says no chunk of {path} is under-replicated with {} whole copies of chunk {index}",
                whole.len()
            ));
        }
        if c.report().await.unwrap().under_replicated == 0 {
            wrong.push(format!(
                "the cluster report says no chunk is under-replicated with {} whole copies of chunk {index}",
                whole.len()
            ));
        }
    }
    wrong
}

/// Waits (10 s at most) until [`miscounted`] finds nothing wrong with chunk `index` (the last
/// COMMITs may still be on their way to a secondary), then checks that it stays so for 2 s
/// (several heartbeats: a replica the master has not heard of yet must not hide).
async fn counted_right(c: &Client, path: &str, index: usize, end: u64, servers: &[Server]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let wrong = miscounted(c, path, index, end, servers).await;
        if wrong.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{wrong:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let wrong = miscounted(c, path, index, end, servers).await;
        assert!(wrong.is_empty(), "{wrong:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let chunk = c.refresh(path).await.unwrap().chunks[0].clone();
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
        if let Ok(off) = dc
            .append(chunk.handle, chunk.version, 1000 + i as u64, rec)
            .await
        {
            h.acked(id, chunk.file_offset + off);
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
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut h = History::new();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = RecordId { writer: w, seq: n };
                // Small and paced: the chunk must not fill (and seal) before the relegation. At
                // most 4 writers x 12 s / 40 ms x 600 B on average = 720 KB, under the 1 MiB
                // chunk however fast the appends are.
                let rec = gfs_testkit::record(id, 200 + ((w * 37 + n * 101) as usize % 800));
                h.sent(id, rec.len());
                if let Ok(off) = c.append(path, rec).await {
                    h.acked(id, off);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            h
        }));
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        h.merge(w.await.unwrap());
    }
    let chunks = c.refresh(path).await.unwrap().chunks.clone();
    assert_eq!(chunks.len(), 1, "the chunk filled before the relegation");
    assert!(
        chunks[0].version >= 2,
        "no relegation happened (version {})",
        chunks[0].version
    );
    // Every replica the master lists holds every acknowledged record, and the chunk is not
    // called healthy with fewer whole copies than the goal.
    let end = h
        .acked
        .iter()
        .map(|(id, off)| off + h.sent[id] as u64)
        .max()
        .unwrap();
    counted_right(&c, path, 0, end, &servers).await;
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
