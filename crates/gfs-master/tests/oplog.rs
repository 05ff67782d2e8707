//! The operation log: SIGKILL during a stream of mutations, checkpoints, torn tails and
//! corrupt records.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gfs_master::record::{AddChunkOp, CreateOp, DeleteOp, Op, PathOp};
use gfs_master::{MasterError, MetaConfig, MetaStore};

/// Held for writing while a child process is spawned, for reading by the tests that drop a
/// store and open its directory again: between fork and exec the child holds a copy of every
/// descriptor of this process, a store's `LOCK` file's too, so a store dropped in that window
/// stays locked until the child execs (CI saw `Locked` once).
static FORKING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const CHILD_DIR: &str = "GFS_OPLOG_CHILD_DIR";
const CHILD_ROUND: &str = "GFS_OPLOG_CHILD_ROUND";

fn create(p: &str) -> Op {
    Op::Create(CreateOp {
        path: p.into(),
        mtime_ms: 1,
        replication: 3,
    })
}

fn mkdir(p: &str) -> Op {
    Op::Mkdir(PathOp {
        path: p.into(),
        mtime_ms: 1,
    })
}

fn small_checkpoints() -> MetaConfig {
    MetaConfig {
        checkpoint_every: 97,
    }
}

/// The writer process. Run only by `sigkill_keeps_every_acknowledged_mutation`.
#[test]
#[ignore = "child process of sigkill_keeps_every_acknowledged_mutation"]
fn oplog_child() {
    let dir = std::env::var(CHILD_DIR).unwrap();
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = std::sync::Arc::new(MetaStore::open(&dir, small_checkpoints()).unwrap());
        store.mutate(mkdir(&format!("/r{round}"))).await.unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let (store, out) = (store.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let p = format!("/r{round}/w{w}-{i}");
                    store.mutate(create(&p)).await.unwrap();
                    let handle = (round << 40) | (w << 32) | i;
                    store
                        .mutate(Op::AddChunk(AddChunkOp {
                            path: p.clone(),
                            handle,
                            version: 1,
                            primary: String::new(),
                            uncreated: Vec::new(),
                            placed: 0,
                        }))
                        .await
                        .unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {p} {handle}").unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        drop(tasks);
        std::future::pending::<()>().await;
    });
}

#[tokio::test]
async fn sigkill_keeps_every_acknowledged_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0;
    for round in 1..=3u64 {
        let forking = FORKING.write().await;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "oplog_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        drop(forking);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| {
                    let rest = l.strip_prefix("ACK ")?.to_string();
                    let (p, h) = rest.split_once(' ')?;
                    Some((p.to_string(), h.parse::<u64>().ok()?))
                })
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer exited on its own"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        let store = MetaStore::open(dir.path(), small_checkpoints()).unwrap();
        for (p, h) in &acks {
            let chunks = store
                .read(|ns| ns.chunks_of(p).map(|c| c.to_vec()))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("acknowledged {p} lost: {e}"));
            assert!(chunks.contains(h), "acknowledged chunk {h} of {p} lost");
        }
        total += acks.len();
    }
    assert!(
        total > 100,
        "too few acknowledged mutations ({total}) to prove anything"
    );
}

/// Where a segment's records end: zeros written ahead follow them.
fn records_end(segment: &[u8]) -> usize {
    segment.iter().rposition(|&b| b != 0).unwrap() + 1
}

/// The log writes zeros ahead of its records, so that most group commits' fsyncs commit no
/// new file size; a reopen takes the zeros for the end of the records, and the next records go
/// over them.
#[tokio::test]
async fn zeros_written_ahead_end_the_log_and_the_next_records_go_over_them() {
    let _reopens = FORKING.read().await;
    let (dir, seg, bytes) = fifty_files().await;
    let end = records_end(&bytes);
    assert!(
        bytes.len() >= end + 64 * 1024,
        "{} bytes of records, {} in the file: no zeros ahead",
        end,
        bytes.len()
    );
    let store = MetaStore::open(
        dir.path(),
        MetaConfig {
            checkpoint_every: u64::MAX,
        },
    )
    .unwrap();
    assert_eq!(
        store.read(|ns| ns.list("/").unwrap().len()).await.unwrap(),
        50
    );
    for i in 50..60 {
        store.mutate(create(&format!("/f{i:03}"))).await.unwrap();
    }
    let after = std::fs::read(&seg).unwrap();
    assert_eq!(
        after.len(),
        bytes.len(),
        "the records did not go over the zeros"
    );
    assert!(records_end(&after) > end);
    // Leave it as a crash would, and read all 60 back.
    std::mem::forget(store);
    let copy = crash_copy(dir.path());
    let store = MetaStore::open(copy.path(), MetaConfig::default()).unwrap();
    let names = store.read(|ns| ns.list("/").unwrap()).await.unwrap();
    let want: Vec<String> = (0..60).map(|i| format!("/f{i:03}")).collect();
    let got: Vec<String> = names.into_iter().map(|s| s.path).collect();
    assert_eq!(got, want);
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("log-"))
        .collect();
    v.sort();
    v
}

/// A copy of a metadata directory (but its lock), as a crash of its owner would leave it.
fn crash_copy(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    dir
}

/// The log of 50 creates as a crash leaves it: its directory (a copy, unlocked), its one
/// segment, and that segment's bytes.
async fn fifty_files() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let src = tempfile::tempdir().unwrap();
    write_files(src.path(), 50).await;
    let dir = crash_copy(src.path());
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    (dir, seg, bytes)
}

