//! The data-plane server: accepts connections, decodes pipelined requests, runs each in its own
//! task against a [`Handler`], and writes the replies back in completion order.
//!
//! Per connection there is one reader loop (which also owns the connection's lifetime), one
//! task per in-flight request (at most `max_in_flight`; the reader waits for a permit before
//! reading the next frame, which pushes back on the client through TCP), and one writer task fed
//! by a bounded channel. The writer ends once every request task has dropped its sender, so a
//! connection that stops reading (peer EOF, idle timeout, protocol error, shutdown) still
//! delivers the replies of the requests it already accepted.
//!
//! Limits ([`ServerConfig`]): past `max_connections` a new connection gets `Unavailable` (request
//! id 0) and is closed; `max_in_flight` per connection pushes back; `idle_timeout` closes a
//! connection only while nothing is in flight; `write_timeout` bounds each reply's write and the
//! drain of in-flight requests at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use gfs_host::data_tls::Accepted;
use gfs_host::tls::{Peer, Tls};
use gfs_host::{Conn, ConnRead, ConnWrite, Listener};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::codec::{CodecError, ServerCodec, WriteEnd, write_batches};
use crate::{DataError, Frame, Request, Response};

/// Implemented by the chunkserver: what the data plane calls.
pub trait Handler: Send + Sync + 'static {
    /// Whether `req` may be served at all (its chunk token checks out, and names `caller`, the
    /// client certificate of a TLS connection); called before any other method, and the
    /// request is answered with the error if not.
    fn admit(&self, req: &Request, caller: Option<&Peer>) -> Result<(), DataError>;

    /// Appends `data` as one record to chunk `handle` (only at offset `at` when given); returns
    /// the record's offset in the chunk.
    fn append(
        &self,
        handle: u64,
        version: u64,
        op_id: u64,
        at: Option<u64>,
        data: Bytes,
    ) -> impl Future<Output = Result<u64, DataError>> + Send;

    /// Reads `len` bytes at `offset` of chunk `handle`.
    fn read(
        &self,
        handle: u64,
        version: u64,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<Bytes, DataError>> + Send;

    /// As the primary of chunk `handle` at `version`: makes the length a quorum holds known
    /// beyond this server ([`Request::Flush`]); returns it.
    fn flush(
        &self,
        handle: u64,
        version: u64,
    ) -> impl Future<Output = Result<u64, DataError>> + Send;
}

/// Limits and deadlines of the data-plane server. As a TOML or JSON table its keys are the
/// field names; durations take a unit ("60s").
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Largest accepted frame body in bytes. Not a key of the table: it follows from the
    /// largest record, which the owner of the server sets.
    #[serde(skip)]
    pub max_frame: usize,
    /// Most connections served at once; further ones get `Unavailable` and are closed.
    pub max_connections: usize,
    /// Most requests in flight per connection before the server stops reading from it.
    pub max_in_flight: usize,
    /// A connection with no request in flight and no new frame for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Deadline for writing one batch of replies; also the shutdown grace period.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// The server's identity: with one, TLS is taken beside plaintext (only TLS when it says
    /// [`Tls::data_plane`]), and a TLS client's certificate name is handed to
    /// [`Handler::admit`] ([`gfs_host::data_tls`]). Not a key of the table: `[tls]` sets it.
    #[serde(skip)]
    pub tls: Option<Arc<Tls>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame: 16 * 1024 * 1024 + crate::REQUEST_OVERHEAD,
            max_connections: 1024,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Longest a TLS handshake may take before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest time a closing connection keeps draining the peer's unread bytes, so that the close
