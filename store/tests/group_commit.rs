//! Group commit is real: with 64 regions under concurrent writes, one synced
//! write batch serves several regions in a round.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fsync_serves_many_regions_under_concurrent_writes() {
    let cluster = Arc::new(
        Cluster::start(ClusterOptions::new(3).engine(EngineKind::Rocks))
            .await
            .unwrap(),
    );
    let split_keys: Vec<Vec<u8>> = (1..64).map(|i| key(format!("r{i:02}"))).collect();
    let regions = cluster.bootstrap_regions(&split_keys).await.unwrap();
    assert_eq!(regions.len(), 64);

    let before: Vec<(u64, u64)> = cluster
        .store_ids()
        .into_iter()
        .map(|s| {
            let st = cluster.poller_stats(s).unwrap();
            (
                st.synced_writes.load(Ordering::Relaxed),
                st.regions_in_synced_writes.load(Ordering::Relaxed),
            )
        })
        .collect();

    // 64 writers, one per region, all at once.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                for j in 0..20 {
                    let k = if i == 0 {
                        key(format!("a{j:03}"))
                    } else {
                        key(format!("r{i:02}-{j:03}"))
                    };
                    cluster.must_put(&k, b"value").await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let mut synced = 0;
    let mut regions_served = 0;
    let mut max_per_write = 0;
    for (store, (w0, r0)) in cluster.store_ids().into_iter().zip(before) {
        let st = cluster.poller_stats(store).unwrap();
        synced += st.synced_writes.load(Ordering::Relaxed) - w0;
        regions_served += st.regions_in_synced_writes.load(Ordering::Relaxed) - r0;
        max_per_write = max_per_write.max(st.max_regions_per_synced_write.load(Ordering::Relaxed));
    }
    let per_write = regions_served as f64 / synced as f64;
    println!("{synced} synced writes served {regions_served} region readies ({per_write:.1} per write, max {max_per_write})");
    assert!(
        max_per_write >= 8,
        "one synced write served at most {max_per_write} regions"
    );
    assert!(
        per_write > 2.0,
        "on average a synced write served only {per_write:.2} regions"
    );
    // 64 × 20 writes, each persisted on 3 stores, with far fewer fsyncs.
    assert!(
        synced < 64 * 20 * 3 / 2,
        "{synced} fsyncs for {} writes",
        64 * 20
    );

    for i in [0usize, 17, 63] {
        let k = if i == 0 {
            key("a007")
        } else {
            key(format!("r{i:02}-007"))
        };
        assert_eq!(cluster.must_get(&k).await, Some(b"value".to_vec()));
    }
    cluster.shutdown().await;
}
