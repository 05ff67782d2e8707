//! Protocol constants and the typed messages (requests, replies, frames) of the data plane.

use bytes::Bytes;

use crate::DataError;

/// Magic bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"GF";
/// Protocol version carried in every frame header.
pub const VERSION: u8 = 1;
/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;

/// Frame kind codes as they appear in the header.
pub mod kind {
    /// Request: append a record.
    pub const APPEND: u8 = 0x01;
    /// Request: read a byte range.
    pub const READ: u8 = 0x02;
    /// Request: append a record only at a given offset (streaming writes).
    pub const APPEND_AT: u8 = 0x03;
    /// Request: make the quorum's length known beyond the primary (a writer's last step).
    pub const FLUSH: u8 = 0x04;
    /// Reply: the record was appended at an offset.
    pub const APPENDED: u8 = 0x81;
    /// Reply: the bytes that were read.
    pub const DATA: u8 = 0x82;
    /// Reply: a typed error.
    pub const ERROR: u8 = 0xFF;
}

/// Fixed part of an `APPEND` body: handle, version, op_id.
pub(crate) const APPEND_FIXED: usize = 24;
/// Fixed part of an `APPEND_AT` body: handle, version, op_id, offset.
pub(crate) const APPEND_AT_FIXED: usize = 32;
/// Exact length of a `READ` body: handle, version, offset, len.
pub(crate) const READ_BODY: usize = 28;
/// Exact length of a `FLUSH` body: handle, version.
pub(crate) const FLUSH_BODY: usize = 16;
/// Exact length of an `APPENDED` body: offset.
pub(crate) const APPENDED_BODY: usize = 8;
/// Fixed part of an `ERROR` body: code, a, b.
pub(crate) const ERROR_FIXED: usize = 18;
/// Longest error message put on the wire (longer ones are cut at a char boundary).
pub(crate) const MAX_ERROR_MESSAGE: usize = 4096;

/// A request on the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Append `data` as one record to chunk `handle` at `version`; `op_id` makes retries idempotent.
    Append {
        /// The chunk handle.
        handle: u64,
        /// The chunk version the client believes current.
        version: u64,
        /// Client-chosen operation id for deduplicating retries.
        op_id: u64,
        /// Only at this offset inside the chunk (`APPEND_AT`); `None` lets the primary choose.
        at: Option<u64>,
        /// The record bytes.
        data: Bytes,
    },
    /// Read `len` bytes at `offset` from chunk `handle` at `version`.
    Read {
        /// The chunk handle.
        handle: u64,
        /// The chunk version the client believes current.
        version: u64,
        /// Offset inside the chunk.
        offset: u64,
        /// Number of bytes to read.
        len: u32,
    },
    /// Have the primary of chunk `handle` at `version` tell enough secondaries the length a
    /// quorum holds that any replicas a reader asks include one that knows it; the reply
    /// (`Appended`) carries that length.
    Flush {
        /// The chunk handle.
        handle: u64,
        /// The version of the writer's lease.
        version: u64,
    },
}

impl Request {
    /// Length of this request's body on the wire.
    pub fn body_len(&self) -> usize {
        match self {
            Request::Append { data, at: None, .. } => APPEND_FIXED + data.len(),
            Request::Append { data, .. } => APPEND_AT_FIXED + data.len(),
            Request::Read { .. } => READ_BODY,
            Request::Flush { .. } => FLUSH_BODY,
        }
    }
}

/// A reply on the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The record was appended at `offset` inside the chunk.
    Appended {
        /// Offset of the record inside the chunk.
        offset: u64,
    },
    /// The bytes that were read.
    Data(Bytes),
    /// The request failed with a typed error.
    Error(DataError),
}

/// A frame: request id plus body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<T> {
    /// Id chosen by the client; replies carry the id of their request.
    pub request_id: u64,
    /// The request or reply.
    pub body: T,
}
