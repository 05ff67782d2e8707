//! Durability: checkpoints, the WAL's replay and its damage, the file pool, failed fsyncs,
//! grouped deletes and version fences.

use super::*;

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let _s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert!(matches!(
        ChunkStore::open(d.path(), cfg()),
        Err(StorageError::Locked(_))
    ));
}

#[tokio::test]
async fn checksums_span_blocks_and_partial_blocks() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let mut model = Vec::new();
    let sizes = [1usize, 100, 65_535, 2, 70_000, 65_536, 3, 200_000];
    for (i, n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n).map(|j| (i * 31 + j * 7) as u8).collect();
        append(&s, i as u64, model.len() as u64, &data).await;
        model.extend_from_slice(&data);
    }
    for (off, len) in [
        (0, 10),
        (65_530, 20),
        (65_536, 65_536),
        (100, 300_000),
        (0, 1 << 20),
    ] {
        let end = (off + len).min(model.len());
        assert_eq!(
            &s.read(H, off as u64, len as u64).unwrap()[..],
            &model[off..end]
        );
    }
    assert!(s.scrub().corrupt.is_empty());
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(&s.read(H, 0, 1 << 20).unwrap()[..], &model[..]);
}

#[tokio::test]
async fn checkpoints_bound_the_wal_and_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        checkpoint_bytes: 2048,
        ..cfg()
    };
    let s = fresh(d.path(), c.clone()).await;
    for i in 0..200u64 {
        append(&s, 1000 + i, i * 10, b"0123456789").await;
    }
    let wal_len = fs::metadata(d.path().join("wal")).unwrap().len();
    assert!(
        wal_len < 4096,
        "the WAL was not checkpointed: {wal_len} bytes"
    );
    drop(s);
    // A clean stop leaves an empty WAL and everything in the snapshots.
    assert_eq!(fs::metadata(d.path().join("wal")).unwrap().len(), 8);
    let s = ChunkStore::open(d.path(), c).unwrap();
    assert_eq!(s.info(H).unwrap().committed_len, 2000);
    for i in 0..200u64 {
        assert_eq!(
            s.lookup_op(H, OpId(1000 + i)).unwrap(),
            Some(AppendRecord {
                offset: i * 10,
                len: 10
            })
        );
    }
}

/// The WAL is filled with zeros ahead of its records, so a batch's fsync flushes data only
/// (the file's size, which a journal would have to commit, does not change); a crash image
/// reopens with every append, the zeros taken for the log's end.
#[tokio::test]
async fn the_wal_is_filled_ahead_with_zeros_that_a_reopen_takes_for_its_end() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"first").await;
    let wal = d.path().join("wal");
    let filled = fs::metadata(&wal).unwrap().len();
    assert!(
        filled >= crate::committer::WAL_FILL,
        "not filled ahead: {filled} bytes"
    );
    for i in 0..100u64 {
        append(&s, 2 + i, 5 + i * 10, b"0123456789").await;
    }
    assert_eq!(
        fs::metadata(&wal).unwrap().len(),
        filled,
        "a batch within the zeros grew the WAL"
    );
    let copy = tempfile::tempdir().unwrap();
    copy_files(d.path(), copy.path());
    let s = ChunkStore::open(copy.path(), cfg()).unwrap();
    assert_eq!(s.info(H).unwrap().committed_len, 1005);
    assert_eq!(&s.read(H, 0, 5).unwrap()[..], b"first");
    for i in 0..100u64 {
        assert_eq!(
            s.lookup_op(H, OpId(2 + i)).unwrap(),
            Some(AppendRecord {
                offset: 5 + i * 10,
                len: 10
            }),
            "op {} lost",
            2 + i
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_appends_of_one_batch_replay_from_the_wal() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(fresh(d.path(), cfg()).await);
    for i in 0..50u64 {
        s.stage(req(i, i * 10, b"0123456789")).unwrap();
    }
    let commits: Vec<_> = (0..50u64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.commit(H, OpId(i)).await })
        })
        .collect();
    for c in commits {
        c.await.unwrap().unwrap();
    }
    assert!(s.stats().batches < 50, "the commits did not share batches");
    let copy = tempfile::tempdir().unwrap();
    copy_files(d.path(), copy.path());
    let s = ChunkStore::open(copy.path(), cfg()).unwrap();
    assert_eq!(s.info(H).unwrap().committed_len, 500);
    for i in 0..50u64 {
        assert!(s.lookup_op(H, OpId(i)).unwrap().is_some(), "op {i} lost");
    }
}

