//! The client against a real master and chunkservers (in this process, on real sockets and
//! real files, 1 MiB chunks).

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use gfs_chunkserver::{ChunkServer, ChunkserverConfig};
use gfs_client::{Client, ClientConfig, ClientError};
use gfs_master::{Master, MasterConfig};
use tokio::io::AsyncReadExt;

const CS: u64 = 1 << 20;

struct Cluster {
    dir: tempfile::TempDir,
    master: Master,
    servers: Vec<Option<ChunkServer>>,
    client: Client,
}

async fn cluster(n: usize) -> Cluster {
    cluster_with(n, MasterConfig::default().max_clones).await
}

/// A cluster whose master runs at most `max_clones` re-replication copies at once.
async fn cluster_with(n: usize, max_clones: usize) -> Cluster {
    cluster_tuned(n, max_clones, |_| {}, ClientConfig::default()).await
}

/// [`cluster_with`], each chunkserver's configuration passed through `tune` first, the client
/// configured as `client` (write pieces and deadline of the tests' own).
async fn cluster_tuned(
    n: usize,
    max_clones: usize,
    tune: impl Fn(&mut ChunkserverConfig),
    client: ClientConfig,
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(MasterConfig {
        max_clones,
        listen: "127.0.0.1:0".into(),
        http_listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("master"),
        chunk_size: gfs_util::Size(CS),
        lease: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(300),
        dead_after: Duration::from_secs(2),
        ..MasterConfig::default()
    })
    .await
    .unwrap();
    let mut servers = Vec::new();
    for i in 0..n {
        let mut cfg = server_config(dir.path(), i, &master);
        tune(&mut cfg);
        servers.push(Some(ChunkServer::start(cfg).await.unwrap()));
    }
    let client = Client::connect_with(
        &master.addr.to_string(),
        ClientConfig {
            write_piece: 256 << 10,
            op_deadline: Duration::from_secs(30),
            ..client
        },
    )
    .await
    .unwrap();
    Cluster {
        dir,
        master,
        servers,
        client,
    }
}

async fn start_server(dir: &std::path::Path, i: usize, master: &Master) -> ChunkServer {
    ChunkServer::start(server_config(dir, i, master))
        .await
        .unwrap()
}

