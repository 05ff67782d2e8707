//! Unit tests of the chunk manager.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use gfs_proto::v1::{ChunkDelete, GetChunksReply};

use crate::wire::fsck_reply;
use parking_lot::Mutex;

use super::alloc::length_quorum;
use super::gc::MAX_DELETES_PER_REPLY;
use super::lease::{Granted, Position};
use super::*;
use crate::metastore::{MetaConfig, MetaStore};
use crate::record::{AddChunkOp, CreateOp, Op, SealOp};
use crate::registry::{ChunkSet, Registry, Replica, ServerInfo, Want};

#[test]
fn readers_of_an_unsealed_chunk_hear_enough_replicas_to_meet_every_quorum() {
    // 2 of 3: any 2 replicas include one of every 2 that hold an append.
    assert_eq!(length_quorum(3, 2, 3), 2);
    assert_eq!(length_quorum(3, 2, 1), 2);
    // An extra replica listed widens the set a quorum may sit in.
    assert_eq!(length_quorum(3, 2, 4), 3);
    // Every replica needed to append: any one has it all.
    assert_eq!(length_quorum(3, 3, 3), 1);
    assert_eq!(length_quorum(1, 1, 1), 1);
    // One needed to append: every replica must be heard.
    assert_eq!(length_quorum(3, 1, 2), 3);
}

#[tokio::test]
async fn an_extra_replica_is_dropped_once_even_as_shares_change() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, registry) = one_chunk(dir.path(), None, &[]).await;
    let now = Instant::now();
    let r = Replica {
        handle: 7,
        version: 1,
        length: 10,
        sealed: true,
    };
    // Four holders (a rebalancing copy landed on d); a uses the largest share.
    for (id, used) in [("a", 50), ("b", 10), ("c", 10), ("d", 40)] {
        let mut reg = registry.lock();
        reg.register(
            ServerInfo {
                id: id.into(),
                data_addr: format!("{id}:0"),
                repl_addr: format!("{id}:1"),
                rack: String::new(),
                capacity_bytes: 100,
                used_bytes: used,
            },
            now,
        );
        reg.heartbeat_with(id, used, vec![r], false, now);
    }
    assert_eq!(m.to_delete("b", &[r]).await.unwrap(), vec![]);
    assert_eq!(m.to_delete("a", &[r]).await.unwrap().len(), 1);
    // Before a reports again, d's share grows past a's: d keeps its replica, so three
    // remain.
    registry.lock().heartbeat_with("d", 90, vec![r], false, now);
    assert_eq!(m.to_delete("d", &[r]).await.unwrap(), vec![]);
    assert_eq!(registry.lock().locations(7, 1).len(), 3);
}

/// A fresh log in `dir` holding file `/f` with chunk 7 at version 1 (its first lease logged
/// to `primary`; sealed at `sealed` if given).
pub(super) async fn log_of_one_chunk(
    dir: &std::path::Path,
    sealed: Option<u64>,
    primary: &str,
) -> Arc<MetaStore> {
    #![allow(clippy::unwrap_used)]
    let meta = Arc::new(
        MetaStore::open(
            dir,
            MetaConfig {
                checkpoint_every: 1000,
            },
        )
        .unwrap(),
    );
    meta.mutate(Op::Create(CreateOp {
        path: "/f".into(),
        mtime_ms: 0,
        replication: 3,
    }))
    .await
    .unwrap();
    meta.mutate(Op::AddChunk(AddChunkOp {
        path: "/f".into(),
        handle: 7,
        version: 1,
        primary: primary.into(),
        uncreated: Vec::new(),
        placed: 0,
    }))
    .await
    .unwrap();
    if let Some(length) = sealed {
        meta.mutate(Op::Seal(SealOp { handle: 7, length }))
            .await
            .unwrap();
    }
    meta
}

/// The chunk settings of the unit tests: 1 MiB chunks, 3 replicas, quorum 2, 60 s leases.
pub(super) fn test_config() -> ChunkConfig {
    ChunkConfig {
        chunk_size: 1 << 20,
        replication: 3,
        quorum: 2,
        lease: Duration::from_secs(60),
        rpc_timeout: Duration::from_secs(5),
        orphan_grace: Duration::from_secs(600),
        max_clones: 8,
        clone_timeout: Duration::from_secs(300),
        rebalance_threshold: 0.1,
        clock: gfs_util::time::Clock::system(),
        insecure: true,
    }
}

