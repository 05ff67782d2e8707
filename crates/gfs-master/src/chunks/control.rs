//! The calls the master makes to chunkservers: a cached channel per server, a call on many
//! servers at once, and chunk copies on channels of their own.

use gfs_proto::v1::CloneChunkRequest;
use gfs_proto::v1::chunk_control_client::ChunkControlClient;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::*;
use crate::registry::ServerInfo;

impl ChunkManager {
    pub(super) fn control(&self, repl_addr: &str) -> Result<ChunkControlClient<Channel>, Status> {
        let mut c = self.controls.lock();
        if let Some(client) = c.get(repl_addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{repl_addr}"))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(self.cfg.rpc_timeout)
            .timeout(self.cfg.rpc_timeout);
        let client = ChunkControlClient::new(endpoint.connect_lazy());
        c.insert(repl_addr.to_string(), client.clone());
        Ok(client)
    }

    /// Runs `call` against each server at once; returns the servers it succeeded on.
    pub(super) async fn on_each<F, Fut>(&self, servers: Vec<ServerInfo>, call: F) -> Vec<ServerInfo>
    where
        F: Fn(ChunkControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        let calls = servers.into_iter().map(|s| {
            let client = self.control(&s.repl_addr);
            let fut = client.map(&call);
            async move {
                let r = match fut {
                    Ok(f) => f.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &r {
                    tracing::warn!(server = %s.id, error = %e, "chunkserver call failed");
                }
                r.ok().map(|()| s)
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Runs a copy (a clone or a catch-up) on `repl_addr` within `clone_timeout`, on a channel
    /// of its own: the shared ones cut every call at `rpc_timeout`, too short for a replica
    /// tens of MB behind or a copy under `clone_rate`.
    pub(super) async fn copy(
        &self,
        repl_addr: &str,
        req: CloneChunkRequest,
    ) -> Result<tonic::Response<gfs_proto::v1::CloneChunkReply>, Status> {
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.cfg.clone_timeout);
        let endpoint = Endpoint::from_shared(format!("http://{repl_addr}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        let channel = endpoint
            .connect_timeout(self.cfg.rpc_timeout)
            .connect_lazy();
        ChunkControlClient::new(channel).clone_chunk(req).await
    }
}
