use std::time::Duration;

use tessera_proto::metapb::RegionEpoch;

use super::*;

fn region(version: u64) -> Region {
    Region {
        id: 7,
        end_key: b"m".to_vec(),
        region_epoch: Some(RegionEpoch::new(1, version)),
        ..Default::default()
    }
}

fn leader(committed: u64, applied: u64) -> LeaseView {
    LeaseView {
        term: 6,
        lease_until: Some(Instant::now() + Duration::from_secs(60)),
        committed,
        applied_index: applied,
        safe: None,
    }
}

/// A follower (no lease) that learned index `index` from its leader `age`
/// ago and has applied `applied`.
fn follower(index: u64, age: Duration, applied: u64) -> LeaseView {
    LeaseView {
        term: 6,
        lease_until: None,
        committed: applied,
        applied_index: applied,
        safe: Some(SafePoint {
            index,
            at: Instant::now() - age,
        }),
    }
}

fn at(version: u64) -> EpochCheck {
    EpochCheck::version(RegionEpoch::new(1, version))
}

/// Starts a read of region 7 at version 1 on its own task; the task
/// answers whether the read was granted.
fn begin_on_a_task(lr: &LocalReaders) -> tokio::task::JoinHandle<bool> {
    let lr = lr.clone();
    tokio::spawn(async move { lr.begin(7, &at(1)).await.is_some() })
}

/// What a read started by [`begin_on_a_task`] answered (within 5 s).
async fn answer(waiting: tokio::task::JoinHandle<bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the read answered")
        .unwrap()
}

#[tokio::test]
async fn a_leader_with_a_lease_and_everything_applied_serves_at_once() {
    let lr = LocalReaders::new();
    assert!(lr.begin(7, &at(1)).await.is_none(), "nothing published");
    lr.publish(leader(10, 10), &region(1));
    let read = lr.begin(7, &at(1)).await.expect("granted");
    assert_eq!(read.region().end_key, b"m");
    assert!(read.still_valid());
}

#[tokio::test]
async fn no_lease_an_expired_lease_or_another_epoch_goes_to_the_poller() {
    let lr = LocalReaders::new();
    let mut view = leader(10, 10);
    view.lease_until = None;
    lr.publish(view, &region(1));
    assert!(lr.begin(7, &at(1)).await.is_none(), "no lease");

    view.lease_until = Some(Instant::now() - Duration::from_millis(1));
    lr.publish(view, &region(1));
    assert!(lr.begin(7, &at(1)).await.is_none(), "expired");

    lr.publish(leader(10, 10), &region(1));
    assert!(lr.begin(7, &at(2)).await.is_none(), "another epoch");
    lr.end_lease(7);
    assert!(lr.begin(7, &at(1)).await.is_none(), "lease ended");
}

#[tokio::test]
async fn a_read_waits_for_the_applied_index_to_reach_the_commit_index() {
    let lr = LocalReaders::new();
    lr.publish(leader(12, 10), &region(1));
    let waiting = begin_on_a_task(&lr);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "applied 10 < read index 12");
    // The lease ending does not matter any more: the read index was taken
    // while it was valid.
    lr.end_lease(7);
    lr.publish(leader(14, 11), &region(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "applied 11 < read index 12");
    lr.publish(leader(14, 12), &region(1));
    assert!(answer(waiting).await, "granted once applied");
}

#[tokio::test]
async fn a_split_applied_while_waiting_sends_the_read_to_the_poller() {
    let lr = LocalReaders::new();
    lr.publish(leader(12, 10), &region(1));
    let waiting = begin_on_a_task(&lr);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut narrowed = region(2);
    narrowed.end_key = b"g".to_vec();
    lr.publish(leader(12, 12), &narrowed);
    assert!(!answer(waiting).await, "the region changed under the read");
}

#[tokio::test]
async fn what_was_read_is_dropped_when_the_region_changed_or_went_away() {
    let lr = LocalReaders::new();
    lr.publish(leader(10, 10), &region(1));
    let read = lr.begin(7, &at(1)).await.unwrap();
    lr.publish(leader(11, 11), &region(1));
    assert!(read.still_valid(), "more applied: what was read stands");
    lr.end_lease(7);
    assert!(read.still_valid(), "a lease ending does not undo a read");
    lr.invalidate(7);
    assert!(!read.still_valid(), "a split or membership change");

    lr.publish(leader(11, 11), &region(1));
    let read = lr.begin(7, &at(1)).await.unwrap();
    lr.remove(7);
    assert!(!read.still_valid(), "the peer's data is being deleted");
    assert!(lr.begin(7, &at(1)).await.is_none());
    assert!(lr.state(7).is_none());
}

