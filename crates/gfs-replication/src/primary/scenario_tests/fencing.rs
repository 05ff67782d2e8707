//! Version changes (the master's SetVersion: the lease revoked, every replica moved on) and
//! leases: nothing of an old version's primary lands after the bump (I5).

use super::*;
use crate::testing::{Call, Fault};

/// What a SetVersion to `version` does on the primary's server: the lease is revoked, the
/// replica moves on (as `gfs-chunkserver`'s control service does).
async fn bump_primary(rig: &Rig, version: u64) {
    rig.primary.revoke(H);
    rig.local.set_version(H, version).await.unwrap();
}

async fn bump_secondaries(rig: &Rig, version: u64) {
    for s in &rig.stores {
        s.set_version(H, version).await.unwrap();
    }
}

#[tokio::test]
async fn after_a_version_bump_appends_at_the_old_version_are_refused() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(2));
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    rig.net.heal(rig.s(2));
    assert_eq!(rig.lagging(), vec!["s2"]);
    bump_primary(&rig, 2).await;
    bump_secondaries(&rig, 2).await;
    let r = rig.append(2, &rec(2, 10)).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
    assert!(
        rig.lagging().is_empty(),
        "the bump dealt with the lagging one"
    );
    // The new lease, without s2 (it missed an append: the master re-replicates it): the old
    // version is refused, the new one appends after what was there.
    let length = rig
        .primary
        .grant_lease(
            H,
            2,
            vec!["s1".to_string()],
            SystemTime::now() + Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(length, 100);
    let r = rig.append_at(V1, 2, &rec(2, 10)).await;
    assert!(
        matches!(
            r,
            Err(ReplicationError::StaleVersion {
                have: 2,
                got: 1,
                ..
            })
        ),
        "{r:?}"
    );
    let b = rec(3, 10);
    assert_eq!(rig.append_at(2, 3, &b).await.unwrap(), 100);
    holds(&rig.local, &[(1, &a), (3, &b)]);
    holds(rig.store(1), &[(1, &a), (3, &b)]);
    holds(rig.store(2), &[]);
    for s in rig.all() {
        assert_eq!(s.info(H).unwrap().version, 2);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn a_prepare_that_arrives_after_the_bump_is_refused() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Prepare, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let late = {
        let rig = Arc::clone(&rig);
        tokio::spawn(async move { rig.append(2, &rec(2, 50)).await })
    };
    // The append is assigned and staged on the primary; its PREPAREs are on their way when
    // the secondaries move to version 2.
    eventually("the append staged here", || staged(&rig.local) > 0).await;
    bump_secondaries(&rig, 2).await;
    let r = late.await.unwrap();
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 2);
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
    eventually("both lagging", || rig.lagging() == vec!["s1", "s2"]).await;
    bump_primary(&rig, 2).await;
    let r = rig.append(2, &rec(2, 50)).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
}

#[tokio::test]
async fn a_commit_that_arrives_after_the_bump_is_refused_and_nothing_is_acknowledged() {
    let rig = Arc::new(Rig::new(2, 2).await);
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Commit, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let b = rec(2, 50);
    let late = {
        let (rig, b) = (Arc::clone(&rig), b.clone());
        tokio::spawn(async move { rig.append(2, &b).await })
    };
    // Both secondaries are READY and their COMMITs on the way when the master bumps every
    // replica (the primary's lease revoked with it).
    eventually("both READY", || rig.stores.iter().all(|s| staged(s) == 50)).await;
    bump_secondaries(&rig, 2).await;
    bump_primary(&rig, 2).await;
    let r = late.await.unwrap();
    // The primary may have committed it alone before its own bump; never a quorum.
    assert!(
        no_quorum(&r, 1, 2)
            || matches!(
                r,
                Err(ReplicationError::Storage(
                    gfs_storage::StorageError::StaleVersion { .. }
                ))
            ),
        "{r:?}"
    );
    assert_eq!(rig.net.delivered(rig.s(1), Call::Commit), 2);
    for i in [1, 2] {
        holds(rig.store(i), &[(1, &a)]);
        assert_eq!(staged(rig.store(i)), 0);
    }
    let here = rig.local.info(H).unwrap().committed_len;
    assert!(here == 100 || here == 150, "{here}");
    // No retry of it can be acknowledged by the old lease.
    let r = rig.append(2, &b).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
}

