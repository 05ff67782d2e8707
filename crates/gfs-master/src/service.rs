//! The master's gRPC services: thin conversions between the wire and [`MetaStore`] /
//! [`Registry`]. `Master` is client-facing; `MasterControl` serves chunkservers; `Admin`
//! serves operators.
//!
//! Errors are gRPC codes ([`status`]): INVALID_ARGUMENT (a bad path, naming the problem),
//! NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION (not a directory, directory not empty, rename
//! into itself), UNAVAILABLE (not enough live servers, a lease to wait out, the log failed:
//! retry). Every namespace call takes its path locks (`locks.rs`) for the whole operation:
//! write for mkdir, create, delete, both ends of a rename and `AppendChunk` (it may allocate);
//! read for stat, list and `GetChunks`.
//!
//! `Register` replies with the cluster-wide values of this master's configuration (chunk size,
//! quorum, heartbeat interval): they come from one source. A server that says it runs with
//! another chunk size or quorum is not registered (nothing is placed on it, its leases are not
//! adopted); the reply still carries ours, and the server refuses to serve
//! (`gfs_chunkserver::cluster`). A server that says 0 (an older one) is taken at its word.
//!
//! A heartbeat from an unregistered server is answered `reregister` and nothing in it is
//! believed. Otherwise each piece of a report counts as a heartbeat for liveness: versions and
//! seals the log missed are adopted from it, the replicas to delete among those it names are
//! chosen, new lagging reports start a relegation (in the background), the piece is recorded (a
//! completed pass drops what it no longer names), and the leases the server reports `writing`
//! are extended; the reply carries the extensions and deletes of that piece's share.
//!
//! `ReportCorrupt` marks the replica corrupt (out of the locations) and answers where good
//! copies of its blocks may be (`Registry::block_sources`: the chunk's other live replicas,
//! those not reported corrupt first, each longest first); the server restores its bad blocks
//! in place from them, each checked against its own stored CRC32C, and reports `repaired`,
//! which counts the replica again. Meanwhile, up to `RESTORE_GRACE` after the first report of
//! it, the replica is not deleted and counts toward the chunk's goal (no copy is started), until
//! its server reports that it cannot restore it (`unrestorable`).
//!
//! `Stat` of a file adds its health from the registry (`Registry::health`): chunks with fewer
//! current replicas than the goal, chunks with none on a live server, and stale replicas on
//! live servers (`FileStat.under_replicated`, `lost_chunks`, `stale_replicas`; 0 in listings).

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use gfs_proto::v1::master_control_server::MasterControl;
use gfs_proto::v1::master_server::Master;
use gfs_proto::v1::{
    AppendChunkRequest, BlockSource, ChunkLease, CreateFileReply, CreateFileRequest, DeleteReply,
    DeleteRequest, FileStat, GetChunksReply, GetChunksRequest, HeartbeatReply, HeartbeatRequest,
    LeaseExtension, ListReply, ListRequest, MkdirReply, MkdirRequest, RegisterReply,
    RegisterRequest, RenameReply, RenameRequest, ReportCorruptReply, ReportCorruptRequest,
    ReportSealedReply, ReportSealedRequest, StatReply, StatRequest,
};
use gfs_util::time::from_unix_ms;
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

use crate::chunks::{ChunkManager, HeldLease};
use crate::error::MasterError;
use crate::locks::{Mode, PathLocks};
use crate::metastore::MetaStore;
use crate::namespace::Stat;
use crate::path;
use crate::record::{CreateOp, Op, PathOp, RenameOp};
use crate::registry::{Piece, Registry, Replica, ServerInfo};
use crate::tokens::Tokens;
use crate::trash::{TRASH, Trash};

/// How long a corrupt replica whose server was given sources for its bad blocks is kept from
/// deletion and counted toward its chunk's goal, for its server to restore them in place (a
/// few block reads of 64 KiB each), unless the server reports first that it cannot.
pub const RESTORE_GRACE: Duration = Duration::from_secs(30);

