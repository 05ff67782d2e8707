//! Self-describing records.
//!
//! Layout (little-endian): `b"GFSR"`, writer u32, seq u32, total length u32, CRC32C of the
//! payload u32, then the payload: `total - 20` bytes derived from (writer, seq). A record is at
//! least [`HEADER`] bytes. Parsing checks every field, so a torn or foreign byte range is
//! never taken for a record.

use bytes::Bytes;

/// Magic at the start of every record.
pub const MAGIC: &[u8; 4] = b"GFSR";
/// Bytes before the payload.
pub const HEADER: usize = 20;

/// Who wrote a record: the writer and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The writer (an appender task or process).
    pub writer: u32,
    /// The record's number among the writer's records.
    pub seq: u32,
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}s{}", self.writer, self.seq)
    }
}

fn payload_byte(id: RecordId, i: usize) -> u8 {
    // A cheap mix, different for every (writer, seq, position).
    let x = (id.writer as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((id.seq as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(i as u64 / 8);
    let x = (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> (8 * (i % 8))) as u8
}

/// Record `id`, `len` bytes in all (at least [`HEADER`]).
pub fn record(id: RecordId, len: usize) -> Bytes {
    let len = len.max(HEADER);
    let payload: Vec<u8> = (0..len - HEADER).map(|i| payload_byte(id, i)).collect();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&id.writer.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Bytes::from(out)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// The record that starts at the beginning of `b`, with its length, if a whole and intact one
/// does.
pub fn parse_record(b: &[u8]) -> Option<(RecordId, usize)> {
    if b.len() < HEADER || &b[..4] != MAGIC {
        return None;
    }
    let id = RecordId {
        writer: u32_at(b, 4),
        seq: u32_at(b, 8),
    };
    let len = u32_at(b, 12) as usize;
    if len < HEADER || len > b.len() {
        return None;
    }
    let payload = &b[HEADER..len];
    if crc32c::crc32c(payload) != u32_at(b, 16) {
        return None;
    }
    if payload
        .iter()
        .enumerate()
        .any(|(i, &x)| x != payload_byte(id, i))
    {
        return None;
    }
    Some((id, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_back_and_damage_is_seen() {
        let id = RecordId { writer: 7, seq: 42 };
        let r = record(id, 1000);
        assert_eq!(r.len(), 1000);
        assert_eq!(parse_record(&r), Some((id, 1000)));
        assert_eq!(parse_record(&r[..999]), None, "torn");
        let mut bad = r.to_vec();
        bad[500] ^= 1;
        assert_eq!(parse_record(&bad), None, "flipped byte");
        let other = record(RecordId { writer: 7, seq: 43 }, 1000);
        assert_ne!(r, other);
        assert_eq!(record(id, 3).len(), HEADER, "at least a header");
    }
}
