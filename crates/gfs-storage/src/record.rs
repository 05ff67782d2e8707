//! Record formats: the store-wide write-ahead log (`<dir>/wal`) and per-chunk snapshots
//! (`<dir>/<handle>.meta`).
//!
//! Both files start with an 8-byte magic (`GFSWAL01` / `GFSMETA2`) followed by frames
//! `[len: u32 LE][crc32c(payload): u32 LE][payload]` (the frame layer is `gfs_util::framed`,
//! shared with the master's log; a frame here claims at most 256 MiB). A payload starts with a
//! tag byte; integers are little-endian.
//!
//! | tag | record | fields |
//! |---|---|---|
//! | 2 | Commit | batch u64, handle u64, op u64, offset u64, len u32, first_block u64, n u32, n × crc u32, inline u8, [len bytes of data if inline] |
//! | 3 | Version | batch u64, handle u64, version u64 |
//! | 4 | Seal | batch u64, handle u64, length u64 |
//! | 5 | Snapshot | batch u64, version u64, flags u8, length u64, n u32, n × (op u64, offset u64, len u32), m u32, m × crc u32 |
//! | 6 | Create | batch u64, handle u64, version u64 (WAL only: a new empty chunk) |
//! | 7 | Delete | batch u64, handle u64 (WAL only: written and fsynced before the files go) |
//! | 8 | Cancel | batch u64, handle u64, cancelled u64 (WAL only: every record of `handle` in batch `cancelled` is void) |
//!
//! A Commit carries the CRC32C of every block it touched as of the end of that append (the last one
//! covers a partial block). Small appends carry their bytes inline, so one WAL fsync makes them
//! durable; large ones are written in place and their chunk file is fsynced in the same round.
//! A snapshot file holds exactly one Snapshot frame: the chunk's state through batch `batch`.
//! Its flags: bit 0 sealed, bit 1 op table dropped (`optable.rs`; then n is 0). Files written
//! before the op table could be dropped hold 0 or 1; other bits make the frame invalid. A build
//! from before reads a dropped table (flags 3) as sealed with an empty table, i.e. "no op is in
//! this chunk": harmless for correct clients, whose retries never come that late.
//!
//! `parse` stops at the first frame that is short, fails its CRC or does not decode.
//! `parse_wal` then tells a torn tail from damage in the middle of the WAL by searching the
//! rest of the file for valid frames and comparing their batch numbers (details on it).

use std::path::Path;

use bytes::Bytes;
use gfs_util::framed::{self, FrameAt, HEADER_LEN, Magic};

use crate::error::{Result, StorageError};
use crate::optable::OpTable;
use crate::types::{AppendRecord, ChunkHandle, OpId, block_of};

/// Magic and format version at the start of the write-ahead log.
pub(crate) const WAL_MAGIC: &Magic = b"GFSWAL01";
/// Magic and format version at the start of a chunk snapshot file.
pub(crate) const META_MAGIC: &Magic = b"GFSMETA2";
/// Largest payload a frame may claim.
const MAX_PAYLOAD: u32 = 256 << 20;

/// One WAL or snapshot record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Commit {
        batch: u64,
        handle: ChunkHandle,
        op: OpId,
        offset: u64,
        len: u32,
        first_block: u64,
        crcs: Vec<u32>,
        /// The appended bytes, for appends small enough to live in the WAL.
        data: Option<Bytes>,
    },
    Version {
        batch: u64,
        handle: ChunkHandle,
        version: u64,
    },
    Seal {
        batch: u64,
        handle: ChunkHandle,
        length: u64,
    },
    Snapshot(Box<Snapshot>),
    /// A new, empty chunk (its snapshot comes with the next checkpoint).
    Create {
        batch: u64,
        handle: ChunkHandle,
        version: u64,
    },
    /// The chunk's files are removed after this record is durable.
    Delete {
        batch: u64,
        handle: ChunkHandle,
    },
    /// Voids every record of `handle` in batch `cancelled`: that batch's fsync round failed for
    /// the chunk (its file, the directory or the WAL) and its callers are told so. Written in a
    /// write of its own, numbered `batch`.
    Cancel {
        batch: u64,
        handle: ChunkHandle,
        cancelled: u64,
    },
}

