//! What leaves a peer: raft-rs messages wrapped for the transport (with the
//! region's range and epoch, and where a snapshot's files are), heartbeats
//! an append made redundant left out, and which messages may create a peer
//! on a store that does not have the region.

use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tessera_proto::raft_serverpb::{RaftMessage, SnapshotData};

use super::Peer;
use crate::transport::OutgoingSnapshot;
use crate::{metrics as m, region, StoreId};

/// A message on its way out of a peer.
pub enum Outgoing {
    Message(StoreId, RaftMessage),
    Snapshot(StoreId, OutgoingSnapshot),
}

impl<O: Send + 'static> Peer<O> {
    /// Wraps raft-rs messages for the transport; messages to peers the
    /// region does not list are dropped — a dropped snapshot is reported to
    /// raft-rs as failed, or the follower's progress would wait for it
    /// forever. Snapshots carry where their files are.
    ///
    /// A plain leader heartbeat to a follower that was sent an append within
    /// the heartbeat interval is skipped: the append already reset the
    /// follower's election timer, its answer marks the follower active for
    /// check_quorum, and the follower learns the commit index from the next
    /// append or the next heartbeat (at most one interval later). Under
    /// load this removes nearly all heartbeat traffic of busy regions.
    /// Heartbeats with a context (ReadIndex confirmations) always go.
    pub fn wrap_messages(
        &mut self,
        msgs: Vec<Message>,
        snap_dir: &dyn Fn(u64, u64) -> std::path::PathBuf,
        out: &mut Vec<Outgoing>,
        now: Instant,
    ) {
        let mut dropped_snapshots = Vec::new();
        let mut skipped = 0u64;
        let region = self.raw_node.store().region();
        for m in msgs {
            match m.get_msg_type() {
                MessageType::MsgAppend => {
                    self.last_append_to.insert(m.to, now);
                }
                MessageType::MsgHeartbeat if m.context.is_empty() => {
                    let recent = self
                        .last_append_to
                        .get(&m.to)
                        .is_some_and(|at| now.duration_since(*at) < self.heartbeat_interval);
                    if recent {
                        skipped += 1;
                        continue;
                    }
                }
                _ => {}
            }
            let Some(to_peer) =
                region::find_peer(region, m.to).or_else(|| self.peer_cache.get(&m.to))
            else {
                tracing::debug!(region_id = region.id, to = m.to, msg_type = ?m.get_msg_type(), "message to unknown peer dropped");
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    dropped_snapshots.push(m.to);
                }
                continue;
            };
            let store_id = to_peer.store_id;
            let snapshot = (m.get_msg_type() == MessageType::MsgSnapshot).then(|| {
                let snap = m.get_snapshot();
                let meta = snap.get_metadata();
                let files = prost::Message::decode(snap.data.as_ref())
                    .map(|d: SnapshotData| d.files)
                    .unwrap_or_default();
                (snap_dir(meta.term, meta.index), files)
            });
            let msg = RaftMessage {
                region_id: region.id,
                from_peer: Some(self.meta),
                to_peer: Some(*to_peer),
                region_epoch: region.region_epoch,
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                message: m
                    .write_to_bytes()
                    .expect("encoding a raft message cannot fail"),
                is_tombstone: false,
                from_store_low_space: false, // stamped when sent (space.rs)
                hibernation: None,
            };
            out.push(match snapshot {
                Some((dir, files)) => {
                    Outgoing::Snapshot(store_id, OutgoingSnapshot { msg, dir, files })
                }
                None => Outgoing::Message(store_id, msg),
            });
        }
        for to in dropped_snapshots {
            self.raw_node
                .report_snapshot(to, raft::SnapshotStatus::Failure);
        }
        if skipped > 0 {
            metrics::counter!(m::RAFT_HEARTBEATS_SKIPPED_TOTAL).increment(skipped);
        }
    }
}

/// Whether a message to a region this store does not have may create a
/// peer for it: a vote request, or a leader's first heartbeat to a new
/// peer (whose commit is 0 because nothing is known to be replicated).
pub fn is_initial_msg(msg: &Message) -> bool {
    let t = msg.get_msg_type();
    t == MessageType::MsgRequestVote
        || t == MessageType::MsgRequestPreVote
        || (t == MessageType::MsgHeartbeat && msg.commit == 0)
}
