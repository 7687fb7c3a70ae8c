//! Load-based split, hot-leader and hot-region balancing, and how count
//! balancing yields to them.

use std::time::{Duration, Instant};

use tessera_proto::metapb::{Peer, PeerRole};

use super::{cluster, ids};
use crate::leader::LeaderState;
use crate::scheduler::operator::{OperatorKind, Step};
use crate::scheduler::{plan, ScheduleConfig};

/// Sets who leads region `id` and the keys per second it reported.
fn led(leader: &mut LeaderState, id: u64, store_id: u64, keys_per_sec: f64) {
    let stats = leader.regions.get_mut(&id).expect("region");
    stats.leader = Some(Peer {
        id: id + store_id,
        store_id,
        role: PeerRole::Voter as i32,
    });
    stats.keys_per_sec = keys_per_sec;
}

fn of_kind(leader: &LeaderState, kind: OperatorKind) -> Vec<(u64, Step)> {
    let mut out: Vec<_> = leader
        .operators
        .values()
        .filter(|o| o.kind == kind)
        .map(|o| (o.region_id, o.steps[0].clone()))
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

#[test]
fn a_region_hot_for_long_enough_splits_where_its_load_divides() {
    // Regions 10 [.., 2), 20 [2, 3), 30 [3, 4), 40 [4, ..).
    let (state, mut leader) = cluster(4, &[4]);
    let cfg = ScheduleConfig::default();
    let long_ago = Instant::now() - cfg.load_split.hot_for - Duration::from_secs(1);
    for (id, since, key) in [
        (10, long_ago, vec![1, 7]),       // hot long enough: split at [1, 7]
        (20, Instant::now(), vec![2, 5]), // hot, but only just
        (30, long_ago, vec![4, 1]),       // its key is outside it
        (40, long_ago, vec![]),           // no key divides its load
    ] {
        let stats = leader.regions.get_mut(&id).expect("region");
        stats.hot_since = Some(since);
        stats.load_split_key = key;
        stats.keys_per_sec = 5000.0;
    }
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(
        of_kind(&leader, OperatorKind::LoadSplit),
        vec![(
            10,
            Step::Split {
                keys: vec![vec![1, 7]],
                from_version: 1
            }
        )]
    );
    let op = &leader.operators[&10];
    assert!(op.reason.contains("5000 keys/s"), "{}", op.reason);
    // The left half keeps the id: it must be hot for `hot_for` again.
    assert_eq!(leader.regions[&10].hot_since, None);

    // Off: nothing splits by load.
    let (state, mut leader) = cluster(2, &[4]);
    let stats = leader.regions.get_mut(&10).expect("region");
    stats.hot_since = Some(long_ago);
    stats.load_split_key = vec![1, 7];
    let off = ScheduleConfig {
        load_split: crate::scheduler::LoadSplitConfig {
            keys_per_sec: 0,
            ..Default::default()
        },
        ..ScheduleConfig::default()
    };
    plan(&state, &mut leader, &off, &mut ids(&mut next));
    assert_eq!(of_kind(&leader, OperatorKind::LoadSplit), vec![]);
}

#[test]
fn the_load_split_threshold_follows_the_clusters_load_within_its_bounds() {
    let cfg = crate::scheduler::LoadSplitConfig::default();
    // Three stores: the cluster's keys per second over nine.
    assert_eq!(cfg.threshold(18_000.0, 3), 2000.0);
    assert_eq!(cfg.threshold(9_000.0, 3), 1000.0);
    assert_eq!(cfg.threshold(100.0, 3), 1000.0, "never below the least");
    assert_eq!(cfg.threshold(90_000.0, 3), 3000.0, "never above the most");
    assert_eq!(
        cfg.threshold(36_000.0, 6),
        2000.0,
        "more stores, more pieces"
    );
    assert_eq!(cfg.threshold(0.0, 0), 1000.0);
    let low = crate::scheduler::LoadSplitConfig {
        keys_per_sec: 100,
        ..Default::default()
    };
    assert_eq!(low.threshold(1_000_000.0, 3), 100.0, "the most wins");
    let off = crate::scheduler::LoadSplitConfig {
        keys_per_sec: 0,
        ..Default::default()
    };
    assert_eq!(off.threshold(1_000_000.0, 3), f64::INFINITY);

    // Each round sets it from what the recorded regions' leaders reported
    // (three stores up; six regions of 3000 keys/s); a region merged away
    // keeps its last report in the leader's view but does not count.
    let (state, mut leader) = cluster(6, &[4]);
    for n in 1..=6 {
        leader
            .regions
            .get_mut(&(n * 10))
            .expect("region")
            .keys_per_sec = 3000.0;
    }
    let mut gone = leader.regions[&10].clone();
    gone.keys_per_sec = 1e6;
    leader.regions.insert(999, gone);
    assert_eq!(leader.load_split_threshold, f64::INFINITY, "before a round");
    let mut next = 100;
    plan(
        &state,
        &mut leader,
        &ScheduleConfig::default(),
        &mut ids(&mut next),
    );
    assert_eq!(leader.load_split_threshold, 2000.0);
}

#[test]
fn a_hash_keyspace_region_is_not_split_by_load() {
    let (mut state, mut leader) = cluster(1, &[4]);
    let hash_ks = tessera_proto::keys::HASH_KEYSPACE_BIT | 7;
    let region = state.regions.get_mut(&10).expect("region");
    region.start_key = hash_ks.to_be_bytes().to_vec();
    region.end_key = (hash_ks + 1).to_be_bytes().to_vec();
    let stats = leader.regions.get_mut(&10).expect("region");
    stats.hot_since = Some(Instant::now() - Duration::from_secs(60));
    let mut key = hash_ks.to_be_bytes().to_vec();
    key.extend_from_slice(&[0x80, 0, b'k']);
    stats.load_split_key = key;
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(of_kind(&leader, OperatorKind::LoadSplit), vec![]);
}

#[test]
fn hot_leaders_spread_by_load_and_count_balancing_does_not_undo_it() {
    // Store 1 leads everything: three busy regions and three idle ones.
    let (state, mut leader) = cluster(6, &[4]);
    for (id, load) in [(10, 3000.0), (20, 3000.0), (30, 3000.0)] {
        led(&mut leader, id, 1, load);
    }
    for id in [40, 50, 60] {
        led(&mut leader, id, 1, 10.0);
    }
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    // Two busy leaderships go, one to each other store; then the count
    // balancer moves idle ones, never a busy one.
    let hot = of_kind(&leader, OperatorKind::HotLeader);
    let to: Vec<u64> = hot
        .iter()
        .map(|(_, s)| match s {
            Step::TransferLeader { to_store_id } => *to_store_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(hot.len(), 2, "{hot:?}");
    assert!(to.contains(&2) && to.contains(&3), "{hot:?}");
    let counted: Vec<u64> = of_kind(&leader, OperatorKind::BalanceLeader)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(counted.len(), 2, "{counted:?}");
    assert!(counted.iter().all(|id| *id >= 40), "{counted:?}");

    // Counts uneven, loads even: store 1 leads one region of 3000 keys/s,
    // stores 2 and 3 three of 1000 each. Moving any of those to store 1
    // would make it the hot one, so nothing moves.
    let (state, mut leader) = cluster(7, &[4]);
    led(&mut leader, 10, 1, 3000.0);
    for (i, id) in [20, 30, 40, 50, 60, 70].into_iter().enumerate() {
        led(&mut leader, id, 2 + i as u64 % 2, 1000.0);
    }
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(of_kind(&leader, OperatorKind::HotLeader), vec![]);
    assert_eq!(of_kind(&leader, OperatorKind::BalanceLeader), vec![]);

    // One region hotter than all the others together is not bounced
    // around: it is the load-based split's to divide.
    let (state, mut leader) = cluster(3, &[4]);
    led(&mut leader, 10, 1, 9000.0);
    led(&mut leader, 20, 2, 100.0);
    led(&mut leader, 30, 3, 100.0);
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(of_kind(&leader, OperatorKind::HotLeader), vec![]);
}

/// Sets the written keys per second region `id` reported.
fn writes(leader: &mut LeaderState, id: u64, write_keys_per_sec: f64) {
    let stats = leader.regions.get_mut(&id).expect("region");
    stats.write_keys_per_sec = write_keys_per_sec;
}

/// Leaderships of regions 10, 20, ... round-robin over stores 1, 2, 3
/// (the leader rules have nothing to do), serving no reads.
fn spread_leaders(leader: &mut LeaderState, regions: u64) {
    for n in 0..regions {
        led(leader, (n + 1) * 10, 1 + n % 3, 0.0);
    }
}

/// The (region, from, to) of each operator of `kind` moving a replica.
fn replica_moves(leader: &LeaderState, kind: OperatorKind) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<_> = leader
        .operators
        .values()
        .filter(|o| o.kind == kind)
        .map(|o| {
            let to = match &o.steps[0] {
                Step::AddLearner { store_id, .. } => *store_id,
                other => panic!("{other:?}"),
            };
            let from = match o.steps.last() {
                Some(Step::RemovePeer { store_id }) => *store_id,
                other => panic!("{other:?}"),
            };
            (o.region_id, from, to)
        })
        .collect();
    out.sort_unstable();
    out
}

#[test]
fn hot_replicas_spread_onto_a_store_holding_none_and_count_balancing_moves_cold_ones() {
    // Four stores up; every region on stores 1, 2, 3. Regions 10 and 20
    // take 3000 written keys per second each, the other four 10.
    let (state, mut leader) = cluster(6, &[]);
    spread_leaders(&mut leader, 6);
    for id in [10, 20] {
        writes(&mut leader, id, 3000.0);
    }
    for id in [30, 40, 50, 60] {
        writes(&mut leader, id, 10.0);
    }
    let cfg = ScheduleConfig {
        max_operators_per_store: 64,
        ..ScheduleConfig::default()
    };
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    // Stores 1-3 apply 6040 keys/s each, store 4 none. One hot replica
    // moves to store 4 (from store 3, the busiest by id), then the other
    // (from store 2): store 4 applying two is as even as six hot replicas
    // on four stores get. Region 10 is not moved twice.
    assert_eq!(
        replica_moves(&leader, OperatorKind::HotRegion),
        vec![(10, 3, 4), (20, 2, 4)]
    );
    let op = &leader.operators[&10];
    assert!(op.reason.contains("6040 written keys/s"), "{}", op.reason);
    // Count balancing then moves replicas to store 4 too, the cold ones.
    let counted = replica_moves(&leader, OperatorKind::BalanceRegion);
    assert!(!counted.is_empty());
    assert!(
        counted.iter().all(|(id, _, to)| *id >= 30 && *to == 4),
        "{counted:?}"
    );

    // Three stores only: every store holds every region; nothing moves by
    // load.
    let (state, mut leader) = cluster(6, &[4]);
    spread_leaders(&mut leader, 6);
    for id in [10, 20] {
        writes(&mut leader, id, 3000.0);
    }
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(replica_moves(&leader, OperatorKind::HotRegion), vec![]);
}

#[test]
fn a_region_hotter_than_the_gap_stays_and_count_balancing_never_moves_it() {
    // Region 10 applies 9000 keys/s, regions 20 and 30 nothing. Moving 10
    // to store 4 would only make store 4 the busy one.
    let (state, mut leader) = cluster(3, &[]);
    spread_leaders(&mut leader, 3);
    writes(&mut leader, 10, 9000.0);
    let cfg = ScheduleConfig::default();
    let mut next = 100;
    plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(replica_moves(&leader, OperatorKind::HotRegion), vec![]);
    // Counts 3, 3, 3, 0: count balancing moves the idle regions, never 10.
    let counted = replica_moves(&leader, OperatorKind::BalanceRegion);
    assert!(!counted.is_empty());
    assert!(counted.iter().all(|(id, ..)| *id != 10), "{counted:?}");

    // With the rule off, nothing moves by load and count balancing still
    // moves the coldest region first.
    let (state, mut leader) = cluster(3, &[]);
    spread_leaders(&mut leader, 3);
    writes(&mut leader, 10, 9000.0);
    writes(&mut leader, 20, 5.0);
    let off = ScheduleConfig {
        hot_region: crate::scheduler::HotRegionConfig {
            min_write_keys_per_sec: 0,
            ..Default::default()
        },
        max_balance_per_round: 1,
        ..ScheduleConfig::default()
    };
    plan(&state, &mut leader, &off, &mut ids(&mut next));
    assert_eq!(replica_moves(&leader, OperatorKind::HotRegion), vec![]);
    assert_eq!(
        replica_moves(&leader, OperatorKind::BalanceRegion),
        vec![(30, 3, 4)]
    );
}

#[test]
fn load_split_and_hot_leader_settings_that_would_flap_are_refused() {
    use crate::config::DirectoryConfig;
    let cfg: DirectoryConfig =
        toml::from_str("[schedule]\nmerge_max_keys_per_sec = 100\nload_split_keys_per_sec = 300\n")
            .unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("at least 4 ×"), "{err}");
    let cfg: DirectoryConfig = toml::from_str("[schedule]\nhot_leader_ratio = 1.0\n").unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("at least 1.1"), "{err}");
    let cfg: DirectoryConfig = toml::from_str(
        "[schedule]\nmerge_max_keys_per_sec = 100\nload_split_min_keys_per_sec = 300\n",
    )
    .unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("load_split_min_keys_per_sec (300)"), "{err}");
    let cfg: DirectoryConfig = toml::from_str("[schedule]\nhot_region_ratio = 1.05\n").unwrap();
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("hot_region_ratio") && err.contains("at least 1.1"),
        "{err}"
    );
    let cfg: DirectoryConfig = toml::from_str(
        "[schedule]\nload_split_keys_per_sec = 400\nload_split_hot_for_ms = 2000\nhot_leader_ratio = 1.5\n",
    )
    .unwrap();
    cfg.validate().unwrap();
    let s = cfg.schedule_config();
    assert_eq!(s.load_split.keys_per_sec, 400);
    assert_eq!(s.load_split.hot_for, Duration::from_secs(2));
    assert_eq!(s.load_split.min_keys_per_sec, 1000, "the default");
    assert_eq!(s.hot_leader.ratio, 1.5);
    assert_eq!(s.hot_region.ratio, 1.25, "the default");
    assert_eq!(s.hot_region.min_write_keys_per_sec, 1000);
}
