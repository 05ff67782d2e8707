//! A chunk's snapshot (`<handle>.meta`) damaged in any way (bits flipped, cut short, garbage
//! after it or instead of it): the store opens with the chunk loaded, rolled back or
//! quarantined, or refuses to open with an error; it never panics, and a chunk it serves reads
//! back only bytes it holds checksums for.

use proptest::prelude::*;

use super::*;

fn damaged(
    meta: &[u8],
    flips: &[(prop::sample::Index, u8)],
    cut: Option<prop::sample::Index>,
    junk: &[u8],
) -> Vec<u8> {
    let mut m = meta.to_vec();
    for (at, b) in flips {
        if !m.is_empty() {
            let i = at.index(m.len());
            m[i] ^= b;
        }
    }
    if let Some(c) = cut {
        m.truncate(c.index(m.len() + 1));
    }
    m.extend_from_slice(junk);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_a_damaged_snapshot_is_loaded_quarantined_or_refused(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..3),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        junk in prop::collection::vec(any::<u8>(), 0..16),
        replace in proptest::option::of(prop::collection::vec(any::<u8>(), 0..128)),
    ) {
        let d = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let s = fresh(d.path(), cfg()).await;
            append(&s, 1, 0, b"first record").await;
            append(&s, 2, 12, &[7u8; 70_000]).await;
            drop(s);
            // Reopened once: recovery writes the chunk's snapshot.
            drop(ChunkStore::open(d.path(), cfg()).unwrap());
        });
        let path = d.path().join(format!("{}.meta", H.0));
        let meta = fs::read(&path).expect("a snapshot after the reopen");
        let bytes = replace.unwrap_or_else(|| damaged(&meta, &flips, cut, &junk));
        fs::write(&path, &bytes).unwrap();
        rt.block_on(async {
            if let Ok(s) = ChunkStore::open(d.path(), cfg())
                && let Ok(info) = s.info(H)
            {
                let len = u32::try_from(info.committed_len.min(1 << 20)).unwrap();
                let _ = s.read(H, 0, u64::from(len));
            }
        });
    }
}
