//! Accepting connections: the allow-list, the TLS handshake and the
//! identity of the peer, before gRPC sees a byte.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::{Material, Networks};
use crate::certs;
use crate::identity::Identity;

/// How long a peer may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Metric: connections closed before any RPC, by reason (network,
/// handshake).
pub const REFUSED_CONNECTIONS: &str = "tessera_tls_refused_connections_total";

/// Who is at the other end of a connection; tonic hands it to every
/// request of the connection (`request.extensions().get::<Peer>()`).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The identity of the certificate the peer presented, if it presented
    /// one (already checked against the CA by the handshake). Shared: tonic
    /// clones the `Peer` into every request of the connection.
    pub identity: Option<Arc<Identity>>,
    /// The peer presented a certificate the CA signed that carries no
    /// tessera identity.
    pub unnamed_certificate: bool,
}

/// An accepted connection, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream, Peer),
    Tls(Box<TlsStream<TcpStream>>, Peer),
}

/// The stream of connections a gRPC server serves
/// (`serve_with_incoming_shutdown`).
pub type Incoming = ReceiverStream<io::Result<Conn>>;

/// Accepts from `listener`: closes connections from outside `networks`,
/// then hands plaintext connections on at once, or TLS ones once their
/// handshake (in its own task, under [`HANDSHAKE_TIMEOUT`]) succeeded.
/// The accept loop ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    material: Option<Arc<Material>>,
    networks: Networks,
) -> Incoming {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !networks.allows(remote.ip()) {
                metrics::counter!(REFUSED_CONNECTIONS, "reason" => "network").increment(1);
                tracing::debug!(%remote, "connection from outside allowed_networks closed");
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let Some(material) = &material else {
                let peer = Peer {
                    remote: Some(remote),
                    ..Peer::default()
                };
                if tx.send(Ok(Conn::Plain(tcp, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let Some(config) = material.current().server.clone() else {
                tracing::error!("no server certificate loaded; connection closed");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(conn) = handshake(config, tcp, remote).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The TLS handshake of an accepted connection, under
/// [`HANDSHAKE_TIMEOUT`]; `None` (counted and logged) when it fails.
async fn handshake(
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<Conn> {
    let acceptor = TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics::counter!(REFUSED_CONNECTIONS, "reason" => "handshake").increment(1);
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            metrics::counter!(REFUSED_CONNECTIONS, "reason" => "handshake").increment(1);
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let identity = leaf.as_deref().and_then(certs::identity_of).map(Arc::new);
    let peer = Peer {
        remote: Some(remote),
        tls: true,
        unnamed_certificate: leaf.is_some() && identity.is_none(),
        identity,
    };
    Some(Conn::Tls(Box::new(tls), peer))
}

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts the connections of an HTTP status port: each one is TLS if its
/// first byte starts a TLS handshake and the process has certificates
/// (`material`), else plaintext — so probes keep speaking plain HTTP
/// while Prometheus may scrape over HTTPS on the same port. The accept
/// loop ends when the returned stream is dropped.
pub fn status_incoming(listener: TcpListener, material: Option<Arc<Material>>) -> Incoming {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let tx = tx.clone();
            let material = material.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await
                {
                    Ok(Ok(1)) => first[0] == TLS_HANDSHAKE_RECORD,
                    // Closed, failed or silent: nothing to serve.
                    _ => return,
                };
                let config = material
                    .filter(|_| tls)
                    .and_then(|m| m.current().server.clone());
                let conn = match config {
                    Some(config) => handshake(config, tcp, remote).await,
                    None => Some(Conn::Plain(
                        tcp,
                        Peer {
                            remote: Some(remote),
                            ..Peer::default()
                        },
                    )),
                };
                if let Some(conn) = conn {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}
