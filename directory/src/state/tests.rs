use proptest::prelude::*;
use tessera_proto::directorypb::directory_command::Cmd;
use tessera_proto::directorypb::RegionBatch;
use tessera_proto::metapb::{Peer, Region, RegionEpoch, Store};

use super::*;

fn region(id: u64, start: &[u8], end: &[u8], version: u64, conf_ver: u64) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch::new(conf_ver, version)),
        peers: vec![Peer {
            id: id * 10,
            store_id: 1,
            role: 0,
        }],
    }
}

fn bootstrapped() -> DirectoryState {
    let mut s = DirectoryState::default();
    let mut out = vec![];
    s.apply(
        Cmd::PutStore(Store {
            id: 1,
            ..Default::default()
        }),
        &mut out,
    )
    .unwrap();
    s.apply(
        Cmd::Bootstrap(tessera_proto::directorypb::BootstrapRequest {
            store: Some(Store {
                id: 1,
                ..Default::default()
            }),
            region: Some(region(2, b"", b"", 1, 1)),
        }),
        &mut out,
    )
    .unwrap();
    s
}

fn put(s: &mut DirectoryState, regions: Vec<Region>) -> Result<Applied> {
    s.apply(Cmd::PutRegions(RegionBatch { regions }), &mut vec![])
}

#[test]
fn a_split_is_recorded_only_with_all_its_parts() {
    let mut s = bootstrapped();
    let left = region(2, b"", b"m", 2, 1);
    let right = region(3, b"m", b"", 2, 1);
    // Either part alone would leave a gap.
    assert!(matches!(
        put(&mut s, vec![left.clone()]),
        Err(Error::Stale(_))
    ));
    assert!(matches!(
        put(&mut s, vec![right.clone()]),
        Err(Error::Stale(_))
    ));
    s.check_coverage().unwrap();
    put(&mut s, vec![left.clone(), right.clone()]).unwrap();
    s.check_coverage().unwrap();
    assert_eq!(s.region_for_key(b"a").unwrap().id, 2);
    assert_eq!(s.region_for_key(b"z").unwrap().id, 3);
    // A stale report never overwrites newer metadata.
    assert!(matches!(
        put(&mut s, vec![region(2, b"", b"", 1, 1)]),
        Err(Error::Stale(_))
    ));
    assert_eq!(s.regions[&2].end_key, b"m");
    // A membership change of the same range is accepted alone.
    put(&mut s, vec![region(3, b"m", b"", 2, 2)]).unwrap();
    assert_eq!(s.regions[&3].region_epoch.unwrap().conf_ver, 2);
    // Same epoch again: nothing to record.
    assert!(put(&mut s, vec![region(3, b"m", b"", 2, 2)]).is_err());
}

/// A region split twice before its leader reported: the report carries
/// both splits' regions (the peer remembers every recent split), and the
/// directory records them together; the second split's regions alone leave
/// a gap and are refused, as are the first split's once it is older.
#[test]
fn two_splits_between_reports_are_recorded_from_one_report() {
    let mut s = bootstrapped();
    let parent = region(2, b"", b"g", 3, 1);
    let first = region(16, b"m", b"", 2, 1);
    let second = region(24, b"g", b"m", 3, 1);
    assert!(matches!(
        put(&mut s, vec![parent.clone(), second.clone()]),
        Err(Error::Stale(_))
    ));
    put(&mut s, vec![parent, first, second]).unwrap();
    s.check_coverage().unwrap();
    for (key, id) in [(&b"a"[..], 2), (b"h", 24), (b"z", 16)] {
        assert_eq!(s.region_for_key(key).unwrap().id, id, "{key:?}");
    }
}

/// A merged target still remembers the siblings of its old split, some of
/// which merged away since: its report is recorded, and a gone sibling is
/// neither an obstacle nor brought back.
#[test]
fn a_merged_region_is_recorded_past_the_stale_siblings_it_remembers() {
    let mut s = bootstrapped();
    let (a, b, c, d) = (
        region(2, b"", b"g", 2, 1),
        region(3, b"g", b"m", 2, 1),
        region(4, b"m", b"t", 2, 1),
        region(5, b"t", b"", 2, 1),
    );
    put(&mut s, vec![a.clone(), b.clone(), c.clone(), d.clone()]).unwrap();
    // 5 merged into 4 (recorded), then 3 into 2.
    put(&mut s, vec![region(4, b"m", b"", 4, 2)]).unwrap();
    assert!(!s.regions.contains_key(&5));
    let merged = region(2, b"", b"m", 4, 2);
    // The report of 2 carries its old split's siblings, 5 among them.
    put(&mut s, vec![merged, b, c, d]).unwrap();
    s.check_coverage().unwrap();
    let ids: Vec<u64> = s.regions.keys().copied().collect();
    assert_eq!(ids, vec![2, 4]);
    assert_eq!(s.region_for_key(b"h").unwrap().id, 2);
    assert_eq!(s.region_for_key(b"z").unwrap().id, 4);
}

#[test]
fn ids_are_handed_out_once() {
    let mut s = bootstrapped();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let Applied::Ids { first, count } = s.apply(Cmd::AllocIds(7), &mut vec![]).unwrap() else {
            panic!()
        };
        for id in first..first + count as u64 {
            assert!(id > 20, "ids above those used at bootstrap");
            assert!(seen.insert(id));
        }
    }
}

