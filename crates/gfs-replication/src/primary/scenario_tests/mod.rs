//! The primary's append (in two rounds, and in one), quorum and seal against real participants
//! and real chunk stores, joined by the in-memory transport ([`MemTransport`]) with faults
//! injected per node and per call. Every test asserts the whole promise of its case: what the appender was told,
//! and on every replica the committed bytes, the op table and what is still staged.
//!
//! Times are real (the stores fsync on their own thread, which paused tokio time would not
//! wait for): deadlines are [`DEADLINE`], faults that outlast one are [`PAST_DEADLINE`].

#![allow(clippy::unwrap_used)]

mod append;
mod faults;
mod fencing;
mod one_round;
mod seal;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StoreConfig};
use parking_lot::Mutex;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::testing::MemTransport;
use crate::{
    Coordinator, CoordinatorConfig, Participant, ParticipantConfig, ReplicationError, Result,
};

/// The chunk every test appends to.
const H: ChunkHandle = ChunkHandle(7);
/// Its version at creation.
const V1: u64 = 1;
const CHUNK: u64 = 1 << 20;
/// The largest record: a quarter chunk.
const QUARTER: usize = (CHUNK / 4) as usize;
/// The primary's PREPARE and COMMIT deadline.
const DEADLINE: Duration = Duration::from_millis(1_000);
/// A delay past [`DEADLINE`].
const PAST_DEADLINE: Duration = Duration::from_millis(2_500);
/// A delay well within [`DEADLINE`].
const WITHIN_DEADLINE: Duration = Duration::from_millis(400);

/// A primary and its secondaries `s1`, `s2`, ... over stores in one temporary directory, the
/// chunk `H` created at `V1` on each, and the primary's lease granted.
struct Rig {
    _dir: TempDir,
    net: Arc<MemTransport>,
    primary: Arc<Coordinator>,
    /// The primary's own store.
    local: Arc<ChunkStore>,
    addrs: Vec<String>,
    /// The secondaries' stores, in the order of `addrs`.
    stores: Vec<Arc<ChunkStore>>,
    /// What the seal listener heard: (length, secondaries sealed with the primary).
    seals: Arc<Mutex<Vec<Seal>>>,
}

/// A seal the listener heard of: the length, and the secondaries sealed with the primary.
type Seal = (u64, Vec<String>);

fn store_config() -> StoreConfig {
    StoreConfig {
        chunk_size: CHUNK,
        // A secondary's COMMIT waits this long for a missing predecessor: past the primary's
        // deadline, as in production (10 s against 5 s).
        commit_wait: Duration::from_secs(2),
        ..StoreConfig::default()
    }
}

impl Rig {
    /// `secondaries` secondaries and a quorum of `quorum` replicas, the primary included.
    async fn new(secondaries: usize, quorum: usize) -> Rig {
        Rig::with(secondaries, quorum, |_| {}).await
    }

    /// Like [`Rig::new`], with the coordinator's configuration adjusted by `tune`.
    async fn with(
        secondaries: usize,
        quorum: usize,
        tune: impl FnOnce(&mut CoordinatorConfig),
    ) -> Rig {
        Rig::build(secondaries, quorum, tune, None).await
    }

    /// Like [`Rig::new`], with the primary's store on `disk` (a simulated one, to fill it or
    /// fail its fsyncs).
    async fn on_disk(
        secondaries: usize,
        quorum: usize,
        disk: Arc<dyn gfs_util::disk::Disk>,
    ) -> Rig {
        Rig::build(secondaries, quorum, |_| {}, Some(disk)).await
    }

    async fn build(
        secondaries: usize,
        quorum: usize,
        tune: impl FnOnce(&mut CoordinatorConfig),
        local_disk: Option<Arc<dyn gfs_util::disk::Disk>>,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let open =
            |name: &str| Arc::new(ChunkStore::open(dir.path().join(name), store_config()).unwrap());
        let local = match local_disk {
            Some(disk) => Arc::new(
                ChunkStore::open_on(disk, dir.path().join("primary"), store_config()).unwrap(),
            ),
            None => open("primary"),
        };
        local.create(H, V1).await.unwrap();
        let net = Arc::new(MemTransport::new());
        let mut addrs = Vec::new();
        let mut stores = Vec::new();
        for i in 1..=secondaries {
            let addr = format!("s{i}");
            let store = open(&addr);
            store.create(H, V1).await.unwrap();
            let participant = Participant::new(
                Arc::clone(&store),
                ParticipantConfig {
                    max_record: CHUNK / 4,
                    // Within the primary's SEAL deadline, as in production (2 s against 5 s).
                    seal_wait: Duration::from_millis(200),
                    ..ParticipantConfig::default()
                },
                CancellationToken::new(),
            );
            net.add(addr.clone(), Arc::new(participant));
            addrs.push(addr);
            stores.push(store);
        }
        let mut cfg = CoordinatorConfig {
            quorum,
            prepare_timeout: DEADLINE,
            commit_timeout: DEADLINE,
            seal_wait: Duration::from_secs(2),
            // The scenarios name the two rounds' calls; `one_round.rs` tunes them to one.
            one_round: false,
            ..CoordinatorConfig::for_chunk_size(CHUNK)
        };
        tune(&mut cfg);
        let primary = Arc::new(Coordinator::new(
            Arc::clone(&local),
            Arc::clone(&net) as Arc<dyn crate::ReplicaTransport>,
            cfg,
        ));
        let seals = Arc::new(Mutex::new(Vec::new()));
        let heard = Arc::clone(&seals);
        primary.set_seal_listener(Arc::new(move |handle, length, mut replicas| {
            assert_eq!(handle, H);
            replicas.sort();
            heard.lock().push((length, replicas));
            Box::pin(async {})
        }));
        let rig = Rig {
            _dir: dir,
            net,
            primary,
            local,
            addrs,
            stores,
            seals,
        };
        rig.grant(V1);
        rig
    }

