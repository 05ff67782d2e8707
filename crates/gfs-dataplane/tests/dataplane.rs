//! End-to-end tests of the data-plane server and client over real TCP sockets on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use gfs_util::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use gfs_dataplane::{
    ChunkRef, ClientCodec, ClientConfig, DataClient, DataError, Frame, HEADER_LEN, Handler, MAGIC,
    Request, Response, ServerConfig, VERSION,
};
use gfs_host::token::{Grant, Rights, TokenKey};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Upper bound for every "wait until" in these tests.
const DEADLINE: Duration = Duration::from_secs(10);
/// The only chunk version the test handler accepts.
const V: u64 = 1;
/// Appends to this handle wait for `MemHandler::gate` before completing.
const SLOW: u64 = 666;

/// In-memory chunks: appends go at the end, reads return slices.
#[derive(Default)]
struct MemHandler {
    chunks: Mutex<HashMap<u64, Vec<u8>>>,
    /// Released by the test to let appends to `SLOW` finish.
    gate: CancellationToken,
    /// Number of appends to `SLOW` that have entered the handler.
    slow_entered: AtomicUsize,
    slow_entered_notify: tokio::sync::Notify,
}

impl MemHandler {
    async fn wait_slow_entered(&self, n: usize) {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.slow_entered_notify.notified();
                if self.slow_entered.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("slow append never reached the handler");
    }
}

/// The key of the test's "master": the handler checks every request's token against it.
fn key() -> TokenKey {
    TokenKey::from_bytes(&[7; gfs_host::token::KEY_LEN]).unwrap()
}

/// `handle` at `version` with a token for appends that runs for an hour.
fn chunk(handle: u64, version: u64) -> ChunkRef {
    token_for(handle, version, Rights::APPEND, now_ms() + 3_600_000)
}

fn token_for(handle: u64, version: u64, rights: Rights, expires_unix_ms: u64) -> ChunkRef {
    let grant = Grant {
        handle,
        version,
        rights,
        expires_unix_ms,
        client: "test".into(),
    };
    ChunkRef::new(handle, version, key().issue(&grant))
}

fn now_ms() -> u64 {
    gfs_util::time::unix_ms(std::time::SystemTime::now())
}

/// The one version the test handler serves.
fn current(version: u64) -> Result<(), DataError> {
    if version == V {
        Ok(())
    } else {
        Err(DataError::StaleVersion {
            have: V,
            got: version,
        })
    }
}

impl Handler for MemHandler {
    fn admit(&self, req: &Request, _caller: Option<&gfs_host::tls::Peer>) -> Result<(), DataError> {
        let need = match req {
            Request::Read { .. } => Rights::READ,
            _ => Rights::APPEND,
        };
        let (handle, version, token) = req.chunk();
        key()
            .check(token, handle, version, need, now_ms())
            .map(drop)
            .map_err(|e| DataError::BadToken(e.to_string()))
    }

    async fn append(
        &self,
        handle: u64,
        version: u64,
        _op_id: u64,
        at: Option<u64>,
        data: Bytes,
    ) -> Result<u64, DataError> {
        {
            current(version)?;
            let offset = {
                let mut chunks = self.chunks.lock();
                let chunk = chunks.entry(handle).or_default();
                let offset = chunk.len() as u64;
                if at.is_some_and(|at| at != offset) {
                    return Err(DataError::OffsetMismatch {
                        expected: at.unwrap_or(0),
                        next: offset,
                    });
                }
                chunk.extend_from_slice(&data);
                offset
            };
            if handle == SLOW {
                self.slow_entered.fetch_add(1, Ordering::SeqCst);
                self.slow_entered_notify.notify_waiters();
                self.gate.cancelled().await;
            } else if let Some(&b) = data.first() {
                // Jitter so that pipelined replies complete out of order.
                tokio::time::sleep(Duration::from_micros(u64::from(b % 8) * 300)).await;
            }
            Ok(offset)
        }
    }