/// A manager over [`log_of_one_chunk`] (no logged primary) and a registry with servers `ids`.
async fn one_chunk(
    dir: &std::path::Path,
    sealed: Option<u64>,
    ids: &[&str],
) -> (ChunkManager, Arc<Mutex<Registry>>) {
    #![allow(clippy::unwrap_used)]
    let meta = log_of_one_chunk(dir, sealed, "").await;
    let registry = Arc::new(Mutex::new(Registry::new(Duration::from_secs(60))));
    for id in ids {
        registry.lock().register(
            ServerInfo {
                id: (*id).into(),
                data_addr: format!("{id}:0"),
                repl_addr: format!("{id}:1"),
                rack: String::new(),
                capacity_bytes: 100,
                used_bytes: 10,
            },
            Instant::now(),
        );
    }
    let m = ChunkManager::new(
        meta,
        Arc::clone(&registry),
        test_config(),
        Arc::new(super::fake::FakeCluster::default()),
    );
    (m, registry)
}

/// I1: a replica at the chunk's version that ends short of the sealed length is not a
/// current replica (not listed, not counted), and goes once three current ones live
/// elsewhere; its delete spares it if it reached the sealed length since its report.
#[tokio::test]
async fn a_replica_short_of_the_sealed_length_is_stale_not_current() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, registry) = one_chunk(dir.path(), Some(10), &["a", "b", "c", "d"]).await;
    let full = Replica {
        handle: 7,
        version: 1,
        length: 10,
        sealed: true,
    };
    let short = Replica {
        length: 6,
        sealed: false,
        ..full
    };
    let now = Instant::now();
    for id in ["a", "b", "c"] {
        registry
            .lock()
            .heartbeat_with(id, 10, vec![full], false, now);
    }
    registry
        .lock()
        .heartbeat_with("d", 10, vec![short], false, now);
    let want = Want {
        version: 1,
        sealed: Some(10),
    };
    let listed: Vec<String> = registry
        .lock()
        .locations(7, want)
        .into_iter()
        .map(|(s, _)| s.id)
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.contains(&"d".to_string()));
    let h = registry.lock().health(7, want);
    assert_eq!((h.current, h.stale), (3, 1));
    assert_eq!(
        m.to_delete("d", &[short]).await.unwrap(),
        vec![ChunkDelete {
            handle: 7,
            below_version: 2,
            unless_length: Some(10),
        }]
    );
    assert_eq!(m.to_delete("a", &[full]).await.unwrap(), vec![]);
}

/// A replica of a sealed chunk left ahead of the log (a fence that reached fewer than a
/// quorum: no decision fences a sealed chunk again) is deleted once the goal's worth of current
/// replicas lives elsewhere, and kept while it does not (found by gfs-sim, seeds 23 and 1411).
#[tokio::test]
async fn a_replica_of_a_sealed_chunk_ahead_of_the_log_goes_once_the_goal_lives_elsewhere() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, registry) = one_chunk(dir.path(), Some(10), &["a", "b", "c", "d"]).await;
    let current = Replica {
        handle: 7,
        version: 1,
        length: 10,
        sealed: true,
    };
    let ahead = Replica {
        version: 2,
        ..current
    };
    let now = Instant::now();
    for id in ["a", "b"] {
        registry
            .lock()
            .heartbeat_with(id, 10, vec![current], false, now);
    }
    registry
        .lock()
        .heartbeat_with("d", 10, vec![ahead], false, now);
    // Two current replicas elsewhere, a goal of three: d's copy stays.
    assert_eq!(m.to_delete("d", &[ahead]).await.unwrap(), vec![]);
    registry
        .lock()
        .heartbeat_with("c", 10, vec![current], false, now);
    assert_eq!(
        m.to_delete("d", &[ahead]).await.unwrap(),
        vec![ChunkDelete {
            handle: 7,
            below_version: 3,
            unless_length: None,
        }]
    );
    assert_eq!(m.to_delete("a", &[current]).await.unwrap(), vec![]);
}

