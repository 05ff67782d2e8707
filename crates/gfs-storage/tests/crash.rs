//! Crash tests: a child process commits appends and is killed with SIGKILL at a random instant;
//! the reopened store must hold every acknowledged append and a consistent committed prefix.
//! Then torn files: chunk and metadata files truncated at random byte positions.

#![allow(clippy::unwrap_used)]

use gfs_util::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError, StoreConfig};
use gfs_testkit::storage::{Mix, payload, test_config};
use tokio::sync::Mutex;

const CHILD_DIR: &str = "GFS_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "GFS_CRASH_CHILD_ROUND";
const MAX_RECORD: u64 = 40_000;
const WRITERS_PER_CHUNK: usize = 3;
const CHUNKS: u64 = 4;

fn seed() -> u64 {
    std::env::var("GFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The writer process. Run only by `crash_and_recover`, which sets the environment.
#[test]
#[ignore = "child process of crash_and_recover"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("child needs its directory");
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_main(Path::new(&dir), round));
}

async fn child_main(dir: &Path, round: u64) {
    let store = Arc::new(ChunkStore::open(dir, test_config()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for lane in 0..CHUNKS {
        // Each lane owns a sequence of chunks; a full chunk is sealed and the lane moves on.
        let handle = ChunkHandle(round * 1000 + lane * 100);
        store.create(handle, 1).await.unwrap();
        let lane_state = Arc::new(Mutex::new((handle, 0u64)));
        for w in 0..WRITERS_PER_CHUNK as u64 {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            let lane_state = Arc::clone(&lane_state);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    n += 1;
                    let op = OpId((round << 48) | (lane << 40) | (w << 32) | n);
                    // Reserve the next offset and stage under the lane lock, as a primary does.
                    let handle = {
                        let mut g = lane_state.lock().await;
                        let data = payload(g.0, op, MAX_RECORD);
                        let len = data.len() as u64;
                        if g.1 + len > 1 << 20 {
                            store.seal(g.0).await.unwrap();
                            g.0 = ChunkHandle(g.0.0 + 1);
                            g.1 = 0;
                            store.create(g.0, 1).await.unwrap();
                        }
                        let data = payload(g.0, op, MAX_RECORD);
                        store
                            .stage(StageRequest {
                                op,
                                handle: g.0,
                                version: 1,
                                offset: g.1,
                                data: Bytes::from(data.clone()),
                            })
                            .unwrap();
                        g.1 += data.len() as u64;
                        g.0
                    };
                    let c = match store.commit(handle, op).await {
                        Ok(c) => c,
                        // Another writer sealed the chunk between this stage and its commit
                        // (a seal drops what is not yet committing): never acknowledged.
                        Err(StorageError::NotStaged { .. } | StorageError::Sealed { .. }) => {
                            continue;
                        }
                        Err(e) => panic!("commit: {e}"),
                    };
                    let mut o = out.lock().unwrap();
                    writeln!(
                        o,
                        "ACK {} {} {} {}",
                        handle.0, op.0, c.record.offset, c.record.len
                    )
                    .unwrap();
                    o.flush().unwrap();
                }
            }));
        }
    }
    // The writers never stop: the parent kills this process.
    drop(tasks);
    std::future::pending::<()>().await;
}

struct Ack {
    handle: ChunkHandle,
    op: OpId,
    offset: u64,
    len: u32,
}

/// Runs the child for a while, kills it with SIGKILL, and returns the appends it acknowledged.
fn run_and_kill(dir: &Path, round: u64, run_for: Duration) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            acks.push(Ack {
                handle: ChunkHandle(f[0]),
                op: OpId(f[1]),
                offset: f[2],
                len: f[3] as u32,
            });
        }
        acks
    });
    std::thread::sleep(run_for);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the writer exited on its own"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Checks every acknowledged append and the consistency of every chunk's committed prefix.