    async fn read(
        &self,
        handle: u64,
        version: u64,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, DataError> {
        {
            current(version)?;
            let chunks = self.chunks.lock();
            let chunk = chunks.get(&handle).ok_or(DataError::NotFound { handle })?;
            let committed = chunk.len() as u64;
            let end = offset.checked_add(u64::from(len));
            match end {
                Some(end) if end <= committed => Ok(Bytes::copy_from_slice(
                    &chunk[offset as usize..end as usize],
                )),
                _ => Err(DataError::OutOfRange { offset, committed }),
            }
        }
    }

    async fn flush(&self, handle: u64, version: u64) -> Result<u64, DataError> {
        current(version)?;
        let chunks = self.chunks.lock();
        let chunk = chunks.get(&handle).ok_or(DataError::NotFound { handle })?;
        Ok(chunk.len() as u64)
    }
}

struct TestServer {
    addr: SocketAddr,
    handler: Arc<MemHandler>,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(cfg: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(MemHandler::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gfs_dataplane::run(
            listener,
            handler.clone(),
            cfg,
            shutdown.clone(),
        ));
        TestServer {
            addr,
            handler,
            shutdown,
            task,
        }
    }

    async fn client(&self) -> DataClient {
        DataClient::connect(&self.addr.to_string(), client_cfg())
            .await
            .unwrap()
    }
}

fn small_cfg() -> ServerConfig {
    ServerConfig {
        max_frame: 4096,
        ..ServerConfig::default()
    }
}

fn client_cfg() -> ClientConfig {
    ClientConfig {
        request_timeout: DEADLINE,
        ..ClientConfig::default()
    }
}

/// Appends and reads back through `client`, proving the server still serves it.
async fn assert_works(client: &DataClient, handle: u64) {
    let data = Bytes::from(format!("still alive {handle}"));
    let off = client
        .append(&chunk(handle, V), 1, data.clone())
        .await
        .unwrap();
    let back = client
        .read(&chunk(handle, V), off, data.len() as u32)
        .await
        .unwrap();
    assert_eq!(back, data);
    let end = client.flush(&chunk(handle, V)).await.unwrap();
    assert!(end >= off + data.len() as u64, "flush answered {end}");
    assert!(matches!(
        client.flush(&chunk(handle, V + 1)).await,
        Err(DataError::StaleVersion { .. })
    ));
}

fn raw_frame(kind: u8, id: u64, body_len: u32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_slice(&MAGIC);
    b.put_u8(VERSION);
    b.put_u8(kind);
    b.put_u64_le(id);
    b.put_u32_le(body_len);
    b.put_slice(body);
    b.to_vec()
}

/// Reads reply frames from a raw socket until EOF (within the deadline).
async fn read_replies_until_eof(stream: TcpStream) -> Vec<Frame<Response>> {
    let mut frames = FramedRead::new(stream, ClientCodec::new(1 << 20));
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(f) = frames.next().await {
            out.push(f.unwrap());
        }
    })
    .await
    .expect("server did not close the connection");
    out
}

#[tokio::test]
async fn pipelined_appends_from_many_tasks_get_distinct_offsets() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    let mut tasks = Vec::new();
    for t in 0..8u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // All 25 of this task's appends are in flight at once.
            let calls = (0..25u8).map(|i| {
                let client = client.clone();
                async move {
                    let len = 1 + (usize::from(t) * 25 + usize::from(i)) % 37;
                    let mut rec = vec![t.wrapping_mul(31).wrapping_add(i); len];
                    rec[len - 1] = t;
                    let data = Bytes::from(rec);
                    let off = client
                        .append(&chunk(1, V), u64::from(i), data.clone())
                        .await
                        .unwrap();
                    (off, data)
                }
            });
            futures::future::join_all(calls).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 200);
    all.sort_by_key(|(off, _)| *off);
    let mut expect_off = 0u64;
    for (off, data) in &all {
        assert_eq!(*off, expect_off, "records overlap or leave a gap");
        expect_off += data.len() as u64;
    }
    // Each reply was matched to its own request: the bytes at its offset are its record.
    for (off, data) in &all {
        let back = client
            .read(&chunk(1, V), *off, data.len() as u32)
            .await
            .unwrap();
        assert_eq!(&back, data);
    }
}

