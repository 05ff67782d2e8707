//! The client handle: namespace calls to the master, record appends, chunk locations and reads.
//! Chunk locations come a page of `GetChunks` at a time; `refresh` fetches every page.
//!
//! [`Client::connect`] and [`Client::connect_with`] fail at once if no master is reachable;
//! [`Client::connect_lazy`] connects on first use. Either way an unreachable master (down,
//! restarting) is a transient failure like any other for the calls that retry (record
//! appends, [`crate::Writer`], [`crate::Reader`], [`Client::ensure_file`]): they back off and ask again until
//! `op_deadline`; plain namespace calls fail at once. Locations are cached for `cache_ttl`.
//!
//! The address may list a replicated group of masters (`a:9000,b:9000,c:9000`): calls go to
//! the one believed to lead and follow it when it moves ([`gfs_host::Masters`]). A call a
//! master refused because it does not lead, or that could not be sent because the master was
//! unreachable, was carried out nowhere: every call, a mutation too, is sent again to the
//! leader within `op_deadline`.
//!

use gfs_util::collections::HashMap;
use std::sync::Arc;
use tokio::time::Instant;

use gfs_dataplane::{DataClient, DataError};
use gfs_host::Masters;
use gfs_proto::v1::ChunkLease;
use gfs_proto::v1::admin_client::AdminClient;
use gfs_proto::v1::master_client::MasterClient;
use parking_lot::Mutex;
use tonic::transport::Endpoint;

use crate::config::ClientConfig;
use crate::error::{ClientError, Result, status_retriable};
use crate::model::*;

pub(crate) struct Inner {
    pub(crate) master: MasterClient<Masters>,
    pub(crate) admin: AdminClient<Masters>,
    pub(crate) masters: Masters,
    pub(crate) cfg: ClientConfig,
    pub(crate) conns: Mutex<HashMap<String, DataClient>>,
    pub(crate) locations: Mutex<HashMap<String, (Instant, Arc<Locations>)>>,
    /// The lease of each file's last chunk, as record appends last saw it.
    pub(crate) leases: Mutex<HashMap<String, ChunkLease>>,
}

/// A connection to a gfs cluster; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("masters", &self.inner.masters)
            .finish_non_exhaustive()
    }
}

/// Retries with exponential backoff until a deadline.
pub(crate) struct Retry {
    pub(crate) deadline: Instant,
    pub(crate) backoff: std::time::Duration,
    pub(crate) max: std::time::Duration,
    pub(crate) attempts: u32,
}

