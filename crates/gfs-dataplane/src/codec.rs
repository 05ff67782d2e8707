//! The frame codecs: [`ServerCodec`] (decodes requests, encodes replies) and [`ClientCodec`]
//! (encodes requests, decodes replies), plus the decoding error type [`CodecError`].
//!
//! Decoding never assumes a read returns a whole frame: the header is checked once its 16 bytes
//! are buffered, the body is split off only once all of it is buffered, and in between the codec
//! returns `Ok(None)` after reserving the room the frame still needs. At end of stream, bytes
//! left in the buffer (a frame cut off) are an error, as tokio-util's default `decode_eof`
//! makes them; an end between frames is a clean end.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::DataError;
use crate::frame::{
    APPEND_AT_FIXED, APPEND_FIXED, APPENDED_BODY, ERROR_FIXED, FLUSH_FIXED, Frame, HEADER_LEN,
    MAGIC, MAX_ERROR_MESSAGE, READ_FIXED, Request, Response, VERSION, kind,
};

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying transport failed, or the stream ended inside a frame.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The header announced a body larger than the configured maximum.
    #[error("frame {request_id}: body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Request id from the offending header.
        request_id: u64,
        /// Announced body length.
        len: u64,
        /// Configured maximum body length.
        max: u64,
    },
    /// The frame is not valid protocol (bad magic/version, unknown kind, wrong body length...).
    #[error("malformed frame {request_id}: {reason}")]
    Malformed {
        /// Request id from the header, or 0 if the header itself is unusable.
        request_id: u64,
        /// What is wrong with the frame.
        reason: String,
    },
}

/// A validated frame header.
#[derive(Clone, Copy, Debug)]
struct Header {
    kind: u8,
    request_id: u64,
    body_len: usize,
}

fn malformed(request_id: u64, reason: impl Into<String>) -> CodecError {
    CodecError::Malformed {
        request_id,
        reason: reason.into(),
    }
}

/// Body-length rule of a frame kind.
enum BodyRule {
    Exact(usize),
    AtLeast(usize),
}

/// Parses and validates the header at the front of `src` (which holds at least `HEADER_LEN`
/// bytes) without consuming it.
fn parse_header(
    src: &[u8],
    max_frame: usize,
    rule: impl Fn(u8) -> Option<BodyRule>,
) -> Result<Header, CodecError> {
    let mut h = &src[..HEADER_LEN];
    let magic = [h.get_u8(), h.get_u8()];
    if magic != MAGIC {
        return Err(malformed(0, format!("bad magic {magic:02x?}")));
    }
    let version = h.get_u8();
    if version != VERSION {
        return Err(malformed(0, format!("unsupported version {version}")));
    }
    let kind = h.get_u8();
    let request_id = h.get_u64_le();
    let body_len = h.get_u32_le();
    if body_len as u64 > max_frame as u64 {
        return Err(CodecError::TooLarge {
            request_id,
            len: body_len as u64,
            max: max_frame as u64,
        });
    }
    let body_len = body_len as usize;
    match rule(kind) {
        None => Err(malformed(
            request_id,
            format!("unknown frame kind {kind:#04x}"),
        )),
        Some(BodyRule::Exact(n)) if body_len != n => Err(malformed(
            request_id,
            format!("kind {kind:#04x} needs a body of {n} bytes, got {body_len}"),
        )),
        Some(BodyRule::AtLeast(n)) if body_len < n => Err(malformed(
            request_id,
            format!("kind {kind:#04x} needs a body of at least {n} bytes, got {body_len}"),
        )),
        Some(_) => Ok(Header {
            kind,
            request_id,
            body_len,
        }),
    }
}

/// Shared decoding loop: header check, wait for the body, split the frame off, parse the body.
fn decode_frame<T>(
    src: &mut BytesMut,
    max_frame: usize,
    rule: impl Fn(u8) -> Option<BodyRule>,
    parse: impl FnOnce(Header, Bytes) -> Result<T, CodecError>,
) -> Result<Option<Frame<T>>, CodecError> {
    if src.len() < HEADER_LEN {
        src.reserve(HEADER_LEN - src.len());
        return Ok(None);
    }
    let header = parse_header(src, max_frame, rule)?;
    let frame_len = HEADER_LEN + header.body_len;
    if src.len() < frame_len {
        src.reserve(frame_len - src.len());
        return Ok(None);
    }
    src.advance(HEADER_LEN);
    let body = src.split_to(header.body_len).freeze();
    let request_id = header.request_id;
    Ok(Some(Frame {
        request_id,
        body: parse(header, body)?,
    }))
}

