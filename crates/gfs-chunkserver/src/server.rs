//! Starting and stopping a chunkserver: open the store, bind both listeners, serve until the
//! shutdown token is cancelled, then drain and checkpoint.
//!
//! [`ChunkServer::start_on`] runs on a `gfs_host::Host` (a simulator's network, disk and
//! clock); `start` is it on the operating system's. A store that takes no writes until it is
//! reopened (`ChunkStore::needs_reopen`: a WAL or chunk fsync failed) stops the server with
//! [`ChunkserverError::NeedsRestart`], so that its supervisor restarts it and recovery finds
//! what is durable.
//!
//! [`ChunkServer::start`] opens the store on a blocking thread, binds the data plane, the gRPC
//! port and the HTTP port (port 0 picks a free one; the bound addresses are `data_addr`,
//! `repl_addr`, `http_addr`) and serves `Replication` and `ChunkControl` on the gRPC port, with
//! message limits of the largest record (a quarter chunk) plus 1 MiB, at least 4 MiB, and
//! HTTP/2 windows of `gfs_replication::WINDOW`. The data plane refuses bodies over a quarter
//! chunk plus `gfs_dataplane::REQUEST_OVERHEAD` (`max_frame`: fixed fields and a chunk token). An `op_retention` shorter than a client's op deadline
//! plus a lease period (120 s at the defaults) is warned about at start. [`ChunkServer::stop`]
//! cancels the token: the data plane drains (bounded by `write_timeout`), gRPC calls get
//! `SHUTDOWN_GRACE` (10 s), then the store is dropped (the committer drains and checkpoints).
//!
//! # The master link
//!
//! With a master configured the server registers, listing every lease it holds, expired ones
//! too (`RegisterRequest.leases`, with `reports_leases` set: the list is complete), so that a
//! restarted master adopts them instead of waiting a lease period. Then it heartbeats every
//! `heartbeat_interval` (the master's, told at registration) with its whole chunk report, the
//! lagging replicas its coordinator saw, and the chunks it led that took an append within two
//! intervals (`writing`: the master extends only those leases, so an idle one runs out), cut
//! into pieces of at most `report_piece_bytes` (`gfs_proto::report`) sent back to back; a failed
//! piece ends the pass. Each reply's lease extensions are applied first, so a long list of
//! deletes never lets a lease lapse. Its deletes are skipped for a replica at or above
//! `below_version` (the master may have decided on a report older than a bump) or that reached
//! `unless_length`; the others run beside the heartbeats as one `ChunkStore::delete_many` batch
//! per pass (one WAL fsync and one directory fsync); while a batch runs, the deletes of later
//! replies are left to a reply after it (the master asks again while the replica is reported).
//! `reregister` in a reply (the master restarted) makes the server register again at once, not
//! an interval later. Every client of the master's services here uses `gfs_proto::MAX_MESSAGE`.
//!
//! Cluster-wide values (`crate::cluster`): each registration sends this server's chunk size and
//! quorum and checks the master's reply against them. The master's values win: on a mismatch,
//! at start or at a re-registration after a master restart alike, the server stops serving
//! (the shutdown token is cancelled, the usual drain runs) and [`ChunkServer::wait`] returns
//! [`ChunkserverError::ClusterMismatch`], one line naming both values, both sides and the key to
//! set; the binary prints it and exits non-zero. A 0 from an older master is accepted.
//!
//! Lost disks: before each heartbeat the server checks that its data directory is still the one
//! its store opened (`ChunkStore::check_disk`: the `LOCK` file's device and inode). If it was
//! removed or replaced (a dead or swapped disk, an `rm -rf`), the store is lost for good (it
//! lists, serves and accepts nothing), the heartbeat says `disk_lost` with an empty report, and
//! the master stops placing replicas here and re-replicates what it held.
//!
//! Reporters: the coordinator's seal listener sends `ReportSealed` (`seal_reporter`); a read or
//! a scrub that fails a checksum sends `ReportCorrupt { id, handle, block }` in the background
//! (`corrupt_reporter`), while the reader is told `ChecksumMismatch` and tries another replica;
//! the bad blocks are then restored from the peers the reply names and the replica reported
//! `repaired` (`crate::restore`).
//! The scrubber (`scrub_every`, only with a master) verifies one chunk without a live lease here
//! per tick, round robin (`ChunkStore::scrub_one`).

