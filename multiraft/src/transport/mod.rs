//! How Raft messages reach other stores.
//!
//! The poller hands every outgoing message to [`Transport::send`] with its
//! destination store, then calls [`Transport::flush`] once per phase of a
//! round; implementations batch per destination store between flushes.
//! Delivery is best effort: Raft tolerates loss, duplication and reordering,
//! and a store that cannot be reached is reported back to the poller so
//! raft-rs stops pipelining to it (`report_unreachable`).
//!
//! - [`grpc`]: what users run — one client stream per destination store,
//!   reconnecting with backoff.
//! - [`memory`]: an in-process network for tests, with a filter chain that
//!   drops, delays, partitions or isolates by store, region and message
//!   type.

pub mod grpc;
pub mod memory;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tessera_proto::raft_serverpb::RaftMessage;

use crate::StoreId;

pub use grpc::{AddressResolver, GrpcTransport, RaftService, StaticResolver};
pub use memory::{Filter, FilterAction, MemoryNetwork, MemoryTransport, MessageFilter};

pub trait Transport: Send + 'static {
    /// Queues `msg` for `to_store`.
    fn send(&mut self, to_store: StoreId, msg: RaftMessage);
    /// Hands everything queued to the network.
    fn flush(&mut self);
}

/// The raft-rs message type inside a wrapped message (for filters and logs).
pub fn message_type(msg: &RaftMessage) -> Option<MessageType> {
    Message::parse_from_bytes(&msg.message)
        .ok()
        .map(|m| m.get_msg_type())
}
