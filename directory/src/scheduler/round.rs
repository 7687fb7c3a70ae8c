//! [`Round`]: what every rule of one scheduling round sees and shares —
//! the replicated state, the leader's view, the decisions so far and the
//! ids at hand — with the helpers the rules have in common.
//!
//! Invariants every rule keeps through [`Round::add_operator`]: a region
//! has at most one operator; an operator has at least one step; a store
//! that is not down takes part in at most `max_operators_per_store`
//! operators ([`Round::busy`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tessera_proto::directorypb::StoreStats;
use tessera_proto::metapb::{Peer, PeerRole, Region, StoreState};

use super::operator::{Operator, OperatorKind, Step};
use super::{Decisions, ScheduleConfig};
use crate::leader::LeaderState;
use crate::state::DirectoryState;

/// One round's view and decisions.
pub(super) struct Round<'a> {
    pub state: &'a DirectoryState,
    pub cfg: &'a ScheduleConfig,
    pub leader: &'a mut LeaderState,
    pub alloc_id: &'a mut dyn FnMut() -> Option<u64>,
    pub out: Decisions,
    /// Every store's lifecycle state, as the leader sees it now.
    pub store_states: BTreeMap<u64, StoreState>,
    /// Replicas per store.
    pub region_counts: HashMap<u64, usize>,
    /// Regions in a merge their leaders reported (`LeaderState::reported_merges`).
    pub merging: HashSet<u64>,
}

impl<'a> Round<'a> {
    pub fn new(
        state: &'a DirectoryState,
        leader: &'a mut LeaderState,
        cfg: &'a ScheduleConfig,
        alloc_id: &'a mut dyn FnMut() -> Option<u64>,
    ) -> Self {
        let store_states = state
            .stores
            .values()
            .map(|s| (s.id, leader.store_state(s, &cfg.lifecycle)))
            .collect();
        let mut region_counts: HashMap<u64, usize> = HashMap::new();
        for r in state.regions.values() {
            for p in &r.peers {
                *region_counts.entry(p.store_id).or_default() += 1;
            }
        }
        let merging = leader.reported_merges(state);
        Round {
            merging,
            state,
            cfg,
            leader,
            alloc_id,
            out: Decisions::default(),
            store_states,
            region_counts,
        }
    }

    pub fn state_of(&self, store_id: u64) -> StoreState {
        self.store_states
            .get(&store_id)
            .copied()
            .unwrap_or(StoreState::Tombstone)
    }

    /// A store whose replicas must move off: down, decommissioned or gone.
    pub fn is_bad(&self, store_id: u64) -> bool {
        matches!(
            self.state_of(store_id),
            StoreState::Down | StoreState::Offline | StoreState::Tombstone
        )
    }

