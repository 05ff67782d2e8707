//! The chunk store on a simulated disk (`gfs_util::disk::sim::SimDisk`) that loses power at a
//! seeded instant: at any of its writes, fsyncs, creations, renames or removals, with every
//! write not yet fsynced kept, dropped or torn and every directory change not yet fsynced
//! kept only as an ordered prefix. After each crash the store reopens and must hold:
//!
//! - every acknowledged append, whole, at its offset, and its op id (an exactly-once retry of
//!   it answers `AlreadyCommitted` at that offset);
//! - a committed prefix made only of appends that were sent, each whole, in offset order;
//! - every acknowledged seal (at its length), version and delete; no chunk never created;
//! - checksums that verify (scrub clean).
//!
//! A second test adds failed fsyncs (which forget their writes, as Linux does) and a disk that
//! fills up before the crash; a third flips bits at rest and checks that no damaged byte is
//! ever served.
//!
//! Tokio's clock is paused: a commit that waits for a predecessor that never comes (its
//! commit failed) times out at once in simulated time.
//!
//! `GFS_SIM_SEEDS=N` runs N seeds (default 300); `GFS_SIM_SEED=S` runs seed S alone, and
//! `GFS_SIM_TRACE=1` prints each request's outcome. On the simulated disk the store runs no
//! thread (the committer's rounds run in the callers' task), so a seed replays exactly: the
//! last test checks that two runs of a seed issue the same disk operations.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError, StoreConfig};
use gfs_testkit::storage::Mix;
use gfs_util::disk::sim::SimDisk;

const DIR: &str = "/data";
const CHUNK: u64 = 256 << 10;

fn cfg() -> StoreConfig {
    StoreConfig {
        chunk_size: CHUNK,
        staging_limit: 16 << 20,
        // Both inline appends (in the WAL) and in-place ones (chunk file fsynced), and
        // checkpoints every few dozen appends.
        inline_max: 8 << 10,
        checkpoint_bytes: 96 << 10,
        ..StoreConfig::default()
    }
}

/// What the test sent to one chunk and what it was told.
#[derive(Debug, Default)]
struct Sent {
    /// The create was acknowledged.
    created: bool,
    /// Every append sent, by offset: op and bytes.
    appends: BTreeMap<u64, (OpId, Bytes)>,
    /// Acknowledged appends: op, offset, length.
    acked: Vec<(OpId, u64, u64)>,
    /// Where the next append goes.
    next: u64,
    /// Acknowledged seal length.
    sealed: Option<u64>,
    /// A seal was sent.
    seal_sent: bool,
    version: u64,
    /// Highest version sent.
    version_sent: u64,
    delete_sent: bool,
    deleted: bool,
    /// `forget_ops` was sent (its op table may be gone: lookups answer `OpRetentionExpired`).
    forget_sent: bool,
}

/// Stages the next append of `len` bytes on chunk `h` (a fresh op id, at the chunk's next
/// offset), noting it as sent; its op and offset.
fn stage_next(
    store: &ChunkStore,
    s: &mut Sent,
    h: u64,
    len: u64,
    next_op: &mut u64,
) -> Result<(OpId, u64), StorageError> {
    let op = OpId(*next_op);
    *next_op += 1;
    let data: Bytes = (0..len).map(|i| (i ^ op.0 ^ h) as u8).collect();
    let offset = s.next;
    s.appends.insert(offset, (op, data.clone()));
    s.next += len;
    store.stage(StageRequest {
        op,
        handle: ChunkHandle(h),
        version: s.version,
        offset,
        data,
    })?;
    Ok((op, offset))
}

