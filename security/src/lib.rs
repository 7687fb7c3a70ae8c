//! Security: who is who in a tessera cluster.
//!
//! Every process proves who it is with an X.509 certificate signed by the
//! cluster's CA. What a certificate is allowed to do follows from one
//! subject alternative name, a URI of the form `tessera://KIND/NAME`
//! ([`identity`]):
//! - `tessera://node/NAME`: a store or a directory member. Node identities
//!   may call everything nodes call each other (Raft, snapshots, store
//!   administration, the store-facing directory RPCs);
//! - `tessera://router/NAME`: a router. Allowed the store's Kv API and the
//!   directory's reads, never Raft or store administration;
//! - `tessera://client/NAME`: the user NAME, whose role the directory
//!   records ([`users`]); users may instead present a bearer token.
//!
//! A certificate without such a URI, or with more than one, identifies
//! nobody. Certificates live as PEM files in one directory per process
//! ([`certs`]): `ca.crt` (and `ca.key` where certificates are issued),
//! `node.crt`/`node.key`, `router.crt`/`router.key`,
//! `client.NAME.crt`/`client.NAME.key`. Keys are written mode 0600 and never
//! overwritten unless asked.
//!
//! This crate creates and reads certificates ([`certs`]), serves and dials
//! TLS with them and tells who is calling ([`tls`]), and holds the access
//! policy every process enforces per RPC ([`policy`]), users and roles
//! ([`users`]), the shared secrets
//! of joins (the cluster's join token, each store's own secret:
//! [`secret`]) and the cluster-id comparison ([`cluster`]).

pub mod certs;
pub mod cluster;
pub mod error;
pub mod identity;
pub mod policy;
pub mod secret;
pub mod tls;
pub mod users;

pub use error::{Error, Result};
pub use identity::{Identity, Kind};
pub use tls::{Channel, Security, SecurityArgs, TlsSettings};
pub use users::{Role, Users};
