//! A full chunk: the seal on a quorum of secondaries first (a short one caught up), then here.

use super::*;
use crate::testing::{Call, Fault};

/// Appends three quarter records and one of `tail` bytes (ops 1 to 4); returns them.
async fn fill(rig: &Rig, tail: usize) -> Vec<(u64, Bytes)> {
    let mut records = Vec::new();
    let mut offset = 0;
    for op in 1..=4 {
        let data = rec(op, if op == 4 { tail } else { QUARTER });
        assert_eq!(rig.append(op, &data).await.unwrap(), offset);
        offset += data.len() as u64;
        records.push((op, data));
    }
    records
}

fn refs(records: &[(u64, Bytes)]) -> Vec<(u64, &Bytes)> {
    records.iter().map(|(op, d)| (*op, d)).collect()
}

fn full(r: &Result<u64>, at: u64) -> bool {
    matches!(r, Err(ReplicationError::ChunkFull { length, .. }) if *length == at)
}

#[tokio::test]
async fn a_record_that_does_not_fit_seals_every_replica_at_one_length() {
    let rig = Rig::new(2, 2).await;
    let records = fill(&rig, 100).await;
    let length = 3 * QUARTER as u64 + 100;
    let r = rig.append(5, &rec(5, QUARTER)).await;
    assert!(full(&r, length), "{r:?}");
    for s in rig.all() {
        let info = s.info(H).unwrap();
        assert!(info.sealed, "{} not sealed", s.dir().display());
        holds(s, &refs(&records));
        assert_eq!(staged(s), 0);
    }
    // The record that did not fit was never sent; the master heard of the seal once, with
    // both secondaries.
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 4);
    assert_eq!(
        *rig.seals.lock(),
        vec![(length, vec!["s1".to_string(), "s2".to_string()])]
    );
    assert_eq!(rig.primary.read_limit(H), None);
    // Every later op is told ChunkFull; a retry of an op in the chunk, its offset with the
    // lease (a quorum confirms it); once the lease is gone, only this replica's word of it
    // (the client asks a quorum of replicas before taking it).
    assert!(full(&rig.append(6, &rec(6, 10)).await, length));
    assert_eq!(rig.append(2, &records[1].1).await.unwrap(), QUARTER as u64);
    rig.primary.revoke(H);
    let r = rig.append_at(9, 3, &records[2].1).await;
    assert!(
        matches!(r, Err(ReplicationError::SealedWith { offset, .. }) if offset == 2 * QUARTER as u64),
        "{r:?}"
    );
    assert!(full(&rig.append_at(9, 7, &rec(7, 10)).await, length));
    assert_eq!(rig.seals.lock().len(), 1);
}

#[tokio::test]
async fn an_append_that_fills_the_chunk_exactly_seals_it_before_its_reply() {
    let rig = Rig::new(2, 2).await;
    let records = fill(&rig, QUARTER).await;
    // Sealed before the last append's reply: the master already heard of it.
    assert_eq!(rig.seals.lock().len(), 1);
    assert_eq!(rig.seals.lock()[0].0, CHUNK);
    for s in rig.all() {
        assert!(s.info(H).unwrap().sealed);
        holds(s, &refs(&records));
    }
    assert!(full(&rig.append(5, &rec(5, 1)).await, CHUNK));
}

#[tokio::test]
async fn a_short_secondary_is_sent_the_appends_it_missed_then_sealed() {
    let rig = Rig::new(2, 2).await;
    let mut records = Vec::new();
    for op in 1..=3 {
        let data = rec(op, QUARTER);
        rig.append(op, &data).await.unwrap();
        records.push((op, data));
    }
    rig.converged(3 * QUARTER as u64).await;
    // s1 misses the COMMIT of the fourth: it ends short of the primary.
    rig.net.inject(rig.s(1), Call::Commit, Fault::Fail, 1);
    let d = rec(4, 100);
    rig.append(4, &d).await.unwrap();
    eventually("s1 lagging", || rig.lagging() == vec!["s1"]).await;
    holds(rig.store(1), &refs(&records));
    records.push((4, d));
    let length = 3 * QUARTER as u64 + 100;
    let r = rig.append(5, &rec(5, QUARTER)).await;
    assert!(full(&r, length), "{r:?}");
    // s1 got the fourth append again (its original op id) and sealed at the primary's length:
    // every replica the same bytes, the same op table, sealed at one length.
    for s in rig.all() {
        assert!(
            s.info(H).unwrap().sealed,
            "{} not sealed",
            s.dir().display()
        );
        holds(s, &refs(&records));
        assert_eq!(staged(s), 0);
    }
    assert_eq!(rig.net.delivered(rig.s(1), Call::Seal), 2);
    assert_eq!(rig.net.delivered(rig.s(2), Call::Seal), 1);
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 5);
    assert_eq!(
        *rig.seals.lock(),
        vec![(length, vec!["s1".to_string(), "s2".to_string()])]
    );
}

