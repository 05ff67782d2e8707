//! The op table of a chunk: op id -> where its append landed (offset and length), so that a
//! retried append (the same op id) is answered with its first offset instead of being written
//! a second time (I4, exactly once).
//!
//! Who reads it: the primary answers a retry from it before anything else (gfs-replication
//! `Coordinator::append`, through [`crate::ChunkStore::lookup_op`]); once the chunk is sealed
//! its table is final, so "sealed, and the op is not in it" is a definite "not in this chunk,
//! and never will be" (`ChunkFull`), on which a client sends the op to the next chunk. A copy
//! of a replica carries the table along ([`crate::ChunkStore::appends`]: one `ReadChunk`
//! message per append, with its op id).
//!
//! # Bound
//!
//! A chunk keeps its table
//! - while it is not sealed. Every append adds one entry and holds at least one byte (the
//!   primary refuses empty records), so a table has at most `chunk_size` / (smallest record)
//!   entries: 16,384 for 4 KiB records in a 64 MiB chunk, 67 million for 1-byte records;
//! - for [`crate::StoreConfig::op_retention`] (10 minutes) after the chunk was sealed on this
//!   replica, or after the store opened for a chunk it found sealed (the seal time is not
//!   stored, so a restart gives those chunks one more retention). The committer's sweep then
//!   drops the table ([`OpTable::Dropped`]) and rewrites the chunk's snapshot without it, so a
//!   reopened store does not bring it back (a crash before that rewrite does, for one more
//!   retention: more knowledge, never a wrong answer).
//!
//! A dropped table answers every lookup with `OpRetentionExpired` (outcome unknown), never with
//! "absent": on a sealed chunk "absent" means "not here", and a client that had sent the op here
//! before would append it to the next chunk a second time. Dropping is safe because a client
//! retries an op only until its operation deadline (gfs-client `ClientConfig::op_deadline`,
//! 60 s; the cached lease that can send a first attempt to a sealed chunk lives at most one
//! lease period, 60 s): an op in this chunk committed before the seal here, so its last retry
//! arrives well before seal + retention. A chunk without its table takes no more appends.
//!
//! So the entries in memory are those of the unsealed chunks plus those of the appends sealed
//! within the last retention: at a steady N appends/s, about N × 600 s entries beyond the
//! unsealed chunks' (4,800 appends/s: 2.9 million entries, about 80 MB).
//!
//! # Cost per append
//!
//! In memory an entry is an 8-byte op id and an 8-byte packed record (offset and length as
//! `u32`: a chunk is smaller than 4 GiB), a 16-byte bucket of the hash table plus one control
//! byte. The table fills at most 7/8 of its buckets and doubles when full, so an entry costs
//! between 19.4 and 38.9 bytes: **28 bytes per append on average** (test `bytes_per_entry`:
//! 28.2 B mean over 40 table sizes from 1,000 to 1,000,000 entries, 19.5 to 38.5 B; 34.0 B at
//! 16,384 entries, a 64 MiB chunk of 4 KiB records; its formula agrees to the byte with a
//! counting allocator). Unpacked records (`u64` offset, a 24-byte bucket) cost 41.5 B on average,
//! the "about 40 B per append" of the 2026-12-01 review. On disk an entry takes 20 bytes in the
//! chunk's snapshot, gone with the table.

use gfs_util::collections::HashMap;

use crate::types::{AppendRecord, OpId};

/// Where one op's append landed, packed: a chunk is smaller than 4 GiB
/// ([`crate::StoreConfig::validate`]), so every offset fits in 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    offset: u32,
    len: u32,
}

impl Entry {
    fn record(self) -> AppendRecord {
        AppendRecord {
            offset: u64::from(self.offset),
            len: self.len,
        }
    }
}

/// A chunk's op table, or the fact that it was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OpTable {
    /// Every committed append of the chunk, by op id.
    Kept(HashMap<OpId, Entry>),
    /// Dropped once the chunk had been sealed for longer than the op retention (or copied from
    /// a replica that had dropped it): which ops the chunk holds is no longer known.
    Dropped,
}

/// A lookup in a dropped table: the answer is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Forgotten;

impl Default for OpTable {
    fn default() -> Self {
        OpTable::Kept(HashMap::default())
    }
}

impl OpTable {
    /// A kept table of `records`; `None` if an offset does not fit a chunk (damage).
    pub(crate) fn from_records(records: Vec<(OpId, AppendRecord)>) -> Option<OpTable> {
        let mut map = HashMap::with_capacity_and_hasher(records.len(), Default::default());
        for (op, r) in records {
            map.insert(op, pack(r)?);
        }
        Some(OpTable::Kept(map))
    }

    /// Where `op` landed: `Ok(None)` when it is not in the chunk, `Err(Forgotten)` when the table
    /// was dropped and nobody knows.
    pub(crate) fn get(&self, op: &OpId) -> Result<Option<AppendRecord>, Forgotten> {
        match self {
            OpTable::Kept(map) => Ok(map.get(op).map(|e| e.record())),
            OpTable::Dropped => Err(Forgotten),
        }
    }

    /// Records a committed append; returns false (and records nothing) when the offset does
    /// not fit a chunk or the table was dropped (a chunk without its table takes no appends).
    #[must_use]
    pub(crate) fn insert(&mut self, op: OpId, rec: AppendRecord) -> bool {
        match (self, pack(rec)) {
            (OpTable::Kept(map), Some(e)) => {
                map.insert(op, e);
                true
            }
            _ => false,
        }
    }

