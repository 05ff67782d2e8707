//! The data-plane client: one pipelined TCP connection to a chunkserver, shared by many tasks.
//!
//! Calls get a fresh request id, park a oneshot sender in the pending map and queue their frame
//! for the writer task; the reader task routes each reply to the pending call with its id. When
//! the connection fails, every pending call fails with the reason and later calls fail fast.

use gfs_util::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gfs_host::{ConnRead, ConnWrite, Net};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use crate::codec::{ClientCodec, CodecError, WriteEnd, write_batches};
use crate::{ChunkRef, DataError, Frame, Request, Response};

/// Limits and deadlines of a client connection.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Largest frame body sent or accepted, in bytes.
    pub max_frame: usize,
    /// Deadline for establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Deadline for one call, from queueing the request to receiving its reply.
    pub request_timeout: Duration,
    /// The network connected over.
    pub net: Net,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024 + crate::REQUEST_OVERHEAD,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            net: Net::os(),
        }
    }
}

/// Capacity of the queue between callers and the writer task.
const WRITE_QUEUE: usize = 256;

type Reply = Result<Response, DataError>;

/// Pending calls and, once the connection is dead, why.
#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    closed: Option<DataError>,
}

/// State shared by the handles, the reader task and the writer task.
struct Shared {
    state: Mutex<State>,
    /// Cancelled once the connection is dead; stops both background tasks.
    closed: CancellationToken,
}

impl Shared {
    /// Marks the connection dead with `reason` (first reason wins) and fails every pending call.
    fn close(&self, reason: DataError) {
        let pending = {
            let mut st = self.state.lock();
            if st.closed.is_none() {
                st.closed = Some(reason.clone());
            }
            std::mem::take(&mut st.pending)
        };
        for (_, tx) in pending {
            let _ = tx.send(Err(reason.clone()));
        }
        self.closed.cancel();
    }

    fn close_reason(&self) -> DataError {
        self.state
            .lock()
            .closed
            .clone()
            .unwrap_or(DataError::ConnectionClosed)
    }
}

/// Removes a call's pending entry when the call ends, however it ends (reply, timeout, drop).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().pending.remove(&self.id);
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Frame<Request>>,
    next_id: AtomicU64,
    cfg: ClientConfig,
    peer: SocketAddr,
}

/// One pipelined connection to a chunkserver's data plane; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct DataClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataClient")
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl DataClient {
    /// Connects to the data plane at `addr` (`host:port`).
    pub async fn connect(addr: &str, cfg: ClientConfig) -> Result<DataClient, DataError> {
        let stream = tokio::time::timeout(cfg.connect_timeout, cfg.net.connect_data(addr))
            .await
            .map_err(|_| DataError::Timeout)?
            .map_err(|e| DataError::Io(format!("connect to {addr}: {e}")))?;
        let peer = stream
            .peer_addr()
            .map_err(|e| DataError::Io(format!("peer address: {e}")))?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed: CancellationToken::new(),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let span = tracing::debug_span!("dataplane_client", %peer);
        tokio::spawn(read_loop(rd, shared.clone(), cfg.max_frame).instrument(span.clone()));
        tokio::spawn(write_loop(wr, rx, shared.clone(), cfg.clone()).instrument(span));
        Ok(DataClient {
            inner: Arc::new(Inner {
                shared,
                tx,
                next_id: AtomicU64::new(1),
                cfg,
                peer,
            }),
        })
    }

    /// Appends `data` as one record to `chunk`; returns the record's offset in the chunk.
    pub async fn append(
        &self,
        chunk: &ChunkRef,
        op_id: u64,
        data: Bytes,
    ) -> Result<u64, DataError> {
        self.append_at(chunk, op_id, None, data).await
    }

    /// Appends `data` to `chunk` only at offset `at` (any offset when `None`); a primary
    /// whose next offset differs answers [`DataError::OffsetMismatch`].
    pub async fn append_at(
        &self,
        chunk: &ChunkRef,
        op_id: u64,
        at: Option<u64>,
        data: Bytes,
    ) -> Result<u64, DataError> {
        let req = Request::Append {
            handle: chunk.handle,
            version: chunk.version,
            op_id,
            token: chunk.token.clone(),
            at,
            data,
        };
        match self.call(req).await? {
            Response::Appended { offset } => Ok(offset),
            other => Err(unexpected("append", &other)),
        }
    }

    /// Reads `len` bytes at `offset` of `chunk`.
    pub async fn read(&self, chunk: &ChunkRef, offset: u64, len: u32) -> Result<Bytes, DataError> {
        let req = Request::Read {
            handle: chunk.handle,
            version: chunk.version,
            offset,
            len,
            token: chunk.token.clone(),
        };
        match self.call(req).await? {
            Response::Data(data) => Ok(data),
            other => Err(unexpected("read", &other)),
        }
    }

    /// Has the primary of `chunk` make the length a quorum holds known beyond itself; returns
    /// that length.
    pub async fn flush(&self, chunk: &ChunkRef) -> Result<u64, DataError> {
        let req = Request::Flush {
            handle: chunk.handle,
            version: chunk.version,
            token: chunk.token.clone(),
        };
        match self.call(req).await? {
            Response::Appended { offset } => Ok(offset),
            other => Err(unexpected("flush", &other)),
        }
    }

    /// Sends `req` and waits for its reply; an `ERROR` reply is returned as `Err`, so `Ok` is
    /// always `Appended` or `Data`.
    pub async fn call(&self, req: Request) -> Result<Response, DataError> {
        let inner = &*self.inner;
        let len = req.body_len();
        if len > inner.cfg.max_frame || u32::try_from(len).is_err() {
            return Err(DataError::FrameTooLarge {
                len: len as u64,
                max: inner.cfg.max_frame as u64,
            });
        }
        let request_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut st = inner.shared.state.lock();
            if let Some(reason) = &st.closed {
                return Err(reason.clone());
            }
            st.pending.insert(request_id, reply_tx);
        }
        let _guard = PendingGuard {
            shared: &inner.shared,
            id: request_id,
        };
        let exchange = async {
            let frame = Frame {
                request_id,
                body: req,
            };
            if inner.tx.send(frame).await.is_err() {
                return Err(inner.shared.close_reason());
            }
            match reply_rx.await {
                Ok(reply) => reply,
                Err(_) => Err(inner.shared.close_reason()),
            }
        };
        match tokio::time::timeout(inner.cfg.request_timeout, exchange).await {
            Ok(Ok(Response::Error(e))) => Err(e),
            Ok(reply) => reply,
            Err(_) => {
                debug!(request_id, "request timed out");
                Err(DataError::Timeout)
            }
        }
    }

    /// Address of the chunkserver this client is connected to.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }
}

