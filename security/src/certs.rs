//! Certificates on disk: creating the cluster's CA and the certificates it
//! signs, and listing what a certificates directory holds.
//!
//! Layout of a certificates directory (one per process, or one shared by a
//! local cluster): `ca.crt`, `ca.key` (only where certificates are
//! issued), `node.crt`/`node.key`, `router.crt`/`router.key`,
//! `client.NAME.crt`/`client.NAME.key`. Keys are ECDSA P-256 (rcgen with
//! ring), written mode 0600; certificates 0644. Nothing is overwritten
//! unless `overwrite` is set, and a refused creation writes nothing.
//!
//! Node and router certificates serve and dial (server and client auth)
//! and name every host they are reached at (DNS names or IP addresses);
//! client certificates only dial and name no host.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::identity::{Identity, Kind};
use crate::{Error, Result};

/// How long certificates are valid by default.
pub const CA_DAYS: u32 = 3650;
pub const LEAF_DAYS: u32 = 365;

/// A certificates directory.
#[derive(Clone, Debug)]
pub struct CertsDir {
    path: PathBuf,
}

impl CertsDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CertsDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.path.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.path.join("ca.key")
    }

    /// Where the certificate of `id` lives.
    pub fn cert(&self, id: &Identity) -> PathBuf {
        self.path.join(format!("{}.crt", self.stem(id)))
    }

    /// Where the key of `id` lives.
    pub fn key(&self, id: &Identity) -> PathBuf {
        self.path.join(format!("{}.key", self.stem(id)))
    }

    fn stem(&self, id: &Identity) -> String {
        match id.kind {
            Kind::Node | Kind::Router => id.kind.to_string(),
            Kind::Client => format!("client.{}", id.name),
        }
    }
}

/// What `list` shows of one certificate.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CertInfo {
    /// The file, relative to the certificates directory.
    pub file: String,
    /// `ca`, `node`, `router`, `client`, or `unknown` (no tessera identity).
    pub kind: String,
    /// The identity (`kind/name`), none for a CA.
    pub identity: Option<String>,
    /// DNS names and IP addresses it is valid for.
    pub hosts: Vec<String>,
    /// Expiry, UTC, as `YYYY-MM-DD HH:MM:SS`.
    pub not_after: String,
    pub not_after_unix: i64,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
}

