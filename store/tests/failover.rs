//! Leader failure and network partitions, on 3 and 5 stores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_testkit::{key, Cluster, ClusterOptions};

/// Writes keys in a loop until told to stop; returns what was acknowledged.
async fn writer(
    cluster: Arc<Cluster>,
    prefix: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut acked = BTreeMap::new();
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let k = key(format!("{prefix}-{i:06}"));
        let v = format!("value-{i}").into_bytes();
        if cluster.put(&k, &v).await.is_ok() {
            acked.insert(k, v);
        }
        i += 1;
    }
    acked
}

async fn leader_failover(stores: usize) {
    let cluster = Arc::new(
        Cluster::start(ClusterOptions::new(stores).replicas(stores))
            .await
            .unwrap(),
    );
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = ["a", "x"]
        .into_iter()
        .map(|p| tokio::spawn(writer(cluster.clone(), p.to_string(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let old_leader = cluster.leader_of(regions[0].id).await.unwrap();
    cluster.stop_store(old_leader).await;
    let stopped_at = Instant::now();
    let new_leader = loop {
        if let Some(l) = cluster.leader_of(regions[0].id).await {
            if l != old_leader {
                break l;
            }
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(15),
            "no new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(new_leader, old_leader);
    // Writes continue after the failover.
    cluster.must_put(&key("after-failover"), b"ok").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "writers made progress ({} acked)",
        acked.len()
    );

    // The old leader comes back and catches up; nothing acknowledged is lost.
    cluster.start_store(old_leader).await.unwrap();
    for (k, v) in &acked {
        assert_eq!(
            cluster.must_get(k).await.as_ref(),
            Some(v),
            "acknowledged write lost"
        );
    }
    for r in &regions {
        cluster
            .wait_replicas_caught_up(r.id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_store_of_3_elects_a_new_leader_and_loses_nothing() {
    leader_failover(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_store_of_5_elects_a_new_leader_and_loses_nothing() {
    leader_failover(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_commit_nor_serve_stale_reads_and_catches_up_after_healing() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[]).await.unwrap();
    let region_id = regions[0].id;
    cluster.must_put(&key("k"), b"v1").await;
    let old = cluster.leader_of(region_id).await.unwrap();
    // Let the lease be fresh, so the test also covers lease expiry.
    assert_eq!(cluster.get_from(old, &key("k")).await.unwrap().value, b"v1");

    cluster.isolate(old);
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|s| *s != old)
        .collect();
    let started = Instant::now();
    let new = loop {
        let infos = cluster.region_infos(region_id).await;
        if let Some((s, _)) = infos.iter().find(|(s, i)| *s != old && i.is_leader) {
            break *s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "majority elected no leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(others.contains(&new));

    // The majority moves on.
    let majority_write = cluster.put_to(new, &key("k"), b"v2").await.unwrap();
    assert!(majority_write.region_error.is_none());

    // The old leader can't commit: its write fails (not leader, or times out
    // with an unknown outcome) and is never applied.
    match cluster.put_to(old, &key("lost"), b"x").await {
        Ok(resp) => assert!(
            resp.region_error.is_some(),
            "isolated leader acknowledged a write"
        ),
        Err(e) => assert!(e.to_string().contains("unknown"), "unexpected error {e}"),
    }
    // ... and never serves the old value: it either refuses or, while it still
    // believes it leads, cannot confirm its leadership.
    match cluster.get_from(old, &key("k")).await {
        Ok(resp) => {
            assert!(
                resp.region_error.is_some(),
                "stale read served: {:?}",
                resp.value
            );
        }
        Err(e) => assert!(
            e.to_string().contains("unknown") || e.to_string().contains("timed out"),
            "unexpected error {e}"
        ),
    }

    cluster.heal();
    cluster
        .wait_replicas_caught_up(region_id, Duration::from_secs(20))
        .await
        .unwrap();
    let infos = cluster.region_infos(region_id).await;
    let (_, old_info) = infos.iter().find(|(s, _)| *s == old).unwrap();
    assert!(!old_info.is_leader || old_info.term > 0);
    assert_eq!(cluster.must_get(&key("k")).await, Some(b"v2".to_vec()));
    assert_eq!(
        cluster.must_get(&key("lost")).await,
        None,
        "the minority's write never applied"
    );
    // The old leader's replica has the majority's data.
    let follower_read = {
        let region = &cluster.regions()[0];
        let endpoint = cluster.endpoint(old).unwrap();
        endpoint
            .get(tessera_proto::kvpb::GetRequest {
                context: Some(tessera_proto::kvpb::Context {
                    region_id,
                    region_epoch: region.region_epoch,
                    peer: tessera_multiraft::region::find_peer_on_store(region, old).cloned(),
                    follower_read: true,
                    stale_max_age_ms: 0,
                }),
                key: key("k"),
            })
            .await
            .unwrap()
    };
    assert!(
        follower_read.region_error.is_none(),
        "{:?}",
        follower_read.region_error
    );
    assert_eq!(follower_read.value, b"v2");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_store_hands_its_leaders_away_first() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let splits: Vec<Vec<u8>> = (1..8).map(|i| key(format!("r{i}"))).collect();
    let regions = cluster.bootstrap_regions(&splits).await.unwrap();
    // bootstrap_regions elects the first peer's store; find one that leads.
    let mut leading = std::collections::BTreeMap::<u64, usize>::new();
    for r in &regions {
        *leading
            .entry(cluster.leader_of(r.id).await.unwrap())
            .or_default() += 1;
    }
    let (&store, &count) = leading.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(count > 0);

    let node = cluster.node(store).unwrap();
    let left = node
        .transfer_leaders_away(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(left, 0, "store {store} still leads {left} regions");
    for r in &regions {
        let leader = cluster.leader_of(r.id).await.unwrap();
        assert_ne!(
            leader, store,
            "region {} is still led by the stopping store",
            r.id
        );
    }
    drop(node);
    cluster.stop_store(store).await;
    for i in 1..8 {
        cluster.must_put(&key(format!("r{i}-after")), b"v").await;
    }
    cluster.shutdown().await;
}
