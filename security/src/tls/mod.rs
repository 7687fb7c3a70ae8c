//! Transport security: TLS on every gRPC connection, and who is calling.
//!
//! # How a connection is secured (process overview)
//!
//! Every tessera process serves several gRPC services on one port (a store:
//! Raft, Kv, StoreAdmin and health), so the TLS handshake cannot know which
//! identity a caller will need. The server therefore *asks* for a client
//! certificate but does not demand one, checks any it gets against the
//! cluster's CA, and decides per RPC:
//!
//! 1. **Accept** ([`incoming`]): a connection from outside
//!    `allowed_networks` is closed before any byte is read. The handshake
//!    runs in its own task (a slow or silent peer never holds up the
//!    accept loop) under a deadline; a failed handshake is counted and
//!    logged, and nothing reaches gRPC.
//! 2. **Identify**: the peer's certificate (if any) is read once per
//!    connection: its one SAN URI `tessera://KIND/NAME` ([`crate::identity`])
//!    becomes the connection's [`Peer`], which tonic hands to every request
//!    of that connection.
//! 3. **Authorize** ([`guard`]): before a request reaches its service, its
//!    method path is looked up in the access policy ([`crate::policy`]):
//!    Raft, snapshots, store administration and the store-facing directory
//!    RPCs want a node; the router may call the store's Kv API and the
//!    directory's reads; clients reach the router, the Kv API and the
//!    directory's reads and administration. A refusal is
//!    `UNAUTHENTICATED` (no identity) or `PERMISSION_DENIED` (the wrong
//!    one) naming what is missing; the service never sees the request.
//!    A method the policy does not list is refused: a new RPC is closed
//!    until it is given a rule.
//!    A user (a client certificate, or a bearer token instead of one) gets
//!    what its role allows ([`crate::users`]).
//! 4. **Dial** ([`connect`]): clients of every kind (stores to stores and
//!    to the directory, routers, the SDK and the CLI) check the server's
//!    certificate against the CA and the address dialed, and present
//!    their own certificate — or, for a user with a token, only the token
//!    (in every request's `authorization` metadata, [`Credentials`]).
//!
//! Certificates and the CA are re-read without a restart ([`material`]):
//! every 10 s when a file changed, and at once on SIGHUP. Each handshake
//! uses the material current at that moment; a file that does not load
//! keeps the previous material in use (logged, counted). The expiry of the
//! process's certificate is exported as
//! `tessera_tls_cert_expiry_timestamp_seconds` for the alert rule.
//!
//! `insecure = true` serves and dials plaintext without identities; the
//! policy is then not enforced (there is no one to check), the process
//! logs a warning at start, and its build info says `tls="false"`.

mod connect;
mod credentials;
pub mod guard;
mod incoming;
mod material;
mod networks;
mod settings;

use std::sync::Arc;

pub use connect::Connector;
pub use credentials::{Channel, Credentials};
pub use guard::{Authority, Guard};
pub use incoming::{incoming, status_incoming, Conn, Incoming, Peer};
pub use material::Material;
pub use networks::Networks;
pub use settings::{SecurityArgs, TlsSettings};

use crate::identity::Kind;
use crate::users::Users;
use crate::{Error, Result};

/// How one process secures its connections: built once at start from
/// [`TlsSettings`], cloned into every server and client it runs.
#[derive(Clone)]
pub struct Security {
    material: Option<Arc<Material>>,
    networks: Networks,
    /// The user table its access check consults (servers).
    users: Users,
    /// The bearer token its requests carry (a user's client).
    credentials: Credentials,
    /// `/metrics` on the status port answers over TLS only.
    metrics_tls: bool,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.is_tls())
            .field("networks", &self.networks)
            .finish()
    }
}

impl Security {
    /// Plaintext, no identities, every network: `insecure = true`, and
    /// tests of things other than security.
    pub fn insecure() -> Self {
        Security {
            material: None,
            networks: Networks::any(),
            users: Users::new(),
            credentials: Credentials::none(),
            metrics_tls: false,
        }
    }

    /// Loads what `settings` names for a process that presents a `kind`
    /// certificate (`node.crt`, `router.crt`; clients name themselves with
    /// [`Security::client`]). Refuses settings that name neither a
    /// certificates directory nor `insecure`.
    pub fn from_settings(settings: &TlsSettings, kind: Kind) -> Result<Self> {
        describe();
        let networks = Networks::parse(&settings.allowed_networks)?;
        let material =
            match (&settings.certs_dir, settings.insecure) {
                (Some(_), true) => {
                    return Err(Error::InvalidArgument(
                        "both a certificates directory and insecure are set: choose one".into(),
                    ))
                }
                (None, true) => None,
                (Some(dir), false) => Some(Material::load_kind(dir, kind)?),
                (None, false) => return Err(Error::InvalidArgument(
                    "no certificates directory: give --certs-dir (create one with `tessera cert`) \
                     or run without TLS with --insecure"
                        .into(),
                )),
            };
        if settings.metrics_tls && material.is_none() {
            return Err(Error::InvalidArgument(
                "metrics_tls needs TLS: give a certificates directory, not insecure".into(),
            ));
        }
        Ok(Security {
            material,
            networks,
            users: Users::new(),
            credentials: Credentials::none(),
            metrics_tls: settings.metrics_tls,
        })
    }

