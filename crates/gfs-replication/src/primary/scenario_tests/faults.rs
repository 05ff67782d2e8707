//! One call to one node lost, refused, slow or silent: quorum loss, lagging secondaries, lost
//! replies, aborts, and what a retry is told afterwards.

use super::*;
use crate::testing::{Call, Fault};

/// A failed quorum of 3 (with 1 or 2 READY: s1's READY may come before or after the failure
/// of s2 that decides it).
fn lost_quorum_of_3(r: &Result<u64>) -> bool {
    no_quorum(r, 1, 3) || no_quorum(r, 2, 3)
}

#[tokio::test]
async fn with_one_secondary_down_the_append_succeeds_and_it_is_reported_lagging() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(2));
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(1), &[(1, &a)]);
    holds(rig.store(2), &[]);
    for s in rig.all() {
        assert_eq!(staged(s), 0);
    }
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    assert_eq!(rig.primary.read_limit(H), Some(100));
    assert_eq!(rig.net.delivered(rig.s(2), Call::Prepare), 0);
}

#[tokio::test]
async fn with_two_of_three_down_nothing_is_acknowledged_and_the_offset_is_reused() {
    let rig = Rig::new(2, 2).await;
    rig.net.down(rig.s(1));
    rig.net.down(rig.s(2));
    let r = rig.append(1, &rec(1, 100)).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    // Nothing committed anywhere, and the primary dropped what it staged.
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
    assert_eq!(rig.lagging(), vec!["s1", "s2"]);
    assert_eq!(rig.primary.read_limit(H), Some(0));
    // Back up: the next append takes the offset the failed one gave back.
    rig.net.heal(rig.s(1));
    rig.net.heal(rig.s(2));
    let b = rec(2, 40);
    assert_eq!(rig.append(2, &b).await.unwrap(), 0);
    rig.converged(40).await;
    for s in rig.all() {
        holds(s, &[(2, &b)]);
    }
}

#[tokio::test]
async fn without_a_ready_quorum_the_ready_secondary_is_aborted() {
    // Quorum 3 of 3: s1 is READY at once, s2 never answers, so s1's READY is not enough.
    let rig = Rig::new(2, 3).await;
    rig.net.inject(rig.s(2), Call::Prepare, Fault::Hang, 1);
    let r = rig.append(1, &rec(1, 100)).await;
    assert!(no_quorum(&r, 2, 3), "{r:?}");
    eventually("s1's READY aborted", || {
        rig.net.delivered(rig.s(1), Call::Abort) == 1 && staged(rig.store(1)) == 0
    })
    .await;
    assert_eq!(rig.net.delivered(rig.s(1), Call::Prepare), 1);
    assert_eq!(rig.net.delivered(rig.s(1), Call::Commit), 0);
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    // The offset was given back.
    let b = rec(2, 10);
    assert_eq!(rig.append(2, &b).await.unwrap(), 0);
    for s in rig.all() {
        holds(s, &[(2, &b)]);
    }
}

