//! Fixtures of the gfs-storage integration tests: a store configuration and payloads that
//! can be recomputed from their chunk and op id.

use gfs_storage::{ChunkHandle, OpId, StoreConfig};

/// The store configuration the integration tests use: 1 MiB chunks.
pub fn test_config() -> StoreConfig {
    StoreConfig {
        chunk_size: 1 << 20,
        staging_limit: 16 << 20,
        ..StoreConfig::default()
    }
}

/// A small deterministic generator (splitmix64), so payloads can be recomputed from their op id.
pub struct Mix(pub u64);

impl Mix {
    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// The payload of an append, derived from its chunk and op id only.
pub fn payload(handle: ChunkHandle, op: OpId, max_len: u64) -> Vec<u8> {
    let mut m = Mix(handle.0.wrapping_mul(0x1000_0000_01b3) ^ op.0);
    let len = m.range(1, max_len + 1) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&m.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}