    /// A client that presents `client.NAME.crt` from `certs_dir`, or none
    /// when `name` is `None` (only the CA is read: the server is checked,
    /// the caller authenticates otherwise).
    pub fn client(certs_dir: &std::path::Path, name: Option<&str>) -> Result<Self> {
        Ok(Security {
            material: Some(Material::load_client(certs_dir, name)?),
            networks: Networks::any(),
            users: Users::new(),
            credentials: Credentials::none(),
            metrics_tls: false,
        })
    }

    /// A user's client that authenticates with `token` (from `tessera user
    /// create`), sent with every request, and presents no client
    /// certificate: only the CA in `certs_dir` is read, to check servers.
    /// A token needs TLS (it would travel in the clear otherwise).
    pub fn with_token(certs_dir: &std::path::Path, token: &str) -> Result<Self> {
        crate::secret::check_form(token.trim())
            .map_err(|e| Error::InvalidArgument(format!("token: {e}")))?;
        Ok(Security {
            credentials: Credentials::bearer(token.trim())?,
            ..Security::client(certs_dir, None)?
        })
    }

    /// The user table this process's access check consults; the process
    /// keeps it fresh ([`Users::spawn_refresh`]).
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.material.is_some()
    }

    /// The certificates in use, if TLS.
    pub fn material(&self) -> Option<&Arc<Material>> {
        self.material.as_ref()
    }

    /// The networks this process accepts connections from.
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// The connection stream a gRPC server serves from `listener`.
    pub fn incoming(&self, listener: tokio::net::TcpListener) -> Incoming {
        incoming(listener, self.material.clone(), self.networks.clone())
    }

    /// The connection stream of the HTTP status port: TLS for clients that
    /// start a handshake (when the process has certificates), plaintext
    /// for the others ([`status_incoming`]).
    pub fn status_incoming(&self, listener: tokio::net::TcpListener) -> Incoming {
        status_incoming(listener, self.material.clone())
    }

    /// Whether the status port's `/metrics` answers over TLS only.
    pub fn metrics_tls(&self) -> bool {
        self.metrics_tls
    }

    /// The per-RPC access check, as a tower layer for `Server::layer`.
    pub fn guard(&self) -> Guard {
        Guard::new(self.is_tls(), self.users.clone())
    }

    /// A channel to `endpoint` that connects on first use.
    pub fn channel(&self, endpoint: tonic::transport::Endpoint) -> Channel {
        let channel = match &self.material {
            None => endpoint.connect_lazy(),
            Some(m) => endpoint.connect_with_connector_lazy(Connector::new(m.clone())),
        };
        self.credentials.wrap(channel)
    }

    /// A channel to `endpoint`, connected now.
    pub async fn connect(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> std::result::Result<Channel, tonic::transport::Error> {
        let channel = match &self.material {
            None => endpoint.connect().await?,
            Some(m) => {
                endpoint
                    .connect_with_connector(Connector::new(m.clone()))
                    .await?
            }
        };
        Ok(self.credentials.wrap(channel))
    }

    /// Starts re-reading the certificates on change and on SIGHUP (a no-op
    /// without TLS). The task ends with the runtime.
    pub fn spawn_reload(&self) {
        if let Some(m) = &self.material {
            material::spawn_reload(m.clone());
        }
    }
}

/// Registers the help text of this module's metrics and exports their
/// counters at 0, so alerts and dashboards see them before anything
/// happens. Called by [`Security::from_settings`] (every server process).
pub fn describe() {
    use metrics::{counter, describe_counter, describe_gauge};
    describe_gauge!(
        material::EXPIRY,
        "When the certificate this process presents expires (Unix seconds), by kind"
    );
    describe_counter!(
        material::RELOADS,
        "Certificate reloads after a file changed or SIGHUP, by outcome (loaded, error)"
    );
    describe_counter!(
        incoming::REFUSED_CONNECTIONS,
        "Connections closed before any RPC, by reason (network: outside allowed_networks; handshake: TLS failed)"
    );
    describe_counter!(
        guard::REFUSED_RPCS,
        "RPCs refused by the access policy, by reason (unauthenticated, permission_denied)"
    );
    for outcome in ["loaded", "error"] {
        counter!(material::RELOADS, "outcome" => outcome).increment(0);
    }
    for reason in ["network", "handshake"] {
        counter!(incoming::REFUSED_CONNECTIONS, "reason" => reason).increment(0);
    }
    for reason in ["unauthenticated", "permission_denied"] {
        counter!(guard::REFUSED_RPCS, "reason" => reason).increment(0);
    }
    describe_counter!(
        crate::cluster::MISMATCHES,
        "Messages, streams and registrations of another cluster refused, by source"
    );
    for source in crate::cluster::SOURCES {
        counter!(crate::cluster::MISMATCHES, "source" => *source).increment(0);
    }
}

#[cfg(test)]
mod tests;
