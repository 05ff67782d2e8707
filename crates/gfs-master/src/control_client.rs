//! [`ChunkserverControl`] over gRPC: the chunkservers' control service (`ChunkControl`) and,
//! for seals, their replication service.
//!
//! One lazily connected channel per server, every call cut at `rpc_timeout`; a chunk copy
//! runs on a channel of its own within `clone_timeout` (the shared channels cut every call at
//! `rpc_timeout`, too short for a replica tens of MB behind or a copy under `clone_rate`).

use gfs_util::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::{
    CloneChunkRequest, CreateChunkRequest, GrantLeaseRequest, ReportChunksRequest, SealRequest,
    SetVersionRequest,
};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use gfs_util::time::unix_ms;

use crate::chunks::{ChunkCopy, ChunkserverControl, ControlError, Fenced, LeaseGrant};
use crate::registry::ServerInfo;

/// The calls the master makes to chunkservers, over gRPC.
pub struct TonicControl {
    rpc_timeout: Duration,
    clone_timeout: Duration,
    channels: Mutex<HashMap<String, ChunkControlClient<Channel>>>,
    net: gfs_host::Net,
}

impl TonicControl {
    /// Calls cut at `rpc_timeout`, copies at `clone_timeout`.
    pub fn new(rpc_timeout: Duration, clone_timeout: Duration) -> TonicControl {
        TonicControl {
            rpc_timeout,
            clone_timeout,
            channels: Mutex::new(HashMap::default()),
            net: gfs_host::Net::os(),
        }
    }

    /// Calls over `net` (the operating system's by default).
    pub fn with_net(mut self, net: gfs_host::Net) -> TonicControl {
        self.net = net;
        self
    }

    fn endpoint(&self, repl_addr: &str) -> Result<Endpoint, ControlError> {
        self.net
            .endpoint(repl_addr)
            .map(|e| e.connect_timeout(self.rpc_timeout))
            .map_err(|e| ControlError::Failed(format!("bad address {repl_addr:?}: {e}")))
    }

    fn client(&self, repl_addr: &str) -> Result<ChunkControlClient<Channel>, ControlError> {
        let mut c = self.channels.lock();
        if let Some(client) = c.get(repl_addr) {
            return Ok(client.clone());
        }
        let endpoint = self.endpoint(repl_addr)?.timeout(self.rpc_timeout);
        let client = ChunkControlClient::new(self.net.channel(&endpoint));
        c.insert(repl_addr.to_string(), client.clone());
        Ok(client)
    }
}

fn failed(e: Status) -> ControlError {
    match e.code() {
        Code::DataLoss => ControlError::DataLoss(e.message().to_string()),
        Code::NotFound => ControlError::NotFound(e.message().to_string()),
        _ => ControlError::Failed(e.to_string()),
    }
}

impl ChunkserverControl for TonicControl {
    fn create_chunk<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            self.client(&server.repl_addr)?
                .create_chunk(CreateChunkRequest { handle, version })
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn set_version<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Fenced, ControlError>> {
        Box::pin(async move {
            let reply = self
                .client(&server.repl_addr)?
                .set_version(SetVersionRequest { handle, version })
                .await
                .map_err(failed)?
                .into_inner();
            let led = reply.led.map(|l| (l.version, l.acknowledged_up_to));
            Ok(Fenced {
                length: reply.committed_length,
                led,
                sealed: reply.sealed,
            })
        })
    }

    fn committed_length<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
    ) -> BoxFuture<'a, Result<Option<u64>, ControlError>> {
        Box::pin(async move {
            let report = self
                .client(&server.repl_addr)?
                .report_chunks(ReportChunksRequest {
                    handles: vec![handle],
                })
                .await
                .map_err(failed)?
                .into_inner();
            Ok(report
                .chunks
                .into_iter()
                .find(|c| c.handle == handle && c.version == version)
                .map(|c| c.committed_length))
        })
    }

    fn grant_lease<'a>(
        &'a self,
        server: &'a ServerInfo,
        lease: LeaseGrant,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            let req = GrantLeaseRequest {
                handle: lease.handle,
                version: lease.version,
                secondaries: lease.secondaries,
                expires_unix_ms: unix_ms(lease.expires),
            };
            self.client(&server.repl_addr)?
                .grant_lease(req)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn copy_chunk<'a>(
        &'a self,
        target: &'a ServerInfo,
        copy: ChunkCopy,
    ) -> BoxFuture<'a, Result<u64, ControlError>> {
        Box::pin(async move {
            let mut req = tonic::Request::new(CloneChunkRequest {
                handle: copy.handle,
                version: copy.version,
                source: copy.source,
                sealed_length: copy.sealed_length,
                catch_up: copy.catch_up,
            });
            req.set_timeout(self.clone_timeout);
            let channel = self.net.channel(&self.endpoint(&target.repl_addr)?);
            let reply = ChunkControlClient::new(channel)
                .clone_chunk(req)
                .await
                .map_err(failed)?;
            Ok(reply.into_inner().length)
        })
    }

    fn seal<'a>(
        &'a self,
        server: &'a ServerInfo,
        handle: u64,
        version: u64,
        length: u64,
    ) -> BoxFuture<'a, Result<bool, ControlError>> {
        Box::pin(async move {
            let endpoint = self.endpoint(&server.repl_addr)?.timeout(self.rpc_timeout);
            let reply = ReplicationClient::new(self.net.channel(&endpoint))
                .seal(SealRequest {
                    handle,
                    version,
                    length,
                })
                .await
                .map_err(failed)?
                .into_inner();
            Ok(!reply.short)
        })
    }
}
