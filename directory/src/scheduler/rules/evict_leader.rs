//! **evict-leader** (`tessera store evict-leaders N`, for maintenance):
//! every region led from a store whose leaders are evicted
//! (`Store.evict_leaders`, recorded through Raft) hands its leadership to
//! a voter on a healthy store whose leaders are not evicted, the one
//! leading the fewest regions (counting this round's decisions). It runs
//! before the balance rules and also while repairs run: draining a store
//! before a restart should not wait for an unrelated repair. A region
//! with no such voter keeps its leader (nothing better exists); one with
//! an operator in flight is handled once that ends. The balance-leader
//! rule never sends a leadership to an evicted store, and an admin
//! transfer there is refused; a leader elected there anyway (its
//! leader died) is moved again next round.

use std::collections::{HashMap, HashSet};

use tessera_proto::metapb::Region;

use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::round::{is_voter, Round};

pub(in crate::scheduler) fn plan(round: &mut Round, ready: &[&Region]) {
    let evicted = round.evicted_stores();
    if evicted.is_empty() {
        return;
    }
    let mut leaders: HashMap<u64, usize> = HashMap::new();
    for r in ready {
        if let Some(s) = round.leader_store(r.id) {
            *leaders.entry(s).or_default() += 1;
        }
    }
    for r in ready {
        let Some(from) = round.leader_store(r.id) else {
            continue;
        };
        if !evicted.contains(&from) || round.has_operator(r.id) {
            continue;
        }
        let Some(to) = best_leader(round, r, &evicted, &leaders) else {
            continue;
        };
        round.add_operator(
            r.id,
            OperatorKind::EvictLeader,
            vec![Step::TransferLeader { to_store_id: to }],
        );
        *leaders.entry(to).or_default() += 1;
    }
}

/// The voter of `region` that should lead instead: healthy, not evicted,
/// not busy, leading the fewest regions.
fn best_leader(
    round: &Round,
    region: &Region,
    evicted: &HashSet<u64>,
    leaders: &HashMap<u64, usize>,
) -> Option<u64> {
    region
        .peers
        .iter()
        .filter(|p| is_voter(p) && !evicted.contains(&p.store_id))
        .map(|p| p.store_id)
        .filter(|s| round.is_healthy(*s) && !round.busy(*s))
        .min_by_key(|s| (leaders.get(s).copied().unwrap_or(0), *s))
}
