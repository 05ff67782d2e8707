//! Tunables of a [`crate::ChunkStore`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::types::BLOCK_SIZE;

/// How a chunk store behaves; `Default` gives production values. As a TOML or JSON table its
/// keys are the field names; sizes take bytes or a unit ("256MiB"), durations a unit ("30s").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Largest committed length of a chunk (64 MiB in production; tests use 1 MiB). Not a key
    /// of the table: it is the cluster's value, which the owner of the store sets.
    #[serde(skip)]
    pub chunk_size: u64,
    /// Bound on the bytes held in the in-memory staging area, across all chunks.
    #[serde(with = "gfs_util::size::as_size")]
    pub staging_limit: u64,
    /// Staged data not committed within this time is dropped.
    #[serde(with = "humantime_serde")]
    pub staging_ttl: Duration,
    /// How long a commit waits for the staged appends before it to commit first.
    #[serde(with = "humantime_serde")]
    pub commit_wait: Duration,
    /// Appends up to this size are written inside the WAL (one fsync for a whole batch); larger
    /// ones are written in place and their chunk file is fsynced in the same round.
    #[serde(with = "gfs_util::size::as_size")]
    pub inline_max: u64,
    /// Once the WAL grows past this many bytes, dirty chunks are snapshotted and it starts over.
    #[serde(with = "gfs_util::size::as_size")]
    pub checkpoint_bytes: u64,
    /// How long a group commit may wait for the COMMITs of appends already staged, so that they
    /// share its fsync (0 disables the wait). Only paid while such appends exist.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// Upper bound on the bytes one group commit writes before it fsyncs.
    #[serde(with = "gfs_util::size::as_size")]
    pub max_batch_bytes: u64,
    /// How long a sealed chunk keeps its op table (op id -> offset, for exactly-once retries)
    /// after it was sealed here; then the table is dropped and a retry of any op on the chunk
    /// gets `OpRetentionExpired` (outcome unknown) instead of an answer. Must exceed the
    /// longest a client retries one op: gfs-client's `op_deadline` (60 s) plus the lease
    /// period (60 s), with room for requests still in flight. Unsealed chunks keep their table.
    #[serde(with = "humantime_serde")]
    pub op_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            chunk_size: 64 << 20,
            staging_limit: 256 << 20,
            staging_ttl: Duration::from_secs(30),
            commit_wait: Duration::from_secs(10),
            inline_max: 64 << 10,
            checkpoint_bytes: 64 << 20,
            commit_delay: Duration::from_micros(200),
            max_batch_bytes: 64 << 20,
            op_retention: Duration::from_secs(600),
        }
    }
}

impl StoreConfig {
    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StorageError::InvalidConfig(m));
        if self.chunk_size < BLOCK_SIZE || !self.chunk_size.is_multiple_of(BLOCK_SIZE) {
            return bad(format!(
                "chunk_size {} must be a positive multiple of {BLOCK_SIZE}",
                self.chunk_size
            ));
        }
        if self.chunk_size > u64::from(u32::MAX) {
            return bad(format!("chunk_size {} exceeds 4 GiB", self.chunk_size));
        }
        if self.staging_limit == 0 {
            return bad("staging_limit must be positive".into());
        }
        if self.staging_ttl.is_zero() || self.commit_wait.is_zero() {
            return bad("staging_ttl and commit_wait must be positive".into());
        }
        if self.inline_max > 16 << 20 {
            return bad(format!("inline_max {} exceeds 16 MiB", self.inline_max));
        }
        if self.commit_delay > Duration::from_millis(50) {
            return bad(format!("commit_delay {:?} exceeds 50ms", self.commit_delay));
        }
        if self.max_batch_bytes == 0 {
            return bad("max_batch_bytes must be positive".into());
        }
        if self.op_retention.is_zero() {
            return bad("op_retention must be positive".into());
        }
        Ok(())
    }
}
