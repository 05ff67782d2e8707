//! Property test: random stage / commit / abort / read / reopen sequences against a simple model.

#![allow(clippy::unwrap_used)]

use gfs_util::collections::HashMap;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StageRequest, StorageError, StoreConfig};
use gfs_testkit::storage::payload;
use proptest::prelude::*;

const H: ChunkHandle = ChunkHandle(5);
const CHUNK: u64 = 256 * 1024;
const MAX_LEN: u64 = 50_000;

#[derive(Clone, Debug)]
enum Action {
    /// Stage a new op right after everything committed and staged (what a primary does).
    StageNext,
    /// Stage a new op at `committed + delta - 25_000` (often overlapping or leaving a gap).
    StageAt(u64),
    /// Commit the i-th staged op (or an unknown op when nothing is staged).
    Commit(usize),
    /// Commit an op that is already committed (a retry).
    Recommit(usize),
    Abort(usize),
    Read(u64, u64),
    Reopen,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::StageNext),
        1 => (0..60_000u64).prop_map(Action::StageAt),
        4 => (0..8usize).prop_map(Action::Commit),
        1 => (0..8usize).prop_map(Action::Recommit),
        1 => (0..8usize).prop_map(Action::Abort),
        2 => (0..CHUNK, 0..100_000u64).prop_map(|(o, l)| Action::Read(o, l)),
        1 => Just(Action::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    committed: Vec<u8>,
    ops: HashMap<OpId, (u64, u32)>,
    order: Vec<OpId>,
    staged: BTreeMap<u64, (OpId, Vec<u8>)>,
    next_op: u64,
}

impl Model {
    fn staged_end(&self) -> u64 {
        self.staged
            .iter()
            .next_back()
            .map(|(o, (_, d))| o + d.len() as u64)
            .unwrap_or(0)
            .max(self.committed.len() as u64)
    }

    fn overlaps(&self, off: u64, len: u64) -> bool {
        off < self.committed.len() as u64
            || self
                .staged
                .iter()
                .any(|(o, (_, d))| *o < off + len.max(1) && off < o + (d.len() as u64).max(1))
    }

    fn covered(&self, to: u64) -> bool {
        let mut pos = self.committed.len() as u64;
        for (o, (_, d)) in self.staged.range(pos..to) {
            if *o != pos {
                return false;
            }
            pos += d.len() as u64;
        }
        pos == to
    }
}

fn cfg() -> StoreConfig {
    StoreConfig {
        chunk_size: CHUNK,
        staging_limit: 8 << 20,
        commit_wait: Duration::from_millis(20),
        checkpoint_bytes: 64 << 10,
        inline_max: 16 << 10,
        ..StoreConfig::default()
    }
}

async fn run(actions: Vec<Action>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Some(ChunkStore::open(dir.path(), cfg()).unwrap());
    store.as_ref().unwrap().create(H, 1).await.unwrap();
    let mut m = Model::default();
    for a in actions {
        let s = store.as_ref().unwrap();
        match a {
            Action::StageNext | Action::StageAt(_) => {
                let op = OpId(m.next_op);
                m.next_op += 1;
                let data = payload(H, op, MAX_LEN);
                let len = data.len() as u64;
                let off = match a {
                    Action::StageAt(d) => (m.committed.len() as u64 + d).saturating_sub(25_000),
                    _ => m.staged_end(),
                };
                let got = s.stage(StageRequest {
                    op,
                    handle: H,
                    version: 1,
                    offset: off,
                    data: Bytes::from(data.clone()),
                });
                if off + len > CHUNK {
                    assert!(
                        matches!(got, Err(StorageError::ChunkFull { .. })),
                        "{got:?}"
                    );
                } else if m.overlaps(off, len) {
                    assert!(matches!(got, Err(StorageError::Overlap { .. })), "{got:?}");
                } else {
                    got.unwrap();
                    m.staged.insert(off, (op, data));
                }
            }
            Action::Commit(i) => {
                let Some((&off, (op, data))) = m.staged.iter().nth(i % m.staged.len().max(1))
                else {
                    let got = s.commit(H, OpId(u64::MAX)).await;
                    assert!(
                        matches!(got, Err(StorageError::NotStaged { .. })),
                        "{got:?}"
                    );
                    continue;
                };
                let (op, data) = (*op, data.clone());
                let got = s.commit(H, op).await;
                if off == m.committed.len() as u64 {
                    let c = got.unwrap();
                    assert_eq!((c.record.offset, c.record.len as usize), (off, data.len()));
                    m.staged.remove(&off);
                    m.committed.extend_from_slice(&data);
                    m.ops.insert(op, (off, data.len() as u32));
                    m.order.push(op);
                    assert_eq!(c.committed_len, m.committed.len() as u64);
                } else if m.covered(off) {
                    assert!(matches!(got, Err(StorageError::Timeout(_))), "{got:?}");
                } else {
                    assert!(matches!(got, Err(StorageError::Hole { .. })), "{got:?}");
                }
            }
            Action::Recommit(i) => {
                if let Some(op) = m.order.get(i % m.order.len().max(1)) {
                    let c = s.commit(H, *op).await.unwrap();
                    assert_eq!((c.record.offset, c.record.len), m.ops[op]);
                }
            }
            Action::Abort(i) => {
                if let Some((&off, (op, _))) = m.staged.iter().nth(i % m.staged.len().max(1)) {
                    assert!(s.abort(H, *op).unwrap());
                    m.staged.remove(&off);
                }
            }
            Action::Read(off, len) => {
                let got = s.read(H, off, len);
                let n = m.committed.len() as u64;
                if off > n {
                    assert!(
                        matches!(got, Err(StorageError::OutOfRange { .. })),
                        "{got:?}"
                    );
                } else {
                    let end = (off + len).min(n) as usize;
                    assert_eq!(&got.unwrap()[..], &m.committed[off as usize..end]);
                }
            }
            Action::Reopen => {
                drop(store.take());
                store = Some(ChunkStore::open(dir.path(), cfg()).unwrap());
                m.staged.clear();
            }
        }
        let s = store.as_ref().unwrap();
        assert_eq!(s.info(H).unwrap().committed_len, m.committed.len() as u64);
    }
    let s = store.as_ref().unwrap();
    for (op, (off, len)) in &m.ops {
        assert_eq!(
            s.lookup_op(H, *op).unwrap().map(|r| (r.offset, r.len)),
            Some((*off, *len))
        );
    }
    assert!(s.scrub().corrupt.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(actions in proptest::collection::vec(action(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(actions));
    }
}

/// A fixed sequence that once needed care: commits out of order, a retry, then a reopen.
#[test]
fn fixed_sequence() {
    use Action::*;
    let actions = vec![
        StageNext,
        StageNext,
        Commit(1),
        Commit(0),
        Commit(0),
        Recommit(0),
        StageAt(30_000),
        Reopen,
        StageNext,
        Commit(0),
        Read(0, 200_000),
    ];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(actions));
}
