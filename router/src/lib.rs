//! `tessera-router`: finding the region that owns a key and getting a
//! request to its leader.
//!
//! - [`cache`]: the region cache — regions by start key, with their
//!   leaders, filled from the directory and corrected by routing errors;
//! - [`client`]: [`Router`], the routing client: every Kv operation with a
//!   keyspace, retries under a deadline, reactions to every routing error,
//!   batches split per region, scans stitched across regions.
//!
//! The SDK (`tessera-client`) and the router service use it alike.

pub mod cache;
pub mod client;
pub mod error;
pub mod metrics;

pub use client::{Router, RouterConfig};
pub use error::{Error, Result};