/// Finding 11: lagging reports count against the version they were made at, a replica
/// at that address after a bump is good again, and a report whose relegation failed is
/// news again the next time it comes (so the relegation is retried).
#[tokio::test]
async fn lagging_reports_are_per_version_and_retried_after_a_failed_relegation() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, registry) = one_chunk(dir.path(), None, &["a", "b", "c"]).await;
    let at = |v: u64| Replica {
        handle: 7,
        version: v,
        length: 10,
        sealed: false,
    };
    let now = Instant::now();
    for id in ["a", "b", "c"] {
        registry
            .lock()
            .heartbeat_with(id, 10, vec![at(1)], false, now);
    }
    let live = registry.lock().live();
    let info = |id: &str| live.iter().find(|s| s.id == id).unwrap().clone();
    m.lease.table.lock().insert(
        7,
        Granted {
            version: 1,
            primary: info("a"),
            secondaries: vec![info("b"), info("c")],
            expires: SystemTime::now() + Duration::from_secs(60),
            at: Position {
                index: 0,
                file_offset: 0,
            },
            doomed: false,
        },
    );
    let good = |m: &ChunkManager, v: u64| -> Vec<String> {
        let mut ids: Vec<String> = m.good_replicas(7, v).into_iter().map(|s| s.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(m.note_lagging([(7, "c:1".to_string())]), vec![7]);
    assert_eq!(m.note_lagging([(7, "c:1".to_string())]), Vec::<u64>::new());
    assert_eq!(good(&m, 1), ["a", "b"]);
    m.relegation_failed(7);
    assert_eq!(m.note_lagging([(7, "c:1".to_string())]), vec![7]);
    // A bump to version 2 happened (a fresh copy landed on c at it): c is good at 2.
    m.lease.table.lock().get_mut(&7).unwrap().version = 2;
    for id in ["a", "b", "c"] {
        registry
            .lock()
            .heartbeat_with(id, 10, vec![at(2)], false, now);
    }
    assert_eq!(good(&m, 2), ["a", "b", "c"]);
    // A report of a chunk with no lease known here is ignored.
    assert_eq!(m.note_lagging([(8, "c:1".to_string())]), Vec::<u64>::new());
}

/// Finding 9: however many replicas a server should drop, one heartbeat reply names at
/// most `MAX_DELETES_PER_REPLY` of them.
#[tokio::test]
async fn one_heartbeat_reply_carries_a_bounded_number_of_deletes() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
    let handles: Vec<u64> = (1000..4000).collect();
    m.purged(&handles);
    let report: Vec<Replica> = handles
        .iter()
        .map(|&handle| Replica {
            handle,
            version: 1,
            length: 0,
            sealed: false,
        })
        .collect();
    assert_eq!(
        m.to_delete("a", &report).await.unwrap().len(),
        MAX_DELETES_PER_REPLY
    );
}

/// The review's "other observation": forgetting the unknown replicas a server no longer
/// reports was O(unknown x report) under a mutex, quadratic after a metadata loss (every
/// replica unknown). 200,000 unknown replicas reported twice: linear time.
#[tokio::test]
async fn a_report_of_many_unknown_replicas_is_checked_in_linear_time() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
    let report: Vec<Replica> = (1_000_000..1_200_000)
        .map(|handle| Replica {
            handle,
            version: 1,
            length: 0,
            sealed: false,
        })
        .collect();
    let reported: ChunkSet = report.iter().map(|r| r.handle).collect();
    // The first report notes them all as unknown; the second is the costly one.
    assert!(m.to_delete("a", &report).await.unwrap().is_empty());
    m.forget_unreported("a", &reported);
    let t = Instant::now();
    assert!(m.to_delete("a", &report).await.unwrap().is_empty());
    m.forget_unreported("a", &reported);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Finding 8: a file of 30,000 chunks at three replicas lists in about 5.5 MB, past
