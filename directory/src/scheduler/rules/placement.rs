//! Rule 5, **placement**: a hash keyspace's regions are placed with a
//! consistent hash ring (64 virtual nodes per store), so that a change of
//! stores moves few of them. Placements are recorded through Raft, never
//! recomputed on the fly; replicas then move to match them, one at a time,
//! the leader's last.
//!
//! **The ring's stores are recorded too** (`Keyspace.ring_stores`, by a
//! `RebalancePlacement` command): the first placement builds the ring over
//! the `Up` stores of that moment, and a region placed later (a hash
//! region split by size) is placed on the same recorded ring.
//!
//! **Rebalancing** is a recorded decision as well: once the `Up` stores
//! have been the same set for `placement_rebalance_after` (five minutes by
//! default) and that set differs from a keyspace's recorded ring stores —
//! a store was added, or one is gone (Down, decommissioned) — the ring is
//! rebuilt over the `Up` stores and one `RebalancePlacement` records the
//! new ring and the placements that changed (with consistent hashing,
//! about a share of one store's regions per store added or gone). Not
//! while any region of the keyspace still lacks a placement or has a
//! placement or repair operator running. A store that comes and goes
//! restarts the wait, so a flapping store moves nothing (and so does a new
//! directory leader: the wait is in its memory).
//!
//! A placement naming a store that is no longer `Up` is obsolete and left
//! alone until the rebalance replaces it, and so is a region with a
//! replica on a bad store (that is repair's business). No replica moves
//! onto a recorded target while it is degraded or low on space (the ring
//! itself is over the `Up` stores, so a passing condition does not reshape
//! it). Regions with a placement are not moved by balance-region (rule 9),
//! which would fight it.

use std::collections::BTreeSet;
use std::time::Instant;

use consistent_hash_ring::{Ring, RingBuilder};
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::{Keyspace, Placement, RebalancePlacement};
use tessera_proto::keys::keyspace_range;
use tessera_proto::metapb::{Region, StoreState};

use crate::scheduler::operator::OperatorKind;
use crate::scheduler::round::{move_steps, Round};

fn ring(stores: &[u64]) -> Ring<u64> {
    RingBuilder::default()
        .vnodes(64)
        .nodes_iter(stores.iter().copied())
        .build()
}

/// Where `ring` puts `region`: its first `replicas` stores.
fn placement(ring: &Ring<u64>, region: &Region, replicas: usize) -> Vec<u64> {
    ring.replicas(&region.start_key)
        .take(replicas)
        .copied()
        .collect()
}

/// Records a placement for every region of the `complete` keyspaces that
/// has none (when there are enough `Up` stores), on the keyspace's
/// recorded ring (or, the first time, a ring over the `Up` stores, which
/// is recorded with it); returns every region placed, before or now.
pub(in crate::scheduler) fn place(round: &mut Round, complete: &[&Keyspace]) -> BTreeSet<u64> {
    let mut placed: BTreeSet<u64> = round.state.placements.keys().copied().collect();
    let mut up = round.up_stores();
    up.sort_unstable();
    if up.len() < round.cfg.max_replicas {
        return placed;
    }
    for ks in complete {
        let ring_stores = if ks.ring_stores.is_empty() {
            up.clone()
        } else {
            ks.ring_stores.clone()
        };
        let ring = ring(&ring_stores);
        let (start, end) = keyspace_range(ks.id);
        let placements: Vec<Placement> = round
            .state
            .overlapping(&start, &end)
            .into_iter()
            .filter(|r| !round.state.placements.contains_key(&r.id))
            .map(|r| Placement {
                region_id: r.id,
                store_ids: placement(&ring, r, round.cfg.max_replicas),
            })
            .collect();
        if placements.is_empty() {
            continue;
        }
        placed.extend(placements.iter().map(|p| p.region_id));
        round
            .out
            .commands
            .push(Cmd::RebalancePlacement(RebalancePlacement {
                keyspace_id: ks.id,
                ring_stores,
                placements,
            }));
    }
    placed
}

/// Rebuilds the ring of every `complete` keyspace whose recorded ring
/// stores differ from the `Up` stores once those have held for
/// `placement_rebalance_after` (see the module docs).
pub(in crate::scheduler) fn rebalance(round: &mut Round, complete: &[&Keyspace]) {
    let mut up = round.up_stores();
    up.sort_unstable();
    let since = match &round.leader.up_stores_since {
        Some((seen, since)) if *seen == up => *since,
        _ => {
            round.leader.up_stores_since = Some((up.clone(), Instant::now()));
            return;
        }
    };
    if up.len() < round.cfg.max_replicas || since.elapsed() < round.cfg.placement_rebalance_after {
        return;
    }
    for ks in complete {
        let (start, end) = keyspace_range(ks.id);
        let regions = round.state.overlapping(&start, &end);
        let placements: Vec<&Vec<u64>> = regions
            .iter()
            .filter_map(|r| round.state.placements.get(&r.id))
            .collect();
        if placements.len() < regions.len() {
            continue;
        }
        // A keyspace placed before the ring was recorded: its placements
        // name the stores of its ring.
        let mut recorded: Vec<u64> = if ks.ring_stores.is_empty() {
            placements.iter().flat_map(|p| p.iter().copied()).collect()
        } else {
            ks.ring_stores.clone()
        };
        recorded.sort_unstable();
        recorded.dedup();
        if recorded == up {
            continue;
        }
        let settling =
            regions.iter().any(|r| {
                round.leader.operators.get(&r.id).is_some_and(|o| {
                    matches!(o.kind, OperatorKind::Placement | OperatorKind::Repair)
                })
            });
        if settling {
            continue;
        }
        let ring = ring(&up);
        let changed: Vec<Placement> = regions
            .iter()
            .map(|r| Placement {
                region_id: r.id,
                store_ids: placement(&ring, r, round.cfg.max_replicas),
            })
            .filter(|p| round.state.placements.get(&p.region_id) != Some(&p.store_ids))
            .collect();
        tracing::info!(
            keyspace = %ks.name,
            from = ?recorded,
            to = ?up,
            regions_moving = changed.len(),
            "hash keyspace placement rebalanced over the stores now up"
        );
        round
            .out
            .commands
            .push(Cmd::RebalancePlacement(RebalancePlacement {
                keyspace_id: ks.id,
                ring_stores: up.clone(),
                placements: changed,
            }));
    }
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