use std::net::SocketAddr;
use std::sync::Arc;

use gfs_dataplane::ServerConfig;
use gfs_host::{Host, Listener, Net};
use gfs_proto::v1::chunk_control_server::ChunkControlServer;
use gfs_proto::v1::replication_server::ReplicationServer;
use gfs_replication::{
    Coordinator, CoordinatorConfig, Participant, ParticipantConfig, PeerConfig, Peers,
};
use gfs_storage::ChunkStore;
use gfs_util::time::{from_unix_ms, unix_ms};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterValues;
use crate::config::ChunkserverConfig;
use crate::control::Control;
use crate::error::{ChunkserverError, Result};
use crate::handler::{DataHandler, TokenGate};
use crate::metrics::ChunkserverMetrics;

/// Where the heartbeat loop leaves the error that stopped the server, for [`ChunkServer::wait`].
type Fatal = Arc<std::sync::Mutex<Option<ChunkserverError>>>;

/// How long a stopping server waits for gRPC calls to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running chunkserver.
pub struct ChunkServer {
    /// Where the client data plane listens.
    pub data_addr: SocketAddr,
    /// Where the replication and control planes listen.
    pub repl_addr: SocketAddr,
    /// Where `/metrics` and `/health` are served.
    pub http_addr: SocketAddr,
    metrics: Arc<ChunkserverMetrics>,
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
    shutdown: CancellationToken,
    /// Why the server stopped on its own (a cluster-wide value differs from the master's).
    fatal: Fatal,
    data_task: JoinHandle<std::io::Result<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn bind(net: &Net, host: &str, port: u16, what: &str) -> Result<Listener> {
    net.bind_port(host, port)
        .await
        .map_err(|source| ChunkserverError::Io {
            what: format!("binding the {what} on {host}:{port}"),
            source,
        })
}

/// The default client op deadline (60 s) plus the default lease period (60 s): an op retention
/// below it is warned about at start.
const OP_RETENTION_FLOOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Open files a chunkserver should be allowed, below which it warns at start.
const OPEN_FILES_WANTED: u64 = 65_536;

/// Raises this process's soft limit on open files to its hard limit, and warns when that
/// is below [`OPEN_FILES_WANTED`]: a chunkserver keeps each replica's data file open, so the
/// usual soft default of 1,024 stopped it near a thousand chunks with `Too many open files`
/// (gfs-bench with 20,000 small files did at its limit of 20,000). Returns the limit now
/// (`None`: unlimited).
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let below_hard = match (lim.current, lim.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "cannot raise the limit on open files to its hard limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    match now {
        Some(n) if n < OPEN_FILES_WANTED => tracing::warn!(
            limit = n,
            wanted = OPEN_FILES_WANTED,
            "few open files allowed: this server keeps a file open per chunk it holds, so it \
             holds at most about that many chunks (raise the hard limit: LimitNOFILE= under \
             systemd, `ulimit -Hn`, or a container's nofile ulimit)"
        ),
        _ => tracing::info!(limit = ?now, "open files allowed (a file per chunk held)"),
    }
    now
}

impl ChunkServer {
    /// Opens the store and starts serving both planes. Ports 0 pick free ports (see the
    /// `*_addr` fields). Over mutual TLS when `cfg.tls` names certificate files.
    pub async fn start(cfg: ChunkserverConfig) -> Result<ChunkServer> {
        raise_open_files_limit();
        let host =
            Host::os_with(&cfg.tls).map_err(|e| ChunkserverError::Config(format!("tls: {e}")))?;
        ChunkServer::start_on(cfg, host).await
    }

