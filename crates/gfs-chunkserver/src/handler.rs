//! The data plane's view of a chunkserver: appends go through the coordinator (this server
//! must be the primary), reads come from the local replica.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use bytes::Bytes;
use gfs_dataplane::{DataError, Handler, Request};
use gfs_host::tls::Peer;
use gfs_host::token::{Rights, TokenError, TokenKey};
use gfs_replication::{Coordinator, ReplicationError};
use gfs_storage::{ChunkHandle, ChunkStore, OpId, StorageError};

use crate::metrics::ChunkserverMetrics;

/// Told of a replica that failed its checksums on a read (handle, block).
pub type CorruptListener = Arc<dyn Fn(ChunkHandle, u64) + Send + Sync>;

/// The check of every data-plane request's chunk token: against the key the master handed
/// over at registration (none yet: every request is refused), or none at all for a server run
/// without a master.
pub struct TokenGate {
    key: std::sync::RwLock<Option<TokenKey>>,
    clock: gfs_util::time::Clock,
}

impl TokenGate {
    /// A gate that refuses everything until [`TokenGate::set_key`], by `clock`.
    pub fn new(clock: gfs_util::time::Clock) -> TokenGate {
        TokenGate {
            key: std::sync::RwLock::new(None),
            clock,
        }
    }

