//! Unit tests of the frame codecs.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::frame::kind;
use futures::StreamExt;
use proptest::prelude::*;
use tokio_util::codec::FramedRead;

const MAX: usize = 1024;

fn enc_req(id: u64, req: Request) -> BytesMut {
    let mut buf = BytesMut::new();
    ClientCodec::new(MAX)
        .encode(
            Frame {
                request_id: id,
                body: req,
            },
            &mut buf,
        )
        .unwrap();
    buf
}

fn enc_resp(id: u64, resp: Response) -> BytesMut {
    let mut buf = BytesMut::new();
    ServerCodec::new(MAX)
        .encode(
            Frame {
                request_id: id,
                body: resp,
            },
            &mut buf,
        )
        .unwrap();
    buf
}

/// A raw frame with an arbitrary header and body.
fn raw(magic: [u8; 2], version: u8, kind: u8, id: u64, body_len: u32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_slice(&magic);
    b.put_u8(version);
    b.put_u8(kind);
    b.put_u64_le(id);
    b.put_u32_le(body_len);
    b.put_slice(body);
    b
}

fn all_wire_errors() -> Vec<DataError> {
    vec![
        DataError::BadRequest("no good".into()),
        DataError::FrameTooLarge { len: 99, max: 10 },
        DataError::NotFound { handle: 7 },
        DataError::StaleVersion { have: 3, got: 2 },
        DataError::NotPrimary { handle: 8 },
        DataError::LeaseExpired { handle: 9 },
        DataError::ChunkFull {
            handle: 10,
            length: 64 << 20,
        },
        DataError::Busy,
        DataError::QuorumNotReached { got: 1, need: 2 },
        DataError::ChecksumMismatch {
            handle: 11,
            block: 12,
        },
        DataError::OutOfRange {
            offset: 500,
            committed: 400,
        },
        DataError::Timeout,
        DataError::Unavailable("shutting down".into()),
        DataError::Internal("disk on fire — ünïcödé".into()),
        DataError::OffsetMismatch {
            expected: 1 << 33,
            next: 12,
        },
        DataError::OpRetentionExpired {
            handle: 13,
            length: 1 << 26,
        },
        DataError::SealedWith {
            handle: 14,
            offset: 3 << 20,
        },
        DataError::BadToken("chunk token expired 5 ms ago".into()),
    ]
}

#[test]
fn request_round_trip_every_kind() {
    let reqs = [
        Request::Append {
            handle: 1,
            version: 2,
            op_id: 3,
            token: Bytes::from_static(b"tok"),
            at: None,
            data: Bytes::from_static(b"hello record"),
        },
        Request::Append {
            handle: u64::MAX,
            version: 0,
            op_id: 42,
            token: Bytes::from_static(b"tok"),
            at: None,
            data: Bytes::new(),
        },
        Request::Append {
            handle: 9,
            version: 8,
            op_id: 7,
            token: Bytes::from_static(b"tok"),
            at: Some(1 << 40),
            data: Bytes::from_static(b"at an offset"),
        },
        Request::Read {
            handle: 5,
            version: 6,
            offset: 7,
            len: u32::MAX,
            token: Bytes::new(),
        },
        Request::Flush {
            handle: 3,
            version: u64::MAX,
            token: Bytes::from(vec![9u8; gfs_host::token::MAX_TOKEN_LEN]),
        },
    ];
    for (i, req) in reqs.into_iter().enumerate() {
        let id = 100 + i as u64;
        let mut buf = enc_req(id, req.clone());
        assert_eq!(buf.len(), HEADER_LEN + req.body_len());
        let got = ServerCodec::new(MAX).decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            Frame {
                request_id: id,
                body: req
            }
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn response_round_trip_every_kind_and_error() {
    let mut resps = vec![
        Response::Appended { offset: 12345 },
        Response::Data(Bytes::from_static(b"some bytes")),
        Response::Data(Bytes::new()),
    ];
    resps.extend(all_wire_errors().into_iter().map(Response::Error));
    for (i, resp) in resps.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut buf = enc_resp(id, resp.clone());
        let got = ClientCodec::new(MAX).decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            Frame {
                request_id: id,
                body: resp
            }
        );
        assert!(buf.is_empty());
    }
}