/// The full state of a chunk through one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub batch: u64,
    pub version: u64,
    pub sealed: bool,
    /// The op table was dropped (`ops` is empty).
    pub ops_dropped: bool,
    pub length: u64,
    pub ops: Vec<(OpId, AppendRecord)>,
    pub crcs: Vec<u32>,
}

impl Record {
    /// The batch the record belongs to.
    pub(crate) fn batch(&self) -> u64 {
        match self {
            Record::Commit { batch, .. }
            | Record::Version { batch, .. }
            | Record::Seal { batch, .. }
            | Record::Create { batch, .. }
            | Record::Delete { batch, .. }
            | Record::Cancel { batch, .. } => *batch,
            Record::Snapshot(s) => s.batch,
        }
    }

    /// The chunk a WAL record is about.
    pub(crate) fn handle(&self) -> Option<ChunkHandle> {
        match self {
            Record::Commit { handle, .. }
            | Record::Version { handle, .. }
            | Record::Seal { handle, .. }
            | Record::Create { handle, .. }
            | Record::Delete { handle, .. }
            | Record::Cancel { handle, .. } => Some(*handle),
            Record::Snapshot(_) => None,
        }
    }

    /// Appends the framed record to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        framed::frame_with(out, |out| self.encode_payload(out));
    }

    /// Appends the record's payload (tag and fields) to `out`.
    fn encode_payload(&self, out: &mut Vec<u8>) {
        let u64s = |out: &mut Vec<u8>, vals: &[u64]| {
            for v in vals {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        match self {
            Record::Commit {
                batch,
                handle,
                op,
                offset,
                len,
                first_block,
                crcs,
                data,
            } => {
                out.push(2);
                u64s(out, &[*batch, handle.0, op.0, *offset]);
                out.extend_from_slice(&len.to_le_bytes());
                u64s(out, &[*first_block]);
                put_crcs(out, crcs);
                match data {
                    Some(d) => {
                        out.push(1);
                        out.extend_from_slice(d);
                    }
                    None => out.push(0),
                }
            }
            Record::Version {
                batch,
                handle,
                version,
            } => {
                out.push(3);
                u64s(out, &[*batch, handle.0, *version]);
            }
            Record::Seal {
                batch,
                handle,
                length,
            } => {
                out.push(4);
                u64s(out, &[*batch, handle.0, *length]);
            }
            Record::Create {
                batch,
                handle,
                version,
            } => {
                out.push(6);
                u64s(out, &[*batch, handle.0, *version]);
            }
            Record::Delete { batch, handle } => {
                out.push(7);
                u64s(out, &[*batch, handle.0]);
            }
            Record::Cancel {
                batch,
                handle,
                cancelled,
            } => {
                out.push(8);
                u64s(out, &[*batch, handle.0, *cancelled]);
            }
            Record::Snapshot(s) => {
                out.push(5);
                u64s(out, &[s.batch, s.version]);
                out.push(u8::from(s.sealed) | u8::from(s.ops_dropped) << 1);
                u64s(out, &[s.length]);
                out.extend_from_slice(&(s.ops.len() as u32).to_le_bytes());
                for (op, r) in &s.ops {
                    u64s(out, &[op.0, r.offset]);
                    out.extend_from_slice(&r.len.to_le_bytes());
                }
                put_crcs(out, &s.crcs);
            }
        }
    }

    fn decode(payload: &Bytes) -> Option<Record> {
        let mut r = Reader {
            buf: payload,
            pos: 0,
        };
        let rec = match r.u8()? {
            2 => {
                let batch = r.u64()?;
                let handle = ChunkHandle(r.u64()?);
                let op = OpId(r.u64()?);
                let offset = r.u64()?;
                let len = r.u32()?;
                let first_block = r.u64()?;
                let crcs = r.crcs()?;
                let data = match r.u8()? {
                    0 => None,
                    1 => Some(r.bytes(len as usize)?),
                    _ => return None,
                };
                Record::Commit {
                    batch,
                    handle,
                    op,
                    offset,
                    len,
                    first_block,
                    crcs,
                    data,
                }
            }
            3 => Record::Version {
                batch: r.u64()?,
                handle: ChunkHandle(r.u64()?),
                version: r.u64()?,
            },
            4 => Record::Seal {
                batch: r.u64()?,
                handle: ChunkHandle(r.u64()?),
                length: r.u64()?,
            },
            6 => Record::Create {
                batch: r.u64()?,
                handle: ChunkHandle(r.u64()?),
                version: r.u64()?,
            },
            7 => Record::Delete {
                batch: r.u64()?,
                handle: ChunkHandle(r.u64()?),
            },
            8 => Record::Cancel {
                batch: r.u64()?,
                handle: ChunkHandle(r.u64()?),
                cancelled: r.u64()?,
            },
            5 => {
                let batch = r.u64()?;
                let version = r.u64()?;
                let flags = r.u8()?;
                if flags > 3 {
                    return None;
                }
                let length = r.u64()?;
                let n = r.u32()? as usize;
                let mut ops = Vec::with_capacity(n.min(r.remaining() / 20));
                for _ in 0..n {
                    let op = OpId(r.u64()?);
                    let offset = r.u64()?;
                    let len = r.u32()?;
                    ops.push((op, AppendRecord { offset, len }));
                }
                let crcs = r.crcs()?;
                Record::Snapshot(Box::new(Snapshot {
                    batch,
                    version,
                    sealed: flags & 1 != 0,
                    ops_dropped: flags & 2 != 0,
                    length,
                    ops,
                    crcs,
                }))
            }
            _ => return None,
        };
        (r.remaining() == 0).then_some(rec)
    }
}

fn put_crcs(out: &mut Vec<u8>, crcs: &[u32]) {
    out.extend_from_slice(&(crcs.len() as u32).to_le_bytes());
    for c in crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        b.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn bytes(&mut self, n: usize) -> Option<Bytes> {
        if self.remaining() < n {
            return None;
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Some(b)
    }
    fn crcs(&mut self) -> Option<Vec<u32>> {
        let n = self.u32()? as usize;
        if self.remaining() < n * 4 {
            return None;
        }
        (0..n).map(|_| self.u32()).collect()
    }
}

/// The records of a file, with the byte offset where each one starts.
pub(crate) struct Parsed {
    pub records: Vec<(u64, Record)>,
    /// Byte offset just past the last valid frame.
    pub valid_end: u64,
    /// Total file length (greater than `valid_end` when the tail is torn).
    pub file_len: u64,
    /// Valid frames found after the first bad one and dropped with the torn tail (they belong
    /// to the newest batch, whose write a crash may have left with holes); WAL only.
    pub dropped: usize,
}

/// The whole, checksummed, decodable frame at `pos` and the offset after it.
fn frame_at(bytes: &Bytes, pos: usize) -> Option<(Record, usize)> {
    let FrameAt::Ok(payload, end) = framed::frame_at(bytes, pos, MAX_PAYLOAD) else {
        return None;
    };
    // The payload as a `Bytes` of the file, so inline data is not copied.
    let payload = bytes.slice(end - payload.len()..end);
    Some((Record::decode(&payload)?, end))
}

/// Parses a file's bytes; stops at the first frame that does not decode (a torn tail).
pub(crate) fn parse(path: &Path, magic: &Magic, bytes: Bytes) -> Result<Parsed> {
    if bytes.len() < magic.len() || &bytes[..magic.len()] != magic {
        return Err(StorageError::CorruptMetadata {
            path: path.to_owned(),
            offset: 0,
            reason: format!("missing {} header", String::from_utf8_lossy(magic)),
        });
    }
    let mut pos = magic.len();
    let mut records = Vec::new();
    while let Some((rec, end)) = frame_at(&bytes, pos) {
        records.push((pos as u64, rec));
        pos = end;
    }
    Ok(Parsed {
        records,
        valid_end: pos as u64,
        file_len: bytes.len() as u64,
        dropped: 0,
    })
}

/// Tags of the records a WAL holds.
const WAL_TAGS: [u8; 6] = [2, 3, 4, 6, 7, 8];
/// Every WAL payload starts with its tag byte and its batch number.
const TAG_AND_BATCH: usize = 9;

/// The tag and batch number a frame at `pos` claims, whether or not it checks out.
fn claimed(bytes: &[u8], pos: usize) -> Option<(u8, u64)> {
    let p = bytes.get(pos + HEADER_LEN..pos + HEADER_LEN + TAG_AND_BATCH)?;
    let mut batch = [0u8; 8];
    batch.copy_from_slice(&p[1..]);
    Some((p[0], u64::from_le_bytes(batch)))
}

/// Every valid WAL frame at or after `from`, found by trying each byte offset (resynchronising
/// after damage), with its batch number. A candidate must claim a WAL tag, a length that fits
/// and a batch in `[min_batch, min_batch + 2^32)` before its CRC is computed, so junk costs a
/// few comparisons per byte.
fn resync(bytes: &Bytes, from: usize, min_batch: u64) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    let mut pos = from;
    while pos + HEADER_LEN + TAG_AND_BATCH <= bytes.len() {
        let plausible = framed::claimed_len(bytes, pos).is_some_and(|len| {
            len as usize >= TAG_AND_BATCH
                && len <= MAX_PAYLOAD
                && pos + HEADER_LEN + len as usize <= bytes.len()
        }) && claimed(bytes, pos).is_some_and(|(tag, batch)| {
            WAL_TAGS.contains(&tag) && batch.wrapping_sub(min_batch) < 1 << 32
        });
        if plausible && let Some((rec, end)) = frame_at(bytes, pos) {
            found.push((pos as u64, rec.batch()));
            pos = end;
        } else {
            pos += 1;
        }
    }
    found
}

/// Parses the write-ahead log, telling a torn tail from damage in the middle.
///
/// Writes to the WAL only append, and a batch's write starts only after the previous batch
/// is durable (`committer`), so a crash can only damage the newest batch's write: its frames
/// may be missing, cut, or (pages written back out of order) leave holes before frames of that
/// same batch. So at the first bad frame, the later bytes are searched for valid frames:
///
/// - none: a torn tail; the records before it are the log;
/// - valid frames of two or more batches: the older of them was durable before the newest
///   write began, and so was the bad frame before it: [`StorageError::CorruptWal`];
/// - valid frames of the newest batch only: a torn tail when the bad frame can belong to that
///   batch's write (a valid frame of the newest batch comes before it, or the frame does not
///   claim an older batch, as the zeros of an unwritten page do); `CorruptWal` when it claims a
///   batch between the last valid one before it and the newest.
///
/// Limit: damage inside the newest batch, or damage to the tag/batch bytes of the batch just
/// before it, is taken for a torn tail (those records are dropped with a warning, as an
/// unfinished write would be); a replica so shortened is repaired from its peers.
pub(crate) fn parse_wal(path: &Path, bytes: Bytes) -> Result<Parsed> {
    let mut parsed = parse(path, WAL_MAGIC, bytes.clone())?;
    let bad = parsed.valid_end as usize;
    if bad == bytes.len() {
        return Ok(parsed);
    }
    let prev = parsed.records.last().map_or(0, |(_, r)| r.batch());
    let later = resync(&bytes, bad + 1, prev);
    let Some(newest) = later.iter().map(|(_, b)| *b).max() else {
        return Ok(parsed);
    };
    let corrupt = |reason: String| {
        Err(StorageError::CorruptWal {
            path: path.to_owned(),
            offset: bad as u64,
            reason,
        })
    };
    let oldest = later.iter().map(|(_, b)| *b).min().unwrap_or(newest);
    if oldest < newest {
        return corrupt(format!(
            "a damaged record is followed by {} valid records of batches {oldest} to {newest} \
             (the first at byte {})",
            later.len(),
            later[0].0
        ));
    }
    if prev != newest
        && let Some((tag, batch)) = claimed(&bytes, bad)
        && WAL_TAGS.contains(&tag)
        && (prev..newest).contains(&batch)
    {
        return corrupt(format!(
            "a damaged record of batch {batch} is followed by {} valid records of the newer \
             batch {newest} (the first at byte {})",
            later.len(),
            later[0].0
        ));
    }
    parsed.dropped = later.len();
    Ok(parsed)
}

/// A chunk's durable metadata.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkMeta {
    /// Newest batch reflected in this state.
    pub batch: u64,
    pub version: u64,
    pub sealed: bool,
    pub length: u64,
    /// Op id -> its append, until dropped (`optable.rs`).
    pub ops: OpTable,
    pub crcs: Vec<u32>,
}

