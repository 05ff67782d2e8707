//! Typed data-plane errors and their mapping to and from the wire `(code, a, b, message)` form.

/// Typed errors a chunkserver reports to a client (codes on the wire in brackets), plus the
/// client-side transport failures (never sent on the wire).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// \[1\] The request could not be parsed or makes no sense.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// \[2\] A frame body was larger than the receiver accepts.
    #[error("frame too large: body of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Body length that was sent or requested.
        len: u64,
        /// Largest body the receiver accepts.
        max: u64,
    },
    /// \[3\] The chunkserver holds no replica of the chunk.
    #[error("chunk {handle} not found")]
    NotFound {
        /// The chunk handle.
        handle: u64,
    },
    /// \[4\] The replica's version does not match the version in the request.
    #[error("stale version: replica has version {have}, request has {got}")]
    StaleVersion {
        /// Version the chunkserver holds.
        have: u64,
        /// Version the request carried.
        got: u64,
    },
    /// \[5\] This chunkserver is not the primary for the chunk.
    #[error("not the primary for chunk {handle}")]
    NotPrimary {
        /// The chunk handle.
        handle: u64,
    },
    /// \[6\] The primary's lease on the chunk has expired.
    #[error("lease on chunk {handle} expired")]
    LeaseExpired {
        /// The chunk handle.
        handle: u64,
    },
    /// \[7\] The chunk is sealed at `length`; append to the next chunk.
    #[error("chunk {handle} is full (sealed at {length} bytes)")]
    ChunkFull {
        /// The chunk handle.
        handle: u64,
        /// Length at which the chunk was sealed.
        length: u64,
    },
    /// \[8\] The chunkserver is busy; retry later.
    #[error("chunkserver busy")]
    Busy,
    /// \[9\] Not enough replicas acknowledged the mutation.
    #[error("quorum not reached: {got} of {need} replicas")]
    QuorumNotReached {
        /// Replicas that acknowledged.
        got: u64,
        /// Replicas needed.
        need: u64,
    },
    /// \[10\] A stored block failed its checksum.
    #[error("checksum mismatch in chunk {handle}, block {block}")]
    ChecksumMismatch {
        /// The chunk handle.
        handle: u64,
        /// Index of the corrupt block.
        block: u64,
    },
    /// \[11\] The read starts or ends past the committed length.
    #[error("offset {offset} out of range (committed length {committed})")]
    OutOfRange {
        /// Offending offset.
        offset: u64,
        /// Committed length of the chunk.
        committed: u64,
    },
    /// \[12\] The operation (or, client side, the request) timed out.
    #[error("timed out")]
    Timeout,
    /// \[13\] The chunkserver is shutting down or overloaded.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// \[14\] An unexpected internal failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// \[15\] An `APPEND_AT` named another offset than the chunk's next one.
    #[error("offset mismatch: asked to append at {expected}, the chunk continues at {next}")]
    OffsetMismatch {
        /// Offset the request asked for.
        expected: u64,
        /// Offset the next append would get.
        next: u64,
    },
    /// \[16\] The chunk was sealed longer than the op retention ago and dropped its op table: it
    /// cannot say whether the op of this append is in it. Not "not here" (that is `ChunkFull`):
    /// a client that may have sent this op here before must take the append's outcome as
    /// unknown and must not send it to another chunk. Not retriable.
    #[error(
        "chunk {handle} (sealed at {length} bytes) no longer knows its op ids (op id retention \
         expired): whether this append is in it is unknown"
    )]
    OpRetentionExpired {
        /// The chunk handle.
        handle: u64,
        /// Length at which the chunk was sealed.
        length: u64,
    },
    /// \[17\] The chunk is sealed on this replica and holds the op of this append at
    /// `offset`, on this replica's word alone: the append counts as acknowledged only once a
    /// quorum of the chunk's replicas answer the same (the master may have sealed the chunk at
    /// a length one replica held, before its copies landed). Not retriable here.
    #[error(
        "chunk {handle} is sealed on this replica holding the op at {offset}; a quorum of replicas must confirm it"
    )]
    SealedWith {
        /// The chunk handle.
        handle: u64,
        /// The op's offset in the chunk.
        offset: u64,
    },
    /// \[18\] The request's chunk token was missing, forged, for another chunk or version,
    /// short of the right needed, or expired; nothing was done. The client asks the master
    /// for a fresh token and tries again.
    #[error("chunk token refused: {0}")]
    BadToken(String),
    /// Client side only: the connection failed with an I/O or protocol error.
    #[error("i/o error: {0}")]
    Io(String),
    /// Client side only: the connection was closed before a reply arrived.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Wire codes of the [`DataError`] variants that travel in `ERROR` frames.
