//! The per-chunk metadata log (`<dir>/<handle>.meta`).
//!
//! Layout: an 8-byte magic `GFSMETA1`, then frames `[len: u32 LE][crc32c(payload): u32 LE][payload]`.
//! A payload starts with a tag byte; integers are little-endian. Records:
//!
//! | tag | record | fields |
//! |---|---|---|
//! | 1 | Create | version u64 |
//! | 2 | Commit | batch u64, op u64, offset u64, len u32, first_block u64, n u32, n × crc u32 |
//! | 3 | Version | version u64 |
//! | 4 | Seal | length u64 |
//! | 5 | Snapshot | version u64, sealed u8, length u64, n u32, n × (op u64, offset u64, len u32), m u32, m × crc u32 |
//!
//! A Commit record carries the CRC32C of every block it touched, as of the end of that append (the
//! last one covers a partial block). The log is replayed in order; the first frame that does not
//! decode ends it (a torn tail). Invariant kept by the writer: a record is appended only after every
//! earlier batch is fsynced, so only the newest batch can describe bytes that never reached the disk.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::types::{AppendRecord, OpId};

/// Magic and format version at the start of every metadata file.
pub(crate) const MAGIC: &[u8; 8] = b"GFSMETA1";
/// Largest payload a frame may claim (a snapshot of a fully written chunk is well below this).
const MAX_PAYLOAD: u32 = 64 << 20;
const FRAME_HEADER: usize = 8;

/// One metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Create {
        version: u64,
    },
    Commit {
        batch: u64,
        op: OpId,
        offset: u64,
        len: u32,
        first_block: u64,
        crcs: Vec<u32>,
    },
    Version {
        version: u64,
    },
    Seal {
        length: u64,
    },
    Snapshot(Box<Snapshot>),
}

/// The full state of a chunk, as written by compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub version: u64,
    pub sealed: bool,
    pub length: u64,
    pub ops: Vec<(OpId, AppendRecord)>,
    pub crcs: Vec<u32>,
}

impl Record {
    /// Appends the framed record to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0u8; FRAME_HEADER]);
        match self {
            Record::Create { version } => {
                out.push(1);
                out.extend_from_slice(&version.to_le_bytes());
            }
            Record::Commit {
                batch,
                op,
                offset,
                len,
                first_block,
                crcs,
            } => {
                out.push(2);
                out.extend_from_slice(&batch.to_le_bytes());
                out.extend_from_slice(&op.0.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&first_block.to_le_bytes());
                put_crcs(out, crcs);
            }
            Record::Version { version } => {
                out.push(3);
                out.extend_from_slice(&version.to_le_bytes());
            }
            Record::Seal { length } => {
                out.push(4);
                out.extend_from_slice(&length.to_le_bytes());
            }
            Record::Snapshot(s) => {
                out.push(5);
                out.extend_from_slice(&s.version.to_le_bytes());
                out.push(u8::from(s.sealed));
                out.extend_from_slice(&s.length.to_le_bytes());
                out.extend_from_slice(&(s.ops.len() as u32).to_le_bytes());
                for (op, r) in &s.ops {
                    out.extend_from_slice(&op.0.to_le_bytes());
                    out.extend_from_slice(&r.offset.to_le_bytes());
                    out.extend_from_slice(&r.len.to_le_bytes());
                }
                put_crcs(out, &s.crcs);
            }
        }
        let payload_len = (out.len() - start - FRAME_HEADER) as u32;
        let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
        out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(payload: &[u8]) -> Option<Record> {
        let mut r = Reader(payload);
        let rec = match r.u8()? {
            1 => Record::Create { version: r.u64()? },
            2 => Record::Commit {
                batch: r.u64()?,
                op: OpId(r.u64()?),
                offset: r.u64()?,
                len: r.u32()?,
                first_block: r.u64()?,
                crcs: r.crcs()?,
            },
            3 => Record::Version { version: r.u64()? },
            4 => Record::Seal { length: r.u64()? },
            5 => {
                let version = r.u64()?;
                let sealed = r.u8()? != 0;
                let length = r.u64()?;
                let n = r.u32()? as usize;
                let mut ops = Vec::with_capacity(n.min(r.0.len() / 20));
                for _ in 0..n {
                    let op = OpId(r.u64()?);
                    let offset = r.u64()?;
                    let len = r.u32()?;
                    ops.push((op, AppendRecord { offset, len }));
                }
                let crcs = r.crcs()?;
                Record::Snapshot(Box::new(Snapshot {
                    version,
                    sealed,
                    length,
                    ops,
                    crcs,
                }))
            }
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }
}

fn put_crcs(out: &mut Vec<u8>, crcs: &[u32]) {
    out.extend_from_slice(&(crcs.len() as u32).to_le_bytes());
    for c in crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
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
    fn crcs(&mut self) -> Option<Vec<u32>> {
        let n = self.u32()? as usize;
        if self.0.len() < n * 4 {
            return None;
        }
        (0..n).map(|_| self.u32()).collect()
    }
}

/// The records of a metadata file, with the byte offset where each one starts.
pub(crate) struct ParsedLog {
    pub records: Vec<(u64, Record)>,
    /// Byte offset just past the last valid frame.
    pub valid_end: u64,
    /// Total file length (greater than `valid_end` when the tail is torn).
    pub file_len: u64,
}

/// Parses a metadata file's bytes; stops at the first frame that does not decode.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedLog> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StorageError::CorruptMetadata {
            path: path.to_owned(),
            offset: 0,
            reason: "missing GFSMETA1 header".into(),
        });
    }
    let mut pos = MAGIC.len();
    let mut records = Vec::new();
    while let Some(header) = bytes.get(pos..pos + FRAME_HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = bytes.get(pos + FRAME_HEADER..pos + FRAME_HEADER + len as usize) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        let Some(rec) = Record::decode(payload) else {
            break;
        };
        records.push((pos as u64, rec));
        pos += FRAME_HEADER + len as usize;
    }
    Ok(ParsedLog {
        records,
        valid_end: pos as u64,
        file_len: bytes.len() as u64,
    })
}