/// Stages two to five appends on `live` chunks (not sealing ones), then commits them all at
/// once in a seeded order; returns the chunks where one failed.
async fn burst(
    store: &ChunkStore,
    sent: &mut BTreeMap<u64, Sent>,
    live: &[u64],
    rng: &mut Mix,
    next_op: &mut u64,
) -> Vec<u64> {
    let mut staged = Vec::new();
    let mut failed = Vec::new();
    for _ in 0..rng.range(2, 6) {
        let h = live[rng.range(0, live.len() as u64) as usize];
        let s = sent.get_mut(&h).unwrap();
        let len = rng.range(1, 12 << 10);
        if s.seal_sent || failed.contains(&h) || s.next + len > CHUNK {
            continue;
        }
        match stage_next(store, s, h, len, next_op) {
            Ok((op, offset)) => staged.push((h, op, offset, len)),
            Err(_) => failed.push(h),
        }
    }
    // A seeded shuffle of the commit order.
    for i in (1..staged.len()).rev() {
        staged.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    let results = futures::future::join_all(
        staged
            .iter()
            .map(|(h, op, _, _)| store.commit(ChunkHandle(*h), *op)),
    )
    .await;
    for ((h, op, offset, len), r) in staged.into_iter().zip(results) {
        match r {
            Ok(c) => {
                assert_eq!(c.record.offset, offset);
                sent.get_mut(&h).unwrap().acked.push((op, offset, len));
            }
            Err(_) => failed.push(h),
        }
    }
    failed
}

/// Runs the workload until the power goes (or `steps` ran); returns what was sent and told. A
/// chunk whose write failed (a failed fsync, a full disk) gets no more appends.
async fn workload(
    store: &ChunkStore,
    disk: &SimDisk,
    rng: &mut Mix,
    steps: usize,
) -> BTreeMap<u64, Sent> {
    let mut sent: BTreeMap<u64, Sent> = BTreeMap::new();
    let mut next_op = 1u64;
    for _ in 0..steps {
        let live: Vec<u64> = sent
            .iter()
            .filter(|(_, s)| s.created && !s.delete_sent)
            .map(|(h, _)| *h)
            .collect();
        let pick = rng.range(0, 100);
        let mut chunk = None;
        if pick >= 70 && !live.is_empty() {
            // Several appends staged at once, committed in a seeded order: one commit waits
            // for its predecessor, and group commits take several appends and chunks.
            let failed = burst(store, &mut sent, &live, rng, &mut next_op).await;
            if disk.crashes() > 0 {
                break;
            }
            for h in failed {
                if let Some(s) = sent.get_mut(&h) {
                    s.seal_sent = true;
                }
            }
            continue;
        }
        let r: Result<(), StorageError> = if live.is_empty() || (pick < 4 && sent.len() < 8) {
            let h = 100 + sent.len() as u64;
            let s = sent.entry(h).or_default();
            s.version = 1;
            s.version_sent = 1;
            store
                .create(ChunkHandle(h), 1)
                .await
                .map(|()| s.created = true)
        } else {
            let h = live[rng.range(0, live.len() as u64) as usize];
            chunk = Some(h);
            let s = sent.get_mut(&h).unwrap();
            let handle = ChunkHandle(h);
            if pick < 6 {
                s.delete_sent = true;
                if pick < 5 {
                    store.delete(handle).await.map(|()| s.deleted = true)
                } else {
                    // The same through the batched path, with a handle that does not exist.
                    let r = store.delete_many(&[handle, ChunkHandle(999)]).await;
                    assert!(r[1].1.is_err(), "deleting an unknown chunk succeeded");
                    r.into_iter().next().unwrap().1.map(|()| s.deleted = true)
                }
            } else if (12..14).contains(&pick) && s.seal_sent && !s.forget_sent {
                // A sealed chunk's op table dropped now, as the retention sweep would.
                s.forget_sent = true;
                store.forget_ops(handle).await
            } else if pick < 10 && !s.seal_sent {
                s.version_sent += 1;
                let v = s.version_sent;
                store.set_version(handle, v).await.map(|()| s.version = v)
            } else if s.seal_sent {
                continue;
            } else {
                // Small (inline) and large (in place) appends; the chunk seals when full.
                let len = if rng.range(0, 2) == 0 {
                    rng.range(1, 8 << 10)
                } else {
                    rng.range(8 << 10, 48 << 10)
                };
                if pick < 12 || s.next + len > CHUNK {
                    s.seal_sent = true;
                    store.seal(handle).await.map(|len| s.sealed = Some(len))
                } else {
                    match stage_next(store, s, h, len, &mut next_op) {
                        Ok((op, offset)) => store.commit(handle, op).await.map(|c| {
                            assert_eq!(c.record.offset, offset);
                            s.acked.push((op, offset, len));
                        }),
                        Err(e) => Err(e),
                    }
                }
            }
        };
        if std::env::var_os("GFS_SIM_TRACE").is_some() {
            println!(
                "chunk {chunk:?} pick {pick}: {r:?} (crashes {})",
                disk.crashes()
            );
        }
        if r.is_err() {
            if disk.crashes() > 0 {
                // The power went: every later operation fails too.
                break;
            }
            if let Some(s) = chunk.and_then(|h| sent.get_mut(&h)) {
                s.seal_sent = true;
            }
        }
    }
    sent
}

fn check(store: &ChunkStore, sent: &BTreeMap<u64, Sent>, seed: u64) {
    let listed: Vec<u64> = store.list().iter().map(|c| c.handle.0).collect();
    for h in &listed {
        assert!(
            sent.contains_key(h),
            "seed {seed}: chunk {h} was never created"
        );
    }
    assert!(
        store.scrub().corrupt.is_empty(),
        "seed {seed}: scrub found damage"
    );
    for (h, s) in sent {
        let handle = ChunkHandle(*h);
        let info = store.info(handle);
        if s.deleted {
            assert!(info.is_err(), "seed {seed}: deleted chunk {h} came back");
            continue;
        }
        let Ok(info) = info else {
            assert!(
                !s.created || s.delete_sent,
                "seed {seed}: acknowledged chunk {h} is gone"
            );
            continue;
        };
        let len = info.committed_len;
        let acked_end = s.acked.iter().map(|(_, o, l)| o + l).max().unwrap_or(0);
        assert!(
            len >= acked_end,
            "seed {seed}: chunk {h} holds {len} bytes, {acked_end} were acknowledged"
        );
        assert!(
            info.version >= s.version && info.version <= s.version_sent,
            "seed {seed}: chunk {h} at version {}, acknowledged {}, sent up to {}",
            info.version,
            s.version,
            s.version_sent
        );
        if let Some(sealed) = s.sealed {
            assert!(
                info.sealed && len == sealed,
                "seed {seed}: chunk {h} sealed at {sealed}, now {info:?}"
            );
        }
        // The committed prefix: whole appends that were sent, in order.
        let data = if len == 0 {
            Bytes::new()
        } else {
            store.read(handle, 0, len).unwrap()
        };
        let mut at = 0u64;
        while at < len {
            let Some((_, bytes)) = s.appends.get(&at) else {
                panic!("seed {seed}: chunk {h} holds bytes at {at} no append was sent to");
            };
            let end = at + bytes.len() as u64;
            assert!(
                end <= len,
                "seed {seed}: chunk {h} ends inside the append at {at}"
            );
            assert!(
                data[at as usize..end as usize] == bytes[..],
                "seed {seed}: chunk {h}: the append at {at} differs"
            );
            at = end;
        }
        for (op, offset, l) in &s.acked {
            if s.forget_sent {
                match store.lookup_op(handle, *op) {
                    Err(StorageError::OpRetentionExpired { .. }) => continue,
                    other => assert!(
                        other.is_ok(),
                        "seed {seed}: chunk {h}: lookup after forget_ops: {other:?}"
                    ),
                }
            }
            let r = store.lookup_op(handle, *op).unwrap();
            assert_eq!(
                r.map(|r| (r.offset, u64::from(r.len))),
                Some((*offset, *l)),
                "seed {seed}: chunk {h} forgot acknowledged op {op:?}"
            );
        }
    }
}

/// Each seed: the workload with the power lost at a seeded operation (and, for half the seeds,
/// again during recovery), then the checks, a second crash with nothing in flight, and the
/// checks again. With `faults`, fsyncs also fail (2 %) and the disk fills up (half the seeds).
async fn run(faults: bool) {
    let dir = Path::new(DIR);
    let mut struck = 0;
    for seed in gfs_testkit::sim_seeds(300) {
        let disk = SimDisk::new(seed);
        let mut rng = Mix(seed);
        let store = ChunkStore::open_on(disk.shared(), dir, cfg()).unwrap();
        if faults {
            disk.set_sync_failure_ppm(20_000);
            if rng.range(0, 2) == 0 {
                disk.set_capacity(Some(rng.range(200 << 10, 2 << 20)));
            }
        }
        // Somewhere in the run, or (a few seeds) after it, with everything still pending.
        disk.crash_after(rng.range(0, 900));
        let sent = workload(&store, &disk, &mut rng, 300).await;
        if disk.crashes() == 0 {
            disk.crash();
        } else {
            struck += 1;
        }
        drop(store);
        // Recovery runs on a healthy disk (a failed fsync there refuses the open, rightly).
        disk.set_sync_failure_ppm(0);
        disk.set_capacity(None);
        // Half the seeds lose power again during recovery.
        if rng.range(0, 2) == 0 {
            disk.crash_after(rng.range(0, 60));
            if ChunkStore::open_on(disk.shared(), dir, cfg()).is_err() {
                assert_eq!(
                    disk.crashes(),
                    2,
                    "seed {seed}: recovery failed without a crash"
                );
            }
            disk.crash();
        }
        let store = ChunkStore::open_on(disk.shared(), dir, cfg())
            .unwrap_or_else(|e| panic!("seed {seed}: the store does not reopen: {e}"));
        check(&store, &sent, seed);
        // And again, after a second power loss with nothing in flight: recovery's own writes
        // were durable.
        drop(store);
        disk.crash();
        let store = ChunkStore::open_on(Arc::clone(&disk.shared()), dir, cfg())
            .unwrap_or_else(|e| panic!("seed {seed}: the store does not reopen twice: {e}"));
        check(&store, &sent, seed);
    }
    println!("{struck} crashes struck mid-run");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_crash_at_any_disk_operation_keeps_every_acknowledged_append() {
    run(false).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failed_fsyncs_and_a_full_disk_before_a_crash_lose_or_tear_nothing_acknowledged() {
    run(true).await;
}

/// Bits flipped at rest in chunk files and snapshots (after a clean stop and a power cycle):
/// a read returns an acknowledged append's exact bytes or `ChecksumMismatch`, never other
/// bytes; scrub names every damaged block of a committed range; a damaged snapshot quarantines
/// its chunk instead of serving it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_bit_flipped_at_rest_is_never_served() {
    let dir = Path::new(DIR);
    let (mut in_data, mut in_snapshots, mut refused) = (0, 0, 0);
    for seed in gfs_testkit::sim_seeds(300) {
        let disk = SimDisk::new(seed);
        let mut rng = Mix(seed ^ 0xB17F);
        let store = ChunkStore::open_on(disk.shared(), dir, cfg()).unwrap();
        let sent = workload(&store, &disk, &mut rng, 200).await;
        drop(store);
        disk.crash();
        // Flip a few bits in the chunk files and snapshots that exist.
        let files: Vec<_> = disk
            .files()
            .into_iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.parse::<u64>().is_ok() || name.ends_with(".meta")
            })
            .collect();
        let mut flipped: Vec<(std::path::PathBuf, u64)> = Vec::new();
        for _ in 0..rng.range(1, 4) {
            if files.is_empty() {
                break;
            }
            let p = &files[rng.range(0, files.len() as u64) as usize];
            let len = gfs_util::disk::Disk::read(&disk, p).unwrap().len() as u64;
            if len == 0 {
                continue;
            }
            let at = rng.range(0, len);
            assert!(disk.flip_bit(p, at, rng.range(0, 8) as u8));
            flipped.push((p.clone(), at));
        }
        let store = ChunkStore::open_on(disk.shared(), dir, cfg())
            .unwrap_or_else(|e| panic!("seed {seed}: the store does not reopen: {e}"));
        for (p, at) in &flipped {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap();
            if let Some(h) = name.strip_suffix(".meta") {
                let h = ChunkHandle(h.parse().unwrap());
                assert!(
                    store.quarantined().contains(&h) && store.info(h).is_err(),
                    "seed {seed}: chunk {h} with a damaged snapshot is still served"
                );
                in_snapshots += 1;
            } else {
                let h = ChunkHandle(name.parse().unwrap());
                if let Ok(info) = store.info(h)
                    && *at < info.committed_len
                {
                    let block = at / gfs_storage::BLOCK_SIZE;
                    assert!(
                        store.scrub_one(h).unwrap().contains(&block),
                        "seed {seed}: scrub missed the flip at {at} of chunk {h}"
                    );
                    in_data += 1;
                }
            }
        }
        for (h, s) in &sent {
            let handle = ChunkHandle(*h);
            if store.info(handle).is_err() {
                continue;
            }
            for (_, offset, len) in &s.acked {
                match store.read(handle, *offset, *len) {
                    Ok(got) => {
                        let (_, want) = &s.appends[offset];
                        assert!(
                            got == *want,
                            "seed {seed}: chunk {h} served other bytes at {offset}"
                        );
                    }
                    Err(StorageError::ChecksumMismatch { .. }) => refused += 1,
                    Err(e) => panic!("seed {seed}: chunk {h} at {offset}: {e}"),
                }
            }
        }
    }
    println!(
        "{in_data} flips in committed data, {in_snapshots} in snapshots, {refused} reads refused"
    );
    assert!(
        in_data > 0 && in_snapshots > 0 && refused > 0,
        "the flips missed what they test"
    );
}

