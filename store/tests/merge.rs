//! Merging regions: under concurrent writes down to one region, a merge
//! the target refuses (rolled back, both regions serve), a merging
//! region's answers, a replica that was down while its target merged, the
//! source leader's driver (to the end, and giving up), and a merge racing
//! a move of either region.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_store::merge::CommitOutcome;
use tessera_testkit::{key, Cluster, ClusterOptions, MergeEnd};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Puts fresh keys `w{id}-{n}` (spread over the key space by their hash)
/// until stopped; returns the acknowledged ones. A put that failed may
/// or may not have applied, so only acknowledged keys are checked.
async fn writer(
    cluster: Arc<Cluster>,
    id: usize,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut acked = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Spread over the regions: the first byte cycles over a..p.
        let k = key(format!("{}w{id}-{n}", (b'a' + (n % 16) as u8) as char));
        let v = format!("v{id}-{n}").into_bytes();
        match cluster.put(&k, &v).await {
            Ok(()) => {
                acked.insert(k, v);
            }
            Err(_) => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
    }
    acked
}

/// Regions of the cluster as store `store_id` hosts them, by start key.
async fn local_regions(cluster: &Cluster, store_id: u64) -> Vec<(Vec<u8>, u64)> {
    let mut out: Vec<_> = cluster
        .node(store_id)
        .unwrap()
        .regions()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.region.start_key, i.region.id))
        .collect();
    out.sort();
    out
}