fn unexpected(op: &str, reply: &Response) -> DataError {
    let kind = match reply {
        Response::Appended { .. } => "APPENDED",
        Response::Data(_) => "DATA",
        Response::Error(_) => "ERROR",
    };
    DataError::Internal(format!("unexpected {kind} reply to {op}"))
}

/// Routes replies to pending calls until the connection ends, then fails what is left.
async fn read_loop(rd: ConnRead, shared: Arc<Shared>, max_frame: usize) {
    let mut reader = FramedRead::new(rd, ClientCodec::new(max_frame));
    let reason = loop {
        let next = tokio::select! {
            n = reader.next() => n,
            _ = shared.closed.cancelled() => return,
        };
        match next {
            None => break DataError::ConnectionClosed,
            Some(Err(CodecError::Io(e))) => break DataError::Io(e.to_string()),
            Some(Err(e)) => {
                warn!(error = %e, "malformed reply; closing connection");
                break DataError::Io(format!("protocol error: {e}"));
            }
            Some(Ok(Frame {
                request_id: 0,
                body: Response::Error(e),
            })) => {
                // Request id 0 is never used by calls: a connection-level error from the server.
                warn!(error = %e, "server refused the connection");
                break e;
            }
            Some(Ok(frame)) => {
                let waiter = shared.state.lock().pending.remove(&frame.request_id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(Ok(frame.body));
                    }
                    None => debug!(
                        request_id = frame.request_id,
                        "reply for an unknown or abandoned request; dropped"
                    ),
                }
            }
        }
    };
    debug!(reason = %reason, "connection closed");
    shared.close(reason);
}

/// Writes queued requests until every handle is dropped or the connection dies.
async fn write_loop(
    wr: ConnWrite,
    mut rx: mpsc::Receiver<Frame<Request>>,
    shared: Arc<Shared>,
    cfg: ClientConfig,
) {
    let mut writer = FramedWrite::new(wr, ClientCodec::new(cfg.max_frame));
    match write_batches(&mut writer, &mut rx, cfg.request_timeout, &shared.closed).await {
        WriteEnd::Drained => {}
        WriteEnd::Stopped => return,
        WriteEnd::Failed(e) => {
            shared.close(DataError::Io(format!("write failed: {e}")));
            return;
        }
        WriteEnd::TimedOut => {
            shared.close(DataError::Io("write timed out".into()));
            return;
        }
    }
    // Every handle is gone: shut our side down so the server sees EOF, then stop the reader.
    let _ = tokio::time::timeout(cfg.request_timeout, writer.close()).await;
    shared.close(DataError::ConnectionClosed);
}
