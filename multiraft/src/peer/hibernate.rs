//! A peer's side of hibernation (`crate::hibernate`): whether it is idle,
//! asking, asleep or awake, the answers to requests and acknowledgements,
//! waking, and what it drops while asleep.

use raft::StateRole;
use tessera_proto::metapb;

use super::Peer;
use crate::hibernate::{Sleep, Step};
use crate::region;

impl<O: Send + 'static> Peer<O> {
    pub fn is_asleep(&self) -> bool {
        self.sleep == Sleep::Asleep
    }

    /// Whether nothing is pending on this peer: no proposal or read
    /// waiting, every entry persisted, committed and applied, no
    /// membership change, leader transfer or merge under way. (Messages
    /// may still wait to be sent: a heartbeat is not work.)
    fn quiescent(&self) -> bool {
        let raft = &self.raw_node.raft;
        let last = raft.raft_log.last_index();
        self.is_initialized()
            && self.proposals.is_empty()
            && self.reads.is_empty()
            && raft.raft_log.persisted == last
            && raft.raft_log.committed == last
            && self.storage().applied_index() == last
            && !raft.has_pending_conf()
            && raft.lead_transferee.is_none()
            && !self.merge.is_merging()
    }

    /// The other peers of the progress set, if the log is on all of them
    /// and the configuration is not joint (leader only).
    fn fully_replicated_peers(&self) -> Option<Vec<metapb::Peer>> {
        let raft = &self.raw_node.raft;
        let last = raft.raft_log.last_index();
        if !raft.prs().conf().to_conf_state().voters_outgoing.is_empty() {
            return None;
        }
        let mut others = vec![];
        for (id, pr) in raft.prs().iter() {
            if *id == self.peer_id() {
                continue;
            }
            if pr.matched != last {
                return None;
            }
            others.push(*region::find_peer(self.region(), *id)?);
        }
        others.sort_by_key(|p| p.id);
        Some(others)
    }

    /// After a tick of an awake peer: a leader idle for `after_ticks` asks
    /// its followers to hibernate (again every `after_ticks` while they
    /// have not all answered).
    pub fn hibernation_tick(&mut self, after_ticks: usize) -> Step {
        let idle = self.is_leader() && self.quiescent();
        let (term, index) = (self.term(), self.raw_node.raft.raft_log.last_index());
        let due = match &mut self.sleep {
            Sleep::Asleep => return Step::Nothing,
            _ if !idle => {
                self.sleep = Sleep::default();
                return Step::Nothing;
            }
            Sleep::Awake { idle_ticks } => {
                *idle_ticks += 1;
                *idle_ticks >= after_ticks
            }
            Sleep::Asking {
                term: t,
                index: i,
                ticks,
                ..
            } => {
                if (*t, *i) != (term, index) {
                    self.sleep = Sleep::default();
                    return Step::Nothing;
                }
                *ticks += 1;
                *ticks >= after_ticks
            }
        };
        if !due {
            return Step::Nothing;
        }
        let Some(to) = self.fully_replicated_peers() else {
            self.sleep = Sleep::default();
            return Step::Nothing;
        };
        if to.is_empty() {
            self.sleep = Sleep::Asleep;
            return Step::Sleep;
        }
        self.sleep = Sleep::Asking {
            term,
            index,
            acks: vec![],
            ticks: 0,
        };
        Step::Ask { to, term, index }
    }

    /// A request to hibernate from peer `from` at (`term`, `index`): a
    /// follower of that leader at that term, caught up and with nothing
    /// pending, falls asleep and answers (true); otherwise it ignores it.
    pub fn on_hibernate_request(&mut self, from: u64, term: u64, index: u64) -> bool {
        let raft = &self.raw_node.raft;
        let agrees = raft.state == StateRole::Follower
            && raft.term == term
            && raft.leader_id == from
            && from != 0
            && raft.raft_log.last_index() == index
            && self.quiescent();
        if agrees {
            self.sleep = Sleep::Asleep;
        }
        agrees
    }

    /// Peer `from` acknowledged the request at (`term`, `index`): true when
    /// that was the last answer this leader waited for (it is now asleep).
    pub fn on_hibernate_ack(&mut self, from: u64, term: u64, index: u64) -> bool {
        let still_idle = self.is_leader()
            && self.term() == term
            && self.raw_node.raft.raft_log.last_index() == index
            && self.quiescent();
        let Some(others) = self.fully_replicated_peers() else {
            return false;
        };
        let Sleep::Asking {
            term: t,
            index: i,
            acks,
            ..
        } = &mut self.sleep
        else {
            return false;
        };
        if !still_idle || (*t, *i) != (term, index) || !others.iter().any(|p| p.id == from) {
            return false;
        }
        if !acks.contains(&from) {
            acks.push(from);
        }
        if others.iter().all(|p| acks.contains(&p.id)) {
            self.sleep = Sleep::Asleep;
            return true;
        }
        false
    }

    /// A follower woken because its leader's store was silent, that store
    /// heard again: if it still follows the same leader at the same term
    /// (it has not campaigned, nor heard of another leader) with nothing
    /// pending, it sleeps again (true) — as it was, its leader asleep.
    pub fn sleep_again(&mut self) -> bool {
        let raft = &self.raw_node.raft;
        let follows = raft.state == StateRole::Follower && raft.leader_id != 0;
        if follows && !self.is_asleep() && self.quiescent() {
            self.sleep = Sleep::Asleep;
            return true;
        }
        false
    }

    /// Whether an asleep peer may step `msg` without waking: for a
    /// follower, a plain heartbeat of its own leader at its term (an awake
    /// leader may heartbeat asleep followers; answering is all it needs);
    /// for a leader, the answer to a plain heartbeat at its term (one sent
    /// as it asked to hibernate may come back after the last
    /// acknowledgement).
    pub fn keeps_sleeping_on(&self, msg: &raft::eraftpb::Message) -> bool {
        use raft::eraftpb::MessageType::{MsgHeartbeat, MsgHeartbeatResponse};
        let raft = &self.raw_node.raft;
        let plain = msg.context.is_empty() && msg.term == raft.term;
        self.is_asleep()
            && plain
            && match raft.state {
                StateRole::Follower => {
                    msg.get_msg_type() == MsgHeartbeat && msg.from == raft.leader_id
                }
                StateRole::Leader => msg.get_msg_type() == MsgHeartbeatResponse,
                _ => false,
            }
    }

    /// Something happened to this peer: it is awake with its idle count at
    /// zero. True if it was asleep — its election timer then restarts from
    /// zero (never shorter than Raft's: see `crate::hibernate`), and a
    /// leader heartbeats at once.
    pub fn wake(&mut self) -> bool {
        let was_asleep = self.is_asleep();
        self.sleep = Sleep::default();
        if was_asleep {
            self.raw_node.raft.election_elapsed = 0;
            if self.is_leader() {
                self.raw_node.ping();
            }
        }
        was_asleep
    }

    /// Frees what an asleep peer does not need: the entry cache and the
    /// capacity of its queues (all empty: it was quiescent).
    pub fn shrink(&mut self) {
        self.storage_mut().drop_entry_cache();
        self.proposals.shrink_to_fit();
        self.reads.shrink();
        self.last_append_to = Default::default();
        self.peer_cache = Default::default();
        let raft = &mut self.raw_node.raft;
        raft.msgs.shrink_to_fit();
        raft.raft_log.unstable.entries.shrink_to_fit();
    }

    /// The store of this peer's leader (follower) or of its other peers
    /// (leader): whom its sleep depends on.
    pub fn sleep_stores(&self) -> Vec<u64> {
        if self.is_leader() {
            let mut stores: Vec<u64> = self
                .region()
                .peers
                .iter()
                .filter(|p| p.id != self.peer_id())
                .map(|p| p.store_id)
                .collect();
            stores.sort_unstable();
            stores.dedup();
            stores
        } else {
            self.leader().map(|l| l.store_id).into_iter().collect()
        }
    }
}