    /// [`ChunkServer::start`] on `host`'s network, disk and clock (a simulator's).
    pub async fn start_on(cfg: ChunkserverConfig, host: Host) -> Result<ChunkServer> {
        cfg.validate()?;
        let store_cfg = cfg.store_config()?;
        if store_cfg.op_retention < OP_RETENTION_FLOOR {
            tracing::warn!(op_retention = ?store_cfg.op_retention, floor = ?OP_RETENTION_FLOOR,
                "storage.op_retention is shorter than a client's op deadline plus a lease period \
                 (defaults): a retry may find its chunk's op ids forgotten and fail as outcome unknown");
        }
        let dir = cfg.data_dir.clone();
        let disk = Arc::clone(&host.disk);
        let store = gfs_host::blocking(&*host.disk, move || {
            ChunkStore::open_on(disk, dir, store_cfg)
        })
        .await?;
        let store = Arc::new(store);
        let max_message = (cfg.max_record() as usize + (1 << 20)).max(4 << 20);
        let peers = Arc::new(Peers::new(PeerConfig {
            connect_timeout: cfg.replication.connect_timeout,
            max_message,
            net: host.net.clone(),
            ..PeerConfig::default()
        }));
        let coordinator = Arc::new(Coordinator::new(
            Arc::clone(&store),
            peers,
            CoordinatorConfig {
                quorum: cfg.quorum,
                prepare_timeout: cfg.replication.prepare_timeout,
                commit_timeout: cfg.replication.commit_timeout,
                one_round: cfg.replication.one_round,
                clock: host.clock.clone(),
                ..CoordinatorConfig::for_chunk_size(cfg.chunk_size.bytes())
            },
        ));
        let net = &host.net;
        let data_listener = bind(net, &cfg.host, cfg.data_port, "data plane").await?;
        let repl_listener = bind(net, &cfg.host, cfg.repl_port, "replication plane").await?;
        let http_listener = bind(net, &cfg.host, cfg.http_port, "metrics HTTP server").await?;
        let local = |l: &Listener, what: &str| {
            l.local_addr().map_err(|source| ChunkserverError::Io {
                what: format!("reading the {what} address"),
                source,
            })
        };
        let data_addr = local(&data_listener, "data plane")?;
        let repl_addr = local(&repl_listener, "replication plane")?;
        let http_addr = local(&http_listener, "metrics HTTP server")?;
        let shutdown = CancellationToken::new();
        let fatal = Fatal::default();
        tokio::spawn(stop_when_store_breaks(
            store.broken(),
            Arc::clone(&fatal),
            shutdown.clone(),
        ));
        let metrics = Arc::new(ChunkserverMetrics::new(
            Arc::clone(&store),
            Arc::clone(&coordinator),
        ));
        let fsync = metrics.fsync.clone();
        store.on_fsync(Arc::new(move |d| fsync.observe(d.as_secs_f64())));
        coordinator.set_stage_listener(metrics.stage_listener());
        tokio::spawn(crate::http::serve(
            http_listener,
            Arc::clone(&metrics),
            Arc::clone(&store),
            shutdown.clone(),
        ));

        let master = if cfg.master.is_empty() {
            None
        } else {
            // One master, or a group whose leader the channel follows.
            let (net, list) = (&host.net, gfs_host::master_list(&cfg.master));
            if list.is_empty() {
                return Err(ChunkserverError::Config(format!(
                    "master {:?}: no address",
                    cfg.master
                )));
            }
            let masters = gfs_host::Masters::new(net, &list, |a| {
                net.endpoint(a).map(|e| {
                    e.connect_timeout(cfg.replication.connect_timeout)
                        .timeout(cfg.replication.commit_timeout)
                })
            })
            .map_err(|e| ChunkserverError::Config(format!("master {:?}: {e}", cfg.master)))?;
            Some(masters)
        };
        let restorer = Arc::new(crate::restore::Restorer::new(
            Arc::clone(&store),
            host.net.clone(),
        ));
        let on_corrupt = master
            .clone()
            .map(|m| corrupt_reporter(m, cfg.id.clone(), restorer));
        if let Some(tell) = on_corrupt.clone()
            && !cfg.storage.scrub_every.is_zero()
        {
            tokio::spawn(scrubber(
                Arc::clone(&store),
                Arc::clone(&coordinator),
                cfg.storage.scrub_every,
                tell,
                shutdown.clone(),
            ));
        }
        // With a master, every data-plane request needs a chunk token it issued (its key comes
        // with the registration reply; nothing is served before). Without one there is none.
        let gate = master
            .as_ref()
            .map(|_| Arc::new(TokenGate::new(host.clock.clone())));
        // Set by the first registration with the master (at once without one).
        let registered = Arc::new(std::sync::atomic::AtomicBool::new(master.is_none()));
        if gate.is_none() {
            tracing::warn!("no master: data-plane requests are served without chunk tokens");
        }
        let mut handler =
            DataHandler::new(Arc::clone(&store), Arc::clone(&coordinator), on_corrupt)
                .with_metrics(Arc::clone(&metrics));
        if let Some(g) = &gate {
            handler = handler.with_tokens(Arc::clone(g));
        }
        let handler = Arc::new(handler);
        let data_cfg = ServerConfig {
            max_frame: cfg.max_record() as usize + gfs_dataplane::REQUEST_OVERHEAD,
            tls: host.net.tls().cloned(),
            ..cfg.dataplane.clone()
        };
        match host.net.tls() {
            Some(t) if t.data_plane => tracing::info!("data plane: TLS only"),
            Some(_) => tracing::info!(
                "data plane: plaintext, and TLS for clients that ask ([tls] data_plane = true takes TLS only)"
            ),
            None => {}
        }
        let data_task = tokio::spawn(gfs_dataplane::run(
            data_listener,
            handler,
            data_cfg,
            shutdown.clone(),
        ));

        let participant = Participant::new(
            Arc::clone(&store),
            ParticipantConfig {
                max_record: cfg.max_record(),
                ..ParticipantConfig::default()
            },
            shutdown.clone(),
        );
        let replication = ReplicationServer::new(participant)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let control = ChunkControlServer::new(
            Control::new(
                Arc::clone(&store),
                Arc::clone(&coordinator),
                cfg.replication.clone_rate.bytes(),
            )
            .with_net(host.net.clone())
            .count_replicated(metrics.replicated.clone())
            .after_registration(Arc::clone(&registered)),
        );
        let rpc = gfs_telemetry::RpcLayer::new(metrics.rpc.clone());
        let token = shutdown.clone();
        let grpc = host
            .net
            .grpc_server()
            .map_err(|e| ChunkserverError::Config(format!("tls: {e}")))?;
        let grpc_task = tokio::spawn(
            grpc.initial_stream_window_size(Some(gfs_replication::WINDOW))
                .initial_connection_window_size(Some(gfs_replication::WINDOW * 2))
                .max_frame_size(Some(gfs_replication::FRAME))
                .layer(rpc)
                .add_service(replication)
                .add_service(control)
                .serve_with_incoming_shutdown(repl_listener.incoming(), async move {
                    token.cancelled().await
                }),
        );
        if let Some(channel) = master.clone() {
            // The master knows this server by its advertised replication address.
            let me = if cfg.advertise_host.is_empty() {
                repl_addr.to_string()
            } else {
                format!("{}:{}", cfg.advertise_host, repl_addr.port())
            };
            coordinator.set_seal_listener(seal_reporter(channel.clone(), me));
            let beats = heartbeat_loop(
                cfg.clone(),
                channel,
                (data_addr, repl_addr),
                Arc::clone(&store),
                Arc::clone(&coordinator),
                (gate.clone(), Arc::clone(&registered)),
                shutdown.clone(),
            );
            // A cluster-wide value that differs from the master's stops the server.
            let (fatal, token) = (Arc::clone(&fatal), shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = beats.await {
                    *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    token.cancel();
                }
            });
        }
        tracing::info!(id = %cfg.id, %data_addr, %repl_addr, %http_addr, dir = %cfg.data_dir.display(), "chunkserver serving");
        Ok(ChunkServer {
            data_addr,
            repl_addr,
            http_addr,
            metrics,
            store,
            coordinator,
            shutdown,
            fatal,
            data_task,
            grpc_task,
        })
    }

    /// What this server exports to Prometheus.
    pub fn metrics(&self) -> &Arc<ChunkserverMetrics> {
        &self.metrics
    }

    /// The chunk store.
    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    /// The primary-side coordinator.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish, then closes the store (which
    /// checkpoints). Returns the first serving error, if any.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops (its token is cancelled or a listener fails). A server
    /// that stopped on its own because its configuration disagrees with the master's returns
    /// [`ChunkserverError::ClusterMismatch`] (after the drain).
    pub async fn wait(self) -> Result<()> {
        let ChunkServer {
            store,
            coordinator,
            shutdown,
            fatal,
            data_task,
            grpc_task,
            ..
        } = self;
        let data = data_task.await;
        shutdown.cancel();
        // Replication sessions end with the token; a peer that keeps a stream open past the
        // deadline does not hold the shutdown hostage.
        let grpc_abort = grpc_task.abort_handle();
        let grpc = match tokio::time::timeout(SHUTDOWN_GRACE, grpc_task).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    "gRPC connections still open after {SHUTDOWN_GRACE:?}; closing them"
                );
                grpc_abort.abort();
                Ok(Ok(()))
            }
        };
        drop(coordinator);
        // The last handle closes the store: the committer drains and checkpoints.
        if let Ok(store) = Arc::try_unwrap(store) {
            let disk = Arc::clone(store.disk());
            gfs_host::blocking(&*disk, move || drop(store)).await;
        }
        let fatal = fatal.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = fatal {
            return Err(e);
        }
        match data {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ChunkserverError::Io {
                    what: "serving the data plane".into(),
                    source,
                });
            }
            Err(e) => return Err(ChunkserverError::Grpc(e.to_string())),
        }
        match grpc {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ChunkserverError::Grpc(e.to_string())),
            Err(e) => Err(ChunkserverError::Grpc(e.to_string())),
        }
    }
}

