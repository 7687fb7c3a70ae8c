//! Rule 5, **placement**: a hash keyspace's regions are placed with a
//! consistent hash ring over the `Up` stores (64 virtual nodes each), so
//! that a store added later takes few of them. The placement is decided
//! once per region and recorded through Raft, never recomputed; replicas
//! then move to match it, one at a time, the leader's last.
//!
//! A placement naming a store that is no longer `Up` is obsolete and left
//! alone, and so is a region with a replica on a bad store (that is
//! repair's business). No replica moves onto a recorded target while it
//! is degraded or low on space (the ring itself is over the `Up` stores,
//! so a passing condition does not reshape it). Regions with a placement are not moved by
//! balance-region (rule 8), which would fight it.

use std::collections::BTreeSet;

use consistent_hash_ring::RingBuilder;
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::{Keyspace, Placement};
use tessera_proto::keys::keyspace_range;
use tessera_proto::metapb::{Region, StoreState};

use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::{move_steps, Round};

/// Records a placement for every region of the `complete` keyspaces that
/// has none (when there are enough `Up` stores); returns every region
/// placed, before or now.
pub(in crate::scheduler) fn place(round: &mut Round, complete: &[&Keyspace]) -> BTreeSet<u64> {
    let mut placed: BTreeSet<u64> = round.state.placements.keys().copied().collect();
    let up = round.up_stores();
    if up.len() < round.cfg.max_replicas {
        return placed;
    }
    let ring = RingBuilder::default()
        .vnodes(64)
        .nodes_iter(up.iter().copied())
        .build();
    for ks in complete {
        let (start, end) = keyspace_range(ks.id);
        for r in round.state.overlapping(&start, &end) {
            if round.state.placements.contains_key(&r.id) {
                continue;
            }
            let stores: Vec<u64> = ring
                .replicas(&r.start_key)
                .take(round.cfg.max_replicas)
                .copied()
                .collect();
            placed.insert(r.id);
            round.out.commands.push(Cmd::PutPlacement(Placement {
                region_id: r.id,
                store_ids: stores,
            }));
        }
    }
    placed
}

/// Moves one replica of `region` towards its recorded placement.
pub(in crate::scheduler) fn plan_region(round: &mut Round, region: &Region) {
    let Some(want) = round.state.placements.get(&region.id) else {
        return;
    };
    if round.has_operator(region.id) {
        return;
    }
    if want.iter().any(|s| round.state_of(*s) != StoreState::Up)
        || region.peers.iter().any(|p| round.is_bad(p.store_id))
    {
        return;
    }
    let have: BTreeSet<u64> = region.peers.iter().map(|p| p.store_id).collect();
    // A recorded target that is degraded or low on space takes nothing
    // until it recovers (the placement itself stays as recorded).
    let target = want
        .iter()
        .copied()
        .find(|s| !have.contains(s) && round.is_healthy(*s) && !round.busy(*s));
    let leader_store = round.leader_store(region.id);
    let source = have
        .iter()
        .copied()
        .filter(|s| !want.contains(s))
        .min_by_key(|s| Some(*s) == leader_store);
    if let (Some(t), Some(s)) = (target, source) {
        if let Some(id) = round.next_id() {
            round.add_operator(
                region.id,
                OperatorKind::Placement,
                move_steps(t, id, Some(s)),
            );
        }
    }
}
