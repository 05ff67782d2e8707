//! The simulated disk's own semantics: crashes, torn writes, the directory log, failed fsyncs,
//! a full disk, armed crashes, locks and views.

#![allow(clippy::unwrap_used)]

use super::*;

fn disk(seed: u64) -> (SimDisk, PathBuf) {
    let d = SimDisk::new(seed);
    let dir = PathBuf::from("/data");
    d.create_dir_all(&dir).unwrap();
    (d, dir)
}

#[test]
fn what_was_synced_survives_every_crash_and_old_handles_fail() {
    for seed in 0..200 {
        let (d, dir) = disk(seed);
        let p = dir.join("f");
        let f = d.open(&p, Open::Create).unwrap();
        f.write_all_at(b"durable", 0).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all_at(&[7u8; 3 * PAGE], 7).unwrap();
        d.crash();
        let got = d.read(&p).unwrap();
        assert_eq!(&got[..7], b"durable", "seed {seed}");
        assert!(got[7..].iter().all(|b| *b == 7 || *b == 0), "seed {seed}");
        assert!(
            f.write_all_at(b"x", 0).is_err(),
            "an old handle still writes"
        );
    }
}

#[test]
fn crashes_keep_drop_and_tear_unsynced_writes_by_the_seed() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..300 {
        let (d, dir) = disk(seed);
        let p = dir.join("f");
        let f = d.open(&p, Open::Create).unwrap();
        d.sync_dir(&dir).unwrap();
        f.write_all_at(&[1u8; 2 * PAGE], 0).unwrap();
        d.crash();
        let got = d.read(&p).unwrap();
        let pages: Vec<bool> = (0..2).map(|i| got.get(i * PAGE) == Some(&1)).collect();
        outcomes.insert(pages);
    }
    // Whole, lost, and each torn half all happen.
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    // The same seed gives the same disk.
    let run = |seed| {
        let (d, dir) = disk(seed);
        let f = d.open(&dir.join("f"), Open::Create).unwrap();
        f.write_all_at(&[5u8; 5 * PAGE], 0).unwrap();
        d.crash();
        d.read(&dir.join("f")).ok()
    };
    assert_eq!(run(42), run(42));
}

#[test]
fn unsynced_directory_changes_survive_only_as_an_ordered_prefix() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let (d, dir) = disk(seed);
        let (a, b) = (dir.join("a"), dir.join("b"));
        let f = d.open(&a, Open::Create).unwrap();
        f.write_all_at(b"A", 0).unwrap();
        f.sync_all().unwrap();
        d.rename(&a, &b).unwrap();
        d.crash();
        let files = d.files();
        // Never a state the operations could not pass through in order.
        assert!(
            files.is_empty() || files == [a.clone()] || files == [b.clone()],
            "{files:?}"
        );
        seen.insert(files);
        // What a directory fsync covered stays.
        let (d, dir) = disk(seed);
        d.open(&dir.join("c"), Open::Create).unwrap();
        d.sync_dir(&dir).unwrap();
        d.crash();
        assert_eq!(d.files(), [dir.join("c")]);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn a_failed_fsync_forgets_the_writes_and_the_next_one_succeeds_without_them() {
    let (d, dir) = disk(1);
    let p = dir.join("f");
    let f = d.open(&p, Open::Create).unwrap();
    d.sync_dir(&dir).unwrap();
    f.write_all_at(b"lost", 0).unwrap();
    d.fail_next_sync(&p);
    assert!(f.sync_data().is_err());
    assert_eq!(d.read(&p).unwrap(), b"lost", "still visible until a crash");
    f.sync_data().unwrap();
    d.crash();
    assert_eq!(d.read(&p).unwrap(), b"", "never durable");
}

#[test]
fn a_full_disk_refuses_growth_and_an_armed_crash_strikes_in_place_of_its_operation() {
    let (d, dir) = disk(2);
    d.set_capacity(Some(10));
    let f = d.open(&dir.join("f"), Open::Create).unwrap();
    f.write_all_at(&[0; 10], 0).unwrap();
    let e = f.write_all_at(&[0; 1], 10).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28));
    f.write_all_at(&[1; 4], 2).unwrap();

    let (d, dir) = disk(3);
    let f = d.open(&dir.join("f"), Open::Create).unwrap();
    d.crash_after(1);
    f.write_all_at(b"1", 0).unwrap();
    assert!(f.sync_data().is_err(), "the crash took the fsync's place");
    assert_eq!(d.crashes(), 1);
    assert!(f.write_all_at(b"2", 0).is_err());
    let g = d.open(&dir.join("g"), Open::Create).unwrap();
    assert!(
        g.try_lock().unwrap()
            && !d
                .open(&dir.join("g"), Open::Read)
                .unwrap()
                .try_lock()
                .unwrap()
    );
    drop(g);
    assert!(
        d.open(&dir.join("g"), Open::Read)
            .unwrap()
            .try_lock()
            .unwrap()
    );
    assert!(
        !d.flip_bit(&dir.join("g"), 0, 0),
        "an empty file has no byte 0"
    );
}

