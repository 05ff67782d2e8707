//! Lease, seal and repair decisions driven against a fake cluster ([`super::fake`]): the real
//! log and registry, fake chunkservers. Each test checks what every replica holds afterwards,
//! not only what the call returned.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use parking_lot::Mutex;

use super::fake::{Call, FakeCluster, Held};
use super::lease::Position;
use super::*;
use crate::metastore::MetaStore;
use crate::registry::{Registry, Replica, ServerInfo, Want};

/// The chunk every test starts from, chunk 0 of `/f`.
const H: u64 = 7;

struct Cluster {
    m: Arc<ChunkManager>,
    fake: Arc<FakeCluster>,
    registry: Arc<Mutex<Registry>>,
    meta: Arc<MetaStore>,
    _dir: tempfile::TempDir,
}

fn info(id: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        data_addr: format!("{id}:0"),
        repl_addr: format!("{id}:1"),
        rack: String::new(),
        capacity_bytes: 1 << 40,
        used_bytes: 0,
    }
}

fn held(version: u64, length: u64) -> Held {
    Held {
        version,
        length,
        sealed: false,
    }
}

fn sealed_held(version: u64, length: u64) -> Held {
    Held {
        version,
        length,
        sealed: true,
    }
}

/// Servers `ids`, `/f` holding chunk `H` at version 1 (sealed at `sealed` if given, its first
/// lease logged to `a`), and the replicas `held` on the servers and in their reports. Every
/// server has reported its (no) leases, so a lease may be granted at once.
async fn cluster(ids: &[&str], held: &[(&str, Held)], sealed: Option<u64>) -> Cluster {
    cluster_leasing(ids, held, sealed, Duration::from_secs(60)).await
}

/// [`cluster`] with leases of `lease`.
async fn cluster_leasing(
    ids: &[&str],
    held: &[(&str, Held)],
    sealed: Option<u64>,
    lease: Duration,
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let meta = super::tests::log_of_one_chunk(dir.path(), sealed, "a").await;
    let registry = Arc::new(Mutex::new(Registry::new(Duration::from_millis(50))));
    let fake = Arc::new(FakeCluster::default());
    let now = Instant::now();
    for id in ids {
        let mut reg = registry.lock();
        reg.register(info(id), now);
        let report: Vec<Replica> = held
            .iter()
            .filter(|(s, _)| s == id)
            .map(|(_, h)| Replica {
                handle: H,
                version: h.version,
                length: h.length,
                sealed: h.sealed,
            })
            .collect();
        reg.heartbeat_with(id, 0, report, false, now);
    }
    for (id, h) in held {
        fake.hold(id, H, *h);
    }
    let m = manager(&meta, &registry, &fake, lease);
    for id in ids {
        m.adopt_leases(&info(id), &[]).await;
    }
    Cluster {
        m,
        fake,
        registry,
        meta,
        _dir: dir,
    }
}

/// A master's chunk manager over `meta`, `registry` and the fake servers, with leases of
/// `lease`.
fn manager(
    meta: &Arc<MetaStore>,
    registry: &Arc<Mutex<Registry>>,
    fake: &Arc<FakeCluster>,
    lease: Duration,
) -> Arc<ChunkManager> {
    Arc::new(ChunkManager::new(
        Arc::clone(meta),
        Arc::clone(registry),
        ChunkConfig {
            rebalance_threshold: 0.0,
            lease,
            ..super::tests::test_config()
        },
        Arc::clone(fake) as Arc<dyn ChunkserverControl>,
    ))
}

/// Servers a, b and c holding chunk `H` unsealed at version 1 with `lengths`.
async fn abc(lengths: [u64; 3]) -> Cluster {
    abc_leasing(lengths, Duration::from_secs(60)).await
}

/// [`abc`] with a fourth server, `d`, holding no replica: room to place a new chunk in full
/// without a server that failed this one.
async fn abcd(lengths: [u64; 3]) -> Cluster {
    let [a, b, c] = lengths;
    cluster(
        &["a", "b", "c", "d"],
        &[("a", held(1, a)), ("b", held(1, b)), ("c", held(1, c))],
        None,
    )
    .await
}

impl Cluster {
    /// A repair pass, another once the chunk has had no lease for `lease`, the copies they
    /// started, then a settle pass.
    async fn settled(&self, lease: Duration) {
        self.m.rereplicate().await;
        tokio::time::sleep(lease + Duration::from_millis(20)).await;
        self.repair_pass().await;
        self.m.settle().await;
    }

    /// A heartbeat from each of `ids`, reporting the replica of `H` it holds now.
    fn heard_from(&self, ids: &[&str]) {
        for id in ids {
            let h = self.fake.replica(id, H).unwrap();
            let r = Replica {
                handle: H,
                version: h.version,
                length: h.length,
                sealed: h.sealed,
            };
            self.registry
                .lock()
                .heartbeat_with(id, 0, vec![r], false, Instant::now());
        }
    }

