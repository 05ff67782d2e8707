//! gfs-dataplane: the client <-> chunkserver TCP data protocol.
//!
//! It owns the wire format ([`codec`]), the chunkserver side that serves it ([`server::run`],
//! calling a [`Handler`]) and the client side connection ([`DataClient`]). It knows nothing of
//! storage, replication or the master: the chunkserver plugs those in through [`Handler`].
//!
//! # Wire format
//!
//! Every frame = 16-byte header + body:
//!
//! | bytes | field      | encoding                    |
//! |-------|------------|-----------------------------|
//! | 0..2  | magic      | `b"GF"`                     |
//! | 2     | version    | `2` (u8)                    |
//! | 3     | kind       | u8 (see below)              |
//! | 4..12 | request_id | u64 LE                      |
//! | 12..16| body_len   | u32 LE (bytes of body only) |
//!
//! All integers in bodies are little-endian. Every request carries the master's token for its
//! chunk ([`gfs_host::token`]) as `token_len u16` then `token_len` bytes (at most
//! `MAX_TOKEN_LEN`, 256; empty for a chunkserver run without a master), right after its fixed
//! fields. The chunkserver checks it ([`Handler::admit`]) before any other work.
//!
//! Request kinds:
//! - `0x01 APPEND`: body = handle u64, version u64, op_id u64, token, then the record bytes
//!   (rest of body).
//! - `0x02 READ`: body = handle u64, version u64, offset u64, len u32, token (nothing after).
//! - `0x03 APPEND_AT`: body = handle u64, version u64, op_id u64, offset u64, token, then the
//!   record bytes: append only if the chunk continues at `offset` (else `OffsetMismatch`), so a
//!   single writer can keep several appends in flight and still fill the chunk in order.
//! - `0x04 FLUSH`: body = handle u64, version u64, token (nothing after): the primary tells
//!   enough secondaries the length a quorum holds that a reader finds it with the primary gone;
//!   the reply is `APPENDED` with that length (a streaming writer's last step).
//!
//! Reply kinds:
//! - `0x81 APPENDED`: body = offset u64 (offset inside the chunk).
//! - `0x82 DATA`: body = the bytes.
//! - `0xFF ERROR`: body = code u16, a u64, b u64, then a UTF-8 message (rest of body). The codes
//!   and the meaning of `a`/`b` per code are those of [`DataError`] (see [`DataError::to_wire`]);
//!   unknown codes decode to [`DataError::Internal`] with the message.
//!
//! Replies carry the request_id of their request; many requests may be in flight on one
//! connection (pipelining) and replies may come back in any order. Clients number requests from
//! 1; an `ERROR` with request_id 0 is about the connection itself (e.g. `Unavailable` "too many
//! connections").
//!
//! A frame whose body_len exceeds the configured `max_frame` (body bytes) is refused: the server
//! sends an `ERROR` with code `FrameTooLarge` (request_id from the header) and closes that
//! connection. Bad magic/version/unknown kind/short body: `ERROR BadRequest` (request_id 0 if the
//! header itself is unusable, i.e. bad magic or version) and close. The server keeps serving
//! every other connection.
//!
//! A READ body is exactly 30 bytes plus its token. A READ at an offset past the committed length answers
//! `OutOfRange` carrying the committed length, so clients probe a chunk's length with offset
//! `u64::MAX` and length 0. [`DataError::is_retriable`] says which errors a client retries
//! (Busy, Timeout, Unavailable, QuorumNotReached, LeaseExpired, NotPrimary, transport errors).

pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod server;

pub use client::{ClientConfig, DataClient};
pub use codec::{ClientCodec, CodecError, ServerCodec};
pub use error::DataError;
pub use frame::{ChunkRef, Frame, HEADER_LEN, MAGIC, REQUEST_OVERHEAD, Request, Response, VERSION};
pub use server::{Handler, ServerConfig, run};
