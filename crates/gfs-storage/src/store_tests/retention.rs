//! Op tables: dropped a retention after the seal, and never brought back.

use super::*;

fn short_retention(ms: u64) -> StoreConfig {
    StoreConfig {
        op_retention: Duration::from_millis(ms),
        ..cfg()
    }
}

fn forgotten(r: Result<Option<AppendRecord>>) -> bool {
    matches!(r, Err(StorageError::OpRetentionExpired { .. }))
}

#[tokio::test]
async fn a_sealed_chunks_op_table_is_dropped_after_the_retention_and_stays_dropped() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), short_retention(300)).await;
    const OPEN: ChunkHandle = ChunkHandle(43);
    s.create(OPEN, 1).await.unwrap();
    append(&s, 1, 0, b"first").await;
    append(&s, 2, 5, b"second").await;
    s.stage(StageRequest {
        handle: OPEN,
        ..req(7, 0, b"open")
    })
    .unwrap();
    s.commit(OPEN, OpId(7)).await.unwrap();
    assert_eq!(s.seal(H).await.unwrap(), 11);
    // Within the retention: the first offset of a retry, "not here" for another op.
    assert_eq!(
        s.lookup_op(H, OpId(2)).unwrap(),
        Some(AppendRecord { offset: 5, len: 6 })
    );
    assert_eq!(s.lookup_op(H, OpId(99)).unwrap(), None);
    eventually("the sealed chunk's op table to be dropped", || {
        forgotten(s.lookup_op(H, OpId(2)))
    })
    .await;
    // Now nobody knows, for any op: never "not here".
    assert!(forgotten(s.lookup_op(H, OpId(1))));
    assert!(forgotten(s.lookup_op(H, OpId(99))));
    assert!(matches!(
        s.appends(H),
        Err(StorageError::OpRetentionExpired { length: 11, .. })
    ));
    // The bytes stay; the unsealed chunk keeps its table, however long it waits.
    assert_eq!(&s.read(H, 0, 100).unwrap()[..], b"firstsecond");
    let info = s.info(H).unwrap();
    assert_eq!((info.committed_len, info.sealed), (11, true));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        s.lookup_op(OPEN, OpId(7)).unwrap(),
        Some(AppendRecord { offset: 0, len: 4 })
    );
    // The snapshot was rewritten at once: a crash now (a copy of the files) does not bring
    // the table back, nor does a clean reopen.
    let crashed = tempfile::tempdir().unwrap();
    copy_files(d.path(), crashed.path());
    drop(s);
    for dir in [crashed.path(), d.path()] {
        let s = ChunkStore::open(dir, cfg()).unwrap();
        assert!(forgotten(s.lookup_op(H, OpId(2))), "{}", dir.display());
        assert!(forgotten(s.lookup_op(H, OpId(99))));
        assert_eq!(&s.read(H, 0, 100).unwrap()[..], b"firstsecond");
        assert_eq!(
            s.lookup_op(OPEN, OpId(7)).unwrap(),
            Some(AppendRecord { offset: 0, len: 4 })
        );
    }
}

#[tokio::test]
async fn a_chunk_found_sealed_at_open_keeps_its_table_for_a_retention() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = fresh(d.path(), cfg()).await;
        append(&s, 1, 0, b"kept").await;
        s.seal(H).await.unwrap();
    }
    // The seal time is not stored: the retention starts again at open.
    let s = ChunkStore::open(d.path(), short_retention(300)).unwrap();
    assert_eq!(
        s.lookup_op(H, OpId(1)).unwrap(),
        Some(AppendRecord { offset: 0, len: 4 })
    );
    assert_eq!(s.lookup_op(H, OpId(2)).unwrap(), None);
    eventually("the table to be dropped", || {
        forgotten(s.lookup_op(H, OpId(1)))
    })
    .await;
}

#[tokio::test]
async fn forget_ops_freezes_a_chunk_durably() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"abc").await;
    s.stage(req(2, 3, b"staged")).unwrap();
    s.forget_ops(H).await.unwrap();
    assert!(forgotten(s.lookup_op(H, OpId(1))));
    // What was staged is gone, and nothing more is taken: a retry could not be told apart.
    assert!(matches!(
        s.commit(H, OpId(2)).await,
        Err(StorageError::NotStaged { .. })
    ));
    assert!(matches!(
        s.stage(req(3, 3, b"more")),
        Err(StorageError::Sealed { length: 3, .. })
    ));
    // It can still be sealed where it ends (a copy is sealed after its bytes are in).
    assert_eq!(s.seal(H).await.unwrap(), 3);
    let crashed = tempfile::tempdir().unwrap();
    copy_files(d.path(), crashed.path());
    let s = ChunkStore::open(crashed.path(), cfg()).unwrap();
    assert!(forgotten(s.lookup_op(H, OpId(1))));
    assert_eq!(&s.read(H, 0, 10).unwrap()[..], b"abc");
}

#[tokio::test]
async fn a_damaged_chunk_without_its_table_rolls_back_to_empty() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = fresh(d.path(), cfg()).await;
        append(&s, 1, 0, b"0123456789").await;
        s.seal(H).await.unwrap();
        s.forget_ops(H).await.unwrap();
    }
    // Outside damage shortens the file: where the last whole append ends is no longer known.
    let f = OpenOptions::new()
        .write(true)
        .open(d.path().join(H.0.to_string()))
        .unwrap();
    f.set_len(4).unwrap();
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    let info = s.info(H).unwrap();
    assert_eq!((info.committed_len, info.sealed), (0, false));
    // Empty, its empty table is exact again.
    assert_eq!(s.lookup_op(H, OpId(1)).unwrap(), None);
    append(&s, 2, 0, b"again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_tables_than_one_sweep_drops_are_all_dropped() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(ChunkStore::open(d.path(), short_retention(200)).unwrap());
    let n = crate::committer::FORGET_PER_SWEEP as u64 + 44;
    let mut tasks = tokio::task::JoinSet::new();
    for h in 0..n {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.create(ChunkHandle(h), 1).await.unwrap();
            s.seal(ChunkHandle(h)).await.unwrap();
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    eventually("every table to be dropped", || {
        (0..n).all(|h| forgotten(s.lookup_op(ChunkHandle(h), OpId(1))))
    })
    .await;
}