#[test]
fn a_flipped_bit_shows_in_the_durable_bytes_only_once_synced_bytes_are_there() {
    let (d, dir) = disk(5);
    let p = dir.join("h");
    let f = d.open(&p, Open::Create).unwrap();
    f.write_all_at(b"ab", 0).unwrap();
    assert_eq!(d.durable_len(&p), Some(0), "not synced yet");
    assert_eq!(d.durable_byte(&p, 0), None);
    f.sync_data().unwrap();
    assert_eq!(d.durable_len(&p), Some(2));
    assert!(d.flip_bit(&p, 1, 0));
    assert_eq!(d.durable_byte(&p, 1), Some(b'b' ^ 1));
    assert_eq!(d.durable_byte(&p, 2), None);
    assert_eq!(d.durable_len(&dir.join("none")), None);
    assert_eq!(
        d.with_durable(&p, |b| b.to_vec()),
        Some(vec![b'a', b'b' ^ 1])
    );
    let stamp = d.durable_stamp(&p);
    f.write_all_at(b"c", 2).unwrap();
    assert_eq!(
        d.with_durable(&p, <[u8]>::len),
        Some(2),
        "an unsynced write is not durable"
    );
    assert_eq!(
        d.durable_stamp(&p),
        stamp,
        "unchanged durable bytes, another stamp"
    );
    assert_eq!(
        d.with_current(&p, |b| b.to_vec()),
        Some(vec![b'a', b'b' ^ 1, b'c'])
    );
    let seen = d.current_stamp(&p);
    assert_eq!(d.current_stamp(&p), seen);
    f.set_len(3).unwrap();
    assert_ne!(d.current_stamp(&p), seen, "a set_len, the same stamp");
    f.write_all_at(b"B", 1).unwrap();
    f.sync_data().unwrap();
    assert_ne!(d.durable_stamp(&p), stamp, "synced bytes, the same stamp");
}

#[test]
fn a_flip_stays_until_a_durable_write_or_truncation_touches_its_byte() {
    let (d, dir) = disk(6);
    let p = dir.join("r");
    let f = d.open(&p, Open::Create).unwrap();
    f.write_all_at(b"abcd", 0).unwrap();
    f.sync_data().unwrap();
    assert!(d.flip_bit(&p, 1, 0) && d.flip_bit(&p, 3, 0));
    assert!(d.still_flipped(&p, 1) && d.still_flipped(&p, 3));
    assert!(!d.still_flipped(&p, 0), "byte 0 was never flipped");
    // A redo rewrites byte 1; until it is synced, a crash would keep the flip.
    f.write_all_at(b"b", 1).unwrap();
    assert!(d.still_flipped(&p, 1), "an unsynced write is not durable");
    f.sync_data().unwrap();
    assert!(!d.still_flipped(&p, 1), "the flip was overwritten durably");
    assert_eq!(d.durable_byte(&p, 1), Some(b'b'));
    assert!(d.still_flipped(&p, 3), "a write elsewhere leaves it");
    f.set_len(3).unwrap();
    f.sync_data().unwrap();
    assert!(!d.still_flipped(&p, 3), "the flipped byte was cut off");
    // A file that takes the name afresh carries none of the old one's flips.
    assert!(d.flip_bit(&p, 2, 0));
    d.remove_file(&p).unwrap();
    let g = d.open(&p, Open::Create).unwrap();
    g.write_all_at(b"xyz", 0).unwrap();
    g.sync_data().unwrap();
    assert!(!d.still_flipped(&p, 2));
}

#[test]
fn a_process_view_dies_with_the_power() {
    let (d, dir) = disk(4);
    let view = d.shared();
    let f = view.open(&dir.join("x"), Open::Create).unwrap();
    d.crash();
    assert!(view.open(&dir.join("y"), Open::Create).is_err());
    assert!(view.rename(&dir.join("x"), &dir.join("z")).is_err());
    assert!(f.write_all_at(b"late", 0).is_err());
    d.shared().open(&dir.join("y"), Open::Create).unwrap();
}

#[test]
fn latency_is_zero_unless_set_and_then_drawn_below_the_bound() {
    let (d, _) = disk(7);
    assert_eq!(d.latency(), Duration::ZERO);
    d.set_latency(Duration::from_millis(2));
    let draws: Vec<Duration> = (0..100).map(|_| d.latency()).collect();
    assert!(
        draws
            .iter()
            .all(|l| !l.is_zero() && *l <= Duration::from_millis(2))
    );
    assert!(draws.windows(2).any(|w| w[0] != w[1]), "never varies");
    d.set_latency(Duration::ZERO);
    assert_eq!(d.latency(), Duration::ZERO);
}