pub mod code {
    /// [`super::DataError::BadRequest`].
    pub const BAD_REQUEST: u16 = 1;
    /// [`super::DataError::FrameTooLarge`].
    pub const FRAME_TOO_LARGE: u16 = 2;
    /// [`super::DataError::NotFound`].
    pub const NOT_FOUND: u16 = 3;
    /// [`super::DataError::StaleVersion`].
    pub const STALE_VERSION: u16 = 4;
    /// [`super::DataError::NotPrimary`].
    pub const NOT_PRIMARY: u16 = 5;
    /// [`super::DataError::LeaseExpired`].
    pub const LEASE_EXPIRED: u16 = 6;
    /// [`super::DataError::ChunkFull`].
    pub const CHUNK_FULL: u16 = 7;
    /// [`super::DataError::Busy`].
    pub const BUSY: u16 = 8;
    /// [`super::DataError::QuorumNotReached`].
    pub const QUORUM_NOT_REACHED: u16 = 9;
    /// [`super::DataError::ChecksumMismatch`].
    pub const CHECKSUM_MISMATCH: u16 = 10;
    /// [`super::DataError::OutOfRange`].
    pub const OUT_OF_RANGE: u16 = 11;
    /// [`super::DataError::Timeout`].
    pub const TIMEOUT: u16 = 12;
    /// [`super::DataError::Unavailable`].
    pub const UNAVAILABLE: u16 = 13;
    /// [`super::DataError::Internal`].
    pub const INTERNAL: u16 = 14;
    /// [`super::DataError::OffsetMismatch`].
    pub const OFFSET_MISMATCH: u16 = 15;
    /// [`super::DataError::OpRetentionExpired`].
    pub const OP_RETENTION_EXPIRED: u16 = 16;
    /// [`super::DataError::SealedWith`].
    pub const SEALED_WITH: u16 = 17;
    /// [`super::DataError::BadToken`].
    pub const BAD_TOKEN: u16 = 18;
}