#[tokio::test]
async fn inline_and_in_place_appends_mix() {
    let d = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        inline_max: 1000,
        ..cfg()
    };
    let s = fresh(d.path(), c.clone()).await;
    let mut model = Vec::new();
    for (i, n) in [10usize, 5000, 999, 1000, 1001, 70_000, 3]
        .iter()
        .enumerate()
    {
        let data = vec![i as u8 + 1; *n];
        append(&s, i as u64, model.len() as u64, &data).await;
        model.extend_from_slice(&data);
    }
    assert_eq!(&s.read(H, 0, 1 << 20).unwrap()[..], &model[..]);
    drop(s);
    let s = ChunkStore::open(d.path(), c).unwrap();
    assert_eq!(&s.read(H, 0, 1 << 20).unwrap()[..], &model[..]);
}

#[tokio::test]
async fn a_recreated_handle_ignores_the_old_chunks_wal_records() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"old contents").await;
    s.delete(H).await.unwrap();
    s.create(H, 5).await.unwrap();
    s.stage(StageRequest {
        version: 5,
        ..req(2, 0, b"new")
    })
    .unwrap();
    s.commit(H, OpId(2)).await.unwrap();
    // Open a copy taken while the store runs: the WAL still holds every record, as after a crash.
    let copy = tempfile::tempdir().unwrap();
    copy_files(d.path(), copy.path());
    drop(s);
    let s = ChunkStore::open(copy.path(), cfg()).unwrap();
    let info = s.info(H).unwrap();
    assert_eq!((info.version, info.committed_len), (5, 3));
    assert_eq!(&s.read(H, 0, 10).unwrap()[..], b"new");
    assert_eq!(s.lookup_op(H, OpId(1)).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_fsyncs() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(ChunkStore::open(d.path(), cfg()).unwrap());
    for h in 0..16 {
        s.create(ChunkHandle(h), 1).await.unwrap();
    }
    let before = s.stats();
    let mut tasks = Vec::new();
    for h in 0..16u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                s.stage(StageRequest {
                    op: OpId(i),
                    handle: ChunkHandle(h),
                    version: 1,
                    offset: i * 100,
                    data: Bytes::from(vec![h as u8; 100]),
                })
                .unwrap();
                s.commit(ChunkHandle(h), OpId(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = s.stats();
    let commits = after.commits - before.commits;
    let batches = after.batches - before.batches;
    assert_eq!(commits, 320);
    assert!(
        batches < commits,
        "group commit did not batch: {batches} batches for {commits} commits"
    );
}

#[test]
fn bad_configs_are_rejected() {
    for c in [
        StoreConfig {
            chunk_size: 1000,
            ..cfg()
        },
        StoreConfig {
            staging_limit: 0,
            ..cfg()
        },
        StoreConfig {
            staging_ttl: Duration::ZERO,
            ..cfg()
        },
        StoreConfig {
            op_retention: Duration::ZERO,
            ..cfg()
        },
    ] {
        assert!(matches!(c.validate(), Err(StorageError::InvalidConfig(_))));
    }
}

#[tokio::test]
async fn new_chunks_take_pool_files_and_a_reopen_adopts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(dir.path(), cfg()).unwrap();
    let pool_files = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                crate::pool::is_pool_file(e.as_ref().unwrap().file_name().to_str().unwrap())
            })
            .count()
    };
    eventually("the pool filled", || pool_files(dir.path()) > 0).await;
    for h in 1..=100 {
        s.create(ChunkHandle(h), 1).await.unwrap();
    }
    let listed: Vec<u64> = s.list().iter().map(|c| c.handle.0).collect();
    assert_eq!(listed.len(), 100);
    drop(s);
    let left = pool_files(dir.path());
    assert!(left > 0 && left <= 64, "{left} pool files");
    // A reopen keeps the 100 chunks, adopts the pool files, and never takes one for a chunk.
    let s = ChunkStore::open(dir.path(), cfg()).unwrap();
    assert_eq!(s.list().len(), 100);
    append(&s, 1, 0, b"into a pooled file").await;
    assert_eq!(&s.read(H, 0, 18).unwrap()[..], b"into a pooled file");
}