#[tokio::test]
async fn closing_wakes_waiting_reads_and_refuses_new_ones() {
    let lr = LocalReaders::new();
    lr.publish(leader(12, 10), &region(1));
    let waiting = begin_on_a_task(&lr);
    tokio::time::sleep(Duration::from_millis(20)).await;
    lr.close_all();
    assert!(!answer(waiting).await, "woken, not granted");
    assert!(lr.begin(7, &at(1)).await.is_none());
}

#[test]
fn republishing_the_same_state_wakes_nobody_and_keeps_the_generation() {
    let lr = LocalReaders::new();
    lr.publish(leader(10, 10), &region(1));
    let g = lr.state(7).unwrap().generation;
    lr.publish(leader(10, 10), &region(1));
    assert_eq!(lr.state(7).unwrap().generation, g);
    let mut moved = region(1);
    moved.peers.push(Default::default());
    lr.publish(leader(10, 10), &moved);
    assert_eq!(lr.state(7).unwrap().generation, g + 1);
}

#[tokio::test]
async fn a_follower_serves_a_stale_read_from_a_recent_applied_safe_point_only() {
    let lr = LocalReaders::new();
    let max_age = Duration::from_millis(500);
    assert!(
        lr.begin_stale(7, &at(1), max_age).await.is_none(),
        "nothing published"
    );
    lr.publish(follower(10, Duration::from_millis(100), 10), &region(1));
    let read = lr.begin_stale(7, &at(1), max_age).await.expect("granted");
    assert!(read.still_valid());
    assert!(
        lr.begin(7, &at(1)).await.is_none(),
        "a follower never serves a linearizable read locally"
    );
    assert!(
        lr.begin_stale(7, &at(1), Duration::from_millis(50))
            .await
            .is_none(),
        "the safe point is older than this read allows"
    );
    assert!(
        lr.begin_stale(7, &at(2), max_age).await.is_none(),
        "another epoch"
    );

    // Not applied as far as the safe point: not served (not waited for).
    lr.publish(follower(12, Duration::from_millis(100), 11), &region(1));
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());

    // No safe point at all.
    let mut view = follower(0, Duration::ZERO, 11);
    view.safe = None;
    lr.publish(view, &region(1));
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());
}

#[tokio::test]
async fn a_stale_read_under_way_is_dropped_when_the_region_is_replaced_or_closed() {
    let lr = LocalReaders::new();
    let max_age = Duration::from_secs(5);
    lr.publish(follower(10, Duration::ZERO, 10), &region(1));
    let read = lr.begin_stale(7, &at(1), max_age).await.expect("granted");
    lr.invalidate(7);
    assert!(!read.still_valid(), "a snapshot or split under the read");
    assert!(!lr.finish(&read));
    let read = lr
        .begin_stale(7, &at(1), max_age)
        .await
        .expect("granted again");
    lr.remove(7);
    assert!(!read.still_valid(), "the peer is being destroyed");
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());
}

#[tokio::test]
async fn a_leader_with_a_lease_serves_a_stale_read_as_a_lease_read() {
    let lr = LocalReaders::new();
    let mut view = leader(10, 10);
    view.safe = None;
    lr.publish(view, &region(1));
    assert!(lr
        .begin_stale(7, &at(1), Duration::from_millis(1))
        .await
        .is_some());
}

#[tokio::test]
async fn while_a_snapshot_replaces_the_data_no_read_starts_and_none_under_way_is_kept() {
    let lr = LocalReaders::new();
    let max_age = Duration::from_secs(5);
    lr.publish(follower(10, Duration::ZERO, 10), &region(1));
    let before = lr.begin_stale(7, &at(1), max_age).await.expect("granted");
    let watched = lr.watch(7).expect("published");
    lr.begin_replace(7);
    assert!(
        !before.still_valid(),
        "began before the snapshot was staged"
    );
    assert!(
        !watched.still_valid(),
        "a poller read under way is dropped too"
    );
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());
    // The storage already names the snapshot (applied 50); the engine does
    // not hold its data: publications wait.
    lr.publish(follower(10, Duration::ZERO, 50), &region(1));
    assert_eq!(lr.state(7).unwrap().applied_index, 10);
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());
    let during = lr.watch(7).expect("published");

    lr.end_replace(follower(10, Duration::ZERO, 50), &region(1));
    assert_eq!(lr.state(7).unwrap().applied_index, 50);
    assert!(!during.still_valid(), "watched while the data was replaced");
    let after = lr.begin_stale(7, &at(1), max_age).await.expect("granted");
    assert!(after.still_valid());
}

#[tokio::test]
async fn a_new_replica_is_not_published_before_its_first_snapshot_is_in_place() {
    let lr = LocalReaders::new();
    let max_age = Duration::from_secs(5);
    lr.begin_replace(7);
    lr.publish(follower(10, Duration::ZERO, 50), &region(1));
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_none());
    assert_eq!(lr.state(7).unwrap().applied_index, 0);
    lr.end_replace(follower(10, Duration::ZERO, 50), &region(1));
    assert!(lr.begin_stale(7, &at(1), max_age).await.is_some());
}
