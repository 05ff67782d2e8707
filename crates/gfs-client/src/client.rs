//! The client handle: namespace calls to the master, record appends, chunk locations and reads.
//! Chunk locations come a page of `GetChunks` at a time; `refresh` fetches every page.
//!
//! [`Client::connect`] and [`Client::connect_with`] fail at once if the master is not
//! reachable; [`Client::connect_lazy`] connects on first use. Either way an unreachable master
//! (down, restarting) is a transient failure like any other for the calls that retry (record
//! appends, [`Writer`], [`Reader`], [`Client::ensure_file`]): they back off and ask again until
//! `op_deadline`; plain namespace calls fail at once. Locations are cached for `cache_ttl`.
//!
//! # Record appends ([`Client::append`])
//!
//! One random op id serves every retry. The lease of the file's last chunk is cached per client
//! (used while it has more than a second to run; dropped on any error, and by a delete or a
//! rename), else asked of the master (`AppendChunk`). `ChunkFull` asks again (the master has
//! the seal). Retriable errors (transport, Busy, NotPrimary, LeaseExpired, StaleVersion,
//! NotFound, QuorumNotReached) back off and ask again until `op_deadline` (`GaveUp`). The
//! primary's local `NotStaged`, `Hole` and `Overlap` reach the client as `Unavailable`
//! (retriable, same op id).
//!
//! Every chunk an attempt reached without a definite answer stays uncertain. Before the op goes
//! to another chunk, each uncertain chunk's replicas (those the attempt reached, primary first,
//! then those the master lists now) are asked (`resolve`): an offset ends the append, `ChunkFull`
//! (sealed there without the op) clears that chunk, anything else keeps it and the client
//! waits. So an op is never in two chunks (I4); a `GaveUp` may leave it committed once.
//! `OpRetentionExpired` from an uncertain chunk (on the APPEND, or in `resolve` when no other
//! replica of it still knows) ends the append with `OutcomeUnknown` (at most once, sent nowhere
//! else); from a chunk no earlier attempt left uncertain it counts as `ChunkFull` (the op cannot
//! be there). Either needs an append retrying for longer than the op retention (10 minutes).
//!
//! # Reads
//!
//! A chunk's length is its sealed length, else the longest committed length that
//! `length_quorum` of its replicas report ([`Client::chunk_length`]; with fewer answers it asks
//! the master again and waits). Replicas on this host come first, the rest shuffled; a replica
//! that fails, is stale, short or corrupt (`ChecksumMismatch`, logged) is skipped, and when none
//! serves the locations are asked again once. A read request asks for at most `read_piece` and
//! a quarter chunk (what a chunkserver sends in one frame). [`Client::read`] stays within the
//! chunk holding its offset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gfs_dataplane::{DataClient, DataError};
use gfs_proto::v1::admin_client::AdminClient;
use gfs_proto::v1::master_client::MasterClient;
use gfs_proto::v1::{
    AppendChunkRequest, ChunkLease, CreateFileRequest, DeleteRequest, FileStat, GetChunksRequest,
    ListRequest, MkdirRequest, RenameRequest, StatRequest,
};
use gfs_proto::v1::{ClusterReport, DecommissionRequest, FsckReply, FsckRequest, ReportRequest};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result, status_retriable};
use crate::reader::Reader;
use crate::writer::Writer;

/// A directory or file as the namespace describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path.
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Last modification, ms since the Unix epoch.
    pub mtime_ms: u64,
    /// Replicas per chunk (files).
    pub replication: u32,
    /// Number of chunks (files).
    pub chunks: u64,
    /// Chunks with fewer current replicas than the goal (`stat` of a file only).
    pub under_replicated: u64,
    /// Chunks with no current replica on a live server (`stat` of a file only).
    pub lost_chunks: u64,
    /// Stale replicas still on live servers (`stat` of a file only).
    pub stale_replicas: u64,
}

impl From<FileStat> for Entry {
    fn from(s: FileStat) -> Entry {
        Entry {
            path: s.path,
            is_dir: s.dir,
            mtime_ms: s.mtime_ms,
            replication: s.replication,
            chunks: s.chunks,
            under_replicated: s.under_replicated,
            lost_chunks: s.lost_chunks,
            stale_replicas: s.stale_replicas,
        }
    }
}

/// A replica of a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Chunkserver id.
    pub id: String,
    /// Its data-plane address.
    pub data_addr: String,
}

