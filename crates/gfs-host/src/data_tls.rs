//! TLS on the data plane: optional, with the certificates of the gRPC planes.
//!
//! The data plane carries the bytes, so it stays plaintext unless asked: every request still
//! carries a chunk token the master signed ([`crate::token`]), which is what keeps an
//! outsider from reading or writing a chunk; TLS adds privacy and ties each token to the
//! certificate of the connection it arrives on. A chunkserver with a certificate takes TLS
//! on its data port beside plaintext, telling them apart by the first byte (a TLS handshake
//! record opens with 0x16, a data-plane frame with `G`); with `[tls] data_plane = true` it
//! takes TLS only and answers a plaintext client with an error saying so. A client whose
//! identity says [`Tls::data_plane`](crate::tls::Tls::data_plane) connects over TLS,
//! checking the server's certificate against the CA and the host it dialled (as gRPC does)
//! and showing its own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::{Conn, Io};
use crate::tls::{Peer, TlsError, peer_of};

/// The first byte of a TLS handshake record.
const HANDSHAKE: u8 = 0x16;

/// A process's data-plane TLS: the server and client sides of its identity.
#[derive(Clone)]
pub struct DataTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

/// A data-plane connection once its first byte told which kind it is.
pub enum Accepted {
    /// A TLS connection, and who its client certificate names.
    Tls(Conn, Peer),
    /// A plaintext one.
    Plain(Conn),
    /// A plaintext one where only TLS is taken: to be told so, then closed.
    PlainRefused(Conn),
    /// One that sent nothing within the wait (to be closed, as an idle one is).
    Silent,
}

fn bad(what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Bad {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

impl DataTls {
    /// From the PEM text of the CA's certificate, this process's certificate and its key.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<DataTls, TlsError> {
        // ring, as tonic's `tls-ring` uses for the gRPC planes (aws-lc, rustls's post-quantum
        // choice, needs cmake to build); rustls 0.23.48 marks it deprecated for that alone.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots
                .add(c.map_err(|e| bad("CA certificate", e))?)
                .map_err(|e| bad("CA certificate", e))?;
        }
        let roots = Arc::new(roots);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("certificate", e))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad("key", e))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| bad("client verifier", e))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad("certificate", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad("TLS versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("certificate", e))?;
        Ok(DataTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Reads what kind of connection `conn` is from its first byte (waiting up to `idle` for
    /// it), and for TLS, completes the handshake within `handshake` (the client must show a
    /// certificate of the cluster's CA that names a role). `required`: plaintext is refused.
    pub async fn accept(
        &self,
        conn: Conn,
        required: bool,
        idle: Duration,
        handshake: Duration,
    ) -> io::Result<Accepted> {
        let (peer_addr, local_addr) = (conn.peer_addr()?, conn.local_addr()?);
        let timed_out = |what: &str, d: Duration| {
            io::Error::new(io::ErrorKind::TimedOut, format!("{what} within {d:?}"))
        };
        let Ok(sniffed) = tokio::time::timeout(idle, first_byte(conn)).await else {
            return Ok(Accepted::Silent);
        };
        let (first, conn) = sniffed?;
        if first != HANDSHAKE {
            return Ok(if required {
                Accepted::PlainRefused(conn)
            } else {
                Accepted::Plain(conn)
            });
        }
        let stream = tokio::time::timeout(handshake, self.acceptor.accept(conn))
            .await
            .map_err(|_| timed_out("no TLS handshake", handshake))??;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| peer_of(der))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "the client's certificate names no gfs role",
                )
            })?;
        let io = TlsIo {
            inner: stream,
            peer: peer_addr,
            local: local_addr,
        };
        Ok(Accepted::Tls(Conn::Other(Box::new(io)), peer))
    }

    /// Runs the client side of the handshake on `conn`, to the server at `addr` (`host:port`,
    /// whose host its certificate must name).
    pub async fn connect(&self, addr: &str, conn: Conn) -> io::Result<Conn> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let (peer, local) = (conn.peer_addr()?, conn.local_addr()?);
        let stream = self.connector.connect(name, conn).await?;
        Ok(Conn::Other(Box::new(TlsIo {
            inner: stream,
            peer,
            local,
        })))
    }
}