#[tokio::test]
async fn replies_out_of_order_reach_the_right_caller() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .append(&chunk(SLOW, V), 1, Bytes::from_static(b"slow"))
                .await
        })
    };
    server.handler.wait_slow_entered(1).await;
    client
        .append(&chunk(2, V), 1, Bytes::from(vec![0u8; 10]))
        .await
        .unwrap();
    // Issued after the slow one, answered before it (offsets differ: 10 here, 0 for the slow one).
    let fast = client
        .append(&chunk(2, V), 2, Bytes::from_static(b"fast"))
        .await
        .unwrap();
    assert_eq!(fast, 10);
    assert!(!slow.is_finished());
    server.handler.gate.cancel();
    assert_eq!(slow.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn read_returns_exactly_the_stored_bytes() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    let a = Bytes::from_static(b"first record");
    let b = Bytes::from((0..=255u8).cycle().take(100_000).collect::<Vec<_>>());
    assert_eq!(client.append(&chunk(3, V), 1, a.clone()).await.unwrap(), 0);
    assert_eq!(
        client.append(&chunk(3, V), 2, b.clone()).await.unwrap(),
        a.len() as u64
    );
    assert_eq!(
        client.read(&chunk(3, V), 0, a.len() as u32).await.unwrap(),
        a
    );
    assert_eq!(
        client
            .read(&chunk(3, V), a.len() as u64, b.len() as u32)
            .await
            .unwrap(),
        b
    );
    assert_eq!(client.read(&chunk(3, V), 5, 0).await.unwrap(), Bytes::new());
}

#[tokio::test]
async fn append_at_carries_its_offset_and_its_mismatch() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    let five = Bytes::from_static(b"12345");
    assert_eq!(
        client
            .append_at(&chunk(9, V), 1, Some(0), five.clone())
            .await,
        Ok(0)
    );
    assert_eq!(
        client
            .append_at(&chunk(9, V), 2, Some(3), five.clone())
            .await,
        Err(DataError::OffsetMismatch {
            expected: 3,
            next: 5
        })
    );
    assert_eq!(
        client.append_at(&chunk(9, V), 3, Some(5), five).await,
        Ok(5)
    );
}

#[tokio::test]
async fn typed_errors_arrive_typed() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    client
        .append(&chunk(4, V), 1, Bytes::from_static(b"1234"))
        .await
        .unwrap();
    assert_eq!(
        client.read(&chunk(999, V), 0, 1).await,
        Err(DataError::NotFound { handle: 999 })
    );
    assert_eq!(
        client.read(&chunk(4, V), 2, 10).await,
        Err(DataError::OutOfRange {
            offset: 2,
            committed: 4
        })
    );
    assert_eq!(
        client.append(&chunk(4, 7), 1, Bytes::new()).await,
        Err(DataError::StaleVersion { have: V, got: 7 })
    );
    // The connection survives error replies.
    assert_works(&client, 4).await;
}

#[tokio::test]
async fn oversized_request_fails_locally() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = DataClient::connect(
        &server.addr.to_string(),
        ClientConfig {
            max_frame: 400,
            ..client_cfg()
        },
    )
    .await
    .unwrap();
    // One byte over: the fixed fields (26 bytes), the token, and the record.
    let c = chunk(1, V);
    let record = 400 - 26 - c.token.len() + 1;
    assert_eq!(
        client.append(&c, 1, Bytes::from(vec![0; record])).await,
        Err(DataError::FrameTooLarge { len: 401, max: 400 })
    );
    assert!(server.handler.chunks.lock().is_empty(), "request was sent");
    assert_works(&client, 1).await;
}

#[tokio::test]
async fn request_timeout_returns_timeout_and_connection_survives() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = DataClient::connect(
        &server.addr.to_string(),
        ClientConfig {
            request_timeout: Duration::from_millis(200),
            ..client_cfg()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .append(&chunk(SLOW, V), 1, Bytes::from_static(b"x"))
            .await,
        Err(DataError::Timeout)
    );
    // The late reply is dropped as unknown; other calls are unaffected.
    server.handler.gate.cancel();
    assert_works(&client, 5).await;
}

