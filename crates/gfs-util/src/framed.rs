//! The frame layer of every gfs-rs file that is a log or a snapshot: an 8-byte magic naming the
//! format and its version, then frames `[len u32 LE][crc32c(payload) u32 LE][payload]`.
//!
//! The chunk store's write-ahead log and snapshots (`GFSWAL01`, `GFSMETA2`, gfs-storage's
//! `record.rs`) and the master's log segments and checkpoints (`GFSMLOG1`, `GFSMCKP1`,
//! gfs-master's `record.rs`) share it; each keeps its own payload format and its own magic
//! check. These bytes are in every existing data directory: the layout never changes (a new
//! layout would need a new magic in every file that uses it); `encoded_bytes_are_pinned` below
//! keeps it.
//!
//! Torn tails. Files are only appended to, so a crash can leave the last frame cut (its header
//! or its payload short) or partly written (its CRC does not match). [`frame_at`] tells the
//! clean end of the bytes ([`FrameAt::End`]) from a frame that is not whole and good
//! ([`FrameAt::Bad`]), and says where a bad frame would end if its length field is right, so a
//! reader can look for a good frame after it: none means a torn tail, one means damage in the
//! middle. What to do then is the reader's policy (the master cuts a torn tail of its newest
//! segment; the chunk store searches the rest of its WAL by batch).
//!
//! A zero-length payload is a valid frame (eight zero bytes: the CRC32C of nothing is 0); a
//! reader whose payloads are never empty refuses it when it decodes the payload.

/// Bytes of a file's magic, before its first frame: the format's name and version.
pub const MAGIC_LEN: usize = 8;

/// A file's magic (e.g. `b"GFSWAL01"`).
pub type Magic = [u8; MAGIC_LEN];

/// Bytes of a frame header: the payload length, then the payload's CRC32C.
pub const HEADER_LEN: usize = 8;

/// No bound on the length a frame may claim, for [`frame_at`] (beyond `u32`).
pub const ANY_LEN: u32 = u32::MAX;

/// Appends one frame holding `payload` to `out`.
///
/// # Panics
///
/// When `payload` is 4 GiB or more (its length would not fit the header).
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    frame_with(out, |out| out.extend_from_slice(payload));
}