/// Reports each chunk this server seals as primary to the master, so a writer's next request
/// for the file's last chunk already gets a new one. Heartbeats carry the sealed flag too, should
/// this report be lost.
fn seal_reporter(master: gfs_host::Masters, me: String) -> gfs_replication::SealListener {
    Arc::new(move |handle, length, secondaries| {
        let mut client = gfs_proto::v1::master_client::MasterClient::new(master.clone())
            .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
            .max_encoding_message_size(gfs_proto::MAX_MESSAGE);
        let replicas = std::iter::once(me.clone()).chain(secondaries).collect();
        Box::pin(async move {
            let req = gfs_proto::v1::ReportSealedRequest {
                handle: handle.0,
                length,
                replicas,
            };
            if let Err(e) = client.report_sealed(req).await {
                tracing::warn!(%handle, length, error = %e.message(), "cannot report the seal to the master");
            }
        })
    })
}

/// Verifies one idle chunk (no lease here) every `every`, round robin, and reports the first
/// bad block of a bad one.
async fn scrubber(
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
    every: std::time::Duration,
    tell: crate::handler::CorruptListener,
    shutdown: CancellationToken,
) {
    let mut next = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = coordinator.clock().now();
        let leased: Vec<_> = coordinator
            .leases()
            .into_iter()
            .filter(|l| l.expires > now)
            .map(|l| l.handle)
            .collect();
        let idle: Vec<_> = store
            .list()
            .into_iter()
            .map(|c| c.handle)
            .filter(|h| !leased.contains(h))
            .collect();
        let Some(handle) = idle
            .iter()
            .find(|h| h.0 >= next)
            .or_else(|| idle.first())
            .copied()
        else {
            continue;
        };
        next = handle.0.wrapping_add(1);
        let s = Arc::clone(&store);
        let disk = Arc::clone(s.disk());
        if let Ok(bad) = gfs_host::blocking(&*disk, move || s.scrub_one(handle)).await
            && let Some(first) = bad.first()
        {
            tracing::error!(%handle, blocks = ?bad, "scrub: replica failed its checksums");
            tell(handle, *first);
        }
    }
}

