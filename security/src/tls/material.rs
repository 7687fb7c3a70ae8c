//! The certificates a process uses, loaded into rustls configurations and
//! re-read without a restart.
//!
//! Invariants: a [`Material`] always holds a complete, consistent set (CA,
//! certificate and key that match); a reload that fails for any reason
//! (a file missing, half-written, a key that does not match) keeps the
//! previous set and is logged and counted. Handshakes read the current set
//! when they start, so a reload never disturbs a connection in progress.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::certs::{self, CertsDir};
use crate::identity::{Identity, Kind};
use crate::{Error, Result};

/// How often the files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// HTTP/2 is the only protocol served and dialed.
const ALPN_H2: &[u8] = b"h2";

/// The files one process loads.
#[derive(Clone, Debug)]
struct Files {
    ca: PathBuf,
    /// Certificate and key; `None` for a client that presents none.
    own: Option<(PathBuf, PathBuf)>,
}

impl Files {
    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.ca.as_path()];
        if let Some((c, k)) = &self.own {
            v.push(c);
            v.push(k);
        }
        v
    }

    /// What identifies the files' contents for change detection.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.all()
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// One loaded set.
pub(crate) struct Loaded {
    /// `None` for a client-only set (no certificate, or a client's).
    pub server: Option<Arc<ServerConfig>>,
    pub client: Arc<ClientConfig>,
    pub identity: Option<Identity>,
    /// The process's certificate's expiry (Unix seconds).
    pub not_after: Option<i64>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

/// The certificates of one process, current at every moment.
pub struct Material {
    files: Files,
    /// The kind of certificate this process presents (for metrics).
    kind: Option<Kind>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("files", &self.files)
            .field("identity", &self.identity())
            .finish()
    }
}

impl Material {
    /// A node's or router's set: `ca.crt` and `node.crt`/`router.crt`.
    pub fn load_kind(dir: &Path, kind: Kind) -> Result<Arc<Self>> {
        let d = CertsDir::new(dir);
        let id = Identity {
            kind,
            name: "any".into(),
        };
        let files = Files {
            ca: d.ca_cert(),
            own: Some((d.cert(&id), d.key(&id))),
        };
        Self::load(files, Some(kind), true)
    }

    /// A client's set: `ca.crt` and `client.NAME.crt` (or none).
    pub fn load_client(dir: &Path, name: Option<&str>) -> Result<Arc<Self>> {
        let d = CertsDir::new(dir);
        let own = match name {
            Some(n) => {
                let id = Identity::new(Kind::Client, n)?;
                Some((d.cert(&id), d.key(&id)))
            }
            None => None,
        };
        let files = Files {
            ca: d.ca_cert(),
            own,
        };
        Self::load(files, name.map(|_| Kind::Client), false)
    }

    fn load(files: Files, kind: Option<Kind>, serves: bool) -> Result<Arc<Self>> {
        let loaded = read(&files, serves)?;
        if let (Some(kind), Some(id)) = (kind, &loaded.identity) {
            if id.kind != kind {
                return Err(Error::Certificate(format!(
                    "{} carries the identity {id}, not a {kind} identity",
                    files
                        .own
                        .as_ref()
                        .map(|o| o.0.display().to_string())
                        .unwrap_or_default()
                )));
            }
        }
        let m = Material {
            files,
            kind,
            current: RwLock::new(Arc::new(loaded)),
        };
        m.export();
        Ok(Arc::new(m))
    }

    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("material lock").clone()
    }

    /// The identity this process presents.
    pub fn identity(&self) -> Option<Identity> {
        self.current().identity.clone()
    }

    /// When this process's certificate expires (Unix seconds).
    pub fn not_after(&self) -> Option<i64> {
        self.current().not_after
    }

    /// Re-reads the files if they changed (or always, with `force`).
    /// Returns whether a new set is in use; on error the old one stays.
    pub fn reload(&self, force: bool) -> Result<bool> {
        let cur = self.current();
        if !force && cur.stamp == self.files.stamp() {
            return Ok(false);
        }
        let fresh = match read(&self.files, cur.server.is_some()) {
            Ok(f) => f,
            Err(e) => {
                metrics::counter!(RELOADS, "outcome" => "error").increment(1);
                return Err(e);
            }
        };
        if let (Some(old), Some(new)) = (&cur.identity, &fresh.identity) {
            if old.kind != new.kind {
                metrics::counter!(RELOADS, "outcome" => "error").increment(1);
                return Err(Error::Certificate(format!(
                    "the new certificate carries {new}, the process runs as {old}: not loaded"
                )));
            }
        }
        *self.current.write().expect("material lock") = Arc::new(fresh);
        metrics::counter!(RELOADS, "outcome" => "loaded").increment(1);
        self.export();
        Ok(true)
    }

    fn export(&self) {
        if let (Some(kind), Some(t)) = (self.kind, self.not_after()) {
            metrics::gauge!(EXPIRY, "kind" => kind.as_str()).set(t as f64);
        }
    }
}

/// Metric: the process's certificate's expiry (Unix seconds), by kind.
pub const EXPIRY: &str = "tessera_tls_cert_expiry_timestamp_seconds";
/// Metric: certificate reloads, by outcome (loaded, error).
pub const RELOADS: &str = "tessera_tls_reloads_total";

/// Re-reads `m` every [`RELOAD_INTERVAL`] when its files changed, and at
/// once on SIGHUP.
pub(crate) fn spawn_reload(m: Arc<Material>) {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.tick().await;
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            match m.reload(forced) {
                Ok(true) => {
                    tracing::info!(identity = ?m.identity(), forced, "certificates reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "certificates not reloaded; the previous ones stay in use")
                }
            }
        }
    });
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read(files: &Files, serves: bool) -> Result<Loaded> {
    let stamp = files.stamp();
    let roots = read_roots(&files.ca)?;
    let own = match &files.own {
        Some((c, k)) => Some((read_chain(c)?, read_key(k)?)),
        None => None,
    };
    let (identity, not_after) = match &own {
        Some((chain, _)) => {
            let leaf = chain[0].as_ref();
            let id = certs::identity_of(leaf);
            if id.is_none() {
                return Err(Error::Certificate(format!(
                    "{} carries no tessera identity (one SAN URI tessera://KIND/NAME)",
                    files.own.as_ref().expect("own").0.display()
                )));
            }
            (id, certs::not_after_of(leaf))
        }
        None => (None, None),
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Certificate(format!("{what}: {e}"));
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots.clone());
    let mut client = match &own {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad("certificate and key", &e))?,
        None => builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![ALPN_H2.to_vec()];
    let server = match (&own, serves) {
        (Some((chain, key)), true) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad("client verifier", &e))?;
            let mut s = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| bad("TLS versions", &e))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| bad("certificate and key", &e))?;
            s.alpn_protocols = vec![ALPN_H2.to_vec()];
            Some(Arc::new(s))
        }
        _ => None,
    };
    Ok(Loaded {
        server,
        client: Arc::new(client),
        identity,
        not_after,
        stamp,
    })
}

fn read_file(path: &Path, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, " (the cluster's CA: `tessera cert create-ca`)")? {
        roots
            .add(cert)
            .map_err(|e| Error::Certificate(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    read_certs(
        path,
        " (create it with `tessera cert create-node` or `create-client`)",
    )
}

/// Every certificate of a PEM file; at least one.
fn read_certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(path, hint)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Certificate(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_file(path, "")?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| Error::Certificate(format!("{}: no private key: {e}", path.display())))
}