/// The pause before asking again when a group of masters knows no leader yet (an election
/// is under way): short and not doubled, as the election ends within a few timeouts.
const NO_LEADER_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl Retry {
    /// Sleeps before sending a call a group of masters refused unperformed (see
    /// `gfs_host::redirected`) again: not at all when the refusal named the leader, briefly
    /// when none is known; the backoff does not grow. Gives up once the deadline would pass.
    pub(crate) async fn redirected(&mut self, s: &tonic::Status) -> Result<()> {
        self.attempts += 1;
        let named = s
            .metadata()
            .get(gfs_host::LEADER_HEADER)
            .is_some_and(|v| !v.is_empty());
        let pause = if named {
            std::time::Duration::ZERO
        } else {
            NO_LEADER_PAUSE
        };
        if Instant::now() + pause > self.deadline {
            return Err(ClientError::GaveUp {
                attempts: self.attempts,
                last: s.message().to_string(),
            });
        }
        tracing::debug!(attempt = self.attempts, error = %s.message(), "asking the master leader");
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// Sleeps before the next attempt, or gives up with `last` once the deadline would pass.
    pub(crate) async fn wait(&mut self, last: impl std::fmt::Display) -> Result<()> {
        self.attempts += 1;
        let jitter = gfs_util::random::random_range(0..=self.backoff.as_millis() as u64 / 2);
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

pub(crate) fn data_retriable(e: &DataError) -> bool {
    e.is_retriable()
        || matches!(
            e,
            DataError::StaleVersion { .. } | DataError::NotFound { .. } | DataError::BadToken(_)
        )
}

/// The chunk of `lease` as a data-plane request names it, with the lease's token.
pub(crate) fn lease_ref(lease: &gfs_proto::v1::ChunkLease) -> gfs_dataplane::ChunkRef {
    gfs_dataplane::ChunkRef::new(lease.handle, lease.version, lease.token.clone())
}

/// Runs `call` against (a clone of) `client` until it answers, retrying what may go away on
/// retry (UNAVAILABLE and the like) with `retry`'s backoff and deadline.
pub(crate) async fn ask_with<C, T, F, Fut>(client: &C, retry: &mut Retry, call: F) -> Result<T>
where
    C: Clone,
    F: Fn(C) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        match call(client.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if gfs_host::redirected(&s) => retry.redirected(&s).await?,
            Err(s) if status_retriable(&s) => retry.wait(s.message()).await?,
            Err(s) => return Err(ClientError::from_status(s)),
        }
    }
}

/// Whether the connection itself failed (it is dropped from the pool).
pub(crate) fn connection_failed(e: &DataError) -> bool {
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

    /// Connects to the master at `addr` (or the group of masters `addr` lists, comma
    /// separated) with `cfg`; fails at once if none is reachable.
    pub async fn connect_with(addr: &str, cfg: ClientConfig) -> Result<Client> {
        let addrs = Self::addrs(addr)?;
        let mut reason = String::new();
        for a in &addrs {
            match cfg.net.connect_channel(&Self::endpoint(a, &cfg)?).await {
                Ok(_) => return Self::over(&addrs, cfg),
                Err(e) => reason = format!("{e}: is gfs-master running there?"),
            }
        }
        Err(ClientError::Connect {
            addr: addr.to_string(),
            reason,
        })
    }

    /// A client of the master at `addr` (or the group `addr` lists) that connects when first
    /// used, not now: it fails only on an unusable address. Calls that retry (record appends,
    /// reads, the streaming writer, [`Client::ensure_file`]) treat a master that is down or
    /// restarting like any other transient failure and wait for it within `op_deadline`; the
    /// others fail with `Master("Unavailable: ..")` while it is unreachable.
    pub fn connect_lazy(addr: &str, cfg: ClientConfig) -> Result<Client> {
        Self::over(&Self::addrs(addr)?, cfg)
    }

    fn addrs(list: &str) -> Result<Vec<String>> {
        let addrs = gfs_host::master_list(list);
        if addrs.is_empty() {
            return Err(ClientError::Connect {
                addr: list.to_string(),
                reason: "no master address".into(),
            });
        }
        Ok(addrs)
    }

    pub(crate) fn endpoint(addr: &str, cfg: &ClientConfig) -> Result<Endpoint> {
        Ok(cfg
            .net
            .endpoint(addr)
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.rpc_timeout)
            .tcp_nodelay(true))
    }

    fn over(addrs: &[String], cfg: ClientConfig) -> Result<Client> {
        let masters = Masters::new(&cfg.net, addrs, |a| {
            cfg.net.endpoint(a).map(|e| {
                e.connect_timeout(cfg.connect_timeout)
                    .timeout(cfg.rpc_timeout)
                    .tcp_nodelay(true)
            })
        })
        .map_err(|e| ClientError::Connect {
            addr: addrs.join(","),
            reason: e.to_string(),
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                master: MasterClient::new(masters.clone())
                    .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                    .max_encoding_message_size(gfs_proto::MAX_MESSAGE),
                admin: AdminClient::new(masters.clone())
                    .max_decoding_message_size(gfs_proto::MAX_MESSAGE)
                    .max_encoding_message_size(gfs_proto::MAX_MESSAGE),
                masters,
                cfg,
                conns: Mutex::new(HashMap::default()),
                locations: Mutex::new(HashMap::default()),
                leases: Mutex::new(HashMap::default()),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// Runs the mutation `call` against the master. Sent again (within `op_deadline`) only
    /// when a group of masters refused it unperformed: a master that does not lead, or one
    /// that could not be reached; any other failure is the caller's, as a lost reply would
    /// make a retry ambiguous.
    pub(crate) async fn mutate<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(MasterClient<Masters>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retry = self.retry();
        loop {
            match call(self.inner.master.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if self.inner.masters.addrs().len() > 1 && gfs_host::redirected(&s) => {
                    retry.redirected(&s).await?
                }
                Err(s) => return Err(ClientError::from_status(s)),
            }
        }
    }

    pub(crate) fn retry(&self) -> Retry {
        Retry {
            deadline: Instant::now() + self.inner.cfg.op_deadline,
            backoff: self.inner.cfg.initial_backoff,
            max: self.inner.cfg.max_backoff,
            attempts: 0,
        }
    }

    /// A pooled data-plane connection to `addr`.
    pub(crate) async fn conn(&self, addr: &str) -> Result<DataClient, DataError> {
        if let Some(c) = self.inner.conns.lock().get(addr) {
            return Ok(c.clone());
        }
        let cfg = gfs_dataplane::ClientConfig {
            connect_timeout: self.inner.cfg.connect_timeout,
            request_timeout: self.inner.cfg.rpc_timeout,
            net: self.inner.cfg.net.clone(),
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

    /// Runs `call` against the master until it answers, retrying what may go away on retry
    /// (UNAVAILABLE and the like) with `retry`'s backoff and deadline.
    pub(crate) async fn ask<T, F, Fut>(&self, retry: &mut Retry, call: F) -> Result<T>
    where
        F: Fn(MasterClient<Masters>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        ask_with(&self.inner.master, retry, call).await
    }
}
