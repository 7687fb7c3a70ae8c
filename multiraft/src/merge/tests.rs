use tessera_proto::metapb::{Peer as PeerMeta, PeerRole, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{MergeState, RefusedMerge};

use super::*;

fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64], version: u64) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        region_epoch: Some(RegionEpoch::new(3, version)),
        peers: stores
            .iter()
            .map(|&s| PeerMeta {
                id: id * 100 + s,
                store_id: s,
                role: PeerRole::Voter as i32,
            })
            .collect(),
    }
}

fn state(target: &Region) -> MergeState {
    MergeState {
        target: Some(target.clone()),
        prepare_index: 10,
        prepare_term: 6,
    }
}

#[test]
fn only_adjacent_regions_on_the_same_stores_merge() {
    let left = region(1, b"", b"m", &[1, 2, 3], 2);
    let right = region(2, b"m", b"", &[3, 2, 1], 2);
    assert_eq!(check_pair(&left, &right), Ok(()));
    assert_eq!(check_pair(&right, &left), Ok(()));
    assert!(check_pair(&left, &left).unwrap_err().contains("itself"));
    let far = region(3, b"x", b"", &[1, 2, 3], 2);
    assert!(check_pair(&left, &far)
        .unwrap_err()
        .contains("not adjacent"));
    let elsewhere = region(4, b"m", b"", &[1, 2, 4], 2);
    assert!(check_pair(&left, &elsewhere)
        .unwrap_err()
        .contains("same stores"));
    let mut learner = right.clone();
    learner.peers[0].role = PeerRole::Learner as i32;
    assert!(check_pair(&left, &learner)
        .unwrap_err()
        .contains("not a voter"));
    let view = MergeView {
        state: Some(state(&right)),
        ..Default::default()
    };
    assert!(check_prepare(&left, &view, &right)
        .unwrap_err()
        .contains("already merging"));
}

#[test]
fn a_merged_region_spans_both_ranges_at_a_newer_version() {
    let left = region(1, b"a", b"m", &[1, 2, 3], 7);
    let right = region(2, b"m", b"z", &[1, 2, 3], 4);
    let into_right = merged_region(&right, &left);
    assert_eq!(
        (
            into_right.id,
            into_right.start_key.as_slice(),
            into_right.end_key.as_slice()
        ),
        (2, &b"a"[..], &b"z"[..])
    );
    assert_eq!(region::epoch(&into_right).version, 8);
    let into_left = merged_region(&left, &right);
    assert_eq!(
        (
            into_left.id,
            into_left.start_key.as_slice(),
            into_left.end_key.as_slice()
        ),
        (1, &b"a"[..], &b"z"[..])
    );
    assert_eq!(region::epoch(&into_left).version, 8);
}

#[test]
fn a_target_decides_once_and_keeps_its_answer() {
    let source = bumped(&region(1, b"", b"m", &[1, 2, 3], 2), true);
    let target = region(2, b"m", b"", &[1, 2, 3], 2);
    let st = state(&target);
    let mut view = MergeView::default();
    let CommitDecision::Merge(merged) = decide_commit(&target, &view, &source, &st, false) else {
        panic!("an unchanged target merges");
    };
    assert_eq!(merged.start_key, b"");
    // Sent again after it merged: the same answer, not a refusal.
    view.record.merged.push(source.id);
    assert_eq!(
        decide_commit(&merged, &view, &source, &st, false),
        CommitDecision::AlreadyMerged
    );

    // A target that changed since the prepare refuses, and keeps refusing
    // even if asked with a matching epoch later.
    let mut view = MergeView::default();
    let split = bumped(&target, false);
    assert!(matches!(
        decide_commit(&split, &view, &source, &st, false),
        CommitDecision::Refused(r) if r.contains("changed")
    ));
    view.record.refused.push(RefusedMerge {
        source_id: source.id,
        prepare_index: st.prepare_index,
    });
    assert!(matches!(
        decide_commit(&target, &view, &source, &st, false),
        CommitDecision::Refused(r) if r.contains("before")
    ));
    // Prepared again later (after its rollback): decided afresh.
    let again = MergeState {
        prepare_index: 20,
        ..st.clone()
    };
    assert!(matches!(
        decide_commit(&target, &view, &source, &again, false),
        CommitDecision::Merge(_)
    ));

    // A source that gives up gets a refusal, unless it merged already.
    assert!(matches!(
        decide_commit(&target, &MergeView::default(), &source, &st, true),
        CommitDecision::Refused(r) if r.contains("gave up")
    ));
    let mut merged_view = MergeView::default();
    merged_view.record.merged.push(source.id);
    assert_eq!(
        decide_commit(&target, &merged_view, &source, &st, true),
        CommitDecision::AlreadyMerged
    );

    // A target that is itself merging refuses.
    let busy = MergeView {
        state: Some(state(&source)),
        ..Default::default()
    };
    assert!(matches!(
        decide_commit(&target, &busy, &source, &st, false),
        CommitDecision::Refused(r) if r.contains("merging")
    ));
    // A command for another target is refused.
    let other = region(9, b"m", b"", &[1, 2, 3], 2);
    assert!(matches!(
        decide_commit(&other, &MergeView::default(), &source, &st, false),
        CommitDecision::Refused(r) if r.contains("not 9")
    ));
}

#[test]
fn the_record_stays_bounded() {
    let mut list = vec![];
    for id in 0..(MAX_MERGE_RECORD as u64 + 10) {
        remember(&mut list, id);
    }
    assert_eq!(list.len(), MAX_MERGE_RECORD);
    assert_eq!(list[0], 10);
}
