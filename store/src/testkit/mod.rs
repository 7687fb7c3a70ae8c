//! The in-process cluster harness (DESIGN.md §6), for tests only.
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
//! Nothing here is used by a binary.

mod client;
mod cluster;

pub use client::KvEndpoint;
pub use cluster::{Cluster, ClusterOptions, EngineKind, TransportKind};

/// The encoded key of `user_key` in the default keyspace.
pub fn key(user_key: impl AsRef<[u8]>) -> Vec<u8> {
    crate::keys::encode(crate::keys::DEFAULT_KEYSPACE_ID, user_key.as_ref())
}
