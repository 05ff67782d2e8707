//! The master process: configuration, wiring, background work, shutdown.
//!
//! [`Master::start`] recovers the metadata, restores the draining set, binds the gRPC and HTTP
//! listeners, and serves `Master`, `MasterControl` and `Admin` on one port with message limits
//! of `gfs_proto::MAX_MESSAGE`. Four background loops run every `heartbeat_interval`, each on
//! its own so that a slow one never delays another: mark silent servers dead; settle abandoned
//! chunks; re-replicate, then rebalance; purge the trash.
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
use crate::locks::PathLocks;
use crate::metastore::{MetaConfig, MetaStore};
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
        let dir = cfg.data_dir.clone();
        let checkpoint_every = cfg.checkpoint_every.max(1);
        let disk = Arc::clone(&host.disk);
        let meta = gfs_host::blocking(&*host.disk, move || {
            MetaStore::open_on(disk, dir, MetaConfig { checkpoint_every })
        })
        .await?;
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
        let tokens = Arc::new(tokens);
        let registry = Arc::new(Mutex::new(Registry::new(cfg.dead_after)));
        let chunks = Arc::new(ChunkManager::new(
            Arc::clone(&meta),
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
                clock: host.clock.clone(),
                insecure: host.net.tls().is_none(),
            },
            Arc::new(
                TonicControl::new(cfg.rpc_timeout, cfg.clone_timeout).with_net(host.net.clone()),
            ),
        ));
        chunks
            .persist_draining(cfg.data_dir.join("draining"))
            .map_err(|e| {
                StartError::Io(format!("reading {}/draining: {e}", cfg.data_dir.display()))
            })?;
        let log_fsync = chunks.metrics().log_fsync.clone();
        meta.on_fsync(Box::new(move |d| log_fsync.observe(d.as_secs_f64())));
        let listener = host
            .net
            .bind(&cfg.listen)
            .await
            .map_err(|e| StartError::Io(format!("binding {}: {e}", cfg.listen)))?;
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
        if let Some(listener) = http {
            tokio::spawn(crate::http::serve(
                listener,
                Arc::clone(&chunks),
                shutdown.clone(),
            ));
        }

        chunks
            .load_unsettled()
            .await
            .map_err(|e| StartError::Io(e.to_string()))?;
        let locks = Arc::new(PathLocks::new());
        let trash = Arc::new(Trash::new(
            Arc::clone(&meta),
            Arc::clone(&locks),
            cfg.trash_retention,
        ));
        // Every heartbeat interval, each duty in a loop of its own, so a slow one never delays
        // another (a repair scan over a million chunks never delays the liveness sweep): mark
        // servers that stopped heartbeating as dead; settle abandoned chunks whose replicas came
        // back; re-replicate, then rebalance (which waits for a pass that found every chunk at
        // its goal); purge the trash.
        let every = cfg.heartbeat_interval;
        let reg = Arc::clone(&registry);
        periodic(every, shutdown.clone(), move || {
            reg.lock().sweep(Instant::now());
            async {}
        });
        let c = Arc::clone(&chunks);
        periodic(every, shutdown.clone(), move || {
            let c = Arc::clone(&c);
            async move { c.settle().await }
        });
        let c = Arc::clone(&chunks);
        periodic(every, shutdown.clone(), move || {
            let c = Arc::clone(&c);
            async move {
                c.rereplicate().await;
                c.rebalance().await;
            }
        });
        let (purge, c) = (Arc::clone(&trash), Arc::clone(&chunks));
        periodic(every, shutdown.clone(), move || {
            let (purge, c) = (Arc::clone(&purge), Arc::clone(&c));
            async move {
                let now = c.cfg.clock.now_ms();
                c.purged(&purge.purge(now).await);
            }
        });

        // Explicit message limits (tonic decodes at most 4 MiB by default); what grows with the
        // cluster is paged well below them (gfs_proto::MAX_MESSAGE).
        let max = gfs_proto::MAX_MESSAGE;
        let svc = MasterServer::new(MasterService::new(
            Arc::clone(&meta),
            Arc::clone(&chunks),
            cfg.replication as u32,
            locks,
            trash,
            Arc::clone(&tokens),
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let admin = AdminServer::new(AdminService::new(Arc::clone(&chunks)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let rpc = RpcLayer::new(chunks.metrics().rpc.clone());
        let ctl = MasterControlServer::new(ControlService::new(
            registry,
            chunks,
            cfg.heartbeat_interval,
            tokens,
        ))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let token = shutdown.clone();
        let grpc = host
            .net
            .grpc_server()
            .map_err(|e| StartError::Config(format!("tls: {e}")))?;
        let task = tokio::spawn(
            grpc.layer(rpc)
                .add_service(svc)
                .add_service(ctl)
                .add_service(admin)
                .serve_with_incoming_shutdown(listener.incoming(), async move {
                    token.cancelled().await
                }),
        );
        tracing::info!(%addr, http = ?http_addr, dir = %cfg.data_dir.display(), "master serving");
        Ok(Master {
            addr,
            http_addr,
            shutdown,
            task,
            meta,
        })
    }

    /// A token that stops the master when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the master stops, then flushes and checkpoints the log.
    pub async fn wait(self) -> Result<(), StartError> {
        let served = self.task.await;
        self.shutdown.cancel();
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
fn periodic<F, Fut>(period: Duration, token: CancellationToken, mut duty: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => duty().await,
                _ = token.cancelled() => break,
            }
        }
    });
}