/// The store does its work in the callers' task on a simulated disk (no committer thread, no
/// file-pool thread, fsyncs one after another), so a seed replays exactly: two runs of the
/// same seed issue the same disk operations, crash at the same one and recover alike.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_same_seed_replays_the_same_disk_operations() {
    let dir = Path::new(DIR);
    let once = |seed: u64| async move {
        // The store's one draw (a new data directory's identity) comes from the source a
        // simulator seeds.
        gfs_util::random::seed_thread(seed);
        let disk = SimDisk::new(seed);
        if std::env::var_os("GFS_SIM_TRACE").is_some() {
            disk.keep_log();
        }
        let mut rng = Mix(seed);
        let store = ChunkStore::open_on(disk.shared(), dir, cfg()).unwrap();
        disk.set_sync_failure_ppm(20_000);
        disk.crash_after(rng.range(0, 900));
        let sent = workload(&store, &disk, &mut rng, 300).await;
        drop(store);
        disk.crash();
        disk.set_sync_failure_ppm(0);
        let store = ChunkStore::open_on(disk.shared(), dir, cfg()).unwrap();
        check(&store, &sent, seed);
        drop(store);
        for line in disk.log() {
            println!("disk: {line}");
        }
        (disk.trace_hash(), disk.files())
    };
    let mut distinct = gfs_util::collections::HashSet::default();
    for seed in gfs_testkit::sim_seeds(40) {
        let (a, b) = (once(seed).await, once(seed).await);
        assert_eq!(a, b, "seed {seed} did not replay");
        distinct.insert(a.0);
    }
    assert!(distinct.len() > 1, "every seed gave the same trace");
}