    /// A repair pass and the copies it started, ended (within a second).
    async fn repair_pass(&self) {
        self.m.rereplicate().await;
        for _ in 0..200 {
            if self.m.repair.cloning.lock().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the copy did not end");
    }

    async fn logged(&self, handle: u64) -> crate::namespace::ChunkMeta {
        self.meta
            .read(move |ns| ns.chunk(handle))
            .await
            .unwrap()
            .unwrap()
    }

    /// The replicas the master counts current for `handle`, by id, with their lengths.
    async fn current(&self, handle: u64) -> Vec<(String, u64)> {
        let want = Want::from(self.logged(handle).await);
        let mut found: Vec<(String, u64)> = self
            .registry
            .lock()
            .locations(handle, want)
            .into_iter()
            .map(|(s, r)| (s.id, r.length))
            .collect();
        found.sort();
        found
    }
}

/// A slow replica (behind the others at the version) catches up from the longest before the
/// bump, and the new lease includes it: every replica ends at one version and length.
#[tokio::test]
async fn a_replica_behind_catches_up_before_the_bump_and_stays_in_the_lease() {
    let c = abc([100, 100, 60]).await;
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(lease.version, 2);
    assert_eq!(lease.primary.unwrap().id, "a");
    let secondaries: Vec<String> = lease.secondaries.iter().map(|s| s.id.clone()).collect();
    assert_eq!(secondaries, ["b", "c"]);
    for id in ["a", "b", "c"] {
        assert_eq!(c.fake.replica(id, H), Some(held(2, 100)), "{id}");
    }
    assert_eq!(c.logged(H).await.version, 2);
    let all = vec![("a".into(), 100), ("b".into(), 100), ("c".into(), 100)];
    assert_eq!(c.current(H).await, all);
}

/// A replica that cannot catch up (its copy fails) is left out of the bump: it stays at the
/// old version, stale, and the lease goes to the two at the longest length.
#[tokio::test]
async fn a_replica_that_cannot_catch_up_is_left_stale_outside_the_lease() {
    let c = abc([100, 100, 60]).await;
    c.fake.fail("c", Call::Copy);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(lease.version, 2);
    let secondaries: Vec<String> = lease.secondaries.iter().map(|s| s.id.clone()).collect();
    assert_eq!(secondaries, ["b"]);
    assert_eq!(c.fake.replica("c", H), Some(held(1, 60)));
    assert_eq!(c.fake.calls("c", Call::SetVersion), 0);
    assert_eq!(
        c.current(H).await,
        vec![("a".into(), 100), ("b".into(), 100)]
    );
}

/// Quorum loss: with two of three replicas unreachable the chunk's length is unknown, so no
/// lease is granted, no version is set or logged, and the file does not move on; once one
/// returns the lease is granted to the two.
#[tokio::test]
async fn quorum_loss_grants_nothing_until_a_quorum_answers() {
    let c = abc([100, 100, 100]).await;
    c.fake.set_down("b", true);
    c.fake.set_down("c", true);
    let err = c.m.append_chunk("/f").await.unwrap_err();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
    assert!(c.fake.leases().is_empty());
    assert_eq!(c.fake.calls("a", Call::SetVersion), 0);
    assert_eq!(c.fake.replica("a", H), Some(held(1, 100)));
    assert_eq!(c.logged(H).await.version, 1);
    assert_eq!(c.logged(H).await.sealed_length, None);
    c.fake.set_down("b", false);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!((lease.version, lease.index), (2, 0));
    assert_eq!(c.fake.replica("b", H), Some(held(2, 100)));
    assert_eq!(c.fake.replica("c", H), Some(held(1, 100)));
}

/// A bump that reaches fewer than a quorum is not logged and grants nothing; the replica it
/// reached is ahead of the log, and the next decision fences every replica past it, so all
/// of them end at one version above it.
#[tokio::test]
async fn a_bump_short_of_a_quorum_is_fenced_past_by_the_next_decision() {
    let c = abc([100, 100, 100]).await;
    c.fake.fail("b", Call::SetVersion);
    c.fake.fail("c", Call::SetVersion);
    let err = c.m.append_chunk("/f").await.unwrap_err();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
    assert_eq!(c.fake.replica("a", H), Some(held(2, 100)));
    assert_eq!(c.logged(H).await.version, 1);
    assert!(c.fake.leases().is_empty());
    // a reports its replica ahead of the log; b and c take versions again.
    let report = Replica {
        handle: H,
        version: 2,
        length: 100,
        sealed: false,
    };
    c.registry
        .lock()
        .heartbeat_with("a", 0, vec![report], false, Instant::now());
    c.fake.heal("b");
    c.fake.heal("c");
    let lease = c.m.append_chunk("/f").await.unwrap();
    // Fenced past a's 2 at 3 (logged, no primary), then bumped to 4 for the lease.
    assert_eq!(lease.version, 4);
    assert_eq!(c.logged(H).await.version, 4);
    assert_eq!(lease.secondaries.len(), 2);
    assert_eq!(
        c.current(H).await,
        vec![("a".into(), 100), ("b".into(), 100), ("c".into(), 100)]
    );
}

/// A bump that reached fewer than a quorum may have reached a replica whose reply was lost
/// and whose reports do not reach the master: the next decision never uses that version
/// again, since a stray replica at it, holding other bytes, would pass for current (the
/// simulator found it: fresh seed 17538096980818).
#[tokio::test]
async fn a_version_a_failed_bump_sent_is_never_used_again() {
    let c = abc([100, 100, 100]).await;
    c.fake.fail("b", Call::SetVersion);
    c.fake.fail("c", Call::SetVersion);
    let err = c.m.append_chunk("/f").await.unwrap_err();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
    assert_eq!(c.fake.replica("a", H), Some(held(2, 100)));
    // a's reports never arrive; b and c take versions again.
    c.fake.heal("b");
    c.fake.heal("c");
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(lease.version, 3, "version 2 went to a already");
    assert_eq!(c.logged(H).await.version, 3);
    // a did not answer at the version the master knew it at: it stays at 2, stale.
    assert_eq!(
        c.current(H).await,
        vec![("b".into(), 100), ("c".into(), 100)]
    );
    assert_eq!(c.fake.replica("a", H), Some(held(2, 100)));
}

/// A secondary that failed a COMMIT is reported lagging by its primary: the master bumps the
/// version on the others at once, the primary keeps the lease, and the lagging replica is
/// stale from then on.
#[tokio::test]
async fn a_secondary_that_failed_a_commit_is_relegated_and_the_primary_keeps_the_lease() {
    let c = abc([100, 100, 100]).await;
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(lease.version, 2);
    assert_eq!(c.m.note_lagging([(H, "c:1".to_string())]), vec![H]);
    // The same report again is no news.
    assert_eq!(
        c.m.note_lagging([(H, "c:1".to_string())]),
        Vec::<u64>::new()
    );
    c.m.relegate_lagging(H).await.unwrap();
    let (primary, last) = c.fake.leases().pop().unwrap();
    assert_eq!((primary.as_str(), last.version), ("a", 3));
    assert_eq!(last.secondaries, ["b:1"]);
    assert_eq!(c.fake.replica("c", H), Some(held(2, 100)));
    assert_eq!(
        c.current(H).await,
        vec![("a".into(), 100), ("b".into(), 100)]
    );
}

/// Seed 10648 of the simulator: a chunk went on being written on two replicas (its third had
/// failed), and a bit rotted at rest on each: neither could be sealed nor copied. A lagging
/// secondary that leaves a lease below the replication goal now ends the chunk when the file
/// can go on in one placed in full on other servers: the chunk is fenced and sealed at once
/// (the lease with it), so it is copied back to its goal, and the file's next chunk starts at
/// the sealed length.
#[tokio::test]
async fn a_lagging_secondary_below_the_goal_seals_the_chunk_when_a_full_one_can_follow() {
    let c = abcd([100, 100, 100]).await;
    c.m.append_chunk("/f").await.unwrap();
    // c missed the commits of the last 40 bytes, and cannot catch up.
    c.fake.hold("c", H, held(2, 60));
    c.fake.fail("c", Call::Copy);
    c.m.note_lagging([(H, "c:1".to_string())]);
    c.m.relegate_lagging(H).await.unwrap();
    let m = c.logged(H).await;
    assert_eq!(m.sealed_length, Some(100));
    for id in ["a", "b"] {
        assert_eq!(
            c.fake.replica(id, H),
            Some(sealed_held(m.version, 100)),
            "{id}"
        );
    }
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_ne!(lease.handle, H);
    assert_eq!((lease.index, lease.file_offset), (1, 100));
    assert_eq!(lease.secondaries.len(), 2);
}

/// Seed 10648 again, where it began: the chunk was made on two servers (the third's creation
/// failed: it had crashed) and written there, its primary then paused, so no lagging report
/// reached the master before both replicas rotted. A chunk whose creation failed somewhere is
/// now abandoned before it is logged and made again on servers that did not fail, when there
/// are enough of them.
#[tokio::test]
async fn a_chunk_whose_creation_failed_somewhere_is_made_again_without_that_server() {
    let c = cluster(
        &["a", "b", "c", "d"],
        &[("a", sealed_held(1, 100)), ("b", sealed_held(1, 100))],
        Some(100),
    )
    .await;
    c.fake.fail("c", Call::Create);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!((lease.index, lease.file_offset), (1, 100));
    let mut members: Vec<String> = lease.secondaries.iter().map(|s| s.id.clone()).collect();
    members.push(lease.primary.unwrap().id);
    members.sort();
    assert_eq!(members, ["a", "b", "d"]);
    for id in ["a", "b", "d"] {
        assert_eq!(c.fake.replica(id, lease.handle), Some(held(1, 0)), "{id}");
    }
    // With no server to spare, the chunk is made where it can be, the failed one a secondary
    // of its first lease (its creation may have worked).
    let c = cluster(
        &["a", "b", "c"],
        &[("a", sealed_held(1, 100)), ("b", sealed_held(1, 100))],
        Some(100),
    )
    .await;
    c.fake.fail("c", Call::Create);
    let next = c.m.append_chunk("/f").await.unwrap();
    let members: Vec<String> = next.secondaries.iter().map(|s| s.id.clone()).collect();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&"c".to_string()), "{members:?}");
}

/// ... and so does a lease decision that finds fewer replicas than the goal at the longest
/// length (the one behind cannot catch up), while a server that did not fail the chunk is
/// free to take its place in a new one.
#[tokio::test]
async fn a_lease_below_the_goal_is_not_granted_when_a_full_chunk_can_follow() {
    let c = abcd([100, 100, 60]).await;
    c.fake.fail("c", Call::Copy);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_ne!(lease.handle, H);
    assert_eq!((lease.index, lease.file_offset), (1, 100));
    assert_eq!(lease.secondaries.len(), 2);
    assert_eq!(c.logged(H).await.sealed_length, Some(100));
}

/// Finding 4 at the unit level: an append of the primary commits (with the lagging secondary
/// as its quorum) after the master asked the lengths and before its fence lands. The fence
/// answers each replica's final length, so the other secondary, short of that append, catches
/// up before the lease is granted: no acknowledged append is left on one current replica.
#[tokio::test]
async fn an_append_committed_while_the_version_is_bumped_is_on_every_current_replica() {
    let c = abc([100, 100, 100]).await;
    c.m.append_chunk("/f").await.unwrap();
    c.m.note_lagging([(H, "c:1".to_string())]);
    c.fake.commit_before_fence("a", H, 20);
    c.m.relegate_lagging(H).await.unwrap();
    assert_eq!(c.fake.replica("a", H), Some(held(3, 120)));
    assert_eq!(c.fake.replica("b", H), Some(held(3, 120)));
    assert_eq!(
        c.current(H).await,
        vec![("a".into(), 120), ("b".into(), 120)]
    );
    let (primary, last) = c.fake.leases().pop().unwrap();
    assert_eq!((primary.as_str(), last.version), ("a", 3));
}

/// A chunk whose longest prefix is on too few replicas to continue (the one behind cannot
/// catch up, the third is down) is fenced and sealed at the longest length a quorum
/// reported; the file goes on in a new chunk that starts there.
#[tokio::test]
async fn a_chunk_that_cannot_continue_is_fenced_then_sealed_at_its_longest_length() {
    let c = abc([100, 60, 100]).await;
    c.fake.set_down("c", true);
    c.fake.fail("b", Call::Copy);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!((lease.index, lease.file_offset, lease.version), (1, 100, 1));
    assert_ne!(lease.handle, H);
    let m = c.logged(H).await;
    assert_eq!((m.version, m.sealed_length), (2, Some(100)));
    assert_eq!(c.fake.replica("a", H), Some(sealed_held(2, 100)));
    // Fenced (no late append of the old primary lands on it) but short: stale.
    assert_eq!(c.fake.replica("b", H), Some(held(2, 60)));
    assert_eq!(c.current(H).await, vec![("a".into(), 100)]);
}

/// Seed 90477443447776 of the simulator: a primary that had given up its lease sealed a
/// secondary just before the master's fence reached it, at the primary's length; a third
/// replica held more (appends no quorum took). The sealed replica told clients the chunk ends
/// there, without their record, and they appended it again in the next chunk; the master
/// sealed the chunk at the third replica's length, holding the record's first copy. A fence
/// that finds a sealed replica seals the chunk at its length: the longer replica goes stale.
#[tokio::test]
async fn a_fence_that_finds_a_replica_sealed_by_its_primary_seals_the_chunk_there() {
    let c = cluster(
        &["a", "b", "c"],
        &[
            ("a", held(1, 100)),
            ("b", sealed_held(1, 60)),
            ("c", held(1, 60)),
        ],
        None,
    )
    .await;
    c.fake.fail("c", Call::Copy);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_ne!(lease.handle, H);
    assert_eq!((lease.index, lease.file_offset), (1, 60));
    let m = c.logged(H).await;
    assert_eq!((m.version, m.sealed_length), (2, Some(60)));
    assert_eq!(c.fake.replica("b", H), Some(sealed_held(2, 60)));
    assert_eq!(c.fake.replica("c", H), Some(sealed_held(2, 60)));
    assert_eq!(
        c.fake.replica("a", H),
        Some(held(2, 100)),
        "fenced, past the seal"
    );
    assert_eq!(c.current(H).await, vec![("b".into(), 60), ("c".into(), 60)]);
}

