//! The gRPC [`ReplicaTransport`] ([`Peers`]): the primary's replication-plane clients. Per peer
//! address, one lazily connected gRPC channel and one long-lived `Replicate` session carrying
//! id-tagged PREPARE / COMMIT / ABORT messages; SEAL is a unary call. Every call is bounded by a
//! deadline; a broken session fails its calls at once and is replaced by the next call. A
//! request carries an id and its reply echoes it; dropping the pool ends the sessions. HTTP/2
//! windows are [`WINDOW`] (16 MiB) on both ends, so one stream carries large records, and a
//! replica takes frames of up to [`FRAME`] (1 MiB) from its primary. This is the one place the
//! primary's calls become protobuf messages (`AppendHeader`, ...).

use gfs_util::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use gfs_proto::v1::replicate_request::Op;
use gfs_proto::v1::replication_client::ReplicationClient;
use gfs_proto::v1::{
    AbortRequest, AppendHeader, CommitRequest, Prepare, QuorumLength, ReplicateReply,
    ReplicateRequest, SealRequest,
};
use gfs_storage::{ChunkHandle, OpId, StageRequest};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use crate::error::{ReplicationError, Result};
use crate::transport::ReplicaTransport;

/// HTTP/2 flow-control window of the replication plane, per stream (connections get twice).
pub const WINDOW: u32 = 16 << 20;

/// Largest HTTP/2 frame a replica takes on the replication plane (the protocol's default is
/// 16 KiB: a 1 MiB PREPARE was 64 frames).
pub const FRAME: u32 = 1 << 20;

/// How the primary talks to its secondaries.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or accepted (tonic's default of 4 MiB is too small for records).
    pub max_message: usize,
    /// Requests queued on one session before senders wait.
    pub session_queue: usize,
    /// The network connected over.
    pub net: gfs_host::Net,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            connect_timeout: Duration::from_secs(2),
            max_message: 32 << 20,
            session_queue: 1024,
            net: gfs_host::Net::os(),
        }
    }
}

/// A pool of replication-plane clients keyed by `host:port`.
pub struct Peers {
    cfg: PeerConfig,
    clients: Mutex<HashMap<String, ReplicationClient<Channel>>>,
    sessions: Arc<Mutex<HashMap<String, Arc<Session>>>>,
}

/// One `Replicate` stream to a peer. Dropping it (with the pool) ends the request stream.
struct Session {
    tx: mpsc::Sender<ReplicateRequest>,
    state: Arc<SessionState>,
    next_id: AtomicU64,
}

/// What the session's reader task shares with callers (never the sender, so that dropping the
/// session ends the stream).
struct SessionState {
    pending: Mutex<HashMap<u64, oneshot::Sender<ReplicateReply>>>,
    closed: AtomicBool,
}

