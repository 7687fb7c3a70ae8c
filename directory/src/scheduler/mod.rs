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
//! 5. **placement**: a hash keyspace's regions are placed once with a
//!    consistent hash ring over the stores (recorded through Raft) and
//!    replicas move to match it;
//! 6. **split**: a region reported above 1.5 × the split size is split;
//! 7. **balance-leader**, 8. **balance-region**: leader and replica counts
//!    are evened out across `Up` stores.
//!
//! Every operator has a timeout, and no store takes part in more than
//! `max_operators_per_store` operators at once (stores that are down do not
//! count: nothing runs on them). An admin operator (split, move,
//! transfer-leader from the CLI) cancels a balance operator on its region;
//! it is refused while any other operator runs there.

pub mod operator;
mod rules;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::leader::LifecycleConfig;

pub use rules::{plan, Decisions};

/// Operators of the balance rules, which an admin operator may cancel.
pub fn is_balance(kind: &str) -> bool {
    matches!(kind, "balance-leader" | "balance-region")
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
        }
    }
}