/// The same where every replica holds the sealed length: the master had not heard of the
/// seal yet (its report lost) and would have granted a lease on a chunk sealed on one replica,
/// whose primary would have appended past it. It seals the chunk instead, and the next call
/// goes on in a new chunk.
#[tokio::test]
async fn a_lease_decision_that_finds_a_replica_sealed_seals_the_chunk_and_grants_nothing_on_it() {
    let c = cluster(
        &["a", "b", "c"],
        &[
            ("a", held(1, 60)),
            ("b", sealed_held(1, 60)),
            ("c", held(1, 60)),
        ],
        None,
    )
    .await;
    let first = c.m.append_chunk("/f").await;
    assert!(
        matches!(&first, Err(MasterError::Unavailable(_))),
        "{first:?}"
    );
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_ne!(lease.handle, H);
    assert_eq!((lease.index, lease.file_offset), (1, 60));
    let m = c.logged(H).await;
    assert_eq!((m.version, m.sealed_length), (2, Some(60)));
    for id in ["a", "b", "c"] {
        assert_eq!(c.fake.replica(id, H), Some(sealed_held(2, 60)), "{id}");
    }
    assert!(c.fake.leases().iter().all(|(_, l)| l.handle != H));
}

/// Seed 740 of the simulator: the longest replica of an unsealed chunk (the only one holding
/// an append that never reached a quorum) had a bit flipped at rest that no scrub had found
/// yet. The catch-up of the two empty replicas from it failed its checksums, and the master
/// sealed the chunk at that replica's length all the same: its one current replica was
/// corrupt, the chunk lost for good. A catch-up source that fails its checksums is marked
/// corrupt and the seal is decided again without it: the two good replicas are a quorum, so
/// every acknowledged append is on one of them, and the chunk is sealed at their length.
#[tokio::test]
async fn a_catch_up_source_that_fails_its_checksums_is_marked_and_the_seal_goes_by_the_good() {
    let c = abc([100, 0, 0]).await;
    c.fake.rot("a", H);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert!(c.registry.lock().is_corrupt("a", H));
    let m = c.logged(H).await;
    assert_eq!(
        m.sealed_length,
        Some(0),
        "sealed at the good replicas' length"
    );
    assert_eq!((lease.index, lease.file_offset), (1, 0));
    assert_eq!(c.current(H).await, vec![("b".into(), 0), ("c".into(), 0)]);
    for id in ["b", "c"] {
        assert_eq!(
            c.fake.replica(id, H),
            Some(sealed_held(m.version, 0)),
            "{id}"
        );
    }
}

/// ... and a rotten longest replica beside only one good replica is no quorum: nothing is
/// sealed (an acknowledged append may be on the rotten one and a third that is down).
#[tokio::test]
async fn a_rotten_longest_replica_beside_one_good_one_seals_nothing() {
    let c = abc([100, 0, 0]).await;
    c.fake.rot("a", H);
    c.fake.set_down("c", true);
    let err = c.m.append_chunk("/f").await.unwrap_err();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
    assert!(c.registry.lock().is_corrupt("a", H));
    assert_eq!(c.logged(H).await.sealed_length, None);
}

/// The lease period of the rotten-primary tests below.
const SHORT_LEASE: Duration = Duration::from_millis(100);

/// Servers a, b and c with leases of [`SHORT_LEASE`]: `a` holds chunk `H` at `version` with
/// 100 bytes, rotten and reported corrupt, `b` holds it empty, `c` not at all; `word` is what
/// a fenced server says of its lease at version 1: `(server, bound)`.
async fn rotten_a(version: u64, word: Option<(&str, u64)>) -> Cluster {
    let c = cluster_leasing(
        &["a", "b", "c"],
        &[("a", held(version, 100)), ("b", held(version, 0))],
        None,
        SHORT_LEASE,
    )
    .await;
    c.fake.rot("a", H);
    c.registry.lock().mark_corrupt("a", H);
    if let Some((id, bound)) = word {
        c.fake.led(id, H, 1, bound);
    }
    c
}

/// [`abc`] with leases of `lease`.
async fn abc_leasing(lengths: [u64; 3], lease: Duration) -> Cluster {
    let [a, b, c] = lengths;
    cluster_leasing(
        &["a", "b", "c"],
        &[("a", held(1, a)), ("b", held(1, b)), ("c", held(1, c))],
        None,
        lease,
    )
    .await
}

impl Cluster {
    /// The master restarted over the same log: a new registry and chunk manager, to which
    /// `ids` register and report what they hold of `H` now, and no lease.
    async fn restarted(self, ids: &[&str]) -> Cluster {
        let registry = Arc::new(Mutex::new(Registry::new(Duration::from_millis(50))));
        let m = manager(&self.meta, &registry, &self.fake, SHORT_LEASE);
        let c = Cluster {
            m,
            registry,
            ..self
        };
        c.registered(ids).await;
        c
    }

    /// `ids` register, report what they hold of `H` now, and no lease.
    async fn registered(&self, ids: &[&str]) {
        for id in ids {
            self.registry.lock().register(info(id), Instant::now());
            self.heard_from(&[id]);
            self.m.adopt_leases(&info(id), &[]).await;
        }
    }

    /// A settle pass once the chunk has been reported unvouched for a lease period.
    async fn settle_unvouched(&self) {
        self.m.note_unvouched([H]);
        tokio::time::sleep(SHORT_LEASE).await;
        self.m.settle().await;
    }
}

/// Seed 9663 of the simulator: a put's bytes reached only the chunk's primary (`a`, whose
/// disk then rotted), the one other replica stayed empty (`b`) and the third was never
/// created (`c`). No quorum of good replicas can answer, but the primary's own word at the
/// fence (it acknowledged nothing past 0) says the good replica holds every acknowledged
/// append: the chunk is sealed there, current on `b`, and the file can go on.
#[tokio::test]
async fn a_rotten_primary_s_word_seals_the_chunk_at_a_good_replica_holding_all_it_acknowledged() {
    let c = rotten_a(1, Some(("a", 0))).await;
    c.settle_unvouched().await;
    assert_eq!(c.logged(H).await.sealed_length, Some(0));
    assert_eq!(c.fake.replica("b", H), Some(sealed_held(2, 0)));
    assert_eq!(c.current(H).await, vec![("b".into(), 0)]);
}

/// ... but not when the primary may have acknowledged more than any good replica holds, nor
/// on the word of a replica the log does not name as the lease's primary.
#[tokio::test]
async fn a_rotten_primary_s_word_seals_nothing_past_what_a_good_replica_holds() {
    for (id, bound) in [("a", 50), ("b", 0)] {
        let c = rotten_a(1, Some((id, bound))).await;
        c.settle_unvouched().await;
        assert_eq!(c.logged(H).await.sealed_length, None, "{id} said {bound}");
        assert_eq!(c.fake.replica("b", H).map(|r| r.sealed), Some(false));
    }
}

/// Seed 9663 again: replicas ahead of the log (an unlogged fence reached `a` and `b`), `a`
/// then found corrupt. The next decision fences them together: without `a` the fence of `b`
/// alone never reached a quorum, and each try moved `b` one version further on its own.
#[tokio::test]
async fn replicas_ahead_of_the_log_are_fenced_with_the_corrupt_ones() {
    let c = rotten_a(2, None).await;
    for pass in 0..2 {
        c.settle_unvouched().await;
        let (a, b) = (
            c.fake.replica("a", H).unwrap(),
            c.fake.replica("b", H).unwrap(),
        );
        assert_eq!(a.version, b.version, "pass {pass}: fenced together");
        assert!(a.version > 2, "pass {pass}");
        assert!(
            c.logged(H).await.version > 2,
            "pass {pass}: the fence was logged"
        );
        // One good replica, and no primary's word: nothing is sealed.
        assert_eq!(c.logged(H).await.sealed_length, None);
    }
}

/// Seed 11060 of the simulator: the primary (`a`, named by the log at version 1) gave its lease
/// up on a full disk, acknowledging nothing; an unlogged fence then moved `a` and `b` to
/// version 2, and `a`'s replica rotted. The primary's word reaches the master only at a later
/// fence, which `lineage` makes (the replicas are ahead of the log) and logs without a primary:
/// the master keeps the word past that version, and the seal after it goes by it.
#[tokio::test]
async fn the_last_primary_s_word_outlives_the_unleased_versions_after_its_lease() {
    let c = rotten_a(2, Some(("a", 0))).await;
    c.settle_unvouched().await;
    let logged = c.logged(H).await;
    assert!(logged.version > 2, "{logged:?}");
    assert_eq!(logged.sealed_length, Some(0));
    assert_eq!(c.current(H).await, vec![("b".into(), 0)]);
}

/// Soak seed 208499017516792 of the simulator: the primary (`a`, the log's at version 1)
/// acknowledged nothing before its secondaries were cut off; a fence of the master's own
/// reached `a` alone and failed, and the log then took version 2 from reports, unleased. `a`'s
/// replica rotted. Its word at every later fence spoke of its lease at version 1, while the
/// word was kept only when it spoke of the logged version: the master fenced once a second
/// for good (version 175) and the file never healed. The word is the last lease's, matched
/// against the log's last leased version (`ChunkMeta::last_leased`).
#[tokio::test]
async fn the_last_primary_s_word_is_heard_after_the_log_moved_past_its_lease() {
    let c = cluster_leasing(
        &["a", "b", "c"],
        &[("a", held(2, 100)), ("b", held(2, 0))],
        None,
        SHORT_LEASE,
    )
    .await;
    c.m.log_unleased_version(H, 2).await.unwrap();
    assert_eq!(c.logged(H).await.last_leased(), Some(1));
    c.fake.rot("a", H);
    c.registry.lock().mark_corrupt("a", H);
    c.fake.led("a", H, 1, 0);
    c.settle_unvouched().await;
    let logged = c.logged(H).await;
    assert!(logged.version > 2, "{logged:?}");
    assert_eq!(logged.sealed_length, Some(0));
    assert_eq!(c.current(H).await, vec![("b".into(), 0)]);
}

