//! Rule 8, **balance-region**: replicas spread evenly over the `Up`
//! stores.
//!
//! Replicas are counted per store, with what operators in flight will add
//! and remove. While the busiest store holds more than `balance_threshold`
//! replicas above the least busy one that is not busy with operators, one
//! replica of a healthy region moves from the first to the second — at
//! most `max_balance_per_round` a round: the region applying the fewest
//! written keys per second, and never one whose move the hot-region rule
//! would call uneven (rule 8b, [`HotRegionConfig::unbalances`]), so counts
//! even out with cold replicas and a hot one is not moved back. Regions
//! with a recorded placement (rule 5) are not moved.
//!
//! [`HotRegionConfig::unbalances`]: super::hot_region::HotRegionConfig::unbalances

use std::collections::{BTreeSet, HashMap};

use tessera_proto::metapb::Region;

use super::hot_region::replica_loads;
use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::{move_steps, Round};

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region], placed: &BTreeSet<u64>) {
    // A degraded store or one low on space neither receives nor counts (it
    // keeps what it has).
    let up = round.healthy_stores();
    if up.len() < 2 {
        return;
    }
    let mut counts: HashMap<u64, usize> = up.iter().map(|s| (*s, round.replicas_on(*s))).collect();
    // Replicas that operators in flight will add or remove.
    for op in round.leader.operators.values() {
        for (store_id, added) in op.pending_replica_changes() {
            if let Some(c) = counts.get_mut(&store_id) {
                *c = if added { *c + 1 } else { c.saturating_sub(1) };
            }
        }
    }
    // Measured once a move is due (a walk over every region).
    let mut loads: Option<HashMap<u64, f64>> = None;
    for _ in 0..round.cfg.max_balance_per_round {
        let (&max_s, &max_c) = counts
            .iter()
            .max_by_key(|(s, c)| (**c, **s))
            .expect("stores");
        let candidates: Vec<u64> = counts
            .keys()
            .filter(|s| !round.busy(**s))
            .copied()
            .collect();
        let Some(&min_s) = candidates.iter().min_by_key(|s| (counts[s], **s)) else {
            break;
        };
        if max_c <= counts[&min_s] + round.cfg.balance_threshold || round.busy(max_s) {
            break;
        }
        let loads = loads.get_or_insert_with(|| replica_loads(round, ready, &up));
        let (max_load, min_load) = (load_on(loads, max_s), load_on(loads, min_s));
        let hot = &round.cfg.hot_region;
        let candidate = ready
            .iter()
            .filter(|r| {
                !round.has_operator(r.id)
                    && !placed.contains(&r.id)
                    && r.peers.iter().any(|p| p.store_id == max_s)
                    && r.peers.iter().all(|p| p.store_id != min_s)
                    && r.peers.iter().all(|p| !round.is_bad(p.store_id))
            })
            .map(|r| (*r, round.write_keys_per_sec(r.id)))
            .filter(|(_, load)| !hot.unbalances(*load, max_load - load, min_load + load))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((r, load)) = candidate else { break };
        let Some(id) = round.next_id() else { break };
        round.add_operator(
            r.id,
            OperatorKind::BalanceRegion,
            move_steps(min_s, id, Some(max_s)),
        );
        *counts.get_mut(&max_s).expect("store") -= 1;
        *counts.get_mut(&min_s).expect("store") += 1;
        loads.insert(max_s, max_load - load);
        loads.insert(min_s, min_load + load);
    }
}

fn load_on(loads: &HashMap<u64, f64>, store_id: u64) -> f64 {
    loads.get(&store_id).copied().unwrap_or(0.0)
}