/// Maps a metadata error to the status a client sees.
pub fn status(e: MasterError) -> Status {
    let msg = e.to_string();
    match e {
        MasterError::InvalidPath { .. } => Status::invalid_argument(msg),
        MasterError::NotFound(_) | MasterError::ChunkNotFound(_) => Status::not_found(msg),
        MasterError::AlreadyExists(_) | MasterError::ChunkExists(_) => Status::already_exists(msg),
        MasterError::NotADirectory(_)
        | MasterError::IsADirectory(_)
        | MasterError::DirectoryNotEmpty(_)
        | MasterError::RenameIntoSelf { .. } => Status::failed_precondition(msg),
        MasterError::LogFailed | MasterError::Io { .. } | MasterError::Locked(_) => {
            Status::unavailable(msg)
        }
        MasterError::CorruptLog { .. } | MasterError::Internal(_) => Status::internal(msg),
        MasterError::Unavailable(_) => Status::unavailable(msg),
        MasterError::InvalidArgument(_) => Status::invalid_argument(msg),
        MasterError::NoSuchServer(_) => Status::not_found(msg),
        MasterError::PermissionDenied(_) => Status::permission_denied(msg),
        MasterError::NotLeader { leader } => {
            let mut s = Status::unavailable(msg);
            // Always present (empty: no leader known), so callers tell it from other failures.
            let v = leader
                .unwrap_or_default()
                .parse()
                .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(""));
            s.metadata_mut().insert(LEADER_HEADER, v);
            s
        }
    }
}

pub use gfs_host::LEADER_HEADER;

impl From<MasterError> for Status {
    fn from(e: MasterError) -> Status {
        status(e)
    }
}

fn wire(s: Stat) -> FileStat {
    FileStat {
        path: s.path,
        dir: s.dir,
        mtime_ms: s.mtime_ms,
        replication: s.replication,
        chunks: s.chunks,
        ..FileStat::default()
    }
}

fn checked(p: &str) -> Result<String, Status> {
    path::normalize(p).map_err(status)
}

/// The name in the caller's certificate ("" without TLS): whom a chunk token is issued to.
fn caller_name<T>(r: &Request<T>) -> String {
    r.extensions()
        .get::<gfs_host::tls::Peer>()
        .map(|p| p.name.clone())
        .unwrap_or_default()
}

/// The client-facing service: namespace and chunk locations.
pub struct MasterService {
    meta: Arc<MetaStore>,
    chunks: Arc<ChunkManager>,
    replication: u32,
    locks: Arc<PathLocks>,
    trash: Arc<Trash>,
    tokens: Tokens,
    /// Serves a master that does not lead: its chunk manager hears no chunkserver, so a stat
    /// tells no replica health.
    follower: bool,
}

impl MasterService {
    /// This service for a master that does not lead, answering the namespace reads a caller
    /// allows to be stale (`gfs_host::STALE_HEADER`) from the entries applied here.
    pub fn for_follower(mut self) -> MasterService {
        self.follower = true;
        self
    }

    /// A service over `meta` and `chunks`; files get `replication` replicas unless they ask
    /// otherwise; deletes go through `trash`, which shares `locks`; leases and locations carry
    /// chunk tokens from `tokens`.
    pub fn new(
        meta: Arc<MetaStore>,
        chunks: Arc<ChunkManager>,
        replication: u32,
        locks: Arc<PathLocks>,
        trash: Arc<Trash>,
        tokens: Tokens,
    ) -> MasterService {
        MasterService {
            meta,
            chunks,
            replication,
            locks,
            trash,
            tokens,
            follower: false,
        }
    }