/// ... and a word is not kept past a new lease: once one is logged, its primary may
/// acknowledge appends the old word knows nothing of.
#[tokio::test]
async fn a_new_lease_drops_the_last_primary_s_word() {
    let c = rotten_a(1, Some(("a", 0))).await;
    c.m.fence(H, 1, vec![info("a"), info("b")]).await.unwrap();
    assert_eq!(c.m.acknowledged_up_to(H), Some(0));
    c.m.seal_at(H, 0).await.unwrap();
    assert_eq!(c.m.acknowledged_up_to(H), None, "a seal drops it");
    let c = rotten_a(1, Some(("a", 0))).await;
    c.m.fence(H, 1, vec![info("a"), info("b")]).await.unwrap();
    assert_eq!(c.m.acknowledged_up_to(H), Some(0));
    // Logged with `a` as its primary, whatever becomes of the catch-up from it after.
    let _ =
        c.m.bump_and_grant(H, 1, Position::default(), vec![info("a"), info("b")])
            .await;
    assert_eq!(c.logged(H).await.version, 2);
    assert_eq!(c.m.acknowledged_up_to(H), None, "a logged lease drops it");
}

/// Re-replication: a copy whose source turns out short of the sealed length (DATA_LOSS)
/// marks that source corrupt; the next pass copies from another holder, and the new replica
/// is sealed at exactly the chunk's length.
#[tokio::test]
async fn a_copy_from_a_corrupt_source_marks_it_and_the_next_pass_copies_from_another() {
    let sealed = |length| sealed_held(1, length);
    let c = cluster(
        &["a", "b", "c"],
        &[("a", sealed(100)), ("b", sealed(100))],
        Some(100),
    )
    .await;
    // a's replica lost its tail on disk since it last reported.
    c.fake.hold("a", H, sealed(80));
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.repair_pass().await;
    assert!(c.registry.lock().is_corrupt("a", H));
    assert_eq!(c.fake.replica("c", H), None);
    c.repair_pass().await;
    assert_eq!(c.fake.replica("c", H), Some(sealed(100)));
    assert_eq!(
        c.current(H).await,
        vec![("b".into(), 100), ("c".into(), 100)]
    );
}

/// Soak seed 13538366429911670341: an unsealed chunk whose longer replicas are ahead of the
/// log (a bump that was not logged) and down looks under-replicated at its logged version,
/// where only a short, lagging replica is current. Copying that replica would give the chunk a
/// second replica that was never in any append's quorum: the next decision would then find a
/// "quorum" of two short replicas and continue the chunk over acknowledged bytes. An unsealed
/// chunk is never copied: once it has had no lease for a lease period it is sealed (when a
/// quorum of its replicas answers a fence), at the longest length, then copied sealed.
#[tokio::test]
async fn an_unsealed_chunk_below_its_goal_is_sealed_at_its_longest_length_before_any_copy() {
    let lease = Duration::from_millis(100);
    let c = cluster_leasing(
        &["a", "b", "c", "d"],
        &[("a", held(2, 100)), ("b", held(2, 100)), ("c", held(1, 60))],
        None,
        lease,
    )
    .await;
    c.fake.set_down("a", true);
    c.fake.set_down("b", true);
    tokio::time::sleep(Duration::from_millis(60)).await;
    // A repair pass, another once the chunk has had no lease for a lease period, then a
    // settle pass.
    let settled = || c.settled(lease);
    settled().await;
    // Only c answers: nothing is copied, sealed or leased, and the file waits.
    assert_eq!(c.fake.replica("d", H), None);
    let err = c.m.append_chunk("/f").await.unwrap_err();
    assert!(matches!(err, MasterError::Unavailable(_)), "{err}");
    assert_eq!(c.logged(H).await.sealed_length, None);
    assert!(c.fake.leases().is_empty());
    // a and b return: the chunk is sealed at the longest length a quorum reports, c catches
    // up, and the copy that follows is of the sealed chunk.
    c.fake.set_down("a", false);
    c.fake.set_down("b", false);
    settled().await;
    let m = c.logged(H).await;
    assert_eq!(m.sealed_length, Some(100));
    settled().await;
    for id in ["a", "b", "c"] {
        let r = c.fake.replica(id, H).unwrap();
        assert_eq!(
            (r.version, r.length, r.sealed),
            (m.version, 100, true),
            "{id}"
        );
    }
    assert!(
        c.current(H).await.iter().all(|(_, length)| *length == 100),
        "{:?}",
        c.current(H).await
    );
}

/// A replica that failed its checksums still knows its version and length: with the only
/// other replica of an unsealed chunk it makes a quorum for the fence, so the chunk is sealed
/// at its longest length and copied back to its goal from the good replica, the corrupt one
/// never a source and never counted. (The simulator found it: a bit flipped at rest left such
/// a chunk on one good replica for good, since a seal needed a quorum of good ones.)
#[tokio::test]
async fn an_unsealed_chunk_left_with_one_good_and_one_corrupt_replica_is_sealed_and_copied() {
    let lease = Duration::from_millis(100);
    let c = cluster_leasing(
        &["a", "b", "c", "d"],
        &[("a", held(1, 100)), ("b", held(1, 100))],
        None,
        lease,
    )
    .await;
    c.registry.lock().mark_corrupt("a", H);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let settled = || c.settled(lease);
    settled().await;
    assert_eq!(c.logged(H).await.sealed_length, Some(100));
    settled().await;
    settled().await;
    let current = c.current(H).await;
    assert_eq!(
        current,
        vec![("b".into(), 100), ("c".into(), 100), ("d".into(), 100)]
    );
    assert!(c.registry.lock().is_corrupt("a", H));
}

/// ... but only when a server could take the copy: with every server already holding a
/// replica, an unsealed chunk below its goal is left to its next lease, which continues it on
/// the replicas that hold its longest length (a catch-up brings the others in).
#[tokio::test]
async fn an_unsealed_chunk_no_server_could_copy_is_left_to_continue() {
    let c = abc([100, 100, 60]).await;
    c.fake.set_down("a", true);
    // a misses its heartbeats and is marked dead; b and c report on.
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.heard_from(&["b", "c"]);
    assert_eq!(c.registry.lock().sweep(Instant::now()), ["a"]);
    c.m.rereplicate().await;
    c.m.settle().await;
    assert_eq!(c.logged(H).await.sealed_length, None);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!((lease.index, lease.version), (0, 2));
    assert_eq!(c.fake.replica("b", H), Some(held(2, 100)));
    assert_eq!(c.fake.replica("c", H), Some(held(2, 100)));
}

/// Seed 52 of the simulator: a corrupt replica of an unsealed chunk was deleted because two
/// other replicas were current, one of them empty (it had lost its appends to failed
/// fsyncs): the acknowledged appends were left on one disk. A corrupt replica goes only once
/// a quorum of good replicas elsewhere holds at least its length, as a stale one does.
#[tokio::test]
async fn a_corrupt_replica_of_an_unsealed_chunk_goes_only_once_a_quorum_holds_as_much() {
    let c = cluster(
        &["a", "b", "c"],
        &[("a", held(1, 100)), ("b", held(1, 100)), ("c", held(1, 0))],
        None,
    )
    .await;
    c.registry.lock().mark_corrupt("a", H);
    let report = |length| Replica {
        handle: H,
        version: 1,
        length,
        sealed: false,
    };
    assert_eq!(c.m.to_delete("a", &[report(100)]).await.unwrap(), vec![]);
    c.registry
        .lock()
        .heartbeat_with("c", 0, vec![report(100)], false, Instant::now());
    assert_eq!(c.m.to_delete("a", &[report(100)]).await.unwrap().len(), 1);
}

/// A corrupt replica whose server was given sources to restore its bad blocks from is not
/// deleted while it may still be restoring them (`RESTORE_GRACE`), even with a quorum of good
/// replicas elsewhere; after that it goes as any corrupt replica does.
#[tokio::test]
async fn a_corrupt_replica_being_restored_is_not_deleted() {
    let c = cluster(
        &["a", "b", "c"],
        &[
            ("a", held(1, 100)),
            ("b", held(1, 100)),
            ("c", held(1, 100)),
        ],
        None,
    )
    .await;
    let r = Replica {
        handle: H,
        version: 1,
        length: 100,
        sealed: false,
    };
    {
        let mut reg = c.registry.lock();
        reg.mark_corrupt("a", H);
        reg.restoring_until("a", H, Instant::now() + Duration::from_millis(200));
    }
    assert_eq!(c.m.to_delete("a", &[r]).await.unwrap(), vec![]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.m.to_delete("a", &[r]).await.unwrap().len(), 1);
}

