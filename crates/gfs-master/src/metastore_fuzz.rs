//! Recovery from any bytes: a log segment or a checkpoint holding random bytes, frames of
//! random payloads with correct checksums, or well-formed records of random mutations (paths
//! that do not exist or do not parse, chunks of no file, versions and lengths at the limits)
//! opens or is refused with an error; it never panics, and what it opens serves reads.

#![allow(clippy::unwrap_used)]

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::record::{
    AddChunkOp, ChunkEntry, CreateOp, CreateWithChunkOp, DeleteOp, Entry, PathOp, RenameOp, SealOp,
    SetVersionOp,
};

/// Paths a mutation may name: good ones, near misses and junk.
fn a_path() -> BoxedStrategy<String> {
    prop_oneof![
        Just("/".to_string()),
        Just("/a".to_string()),
        Just("/a/b".to_string()),
        Just("/b".to_string()),
        Just(String::new()),
        Just("a/../b".to_string()),
        Just("//a".to_string()),
        "[/a-c.]{0,12}",
        any::<String>(),
    ]
    .boxed()
}

fn a_u64() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0u64..8,
        any::<u64>()
    ]
    .boxed()
}

fn an_op() -> BoxedStrategy<Op> {
    prop_oneof![
        (a_path(), any::<u64>()).prop_map(|(path, mtime_ms)| Op::Mkdir(PathOp { path, mtime_ms })),
        (a_path(), any::<u64>(), any::<u32>()).prop_map(|(path, mtime_ms, replication)| {
            Op::Create(CreateOp {
                path,
                mtime_ms,
                replication,
            })
        }),
        (a_path(), any::<u64>(), any::<bool>()).prop_map(|(path, mtime_ms, recursive)| {
            Op::Delete(DeleteOp {
                path,
                mtime_ms,
                recursive,
            })
        }),
        (a_path(), a_path(), any::<u64>()).prop_map(|(src, dst, mtime_ms)| Op::Rename(RenameOp {
            src,
            dst,
            mtime_ms
        })),
        (a_path(), a_u64(), a_u64(), any::<String>()).prop_map(
            |(path, handle, version, primary)| {
                Op::AddChunk(AddChunkOp {
                    path,
                    handle,
                    version,
                    primary,
                    uncreated: Vec::new(),
                    placed: 0,
                })
            }
        ),
        (a_u64(), a_u64(), any::<String>()).prop_map(|(handle, version, primary)| {
            Op::SetVersion(SetVersionOp {
                handle,
                version,
                primary,
            })
        }),
        (a_u64(), a_u64()).prop_map(|(handle, length)| Op::Seal(SealOp { handle, length })),
        (a_path(), a_path(), a_u64(), any::<String>()).prop_map(|(path, of, handle, primary)| {
            Op::CreateWithChunk(CreateWithChunkOp {
                create: Some(CreateOp {
                    path,
                    mtime_ms: 1,
                    replication: 3,
                }),
                chunk: Some(AddChunkOp {
                    path: of,
                    handle,
                    version: 1,
                    primary,
                    uncreated: Vec::new(),
                    placed: 3,
                }),
            })
        }),
    ]
    .boxed()
}

/// A frame's payload: random bytes, or a record (of a random seq, mostly in order).
fn a_payload() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..64),
        (
            prop_oneof![Just(None), a_u64().prop_map(Some)],
            proptest::option::of(an_op())
        )
            .prop_map(|(seq, op)| {
                // seq 0 marks "in order"; fixed below.
                prost::Message::encode_to_vec(&LogRecord {
                    seq: seq.unwrap_or(0),
                    op,
                })
            }),
    ]
    .boxed()
}

/// A log segment: its header (or not), frames of `payloads` (records numbered in order where
/// their seq is 0), then `tail`.
fn segment(header: bool, payloads: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let mut out = if header {
        LOG_MAGIC.to_vec()
    } else {
        Vec::new()
    };
    let mut next = 1u64;
    for p in payloads {
        let mut p = p.clone();
        if let Ok(mut rec) = <LogRecord as prost::Message>::decode(&p[..])
            && rec.seq == 0
            && rec.op.is_some()
        {
            rec.seq = next;
            next += 1;
            p = prost::Message::encode_to_vec(&rec);
        }
        gfs_util::framed::frame(&p, &mut out);
    }
    out.extend_from_slice(tail);
    out
}

/// Opens `dir` and, if it opens, lists `/` and looks up every path: no panic either way.
fn open_and_read(dir: &Path) {
    if let Ok(store) = MetaStore::open(dir, MetaConfig::default()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let _ = store.read(|ns| ns.list("/").map(|l| l.len())).await;
            let _ = store.read(|ns| ns.chunks_of("/a").map(|c| c.len())).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovery_opens_or_refuses_any_log(
        header in prop_oneof![Just(true), Just(true), Just(false)],
        payloads in vec(a_payload(), 0..12),
        tail in vec(any::<u8>(), 0..24),
        flip in proptest::option::of((any::<prop::sample::Index>(), 0u8..8)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = segment(header, &payloads, &tail);
        if let Some((at, bit)) = flip
            && !bytes.is_empty()
        {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        std::fs::write(dir.path().join(segment_name(1)), &bytes).unwrap();
        open_and_read(dir.path());
    }

    #[test]
    fn recovery_opens_or_refuses_any_checkpoint(
        seq in prop_oneof![Just(7u64), a_u64()],
        entries in vec(
            (a_path(), any::<bool>(), any::<u32>(), vec((a_u64(), a_u64(), proptest::option::of(a_u64()), 0u32..4), 0..3)),
            0..8,
        ),
        servers in vec("[a-z0-9]{0,4}", 0..3),
        raw in proptest::option::of(vec(any::<u8>(), 0..64)),
        log in vec(a_payload(), 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = Checkpoint {
            seq,
            entries: entries
                .into_iter()
                .map(|(path, dir, replication, chunks)| Entry {
                    path,
                    dir,
                    mtime_ms: 1,
                    replication,
                    chunks: chunks
                        .into_iter()
                        .map(|(handle, version, sealed_length, primary)| ChunkEntry {
                            handle,
                            version,
                            sealed_length,
                            primary,
                            uncreated: Vec::new(),
                            placed: 0,
                            since_lease: 0,
                        })
                        .collect(),
                })
                .collect(),
            servers,
        };
        let payload = raw.unwrap_or_else(|| prost::Message::encode_to_vec(&ckpt));
        let mut bytes = CHECKPOINT_MAGIC.to_vec();
        gfs_util::framed::frame(&payload, &mut bytes);
        std::fs::write(dir.path().join(checkpoint_name(7)), &bytes).unwrap();
        if !log.is_empty() {
            std::fs::write(dir.path().join(segment_name(8)), segment(true, &log, &[])).unwrap();
        }
        open_and_read(dir.path());
    }
}
