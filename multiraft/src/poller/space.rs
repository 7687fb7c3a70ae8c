//! Disk space as the Raft groups of a store see it: the NOSPACE rules.
//!
//! The store's monitor (`tessera-store`'s `disk_space.rs`) measures free
//! space and sets [`DiskSpace::set_low`] when the store falls below its
//! threshold. The poller then:
//! - stamps every Raft message it sends with the flag
//!   (`RaftMessage::from_store_low_space`) and records, per sending store,
//!   the flag of every message it receives — so a region's leader learns
//!   its followers' disk state within a heartbeat;
//! - as a leader, refuses a *user* write ([`WriteClass::User`]) with the
//!   `NoSpace` region error when its own store is low, or when the voters
//!   whose stores are not low are fewer than a quorum (of either half of a
//!   joint configuration): such a write could only commit by filling a low
//!   store. Internal proposals ([`WriteClass::System`]: splits, log
//!   compaction) and membership changes and leader transfers go on — they
//!   are small, and they free space or keep Raft safe; the store's reserve
//!   file is released to make room for them;
//! - as a follower on a low store, drops append messages that carry an
//!   entry with data, and snapshots: its log does not grow with writes the
//!   rest of the region accepted. Raft sends them again once the store is
//!   no longer low (dropping a message is always safe in Raft). Heartbeats,
//!   votes, empty entries and membership changes still go through, so the
//!   region keeps its leader and can still move replicas off the store.
//!
//! - as a leader on a low store, hands leadership to the most up-to-date
//!   voter on a store that is not low, every [`HANDOFF_TICKS`] ticks while
//!   low, so the region takes writes again (the directory moves no
//!   leadership back onto a low store).
//!
//! A store that stops sending keeps its last flag here until it sends
//! again; a restarted poller starts from "not low" and learns within a
//! heartbeat.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use raft::eraftpb::{EntryType, Message, MessageType};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{PeerRole, Region};
use tessera_proto::raft_serverpb::RaftMessage;

use super::Poller;
use crate::state_machine::StateMachine;
use crate::StoreId;

/// Ticks between two hand-offs of the leaderships of a low store.
pub const HANDOFF_TICKS: u64 = 10;

/// Whether the local store is below its free-space threshold; set by the
/// store's disk monitor, read by the poller.
#[derive(Debug, Default)]
pub struct DiskSpace {
    low: AtomicBool,
}

impl DiskSpace {
    pub fn set_low(&self, low: bool) {
        self.low.store(low, Ordering::Relaxed);
    }

    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }
}

/// What a proposal is, for the NOSPACE rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteClass {
    /// A client's write: refused while the region cannot take it without
    /// filling a store that is low on space.
    User,
    /// An internal command (a split, log compaction): always proposed.
    System,
    /// A merge's own command (prepare, commit, rollback): always
    /// proposed, and the only one a merging region takes.
    Merge,
}

/// The local flag and the last flag heard from every other store.
#[derive(Debug, Default)]
pub(super) struct SpaceView {
    pub(super) local: std::sync::Arc<DiskSpace>,
    remote: HashMap<StoreId, bool>,
}

impl SpaceView {
    /// Records the sender's flag and tells whether a low local store drops
    /// `msg` (see the module docs).
    pub(super) fn on_receive(&mut self, from: &RaftMessage, msg: &Message) -> bool {
        if let Some(p) = &from.from_peer {
            self.remote.insert(p.store_id, from.from_store_low_space);
        }
        self.local.is_low() && grows_log(msg)
    }

    /// Marks an outgoing message with the local flag.
    pub(super) fn stamp(&self, msg: &mut RaftMessage) {
        msg.from_store_low_space = self.local.is_low();
    }

    fn is_low(&self, local_store: StoreId, store: StoreId) -> bool {
        if store == local_store {
            self.local.is_low()
        } else {
            self.remote.get(&store).copied().unwrap_or(false)
        }
    }

    /// Why region `region`'s leader on `local_store` may not take a user
    /// write now, if it may not.
    pub(super) fn refusal(&self, local_store: StoreId, region: &Region) -> Option<RegionError> {
        if self.local.is_low() {
            return Some(RegionError::no_space(region.id, vec![local_store]));
        }
        let low: Vec<StoreId> = region
            .peers
            .iter()
            .filter(|p| p.role() != PeerRole::Learner)
            .map(|p| p.store_id)
            .filter(|s| self.is_low(local_store, *s))
            .collect();
        if low.is_empty() {
            return None;
        }
        let lacks_quorum = |in_config: &dyn Fn(PeerRole) -> bool| {
            let voters: Vec<_> = region
                .peers
                .iter()
                .filter(|p| in_config(p.role()))
                .collect();
            let fine = voters
                .iter()
                .filter(|p| !self.is_low(local_store, p.store_id))
                .count();
            !voters.is_empty() && fine < voters.len() / 2 + 1
        };
        let incoming = |r| matches!(r, PeerRole::Voter | PeerRole::IncomingVoter);
        let outgoing = |r| matches!(r, PeerRole::Voter | PeerRole::DemotingVoter);
        (lacks_quorum(&incoming) || lacks_quorum(&outgoing))
            .then(|| RegionError::no_space(region.id, low))
    }
}

