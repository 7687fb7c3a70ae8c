//! `tessera-store`: the data plane of tessera.
//!
//! A store is one process with one RocksDB hosting many regions, each one
//! Raft group replicated on three stores. This crate owns:
//! - [`kv`]: the KV state machine and the Kv API (linearizable reads,
//!   writes through Raft, routing errors as data);
//! - region operations, one module each: [`split`] (and the size-based
//!   [`split_check`]), [`conf_change`], [`transfer_leader`], [`log_gc`];
//!   [`admin`] serves them;
//! - [`load`]: what each region served since its last report;
//! - [`node`]: a running store (engine + poller + Kv and admin APIs);
//! - [`service`]: the gRPC services;
//! - [`directory_client`]: what the store asks of the directory, and
//!   [`heartbeat`]: its periodic reports.
//!
//! Raft hosting itself (storage, peers, group commit, transport) lives in
//! `tessera-multiraft`.

pub mod admin;
pub mod bootstrap;
pub mod conf_change;
pub mod config;
pub mod directory_client;
pub mod disk_space;
pub mod down_peers;
pub mod error;
pub mod fault;
pub mod heartbeat;
pub mod kv;
pub mod load;
pub mod log_gc;
pub mod merge;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod server;
pub mod service;
pub mod split;
pub mod split_check;
pub mod stale_peer;
pub mod transfer_leader;
pub mod watchdog;

pub use error::{Error, Result};
pub use node::{NodeConfig, StoreNode};