impl ChunkMeta {
    /// The state a snapshot describes; the reason when its op table does not fit its length.
    pub(crate) fn from_snapshot(s: Snapshot) -> Result<ChunkMeta, String> {
        let ops = if s.ops_dropped {
            if !s.ops.is_empty() {
                return Err(format!("{} ops in a dropped op table", s.ops.len()));
            }
            OpTable::Dropped
        } else {
            if let Some((op, r)) = s.ops.iter().find(|(_, r)| r.end() > s.length) {
                return Err(format!(
                    "op {op} ends at {} past the committed length {}",
                    r.end(),
                    s.length
                ));
            }
            OpTable::from_records(s.ops).ok_or("an op offset past 4 GiB")?
        };
        Ok(ChunkMeta {
            batch: s.batch,
            version: s.version,
            sealed: s.sealed,
            length: s.length,
            ops,
            crcs: s.crcs,
        })
    }

    /// Applies one WAL record. Returns `false` when the record does not follow from the state
    /// (a commit that does not start at the current length), which ends the chunk's replay.
    pub(crate) fn apply(&mut self, rec: &Record) -> bool {
        match rec {
            Record::Commit {
                op,
                offset,
                len,
                first_block,
                crcs,
                ..
            } => {
                // A chunk without its op table takes no appends (`optable.rs`).
                if *offset != self.length || self.sealed || self.ops.is_dropped() {
                    return false;
                }
                let end = offset + u64::from(*len);
                let expected_blocks = if *len == 0 {
                    0
                } else {
                    block_of(end - 1) - block_of(*offset) + 1
                };
                if *first_block != block_of(*offset) || crcs.len() as u64 != expected_blocks {
                    return false;
                }
                let rec = AppendRecord {
                    offset: *offset,
                    len: *len,
                };
                if !self.ops.insert(*op, rec) {
                    return false;
                }
                self.crcs.truncate(*first_block as usize);
                self.crcs.extend_from_slice(crcs);
                self.length = end;
            }
            Record::Version { version, .. } => self.version = *version,
            Record::Seal { length, .. } => {
                if *length != self.length {
                    return false;
                }
                self.sealed = true;
            }
            Record::Snapshot(_)
            | Record::Create { .. }
            | Record::Delete { .. }
            | Record::Cancel { .. } => return false,
        }
        self.batch = rec.batch();
        true
    }

    /// The state as a snapshot record.
    pub(crate) fn snapshot(&self) -> Record {
        Record::Snapshot(Box::new(Snapshot {
            batch: self.batch,
            version: self.version,
            sealed: self.sealed,
            ops_dropped: self.ops.is_dropped(),
            length: self.length,
            ops: self.ops.by_offset().unwrap_or_default(),
            crcs: self.crcs.clone(),
        }))
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