#[tokio::test]
async fn a_ready_that_comes_after_the_quorum_was_lost_is_aborted_too() {
    // Quorum 3 of 3: s1 refuses at once, so the append fails while s2's PREPARE is still on
    // its way; when it lands, the primary aborts it.
    let rig = Rig::new(2, 3).await;
    rig.net.inject(rig.s(1), Call::Prepare, Fault::Fail, 1);
    rig.net
        .inject(rig.s(2), Call::Prepare, Fault::Delay(WITHIN_DEADLINE), 1);
    let start = tokio::time::Instant::now();
    let r = rig.append(1, &rec(1, 100)).await;
    assert!(no_quorum(&r, 1, 3), "{r:?}");
    assert!(
        start.elapsed() < WITHIN_DEADLINE,
        "waited for a READY that could not help"
    );
    eventually("the late READY aborted", || {
        rig.net.delivered(rig.s(2), Call::Abort) == 1 && staged(rig.store(2)) == 0
    })
    .await;
    assert_eq!(rig.net.delivered(rig.s(2), Call::Prepare), 1);
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn an_abort_that_fails_marks_the_secondary_lagging() {
    let rig = Rig::new(2, 3).await;
    rig.net.inject(rig.s(2), Call::Prepare, Fault::Fail, 1);
    rig.net.inject(rig.s(1), Call::Abort, Fault::Fail, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(lost_quorum_of_3(&r), "{r:?}");
    eventually("s1 lagging", || rig.lagging() == vec!["s1", "s2"]).await;
    // The abort never reached s1: its staged copy stays (until the staging TTL or the next
    // version), but nothing is committed anywhere.
    assert_eq!(staged(rig.store(1)), 100);
    for s in rig.all() {
        holds(s, &[]);
    }
    assert_eq!(staged(&rig.local), 0);
}

#[tokio::test]
async fn a_prepare_slower_than_its_deadline_does_not_hold_the_append() {
    let rig = Rig::new(2, 2).await;
    rig.net
        .inject(rig.s(2), Call::Prepare, Fault::Delay(PAST_DEADLINE), 1);
    let a = rec(1, 100);
    let start = tokio::time::Instant::now();
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert!(start.elapsed() < DEADLINE, "waited for the slow secondary");
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(1), &[(1, &a)]);
    // Past the deadline the slow one is lagging, and never gets the COMMIT.
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    eventually("the late PREPARE landed", || staged(rig.store(2)) == 100).await;
    holds(rig.store(2), &[]);
    assert_eq!(rig.net.delivered(rig.s(2), Call::Commit), 0);
}

#[tokio::test]
async fn a_secondary_still_preparing_gets_its_commit_when_its_prepare_lands() {
    let rig = Rig::new(2, 2).await;
    rig.net
        .inject(rig.s(2), Call::Prepare, Fault::Delay(WITHIN_DEADLINE), 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    eventually("s2 committed", || {
        rig.store(2).info(H).unwrap().committed_len == 100
    })
    .await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
    assert!(rig.lagging().is_empty());
}

#[tokio::test]
async fn a_silent_secondary_costs_nothing_while_the_other_answers() {
    let rig = Rig::new(2, 2).await;
    rig.net.always(rig.s(2), Call::Prepare, Fault::Hang);
    let (a, b) = (rec(1, 100), rec(2, 30));
    let start = tokio::time::Instant::now();
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    assert!(
        start.elapsed() < DEADLINE,
        "waited for the silent secondary"
    );
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    holds(&rig.local, &[(1, &a), (2, &b)]);
    holds(rig.store(1), &[(1, &a), (2, &b)]);
    holds(rig.store(2), &[]);
    assert_eq!(staged(rig.store(2)), 0);
}

#[tokio::test]
async fn when_every_secondary_is_silent_the_append_fails_at_its_deadline() {
    let rig = Rig::new(2, 2).await;
    rig.net.always(rig.s(1), Call::Prepare, Fault::Hang);
    rig.net.always(rig.s(2), Call::Prepare, Fault::Hang);
    let start = tokio::time::Instant::now();
    let r = rig.append(1, &rec(1, 100)).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    assert!(start.elapsed() >= DEADLINE);
    assert!(start.elapsed() < DEADLINE * 2);
    for s in rig.all() {
        holds(s, &[]);
        assert_eq!(staged(s), 0);
    }
    eventually("both lagging", || rig.lagging() == vec!["s1", "s2"]).await;
}

#[tokio::test]
async fn a_failed_commit_on_one_secondary_leaves_it_short_and_lagging() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Commit, Fault::Fail, 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    eventually("s2 committed", || {
        rig.store(2).info(H).unwrap().committed_len == 100
    })
    .await;
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(2), &[(1, &a)]);
    // s1 is READY but never heard the COMMIT: the bytes stay staged there, uncommitted.
    holds(rig.store(1), &[]);
    assert_eq!(staged(rig.store(1)), 100);
    eventually("s1 lagging", || rig.lagging() == vec!["s1"]).await;
    assert_eq!(rig.primary.read_limit(H), Some(100));
}