/// tests/heal (CI): a repair pass ran between a corrupt replica's report and its restore, a
/// few milliseconds later, and copied the whole chunk to a fourth server; the restored replica
/// then made one too many and a good one was deleted (and so did a pass between the report
/// that it was restored and its server's next heartbeat). A sealed chunk whose corrupt replica
/// is being restored in place is not copied meanwhile, nor once restored (it counts toward the
/// goal, and is listed once a report names it: never on the master's word alone).
/// It is copied once its server says it cannot restore it (and the replica is not restored
/// again from the same mark), or once the grace runs out.
#[tokio::test]
async fn a_chunk_whose_corrupt_replica_is_being_restored_is_not_copied_meanwhile() {
    for ending in ["restored", "cannot restore", "grace over"] {
        let sealed = sealed_held(1, 100);
        let c = cluster(
            &["a", "b", "c", "d"],
            &[("a", sealed), ("b", sealed), ("c", sealed)],
            Some(100),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let until = Instant::now() + Duration::from_millis(200);
        {
            let mut reg = c.registry.lock();
            reg.mark_corrupt("a", H);
            reg.restoring_until("a", H, until);
        }
        c.repair_pass().await;
        let copies: usize = ["a", "d"]
            .iter()
            .map(|id| c.fake.calls(id, Call::Copy))
            .sum();
        assert_eq!(copies, 0, "{ending}: copied while restoring");
        match ending {
            "restored" => {
                assert!(c.registry.lock().clear_corrupt("a", H));
                c.repair_pass().await;
                let copies: usize = ["a", "d"]
                    .iter()
                    .map(|id| c.fake.calls(id, Call::Copy))
                    .sum();
                assert_eq!(copies, 0, "copied once restored, before its next report");
                let listed = c.current(H).await;
                assert_eq!(
                    listed.len(),
                    2,
                    "listed before a report names it: {listed:?}"
                );
                let report = Replica {
                    handle: H,
                    version: 1,
                    length: 100,
                    sealed: true,
                };
                c.registry
                    .lock()
                    .heartbeat_with("a", 0, vec![report], false, Instant::now());
                assert_eq!(c.current(H).await.len(), 3, "listed once reported");
                continue;
            }
            "cannot restore" => {
                let mut reg = c.registry.lock();
                reg.cannot_restore("a", H, Instant::now());
                reg.restoring_until("a", H, until);
                assert!(!reg.is_restoring("a", H, Instant::now()));
            }
            _ => tokio::time::sleep_until(until).await,
        }
        c.repair_pass().await;
        assert_eq!(c.fake.replica("d", H), Some(sealed), "{ending}");
    }
}

/// tests/compose: a chunkserver holding a lease as primary was restarted (`docker compose
/// restart`, or killed and started) and registered again within a second, reporting no lease
/// (its leases died with its process); the master kept handing that lease out, the server
/// answered "not the primary" to every append, and appends to the file stalled for the rest of
/// the lease period (52 to 64 s). A primary that registers without a lease the table names it
/// for does not hold it: the next append gets a new lease, at a new version (which fences the
/// old one on every replica, should it somehow live on).
#[tokio::test]
async fn a_lease_whose_primary_registers_again_without_it_is_replaced() {
    let c = abc([100, 100, 100]).await;
    let first = c.m.append_chunk("/f").await.unwrap();
    let primary = first.primary.as_ref().unwrap().id.clone();
    let again = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(
        again.version, first.version,
        "a live primary's lease is handed out again"
    );
    c.m.adopt_leases(&info(&primary), &[]).await;
    let next = c.m.append_chunk("/f").await.unwrap();
    assert!(
        next.version > first.version,
        "the lease {primary} no longer holds was handed out again: {next:?}"
    );
}

/// A replica that reports its unsealed chunk unvouched (it restarted, and serves no read of
/// it until told what a quorum holds) gets the chunk settled once no lease has been out on it
/// for a lease period: fenced and sealed at the longest length a quorum reports, so every
/// replica serves it again. Not while a lease is out.
#[tokio::test]
async fn a_chunk_reported_unvouched_is_sealed_once_no_lease_is_out() {
    let lease = Duration::from_millis(100);
    let c = cluster_leasing(
        &["a", "b", "c"],
        &[("a", held(1, 100)), ("b", held(1, 100)), ("c", held(1, 60))],
        None,
        lease,
    )
    .await;
    let granted = c.m.append_chunk("/f").await.unwrap();
    c.m.note_unvouched([H]);
    c.m.settle().await;
    tokio::time::sleep(lease / 2).await;
    c.m.settle().await;
    assert_eq!(c.logged(H).await.sealed_length, None, "a lease is out");
    c.m.note_unvouched([H]);
    tokio::time::sleep(lease + Duration::from_millis(20)).await;
    c.m.settle().await;
    let m = c.logged(H).await;
    assert!(m.version > granted.version);
    assert_eq!(m.sealed_length, Some(100));
    for id in ["a", "b", "c"] {
        let r = c.fake.replica(id, H).unwrap();
        assert_eq!(
            (r.version, r.length, r.sealed),
            (m.version, 100, true),
            "{id}"
        );
    }
}

/// Found by tests/systemd: a put's last chunk, its primary and one secondary restarted (so
/// two replicas reported it unvouched, and the primary registered again without its lease),
/// could not be read for a lease period: one replica told its length, two were needed, and
/// the master waited a lease period from the reports before settling it although it knew no
/// lease was out. Now a master that knows every lease that can be out on the chunk (its last
/// primary reported its leases, or the master has been up for a lease period) settles an
/// unvouched chunk at its next pass when no lease is out on it; else it still waits one out.
#[tokio::test]
async fn an_unvouched_chunk_with_no_lease_out_is_sealed_at_the_next_pass() {
    let lease = Duration::from_millis(100);
    let held = [("a", held(1, 100)), ("b", held(1, 100)), ("c", held(1, 60))];
    let start = || cluster_leasing(&["a", "b", "c"], &held, None, lease);
    // Just started, and the last primary has not reported: a lease from before may be out.
    let c = start().await;
    c.m.lease.reported.lock().clear();
    c.m.note_unvouched([H]);
    c.m.settle().await;
    assert_eq!(
        c.logged(H).await.sealed_length,
        None,
        "the master just started"
    );
    // Told by the last primary, or up for a lease period: no lease is out.
    for told in [true, false] {
        let c = start().await;
        if !told {
            c.m.lease.reported.lock().clear();
            tokio::time::sleep(lease + Duration::from_millis(20)).await;
        }
        c.m.note_unvouched([H]);
        c.m.settle().await;
        let m = c.logged(H).await;
        assert_eq!(
            m.sealed_length,
            Some(100),
            "told by the last primary: {told}"
        );
        for id in ["a", "b", "c"] {
            let r = c.fake.replica(id, H).unwrap();
            assert_eq!(
                (r.version, r.length, r.sealed),
                (m.version, 100, true),
                "{id}"
            );
        }
    }
}

/// Seed 215 of the simulator: `append_chunk` read the chunk's state, then waited for the
/// chunk's decision lock while another decision (settle) sealed it at 0; it went on from
/// what it had read and sealed the chunk again at 3,183 bytes, over a record the client,
/// told "not in that chunk" by the first seal, had appended elsewhere: a duplicate. Once it
/// holds the lock it reads the chunk again.
#[tokio::test]
async fn a_lease_decision_goes_on_from_the_chunk_as_it_is_once_it_holds_the_lock() {
    let c = cluster(
        &["a", "b", "c", "d"],
        &[
            ("a", held(1, 100)),
            ("b", held(1, 100)),
            ("c", held(1, 100)),
        ],
        None,
    )
    .await;
    let lock = c.m.deciding.write([H]).await;
    let m = Arc::clone(&c.m);
    let asked = tokio::spawn(async move { m.append_chunk("/f").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.m.seal_at(H, 50).await.unwrap();
    drop(lock);
    match asked.await.unwrap() {
        Ok(lease) => assert_ne!(lease.handle, H, "a lease on a sealed chunk"),
        Err(e) => assert!(matches!(e, MasterError::Unavailable(_)), "{e}"),
    }
    assert_eq!(c.logged(H).await.sealed_length, Some(50));
    assert!(c.fake.leases().iter().all(|(_, g)| g.handle != H));
}

/// A seal call that fails on a replica at the sealed length (the server answered nothing) is
/// made again by `settle` until the replica is sealed: an unsealed replica at the sealed
/// length would stay so for good.
#[tokio::test]
async fn a_replica_whose_seal_call_failed_is_sealed_by_a_later_settle() {
    let c = abc([100, 60, 100]).await;
    c.fake.set_down("c", true);
    c.fake.fail("b", Call::Copy);
    c.fake.fail("a", Call::Seal);
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_ne!(lease.handle, H);
    assert_eq!(c.logged(H).await.sealed_length, Some(100));
    assert_eq!(c.fake.replica("a", H), Some(held(2, 100)));
    c.m.settle().await;
    assert_eq!(c.fake.replica("a", H), Some(held(2, 100)), "still failing");
    c.fake.heal("a");
    c.m.settle().await;
    assert_eq!(c.fake.replica("a", H), Some(sealed_held(2, 100)));
    let seals = c.fake.calls("a", Call::Seal);
    c.m.settle().await;
    assert_eq!(
        c.fake.calls("a", Call::Seal),
        seals,
        "sealed once is enough"
    );
}

/// The end of a lease its primary may still hold (it died, or gave the lease up) is waited
/// out within the `AppendChunk` call when it is near, not by the client's backoff, which
/// could let the master's own seal of an idle chunk below its goal come first (the heal test
/// `a_replica_behind_catches_up_and_the_chunk_continues` found the chunk sealed); a far end is
/// answered at once.
#[tokio::test]
async fn a_near_end_of_the_previous_lease_is_waited_out_within_the_call() {
    let replicas = [
        ("a", held(1, 100)),
        ("b", held(1, 100)),
        ("c", held(1, 100)),
    ];
    let lease = Duration::from_millis(300);
    let c = cluster_leasing(&["a", "b", "c"], &replicas, None, lease).await;
    let first = c.m.append_chunk("/f").await.unwrap();
    c.m.lease.table.lock().get_mut(&H).unwrap().doomed = true;
    let t = std::time::Instant::now();
    let next = c.m.append_chunk("/f").await.unwrap();
    assert!(next.version > first.version, "a new lease");
    assert!(
        t.elapsed() >= lease / 2,
        "granted before the old one ran out"
    );

    let c = cluster(&["a", "b", "c"], &replicas, None).await;
    c.m.append_chunk("/f").await.unwrap();
    c.m.lease.table.lock().get_mut(&H).unwrap().doomed = true;
    let t = std::time::Instant::now();
    match c.m.append_chunk("/f").await {
        Err(MasterError::Unavailable(m)) => assert!(m.contains("lease runs for another"), "{m}"),
        other => panic!("not told to wait: {other:?}"),
    }
    assert!(
        t.elapsed() < super::alloc::IN_CALL_WAIT,
        "a far end is not waited for"
    );
}

/// Seed 30643 of the simulator: a replica the master listed (a copy reported it, then deleted
/// it when the copy failed) was called to seal and answered that it holds no such chunk; the
/// failed seal noted it again, so no report ever dropped it, and the retry every pass
/// noted it again: a sealed chunk was counted current on a server holding nothing. A seal
/// answered NOT_FOUND forgets the replica instead, and is not tried again.
#[tokio::test]
async fn a_seal_answered_not_found_forgets_the_replica() {
    let c = cluster(
        &["a", "b", "c"],
        &[("a", sealed_held(1, 0)), ("b", sealed_held(1, 0))],
        Some(0),
    )
    .await;
    // Listed, but not there.
    c.registry.lock().note_replica(
        "c",
        Replica {
            handle: H,
            version: 1,
            length: 0,
            sealed: false,
        },
    );
    c.m.failed_seals.lock().insert(H);
    c.m.settle().await;
    assert_eq!(c.fake.calls("c", Call::Seal), 1);
    assert_eq!(c.current(H).await, vec![("a".into(), 0), ("b".into(), 0)]);
    c.m.settle().await;
    assert_eq!(c.fake.calls("c", Call::Seal), 1, "not tried again");
}

/// Seed 192902363027571 of the simulator: the master logged a seal and crashed with its seal
/// calls to the replicas in flight (`failed_seals` is in memory). After its restart every
/// replica reported the chunk unsealed at the sealed version and length, current, but a
/// replica that restarts too serves no read of an unsealed chunk (it does not know what a
/// quorum holds of it): after a power cut the file was unreadable for good. A report of an
/// unsealed replica at a sealed chunk's version and length is sealed at the next pass.
#[tokio::test]
async fn replicas_reported_unsealed_at_a_sealed_length_are_sealed() {
    let c = cluster(
        &["a", "b", "c"],
        &[("a", held(1, 100)), ("b", held(1, 100)), ("c", held(1, 90))],
        Some(100),
    )
    .await;
    for id in ["a", "b", "c"] {
        let h = c.fake.replica(id, H).unwrap();
        let r = Replica {
            handle: H,
            version: h.version,
            length: h.length,
            sealed: h.sealed,
        };
        c.m.adopt_reports(id, &[r]).await.unwrap();
    }
    c.m.settle().await;
    assert_eq!(c.fake.replica("a", H), Some(sealed_held(1, 100)));
    assert_eq!(c.fake.replica("b", H), Some(sealed_held(1, 100)));
    assert_eq!(
        c.fake.replica("c", H),
        Some(held(1, 90)),
        "stale: not sealed"
    );
    assert_eq!(c.fake.calls("c", Call::Seal), 0);
    c.m.settle().await;
    assert_eq!(
        c.fake.calls("a", Call::Seal),
        1,
        "not called again once sealed"
    );
}

/// Seed 56860221658621 of the simulator: a catch-up from the longest replica copied a prefix
/// of it to the ones behind, then met the rot in its bytes. The seal that followed went by the
/// lengths the fence had heard, from before the catch-up: it sealed the chunk at 0 while the
/// good replicas held more, no replica could be sealed there, and the chunk was lost. A
/// catch-up that failed leaves its target's length unknown: the next fence decides.
#[tokio::test]
async fn a_catch_up_cut_short_by_rot_leaves_the_seal_to_the_next_fence() {
    let c = abc_leasing([100, 0, 0], SHORT_LEASE).await;
    c.fake.rot_past("a", H, 30);
    c.settle_unvouched().await;
    c.heard_from(&["a", "b", "c"]);
    c.settle_unvouched().await;
    let logged = c.logged(H).await;
    assert_eq!(logged.sealed_length, Some(30), "{logged:?}");
    for id in ["b", "c"] {
        let r = c.fake.replica(id, H).unwrap();
        assert_eq!(
            (r.version, r.length, r.sealed),
            (logged.version, 30, true),
            "{id}"
        );
    }
}

/// A new chunk's first lease is given while its AddChunk record is written, so a master that
/// crashed before the record was durable leaves a lease on a chunk its log does not know. Its
/// primary reports it when it registers with the restarted master: it is not adopted, and
/// holds nothing back.
#[tokio::test]
async fn a_lease_on_a_chunk_the_log_does_not_know_is_not_adopted() {
    let c = cluster(
        &["a", "b", "c"],
        &[("a", held(1, 0)), ("b", held(1, 0)), ("c", held(1, 0))],
        None,
    )
    .await;
    let orphan = H + 1;
    let held = HeldLease {
        handle: orphan,
        version: 1,
        expires: std::time::SystemTime::now() + Duration::from_secs(60),
        secondaries: vec!["b:1".into(), "c:1".into()],
    };
    c.m.adopt_leases(&info("a"), &[held]).await;
    assert!(!c.m.lease.table.lock().contains_key(&orphan));
    let lease = c.m.append_chunk("/f").await.unwrap();
    assert_eq!(lease.handle, H);
}

/// A repair pass that reads the log between a new chunk's AddChunk record and the noting of
/// its replicas (the allocation waits for its lease meanwhile) found it with no replica and
/// called it lost, an error and an operator event for a healthy chunk (seen in gfs-bench's
/// small files). A chunk being allocated is not judged.
#[tokio::test]
async fn a_chunk_being_allocated_is_not_called_lost() {
    let c = cluster(&["a", "b", "c"], &[], None).await;
    // Past the warm-up after a start (the registry's `dead_after`), when nothing is judged.
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.m.allocating.lock().insert(H);
    c.repair_pass().await;
    assert!(!c.m.repair.lost.lock().contains(&H));
    c.m.allocating.lock().remove(&H);
    c.repair_pass().await;
    c.repair_pass().await;
    assert!(
        c.m.repair.lost.lock().contains(&H),
        "no replica, not allocating"
    );
}

/// Found by gfs-bench's 4 writers (2026-12-07, sixth session): a repair pass read the log just
/// after a seal was logged and the registry before the seal's replicas were noted sealed, and
/// called a healthy chunk lost (an error and an operator event; found again a pass later). A
/// decision changes the log, then the registry: a chunk is called lost only when two passes
/// in a row find no live replica at its current version.
#[tokio::test]
async fn a_chunk_is_called_lost_only_when_two_passes_in_a_row_find_no_replica() {
    let c = cluster(&["a", "b", "c"], &[], None).await;
    // Past the warm-up after a start (the registry's `dead_after`), when nothing is judged.
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.repair_pass().await;
    assert!(!c.m.repair.lost.lock().contains(&H), "one pass");
    // The decision notes its replicas before the next pass.
    for id in ["a", "b", "c"] {
        c.fake.hold(id, H, held(1, 0));
    }
    c.heard_from(&["a", "b", "c"]);
    for _ in 0..2 {
        c.repair_pass().await;
        assert!(!c.m.repair.lost.lock().contains(&H), "found");
    }
    let lost = cluster(&["a", "b", "c"], &[], None).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    lost.repair_pass().await;
    lost.repair_pass().await;
    assert!(lost.m.repair.lost.lock().contains(&H), "two passes");
}

/// An `AppendChunk` call dropped while its new chunk's record is written (the client gone,
/// its deadline passed) leaves no handle in `allocating`: the repair skips the chunks there,
/// and a handle left for good kept its chunk below its goal for good (seeds 4, 23 and 52 of
/// the simulator on a864194).
#[tokio::test]
async fn an_allocation_dropped_midway_leaves_nothing_allocating() {
    use futures::FutureExt;
    let c = cluster(
        &["a", "b", "c"],
        &[
            ("a", sealed_held(1, 10)),
            ("b", sealed_held(1, 10)),
            ("c", sealed_held(1, 10)),
        ],
        Some(10),
    )
    .await;
    assert!(
        c.m.append_chunk("/f").now_or_never().is_none(),
        "it waits for the log"
    );
    assert!(c.m.allocating.lock().is_empty());
}

/// Seed 40853 of the simulator: the primary of the chunk's one lease (`a`, version 1) holds a
/// tail it alone committed, then rots and restarts with no word to give; `b` is empty; `c`,
/// empty too, was down while fences moved `a` and `b` on to unleased versions, and came back
/// at version 1. No lease was granted past version 1, so `c` holds everything it committed
/// under the chunk's last lease: a witness as good as one at the current version. It is
/// fenced with the others, and with `b` makes a quorum of good replicas: sealed at 0.
#[tokio::test]
async fn a_replica_behind_only_unleased_versions_is_a_witness_for_the_seal() {
    let c = fenced_on_without_c().await;
    c.fake.set_down("c", false);
    c.settle_unvouched().await;
    let logged = c.logged(H).await;
    assert_eq!(logged.sealed_length, Some(0), "{logged:?}");
    assert_eq!(c.current(H).await, vec![("b".into(), 0), ("c".into(), 0)]);
}

/// Seed 40853's schedule up to `c`'s return: `a` rotten, `c` down at version 1 while fences
/// moved `a` and `b` on to unleased versions.
async fn fenced_on_without_c() -> Cluster {
    let c = abc_leasing([100, 0, 0], SHORT_LEASE).await;
    c.fake.rot("a", H);
    c.registry.lock().mark_corrupt("a", H);
    c.fake.set_down("c", true);
    // Each pass fences `a` and `b` further; their reports then show them ahead of the log,
    // and the next pass logs a version past theirs.
    for _ in 0..3 {
        c.settle_unvouched().await;
        c.heard_from(&["a", "b"]);
    }
    let logged = c.logged(H).await;
    assert_eq!(logged.sealed_length, None, "one good replica answered");
    assert!(logged.version > 1, "{logged:?}");
    assert_eq!(c.fake.replica("c", H), Some(held(1, 0)));
    c
}

/// Seed 148412570704814 of the simulator: seed 40853's schedule with a master restart
/// between the fences and `c`'s return. The last lease's version was known only in memory,
/// so the restarted master did not count `c` a witness: one good replica answered, and every
/// pass fenced again, for good. The log keeps it (`ChunkMeta::last_leased`).
#[tokio::test]
async fn a_replica_behind_only_unleased_versions_is_a_witness_after_a_master_restart() {
    let c = fenced_on_without_c().await.restarted(&["a", "b"]).await;
    c.registry.lock().mark_corrupt("a", H);
    c.fake.set_down("c", false);
    c.registered(&["c"]).await;
    c.settle_unvouched().await;
    let logged = c.logged(H).await;
    assert_eq!(logged.sealed_length, Some(0), "{logged:?}");
    assert_eq!(c.current(H).await, vec![("b".into(), 0), ("c".into(), 0)]);
}

/// Seed 40853 of the simulator, the restore's schedule: an idle unsealed chunk at its goal
/// whose fourth replica failed its checksums, longer than every good one (its tail was never
/// acknowledged) and so with no copy of its bad block anywhere. It cannot be deleted while the
/// good replicas are shorter, and it would be reported for good: once unleased for a lease
/// period the chunk is sealed by the good replicas, and then the corrupt one goes.
#[tokio::test]
async fn an_idle_unsealed_chunk_with_a_corrupt_replica_is_sealed_so_that_it_can_go() {
    let c = cluster_leasing(
        &["a", "b", "c", "d"],
        &[
            ("a", held(1, 100)),
            ("b", held(1, 0)),
            ("c", held(1, 0)),
            ("d", held(1, 0)),
        ],
        None,
        SHORT_LEASE,
    )
    .await;
    c.fake.rot("a", H);
    c.registry.lock().mark_corrupt("a", H);
    let rotten = Replica {
        handle: H,
        version: 1,
        length: 100,
        sealed: false,
    };
    assert_eq!(c.m.to_delete("a", &[rotten]).await.unwrap(), vec![]);
    tokio::time::sleep(Duration::from_millis(60)).await;
    c.m.rereplicate().await;
    tokio::time::sleep(SHORT_LEASE).await;
    c.m.settle().await;
    let logged = c.logged(H).await;
    assert_eq!(logged.sealed_length, Some(0), "{logged:?}");
    let rotten = Replica {
        version: logged.version,
        ..rotten
    };
    assert_eq!(c.m.to_delete("a", &[rotten]).await.unwrap().len(), 1);
}

/// Seed 13798's start: `/f`'s next chunk (returned) made on two of `a`, `b` and `c`, its
/// creation failed on `c` (data directory 5); the primary (returned, then the other member)
/// committed 100 bytes alone, which rotted.
async fn failed_creation_and_rotten_primary() -> (Cluster, u64, String, &'static str) {
    let c = cluster_leasing(
        &["a", "b", "c"],
        &[
            ("a", sealed_held(1, 100)),
            ("b", sealed_held(1, 100)),
            ("c", sealed_held(1, 100)),
        ],
        Some(100),
        SHORT_LEASE,
    )
    .await;
    c.registry
        .lock()
        .register_disk(info("c"), 5, Instant::now());
    c.fake.fail("c", Call::Create);
    let lease = c.m.append_chunk("/f").await.unwrap();
    let h = lease.handle;
    let primary = lease.primary.unwrap().id;
    let other = if primary == "a" { "b" } else { "a" };
    assert!(c.fake.replica("c", h).is_none());
    let version = c.fake.replica(&primary, h).unwrap().version;
    c.fake.hold(&primary, h, held(version, 100));
    c.fake.rot(&primary, h);
    (c, h, primary, other)
}

/// Seed 228949108538566 of the simulator: a put's chunk placed on the two servers alive (no
/// third to place it on); its primary committed a tail alone, restarted (no word) and rotted,
/// and the other replica is empty. Every acknowledged append is on a quorum of two members, so
/// on the empty one: the chunk is sealed there (it waited for good for a third witness).
#[tokio::test]
async fn a_chunk_placed_on_two_servers_is_sealed_at_its_one_good_replica() {
    let c = cluster_leasing(
        &["a", "b"],
        &[("a", sealed_held(1, 100)), ("b", sealed_held(1, 100))],
        Some(100),
        SHORT_LEASE,
    )
    .await;
    let lease = c.m.append_chunk("/f").await.unwrap();
    let h = lease.handle;
    let primary = lease.primary.unwrap().id;
    let other = if primary == "a" { "b" } else { "a" };
    assert_eq!(lease.members, 2);
    assert_eq!(c.logged(h).await.placed, 2);
    let version = c.fake.replica(&primary, h).unwrap().version;
    c.fake.hold(&primary, h, held(version, 100));
    c.fake.rot(&primary, h);
    c.registry.lock().mark_corrupt(&primary, h);
    c.m.note_unvouched([h]);
    tokio::time::sleep(SHORT_LEASE * 2).await;
    c.m.settle().await;
    assert_eq!(c.logged(h).await.sealed_length, Some(0));
    assert!(c.fake.replica(other, h).unwrap().sealed);
    assert_eq!(c.current(h).await, vec![(other.to_string(), 0)]);
}

/// Seed 13798 of the simulator: a chunk made on two servers (the third's creation failed, with
/// no fourth to take its place); its primary committed a tail alone, restarted (so it gives no
/// word) and rotted, and the other replica is empty. The third, fenced with the others, answers
/// that it holds no replica, and it never did: every acknowledged append is on a quorum of the
/// lease's members, so on the empty replica, and the chunk is sealed there. Also when the third
/// restarted since on the same data directory (its identity unchanged: seed 73346212800128).
/// Not when it registered again on another or an unknown directory, nor once it lost its disk:
/// it may have held the chunk and lost it.
#[tokio::test]
async fn a_member_whose_creation_failed_and_that_holds_nothing_is_a_witness_for_the_seal() {
    for case in [
        "never held",
        "restarted on its disk",
        "registered again",
        "registered on another disk",
        "disk lost",
    ] {
        let (c, h, primary, other) = failed_creation_and_rotten_primary().await;
        c.registry.lock().mark_corrupt(&primary, h);
        match case {
            "restarted on its disk" => {
                c.registry
                    .lock()
                    .register_disk(info("c"), 5, Instant::now());
            }
            "registered again" => c.registry.lock().register(info("c"), Instant::now()),
            "registered on another disk" => {
                c.registry
                    .lock()
                    .register_disk(info("c"), 6, Instant::now());
            }
            "disk lost" => {
                c.registry
                    .lock()
                    .heartbeat_with("c", 0, Vec::new(), true, Instant::now());
            }
            _ => {}
        }
        c.m.note_unvouched([h]);
        tokio::time::sleep(SHORT_LEASE * 2).await;
        c.m.settle().await;
        if ["never held", "restarted on its disk"].contains(&case) {
            assert!(c.fake.calls("c", Call::SetVersion) > 0);
            assert_eq!(c.logged(h).await.sealed_length, Some(0), "{case}");
            assert!(c.fake.replica(other, h).unwrap().sealed, "{case}");
            assert_eq!(c.current(h).await, vec![(other.to_string(), 0)], "{case}");
        } else {
            assert_eq!(c.logged(h).await.sealed_length, None, "{case}");
        }
    }
}

/// Seed 73346212800128 of the simulator: the case above, where the master restarted too. Its
/// registry's note of the failed creation was in memory; the log now names the server and its
/// data directory (`AddChunkOp::uncreated`), so once that server registers again on the same
/// directory its "none here" is a witness for the new master too. On another directory it is
/// not.
#[tokio::test]
async fn a_failed_creation_logged_with_the_server_s_disk_outlives_a_master_restart() {
    for same_disk in [true, false] {
        let (c, h, primary, other) = failed_creation_and_rotten_primary().await;
        // The master restarts: a new registry and manager over the same log; the servers
        // register again and report what they hold.
        let registry = Arc::new(Mutex::new(Registry::new(Duration::from_millis(50))));
        let m = manager(&c.meta, &registry, &c.fake, SHORT_LEASE);
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            let disk = if id == "c" && !same_disk { 6 } else { 5 };
            registry.lock().register_disk(info(id), disk, now);
            m.note_failed_creations(id, disk);
            let report: Vec<Replica> = [H, h]
                .into_iter()
                .filter_map(|k| {
                    let r = c.fake.replica(id, k)?;
                    Some(Replica {
                        handle: k,
                        version: r.version,
                        length: r.length,
                        sealed: r.sealed,
                    })
                })
                .collect();
            registry.lock().heartbeat_with(id, 0, report, false, now);
            m.adopt_leases(&info(id), &[]).await;
        }
        registry.lock().mark_corrupt(&primary, h);
        m.note_unvouched([h]);
        tokio::time::sleep(SHORT_LEASE * 2).await;
        m.settle().await;
        let logged = c.logged(h).await;
        if same_disk {
            assert_eq!(logged.sealed_length, Some(0));
            assert!(c.fake.replica(other, h).unwrap().sealed);
        } else {
            assert_eq!(logged.sealed_length, None);
        }
    }
}

/// Found by tests/compose: the primary of a log's chunk SIGKILLed, the file's appends stalled
/// for the whole lease (62 s with the 60 s default): the master counted the primary dead after
/// `dead_after`, yet waited its lease out. A lease whose primary is counted dead is fenced out
/// instead: the next AppendChunk bumps the version on the live replicas, a quorum of the
/// lease's members, so the old primary can commit nothing more wherever it is, and grants a
/// new lease at once.
#[tokio::test]
async fn a_lease_whose_primary_is_counted_dead_is_fenced_out_not_waited_out() {
    let c = abc([100, 100, 100]).await;
    let first = c.m.append_chunk("/f").await.unwrap();
    let old = first.primary.as_ref().unwrap().id.clone();
    c.fake.set_down(&old, true);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let others: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|id| *id != old)
        .collect();
    c.heard_from(&others);
    assert_eq!(c.registry.lock().sweep(Instant::now()), [old.as_str()]);
    let t = Instant::now();
    let next = c.m.append_chunk("/f").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "waited {:?}",
        t.elapsed()
    );
    assert!(next.version > first.version, "{next:?}");
    assert_ne!(next.primary.as_ref().unwrap().id, old);
    for id in others {
        assert_eq!(c.fake.replica(id, H), Some(held(next.version, 100)), "{id}");
    }
}

