//! The Raft storage against openraft's conformance suite, and across restarts and crashes.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gfs_util::disk::OsDisk;
use gfs_util::disk::sim::SimDisk;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LeaderId, LogId, Membership, RaftLogReader,
    RaftSnapshotBuilder, Vote,
};

use super::*;
use crate::record::{CreateOp, PathOp};

/// Builds a log and a state machine in a fresh directory each time (kept by the guard).
struct Fresh;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), RaftStorageError> {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open_on(OsDisk::shared(), dir.path()).unwrap();
        let sm = StateMachine::open_on(OsDisk::shared(), dir.path()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_storage_passes_openraft_s_suite() {
    Suite::test_all(Fresh).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn mkdir(term: u64, index: u64, path: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal {
            ops: vec![Op::Mkdir(PathOp {
                path: path.into(),
                mtime_ms: index,
            })],
        }),
    }
}

fn members() -> Membership<u64, MasterNode> {
    let nodes: BTreeMap<u64, MasterNode> = (1..=3)
        .map(|i| {
            (
                i,
                MasterNode {
                    addr: format!("m{i}:7000"),
                },
            )
        })
        .collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    log.blocking_append(entries).await.unwrap();
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

/// What was appended, truncated, purged and voted survives a reopen, entries intact (a
/// membership's voters and addresses, an operation's fields).
#[tokio::test]
async fn the_log_and_vote_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = OsDisk::shared();
    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    let mut entries = vec![Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(members()),
    }];
    entries.extend((2..=10).map(|i| mkdir(1, i, &format!("/d{i}"))));
    append(&mut log, entries.clone()).await;
    log.truncate(log_id(1, 8)).await.unwrap();
    append(&mut log, vec![mkdir(2, 8, "/e8")]).await;
    let vote = Vote {
        leader_id: LeaderId::new(2, 3),
        committed: true,
    };
    log.save_vote(&vote).await.unwrap();
    // One process per directory.
    let second = LogStore::open_on(Arc::clone(&disk), dir.path());
    assert!(matches!(second, Err(MasterError::Locked(_))));
    drop(log);

    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(indexes(&mut log).await, (1..=8).collect::<Vec<_>>());
    let got = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(got[0], entries[0]);
    assert_eq!(got[6], entries[6]);
    assert_eq!(got[7], mkdir(2, 8, "/e8"));

