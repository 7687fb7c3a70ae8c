//! The store's gRPC services: `Kv` (requests from routers and clients) and
//! `Raft` (messages from other stores, from `tessera-multiraft`).

mod kv;

pub use kv::{KvService, MAX_KV_MESSAGE_BYTES};
