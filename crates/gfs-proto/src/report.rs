//! Chunk reports in pieces: however many replicas a chunkserver holds, none of its heartbeats
//! is larger than [`REPORT_PIECE_BYTES`] (the master's limit is [`crate::MAX_MESSAGE`]).
//!
//! A chunkserver builds one full heartbeat (its whole report, lagging replicas and `writing`
//! list) and [`heartbeat_pieces`] cuts it into heartbeats of at most a byte budget, which it
//! sends back to back. Every piece carries the header fields (id, used bytes, disk lost) and
//! the pass's `report_id`; `piece` numbers them from 0 and `more` is false on the last. A
//! server that sends its whole report in one heartbeat leaves all three at 0, which reads as a
//! whole pass of one piece. The master drops replicas a server no longer reports only when a
//! whole pass reached it in order (gfs-master's `Registry::heartbeat_piece`).

use prost::Message;
use prost::encoding::{encoded_len_varint, key_len, message};

use crate::v1::HeartbeatRequest;

/// Encoded bytes of one heartbeat piece at most: 1 MiB, about 45,000 replicas (a replica takes
/// about 22 bytes: a random 64-bit handle is a 10-byte varint).
pub const REPORT_PIECE_BYTES: usize = 1 << 20;

/// `full` cut into heartbeats of at most `budget` encoded bytes each (one item that is larger
/// alone goes alone), in order: chunks, then lagging replicas, then `writing`. Each piece has
/// `full`'s header fields and `report_id`; `piece` counts from 0 and `more` is set on every
/// piece but the last. Always at least one piece (an empty report is one empty piece).
pub fn heartbeat_pieces(full: HeartbeatRequest, budget: usize) -> Vec<HeartbeatRequest> {
    let HeartbeatRequest {
        chunks,
        lagging,
        writing,
        ..
    } = &full;
    let mut header = HeartbeatRequest {
        chunks: Vec::new(),
        lagging: Vec::new(),
        writing: Vec::new(),
        piece: u32::MAX,
        more: true,
        ..full.clone()
    };
    // The largest the header gets (the greatest piece number, `more` set).
    let header_len = header.encoded_len();
    header.piece = 0;
    header.more = false;
    let mut out = vec![header.clone()];
    let mut len = header_len;
    // Whether the current piece has begun its packed `writing` field (its key and length).
    let mut packed = false;
    let fits = |len: usize, n: usize, piece: &HeartbeatRequest| {
        len + n <= budget
            || (piece.chunks.is_empty() && piece.lagging.is_empty() && piece.writing.is_empty())
    };
    for c in chunks {
        let n = message::encoded_len(3, c);
        if !fits(len, n, out.last().unwrap_or(&header)) {
            out.push(header.clone());
            len = header_len;
        }
        if let Some(p) = out.last_mut() {
            p.chunks.push(*c);
        }
        len += n;
    }
    for l in lagging {
        let n = message::encoded_len(4, l);
        if !fits(len, n, out.last().unwrap_or(&header)) {
            out.push(header.clone());
            len = header_len;
        }
        if let Some(p) = out.last_mut() {
            p.lagging.push(l.clone());
        }
        len += n;
    }
    // The packed field's key and its length (a varint of at most 5 bytes), once per piece.
    let field = key_len(5) + 5;
    for &w in writing {
        let mut n = encoded_len_varint(w) + if packed { 0 } else { field };
        if !fits(len, n, out.last().unwrap_or(&header)) {
            out.push(header.clone());
            len = header_len;
            n = encoded_len_varint(w) + field;
        }
        if let Some(p) = out.last_mut() {
            p.writing.push(w);
        }
        packed = true;
        len += n;
    }
    let last = out.len() - 1;
    for (i, p) in out.iter_mut().enumerate() {
        p.piece = i as u32;
        p.more = i < last;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::v1::{ChunkInfo, LaggingReplica};

    fn full(chunks: u64, lagging: u64, writing: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            id: "cs-with-a-long-name".into(),
            used_bytes: u64::MAX,
            chunks: (0..chunks)
                .map(|i| ChunkInfo {
                    handle: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | (1 << 63),
                    version: i,
                    committed_length: 64 << 20,
                    sealed: i % 2 == 0,
                    unvouched: true,
                })
                .collect(),
            lagging: (0..lagging)
                .map(|i| LaggingReplica {
                    handle: u64::MAX - i,
                    address: format!("some-host-{i}.example:8081"),
                })
                .collect(),
            writing: (0..writing).map(|i| u64::MAX - i).collect(),
            disk_lost: true,
            report_id: u64::MAX,
            ..HeartbeatRequest::default()
        }
    }

    /// Every piece fits the budget, carries the header, is numbered in order with `more` on
    /// all but the last, and the pieces put together are the full heartbeat.
    #[test]
    fn pieces_fit_the_budget_and_add_up_to_the_whole_report() {
        for (budget, (c, l, w)) in [
            (4096, (1000, 100, 300)),
            (300, (50, 7, 90)),
            (1 << 20, (100_000, 10, 10)),
            (REPORT_PIECE_BYTES, (3, 0, 0)),
            (100, (0, 0, 0)),
            (1 << 20, (0, 0, 200_000)),
        ] {
            let whole = full(c, l, w);
            let pieces = heartbeat_pieces(whole.clone(), budget);
            let mut joined = HeartbeatRequest {
                chunks: vec![],
                lagging: vec![],
                writing: vec![],
                ..whole.clone()
            };
            for (i, p) in pieces.iter().enumerate() {
                assert!(
                    p.encoded_len() <= budget,
                    "piece {i} of {}: {} bytes > {budget}",
                    pieces.len(),
                    p.encoded_len()
                );
                assert_eq!(p.piece, i as u32);
                assert_eq!(p.more, i + 1 < pieces.len());
                assert_eq!(
                    (&p.id, p.used_bytes, p.disk_lost, p.report_id),
                    (
                        &whole.id,
                        whole.used_bytes,
                        whole.disk_lost,
                        whole.report_id
                    )
                );
                assert!(
                    pieces.len() == 1
                        || !(p.chunks.is_empty() && p.lagging.is_empty() && p.writing.is_empty())
                );
                joined.chunks.extend(p.chunks.iter().copied());
                joined.lagging.extend(p.lagging.iter().cloned());
                joined.writing.extend(p.writing.iter().copied());
            }
            assert_eq!(joined, whole, "budget {budget}");
        }
        // 100,000 replicas in 1 MiB pieces: 3 pieces, nearly full.
        assert_eq!(heartbeat_pieces(full(100_000, 0, 0), 1 << 20).len(), 3);
    }

    /// An item larger than the budget alone still goes, alone in its piece.
    #[test]
    fn an_item_larger_than_the_budget_goes_alone() {
        let mut hb = full(2, 0, 0);
        hb.lagging.push(LaggingReplica {
            handle: 1,
            address: "x".repeat(500),
        });
        hb.writing.push(1);
        let pieces = heartbeat_pieces(hb, 200);
        assert_eq!(pieces.len(), 3, "{pieces:?}");
        assert_eq!(pieces[1].lagging.len(), 1);
        assert!(pieces[1].chunks.is_empty() && pieces[1].writing.is_empty());
        assert_eq!(pieces[2].writing, [1]);
    }
}
