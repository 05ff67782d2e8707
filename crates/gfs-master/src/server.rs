//! The master process: configuration, wiring, background work, shutdown.
//!
//! [`Master::start`] recovers the metadata (its own operation log, or with `[raft]` its part of
//! the group's replicated log), binds the gRPC and HTTP listeners, and serves `Master`,
//! `MasterControl` and `Admin` on one port with message limits of `gfs_proto::MAX_MESSAGE`,
//! beside `MasterRaft` in a group. Those three serve only while this master leads
//! (`crate::leadership`): a single master from the start, a member of a group once elected.
//! A leader restores the draining set and runs four background loops every
//! `heartbeat_interval`, each on its own so that a slow one never delays another: mark silent
//! servers dead; settle abandoned chunks; re-replicate, then rebalance; purge the trash.
//! [`Master::wait`] flushes and checkpoints the log once serving stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use gfs_host::Host;
use gfs_proto::v1::admin_server::AdminServer;
use gfs_proto::v1::master_control_server::MasterControlServer;
use gfs_proto::v1::master_server::MasterServer;
use gfs_telemetry::RpcLayer;
use gfs_util::Size;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chunks::{ChunkConfig, ChunkManager};
use crate::control_client::TonicControl;
use crate::leadership::{Leading, Term};
use crate::locks::PathLocks;
use crate::metastore::{MetaConfig, MetaStore};
use crate::metrics::MasterMetrics;
use crate::raft::{Member, RaftTiming};
use crate::registry::Registry;
use crate::service::{AdminService, ControlService, MasterService};
use crate::tokens::TokenIssuer;
use crate::trash::Trash;

/// The master configuration file (`config/master.toml`). Every field has a default.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// gRPC address for clients and chunkservers ("host:port"; port 0 picks a free one).
    pub listen: String,
    /// HTTP address of the status page, `/metrics` and `/health` ("host:port"; port 0 picks a
    /// free one; "" turns it off).
    pub http_listen: String,
    /// Directory of the operation log and checkpoints.
    pub data_dir: PathBuf,
    /// Chunk size of the cluster, in bytes or with a unit ("64MiB"); a multiple of 64 KiB
    /// (chunkservers configured otherwise are refused).
    pub chunk_size: Size,
    /// Replicas per chunk.
    pub replication: usize,
    /// Replicas (the primary included) an append needs.
    pub quorum: usize,
    /// Lease duration.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often chunkservers heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A chunkserver silent this long is dead.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// Deadline of each call to a chunkserver.
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
    /// Write a checkpoint after this many log records.
    pub checkpoint_every: u64,
    /// A chunk a server reports but the master does not know is deleted after this long.
    #[serde(with = "humantime_serde")]
    pub orphan_grace: Duration,
    /// Re-replication: chunk copies in flight in the whole cluster (each server takes part in
    /// at most two at once); 0 turns re-replication off.
    pub max_clones: usize,
    /// Re-replication: deadline of one chunk copy.
    #[serde(with = "humantime_serde")]
    pub clone_timeout: Duration,
    /// Rebalancing: move sealed chunks from the fullest chunkserver to the emptiest while their
    /// shares of capacity differ by more than this fraction (0 turns it off).
    pub rebalance_threshold: f64,
    /// How long a deleted entry stays in `/.trash` (where it can be moved back out) before it
    /// and its chunks are deleted for good.
    #[serde(with = "humantime_serde")]
    pub trash_retention: Duration,
    /// How long a chunk token this master issues stays good (at least four lease periods);
    /// a client whose token ran out asks again.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// `[tls]`: the master's certificate, the CA's, and its key (mutual TLS on every gRPC
    /// plane; see `gfs_host::tls`), or `insecure = true`.
    pub tls: gfs_host::tls::TlsSettings,
    /// `[raft]`: this master's place in a replicated group of masters; absent for a single
    /// master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftSettings>,
}