fn verify(dir: &Path, acks: &[Ack]) -> usize {
    let store = ChunkStore::open(dir, test_config()).unwrap();
    for a in acks {
        let rec = store.lookup_op(a.handle, a.op).unwrap();
        assert_eq!(
            rec.map(|r| (r.offset, r.len)),
            Some((a.offset, a.len)),
            "acknowledged op {} on chunk {} lost",
            a.op,
            a.handle
        );
        let got = store.read(a.handle, a.offset, u64::from(a.len)).unwrap();
        assert_eq!(&got[..], &payload(a.handle, a.op, MAX_RECORD)[..]);
    }
    let report = store.scrub();
    assert!(
        report.corrupt.is_empty(),
        "corrupt blocks: {:?}",
        report.corrupt
    );
    for info in store.list() {
        let data = store.read(info.handle, 0, info.committed_len).unwrap();
        assert_eq!(data.len() as u64, info.committed_len);
        let file_len = std::fs::metadata(dir.join(info.handle.0.to_string()))
            .unwrap()
            .len();
        assert_eq!(
            file_len, info.committed_len,
            "uncommitted bytes left on disk"
        );
    }
    acks.len()
}

#[test]
fn crash_and_recover() {
    let seed = seed();
    println!("crash_and_recover seed {seed} (set GFS_TEST_SEED to repeat the kill timings)");
    let mut mix = Mix(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    let start = Instant::now();
    for round in 1..=4 {
        let run_for = Duration::from_millis(mix.range(150, 900));
        let acks = run_and_kill(dir.path(), round, run_for);
        total += verify(dir.path(), &acks);
    }
    assert!(
        total > 50,
        "too few acknowledged appends ({total}) to prove anything"
    );
    println!(
        "{total} acknowledged appends verified in {:?}",
        start.elapsed()
    );
}

/// One append of the reference workload, in the global order it was committed.
#[derive(Clone, Copy)]
struct Op {
    handle: ChunkHandle,
    op: OpId,
    offset: u64,
    len: u32,
}

const REF_MAX: u64 = 20_000;

/// Appends above this size are written in place; smaller ones ride in the WAL.
fn torn_config() -> StoreConfig {
    StoreConfig {
        inline_max: 8 << 10,
        ..test_config()
    }
}

/// Commits interleaved appends to three chunks, one at a time, and returns them in order.
/// `copy_to`, if given, receives a copy of the directory taken while the store is still open
/// (so its WAL holds every record, as after a crash).
async fn write_reference(dir: &Path, copy_to: Option<&Path>) -> Vec<Op> {
    // The chunks are created in one session (a clean stop gives them snapshots), the appends
    // come in the next, so a copy holds snapshots plus a WAL of appends.
    let store = ChunkStore::open(dir, torn_config()).unwrap();
    for h in 1..=3u64 {
        store.create(ChunkHandle(h), 1).await.unwrap();
    }
    drop(store);
    let store = ChunkStore::open(dir, torn_config()).unwrap();
    let mut ops = Vec::new();
    let mut next = HashMap::default();
    for i in 0..90u64 {
        let handle = ChunkHandle(1 + i % 3);
        let op = OpId(i);
        let data = payload(handle, op, REF_MAX);
        let offset = *next.get(&handle).unwrap_or(&0);
        store
            .stage(StageRequest {
                op,
                handle,
                version: 1,
                offset,
                data: Bytes::from(data.clone()),
            })
            .unwrap();
        store.commit(handle, op).await.unwrap();
        next.insert(handle, offset + data.len() as u64);
        ops.push(Op {
            handle,
            op,
            offset,
            len: data.len() as u32,
        });
    }
    if let Some(to) = copy_to {
        copy_dir(dir, to);
    }
    ops
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn cut(path: &Path, at: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(at)
        .unwrap();
}

/// Which of `ops` the store kept; asserts that each chunk kept a readable prefix of its appends
/// and that its committed length ends exactly there.
fn survivors(store: &ChunkStore, ops: &[Op]) -> Vec<bool> {
    let kept: Vec<bool> = ops
        .iter()
        .map(|o| match store.lookup_op(o.handle, o.op) {
            Ok(r) => r.is_some(),
            Err(StorageError::NotFound(_)) => false,
            Err(e) => panic!("{e}"),
        })
        .collect();
    for h in 1..=3u64 {
        let handle = ChunkHandle(h);
        let mine: Vec<_> = ops
            .iter()
            .zip(&kept)
            .filter(|(o, _)| o.handle == handle)
            .collect();
        let n = mine.iter().take_while(|(_, k)| **k).count();
        assert!(
            mine[n..].iter().all(|(_, k)| !**k),
            "chunk {h} kept a non-prefix"
        );
        let Ok(info) = store.info(handle) else {
            continue;
        };
        let end = mine[..n]
            .last()
            .map(|(o, _)| o.offset + u64::from(o.len))
            .unwrap_or(0);
        assert_eq!(info.committed_len, end, "chunk {h}");
        for (o, _) in &mine[..n] {
            let got = store.read(handle, o.offset, u64::from(o.len)).unwrap();
            assert_eq!(&got[..], &payload(handle, o.op, REF_MAX)[..]);
        }
    }
    kept
}

#[tokio::test]
async fn torn_files_after_a_crash_recover_to_a_consistent_prefix() {
    let seed = seed();
    println!("torn_files seed {seed} (set GFS_TEST_SEED to repeat)");
    let mut mix = Mix(seed);
    let (live, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ops = write_reference(live.path(), Some(crashed.path())).await;
    let wal_len = std::fs::metadata(crashed.path().join("wal")).unwrap().len();
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), dir.path());
        let handle = ChunkHandle(mix.range(1, 4));
        match round % 3 {
            // A torn WAL: the survivors are exactly the appends written before the tear.
            0 => {
                let at = if round == 0 {
                    wal_len
                } else {
                    mix.range(0, wal_len)
                };
                cut(&dir.path().join("wal"), at);
                let store = ChunkStore::open(dir.path(), torn_config()).unwrap();
                let kept = survivors(&store, &ops);
                let n = kept.iter().take_while(|k| **k).count();
                assert!(
                    kept[n..].iter().all(|k| !k),
                    "WAL cut at {at} kept a non-prefix"
                );
                if at == wal_len {
                    assert_eq!(n, ops.len());
                }
            }
            // A torn chunk file: inline appends are redone from the WAL; the chunk keeps its
            // appends up to the first in-place one whose bytes are gone.
            1 => {
                let path = dir.path().join(handle.0.to_string());
                let at = mix.range(0, std::fs::metadata(&path).unwrap().len());
                cut(&path, at);
                let store = ChunkStore::open(dir.path(), torn_config()).unwrap();
                let kept = survivors(&store, &ops);
                let expect = ops
                    .iter()
                    .filter(|o| o.handle == handle)
                    .take_while(|o| {
                        u64::from(o.len) <= 8 << 10 || o.offset + u64::from(o.len) <= at
                    })
                    .count();
                let got = ops
                    .iter()
                    .zip(&kept)
                    .filter(|(o, k)| o.handle == handle && **k)
                    .count();
                assert_eq!(got, expect, "chunk file cut at {at}");
                for (o, k) in ops.iter().zip(&kept) {
                    assert!(*k || o.handle == handle, "another chunk lost data");
                }
            }
            // A damaged snapshot: the chunk is quarantined, the others are whole.
            _ => {
                let path = dir.path().join(format!("{}.meta", handle.0));
                let at = mix.range(0, std::fs::metadata(&path).unwrap().len());
                cut(&path, at);
                let store = ChunkStore::open(dir.path(), torn_config()).unwrap();
                assert_eq!(store.quarantined(), &[handle]);
                assert!(
                    dir.path()
                        .join(format!("{}.meta.corrupt", handle.0))
                        .exists()
                );
                let kept = survivors(&store, &ops);
                for (o, k) in ops.iter().zip(&kept) {
                    assert_eq!(*k, o.handle != handle);
                }
            }
        }
    }
}

