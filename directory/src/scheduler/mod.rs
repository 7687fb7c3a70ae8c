//! The scheduler: on the directory leader, every `interval`, it looks at
//! the cluster and decides. Each decision about a region is an
//! [`operator::Operator`] whose steps reach the region's leader in
//! heartbeat replies; decisions about stores and placement go through Raft.
//!
//! Rules, in order of priority:
//! 1. **tombstone**: a decommissioned (`Offline`) store that holds no
//!    replica becomes `Tombstone`;
//! 2. **repair**: a region with a replica on a `Down`, `Offline` or
//!    `Tombstone` store, or with fewer voters than `max_replicas`, gets a new
//!    replica on a healthy store and loses the bad one; extra voters and
//!    stray learners are removed;
//! 3. **zone**: two replicas in one zone move apart when a store in an
//!    unused zone can take one;
//! 4. **keyspace**: a keyspace's boundaries (and a hash keyspace's hash
//!    ranges) become region boundaries;
//! 5. **placement**: a hash keyspace's regions are placed with a
//!    consistent hash ring over the stores (recorded through Raft, and
//!    rebuilt by a recorded decision once the `Up` stores have changed for
//!    `placement_rebalance_after`) and replicas move to match it;
//! 6. **split**: a region reported above 1.5 × the split size is split,
//!    and so is a range keyspace's region hot for a while (where its load
//!    divides; "hot" follows the cluster's load); **evict-leader**: a region led from a store whose leaders
//!    an administrator evicted hands its leadership to another voter;
//! 7. **merge**: small, cold neighbours of one range keyspace are merged
//!    (with hysteresis against the split rules);
//! 8. **hot-leader**: leaderships of busy regions move from the store
//!    whose leaders serve the most keys per second to one serving fewer;
//!    **hot-region**: with more stores than replicas, replicas of busy
//!    regions move from the store applying the most written keys per
//!    second to one applying fewer; then **balance-leader**, 9.
//!    **balance-region**: leader and replica counts are evened out across
//!    `Up` stores (no leader goes to an evicted store; a count move that
//!    would undo the load balance is skipped, and the coldest region
//!    moves).
//!
//! Merging waits, like balancing, while anything needs repair; evicting
//! leaders does not.
//!
//! Each rule is a module of [`rules`] with its invariants in prose;
//! [`round::Round`] is what they share (the view of stores and replicas,
//! the operators, the ids at hand) and [`plan`] runs them in order.
//!
//! Every operator has a timeout, and no store takes part in more than
//! `max_operators_per_store` operators at once (stores that are down do not
//! count: nothing runs on them). An admin operator (split, move,
//! transfer-leader from the CLI) cancels a balance operator on its region;
//! it is refused while any other operator runs there.

pub mod operator;
mod round;
mod rules;
#[cfg(test)]
mod tests;

use std::time::Duration;

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::metapb::{Region, StoreState};

use crate::leader::{LeaderState, LifecycleConfig};
use crate::state::DirectoryState;
use operator::OperatorKind;
use round::Round;
pub use rules::hot_leader::HotLeaderConfig;
pub use rules::hot_region::HotRegionConfig;
pub use rules::merge::MergeConfig;
pub use rules::split::LoadSplitConfig;

/// What one round decided.
#[derive(Default, Debug)]
pub struct Decisions {
    /// Kinds of the operators created this round.
    pub created: Vec<OperatorKind>,
    /// Kinds of the operators dropped this round.
    pub cancelled: Vec<OperatorKind>,
    /// What to propose through Raft (store states, placements).
    pub commands: Vec<Cmd>,
}

