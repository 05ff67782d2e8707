//! Dead replicas and a crashing primary.

use std::time::{Duration, Instant};

use gfs_dataplane::DataError;

use gfs_dataplane::ChunkRef;
use gfs_testkit::fixture::{Cluster, append, record};

#[tokio::test]
async fn a_killed_secondary_lags_and_appends_continue() {
    let mut cluster = Cluster::start(3, |_| vec![]);
    let h = 11;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let mut end = 0;
    for i in 0..5 {
        end += append(&c, &ChunkRef::untokened(h, 1), i, &record(1, i))
            .await
            .map(|_| record(1, i).len() as u64)
            .unwrap();
    }
    let dead = cluster.servers[2].repl.clone();
    cluster.servers[2].kill();
    for i in 5..15 {
        let data = record(1, i);
        let off = append(&c, &ChunkRef::untokened(h, 1), i, &data)
            .await
            .unwrap();
        assert_eq!(off, end);
        end += data.len() as u64;
    }
    for i in 0..2 {
        cluster.wait_committed(i, h, end).await;
    }
    let report = cluster.report(0).await;
    assert!(
        report
            .lagging
            .iter()
            .any(|l| l.handle == h && l.address == dead),
        "the dead secondary is not reported lagging: {:?}",
        report.lagging
    );
}

