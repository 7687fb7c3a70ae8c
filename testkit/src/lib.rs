//! `tessera-testkit`: the in-process cluster harness (DESIGN.md §6), for
//! tests and benchmarks; a dev-dependency of the tests, never a dependency
//! of a binary a user runs.
//!
//! A [`Cluster`] runs N stores in one process, over the in-memory engine or
//! RocksDB in temporary directories, connected by the in-memory network
//! (whose filters drop, delay, partition and isolate) or by the real gRPC
//! transport on 127.0.0.1. The test lays out regions by hand and talks to
//! the stores through a small client that follows leaders and epochs the
//! way a router would. Helpers such as [`Cluster::must_put`],
//! [`Cluster::must_get`], [`Cluster::stop_store`],
//! [`Cluster::restart_store`] and [`Cluster::partition`] keep tests short.
//!
//! With the gRPC transport every store serves through the store process's
//! own server setup (`tessera_store::service::serve`). The harness client's
//! retry decisions are the router's: `tessera_routing::reaction::react`.
//! [`TestDirectory`] stands in for the directory: ids, stores and region
//! reports in memory, nothing of scheduling.

mod cluster;
mod directory;
mod endpoint;

pub use cluster::{Cluster, ClusterOptions, EngineKind, MergeEnd, SplitCheckers, TransportKind};
pub use directory::TestDirectory;
pub use endpoint::KvEndpoint;
pub use tessera_routing::reaction::SendPolicy;

/// The encoded key of `user_key` in the default keyspace.
pub fn key(user_key: impl AsRef<[u8]>) -> Vec<u8> {
    tessera_proto::keys::encode(tessera_proto::keys::DEFAULT_KEYSPACE_ID, user_key.as_ref())
}