    /// Whether the table was dropped.
    pub(crate) fn is_dropped(&self) -> bool {
        matches!(self, OpTable::Dropped)
    }

    /// Drops the table (frees its memory).
    pub(crate) fn drop_table(&mut self) {
        *self = OpTable::Dropped;
    }

    /// Number of entries (0 once dropped).
    pub(crate) fn len(&self) -> usize {
        match self {
            OpTable::Kept(map) => map.len(),
            OpTable::Dropped => 0,
        }
    }

    /// The entries in offset order; `None` once dropped.
    pub(crate) fn by_offset(&self) -> Option<Vec<(OpId, AppendRecord)>> {
        let OpTable::Kept(map) = self else {
            return None;
        };
        let mut out: Vec<_> = map.iter().map(|(op, e)| (*op, e.record())).collect();
        out.sort_by_key(|(_, r)| r.offset);
        Some(out)
    }

    /// Keeps the appends that end at or before `limit`; returns where the last one ends.
    pub(crate) fn keep_ending_by(&mut self, limit: u64) -> u64 {
        let OpTable::Kept(map) = self else {
            return 0;
        };
        map.retain(|_, e| e.record().end() <= limit);
        map.values().map(|e| e.record().end()).max().unwrap_or(0)
    }
}

fn pack(r: AppendRecord) -> Option<Entry> {
    let end = u32::try_from(r.end()).ok()?;
    Some(Entry {
        offset: end - r.len,
        len: r.len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap bytes of a table, from its capacity and the layout of `std`'s hash map
    /// (hashbrown): a power-of-two number of buckets, of which it fills at most 7/8 (all but
    /// one below 8 buckets), each one entry plus one control byte, and one trailing group of
    /// 16 control bytes. Checked against a counting allocator (outside the repository: the
    /// workspace has no unsafe code) for every size this test uses: equal to the byte.
    fn heap_bytes(t: &OpTable) -> usize {
        let OpTable::Kept(map) = t else { return 0 };
        let cap = map.capacity();
        if cap == 0 {
            return 0;
        }
        let buckets = if cap < 7 { cap + 1 } else { cap / 7 * 8 };
        buckets * (std::mem::size_of::<(OpId, Entry)>() + 1) + 16
    }

    /// Heap bytes per entry of a table of `n` entries, filled append by append as the
    /// committer does.
    fn per_entry(n: u64) -> f64 {
        let mut t = OpTable::default();
        for i in 0..n {
            let rec = AppendRecord {
                offset: i * 4096,
                len: 4096,
            };
            // Op ids are random u64s (gfs-client).
            let op = OpId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            assert!(t.insert(op, rec));
        }
        assert_eq!(t.len() as u64, n);
        heap_bytes(&t) as f64 / n as f64
    }

    #[test]
    fn bytes_per_entry() {
        assert_eq!(std::mem::size_of::<(OpId, Entry)>(), 16);
        // Tables of 1,000 to 1,000,000 entries, 40 sizes evenly spread on a log scale.
        let per: Vec<f64> = (0..40)
            .map(|i| per_entry((1000.0 * 1000f64.powf(f64::from(i) / 39.0)) as u64))
            .collect();
        let mean = per.iter().sum::<f64>() / per.len() as f64;
        let (lo, hi) = per
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), b| (lo.min(*b), hi.max(*b)));
        let chunk_of_4k = per_entry(16_384);
        println!(
            "op table: {mean:.1} B per entry on average, {lo:.1}..{hi:.1} over 1e3..1e6 \
             entries; {chunk_of_4k:.1} B at 16,384 entries"
        );
        // 17 bytes a bucket, at most 7/8 of them full, doubling when full.
        assert!(lo >= 17.0 * 8.0 / 7.0, "{lo}");
        assert!(hi <= 17.0 * 16.0 / 7.0 + 0.1, "{hi}");
        assert!((26.0..30.0).contains(&mean), "{mean}");
    }

    #[test]
    fn a_dropped_table_answers_forgotten_never_absent() {
        let mut t = OpTable::default();
        let rec = AppendRecord { offset: 5, len: 3 };
        assert!(t.insert(OpId(1), rec));
        assert_eq!(t.get(&OpId(1)), Ok(Some(rec)));
        assert_eq!(t.get(&OpId(2)), Ok(None));
        t.drop_table();
        assert_eq!(t.get(&OpId(1)), Err(Forgotten));
        assert_eq!(t.get(&OpId(2)), Err(Forgotten));
        assert!(!t.insert(OpId(3), rec), "a dropped table takes no entries");
        assert_eq!(t.by_offset(), None);
    }

    #[test]
    fn offsets_past_4_gib_are_refused() {
        let mut t = OpTable::default();
        let last = AppendRecord {
            offset: u64::from(u32::MAX) - 10,
            len: 10,
        };
        assert!(t.insert(OpId(1), last));
        assert_eq!(t.get(&OpId(1)), Ok(Some(last)));
        let past = AppendRecord {
            offset: u64::from(u32::MAX) - 10,
            len: 11,
        };
        assert!(!t.insert(OpId(2), past));
        assert_eq!(OpTable::from_records(vec![(OpId(2), past)]), None);
    }
}