#[tokio::test]
async fn revoking_the_lease_clears_what_lagged_and_stops_appends() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(2));
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    assert_eq!(rig.lagging(), vec!["s2"]);
    rig.primary.revoke(H);
    assert!(rig.lagging().is_empty());
    assert!(rig.primary.leases().is_empty());
    let r = rig.append(2, &rec(2, 10)).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
    holds(&rig.local, &[(1, &a)]);
    assert_eq!(staged(&rig.local), 0);
}

/// The version of the last lease held on a chunk outlives the lease (revoked, given up, or
/// run out and forgotten), for the replica's word at a later fence; a new grant replaces it,
/// and the replica's deletion drops it.
#[tokio::test]
async fn the_last_lease_held_is_remembered_until_a_new_grant_or_the_deletion() {
    let rig = Rig::new(2, 2).await;
    assert_eq!(rig.primary.last_lease(H), Some(V1));
    rig.primary.revoke(H);
    assert_eq!(rig.primary.last_lease(H), Some(V1));
    rig.local.set_version(H, 2).await.unwrap();
    rig.primary
        .grant_lease(
            H,
            2,
            rig.addrs.clone(),
            SystemTime::now() + Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(rig.primary.last_lease(H), Some(2));
    // Run out long ago: `writing` forgets the lease, not its version.
    rig.primary.extend_lease(H, 2, SystemTime::UNIX_EPOCH);
    assert!(rig.primary.writing(Duration::from_secs(60)).is_empty());
    assert!(rig.primary.leases().is_empty());
    assert_eq!(rig.primary.last_lease(H), Some(2));
    rig.primary.forget(H);
    assert_eq!(rig.primary.last_lease(H), None);
}

#[tokio::test]
async fn a_lease_with_other_secondaries_starts_a_new_lagging_record() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(2));
    let a = rec(1, 100);
    rig.append(1, &a).await.unwrap();
    assert_eq!(rig.lagging(), vec!["s2"]);
    // The same secondaries again only extends the lease: the record stays.
    rig.grant(V1);
    assert_eq!(rig.lagging(), vec!["s2"]);
    // Without the lagging one: a new lease, a new record; appends go to s1 alone.
    rig.primary
        .grant_lease(
            H,
            V1,
            vec!["s1".to_string()],
            SystemTime::now() + Duration::from_secs(60),
        )
        .unwrap();
    assert!(rig.lagging().is_empty());
    let b = rec(2, 10);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    holds(&rig.local, &[(1, &a), (2, &b)]);
    holds(rig.store(1), &[(1, &a), (2, &b)]);
    holds(rig.store(2), &[]);
    assert_eq!(rig.net.delivered(rig.s(2), Call::Prepare), 0);
    assert!(rig.lagging().is_empty());
}

#[tokio::test]
async fn a_lease_is_granted_only_at_the_replicas_version() {
    let rig = Rig::new(2, 2).await;
    let r = rig.primary.grant_lease(
        H,
        2,
        rig.addrs.clone(),
        SystemTime::now() + Duration::from_secs(60),
    );
    assert!(
        matches!(
            r,
            Err(ReplicationError::StaleVersion {
                have: 1,
                got: 2,
                ..
            })
        ),
        "{r:?}"
    );
    // The lease at version 1 still holds.
    let a = rec(1, 10);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
}

/// A fence that lands between an append's quorum and its answer: the primary's word at the
/// fence (what a quorum was known to hold, which the master may seal a chunk at when the
/// primary's replica is the only long one and rotten: seed 9663 of the simulator) does not
/// include the append, so the primary does not acknowledge it either; the client learns its
/// outcome by retrying (I4).
#[tokio::test]
async fn an_append_a_fence_overtakes_before_its_answer_is_not_acknowledged() {
    let rig = Arc::new(Rig::new(2, 2).await);
    for i in [1, 2] {
        rig.net
            .inject(rig.s(i), Call::Commit, Fault::Delay(WITHIN_DEADLINE), 1);
    }
    let a = rec(1, 100);
    let first = {
        let (rig, a) = (Arc::clone(&rig), a.clone());
        tokio::spawn(async move { rig.append(1, &a).await })
    };
    eventually("the append committed here", || {
        rig.local.info(H).unwrap().committed_len == 100
    })
    .await;
    bump_primary(&rig, 2).await;
    assert_eq!(rig.local.quorum_known(H), Some(0), "the word at the fence");
    let r = first.await.unwrap();
    assert!(matches!(r, Err(ReplicationError::LeaseExpired(_))), "{r:?}");
    assert_eq!(rig.local.quorum_known(H), Some(0));
}
