//! The status port of a process with certificates: plaintext probes keep
//! working, Prometheus can scrape over HTTPS on the same port, and with
//! `metrics_tls` a plaintext scrape is refused.

use std::sync::Arc;

use tessera_common::status::{self, Readiness};
use tessera_security::certs::{self, CertsDir};
use tessera_security::identity::Kind;
use tessera_security::tls::{Connector, Material};
use tessera_security::{Security, TlsSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::Service;

/// `GET path` over plaintext: (status code, body).
async fn plain(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(stream, addr, path).await
}

/// `GET path` over TLS, checking the server against `ca.crt` in `dir`.
async fn tls(dir: &std::path::Path, addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let material: Arc<Material> = Material::load_client(dir, None).unwrap();
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let io = Connector::new(material).call(uri).await.unwrap();
    exchange(io.into_inner(), addr, path).await
}

async fn exchange<S>(mut s: S, addr: std::net::SocketAddr, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    // A TLS peer may end without close_notify; what arrived is enough.
    let _ = s.read_to_string(&mut response).await;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn start(dir: &std::path::Path, metrics_tls: bool) -> std::net::SocketAddr {
    let settings = TlsSettings {
        certs_dir: Some(dir.to_path_buf()),
        metrics_tls,
        ..TlsSettings::default()
    };
    let security = Security::from_settings(&settings, Kind::Node).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::new("starting");
    readiness.set_ready();
    // No recorder in this test: /metrics answers 404 "not enabled" when
    // it is allowed to answer at all.
    tokio::spawn(status::serve(
        listener,
        security,
        None,
        readiness,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn probes_stay_plaintext_and_metrics_tls_refuses_plaintext_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    certs::create_local_bundle(&CertsDir::new(dir.path()), 30).unwrap();

    let open = start(dir.path(), false).await;
    assert_eq!(plain(open, "/health").await.0, 200);
    assert_eq!(plain(open, "/metrics").await.0, 404, "served, not enabled");
    assert_eq!(tls(dir.path(), open, "/ready").await.0, 200);
    assert_eq!(tls(dir.path(), open, "/metrics").await.0, 404);

    let closed = start(dir.path(), true).await;
    assert_eq!(plain(closed, "/health").await.0, 200);
    assert_eq!(plain(closed, "/ready").await, (200, "ready\n".into()));
    let (code, body) = plain(closed, "/metrics").await;
    assert_eq!(code, 403);
    assert!(body.contains("over TLS only"), "{body}");
    assert_eq!(tls(dir.path(), closed, "/metrics").await.0, 404);
    assert_eq!(tls(dir.path(), closed, "/health").await.0, 200);
}

#[test]
fn metrics_tls_needs_certificates() {
    let settings = TlsSettings {
        insecure: true,
        metrics_tls: true,
        ..TlsSettings::default()
    };
    let err = Security::from_settings(&settings, Kind::Node).unwrap_err();
    assert!(err.to_string().contains("metrics_tls needs TLS"), "{err}");
}