/// What makes the fence-out above safe, checked at every fence: a fence that would leave an
/// unexpired lease's version on a quorum of its members (here it reached one member and a
/// replica outside the lease) fails, whatever quorum of replicas took it.
#[tokio::test]
async fn a_fence_that_leaves_a_quorum_of_a_leases_members_behind_fails() {
    let c = cluster(
        &["a", "b", "c", "d"],
        &[
            ("a", held(1, 100)),
            ("b", held(1, 100)),
            ("c", held(1, 100)),
        ],
        None,
    )
    .await;
    let l = c.m.append_chunk("/f").await.unwrap();
    let mut members: Vec<String> = l.secondaries.iter().map(|s| s.id.clone()).collect();
    members.push(l.primary.as_ref().unwrap().id.clone());
    assert_eq!(members.len(), 3, "{l:?}");
    c.fake.hold("d", H, held(l.version, 100));
    let one = info(&members[0]);
    let r = c.m.fence(H, l.version, vec![one.clone(), info("d")]).await;
    assert!(r.is_err(), "two members left at the lease's version");
    // Two of the three members fenced leave one: it can commit nothing alone.
    let two = info(&members[1]);
    c.m.fence(H, l.version, vec![one, two]).await.unwrap();
}

/// The CI rehearsal of 2026-12-06 (tests/heal, a relegation under appends): the master counted
/// a replica that no disk held. A replica short of its sealed chunk's length is both deleted
/// (a quorum holds the chunk elsewhere) and caught up by repair; a catch-up that ends between
/// the delete's decision and its run on the server leaves the master counting the caught-up
/// copy the delete then removed. A replica being copied or caught up into is not deleted, and
/// one told to go leaves the locations at once, so repair does not start on it.
#[tokio::test]
async fn a_replica_being_caught_up_is_not_deleted_and_one_told_to_go_is_not_counted() {
    let c = cluster(
        &["a", "b", "c"],
        &[
            ("a", sealed_held(1, 100)),
            ("b", sealed_held(1, 100)),
            ("c", held(1, 60)),
        ],
        Some(100),
    )
    .await;
    let short = Replica {
        handle: H,
        version: 1,
        length: 60,
        sealed: false,
    };
    c.m.repair
        .cloning
        .lock()
        .insert(H, ("a".to_string(), "c".to_string()));
    assert_eq!(c.m.to_delete("c", &[short]).await.unwrap(), vec![]);
    c.m.repair.cloning.lock().clear();
    assert_eq!(c.m.to_delete("c", &[short]).await.unwrap().len(), 1);
    assert!(!c.registry.lock().holds("c", H), "counted while told to go");
}