fn remove_store(s: &mut DirectoryState, store_id: u64) {
    s.apply(
        Cmd::SetStoreState(tessera_proto::directorypb::SetStoreState {
            store_id,
            state: StoreState::Tombstone as i32,
        }),
        &mut vec![],
    )
    .unwrap();
}

#[test]
fn a_removed_store_cannot_register_again() {
    let mut s = bootstrapped();
    remove_store(&mut s, 1);
    let err = s
        .apply(
            Cmd::PutStore(Store {
                id: 1,
                address: "x".into(),
                ..Default::default()
            }),
            &mut vec![],
        )
        .unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
}

#[test]
fn an_eviction_outlives_the_store_registering_again_and_needs_a_known_store() {
    let mut s = bootstrapped();
    let evict = |store_id, evict| {
        Cmd::SetEvictLeaders(tessera_proto::directorypb::SetEvictLeadersRequest { store_id, evict })
    };
    s.apply(evict(1, true), &mut vec![]).unwrap();
    // The store restarts and registers again: still evicted.
    s.apply(
        Cmd::PutStore(Store {
            id: 1,
            address: "y".into(),
            ..Default::default()
        }),
        &mut vec![],
    )
    .unwrap();
    assert!(s.stores[&1].evict_leaders);
    assert_eq!(s.stores[&1].address, "y");
    s.apply(evict(1, false), &mut vec![]).unwrap();
    assert!(!s.stores[&1].evict_leaders);
    let err = s.apply(evict(9, true), &mut vec![]).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    remove_store(&mut s, 1);
    let err = s.apply(evict(1, true), &mut vec![]).unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
}

#[test]
fn keyspaces_get_ids_by_kind() {
    let mut s = bootstrapped();
    let k = |name: &str, kind: KeyspaceKind| Keyspace {
        id: 0,
        name: name.into(),
        kind: kind as i32,
        initial_regions: 0,
        ring_stores: vec![],
    };
    let Applied::Keyspace(a) = s
        .apply(
            Cmd::CreateKeyspace(k("a", KeyspaceKind::Range)),
            &mut vec![],
        )
        .unwrap()
    else {
        panic!()
    };
    let Applied::Keyspace(b) = s
        .apply(Cmd::CreateKeyspace(k("b", KeyspaceKind::Hash)), &mut vec![])
        .unwrap()
    else {
        panic!()
    };
    assert!(a.id > 0 && a.id < HASH_KEYSPACE_BIT);
    assert!(b.id & HASH_KEYSPACE_BIT != 0);
    assert!(s
        .apply(Cmd::CreateKeyspace(k("a", KeyspaceKind::Hash)), &mut vec![])
        .is_err());
    assert!(s
        .apply(
            Cmd::CreateKeyspace(k("default", KeyspaceKind::Hash)),
            &mut vec![]
        )
        .is_err());
    assert_eq!(s.keyspace("default").unwrap().id, 0);
}

/// The truth: a layout evolving by splits, and every report a store could
/// send about it along the way.
#[derive(Debug, Clone)]
struct Truth {
    regions: Vec<Region>,
    next_id: u64,
    reports: Vec<Vec<Region>>,
}

impl Truth {
    fn new() -> Self {
        Truth {
            regions: vec![region(2, b"", b"", 1, 1)],
            next_id: 3,
            reports: vec![],
        }
    }

    /// Splits region `which` at a key between its bounds (if any fits).
    fn split(&mut self, which: usize, at: u8) {
        let i = which % self.regions.len();
        let r = self.regions[i].clone();
        let key = vec![at];
        if key <= r.start_key || (!r.end_key.is_empty() && key >= r.end_key) {
            return;
        }
        let v = r.region_epoch.unwrap().version + 1;
        let c = r.region_epoch.unwrap().conf_ver;
        let derived = region(r.id, &r.start_key, &key, v, c);
        let new = region(self.next_id, &key, &r.end_key, v, c);
        self.next_id += 1;
        self.regions[i] = derived.clone();
        self.regions.push(new.clone());
        // What leaders may report: each part alone, or the split together.
        self.reports.push(vec![derived.clone()]);
        self.reports.push(vec![new.clone()]);
        self.reports.push(vec![derived, new]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_index_never_has_a_gap_or_an_overlap(
        splits in proptest::collection::vec((0usize..64, 1u8..255), 1..40),
        order in proptest::collection::vec(0usize..1000, 0..200),
    ) {
        let mut truth = Truth::new();
        for (which, at) in splits {
            truth.split(which, at);
        }
        let mut s = bootstrapped();
        // Reports arrive in any order, some many times, some never.
        for pick in order {
            if truth.reports.is_empty() {
                break;
            }
            let report = truth.reports[pick % truth.reports.len()].clone();
            let _ = put(&mut s, report);
            prop_assert!(s.check_coverage().is_ok(), "{:?}", s.check_coverage());
        }
        // Once every split is reported whole, in the order they happened,
        // the index is the truth.
        for report in truth.reports.iter().filter(|r| r.len() == 2) {
            let _ = put(&mut s, report.clone());
            prop_assert!(s.check_coverage().is_ok());
        }
        let mut got: Vec<_> = s.regions.values().map(|r| (r.id, r.start_key.clone(), r.end_key.clone())).collect();
        let mut want: Vec<_> = truth.regions.iter().map(|r| (r.id, r.start_key.clone(), r.end_key.clone())).collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
    }
}