fn server_config(dir: &std::path::Path, i: usize, master: &Master) -> ChunkserverConfig {
    ChunkserverConfig {
        id: format!("cs{i}"),
        data_dir: dir.join(format!("cs{i}")),
        data_port: 0,
        repl_port: 0,
        http_port: 0,
        chunk_size: gfs_util::Size(CS),
        master: master.addr.to_string(),
        ..ChunkserverConfig::default()
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn put(c: &Client, path: &str, data: &[u8]) -> u64 {
    c.create(path).await.unwrap();
    let mut w = c.writer(path);
    // Uneven write sizes, so pieces and chunk ends do not line up with them.
    for part in data.chunks(100_003) {
        w.write(part).await.unwrap();
    }
    w.finish().await.unwrap()
}

async fn get(c: &Client, path: &str) -> Vec<u8> {
    let mut r = c.reader(path).await.unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len() as u64, r.size());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_calls_and_their_errors() {
    let cl = cluster(0).await;
    let c = &cl.client;
    c.mkdir("/a/b", true).await.unwrap();
    c.create("/a/b/f").await.unwrap();
    assert!(matches!(
        c.create("/a/b/f").await,
        Err(ClientError::AlreadyExists(_))
    ));
    assert!(matches!(
        c.create("/nope/f").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        c.create("relative").await,
        Err(ClientError::InvalidPath(_))
    ));
    assert!(matches!(
        c.create("/a//b").await,
        Err(ClientError::InvalidPath(_))
    ));
    let names: Vec<String> = c
        .list("/a/b")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(names, ["/a/b/f"]);
    c.rename("/a/b", "/a/c").await.unwrap();
    let st = c.stat("/a/c/f").await.unwrap();
    assert!(!st.is_dir);
    assert_eq!((st.replication, st.chunks), (3, 0));
    assert!(matches!(
        c.delete("/a", false).await,
        Err(ClientError::FailedPrecondition(_))
    ));
    c.delete("/a", true).await.unwrap();
    assert!(matches!(
        c.stat("/a/c/f").await,
        Err(ClientError::NotFound(_))
    ));
    drop(cl.master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_file_makes_its_missing_parents_as_hdfs_does() {
    let cl = cluster(0).await;
    let c = &cl.client;
    c.create_with_parents("/x/y/f").await.unwrap();
    assert!(c.stat("/x/y").await.unwrap().is_dir);
    assert!(!c.stat("/x/y/f").await.unwrap().is_dir);
    assert!(matches!(
        c.create_with_parents("/x/y/f").await,
        Err(ClientError::AlreadyExists(_))
    ));
    // An existing parent is fine; a file in the way is not.
    c.create_with_parents("/x/g").await.unwrap();
    assert!(matches!(
        c.create_with_parents("/x/g/h").await,
        Err(ClientError::FailedPrecondition(_))
    ));
    assert!(matches!(
        c.create_with_parents("/x/g/h/i").await,
        Err(ClientError::FailedPrecondition(_))
    ));
    assert!(matches!(
        c.create_with_parents("relative/f").await,
        Err(ClientError::InvalidPath(_))
    ));
    // The appenders' create: parents too, and an existing file is not an error.
    c.ensure_file("/logs/app").await.unwrap();
    c.ensure_file("/logs/app").await.unwrap();
    assert!(c.stat("/logs").await.unwrap().is_dir);
    assert!(!c.stat("/logs/app").await.unwrap().is_dir);
    c.ensure_file("/top").await.unwrap();
    assert!(matches!(
        c.ensure_file("/x/g/h/i").await,
        Err(ClientError::FailedPrecondition(_))
    ));
    // Plain create still wants its parent.
    assert!(matches!(
        c.create("/nope/f").await,
        Err(ClientError::NotFound(_))
    ));
    drop(cl.master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_fsck_and_stat_detail_come_in_the_clients_types() {
    let cl = cluster(3).await;
    let c = &cl.client;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.report().await.unwrap();
        let alive = r
            .servers
            .iter()
            .filter(|s| s.state == gfs_client::ServerState::Alive)
            .count();
        if alive == 3 {
            assert_eq!(r.replication_goal, 3);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let data = pattern(CS as usize + 1000, 7);
    c.mkdir("/d", false).await.unwrap();
    put(c, "/d/f", &data).await;
    let f = c.fsck("/d").await.unwrap();
    assert_eq!((f.path.as_str(), f.files, f.chunks), ("/d", 1, 2));
    assert!(f.healthy && f.unhealthy.is_empty());
    let s = c.stat_detail("/d/f").await.unwrap();
    assert_eq!(s.kind, gfs_client::EntryKind::File);
    assert_eq!(s.size, data.len() as u64);
    let lengths: Vec<Option<u64>> = s.chunks.iter().map(|ch| ch.length).collect();
    assert_eq!(lengths, [Some(CS), Some(1000)]);
    assert!(s.chunks[0].sealed && !s.chunks[0].lost);
    assert_eq!(s.chunks[0].replicas.len(), 3);
    let d = c.stat_detail("/d").await.unwrap();
    assert_eq!(
        (d.kind, d.size, d.chunks.len()),
        (gfs_client::EntryKind::Dir, 0, 0)
    );
    drop(cl.master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let e = Client::connect(&addr).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&addr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_writes_read_back_byte_for_byte() {
    let cl = cluster(3).await;
    let c = &cl.client;
    let cs = CS as usize;
    for (i, len) in [0, 1, cs - 1, cs, cs + 1, 3 * cs + cs / 2]
        .into_iter()
        .enumerate()
    {
        let path = format!("/put{i}");
        let data = pattern(len, i as u64);
        assert_eq!(put(c, &path, &data).await, len as u64);
        let back = get(c, &path).await;
        assert!(back == data, "{path}: {len} bytes do not read back");
        assert_eq!(c.size(&path).await.unwrap(), len as u64);
        let l = c.refresh(&path).await.unwrap();
        assert_eq!(l.chunks.len(), len.div_ceil(cs), "{path}: chunks");
        // Every chunk but the last is full and sealed: no padding anywhere.
        for ch in l.chunks.iter().take(l.chunks.len().saturating_sub(1)) {
            assert_eq!(ch.sealed_length, Some(CS), "{path}: chunk {}", ch.index);
        }
        // Positioned reads see the same bytes.
        if len > 10 {
            let at = (len / 2) as u64;
            let got = c.read(&path, at, 10).await.unwrap();
            let chunk_end = ((at / CS) + 1) * CS;
            let want = &data[at as usize..(at + 10).min(chunk_end).min(len as u64) as usize];
            assert_eq!(&got[..], want);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_appends_land_once_and_pad_over_to_the_next_chunk() {
    let cl = cluster(3).await;
    let c = &cl.client;
    c.create("/log").await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for n in 0..25u64 {
                let rec = pattern(1000 + (w * 25 + n) as usize * 37 % 20_000, w * 1000 + n);
                let off = c.append("/log", rec.clone()).await.unwrap();
                out.push((off, rec));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
    offsets.sort();
    offsets.dedup();
    assert_eq!(offsets.len(), 200, "two records at one offset");
    for (off, rec) in &all {
        let got = c.read("/log", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "record at {off} differs");
    }
    // Everything appended is in the file exactly once, in offset order, each record at the
    // offset it was given: offsets are positions in the file, so the records tile it.
    all.sort_by_key(|(o, _)| *o);
    let mut end = 0;
    for (off, rec) in &all {
        assert_eq!(*off, end, "a gap or an overlap before offset {off}");
        end += rec.len() as u64;
    }
    let whole: Vec<u8> = all.iter().flat_map(|(_, r)| r.clone()).collect();
    assert!(get(c, "/log").await == whole);

    // Too large: refused before anything is sent.
    let e = c
        .append("/log", Bytes::from(vec![0; CS as usize / 4 + 1]))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::RecordTooLarge { .. }), "{e}");

    // Pad-over: four records of a quarter minus one fit, the fifth starts the next chunk.
    c.create("/pad").await.unwrap();
    let q = CS as usize / 4 - 1;
    for i in 0..4 {
        let off = c.append("/pad", vec![i as u8; q]).await.unwrap();
        assert_eq!(off, (i * q) as u64);
    }
    let off = c.append("/pad", vec![9u8; q]).await.unwrap();
    // It opens chunk 1, right after chunk 0's data in the file: padding takes no offsets.
    assert_eq!(off, 4 * q as u64, "the fifth record's file offset");
    let l = c.refresh("/pad").await.unwrap();
    assert_eq!(l.chunks.len(), 2);
    assert_eq!(l.chunks[0].sealed_length, Some(4 * q as u64));
    assert_eq!(l.chunks[1].file_offset, 4 * q as u64);
    let got = c.read("/pad", off, q as u64).await.unwrap();
    assert!(
        got[..] == vec![9u8; q][..],
        "the fifth record reads back at its offset"
    );
    assert_eq!(c.size("/pad").await.unwrap(), 5 * q as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fail_over_from_dead_and_corrupt_replicas() {
    let mut cl = cluster(3).await;
    let c = cl.client.clone();
    let data = pattern(CS as usize + 300_000, 7);
    put(&c, "/f", &data).await;
    let l = c.refresh("/f").await.unwrap();
    // Damage two of the three replicas of chunk 0 on disk: one flipped byte each.
    let h = l.chunks[0].handle;
    for i in [0, 1] {
        let file = cl.dir.path().join(format!("cs{i}")).join(h.to_string());
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[1000 + i * 70_000] ^= 0x40;
        std::fs::write(&file, bytes).unwrap();
    }
    assert!(get(&c, "/f").await == data, "corrupt replicas were served");
    // Stop one server outright: reads go to the others.
    let s = cl.servers[2].take().unwrap();
    s.stop().await.unwrap();
    let got = c.read("/f", CS, 300_000).await.unwrap();
    assert!(got[..] == data[CS as usize..]);
}

/// Two of a chunk's three replicas stop during appends, with a fourth server up. The length
/// of the chunk is then unknown (an acknowledged append may be on the two that stopped), so
/// the file cannot move on to a new chunk: appends wait, and once the two return they land
/// right after every earlier record, each at the offset it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_a_lost_quorum_and_resume_at_the_right_offsets() {
    // Re-replication off: a copy of the chunk could otherwise restore its quorum first, and
    // this test is about the file waiting.
    let mut cl = cluster_with(4, 0).await;
    let c = cl.client.clone();
    c.create("/q").await.unwrap();
    let mut acked = Vec::new();
    for n in 0..20u64 {
        let rec = pattern(3000, n);
        acked.push((c.append("/q", rec.clone()).await.unwrap(), rec));
    }
    let l = c.refresh("/q").await.unwrap();
    let first = l.chunks[0].clone();
    let ids: Vec<usize> = first
        .replicas
        .iter()
        .map(|r| r.id[2..].parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    // Any two of the three.
    let gone = [ids[0], ids[1]];
    for i in gone {
        cl.servers[i].take().unwrap().stop().await.unwrap();
    }
    let later: Vec<Vec<u8>> = (20..30u64).map(|n| pattern(3000, n)).collect();
    let appends = {
        let (c, later) = (c.clone(), later.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            for rec in later {
                out.push(c.append("/q", rec).await.unwrap());
            }
            out
        })
    };
    // Well past the lease (2 s) and dead_after (2 s): still waiting, and no new chunk.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !appends.is_finished(),
        "an append went through without a quorum"
    );
    let l = c.refresh("/q").await.unwrap();
    assert_eq!(
        l.chunks.len(),
        1,
        "the file moved on past a chunk of unknown length"
    );
    // The two come back (same disks, new ports): the waiting appends go through.
    for i in gone {
        cl.servers[i] = Some(start_server(cl.dir.path(), i, &cl.master).await);
    }
    let offsets = tokio::time::timeout(Duration::from_secs(30), appends)
        .await
        .expect("appends resumed")
        .unwrap();
    acked.extend(offsets.into_iter().zip(later));
    // Offsets are byte positions in the file: the records tile it, in order.
    acked.sort_by_key(|(off, _)| *off);
    let mut end = 0;
    for (off, rec) in &acked {
        assert_eq!(*off, end, "a gap or an overlap before offset {off}");
        end += rec.len() as u64;
        let got = c.read("/q", *off, rec.len() as u64).await.unwrap();
        assert!(got[..] == rec[..], "acknowledged record at {off} lost");
    }
    let whole: Vec<u8> = acked.iter().flat_map(|(_, r)| r.clone()).collect();
    assert!(
        get(&c, "/q").await == whole,
        "the file is not its records in order"
    );
}

/// Finding 8: chunk reports in pieces. With heartbeats of at most 64 bytes (one replica each),
/// every server's report of its replicas takes several pieces; the master still locates every
/// replica of every chunk, counts the file healthy, and the file reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_reports_in_many_pieces_keep_every_replica_located() {
    let cl = cluster_tuned(
        3,
        MasterConfig::default().max_clones,
        |cfg| cfg.report_piece_bytes = 64,
        ClientConfig::default(),
    )
    .await;
    let c = &cl.client;
    let data = pattern(CS as usize * 7 / 2, 11);
    put(c, "/f", &data).await;
    // Several heartbeat intervals (300 ms): every server has sent whole passes since.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = c.stat("/f").await.unwrap();
    assert_eq!(st.chunks, 4);
    assert_eq!(
        (st.under_replicated, st.lost_chunks, st.stale_replicas),
        (0, 0, 0)
    );
    let l = c.refresh("/f").await.unwrap();
    assert!(l.chunks.iter().all(|ch| ch.replicas.len() == 3), "{l:?}");
    assert_eq!(get(c, "/f").await, data);
    for s in cl.servers.into_iter().flatten() {
        s.stop().await.unwrap();
    }
}

/// Finding 8: GetChunks is paged. With pages of 2 chunks, a file of 7 chunks (6.5 MiB: every
/// chunk but the last full and sealed) lists whole, in order, each chunk at its file offset
/// across pages, and reads back whole through the reader, `read` at any offset, and `size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_more_chunks_than_a_page_lists_and_reads_whole() {
    let cl = cluster_tuned(
        3,
        MasterConfig::default().max_clones,
        |_| {},
        ClientConfig {
            chunks_per_page: 2,
            ..ClientConfig::default()
        },
    )
    .await;
    let c = &cl.client;
    let data = pattern(CS as usize * 13 / 2, 21);
    assert_eq!(put(c, "/big", &data).await, data.len() as u64);
    let l = c.refresh("/big").await.unwrap();
    assert_eq!(l.chunks.len(), 7, "{l:?}");
    for (i, ch) in l.chunks.iter().enumerate() {
        assert_eq!(ch.index, i as u64);
        assert_eq!(ch.file_offset, i as u64 * CS, "chunk {i}");
    }
    assert_eq!(c.size("/big").await.unwrap(), data.len() as u64);
    assert_eq!(get(c, "/big").await, data);
    // A read stops at the end of the chunk holding its offset.
    for at in [0, CS - 10, 3 * CS + 5, 6 * CS + 100] {
        let got = c.read("/big", at, 64).await.unwrap();
        let end = (at + 64).min((at / CS + 1) * CS) as usize;
        assert_eq!(&got[..], &data[at as usize..end], "at {at}");
    }
    for s in cl.servers.into_iter().flatten() {
        s.stop().await.unwrap();
    }
}

/// A reader that looked at a file while it was still empty reads what was appended since at
/// the offsets the appends were given (its cached chunk list is not taken for the file's end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_saw_the_file_empty_reads_later_appends() {
    let cl = cluster(3).await;
    let writer = &cl.client;
    writer.create("/later").await.unwrap();
    let reader = Client::connect(&cl.master.addr.to_string()).await.unwrap();
    // The reader sees the file empty (and caches that).
    assert!(reader.refresh("/later").await.unwrap().chunks.is_empty());
    assert!(reader.read("/later", 0, 10).await.unwrap().is_empty());
    let rec = pattern(5_000, 7);
    let off = writer.append("/later", rec.clone()).await.unwrap();
    let got = reader.read("/later", off, rec.len() as u64).await.unwrap();
    assert!(
        got[..] == rec[..],
        "a record acknowledged at {off} read back as {} bytes",
        got.len()
    );
}