/// An AppendChunk that finds no such file answers once what it found is durable: a deletion
/// still in the log's group commit may yet be lost with the master, and the file come back.
/// (Its decision peeks at the namespace without waiting; only an answer made of what it saw
/// waits.)
#[tokio::test(start_paused = true)]
async fn no_such_file_is_answered_only_once_the_deletion_is_durable() {
    use crate::metastore::MetaConfig;
    use crate::record::{CreateOp, DeleteOp, Op};
    let sim = gfs_util::disk::sim::SimDisk::new(5);
    sim.set_latency(Duration::from_millis(10));
    let meta = Arc::new(
        MetaStore::open_on(
            sim.shared(),
            "/m",
            MetaConfig {
                checkpoint_every: 1000,
            },
        )
        .unwrap(),
    );
    meta.mutate(Op::Create(CreateOp {
        path: "/g".into(),
        mtime_ms: 0,
        replication: 3,
    }))
    .await
    .unwrap();
    let m = ChunkManager::new(
        Arc::clone(&meta),
        Arc::new(Mutex::new(Registry::new(Duration::from_millis(50)))),
        super::tests::test_config(),
        Arc::new(FakeCluster::default()) as Arc<dyn ChunkserverControl>,
    );
    let before = meta.durable_seq();
    let deleting = tokio::spawn({
        let meta = Arc::clone(&meta);
        async move {
            meta.mutate(Op::Delete(DeleteOp {
                path: "/g".into(),
                mtime_ms: 0,
                recursive: false,
            }))
            .await
        }
    });
    while meta.peek(|ns| ns.chunks_of("/g").is_ok()) {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        meta.durable_seq(),
        before,
        "the deletion is durable already"
    );
    let e = m.append_chunk("/g").await.unwrap_err();
    assert!(matches!(e, MasterError::NotFound(_)), "{e}");
    assert!(
        meta.durable_seq() > before,
        "no such file was answered before the deletion was durable"
    );
    deleting.await.unwrap().unwrap();
}

