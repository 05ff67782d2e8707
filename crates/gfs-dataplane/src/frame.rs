//! Protocol constants and the typed messages (requests, replies, frames) of the data plane.

use bytes::Bytes;

use crate::DataError;

/// Magic bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"GF";
/// Protocol version carried in every frame header (2: requests carry a chunk token).
pub const VERSION: u8 = 2;
/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// The most a request's body holds besides its record: fixed fields, and a chunk token of
/// the longest kind. A server taking records of `n` bytes takes frame bodies of
/// `n + REQUEST_OVERHEAD`.
pub const REQUEST_OVERHEAD: usize = 64 + 2 + gfs_host::token::MAX_TOKEN_LEN;

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

/// Fixed part of an `APPEND` body: handle, version, op_id, token length.
pub(crate) const APPEND_FIXED: usize = 26;
/// Fixed part of an `APPEND_AT` body: handle, version, op_id, offset, token length.
pub(crate) const APPEND_AT_FIXED: usize = 34;
/// Fixed part of a `READ` body: handle, version, offset, len, token length (then the token).
pub(crate) const READ_FIXED: usize = 30;
/// Fixed part of a `FLUSH` body: handle, version, token length (then the token).
pub(crate) const FLUSH_FIXED: usize = 18;
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
        /// The master's token for the chunk ([`gfs_host::token`]).
        token: Bytes,
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
        /// The master's token for the chunk.
        token: Bytes,
    },
    /// Have the primary of chunk `handle` at `version` tell enough secondaries the length a
    /// quorum holds that any replicas a reader asks include one that knows it; the reply
    /// (`Appended`) carries that length.
    Flush {
        /// The chunk handle.
        handle: u64,
        /// The version of the writer's lease.
        version: u64,
        /// The master's token for the chunk.
        token: Bytes,
    },
}

impl Request {
    /// Length of this request's body on the wire.
    pub fn body_len(&self) -> usize {
        match self {
            Request::Append {
                data,
                at: None,
                token,
                ..
            } => APPEND_FIXED + token.len() + data.len(),
            Request::Append { data, token, .. } => APPEND_AT_FIXED + token.len() + data.len(),
            Request::Read { token, .. } => READ_FIXED + token.len(),
            Request::Flush { token, .. } => FLUSH_FIXED + token.len(),
        }
    }

    /// The chunk this request is about, with its version and token.
    pub fn chunk(&self) -> (u64, u64, &Bytes) {
        match self {
            Request::Append {
                handle,
                version,
                token,
                ..
            }
            | Request::Read {
                handle,
                version,
                token,
                ..
            }
            | Request::Flush {
                handle,
                version,
                token,
            } => (*handle, *version, token),
        }
    }
}

/// A chunk as a data-plane request names it: its handle, the version the client believes
/// current, and the master's token for it (empty where no master checks: a chunkserver run
/// without one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkRef {
    /// The chunk handle.
    pub handle: u64,
    /// The chunk version.
    pub version: u64,
    /// The master's token for the chunk.
    pub token: Bytes,
}

impl ChunkRef {
    /// Chunk `handle` at `version` with no token (for a chunkserver that runs without a master).
    pub fn untokened(handle: u64, version: u64) -> ChunkRef {
        ChunkRef {
            handle,
            version,
            token: Bytes::new(),
        }
    }

    /// Chunk `handle` at `version` with `token`.
    pub fn new(handle: u64, version: u64, token: impl Into<Bytes>) -> ChunkRef {
        ChunkRef {
            handle,
            version,
            token: token.into(),
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