/// Every request without a token the chunk's master issued for it, at its version, with the
/// right it needs, unexpired, is refused before the handler does anything; the connection
/// goes on serving requests with good tokens.
#[tokio::test]
async fn requests_without_a_good_token_are_refused_before_any_work() {
    let server = TestServer::start(small_cfg()).await;
    let c = server.client().await;
    let data = Bytes::from_static(b"guarded");
    let refused = |r: Result<u64, DataError>| {
        assert!(matches!(r, Err(DataError::BadToken(_))), "{r:?}");
    };
    refused(c.append(&ChunkRef::untokened(20, V), 1, data.clone()).await);
    let mut forged = chunk(20, V);
    let mut t = forged.token.to_vec();
    t[3] ^= 1;
    forged.token = t.into();
    refused(c.append(&forged, 1, data.clone()).await);
    let other_key = TokenKey::generate().issue(&Grant {
        handle: 20,
        version: V,
        rights: Rights::APPEND,
        expires_unix_ms: u64::MAX,
        client: "mallory".into(),
    });
    refused(
        c.append(&ChunkRef::new(20, V, other_key), 1, data.clone())
            .await,
    );
    let mut wrong_chunk = chunk(21, V);
    wrong_chunk.handle = 20;
    refused(c.append(&wrong_chunk, 1, data.clone()).await);
    refused(
        c.append(&token_for(20, V, Rights::READ, u64::MAX), 1, data.clone())
            .await,
    );
    refused(
        c.append(
            &token_for(20, V, Rights::APPEND, now_ms() - 1),
            1,
            data.clone(),
        )
        .await,
    );
    refused(c.flush(&token_for(20, V, Rights::READ, u64::MAX)).await);
    assert!(matches!(
        c.read(&token_for(20, V, Rights::READ, now_ms() - 1), 0, 1)
            .await,
        Err(DataError::BadToken(_))
    ));
    // Nothing reached the chunk; a good token works on the same connection.
    assert!(server.handler.chunks.lock().get(&20).is_none());
    assert_eq!(c.append(&chunk(20, V), 1, data.clone()).await, Ok(0));
    assert_eq!(
        c.read(&token_for(20, V, Rights::READ, u64::MAX), 0, 7)
            .await,
        Ok(data)
    );
}

#[tokio::test]
async fn oversized_frame_gets_frame_too_large_then_close() {
    let server = TestServer::start(small_cfg()).await;
    let good = server.client().await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let mut bytes = raw_frame(0x01, 4242, 1_000_000, &[]);
    bytes.extend_from_slice(&[0u8; 5000]);
    raw.write_all(&bytes).await.unwrap();
    let replies = read_replies_until_eof(raw).await;
    assert_eq!(
        replies,
        vec![Frame {
            request_id: 4242,
            body: Response::Error(DataError::FrameTooLarge {
                len: 1_000_000,
                max: 4096
            })
        }]
    );
    assert_works(&good, 10).await;
    assert_works(&server.client().await, 11).await;
}

#[tokio::test]
async fn garbage_gets_bad_request_then_close() {
    let server = TestServer::start(small_cfg()).await;
    let good = server.client().await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: nope\r\n\r\n")
        .await
        .unwrap();
    let replies = read_replies_until_eof(raw).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].request_id, 0);
    assert!(
        matches!(replies[0].body, Response::Error(DataError::BadRequest(_))),
        "{replies:?}"
    );
    assert_works(&good, 12).await;
}

#[tokio::test]
async fn unknown_kind_and_short_body_get_bad_request_with_request_id() {
    let server = TestServer::start(small_cfg()).await;
    for bytes in [
        raw_frame(0x7e, 55, 0, &[]),
        raw_frame(0x02, 55, 4, &[1, 2, 3, 4]),
    ] {
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        raw.write_all(&bytes).await.unwrap();
        let replies = read_replies_until_eof(raw).await;
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].request_id, 55);
        assert!(matches!(
            replies[0].body,
            Response::Error(DataError::BadRequest(_))
        ));
    }
    assert_works(&server.client().await, 13).await;
}

#[tokio::test]
async fn valid_requests_before_garbage_are_still_answered() {
    let server = TestServer::start(small_cfg()).await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let mut body = BytesMut::new();
    body.put_u64_le(14);
    body.put_u64_le(V);
    body.put_u64_le(1);
    let token = chunk(14, V).token;
    body.put_u16_le(token.len() as u16);
    body.put_slice(&token);
    body.put_slice(b"rec");
    let mut bytes = raw_frame(0x01, 9, body.len() as u32, &body);
    bytes.extend_from_slice(b"garbage garbage!");
    raw.write_all(&bytes).await.unwrap();
    let mut replies = read_replies_until_eof(raw).await;
    replies.sort_by_key(|f| f.request_id);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(matches!(
        replies[0].body,
        Response::Error(DataError::BadRequest(_))
    ));
    assert_eq!(
        replies[1],
        Frame {
            request_id: 9,
            body: Response::Appended { offset: 0 }
        }
    );
}