/// Reports replicas that failed their checksums to the master (in the background: the reader
/// is already being told to try another replica), then restores their bad blocks from the
/// sources the master names and reports them `repaired` (`crate::restore`).
fn corrupt_reporter(
    master: gfs_host::Masters,
    id: String,
    restorer: Arc<crate::restore::Restorer>,
) -> crate::handler::CorruptListener {
    Arc::new(move |handle, block| {
        let mut client =
            gfs_proto::v1::master_control_client::MasterControlClient::new(master.clone())
                .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                .max_encoding_message_size(gfs_proto::MAX_MESSAGE);
        let mut req = gfs_proto::v1::ReportCorruptRequest {
            id: id.clone(),
            handle: handle.0,
            block,
            repaired: false,
            unrestorable: false,
        };
        let restorer = Arc::clone(&restorer);
        tokio::spawn(async move {
            let sources = match client.report_corrupt(req.clone()).await {
                Ok(reply) => reply.into_inner().sources,
                Err(e) => {
                    tracing::warn!(%handle, error = %e.message(), "cannot report a corrupt replica");
                    return;
                }
            };
            if sources.is_empty() {
                return;
            }
            match restorer.restore(handle, &sources).await {
                None => return,
                Some(Ok(blocks)) => {
                    tracing::info!(%handle, ?blocks, "corrupt replica restored in place");
                    req.block = blocks.first().copied().unwrap_or(block);
                }
                Some(Err(e)) => {
                    tracing::error!(%handle, error = %e, "cannot restore the corrupt replica: it stays out until the master replaces it");
                    req.unrestorable = true;
                }
            }
            req.repaired = !req.unrestorable;
            if let Err(e) = client.report_corrupt(req).await {
                tracing::warn!(%handle, error = %e.message(), "cannot report the restore's outcome");
            }
        });
    })
}

