//! Unit tests of the registry.

#![allow(clippy::unwrap_used)]

use super::*;

fn info(id: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        data_addr: format!("{id}:8080"),
        repl_addr: format!("{id}:8081"),
        rack: String::new(),
        capacity_bytes: 100,
        used_bytes: 0,
    }
}

/// A registry with servers `(id, rack, used bytes)` registered at `t0`.
fn with_servers(servers: &[(&str, &str, u64)], t0: Instant) -> Registry {
    let mut r = Registry::new(Duration::from_secs(10));
    for &(id, rack, used) in servers {
        r.register(
            ServerInfo {
                rack: rack.into(),
                used_bytes: used,
                ..info(id)
            },
            t0,
        );
    }
    r
}

fn replica(handle: u64, version: u64) -> Replica {
    Replica {
        handle,
        version,
        length: 10,
        sealed: false,
    }
}

#[test]
fn only_unsealed_prefixes_at_the_version_of_a_sealed_chunk_are_caught_up() {
    let t0 = Instant::now();
    let mut r = with_servers(
        &[("a", "", 0), ("b", "", 0), ("c", "", 0), ("d", "", 0)],
        t0,
    );
    let at = |version, length, sealed| Replica {
        handle: 7,
        version,
        length,
        sealed,
    };
    // a: current; b: short at the version; c: an older version; d: sealed short.
    r.heartbeat("a", 0, vec![at(3, 20, true)], t0);
    r.heartbeat("b", 0, vec![at(3, 10, false)], t0);
    r.heartbeat("c", 0, vec![at(2, 10, false)], t0);
    r.heartbeat("d", 0, vec![at(3, 10, true)], t0);
    let sealed = Want {
        version: 3,
        sealed: Some(20),
    };
    let ids = |v: Vec<ServerInfo>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(r.short_of(7, sealed)), vec!["b"]);
    // An unsealed chunk's length is not final: nothing to catch up to.
    assert!(r.short_of(7, Want::from(3)).is_empty());
}

#[test]
fn new_replicas_go_to_live_servers_without_one_and_to_new_racks_first() {
    let t0 = Instant::now();
    let mut r = with_servers(
        &[
            ("a", "r1", 0),
            ("b", "r1", 1),
            ("c", "r2", 50),
            ("d", "r1", 2),
        ],
        t0,
    );
    r.heartbeat("a", 0, vec![replica(7, 3)], t0);
    r.heartbeat("b", 1, vec![replica(7, 2)], t0);
    let versions: ChunkMap<Want> = [(7, Want::from(3))].into_iter().collect();
    let counts = r.holder_counts(&versions, &HashSet::default());
    assert_eq!(counts[&7], HolderCount { counted: 1, all: 1 });
    let draining: HashSet<String> = ["a".to_string()].into_iter().collect();
    assert_eq!(
        r.holder_counts(&versions, &draining)[&7],
        HolderCount { counted: 0, all: 1 }
    );
    let holders = r.holders_of(7, 3);
    assert_eq!(
        holders.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    // Not a (current) nor b (stale copy); c is on a rack a does not use, though fuller.
    let t = r.place_new(7, &holders, |_| false).unwrap();
    assert_eq!(t.id, "c");
    // c busy: the least used of the rest.
    let t = r.place_new(7, &holders, |id| id == "c").unwrap();
    assert_eq!(t.id, "d");
    // Dead servers take nothing.
    r.sweep(t0 + Duration::from_secs(11));
    assert!(r.place_new(7, &[], |_| false).is_none());
}

#[test]
fn heartbeats_keep_servers_alive_and_silence_kills_them() {
    let t0 = Instant::now();
    let mut r = Registry::new(Duration::from_secs(10));
    r.register(info("a"), t0);
    r.register(info("b"), t0);
    assert!(r.heartbeat("a", 5, vec![replica(1, 2)], t0 + Duration::from_secs(8)));
    assert!(r.sweep(t0 + Duration::from_secs(9)).is_empty());
    assert_eq!(r.sweep(t0 + Duration::from_secs(11)), vec!["b".to_string()]);
    assert!(r.is_alive("a") && !r.is_alive("b"));
    assert_eq!(r.sweep(t0 + Duration::from_secs(19)), vec!["a".to_string()]);
    assert!(r.live().is_empty());
    // A heartbeat brings it back; an unknown server is told to register.
    assert!(r.heartbeat("a", 5, vec![], t0 + Duration::from_secs(20)));
    assert!(r.is_alive("a"));
    assert!(!r.heartbeat("zzz", 0, vec![], t0));
}

#[test]
fn placement_prefers_empty_servers_and_new_racks() {
    let t0 = Instant::now();
    let r = with_servers(
        &[
            ("a", "r1", 10),
            ("b", "r1", 0),
            ("c", "r2", 50),
            ("d", "r3", 90),
        ],
        t0,
    );
    let ids = |v: Vec<ServerInfo>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(r.place(3)),
        ["b", "c", "d"],
        "one per rack, least used first"
    );
    assert_eq!(ids(r.place(4)), ["b", "c", "d", "a"]);
    assert_eq!(ids(r.place(9)).len(), 4);
}