/// is a FIN after our last reply rather than a reset that could discard it.
const LINGER: Duration = Duration::from_secs(1);
/// Most replies written before one flush.
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves connections from `listener` until `shutdown` is cancelled, then stops accepting and lets in-flight requests finish (bounded by write_timeout).
pub async fn run<H: Handler>(
    listener: impl Into<Listener>,
    handler: Arc<H>,
    cfg: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut listener = listener.into();
    let cfg = Arc::new(cfg);
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    info!(addr = ?listener.local_addr().ok(), "data plane serving");
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let span = tracing::info_span!("dataplane_conn", %peer);
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let conn = Connection {
                    handler: handler.clone(),
                    cfg: cfg.clone(),
                    shutdown: shutdown.clone(),
                    hard_stop: hard_stop.clone(),
                    peer,
                };
                tracker.spawn(conn.serve(stream, permit).instrument(span));
            }
            Err(_) => {
                tracker.spawn(reject(stream, cfg.clone(), hard_stop.clone()).instrument(span));
            }
        }
    }
    drop(listener);
    tracker.close();
    info!(
        connections = tracker.len(),
        "data plane shutting down; draining"
    );
    if tokio::time::timeout(cfg.write_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!("shutdown grace period expired; aborting remaining requests");
        hard_stop.cancel();
        tracker.wait().await;
    }
    hard_stop.cancel();
    info!("data plane stopped");
    Ok(())
}

/// Tells a connection over the cap that the server is full, then closes it.
async fn reject(stream: Conn, cfg: Arc<ServerConfig>, hard_stop: CancellationToken) {
    warn!("connection refused: too many connections");
    refuse(
        stream,
        DataError::Unavailable("too many connections".into()),
        cfg,
        hard_stop,
    )
    .await;
}

/// Answers a connection with `why` (request id 0: the whole connection), then closes it.
async fn refuse(
    stream: Conn,
    why: DataError,
    cfg: Arc<ServerConfig>,
    hard_stop: CancellationToken,
) {
    let (rd, wr) = stream.into_split();
    let mut writer = FramedWrite::new(wr, ServerCodec::new(cfg.max_frame));
    let frame = Frame {
        request_id: 0,
        body: Response::Error(why),
    };
    let write = async {
        writer.send(frame).await?;
        writer.close().await
    };
    let deadline = cfg.write_timeout.min(LINGER);
    if let Ok(Ok(())) = tokio::time::timeout(deadline, write).await {
        linger(rd, &hard_stop).await;
    }
}

/// After our write half is shut down, reads and discards until the peer closes (or `LINGER`).
async fn linger(mut rd: ConnRead, hard_stop: &CancellationToken) {
    let mut scratch = vec![0u8; 8192];
    let drain = async {
        loop {
            match rd.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = tokio::time::sleep(LINGER) => {}
        _ = hard_stop.cancelled() => {}
    }
}

/// Everything one connection needs.
struct Connection<H> {
    handler: Arc<H>,
    cfg: Arc<ServerConfig>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
    peer: SocketAddr,
}

/// Why a connection's reader loop stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    PeerClosed,
    Idle,
    Shutdown,
    WriterFailed,
    ProtocolError,
    TransportError,
}

impl<H: Handler> Connection<H> {
    /// The connection as it is served: over TLS after its handshake, or plaintext where that
    /// is taken; `None` once it was refused or failed (and logged).
    async fn open(&self, stream: Conn) -> Option<(Conn, Option<Peer>)> {
        let Some(tls) = &self.cfg.tls else {
            return Some((stream, None));
        };
        let accepted = tls
            .data
            .accept(
                stream,
                tls.data_plane,
                self.cfg.idle_timeout,
                HANDSHAKE_TIMEOUT,
            )
            .await;
        match accepted {
            Ok(Accepted::Tls(conn, peer)) => {
                debug!(caller = %peer, "TLS connection");
                Some((conn, Some(peer)))
            }
            Ok(Accepted::Plain(conn)) => Some((conn, None)),
            Ok(Accepted::PlainRefused(conn)) => {
                warn!("plaintext connection refused: this data plane takes TLS only");
                let why = DataError::Unavailable(
                    "this chunkserver takes its data plane over TLS only (client: connect with \
                     TLS, [tls] data_plane = true or --data-tls)"
                        .into(),
                );
                refuse(conn, why, self.cfg.clone(), self.hard_stop.clone()).await;
                None
            }
            Ok(Accepted::Silent) => {
                debug!("idle before its first byte; connection closed");
                None
            }
            Err(e) => {
                warn!(error = %e, "TLS handshake failed; connection closed");
                None
            }
        }
    }