/// Creates the cluster's CA in `dir` (`ca.crt`, `ca.key`).
pub fn create_ca(dir: &CertsDir, days: u32, overwrite: bool) -> Result<CertInfo> {
    let (cert_path, key_path) = (dir.ca_cert(), dir.ca_key());
    refuse_existing(&[&cert_path, &key_path], overwrite)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, ca_name(OffsetDateTime::now_utc()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = window(days)?;
    let cert = params.self_signed(&key)?;
    save(dir, &cert_path, &cert, &key_path, &key)
}

/// The client identity a local cluster's bundle holds (and the CLI's
/// default `--user`).
pub const LOCAL_ADMIN: &str = "admin";

/// Everything a cluster on one machine needs in `dir`, unless `dir`
/// already has a CA (then nothing is touched): a CA, the node certificate
/// and the router certificate for `127.0.0.1` and `localhost`, and the
/// client certificate [`LOCAL_ADMIN`]. Returns whether it created them.
/// The playground and the test harness use it.
pub fn create_local_bundle(dir: &CertsDir, days: u32) -> Result<bool> {
    create_bundle(
        dir,
        &["127.0.0.1".to_string(), "localhost".to_string()],
        days,
    )
}

/// [`create_local_bundle`] with the node and router certificates valid for
/// `hosts` (every address the cluster's processes listen on; the test
/// harness's network namespaces give each process its own).
pub fn create_bundle(dir: &CertsDir, hosts: &[String], days: u32) -> Result<bool> {
    if dir.ca_cert().exists() {
        return Ok(false);
    }
    create_ca(dir, days, false)?;
    for (kind, name, hosts) in [
        (Kind::Node, "node", hosts),
        (Kind::Router, "router", hosts),
        (Kind::Client, LOCAL_ADMIN, &[][..]),
    ] {
        create(dir, &Identity::new(kind, name)?, hosts, days, false)?;
    }
    Ok(true)
}

/// Creates the certificate of `id`, signed by the CA in `dir`, valid for
/// `hosts` (nodes and routers need at least one; clients take none).
pub fn create(
    dir: &CertsDir,
    id: &Identity,
    hosts: &[String],
    days: u32,
    overwrite: bool,
) -> Result<CertInfo> {
    create_valid(dir, id, hosts, window(days)?, overwrite)
}

/// [`create`] with an explicit validity window `(not_before, not_after)`
/// (to rehearse an expiry, say).
pub fn create_valid(
    dir: &CertsDir,
    id: &Identity,
    hosts: &[String],
    (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    overwrite: bool,
) -> Result<CertInfo> {
    let sans = match id.kind {
        Kind::Node | Kind::Router if hosts.is_empty() => {
            return Err(Error::InvalidArgument(format!(
                "a {} certificate needs at least one --host (every name or address it is reached at)",
                id.kind
            )))
        }
        Kind::Client if !hosts.is_empty() => {
            return Err(Error::InvalidArgument(
                "a client certificate names no host".into(),
            ))
        }
        _ => hosts.iter().map(|h| host_san(h)).collect::<Result<Vec<_>>>()?,
    };
    let (cert_path, key_path) = (dir.cert(id), dir.key(id));
    refuse_existing(&[&cert_path, &key_path], overwrite)?;
    let issuer = load_issuer(dir)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, id.to_string());
    params.subject_alt_names = sans;
    params.subject_alt_names.push(SanType::URI(
        id.uri()
            .try_into()
            .map_err(|e| Error::InvalidArgument(format!("{id}: {e}")))?,
    ));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match id.kind {
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Node | Kind::Router => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &issuer)?;
    save(dir, &cert_path, &cert, &key_path, &key)
}

/// Every certificate (`*.crt`) in `dir`, by file name.
pub fn list(dir: &CertsDir) -> Result<Vec<CertInfo>> {
    let entries = fs::read_dir(dir.path()).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            path: dir.path().to_path_buf(),
            hint: " (create it with `tessera cert create-ca`)".into(),
        },
        _ => Error::Io {
            path: dir.path().to_path_buf(),
            source: e,
        },
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    files.iter().map(|p| inspect(dir, p)).collect()
}

/// Reads one certificate file.
pub fn inspect(dir: &CertsDir, path: &Path) -> Result<CertInfo> {
    let bytes = fs::read(path).map_err(Error::io(path))?;
    let bad = |what: String| Error::Certificate(format!("{}: {what}", path.display()));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&bytes).map_err(|e| bad(format!("not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let (hosts, identity) = sans(&cert);
    let kind = match (&identity, cert.is_ca()) {
        (_, true) => "ca".to_string(),
        (Some(id), false) => id.kind.to_string(),
        (None, false) => "unknown".to_string(),
    };
    let not_after = cert.validity().not_after.to_datetime();
    let left = not_after - OffsetDateTime::now_utc();
    Ok(CertInfo {
        file: path
            .strip_prefix(dir.path())
            .unwrap_or(path)
            .display()
            .to_string(),
        kind,
        identity: identity.map(|i| i.to_string()),
        hosts,
        not_after: format!(
            "{} {:02}:{:02}:{:02}",
            not_after.date(),
            not_after.hour(),
            not_after.minute(),
            not_after.second()
        ),
        not_after_unix: not_after.unix_timestamp(),
        days_left: left.whole_days(),
    })
}

/// The hosts a certificate names, and the identity it carries: its one
/// SAN URI, if that is a tessera identity (none with zero or several).
fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Option<Identity>) {
    let mut hosts = vec![];
    let mut uris = vec![];
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => hosts.push(d.to_string()),
                GeneralName::IPAddress(b) => hosts.push(ip_text(b)),
                GeneralName::URI(u) => uris.push(u.to_string()),
                _ => {}
            }
        }
    }
    let identity = match uris.as_slice() {
        [one] => one.parse::<Identity>().ok(),
        _ => None,
    };
    (hosts, identity)
}

