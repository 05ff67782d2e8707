//! What a client call can fail with.

use gfs_dataplane::DataError;
use tonic::Code;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The path was refused (relative, empty component, `..`, too long...); the master's
    /// message names the path and the problem.
    #[error("{0}")]
    InvalidPath(String),
    /// No such file or directory (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// The target exists (the message names it).
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation does not apply (not a directory, directory not empty...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A record append larger than a quarter of a chunk.
    #[error("record of {len} bytes exceeds the limit of {max} (a quarter of a chunk)")]
    RecordTooLarge {
        /// Record length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Retriable failures went on past the call's deadline; `last` is the newest.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// No replica could serve a chunk.
    #[error("chunk {handle} of {path}: no replica could serve it ({last})")]
    NoReplica {
        /// The file.
        path: String,
        /// The chunk.
        handle: u64,
        /// The last replica's failure.
        last: String,
    },
    /// An append's outcome is unknown and will stay so: an earlier attempt may have committed
    /// it in chunk `handle`, which was sealed longer than the chunkservers' op retention ago and
    /// no longer knows its op ids. The record is in the file at most once; it was not sent to
    /// any other chunk. Happens only if the append retried for longer than that retention.
    #[error(
        "append to {path}: outcome unknown, op id retention expired (an earlier attempt may be \
         in chunk {handle}, which no longer knows its op ids); the record is in the file at \
         most once"
    )]
    OutcomeUnknown {
        /// The file.
        path: String,
        /// The chunk that may hold the record.
        handle: u64,
    },
    /// A chunkserver refused the request for good.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The master refused the request for good.
    #[error("master: {0}")]
    Master(String),
    /// The master sent a reply this client cannot understand.
    #[error("invalid reply from the master: {0}")]
    Protocol(#[from] ProtocolError),
    /// The length of chunk `index` of `path` could not be learned (`Client::stat_detail`).
    #[error("{path}: length of chunk {index}: {error}")]
    ChunkLength {
        /// The file.
        path: String,
        /// The chunk's position in the file.
        index: u64,
        /// Why.
        error: Box<ClientError>,
    },
    /// The master address is unusable or unreachable.
    #[error("cannot reach the master at {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// A reply from the master that breaks the protocol: a required field missing, a value this
/// client does not know. Converting a protobuf message into the client's types fails with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(String);

impl ProtocolError {
    /// A protocol error saying `what` is wrong.
    pub fn new(what: impl Into<String>) -> ProtocolError {
        ProtocolError(what.into())
    }
}

/// Result alias of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// Maps a master status: namespace errors keep their kind.
    pub(crate) fn from_status(s: tonic::Status) -> ClientError {
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => ClientError::InvalidPath(msg),
            Code::NotFound => ClientError::NotFound(msg),
            Code::AlreadyExists => ClientError::AlreadyExists(msg),
            Code::FailedPrecondition => ClientError::FailedPrecondition(msg),
            c => ClientError::Master(format!("{c:?}: {msg}")),
        }
    }
}

/// Whether a master status may go away on retry (only idempotent calls are retried). `Unknown`
/// ("transport error") and `Cancelled` ("operation was canceled") are what tonic reports when
/// the connection broke during the call (the master was killed or restarted while it was
/// answering); the master itself never answers with either.
pub(crate) fn status_retriable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_by_a_master_crash_is_retried() {
        assert!(status_retriable(&tonic::Status::unknown("transport error")));
        assert!(status_retriable(&tonic::Status::cancelled(
            "operation was canceled"
        )));
        assert!(status_retriable(&tonic::Status::unavailable(
            "tcp connect error"
        )));
        assert!(!status_retriable(&tonic::Status::not_found("/f")));
        assert!(!status_retriable(&tonic::Status::invalid_argument(
            "bad path"
        )));
    }
}