#[test]
fn error_frame_layout_is_code_a_b_message() {
    let buf = enc_resp(
        9,
        Response::Error(DataError::StaleVersion { have: 5, got: 4 }),
    );
    assert_eq!(&buf[..2], b"GF");
    assert_eq!(buf[2], VERSION);
    assert_eq!(buf[3], kind::ERROR);
    assert_eq!(u64::from_le_bytes(buf[4..12].try_into().unwrap()), 9);
    let body_len = u32::from_le_bytes(buf[12..16].try_into().unwrap()) as usize;
    assert_eq!(buf.len(), HEADER_LEN + body_len);
    let body = &buf[HEADER_LEN..];
    assert_eq!(u16::from_le_bytes(body[0..2].try_into().unwrap()), 4);
    assert_eq!(u64::from_le_bytes(body[2..10].try_into().unwrap()), 5);
    assert_eq!(u64::from_le_bytes(body[10..18].try_into().unwrap()), 4);
    assert!(std::str::from_utf8(&body[18..]).unwrap().contains("stale"));
}

#[test]
fn unknown_error_code_decodes_to_internal() {
    let mut body = BytesMut::new();
    body.put_u16_le(777);
    body.put_u64_le(1);
    body.put_u64_le(2);
    body.put_slice(b"from the future");
    let mut buf = raw(MAGIC, VERSION, kind::ERROR, 3, body.len() as u32, &body);
    let got = ClientCodec::new(MAX).decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        got.body,
        Response::Error(DataError::Internal("from the future".into()))
    );
}

#[test]
fn one_byte_at_a_time_decodes_once_complete() {
    let req = Request::Append {
        handle: 1,
        version: 1,
        op_id: 1,
        token: Bytes::from_static(b"tok"),
        at: None,
        data: Bytes::from(vec![7u8; 100]),
    };
    let wire = enc_req(77, req.clone());
    let mut codec = ServerCodec::new(MAX);
    let mut buf = BytesMut::new();
    for (i, b) in wire.iter().enumerate() {
        buf.put_u8(*b);
        let got = codec.decode(&mut buf).unwrap();
        if i + 1 < wire.len() {
            assert!(got.is_none(), "decoded early at byte {i}");
            // The codec reserves what the frame still needs.
            let need = if i + 1 < HEADER_LEN {
                HEADER_LEN
            } else {
                wire.len()
            };
            assert!(buf.capacity() >= need, "capacity not reserved at byte {i}");
        } else {
            assert_eq!(
                got,
                Some(Frame {
                    request_id: 77,
                    body: req.clone()
                })
            );
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn two_frames_in_one_buffer() {
    let a = Request::Read {
        handle: 1,
        version: 2,
        offset: 3,
        len: 4,
        token: Bytes::new(),
    };
    let b = Request::Append {
        handle: 5,
        version: 6,
        op_id: 7,
        token: Bytes::from_static(b"tok"),
        at: None,
        data: Bytes::from_static(b"xyz"),
    };
    let mut buf = enc_req(1, a.clone());
    buf.extend_from_slice(&enc_req(2, b.clone()));
    // Plus half of a third frame, which must stay buffered.
    let third = enc_req(3, a.clone());
    buf.extend_from_slice(&third[..10]);
    let mut codec = ServerCodec::new(MAX);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().body, a);
    let second = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!((second.request_id, second.body), (2, b));
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(buf.len(), 10);
}

fn expect_malformed(res: Result<Option<impl std::fmt::Debug>, CodecError>, want_id: u64) {
    match res {
        Err(CodecError::Malformed { request_id, .. }) => assert_eq!(request_id, want_id),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn bad_magic_is_malformed() {
    let mut buf = raw(*b"XY", VERSION, kind::READ, 5, 30, &[0; 30]);
    expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 0);
}

#[test]
fn bad_version_is_malformed() {
    // Version 1 (no tokens) is refused as well as any other.
    for v in [1, 3] {
        let mut buf = raw(MAGIC, v, kind::READ, 5, 30, &[0; 30]);
        expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 0);
    }
}

#[test]
fn unknown_kind_is_malformed_with_request_id() {
    let mut buf = raw(MAGIC, VERSION, 0x33, 5, 0, &[]);
    expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 5);
    // A reply kind is not a request kind, and vice versa.
    let mut buf = raw(MAGIC, VERSION, kind::DATA, 6, 0, &[]);
    expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 6);
    let mut buf = raw(MAGIC, VERSION, kind::READ, 7, 30, &[0; 30]);
    expect_malformed(ClientCodec::new(MAX).decode(&mut buf), 7);
}

