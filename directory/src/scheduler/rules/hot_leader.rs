//! Rule 8a, **hot-leader**: leaderships spread over the stores by the load
//! their leaders serve, not only by their number (PD's hot-region
//! scheduler, for leaders).
//!
//! A store's load is the read and written keys per second its leaders'
//! last reports give (a leader transfer in flight counting at its
//! destination), over the `Up` stores that are not degraded and whose
//! leaders are not evicted. While the busiest store serves more than
//! `hot_leader.min_keys_per_sec`, and more than `hot_leader.ratio` times
//! another store holding a voter of one of its regions, one of its regions
//! hands its leadership to such a store — the move after which the busier
//! of the two serves least — at most `max_balance_per_round` a round. (A
//! store holding no replica of the busy store's regions cannot take their
//! leaderships; it does not count.)
//!
//! **No flapping.** A move is made only when the destination, with the
//! region, still serves less than the source did before it, so the
//! busiest store's load only falls; a region hotter than the gap between
//! the two stores is never moved (one very hot region is the load-based
//! split's to divide, not this rule's to bounce). The count balancer
//! (balance-leader) moves the coldest regions it can and never makes a
//! move this rule would call uneven ([`HotLeaderConfig::unbalances`]).
//!
//! Replicas are this rule's sibling's (`hot_region`): every replica
//! applies every write, so with three replicas on three stores the leaders
//! are all there is to spread; with more stores than replicas, replicas
//! move by the writes they apply.

use std::collections::HashMap;

use tessera_proto::metapb::Region;

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::{is_voter, Round};

/// Settings of the hot-leader rule.
#[derive(Clone, Debug)]
pub struct HotLeaderConfig {
    /// The busiest store's load over the least busy one's above which
    /// leaderships move (at least 1.1).
    pub ratio: f64,
    /// Read and written keys per second the busiest store's leaders must
    /// serve before anything moves; 0 turns the rule off.
    pub min_keys_per_sec: u64,
}

impl Default for HotLeaderConfig {
    fn default() -> Self {
        HotLeaderConfig {
            ratio: 1.25,
            min_keys_per_sec: 1000,
        }
    }
}

impl HotLeaderConfig {
    /// Whether moving a leadership serving `moved` keys per second, after
    /// which its source's leaders serve `from_after` and its destination's
    /// `to_after`, leaves them uneven by this rule's measure.
    pub fn unbalances(&self, moved: f64, from_after: f64, to_after: f64) -> bool {
        uneven(
            self.ratio,
            self.min_keys_per_sec,
            moved,
            from_after,
            to_after,
        )
    }
}

/// The load rules' shared test (hot-leader, hot-region): whether a move of
/// `moved` load, after which its source carries `from_after` and its
/// destination `to_after`, leaves the destination above `min` (0: the rule
/// is off) and more than `ratio` times the source.
pub(in crate::scheduler) fn uneven(
    ratio: f64,
    min: u64,
    moved: f64,
    from_after: f64,
    to_after: f64,
) -> bool {
    min > 0 && moved > 0.0 && to_after > min as f64 && to_after > ratio * from_after
}

/// Keys per second served by the leaders of `ready` regions on each of
/// `stores` (a transfer in flight counts at its destination).
pub(in crate::scheduler) fn leader_loads(
    round: &Round,
    ready: &[&Region],
    stores: &[u64],
) -> HashMap<u64, f64> {
    let mut loads: HashMap<u64, f64> = stores.iter().map(|s| (*s, 0.0)).collect();
    for r in ready {
        if let Some(l) = round
            .leader_destination(r.id)
            .and_then(|s| loads.get_mut(&s))
        {
            *l += round.keys_per_sec(r.id);
        }
    }
    loads
}

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region]) {
    let cfg = round.cfg.hot_leader.clone();
    if cfg.min_keys_per_sec == 0 {
        return;
    }
    let evicted = round.evicted_stores();
    let mut stores = round.healthy_stores();
    stores.retain(|s| !evicted.contains(s));
    if stores.len() < 2 {
        return;
    }
    let mut loads = leader_loads(round, ready, &stores);
    for _ in 0..round.cfg.max_balance_per_round {
        let (from, most) = loads
            .iter()
            .map(|(s, l)| (*s, *l))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .expect("stores");
        if most <= cfg.min_keys_per_sec as f64 {
            break;
        }
        // (region, destination, region's load, destination's load)
        let best = ready
            .iter()
            .filter(|r| !round.has_operator(r.id) && round.leader_store(r.id) == Some(from))
            .flat_map(|r| {
                let load = round.keys_per_sec(r.id);
                let loads = &loads;
                r.peers
                    .iter()
                    .filter(move |p| is_voter(p) && p.store_id != from)
                    .filter_map(move |p| Some((r.id, p.store_id, load, *loads.get(&p.store_id)?)))
            })
            .filter(|&(_, _, load, to_load)| {
                most > cfg.ratio * to_load && load > 0.0 && to_load + load < most
            })
            .min_by(|a, b| {
                let after = |m: &(u64, u64, f64, f64)| (m.3 + m.2).max(most - m.2);
                after(a).total_cmp(&after(b))
            });
        let Some((region_id, to, load, to_load)) = best else {
            break;
        };
        let reason = format!(
            "store {from}'s leaders serve {most:.0} keys/s, store {to}'s {to_load:.0}; \
             this region {load:.0}"
        );
        round.add_operator_because(
            region_id,
            OperatorKind::HotLeader,
            vec![Step::TransferLeader { to_store_id: to }],
            reason,
        );
        *loads.get_mut(&from).expect("store") -= load;
        *loads.get_mut(&to).expect("store") += load;
    }
}
