//! Hash keyspace placement: the first placement records the ring's stores
//! with it, and the ring is rebuilt — by a recorded decision — only once
//! the `Up` stores have been a different set for
//! `placement_rebalance_after`.

use std::time::{Duration, Instant};

use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::{Keyspace, KeyspaceKind, RebalancePlacement};
use tessera_proto::keys::{keyspace_range, HASH_KEYSPACE_BIT};

use super::{add_region, cluster, ids};
use crate::leader::LeaderState;
use crate::scheduler::operator::OperatorKind;
use crate::scheduler::{plan, ScheduleConfig};
use crate::state::DirectoryState;

const SLICES: u64 = 8;
const KS: u32 = HASH_KEYSPACE_BIT | 1;

/// Stores 1..=4 (the `silent` ones Down); hash keyspace `h` cut into 8
/// slices, each a region on stores 1, 2, 3 (ids 10, 20, …), and a region
/// on each side.
fn hash_cluster(silent: &[u64]) -> (DirectoryState, LeaderState) {
    let (mut state, mut leader) = cluster(0, silent);
    let (start, end) = keyspace_range(KS);
    let bound = |i: u64| {
        let mut k = start.clone();
        if i > 0 {
            k.extend_from_slice(&((i * 65536 / SLICES) as u16).to_be_bytes());
        }
        k
    };
    add_region(&mut state, &mut leader, 5, vec![], start.clone());
    for i in 0..SLICES {
        let to = if i + 1 == SLICES {
            end.clone()
        } else {
            bound(i + 1)
        };
        add_region(&mut state, &mut leader, 10 * (i + 1), bound(i), to);
    }
    add_region(&mut state, &mut leader, 990, end, vec![]);
    state.keyspaces.insert(
        "h".into(),
        Keyspace {
            id: KS,
            name: "h".into(),
            kind: KeyspaceKind::Hash as i32,
            initial_regions: SLICES as u32,
            ring_stores: vec![],
        },
    );
    (state, leader)
}

fn rebalances(cmds: &[Cmd]) -> Vec<RebalancePlacement> {
    cmds.iter()
        .filter_map(|c| match c {
            Cmd::RebalancePlacement(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// `hash_cluster` with store 4 down, its regions placed (the first
/// placement applied), rebalancing after a minute.
fn placed_on_three() -> (DirectoryState, LeaderState, ScheduleConfig) {
    let (mut state, mut leader) = hash_cluster(&[4]);
    let cfg = ScheduleConfig {
        placement_rebalance_after: Duration::from_secs(60),
        ..ScheduleConfig::default()
    };
    let mut next = 1000;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    for r in rebalances(&d.commands) {
        state
            .apply(Cmd::RebalancePlacement(r), &mut vec![])
            .expect("apply");
    }
    (state, leader, cfg)
}

#[test]
fn the_first_placement_records_the_ring_over_the_up_stores() {
    let (mut state, mut leader) = hash_cluster(&[4]);
    let cfg = ScheduleConfig::default();
    let mut next = 1000;
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let r = rebalances(&d.commands);
    assert_eq!(r.len(), 1, "{:?}", d.commands);
    assert_eq!((r[0].keyspace_id, &r[0].ring_stores), (KS, &vec![1, 2, 3]));
    assert_eq!(r[0].placements.len(), SLICES as usize);
    for p in &r[0].placements {
        let mut s = p.store_ids.clone();
        s.sort_unstable();
        assert_eq!(s, vec![1, 2, 3], "store 4 is down");
    }
    state
        .apply(Cmd::RebalancePlacement(r[0].clone()), &mut vec![])
        .expect("apply");
    assert_eq!(state.keyspaces["h"].ring_stores, vec![1, 2, 3]);
    assert_eq!(state.placements.len(), SLICES as usize);
    // Placed: nothing more to record.
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(rebalances(&d.commands), vec![]);
}

#[test]
fn a_store_added_later_gets_its_share_once_the_stores_have_settled() {
    let (mut state, mut leader, cfg) = placed_on_three();
    let mut next = 1000;
    // Store 4 comes up: nothing moves until the stores have stayed the
    // same for a minute.
    leader.stores.get_mut(&4).expect("store 4").last_heartbeat = Instant::now();
    for _ in 0..2 {
        let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
        assert_eq!(rebalances(&d.commands), vec![]);
    }
    let seen = leader.up_stores_since.clone().expect("tracked").0;
    assert_eq!(seen, vec![1, 2, 3, 4]);
    leader.up_stores_since = Some((seen, Instant::now() - Duration::from_secs(61)));
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    let r = rebalances(&d.commands);
    assert_eq!(r.len(), 1, "{:?}", d.commands);
    assert_eq!(r[0].ring_stores, vec![1, 2, 3, 4]);
    assert!(!r[0].placements.is_empty());
    // Only changed placements are listed, and with three replicas on four
    // stores every change takes store 4 in.
    assert!(
        r[0].placements.iter().all(|p| p.store_ids.contains(&4)),
        "{:?}",
        r[0].placements
    );
    state
        .apply(Cmd::RebalancePlacement(r[0].clone()), &mut vec![])
        .expect("apply");
    leader.operators.clear();
    let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
    assert_eq!(rebalances(&d.commands), vec![], "decided once");
    // Replicas then move to match, onto store 4.
    let moving: Vec<_> = leader
        .operators
        .values()
        .filter(|o| o.kind == OperatorKind::Placement)
        .collect();
    assert_eq!(moving.len(), r[0].placements.len());
}

#[test]
fn a_store_that_comes_and_goes_moves_nothing() {
    let (state, mut leader, cfg) = placed_on_three();
    let mut next = 1000;
    // Up for a while, then Down again before the wait ends, then Up: the
    // wait starts over each time.
    for (down, wait) in [(false, 59), (true, 0), (false, 30)] {
        let seen = if down {
            Instant::now() - Duration::from_secs(120)
        } else {
            Instant::now()
        };
        leader.stores.get_mut(&4).expect("store 4").last_heartbeat = seen;
        plan(&state, &mut leader, &cfg, &mut ids(&mut next));
        if let Some((_, since)) = leader.up_stores_since.as_mut() {
            *since -= Duration::from_secs(wait);
        }
        let d = plan(&state, &mut leader, &cfg, &mut ids(&mut next));
        assert_eq!(rebalances(&d.commands), vec![]);
    }
}

#[test]
fn a_rebalance_of_an_unknown_or_range_keyspace_is_refused() {
    let (mut state, _) = hash_cluster(&[]);
    let mut range = state.keyspaces["h"].clone();
    range.name = "r".into();
    range.id = 2;
    range.kind = KeyspaceKind::Range as i32;
    state.keyspaces.insert("r".into(), range);
    for keyspace_id in [HASH_KEYSPACE_BIT | 7, 2] {
        let err = state
            .apply(
                Cmd::RebalancePlacement(RebalancePlacement {
                    keyspace_id,
                    ring_stores: vec![1, 2, 3],
                    placements: vec![],
                }),
                &mut vec![],
            )
            .unwrap_err();
        assert!(err.to_string().contains("no hash keyspace"), "{err}");
    }
    assert!(state.keyspaces["h"].ring_stores.is_empty());
}
