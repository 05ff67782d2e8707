//! Unit tests of the on-disk records: encoding, parsing, torn tails and damage.

use super::*;

fn file(records: &[Record]) -> Bytes {
    let mut out = WAL_MAGIC.to_vec();
    for r in records {
        r.encode_into(&mut out);
    }
    Bytes::from(out)
}

fn sample() -> Vec<Record> {
    let h = ChunkHandle(9);
    vec![
        Record::Commit {
            batch: 1,
            handle: h,
            op: OpId(7),
            offset: 0,
            len: 3,
            first_block: 0,
            crcs: vec![0xdead_beef],
            data: Some(Bytes::from_static(b"abc")),
        },
        Record::Commit {
            batch: 2,
            handle: h,
            op: OpId(8),
            offset: 3,
            len: 70_000,
            first_block: 0,
            crcs: vec![1, 2],
            data: None,
        },
        Record::Version {
            batch: 3,
            handle: h,
            version: 4,
        },
        Record::Seal {
            batch: 3,
            handle: h,
            length: 70_003,
        },
        Record::Cancel {
            batch: 4,
            handle: h,
            cancelled: 3,
        },
        Record::Snapshot(Box::new(Snapshot {
            batch: 3,
            version: 4,
            sealed: true,
            ops_dropped: false,
            length: 10,
            ops: vec![(OpId(7), AppendRecord { offset: 0, len: 10 })],
            crcs: vec![1, 2],
        })),
        Record::Snapshot(Box::new(Snapshot {
            batch: 5,
            version: 4,
            sealed: true,
            ops_dropped: true,
            length: 10,
            ops: Vec::new(),
            crcs: vec![1],
        })),
    ]
}

#[test]
fn a_wal_record_is_pinned_to_its_bytes() {
    // The format of every existing data directory: these bytes must never change.
    let mut out = WAL_MAGIC.to_vec();
    Record::Version {
        batch: 1,
        handle: ChunkHandle(2),
        version: 3,
    }
    .encode_into(&mut out);
    let mut want = b"GFSWAL01".to_vec();
    want.extend_from_slice(&[25, 0, 0, 0, 0xcd, 0xcb, 0x13, 0xef, 3]);
    for v in [1u64, 2, 3] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(out, want);
}

#[test]
fn records_round_trip() {
    let recs = sample();
    let bytes = file(&recs);
    let parsed = parse(Path::new("x"), WAL_MAGIC, bytes.clone()).expect("parse");
    let got: Vec<_> = parsed.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got, recs);
    assert_eq!(parsed.valid_end, bytes.len() as u64);
}

#[test]
fn every_truncation_yields_a_prefix() {
    let recs = sample();
    let bytes = file(&recs);
    for cut in WAL_MAGIC.len()..bytes.len() {
        let parsed = parse(Path::new("x"), WAL_MAGIC, bytes.slice(..cut)).expect("parse");
        let n = parsed.records.len();
        assert!(n < recs.len(), "cut {cut} kept every record");
        let got: Vec<_> = parsed.records.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got, recs[..n]);
        assert!(parsed.valid_end <= cut as u64);
    }
}

#[test]
fn a_flipped_bit_ends_the_log_there() {
    let recs = sample();
    let mut bytes = file(&recs).to_vec();
    let parsed = parse(Path::new("x"), WAL_MAGIC, Bytes::from(bytes.clone())).expect("parse");
    let second = parsed.records[1].0 as usize;
    bytes[second + 12] ^= 0x10;
    let parsed = parse(Path::new("x"), WAL_MAGIC, Bytes::from(bytes)).expect("parse");
    assert_eq!(parsed.records.len(), 1);
    assert_eq!(parsed.valid_end, second as u64);
}