/// Decides one round. Pure: it reads the replicated state and the leader's
/// view, adds operators to the leader's view, takes ids from `alloc_id`
/// and returns the commands to propose.
pub fn plan(
    state: &DirectoryState,
    leader: &mut LeaderState,
    cfg: &ScheduleConfig,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Decisions {
    let mut round = Round::new(state, leader, cfg, alloc_id);
    drop_stale_operators(&mut round);
    rules::tombstone::plan(&mut round);

    // Regions whose leader reported: only those can carry out steps.
    let ready: Vec<&Region> = state
        .regions
        .values()
        .filter(|r| round.leader_store(r.id).is_some())
        .collect();
    for region in &ready {
        if round.has_operator(region.id) {
            continue;
        }
        if !rules::repair::plan_region(&mut round, region) {
            rules::zone::plan_region(&mut round, region);
        }
    }
    let complete = rules::keyspace::plan(&mut round);
    let placed = rules::placement::place(&mut round, &complete);
    rules::placement::rebalance(&mut round, &complete);
    for region in &ready {
        rules::placement::plan_region(&mut round, region);
    }
    rules::split::measure(&mut round);
    for region in &ready {
        rules::split::plan_region(&mut round, region);
    }
    rules::evict_leader::plan(&mut round, &ready);
    // Balancing waits while anything needs repair, and counts what the
    // operators in flight will change.
    let repairing = round
        .leader
        .operators
        .values()
        .any(|o| o.kind == OperatorKind::Repair)
        || ready
            .iter()
            .any(|r| r.peers.iter().any(|p| round.is_bad(p.store_id)));
    if !repairing {
        rules::merge::plan(&mut round, &ready);
        rules::hot_leader::plan(&mut round, &ready);
        rules::hot_region::plan(&mut round, &ready, &placed);
        rules::balance_leader::plan(&mut round, &ready);
        rules::balance_region::plan(&mut round, &ready, &placed);
    }
    round.out
}

/// Drops the operators whose remaining steps need a store that is no
/// longer `Up`; the rules decide about their regions again.
fn drop_stale_operators(round: &mut Round) {
    let stale: Vec<u64> = round
        .leader
        .operators
        .values()
        .filter(|op| {
            op.steps[op.current.min(op.steps.len() - 1)..]
                .iter()
                .any(|s| {
                    s.target_store()
                        .is_some_and(|t| round.state_of(t) != StoreState::Up)
                })
        })
        .map(|op| op.region_id)
        .collect();
    for region_id in stale {
        if let Some(op) = round.leader.operators.remove(&region_id) {
            tracing::info!(region_id, operator = %op.id, "operator cancelled: its target store is not up");
            round.out.cancelled.push(op.kind);
        }
    }
    // A merge whose target changed under it: the source's leader would
    // only be refused (or roll back); the rules decide again.
    let outdated: Vec<(u64, String)> = round
        .leader
        .operators
        .values()
        .filter(|op| round.state.regions.contains_key(&op.region_id))
        .filter_map(|op| Some((op.region_id, op.merge_outdated(round.state)?)))
        .collect();
    for (region_id, why) in outdated {
        if let Some(op) = round.leader.operators.remove(&region_id) {
            tracing::info!(region_id, operator = %op.id, why, "merge operator cancelled");
            round.out.cancelled.push(op.kind);
        }
    }
}

#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub interval: Duration,
    /// Voters every region should have.
    pub max_replicas: usize,
    pub operator_timeout: Duration,
    pub max_operators_per_store: usize,
    /// New balance operators per round, to keep balancing gentle.
    pub max_balance_per_round: usize,
    pub region_split_size_bytes: u64,
    /// Balance when the most and least loaded `Up` stores differ by more
    /// than this many regions (or leaders).
    pub balance_threshold: usize,
    pub lifecycle: LifecycleConfig,
    /// The label whose values are zones.
    pub zone_label: String,
    /// The merge rule's settings.
    pub merge: MergeConfig,
    /// The load-based split's settings.
    pub load_split: LoadSplitConfig,
    /// The hot-leader rule's settings.
    pub hot_leader: HotLeaderConfig,
    /// The hot-region rule's settings.
    pub hot_region: HotRegionConfig,
    /// How long the `Up` stores must stay the same before a hash
    /// keyspace's ring is rebuilt over them.
    pub placement_rebalance_after: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            interval: Duration::from_secs(1),
            max_replicas: 3,
            operator_timeout: Duration::from_secs(600),
            max_operators_per_store: 16,
            max_balance_per_round: 4,
            region_split_size_bytes: 96 * 1024 * 1024,
            balance_threshold: 1,
            lifecycle: LifecycleConfig::default(),
            zone_label: "zone".into(),
            merge: MergeConfig::for_split_size(96 * 1024 * 1024),
            load_split: LoadSplitConfig::default(),
            hot_leader: HotLeaderConfig::default(),
            hot_region: HotRegionConfig::default(),
            placement_rebalance_after: Duration::from_secs(300),
        }
    }
}
