//! `gfs append`: concurrent writer processes on a file none of them created, the record limit,
//! and padding over the end of a chunk.

use gfs_util::collections::HashSet;
use std::collections::BTreeMap;

use crate::env::{CHUNK, Gfs};

const WRITERS: u32 = 8;
const RECORDS: u32 = 20;
/// `<w03s017n01234>`: writer, sequence number, payload length.
const HEADER: usize = 15;

/// Record `s` of writer `w`: a header naming it, then a payload derived from both.
fn record(w: u32, s: u32) -> Vec<u8> {
    let n = 1 + (w as usize * 7919 + s as usize * 104_729) % 20_000;
    let mut r = format!("<w{w:02}s{s:03}n{n:05}>").into_bytes();
    assert_eq!(r.len(), HEADER);
    r.extend((0..n).map(|j| (w as usize * 31 + s as usize * 7 + j) as u8));
    r
}

/// Splits the bytes of a file into its records, checking each is intact.
fn parse(mut data: &[u8]) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= HEADER, "a truncated header at the end");
        let h = std::str::from_utf8(&data[..HEADER]).expect("a record header");
        let (w, s, n) = (&h[2..4], &h[5..8], &h[9..14]);
        let (w, s): (u32, u32) = (w.parse().unwrap(), s.parse().unwrap());
        let n: usize = n.parse().unwrap();
        let want = record(w, s);
        assert_eq!(HEADER + n, want.len(), "record {w}/{s} has a bad length");
        assert!(
            data.len() >= want.len() && data[..want.len()] == want[..],
            "record {w}/{s} is damaged"
        );
        found.push((w, s));
        data = &data[want.len()..];
    }
    found
}

#[test]
fn concurrent_appenders_each_record_lands_once_and_intact() {
    let gfs = Gfs::start(3);
    // Every writer process starts on a file that does not exist yet.
    let results: Vec<(u32, u32, u64, u64)> = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let gfs = &gfs;
                scope.spawn(move || {
                    (0..RECORDS)
                        .map(|s| {
                            let rec = record(w, s);
                            let out = gfs.run_in(&["append", "--json", "/appends"], &rec);
                            assert_eq!(out.code, 0, "writer {w} record {s}: {out:?}");
                            let v = out.json();
                            let (off, len) = (v["offset"].as_u64(), v["length"].as_u64());
                            assert_eq!(len, Some(rec.len() as u64), "{v}");
                            (w, s, off.unwrap(), len.unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        tasks.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(results.len(), (WRITERS * RECORDS) as usize);

    // Offsets are distinct, and records do not overlap.
    let by_offset: BTreeMap<u64, (u32, u32, u64)> = results
        .iter()
        .map(|&(w, s, off, len)| (off, (w, s, len)))
        .collect();
    assert_eq!(
        by_offset.len(),
        results.len(),
        "two records share an offset"
    );
    // Offsets are byte positions in the file (padding takes none): the records tile it.
    let mut end = 0;
    for (&off, &(w, s, len)) in &by_offset {
        assert_eq!(
            off, end,
            "record {w}/{s} at {off}: a gap or an overlap before it"
        );
        end = off + len;
    }

    // Each record reads back intact at the offset its writer printed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = gfs_client::Client::connect(&gfs.master.addr).await.unwrap();
        for &(w, s, off, len) in &results {
            let got = client.read("/appends", off, len).await.unwrap();
            assert!(
                got[..] == record(w, s)[..],
                "record {w}/{s} at {off} reads back wrong"
            );
        }
    });

    // The whole file, as gfs get reads it, is every record exactly once, each where its
    // writer was told it is.
    let file = gfs.get("/appends");
    for &(w, s, off, len) in &results {
        assert!(
            file[off as usize..(off + len) as usize] == record(w, s)[..],
            "record {w}/{s} is not at offset {off} of the file gfs get returns"
        );
    }
    assert_eq!(gfs.stat("/appends")["size"], file.len() as u64);
    let found = parse(&file);
    assert_eq!(
        found.len(),
        results.len(),
        "records read back: {}",
        found.len()
    );
    let distinct: HashSet<(u32, u32)> = found.iter().copied().collect();
    assert_eq!(distinct.len(), found.len(), "a record appears twice");
    // Sequential reads skip chunk padding: records come in offset order.
    let in_offset_order: Vec<(u32, u32)> = by_offset.values().map(|&(w, s, _)| (w, s)).collect();
    assert_eq!(found, in_offset_order);
    // The records span several chunks: sealing and padding were exercised.
    let chunks = gfs.stat("/appends")["chunks"].as_array().unwrap().len();
    assert!(chunks >= 2, "only {chunks} chunk(s)");
}

#[test]
fn a_record_over_a_quarter_chunk_is_refused_and_a_full_chunk_pads_over() {
    let gfs = Gfs::start(3);
    let quarter = CHUNK / 4;

    // Too large: a clear error, exit 1, nothing written.
    let out = gfs.run_in(&["append", "/big-record"], &vec![b'x'; quarter + 1]);
    let err = out.error_line();
    assert!(
        err.contains(&format!("record of {} bytes exceeds", quarter + 1)),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(gfs.stat("/big-record")["size"], 0);
    // Exactly a quarter is fine.
    let out = gfs.run_in(&["append", "/big-record"], &vec![b'y'; quarter]);
    assert_eq!((out.code, out.text()), (0, "0\n".to_string()), "{out:?}");

    // Four records of a quarter less one byte leave 4 bytes: the fifth goes to the next chunk.
    let record = |i: u8| vec![b'a' + i; quarter - 1];
    for i in 0..4u8 {
        let out = gfs.run_in(&["append", "/pad"], &record(i));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(
            out.text(),
            format!("{}\n", u64::from(i) * (quarter as u64 - 1))
        );
    }
    let local = gfs.local("fifth");
    std::fs::write(&local, record(4)).unwrap();
    let out = gfs.run(&["append", "/pad", local.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    // The fifth opens chunk 1, right after chunk 0's data: padding takes no offsets.
    assert_eq!(
        out.text(),
        format!("{}\n", 4 * (quarter as u64 - 1)),
        "the fifth record's offset"
    );

    let st = gfs.stat("/pad");
    let chunks = st["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 2, "{st}");
    assert_eq!(chunks[0]["sealed"], true, "{st}");
    assert_eq!(chunks[0]["length"], 4 * (quarter as u64 - 1), "{st}");
    assert_eq!(chunks[1]["length"], quarter as u64 - 1, "{st}");
    // A sequential read skips the padding.
    let want: Vec<u8> = (0..5).flat_map(record).collect();
    assert!(gfs.get("/pad") == want, "/pad reads back wrong");
}