/// tonic's default 4 MiB. GetChunks pages it: 10,000 chunks a page by default, within
/// `PAGE_BYTES`, each chunk at its index and file offset (the sum of the sealed lengths
/// of every earlier chunk, earlier pages' included), `more` and `next_index` to go on.
#[tokio::test]
async fn get_chunks_pages_a_file_of_30_000_chunks_with_offsets_right() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    // Names as long as real ones (host names in the addresses).
    let ids = [
        "cs-a.rack-1.example.net",
        "cs-b.rack-2.example.net",
        "cs-c.rack-3.example.net",
    ];
    let (m, registry) = one_chunk(dir.path(), Some(3), &ids).await;
    const N: u64 = 30_000;
    // Chunk 7 is the first; then 8.. in order, all sealed at lengths that vary but the last.
    let adds = (1..N).map(|i| {
        m.meta.mutate(Op::AddChunk(AddChunkOp {
            path: "/f".into(),
            handle: 7 + i,
            version: 1,
            primary: String::new(),
            uncreated: Vec::new(),
            placed: 0,
        }))
    });
    futures::future::try_join_all(adds).await.unwrap();
    let seals = (1..N - 1).map(|i| {
        m.meta.mutate(Op::Seal(SealOp {
            handle: 7 + i,
            length: 1000 + i,
        }))
    });
    futures::future::try_join_all(seals).await.unwrap();
    let sealed = |i: u64| match i {
        0 => Some(3),
        i if i < N - 1 => Some(1000 + i),
        _ => None,
    };
    let report: Vec<Replica> = (0..N)
        .map(|i| Replica {
            handle: 7 + i,
            version: 1,
            length: sealed(i).unwrap_or(5),
            sealed: sealed(i).is_some(),
        })
        .collect();
    for id in ids {
        registry
            .lock()
            .heartbeat_with(id, 10, report.clone(), false, Instant::now());
    }

    let mut all = Vec::new();
    let mut next = 0;
    let mut pages = 0;
    loop {
        let mut r = m.get_chunks("/f", next, 0).await.unwrap();
        // Within the page once the service has stamped a token of the longest kind on each.
        for c in &mut r.chunks {
            c.token = vec![0u8; gfs_host::token::MAX_TOKEN_LEN].into();
        }
        assert!(prost::Message::encoded_len(&r) <= gfs_proto::PAGE_BYTES);
        assert!(r.chunks.len() <= GET_CHUNKS_PAGE);
        assert_eq!(r.next_index, next + r.chunks.len() as u64);
        pages += 1;
        all.extend(r.chunks);
        next = r.next_index;
        if !r.more {
            break;
        }
    }
    // 30,000 chunks of ~400 encoded bytes each (token room included): four pages of 4 MiB.
    assert_eq!(pages, 4);
    let whole = GetChunksReply {
        chunks: all.clone(),
        ..GetChunksReply::default()
    };
    assert!(prost::Message::encoded_len(&whole) > 4 << 20);
    let mut offset = 0;
    for (i, c) in all.iter().enumerate() {
        let i = i as u64;
        assert_eq!((c.index, c.handle), (i, 7 + i));
        assert_eq!(c.sealed_length, sealed(i));
        assert_eq!(c.file_offset, offset, "chunk {i}");
        assert_eq!(c.replicas.len(), 3);
        offset += sealed(i).unwrap_or(0);
    }
    assert_eq!(all.len() as u64, N);

    // A small page from the middle, the end, and past the end.
    let r = m.get_chunks("/f", 12_345, 2).await.unwrap();
    let starts: Vec<(u64, u64)> = r.chunks.iter().map(|c| (c.index, c.file_offset)).collect();
    let want: Vec<(u64, u64)> = all[12_345..12_347]
        .iter()
        .map(|c| (c.index, c.file_offset))
        .collect();
    assert_eq!(starts, want);
    assert!(r.more);
    assert_eq!(r.next_index, 12_347);
    let r = m.get_chunks("/f", N - 3, 7).await.unwrap();
    assert_eq!((r.chunks.len(), r.more, r.next_index), (3, false, N));
    let r = m.get_chunks("/f", N + 5, 0).await.unwrap();
    assert_eq!((r.chunks.len(), r.more, r.next_index), (0, false, N));
}

