//! Rounds of [`plan`] on hand-made clusters: what the scheduler decides
//! when a store dies, and that repair wins over placement; by load
//! (`tests/load.rs`); hash keyspace placement (`tests/placement.rs`).

mod load;
mod placement;

use std::time::{Duration, Instant};

use tessera_proto::directorypb::StoreStats;
use tessera_proto::metapb::{Peer, PeerRole, Region, RegionEpoch, Store};

use super::operator::{OperatorKind, Step};
use super::{plan, ScheduleConfig};
use crate::leader::{LeaderState, RegionStats, StoreRuntime};
use crate::state::DirectoryState;

/// Stores 1..=4, regions 10, 20, ... each on stores 1, 2, 3 with its leader
/// on store 1; every store heartbeating now except `silent` ones, which
/// last reported two minutes ago.
fn cluster(regions: u64, silent: &[u64]) -> (DirectoryState, LeaderState) {
    let mut state = DirectoryState::default();
    let mut leader = LeaderState::new(1);
    leader.ids = (1000, 2000);
    for id in 1..=4 {
        state.stores.insert(
            id,
            Store {
                id,
                address: format!("s{id}"),
                ..Default::default()
            },
        );
        let last_heartbeat = if silent.contains(&id) {
            Instant::now() - Duration::from_secs(120)
        } else {
            Instant::now()
        };
        leader.stores.insert(
            id,
            StoreRuntime {
                stats: StoreStats::default(),
                last_heartbeat,
            },
        );
    }
    for n in 1..=regions {
        let start = if n == 1 { vec![] } else { vec![n as u8] };
        let end = if n == regions {
            vec![]
        } else {
            vec![n as u8 + 1]
        };
        add_region(&mut state, &mut leader, n * 10, start, end);
    }
    (state, leader)
}

/// Region `id` over `[start, end)` with voters on stores 1, 2, 3 (peer ids
/// `id + store`), led from store 1, version 1.
fn add_region(
    state: &mut DirectoryState,
    leader: &mut LeaderState,
    id: u64,
    start: Vec<u8>,
    end: Vec<u8>,
) {
    let peers: Vec<Peer> = (1..=3)
        .map(|s| Peer {
            id: id + s,
            store_id: s,
            role: PeerRole::Voter as i32,
        })
        .collect();
    state.ranges.insert(start.clone(), id);
    state.regions.insert(
        id,
        Region {
            id,
            start_key: start,
            end_key: end,
            region_epoch: Some(RegionEpoch::new(3, 1)),
            peers: peers.clone(),
        },
    );
    leader.regions.insert(
        id,
        RegionStats {
            leader: Some(peers[0]),
            term: 5,
            ..RegionStats::new(Instant::now())
        },
    );
}

fn ids(next: &mut u64) -> impl FnMut() -> Option<u64> + '_ {
    move || {
        *next += 1;
        Some(*next)
    }
}

#[test]
fn a_dead_store_gets_its_replicas_rebuilt_on_the_spare_store() {
    let (state, mut leader) = cluster(3, &[2]);
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(d.created, vec![OperatorKind::Repair; 3]);
    for op in leader.operators.values() {
        assert!(matches!(op.steps[0], Step::AddLearner { store_id: 4, .. }));
        assert_eq!(op.steps[1], Step::PromoteLearner { store_id: 4 });
        assert_eq!(op.steps[2], Step::RemovePeer { store_id: 2 });
    }
}

#[test]
fn repair_is_limited_per_store_and_never_waits_for_a_dead_one() {
    let (state, mut leader) = cluster(40, &[2]);
    let cfg = ScheduleConfig {
        max_operators_per_store: 5,
        ..ScheduleConfig::default()
    };
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    // Store 4 receives every new replica: at most 5 at once. The dead
    // store's share does not count.
    assert_eq!(leader.operators.len(), 5);
    assert_eq!(leader.operators_on(4), 5);
}

