//! The operation log on a simulated disk (`gfs_util::disk::sim::SimDisk`) that loses power at
//! a seeded instant (writes not yet fsynced kept, dropped or torn; directory changes not yet
//! fsynced kept as an ordered prefix). Mutations run one after another, so after the crash the
//! recovered namespace must be exactly the state after the first `k` mutations sent, for a `k`
//! that covers every acknowledged one and no more than were sent; and a mutation whose caller
//! heard of a failed write before any crash must never come back (`k` = acknowledged).
//!
//! `GFS_SIM_SEEDS=N` runs N seeds (default 300), `GFS_SIM_SEED=S` seed S alone. The last test
//! checks that a seed replays exactly (the log runs no thread on a simulated disk).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use gfs_master::record::{
    AddChunkOp, Checkpoint, CreateOp, DeleteOp, Op, PathOp, RenameOp, SealOp, SetVersionOp,
};
use gfs_master::{MetaConfig, MetaStore, Namespace};
use gfs_testkit::storage::Mix;
use gfs_util::disk::sim::SimDisk;

const DIR: &str = "/master";

/// A namespace as comparable data: its checkpoint without the sequence number.
fn state(ns: &Namespace) -> Checkpoint {
    Checkpoint {
        seq: 0,
        ..ns.to_checkpoint(0)
    }
}

/// A mutation valid on `model` (which it is applied to), chosen by `rng`.
fn next_op(model: &mut Namespace, rng: &mut Mix, handle: &mut u64) -> Op {
    loop {
        let d = rng.range(0, 4);
        let f = rng.range(0, 6);
        let op = match rng.range(0, 10) {
            0 => Op::Mkdir(PathOp {
                path: format!("/d{d}"),
                mtime_ms: 1,
            }),
            1..=3 => Op::Create(CreateOp {
                path: format!("/d{d}/f{f}"),
                mtime_ms: 2,
                replication: 3,
            }),
            4 => Op::Rename(RenameOp {
                src: format!("/d{d}/f{f}"),
                dst: format!("/d{}/f{}", rng.range(0, 4), rng.range(0, 6)),
                mtime_ms: 3,
            }),
            5 => Op::Delete(DeleteOp {
                path: format!("/d{d}/f{f}"),
                mtime_ms: 4,
                recursive: false,
            }),
            6 | 7 => {
                *handle += 1;
                Op::AddChunk(AddChunkOp {
                    path: format!("/d{d}/f{f}"),
                    handle: *handle,
                    version: 1,
                    primary: String::new(),
                    uncreated: Vec::new(),
                    placed: 0,
                })
            }
            8 => Op::SetVersion(SetVersionOp {
                handle: 1 + rng.range(0, (*handle).max(1)),
                version: 2 + rng.range(0, 5),
                primary: "cs1".into(),
            }),
            _ => Op::Seal(SealOp {
                handle: 1 + rng.range(0, (*handle).max(1)),
                length: rng.range(0, 1 << 20),
            }),
        };
        if model.apply(&op).is_ok() {
            return op;
        }
    }
}

async fn run(faults: bool) {
    let dir = Path::new(DIR);
    let mut struck = 0;
    for seed in gfs_testkit::sim_seeds(300) {
        let disk = SimDisk::new(seed);
        let mut rng = Mix(seed);
        let cfg = || MetaConfig {
            checkpoint_every: checkpoint_every(seed),
        };
        let store = MetaStore::open_on(disk.shared(), dir, cfg()).unwrap();
        if faults {
            disk.set_sync_failure_ppm(30_000);
        }
        disk.crash_after(rng.range(0, 1500));
        // states[k]: the namespace after the first k mutations.
        let mut model = Namespace::new();
        let mut states = vec![state(&model)];
        let mut handle = 0;
        let (mut acked, mut failed_before_crash) = (0usize, false);
        for _ in 0..150 {
            let op = next_op(&mut model, &mut rng, &mut handle);
            states.push(state(&model));
            match store.mutate(op).await {
                Ok(_) => acked += 1,
                Err(_) => {
                    failed_before_crash = disk.crashes() == 0;
                    break;
                }
            }
        }
        let sent = states.len() - 1;
        if disk.crashes() == 0 {
            if failed_before_crash {
                // A restart without a power loss first: the page cache still holds what the
                // failed fsync left.
                drop(store);
                disk.set_sync_failure_ppm(0);
                // No power loss in this restart.
                disk.crash_after(u64::MAX);
                let reopened = MetaStore::open_on(disk.shared(), dir, cfg()).unwrap();
                let k = reopened.durable_seq() as usize;
                assert_eq!(
                    k, acked,
                    "seed {seed}: a mutation whose write failed came back after a restart"
                );
                drop(reopened);
            } else {
                drop(store);
            }
            disk.crash();
        } else {
            struck += 1;
            drop(store);
        }
        disk.set_sync_failure_ppm(0);
        for round in 0..2 {
            let store = MetaStore::open_on(disk.shared(), dir, cfg())
                .unwrap_or_else(|e| panic!("seed {seed}: the log does not reopen: {e}"));
            let k = store.durable_seq() as usize;
            let upper = if failed_before_crash { acked } else { sent };
            assert!(
                acked <= k && k <= upper,
                "seed {seed} (round {round}): {k} mutations durable, {acked} acknowledged, {sent} sent"
            );
            let got = store.read(state).await.unwrap();
            assert!(
                got == states[k],
                "seed {seed} (round {round}): the namespace is not the state after {k} mutations"
            );
            drop(store);
            // A second power loss with nothing in flight changes nothing.
            disk.crash();
        }
    }
    println!("{struck} crashes struck mid-run");
}

/// Checkpoint spacing by seed (1 to 16 records), so checkpoints, segment rotation and removal
/// of old files land at every point of the run.
fn checkpoint_every(seed: u64) -> u64 {
    1 + seed % 16
}

#[tokio::test(flavor = "current_thread")]
async fn a_crash_at_any_disk_operation_recovers_exactly_a_prefix_of_the_mutations() {
    run(false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_mutation_whose_fsync_failed_never_comes_back() {
    run(true).await;
}

/// On a simulated disk the log has no committer thread (each caller writes the batches queued
/// before it), so two runs of a seed issue the same disk operations.
#[tokio::test(flavor = "current_thread")]
async fn the_same_seed_replays_the_same_disk_operations() {
    let dir = Path::new(DIR);
    let once = |seed: u64| async move {
        let disk = SimDisk::new(seed);
        let mut rng = Mix(seed);
        let cfg = || MetaConfig {
            checkpoint_every: checkpoint_every(seed),
        };
        let store = MetaStore::open_on(disk.shared(), dir, cfg()).unwrap();
        disk.set_sync_failure_ppm(10_000);
        disk.crash_after(rng.range(0, 1500));
        let (mut model, mut handle) = (Namespace::new(), 0);
        for _ in 0..150 {
            let op = next_op(&mut model, &mut rng, &mut handle);
            if store.mutate(op).await.is_err() {
                break;
            }
        }
        drop(store);
        disk.crash();
        disk.set_sync_failure_ppm(0);
        let store = MetaStore::open_on(disk.shared(), dir, cfg()).unwrap();
        let seq = store.durable_seq();
        drop(store);
        (disk.trace_hash(), seq, disk.files())
    };
    for seed in gfs_testkit::sim_seeds(100) {
        assert_eq!(
            once(seed).await,
            once(seed).await,
            "seed {seed} did not replay"
        );
    }
}