/// Appends one frame to `out` whose payload `write` appends to `out` in place, without a copy.
///
/// # Panics
///
/// When the payload is 4 GiB or more (its length would not fit the header).
pub fn frame_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    write(out);
    let len = u32::try_from(out.len() - start - HEADER_LEN)
        .expect("a frame's payload is smaller than 4 GiB");
    let crc = crc32c::crc32c(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// What reading one frame at an offset found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAt<'a> {
    /// A whole frame with a good checksum: its payload, and the offset after it.
    Ok(&'a [u8], usize),
    /// The bytes end exactly here.
    End,
    /// Bytes that are not a whole, good frame: a cut header, a cut payload, a bad checksum, or
    /// a length past the reader's bound.
    Bad {
        /// Where the frame would end if its length field is right, when that is inside the
        /// bytes (`None` for a cut header or payload).
        next: Option<usize>,
    },
}

/// The payload length the frame header at `pos` claims, whether or not the frame is good;
/// `None` when the bytes end before a whole header.
pub fn claimed_len(buf: &[u8], pos: usize) -> Option<u32> {
    let h = buf.get(pos..pos.checked_add(HEADER_LEN)?)?;
    Some(u32::from_le_bytes([h[0], h[1], h[2], h[3]]))
}

/// Reads the frame at `pos` of `buf`; one claiming a payload longer than `max_len` is bad
/// ([`ANY_LEN`]: no bound), and its checksum is not computed.
pub fn frame_at(buf: &[u8], pos: usize, max_len: u32) -> FrameAt<'_> {
    if pos == buf.len() {
        return FrameAt::End;
    }
    let Some(h) = pos
        .checked_add(HEADER_LEN)
        .and_then(|end| buf.get(pos..end))
    else {
        return FrameAt::Bad { next: None };
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let Some(end) = (pos + HEADER_LEN).checked_add(len as usize) else {
        return FrameAt::Bad { next: None };
    };
    let next = (end <= buf.len()).then_some(end);
    if len > max_len {
        return FrameAt::Bad { next };
    }
    match buf.get(pos + HEADER_LEN..end) {
        Some(p) if crc32c::crc32c(p) == crc => FrameAt::Ok(p, end),
        _ => FrameAt::Bad { next },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = b"TESTMAG1".to_vec();
        for p in payloads {
            frame(p, &mut out);
        }
        out
    }

    #[test]
    fn encoded_bytes_are_pinned() {
        // The on-disk layout of every existing data directory: it must never change.
        let mut out = Vec::new();
        frame(b"abc", &mut out);
        assert_eq!(
            out,
            [
                3, 0, 0, 0, // len, u32 LE
                0xb7, 0x3f, 0x4b, 0x36, // crc32c("abc") = 0x364b_3fb7, u32 LE
                b'a', b'b', b'c',
            ]
        );
        let mut out = vec![0xff];
        frame(b"", &mut out);
        assert_eq!(out, [0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        // The standard check value of CRC32C (Castagnoli).
        let mut out = Vec::new();
        frame(b"123456789", &mut out);
        assert_eq!(&out[..8], [9, 0, 0, 0, 0x83, 0x92, 0x06, 0xe3]);
    }

    #[test]
    fn frame_with_writes_in_place_what_frame_copies() {
        let mut a = vec![1, 2];
        frame(b"payload", &mut a);
        let mut b = vec![1, 2];
        frame_with(&mut b, |out| {
            out.extend_from_slice(b"pay");
            out.extend_from_slice(b"load");
        });
        assert_eq!(a, b);
    }

    #[test]
    fn frames_read_back_in_order_to_the_end() {
        let buf = framed(&[b"one", b"", b"three"]);
        let mut pos = MAGIC_LEN;
        let mut got = Vec::new();
        loop {
            match frame_at(&buf, pos, ANY_LEN) {
                FrameAt::Ok(p, next) => {
                    got.push(p.to_vec());
                    pos = next;
                }
                FrameAt::End => break,
                FrameAt::Bad { next } => panic!("bad frame at {pos}, next {next:?}"),
            }
        }
        assert_eq!(got, [b"one".to_vec(), Vec::new(), b"three".to_vec()]);
        assert_eq!(pos, buf.len());
    }

    #[test]
    fn a_zero_length_frame_is_eight_zero_bytes() {
        let buf = [0u8; 8];
        assert_eq!(frame_at(&buf, 0, ANY_LEN), FrameAt::Ok(&[], 8));
        assert_eq!(frame_at(&buf, 8, ANY_LEN), FrameAt::End);
        assert_eq!(claimed_len(&buf, 0), Some(0));
    }

    #[test]
    fn every_cut_is_a_bad_frame_without_a_next() {
        let buf = framed(&[b"first", b"second frame"]);
        let second = MAGIC_LEN + HEADER_LEN + 5;
        for cut in second + 1..buf.len() {
            assert_eq!(
                frame_at(&buf[..cut], second, ANY_LEN),
                FrameAt::Bad { next: None },
                "cut at {cut}"
            );
        }
        assert_eq!(frame_at(&buf[..second], second, ANY_LEN), FrameAt::End);
        assert_eq!(claimed_len(&buf[..second + 7], second), None);
        assert_eq!(claimed_len(&buf[..second + 8], second), Some(12));
        // Past the end of the bytes.
        assert_eq!(
            frame_at(&buf, buf.len() + 1, ANY_LEN),
            FrameAt::Bad { next: None }
        );
    }

    #[test]
    fn a_bad_crc_is_a_bad_frame_that_says_where_it_would_end() {
        let mut buf = framed(&[b"first", b"second"]);
        let second = MAGIC_LEN + HEADER_LEN + 5;
        for at in [MAGIC_LEN + 4, MAGIC_LEN + HEADER_LEN + 2] {
            let mut b = buf.clone();
            b[at] ^= 0x01;
            assert_eq!(
                frame_at(&b, MAGIC_LEN, ANY_LEN),
                FrameAt::Bad { next: Some(second) },
                "flip at {at}"
            );
            // The frame after it is still good: damage in the middle, not a torn tail.
            assert!(matches!(frame_at(&b, second, ANY_LEN), FrameAt::Ok(p, _) if p == b"second"));
        }
        // A length field that claims past the end.
        buf[MAGIC_LEN + 1] = 1;
        assert_eq!(
            frame_at(&buf, MAGIC_LEN, ANY_LEN),
            FrameAt::Bad { next: None }
        );
    }

    #[test]
    fn a_length_past_the_bound_is_bad_before_its_crc() {
        let buf = framed(&[b"0123456789"]);
        assert!(matches!(frame_at(&buf, MAGIC_LEN, 10), FrameAt::Ok(..)));
        assert_eq!(
            frame_at(&buf, MAGIC_LEN, 9),
            FrameAt::Bad {
                next: Some(buf.len())
            }
        );
        // The largest length a header can claim.
        let mut huge = vec![0xff; HEADER_LEN];
        huge.extend_from_slice(b"x");
        assert_eq!(frame_at(&huge, 0, ANY_LEN), FrameAt::Bad { next: None });
        assert_eq!(claimed_len(&huge, 0), Some(u32::MAX));
    }
}