/// A WAL of five batches: 1 and 2 with one record, 3 and 4 with two, 5 with three
/// (records 0, 1, 2-3, 4-5, 6-8).
fn batches() -> (Vec<u8>, Vec<usize>) {
    let mut recs = Vec::new();
    for (batch, n) in [(1u64, 1u64), (2, 1), (3, 2), (4, 2), (5, 3)] {
        for i in 0..n {
            recs.push(Record::Commit {
                batch,
                handle: ChunkHandle(i),
                op: OpId(batch),
                offset: 0,
                len: 100,
                first_block: 0,
                crcs: vec![7],
                data: Some(Bytes::from(vec![batch as u8; 100])),
            });
        }
    }
    let bytes = file(&recs).to_vec();
    let parsed = parse(Path::new("w"), WAL_MAGIC, Bytes::from(bytes.clone())).expect("parse");
    let starts = parsed.records.iter().map(|(p, _)| *p as usize).collect();
    (bytes, starts)
}

fn wal(bytes: Vec<u8>) -> Result<Parsed> {
    parse_wal(Path::new("w"), Bytes::from(bytes))
}

fn corrupt_at(r: Result<Parsed>) -> u64 {
    match r {
        Err(StorageError::CorruptWal { offset, .. }) => offset,
        Err(e) => panic!("unexpected error {e}"),
        Ok(p) => panic!("taken for a torn tail: {} records kept", p.records.len()),
    }
}

#[test]
fn damage_followed_by_older_batches_is_corruption() {
    let (bytes, starts) = batches();
    // The record of batch 2 (index 1), damaged in its payload, its length field, its tag.
    for at in [starts[1] + 30, starts[1], starts[1] + 8] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        assert_eq!(corrupt_at(wal(b)), starts[1] as u64, "damage at {at}");
    }
    // Zeros over the whole record (a lost sector) are damage too: later batches follow.
    let mut b = bytes.clone();
    b[starts[1]..starts[2]].fill(0);
    assert_eq!(corrupt_at(wal(b)), starts[1] as u64);
}

#[test]
fn damage_to_the_batch_before_the_newest_is_corruption() {
    let (bytes, starts) = batches();
    // The second record of batch 4 (index 5); only batch 5 follows.
    let mut b = bytes.clone();
    b[starts[5] + 40] ^= 1;
    assert_eq!(corrupt_at(wal(b)), starts[5] as u64);
}

#[test]
fn holes_inside_the_newest_batch_are_a_torn_tail() {
    let (bytes, starts) = batches();
    // Batch 5 (indexes 6..9) written back out of order: its first record never reached
    // the disk (zeros), the others did. Or its second record is cut.
    let mut zeros = bytes.clone();
    zeros[starts[6]..starts[7]].fill(0);
    let mut cut = bytes.clone();
    cut[starts[7] + 20] ^= 1;
    for (b, kept, dropped) in [(zeros, 6, 2), (cut, 7, 1)] {
        let p = wal(b).expect("a torn tail");
        assert_eq!(p.records.len(), kept);
        assert_eq!(p.dropped, dropped);
        assert!(p.valid_end < p.file_len);
    }
}

#[test]
fn every_truncation_of_the_wal_is_a_torn_tail() {
    let (bytes, starts) = batches();
    for cut in WAL_MAGIC.len()..bytes.len() {
        let p = wal(bytes[..cut].to_vec()).expect("a torn tail");
        let whole = starts[1..]
            .iter()
            .chain([&bytes.len()])
            .filter(|end| **end <= cut)
            .count();
        assert_eq!(p.records.len(), whole, "cut at {cut}");
        assert!(p.valid_end <= cut as u64);
        assert_eq!(p.dropped, 0);
    }
}

#[test]
fn snapshot_flags_beyond_sealed_and_dropped_are_invalid() {
    let snap = |flags: u8| {
        let mut out = META_MAGIC.to_vec();
        Record::Snapshot(Box::default()).encode_into(&mut out);
        // The flags byte: after the frame header, the tag and two u64s.
        out[META_MAGIC.len() + HEADER_LEN + 17] = flags;
        let payload = out[META_MAGIC.len() + HEADER_LEN..].to_vec();
        let crc = crc32c::crc32c(&payload);
        out[META_MAGIC.len() + 4..META_MAGIC.len() + 8].copy_from_slice(&crc.to_le_bytes());
        parse(Path::new("m"), META_MAGIC, Bytes::from(out))
            .expect("parse")
            .records
            .into_iter()
            .map(|(_, r)| r)
            .next()
    };
    for (flags, sealed, ops_dropped) in [(0, false, false), (1, true, false), (3, true, true)] {
        let Some(Record::Snapshot(s)) = snap(flags) else {
            panic!("flags {flags} refused");
        };
        assert_eq!((s.sealed, s.ops_dropped), (sealed, ops_dropped));
    }
    assert_eq!(snap(4), None);
}