/// Finding 8: a report in pieces. Each piece adds or updates; only a pass received whole
/// and in order drops what it did not name; a missed piece drops nothing.
#[test]
fn a_report_in_pieces_drops_replicas_only_after_a_whole_pass() {
    let t0 = Instant::now();
    let mut r = with_servers(&[("a", "", 0)], t0);
    let held = |r: &Registry| {
        let mut h: Vec<u64> = r.replicas_of("a").iter().map(|x| x.handle).collect();
        h.sort();
        h
    };
    let piece = |report_id, index, more| Piece {
        report_id,
        index,
        more,
    };
    let beat = |r: &mut Registry, handles: &[u64], p: Piece| {
        let report = handles.iter().map(|&h| replica(h, 1)).collect();
        r.heartbeat_piece("a", 0, report, p, false, t0)
    };
    assert!(r.heartbeat(
        "a",
        0,
        vec![replica(1, 1), replica(2, 1), replica(3, 1)],
        t0
    ));
    assert_eq!(held(&r), [1, 2, 3]);

    // Pass 10: replicas not yet heard stay; new ones count at once.
    let h = beat(&mut r, &[1], piece(10, 0, true));
    assert!(h.known && h.pass.is_none());
    beat(&mut r, &[4], piece(10, 1, true));
    assert_eq!(held(&r), [1, 2, 3, 4]);
    // The last piece completes it: 2 and 3 were not named.
    let h = beat(&mut r, &[5], piece(10, 2, false));
    let mut seen: Vec<u64> = h.pass.unwrap().into_iter().collect();
    seen.sort();
    assert_eq!(seen, [1, 4, 5]);
    assert_eq!(held(&r), [1, 4, 5]);

    // Pass 11 misses its piece 1: its last piece drops nothing.
    beat(&mut r, &[1], piece(11, 0, true));
    let h = beat(&mut r, &[6], piece(11, 2, false));
    assert!(h.known && h.pass.is_none());
    assert_eq!(held(&r), [1, 4, 5, 6]);
    // A piece of another pass in between breaks a pass too.
    beat(&mut r, &[1], piece(12, 0, true));
    beat(&mut r, &[4], piece(99, 1, true));
    assert!(beat(&mut r, &[], piece(12, 1, false)).pass.is_none());
    assert_eq!(held(&r), [1, 4, 5, 6]);
    // A new pass after a broken one completes normally.
    beat(&mut r, &[4], piece(13, 0, true));
    assert!(beat(&mut r, &[6], piece(13, 1, false)).pass.is_some());
    assert_eq!(held(&r), [4, 6]);

    // A corrupt replica stays out while the server reports it, in any piece; the mark
    // goes once a whole pass no longer names it.
    r.mark_corrupt("a", 4);
    beat(&mut r, &[4], piece(14, 0, true));
    beat(&mut r, &[6], piece(14, 1, false));
    assert_eq!(held(&r), [6]);
    assert!(r.is_corrupt("a", 4));
    beat(&mut r, &[6], piece(15, 0, true));
    assert!(r.is_corrupt("a", 4), "a pass in progress keeps the mark");
    beat(&mut r, &[], piece(15, 1, false));
    assert!(!r.is_corrupt("a", 4));
    // An unregistered server is told to register.
    let h = r.heartbeat_piece("zzz", 0, vec![], Piece::WHOLE, false, t0);
    assert!(!h.known);
}

