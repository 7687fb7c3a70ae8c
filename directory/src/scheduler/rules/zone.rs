//! Rule 3, **zone**: the replicas of a region spread over zones (the store
//! label `zone_label`). When two replicas share a zone and a store in a
//! zone the region does not use can take one, the replica on the busier
//! store of the crowded zone (never the leader's) moves there. A region
//! with nowhere better to go stays as it is.

use std::collections::BTreeMap;

use tessera_proto::metapb::{Peer, Region};

use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::{move_steps, Round};

pub(in crate::scheduler) fn plan_region(round: &mut Round, region: &Region) {
    let mut by_zone: BTreeMap<&str, Vec<&Peer>> = BTreeMap::new();
    for p in &region.peers {
        if let Some(z) = round.zone(p.store_id) {
            by_zone.entry(z).or_default().push(p);
        }
    }
    let Some((_, crowded)) = by_zone.iter().find(|(_, ps)| ps.len() > 1) else {
        return;
    };
    let leader_store = round.leader_store(region.id);
    let source = crowded
        .iter()
        .filter(|p| Some(p.store_id) != leader_store)
        .max_by_key(|p| round.replicas_on(p.store_id))
        .map(|p| p.store_id);
    let target = round.pick_target(region, source);
    let target_zone_new = target
        .and_then(|t| round.zone(t))
        .is_some_and(|z| !by_zone.contains_key(z));
    if let (Some(source), Some(target), true) = (source, target, target_zone_new) {
        if let Some(id) = round.next_id() {
            round.add_operator(
                region.id,
                OperatorKind::Zone,
                move_steps(target, id, Some(source)),
            );
        }
    }
}