/// Finding 14a: a damaged record in the middle of the WAL is not a torn tail. Reopening must
/// refuse with `CorruptWal` at that record's offset, not drop every later committed append and
/// truncate the chunk files.
#[tokio::test]
async fn a_damaged_record_in_the_middle_of_the_wal_refuses_to_open() {
    let d = tempfile::tempdir().unwrap();
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    let handles: Vec<ChunkHandle> = (1..=3).map(ChunkHandle).collect();
    for h in &handles {
        s.create(*h, 1).await.unwrap();
    }
    // 4 rounds over 3 chunks, one batch each: every append is acknowledged.
    for round in 0..4u64 {
        for h in &handles {
            s.stage(StageRequest {
                op: OpId(round),
                handle: *h,
                version: 1,
                offset: round * 10,
                data: Bytes::from(vec![h.0 as u8; 10]),
            })
            .unwrap();
            s.commit(*h, OpId(round)).await.unwrap();
        }
    }
    // A copy taken while the store runs: the WAL holds every record, as after a crash.
    let copy = tempfile::tempdir().unwrap();
    copy_files(d.path(), copy.path());
    drop(s);
    let wal = copy.path().join("wal");
    let mut bytes = fs::read(&wal).unwrap();
    let parsed =
        crate::record::parse(&wal, crate::record::WAL_MAGIC, Bytes::from(bytes.clone())).unwrap();
    assert_eq!(parsed.records.len(), 3 + 12, "3 creates and 12 commits");
    let (pos, _) = parsed.records[parsed.records.len() / 2];
    // One flipped bit in the payload (the handle field) of a middle record.
    bytes[pos as usize + 8 + 12] ^= 0x01;
    fs::write(&wal, &bytes).unwrap();

    match ChunkStore::open(copy.path(), cfg()) {
        Err(StorageError::CorruptWal { path, offset, .. }) => {
            assert_eq!(path, wal);
            assert_eq!(offset, pos);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(s) => panic!(
            "opened and silently kept only {:?} of 40 bytes per chunk",
            s.list().iter().map(|c| c.committed_len).collect::<Vec<_>>()
        ),
    }
    // Nothing was truncated or rewritten.
    assert_eq!(fs::read(&wal).unwrap(), bytes);
    for h in &handles {
        assert_eq!(
            fs::metadata(copy.path().join(h.0.to_string()))
                .unwrap()
                .len(),
            40
        );
    }
}

/// A chunk poisoned outside a batch (by the fsync of a restored block, or of a checkpoint)
/// needs the store reopened, as one poisoned in a batch does: else its server keeps serving a
/// replica that refuses every write and every fence until someone restarts it by hand (seed
/// 274246788388944 of the simulator: a restore's failed fsync left the chunk's only other
/// replica unable to take a version, and the chunk lost to fsck for good).
#[tokio::test]
async fn a_failed_fsync_of_a_restore_or_a_checkpoint_needs_a_reopen() {
    use crate::layout::failpoint::fail_next_sync;
    // A restored block whose fsync fails.
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let data = vec![7u8; 3000];
    append(&s, 1, 0, &data).await;
    let broken = s.broken();
    fail_next_sync(&d.path().join(H.0.to_string()));
    assert!(s.restore_block(H, 0, Bytes::from(data)).await.is_err());
    assert!(matches!(
        s.stage(req(2, 3000, b"x")),
        Err(StorageError::Poisoned(_))
    ));
    assert_eq!(s.needs_reopen(), Some("a chunk's fsync failed"));
    let why = tokio::time::timeout(Duration::from_secs(5), broken).await;
    assert_eq!(why.ok(), Some("a chunk's fsync failed"));
    drop(s);

    // A checkpoint whose fsync of a chunk file holding WAL-inline bytes fails.
    let d = tempfile::tempdir().unwrap();
    let s = fresh(
        d.path(),
        StoreConfig {
            checkpoint_bytes: 2048,
            ..cfg()
        },
    )
    .await;
    fail_next_sync(&d.path().join(H.0.to_string()));
    let mut poisoned = false;
    for i in 0..400u64 {
        match s.stage(req(i, i * 10, b"0123456789")) {
            Ok(()) => {
                let _ = s.commit(H, OpId(i)).await;
            }
            Err(StorageError::Poisoned(_)) => {
                poisoned = true;
                break;
            }
            Err(e) => panic!("stage: {e}"),
        }
    }
    assert!(poisoned, "no checkpoint synced the chunk file");
    assert_eq!(s.needs_reopen(), Some("a chunk's fsync failed"));
}

/// Finding 14b: when a chunk's fsync (or the directory's, or the WAL's) fails in a round, the
/// callers are told their appends failed, yet the records were already in the WAL. After a
/// crash and reopen they must not come back.
#[tokio::test]
async fn writes_whose_callers_heard_of_a_failed_fsync_never_come_back() {
    use crate::layout::failpoint::fail_next_sync;
    let d = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        inline_max: 1000,
        ..cfg()
    };
    let s = ChunkStore::open(d.path(), c.clone()).unwrap();
    let (x, y, z) = (ChunkHandle(1), ChunkHandle(2), ChunkHandle(3));
    s.create(x, 1).await.unwrap();
    s.create(y, 1).await.unwrap();
    let put = |h: ChunkHandle, op: u64, offset: u64, len: usize| StageRequest {
        op: OpId(op),
        handle: h,
        version: 1,
        offset,
        data: Bytes::from(vec![op as u8; len]),
    };
    s.stage(put(x, 1, 0, 100)).unwrap();
    s.commit(x, OpId(1)).await.unwrap();
    assert_eq!(s.needs_reopen(), None);

    // An in-place append whose chunk fsync fails: its Commit record is in the durable WAL.
    s.stage(put(x, 2, 100, 5000)).unwrap();
    fail_next_sync(&d.path().join("1"));
    assert!(s.commit(x, OpId(2)).await.is_err());
    assert!(matches!(
        s.stage(put(x, 3, 100, 10)),
        Err(StorageError::Poisoned(_))
    ));
    assert_eq!(s.needs_reopen(), Some("a chunk's fsync failed"));
    // An in-place append to a new chunk whose directory fsync fails (a creation fsyncs the
    // WAL alone: the first bytes in place fsync the directory).
    s.create(z, 1).await.unwrap();
    s.stage(put(z, 6, 0, 5000)).unwrap();
    fail_next_sync(d.path());
    assert!(s.commit(z, OpId(6)).await.is_err());
    // A later batch that succeeds, so the failed ones are not the newest.
    s.stage(put(y, 4, 0, 10)).unwrap();
    s.commit(y, OpId(4)).await.unwrap();
    // An append whose WAL fsync fails.
    s.stage(put(y, 5, 10, 10)).unwrap();
    fail_next_sync(&d.path().join("wal"));
    assert!(s.commit(y, OpId(5)).await.is_err());
    assert_eq!(s.needs_reopen(), Some("a write or fsync of the WAL failed"));

    let copy = tempfile::tempdir().unwrap();
    copy_files(d.path(), copy.path());
    drop(s);
    let s = ChunkStore::open(copy.path(), c).unwrap();
    let handles: Vec<_> = s.list().iter().map(|i| i.handle).collect();
    assert_eq!(handles, [x, y, z]);
    assert_eq!(s.info(z).unwrap().committed_len, 0);
    assert_eq!(
        s.lookup_op(z, OpId(6)).unwrap(),
        None,
        "the failed append came back"
    );
    assert_eq!(s.info(x).unwrap().committed_len, 100);
    assert_eq!(
        s.lookup_op(x, OpId(2)).unwrap(),
        None,
        "the failed append came back"
    );
    assert_eq!(s.info(y).unwrap().committed_len, 10);
    assert_eq!(
        s.lookup_op(y, OpId(5)).unwrap(),
        None,
        "the failed append came back"
    );
    assert!(s.scrub().corrupt.is_empty());
}