/// A chunk's metadata as rebuilt from its log.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkMeta {
    pub version: u64,
    pub sealed: bool,
    pub length: u64,
    pub ops: HashMap<OpId, AppendRecord>,
    pub crcs: Vec<u32>,
}

impl ChunkMeta {
    /// Applies one record. Returns `false` when the record does not follow from the state (a
    /// commit that does not start at the current length), which ends the replay.
    pub(crate) fn apply(&mut self, rec: &Record) -> bool {
        match rec {
            Record::Create { version } => {
                *self = ChunkMeta {
                    version: *version,
                    ..ChunkMeta::default()
                };
            }
            Record::Commit {
                op,
                offset,
                len,
                first_block,
                crcs,
                ..
            } => {
                if *offset != self.length || self.sealed {
                    return false;
                }
                let end = offset + u64::from(*len);
                let expected_first = crate::types::block_of(*offset);
                let expected_blocks = if *len == 0 {
                    0
                } else {
                    crate::types::block_of(end - 1) - expected_first + 1
                };
                if *first_block != expected_first || crcs.len() as u64 != expected_blocks {
                    return false;
                }
                let first = *first_block as usize;
                self.crcs.truncate(first);
                self.crcs.extend_from_slice(crcs);
                self.length = end;
                self.ops.insert(
                    *op,
                    AppendRecord {
                        offset: *offset,
                        len: *len,
                    },
                );
            }
            Record::Version { version } => self.version = *version,
            Record::Seal { length } => {
                if *length != self.length {
                    return false;
                }
                self.sealed = true;
            }
            Record::Snapshot(s) => {
                *self = ChunkMeta {
                    version: s.version,
                    sealed: s.sealed,
                    length: s.length,
                    ops: s.ops.iter().copied().collect(),
                    crcs: s.crcs.clone(),
                };
            }
        }
        true
    }

    /// The state as a snapshot record.
    pub(crate) fn snapshot(&self) -> Record {
        let mut ops: Vec<_> = self.ops.iter().map(|(k, v)| (*k, *v)).collect();
        ops.sort_by_key(|(_, r)| r.offset);
        Record::Snapshot(Box::new(Snapshot {
            version: self.version,
            sealed: self.sealed,
            length: self.length,
            ops,
            crcs: self.crcs.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(records: &[Record]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for r in records {
            r.encode_into(&mut out);
        }
        out
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::Create { version: 3 },
            Record::Commit {
                batch: 1,
                op: OpId(7),
                offset: 0,
                len: 10,
                first_block: 0,
                crcs: vec![0xdead_beef],
            },
            Record::Version { version: 4 },
            Record::Seal { length: 10 },
            Record::Snapshot(Box::new(Snapshot {
                version: 4,
                sealed: true,
                length: 10,
                ops: vec![(OpId(7), AppendRecord { offset: 0, len: 10 })],
                crcs: vec![1, 2],
            })),
        ]
    }

    #[test]
    fn records_round_trip() {
        let recs = sample();
        let bytes = log(&recs);
        let parsed = parse(Path::new("x"), &bytes).expect("parse");
        let got: Vec<_> = parsed.records.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got, recs);
        assert_eq!(parsed.valid_end, bytes.len() as u64);
    }

    #[test]
    fn every_truncation_yields_a_prefix() {
        let recs = sample();
        let bytes = log(&recs);
        for cut in MAGIC.len()..bytes.len() {
            let parsed = parse(Path::new("x"), &bytes[..cut]).expect("parse");
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
        let mut bytes = log(&recs);
        let second = parse(Path::new("x"), &bytes).expect("parse").records[1].0 as usize;
        bytes[second + 12] ^= 0x10;
        let parsed = parse(Path::new("x"), &bytes).expect("parse");
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.valid_end, second as u64);
    }

    #[test]
    fn missing_magic_is_an_error() {
        assert!(matches!(
            parse(Path::new("x"), b"NOTMAGIC"),
            Err(StorageError::CorruptMetadata { .. })
        ));
    }

    #[test]
    fn replay_refuses_a_commit_that_leaves_a_hole() {
        let mut m = ChunkMeta::default();
        assert!(m.apply(&Record::Create { version: 1 }));
        let hole = Record::Commit {
            batch: 1,
            op: OpId(1),
            offset: 5,
            len: 1,
            first_block: 0,
            crcs: vec![0],
        };
        assert!(!m.apply(&hole));
        assert_eq!(m.length, 0);
    }
}