/// A master's place in a replicated group (`[raft]`): the operation log is replicated by Raft
/// among the masters listed, and only the elected leader serves clients and chunkservers.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// This master's number: its position in `members`, from 1.
    pub id: u64,
    /// Every master's gRPC address (`host:port`, as the others and clients reach it), the same
    /// list in the same order on each master. Three or five masters outlive one or two losses.
    pub members: Vec<String>,
    /// How often the leader sends to each other master when idle.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A master that hears no leader this long (up to twice this, at random) stands for
    /// election, once the leader's lease on the others' votes (twice this) has run out too:
    /// what bounds failover, at 1.5 to 2 s after the leader's last heartbeat per round.
    #[serde(with = "humantime_serde")]
    pub election_timeout: Duration,
    /// A master new to a group that runs: it waits to be added (`gfs admin add-master`)
    /// instead of proposing `members` as a new group.
    pub join: bool,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            id: 1,
            members: Vec::new(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(500),
            join: false,
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: "127.0.0.1:9000".into(),
            http_listen: "127.0.0.1:9001".into(),
            data_dir: PathBuf::from("data/master"),
            chunk_size: Size::mib(64),
            replication: 3,
            quorum: 2,
            lease: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(3),
            dead_after: Duration::from_secs(15),
            rpc_timeout: Duration::from_secs(5),
            checkpoint_every: 100_000,
            orphan_grace: Duration::from_secs(600),
            max_clones: 8,
            clone_timeout: Duration::from_secs(300),
            trash_retention: Duration::from_secs(3 * 24 * 3600),
            rebalance_threshold: 0.1,
            token_lifetime: Duration::from_secs(3600),
            tls: gfs_host::tls::TlsSettings::default(),
            raft: None,
        }
    }
}

/// Why the master could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is wrong; the message names the file and key.
    #[error("configuration: {0}")]
    Config(String),
    /// The metadata could not be recovered.
    #[error(transparent)]
    Meta(#[from] crate::MasterError),
    /// The listener failed.
    #[error("{0}")]
    Io(String),
}

impl MasterConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<MasterConfig, StartError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| StartError::Config(format!("{}: {e}", path.display())))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |k: &str, why: &str| Err(StartError::Config(format!("{k}: {why}")));
        let chunk_size = self.chunk_size.bytes();
        if chunk_size < 64 << 10 || !chunk_size.is_multiple_of(64 << 10) {
            return bad("chunk_size", "must be a positive multiple of 64 KiB");
        }
        if self.quorum == 0 || self.quorum > self.replication {
            return bad("quorum", "must be between 1 and replication");
        }
        if self.lease.is_zero() || self.heartbeat_interval.is_zero() {
            return bad("lease / heartbeat_interval", "must be positive");
        }
        if self.dead_after <= self.heartbeat_interval {
            return bad("dead_after", "must exceed heartbeat_interval");
        }
        if let Some(r) = &self.raft {
            if r.members.is_empty() {
                return bad("raft.members", "must list every master's address");
            }
            if r.id == 0 || r.id as usize > r.members.len() {
                return bad(
                    "raft.id",
                    "must be this master's position in raft.members, from 1",
                );
            }
            let mut seen = gfs_util::collections::HashSet::default();
            if let Some(dup) = r.members.iter().find(|m| !seen.insert(m.as_str())) {
                return bad("raft.members", &format!("{dup} is listed twice"));
            }
            if r.heartbeat.is_zero() || r.election_timeout < r.heartbeat * 3 {
                return bad(
                    "raft.election_timeout",
                    "must be at least three heartbeats (and the heartbeat positive)",
                );
            }
        }
        if self.token_lifetime < self.lease * 4 {
            return bad(
                "token_lifetime",
                "must be at least four lease periods (a client's retries within one call must not outlive its token)",
            );
        }
        Ok(())
    }
}

/// A running master.
pub struct Master {
    /// Where the gRPC services listen.
    pub addr: SocketAddr,
    /// Where the status page, `/metrics` and `/health` are served (None: turned off).
    pub http_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    meta: Arc<MetaStore>,
    leading: Leading,
    /// Follows Raft's view of who leads (a member of a group).
    follow: Option<JoinHandle<()>>,
    raft: Option<openraft::Raft<crate::raft::TypeConfig>>,
    metrics: Arc<MasterMetrics>,
}