/// The identity a DER certificate carries (a peer's, after the handshake
/// checked it against the CA).
pub fn identity_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    sans(&cert).1
}

/// A DER certificate's expiry, Unix seconds.
pub fn not_after_of(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The CA of `dir`, ready to sign.
fn load_issuer(dir: &CertsDir) -> Result<Issuer<'static, KeyPair>> {
    let (cert_path, key_path) = (dir.ca_cert(), dir.ca_key());
    for p in [&cert_path, &key_path] {
        if !p.exists() {
            return Err(Error::Missing {
                path: p.clone(),
                hint: " (create the CA first: `tessera cert create-ca`)".into(),
            });
        }
    }
    let cert = fs::read_to_string(&cert_path).map_err(Error::io(&cert_path))?;
    let key = fs::read_to_string(&key_path).map_err(Error::io(&key_path))?;
    let key = KeyPair::from_pem(&key)
        .map_err(|e| Error::Certificate(format!("{}: {e}", key_path.display())))?;
    Issuer::from_ca_cert_pem(&cert, key)
        .map_err(|e| Error::Certificate(format!("{}: {e}", cert_path.display())))
}

/// A host as a SAN: an IP address, or a DNS name (`*.` allowed first).
fn host_san(host: &str) -> Result<SanType> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "{host:?} is neither an IP address nor a DNS name"
        )));
    }
    Ok(SanType::DnsName(host.to_string().try_into().map_err(
        |e| Error::InvalidArgument(format!("{host:?}: {e}")),
    )?))
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes")).to_string(),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")).to_string(),
        _ => format!("<{} bytes>", bytes.len()),
    }
}

/// A CA's name: two clusters' CAs differ by name, so a certificate of one
/// is refused by the other as "unknown issuer", not as a bad signature.
fn ca_name(now: OffsetDateTime) -> String {
    format!("tessera CA {}", now.unix_timestamp_nanos())
}

/// From an hour ago (clocks of the machines that check it may lag) to
/// `days` from now.
fn window(days: u32) -> Result<(OffsetDateTime, OffsetDateTime)> {
    if days == 0 {
        return Err(Error::InvalidArgument("--days must be at least 1".into()));
    }
    let now = OffsetDateTime::now_utc();
    Ok((now - Duration::hours(1), now + Duration::days(days.into())))
}

fn refuse_existing(paths: &[&Path], overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(Error::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

/// Writes `key` and `cert` and reads the certificate back.
fn save(
    dir: &CertsDir,
    cert_path: &Path,
    cert: &rcgen::Certificate,
    key_path: &Path,
    key: &KeyPair,
) -> Result<CertInfo> {
    write_pair(dir, cert_path, &cert.pem(), key_path, &key.serialize_pem())?;
    inspect(dir, cert_path)
}

/// Writes the key (0600) and then the certificate (0644), creating `dir`
/// (0700) if needed.
fn write_pair(
    dir: &CertsDir,
    cert: &Path,
    cert_pem: &str,
    key: &Path,
    key_pem: &str,
) -> Result<()> {
    if !dir.path().exists() {
        fs::create_dir_all(dir.path()).map_err(Error::io(dir.path()))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(Error::io(dir.path()))?;
    }
    write_file(key, key_pem, 0o600)?;
    write_file(cert, cert_pem, 0o644)
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(Error::io(path))?;
    // An existing file keeps its mode on open: set it.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(Error::io(path))?;
    f.write_all(text.as_bytes()).map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

#[cfg(test)]
mod tests;
