//! Unit tests of the chunk store: staging, ordering, bounds, TTL, seal, versions, op ids and
//! their retention.

#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::time::Duration;

use bytes::Bytes;

use super::*;

mod durability;
mod retention;
mod snapshot_fuzz;

const H: ChunkHandle = ChunkHandle(42);

fn cfg() -> StoreConfig {
    StoreConfig {
        chunk_size: 1 << 20,
        staging_limit: 4 << 20,
        ..StoreConfig::default()
    }
}

fn req(op: u64, offset: u64, data: &[u8]) -> StageRequest {
    StageRequest {
        op: OpId(op),
        handle: H,
        version: 1,
        offset,
        data: Bytes::copy_from_slice(data),
    }
}

async fn fresh(dir: &Path, cfg: StoreConfig) -> ChunkStore {
    let s = ChunkStore::open(dir, cfg).unwrap();
    s.create(H, 1).await.unwrap();
    s
}

async fn append(s: &ChunkStore, op: u64, offset: u64, data: &[u8]) -> CommitInfo {
    s.stage(req(op, offset, data)).unwrap();
    s.commit(H, OpId(op)).await.unwrap()
}

/// Copies a data directory (but its lock file), as a crash would leave it.
fn copy_files(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Waits for `cond` with a deadline instead of sleeping a fixed time.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn stage_commit_read_back() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let a = append(&s, 1, 0, b"hello ").await;
    let b = append(&s, 2, 6, b"world").await;
    assert_eq!(a.record, AppendRecord { offset: 0, len: 6 });
    assert_eq!(b.committed_len, 11);
    assert_eq!(&s.read(H, 0, 100).unwrap()[..], b"hello world");
    assert_eq!(&s.read(H, 3, 5).unwrap()[..], b"lo wo");
    assert_eq!(s.read(H, 11, 5).unwrap().len(), 0);
    assert!(matches!(
        s.read(H, 12, 1),
        Err(StorageError::OutOfRange { committed: 11, .. })
    ));
    let info = s.info(H).unwrap();
    assert_eq!(
        (info.version, info.committed_len, info.sealed),
        (1, 11, false)
    );
}

#[tokio::test]
async fn commits_apply_in_offset_order() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(fresh(d.path(), cfg()).await);
    s.stage(req(1, 0, b"aaaa")).unwrap();
    s.stage(req(2, 4, b"bbbb")).unwrap();
    let s2 = Arc::clone(&s);
    let later = tokio::spawn(async move { s2.commit(H, OpId(2)).await });
    // The later commit must wait for its predecessor rather than leave a hole.
    eventually("the later commit to wait", || {
        s.info(H).unwrap().committed_len == 0 && !later.is_finished()
    })
    .await;
    s.commit(H, OpId(1)).await.unwrap();
    let two = later.await.unwrap().unwrap();
    assert_eq!(two.record.offset, 4);
    assert_eq!(&s.read(H, 0, 8).unwrap()[..], b"aaaabbbb");
}

#[tokio::test]
async fn a_commit_without_its_predecessor_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(
        d.path(),
        StoreConfig {
            commit_wait: Duration::from_millis(100),
            ..cfg()
        },
    )
    .await;
    s.stage(req(2, 4, b"bbbb")).unwrap();
    let t = Instant::now();
    assert!(matches!(
        s.commit(H, OpId(2)).await,
        Err(StorageError::Hole {
            offset: 4,
            next: 0,
            ..
        })
    ));
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "refused before the deadline"
    );
    assert_eq!(s.info(H).unwrap().committed_len, 0);
}

#[tokio::test]
async fn a_commit_waits_for_a_predecessor_staged_later() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(fresh(d.path(), cfg()).await);
    // On a secondary, the PREPARE of an earlier append can arrive after a later COMMIT.
    s.stage(req(2, 4, b"bbbb")).unwrap();
    let s2 = Arc::clone(&s);
    let later = tokio::spawn(async move { s2.commit(H, OpId(2)).await });
    eventually("the commit to register", || {
        s.inner.chunk(H).unwrap().st.lock().staged[&4]
            .waiter
            .is_some()
    })
    .await;
    s.stage(req(1, 0, b"aaaa")).unwrap();
    s.commit(H, OpId(1)).await.unwrap();
    assert_eq!(later.await.unwrap().unwrap().record.offset, 4);
    assert_eq!(&s.read(H, 0, 8).unwrap()[..], b"aaaabbbb");
}