/// Brings a single master's namespace into a group whose Raft log is new (none in
/// `<data_dir>/raft`): on a directory holding a single master's operation log, a group of one
/// (`members` = this master alone) starts from that namespace, written as its state machine's
/// seed; the others join it afterwards (`gfs admin add-master`), and the group's first
/// snapshot carries the namespace to them. A larger group, or a joining master, on such a
/// directory is refused: it would start from an empty namespace beside the files, which
/// nothing would read again. The single master's files are left as they were.
async fn adopt_a_single_masters_log(
    host: &Host,
    cfg: &MasterConfig,
    r: &RaftSettings,
) -> Result<(), StartError> {
    let (disk, dir) = (&*host.disk, cfg.data_dir.as_path());
    let raft = dir.join("raft");
    if !disk.exists(dir) || disk.exists(&raft) {
        return Ok(());
    }
    let logs = crate::metastore::numbered(disk, dir, "log-")?;
    let checkpoints = crate::metastore::numbered(disk, dir, "checkpoint-")?;
    if logs.is_empty() && checkpoints.is_empty() {
        return Ok(());
    }
    if r.members.len() != 1 || r.join {
        return Err(StartError::Config(format!(
            "raft: {} holds a single master's operation log: start this master as a group of \
             one first (members = [its own address]) to bring its namespace into Raft, then add \
             the others with `gfs admin add-master`",
            dir.display()
        )));
    }
    let (d, path) = (Arc::clone(&host.disk), dir.to_path_buf());
    let checkpoint_every = cfg.checkpoint_every.max(1);
    let single = gfs_host::blocking(disk, move || {
        MetaStore::open_on(d, path, MetaConfig { checkpoint_every })
    })
    .await?;
    let seq = single.durable_seq();
    let (checkpoint, files) = single
        .read(move |ns| (ns.to_checkpoint(seq), ns.counts()))
        .await?;
    gfs_host::blocking(disk, move || drop(single)).await;
    // Written in a directory of its own, renamed into place: a crash leaves no `raft`
    // without the seed.
    let seeding = dir.join("raft.seeding");
    let (d, s, raft2) = (Arc::clone(&host.disk), seeding.clone(), raft.clone());
    gfs_host::blocking(disk, move || -> crate::Result<()> {
        d.create_dir_all(&s)
            .map_err(|e| crate::metastore::io(&s, e))?;
        crate::raft::StateMachine::seed(&*d, &s, checkpoint)?;
        d.rename(&s, &raft2)
            .map_err(|e| crate::metastore::io(&raft2, e))?;
        let parent = raft2.parent().unwrap_or(&raft2);
        d.sync_dir(parent)
            .map_err(|e| crate::metastore::io(parent, e))
    })
    .await?;
    tracing::warn!(dir = %dir.display(), files = files.0, directories = files.1, seq, "a single master's namespace brought into a new group of one: add the other masters with gfs admin add-master");
    Ok(())
}

/// What every term a master leads shares: its configuration, host, metadata, chunk token key
/// and metrics.
struct Base {
    cfg: MasterConfig,
    host: Host,
    meta: Arc<MetaStore>,
    tokens: Arc<TokenIssuer>,
    metrics: Arc<MasterMetrics>,
}

impl Base {
    /// A fresh membership table and a chunk manager over it, not started.
    fn chunk_manager(&self) -> (Arc<Mutex<Registry>>, Arc<ChunkManager>) {
        let cfg = &self.cfg;
        let registry = Arc::new(Mutex::new(Registry::new(cfg.dead_after)));
        let chunks = ChunkManager::new(
            Arc::clone(&self.meta),
            Arc::clone(&registry),
            ChunkConfig {
                chunk_size: cfg.chunk_size.bytes(),
                replication: cfg.replication,
                quorum: cfg.quorum,
                lease: cfg.lease,
                rpc_timeout: cfg.rpc_timeout,
                orphan_grace: cfg.orphan_grace,
                max_clones: cfg.max_clones,
                clone_timeout: cfg.clone_timeout,
                rebalance_threshold: cfg.rebalance_threshold,
                clock: self.host.clock.clone(),
                insecure: self.host.net.tls().is_none(),
            },
            Arc::new(
                TonicControl::new(cfg.rpc_timeout, cfg.clone_timeout)
                    .with_net(self.host.net.clone()),
            ),
        )
        .with_metrics(Arc::clone(&self.metrics));
        (registry, Arc::new(chunks))
    }

    /// The client-facing service over `chunks`.
    fn master_service(
        &self,
        chunks: Arc<ChunkManager>,
        locks: Arc<PathLocks>,
        trash: Arc<Trash>,
    ) -> MasterServer<MasterService> {
        MasterServer::new(MasterService::new(
            Arc::clone(&self.meta),
            chunks,
            self.cfg.replication as u32,
            locks,
            trash,
            Arc::clone(&self.tokens),
        ))
        .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
        .max_encoding_message_size(gfs_proto::MAX_MESSAGE)
    }