impl DataError {
    /// Whether retrying the same request (possibly after a delay or re-lookup) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            DataError::Busy
                | DataError::Timeout
                | DataError::Unavailable(_)
                | DataError::QuorumNotReached { .. }
                | DataError::Io(_)
                | DataError::ConnectionClosed
                | DataError::LeaseExpired { .. }
                | DataError::NotPrimary { .. }
        )
    }

    /// Splits the error into its wire form `(code, a, b, message)`.
    ///
    /// Structured variants carry their fields in `a`/`b` and their human message as `message`;
    /// text variants carry their text. The client-only variants (`Io`, `ConnectionClosed`) are
    /// sent as `Internal` with a descriptive message.
    pub fn to_wire(&self) -> (u16, u64, u64, String) {
        use DataError::*;
        match self {
            BadRequest(m) => (code::BAD_REQUEST, 0, 0, m.clone()),
            FrameTooLarge { len, max } => (code::FRAME_TOO_LARGE, *len, *max, self.to_string()),
            NotFound { handle } => (code::NOT_FOUND, *handle, 0, self.to_string()),
            StaleVersion { have, got } => (code::STALE_VERSION, *have, *got, self.to_string()),
            NotPrimary { handle } => (code::NOT_PRIMARY, *handle, 0, self.to_string()),
            LeaseExpired { handle } => (code::LEASE_EXPIRED, *handle, 0, self.to_string()),
            ChunkFull { handle, length } => (code::CHUNK_FULL, *handle, *length, self.to_string()),
            Busy => (code::BUSY, 0, 0, self.to_string()),
            QuorumNotReached { got, need } => {
                (code::QUORUM_NOT_REACHED, *got, *need, self.to_string())
            }
            ChecksumMismatch { handle, block } => {
                (code::CHECKSUM_MISMATCH, *handle, *block, self.to_string())
            }
            OutOfRange { offset, committed } => {
                (code::OUT_OF_RANGE, *offset, *committed, self.to_string())
            }
            Timeout => (code::TIMEOUT, 0, 0, self.to_string()),
            Unavailable(m) => (code::UNAVAILABLE, 0, 0, m.clone()),
            Internal(m) => (code::INTERNAL, 0, 0, m.clone()),
            OffsetMismatch { expected, next } => {
                (code::OFFSET_MISMATCH, *expected, *next, self.to_string())
            }
            OpRetentionExpired { handle, length } => (
                code::OP_RETENTION_EXPIRED,
                *handle,
                *length,
                self.to_string(),
            ),
            SealedWith { handle, offset } => {
                (code::SEALED_WITH, *handle, *offset, self.to_string())
            }
            BadToken(m) => (code::BAD_TOKEN, 0, 0, m.clone()),
            Io(_) | ConnectionClosed => (code::INTERNAL, 0, 0, self.to_string()),
        }
    }

    /// Rebuilds an error from its wire form; unknown codes become `Internal(message)`.
    pub fn from_wire(code: u16, a: u64, b: u64, message: String) -> DataError {
        use DataError::*;
        match code {
            code::BAD_REQUEST => BadRequest(message),
            code::FRAME_TOO_LARGE => FrameTooLarge { len: a, max: b },
            code::NOT_FOUND => NotFound { handle: a },
            code::STALE_VERSION => StaleVersion { have: a, got: b },
            code::NOT_PRIMARY => NotPrimary { handle: a },
            code::LEASE_EXPIRED => LeaseExpired { handle: a },
            code::CHUNK_FULL => ChunkFull {
                handle: a,
                length: b,
            },
            code::BUSY => Busy,
            code::QUORUM_NOT_REACHED => QuorumNotReached { got: a, need: b },
            code::CHECKSUM_MISMATCH => ChecksumMismatch {
                handle: a,
                block: b,
            },
            code::OUT_OF_RANGE => OutOfRange {
                offset: a,
                committed: b,
            },
            code::TIMEOUT => Timeout,
            code::UNAVAILABLE => Unavailable(message),
            code::INTERNAL => Internal(message),
            code::OFFSET_MISMATCH => OffsetMismatch {
                expected: a,
                next: b,
            },
            code::OP_RETENTION_EXPIRED => OpRetentionExpired {
                handle: a,
                length: b,
            },
            code::SEALED_WITH => SealedWith {
                handle: a,
                offset: b,
            },
            code::BAD_TOKEN => BadToken(message),
            _ => Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classification() {
        assert!(DataError::Busy.is_retriable());
        assert!(DataError::ConnectionClosed.is_retriable());
        assert!(DataError::NotPrimary { handle: 1 }.is_retriable());
        assert!(!DataError::NotFound { handle: 1 }.is_retriable());
        assert!(
            !DataError::ChunkFull {
                handle: 1,
                length: 2
            }
            .is_retriable()
        );
        assert!(!DataError::BadRequest("x".into()).is_retriable());
        assert!(
            !DataError::OpRetentionExpired {
                handle: 1,
                length: 2
            }
            .is_retriable()
        );
    }

    #[test]
    fn unknown_code_becomes_internal() {
        assert_eq!(
            DataError::from_wire(999, 1, 2, "boom".into()),
            DataError::Internal("boom".into())
        );
    }

    #[test]
    fn client_only_variants_travel_as_internal() {
        let (c, _, _, m) = DataError::Io("reset".into()).to_wire();
        assert_eq!(c, code::INTERNAL);
        assert!(m.contains("reset"));
        let (c, _, _, _) = DataError::ConnectionClosed.to_wire();
        assert_eq!(c, code::INTERNAL);
    }
}