    /// Checks tokens against `key` from now on (the master's, from its registration reply).
    pub fn set_key(&self, key: TokenKey) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// Whether `req`'s token lets it through, from `caller` (the client certificate of a TLS
    /// connection: the token must have been issued to that name).
    pub fn check(&self, req: &Request, caller: Option<&Peer>) -> Result<(), TokenError> {
        let need = match req {
            Request::Read { .. } => Rights::READ,
            Request::Append { .. } | Request::Flush { .. } => Rights::APPEND,
        };
        let (handle, version, token) = req.chunk();
        let key = self.key.read().unwrap_or_else(|e| e.into_inner());
        let key = key.as_ref().ok_or(TokenError::NoKey)?;
        let grant = key.check(token, handle, version, need, self.clock.now_ms())?;
        match caller {
            Some(c) if c.name != grant.client => Err(TokenError::NotYours {
                holder: grant.client,
                caller: c.name.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Serves APPEND and READ for one chunkserver.
pub struct DataHandler {
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
    on_corrupt: Option<CorruptListener>,
    metrics: Option<Arc<ChunkserverMetrics>>,
    /// None: no master, no tokens to check (a standalone server, the replication tests).
    tokens: Option<Arc<TokenGate>>,
}

impl DataHandler {
    /// A handler over `store` and `coordinator`; `on_corrupt` hears of checksum failures.
    pub fn new(
        store: Arc<ChunkStore>,
        coordinator: Arc<Coordinator>,
        on_corrupt: Option<CorruptListener>,
    ) -> DataHandler {
        DataHandler {
            store,
            coordinator,
            on_corrupt,
            metrics: None,
            tokens: None,
        }
    }

    /// Serves only requests whose chunk token `gate` lets through.
    pub fn with_tokens(mut self, gate: Arc<TokenGate>) -> DataHandler {
        self.tokens = Some(gate);
        self
    }

    /// Counts and times every request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ChunkserverMetrics>) -> DataHandler {
        self.metrics = Some(metrics);
        self
    }

    /// Records one request of `op` started at `started`, moving `bytes` on success.
    fn observe<T>(
        &self,
        op: &str,
        started: Instant,
        res: &Result<T, DataError>,
        bytes: u64,
        read: bool,
    ) {
        if let Some(m) = &self.metrics {
            m.data
                .observe(op, res.is_ok(), started.elapsed().as_secs_f64());
            if res.is_ok() {
                if read { &m.read } else { &m.written }.inc_by(bytes);
            }
        }
    }
}

/// Maps a store error to what a client sees.
pub fn storage_to_data(e: StorageError) -> DataError {
    match e {
        StorageError::NotFound(h) => DataError::NotFound { handle: h.0 },
        StorageError::StaleVersion { have, got, .. } => DataError::StaleVersion { have, got },
        StorageError::Sealed { handle, length } => DataError::ChunkFull {
            handle: handle.0,
            length,
        },
        StorageError::ChunkFull { handle, offset, .. } => DataError::ChunkFull {
            handle: handle.0,
            length: offset,
        },
        StorageError::Busy { .. } => DataError::Busy,
        StorageError::ChecksumMismatch { handle, block } => DataError::ChecksumMismatch {
            handle: handle.0,
            block,
        },
        StorageError::OutOfRange {
            offset, committed, ..
        } => DataError::OutOfRange { offset, committed },
        // Not "not here" (ChunkFull): the chunk forgot which ops it holds. The client must not
        // send the op elsewhere; the outcome is unknown (a definite failure, never retried).
        StorageError::OpRetentionExpired { handle, length } => DataError::OpRetentionExpired {
            handle: handle.0,
            length,
        },
        StorageError::Timeout(_) => DataError::Timeout,
        StorageError::Closed => DataError::Unavailable("the chunkserver is stopping".into()),
        // An append's staging was dropped under it (a seal or a version change with appends in
        // flight), or the one before it failed: its outcome elsewhere is unknown, so the client
        // retries with the same op id, which learns what became of it.
        e @ (StorageError::NotStaged { .. }
        | StorageError::Hole { .. }
        | StorageError::Overlap { .. }
        | StorageError::AlreadyCommitted { .. }) => DataError::Unavailable(e.to_string()),
        // This disk is full now: space may come back (deletes, the collector), and the next
        // lease may go to another server; the client retries, with the same op id.
        e @ StorageError::DiskFull { .. } => DataError::Unavailable(e.to_string()),
        // This server lost its replicas: others hold them.
        e @ StorageError::DiskLost(_) => DataError::Unavailable(e.to_string()),
        other => DataError::Internal(other.to_string()),
    }
}

/// Maps a replication error to what a client sees.
pub fn replication_to_data(e: ReplicationError) -> DataError {
    match e {
        ReplicationError::NotPrimary(h) => DataError::NotPrimary { handle: h.0 },
        ReplicationError::LeaseExpired(h) => DataError::LeaseExpired { handle: h.0 },
        ReplicationError::StaleVersion { have, got, .. } => DataError::StaleVersion { have, got },
        ReplicationError::RecordTooLarge { len, max } => DataError::FrameTooLarge { len, max },
        ReplicationError::ChunkFull { handle, length } => DataError::ChunkFull {
            handle: handle.0,
            length,
        },
        ReplicationError::SealedWith { handle, offset } => DataError::SealedWith {
            handle: handle.0,
            offset,
        },
        e @ ReplicationError::DiskFailed { .. } => DataError::Unavailable(e.to_string()),
        ReplicationError::Busy(_) => DataError::Busy,
        e @ (ReplicationError::OpMismatch { .. } | ReplicationError::EmptyRecord) => {
            DataError::BadRequest(e.to_string())
        }
        ReplicationError::OffsetMismatch { expected, next, .. } => {
            DataError::OffsetMismatch { expected, next }
        }
        ReplicationError::QuorumNotReached { got, need } => {
            DataError::QuorumNotReached { got, need }
        }
        ReplicationError::Peer { addr, message } => {
            DataError::Unavailable(format!("peer {addr}: {message}"))
        }
        ReplicationError::Storage(e) => storage_to_data(e),
    }
}

impl Handler for DataHandler {
    fn admit(&self, req: &Request, caller: Option<&Peer>) -> Result<(), DataError> {
        let Some(gate) = &self.tokens else {
            return Ok(());
        };
        gate.check(req, caller).map_err(|e| {
            if let Some(m) = &self.metrics {
                m.refused.inc();
            }
            DataError::BadToken(e.to_string())
        })
    }

    async fn append(
        &self,
        handle: u64,
        version: u64,
        op_id: u64,
        at: Option<u64>,
        data: Bytes,
    ) -> Result<u64, DataError> {
        let started = Instant::now();
        let len = data.len() as u64;
        let op = if at.is_some() { "append_at" } else { "append" };
        let span =
            tracing::info_span!("data", op, handle = %ChunkHandle(handle), op_id = %OpId(op_id));
        let res = self
            .coordinator
            .append(ChunkHandle(handle), version, OpId(op_id), at, data)
            .instrument(span)
            .await
            .map_err(replication_to_data);
        self.observe(op, started, &res, len, false);
        if res.is_ok() && gfs_replication::failpoint_fires("append-reply-lost") {
            // Fault injection: the append is durable, but its client hears a failure, as
            // when the connection breaks right after the reply.
            tracing::warn!(
                handle,
                op_id,
                "failpoint append-reply-lost: the reply is lost"
            );
            return Err(DataError::Unavailable(
                "failpoint: the reply was lost".into(),
            ));
        }
        res
    }

    async fn read(
        &self,
        handle: u64,
        version: u64,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, DataError> {
        let started = Instant::now();
        let span = tracing::info_span!("data", op = "read", handle = %ChunkHandle(handle), offset);
        let res = self
            .read_replica(handle, version, offset, len)
            .instrument(span)
            .await;
        let n = res.as_ref().map_or(0, |b| b.len() as u64);
        self.observe("read", started, &res, n, true);
        res
    }

    async fn flush(&self, handle: u64, version: u64) -> Result<u64, DataError> {
        let span = tracing::info_span!("data", op = "flush", handle = %ChunkHandle(handle));
        self.coordinator
            .flush(ChunkHandle(handle), version)
            .instrument(span)
            .await
            .map_err(replication_to_data)
    }
}

impl DataHandler {
    async fn read_replica(
        &self,
        handle: u64,
        version: u64,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, DataError> {
        let h = ChunkHandle(handle);
        // Bounded before anything is read or allocated: a reply carries at most a quarter of
        // a chunk (the data plane's frame limit), whatever the request asks for.
        let max = self.store.config().chunk_size / 4;
        if u64::from(len) > max {
            return Err(DataError::FrameTooLarge {
                len: u64::from(len),
                max,
            });
        }
        let info = self.store.info(h).map_err(storage_to_data)?;
        // A replica older than the version the client knows missed mutations: never serve it.
        if info.version < version {
            return Err(DataError::StaleVersion {
                have: info.version,
                got: version,
            });
        }
        // Only what a quorum is known to hold (I3): bytes committed here alone may be replaced
        // by a later lease. As primary, its watermark; as a secondary of an unsealed chunk,
        // what its primary last told (it may have committed appends the primary failed to).
        // A replica found when the server started knows neither: it serves no read of an
        // unsealed chunk (a length it gave would count toward the reader's quorum of answers)
        // until a primary tells or the chunk is sealed, which its chunk report asks for.
        let mut len = u64::from(len);
        let limit = match self.coordinator.read_limit(h) {
            Some(l) => Some(l),
            None if info.sealed => None,
            None => Some(self.store.quorum_known(h).ok_or_else(|| {
                DataError::Unavailable(format!(
                    "chunk {h}: this replica restarted and does not know what a quorum holds \
                     of it yet"
                ))
            })?),
        };
        if let Some(limit) = limit {
            if offset > limit {
                return Err(DataError::OutOfRange {
                    offset,
                    committed: limit,
                });
            }
            len = len.min(limit - offset);
        }
        let store = Arc::clone(&self.store);
        let disk = Arc::clone(store.disk());
        let read = gfs_host::blocking(&*disk, move || store.read(h, offset, len)).await;
        if let (Err(StorageError::ChecksumMismatch { block, .. }), Some(tell)) =
            (&read, &self.on_corrupt)
        {
            tracing::error!(%h, block, "replica failed its checksums on a read");
            tell(h, *block);
        }
        read.map_err(storage_to_data)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A data handler over `store` (1 MiB chunks), with no peers reached.
    fn handler_over(store: &Arc<ChunkStore>) -> DataHandler {
        let coordinator = Arc::new(Coordinator::new(
            Arc::clone(store),
            Arc::new(gfs_replication::Peers::new(
                gfs_replication::PeerConfig::default(),
            )),
            gfs_replication::CoordinatorConfig::for_chunk_size(1 << 20),
        ));
        DataHandler::new(Arc::clone(store), coordinator, None)
    }

    /// The committed length a length probe (a read past the end) answers.
    fn length(r: Result<Bytes, DataError>) -> u64 {
        match r {
            Err(DataError::OutOfRange { committed, .. }) => committed,
            other => panic!("not a length: {other:?}"),
        }
    }

    /// A secondary shows readers of an unsealed chunk only the prefix its primary last said a
    /// quorum holds, not bytes it committed that its primary failed to (I3); once sealed,
    /// everything (a seal is at a length a quorum holds).
    #[tokio::test]
    async fn a_secondary_serves_only_what_its_primary_said_a_quorum_holds() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = gfs_storage::StoreConfig {
            chunk_size: 1 << 20,
            ..gfs_storage::StoreConfig::default()
        };
        let store = Arc::new(ChunkStore::open(dir.path(), cfg).unwrap());
        let h = ChunkHandle(3);
        store.create(h, 1).await.unwrap();
        store
            .stage(gfs_storage::StageRequest {
                op: OpId(1),
                handle: h,
                version: 1,
                offset: 0,
                data: Bytes::from(vec![7u8; 150]),
            })
            .unwrap();
        store.commit_at(h, 1, OpId(1)).await.unwrap();
        let handler = handler_over(&store);
        // Never told since it was created (its primary died first): none of it.
        assert_eq!(length(handler.read_replica(3, 1, u64::MAX, 0).await), 0);
        store.note_quorum(h, 1, 100).unwrap();
        assert_eq!(length(handler.read_replica(3, 1, u64::MAX, 0).await), 100);
        let read = handler.read_replica(3, 1, 40, 200).await.unwrap();
        assert_eq!(read.len(), 60, "a read stops at the quorum's length");
        store.seal(h).await.unwrap();
        assert_eq!(length(handler.read_replica(3, 1, u64::MAX, 0).await), 150);
    }

    /// Seeds 423 and 426 of the simulator: a primary committed appends alone, restarted, and
    /// showed them to a reader; the next lease, decided without it, wrote other bytes there.
    /// A replica found when the server starts knows nothing of what a quorum holds of an
    /// unsealed chunk: it serves none of it (its length would count toward a reader's quorum
    /// of answers) until a primary tells (a version change vouches for nothing more); an
    /// empty one and a sealed one serve as ever.
    #[tokio::test]
    async fn a_replica_found_at_start_serves_no_unsealed_chunk_until_told() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = gfs_storage::StoreConfig {
            chunk_size: 1 << 20,
            ..gfs_storage::StoreConfig::default()
        };
        let (h, empty, sealed) = (ChunkHandle(3), ChunkHandle(4), ChunkHandle(5));
        {
            let store = ChunkStore::open(dir.path(), cfg.clone()).unwrap();
            for c in [h, empty, sealed] {
                store.create(c, 1).await.unwrap();
            }
            for c in [h, sealed] {
                store
                    .stage(gfs_storage::StageRequest {
                        op: OpId(1),
                        handle: c,
                        version: 1,
                        offset: 0,
                        data: Bytes::from(vec![7u8; 150]),
                    })
                    .unwrap();
                store.commit_at(c, 1, OpId(1)).await.unwrap();
                store.note_quorum(c, 1, 150).unwrap();
            }
            store.seal(sealed).await.unwrap();
        }
        let store = Arc::new(ChunkStore::open(dir.path(), cfg).unwrap());
        let handler = handler_over(&store);
        let refused = handler.read_replica(3, 1, u64::MAX, 0).await;
        assert!(
            matches!(refused, Err(DataError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(handler.read_replica(3, 1, 0, 10).await.is_err());
        assert!(
            store.info(h).unwrap().unvouched,
            "its report asks the master to settle it"
        );
        assert_eq!(length(handler.read_replica(4, 1, u64::MAX, 0).await), 0);
        assert!(!store.info(empty).unwrap().unvouched);
        assert_eq!(length(handler.read_replica(5, 1, u64::MAX, 0).await), 150);
        store.set_version(h, 2).await.unwrap();
        // A fence says nothing of what a quorum holds (seed 1645: answering 0 here, with the
        // put's bytes on disk, made a reader's quorum of answers say the file was empty).
        let still = handler.read_replica(3, 2, u64::MAX, 0).await;
        assert!(matches!(still, Err(DataError::Unavailable(_))), "{still:?}");
        assert!(
            store.info(h).unwrap().unvouched,
            "a fence vouches for nothing new"
        );
        store.note_quorum(h, 2, 150).unwrap();
        assert_eq!(length(handler.read_replica(3, 2, u64::MAX, 0).await), 150);
        assert!(!store.info(h).unwrap().unvouched);
    }

    #[test]
    fn a_forgotten_op_reaches_the_client_as_a_definite_failure_not_as_chunk_full() {
        let forgot = || StorageError::OpRetentionExpired {
            handle: ChunkHandle(4),
            length: 77,
        };
        for e in [
            storage_to_data(forgot()),
            replication_to_data(ReplicationError::Storage(forgot())),
        ] {
            assert_eq!(
                e,
                DataError::OpRetentionExpired {
                    handle: 4,
                    length: 77
                }
            );
            assert!(!e.is_retriable());
        }
        assert!(matches!(
            replication_to_data(ReplicationError::ChunkFull {
                handle: ChunkHandle(4),
                length: 77
            }),
            DataError::ChunkFull { .. }
        ));
    }

    #[test]
    fn a_full_disk_and_a_sealed_replicas_word_reach_the_client_as_what_it_can_act_on() {
        // A full disk is retried (the simulator found appends failing at once on it).
        let full = StorageError::DiskFull {
            path: "/data/1".into(),
            source: std::io::Error::other("no space left on device"),
        };
        let e = replication_to_data(ReplicationError::Storage(full));
        assert!(e.is_retriable(), "{e:?}");
        // So is a primary whose disk failed a commit (it gave its lease up).
        let e = replication_to_data(ReplicationError::DiskFailed {
            handle: ChunkHandle(4),
            message: "I/O error".into(),
        });
        assert!(e.is_retriable(), "{e:?}");
        // A sealed replica's word on an op travels as such, for the client to count.
        assert_eq!(
            replication_to_data(ReplicationError::SealedWith {
                handle: ChunkHandle(4),
                offset: 9
            }),
            DataError::SealedWith {
                handle: 4,
                offset: 9
            }
        );
    }
}
