//! Corruption: a flipped byte in a chunk file fails the reads of its block, and only that block.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;

use bytes::Bytes;
use gfs_storage::{BLOCK_SIZE, ChunkHandle, ChunkStore, OpId, StageRequest, StorageError};
use gfs_testkit::storage::test_config;

/// Writes `data` into a new chunk `h` at version 1 of the store in `dir`, in appends of
/// `piece` bytes (several, so that a damaged block is not in the newest commit batch), and
/// closes the store.
async fn write_chunk(dir: &std::path::Path, h: ChunkHandle, data: &[u8], piece: usize) {
    let store = ChunkStore::open(dir, test_config()).unwrap();
    store.create(h, 1).await.unwrap();
    for (i, bytes) in data.chunks(piece).enumerate() {
        store
            .stage(StageRequest {
                op: OpId(i as u64),
                handle: h,
                version: 1,
                offset: (i * piece) as u64,
                data: Bytes::copy_from_slice(bytes),
            })
            .unwrap();
        store.commit(h, OpId(i as u64)).await.unwrap();
    }
}

/// Flips the bits of `mask` in byte `at` of chunk `h`'s file in `dir`, durably.
fn flip(dir: &std::path::Path, h: ChunkHandle, at: u64, mask: u8) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(h.0.to_string()))
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ mask], at).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test]
async fn a_flipped_byte_fails_only_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle(9);
    let data: Vec<u8> = (0..5 * BLOCK_SIZE + 100).map(|i| (i % 251) as u8).collect();
    write_chunk(dir.path(), h, &data, 40_000).await;
    flip(dir.path(), h, 2 * BLOCK_SIZE + 1234, 0x40);

    let store = ChunkStore::open(dir.path(), test_config()).unwrap();
    assert_eq!(store.info(h).unwrap().committed_len, data.len() as u64);
    match store.read(h, 2 * BLOCK_SIZE + 10, 10) {
        Err(StorageError::ChecksumMismatch { handle, block }) => {
            assert_eq!((handle, block), (h, 2));
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    // A read spanning the bad block fails too.
    assert!(matches!(
        store.read(h, BLOCK_SIZE, 3 * BLOCK_SIZE),
        Err(StorageError::ChecksumMismatch { block: 2, .. })
    ));
    for block in [0u64, 1, 3, 4, 5] {
        let off = block * BLOCK_SIZE;
        let got = store.read(h, off, BLOCK_SIZE).unwrap();
        let end = (off + BLOCK_SIZE).min(data.len() as u64) as usize;
        assert_eq!(&got[..], &data[off as usize..end], "block {block}");
    }
    assert_eq!(store.stats().checksum_failures, 2);
    let report = store.scrub();
    assert_eq!(report.corrupt, vec![(h, 2)]);
    assert_eq!(report.bytes, data.len() as u64);
}

/// A block that failed its checksum is restored from a peer's copy of it (or of its first
/// bytes, from a shorter peer, the replica's own bytes after them), checked against the
/// replica's own stored CRC32C: a copy too long, with other bytes, or whose own bytes after it
/// are the rotten ones is refused and nothing is written; the right one is written, durably
/// (it survives a reopen), and the replica passes its scrub again.
#[tokio::test]
async fn a_bad_block_is_restored_only_from_bytes_that_match_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let h = ChunkHandle(5);
    let data: Vec<u8> = (0..3 * BLOCK_SIZE + 777).map(|i| (i % 253) as u8).collect();
    write_chunk(dir.path(), h, &data, 50_000).await;
    // Rot in block 1 and in the partial last block (3).
    for at in [BLOCK_SIZE + 5, 3 * BLOCK_SIZE + 700] {
        flip(dir.path(), h, at, 0x08);
    }

    let store = ChunkStore::open(dir.path(), test_config()).unwrap();
    assert_eq!(store.scrub().corrupt, vec![(h, 1), (h, 3)]);
    let block = |b: u64| {
        let start = (b * BLOCK_SIZE) as usize;
        let stop = (start + BLOCK_SIZE as usize).min(data.len());
        Bytes::copy_from_slice(&data[start..stop])
    };
    // Other bytes of the right length: refused.
    let mut wrong = block(1).to_vec();
    wrong[9] ^= 1;
    assert!(matches!(
        store.restore_block(h, 1, Bytes::from(wrong)).await,
        Err(StorageError::NotRestored { block: 1, .. })
    ));
    // A shorter peer's prefix of the partial last block that ends before the rot (at byte
    // 700 of it): the replica's own bytes after it still fail the checksum. Refused.
    assert!(matches!(
        store.restore_block(h, 3, block(3).slice(..600)).await,
        Err(StorageError::NotRestored { block: 3, .. })
    ));
    // A copy longer than the block holds here (a longer peer's block): refused.
    let longer = Bytes::copy_from_slice(&data[3 * BLOCK_SIZE as usize..]);
    let mut longer = longer.to_vec();
    longer.extend_from_slice(&[7; 10]);
    assert!(matches!(
        store.restore_block(h, 3, Bytes::from(longer)).await,
        Err(StorageError::NotRestored { block: 3, .. })
    ));
    // A block past the committed length: refused.
    assert!(matches!(
        store.restore_block(h, 4, block(3)).await,
        Err(StorageError::NotRestored { block: 4, .. })
    ));
    assert_eq!(store.scrub().corrupt, vec![(h, 1), (h, 3)]);
    assert_eq!(store.stats().restored_blocks, 0);

    store.restore_block(h, 1, block(1)).await.unwrap();
    // A prefix past the rot: the replica's own bytes after it are good.
    store
        .restore_block(h, 3, block(3).slice(..701))
        .await
        .unwrap();
    assert_eq!(store.stats().restored_blocks, 2);
    assert!(store.scrub().corrupt.is_empty());
    drop(store);
    let store = ChunkStore::open(dir.path(), test_config()).unwrap();
    assert!(store.scrub().corrupt.is_empty());
    let all = store.read(h, 0, data.len() as u64).unwrap();
    assert!(all[..] == data[..]);
}