/// A replica the master noted (a copy, a new chunk) after the server took its report can
/// be missing from the pass that completes next: that pass keeps it, the one after decides.
#[test]
fn a_pass_taken_before_a_noted_replica_does_not_drop_it() {
    let t0 = Instant::now();
    let mut r = with_servers(&[("a", "", 0)], t0);
    let held = |r: &Registry| {
        let mut h: Vec<u64> = r.replicas_of("a").iter().map(|x| x.handle).collect();
        h.sort();
        h
    };
    assert!(r.heartbeat("a", 0, vec![replica(1, 1)], t0));
    // A copy onto a finished: the master notes it; a report taken before the copy ended
    // arrives after.
    r.note_replica("a", replica(2, 1));
    assert!(r.heartbeat("a", 0, vec![replica(1, 1)], t0));
    assert_eq!(held(&r), [1, 2], "a report older than the note dropped it");
    // The next whole pass names it: it stays; one that does not name it drops it.
    assert!(r.heartbeat("a", 0, vec![replica(1, 1), replica(2, 1)], t0));
    assert_eq!(held(&r), [1, 2]);
    assert!(r.heartbeat("a", 0, vec![replica(1, 1)], t0));
    assert_eq!(held(&r), [1]);
    // A noted replica that never shows up goes after two passes.
    r.note_replica("a", replica(3, 1));
    assert!(r.heartbeat("a", 0, vec![replica(1, 1)], t0));
    assert_eq!(held(&r), [1, 3]);
    assert!(r.heartbeat("a", 0, vec![replica(1, 1)], t0));
    assert_eq!(held(&r), [1]);
}

#[test]
fn locations_count_only_live_current_replicas() {
    let t0 = Instant::now();
    let mut r = Registry::new(Duration::from_secs(10));
    for id in ["a", "b", "c"] {
        r.register(info(id), t0);
    }
    r.heartbeat("a", 0, vec![replica(7, 3)], t0);
    r.heartbeat("b", 0, vec![replica(7, 3)], t0);
    r.heartbeat("c", 0, vec![replica(7, 2)], t0); // missed a version bump
    let ids = |v: Vec<(ServerInfo, Replica)>| v.into_iter().map(|(s, _)| s.id).collect::<Vec<_>>();
    assert_eq!(ids(r.locations(7, 3)), ["a", "b"]);
    assert_eq!(
        r.stale(|h| (h == 7).then_some(Want::from(3))),
        BTreeSet::from([("c".to_string(), 7)])
    );
    r.heartbeat("a", 0, vec![replica(7, 3)], t0 + Duration::from_secs(20));
    r.sweep(t0 + Duration::from_secs(20));
    assert_eq!(ids(r.locations(7, 3)), ["a"]);
}

