//! Dialing over TLS: a connector for tonic's `Endpoint` that checks the
//! server's certificate against the cluster's CA and the address dialed,
//! and presents this process's certificate, both current at the moment of
//! the handshake.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::Material;

/// A tonic connector (`Endpoint::connect_with_connector`) that speaks TLS.
/// A failure here happens before any request is written, so tonic reports
/// it as a connect error: callers know the request was not sent.
#[derive(Clone, Debug)]
pub struct Connector {
    material: Arc<Material>,
}

impl Connector {
    pub fn new(material: Arc<Material>) -> Self {
        Connector { material }
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.material.current().client.clone();
        Box::pin(async move {
            let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let name =
                ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS with {host}:{port}: {e}")))?;
            Ok(TokioIo::new(tls))
        })
    }
}
