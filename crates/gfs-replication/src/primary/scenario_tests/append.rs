//! Appends without faults: offsets, ordering, exactly-once retries, refusals.

use super::*;
use crate::testing::{Call, Fault};

#[tokio::test]
async fn every_replica_holds_each_append_at_the_offset_it_was_given() {
    let rig = Rig::new(2, 2).await;
    let (a, b, c) = (rec(1, 100), rec(2, 5_000), rec(3, 1));
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    assert_eq!(rig.append(3, &c).await.unwrap(), 5_100);
    // Acknowledged once a quorum is durable; the third replica follows within its deadline.
    rig.converged(5_101).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b), (3, &c)]);
        assert_eq!(staged(s), 0);
    }
    assert!(rig.lagging().is_empty());
    assert_eq!(rig.primary.read_limit(H), Some(5_101));
}

#[tokio::test]
async fn concurrent_appends_tile_the_chunk_in_one_order_on_every_replica() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let records: Vec<Bytes> = (1..=24).map(|op| rec(op, 100 + op as usize * 37)).collect();
    let tasks: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (rig, data) = (Arc::clone(&rig), data.clone());
            tokio::spawn(async move { rig.append(i as u64 + 1, &data).await.unwrap() })
        })
        .collect();
    let mut placed = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        placed.push((t.await.unwrap(), i as u64 + 1));
    }
    // The offsets tile [0, total) without gap or overlap, and every replica holds each record
    // at the offset its appender was told, in that one order.
    placed.sort();
    let mut next = 0;
    let mut want = Vec::new();
    for (offset, op) in &placed {
        assert_eq!(*offset, next, "op {op}");
        let data = &records[*op as usize - 1];
        next += data.len() as u64;
        want.push((*op, data));
    }
    rig.converged(next).await;
    for s in rig.all() {
        holds(s, &want);
        assert_eq!(staged(s), 0);
    }
    assert_eq!(rig.primary.read_limit(H), Some(next));
}

#[tokio::test]
async fn a_retried_op_gets_its_first_offset_and_is_not_applied_twice() {
    let rig = Rig::new(2, 2).await;
    let (a, b) = (rec(1, 300), rec(2, 200));
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(2, &b).await.unwrap(), 300);
    rig.converged(500).await;
    let commits = rig.net.delivered(rig.s(1), Call::Commit);
    // The retry is answered from the op table, after the secondaries confirm (COMMIT again).
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert!(rig.net.delivered(rig.s(1), Call::Commit) > commits);
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 2);
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn a_retry_with_another_length_is_refused_and_changes_nothing() {
    let rig = Rig::new(2, 2).await;
    let a = rec(1, 300);
    rig.append(1, &a).await.unwrap();
    let r = rig.append(1, &rec(1, 301)).await;
    assert!(
        matches!(
            r,
            Err(ReplicationError::OpMismatch {
                have: 300,
                got: 301,
                ..
            })
        ),
        "{r:?}"
    );
    rig.converged(300).await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn the_same_op_sent_again_while_in_flight_is_busy_then_answered_once() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let a = rec(1, 300);
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Prepare, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let first = {
        let (rig, a) = (Arc::clone(&rig), a.clone());
        tokio::spawn(async move { rig.append(1, &a).await })
    };
    eventually("the first attempt staged", || staged(&rig.local) > 0).await;
    assert!(matches!(
        rig.append(1, &a).await,
        Err(ReplicationError::Busy(_))
    ));
    assert_eq!(first.await.unwrap().unwrap(), 0);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    rig.converged(300).await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
    }
}

#[tokio::test]
async fn a_positioned_append_waits_for_the_one_before_it() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let (a, b) = (rec(1, 100), rec(2, 50));
    // The second request of a writer arrives first: it waits for the next offset to reach 100.
    let second = {
        let (rig, b) = (Arc::clone(&rig), b.clone());
        tokio::spawn(async move { rig.primary.append(H, V1, OpId(2), Some(100), b).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished());
    assert_eq!(
        rig.primary
            .append(H, V1, OpId(1), Some(0), a.clone())
            .await
            .unwrap(),
        0
    );
    assert_eq!(second.await.unwrap().unwrap(), 100);
    rig.converged(150).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
    }
}

#[tokio::test]
async fn a_positioned_append_behind_the_next_offset_is_refused() {
    let rig = Rig::new(2, 2).await;
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    let r = rig
        .primary
        .append(H, V1, OpId(2), Some(50), rec(2, 10))
        .await;
    assert!(
        matches!(
            r,
            Err(ReplicationError::OffsetMismatch {
                expected: 50,
                next: 100,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 1);
    rig.converged(100).await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn oversized_and_empty_records_are_refused_before_anything_is_sent() {
    let rig = Rig::new(2, 2).await;
    let r = rig.append(1, &rec(1, QUARTER + 1)).await;
    assert!(
        matches!(r, Err(ReplicationError::RecordTooLarge { .. })),
        "{r:?}"
    );
    let r = rig.append(2, &Bytes::new()).await;
    assert!(matches!(r, Err(ReplicationError::EmptyRecord)), "{r:?}");
    for i in [1, 2] {
        assert_eq!(rig.net.delivered(rig.s(i), Call::Prepare), 0);
    }
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
    // A full quarter is a record like any other.
    let q = rec(3, QUARTER);
    assert_eq!(rig.append(3, &q).await.unwrap(), 0);
}

#[tokio::test]
async fn without_a_lease_or_past_it_nothing_is_appended() {
    let rig = Rig::new(2, 2).await;
    let r = rig
        .primary
        .append(ChunkHandle(99), V1, OpId(1), None, rec(1, 10))
        .await;
    assert!(
        matches!(
            r,
            Err(ReplicationError::Storage(
                gfs_storage::StorageError::NotFound(_)
            ))
        ),
        "{r:?}"
    );
    // A lease that ran out.
    rig.primary
        .grant_lease(H, V1, rig.addrs.clone(), SystemTime::now())
        .unwrap();
    let r = rig.append(1, &rec(1, 10)).await;
    assert!(matches!(r, Err(ReplicationError::LeaseExpired(_))), "{r:?}");
    // No lease at all.
    rig.primary.revoke(H);
    let r = rig.append(1, &rec(1, 10)).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 0);
}

#[tokio::test]
async fn with_a_quorum_of_one_the_secondaries_follow_in_the_background() {
    let rig = Rig::new(2, 1).await;
    let a = rec(1, 100);
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Prepare, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let start = tokio::time::Instant::now();
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert!(
        start.elapsed() < WITHIN_DEADLINE,
        "waited for the secondaries"
    );
    // Each secondary gets its COMMIT as soon as its PREPARE lands.
    eventually("the secondaries committed", || {
        rig.stores
            .iter()
            .all(|s| s.info(H).unwrap().committed_len == 100)
    })
    .await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
    assert!(rig.lagging().is_empty());
}