/// A chunk deleted and created again under its handle (the master deletes a stale replica, then
/// copies the chunk back to the same server) keeps its new bytes through a crash before the
/// next checkpoint: the replay must not let the old incarnation's records, nor its delete,
/// touch the new one's file. Found by the whole-cluster simulator (gfs-sim, seed 14).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_chunk_created_again_under_its_handle_survives_a_crash() {
    let disk = SimDisk::new(1);
    let cfg = StoreConfig {
        // No checkpoint in between: the WAL holds both incarnations.
        checkpoint_bytes: 1 << 30,
        ..cfg()
    };
    let h = ChunkHandle(7);
    let append = |store: &ChunkStore, op: u64, offset: u64, len: u64, fill: u8| {
        store
            .stage(StageRequest {
                op: OpId(op),
                handle: h,
                version: 1,
                offset,
                data: Bytes::from(vec![fill; len as usize]),
            })
            .unwrap();
    };
    let store = ChunkStore::open_on(disk.shared(), DIR, cfg.clone()).unwrap();
    store.create(h, 1).await.unwrap();
    // In place (past inline_max) and inline appends of the first incarnation.
    append(&store, 1, 0, 20 << 10, 0xaa);
    store.commit(h, OpId(1)).await.unwrap();
    append(&store, 2, 20 << 10, 100, 0xab);
    store.commit(h, OpId(2)).await.unwrap();
    store.delete(h).await.unwrap();
    store.create(h, 1).await.unwrap();
    append(&store, 3, 0, 30 << 10, 0xbb);
    store.commit(h, OpId(3)).await.unwrap();
    append(&store, 4, 30 << 10, 200, 0xbc);
    store.commit(h, OpId(4)).await.unwrap();
    let want = store.read(h, 0, (30 << 10) + 200).unwrap();

    disk.crash();
    drop(store);
    let store = ChunkStore::open_on(disk.shared(), DIR, cfg).unwrap();
    let info = store.info(h).unwrap();
    assert_eq!(
        info.committed_len,
        (30 << 10) + 200,
        "the new incarnation's length"
    );
    assert_eq!(store.read(h, 0, info.committed_len).unwrap(), want);
}