/// Finding 8: fsck of a large, badly degraded tree stays within its budget: unhealthy
/// files and their bad chunks are listed while they fit, the rest counted; the totals
/// cover everything.
#[tokio::test]
async fn fsck_lists_what_fits_and_counts_the_rest() {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    // No server reports anything: every chunk is lost.
    let (m, _registry) = one_chunk(dir.path(), None, &["a"]).await;
    let meta = Arc::clone(&m.meta);
    let mkdir = |path: String| meta.mutate(Op::Mkdir(crate::record::PathOp { path, mtime_ms: 0 }));
    mkdir("/d".into()).await.unwrap();
    let create = |path: String| {
        m.meta.mutate(Op::Create(CreateOp {
            path,
            mtime_ms: 0,
            replication: 3,
        }))
    };
    let add = |path: String, handle: u64| {
        m.meta.mutate(Op::AddChunk(AddChunkOp {
            path,
            handle,
            version: 1,
            primary: String::new(),
            uncreated: Vec::new(),
            placed: 0,
        }))
    };
    create("/d/many".into()).await.unwrap();
    futures::future::try_join_all((0..200).map(|i| add("/d/many".into(), 100 + i)))
        .await
        .unwrap();
    for i in 0..20u64 {
        create(format!("/d/x{i:02}")).await.unwrap();
        add(format!("/d/x{i:02}"), 1000 + i).await.unwrap();
    }

    let r = fsck_reply(m.fsck("/").await.unwrap(), 1000);
    assert!(prost::Message::encoded_len(&r) <= 1000);
    assert_eq!((r.files, r.chunks, r.unhealthy_files), (22, 221, 22));
    assert_eq!(r.unhealthy.len() as u64 + r.unlisted_files, 22);
    assert!(r.unlisted_files > 0);
    let many = &r.unhealthy[0];
    assert_eq!(many.path, "/d/many");
    assert_eq!(many.chunks.len() as u64 + many.unlisted_chunks, 200);
    assert!(many.unlisted_chunks > 0);
    // The whole budget lists everything.
    let r = fsck_reply(m.fsck("/").await.unwrap(), gfs_proto::PAGE_BYTES);
    assert_eq!((r.unhealthy.len(), r.unlisted_files), (22, 0));
    assert!(r.unhealthy.iter().all(|f| f.unlisted_chunks == 0));

    // 2,000 files with 3.8 KB paths, one lost chunk each: about 7.7 MB unlisted in full
    // (what the old reply was), past tonic's 4 MiB default.
    let mut deep = String::new();
    for level in 0..14 {
        deep += &format!("/{}", format!("{level:02}").repeat(125));
        mkdir(deep.clone()).await.unwrap();
    }
    let name = |i: u64| format!("{deep}/{i:04}{}", "n".repeat(240));
    futures::future::try_join_all((0..2000).map(|i| create(name(i))))
        .await
        .unwrap();
    futures::future::try_join_all((0..2000).map(|i| add(name(i), 10_000 + i)))
        .await
        .unwrap();
    let all = fsck_reply(m.fsck("/").await.unwrap(), usize::MAX);
    assert!(prost::Message::encoded_len(&all) > 7 << 20);
    let r = fsck_reply(m.fsck("/").await.unwrap(), gfs_proto::PAGE_BYTES);
    let len = prost::Message::encoded_len(&r);
    // Nearly full (the count is high by a few bytes an entry).
    assert!(
        len <= gfs_proto::PAGE_BYTES && len + (32 << 10) > gfs_proto::PAGE_BYTES,
        "{len}"
    );
    assert_eq!((r.files, r.unhealthy_files), (2022, 2022));
    assert!(r.unlisted_files > 0);
    assert_eq!(r.unhealthy.len() as u64 + r.unlisted_files, 2022);
}

#[test]
fn never_two_primaries_at_once() {
    let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let s = Duration::from_secs;
    assert_eq!(lease_decision(None, 3, false, t0), LeaseDecision::Grant);
    // A live primary with time left keeps its lease.
    assert_eq!(
        lease_decision(Some((3, t0 + s(30))), 3, true, t0),
        LeaseDecision::Reuse
    );
    // A dead (or partitioned) primary still holds its lease until it expires.
    assert_eq!(
        lease_decision(Some((3, t0 + s(30))), 3, false, t0),
        LeaseDecision::WaitUntil(t0 + s(30))
    );
    assert_eq!(
        lease_decision(Some((3, t0 + s(30))), 3, false, t0 + s(30)),
        LeaseDecision::Grant
    );
    // A lease about to lapse is waited out rather than handed out.
    assert_eq!(
        lease_decision(
            Some((3, t0 + s(30))),
            3,
            true,
            t0 + s(29) + Duration::from_millis(500)
        ),
        LeaseDecision::WaitUntil(t0 + s(30))
    );
    // A lease of an older version (the chunk moved on) blocks until it ends too.
    assert_eq!(
        lease_decision(Some((2, t0 + s(5))), 3, true, t0),
        LeaseDecision::WaitUntil(t0 + s(5))
    );
}