/// Registers with the master, then heartbeats with the full chunk report until shutdown, each
/// report in pieces of at most `report_piece_bytes` (`gfs_proto::report`); registers again
/// when the master asks (it restarted) and keeps trying while it is away. The first
/// registration keys the token gate and sets `registered_once`. Ends with
/// [`ChunkserverError::ClusterMismatch`] when a registration finds the master's chunk size or
/// quorum different from this server's.
async fn heartbeat_loop(
    cfg: ChunkserverConfig,
    master: gfs_host::Masters,
    (data_addr, repl_addr): (SocketAddr, SocketAddr),
    store: Arc<ChunkStore>,
    coordinator: Arc<Coordinator>,
    (gate, registered_once): (Option<Arc<TokenGate>>, Arc<std::sync::atomic::AtomicBool>),
    shutdown: CancellationToken,
) -> Result<()> {
    use gfs_proto::v1::master_control_client::MasterControlClient;
    use gfs_proto::v1::{HeartbeatRequest, HeldLease, RegisterRequest};

    let mut client = MasterControlClient::new(master)
        .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
        .max_encoding_message_size(gfs_proto::MAX_MESSAGE);
    let mut interval = std::time::Duration::from_secs(1);
    let advertised = |a: SocketAddr| {
        if cfg.advertise_host.is_empty() {
            a.to_string()
        } else {
            format!("{}:{}", cfg.advertise_host, a.port())
        }
    };
    let ours = ClusterValues {
        chunk_size: cfg.chunk_size.bytes(),
        quorum: cfg.quorum as u64,
    };
    let mut registered = false;
    // Numbers the passes of the chunk report; starts at random, so the master never takes a
    // piece of this process's pass for one of an earlier process with the same id.
    let mut report_id: u64 = gfs_util::random::random();
    let deleting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    loop {
        let used_bytes = store.list().iter().map(|c| c.committed_len).sum();
        // Told to register again (the master restarted): at once, not an interval later, so
        // the master learns the leases held here and can hand them out again.
        let mut now_again = false;
        // A master of a group that does not lead (or could not be reached) refused the call:
        // the channel now points at the leader, asked soon, not an interval later.
        let mut redirected = false;
        let registering = !registered;
        if !registered {
            // Every lease held here, expired ones included (the master judges): a master that
            // restarted adopts the ones it logged instead of waiting a lease period. Only the
            // master grants leases, and this one grants none on those chunks before it has this
            // list, so the list cannot miss one.
            let leases = coordinator
                .leases()
                .into_iter()
                .map(|l| HeldLease {
                    handle: l.handle.0,
                    version: l.version,
                    expires_unix_ms: unix_ms(l.expires),
                    secondaries: l.secondaries,
                })
                .collect();
            let req = RegisterRequest {
                id: cfg.id.clone(),
                data_addr: advertised(data_addr),
                repl_addr: advertised(repl_addr),
                rack: cfg.rack.clone(),
                capacity_bytes: cfg.capacity.bytes(),
                used_bytes,
                leases,
                reports_leases: true,
                chunk_size: ours.chunk_size,
                quorum: u32::try_from(ours.quorum).unwrap_or(u32::MAX),
                disk_id: store.identity(),
            };
            match client.register(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    // The master's values win: on a difference this server stops serving.
                    ours.check(&ClusterValues::from(&r), &cfg.master)?;
                    match (gfs_host::token::TokenKey::from_bytes(&r.token_key), &gate) {
                        (Some(key), Some(gate)) => gate.set_key(key),
                        (None, _) => tracing::error!(master = %cfg.master,
                            "the master sent no chunk token key: every data-plane request is refused"),
                        (Some(_), None) => {}
                    }
                    registered = true;
                    registered_once.store(true, std::sync::atomic::Ordering::Release);
                    interval = std::time::Duration::from_millis(r.heartbeat_interval_ms.max(50));
                    tracing::info!(master = %cfg.master, "registered with the master");
                }
                Err(e) => {
                    redirected = gfs_host::redirected(&e);
                    tracing::warn!(master = %cfg.master, error = %e.message(), "cannot register yet")
                }
            }
        }
        if registered {
            // After a lost disk the report is empty, so the master copies the replicas elsewhere.
            let disk_lost = store.check_disk().is_err();
            let (chunks, lagging) = crate::control::chunk_report(&store, &coordinator);
            let writing = coordinator
                .writing(interval * 2)
                .into_iter()
                .map(|h| h.0)
                .collect();
            report_id = report_id.wrapping_add(1);
            let full = HeartbeatRequest {
                id: cfg.id.clone(),
                used_bytes,
                chunks,
                lagging,
                writing,
                disk_lost,
                report_id,
                ..HeartbeatRequest::default()
            };
            // The whole report, in pieces of bounded size sent back to back: however many
            // replicas this server holds, no heartbeat nears the master's message limit. A
            // failed piece ends the pass (the master then drops nothing until a whole one).
            let mut doomed = Vec::new();
            for piece in gfs_proto::report::heartbeat_pieces(full, cfg.report_piece_bytes) {
                let r = match client.heartbeat(piece).await {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        redirected = gfs_host::redirected(&e);
                        tracing::warn!(master = %cfg.master, error = %e.message(), "heartbeat failed");
                        break;
                    }
                };
                // Extensions first: a long list of deletes must never let a lease lapse.
                for x in r.extensions {
                    let expires = from_unix_ms(x.expires_unix_ms);
                    coordinator.extend_lease(
                        gfs_storage::ChunkHandle(x.handle),
                        x.version,
                        expires,
                    );
                }
                for d in r.delete {
                    let handle = gfs_storage::ChunkHandle(d.handle);
                    // The master decided on a report that may predate a version bump.
                    match store.info(handle) {
                        Ok(info) if info.version >= d.below_version => {
                            tracing::debug!(%handle, version = info.version, "delete skipped: the replica is current");
                            continue;
                        }
                        Ok(info) if d.unless_length == Some(info.committed_len) => {
                            tracing::debug!(%handle, length = info.committed_len, "delete skipped: the replica reached the sealed length");
                            continue;
                        }
                        Err(_) => continue,
                        Ok(_) => {}
                    }
                    coordinator.forget(handle);
                    doomed.push(handle);
                }
                if r.reregister {
                    registered = false;
                    // Register again at once (not twice in a row: a master that keeps asking
                    // is not spun on).
                    now_again = !registering;
                    break;
                }
            }
            // Deletes run beside the heartbeats, one batch at a time (one WAL fsync and one
            // directory fsync for the batch): the next heartbeat is never late for them. While
            // a batch runs, new ones wait for a later reply.
            if !doomed.is_empty() && !deleting.swap(true, std::sync::atomic::Ordering::AcqRel) {
                let (store, deleting) = (Arc::clone(&store), Arc::clone(&deleting));
                tokio::spawn(async move {
                    for (handle, res) in store.delete_many(&doomed).await {
                        match res {
                            Ok(()) => {
                                tracing::info!(%handle, "replica deleted at the master's request")
                            }
                            Err(e) => {
                                tracing::warn!(%handle, error = %e, "cannot delete replica")
                            }
                        }
                    }
                    deleting.store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
        if now_again && !shutdown.is_cancelled() {
            continue;
        }
        let pause = if redirected {
            interval.min(REDIRECTED_PAUSE)
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// The pause before asking again after a master of a group refused a registration or a
/// heartbeat because it does not lead: the next master is asked soon, so that a new leader
/// hears from every server within a fraction of its first heartbeat interval.
const REDIRECTED_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Stops the server once its store takes no writes until reopened (a failed WAL or chunk
/// fsync): a server that cannot write would otherwise stay registered and hold its replicas
/// back from every append and version bump for good. A restart (systemd's `Restart=on-failure`,
/// a container's restart policy) recovers what is durable, as PostgreSQL does after a failed
/// fsync.
async fn stop_when_store_breaks(
    broken: impl std::future::Future<Output = &'static str>,
    fatal: Fatal,
    shutdown: CancellationToken,
) {
    let why = tokio::select! {
        _ = shutdown.cancelled() => return,
        why = broken => why,
    };
    tracing::error!(
        why,
        "the store takes no writes until it is reopened: stopping, so that a restart recovers what is durable"
    );
    *fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(ChunkserverError::NeedsRestart(why));
    shutdown.cancel();
}