/// A creation fsyncs the WAL alone: its Create record makes the chunk durable, and a replay
/// makes its file again if the crash lost the directory entry, with its inline appends. The
/// first round that writes bytes in place fsyncs the directory as well, so those bytes are
/// found under the chunk's name. Each seed loses another prefix of the directory's changes.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_new_chunk_survives_a_crash_that_loses_its_directory_entry() {
    let cfg = StoreConfig {
        checkpoint_bytes: 1 << 30,
        ..cfg()
    };
    let append = |store: &ChunkStore, h: ChunkHandle, op: u64, len: usize, fill: u8| {
        store
            .stage(StageRequest {
                op: OpId(op),
                handle: h,
                version: 1,
                offset: 0,
                data: Bytes::from(vec![fill; len]),
            })
            .unwrap();
    };
    let (in_place, inline) = (ChunkHandle(1), ChunkHandle(2));
    for seed in 0..64 {
        let disk = SimDisk::new(seed);
        let store = ChunkStore::open_on(disk.shared(), DIR, cfg.clone()).unwrap();
        let fsyncs = |store: &ChunkStore| store.stats().fsyncs;
        let before = fsyncs(&store);
        store.create(in_place, 1).await.unwrap();
        assert_eq!(
            fsyncs(&store) - before,
            1,
            "a creation: the WAL's fsync alone"
        );
        append(&store, in_place, 1, 20 << 10, 0xaa);
        let before = fsyncs(&store);
        store.commit(in_place, OpId(1)).await.unwrap();
        assert_eq!(
            fsyncs(&store) - before,
            3,
            "the first bytes in place: the WAL, the chunk file and the directory"
        );
        store.create(inline, 1).await.unwrap();
        append(&store, inline, 2, 100, 0xbb);
        let before = fsyncs(&store);
        store.commit(inline, OpId(2)).await.unwrap();
        assert_eq!(fsyncs(&store) - before, 1, "inline bytes: the WAL alone");

        disk.crash();
        drop(store);
        let store = ChunkStore::open_on(disk.shared(), DIR, cfg.clone()).unwrap();
        for (h, len, fill) in [(in_place, 20 << 10, 0xaa), (inline, 100, 0xbb)] {
            let info = store.info(h).unwrap();
            assert_eq!(info.committed_len, len as u64, "seed {seed}, chunk {h}");
            assert_eq!(
                &store.read(h, 0, len as u64).unwrap()[..],
                &vec![fill; len][..],
                "seed {seed}, chunk {h}"
            );
        }
        assert!(store.scrub().corrupt.is_empty(), "seed {seed}");
    }
}