    /// What a master that does not lead answers the namespace reads allowed to be stale with:
    /// the client-facing service over a chunk manager that is never started.
    fn follower_service(&self) -> MasterServer<MasterService> {
        let locks = Arc::new(PathLocks::new());
        let trash = Arc::new(Trash::new(
            Arc::clone(&self.meta),
            Arc::clone(&locks),
            self.cfg.trash_retention,
        ));
        let service = MasterService::new(
            Arc::clone(&self.meta),
            self.chunk_manager().1,
            self.cfg.replication as u32,
            locks,
            trash,
            Arc::clone(&self.tokens),
        )
        .for_follower();
        MasterServer::new(service)
            .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
            .max_encoding_message_size(gfs_proto::MAX_MESSAGE)
    }
}

/// Takes up a leader's duties until `stop`: a fresh membership table and chunk manager, the
/// leases the log names asked of their holders, the background loops, and the services.
///
/// Every heartbeat interval, each duty in a loop of its own, so a slow one never delays another
/// (a repair scan over a million chunks never delays the liveness sweep): mark servers that
/// stopped heartbeating as dead; settle abandoned chunks whose replicas came back;
/// re-replicate, then rebalance (which waits for a pass that found every chunk at its goal);
/// purge the trash.
async fn lead(base: &Base, stop: CancellationToken) -> Result<Term, StartError> {
    let cfg = &base.cfg;
    let (registry, chunks) = base.chunk_manager();
    chunks
        .persist_draining(cfg.data_dir.join("draining"))
        .map_err(|e| StartError::Io(format!("reading {}/draining: {e}", cfg.data_dir.display())))?;
    chunks
        .load_unsettled()
        .await
        .map_err(|e| StartError::Io(e.to_string()))?;
    let locks = Arc::new(PathLocks::new());
    let trash = Arc::new(Trash::new(
        Arc::clone(&base.meta),
        Arc::clone(&locks),
        cfg.trash_retention,
    ));
    let every = cfg.heartbeat_interval;
    let mut loops = Vec::new();
    let reg = Arc::clone(&registry);
    loops.push(periodic(every, stop.clone(), move || {
        reg.lock().sweep(Instant::now());
        async {}
    }));
    let c = Arc::clone(&chunks);
    loops.push(periodic(every, stop.clone(), move || {
        let c = Arc::clone(&c);
        async move { c.settle().await }
    }));
    let c = Arc::clone(&chunks);
    loops.push(periodic(every, stop.clone(), move || {
        let c = Arc::clone(&c);
        async move {
            c.rereplicate().await;
            c.rebalance().await;
        }
    }));
    let (purge, c) = (Arc::clone(&trash), Arc::clone(&chunks));
    loops.push(periodic(every, stop.clone(), move || {
        let (purge, c) = (Arc::clone(&purge), Arc::clone(&c));
        async move {
            let now = c.cfg.clock.now_ms();
            c.purged(&purge.purge(now).await);
        }
    }));
    let max = gfs_proto::MAX_MESSAGE;
    let master = base.master_service(Arc::clone(&chunks), locks, trash);
    let admin = AdminServer::new(AdminService::new(Arc::clone(&chunks)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let control = MasterControlServer::new(ControlService::new(
        registry,
        Arc::clone(&chunks),
        cfg.heartbeat_interval,
        Arc::clone(&base.tokens),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    Ok(Term {
        master,
        control,
        admin,
        chunks,
        stop,
        loops,
    })
}

/// The first pause before a master elected but unable to lead tries again.
const LEAD_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between its attempts.
const LEAD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows Raft's view of who leads until `shutdown`: takes up a term's duties once this
/// master leads and its state machine holds every entry committed before (a read barrier),
/// and drops them the moment it no longer leads. A failed attempt (the barrier, or the
/// duties: an unreadable file) is tried again after a pause growing from
/// [`LEAD_RETRY_FIRST`] to [`LEAD_RETRY_MAX`], counted in `gfs_master_raft_lead_failures`.
async fn follow(
    raft: openraft::Raft<crate::raft::TypeConfig>,
    base: Arc<Base>,
    leading: Leading,
    shutdown: CancellationToken,
) {
    let mut metrics = raft.metrics();
    let id = base.cfg.raft.as_ref().map(|r| r.id).unwrap_or_default();
    let mut led: Option<u64> = None;
    let mut pause = LEAD_RETRY_FIRST;
    loop {
        let (leads, term) = {
            let m = metrics.borrow_and_update();
            (
                m.state == openraft::ServerState::Leader && m.current_leader == Some(id),
                m.current_term,
            )
        };
        if led.is_some() && led != Some(term) || !leads {
            if leading.end().is_some() {
                tracing::warn!(
                    term,
                    "no longer the leader: stopped serving clients and chunkservers"
                );
            }
            led = None;
        }
        if leads && led.is_none() {
            let failed = match raft.ensure_linearizable().await {
                // A leader restored from its vote at a restart, or one deposed meanwhile.
                Err(e) => {
                    tracing::info!(term, error = %e, "a majority does not confirm this master as leader");
                    true
                }
                Ok(_) => match lead(&base, shutdown.child_token()).await {
                    Ok(t) => {
                        leading.begin(t);
                        led = Some(term);
                        tracing::info!(term, "leading: serving clients and chunkservers");
                        false
                    }
                    Err(e) => {
                        tracing::error!(term, error = %e, retry_in = ?pause, "elected, but cannot take up the leader's duties");
                        true
                    }
                },
            };
            if failed {
                // Judged again after a pause that grows while it keeps failing (a cause such
                // as an unreadable file stays), not as fast as the failures come.
                base.metrics.lead_failures.inc();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break,
                }
                pause = (pause * 2).min(LEAD_RETRY_MAX);
            } else {
                pause = LEAD_RETRY_FIRST;
            }
            // Whatever changed meanwhile is judged again at once.
            continue;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            _ = shutdown.cancelled() => break,
        }
    }
    leading.end();
}

impl Master {
    /// Recovers the metadata and starts serving, over mutual TLS when `cfg.tls` names
    /// certificate files.
    pub async fn start(cfg: MasterConfig) -> Result<Master, StartError> {
        let host = Host::os_with(&cfg.tls).map_err(|e| StartError::Config(format!("tls: {e}")))?;
        Master::start_on(cfg, host).await
    }

    /// [`Master::start`] on `host`'s network, disk and clock (a simulator's).
    pub async fn start_on(cfg: MasterConfig, host: Host) -> Result<Master, StartError> {
        cfg.validate()?;
        let checkpoint_every = cfg.checkpoint_every.max(1);
        // Bound first: the other masters of a group reach this one's Raft as soon as it runs.
        let listener = host
            .net
            .bind(&cfg.listen)
            .await
            .map_err(|e| StartError::Io(format!("binding {}: {e}", cfg.listen)))?;
        let (meta, member) = match &cfg.raft {
            None => {
                let (disk, dir) = (Arc::clone(&host.disk), cfg.data_dir.clone());
                let meta = gfs_host::blocking(&*host.disk, move || {
                    MetaStore::open_on(disk, dir, MetaConfig { checkpoint_every })
                })
                .await?;
                (meta, None)
            }
            Some(r) => {
                adopt_a_single_masters_log(&host, &cfg, r).await?;
                let timing = RaftTiming {
                    heartbeat: r.heartbeat,
                    election_timeout: r.election_timeout,
                    snapshot_every: checkpoint_every,
                };
                let member = Member::open(
                    Arc::clone(&host.disk),
                    &cfg.data_dir.join("raft"),
                    (r.id, &r.members, r.join),
                    timing.config("gfs")?,
                    host.net.clone(),
                )
                .await?;
                let meta = MetaStore::replicated(member.replicated(), Arc::clone(&host.disk));
                (meta, Some(member))
            }
        };
        let meta = Arc::new(meta);
        let (disk, dir, clock) = (
            Arc::clone(&host.disk),
            cfg.data_dir.clone(),
            host.clock.clone(),
        );
        let lifetime = cfg.token_lifetime;
        let tokens = gfs_host::blocking(&*host.disk, move || {
            TokenIssuer::open(&*disk, &dir, lifetime, clock)
        })
        .await
        .map_err(|e| StartError::Io(format!("chunk token key: {e}")))?;
        let metrics = Arc::new(MasterMetrics::default());
        let log_fsync = metrics.log_fsync.clone();
        meta.on_fsync(Box::new(move |d| log_fsync.observe(d.as_secs_f64())));
        let base = Arc::new(Base {
            cfg: cfg.clone(),
            host: host.clone(),
            meta: Arc::clone(&meta),
            tokens: Arc::new(tokens),
            metrics: Arc::clone(&metrics),
        });

        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Io(e.to_string()))?;
        let http = if cfg.http_listen.is_empty() {
            None
        } else {
            Some(
                host.net
                    .bind(&cfg.http_listen)
                    .await
                    .map_err(|e| StartError::Io(format!("binding {}: {e}", cfg.http_listen)))?,
            )
        };
        let http_addr = match &http {
            Some(l) => Some(l.local_addr().map_err(|e| StartError::Io(e.to_string()))?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let leading = Leading::new(match &member {
            None => Arc::new(|| None),
            Some(m) => {
                let raft = m.raft.clone();
                Arc::new(move || {
                    let m = raft.metrics().borrow().clone();
                    let id = m.current_leader?;
                    m.membership_config
                        .nodes()
                        .find(|(n, _)| **n == id)
                        .map(|(_, n)| n.addr.clone())
                })
            }
        });
        if let Some(listener) = http {
            tokio::spawn(crate::http::serve(
                listener,
                leading.clone(),
                Arc::clone(&metrics),
                shutdown.clone(),
            ));
        }
        let follow = match &member {
            None => {
                leading.begin(lead(&base, shutdown.child_token()).await?);
                None
            }
            Some(m) => Some(tokio::spawn(follow(
                m.raft.clone(),
                Arc::clone(&base),
                leading.clone(),
                shutdown.clone(),
            ))),
        };

        // Explicit message limits (tonic decodes at most 4 MiB by default); what grows with the
        // cluster is paged well below them (gfs_proto::MAX_MESSAGE).
        let rpc = RpcLayer::new(metrics.rpc.clone());
        let token = shutdown.clone();
        let grpc = host
            .net
            .grpc_server()
            .map_err(|e| StartError::Config(format!("tls: {e}")))?;
        let router = grpc
            .layer(rpc)
            .add_service(
                leading
                    .gate(|t| t.master.clone())
                    .with_stale_reads(base.follower_service()),
            )
            .add_service(leading.gate(|t| t.control.clone()))
            .add_service(leading.gate(|t| t.admin.clone()))
            .add_optional_service(member.as_ref().map(Member::service));
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            listener.incoming(),
            async move { token.cancelled().await },
        ));
        tracing::info!(%addr, http = ?http_addr, dir = %cfg.data_dir.display(), raft = ?cfg.raft.as_ref().map(|r| r.id), "master serving");
        Ok(Master {
            addr,
            http_addr,
            shutdown,
            task,
            meta,
            leading,
            follow,
            raft: member.map(|m| m.raft),
            metrics,
        })
    }

    /// A token that stops the master when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The master's metrics (what `/metrics` exports).
    pub fn metrics(&self) -> Arc<MasterMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Whether this master leads now (a single master always does).
    pub fn leads(&self) -> bool {
        self.leading.leads()
    }

    /// Waits until the master stops, then flushes and checkpoints the log.
    pub async fn wait(self) -> Result<(), StartError> {
        let served = self.task.await;
        self.shutdown.cancel();
        if let Some(term) = self.leading.end() {
            for l in term.loops {
                let _ = l.await;
            }
        }
        if let Some(f) = self.follow {
            let _ = f.await;
        }
        if let Some(raft) = self.raft
            && let Err(e) = raft.shutdown().await
        {
            tracing::warn!(error = %e, "stopping Raft");
        }
        // What a request still being answered holds goes with it, soon.
        for _ in 0..100 {
            if Arc::strong_count(&self.meta) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(meta) = Arc::try_unwrap(self.meta) {
            let disk = Arc::clone(meta.disk());
            gfs_host::blocking(&*disk, move || drop(meta)).await;
        }
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StartError::Io(e.to_string())),
            Err(e) => Err(StartError::Io(e.to_string())),
        }
    }
}

/// Runs `duty` every `period` (a pass that overruns delays the next, never bunches them) in a
/// task of its own, until `token` is cancelled.
/// A pass under way when `token` is cancelled stops at its next await (a deposed leader stops
/// at once; every duty is safe to stop anywhere, as a crash would).
fn periodic<F, Fut>(
    period: Duration,
    token: CancellationToken,
    mut duty: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = async {
                    tick.tick().await;
                    duty().await;
                } => {}
                _ = token.cancelled() => break,
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> MasterConfig {
        MasterConfig {
            listen: "127.0.0.1:0".into(),
            http_listen: String::new(),
            data_dir: dir.to_path_buf(),
            tls: gfs_host::tls::TlsSettings {
                insecure: true,
                ..Default::default()
            },
            ..MasterConfig::default()
        }
    }

    /// Once `wait` returns, the master's directory is free: its background loops, busy every
    /// millisecond here, have let go of the metadata, and a master starts on it at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_master_lets_go_of_its_directory_before_wait_returns() {
        let dir = tempfile::tempdir().unwrap();
        let busy = MasterConfig {
            heartbeat_interval: Duration::from_millis(1),
            dead_after: Duration::from_millis(5),
            ..config(dir.path())
        };
        for round in 0..30 {
            let m = Master::start(busy.clone())
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            tokio::time::sleep(Duration::from_millis(5)).await;
            m.shutdown_token().cancel();
            m.wait().await.unwrap();
        }
    }

    /// A master elected but unable to take up the leader's duties (here its `draining` file
    /// is a directory) tries again with a growing pause, not in a loop as fast as the
    /// failures come, and leads once the cause is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_elected_master_that_cannot_lead_retries_with_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("draining")).unwrap();
        let cfg = MasterConfig {
            raft: Some(RaftSettings {
                members: vec!["127.0.0.1:1".into()],
                ..RaftSettings::default()
            }),
            ..config(dir.path())
        };
        let m = Master::start(cfg).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let failures = m.metrics().lead_failures.get();
        assert!(!m.leads());
        assert!(
            (1..=10).contains(&failures),
            "{failures} attempts to lead in 1.5 s"
        );
        std::fs::remove_dir(dir.path().join("draining")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !m.leads() {
            assert!(Instant::now() < deadline, "not leading once it can");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m.shutdown_token().cancel();
        m.wait().await.unwrap();
    }

    /// A single master's namespace is brought into a group of one started on its directory
    /// (and survives that master's restart); a larger group on such a directory is refused,
    /// as it would start empty beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_masters_namespace_is_brought_into_a_group_of_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let single = MetaStore::open(
                dir.path(),
                MetaConfig {
                    checkpoint_every: 2,
                },
            )
            .unwrap();
            for d in ["/a", "/b", "/c"] {
                single
                    .mutate(crate::record::Op::Mkdir(crate::record::PathOp {
                        path: d.into(),
                        mtime_ms: 0,
                    }))
                    .await
                    .unwrap();
            }
        }
        let group = |members: &[&str]| MasterConfig {
            raft: Some(RaftSettings {
                members: members.iter().map(|m| m.to_string()).collect(),
                ..RaftSettings::default()
            }),
            ..config(dir.path())
        };
        match Master::start(group(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])).await {
            Err(StartError::Config(e)) => assert!(e.contains("group of one"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a group of three started on a single master's log"),
        }
        for round in 0..2 {
            let m = Master::start(group(&["127.0.0.1:1"])).await.unwrap();
            let names = m
                .meta
                .read(|ns| {
                    ns.list("/")
                        .unwrap()
                        .into_iter()
                        .map(|e| e.path)
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap();
            assert_eq!(names, ["/a", "/b", "/c"], "round {round}");
            m.shutdown_token().cancel();
            m.wait().await.unwrap();
        }
    }

    #[test]
    fn a_group_needs_its_members_and_this_masters_place_in_them() {
        let with = |r: RaftSettings| MasterConfig {
            raft: Some(r),
            ..MasterConfig::default()
        };
        let two = vec!["a:1".to_string(), "b:1".to_string()];
        for (r, key) in [
            (RaftSettings::default(), "raft.members"),
            (
                RaftSettings {
                    id: 3,
                    members: two.clone(),
                    ..RaftSettings::default()
                },
                "raft.id",
            ),
            (
                RaftSettings {
                    members: vec!["a:1".into(), "a:1".into()],
                    ..RaftSettings::default()
                },
                "listed twice",
            ),
            (
                RaftSettings {
                    members: two,
                    election_timeout: Duration::from_millis(200),
                    ..RaftSettings::default()
                },
                "raft.election_timeout",
            ),
        ] {
            let e = with(r).validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
