//! `tessera-router`: finding the region that owns a key and getting a
//! request to its leader.
//!
//! - [`cache`]: the region cache — regions by start key, with their
//!   leaders, filled from the directory and corrected by routing errors;
//! - [`client`]: [`Router`], the routing client: every Kv operation with a
//!   keyspace, retries under a deadline, reactions to every routing error,
//!   batches split per region, scans stitched across regions.
//!
//! - [`service`]: the public `Router` gRPC service over [`Router`];
//! - [`server`] and [`config`]: the `tessera-router` process.
//!
//! The router service is what clients (the SDK, the CLI) talk to; the
//! end-to-end tests and the benchmark also use [`Router`] directly.

pub mod cache;
pub mod client;
pub mod config;
pub mod error;
pub mod metrics;
pub mod server;
pub mod service;

pub use client::{Router, RouterConfig};
pub use error::{Error, Result};