#[tokio::test]
async fn without_a_quorum_of_seals_nothing_is_sealed_and_the_next_append_tries_again() {
    let rig = Rig::new(2, 2).await;
    let records = fill(&rig, 100).await;
    let length = 3 * QUARTER as u64 + 100;
    rig.converged(length).await;
    rig.net.inject(rig.s(1), Call::Seal, Fault::Fail, 1);
    rig.net.inject(rig.s(2), Call::Seal, Fault::Fail, 1);
    let r = rig.append(5, &rec(5, QUARTER)).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    for s in rig.all() {
        assert!(!s.info(H).unwrap().sealed, "{} sealed", s.dir().display());
        holds(s, &refs(&records));
    }
    assert!(rig.seals.lock().is_empty());
    // Nothing more is taken meanwhile, even a record that would fit.
    let r = rig.append(6, &rec(6, 10)).await;
    assert!(full(&r, length), "{r:?}");
    for s in rig.all() {
        assert!(s.info(H).unwrap().sealed);
        holds(s, &refs(&records));
        assert_eq!(staged(s), 0);
    }
    assert!(full(&rig.append(5, &rec(5, QUARTER)).await, length));
    assert_eq!(rig.seals.lock().len(), 1);
}

#[tokio::test]
async fn a_seal_with_one_secondary_down_names_only_those_sealed() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(2));
    let records = fill(&rig, 100).await;
    let length = 3 * QUARTER as u64 + 100;
    let r = rig.append(5, &rec(5, QUARTER)).await;
    assert!(full(&r, length), "{r:?}");
    assert_eq!(*rig.seals.lock(), vec![(length, vec!["s1".to_string()])]);
    for s in [&*rig.local, rig.store(1)] {
        assert!(s.info(H).unwrap().sealed);
        holds(s, &refs(&records));
    }
    assert!(!rig.store(2).info(H).unwrap().sealed);
    holds(rig.store(2), &[]);
    assert_eq!(rig.lagging(), vec!["s2"]);
}

#[tokio::test]
async fn the_seal_waits_for_the_appends_in_flight() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let mut records = fill(&rig, 100).await;
    // A fifth append is in flight (its COMMITs slow) when a record that does not fit comes.
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Commit, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let e = rec(5, 50);
    let fifth = {
        let (rig, e) = (Arc::clone(&rig), e.clone());
        tokio::spawn(async move { rig.append(5, &e).await })
    };
    eventually("the fifth prepared everywhere", || {
        [1, 2]
            .iter()
            .all(|i| rig.net.delivered(rig.s(*i), Call::Prepare) == 5)
    })
    .await;
    let length = 3 * QUARTER as u64 + 150;
    let r = rig.append(6, &rec(6, QUARTER)).await;
    assert!(full(&r, length), "{r:?}");
    assert_eq!(fifth.await.unwrap().unwrap(), 3 * QUARTER as u64 + 100);
    records.push((5, e));
    for s in rig.all() {
        assert!(s.info(H).unwrap().sealed);
        holds(s, &refs(&records));
        assert_eq!(staged(s), 0);
    }
}

/// A chunk its appends filled under a primary that did not seal it (that primary's own commit
/// of the last one failed, its secondaries' did not): the next lease on it seals it at once,
/// or a writer waiting for the file's next chunk would wait for good (the simulator found a
/// put stuck so).
#[tokio::test]
async fn a_lease_on_a_chunk_already_full_seals_it() {
    let rig = Rig::new(2, 2).await;
    rig.primary.revoke(H);
    let records: Vec<(u64, Bytes)> = (1..=4).map(|op| (op, rec(op, QUARTER))).collect();
    for s in rig.all() {
        for (i, (op, data)) in records.iter().enumerate() {
            s.stage(gfs_storage::StageRequest {
                op: OpId(*op),
                handle: H,
                version: V1,
                offset: (i * QUARTER) as u64,
                data: data.clone(),
            })
            .unwrap();
            s.commit(H, OpId(*op)).await.unwrap();
        }
        s.set_version(H, V1 + 1).await.unwrap();
    }
    assert_eq!(rig.grant(V1 + 1), CHUNK);
    // The report to the master follows the replicas' seals (after a grace for stragglers):
    // wait for it, not only for the seals, or the check below races it.
    eventually("every replica sealed and the seal reported", || {
        rig.all().iter().all(|s| s.info(H).unwrap().sealed) && !rig.seals.lock().is_empty()
    })
    .await;
    for s in rig.all() {
        holds(s, &refs(&records));
    }
    assert_eq!(
        *rig.seals.lock(),
        vec![(CHUNK, vec!["s1".to_string(), "s2".to_string()])]
    );
    assert!(full(&rig.append_at(V1 + 1, 5, &rec(5, 10)).await, CHUNK));
}
