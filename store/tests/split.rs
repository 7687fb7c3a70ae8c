//! Splitting regions: under concurrent writes, repeatedly up to 256
//! regions, with a replica partitioned away, and by size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::kvpb::{Context, PutRequest};
use tessera_store::split_check::SplitCheckConfig;
use tessera_testkit::{key, Cluster, ClusterOptions};

/// Writes `k{n:06}` keys round-robin over `0..keys` until stopped; returns
/// the last acknowledged value of each key.
async fn writer(
    cluster: Arc<Cluster>,
    id: usize,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut acked = BTreeMap::new();
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        for n in (id..keys).step_by(4) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let k = key(format!("k{n:06}"));
            let v = format!("w{id}-r{round}").into_bytes();
            if cluster.put(&k, &v).await.is_ok() {
                acked.insert(k, v);
            }
        }
        round += 1;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_under_concurrent_writes_reach_256_regions_and_lose_nothing() {
    let cluster = Arc::new(Cluster::start(ClusterOptions::new(3)).await.unwrap());
    let first = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    const KEYS: usize = 2048;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(writer(cluster.clone(), i, KEYS, stop.clone())))
        .collect();

    // 255 splits, spread over the key space, while the writers run.
    for i in 1..256 {
        let split_key = key(format!("k{:06}", i * KEYS / 256));
        let region = cluster.region_of(&split_key).unwrap();
        cluster.must_split(region.id, &split_key).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "the writers made progress ({} keys)",
        acked.len()
    );

    // Every acknowledged key reads back, and a scan across all regions
    // returns each key exactly once, in order.
    let all = cluster.scan(&key(""), &[]).await.unwrap();
    let keys: Vec<&Vec<u8>> = all.iter().map(|(k, _)| k).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "keys come back once each, in order");
    for (k, v) in &acked {
        let found = all.iter().find(|(ak, _)| ak == k).map(|(_, v)| v);
        assert_eq!(
            found,
            Some(v),
            "acknowledged write of {:?} lost",
            tessera_proto::escape(k)
        );
    }

    // A request with the epoch from before the splits is refused, and the
    // error names the region as it is now and the regions split from it.
    let leader = cluster.leader_of(first.id).await.unwrap();
    let resp = cluster
        .endpoint(leader)
        .unwrap()
        .put(PutRequest {
            context: Some(Context {
                region_id: first.id,
                region_epoch: first.region_epoch,
                peer: tessera_multiraft::region::find_peer_on_store(&first, leader).copied(),
                follower_read: false,
                stale_max_age_ms: 0,
            }),
            key: key("a"),
            value: b"stale".to_vec(),
        })
        .await
        .unwrap();
    match resp.region_error.and_then(|e| e.error) {
        Some(Kind::EpochNotMatch(e)) => {
            assert!(e.current_regions.len() >= 2, "{:?}", e.current_regions);
            assert_eq!(e.current_regions[0].id, first.id);
            assert!(e.current_regions[0].region_epoch.unwrap().version > 1);
        }
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    cluster.assert_consistent(Duration::from_secs(30)).await;
    for store in cluster.store_ids() {
        let regions = cluster.node(store).unwrap().regions().await.unwrap();
        assert_eq!(regions.len(), 256, "store {store} hosts every region");
    }
    cluster.shutdown().await;
}

/// A split's new regions serve writes at once rather than after an
/// election timeout: the new region's leader campaigns as the split
/// applies, and its vote requests, which reach the other stores before
/// they apply the split, wait there for the new region's peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regions_of_a_split_serve_writes_before_any_election_timeout() {
    let mut opts = ClusterOptions::new(3);
    // Elections only after 4-8 s of silence, the client gives up after 2 s:
    // a new region waiting for an election timeout fails the write.
    opts.node.raft.election_tick = 200;
    opts.client_deadline = Duration::from_secs(2);
    let cluster = Cluster::start(opts).await.unwrap();
    let mut region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    let first = tokio::time::timeout(Duration::from_secs(30), async {
        while cluster.put(&key("a"), b"first").await.is_err() {}
    })
    .await;
    assert!(first.is_ok(), "the first region never elected a leader");

    for i in 1..=4 {
        let split_key = key(format!("k{i}"));
        let regions = cluster.must_split(region.id, &split_key).await;
        assert_eq!(regions.len(), 2);
        // One key on each side of the split.
        let left = if i == 1 {
            key("a")
        } else {
            key(format!("k{}y", i - 1))
        };
        for k in [left, key(format!("k{i}x"))] {
            if let Err(e) = cluster.put(&k, b"v").await {
                panic!("split {i}: a write to one of its regions failed: {e}");
            }
        }
        // Split the newest region next, so each split starts from a region
        // that itself came from a split.
        region = regions
            .into_iter()
            .find(|r| r.start_key == split_key)
            .expect("a region starts at the split key");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_partitioned_during_a_split_catches_up_on_both_regions() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    for i in 0..50 {
        cluster.must_put(&key(format!("k{i:03}")), b"before").await;
    }
    let leader = cluster.leader_of(region.id).await.unwrap();
    let lagging = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader)
        .unwrap();
    cluster.isolate(lagging);

    let regions = cluster.must_split(region.id, &key("k025")).await;
    assert_eq!(regions.len(), 2);
    for i in 0..50 {
        cluster.must_put(&key(format!("k{i:03}")), b"after").await;
    }
    // The isolated store has neither the split nor the new writes yet.
    let stale = cluster.node(lagging).unwrap().regions().await.unwrap();
    assert_eq!(stale.len(), 1);

    cluster.heal();
    cluster.assert_consistent(Duration::from_secs(30)).await;
    let caught_up = cluster.node(lagging).unwrap().regions().await.unwrap();
    assert_eq!(caught_up.len(), 2, "the lagging store applied the split");
    for r in &regions {
        let data = cluster.region_data(lagging, r);
        assert_eq!(data.len(), 25, "region {} on the lagging store", r.id);
        assert!(data.iter().all(|(_, v)| v == b"after"));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_checker_splits_regions_past_the_size_limit() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    cluster.bootstrap_regions(&[]).await.unwrap();
    let checkers = cluster.start_split_checkers(SplitCheckConfig {
        region_split_size_bytes: 8 * 1024,
        interval: Duration::from_millis(100),
    });
    for i in 0..400 {
        cluster
            .must_put(&key(format!("k{i:04}")), &[b'v'; 100])
            .await;
    }
    // ~45 KiB of data, 8 KiB regions: several splits.
    let mut regions = 0;
    for _ in 0..100 {
        regions = cluster.node(1).unwrap().regions().await.unwrap().len();
        if regions >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        regions >= 4,
        "only {regions} regions after writing ~45 KiB with an 8 KiB split size"
    );
    // Splitting may go on; stop it so the replicas can be compared.
    drop(checkers);
    let all = cluster.scan(&key(""), &[]).await.unwrap();
    assert_eq!(all.len(), 400);
    cluster.assert_consistent(Duration::from_secs(30)).await;
    cluster.shutdown().await;
}