impl<S: StateMachine> Poller<S> {
    /// Hands every leadership of this low store to a voter with space.
    pub(super) fn hand_off_for_space(&mut self) {
        if !self.space.local.is_low() || !self.ticks.is_multiple_of(HANDOFF_TICKS) {
            return;
        }
        let mut handed = 0usize;
        for (&id, peer) in self.peers.iter_mut() {
            if !peer.is_leader() {
                continue;
            }
            let space = &self.space;
            if let Some(to) = peer
                .best_transferee_among(|s| s != self.store_id && !space.is_low(self.store_id, s))
            {
                peer.transfer_leader(to);
                self.touched.insert(id);
                handed += 1;
            }
        }
        if handed > 0 {
            tracing::info!(
                store_id = self.store_id,
                regions = handed,
                "low on disk space: handing leaderships to stores with space"
            );
        }
    }
}

/// Whether `msg` would make the receiver store data: a snapshot, or an
/// append with an entry that carries a command.
fn grows_log(msg: &Message) -> bool {
    match msg.get_msg_type() {
        MessageType::MsgSnapshot => true,
        MessageType::MsgAppend => msg
            .get_entries()
            .iter()
            .any(|e| e.get_entry_type() == EntryType::EntryNormal && !e.get_data().is_empty()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;
    use tessera_proto::metapb::Peer;

    fn region(roles: &[(u64, PeerRole)]) -> Region {
        Region {
            id: 7,
            peers: roles
                .iter()
                .map(|&(store, role)| Peer {
                    id: store * 10,
                    store_id: store,
                    role: role as i32,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn heard(view: &mut SpaceView, store: u64, low: bool) {
        let from = RaftMessage {
            from_peer: Some(Peer {
                id: store * 10,
                store_id: store,
                role: 0,
            }),
            from_store_low_space: low,
            ..Default::default()
        };
        view.on_receive(&from, &Message::default());
    }

    fn stores(e: &RegionError) -> Vec<u64> {
        match &e.error {
            Some(tessera_proto::errorpb::region_error::Error::NoSpace(n)) => n.store_ids.clone(),
            other => panic!("not NoSpace: {other:?}"),
        }
    }

    #[test]
    fn a_leader_refuses_user_writes_only_when_no_quorum_has_space() {
        let three = region(&[
            (1, PeerRole::Voter),
            (2, PeerRole::Voter),
            (3, PeerRole::Voter),
        ]);
        let mut view = SpaceView::default();
        assert!(view.refusal(1, &three).is_none());
        heard(&mut view, 2, true);
        assert!(view.refusal(1, &three).is_none(), "two of three have space");
        heard(&mut view, 3, true);
        assert_eq!(stores(&view.refusal(1, &three).unwrap()), vec![2, 3]);
        heard(&mut view, 3, false);
        assert!(view.refusal(1, &three).is_none(), "space came back");
        view.local.set_low(true);
        assert_eq!(stores(&view.refusal(1, &three).unwrap()), vec![1]);
    }

    #[test]
    fn learners_do_not_count_and_joint_configurations_need_both_halves() {
        let mut view = SpaceView::default();
        let with_learner = region(&[
            (1, PeerRole::Voter),
            (2, PeerRole::Voter),
            (3, PeerRole::Learner),
        ]);
        heard(&mut view, 3, true);
        assert!(view.refusal(1, &with_learner).is_none());
        // Outgoing {1, 2, 4}, incoming {1, 2, 3}: with 2 and 4 low the
        // outgoing half has one store with space of three.
        let joint = region(&[
            (1, PeerRole::Voter),
            (2, PeerRole::Voter),
            (3, PeerRole::IncomingVoter),
            (4, PeerRole::DemotingVoter),
        ]);
        heard(&mut view, 3, false);
        heard(&mut view, 2, true);
        assert!(view.refusal(1, &joint).is_none());
        heard(&mut view, 4, true);
        assert_eq!(stores(&view.refusal(1, &joint).unwrap()), vec![2, 4]);
    }

    #[test]
    fn a_low_follower_drops_only_what_would_store_data() {
        let mut view = SpaceView::default();
        let from = RaftMessage::default();
        let append = |data: &[u8], kind: EntryType| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgAppend);
            let mut e = Entry::default();
            e.set_entry_type(kind);
            e.data = data.to_vec().into();
            m.set_entries(vec![e].into());
            m
        };
        let write = append(b"put", EntryType::EntryNormal);
        assert!(!view.on_receive(&from, &write), "not low: nothing dropped");
        view.local.set_low(true);
        assert!(view.on_receive(&from, &write));
        let mut snapshot = Message::default();
        snapshot.set_msg_type(MessageType::MsgSnapshot);
        assert!(view.on_receive(&from, &snapshot));
        assert!(!view.on_receive(&from, &append(b"", EntryType::EntryNormal)));
        assert!(!view.on_receive(&from, &append(b"cc", EntryType::EntryConfChangeV2)));
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        assert!(!view.on_receive(&from, &heartbeat));
    }
}