/// Appends to chunk 12 on servers appending with `args`, then both secondaries die and op 99
/// ("lost") is appended: the cluster, the client, the length before op 99, and its outcome
/// (which must come within 10 s).
async fn an_append_without_a_quorum(
    args: &[&str],
) -> (
    Cluster,
    gfs_dataplane::DataClient,
    u64,
    Result<u64, DataError>,
) {
    let mut cluster = Cluster::start_with_args(3, args);
    let h = 12;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let mut end = 0;
    for i in 0..5 {
        end += record(2, i).len() as u64;
        append(&c, &ChunkRef::untokened(h, 1), i, &record(2, i))
            .await
            .unwrap();
    }
    cluster.servers[1].kill();
    cluster.servers[2].kill();
    let start = Instant::now();
    let got = c
        .append(
            &ChunkRef::untokened(h, 1),
            99,
            bytes::Bytes::from_static(b"lost"),
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    (cluster, c, end, got)
}

#[tokio::test]
async fn without_a_quorum_appends_fail_fast_and_nothing_is_lost() {
    let (cluster, c, end, got) = an_append_without_a_quorum(TWO_ROUNDS).await;
    assert!(
        matches!(got, Err(DataError::QuorumNotReached { got: 1, need: 2 })),
        "{got:?}"
    );
    // Nothing half-done: the primary neither committed the failed append nor lost the others.
    assert_eq!(cluster.committed(0, 12).await, end);
    let all = c
        .read(&ChunkRef::untokened(12, 1), 0, end as u32 + 100)
        .await
        .unwrap();
    assert_eq!(all.len() as u64, end);
}

/// In one round the primary commits beside its WRITEs, so the failed append stays on its disk
/// (its offset is never handed out again), and no reader is shown it: no quorum holds it.
#[tokio::test]
async fn without_a_quorum_a_one_round_append_fails_fast_and_is_shown_to_no_one() {
    let (cluster, c, end, got) = an_append_without_a_quorum(ONE_ROUND).await;
    assert!(
        matches!(got, Err(DataError::QuorumNotReached { got: 1, need: 2 })),
        "{got:?}"
    );
    assert_eq!(cluster.committed(0, 12).await, end + 4);
    let all = c
        .read(&ChunkRef::untokened(12, 1), 0, end as u32 + 100)
        .await
        .unwrap();
    assert_eq!(all.len() as u64, end);
}

#[tokio::test]
async fn a_primary_crash_between_ready_and_commit_never_exposes_the_append() {
    let mut cluster = Cluster::start_with_args(3, TWO_ROUNDS);
    let h = 13;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let mut end = 0;
    for i in 0..4 {
        end += record(3, i).len() as u64;
        append(&c, &ChunkRef::untokened(h, 1), i, &record(3, i))
            .await
            .unwrap();
    }
    for i in 0..3 {
        cluster.wait_committed(i, h, end).await;
    }
    // The primary dies after every replica is READY and before any COMMIT.
    cluster.servers[0].restart_with(
        &[("GFS_FAILPOINTS", "primary-crash-after-ready")],
        TWO_ROUNDS,
    );
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let got = c
        .append(
            &ChunkRef::untokened(h, 1),
            50,
            bytes::Bytes::from_static(b"never committed"),
        )
        .await;
    assert!(got.is_err(), "the append was acknowledged: {got:?}");
    assert!(
        cluster.servers[0].wait_exit(Duration::from_secs(10)),
        "the failpoint did not fire"
    );
    for i in 1..3 {
        assert_eq!(
            cluster.committed(i, h).await,
            end,
            "replica {i} committed the staged append"
        );
        let r = cluster
            .client(i)
            .await
            .read(&ChunkRef::untokened(h, 1), end, 100)
            .await
            .unwrap();
        assert!(r.is_empty(), "replica {i} served uncommitted bytes");
    }
    // Back up (the master would bump the version, dropping the staged append everywhere).
    cluster.servers[0].restart_with(&[], TWO_ROUNDS);
    assert_eq!(cluster.committed(0, h).await, end);
    cluster.set_version(&[0, 1, 2], h, 2).await;
    assert_eq!(cluster.grant(0, h, 2).await, end);
    let c = cluster.client(0).await;
    let off = append(&c, &ChunkRef::untokened(h, 2), 51, b"after restart")
        .await
        .unwrap();
    assert_eq!(off, end, "offsets must continue from the committed length");
    for i in 0..3 {
        cluster.wait_committed(i, h, end + 13).await;
        let first = cluster
            .client(i)
            .await
            .read(&ChunkRef::untokened(h, 2), 0, record(3, 0).len() as u32)
            .await
            .unwrap();
        assert_eq!(
            &first[..],
            &record(3, 0)[..],
            "replica {i} lost committed data"
        );
    }
}

/// The arguments of a server that appends in two rounds (PREPARE, then COMMIT): the default,
/// named where a test relies on it.
const TWO_ROUNDS: &[&str] = &["--one-round", "false"];
/// The arguments of a server that appends in one round (WRITE).
const ONE_ROUND: &[&str] = &["--one-round", "true"];

#[tokio::test]
async fn a_primary_crash_after_its_writes_shows_nothing_and_the_retry_lands_once() {
    let mut cluster = Cluster::start_with_args(3, ONE_ROUND);
    let h = 15;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let mut end = 0;
    for i in 0..4 {
        end += record(5, i).len() as u64;
        append(&c, &ChunkRef::untokened(h, 1), i, &record(5, i))
            .await
            .unwrap();
    }
    for i in 0..3 {
        cluster.wait_committed(i, h, end).await;
    }
    // cs2 is down, so the append reaches a quorum (cs0 and cs1) only; the primary dies once
    // both are durable, before it answers or tells cs1 the watermark.
    cluster.servers[2].kill();
    cluster.servers[0].restart_with(
        &[("GFS_FAILPOINTS", "primary-crash-after-write")],
        ONE_ROUND,
    );
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let late = bytes::Bytes::from_static(b"written, unsaid");
    let got = c.append(&ChunkRef::untokened(h, 1), 50, late.clone()).await;
    assert!(got.is_err(), "the append was acknowledged: {got:?}");
    assert!(
        cluster.servers[0].wait_exit(Duration::from_secs(10)),
        "the failpoint did not fire"
    );
    let tail = end + late.len() as u64;
    assert_eq!(cluster.committed(1, h).await, tail, "cs1 did not commit it");
    let r = cluster
        .client(1)
        .await
        .read(&ChunkRef::untokened(h, 1), end, 100)
        .await
        .unwrap();
    assert!(
        r.is_empty(),
        "cs1 showed bytes no one told it a quorum holds"
    );
    // Back up; the next lease (as the master decides it: every replica fenced, the longest
    // leads) goes to cs1. The writer's retry of op 50 lands once, at its first offset, and
    // the WRITE sends its bytes again to cs2, which never had them.
    cluster.servers[0].restart(&[]);
    cluster.servers[2].restart(&[]);
    assert_eq!(cluster.committed(0, h).await, tail);
    assert_eq!(cluster.committed(2, h).await, end);
    cluster.set_version(&[0, 1, 2], h, 2).await;
    assert_eq!(cluster.grant(1, h, 2).await, tail);
    let c = cluster.client(1).await;
    let off = append(&c, &ChunkRef::untokened(h, 2), 50, &late)
        .await
        .unwrap();
    assert_eq!(off, end, "the retry did not find its first attempt");
    let next = append(&c, &ChunkRef::untokened(h, 2), 51, b"next")
        .await
        .unwrap();
    assert_eq!(next, tail, "the retry took a second place");
    for i in 0..3 {
        cluster.wait_committed(i, h, tail + 4).await;
    }
    let mut copies = Vec::new();
    for i in 0..3 {
        // Every replica is current now: its whole length, once the watermark reached it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = cluster
                .client(i)
                .await
                .read(&ChunkRef::untokened(h, 2), 0, (tail + 4) as u32)
                .await
                .unwrap();
            if r.len() as u64 == tail + 4 || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        copies.push(r);
    }
    assert_eq!(&copies[1][end as usize..tail as usize], &late[..]);
    assert_eq!(copies[0], copies[1], "cs0 and cs1 differ");
    assert_eq!(copies[2], copies[1], "cs2 and cs1 differ");
}

// Multi-threaded: `terminate` blocks, and the test's own gRPC connections must still answer
// the servers' GOAWAY meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_busy_servers_cleanly_and_keeps_their_data() {
    let mut cluster = Cluster::start(3, |_| vec![]);
    let h = 14;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let mut end = 0;
    for i in 0..10 {
        end += record(4, i).len() as u64;
        append(&c, &ChunkRef::untokened(h, 1), i, &record(4, i))
            .await
            .unwrap();
    }
    for i in 0..3 {
        cluster.wait_committed(i, h, end).await;
    }
    // Secondaries first: their replication sessions from the live primary must not hold them.
    for i in [2, 1, 0] {
        let status = cluster.servers[i].terminate(Duration::from_secs(8));
        assert!(
            status.is_some_and(|s| s.success()),
            "server {i} did not stop cleanly: {status:?}"
        );
    }
    for i in 0..3 {
        cluster.servers[i].restart(&[]);
        assert_eq!(cluster.committed(i, h).await, end, "server {i} lost data");
    }
}