    async fn is_dir(&self, p: &str) -> Result<bool, Status> {
        let p = p.to_string();
        let st = self
            .meta
            .read(move |ns| ns.stat(&p))
            .await
            .map_err(status)?;
        Ok(st.map(|s| s.dir).unwrap_or(false))
    }
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn mkdir(&self, r: Request<MkdirRequest>) -> Result<Response<MkdirReply>, Status> {
        let r = r.into_inner();
        let p = checked(&r.path)?;
        let mut steps: Vec<String> = if r.parents {
            path::ancestors(&p)
                .into_iter()
                .filter(|a| *a != "/")
                .map(String::from)
                .collect()
        } else {
            Vec::new()
        };
        steps.push(p.clone());
        for step in steps {
            let _lock = self.locks.mutate(&step).await;
            let op = Op::Mkdir(PathOp {
                path: step.clone(),
                mtime_ms: self.chunks.cfg.clock.now_ms(),
            });
            match self.meta.mutate(op).await {
                Ok(_) => {}
                // With -p, an existing directory on the way (or at the end) is fine.
                Err(MasterError::AlreadyExists(_)) if r.parents && self.is_dir(&step).await? => {}
                Err(MasterError::AlreadyExists(_)) if r.parents => {
                    return Err(status(MasterError::NotADirectory(step)));
                }
                Err(e) => return Err(status(e)),
            }
        }
        Ok(Response::new(MkdirReply {}))
    }

    async fn create(
        &self,
        r: Request<CreateFileRequest>,
    ) -> Result<Response<CreateFileReply>, Status> {
        let client = caller_name(&r);
        let r = r.into_inner();
        let path = checked(&r.path)?;
        let _lock = self.locks.mutate(&path).await;
        let create = CreateOp {
            path,
            mtime_ms: self.chunks.cfg.clock.now_ms(),
            replication: if r.replication == 0 {
                self.replication
            } else {
                r.replication
            },
        };
        if !r.first_chunk {
            self.meta.mutate(Op::Create(create)).await.map_err(status)?;
            return Ok(Response::new(CreateFileReply { first_chunk: None }));
        }
        let mut first_chunk = self.chunks.create_with_chunk(create).await?;
        if let Some(lease) = &mut first_chunk {
            self.tokens.stamp_lease(lease, &client);
        }
        Ok(Response::new(CreateFileReply { first_chunk }))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteReply>, Status> {
        let r = r.into_inner();
        let path = checked(&r.path)?;
        let purged = self
            .trash
            .delete(&path, r.recursive, self.chunks.cfg.clock.now_ms())
            .await
            .map_err(status)?;
        self.chunks.purged(&purged);
        Ok(Response::new(DeleteReply {}))
    }

    async fn rename(&self, r: Request<RenameRequest>) -> Result<Response<RenameReply>, Status> {
        let r = r.into_inner();
        let (src, dst) = (checked(&r.src)?, checked(&r.dst)?);
        let _lock = self
            .locks
            .paths(&[(&src, Mode::Write), (&dst, Mode::Write)])
            .await;
        let op = Op::Rename(RenameOp {
            src,
            dst,
            mtime_ms: self.chunks.cfg.clock.now_ms(),
        });
        self.meta.mutate(op).await.map_err(status)?;
        Ok(Response::new(RenameReply {}))
    }

    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let p = checked(&r.into_inner().path)?;
        let _lock = self.locks.read(&p).await;
        let root = p == "/";
        let mut entries = self
            .meta
            .read(move |ns| ns.list(&p))
            .await
            .map_err(status)?
            .map_err(status)?;
        if root {
            // The trash is hidden (`ls /.trash` shows it).
            entries.retain(|e| e.path != TRASH);
        }
        Ok(Response::new(ListReply {
            entries: entries.into_iter().map(wire).collect(),
        }))
    }

    async fn stat(&self, r: Request<StatRequest>) -> Result<Response<StatReply>, Status> {
        let p = checked(&r.into_inner().path)?;
        let _lock = self.locks.read(&p).await;
        let st = self
            .meta
            .read(move |ns| ns.stat(&p))
            .await
            .map_err(status)?
            .map_err(status)?;
        let mut stat = wire(st);
        if !stat.dir && !self.follower {
            let goal = self.chunks.goal();
            for c in self.chunks.health(&stat.path).await? {
                stat.under_replicated += u64::from(c.replicas.current < goal);
                stat.lost_chunks += u64::from(c.replicas.current == 0);
                stat.stale_replicas += c.replicas.stale as u64;
            }
        }
        Ok(Response::new(StatReply { stat: Some(stat) }))
    }