#[tokio::test]
async fn a_waiting_commit_fails_when_its_predecessor_is_aborted() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(fresh(d.path(), cfg()).await);
    s.stage(req(1, 0, b"aaaa")).unwrap();
    s.stage(req(2, 4, b"bbbb")).unwrap();
    let s2 = Arc::clone(&s);
    let waiting = tokio::spawn(async move { s2.commit(H, OpId(2)).await });
    eventually("the commit to register", || {
        s.inner.chunk(H).unwrap().st.lock().staged[&4]
            .waiter
            .is_some()
    })
    .await;
    s.abort(H, OpId(1)).unwrap();
    assert!(matches!(
        waiting.await.unwrap(),
        Err(StorageError::Hole {
            offset: 4,
            next: 0,
            ..
        })
    ));
}

#[tokio::test]
async fn overlapping_stages_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"0123").await;
    assert!(matches!(
        s.stage(req(2, 2, b"xx")),
        Err(StorageError::Overlap { next: 4, .. })
    ));
    s.stage(req(3, 4, b"4567")).unwrap();
    assert!(matches!(
        s.stage(req(4, 6, b"zz")),
        Err(StorageError::Overlap { .. })
    ));
    assert!(matches!(
        s.stage(req(5, 2, b"zzzz")),
        Err(StorageError::Overlap { .. })
    ));
    // Re-staging the same op replaces it.
    s.stage(req(3, 4, b"45")).unwrap();
    s.commit(H, OpId(3)).await.unwrap();
    assert_eq!(s.info(H).unwrap().committed_len, 6);
}

#[tokio::test]
async fn staging_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(
        fresh(
            d.path(),
            StoreConfig {
                staging_limit: 10,
                ..cfg()
            },
        )
        .await,
    );
    s.stage(req(1, 0, b"12345678")).unwrap();
    assert!(matches!(
        s.stage(req(2, 8, b"abc")),
        Err(StorageError::Busy {
            staged: 8,
            len: 3,
            limit: 10
        })
    ));
    assert!(matches!(
        s.stage_wait(req(2, 8, b"abc"), Duration::from_millis(20))
            .await,
        Err(StorageError::Timeout(_))
    ));
    let s2 = Arc::clone(&s);
    let waiter = tokio::spawn(async move {
        s2.stage_wait(req(2, 8, b"abc"), Duration::from_secs(10))
            .await
    });
    s.commit(H, OpId(1)).await.unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(s.stats().staged_bytes, 3);
    s.commit(H, OpId(2)).await.unwrap();
    assert_eq!(s.stats().staged_bytes, 0);
}

#[tokio::test]
async fn abort_and_ttl_drop_staged_data() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(
        d.path(),
        StoreConfig {
            staging_ttl: Duration::from_millis(50),
            ..cfg()
        },
    )
    .await;
    s.stage(req(1, 0, b"abc")).unwrap();
    assert!(s.abort(H, OpId(1)).unwrap());
    assert!(!s.abort(H, OpId(1)).unwrap());
    assert!(matches!(
        s.commit(H, OpId(1)).await,
        Err(StorageError::NotStaged { .. })
    ));
    s.stage(req(2, 0, b"abc")).unwrap();
    assert_eq!(s.stats().staged_bytes, 3);
    eventually("the TTL to expire staged data", || {
        s.stats().staged_bytes == 0
    })
    .await;
    assert!(matches!(
        s.commit(H, OpId(2)).await,
        Err(StorageError::NotStaged { .. })
    ));
}

/// Seed 90477443447776 of the simulator: a primary that had given up its lease (its disk
/// full) sealed its own replica for that lease 3 ms after the master's fence had moved the
/// replica to the next version, and with a secondary it reached before the fence, told
/// clients the chunk ended where the master then did not seal it. A seal names the version
/// it is for: a fence and a seal of one replica are ordered, and the second sees the first.
#[tokio::test]
async fn a_seal_for_a_version_the_replica_left_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"abcdef").await;
    s.set_version(H, 2).await.unwrap();
    assert!(matches!(
        s.seal_exactly(H, 1, 6).await,
        Err(StorageError::StaleVersion {
            have: 2,
            got: 1,
            ..
        })
    ));
    assert!(!s.info(H).unwrap().sealed, "refused: nothing changed");
    assert_eq!(s.seal_exactly(H, 2, 6).await.unwrap(), 6);
    assert_eq!(s.seal_exactly(H, 2, 6).await.unwrap(), 6, "again: the same");

    // Sealed first, then fenced: the fence finds it sealed, and the seal stands.
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"abcdef").await;
    assert_eq!(s.seal_exactly(H, 1, 6).await.unwrap(), 6);
    s.set_version(H, 2).await.unwrap();
    let info = s.info(H).unwrap();
    assert_eq!(
        (info.version, info.sealed, info.committed_len),
        (2, true, 6)
    );
}