/// A new file `path` as a client's create makes it.
fn new_file(path: &str) -> crate::record::CreateOp {
    crate::record::CreateOp {
        path: path.into(),
        mtime_ms: 1,
        replication: 3,
    }
}

/// A file made with its first chunk (issue 17: a small file's create and its chunk in one
/// log write): one record holds both; the chunk is on every server it was placed on at
/// version 1, its first lease granted to the server the log names, and appends go on under
/// it. A name taken is refused before any chunk is made.
#[tokio::test]
async fn a_file_made_with_its_first_chunk_is_one_record_and_its_chunk_is_leased() {
    let c = cluster(&["a", "b", "c"], &[], None).await;
    let before = c.meta.durable_seq();
    let lease = c.m.create_with_chunk(new_file("/g")).await.unwrap();
    let lease = lease.expect("the first chunk's lease");
    assert_eq!(c.meta.durable_seq(), before + 1, "one record");
    let h = lease.handle;
    let (chunks, logged, named) = c
        .meta
        .read(move |ns| {
            (
                ns.chunks_of("/g").unwrap().to_vec(),
                ns.chunk(h).unwrap(),
                ns.last_primary(h).map(str::to_string),
            )
        })
        .await
        .unwrap();
    assert_eq!(chunks, [h]);
    assert_eq!(
        (logged.version, logged.sealed_length, logged.last_leased()),
        (1, None, Some(1))
    );
    let primary = lease.primary.as_ref().unwrap().id.clone();
    assert_eq!(named.as_deref(), Some(primary.as_str()));
    assert_eq!((lease.index, lease.file_offset, lease.version), (0, 0, 1));
    for id in ["a", "b", "c"] {
        assert_eq!(c.fake.replica(id, h), Some(held(1, 0)), "{id}");
    }
    let granted: Vec<String> = c
        .fake
        .leases()
        .into_iter()
        .filter(|(_, g)| g.handle == h)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(granted, [primary]);
    assert_eq!(c.m.append_chunk("/g").await.unwrap().handle, h);
    let creates: usize = ["a", "b", "c"]
        .iter()
        .map(|id| c.fake.calls(id, Call::Create))
        .sum();
    let taken = c.m.create_with_chunk(new_file("/g")).await.unwrap_err();
    assert!(matches!(taken, MasterError::AlreadyExists(_)), "{taken:?}");
    let missing = c.m.create_with_chunk(new_file("/no/g")).await.unwrap_err();
    assert!(matches!(missing, MasterError::NotFound(_)), "{missing:?}");
    let after: usize = ["a", "b", "c"]
        .iter()
        .map(|id| c.fake.calls(id, Call::Create))
        .sum();
    assert_eq!(after, creates, "no chunk made for a refused name");
}

/// A file asked with its first chunk when too few servers can make one is made alone, as by
/// a plain create; when the chunk is made and logged but its lease is not granted, the file
/// and its chunk stay. Either way no lease comes back, and the writer's `AppendChunk` gets
/// one once the servers are back.
#[tokio::test]
async fn a_file_whose_first_chunk_cannot_be_made_or_leased_is_made_and_leased_later() {
    let c = cluster(&["a", "b", "c"], &[], None).await;
    for id in ["b", "c"] {
        c.fake.set_down(id, true);
    }
    assert_eq!(c.m.create_with_chunk(new_file("/g")).await.unwrap(), None);
    let chunks = c
        .meta
        .read(|ns| ns.chunks_of("/g").map(<[u64]>::len))
        .await
        .unwrap();
    assert_eq!(chunks.unwrap(), 0, "made alone");
    for id in ["b", "c"] {
        c.fake.set_down(id, false);
    }
    for id in ["a", "b", "c"] {
        c.fake.fail(id, Call::Grant);
    }
    assert_eq!(c.m.create_with_chunk(new_file("/h")).await.unwrap(), None);
    let made = c
        .meta
        .read(|ns| ns.chunks_of("/h").map(<[u64]>::to_vec))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(made.len(), 1, "the file and its chunk stay");
    for id in ["a", "b", "c"] {
        c.fake.heal(id);
    }
    for path in ["/g", "/h"] {
        let lease = c.m.append_chunk(path).await.unwrap();
        assert_eq!(lease.index, 0, "{path}");
        if path == "/h" {
            assert_eq!(lease.handle, made[0]);
        }
    }
}
