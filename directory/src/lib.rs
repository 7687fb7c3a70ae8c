//! `tessera-directory`: tessera's control plane.
//!
//! The directory is one Raft group (hosted with `tessera-multiraft`, on
//! RocksDB) run by 3 or 5 `tessera-directory` processes. It is the single
//! source of truth for which stores exist and which regions cover which key
//! ranges, and the one place that decides placement. It never sees user
//! traffic.
//!
//! - [`state`]: the replicated metadata (stores, regions and their range
//!   index, keyspaces, the id allocator) and its rules;
//! - [`state_machine`]: applying the directory's Raft log to it;
//! - [`node`]: hosting the Raft group: bootstrap, restart, membership;
//! - [`leader`]: what only the leader keeps, in memory — region leaders and
//!   sizes, store heartbeats and lifecycle, operators;
//! - [`records`]: where the state's records live in the engine;
//! - [`scheduler`]: placement decisions, each an operator whose steps go to
//!   region leaders in heartbeat replies; one module per rule;
//! - [`core`]: what the service and the scheduler share, and the leader's
//!   reads; by feature: [`ids`] (the id allocator), [`heartbeats`],
//!   [`admin`] (operators an administrator asks for), [`merge`] (region
//!   merges: checks, the plan, the operator's end), [`status`],
//!   [`join`] (cluster identity, store registration, join tokens) and
//!   [`round`] (the scheduler's round);
//! - [`service`]: the gRPC service, a thin shell over [`core::Core`];
//! - [`server`]: the process.

pub mod admin;
pub mod config;
pub mod core;
pub mod error;
pub mod heartbeats;
pub mod ids;
pub mod join;
pub mod leader;
pub mod merge;
pub mod metrics;
pub mod node;
pub mod records;
pub mod round;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod state;
pub mod state_machine;
pub mod status;
pub mod users;

pub use error::{Error, Result};

/// The id of the directory's one Raft group.
pub const DIRECTORY_REGION_ID: u64 = 1;
