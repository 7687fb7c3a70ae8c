//! Rule 8b, **hot-region**: replicas spread over the stores by the writes
//! they apply, not only by their number (PD's hot-region scheduler, for
//! peers).
//!
//! Every replica applies every write of its region, so a store's replica
//! load is the written keys per second of the regions it holds a replica
//! of (their leaders' last reports; an operator in flight counts as done:
//! its new replica loads its destination, its removed one no longer loads
//! its source). It matters only with more stores than replicas: with three
//! replicas on three stores every store applies every write, and the
//! leaders are all there is to spread (rule 8a, `hot_leader`).
//!
//! Over the `Up` stores that are neither degraded nor low on space: while
//! the busiest store applies more than `hot_region.min_write_keys_per_sec`,
//! and more than `hot_region.ratio` times a store holding no replica of one
//! of its regions, one of those regions moves its replica there (a learner
//! first, promoted, then the busy store's replica removed: never fewer
//! voters) — the move after which the busier of the two applies least —
//! at most `max_balance_per_round` a round. A destination that would put
//! two of the region's replicas in one zone, that is nearly full or busy
//! with operators, is not used. Regions of a hash keyspace are not moved:
//! their placement is recorded and changes only by a recorded rebalance
//! (rule 5).
//!
//! **No flapping.** A move is made only when the destination, with the
//! region, still applies less than the source did before it, so the
//! busiest store's load only falls; a region hotter than the gap between
//! the two stores is never moved (that one is the load-based split's to
//! divide). The count balancer (balance-region) moves the coldest replicas
//! it can and never makes a move this rule would call uneven
//! ([`HotRegionConfig::unbalances`]).

use std::collections::{BTreeSet, HashMap};

use tessera_proto::metapb::Region;

use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::{move_steps, Round};

/// Settings of the hot-region rule.
#[derive(Clone, Debug)]
pub struct HotRegionConfig {
    /// The busiest store's replica load over another's above which a
    /// replica moves (at least 1.1).
    pub ratio: f64,
    /// Written keys per second the busiest store's replicas must apply
    /// before anything moves; 0 turns the rule off.
    pub min_write_keys_per_sec: u64,
}

impl Default for HotRegionConfig {
    fn default() -> Self {
        HotRegionConfig {
            ratio: 1.25,
            min_write_keys_per_sec: 1000,
        }
    }
}

impl HotRegionConfig {
    /// Whether moving a replica applying `moved` written keys per second,
    /// after which its source applies `from_after` and its destination
    /// `to_after`, leaves them uneven by this rule's measure.
    pub fn unbalances(&self, moved: f64, from_after: f64, to_after: f64) -> bool {
        super::hot_leader::uneven(
            self.ratio,
            self.min_write_keys_per_sec,
            moved,
            from_after,
            to_after,
        )
    }
}

/// Written keys per second applied by the replicas of `ready` regions on
/// each of `stores` (operators in flight counted as done).
pub(in crate::scheduler) fn replica_loads(
    round: &Round,
    ready: &[&Region],
    stores: &[u64],
) -> HashMap<u64, f64> {
    let mut loads: HashMap<u64, f64> = stores.iter().map(|s| (*s, 0.0)).collect();
    for r in ready {
        let load = round.write_keys_per_sec(r.id);
        if load <= 0.0 {
            continue;
        }
        for s in round.replica_destinations(r) {
            if let Some(l) = loads.get_mut(&s) {
                *l += load;
            }
        }
    }
    loads
}

/// One replica move this rule would make.
struct Move {
    region_id: u64,
    to: u64,
    load: f64,
    to_load: f64,
}

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region], placed: &BTreeSet<u64>) {
    let cfg = round.cfg.hot_region.clone();
    if cfg.min_write_keys_per_sec == 0 {
        return;
    }
    let stores = round.healthy_stores();
    if stores.len() <= round.cfg.max_replicas {
        return; // every store holds every region's replica already
    }
    let mut loads = replica_loads(round, ready, &stores);
    for _ in 0..round.cfg.max_balance_per_round {
        let (from, most) = loads
            .iter()
            .map(|(s, l)| (*s, *l))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .expect("stores");
        if most <= cfg.min_write_keys_per_sec as f64 || round.busy(from) {
            break;
        }
        let Some(best) = best_move(round, ready, placed, &loads, from, most) else {
            break;
        };
        let Some(peer_id) = round.next_id() else {
            break;
        };
        let reason = format!(
            "store {from}'s replicas apply {most:.0} written keys/s, store {}'s {:.0}; \
             this region {:.0}",
            best.to, best.to_load, best.load
        );
        round.add_operator_because(
            best.region_id,
            OperatorKind::HotRegion,
            move_steps(best.to, peer_id, Some(from)),
            reason,
        );
        *loads.get_mut(&from).expect("store") -= best.load;
        *loads.get_mut(&best.to).expect("store") += best.load;
    }
}

/// The replica move off `from` (which applies `most`) after which the
/// busier of the two stores applies least, if one lowers the busiest load.
fn best_move(
    round: &Round,
    ready: &[&Region],
    placed: &BTreeSet<u64>,
    loads: &HashMap<u64, f64>,
    from: u64,
    most: f64,
) -> Option<Move> {
    let ratio = round.cfg.hot_region.ratio;
    ready
        .iter()
        .filter(|r| {
            !round.has_operator(r.id)
                && !placed.contains(&r.id)
                && r.peers.iter().any(|p| p.store_id == from)
                && r.peers.iter().all(|p| !round.is_bad(p.store_id))
        })
        .filter_map(|r| {
            let load = round.write_keys_per_sec(r.id);
            (load > 0.0).then_some((*r, load))
        })
        .flat_map(|(r, load)| {
            loads
                .iter()
                .filter(move |(to, _)| {
                    r.peers.iter().all(|p| p.store_id != **to)
                        && !round.busy(**to)
                        && !round.is_nearly_full(**to)
                        && !zone_clash(round, r, from, **to)
                })
                .map(move |(to, to_load)| Move {
                    region_id: r.id,
                    to: *to,
                    load,
                    to_load: *to_load,
                })
        })
        .filter(|m| most > ratio * m.to_load && m.to_load + m.load < most)
        .min_by(|a, b| {
            let after = |m: &Move| (m.to_load + m.load).max(most - m.load);
            after(a)
                .total_cmp(&after(b))
                .then(a.region_id.cmp(&b.region_id))
                .then(a.to.cmp(&b.to))
        })
}

/// Whether moving `region`'s replica from `from` to `to` puts two of its
/// replicas in one zone where they were not.
fn zone_clash(round: &Round, region: &Region, from: u64, to: u64) -> bool {
    let Some(zone) = round.zone(to) else {
        return false;
    };
    round.zone(from) != Some(zone)
        && region
            .peers
            .iter()
            .any(|p| p.store_id != from && round.zone(p.store_id) == Some(zone))
}
