//! Replication-plane clients: one lazily connected gRPC channel per peer address, every call
//! bounded by a deadline.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::{AbortRequest, AppendHeader, CommitRequest, PrepareRequest, SealRequest};
use gfs_storage::{ChunkHandle, OpId};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ReplicationError, Result};

/// How the primary talks to its secondaries.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or accepted (tonic's default of 4 MiB is too small for records).
    pub max_message: usize,
    /// PREPARE streams the record in slices of this many bytes.
    pub slice: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            connect_timeout: Duration::from_secs(2),
            max_message: 32 << 20,
            slice: 1 << 20,
        }
    }
}

/// A pool of replication-plane clients keyed by `host:port`.
pub struct Peers {
    cfg: PeerConfig,
    clients: Mutex<HashMap<String, ReplicationClient<Channel>>>,
}

fn peer_err(addr: &str, message: impl ToString) -> ReplicationError {
    ReplicationError::Peer {
        addr: addr.to_string(),
        message: message.to_string(),
    }
}

impl Peers {
    /// An empty pool.
    pub fn new(cfg: PeerConfig) -> Peers {
        Peers {
            cfg,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, addr: &str) -> Result<ReplicationClient<Channel>> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| peer_err(addr, e))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true);
        let client = ReplicationClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(self.cfg.max_message)
            .max_encoding_message_size(self.cfg.max_message);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    async fn bounded<T>(
        addr: &str,
        timeout: Duration,
        call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(peer_err(
                addr,
                format!("{:?}: {}", status.code(), status.message()),
            )),
            Err(_) => Err(peer_err(addr, format!("no answer within {timeout:?}"))),
        }
    }

    /// READY phase: streams `data` to `addr`, which stages it.
    pub async fn prepare(
        &self,
        addr: &str,
        header: AppendHeader,
        data: Bytes,
        timeout: Duration,
    ) -> Result<()> {
        let mut client = self.client(addr)?;
        let slice = self.cfg.slice.max(1);
        let mut msgs = Vec::with_capacity(data.len() / slice + 1);
        let mut off = 0;
        loop {
            let end = (off + slice).min(data.len());
            msgs.push(PrepareRequest {
                header: (off == 0).then_some(header),
                data: data.slice(off..end),
            });
            off = end;
            if off >= data.len() {
                break;
            }
        }
        Self::bounded(addr, timeout, client.prepare(futures::stream::iter(msgs)))
            .await
            .map(|_| ())
    }

    /// COMMIT phase: makes a staged append durable on `addr`; returns its committed length.
    pub async fn commit(
        &self,
        addr: &str,
        handle: ChunkHandle,
        op: OpId,
        timeout: Duration,
    ) -> Result<u64> {
        let mut client = self.client(addr)?;
        let req = CommitRequest {
            handle: handle.0,
            op_id: op.0,
        };
        Self::bounded(addr, timeout, client.commit(req))
            .await
            .map(|r| r.committed_length)
    }

    /// Drops a staged append on `addr`.
    pub async fn abort(
        &self,
        addr: &str,
        handle: ChunkHandle,
        op: OpId,
        timeout: Duration,
    ) -> Result<()> {
        let mut client = self.client(addr)?;
        let req = AbortRequest {
            handle: handle.0,
            op_id: op.0,
        };
        Self::bounded(addr, timeout, client.abort(req))
            .await
            .map(|_| ())
    }

    /// Seals the replica on `addr` at `length`.
    pub async fn seal(
        &self,
        addr: &str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> Result<()> {
        let mut client = self.client(addr)?;
        let req = SealRequest {
            handle: handle.0,
            version,
            length,
        };
        Self::bounded(addr, timeout, client.seal(req))
            .await
            .map(|_| ())
    }
}