    async fn append_chunk(
        &self,
        r: Request<AppendChunkRequest>,
    ) -> Result<Response<ChunkLease>, Status> {
        let client = caller_name(&r);
        let p = checked(&r.into_inner().path)?;
        // One allocation at a time per file; files elsewhere go ahead.
        let _lock = self.locks.mutate(&p).await;
        let mut lease = self.chunks.append_chunk(&p).await?;
        self.tokens.stamp_lease(&mut lease, &client);
        Ok(Response::new(lease))
    }

    async fn get_chunks(
        &self,
        r: Request<GetChunksRequest>,
    ) -> Result<Response<GetChunksReply>, Status> {
        let client = caller_name(&r);
        let r = r.into_inner();
        let p = checked(&r.path)?;
        let _lock = self.locks.read(&p).await;
        let mut reply = self
            .chunks
            .get_chunks(&p, r.first_index, r.max_chunks)
            .await?;
        self.tokens.stamp_locations(&mut reply, &client);
        Ok(Response::new(reply))
    }

    async fn report_sealed(
        &self,
        r: Request<ReportSealedRequest>,
    ) -> Result<Response<ReportSealedReply>, Status> {
        let caller = r
            .extensions()
            .get::<gfs_host::tls::Peer>()
            .map(|p| p.name.clone());
        let r = r.into_inner();
        if let Some(id) = caller {
            self.chunks.check_seal_reporter(&id, r.handle)?;
        }
        self.chunks
            .report_sealed(r.handle, r.length, &r.replicas)
            .await?;
        Ok(Response::new(ReportSealedReply {}))
    }
}

/// The chunkserver-facing membership service.
pub struct ControlService {
    registry: Arc<Mutex<Registry>>,
    chunks: Arc<ChunkManager>,
    heartbeat_interval: Duration,
    tokens: Tokens,
}

impl ControlService {
    /// A service over `registry`, asking servers to heartbeat every `heartbeat_interval`, and
    /// handing them the key of `tokens` when they register.
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        chunks: Arc<ChunkManager>,
        heartbeat_interval: Duration,
        tokens: Tokens,
    ) -> ControlService {
        ControlService {
            registry,
            chunks,
            heartbeat_interval,
            tokens,
        }
    }
}