/// Finding 2: both secondaries lose the COMMITs of four appends (READY, then the message is
/// gone), so only the primary holds them. The seal that follows must not leave them on the
/// primary alone: the primary sends the short secondaries what they missed and seals them
/// first, so every replica ends sealed at one length with the same bytes, and the retried
/// appends are then answered with their offsets.
#[tokio::test]
async fn a_seal_first_gives_short_secondaries_the_appends_they_missed() {
    let cluster = Cluster::start(3, |i| {
        if i == 0 {
            vec![]
        } else {
            vec![("GFS_FAILPOINTS", "commit-lost:100:4")]
        }
    });
    let h = 16;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let rec = |i: u8| bytes::Bytes::from(vec![i; 260_000]);
    for i in 1..=4u8 {
        let got = c
            .append(&ChunkRef::untokened(h, 1), u64::from(i), rec(i))
            .await;
        assert!(
            matches!(got, Err(DataError::QuorumNotReached { got: 1, need: 2 })),
            "append {i}: {got:?}"
        );
    }
    assert_eq!(cluster.committed(0, h).await, 1_040_000);
    // Does not fit: the chunk is sealed at the primary's 1,040,000 bytes.
    let got = c
        .append(
            &ChunkRef::untokened(h, 1),
            5,
            bytes::Bytes::from(vec![5u8; 10_000]),
        )
        .await;
    assert!(
        matches!(got, Err(DataError::ChunkFull { .. })),
        "the sealing append: {got:?}"
    );
    for i in 1..=4u8 {
        let off = append(&c, &ChunkRef::untokened(h, 1), u64::from(i), &rec(i))
            .await
            .unwrap();
        assert_eq!(off, u64::from(i - 1) * 260_000, "retry of append {i}");
    }
    // Whole, in reads of at most a quarter chunk.
    async fn read_all(c: &gfs_dataplane::DataClient, h: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = c
                .read(&ChunkRef::untokened(h, 1), out.len() as u64, 1 << 18)
                .await
                .unwrap();
            if piece.is_empty() {
                return out;
            }
            out.extend_from_slice(&piece);
        }
    }
    let primary = read_all(&c, h).await;
    assert_eq!(primary.len(), 1_040_000);
    for i in 0..3 {
        let r = cluster.report(i).await;
        let chunk = r.chunks.iter().find(|x| x.handle == h).unwrap();
        assert_eq!(
            (chunk.committed_length, chunk.sealed),
            (1_040_000, true),
            "replica {i}"
        );
        let bytes = read_all(&cluster.client(i).await, h).await;
        assert!(bytes == primary, "replica {i} holds other bytes");
    }
}