#[test]
fn a_snapshot_whose_ops_do_not_fit_it_is_refused() {
    let past_end = Snapshot {
        length: 5,
        ops: vec![(OpId(1), AppendRecord { offset: 0, len: 6 })],
        ..Snapshot::default()
    };
    assert!(ChunkMeta::from_snapshot(past_end).is_err());
    let dropped_but_listed = Snapshot {
        length: 6,
        sealed: true,
        ops_dropped: true,
        ops: vec![(OpId(1), AppendRecord { offset: 0, len: 6 })],
        ..Snapshot::default()
    };
    assert!(ChunkMeta::from_snapshot(dropped_but_listed).is_err());
    let dropped = Snapshot {
        length: 6,
        sealed: true,
        ops_dropped: true,
        ..Snapshot::default()
    };
    let m = ChunkMeta::from_snapshot(dropped).expect("valid");
    assert!(m.ops.is_dropped());
    let Record::Snapshot(back) = m.snapshot() else {
        panic!("not a snapshot");
    };
    assert!(back.sealed && back.ops_dropped && back.ops.is_empty());
}

#[test]
fn a_wrong_header_is_an_error() {
    let bytes = file(&sample());
    assert!(matches!(
        parse(Path::new("x"), META_MAGIC, bytes),
        Err(StorageError::CorruptMetadata { .. })
    ));
}

#[test]
fn replay_refuses_a_commit_that_leaves_a_hole() {
    let mut m = ChunkMeta::default();
    let hole = Record::Commit {
        batch: 1,
        handle: ChunkHandle(1),
        op: OpId(1),
        offset: 5,
        len: 1,
        first_block: 0,
        crcs: vec![0],
        data: None,
    };
    assert!(!m.apply(&hole));
    assert_eq!(m.length, 0);
}

mod fuzz {
    //! The WAL parser against bytes a crash, a bad disk or an attacker with the data directory
    //! may leave: it refuses or parses, never panics, and what it parses is exactly what was
    //! written there.
    use super::*;
    use proptest::prelude::*;

    fn check(bytes: Vec<u8>) -> Result<(), TestCaseError> {
        let bytes = Bytes::from(bytes);
        let _ = Record::decode(&bytes);
        if let Ok(p) = parse_wal(Path::new("wal"), bytes.clone()) {
            prop_assert!(p.valid_end <= p.file_len);
            prop_assert_eq!(p.file_len, bytes.len() as u64);
            let mut at = WAL_MAGIC.len() as u64;
            for (pos, rec) in &p.records {
                prop_assert_eq!(*pos, at);
                let mut again = Vec::new();
                rec.encode_into(&mut again);
                let end = at as usize + again.len();
                prop_assert_eq!(&bytes[at as usize..end], &again[..]);
                at = end as u64;
            }
            prop_assert_eq!(at, p.valid_end);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_the_wal_parser_refuses_or_parses_any_bytes(
            garbage in prop::collection::vec(any::<u8>(), 0..512),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut raw = WAL_MAGIC.to_vec();
            raw.extend_from_slice(&garbage);
            check(raw)?;
            check(garbage.clone())?;
            let mut wal = file(&sample()).to_vec();
            for (at, b) in flips {
                let i = at.index(wal.len());
                wal[i] ^= b;
            }
            wal.truncate(cut.index(wal.len() + 1));
            wal.extend_from_slice(&garbage[..garbage.len().min(64)]);
            check(wal)?;
        }
    }
}