#[test]
fn without_ids_nothing_is_planned_and_later_rounds_catch_up() {
    let (state, mut leader) = cluster(2, &[2]);
    let cfg = ScheduleConfig::default();
    let d = plan(&state, &mut leader, &cfg, &mut || None);
    assert!(d.created.is_empty());
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(d.created.len(), 2);
}

#[test]
fn a_placement_naming_a_dead_store_yields_to_repair() {
    let (mut state, mut leader) = cluster(1, &[3]);
    // The recorded placement wants stores 2, 3, 4; store 3 has died.
    state.placements.insert(10, vec![2, 3, 4]);
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(d.created, vec![OperatorKind::Repair]);
    let op = &leader.operators[&10];
    assert_eq!(op.steps[2], Step::RemovePeer { store_id: 3 });
    // Once repaired (stores 1, 2, 4), the obsolete placement moves nothing.
    leader.operators.clear();
    let r = state.regions.get_mut(&10).unwrap();
    r.peers.retain(|p| p.store_id != 3);
    r.peers.push(Peer {
        id: 14,
        store_id: 4,
        role: PeerRole::Voter as i32,
    });
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert!(
        !d.created.contains(&OperatorKind::Placement) && !d.created.contains(&OperatorKind::Repair),
        "{:?}",
        d.created
    );
}

#[test]
fn a_placement_over_live_stores_is_followed() {
    let (mut state, mut leader) = cluster(1, &[]);
    state.placements.insert(10, vec![2, 3, 4]);
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert!(
        d.created.contains(&OperatorKind::Placement),
        "{:?}",
        d.created
    );
    let op = &leader.operators[&10];
    assert!(matches!(op.steps[0], Step::AddLearner { store_id: 4, .. }));
    assert_eq!(op.steps[2], Step::RemovePeer { store_id: 1 });
}

#[test]
fn no_placement_move_onto_a_store_low_on_space_until_it_recovers() {
    let (mut state, mut leader) = cluster(1, &[]);
    state.placements.insert(10, vec![2, 3, 4]);
    leader.stores.get_mut(&4).expect("store 4").stats.low_space = true;
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert!(
        !d.created.contains(&OperatorKind::Placement),
        "{:?}",
        d.created
    );
    leader.stores.get_mut(&4).expect("store 4").stats.low_space = false;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert!(
        d.created.contains(&OperatorKind::Placement),
        "{:?}",
        d.created
    );
    assert_eq!(added_on(&leader, 10), Some(4));
}

#[test]
fn no_placement_move_while_a_placed_store_is_silent() {
    let (mut state, mut leader) = cluster(1, &[]);
    // Store 3 stopped reporting a few seconds ago: Disconnected, not Down.
    leader.stores.get_mut(&3).unwrap().last_heartbeat = Instant::now() - Duration::from_secs(10);
    state.placements.insert(10, vec![2, 3, 4]);
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert!(d.created.is_empty(), "{:?}", d.created);
}

#[test]
fn a_degraded_store_receives_no_replica_and_no_leadership() {
    // Store 2 is dead and the only spare, store 4, reports a slow disk:
    // nothing is rebuilt onto it.
    let (state, mut leader) = cluster(3, &[2]);
    leader.stores.get_mut(&4).expect("store 4").stats.degraded = true;
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let onto_4 = leader.operators.values().any(|op| {
        op.steps
            .iter()
            .any(|s| matches!(s, Step::AddLearner { store_id: 4, .. }))
    });
    assert!(!onto_4, "a replica was placed on the degraded store");

    // Every leader is on store 1; store 2 is degraded: leadership is
    // balanced onto store 3 only.
    let (state, mut leader) = cluster(8, &[]);
    leader.stores.get_mut(&2).expect("store 2").stats.degraded = true;
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let transfers: Vec<u64> = leader
        .operators
        .values()
        .flat_map(|op| op.steps.iter())
        .filter_map(|s| match s {
            Step::TransferLeader { to_store_id } => Some(*to_store_id),
            _ => None,
        })
        .collect();
    assert!(!transfers.is_empty(), "no leader was balanced at all");
    assert!(transfers.iter().all(|s| *s == 3), "{transfers:?}");
}