#[test]
fn short_bodies_are_malformed() {
    let cases: [(u8, usize, bool); 6] = [
        (kind::APPEND, 25, true),
        (kind::APPEND_AT, 33, true),
        (kind::READ, 29, true),
        (kind::FLUSH, 17, true),
        (kind::APPENDED, 7, false),
        (kind::ERROR, 17, false),
    ];
    for (k, len, is_request) in cases {
        let mut buf = raw(MAGIC, VERSION, k, 11, len as u32, &vec![0; len]);
        if is_request {
            expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 11);
        } else {
            expect_malformed(ClientCodec::new(MAX).decode(&mut buf), 11);
        }
    }
    // READ must be exactly 30 bytes plus its token: a longer body is malformed too.
    let mut buf = raw(MAGIC, VERSION, kind::READ, 12, 31, &[0; 31]);
    expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 12);
}

#[test]
fn a_token_longer_than_its_body_or_the_limit_is_malformed() {
    // READ: a token length that runs past the body, or leaves bytes after it.
    for token_len in [1u16, 5] {
        let mut body = vec![0u8; 28];
        body.extend_from_slice(&token_len.to_le_bytes());
        body.extend_from_slice(&[7; 3]);
        let mut buf = raw(MAGIC, VERSION, kind::READ, 13, body.len() as u32, &body);
        expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 13);
    }
    // APPEND: a token longer than any the master issues, however long the body.
    let too_long = gfs_host::token::MAX_TOKEN_LEN as u16 + 1;
    let mut body = vec![0u8; 24];
    body.extend_from_slice(&too_long.to_le_bytes());
    body.extend_from_slice(&vec![1u8; usize::from(too_long) + 10]);
    let mut buf = raw(MAGIC, VERSION, kind::APPEND, 14, body.len() as u32, &body);
    expect_malformed(ServerCodec::new(MAX).decode(&mut buf), 14);
    // And the encoder refuses to send one, writing nothing.
    let mut out = BytesMut::new();
    let req = Request::Flush {
        handle: 1,
        version: 1,
        token: Bytes::from(vec![0u8; usize::from(too_long)]),
    };
    let err = ClientCodec::new(MAX).encode(
        Frame {
            request_id: 15,
            body: req,
        },
        &mut out,
    );
    assert!(matches!(
        err,
        Err(CodecError::Malformed { request_id: 15, .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn invalid_utf8_error_message_is_malformed() {
    let mut body = vec![0u8; 18];
    body.extend_from_slice(&[0xff, 0xfe]);
    let mut buf = raw(MAGIC, VERSION, kind::ERROR, 4, body.len() as u32, &body);
    expect_malformed(ClientCodec::new(MAX).decode(&mut buf), 4);
}

#[test]
fn oversized_body_is_too_large_with_request_id() {
    // Only the header is present: the limit is enforced before waiting for the body.
    let mut buf = raw(MAGIC, VERSION, kind::APPEND, 31337, MAX as u32 + 1, &[]);
    match ServerCodec::new(MAX).decode(&mut buf) {
        Err(CodecError::TooLarge {
            request_id,
            len,
            max,
        }) => assert_eq!((request_id, len, max), (31337, MAX as u64 + 1, MAX as u64)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Exactly max is fine.
    let mut buf = raw(MAGIC, VERSION, kind::DATA, 1, MAX as u32, &vec![1; MAX]);
    assert!(ClientCodec::new(MAX).decode(&mut buf).unwrap().is_some());
}

#[test]
fn encoder_refuses_oversized_frames() {
    let mut buf = BytesMut::new();
    let err = ClientCodec::new(MAX)
        .encode(
            Frame {
                request_id: 8,
                body: Request::Append {
                    handle: 1,
                    version: 1,
                    op_id: 1,
                    token: Bytes::from_static(b"tok"),
                    at: None,
                    data: Bytes::from(vec![0; MAX]),
                },
            },
            &mut buf,
        )
        .unwrap_err();
    assert!(matches!(err, CodecError::TooLarge { request_id: 8, .. }));
    assert!(buf.is_empty());
}

#[tokio::test]
async fn eof_between_frames_ends_cleanly() {
    let mut wire = enc_req(
        1,
        Request::Read {
            handle: 1,
            version: 1,
            offset: 0,
            len: 1,
            token: Bytes::new(),
        },
    );
    wire.extend_from_slice(&enc_req(
        2,
        Request::Read {
            handle: 2,
            version: 1,
            offset: 0,
            len: 1,
            token: Bytes::new(),
        },
    ));
    let mut frames = FramedRead::new(&wire[..], ServerCodec::new(MAX));
    assert_eq!(frames.next().await.unwrap().unwrap().request_id, 1);
    assert_eq!(frames.next().await.unwrap().unwrap().request_id, 2);
    assert!(frames.next().await.is_none());
}

#[tokio::test]
async fn eof_inside_a_frame_is_an_error() {
    let whole = enc_req(
        1,
        Request::Append {
            handle: 1,
            version: 1,
            op_id: 1,
            token: Bytes::from_static(b"tok"),
            at: None,
            data: Bytes::from_static(b"0123456789"),
        },
    );
    // Cut inside the body, and inside the header.
    for cut in [whole.len() - 3, HEADER_LEN - 5] {
        let mut frames = FramedRead::new(&whole[..cut], ServerCodec::new(MAX));
        match frames.next().await {
            Some(Err(CodecError::Io(_))) => {}
            other => panic!("cut at {cut}: expected an Io error, got {other:?}"),
        }
    }
}

fn arb_token() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..=gfs_host::token::MAX_TOKEN_LEN).prop_map(Bytes::from)
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(any::<u8>(), 0..300),
            arb_token(),
        )
            .prop_map(
                |(handle, version, op_id, at, data, token)| Request::Append {
                    handle,
                    version,
                    op_id,
                    token,
                    at,
                    data: Bytes::from(data),
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            arb_token()
        )
            .prop_map(|(handle, version, offset, len, token)| Request::Read {
                handle,
                version,
                offset,
                len,
                token,
            }),
        (any::<u64>(), any::<u64>(), arb_token()).prop_map(|(handle, version, token)| {
            Request::Flush {
                handle,
                version,
                token,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prop_request_round_trip(id in any::<u64>(), req in arb_request(), split in any::<prop::sample::Index>()) {
        let wire = enc_req(id, req.clone());
        let mut codec = ServerCodec::new(MAX);
        // Deliver in two arbitrary pieces.
        let at = split.index(wire.len() + 1);
        let mut buf = BytesMut::from(&wire[..at]);
        let early = codec.decode(&mut buf).unwrap();
        if at < wire.len() {
            prop_assert!(early.is_none());
            buf.extend_from_slice(&wire[at..]);
            let got = codec.decode(&mut buf).unwrap();
            prop_assert_eq!(got, Some(Frame { request_id: id, body: req }));
        } else {
            prop_assert_eq!(early, Some(Frame { request_id: id, body: req }));
        }
        prop_assert!(buf.is_empty());
    }
}

/// Feeds `bytes` to a decoder until it wants more or refuses: it never panics, never loops,
/// and never reserves past one frame of the limit.
fn decode_all<D: Decoder>(mut codec: D, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    for _ in 0..=bytes.len() {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(_)) => prop_assert!(buf.len() < before, "a frame consumed nothing"),
            Ok(None) | Err(_) => {
                prop_assert!(buf.capacity() <= MAX + HEADER_LEN + bytes.len());
                return Ok(());
            }
        }
    }
    prop_assert!(false, "the decoder did not stop");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Bytes off the network, garbage or valid frames with bytes changed, cut anywhere.
    #[test]
    fn prop_decoders_refuse_or_parse_any_bytes(
        garbage in prop::collection::vec(any::<u8>(), 0..2 * MAX),
        id in any::<u64>(),
        req in arb_request(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        decode_all(ServerCodec::new(MAX), &garbage)?;
        decode_all(ClientCodec::new(MAX), &garbage)?;
        let mut wire = enc_req(id, req).to_vec();
        for (at, b) in flips {
            let i = at.index(wire.len());
            wire[i] ^= b;
        }
        wire.truncate(cut.index(wire.len() + 1));
        decode_all(ServerCodec::new(MAX), &wire)?;
        decode_all(ClientCodec::new(MAX), &wire)?;
    }
}