/// Finding 12: bytes the primary committed alone (both secondaries lost the COMMITs, so the
/// writers were told the appends failed) are not served by the primary, nor counted in the
/// length it reports, until a quorum holds them: a later lease could replace them.
#[tokio::test]
async fn the_primary_serves_only_what_a_quorum_holds() {
    let cluster = Cluster::start(3, |i| {
        if i == 0 {
            vec![]
        } else {
            vec![("GFS_FAILPOINTS", "commit-lost:100:2")]
        }
    });
    let h = 17;
    cluster.create(h, 1).await;
    cluster.grant(0, h, 1).await;
    let c = cluster.client(0).await;
    let rec = |i: u8| bytes::Bytes::from(vec![i; 1000]);
    for i in 1..=2u8 {
        let got = c
            .append(&ChunkRef::untokened(h, 1), u64::from(i), rec(i))
            .await;
        assert!(
            matches!(got, Err(DataError::QuorumNotReached { got: 1, need: 2 })),
            "append {i}: {got:?}"
        );
    }
    assert_eq!(
        cluster.committed(0, h).await,
        2000,
        "committed on the primary"
    );
    let probe = c.read(&ChunkRef::untokened(h, 1), u64::MAX, 0).await;
    assert!(
        matches!(probe, Err(DataError::OutOfRange { committed: 0, .. })),
        "the primary reports a length a quorum does not hold: {probe:?}"
    );
    let seen = c.read(&ChunkRef::untokened(h, 1), 0, 4000).await.unwrap();
    assert!(seen.is_empty(), "the primary served {} bytes", seen.len());
    // The retries reach the secondaries: now a quorum holds both, and they are served.
    for i in 1..=2u8 {
        let off = append(&c, &ChunkRef::untokened(h, 1), u64::from(i), &rec(i))
            .await
            .unwrap();
        assert_eq!(off, u64::from(i - 1) * 1000);
    }
    let probe = c.read(&ChunkRef::untokened(h, 1), u64::MAX, 0).await;
    assert!(
        matches!(
            probe,
            Err(DataError::OutOfRange {
                committed: 2000,
                ..
            })
        ),
        "{probe:?}"
    );
    assert_eq!(
        c.read(&ChunkRef::untokened(h, 1), 0, 4000)
            .await
            .unwrap()
            .len(),
        2000
    );
}