/// Waits until no store hosts `region_id` (each applies the merge in its
/// own time).
async fn wait_gone(cluster: &Cluster, region_id: u64) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    for store in cluster.store_ids() {
        loop {
            let local = local_regions(cluster, store).await;
            if local.iter().all(|(_, id)| *id != region_id) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "store {store} still hosts region {region_id}: {local:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_under_concurrent_writes_down_to_one_region_lose_nothing() {
    let cluster = Arc::new(Cluster::start(ClusterOptions::new(3)).await.unwrap());
    let splits: Vec<Vec<u8>> = (b'b'..=b'h').map(|c| key([c])).collect();
    let mut regions = cluster.bootstrap_regions(&splits).await.unwrap();
    assert_eq!(regions.len(), 8);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(writer(cluster.clone(), i, stop.clone(), failures.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Merge neighbours until one region is left: sources alternate between
    // the left and the right neighbour of their target.
    let mut round = 0;
    while regions.len() > 1 {
        let i = round % (regions.len() - 1);
        let (left, right) = (regions[i].clone(), regions[i + 1].clone());
        let (source, target) = if round % 2 == 0 {
            (left, right)
        } else {
            (right, left)
        };
        let merged = cluster.must_merge(source.id, target.id).await;
        assert_eq!(merged.id, target.id);
        assert_eq!(merged.start_key, regions[i].start_key);
        assert_eq!(merged.end_key, regions[i + 1].end_key);
        regions.splice(i..=i + 1, [merged]);
        round += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 50, "only {} writes went through", acked.len());

    for (k, v) in &acked {
        assert_eq!(
            cluster.get(k).await.unwrap().as_ref(),
            Some(v),
            "acknowledged key {} lost",
            String::from_utf8_lossy(k)
        );
    }
    for store in cluster.store_ids() {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while local_regions(&cluster, store).await != vec![(vec![], regions[0].id)] {
            assert!(
                std::time::Instant::now() < deadline,
                "store {store} did not merge everything"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_the_target_refuses_rolls_back_and_both_regions_serve() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.must_put(&key("a"), b"1").await;
    cluster.must_put(&key("x"), b"2").await;

    let (prepared, state) = cluster.prepare_merge(left.id, right.id).await.unwrap();
    // The target changes after the source prepared: it must refuse.
    cluster.must_split(right.id, &key("t")).await;
    let end = cluster
        .finish_merge(prepared.clone(), state.clone())
        .await
        .unwrap();
    let MergeEnd::RolledBack(source, reason) = end else {
        panic!("a changed target merged: {end:?}");
    };
    assert!(reason.contains("changed"), "{reason}");
    assert_eq!(source.id, left.id);
    assert_eq!(
        (source.start_key, source.end_key),
        (left.start_key, left.end_key)
    );

    // Both serve their data, old and new.
    assert_eq!(
        cluster.must_get(&key("a")).await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        cluster.must_get(&key("x")).await.as_deref(),
        Some(&b"2"[..])
    );
    cluster.must_put(&key("b"), b"3").await;
    cluster.must_put(&key("n"), b"4").await;
    assert_eq!(
        cluster.must_get(&key("b")).await.as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(
        cluster.must_get(&key("n")).await.as_deref(),
        Some(&b"4"[..])
    );
    for store in cluster.store_ids() {
        assert_eq!(
            local_regions(&cluster, store).await.len(),
            3,
            "store {store}"
        );
    }

    // A merge into the region as it is now is prepared again; the first
    // merge, asked again (a driver from before a restart does that), still
    // gets its refusal, although the source replicas now hold another
    // merge; and the second merge succeeds.
    let (again, again_state) = cluster.prepare_merge(left.id, right.id).await.unwrap();
    assert!(again_state.prepare_index > state.prepare_index);
    let target_leader = cluster.wait_leader(right.id, TIMEOUT).await.unwrap();
    let answer = tessera_store::merge::commit_merge(
        &cluster.admin(target_leader).unwrap(),
        right.id,
        prepared,
        state,
        false,
    )
    .await
    .unwrap();
    assert!(
        matches!(&answer, CommitOutcome::Refused(why) if why.contains("before")),
        "{answer:?}"
    );
    let MergeEnd::Merged(merged) = cluster.finish_merge(again, again_state).await.unwrap() else {
        panic!("the second merge did not end merged");
    };
    assert_eq!(
        (merged.start_key.as_slice(), merged.end_key),
        (&b""[..], key("t"))
    );
    assert_eq!(
        cluster.must_get(&key("b")).await.as_deref(),
        Some(&b"3"[..])
    );
    wait_gone(&cluster, left.id).await;
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merging_region_answers_busy_then_not_found_and_bad_merges_are_refused() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster
        .bootstrap_regions(&[key("g"), key("p")])
        .await
        .unwrap();
    let (a, b, c) = (regions[0].clone(), regions[1].clone(), regions[2].clone());
    cluster.must_put(&key("h"), b"1").await;

    // Not adjacent; into itself: refused, nothing changes.
    let err = cluster.merge(a.id, c.id).await.unwrap_err();
    assert!(err.to_string().contains("not adjacent"), "{err}");
    let err = cluster.merge(a.id, a.id).await.unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
    cluster.must_put(&key("a"), b"0").await;
    // A commit naming a source that never prepared: refused at the
    // target's leader before anything is proposed (it would make every
    // replica of the target wait for a source that never comes).
    let leader = cluster.wait_leader(c.id, TIMEOUT).await.unwrap();
    let forged = tessera_proto::raft_serverpb::MergeState {
        target: Some(c.clone()),
        prepare_index: 5,
        prepare_term: 5,
    };
    let err = tessera_store::merge::commit_merge(
        &cluster.admin(leader).unwrap(),
        c.id,
        b.clone(),
        forged,
        false,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not merging into"), "{err}");
    cluster.must_put(&key("q"), b"still serving").await;

    let (prepared, state) = cluster.prepare_merge(b.id, c.id).await.unwrap();
    assert!(prepared.region_epoch.unwrap().version > b.region_epoch.unwrap().version);
    // While merging, the source takes neither writes nor reads: busy.
    let leader = cluster.wait_leader(b.id, TIMEOUT).await.unwrap();
    let resp = cluster.put_to(leader, &key("h"), b"2").await.unwrap();
    let err = resp.region_error.expect("a merging region refuses writes");
    assert!(matches!(err.error, Some(Kind::ServerIsBusy(_))), "{err:?}");
    let resp = cluster.get_from(leader, &key("h")).await.unwrap();
    assert!(
        matches!(
            resp.region_error.and_then(|e| e.error),
            Some(Kind::ServerIsBusy(_))
        ),
        "a merging region refuses reads"
    );
    // Nor a second merge, nor a split.
    let err = cluster.split(b.id, vec![key("k")]).await.unwrap_err();
    assert!(err.to_string().contains("merging"), "{err}");

    let end = cluster.finish_merge(prepared, state).await.unwrap();
    assert!(matches!(end, MergeEnd::Merged(_)), "{end:?}");
    // The source is gone from every store, its keys live in the target.
    wait_gone(&cluster, b.id).await;
    assert_eq!(
        cluster.must_get(&key("h")).await.as_deref(),
        Some(&b"1"[..])
    );
    cluster.must_put(&key("h"), b"4").await;
    assert_eq!(
        cluster.must_get(&key("h")).await.as_deref(),
        Some(&b"4"[..])
    );
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_during_the_merge_merges_when_it_restarts() {
    let mut opts = ClusterOptions::new(3);
    opts.engine = tessera_testkit::EngineKind::Rocks;
    let cluster = Cluster::start(opts).await.unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let (left, right) = (regions[0].clone(), regions[1].clone());
    for i in 0..50 {
        cluster.must_put(&key(format!("a{i}")), b"l").await;
        cluster.must_put(&key(format!("z{i}")), b"r").await;
    }
    let (prepared, state) = cluster.prepare_merge(right.id, left.id).await.unwrap();
    // Every source peer has the PrepareMerge; then a store that leads
    // neither region stops, and misses the commit and the merge.
    let mut leaders = vec![];
    for r in [left.id, right.id] {
        leaders.push(cluster.wait_leader(r, TIMEOUT).await.unwrap());
    }
    let down = cluster
        .store_ids()
        .into_iter()
        .find(|s| !leaders.contains(s))
        .unwrap_or(cluster.store_ids()[2]);
    loop {
        let leader = cluster.wait_leader(right.id, TIMEOUT).await.unwrap();
        let admin = cluster.admin(leader).unwrap();
        if tessera_store::merge::source_caught_up(&admin, right.id, state.prepare_index)
            .await
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop_store(down).await;
    let end = cluster.finish_merge(prepared, state).await.unwrap();
    let MergeEnd::Merged(merged) = end else {
        panic!("{end:?}");
    };
    assert_eq!(
        (merged.start_key.as_slice(), merged.end_key.as_slice()),
        (&b""[..], &b""[..])
    );
    cluster.must_put(&key("z0"), b"after").await;

    cluster.restart_store(down).await.unwrap();
    // It catches up by log: its target replica applies the commit, helps
    // its source replica up to the PrepareMerge, and merges.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while local_regions(&cluster, down).await != vec![(vec![], left.id)] {
        assert!(
            std::time::Instant::now() < deadline,
            "store {down} did not merge: {:?}",
            local_regions(&cluster, down).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.assert_consistent(TIMEOUT).await;
    let data = cluster.region_data(down, &merged);
    assert_eq!(data.len(), 100);
    assert!(data.contains(&(key("z0"), b"after".to_vec())));
    cluster.shutdown().await;
}

/// The merge state of `region_id` as its leader sees it, once it has one.
async fn leader_view(cluster: &Cluster, region_id: u64) -> tessera_multiraft::RegionInfo {
    let leader = cluster.wait_leader(region_id, TIMEOUT).await.unwrap();
    cluster
        .admin(leader)
        .unwrap()
        .region_info(region_id)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_started_on_the_source_leader_drives_itself_to_the_end() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.must_put(&key("a"), b"1").await;
    cluster.must_put(&key("x"), b"2").await;
    let leader = cluster.wait_leader(left.id, TIMEOUT).await.unwrap();
    tessera_store::merge::start(&cluster.admin(leader).unwrap(), left.id, right.id)
        .await
        .unwrap();
    wait_gone(&cluster, left.id).await;
    assert_eq!(
        cluster.must_get(&key("a")).await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        cluster.must_get(&key("x")).await.as_deref(),
        Some(&b"2"[..])
    );
    cluster.must_put(&key("b"), b"3").await;
    let merged = leader_view(&cluster, right.id).await.region;
    assert_eq!(
        (merged.start_key.as_slice(), merged.end_key.as_slice()),
        (&b""[..], &b""[..])
    );
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_whose_replica_never_catches_up_gives_up_and_rolls_back() {
    let mut opts = ClusterOptions::new(3);
    opts.node.merge_catch_up_timeout = Duration::from_secs(1);
    let cluster = Cluster::start(opts).await.unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let (left, right) = (regions[0].clone(), regions[1].clone());
    cluster.must_put(&key("a"), b"1").await;
    let mut leaders = vec![];
    for r in [left.id, right.id] {
        leaders.push(cluster.wait_leader(r, TIMEOUT).await.unwrap());
    }
    let cut = cluster
        .store_ids()
        .into_iter()
        .find(|s| !leaders.contains(s))
        .unwrap();
    // The cut store's source replica never gets the PrepareMerge.
    cluster.isolate(cut);
    tessera_store::merge::start(&cluster.admin(leaders[1]).unwrap(), right.id, left.id)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let info = leader_view(&cluster, right.id).await;
        if info.merge_state.is_none()
            && info.region.region_epoch.unwrap().version > right.region_epoch.unwrap().version + 1
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the merge did not roll back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both serve; once healed, the same regions merge.
    cluster.must_put(&key("x"), b"2").await;
    cluster.must_put(&key("b"), b"3").await;
    cluster.heal();
    cluster.assert_consistent(TIMEOUT).await;
    cluster.must_merge(right.id, left.id).await;
    wait_gone(&cluster, right.id).await;
    assert_eq!(
        cluster.must_get(&key("x")).await.as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(
        cluster.must_get(&key("a")).await.as_deref(),
        Some(&b"1"[..])
    );
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_racing_a_move_rolls_back_and_moved_regions_merge_once_aligned() {
    let cluster = Cluster::start(ClusterOptions::new(4)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let (left, right) = (regions[0].clone(), regions[1].clone());
    let stores = |r: &tessera_proto::metapb::Region| {
        let mut s: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        s.sort();
        s
    };
    cluster.must_put(&key("a"), b"1").await;
    cluster.must_put(&key("x"), b"2").await;

    // Laid out on different stores: refused until aligned.
    let (l, r) = (stores(&left), stores(&right));
    if l != r {
        let err = cluster.merge(left.id, right.id).await.unwrap_err();
        assert!(err.to_string().contains("same stores"), "{err}");
        let from = *l.iter().find(|s| !r.contains(s)).unwrap();
        let to = *r.iter().find(|s| !l.contains(s)).unwrap();
        cluster.move_peer(left.id, from, to).await.unwrap();
    }
    let on = stores(&right);
    let spare = cluster
        .store_ids()
        .into_iter()
        .find(|s| !on.contains(s))
        .unwrap();

    let (prepared, state) = cluster.prepare_merge(left.id, right.id).await.unwrap();
    // The merging source takes no membership change...
    let leader = cluster.wait_leader(left.id, TIMEOUT).await.unwrap();
    let err = tessera_store::conf_change::change_peer(
        &cluster.admin(leader).unwrap(),
        left.id,
        ChangePeerKind::AddLearner,
        spare,
        0,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("merging"), "{err}");
    // ...but its target may still move: the merge is refused and rolls back.
    cluster
        .must_change_peer(right.id, ChangePeerKind::AddLearner, spare)
        .await;
    let end = cluster.finish_merge(prepared, state).await.unwrap();
    assert!(
        matches!(&end, MergeEnd::RolledBack(_, reason) if reason.contains("changed")),
        "{end:?}"
    );
    cluster.must_put(&key("b"), b"3").await;
    cluster.must_put(&key("y"), b"4").await;

    // A learner on the target: refused before anything starts.
    let err = cluster.merge(left.id, right.id).await.unwrap_err();
    assert!(err.to_string().contains("not a voter"), "{err}");
    // The target's move ends (promote, remove); the source follows; then
    // they merge.
    cluster
        .must_change_peer(right.id, ChangePeerKind::PromoteLearner, spare)
        .await;
    let leader = cluster.wait_leader(right.id, TIMEOUT).await.unwrap();
    let victim = *on.iter().find(|s| **s != leader).unwrap();
    cluster
        .must_change_peer(right.id, ChangePeerKind::RemovePeer, victim)
        .await;
    let err = cluster.merge(left.id, right.id).await.unwrap_err();
    assert!(err.to_string().contains("same stores"), "{err}");
    cluster.move_peer(left.id, victim, spare).await.unwrap();
    let merged = cluster.must_merge(left.id, right.id).await;
    assert_eq!(
        (merged.start_key.as_slice(), merged.end_key.as_slice()),
        (&b""[..], &b""[..])
    );
    wait_gone(&cluster, left.id).await;
    for (k, v) in [("a", "1"), ("x", "2"), ("b", "3"), ("y", "4")] {
        assert_eq!(
            cluster.must_get(&key(k)).await.as_deref(),
            Some(v.as_bytes())
        );
    }
    cluster.assert_consistent(TIMEOUT).await;
    cluster.shutdown().await;
}
