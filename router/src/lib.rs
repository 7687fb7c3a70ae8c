//! `tessera-router`: the router process. It serves the public Kv API
//! (`routerpb`) and sends every request to the leader of the region that
//! owns its key through the routing library, `tessera-routing`, which the
//! SDK embeds too; this crate adds only what a server needs.
//!
//! - [`service`]: the public `Router` gRPC service over
//!   [`tessera_routing::Router`], turning its errors into answers;
//! - [`server`] and [`config`]: the `tessera-router` process — status
//!   endpoints, readiness, shutdown, settings.

pub mod config;
pub mod error;
pub mod server;
pub mod service;

pub use error::{Error, Result};
pub use tessera_routing::{Router, RouterConfig};
