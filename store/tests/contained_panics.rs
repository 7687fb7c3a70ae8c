//! A panic inside raft-rs while stepping a message from another node is
//! contained: the region is reloaded from its durable state and the store
//! keeps serving every region, with nothing acknowledged lost. (Known
//! hostile messages are refused before raft-rs — `tessera-e2e`'s
//! `node_messages` — this is the net under whatever those checks miss.)
//! Needs the failpoints build (`scripts/test`).
#![cfg(feature = "failpoints")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_raft_rs_reloads_the_region_instead_of_stopping_the_store() {
    let cluster = Cluster::start(ClusterOptions::new(3).engine(EngineKind::Rocks))
        .await
        .unwrap();
    cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    for i in 0..50 {
        cluster
            .must_put(&key(format!("k{i:03}")), format!("v{i}").as_bytes())
            .await;
    }
    let reloads = || -> u64 {
        cluster
            .store_ids()
            .into_iter()
            .filter_map(|s| cluster.node(s))
            .map(|n| n.stats().region_reloads.load(Ordering::Relaxed))
            .sum()
    };
    assert_eq!(reloads(), 0);

    // The next three messages stepped anywhere make raft-rs panic.
    fail::cfg("raft_step", "3*panic(tripped by the test)").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 50;
    while reloads() < 3 {
        assert!(Instant::now() < deadline, "only {} reloads", reloads());
        cluster
            .must_put(&key(format!("k{i:03}")), format!("v{i}").as_bytes())
            .await;
        i += 1;
    }
    fail::remove("raft_step");

    // Every poller still runs: both regions take writes, and every write
    // acknowledged before or after the panics is there on every store.
    cluster.must_put(&key("a-after"), b"ok").await;
    cluster.must_put(&key("z-after"), b"ok").await;
    for j in 0..i {
        assert_eq!(
            cluster.must_get(&key(format!("k{j:03}"))).await,
            Some(format!("v{j}").into_bytes()),
            "key {j}"
        );
    }
    cluster.assert_consistent(Duration::from_secs(30)).await;
    cluster.shutdown().await;
}
