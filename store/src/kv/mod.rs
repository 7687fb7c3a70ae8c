//! The KV state machine and the Kv API built on it.
//!
//! - [`command`]: what goes into a region's Raft log and what applying it
//!   returns;
//! - [`apply`]: the state machine — applies commands to the `default` column
//!   family under encoded keys, after re-checking the epoch and the keys
//!   against the region as it is at apply time;
//! - [`api`]: the request handlers behind the gRPC `Kv` service: validation,
//!   proposals and linearizable reads, with routing errors as data.

pub mod api;
pub mod apply;
pub mod command;

pub use api::{KvApi, KvConfig};
pub use apply::KvStateMachine;
pub use command::{CmdResult, KvOutput};
