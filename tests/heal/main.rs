//! Self-healing with real processes: chunkservers SIGKILLed under load, their chunks copied to
//! the survivors by the master.
//!
//! One file per theme (`t10_*` ...); the helpers they share are below.

#![allow(clippy::unwrap_used, missing_docs)]

mod t10_rereplication;
mod t20_corruption;
mod t30_stale;
mod t40_trash_and_restarts;
mod t50_catch_up_and_seal;
mod t60_lost_replies;

use std::time::{Duration, Instant};

use gfs_client::{Client, ClientConfig};
use gfs_testkit::fixture::{Server, check_promise, registered};
use gfs_testkit::master_proc::MasterProc;
use gfs_testkit::{Appenders, History, RecordId, Workload, assert_acked_read_back, http_get};

/// A master (dead after 2 s of silence) and `n` chunkservers registered with it.
fn cluster(dir: &std::path::Path, n: usize) -> (MasterProc, Vec<Server>) {
    cluster_args(dir, n, &[])
}

/// The arguments of chunkservers that append in two rounds. A secondary paused (SIGSTOP) while
/// its primary appends comes back short in two rounds (the PREPAREs in its socket are staged
/// when it resumes, and no COMMIT follows from a primary that died meanwhile); in one round the
/// WRITEs waiting in its socket commit when it resumes, so it is not short. The tests that
/// need a short replica that way run in two rounds.
const TWO_ROUNDS: &[&str] = &["--one-round", "false"];

/// [`cluster`] with `extra` command-line arguments for every chunkserver.
fn cluster_args(dir: &std::path::Path, n: usize, extra: &[&str]) -> (MasterProc, Vec<Server>) {
    let master =
        MasterProc::start_with(&dir.join("master"), "127.0.0.1:0", &["--dead-after", "2s"]);
    let servers = Server::with_master_args(dir, n, &master.addr, extra);
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

/// Whether the bad replica of `path`'s first chunk on server `bad` (its chunk file `file`,
/// damaged at byte `at`, which should hold `want`) was restored in place: the byte back on
/// disk, and the chunk listed on exactly the servers `holders` again (no copy elsewhere). Fails
/// past `deadline`; pauses 100 ms before saying no.
async fn restored_in_place(
    c: &Client,
    path: &str,
    (bad, holders): (&str, &[String]),
    (file, at, want): (&std::path::Path, usize, u8),
    deadline: Instant,
) -> bool {
    let l = c.refresh(path).await.unwrap();
    let mut ids: Vec<String> = l.chunks[0].replicas.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let byte = std::fs::read(file).ok().and_then(|b| b.get(at).copied());
    if ids == holders && byte == Some(want) {
        return true;
    }
    assert!(
        Instant::now() < deadline,
        "the corrupt replica on {bad} was not restored in place: replicas {ids:?} (were \
         {holders:?}), byte {at} of its file {byte:?}, want {want}"
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

/// What is wrong with how the master counts the replicas of chunk `index` of `path`, whose
/// acknowledged records end at `end` inside the chunk, judged by the servers' own reports:
/// a server listed as a replica that lacks some of those records, and fsck, `stat` or the
/// cluster report calling the file healthy while fewer than three servers hold them all.
/// `Err` (with what the servers hold) when one is past the listed version: a bump is under
/// way and the view mixes both sides of it.
async fn miscounted(
    c: &Client,
    path: &str,
    index: usize,
    end: u64,
    servers: &[Server],
) -> Result<Vec<String>, Vec<String>> {
    let l = c.refresh(path).await.unwrap();
    let ch = &l.chunks[index];
    let mut whole = Vec::new();
    let mut held = Vec::new();
    let mut ahead = false;
    for s in servers {
        let r = committed(s, ch.handle).await;
        held.push(format!("{}: {r:?}", s.id));
        if r.is_some_and(|(v, len)| v == ch.version && len >= end) {
            whole.push(s.id.clone());
        }
        ahead |= r.is_some_and(|(v, _)| v > ch.version);
    }
    // A replica past the listed version: a bump is under way (replicas take the new version
    // before the master logs it), and this view mixes both sides of it.
    if ahead {
        return Err(held);
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
    Ok(wrong)
}

/// Waits (10 s at most) until [`miscounted`] finds nothing wrong with chunk `index` (the last
/// COMMITs may still be on their way to a secondary), then checks that it stays so for 2 s
/// (several heartbeats: a replica the master has not heard of yet must not hide).
async fn counted_right(c: &Client, path: &str, index: usize, end: u64, servers: &[Server]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match miscounted(c, path, index, end, servers).await {
            Ok(wrong) if wrong.is_empty() => break,
            Ok(wrong) => assert!(Instant::now() < deadline, "{wrong:#?}"),
            Err(held) => assert!(Instant::now() < deadline, "a bump never ends: {held:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A view taken in the middle of a bump does not count towards the 2 s (for 10 s at most).
    let mut until = Instant::now() + Duration::from_secs(2);
    let bumps_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match miscounted(c, path, index, end, servers).await {
            Ok(wrong) => assert!(wrong.is_empty(), "{wrong:#?}"),
            Err(held) => {
                assert!(Instant::now() < bumps_end, "a bump never ends: {held:?}");
                until += Duration::from_millis(200);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