#[tokio::test]
async fn frame_cut_off_mid_body_does_not_hurt_the_server() {
    let server = TestServer::start(small_cfg()).await;
    let good = server.client().await;
    {
        let mut raw = TcpStream::connect(server.addr).await.unwrap();
        let mut bytes = raw_frame(0x01, 1, 100, &[]);
        bytes.extend_from_slice(&[9u8; 10]);
        raw.write_all(&bytes).await.unwrap();
        raw.shutdown().await.unwrap();
        // The server gives up on the connection without replying.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(DEADLINE, raw.read(&mut buf))
            .await
            .expect("server kept the cut-off connection open")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert_works(&good, 15).await;
    assert_works(&server.client().await, 16).await;
}

#[tokio::test]
async fn connection_cap_refuses_then_admits_after_a_close() {
    let server = TestServer::start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let c1 = server.client().await;
    let c2 = server.client().await;
    // A round trip each proves both hold a connection slot.
    assert_works(&c1, 20).await;
    assert_works(&c2, 21).await;

    let raw = TcpStream::connect(server.addr).await.unwrap();
    let replies = read_replies_until_eof(raw).await;
    assert_eq!(
        replies,
        vec![Frame {
            request_id: 0,
            body: Response::Error(DataError::Unavailable("too many connections".into()))
        }]
    );
    // The client surfaces the refusal as a typed error.
    let c3 = server.client().await;
    assert_eq!(
        c3.read(&chunk(20, V), 0, 1).await,
        Err(DataError::Unavailable("too many connections".into()))
    );

    drop(c1);
    tokio::time::timeout(DEADLINE, async {
        loop {
            let c = server.client().await;
            match c.read(&chunk(20, V), 0, 1).await {
                Ok(_) => break,
                Err(DataError::Unavailable(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    })
    .await
    .expect("no connection slot freed after a client closed");
    assert_works(&c2, 22).await;
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("idle connection was not closed")
        .unwrap();
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn busy_connection_is_not_idle() {
    let server = TestServer::start(ServerConfig {
        idle_timeout: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await;
    let client = server.client().await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .append(&chunk(SLOW, V), 1, Bytes::from_static(b"s"))
                .await
        })
    };
    server.handler.wait_slow_entered(1).await;
    // A second, truly idle connection being closed proves an idle timeout has elapsed for the
    // busy one too (it is older).
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("idle connection was not closed")
        .unwrap();
    assert_eq!(n, 0);
    assert!(!slow.is_finished());
    // The busy connection still reads new requests.
    assert_works(&client, 30).await;
    server.handler.gate.cancel();
    assert_eq!(slow.await.unwrap(), Ok(0));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_run_returns() {
    let server = TestServer::start(ServerConfig::default()).await;
    let client = server.client().await;
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .append(&chunk(SLOW, V), 1, Bytes::from_static(b"last"))
                .await
        })
    };
    server.handler.wait_slow_entered(1).await;
    server.shutdown.cancel();
    // New connections are no longer served once accepting stops.
    tokio::time::timeout(DEADLINE, async {
        loop {
            match DataClient::connect(&server.addr.to_string(), client_cfg()).await {
                Err(_) => break,
                Ok(c) => {
                    if c.read(&chunk(1, V), 0, 0).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .await
    .expect("server kept serving new connections after shutdown");
    assert!(
        !server.task.is_finished(),
        "run returned with a request in flight"
    );
    server.handler.gate.cancel();
    assert_eq!(in_flight.await.unwrap(), Ok(0));
    let res = tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("run did not return after shutdown");
    res.unwrap().unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
    assert!(client.read(&chunk(SLOW, V), 0, 4).await.is_err());
}

#[tokio::test]
async fn shutdown_grace_period_is_bounded_by_write_timeout() {
    let server = TestServer::start(ServerConfig {
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let client = server.client().await;
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .append(&chunk(SLOW, V), 1, Bytes::from_static(b"x"))
                .await
        })
    };
    server.handler.wait_slow_entered(1).await;
    server.shutdown.cancel();
    let res = tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("run did not return after the grace period");
    res.unwrap().unwrap();
    assert!(stuck.await.unwrap().is_err());
}

#[tokio::test]
async fn header_len_constant_matches_wire() {
    assert_eq!(HEADER_LEN, raw_frame(0x02, 0, 0, &[]).len());
}