#[tokio::test]
async fn a_slow_commit_is_lagging_but_lands_late() {
    // What the failpoint commit-slow does to a process: applied after the primary gave up.
    let rig = Rig::new(2, 2).await;
    rig.net
        .inject(rig.s(2), Call::Commit, Fault::Delay(PAST_DEADLINE), 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    eventually("s2 lagging", || rig.lagging() == vec!["s2"]).await;
    holds(rig.store(2), &[]);
    eventually("the late COMMIT applied", || {
        rig.store(2).info(H).unwrap().committed_len == 100
    })
    .await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn a_lost_commit_reply_counts_as_missed_though_the_bytes_are_there() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Commit, Fault::LoseReply, 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    eventually("s1 lagging", || rig.lagging() == vec!["s1"]).await;
    rig.converged(100).await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn commits_lost_on_both_secondaries_are_not_shown_then_a_retry_finishes_them() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Commit, Fault::Fail, 1);
    rig.net.inject(rig.s(2), Call::Commit, Fault::Fail, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    // The primary committed it alone: it holds it, but reads do not see it (I3) and its offset
    // is not handed out again.
    holds(&rig.local, &[(1, &a)]);
    assert_eq!(rig.primary.read_limit(H), Some(0));
    for i in [1, 2] {
        holds(rig.store(i), &[]);
        assert_eq!(staged(rig.store(i)), 100);
    }
    eventually("both lagging", || rig.lagging() == vec!["s1", "s2"]).await;
    // The writer retries: the secondaries get the COMMIT again, finish the staged append, and
    // the retry is told its first offset, once a quorum holds it.
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    assert_eq!(rig.primary.read_limit(H), Some(100));
    rig.converged(100).await;
    for s in rig.all() {
        holds(s, &[(1, &a)]);
        assert_eq!(staged(s), 0);
    }
    let b = rec(2, 10);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
}

#[tokio::test]
async fn commit_replies_lost_on_both_fail_the_append_and_its_retry_is_applied_once() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Commit, Fault::LoseReply, 1);
    rig.net.inject(rig.s(2), Call::Commit, Fault::LoseReply, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    // Every replica has it: the appender was told otherwise, which is allowed (at most the
    // outcome is unknown to it), but a retry must not add it twice.
    for s in rig.all() {
        holds(s, &[(1, &a)]);
    }
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    let b = rec(2, 10);
    assert_eq!(rig.append(2, &b).await.unwrap(), 100);
    rig.converged(110).await;
    for s in rig.all() {
        holds(s, &[(1, &a), (2, &b)]);
        assert_eq!(staged(s), 0);
    }
}

#[tokio::test]
async fn a_lost_prepare_reply_leaves_that_secondary_staged_and_lagging() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Prepare, Fault::LoseReply, 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    // s1 staged it, but the primary never heard READY, so it sends no COMMIT.
    eventually("s1 lagging", || rig.lagging() == vec!["s1"]).await;
    holds(rig.store(1), &[]);
    assert_eq!(staged(rig.store(1)), 100);
    assert_eq!(rig.net.delivered(rig.s(1), Call::Commit), 0);
    eventually("s2 committed", || {
        rig.store(2).info(H).unwrap().committed_len == 100
    })
    .await;
    holds(&rig.local, &[(1, &a)]);
    holds(rig.store(2), &[(1, &a)]);
}

#[tokio::test]
async fn a_confirmation_without_a_quorum_is_not_an_answer() {
    let rig = Rig::new(2, 2).await;
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    rig.converged(100).await;
    // Its secondaries unreachable, the primary cannot tell a retry that a quorum holds it.
    rig.net.down(rig.s(1));
    rig.net.down(rig.s(2));
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    rig.net.heal(rig.s(1));
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    for s in rig.all() {
        holds(s, &[(1, &a)]);
    }
}

/// PREPARE replies lost on both secondaries: the READY quorum fails, yet both staged the
/// bytes. The primary aborts them there too (an ABORT of nothing staged is a no-op), so the
/// next append, which reuses the offset, is not refused by what they still had staged.
#[tokio::test]
async fn prepares_whose_replies_were_lost_are_aborted_so_the_offset_is_reused() {
    let rig = Rig::new(2, 2).await;
    rig.net.inject(rig.s(1), Call::Prepare, Fault::LoseReply, 1);
    rig.net.inject(rig.s(2), Call::Prepare, Fault::LoseReply, 1);
    let a = rec(1, 100);
    let r = rig.append(1, &a).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
    eventually("both aborted", || {
        staged(rig.store(1)) == 0 && staged(rig.store(2)) == 0
    })
    .await;
    let b = rec(2, 50);
    assert_eq!(rig.append(2, &b).await.unwrap(), 0);
    let c = rec(3, 10);
    assert_eq!(rig.append(3, &c).await.unwrap(), 50);
    rig.converged(60).await;
    for s in rig.all() {
        holds(s, &[(2, &b), (3, &c)]);
        assert_eq!(staged(s), 0);
    }
}