/// Finding 9 (storage part): N deletes cost one WAL fsync and one directory fsync, not N of each.
#[tokio::test]
async fn many_deletes_share_one_wal_fsync_and_one_directory_fsync() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"kept").await;
    let doomed: Vec<ChunkHandle> = (1000..1200).map(ChunkHandle).collect();
    for h in &doomed {
        s.create(*h, 1).await.unwrap();
    }
    s.stage(StageRequest {
        handle: doomed[0],
        ..req(2, 0, b"staged, never committed")
    })
    .unwrap();
    let copy = tempfile::tempdir().unwrap();

    let before = s.stats();
    let mut asked = doomed.clone();
    asked.push(ChunkHandle(7)); // unknown
    asked.push(doomed[5]); // twice
    let results = s.delete_many(&asked).await;
    let after = s.stats();
    copy_files(d.path(), copy.path());

    assert_eq!(results.len(), asked.len());
    for (i, ((h, r), want)) in results.iter().zip(&asked).enumerate() {
        assert_eq!(h, want);
        if i < doomed.len() {
            assert!(r.is_ok(), "{h}: {r:?}");
        } else {
            assert!(matches!(r, Err(StorageError::NotFound(_))), "{h}: {r:?}");
        }
    }
    assert_eq!(
        (after.batches - before.batches, after.fsyncs - before.fsyncs),
        (1, 2),
        "200 deletes: one round of one WAL fsync and one directory fsync"
    );
    assert_eq!(
        s.stats().staged_bytes,
        0,
        "staged appends of deleted chunks are dropped"
    );
    let handles: Vec<_> = s.list().iter().map(|c| c.handle).collect();
    assert_eq!(handles, [H]);
    for h in &doomed {
        assert!(!d.path().join(h.0.to_string()).exists());
        assert!(matches!(s.info(*h), Err(StorageError::NotFound(_))));
    }
    // Single deletes still work, one round each.
    s.create(ChunkHandle(5), 1).await.unwrap();
    let before = s.stats();
    s.delete(ChunkHandle(5)).await.unwrap();
    assert_eq!(s.stats().fsyncs - before.fsyncs, 2);
    assert!(matches!(
        s.delete(ChunkHandle(5)).await,
        Err(StorageError::NotFound(_))
    ));
    drop(s);
    // After a clean stop and after a crash, the deleted chunks stay deleted.
    for dir in [d.path(), copy.path()] {
        let s = ChunkStore::open(dir, cfg()).unwrap();
        let handles: Vec<_> = s.list().iter().map(|c| c.handle).collect();
        assert_eq!(handles, [H]);
        assert_eq!(&s.read(H, 0, 10).unwrap()[..], b"kept");
    }
}