    // A purge rewrites the segment: the purged ones stay gone, the rest stay.
    log.purge(log_id(1, 5)).await.unwrap();
    drop(log);
    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, vec![6, 7, 8]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    let segments: Vec<String> = disk
        .read_dir(dir.path())
        .unwrap()
        .iter()
        .filter_map(|e| e.name().map(String::from))
        .filter(|n| n.starts_with("raft-log-"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
}

/// The segment holds zeros written ahead of its entries (an append's fsync then commits no
/// new file size); a reopen ends the log at the last entry, and the next ones go over the zeros.
#[tokio::test]
async fn entries_go_over_zeros_written_ahead_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let disk = OsDisk::shared();
    let segment = || {
        let path = dir.path().join(format!("raft-log-{:020}", 1));
        std::fs::read(path).unwrap()
    };
    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    append(
        &mut log,
        (1..=5).map(|i| mkdir(1, i, &format!("/d{i}"))).collect(),
    )
    .await;
    let len = segment().len();
    let end = segment().iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(len >= end + 64 * 1024, "{end} bytes of entries in {len}");
    drop(log);
    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    append(
        &mut log,
        (6..=9).map(|i| mkdir(1, i, &format!("/d{i}"))).collect(),
    )
    .await;
    assert_eq!(
        segment().len(),
        len,
        "the entries did not go over the zeros"
    );
    drop(log);
    let mut log = LogStore::open_on(Arc::clone(&disk), dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, (1..=9).collect::<Vec<_>>());
}

/// On a simulated disk: what an append acknowledged (its callback said durable) survives a
/// crash at any point of the next append or purge, whatever the disk kept of unsynced writes;
/// what the crash cut leaves at most a torn tail, which the reopen cuts.
#[tokio::test]
async fn acknowledged_entries_survive_a_crash_and_a_torn_tail_is_cut() {
    let (mut cut_appends, mut cut_purges, mut purges) = (0, 0, 0);
    for seed in 0..48 {
        let sim = SimDisk::new(seed);
        let mut log = LogStore::open_on(sim.shared(), "/m").unwrap();
        append(
            &mut log,
            (1..=5).map(|i| mkdir(1, i, &format!("/d{i}"))).collect(),
        )
        .await;
        // A crash at one of the next operations: a write, its fsync, or a step of a purge's
        // rewrite (write aside, fsync, rename, directory fsync, removal).
        sim.crash_after(seed % 12);
        let more: Vec<_> = (6..=9).map(|i| mkdir(1, i, &format!("/d{i}"))).collect();
        let appended = log.blocking_append(more).await.is_ok();
        let purged = appended && log.purge(log_id(1, 2)).await.is_ok();
        cut_appends += usize::from(!appended);
        cut_purges += usize::from(appended && !purged);
        purges += usize::from(purged);
        drop(log);
        sim.crash();
        let mut log = LogStore::open_on(sim.shared(), "/m").unwrap();
        let got = indexes(&mut log).await;
        let first = got.first().copied().unwrap_or(0);
        let last = got.last().copied().unwrap_or(0);
        assert!(first == 1 || first == 3, "seed {seed}: {got:?}");
        assert!(last >= if appended { 9 } else { 5 }, "seed {seed}: {got:?}");
        assert_eq!(got, (first..=last).collect::<Vec<_>>(), "seed {seed}");
        if purged {
            assert_eq!(first, 3, "seed {seed}");
        }
        // The log takes appends again after the cut.
        let next = last + 1;
        append(&mut log, vec![mkdir(2, next, "/after")]).await;
    }
    // Every kind of cut happened.
    assert!(
        cut_appends > 0 && cut_purges > 0 && purges > 0,
        "{cut_appends} {cut_purges} {purges}"
    );
}

/// Entries apply to the namespace in order; one that does not apply changes nothing and
/// answers why; a snapshot, written aside, restores the namespace and the membership at a
/// reopen, and installs on another master.
#[tokio::test]
async fn the_state_machine_applies_snapshots_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let disk = OsDisk::shared();
    let mut sm = StateMachine::open_on(Arc::clone(&disk), dir.path()).unwrap();
    let create = |index: u64, path: &str| Entry::<TypeConfig> {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Proposal {
            ops: vec![Op::Create(CreateOp {
                path: path.into(),
                mtime_ms: 0,
                replication: 3,
            })],
        }),
    };
    let applied = sm
        .apply(vec![
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Membership(members()),
            },
            mkdir(1, 2, "/d"),
            create(3, "/d/f"),
            create(4, "/d/f"),
            create(5, "/nowhere/f"),
        ])
        .await
        .unwrap();
    // One result per operation of each entry (none for the membership).
    assert_eq!(applied.len(), 5);
    assert!(applied[0].is_empty(), "{applied:?}");
    assert!(
        applied[1..3].iter().all(|a| a.len() == 1 && a[0].is_ok()),
        "{applied:?}"
    );
    assert!(matches!(
        applied[3][..],
        [Err(MasterError::AlreadyExists(_))]
    ));
    assert!(matches!(applied[4][..], [Err(_)]));
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 5)));
    drop(sm);

    let mut sm = StateMachine::open_on(Arc::clone(&disk), dir.path()).unwrap();
    let (last, membership) = sm.applied_state().await.unwrap();
    assert_eq!(last, Some(log_id(1, 5)));
    assert_eq!(membership.membership(), &members());
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert!(sm.read(|ns| ns.stat("/d/f").is_ok()));
    assert!(sm.read(|ns| ns.stat("/nowhere").is_err()));

    let other = tempfile::tempdir().unwrap();
    let mut follower = StateMachine::open_on(Arc::clone(&disk), other.path()).unwrap();
    follower
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(follower.read(|ns| ns.stat("/d/f").is_ok()));
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    drop(follower);
    let mut follower = StateMachine::open_on(disk, other.path()).unwrap();
    assert_eq!(
        follower.applied_state().await.unwrap().0,
        Some(log_id(1, 5))
    );
}