/// The first byte `conn` will yield, and `conn` still yielding it: peeked on TCP, read and
/// put back in front of anything else.
async fn first_byte(conn: Conn) -> io::Result<(u8, Conn)> {
    let mut b = [0u8; 1];
    match conn {
        Conn::Tcp(s) => {
            if s.peek(&mut b).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok((b[0], Conn::Tcp(s)))
        }
        Conn::Other(mut s) => {
            s.read_exact(&mut b).await?;
            Ok((
                b[0],
                Conn::Other(Box::new(Rewound {
                    first: Some(b[0]),
                    inner: s,
                })),
            ))
        }
    }
}

/// A stream with one byte read off it put back.
struct Rewound {
    first: Option<u8>,
    inner: Box<dyn Io>,
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if buf.remaining() > 0
            && let Some(b) = me.first.take()
        {
            buf.put_slice(&[b]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Io for Rewound {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TLS stream, with the addresses of the connection under it.
struct TlsIo<S> {
    inner: S,
    peer: SocketAddr,
    local: SocketAddr,
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for TlsIo<S> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tls::{Authority, Role, Tls};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// One end of an in-memory stream, as a simulated network's connection.
    struct Pipe(DuplexStream);

    impl AsyncRead for Pipe {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }

    impl Io for Pipe {
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            Ok("10.0.0.2:1".parse().unwrap())
        }

        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok("10.0.0.1:8080".parse().unwrap())
        }
    }

    fn pipe() -> (Conn, Conn) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (
            Conn::Other(Box::new(Pipe(a))),
            Conn::Other(Box::new(Pipe(b))),
        )
    }

    fn identity(ca: &Authority, role: Role, name: &str) -> Tls {
        let (cert, key) = ca.issue(role, name, &["cs1".to_string()]).unwrap();
        Tls::from_pem(ca.cert_pem(), &cert, &key).unwrap()
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn tls_and_plaintext_are_told_apart_by_the_first_byte_and_carry_bytes() {
        let ca = Authority::generate("test CA").unwrap();
        let server = identity(&ca, Role::Chunkserver, "cs1");
        let client = identity(&ca, Role::Client, "alice");

        // TLS: the handshake completes both ways and names the client.
        let (c, s) = pipe();
        let (connected, accepted) = tokio::join!(
            client.data.connect("cs1:8080", c),
            server.data.accept(s, true, T, T)
        );
        let (mut c, accepted) = (connected.unwrap(), accepted.unwrap());
        let Accepted::Tls(mut s, peer) = accepted else {
            panic!("not taken as TLS");
        };
        assert_eq!((peer.role, peer.name.as_str()), (Role::Client, "alice"));
        assert_eq!(s.peer_addr().unwrap().to_string(), "10.0.0.2:1");
        c.write_all(b"GF over TLS").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0u8; 11];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GF over TLS");

        // Plaintext: kept whole (the byte read to tell is given back), or refused when only
        // TLS is taken.
        for required in [false, true] {
            let (mut c, s) = pipe();
            c.write_all(b"GF plain").await.unwrap();
            match (
                server.data.accept(s, required, T, T).await.unwrap(),
                required,
            ) {
                (Accepted::Plain(mut s), false) => {
                    let mut got = [0u8; 8];
                    s.read_exact(&mut got).await.unwrap();
                    assert_eq!(&got, b"GF plain");
                }
                (Accepted::PlainRefused(_), true) => {}
                _ => panic!("plaintext with required = {required}"),
            }
        }

        // A server whose certificate does not name the host dialled is not trusted.
        let (c, s) = pipe();
        let (connected, _) = tokio::join!(
            client.data.connect("elsewhere:8080", c),
            server.data.accept(s, true, T, T)
        );
        assert!(
            connected.is_err(),
            "a certificate for cs1 taken for elsewhere"
        );

        // A connection that says nothing is not held past the wait for its first byte.
        let (_c, s) = pipe();
        let r = server
            .data
            .accept(s, false, Duration::from_millis(50), T)
            .await;
        assert!(matches!(r, Ok(Accepted::Silent)));
    }
}