/// Writes `n` files through a store that never checkpoints, and leaves the log as a crash would.
async fn write_files(dir: &Path, n: usize) {
    let store = MetaStore::open(
        dir,
        MetaConfig {
            checkpoint_every: u64::MAX,
        },
    )
    .unwrap();
    for i in 0..n {
        store.mutate(create(&format!("/f{i:03}"))).await.unwrap();
    }
    // Leak it: no clean-stop checkpoint, the log is the only record.
    std::mem::forget(store);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_stays() {
    let _reopens = FORKING.read().await;
    let (_dir, seg, full) = fifty_files().await;
    let end = records_end(&full);
    // Each cut as a shorter file, and as a torn batch in zeros written ahead (after the
    // header, which a new segment gets durably before any record or zero).
    let cuts = [end - 1, end - 7, end / 2, 9, 8, 5, 0];
    let torn = cuts.into_iter().filter(|&c| c >= 8).map(|c| (c, true));
    for (cut, zeros) in cuts.into_iter().map(|c| (c, false)).chain(torn) {
        let dir = tempfile::tempdir().unwrap();
        let name = seg.file_name().unwrap();
        let mut bytes = full[..cut].to_vec();
        if zeros {
            bytes.resize(full.len(), 0);
        }
        std::fs::write(dir.path().join(name), &bytes).unwrap();
        let store = MetaStore::open(dir.path(), MetaConfig::default()).unwrap();
        let names = store.read(|ns| ns.list("/").unwrap()).await.unwrap();
        let n = names.len();
        assert!(n < 50, "cut at {cut} kept every record");
        // Exactly a prefix survives.
        for (i, s) in names.iter().enumerate() {
            assert_eq!(s.path, format!("/f{i:03}"));
        }
        // And the log continues after the cut.
        store.mutate(create("/after")).await.unwrap();
        drop(store);
        let store = MetaStore::open(dir.path(), MetaConfig::default()).unwrap();
        assert_eq!(
            store.read(|ns| ns.list("/").unwrap().len()).await.unwrap(),
            n + 1
        );
    }
}

/// A torn batch whose first pages never reached the disk while later ones did: zeros where
/// its first records start, then bytes. The log keeps exactly the records before it.
#[tokio::test]
async fn a_batch_torn_before_its_end_is_cut_where_its_zeros_start() {
    let _reopens = FORKING.read().await;
    let (_dir, seg, full) = fifty_files().await;
    // Where each record starts (after the 8-byte header: a length, a checksum, the payload).
    let mut starts = vec![8usize];
    while let Some(&at) = starts.last() {
        let len = u32::from_le_bytes(full[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at + 8 + len);
    }
    assert!(starts.len() > 50, "{} records", starts.len() - 1);
    // Record 30 creates /f030. The zeros must not end where a record starts: a good record
    // after them would make them damage inside the log (a refusal to start), not a torn tail.
    for (from, len) in [(starts[30], 600), (starts[30] + 3, 600), (starts[30], 9)] {
        let len = len + usize::from(starts.contains(&(from + len)));
        let mut bytes = full.clone();
        bytes[from..from + len].fill(0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(seg.file_name().unwrap()), &bytes).unwrap();
        let store = MetaStore::open(dir.path(), MetaConfig::default()).unwrap();
        let names: Vec<String> = store
            .read(|ns| ns.list("/").unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("/f{i:03}")).collect();
        assert_eq!(names, want, "zeros at {from}..{}", from + len);
    }
}

#[tokio::test]
async fn a_corrupt_record_inside_the_log_is_a_clear_error() {
    let _reopens = FORKING.read().await;
    let (dir, seg, mut bytes) = fifty_files().await;
    let at = records_end(&bytes) / 3;
    bytes[at] ^= 0x5a;
    std::fs::write(&seg, &bytes).unwrap();
    match MetaStore::open(dir.path(), MetaConfig::default()) {
        Err(MasterError::CorruptLog { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert!(
                offset as usize <= at,
                "offset {offset} after the damage at {at}"
            );
        }
        Ok(_) => panic!("a damaged record in the middle was silently dropped"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn checkpoints_plus_more_log_recover_and_old_segments_go() {
    let _reopens = FORKING.read().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MetaStore::open(
            dir.path(),
            MetaConfig {
                checkpoint_every: 10,
            },
        )
        .unwrap();
        for i in 0..35 {
            store.mutate(create(&format!("/f{i:03}"))).await.unwrap();
        }
        store
            .mutate(Op::Delete(DeleteOp {
                path: "/f000".into(),
                mtime_ms: 2,
                recursive: false,
            }))
            .await
            .unwrap();
        assert!(segments(dir.path()).len() <= 2, "old segments were kept");
        std::mem::forget(store);
    }
    let dir = crash_copy(dir.path());
    let store = MetaStore::open(
        dir.path(),
        MetaConfig {
            checkpoint_every: 10,
        },
    )
    .unwrap();
    let list = store.read(|ns| ns.list("/").unwrap()).await.unwrap();
    assert_eq!(list.len(), 34);
    assert_eq!(list[0].path, "/f001");
    assert!(store.durable_seq() >= 36);
}

#[tokio::test]
async fn invalid_mutations_are_refused_and_not_logged() {
    let _reopens = FORKING.read().await;
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(dir.path(), MetaConfig::default()).unwrap();
    store.mutate(create("/a")).await.unwrap();
    let seq = store.durable_seq();
    assert!(matches!(
        store.mutate(create("/a")).await,
        Err(MasterError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.mutate(create("/no/x")).await,
        Err(MasterError::NotFound(_))
    ));
    assert_eq!(store.durable_seq(), seq);
    assert!(matches!(
        MetaStore::open(dir.path(), MetaConfig::default()),
        Err(MasterError::Locked(_))
    ));
}
