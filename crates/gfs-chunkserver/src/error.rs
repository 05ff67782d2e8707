//! Errors of the chunkserver's wiring (start-up, configuration).

/// Why a chunkserver could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChunkserverError {
    /// A configuration value is missing or wrong; the message names the file and key.
    #[error("configuration: {0}")]
    Config(String),
    /// The chunk store could not open.
    #[error(transparent)]
    Storage(#[from] gfs_storage::StorageError),
    /// A listener could not bind or serve.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(String),
    /// The store takes no writes until it is reopened ([`gfs_storage::ChunkStore::needs_reopen`]):
    /// the server stopped so that a restart recovers what is durable.
    #[error("stopped because {0}: restart the chunkserver to recover what is on its disk")]
    NeedsRestart(&'static str),
    /// This server's configuration disagrees with the master's on a cluster-wide value
    /// (the `cluster` module): it refuses to serve.
    #[error(
        "{key} {ours} in this chunkserver's config, the master at {master} runs with {theirs}: \
         set {fix} in the chunkserver's config to match"
    )]
    ClusterMismatch {
        /// The configuration key (`chunk_size`, `quorum`).
        key: &'static str,
        /// This server's value.
        ours: u64,
        /// The master's value.
        theirs: u64,
        /// The master's address.
        master: String,
        /// What to set.
        fix: &'static str,
    },
}

/// Result alias for the chunkserver crate.
pub type Result<T, E = ChunkserverError> = std::result::Result<T, E>;
