//! Errors of the master's metadata layer.

use std::path::PathBuf;

/// Why a metadata operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The path is not an acceptable absolute path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing exists at the path.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// Something already exists at the path.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// A path component that must be a directory is a file.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The operation needs a file and found a directory.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A directory to delete still has entries.
    #[error("{0}: directory not empty")]
    DirectoryNotEmpty(String),
    /// A directory cannot move inside itself.
    #[error("cannot move {src} inside itself ({dst})")]
    RenameIntoSelf {
        /// The directory.
        src: String,
        /// The requested target.
        dst: String,
    },
    /// No chunk with this handle.
    #[error("chunk {0} not found")]
    ChunkNotFound(u64),
    /// The chunk handle is already in use.
    #[error("chunk {0} already exists")]
    ChunkExists(u64),
    /// The operation log or a checkpoint is damaged beyond a torn tail.
    #[error("corrupt metadata in {file} at byte {offset}: {reason}")]
    CorruptLog {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Writing or syncing the operation log failed; the master refuses mutations from now on.
    #[error("metadata I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An earlier log failure stopped all mutations.
    #[error("the operation log failed earlier; restart the master")]
    LogFailed,
    /// Another process holds the metadata directory.
    #[error("metadata directory {0} is locked by another process")]
    Locked(PathBuf),
    /// Not now: too few chunkservers or replicas answered, or a lease from before is still
    /// in force; the caller retries.
    #[error("{0}")]
    Unavailable(String),
    /// A request names something impossible (a sealed length past the chunk size).
    #[error("{0}")]
    InvalidArgument(String),
    /// No chunkserver with this id is registered.
    #[error("no chunkserver {0:?} is registered")]
    NoSuchServer(String),
    /// The caller may not do this (a chunkserver reporting on a chunk it neither leads nor
    /// holds).
    #[error("{0}")]
    PermissionDenied(String),
    /// A bug or an exhausted range (a chunk version that would overflow).
    #[error("{0}")]
    Internal(String),
    /// This master does not lead the replicated log: the caller asks the leader (its address,
    /// when known).
    #[error("this master is not the leader{}", leader.as_ref().map(|l| format!("; the leader is at {l}")).unwrap_or_default())]
    NotLeader {
        /// The leader's address, if this master knows it.
        leader: Option<String>,
    },
}

/// Result alias for the master crate.
pub type Result<T, E = MasterError> = std::result::Result<T, E>;