/// A corrupt replica's server is told where the chunk's good replicas are (live, not corrupt,
/// longest first); while it restores, its replica is kept from deletion; restored, it is
/// listed again at its next report.
#[test]
fn a_corrupt_replica_is_given_sources_and_counted_again_once_restored() {
    let t0 = Instant::now();
    let mut r = with_servers(
        &[("a", "", 0), ("b", "", 0), ("c", "", 0), ("d", "", 0)],
        t0,
    );
    let at = |length| Replica {
        length,
        ..replica(7, 3)
    };
    assert!(r.heartbeat("a", 0, vec![at(500)], t0));
    assert!(r.heartbeat("b", 0, vec![at(300)], t0));
    assert!(r.heartbeat("c", 0, vec![at(900)], t0));
    assert!(r.heartbeat("d", 0, vec![at(100)], t0));
    r.mark_corrupt("b", 7);
    r.mark_corrupt("d", 7);
    // Dead servers are no source.
    r.sweep(t0 + Duration::from_secs(11));
    assert!(r.heartbeat("a", 0, vec![at(500)], t0 + Duration::from_secs(11)));
    assert!(r.heartbeat("b", 0, vec![at(300)], t0 + Duration::from_secs(11)));
    let t1 = t0 + Duration::from_secs(11);
    let ids = |v: Vec<(ServerInfo, Replica)>| -> Vec<(String, u64)> {
        v.into_iter().map(|(s, x)| (s.id, x.length)).collect()
    };
    assert_eq!(ids(r.block_sources(7, "b")), [("a".to_string(), 500)]);
    assert!(r.heartbeat("c", 0, vec![at(900)], t1));
    assert_eq!(
        ids(r.block_sources(7, "b")),
        [("c".to_string(), 900), ("a".to_string(), 500)],
        "longest first"
    );
    r.mark_corrupt("c", 7);
    assert!(r.heartbeat("c", 0, vec![at(950)], t1));
    assert_eq!(
        ids(r.block_sources(7, "b")),
        [("a".to_string(), 500), ("c".to_string(), 950)],
        "the good ones first, then the corrupt ones as last reported"
    );
    assert!(r.clear_corrupt("c", 7));

    assert!(!r.is_restoring("b", 7, t1));
    r.restoring_until("b", 7, t1 + Duration::from_secs(30));
    r.restoring_until("a", 7, t1 + Duration::from_secs(30));
    assert!(r.is_restoring("b", 7, t1 + Duration::from_secs(29)));
    assert!(!r.is_restoring("b", 7, t1 + Duration::from_secs(30)));
    // A later report (the restore failed; the scrubber found it again) does not extend it.
    r.restoring_until("b", 7, t1 + Duration::from_secs(60));
    assert!(!r.is_restoring("b", 7, t1 + Duration::from_secs(30)));
    assert!(
        !r.is_restoring("a", 7, t1),
        "only a corrupt replica restores"
    );

    assert!(r.clear_corrupt("b", 7));
    assert!(!r.clear_corrupt("b", 7));
    assert!(!r.is_corrupt("b", 7));
    assert!(!r.is_restoring("b", 7, t1));
    assert!(r.holders_of(7, 3).iter().all(|s| s.id != "b"));
    assert!(r.heartbeat("b", 0, vec![at(300)], t1));
    assert!(r.holders_of(7, 3).iter().any(|s| s.id == "b"));
    assert!(r.is_corrupt("d", 7), "d's mark stays");
}

/// Seed 73346212800128 of the simulator: a chunk's creation failed on one server, which
/// restarted; the chunk's primary's replica rotted and the one other replica was empty. The
/// restarted server's "I hold none" no longer counted (a new registration may be a new disk),
/// so no quorum could witness the chunk's length of 0 and it was never sealed. A server that
/// registers again with the same data directory keeps its failed creations; with another, an
/// unknown one (0), or after it reported its disk lost, it does not.
#[test]
fn a_failed_creation_outlives_a_restart_on_the_same_disk_only() {
    let t0 = Instant::now();
    let mut r = Registry::new(Duration::from_secs(10));
    r.register_disk(info("a"), 7, t0);
    r.note_uncreated("a", 1);
    assert!(r.never_held("a", 1));
    r.register_disk(info("a"), 7, t0);
    assert!(r.never_held("a", 1), "the same disk");
    r.register_disk(info("a"), 8, t0);
    assert!(!r.never_held("a", 1), "another disk");

    r.note_uncreated("a", 2);
    r.register_disk(info("a"), 0, t0);
    assert!(!r.never_held("a", 2), "an unknown disk");

    r.register_disk(info("a"), 9, t0);
    r.note_uncreated("a", 3);
    r.heartbeat_with("a", 0, vec![], true, t0);
    r.register_disk(info("a"), 9, t0);
    assert!(!r.never_held("a", 3), "a disk reported lost");
}