/// The store a region's new replica is added on, if an operator adds one.
fn added_on(leader: &LeaderState, region_id: u64) -> Option<u64> {
    leader
        .operators
        .get(&region_id)?
        .steps
        .iter()
        .find_map(|s| match s {
            Step::AddLearner { store_id, .. } => Some(*store_id),
            _ => None,
        })
}

fn disk(leader: &mut LeaderState, store: u64, capacity_gib: u64, available_gib: u64) {
    let stats = &mut leader.stores.get_mut(&store).expect("store").stats;
    stats.capacity_bytes = capacity_gib << 30;
    stats.available_bytes = available_gib << 30;
}

#[test]
fn repair_skips_stores_low_on_space_and_prefers_free_space() {
    let cfg = ScheduleConfig::default();
    // Store 2 is dead and the only spare, store 4, is low on space.
    let (state, mut leader) = cluster(1, &[2]);
    leader.stores.get_mut(&4).expect("store 4").stats.low_space = true;
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(
        added_on(&leader, 10),
        None,
        "placed on a store low on space"
    );

    // Two empty spares: the one with more free space gets the replica,
    // unless it is nearly full.
    let with_spare = |avail_4: u64, avail_5: u64| {
        let (mut state, mut leader) = cluster(1, &[2]);
        state.stores.insert(
            5,
            Store {
                id: 5,
                address: "s5".into(),
                ..Default::default()
            },
        );
        leader.stores.insert(
            5,
            StoreRuntime {
                stats: StoreStats::default(),
                last_heartbeat: Instant::now(),
            },
        );
        disk(&mut leader, 4, 100, avail_4);
        disk(&mut leader, 5, 100, avail_5);
        let mut next = 100;
        plan(&state, &mut leader, &cfg, &mut ids(&mut next));
        added_on(&leader, 10)
    };
    assert_eq!(with_spare(50, 80), Some(5));
    assert_eq!(with_spare(80, 50), Some(4));
    assert_eq!(with_spare(20, 5), Some(4), "store 5 is 95% full");
}

/// `cluster(n, &[])` with every region known and cold for two hours.
fn quiet_cluster(regions: u64) -> (DirectoryState, LeaderState) {
    let (state, mut leader) = cluster(regions, &[]);
    for s in leader.regions.values_mut() {
        s.quiet_since = Instant::now() - Duration::from_secs(7200);
    }
    (state, leader)
}

fn merges(leader: &LeaderState) -> Vec<(u64, u64)> {
    leader
        .operators
        .values()
        .filter(|o| o.kind == OperatorKind::Merge)
        .map(|o| (o.region_id, o.merge_target().unwrap()))
        .collect()
}

#[test]
fn small_cold_neighbours_merge_and_hot_or_young_ones_do_not() {
    let cfg = ScheduleConfig::default();
    let mut next = 100;

    let (state, mut leader) = quiet_cluster(4);
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    // 10 into 20; 20 is then held as a target, so 30 goes into 40.
    assert_eq!(merges(&leader), vec![(10, 20), (30, 40)]);
    let op = &leader.operators[&10];
    assert!(op.reason.contains("merge into region 20"), "{}", op.reason);
    assert_eq!(
        op.steps,
        vec![Step::Merge {
            target_id: 20,
            target_stores: vec![1, 2, 3]
        }]
    );

    // A busy region is neither a source nor a target; a region the leader
    // has known for a moment only (a split's new half) neither.
    let (state, mut leader) = quiet_cluster(4);
    leader.regions.get_mut(&20).unwrap().keys_per_sec = 500.0;
    leader.regions.get_mut(&40).unwrap().quiet_since = Instant::now();
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![]);

    // A merge a previous directory leader started (30 into 40, as 30's
    // leader reports) holds both: only 10 and 20 merge.
    let (state, mut leader) = quiet_cluster(4);
    leader.regions.get_mut(&30).unwrap().merging_into = 40;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![(10, 20)]);

    // Once 30 is gone (merged), what it last reported holds nothing.
    let (mut state, mut leader) = quiet_cluster(4);
    leader.regions.get_mut(&30).unwrap().merging_into = 40;
    state.regions.remove(&30);
    state.ranges.retain(|_, id| *id != 30);
    state.regions.get_mut(&40).unwrap().start_key = vec![3];
    state.ranges.retain(|_, id| *id != 40);
    state.ranges.insert(vec![3], 40);
    leader.regions.get_mut(&10).unwrap().keys_per_sec = 500.0;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![(20, 40)]);
}