impl SessionState {
    /// Fails every call waiting on this session.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending.lock().clear();
    }
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
            clients: Mutex::new(HashMap::default()),
            sessions: Arc::new(Mutex::new(HashMap::default())),
        }
    }

    fn client(&self, addr: &str) -> Result<ReplicationClient<Channel>> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = self
            .cfg
            .net
            .endpoint(addr)
            .map_err(|e| peer_err(addr, e))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true)
            // One session stream carries every append: h2's default 64 KiB window would cap
            // it at a window per round trip.
            .initial_stream_window_size(Some(WINDOW))
            .initial_connection_window_size(Some(WINDOW * 2));
        let client = ReplicationClient::new(self.cfg.net.channel(&endpoint))
            .max_decoding_message_size(self.cfg.max_message)
            .max_encoding_message_size(self.cfg.max_message);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// The live session to `addr`, opening one if there is none.
    fn session(&self, addr: &str) -> Result<Arc<Session>> {
        let mut sessions = self.sessions.lock();
        if let Some(s) = sessions
            .get(addr)
            .filter(|s| !s.state.closed.load(Ordering::Acquire))
        {
            return Ok(Arc::clone(s));
        }
        let mut client = self.client(addr)?;
        let (tx, rx) = mpsc::channel(self.cfg.session_queue.max(1));
        let state = Arc::new(SessionState {
            pending: Mutex::new(HashMap::default()),
            closed: AtomicBool::new(false),
        });
        let session = Arc::new(Session {
            tx,
            state: Arc::clone(&state),
            next_id: AtomicU64::new(1),
        });
        let reader = state;
        let peer = addr.to_string();
        let pool = Arc::downgrade(&self.sessions);
        tokio::spawn(async move {
            let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
            match client.replicate(requests).await {
                Ok(response) => {
                    let mut replies = response.into_inner();
                    while let Some(next) = replies.next().await {
                        match next {
                            Ok(reply) => {
                                let waiter = reader.pending.lock().remove(&reply.id);
                                if let Some(w) = waiter {
                                    let _ = w.send(reply);
                                }
                            }
                            Err(status) => {
                                tracing::warn!(%peer, error = %status, "replication session failed");
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::warn!(%peer, error = %status, "cannot open a replication session");
                }
            }
            reader.close();
            // Dropping the session ends our half of the stream, so the peer can shut down.
            if let Some(pool) = pool.upgrade() {
                let mut sessions = pool.lock();
                if sessions
                    .get(&peer)
                    .is_some_and(|s| Arc::ptr_eq(&s.state, &reader))
                {
                    sessions.remove(&peer);
                }
            }
        });
        sessions.insert(addr.to_string(), Arc::clone(&session));
        Ok(session)
    }

    /// Sends one request on the session to `addr` and waits for its reply.
    async fn call(&self, addr: &str, op: Op, timeout: Duration) -> Result<ReplicateReply> {
        let session = self.session(addr)?;
        let id = session.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        session.state.pending.lock().insert(id, tx);
        let exchange = async {
            if session.state.closed.load(Ordering::Acquire) {
                return Err(peer_err(addr, "the replication session closed"));
            }
            session
                .tx
                .send(ReplicateRequest { id, op: Some(op) })
                .await
                .map_err(|_| peer_err(addr, "the replication session closed"))?;
            rx.await
                .map_err(|_| peer_err(addr, "the replication session closed"))
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(peer_err(addr, format!("no answer within {timeout:?}"))),
        };
        if reply.is_err() {
            session.state.pending.lock().remove(&id);
        }
        let reply = reply?;
        if reply.code != 0 {
            let code = tonic::Code::from_i32(reply.code as i32);
            return Err(peer_err(addr, format!("{code:?}: {}", reply.message)));
        }
        Ok(reply)
    }
}

/// The wire's PREPARE of `append`; with `commit`, the one-round WRITE.
fn prepare(append: StageRequest, commit: bool) -> Prepare {
    Prepare {
        header: Some(AppendHeader {
            handle: append.handle.0,
            version: append.version,
            op_id: append.op.0,
            offset: append.offset,
            length: append.data.len() as u32,
        }),
        data: append.data,
        commit,
    }
}

/// The replication plane's gRPC client side: PREPARE, WRITE, COMMIT and ABORT on the session
/// to the peer, SEAL as a unary call; each bounded by `timeout`.
impl ReplicaTransport for Peers {
    fn prepare<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        let op = Op::Prepare(prepare(append, false));
        Box::pin(async move { self.call(addr, op, timeout).await.map(|_| ()) })
    }

    fn write<'a>(
        &'a self,
        addr: &'a str,
        append: StageRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        let (handle, version, op_id) = (append.handle, append.version, append.op);
        let end = append.offset + append.data.len() as u64;
        let op = Op::Prepare(prepare(append, true));
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let committed = self.call(addr, op, timeout).await?.committed_length;
            if committed >= end.max(1) {
                return Ok(committed);
            }
            // A peer older than the WRITE takes it for a PREPARE: it staged the append and
            // answers with no committed length. Its COMMIT follows, as in two rounds, within
            // the same deadline, so the append counts durable there only once it is.
            tracing::debug!(%handle, peer = addr, "a peer that only staged the WRITE is sent its COMMIT");
            let left = timeout.saturating_sub(started.elapsed());
            self.commit(addr, handle, version, op_id, left).await
        })
    }

    fn commit<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<u64>> {
        let req = Op::Commit(CommitRequest {
            handle: handle.0,
            op_id: op.0,
            version,
        });
        Box::pin(async move {
            self.call(addr, req, timeout)
                .await
                .map(|r| r.committed_length)
        })
    }

    fn abort<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        op: OpId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        let req = Op::Abort(AbortRequest {
            handle: handle.0,
            op_id: op.0,
            version,
        });
        Box::pin(async move { self.call(addr, req, timeout).await.map(|_| ()) })
    }

    fn quorum_length<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        let req = Op::QuorumLength(QuorumLength {
            handle: handle.0,
            version,
            length,
        });
        Box::pin(async move { self.call(addr, req, timeout).await.map(|_| ()) })
    }

    fn seal<'a>(
        &'a self,
        addr: &'a str,
        handle: ChunkHandle,
        version: u64,
        length: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let mut client = self.client(addr)?;
            let req = SealRequest {
                handle: handle.0,
                version,
                length,
            };
            match tokio::time::timeout(timeout, client.seal(req)).await {
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    Ok(r.short.then_some(r.committed_length))
                }
                Ok(Err(status)) => Err(peer_err(
                    addr,
                    format!("{:?}: {}", status.code(), status.message()),
                )),
                Err(_) => Err(peer_err(addr, format!("no answer within {timeout:?}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use gfs_proto::v1::replication_server::{Replication, ReplicationServer};
    use gfs_proto::v1::{ReadChunkRequest, SealReply};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::participant::{ChunkStream, ReplyStream};

    /// A replication peer that answers each PREPARE with no committed length, WRITE or not
    /// (as one built before the WRITE does), and each COMMIT with `committed`; it counts
    /// the COMMITs.
    struct Older {
        committed: u64,
        commits: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl Replication for Older {
        type ReplicateStream = ReplyStream;
        type ReadChunkStream = ChunkStream;

        async fn replicate(
            &self,
            request: Request<Streaming<ReplicateRequest>>,
        ) -> std::result::Result<Response<ReplyStream>, Status> {
            let (committed, commits) = (self.committed, Arc::clone(&self.commits));
            let replies = request.into_inner().map(move |r| {
                let r = r?;
                let committed_length = match r.op {
                    Some(Op::Commit(_)) => {
                        commits.fetch_add(1, Ordering::Relaxed);
                        committed
                    }
                    _ => 0,
                };
                Ok(ReplicateReply {
                    id: r.id,
                    committed_length,
                    ..ReplicateReply::default()
                })
            });
            Ok(Response::new(Box::pin(replies)))
        }

        async fn read_chunk(
            &self,
            _: Request<ReadChunkRequest>,
        ) -> std::result::Result<Response<ChunkStream>, Status> {
            Err(Status::unimplemented("not here"))
        }

        async fn seal(
            &self,
            _: Request<SealRequest>,
        ) -> std::result::Result<Response<SealReply>, Status> {
            Err(Status::unimplemented("not here"))
        }
    }

    /// A WRITE to a peer built before it (which stages it as a PREPARE and answers with no
    /// committed length) is followed by its COMMIT, and counts durable only by that answer:
    /// else one round in a cluster of mixed versions would count staged bytes as durable.
    #[tokio::test]
    async fn a_write_only_staged_by_an_older_peer_is_followed_by_its_commit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let commits = Arc::new(AtomicU64::new(0));
        let older = Older {
            committed: 110,
            commits: Arc::clone(&commits),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ReplicationServer::new(older))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let peers = Peers::new(PeerConfig::default());
        let append = StageRequest {
            op: OpId(1),
            handle: ChunkHandle(7),
            version: 1,
            offset: 100,
            data: bytes::Bytes::from_static(b"0123456789"),
        };
        let durable = peers
            .write(&addr, append, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(durable, 110, "the COMMIT's answer");
        assert_eq!(commits.load(Ordering::Relaxed), 1);
    }
}