#[tonic::async_trait]
impl MasterControl for ControlService {
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        gfs_host::tls::check_chunkserver(r.extensions(), &r.get_ref().id)?;
        let r = r.into_inner();
        if r.id.is_empty() || r.data_addr.is_empty() || r.repl_addr.is_empty() {
            return Err(Status::invalid_argument(
                "id, data_addr and repl_addr are required",
            ));
        }
        // The cluster-wide values come from here: a server configured otherwise is not
        // registered (nothing is placed on it); the reply still tells it ours, and it refuses
        // to serve. 0: an older server that does not say.
        let reply = RegisterReply {
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            chunk_size: self.chunks.chunk_size(),
            quorum: u32::try_from(self.chunks.quorum()).unwrap_or(u32::MAX),
            token_key: Default::default(),
        };
        let differs = |theirs: u64, ours: u64| theirs != 0 && theirs != ours;
        if differs(r.chunk_size, reply.chunk_size) || differs(r.quorum.into(), reply.quorum.into())
        {
            tracing::error!(id = %r.id, chunk_size = r.chunk_size, quorum = r.quorum,
                our_chunk_size = reply.chunk_size, our_quorum = reply.quorum,
                "chunkserver not registered: its chunk size or quorum differs from this master's");
            return Ok(Response::new(reply));
        }
        let info = ServerInfo {
            id: r.id,
            data_addr: r.data_addr,
            repl_addr: r.repl_addr,
            rack: r.rack,
            capacity_bytes: r.capacity_bytes,
            used_bytes: r.used_bytes,
        };
        self.registry
            .lock()
            .register_disk(info.clone(), r.disk_id, Instant::now());
        self.chunks.note_failed_creations(&info.id, r.disk_id);
        // The leases it holds: what a restarted master needs so as not to wait a lease period
        // for its chunks (older servers do not say, and their chunks wait).
        if r.reports_leases {
            let held: Vec<HeldLease> = r
                .leases
                .into_iter()
                .map(|l| HeldLease {
                    handle: l.handle,
                    version: l.version,
                    expires: from_unix_ms(l.expires_unix_ms),
                    secondaries: l.secondaries,
                })
                .collect();
            self.chunks.adopt_leases(&info, &held).await;
        }
        // Only a registered server gets the key that checks the clients' chunk tokens.
        let reply = RegisterReply {
            token_key: self.tokens.key_bytes().into(),
            ..reply
        };
        Ok(Response::new(reply))
    }

    async fn report_corrupt(
        &self,
        r: Request<ReportCorruptRequest>,
    ) -> Result<Response<ReportCorruptReply>, Status> {
        gfs_host::tls::check_chunkserver(r.extensions(), &r.get_ref().id)?;
        let r = r.into_inner();
        if !self.registry.lock().is_registered(&r.id) {
            tracing::warn!(id = %r.id, handle = r.handle, "corruption report from an unregistered chunkserver ignored");
            return Ok(Response::new(ReportCorruptReply::default()));
        }
        let mut reg = self.registry.lock();
        if r.repaired {
            if reg.clear_corrupt(&r.id, r.handle) {
                tracing::info!(server = %r.id, handle = r.handle, "corrupt replica restored in place: counted again");
                reg.events.push(
                    "restored",
                    format!(
                        "chunk {} on {}: bad blocks restored from good copies",
                        r.handle, r.id
                    ),
                );
            }
            return Ok(Response::new(ReportCorruptReply::default()));
        }
        if r.unrestorable {
            tracing::warn!(server = %r.id, handle = r.handle, "corrupt replica cannot be restored in place: the chunk is copied from a good replica, then it goes");
            reg.cannot_restore(&r.id, r.handle, Instant::now());
            return Ok(Response::new(ReportCorruptReply::default()));
        }
        tracing::error!(server = %r.id, handle = r.handle, block = r.block, "corrupt replica reported: no longer listed; it restores its bad blocks from good copies, else the chunk is copied from a good one");
        reg.mark_corrupt(&r.id, r.handle);
        reg.events.push(
            "corrupt",
            format!(
                "chunk {} on {} failed its checksum at block {}",
                r.handle, r.id, r.block
            ),
        );
        let sources: Vec<BlockSource> = reg
            .block_sources(r.handle, &r.id)
            .into_iter()
            .map(|(s, x)| BlockSource {
                id: s.id,
                repl_addr: s.repl_addr,
                version: x.version,
                length: x.length,
            })
            .collect();
        if !sources.is_empty() {
            reg.restoring_until(&r.id, r.handle, Instant::now() + RESTORE_GRACE);
        }
        drop(reg);
        Ok(Response::new(ReportCorruptReply { sources }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        gfs_host::tls::check_chunkserver(r.extensions(), &r.get_ref().id)?;
        let r = r.into_inner();
        // Nothing of an unregistered sender is believed (its versions, seals, lagging
        // reports): it is told to register first.
        if !self.registry.lock().is_registered(&r.id) {
            tracing::warn!(id = %r.id, "heartbeat from an unregistered chunkserver ignored");
            return Ok(Response::new(HeartbeatReply {
                reregister: true,
                ..HeartbeatReply::default()
            }));
        }
        let report: Vec<Replica> = r
            .chunks
            .iter()
            .map(|c| Replica {
                handle: c.handle,
                version: c.version,
                length: c.committed_length,
                sealed: c.sealed,
            })
            .collect();
        self.chunks.adopt_reports(&r.id, &report).await?;
        self.chunks.note_unvouched(
            r.chunks
                .iter()
                .filter(|c| c.unvouched && !c.sealed)
                .map(|c| c.handle),
        );
        let delete = self.chunks.to_delete(&r.id, &report).await?;
        let newly = self
            .chunks
            .note_lagging(r.lagging.iter().map(|l| (l.handle, l.address.clone())));
        for handle in newly {
            let chunks = Arc::clone(&self.chunks);
            tokio::spawn(async move {
                if let Err(e) = chunks.relegate_lagging(handle).await {
                    tracing::warn!(%handle, error = %e, "cannot bump past lagging replicas yet");
                    chunks.relegation_failed(handle);
                }
            });
        }
        // One piece of a pass of the report (the whole report from a server that sends it in
        // one heartbeat): see `Registry::heartbeat_piece`.
        let piece = Piece {
            report_id: r.report_id,
            index: r.piece,
            more: r.more,
        };
        let heard = {
            let mut reg = self.registry.lock();
            let heard = reg.heartbeat_piece(
                &r.id,
                r.used_bytes,
                report,
                piece,
                r.disk_lost,
                Instant::now(),
            );
            // What this reply deletes leaves the locations now, though the report just taken
            // still names it: else the next holder to heartbeat sees one replica too many
            // again and drops a second (seed 11098 of the simulator: a sealed chunk with one
            // extra replica went down to one, three heartbeats in a row).
            for d in &delete {
                reg.forget_replica(&r.id, d.handle);
            }
            heard
        };
        if let Some(reported) = &heard.pass {
            self.chunks.forget_unreported(&r.id, reported);
        }
        let known = heard.known;
        let extensions = if known {
            self.chunks
                .extend_leases(&r.id, &r.writing)
                .into_iter()
                .map(|(handle, version, expires)| LeaseExtension {
                    handle,
                    version,
                    expires_unix_ms: gfs_util::time::unix_ms(expires),
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(HeartbeatReply {
            reregister: !known,
            extensions,
            delete: if known { delete } else { Vec::new() },
        }))
    }
}

/// The operators' service: cluster report, fsck, decommissioning.
pub struct AdminService {
    chunks: Arc<ChunkManager>,
}

impl AdminService {
    /// A service over `chunks`.
    pub fn new(chunks: Arc<ChunkManager>) -> AdminService {
        AdminService { chunks }
    }
}

#[tonic::async_trait]
impl gfs_proto::v1::admin_server::Admin for AdminService {
    async fn report(
        &self,
        _: Request<gfs_proto::v1::ReportRequest>,
    ) -> Result<Response<gfs_proto::v1::ClusterReport>, Status> {
        Ok(Response::new(self.chunks.report().await?.into()))
    }

    async fn fsck(
        &self,
        r: Request<gfs_proto::v1::FsckRequest>,
    ) -> Result<Response<gfs_proto::v1::FsckReply>, Status> {
        let p = checked(&r.into_inner().path)?;
        let report = self.chunks.fsck(&p).await?;
        Ok(Response::new(crate::wire::fsck_reply(
            report,
            gfs_proto::PAGE_BYTES,
        )))
    }

    async fn decommission(
        &self,
        r: Request<gfs_proto::v1::DecommissionRequest>,
    ) -> Result<Response<gfs_proto::v1::DecommissionReply>, Status> {
        let r = r.into_inner();
        let remaining = self.chunks.decommission(&r.id, !r.cancel).await?;
        tracing::info!(
            id = r.id,
            cancel = r.cancel,
            remaining,
            "decommission asked"
        );
        Ok(Response::new(gfs_proto::v1::DecommissionReply {
            remaining,
        }))
    }

    async fn add_master(
        &self,
        r: Request<gfs_proto::v1::AddMasterRequest>,
    ) -> Result<Response<gfs_proto::v1::MembershipReply>, Status> {
        let r = r.into_inner();
        let meta = self.chunks.metastore();
        meta.add_master(r.id, r.addr).await?;
        Ok(Response::new(membership(meta)))
    }

    async fn remove_master(
        &self,
        r: Request<gfs_proto::v1::RemoveMasterRequest>,
    ) -> Result<Response<gfs_proto::v1::MembershipReply>, Status> {
        let meta = self.chunks.metastore();
        meta.remove_master(r.into_inner().id).await?;
        Ok(Response::new(membership(meta)))
    }
}

/// The group of masters as this master sees it now.
fn membership(meta: &MetaStore) -> gfs_proto::v1::MembershipReply {
    gfs_proto::v1::MembershipReply {
        masters: meta.masters().into_iter().map(Into::into).collect(),
    }
}