/// Checks an outgoing body length against the limit and the `u32` length field.
fn check_out_len(request_id: u64, len: usize, max_frame: usize) -> Result<u32, CodecError> {
    match u32::try_from(len) {
        Ok(l) if len <= max_frame => Ok(l),
        _ => Err(CodecError::TooLarge {
            request_id,
            len: len as u64,
            max: max_frame as u64,
        }),
    }
}

fn put_header(dst: &mut BytesMut, kind: u8, request_id: u64, body_len: u32) {
    dst.reserve(HEADER_LEN + body_len as usize);
    dst.put_slice(&MAGIC);
    dst.put_u8(VERSION);
    dst.put_u8(kind);
    dst.put_u64_le(request_id);
    dst.put_u32_le(body_len);
}

/// Puts a request's token (at most `MAX_TOKEN_LEN` bytes, checked before the header went
/// out), after its length, on the wire.
fn put_token(dst: &mut BytesMut, token: &[u8]) {
    dst.put_u16_le(token.len() as u16);
    dst.put_slice(token);
}

/// Server side codec: decodes [`Request`] frames and encodes [`Response`] frames.
#[derive(Clone, Debug)]
pub struct ServerCodec {
    max_frame: usize,
}

impl ServerCodec {
    /// A codec refusing frame bodies longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
}

fn request_rule(kind: u8) -> Option<BodyRule> {
    match kind {
        kind::APPEND => Some(BodyRule::AtLeast(APPEND_FIXED)),
        kind::APPEND_AT => Some(BodyRule::AtLeast(APPEND_AT_FIXED)),
        kind::READ => Some(BodyRule::AtLeast(READ_FIXED)),
        kind::FLUSH => Some(BodyRule::AtLeast(FLUSH_FIXED)),
        _ => None,
    }
}

fn parse_request(header: Header, mut body: Bytes) -> Result<Request, CodecError> {
    // Body lengths were validated against `request_rule` in `parse_header`: the fixed part,
    // which ends with the token's length, is there.
    let id = header.request_id;
    // The token after the fixed part; READ and FLUSH end with it.
    let token = |body: &mut Bytes, last: bool| -> Result<Bytes, CodecError> {
        let n = usize::from(body.get_u16_le());
        if n > gfs_host::token::MAX_TOKEN_LEN {
            return Err(malformed(id, format!("a token of {n} bytes is too long")));
        }
        if body.len() < n || (last && body.len() != n) {
            return Err(malformed(
                id,
                format!("the body holds {} bytes after a token of {n}", body.len()),
            ));
        }
        Ok(body.split_to(n))
    };
    match header.kind {
        kind::APPEND | kind::APPEND_AT => {
            let handle = body.get_u64_le();
            let version = body.get_u64_le();
            let op_id = body.get_u64_le();
            let at = (header.kind == kind::APPEND_AT).then(|| body.get_u64_le());
            let token = token(&mut body, false)?;
            Ok(Request::Append {
                handle,
                version,
                op_id,
                token,
                at,
                data: body,
            })
        }
        kind::READ => {
            let (handle, version) = (body.get_u64_le(), body.get_u64_le());
            let (offset, len) = (body.get_u64_le(), body.get_u32_le());
            Ok(Request::Read {
                handle,
                version,
                offset,
                len,
                token: token(&mut body, true)?,
            })
        }
        kind::FLUSH => {
            let (handle, version) = (body.get_u64_le(), body.get_u64_le());
            Ok(Request::Flush {
                handle,
                version,
                token: token(&mut body, true)?,
            })
        }
        k => Err(malformed(id, format!("unknown request kind {k:#04x}"))),
    }
}

impl Decoder for ServerCodec {
    type Item = Frame<Request>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        decode_frame(src, self.max_frame, request_rule, parse_request)
    }
}

impl Encoder<Frame<Response>> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame<Response>, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let id = item.request_id;
        match item.body {
            Response::Appended { offset } => {
                let len = check_out_len(id, APPENDED_BODY, self.max_frame)?;
                put_header(dst, kind::APPENDED, id, len);
                dst.put_u64_le(offset);
            }
            Response::Data(data) => {
                let len = check_out_len(id, data.len(), self.max_frame)?;
                put_header(dst, kind::DATA, id, len);
                dst.put_slice(&data);
            }
            Response::Error(err) => {
                let (code, a, b, message) = err.to_wire();
                let message = gfs_util::human::cut(&message, MAX_ERROR_MESSAGE);
                let len = check_out_len(id, ERROR_FIXED + message.len(), self.max_frame)?;
                put_header(dst, kind::ERROR, id, len);
                dst.put_u16_le(code);
                dst.put_u64_le(a);
                dst.put_u64_le(b);
                dst.put_slice(message.as_bytes());
            }
        }
        Ok(())
    }
}

