//! The store's gRPC services: `Kv` (requests from routers and clients),
//! `StoreAdmin` (region operations) and `Raft` (messages from other stores,
//! from `tessera-multiraft`).

mod admin;
mod kv;

pub use admin::AdminService;
pub use kv::{KvService, MAX_KV_MESSAGE_BYTES};
