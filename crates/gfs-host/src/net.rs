//! The network seam: listeners, byte streams and gRPC channels of the operating system (tokio's
//! TCP, tonic's own connector) or of a simulator ([`Network`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::tls::{MaybeTls, Tls};

/// Pause after a failed accept (out of file descriptors and the like) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A byte stream of a simulated network.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The address of the other end.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// The address of this end.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A listening socket of a simulated network.
pub trait Accept: Send + 'static {
    /// The next connection and its peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Io>, SocketAddr)>>;
    /// The address listened on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A simulated network, as a simulator implements it.
pub trait Network: Send + Sync + 'static {
    /// Listens on `addr` (`host:port`).
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Accept>>>;
    /// Connects to `addr` (`host:port`).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
}

/// The network a server or client uses: its sockets, and the TLS identity its gRPC channels
/// and servers use (none: plain HTTP/2, every plane open; see [`crate::tls`]).
#[derive(Clone, Default)]
pub struct Net {
    transport: Transport,
    tls: MaybeTls,
}

/// Whose sockets.
#[derive(Clone, Default)]
enum Transport {
    /// The operating system's TCP.
    #[default]
    Os,
    /// A simulator's.
    Sim(Arc<dyn Network>),
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            Transport::Os => "Net::Os",
            Transport::Sim(_) => "Net::Sim",
        };
        match &self.tls {
            Some(tls) => write!(f, "{t} with {tls:?}"),
            None => f.write_str(t),
        }
    }
}

/// HTTP/2 pings on every gRPC connection, idle or not, this often...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ...and a connection whose ping goes unanswered this long is closed (and the channel
/// connects again on its next call).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gRPC endpoint of `addr` (`host:port`), plain HTTP/2, with keepalive pings: a connection
/// that silently stopped carrying bytes (a peer that lost its state, a middlebox that dropped
/// the flow) is replaced within [`KEEPALIVE_INTERVAL`] + [`KEEPALIVE_TIMEOUT`], instead of
/// failing every call on it by timeout until TCP gives up, many minutes later.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(with_keepalive(Endpoint::from_shared(format!(
        "http://{addr}"
    ))?))
}

fn with_keepalive(e: Endpoint) -> Endpoint {
    e.http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

impl Net {
    /// The operating system's network, without TLS.
    pub fn os() -> Net {
        Net::default()
    }

    /// A simulator's network, without TLS.
    pub fn sim(network: Arc<dyn Network>) -> Net {
        Net {
            transport: Transport::Sim(network),
            tls: None,
        }
    }

    /// This network with gRPC over mutual TLS as `tls`.
    pub fn with_tls(mut self, tls: Arc<Tls>) -> Net {
        self.tls = Some(tls);
        self
    }

    /// Whether a simulator's.
    pub fn is_simulated(&self) -> bool {
        matches!(self.transport, Transport::Sim(_))
    }

    /// The TLS identity of its gRPC channels and servers, if any.
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The gRPC endpoint of `addr` (`host:port`): [`endpoint`]'s, over mutual TLS when this
    /// network has an identity.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        match &self.tls {
            None => endpoint(addr),
            Some(tls) => with_keepalive(Endpoint::from_shared(format!("https://{addr}"))?)
                .tls_config(tls.client_config()),
        }
    }

    /// A gRPC server builder: over mutual TLS when this network has an identity, with
    /// [`crate::tls::Authorize`] checking each caller's role (and passing every call without
    /// TLS).
    pub fn grpc_server(
        &self,
    ) -> Result<
        tonic::transport::Server<
            tower::layer::util::Stack<crate::tls::Authorize, tower::layer::util::Identity>,
        >,
        tonic::transport::Error,
    > {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        Ok(builder.layer(crate::tls::Authorize::new(self.tls.is_some())))
    }

    /// Listens on `addr` (`host:port`).
    pub async fn bind(&self, addr: &str) -> io::Result<Listener> {
        match &self.transport {
            Transport::Os => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            Transport::Sim(n) => Ok(Listener::Other(n.bind(addr.to_string()).await?)),
        }
    }

    /// Listens on `port` of `host` (a name, an IPv4 or a bare IPv6 address).
    pub async fn bind_port(&self, host: &str, port: u16) -> io::Result<Listener> {
        match &self.transport {
            Transport::Os => Ok(Listener::Tcp(TcpListener::bind((host, port)).await?)),
            Transport::Sim(n) => Ok(Listener::Other(n.bind(format!("{host}:{port}")).await?)),
        }
    }

    /// Connects to `addr` (`host:port`), with Nagle's algorithm off.
    pub async fn connect(&self, addr: &str) -> io::Result<Conn> {
        match &self.transport {
            Transport::Os => {
                let s = TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s))
            }
            Transport::Sim(n) => Ok(Conn::Other(n.connect(addr.to_string()).await?)),
        }
    }

    /// Connects to the data plane at `addr` (`host:port`): over TLS when this network's
    /// identity says [`Tls::data_plane`], else as [`Net::connect`].
    pub async fn connect_data(&self, addr: &str) -> io::Result<Conn> {
        let conn = self.connect(addr).await?;
        match &self.tls {
            Some(tls) if tls.data_plane => tls.data.connect(addr, conn).await,
            _ => Ok(conn),
        }
    }

    /// A channel to `endpoint` that connects on first use (and again after a failure).
    pub fn channel(&self, endpoint: &Endpoint) -> Channel {
        match &self.transport {
            Transport::Os => endpoint.connect_lazy(),
            Transport::Sim(n) => endpoint.connect_with_connector_lazy(connector(Arc::clone(n))),
        }
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect_channel(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Channel, tonic::transport::Error> {
        match &self.transport {
            Transport::Os => endpoint.connect().await,
            Transport::Sim(n) => {
                endpoint
                    .connect_with_connector(connector(Arc::clone(n)))
                    .await
            }
        }
    }
}

type Connecting = BoxFuture<'static, io::Result<TokioIo<Conn>>>;

/// tonic's connector over a simulated network.
fn connector(
    net: Arc<dyn Network>,
) -> impl tower::Service<Uri, Response = TokioIo<Conn>, Error = io::Error, Future = Connecting>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let net = Arc::clone(&net);
        Box::pin(async move {
            let addr = uri
                .authority()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in {uri}"))?
                .to_string();
            Ok(TokioIo::new(Conn::Other(net.connect(addr).await?)))
        }) as Connecting
    })
}