    /// The address of secondary `i` (1-based, as in `s1`).
    fn s(&self, i: usize) -> &str {
        &self.addrs[i - 1]
    }

    /// The store of secondary `i` (1-based).
    fn store(&self, i: usize) -> &ChunkStore {
        &self.stores[i - 1]
    }

    /// (Re)grants the primary's lease at `version` with every secondary, for a minute.
    fn grant(&self, version: u64) -> u64 {
        self.primary
            .grant_lease(
                H,
                version,
                self.addrs.clone(),
                SystemTime::now() + Duration::from_secs(60),
            )
            .unwrap()
    }

    /// Appends `data` as op `op` at the lease's version `V1`.
    async fn append(&self, op: u64, data: &Bytes) -> Result<u64> {
        self.append_at(V1, op, data).await
    }

    /// Appends `data` as op `op`, naming `version`.
    async fn append_at(&self, version: u64, op: u64, data: &Bytes) -> Result<u64> {
        self.primary
            .append(H, version, OpId(op), None, data.clone())
            .await
    }

    /// The secondaries the primary reports lagging on `H`.
    fn lagging(&self) -> Vec<String> {
        self.primary
            .lagging()
            .into_iter()
            .filter(|(h, _)| *h == H)
            .map(|(_, a)| a)
            .collect()
    }

    /// Waits until every replica committed `length` bytes (the COMMITs past the quorum land
    /// after the appender's answer).
    async fn converged(&self, length: u64) {
        eventually(&format!("every replica at {length}"), || {
            self.all()
                .iter()
                .all(|s| s.info(H).unwrap().committed_len == length)
        })
        .await;
    }

    /// Every store: the primary's first, then the secondaries'.
    fn all(&self) -> Vec<&ChunkStore> {
        std::iter::once(&*self.local)
            .chain(self.stores.iter().map(|s| &**s))
            .collect()
    }
}

/// A record of `len` bytes whose content tells its op apart.
fn rec(op: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (op as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect::<Vec<u8>>()
        .into()
}

/// Asserts that `store` holds exactly `want` committed, in this order (op id and bytes): its
/// committed length, its bytes and its op table.
fn holds(store: &ChunkStore, want: &[(u64, &Bytes)]) {
    let info = store.info(H).unwrap();
    let length: u64 = want.iter().map(|(_, d)| d.len() as u64).sum();
    let dir = store.dir().display().to_string();
    assert_eq!(info.committed_len, length, "committed length of {dir}");
    let mut offset = 0;
    let mut table = Vec::new();
    let mut bytes = Vec::new();
    for (op, d) in want {
        table.push((OpId(*op), offset, d.len() as u32));
        bytes.extend_from_slice(d);
        offset += d.len() as u64;
    }
    let have: Vec<_> = store
        .appends(H)
        .unwrap()
        .into_iter()
        .map(|(op, a)| (op, a.offset, a.len))
        .collect();
    assert_eq!(have, table, "op table of {dir}");
    assert!(
        store.read(H, 0, length).unwrap() == bytes,
        "the bytes of {dir} differ"
    );
}

/// Bytes staged (prepared, not committed) on `store`.
fn staged(store: &ChunkStore) -> u64 {
    store.stats().staged_bytes
}

/// Waits (up to 5 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `r` is a failed quorum with `got` of `need` replicas.
fn no_quorum<T: std::fmt::Debug>(r: &Result<T>, got: u64, need: u64) -> bool {
    matches!(
        r,
        Err(ReplicationError::QuorumNotReached { got: g, need: n }) if *g == got && *n == need
    )
}
