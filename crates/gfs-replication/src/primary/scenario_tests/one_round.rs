//! The one-round append (`CoordinatorConfig::one_round`): a WRITE to every secondary beside the
//! commit here. What the appender is told, the replicas' bytes and op tables, the watermark,
//! and what a retry finds after a WRITE that fell short.

use super::*;
use crate::testing::{Call, Fault};

/// A primary that appends in one round, with `secondaries` secondaries and a quorum of
/// `quorum`.
async fn one_round(secondaries: usize, quorum: usize) -> Rig {
    Rig::with(secondaries, quorum, |c| c.one_round = true).await
}

#[tokio::test]
async fn appends_go_in_one_call_per_secondary_and_land_alike_everywhere() {
    let rig = one_round(2, 2).await;
    let (a, b) = (rec(1, 100), rec(2, 3000));
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    rig.converged(3100).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
        assert_eq!(staged(s), 0);
    }
    for s in [rig.s(1), rig.s(2)] {
        assert_eq!(rig.net.delivered(s, Call::Write), 2);
        assert_eq!(rig.net.delivered(s, Call::Prepare), 0);
        assert_eq!(rig.net.delivered(s, Call::Commit), 0);
    }
    assert_eq!(rig.primary.read_limit(H), Some(3100));
    assert!(rig.lagging().is_empty());
}

#[tokio::test]
async fn concurrent_appends_commit_in_offset_order_on_every_replica() {
    let rig = Arc::new(one_round(2, 2).await);
    let tasks: Vec<_> = (1..=32u64)
        .map(|op| {
            let rig = Arc::clone(&rig);
            tokio::spawn(async move {
                let d = rec(op, 10 + op as usize);
                (op, rig.append(op, &d).await.unwrap(), d)
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort_by_key(|(_, offset, _)| *offset);
    let mut end = 0;
    for (_, offset, d) in &got {
        assert_eq!(*offset, end, "appends overlap or leave a hole");
        end += d.len() as u64;
    }
    rig.converged(end).await;
    let want: Vec<(u64, &Bytes)> = got.iter().map(|(op, _, d)| (*op, d)).collect();
    for s in rig.all() {
        holds(s, &want);
    }
    assert_eq!(rig.primary.read_limit(H), Some(end));
}

#[tokio::test]
async fn with_one_secondary_down_the_append_succeeds_and_it_is_reported_lagging() {
    let rig = one_round(2, 2).await;
    rig.net.down(rig.s(2));
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(1), &[(1, &a)]);
    holds(rig.store(2), &[]);
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    assert_eq!(rig.primary.read_limit(H), Some(100));
}

#[tokio::test]
async fn a_write_that_reached_no_secondary_is_shown_to_no_one_and_its_retry_sends_it_again() {
    let rig = one_round(2, 2).await;
    rig.net.inject(rig.s(1), Call::Write, Fault::Fail, 1);
    rig.net.inject(rig.s(2), Call::Write, Fault::Fail, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    // Committed here alone: the offset is taken, and no reader is shown it.
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(1), &[]);
    holds(rig.store(2), &[]);
    assert_eq!(rig.primary.read_limit(H), Some(0));
    eventually("both lagging", || rig.lagging() == vec!["s1", "s2"]).await;
    // The writer's retry (same op, same bytes) lands once, at its first offset: the WRITE
    // carries the bytes read back here.
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    let b = rec(2, 40);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    rig.converged(140).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
        assert_eq!(staged(s), 0);
    }
    assert_eq!(rig.primary.read_limit(H), Some(140));
}

#[tokio::test]
async fn a_write_whose_replies_were_lost_is_found_by_its_retry_not_written_twice() {
    let rig = one_round(2, 2).await;
    rig.net.inject(rig.s(1), Call::Write, Fault::LoseReply, 1);
    rig.net.inject(rig.s(2), Call::Write, Fault::LoseReply, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    rig.converged(100).await;
    assert_eq!(rig.primary.read_limit(H), Some(0));
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.primary.read_limit(H), Some(100));
    for s in rig.all() {
        holds(s, &[(1, &a)]);
    }
    assert_eq!(rig.net.delivered(rig.s(1), Call::Write), 2);
}

#[tokio::test]
async fn a_failed_write_never_gives_its_offset_to_another_op() {
    // Quorum 3 of 3, s2 silent past the deadline: the first append fails, but s1 and the
    // primary committed it, so the next op goes after it (two rounds would have reused 0).
    let rig = one_round(2, 3).await;
    rig.net.inject(rig.s(2), Call::Write, Fault::Hang, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 2, 3), "{r:?}");
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(1), &[(1, &a)]);
    assert_eq!(rig.net.delivered(rig.s(1), Call::Abort), 0);
    let b = rec(2, 10);
    // s2 missed op 1: its WRITE of op 2 waits for the hole and fails, so op 2 fails too...
    let r = rig.append(2, &b).await;
    assert!(no_quorum(&r, 2, 3), "{r:?}");
    // ...until op 1's retry sends s2 what it lacks; then both land, once, in order.
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    rig.converged(110).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
    }
}

#[tokio::test]
async fn a_secondary_at_a_newer_version_refuses_the_write() {
    let rig = one_round(2, 3).await;
    rig.store(2).set_version(H, V1 + 1).await.unwrap();
    let r = rig.append(1, &rec(1, 100)).await;
    // s2's refusal decides it, before or after s1's answer.
    assert!(no_quorum(&r, 1, 3) || no_quorum(&r, 2, 3), "{r:?}");
    holds(rig.store(2), &[]);
    assert_eq!(rig.store(2).info(H).unwrap().version, V1 + 1);
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
}

/// Seed 148412570704197 of the simulator: a retry of an op committed here alone, whose bytes
/// must go to the secondaries again, found them rotten at rest here. The lease is given up and
/// the client told to retry (`DiskFailed`: the next primary leads from the others), not handed
/// the checksum error as the append's end.
#[tokio::test]
async fn a_retry_whose_bytes_here_rotted_gives_the_lease_up() {
    let disk = gfs_util::disk::sim::SimDisk::new(1);
    let rig = Rig::build(2, 2, |c| c.one_round = true, Some(disk.shared())).await;
    rig.net.inject(rig.s(1), Call::Write, Fault::Fail, 1);
    rig.net.inject(rig.s(2), Call::Write, Fault::Fail, 1);
    // Past `inline_max`: written to the chunk file, where it rots.
    let a = rec(1, 100 << 10);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    let file = rig.local.dir().join(H.0.to_string());
    assert!(
        disk.flip_bit(&file, 1000, 3),
        "no byte to flip in {}",
        file.display()
    );
    let r = rig.append(1, &a).await;
    assert!(
        matches!(r, Err(ReplicationError::DiskFailed { .. })),
        "{r:?}"
    );
    assert!(
        rig.primary.lease(H).is_err(),
        "the lease is given up with the rotten copy"
    );
}
