//! Client tunables.

use std::time::Duration;

/// Timeouts, retries and caching of a [`crate::Client`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClientConfig {
    /// Deadline for connecting to the master or a chunkserver (to each master of a group,
    /// [`gfs_host::GROUP_CONNECT_TIMEOUT`] at most, as another can answer instead).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one call to the master or a chunkserver.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// How long an append or a read keeps retrying retriable failures (primary gone, lease
    /// moving, busy, quorum lost) before it gives up.
    #[serde(with = "humantime_serde")]
    pub op_deadline: Duration,
    /// First pause between retries; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest pause between retries.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long chunk locations are trusted before asking the master again.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Streaming writes: bytes per append (capped at a quarter of a chunk).
    pub write_piece: usize,
    /// Streaming writes and reads: requests in flight at once.
    pub in_flight: usize,
    /// Streaming reads: bytes per read request.
    pub read_piece: usize,
    /// Chunk locations: chunks per `GetChunks` page asked of the master (0: the master's
    /// default, 10,000); every page is fetched, so files of any number of chunks list whole.
    pub chunks_per_page: u32,
    /// Namespace reads (list, stat) may be answered by any master of a group from its own
    /// state, which may lag the leader's by what it has not applied yet (a stat then tells no
    /// replica health); off: only the leader answers.
    pub stale_reads: bool,
    /// The network connected over (the operating system's unless simulated).
    #[serde(skip)]
    pub net: gfs_host::Net,
    /// Wall-clock time, against which cached lease expiries are checked.
    #[serde(skip)]
    pub clock: gfs_util::time::Clock,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            op_deadline: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(30),
            write_piece: 1 << 20,
            in_flight: 8,
            read_piece: 4 << 20,
            chunks_per_page: 0,
            stale_reads: false,
            net: gfs_host::Net::os(),
            clock: gfs_util::time::Clock::system(),
        }
    }
}
