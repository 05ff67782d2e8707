//! Scrubbing: every block of every chunk (or of one) read back and checked against its
//! CRC32C; the chunkserver's scrubber calls [`ChunkStore::scrub_one`] on idle chunks.

use crate::error::Result;
use crate::state::Chunk;
use crate::store::ChunkStore;
use crate::types::{BLOCK_SIZE, ChunkHandle};

/// What a [`ChunkStore::scrub`] pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Chunks verified.
    pub chunks: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// `(chunk, block)` pairs whose checksum failed.
    pub corrupt: Vec<(ChunkHandle, u64)>,
}

impl ChunkStore {
    /// Verifies every block of every chunk; counts and returns the corrupt ones.
    pub fn scrub(&self) -> ScrubReport {
        let chunks: Vec<_> = self.inner.chunks.read().values().cloned().collect();
        let mut report = ScrubReport::default();
        for chunk in chunks {
            let corrupt = self.scrub_chunk(&chunk);
            report.chunks += 1;
            report.bytes += chunk.st.lock().meta.length;
            report
                .corrupt
                .extend(corrupt.into_iter().map(|b| (chunk.handle, b)));
        }
        report
    }

    /// Verifies one chunk; returns the indexes of its corrupt blocks.
    pub fn scrub_one(&self, handle: ChunkHandle) -> Result<Vec<u64>> {
        let chunk = self.inner.chunk(handle)?;
        Ok(self.scrub_chunk(&chunk))
    }

    fn scrub_chunk(&self, chunk: &Chunk) -> Vec<u64> {
        let (length, crcs) = {
            let st = chunk.st.lock();
            (st.meta.length, st.meta.crcs.clone())
        };
        let mut bad = Vec::new();
        for (block, crc) in crcs.iter().enumerate() {
            let block = block as u64;
            let start = block * BLOCK_SIZE;
            let stop = ((block + 1) * BLOCK_SIZE).min(length);
            match self.inner.read_verified(chunk, start, stop, block, &[*crc]) {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(handle = %chunk.handle, block, error = %e, "scrub found a bad block");
                    bad.push(block);
                }
            }
        }
        bad
    }
}
