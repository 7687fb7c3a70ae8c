//! The store's gRPC services: `Kv` (requests from routers and clients),
//! `StoreAdmin` (region operations) and `Raft` (messages from other stores,
//! from `tessera-multiraft`), and [`serve`], which serves them together.

mod admin;
mod kv;
pub mod serve;
pub mod stream;

pub use admin::AdminService;
pub use kv::{KvService, MAX_KV_MESSAGE_BYTES};