    async fn serve(self, stream: Conn, _conn_permit: OwnedSemaphorePermit) {
        debug!(peer = %self.peer, "connection accepted");
        let Some((stream, caller)) = self.open(stream).await else {
            return;
        };
        let caller = caller.map(Arc::new);
        let (rd, wr) = stream.into_split();
        let max_in_flight = self.cfg.max_in_flight.max(1);
        let (tx, rx) = mpsc::channel::<Frame<Response>>(max_in_flight + 1);
        let writer_failed = CancellationToken::new();
        let writer = tokio::spawn(
            write_loop(
                wr,
                rx,
                self.cfg.clone(),
                writer_failed.clone(),
                self.hard_stop.clone(),
            )
            .in_current_span(),
        );

        let mut reader = FramedRead::new(rd, ServerCodec::new(self.cfg.max_frame));
        let stop = self
            .read_loop(&mut reader, &tx, max_in_flight, &writer_failed, &caller)
            .await;
        debug!(reason = ?stop, "connection stops reading");
        // The writer ends once every request task has replied and dropped its sender.
        drop(tx);
        let wrote_all = matches!(writer.await, Ok(true));
        if wrote_all && !matches!(stop, Stop::PeerClosed | Stop::TransportError) {
            linger(reader.into_inner(), &self.hard_stop).await;
        }
        debug!("connection closed");
    }

    async fn read_loop(
        &self,
        reader: &mut FramedRead<ConnRead, ServerCodec>,
        tx: &mpsc::Sender<Frame<Response>>,
        max_in_flight: usize,
        writer_failed: &CancellationToken,
        caller: &Option<Arc<Peer>>,
    ) -> Stop {
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        loop {
            // Backpressure: read the next frame only once a request slot is free.
            let permit = tokio::select! {
                p = in_flight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return Stop::Shutdown,
                },
                _ = self.shutdown.cancelled() => return Stop::Shutdown,
                _ = writer_failed.cancelled() => return Stop::WriterFailed,
            };
            let next = loop {
                let read = tokio::select! {
                    r = tokio::time::timeout(self.cfg.idle_timeout, reader.next()) => r,
                    _ = self.shutdown.cancelled() => return Stop::Shutdown,
                    _ = writer_failed.cancelled() => return Stop::WriterFailed,
                };
                match read {
                    Ok(next) => break next,
                    // Requests still running (we hold one permit ourselves): not idle.
                    Err(_) if in_flight.available_permits() + 1 < max_in_flight => continue,
                    Err(_) => return Stop::Idle,
                }
            };
            match next {
                None => return Stop::PeerClosed,
                Some(Ok(frame)) => self.dispatch(frame, permit, tx.clone(), caller.clone()),
                Some(Err(CodecError::Io(e))) => {
                    debug!(error = %e, "connection read failed");
                    return Stop::TransportError;
                }
                Some(Err(e)) => {
                    warn!(error = %e, "malformed frame; closing connection");
                    let reply = match e {
                        CodecError::TooLarge {
                            request_id,
                            len,
                            max,
                        } => Frame {
                            request_id,
                            body: Response::Error(DataError::FrameTooLarge { len, max }),
                        },
                        CodecError::Malformed { request_id, reason } => Frame {
                            request_id,
                            body: Response::Error(DataError::BadRequest(reason)),
                        },
                        CodecError::Io(_) => return Stop::TransportError,
                    };
                    let _ = tx.send(reply).await;
                    return Stop::ProtocolError;
                }
            }
        }
    }

    /// Runs one request in its own task; the task holds `permit` until its reply is queued.
    fn dispatch(
        &self,
        frame: Frame<Request>,
        permit: OwnedSemaphorePermit,
        tx: mpsc::Sender<Frame<Response>>,
        caller: Option<Arc<Peer>>,
    ) {
        let handler = self.handler.clone();
        let hard_stop = self.hard_stop.clone();
        let max_frame = self.cfg.max_frame;
        let request_id = frame.request_id;
        let task = async move {
            let _permit = permit;
            let work = AssertUnwindSafe(handle_request(&*handler, frame.body, caller.as_deref()))
                .catch_unwind();
            let body = tokio::select! {
                r = work => match r {
                    Ok(body) => body,
                    Err(_) => {
                        warn!(request_id, "handler panicked");
                        Response::Error(DataError::Internal("request handler panicked".into()))
                    }
                },
                _ = hard_stop.cancelled() => return,
            };
            let body = match body {
                Response::Data(d) if d.len() > max_frame => {
                    warn!(request_id, len = d.len(), "read reply exceeds max_frame");
                    Response::Error(DataError::FrameTooLarge {
                        len: d.len() as u64,
                        max: max_frame as u64,
                    })
                }
                other => other,
            };
            // Fails only if the writer is gone, i.e. the connection is already broken.
            let _ = tx.send(Frame { request_id, body }).await;
        };
        tokio::spawn(task.in_current_span());
    }
}