#[tokio::test]
async fn chunk_full_and_seal() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let big = vec![7u8; 1 << 19];
    append(&s, 1, 0, &big).await;
    assert!(matches!(
        s.stage(req(2, 1 << 19, &vec![1u8; (1 << 19) + 1])),
        Err(StorageError::ChunkFull { chunk_size, .. }) if chunk_size == 1 << 20
    ));
    s.stage(req(3, 1 << 19, b"staged, never committed"))
        .unwrap();
    assert_eq!(s.seal(H).await.unwrap(), 1 << 19);
    assert_eq!(s.seal(H).await.unwrap(), 1 << 19);
    assert_eq!(s.stats().staged_bytes, 0, "seal drops staged appends");
    assert!(matches!(
        s.stage(req(4, 1 << 19, b"x")),
        Err(StorageError::Sealed { .. })
    ));
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    let info = s.info(H).unwrap();
    assert!(info.sealed);
    assert_eq!(info.committed_len, 1 << 19);
}

#[tokio::test]
async fn op_ids_are_remembered_across_restarts() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"first").await;
    let again = s.commit(H, OpId(1)).await.unwrap();
    assert_eq!(again.record, AppendRecord { offset: 0, len: 5 });
    assert!(matches!(
        s.stage(req(1, 5, b"first")),
        Err(StorageError::AlreadyCommitted {
            offset: 0,
            len: 5,
            ..
        })
    ));
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(
        s.lookup_op(H, OpId(1)).unwrap(),
        Some(AppendRecord { offset: 0, len: 5 })
    );
    assert_eq!(s.lookup_op(H, OpId(2)).unwrap(), None);
}

#[tokio::test]
async fn versions_are_checked_and_durable() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    s.stage(req(1, 0, b"v1")).unwrap();
    s.set_version(H, 2).await.unwrap();
    assert_eq!(
        s.stats().staged_bytes,
        0,
        "staging of the old version is dropped"
    );
    assert!(matches!(
        s.stage(req(2, 0, b"v1")),
        Err(StorageError::StaleVersion {
            have: 2,
            got: 1,
            ..
        })
    ));
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(s.info(H).unwrap().version, 2);
}

#[tokio::test]
async fn create_delete_list() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    assert!(matches!(
        s.create(H, 1).await,
        Err(StorageError::AlreadyExists(_))
    ));
    s.create(ChunkHandle(7), 3).await.unwrap();
    append(&s, 1, 0, b"abc").await;
    let l = s.list();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0].handle, ChunkHandle(7));
    assert_eq!(l[1].committed_len, 3);
    s.delete(H).await.unwrap();
    assert!(matches!(s.read(H, 0, 1), Err(StorageError::NotFound(_))));
    assert!(!d.path().join("42").exists());
    assert!(!d.path().join("42.meta").exists());
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(s.list().len(), 1);
}

/// Once its data directory is found gone, the store answers `DiskLost` for every chunk, held
/// or not, never `NotFound`: a replica it lost is not one it never held (the master counts a
/// member that never held a chunk as a witness that it holds nothing of it).
#[tokio::test]
async fn a_lost_disk_answers_disk_lost_not_not_found() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("data");
    let s = fresh(&dir, cfg()).await;
    assert!(matches!(
        s.info(ChunkHandle(9)),
        Err(StorageError::NotFound(_))
    ));
    // Moved away in one step: removing it file by file races the store's own writes.
    fs::rename(&dir, d.path().join("gone")).unwrap();
    assert!(matches!(s.check_disk(), Err(StorageError::DiskLost(_))));
    for h in [H, ChunkHandle(9)] {
        assert!(matches!(s.info(h), Err(StorageError::DiskLost(_))), "{h}");
        assert!(matches!(
            s.set_version(h, 5).await,
            Err(StorageError::DiskLost(_))
        ));
    }
    assert!(s.list().is_empty());
}

/// What a primary told of the quorum's prefix holds for its version only and only moves up;
/// before any word, a new replica vouches for nothing and a version change for what was known
/// before it (seed 268: not its own length); after a reopen nothing is known (seeds 423 and 426 of the
/// simulator: a primary that committed appends alone, restarted, showed them to a reader,
/// and the next lease, decided without it, wrote other bytes there), and its report says so.
#[tokio::test]
async fn the_quorum_s_prefix_is_known_per_version_and_in_memory_only() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    assert_eq!(
        s.quorum_known(H),
        Some(0),
        "a new replica vouches for nothing"
    );
    append(&s, 1, 0, b"abc").await;
    assert_eq!(
        s.quorum_known(H),
        Some(0),
        "bytes committed here are not known to be on a quorum"
    );
    assert!(
        s.note_quorum(H, 1, 10).unwrap(),
        "a note at the version holds"
    );
    s.note_quorum(H, 1, 4).unwrap();
    assert_eq!(
        s.quorum_known(H),
        Some(10),
        "a late, lower note moves nothing"
    );
    assert!(
        !s.note_quorum(H, 2, 50).unwrap(),
        "a note at another version does not hold"
    );
    assert_eq!(
        s.quorum_known(H),
        Some(10),
        "a note at another version is ignored"
    );
    s.set_version(H, 2).await.unwrap();
    assert_eq!(
        s.quorum_known(H),
        Some(3),
        "what was known at the old version, up to the length (not the length itself)"
    );
    s.note_quorum(H, 2, 7).unwrap();
    assert_eq!(s.quorum_known(H), Some(7));
    assert!(!s.info(H).unwrap().unvouched, "all 3 bytes vouched for");
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(s.quorum_known(H), None, "nothing is known after a reopen");
    assert!(s.info(H).unwrap().unvouched);
    s.note_quorum(H, 2, 3).unwrap();
    assert!(!s.info(H).unwrap().unvouched, "a primary told");
    assert!(
        s.note_quorum(ChunkHandle(99), 1, 1).is_err(),
        "no such chunk"
    );
}