/// One chunk of a file and where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    /// Position in the file.
    pub index: u64,
    /// Where the chunk starts in the file: the sum of the lengths of the earlier chunks.
    pub file_offset: u64,
    /// Chunk handle.
    pub handle: u64,
    /// Current version; older replicas are never read.
    pub version: u64,
    /// Final length, once sealed.
    pub sealed_length: Option<u64>,
    /// Unsealed: how many replicas' committed lengths a reader must hear before it takes the
    /// longest for the chunk's length (any this many hold every acknowledged append).
    pub length_quorum: usize,
    /// Current replicas, nearest first.
    pub replicas: Vec<Replica>,
}

/// The chunks of a file as the master listed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locations {
    /// Chunk size of the cluster.
    pub chunk_size: u64,
    /// Chunks in file order.
    pub chunks: Vec<ChunkInfo>,
}

struct Inner {
    addr: String,
    master: MasterClient<Channel>,
    admin: AdminClient<Channel>,
    cfg: ClientConfig,
    conns: Mutex<HashMap<String, DataClient>>,
    locations: Mutex<HashMap<String, (Instant, Arc<Locations>)>>,
    /// The lease of each file's last chunk, as record appends last saw it.
    leases: Mutex<HashMap<String, ChunkLease>>,
}

/// A connection to a gfs cluster; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("master", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// Retries with exponential backoff until a deadline.
pub(crate) struct Retry {
    deadline: Instant,
    backoff: std::time::Duration,
    max: std::time::Duration,
    attempts: u32,
}

impl Retry {
    /// Sleeps before the next attempt, or gives up with `last` once the deadline would pass.
    pub(crate) async fn wait(&mut self, last: impl std::fmt::Display) -> Result<()> {
        self.attempts += 1;
        let jitter = rand::random_range(0..=self.backoff.as_millis() as u64 / 2);
        let pause = self.backoff + std::time::Duration::from_millis(jitter);
        if Instant::now() + pause > self.deadline {
            return Err(ClientError::GaveUp {
                attempts: self.attempts,
                last: last.to_string(),
            });
        }
        tracing::debug!(attempt = self.attempts, error = %last, ?pause, "retrying");
        tokio::time::sleep(pause).await;
        self.backoff = (self.backoff * 2).min(self.max);
        Ok(())
    }
}

/// Whether an append or read may succeed after asking the master again.
/// What a replica says about an op an earlier attempt may have committed.
enum OpAnswer {
    /// It is in the chunk, at this offset.
    At(u64),
    /// The chunk is sealed without it.
    NotThere,
    /// The chunk no longer knows its op ids (sealed longer than the op retention ago).
    Forgotten,
}

/// The failure of an append an earlier attempt of which may be in chunk `handle`, a chunk that
/// no longer knows its op ids.
fn outcome_unknown(path: &str, handle: u64) -> ClientError {
    ClientError::OutcomeUnknown {
        path: path.to_string(),
        handle,
    }
}

pub(crate) fn data_retriable(e: &DataError) -> bool {
    e.is_retriable()
        || matches!(
            e,
            DataError::StaleVersion { .. } | DataError::NotFound { .. }
        )
}

/// Runs `call` against (a clone of) `client` until it answers, retrying what may go away on
/// retry (UNAVAILABLE and the like) with `retry`'s backoff and deadline.
async fn ask_with<C, T, F, Fut>(client: &C, retry: &mut Retry, call: F) -> Result<T>
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match call(client.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if status_retriable(&s) => retry.wait(s.message()).await?,
            Err(s) => return Err(ClientError::from_status(s)),
        }
    }
}

/// Whether the connection itself failed (it is dropped from the pool).
fn connection_failed(e: &DataError) -> bool {
    matches!(
        e,
        DataError::Io(_) | DataError::ConnectionClosed | DataError::Timeout
    )
}

impl Client {
    /// Connects to the master at `addr` (`host:port`) with the default configuration.
    pub async fn connect(addr: &str) -> Result<Client> {
        Self::connect_with(addr, ClientConfig::default()).await
    }

    /// Connects to the master at `addr` with `cfg`; fails at once if it is not reachable.
    pub async fn connect_with(addr: &str, cfg: ClientConfig) -> Result<Client> {
        let channel =
            Self::endpoint(addr, &cfg)?
                .connect()
                .await
                .map_err(|e| ClientError::Connect {
                    addr: addr.to_string(),
                    reason: format!("{e}: is gfs-master running there?"),
                })?;
        Ok(Self::over(addr, channel, cfg))
    }