async fn handle_request<H: Handler>(handler: &H, req: Request, caller: Option<&Peer>) -> Response {
    if let Err(e) = handler.admit(&req, caller) {
        let (handle, version, _) = req.chunk();
        warn!(handle, version, error = %e, "request refused");
        return Response::Error(e);
    }
    match req {
        Request::Append {
            handle,
            version,
            op_id,
            at,
            data,
            ..
        } => {
            debug!(handle, version, op_id, ?at, len = data.len(), "append");
            match handler.append(handle, version, op_id, at, data).await {
                Ok(offset) => Response::Appended { offset },
                Err(e) => {
                    debug!(handle, error = %e, "append failed");
                    Response::Error(e)
                }
            }
        }
        Request::Read {
            handle,
            version,
            offset,
            len,
            ..
        } => {
            debug!(handle, version, offset, len, "read");
            match handler.read(handle, version, offset, len).await {
                Ok(data) => Response::Data(data),
                Err(e) => {
                    debug!(handle, error = %e, "read failed");
                    Response::Error(e)
                }
            }
        }
        Request::Flush {
            handle, version, ..
        } => {
            debug!(handle, version, "flush");
            match handler.flush(handle, version).await {
                Ok(offset) => Response::Appended { offset },
                Err(e) => {
                    debug!(handle, error = %e, "flush failed");
                    Response::Error(e)
                }
            }
        }
    }
}

/// Writes queued replies in batches until every sender is gone; returns whether it ended
/// cleanly (all replies written and the write half shut down).
async fn write_loop(
    wr: ConnWrite,
    mut rx: mpsc::Receiver<Frame<Response>>,
    cfg: Arc<ServerConfig>,
    failed: CancellationToken,
    hard_stop: CancellationToken,
) -> bool {
    let mut writer = FramedWrite::new(wr, ServerCodec::new(cfg.max_frame));
    match write_batches(&mut writer, &mut rx, cfg.write_timeout, &hard_stop).await {
        WriteEnd::Drained => {}
        WriteEnd::Stopped => return false,
        WriteEnd::Failed(e) => {
            debug!(error = %e, "write failed; closing connection");
            failed.cancel();
            return false;
        }
        WriteEnd::TimedOut => {
            warn!(timeout = ?cfg.write_timeout, "write timed out; closing connection");
            failed.cancel();
            return false;
        }
    }
    // `close` flushes and shuts down the write half: the peer sees EOF after our last reply.
    matches!(
        tokio::time::timeout(cfg.write_timeout, writer.close()).await,
        Ok(Ok(()))
    )
}