/// The primary's disk fills: an append its secondaries commit fails on the primary, so no
/// quorum is known to hold it, and no secondary shows it to readers; every append acknowledged
/// before it reached them as the quorum's length (I3). The primary gives its lease up (only a
/// fenced new lease can go on from the secondaries' length), and its client is told to retry.
#[tokio::test]
async fn an_append_the_primary_failed_to_commit_is_shown_by_no_secondary() {
    let disk = gfs_util::disk::sim::SimDisk::new(1);
    let rig = Rig::on_disk(2, 2, disk.shared()).await;
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    eventually("both secondaries heard the quorum's length", || {
        (1..=2).all(|i| rig.store(i).quorum_known(H) == Some(100))
    })
    .await;
    disk.set_capacity(Some(0));
    let b = rec(2, 50);
    let r = rig.append(2, &b).await;
    assert!(
        matches!(r, Err(ReplicationError::DiskFailed { .. })),
        "{r:?}"
    );
    assert!(
        rig.primary.leases().iter().all(|l| l.handle != H),
        "the lease is still held"
    );
    // It still knows it led the chunk at version 1: its word at the next fence (seed 11060 of
    // the simulator found a chunk stuck for want of it).
    assert_eq!(rig.primary.last_lease(H), Some(1));
    // A retry finds no lease here: it goes to the master, whose next lease is fenced.
    disk.set_capacity(None);
    let r = rig.append(2, &b).await;
    assert!(matches!(r, Err(ReplicationError::NotPrimary(_))), "{r:?}");
    eventually("the secondaries committed it", || {
        (1..=2).all(|i| rig.store(i).info(H).unwrap().committed_len == 150)
    })
    .await;
    // No longer primary, its reads are limited by what it noted a quorum holds, as the
    // secondaries' are.
    assert_eq!(rig.primary.read_limit(H), None);
    assert_eq!(rig.local.quorum_known(H), Some(100));
    for i in 1..=2 {
        assert_eq!(rig.store(i).quorum_known(H), Some(100), "s{i}");
    }
}

/// The quorum's length after the last append is lost on its way to both secondaries (the
/// primary then died, say): they still show none of it. A flush tells them again and answers
/// only once enough of them took it that any two replicas a reader asks include one that
/// knows (a writer's last step); with none reachable, it fails.
#[tokio::test]
async fn a_flush_makes_the_quorum_s_length_known_to_the_secondaries() {
    let rig = Rig::new(2, 2).await;
    // The grant's own watermark (0, sent as the lease was granted) lands first.
    eventually("the grant's watermark reached both secondaries", || {
        (1..=2).all(|i| rig.net.delivered(rig.s(i), Call::QuorumLength) >= 1)
    })
    .await;
    rig.net.inject(rig.s(1), Call::QuorumLength, Fault::Fail, 1);
    rig.net.inject(rig.s(2), Call::QuorumLength, Fault::Fail, 1);
    let a = rec(1, 100);
    assert_eq!(rig.append(1, &a).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=2 {
        assert_eq!(rig.store(i).quorum_known(H), Some(0), "s{i} heard it");
    }
    assert_eq!(rig.primary.flush(H, V1).await.unwrap(), 100);
    let knowing = (1..=2)
        .filter(|&i| rig.store(i).quorum_known(H) == Some(100))
        .count();
    assert!(knowing >= 1, "no secondary knows the length after a flush");
    assert!(matches!(
        rig.primary.flush(H, V1 + 1).await,
        Err(ReplicationError::StaleVersion { .. })
    ));
    rig.net
        .inject(rig.s(1), Call::QuorumLength, Fault::Fail, 10);
    rig.net
        .inject(rig.s(2), Call::QuorumLength, Fault::Fail, 10);
    let r = rig.primary.flush(H, V1).await;
    assert!(no_quorum(&r, 1, 2), "{r:?}");
}