/// A WAL read from outside the store names each small append's chunk, offset and bytes.
#[tokio::test]
async fn the_wal_s_inline_appends_can_be_listed_from_its_bytes() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"first").await;
    append(&s, 2, 5, b"second").await;
    let wal = Bytes::from(fs::read(d.path().join("wal")).unwrap());
    let found = crate::wal_appends(wal);
    assert_eq!(
        found,
        vec![
            (H, 0, Bytes::from_static(b"first")),
            (H, 5, Bytes::from_static(b"second"))
        ]
    );
    assert!(crate::wal_appends(Bytes::from_static(b"not a wal")).is_empty());
}

/// A WAL read from outside the store names the chunks it creates and does not delete after.
#[tokio::test]
async fn the_wal_s_created_chunks_can_be_listed_from_its_bytes() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let (kept, gone) = (ChunkHandle(8), ChunkHandle(9));
    s.create(kept, 1).await.unwrap();
    s.create(gone, 1).await.unwrap();
    s.delete(gone).await.unwrap();
    let wal = Bytes::from(fs::read(d.path().join("wal")).unwrap());
    assert_eq!(crate::wal_created(wal), vec![kept, H]);
    assert!(crate::wal_created(Bytes::from_static(b"not a wal")).is_empty());
}

/// Seed 268 of the simulator: an old primary held a tail alone; a fence reached it, but its
/// reply was not among those the master decided from, and it showed the tail at the new
/// version. A version change vouches for what was known before it, not for the replica's
/// length.
#[tokio::test]
async fn a_version_change_vouches_for_what_was_known_not_for_the_length() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"abcdef").await;
    s.note_quorum(H, 1, 2).unwrap();
    s.set_version(H, 2).await.unwrap();
    assert_eq!(s.quorum_known(H), Some(2));
    assert!(s.info(H).unwrap().unvouched);
}

/// Seed 1645 of the simulator: a put's primary restarted (knowing nothing of what a quorum
/// holds, so it served no read), then the master's fence before its seal changed its version,
/// and it answered readers a length of 0 with the put's bytes on its disk; with a replica that
/// never had them it made the reader's quorum of answers, and a get returned an empty file.
/// A version change keeps an unknown prefix unknown (a known one, or an empty chunk's, as is).
#[tokio::test]
async fn a_version_change_keeps_a_reopened_replica_s_unknown_prefix_unknown() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    append(&s, 1, 0, b"abcdef").await;
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(s.quorum_known(H), None);
    s.set_version(H, 2).await.unwrap();
    assert_eq!(
        s.quorum_known(H),
        None,
        "the fence says nothing of what a quorum holds"
    );
    assert!(s.info(H).unwrap().unvouched);
    s.note_quorum(H, 2, 6).unwrap();
    assert_eq!(s.quorum_known(H), Some(6), "until a primary tells");

    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    s.set_version(H, 2).await.unwrap();
    assert_eq!(s.quorum_known(H), Some(0), "an empty replica vouches for 0");
}

/// A data directory keeps its identity across opens; a wiped one, or one whose `ID` does not
/// parse, gets a new one (the master then takes it for a new disk).
#[tokio::test]
async fn a_data_directory_keeps_its_identity_until_it_is_wiped() {
    let d = tempfile::tempdir().unwrap();
    let s = fresh(d.path(), cfg()).await;
    let id = s.identity();
    assert_ne!(id, 0);
    drop(s);
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert_eq!(s.identity(), id, "reopened");
    drop(s);
    fs::write(d.path().join("ID"), b"not hex").unwrap();
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    let new = s.identity();
    assert!(new != id && new != 0, "unparseable: a new one");
    drop(s);
    for e in fs::read_dir(d.path()).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let s = ChunkStore::open(d.path(), cfg()).unwrap();
    assert!(s.identity() != new && s.identity() != 0, "wiped: a new one");
}