#[tokio::test]
async fn torn_files_after_a_clean_stop() {
    let seed = seed();
    println!("torn_files_after_a_clean_stop seed {seed} (set GFS_TEST_SEED to repeat)");
    let mut mix = Mix(seed);
    let reference = tempfile::tempdir().unwrap();
    let ops = write_reference(reference.path(), None).await;
    for _ in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(reference.path(), dir.path());
        let handle = ChunkHandle(mix.range(1, 4));
        let path = dir.path().join(handle.0.to_string());
        let at = mix.range(0, std::fs::metadata(&path).unwrap().len());
        cut(&path, at);
        // Nothing in the WAL can repair it: every append that is still whole is kept.
        let store = ChunkStore::open(dir.path(), torn_config()).unwrap();
        let kept = survivors(&store, &ops);
        for (o, k) in ops.iter().zip(&kept) {
            let whole = o.handle != handle || o.offset + u64::from(o.len) <= at;
            assert_eq!(*k, whole, "chunk file cut at {at}");
        }
    }
}

/// The fixed-seed reproduction of a case the random test found: the WAL cut inside its header.
#[tokio::test]
async fn a_wal_cut_inside_its_header_opens_with_no_records() {
    let (live, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ops = write_reference(live.path(), Some(crashed.path())).await;
    for at in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), dir.path());
        cut(&dir.path().join("wal"), at);
        let store = ChunkStore::open(dir.path(), torn_config()).unwrap();
        let kept = survivors(&store, &ops);
        assert!(
            kept.iter().all(|k| !k),
            "cut at {at}: records survived a headerless WAL"
        );
    }
    // A wrong header is not a torn one: it stays an error.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(crashed.path(), dir.path());
    std::fs::write(dir.path().join("wal"), b"NOTAWAL!").unwrap();
    assert!(matches!(
        ChunkStore::open(dir.path(), torn_config()),
        Err(StorageError::CorruptMetadata { .. })
    ));
}