    /// A client of the master at `addr` that connects when first used, not now: it fails only
    /// on an unusable address. Calls that retry (record appends, reads, the streaming writer,
    /// [`Client::ensure_file`]) treat a master that is down or restarting like any other
    /// transient failure and wait for it within `op_deadline`; the others fail with
    /// `Master("Unavailable: ..")` while it is unreachable.
    pub fn connect_lazy(addr: &str, cfg: ClientConfig) -> Result<Client> {
        let channel = Self::endpoint(addr, &cfg)?.connect_lazy();
        Ok(Self::over(addr, channel, cfg))
    }

    fn endpoint(addr: &str, cfg: &ClientConfig) -> Result<Endpoint> {
        Ok(Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.rpc_timeout)
            .tcp_nodelay(true))
    }

    fn over(addr: &str, channel: Channel, cfg: ClientConfig) -> Client {
        Client {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                master: MasterClient::new(channel.clone())
                    .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                    .max_encoding_message_size(gfs_proto::MAX_MESSAGE),
                admin: AdminClient::new(channel)
                    .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                    .max_encoding_message_size(gfs_proto::MAX_MESSAGE),
                cfg,
                conns: Mutex::new(HashMap::new()),
                locations: Mutex::new(HashMap::new()),
                leases: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    fn master(&self) -> MasterClient<Channel> {
        self.inner.master.clone()
    }

    pub(crate) fn retry(&self) -> Retry {
        Retry {
            deadline: Instant::now() + self.inner.cfg.op_deadline,
            backoff: self.inner.cfg.initial_backoff,
            max: self.inner.cfg.max_backoff,
            attempts: 0,
        }
    }

    /// Creates the directory `path` (and its missing parents with `parents`).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        let req = MkdirRequest {
            path: path.into(),
            parents,
        };
        self.master()
            .mkdir(req)
            .await
            .map_err(ClientError::from_status)?;
        Ok(())
    }

    /// Creates the empty file `path`; fails if it exists.
    pub async fn create(&self, path: &str) -> Result<()> {
        let req = CreateFileRequest {
            path: path.into(),
            replication: 0,
        };
        self.master()
            .create(req)
            .await
            .map_err(ClientError::from_status)?;
        Ok(())
    }

    /// Creates the empty file `path` unless an entry is there already (made by someone else,
    /// or by an earlier attempt whose answer was lost); retries transient failures, an
    /// unreachable master included, within `op_deadline`. An existing directory is not
    /// reported here: appending to it fails.
    pub async fn ensure_file(&self, path: &str) -> Result<()> {
        let req = CreateFileRequest {
            path: path.into(),
            replication: 0,
        };
        let created = self
            .ask(&mut self.retry(), |mut m| {
                let req = req.clone();
                async move { m.create(req).await }
            })
            .await;
        match created {
            Ok(_) | Err(ClientError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `path` (a directory's contents too with `recursive`).
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        let req = DeleteRequest {
            path: path.into(),
            recursive,
        };
        self.master()
            .delete(req)
            .await
            .map_err(ClientError::from_status)?;
        self.forget(path);
        Ok(())
    }

    /// Renames `src` to `dst` atomically; fails if `dst` exists.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        let req = RenameRequest {
            src: src.into(),
            dst: dst.into(),
        };
        self.master()
            .rename(req)
            .await
            .map_err(ClientError::from_status)?;
        self.forget(src);
        Ok(())
    }

    /// The entries of directory `path` (a file is `FailedPrecondition`: not a directory).
    /// Reads retry while the master is unavailable, up to `op_deadline`; mutations do not,
    /// since a lost reply would make their retry ambiguous.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let req = ListRequest { path: path.into() };
        let r = self
            .ask(&mut self.retry(), |mut m| {
                let req = req.clone();
                async move { m.list(req).await }
            })
            .await?;
        Ok(r.entries.into_iter().map(Entry::from).collect())
    }

    /// What the namespace says of `path` (retried like [`Client::list`]).
    pub async fn stat(&self, path: &str) -> Result<Entry> {
        let req = StatRequest { path: path.into() };
        let r = self
            .ask(&mut self.retry(), |mut m| {
                let req = req.clone();
                async move { m.stat(req).await }
            })
            .await?;
        r.stat
            .map(Entry::from)
            .ok_or_else(|| ClientError::Master("stat reply without an entry".into()))
    }

    fn forget(&self, path: &str) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.inner
            .locations
            .lock()
            .retain(|p, _| p != path && !p.starts_with(&prefix));
        self.inner
            .leases
            .lock()
            .retain(|p, _| p != path && !p.starts_with(&prefix));
    }

    /// The chunks of file `path`, from the cache while fresh.
    pub async fn locations(&self, path: &str) -> Result<Arc<Locations>> {
        let cached = self.inner.locations.lock().get(path).cloned();
        match cached {
            Some((at, l)) if at.elapsed() < self.inner.cfg.cache_ttl => Ok(l),
            _ => self.refresh(path).await,
        }
    }

    /// The chunks of file `path`, asked of the master now: every page of `GetChunks`
    /// (`chunks_per_page` at a time), so a file of any number of chunks lists whole. Each page
    /// must continue the one before (the next index, starting where the previous chunk ends);
    /// one that does not (the file was replaced in between) starts the listing over.
    pub async fn refresh(&self, path: &str) -> Result<Arc<Locations>> {
        self.refresh_with(path, &mut self.retry()).await
    }

    /// [`Client::refresh`] within `retry`'s deadline.
    async fn refresh_with(&self, path: &str, retry: &mut Retry) -> Result<Arc<Locations>> {
        let mut chunks: Vec<ChunkInfo> = Vec::new();
        let chunk_size = loop {
            let first_index = chunks.last().map_or(0, |c| c.index + 1);
            let req = GetChunksRequest {
                path: path.into(),
                first_index,
                max_chunks: self.inner.cfg.chunks_per_page,
            };
            let reply = self
                .ask(retry, |mut m| {
                    let req = req.clone();
                    async move { m.get_chunks(req).await }
                })
                .await?;
            let continues = reply.next_index == first_index + reply.chunks.len() as u64
                && (!reply.more || !reply.chunks.is_empty())
                && reply.chunks.first().is_none_or(|c| {
                    c.index == first_index
                        && chunks.last().is_none_or(|p| {
                            c.file_offset == p.file_offset + p.sealed_length.unwrap_or(0)
                        })
                });
            if !continues {
                tracing::debug!(
                    path,
                    first_index,
                    "chunk pages do not line up; listing again"
                );
                retry
                    .wait(format!(
                        "the chunk list of {path} changed while it was listed"
                    ))
                    .await?;
                chunks.clear();
                continue;
            }
            chunks.extend(reply.chunks.into_iter().map(|c| {
                let mut replicas: Vec<Replica> = c
                    .replicas
                    .into_iter()
                    .map(|r| Replica {
                        id: r.id,
                        data_addr: r.data_addr,
                    })
                    .collect();
                nearest_first(&mut replicas);
                ChunkInfo {
                    index: c.index,
                    file_offset: c.file_offset,
                    handle: c.handle,
                    version: c.version,
                    sealed_length: c.sealed_length,
                    length_quorum: (c.length_quorum as usize).max(1),
                    replicas,
                }
            }));
            if !reply.more {
                break reply.chunk_size;
            }
        };
        let l = Arc::new(Locations { chunk_size, chunks });
        self.inner
            .locations
            .lock()
            .insert(path.to_string(), (Instant::now(), Arc::clone(&l)));
        Ok(l)
    }

    /// Bytes per read request: the configured piece, at most what a chunkserver sends in one
    /// reply (a quarter of a chunk).
    pub(crate) fn read_piece(&self, chunk_size: u64) -> u64 {
        (self.inner.cfg.read_piece as u64)
            .min(chunk_size / 4)
            .max(1)
    }

    /// A pooled data-plane connection to `addr`.
    pub(crate) async fn conn(&self, addr: &str) -> Result<DataClient, DataError> {
        if let Some(c) = self.inner.conns.lock().get(addr) {
            return Ok(c.clone());
        }
        let cfg = gfs_dataplane::ClientConfig {
            connect_timeout: self.inner.cfg.connect_timeout,
            request_timeout: self.inner.cfg.rpc_timeout,
            ..gfs_dataplane::ClientConfig::default()
        };
        let c = DataClient::connect(addr, cfg).await?;
        self.inner
            .conns
            .lock()
            .entry(addr.to_string())
            .or_insert_with(|| c.clone());
        Ok(c)
    }

    /// Forgets the pooled connection to `addr` after `e`, if `e` says it is broken.
    pub(crate) fn drop_conn_on(&self, addr: &str, e: &DataError) {
        if connection_failed(e) {
            self.inner.conns.lock().remove(addr);
        }
    }

    /// The lease for appending to the last chunk of `path`, retrying while the master says
    /// UNAVAILABLE (servers registering, an old lease to wait out).
    pub(crate) async fn lease(&self, path: &str, retry: &mut Retry) -> Result<ChunkLease> {
        let req = AppendChunkRequest { path: path.into() };
        self.ask(retry, |mut m| {
            let req = req.clone();
            async move { m.append_chunk(req).await }
        })
        .await
    }

    /// Runs `call` against the master until it answers, retrying what may go away on retry
    /// (UNAVAILABLE and the like) with `retry`'s backoff and deadline.
    async fn ask<T, F, Fut>(&self, retry: &mut Retry, call: F) -> Result<T>
    where
        F: Fn(MasterClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        ask_with(&self.inner.master, retry, call).await
    }

    /// [`Client::ask`] for the master's Admin service, with a fresh backoff.
    async fn ask_admin<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        ask_with(&self.inner.admin, &mut self.retry(), call).await
    }

    /// The cluster summary, every chunkserver and recent events (`gfs admin report`).
    pub async fn report(&self) -> Result<ClusterReport> {
        self.ask_admin(|mut a| async move { a.report(ReportRequest {}).await })
            .await
    }

    /// The health of every file at or under `path` (`gfs fsck`).
    pub async fn fsck(&self, path: &str) -> Result<FsckReply> {
        let path = path.to_string();
        self.ask_admin(|mut a| {
            let path = path.clone();
            async move { a.fsck(FsckRequest { path }).await }
        })
        .await
    }

    /// Starts draining chunkserver `id` (or asks again how far it got), or with `cancel` stops
    /// draining it; returns how many of its chunks still lack the goal elsewhere (0: safe to
    /// stop it; always 0 when cancelling).
    pub async fn decommission(&self, id: &str, cancel: bool) -> Result<u64> {
        let id = id.to_string();
        let reply = self
            .ask_admin(|mut a| {
                let id = id.clone();
                async move { a.decommission(DecommissionRequest { id, cancel }).await }
            })
            .await?;
        Ok(reply.remaining)
    }

    /// Appends `data` as one record to file `path` and returns its file offset: its byte
    /// position in what a sequential read of the file returns (where its chunk starts, the
    /// sum of the sealed lengths of the earlier chunks, plus its offset in the chunk). The
    /// record lands whole, once, at an offset the primary chooses; at most a quarter of a
    /// chunk.
    ///
    /// One operation id is used across retries, so a retry of an append that did commit
    /// returns the first offset instead of writing again, and the op goes to a new chunk only
    /// once every chunk an earlier attempt reached has answered that it is not there
    /// (exactly once, I4). Retriable failures (primary gone, lease moving, busy, quorum lost)
    /// are retried with backoff until `op_deadline`; an error past it may leave the record
    /// committed (its outcome unknown), never twice. So does `OutcomeUnknown`: a chunk an
    /// earlier attempt reached was sealed longer than the chunkservers' op retention ago and no
    /// longer knows its op ids (only when `op_deadline` is longer than that retention, 10
    /// minutes by default).
    pub async fn append(&self, path: &str, data: impl Into<Bytes>) -> Result<u64> {
        let data = data.into();
        let op: u64 = rand::random::<u64>().max(1);
        let mut retry = self.retry();
        // Chunks an attempt reached without a definite answer: the op may be (or become)
        // committed there. It goes to no other chunk before each of these answers (I4).
        let mut uncertain: Vec<ChunkLease> = Vec::new();
        loop {
            let lease = match self.cached_lease(path) {
                Some(l) => l,
                None => {
                    let l = self.lease(path, &mut retry).await?;
                    self.inner.leases.lock().insert(path.to_string(), l.clone());
                    l
                }
            };
            let max = lease.chunk_size / 4;
            if data.len() as u64 > max {
                return Err(ClientError::RecordTooLarge {
                    len: data.len() as u64,
                    max,
                });
            }
            if uncertain.iter().any(|u| u.handle != lease.handle) {
                // The file moved on to another chunk: first learn what became of the op where
                // it may already be.
                if let Some(offset) = self
                    .resolve(path, &mut uncertain, lease.handle, op, &data, &mut retry)
                    .await?
                {
                    return Ok(offset);
                }
                if uncertain.iter().any(|u| u.handle != lease.handle) {
                    self.forget_lease(path, lease.handle);
                    retry
                        .wait("the outcome of an earlier attempt is not known yet")
                        .await?;
                    continue;
                }
            }
            let Some(primary) = lease.primary.clone() else {
                retry.wait("the lease names no primary").await?;
                continue;
            };
            let res = match self.conn(&primary.data_addr).await {
                Ok(c) => {
                    c.append(lease.handle, lease.version, op, data.clone())
                        .await
                }
                Err(e) => Err(e),
            };
            if res.is_err() {
                // Whatever went wrong, the next attempt asks the master.
                self.forget_lease(path, lease.handle);
            }
            match res {
                Ok(off) => return Ok(lease.file_offset + off),
                Err(DataError::OpRetentionExpired { handle, .. })
                    if uncertain.iter().any(|u| u.handle == handle) =>
                {
                    // An earlier attempt may have committed here, and the chunk no longer
                    // knows: the op must go nowhere else (I4), and nobody can tell.
                    return Err(outcome_unknown(path, handle));
                }
                // Sealed without the op (the primary checked its op table once the seal was
                // done): the op is not in this chunk and never will be. A chunk that forgot
                // its op ids says the same to an op no earlier attempt sent there (it is not
                // in `uncertain`): it cannot hold it. The master hands out the next chunk;
                // pause only if it keeps sending this one (its seal report is on the way).
                Err(DataError::ChunkFull { .. } | DataError::OpRetentionExpired { .. }) => {
                    uncertain.retain(|u| u.handle != lease.handle);
                    if retry.attempts > 0 {
                        retry.wait("chunk full").await?;
                    } else {
                        retry.attempts += 1;
                    }
                }
                Err(e) if data_retriable(&e) => {
                    self.drop_conn_on(&primary.data_addr, &e);
                    // Any other answer leaves the attempt's outcome open: an earlier attempt
                    // of the op may still commit on this chunk.
                    uncertain.retain(|u| u.handle != lease.handle);
                    uncertain.push(lease);
                    retry.wait(&e).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Asks the replicas of each chunk in `uncertain` (other than `current`) what became of op
    /// `op`: its file offset if one holds it committed and sealed or confirms it on a quorum;
    /// a chunk that answers `ChunkFull` (sealed without it) is dropped from `uncertain`. Chunks
    /// that give no definite answer stay. The replicas the attempt reached are asked first,
    /// then those the master lists for the chunk now: a replica may have moved since (its
    /// server restarted on another address, or the chunk was copied elsewhere), and asking
    /// only the old addresses would wait on them forever. `OutcomeUnknown` when a chunk's
    /// replicas no longer know their op ids (op retention expired) and none knows better.
    async fn resolve(
        &self,
        path: &str,
        uncertain: &mut Vec<ChunkLease>,
        current: u64,
        op: u64,
        data: &Bytes,
        retry: &mut Retry,
    ) -> Result<Option<u64>> {
        let mut still = Vec::new();
        let mut now: Option<Arc<Locations>> = None;
        for u in std::mem::take(uncertain) {
            if u.handle == current {
                still.push(u);
                continue;
            }
            let mut asked: Vec<String> = Vec::new();
            let reached = u
                .primary
                .iter()
                .chain(u.secondaries.iter())
                .map(|r| (r.id.clone(), r.data_addr.clone()))
                .collect();
            let mut answer = self.ask_op(&u, reached, &mut asked, op, data).await;
            if matches!(answer, None | Some(OpAnswer::Forgotten)) {
                if now.is_none() {
                    now = self.refresh_with(path, retry).await.ok();
                }
                let listed = now
                    .iter()
                    .flat_map(|l| l.chunks.iter())
                    .filter(|c| c.handle == u.handle)
                    .flat_map(|c| c.replicas.iter())
                    .map(|r| (r.id.clone(), r.data_addr.clone()))
                    .collect();
                let more = self.ask_op(&u, listed, &mut asked, op, data).await;
                answer = more.or(answer);
            }
            match answer {
                Some(OpAnswer::At(off)) => return Ok(Some(u.file_offset + off)),
                // Sealed without the op: it is not in that chunk and never will be.
                Some(OpAnswer::NotThere) => {}
                Some(OpAnswer::Forgotten) => return Err(outcome_unknown(path, u.handle)),
                None => still.push(u),
            }
        }
        *uncertain = still;
        Ok(None)
    }

    /// Asks each replica `(id, data address)` of chunk `u` not yet in `asked` what became of
    /// op `op`, until one answers for sure: `At(offset)` if it holds it, `NotThere` if the
    /// chunk is sealed without it. `Forgotten` if none does but one no longer knows its op
    /// ids; `None` if none answers.
    async fn ask_op(
        &self,
        u: &ChunkLease,
        replicas: Vec<(String, String)>,
        asked: &mut Vec<String>,
        op: u64,
        data: &Bytes,
    ) -> Option<OpAnswer> {
        let mut forgotten = false;
        for (id, addr) in replicas {
            if asked.contains(&addr) {
                continue;
            }
            asked.push(addr.clone());
            let res = match self.conn(&addr).await {
                Ok(c) => c.append(u.handle, u.version, op, data.clone()).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(off) => {
                    tracing::debug!(
                        handle = u.handle,
                        op,
                        off,
                        "an earlier attempt had committed"
                    );
                    return Some(OpAnswer::At(off));
                }
                Err(DataError::ChunkFull { .. }) => return Some(OpAnswer::NotThere),
                // Another replica may still know (its retention started later).
                Err(DataError::OpRetentionExpired { .. }) => forgotten = true,
                Err(e) => {
                    tracing::debug!(handle = u.handle, op, replica = %id, error = %e, "no answer yet about an earlier attempt");
                    self.drop_conn_on(&addr, &e);
                }
            }
        }
        forgotten.then_some(OpAnswer::Forgotten)
    }

    /// The cached lease of `path`'s last chunk, while it has more than a second to run.
    fn cached_lease(&self, path: &str) -> Option<ChunkLease> {
        let now_ms = gfs_util::time::now_ms();
        self.inner
            .leases
            .lock()
            .get(path)
            .filter(|l| l.lease_expires_unix_ms > now_ms.saturating_add(1000))
            .cloned()
    }

    /// Drops the cached lease of `path` if it is still the one for chunk `handle`.
    fn forget_lease(&self, path: &str, handle: u64) {
        let mut leases = self.inner.leases.lock();
        if leases.get(path).is_some_and(|l| l.handle == handle) {
            leases.remove(path);
        }
    }

    /// The length of `chunk` of file `path`: its sealed length, or the longest committed length
    /// that [`ChunkInfo::length_quorum`] of its replicas report (a primary reports only the
    /// prefix a quorum holds). Fewer answers could all come from replicas short of an
    /// acknowledged append, so it asks the master again and retries until enough answer or
    /// the client's deadline passes.
    pub async fn chunk_length(&self, path: &str, chunk: &ChunkInfo) -> Result<u64> {
        let mut retry = self.retry();
        let mut chunk = std::borrow::Cow::Borrowed(chunk);
        loop {
            if let Some(l) = chunk.sealed_length {
                return Ok(l);
            }
            let lengths = self.committed_lengths(&chunk).await;
            let told = lengths.len();
            if told >= chunk.length_quorum
                && let Some(l) = lengths.into_iter().max()
            {
                return Ok(l);
            }
            let why = format!(
                "chunk {} of {path}: {told} of its {} listed replicas told their length, {} needed",
                chunk.handle,
                chunk.replicas.len(),
                chunk.length_quorum
            );
            tracing::debug!(path, handle = chunk.handle, "{why}; asking again");
            retry.wait(&why).await?;
            let l = self.refresh_with(path, &mut retry).await?;
            let Some(now) = l.chunks.iter().find(|c| c.handle == chunk.handle) else {
                return Err(ClientError::NoReplica {
                    path: path.to_string(),
                    handle: chunk.handle,
                    last: "the chunk is no longer part of the file".into(),
                });
            };
            chunk = std::borrow::Cow::Owned(now.clone());
        }
    }

    /// The committed lengths the replicas of `chunk` that answer report now.
    async fn committed_lengths(&self, chunk: &ChunkInfo) -> Vec<u64> {
        let probes = chunk.replicas.iter().map(|r| async move {
            let c = self.conn(&r.data_addr).await.ok()?;
            // A read past the end names the committed length.
            match c.read(chunk.handle, chunk.version, u64::MAX, 0).await {
                Err(DataError::OutOfRange { committed, .. }) => Some(committed),
                Ok(_) => None,
                Err(e) => {
                    self.drop_conn_on(&r.data_addr, &e);
                    None
                }
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The number of bytes of file `path` (padding after sealed chunks not counted).
    pub async fn size(&self, path: &str) -> Result<u64> {
        let l = self.refresh(path).await?;
        let mut total = 0;
        for c in &l.chunks {
            total += self.chunk_length(path, c).await?;
        }
        Ok(total)
    }

    /// Reads up to `len` bytes of `chunk` at `offset`, from the first replica that has them;
    /// a replica that fails (dead, stale, corrupt, short) is skipped, and a corrupt one logged.
    pub(crate) async fn read_chunk(
        &self,
        path: &str,
        chunk: &ChunkInfo,
        offset: u64,
        len: u32,
    ) -> Result<Bytes> {
        let mut last = String::from("the chunk has no live replica");
        for r in &chunk.replicas {
            let res = match self.conn(&r.data_addr).await {
                Ok(c) => c.read(chunk.handle, chunk.version, offset, len).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(b) if b.len() == len as usize => return Ok(b),
                Ok(b) => {
                    last = format!("replica {} is short ({} of {len} bytes)", r.id, b.len());
                }
                Err(e) => {
                    if let DataError::ChecksumMismatch { block, .. } = e {
                        tracing::warn!(path, handle = chunk.handle, replica = %r.id, block, "corrupt replica; reading another");
                    }
                    self.drop_conn_on(&r.data_addr, &e);
                    last = format!("replica {}: {e}", r.id);
                }
            }
        }
        Err(ClientError::NoReplica {
            path: path.to_string(),
            handle: chunk.handle,
            last,
        })
    }

    /// Reads up to `len` bytes at file offset `offset` (as [`Client::append`] returns), within
    /// the chunk holding it: short at the end of that chunk's data. Fails over between
    /// replicas, and asks the master again when none can serve.
    pub async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Bytes> {
        let mut fresh = false;
        loop {
            let l = if fresh {
                self.refresh(path).await?
            } else {
                self.locations(path).await?
            };
            // The chunk holding `offset`: the last one starting at or before it (every chunk
            // but the last is sealed, so their starts are final).
            let Some(chunk) = l.chunks.iter().rev().find(|c| c.file_offset <= offset) else {
                // No chunk at all in what we knew of the file: it may have grown since.
                if !fresh {
                    fresh = true;
                    continue;
                }
                return Ok(Bytes::new());
            };
            let in_chunk = offset - chunk.file_offset;
            let is_last = l.chunks.last().is_some_and(|c| c.handle == chunk.handle);
            let res = async {
                let end = self.chunk_length(path, chunk).await?;
                let n = len.min(end.saturating_sub(in_chunk));
                if n == 0 {
                    return Ok(Bytes::new());
                }
                let mut out = bytes::BytesMut::with_capacity(n as usize);
                let piece = self.read_piece(l.chunk_size);
                let mut at = in_chunk;
                while at < in_chunk + n {
                    let want = piece.min(in_chunk + n - at) as u32;
                    out.extend_from_slice(&self.read_chunk(path, chunk, at, want).await?);
                    at += u64::from(want);
                }
                Ok(out.freeze())
            }
            .await;
            match res {
                Err(ClientError::NoReplica { .. }) if !fresh => fresh = true,
                // Past the end of the last chunk we knew of: the file may have grown since.
                Ok(b) if b.is_empty() && is_last && !fresh => fresh = true,
                other => return other,
            }
        }
    }

    /// A streaming writer appending to `path` (a new or empty file, one writer at a time):
    /// fills chunks exactly, so the file reads back byte for byte.
    pub fn writer(&self, path: &str) -> Writer {
        Writer::new(self.clone(), path)
    }

    /// A streaming reader of the whole of `path`, in order, padding skipped.
    pub async fn reader(&self, path: &str) -> Result<Reader> {
        Reader::open(self.clone(), path).await
    }
}

/// Orders replicas on this host first (loopback or a local address), the rest shuffled.
fn nearest_first(replicas: &mut [Replica]) {
    use rand::seq::SliceRandom;
    replicas.shuffle(&mut rand::rng());
    replicas.sort_by_key(|r| {
        let host = r.data_addr.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
        let local = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(host == "localhost");
        !local
    });
}