    pub fn zone(&self, store_id: u64) -> Option<&'a str> {
        let zone_label = &self.cfg.zone_label;
        self.state.stores.get(&store_id).and_then(|s| {
            s.labels
                .iter()
                .find(|l| &l.key == zone_label)
                .map(|l| l.value.as_str())
        })
    }

    pub fn up_stores(&self) -> Vec<u64> {
        self.store_states
            .iter()
            .filter(|(_, s)| **s == StoreState::Up)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The stores whose leaders are evicted (`tessera store
    /// evict-leaders`): they lead nothing the scheduler can move away.
    pub fn evicted_stores(&self) -> HashSet<u64> {
        self.state
            .stores
            .values()
            .filter(|s| s.evict_leaders)
            .map(|s| s.id)
            .collect()
    }

    /// What `store_id` said in its last heartbeat, if it said anything.
    fn stats(&self, store_id: u64) -> Option<&StoreStats> {
        self.leader.stores.get(&store_id).map(|r| &r.stats)
    }

    /// Whether `store_id` said in its last heartbeat that its poller rounds
    /// are slow (a slow disk).
    pub fn is_degraded(&self, store_id: u64) -> bool {
        self.stats(store_id).is_some_and(|s| s.degraded)
    }

    /// Whether `store_id` said in its last heartbeat that it is below its
    /// free-space threshold (the NOSPACE alarm).
    pub fn is_low_on_space(&self, store_id: u64) -> bool {
        self.stats(store_id).is_some_and(|s| s.low_space)
    }

    /// Whether `store_id`'s disk is at least [`NEARLY_FULL_RATIO`] used: it
    /// receives a replica only when no other store can.
    pub fn is_nearly_full(&self, store_id: u64) -> bool {
        self.stats(store_id).is_some_and(|s| {
            s.capacity_bytes > 0
                && (s.capacity_bytes.saturating_sub(s.available_bytes) as f64)
                    >= NEARLY_FULL_RATIO * s.capacity_bytes as f64
        })
    }

    /// Free bytes `store_id` reported last (0 if it never did).
    pub fn available_on(&self, store_id: u64) -> u64 {
        self.stats(store_id).map_or(0, |s| s.available_bytes)
    }

    /// Whether `store_id` is `Up` and neither degraded nor low on space:
    /// replicas and leaderships may go to it. (A stalled store stops
    /// heartbeating, so it is not `Up` for long.)
    pub fn is_healthy(&self, store_id: u64) -> bool {
        self.state_of(store_id) == StoreState::Up
            && !self.is_degraded(store_id)
            && !self.is_low_on_space(store_id)
    }

    /// Every store [`Round::is_healthy`].
    pub fn healthy_stores(&self) -> Vec<u64> {
        let mut up = self.up_stores();
        up.retain(|s| self.is_healthy(*s));
        up
    }

    pub fn replicas_on(&self, store_id: u64) -> usize {
        self.region_counts.get(&store_id).copied().unwrap_or(0)
    }

    /// Whether `store_id` takes part in as many operators as it may.
    /// Nothing runs on a store that is down; it does not limit anything.
    pub fn busy(&self, store_id: u64) -> bool {
        !self.is_bad(store_id)
            && self.leader.operators_on(store_id) >= self.cfg.max_operators_per_store
    }

    /// Whether an operator runs on `region_id`, or a merge into it, or a
    /// merge its leader (or its source's) reports: the rules leave a
    /// merge's source and target alone until the merge ends.
    pub fn has_operator(&self, region_id: u64) -> bool {
        self.leader.operators.contains_key(&region_id)
            || self.merging.contains(&region_id)
            || self
                .leader
                .operators
                .values()
                .any(|op| op.merge_target() == Some(region_id))
    }

    /// The store leading `region_id`, as last reported.
    pub fn leader_store(&self, region_id: u64) -> Option<u64> {
        self.leader
            .regions
            .get(&region_id)
            .and_then(|s| s.leader)
            .map(|l| l.store_id)
    }

    /// Where `region_id`'s leadership will be: the destination of a
    /// leader transfer its operator has still to make, or the store
    /// leading it now (the leader rules count leaders this way).
    pub fn leader_destination(&self, region_id: u64) -> Option<u64> {
        let pending = self.leader.operators.get(&region_id).and_then(|o| {
            o.steps[o.current.min(o.steps.len() - 1)..]
                .iter()
                .find_map(|s| match s {
                    Step::TransferLeader { to_store_id } => Some(*to_store_id),
                    _ => None,
                })
        });
        pending.or(self.leader_store(region_id))
    }

    /// Where `region`'s replicas will be once its operator's remaining
    /// steps are made: its stores, with the replica an operator adds and
    /// without the one it removes (the replica rules count them this way).
    pub fn replica_destinations(&self, region: &Region) -> Vec<u64> {
        let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
        if let Some(op) = self.leader.operators.get(&region.id) {
            for (store_id, added) in op.pending_replica_changes() {
                if !added {
                    stores.retain(|s| *s != store_id);
                } else if !stores.contains(&store_id) {
                    stores.push(store_id);
                }
            }
        }
        stores
    }

    /// Written keys per second its leader last reported for `region_id`
    /// (0 before any report): what each of its replicas applies.
    pub fn write_keys_per_sec(&self, region_id: u64) -> f64 {
        self.leader
            .regions
            .get(&region_id)
            .map_or(0.0, |s| s.write_keys_per_sec)
    }

    /// Read and written keys per second its leader last reported for
    /// `region_id` (0 before any report).
    pub fn keys_per_sec(&self, region_id: u64) -> f64 {
        self.leader
            .regions
            .get(&region_id)
            .map_or(0.0, |s| s.keys_per_sec)
    }

    pub fn next_id(&mut self) -> Option<u64> {
        (self.alloc_id)()
    }

    /// Starts an operator on `region_id` unless it has one already (or
    /// there is nothing to do).
    pub fn add_operator(&mut self, region_id: u64, kind: OperatorKind, steps: Vec<Step>) {
        self.add_operator_because(region_id, kind, steps, kind.reason().to_string());
    }

    /// [`Round::add_operator`], saying why in the rule's own words (shown
    /// by `tessera operator list`).
    pub fn add_operator_because(
        &mut self,
        region_id: u64,
        kind: OperatorKind,
        steps: Vec<Step>,
        reason: String,
    ) {
        if self.has_operator(region_id) || steps.is_empty() {
            return;
        }
        let mut op = Operator::new(
            self.leader.next_operator,
            region_id,
            kind,
            steps,
            self.cfg.operator_timeout,
        );
        op.reason = reason;
        self.leader.next_operator += 1;
        self.leader.operators.insert(region_id, op);
        self.out.created.push(kind);
    }

    /// The best `Up` store to receive a replica of `region`: not degraded,
    /// not low on space, not holding it, not busy, in a zone the region
    /// does not use yet if possible, not nearly full if possible, with the
    /// fewest replicas, then the most free space.
    pub fn pick_target(&self, region: &Region, leaving: Option<u64>) -> Option<u64> {
        let used_zones: BTreeSet<&str> = region
            .peers
            .iter()
            .filter(|p| Some(p.store_id) != leaving && !self.is_bad(p.store_id))
            .filter_map(|p| self.zone(p.store_id))
            .collect();
        self.healthy_stores()
            .into_iter()
            .filter(|s| region.peers.iter().all(|p| p.store_id != *s))
            .filter(|s| !self.busy(*s))
            .min_by_key(|s| {
                let zone_clash = self.zone(*s).is_some_and(|z| used_zones.contains(z));
                (
                    zone_clash,
                    self.is_nearly_full(*s),
                    self.replicas_on(*s),
                    std::cmp::Reverse(self.available_on(*s)),
                    *s,
                )
            })
    }
}

/// The share of a store's disk in use from which it is "nearly full" and
/// placed on only when nothing else fits (PD's high-space ratio, roughly).
pub const NEARLY_FULL_RATIO: f64 = 0.9;

pub(super) fn is_voter(p: &Peer) -> bool {
    matches!(
        PeerRole::try_from(p.role).unwrap_or(PeerRole::Voter),
        PeerRole::Voter | PeerRole::IncomingVoter
    )
}

/// The steps that move a replica onto `target` (as peer `peer_id`) and off
/// `source`, if any: a learner first, promoted once caught up, then the
/// old replica removed — never fewer voters than before.
pub(super) fn move_steps(target: u64, peer_id: u64, source: Option<u64>) -> Vec<Step> {
    let mut steps = vec![
        Step::AddLearner {
            store_id: target,
            peer_id,
        },
        Step::PromoteLearner { store_id: target },
    ];
    if let Some(s) = source {
        steps.push(Step::RemovePeer { store_id: s });
    }
    steps
}