/// Client side codec: encodes [`Request`] frames and decodes [`Response`] frames.
#[derive(Clone, Debug)]
pub struct ClientCodec {
    max_frame: usize,
}

impl ClientCodec {
    /// A codec refusing frame bodies longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }
}

fn response_rule(kind: u8) -> Option<BodyRule> {
    match kind {
        kind::APPENDED => Some(BodyRule::Exact(APPENDED_BODY)),
        kind::DATA => Some(BodyRule::AtLeast(0)),
        kind::ERROR => Some(BodyRule::AtLeast(ERROR_FIXED)),
        _ => None,
    }
}

fn parse_response(header: Header, mut body: Bytes) -> Result<Response, CodecError> {
    // Body lengths were validated against `response_rule` in `parse_header`.
    match header.kind {
        kind::APPENDED => Ok(Response::Appended {
            offset: body.get_u64_le(),
        }),
        kind::DATA => Ok(Response::Data(body)),
        kind::ERROR => {
            let code = body.get_u16_le();
            let a = body.get_u64_le();
            let b = body.get_u64_le();
            let message = String::from_utf8(body.to_vec())
                .map_err(|_| malformed(header.request_id, "error message is not valid UTF-8"))?;
            Ok(Response::Error(DataError::from_wire(code, a, b, message)))
        }
        k => Err(malformed(
            header.request_id,
            format!("unknown reply kind {k:#04x}"),
        )),
    }
}

impl Decoder for ClientCodec {
    type Item = Frame<Response>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        decode_frame(src, self.max_frame, response_rule, parse_response)
    }
}

impl Encoder<Frame<Request>> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame<Request>, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let id = item.request_id;
        let len = check_out_len(id, item.body.body_len(), self.max_frame)?;
        let token_len = item.body.chunk().2.len();
        if token_len > gfs_host::token::MAX_TOKEN_LEN {
            return Err(malformed(
                id,
                format!("a token of {token_len} bytes is too long"),
            ));
        }
        match item.body {
            Request::Append {
                handle,
                version,
                op_id,
                token,
                at,
                data,
            } => {
                put_header(
                    dst,
                    if at.is_some() {
                        kind::APPEND_AT
                    } else {
                        kind::APPEND
                    },
                    id,
                    len,
                );
                dst.put_u64_le(handle);
                dst.put_u64_le(version);
                dst.put_u64_le(op_id);
                if let Some(at) = at {
                    dst.put_u64_le(at);
                }
                put_token(dst, &token);
                dst.put_slice(&data);
            }
            Request::Read {
                handle,
                version,
                offset,
                len: read_len,
                token,
            } => {
                put_header(dst, kind::READ, id, len);
                dst.put_u64_le(handle);
                dst.put_u64_le(version);
                dst.put_u64_le(offset);
                dst.put_u32_le(read_len);
                put_token(dst, &token);
            }
            Request::Flush {
                handle,
                version,
                token,
            } => {
                put_header(dst, kind::FLUSH, id, len);
                dst.put_u64_le(handle);
                dst.put_u64_le(version);
                put_token(dst, &token);
            }
        }
        Ok(())
    }
}

/// Frames written per flush at most: replies (or requests) queued together share a syscall.
pub(crate) const WRITE_BATCH: usize = 64;

/// Why [`write_batches`] stopped.
pub(crate) enum WriteEnd {
    /// Every sender is gone and everything queued was written.
    Drained,
    /// The stop token was cancelled.
    Stopped,
    /// A write failed.
    Failed(CodecError),
    /// One batch took longer than the timeout.
    TimedOut,
}

/// Writes frames from `rx`, up to [`WRITE_BATCH`] per flush, each batch bounded by `timeout`,
/// until every sender is gone, `stop` is cancelled, or a write fails.
pub(crate) async fn write_batches<T, C, W>(
    writer: &mut tokio_util::codec::FramedWrite<W, C>,
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    timeout: std::time::Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> WriteEnd
where
    C: Encoder<T, Error = CodecError>,
    W: tokio::io::AsyncWrite + Unpin,
{
    use futures::SinkExt;
    loop {
        let first = tokio::select! {
            f = rx.recv() => f,
            _ = stop.cancelled() => return WriteEnd::Stopped,
        };
        let Some(first) = first else {
            return WriteEnd::Drained;
        };
        let batch = async {
            writer.feed(first).await?;
            for _ in 1..WRITE_BATCH {
                match rx.try_recv() {
                    Ok(f) => writer.feed(f).await?,
                    Err(_) => break,
                }
            }
            writer.flush().await
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, batch) => r,
            _ = stop.cancelled() => return WriteEnd::Stopped,
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return WriteEnd::Failed(e),
            Err(_) => return WriteEnd::TimedOut,
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