/// Concurrent single deletes queue up behind each other's fsync and join one round.
#[tokio::test]
async fn concurrent_deletes_share_fsync_rounds() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(ChunkStore::open(d.path(), cfg()).unwrap());
    for h in 0..100 {
        s.create(ChunkHandle(h), 1).await.unwrap();
    }
    let before = s.stats();
    let tasks: Vec<_> = (0..100)
        .map(|h| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.delete(ChunkHandle(h)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rounds = s.stats().batches - before.batches;
    assert!(rounds < 25, "100 concurrent deletes took {rounds} rounds");
    assert!(s.list().is_empty());
}

/// Finding 5 / I5: a version change fences the old version. From the moment it is asked for
/// until it is durable nothing is staged, at any version (a PREPARE of the old primary
/// inside that window used to be staged at the old version and then committed into the new
/// one); after it, a COMMIT or ABORT naming the old version is refused.
#[tokio::test]
async fn a_version_change_fences_the_old_versions_prepares_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = fresh(dir.path(), cfg()).await;
    append(&s, 1, 0, b"one").await;
    let mut bump = Box::pin(s.set_version(H, 2));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        std::future::Future::poll(bump.as_mut(), &mut cx).is_pending(),
        "the version change is queued, not yet durable"
    );
    assert!(matches!(
        s.stage(req(2, 3, b"old primary")),
        Err(StorageError::StaleVersion { .. })
    ));
    bump.await.unwrap();
    assert_eq!(s.info(H).unwrap().version, 2);
    // Staged at the new version; the old version's COMMIT and ABORT do nothing.
    s.stage(StageRequest {
        version: 2,
        ..req(3, 3, b"new")
    })
    .unwrap();
    assert!(matches!(
        s.commit_at(H, 1, OpId(3)).await,
        Err(StorageError::StaleVersion {
            have: 2,
            got: 1,
            ..
        })
    ));
    assert!(!s.abort_at(H, 1, OpId(3)).unwrap());
    let done = s.commit_at(H, 2, OpId(3)).await.unwrap();
    assert_eq!((done.record.offset, done.committed_len), (3, 6));
    // A committed op is answered whatever the version asked.
    assert_eq!(s.commit_at(H, 1, OpId(1)).await.unwrap().record.offset, 0);
}
