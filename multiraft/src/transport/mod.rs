//! How Raft messages reach other stores.
//!
//! The poller hands every outgoing message to [`Transport::send`] with its
//! destination store, then calls [`Transport::flush`] once per phase of a
//! round; implementations batch per destination store between flushes.
//! Snapshots go through [`Transport::send_snapshot`], with their files, on a
//! path of their own so they never hold up ordinary messages.
//!
//! Delivery is best effort: Raft tolerates loss, duplication and reordering.
//! What the poller must know comes back as [`Feedback`]: a store that cannot
//! be reached (so raft-rs stops pipelining to it) and the outcome of each
//! snapshot sent.
//!
//! - [`grpc`]: what users run — one client stream per destination store,
//!   reconnecting with backoff, and one stream per snapshot.
//! - [`faults`]: partitions a test harness injects into the gRPC transport.
//! - [`memory`]: an in-process network for tests, with a filter chain that
//!   drops, delays, partitions or isolates by store, region and message
//!   type.

pub mod faults;
pub mod grpc;
pub mod memory;

use std::path::PathBuf;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tessera_proto::raft_serverpb::{RaftMessage, SnapshotFile};

use crate::mailbox::{Mailbox, PollerMsg};
use crate::{RegionId, StoreId};

pub use faults::{MessageFaultSpec, MessageFaults, NetFaults};
pub use grpc::{AddressResolver, GrpcTransport, RaftService, StaticResolver};
pub use memory::{Filter, FilterAction, MemoryNetwork, MemoryTransport, MessageFilter};

/// A snapshot on its way out: the MsgSnapshot and where its files are.
#[derive(Clone, Debug)]
pub struct OutgoingSnapshot {
    pub msg: RaftMessage,
    pub dir: PathBuf,
    pub files: Vec<SnapshotFile>,
}

pub trait Transport: Send + 'static {
    /// Queues `msg` for `to_store`.
    fn send(&mut self, to_store: StoreId, msg: RaftMessage);
    /// Starts sending a snapshot; its outcome comes back as feedback.
    fn send_snapshot(&mut self, to_store: StoreId, snap: OutgoingSnapshot);
    /// Hands everything queued to the network.
    fn flush(&mut self);
}

/// What a transport tells the poller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feedback {
    Unreachable(StoreId),
    SnapshotStatus {
        region_id: RegionId,
        to_peer: u64,
        delivered: bool,
    },
}

pub type FeedbackFn = Arc<dyn Fn(Feedback) + Send + Sync>;

/// Feedback delivered into a poller's mailbox.
pub fn feedback_to<O: Send + 'static>(mailbox: Mailbox<O>) -> FeedbackFn {
    Arc::new(move |f| {
        let msg = match f {
            Feedback::Unreachable(store_id) => PollerMsg::StoreUnreachable { store_id },
            Feedback::SnapshotStatus {
                region_id,
                to_peer,
                delivered,
            } => PollerMsg::SnapshotStatus {
                region_id,
                to_peer,
                delivered,
            },
        };
        let _ = mailbox.send(msg);
    })
}

/// The raft-rs message type inside a wrapped message (for filters and logs).
pub fn message_type(msg: &RaftMessage) -> Option<MessageType> {
    Message::parse_from_bytes(&msg.message)
        .ok()
        .map(|m| m.get_msg_type())
}
