//! `tessera-store`: the data plane of tessera.
//!
//! A store is one process with one RocksDB hosting many regions, each one
//! Raft group replicated on three stores. This crate owns:
//! - [`keys`]: the encoded key space (keyspaces, hash prefixes, limits);
//! - [`kv`]: the KV state machine and the Kv API (linearizable reads,
//!   writes through Raft, routing errors as data);
//! - [`node`]: a running store (engine + poller + Kv API);
//! - [`service`]: the gRPC services;
//! - [`directory_client`]: what the store asks of the directory, and
//!   [`heartbeat`]: its periodic reports;
//! - [`testkit`]: the in-process cluster harness used by tests.
//!
//! Raft hosting itself (storage, peers, group commit, transport) lives in
//! `tessera-multiraft`.

pub mod bootstrap;
pub mod config;
pub mod directory_client;
pub mod error;
pub mod heartbeat;
pub mod keys;
pub mod kv;
pub mod node;
pub mod server;
pub mod service;
pub mod status;
pub mod testkit;

pub use error::{Error, Result};
pub use node::{NodeConfig, StoreNode};