#[test]
fn merges_stay_under_the_size_limit_and_the_in_flight_limit() {
    let mut cfg = ScheduleConfig::default();
    let mut next = 100;
    let (state, mut leader) = quiet_cluster(6);
    cfg.merge.max_size_bytes = 1000;
    // 10 + 20 is one byte too many; 20 + 30 fits.
    leader.regions.get_mut(&10).unwrap().approximate_size_bytes = 501;
    leader.regions.get_mut(&20).unwrap().approximate_size_bytes = 500;
    leader.regions.get_mut(&30).unwrap().approximate_size_bytes = 500;
    cfg.merge.max_in_flight = 2;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![(20, 30), (40, 50)]);

    // Turned off.
    let (state, mut leader) = quiet_cluster(6);
    cfg.merge.max_size_bytes = 0;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![]);
}

#[test]
fn a_merge_whose_target_moved_is_cancelled() {
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    let (mut state, mut leader) = quiet_cluster(2);
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(merges(&leader), vec![(10, 20)]);
    // The target's replica on store 3 moved to store 4.
    let target = state.regions.get_mut(&20).unwrap();
    target.peers[2].store_id = 4;
    // Both now hot: nothing new is planned once the old one is dropped.
    for s in leader.regions.values_mut() {
        s.keys_per_sec = 1000.0;
    }
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(d.cancelled, vec![OperatorKind::Merge]);
    assert_eq!(merges(&leader), vec![]);
}

fn transfers(leader: &LeaderState) -> Vec<(OperatorKind, u64)> {
    leader
        .operators
        .values()
        .flat_map(|op| op.steps.iter().map(move |s| (op.kind, s)))
        .filter_map(|(kind, s)| match s {
            Step::TransferLeader { to_store_id } => Some((kind, *to_store_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_evicted_store_hands_every_leadership_away_and_gets_none_back() {
    // Every leader is on store 1, whose leaders are evicted: each region
    // hands its leadership over, spread over stores 2 and 3 (store 4 is
    // down and holds no replica).
    let (mut state, mut leader) = cluster(6, &[4]);
    state.stores.get_mut(&1).expect("store 1").evict_leaders = true;
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let moved = transfers(&leader);
    assert_eq!(moved.len(), 6, "{moved:?}");
    assert!(moved.iter().all(|(k, _)| *k == OperatorKind::EvictLeader));
    let to_2 = moved.iter().filter(|(_, s)| *s == 2).count();
    assert_eq!((to_2, moved.len() - to_2), (3, 3), "{moved:?}");

    // Once they moved (store 2 leads everything now), balancing spreads
    // leaders over stores 2 and 3 only, never back to store 1.
    let (mut state, mut leader) = cluster(8, &[]);
    state.stores.get_mut(&1).expect("store 1").evict_leaders = true;
    for stats in leader.regions.values_mut() {
        stats.leader = Some(Peer {
            id: 0,
            store_id: 2,
            role: PeerRole::Voter as i32,
        });
    }
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let moved = transfers(&leader);
    assert!(!moved.is_empty(), "no leader was balanced at all");
    assert!(
        moved
            .iter()
            .all(|(k, s)| *k == OperatorKind::BalanceLeader && *s == 3),
        "{moved:?}"
    );
}