/// Chunks that live only in the WAL (created, written, deleted since the last checkpoint) come
/// back from a crash exactly: the written one whole, the deleted one gone with its files.
#[tokio::test]
async fn chunks_created_and_deleted_since_the_checkpoint_replay() {
    let (live, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = ChunkStore::open(live.path(), torn_config()).unwrap();
    let (kept, gone, empty) = (ChunkHandle(7), ChunkHandle(8), ChunkHandle(9));
    store.create(kept, 3).await.unwrap();
    store.create(gone, 1).await.unwrap();
    let mut offset = 0;
    for (i, len) in [100usize, 20_000, 5].into_iter().enumerate() {
        // Small ones live in the WAL, the 20 KB one in place.
        let data = vec![i as u8 + 1; len];
        store
            .stage(StageRequest {
                op: OpId(i as u64),
                handle: kept,
                version: 3,
                offset,
                data: Bytes::from(data),
            })
            .unwrap();
        store.commit(kept, OpId(i as u64)).await.unwrap();
        offset += len as u64;
    }
    store.delete(gone).await.unwrap();
    store.create(empty, 1).await.unwrap();
    assert!(
        !live.path().join(format!("{}.meta", kept.0)).exists(),
        "no checkpoint ran: the chunk lives in the WAL only"
    );
    copy_dir(live.path(), crashed.path());
    drop(store);

    let store = ChunkStore::open(crashed.path(), torn_config()).unwrap();
    let info = store.info(kept).unwrap();
    assert_eq!((info.version, info.committed_len), (3, offset));
    let back = store.read(kept, 0, offset).unwrap();
    assert_eq!(&back[..100], &[1u8; 100][..]);
    assert_eq!(&back[100..20_100], &vec![2u8; 20_000][..]);
    assert_eq!(&back[20_100..], &[3u8; 5][..]);
    assert!(matches!(store.info(gone), Err(StorageError::NotFound(_))));
    assert!(!crashed.path().join(data_file_name(gone)).exists());
    assert_eq!(store.info(empty).unwrap().committed_len, 0);
}

/// The name of a chunk's data file.
fn data_file_name(h: ChunkHandle) -> String {
    h.0.to_string()
}