/// A listening socket.
pub enum Listener {
    /// The operating system's.
    Tcp(TcpListener),
    /// A simulator's.
    Other(Box<dyn Accept>),
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listener({:?})", self.local_addr().ok())
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl Listener {
    /// The next connection (Nagle's algorithm off) and its peer's address.
    pub async fn accept(&mut self) -> io::Result<(Conn, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), peer))
            }
            Listener::Other(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Conn::Other(s), peer))
            }
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Other(l) => l.local_addr(),
        }
    }

    /// The connections, for tonic's `serve_with_incoming*`; pauses after a failed accept.
    pub fn incoming(self) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let next = l.accept().await.map(|(c, _)| c);
            if let Err(e) = &next {
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Some((next, l))
        })
    }
}

/// A connected byte stream.
pub enum Conn {
    /// The operating system's TCP.
    Tcp(TcpStream),
    /// A simulator's.
    Other(Box<dyn Io>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Conn(peer {:?})", self.peer_addr().ok())
    }
}

impl From<TcpStream> for Conn {
    fn from(s: TcpStream) -> Conn {
        Conn::Tcp(s)
    }
}

impl Conn {
    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Tcp(s) => s.peer_addr(),
            Conn::Other(s) => s.peer_addr(),
        }
    }

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Conn::Tcp(s) => s.local_addr(),
            Conn::Other(s) => s.local_addr(),
        }
    }

    /// Splits into halves that a reader task and a writer task own (TCP's own halves, without
    /// a lock, on the operating system's network).
    pub fn into_split(self) -> (ConnRead, ConnWrite) {
        match self {
            Conn::Tcp(s) => {
                let (r, w) = s.into_split();
                (ConnRead::Tcp(r), ConnWrite::Tcp(w))
            }
            Conn::Other(s) => {
                let (r, w) = tokio::io::split(s);
                (ConnRead::Other(r), ConnWrite::Other(w))
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}

/// Forwards the tokio IO traits to the variant inside.
macro_rules! forward_io {
    ($ty:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Other(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ident, write) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Other(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $ty::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Tcp(s) => s.is_write_vectored(),
                    $ty::Other(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_flush(cx),
                    $ty::Other(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Other(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_io!(Conn);
forward_io!(Conn, write);
forward_io!(ConnRead);
forward_io!(ConnWrite, write);

/// The reading half of a [`Conn`].
pub enum ConnRead {
    /// TCP's own.
    Tcp(OwnedReadHalf),
    /// A simulated stream's.
    Other(tokio::io::ReadHalf<Box<dyn Io>>),
}

/// The writing half of a [`Conn`].
pub enum ConnWrite {
    /// TCP's own.
    Tcp(OwnedWriteHalf),
    /// A simulated stream's.
    Other(tokio::io::WriteHalf<Box<dyn Io>>),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_os_network_carries_bytes_both_ways_over_split_halves() {
        let net = Net::os();
        let mut l = net.bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            let (mut r, mut w) = c.into_split();
            let mut buf = [0u8; 5];
            r.read_exact(&mut buf).await.unwrap();
            w.write_all(&buf).await.unwrap();
        });
        let mut c = net.connect(&addr).await.unwrap();
        assert_eq!(c.peer_addr().unwrap().to_string(), addr);
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_bad_address_is_an_error_not_a_panic() {
        assert!(Net::os().bind("no-such-host.invalid:1").await.is_err());
        assert!(Net::os().connect("127.0.0.1:1").await.is_err());
        assert!(endpoint("bad host:1").is_err());
    }
}
