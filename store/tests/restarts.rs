//! Restarting every store in the middle of a split and of a snapshot
//! transfer/apply: the cluster converges and nothing acknowledged is lost.

use std::time::Duration;

use tessera_multiraft::RaftConfig;
use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

async fn restart_all(cluster: &Cluster) {
    for s in cluster.store_ids() {
        cluster.stop_store(s).await;
    }
    for s in cluster.store_ids() {
        cluster.start_store(s).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_store_during_a_split_converges() {
    for delay_ms in [0u64, 2, 5, 20] {
        let cluster = std::sync::Arc::new(
            Cluster::start(ClusterOptions::new(3).engine(EngineKind::Rocks))
                .await
                .unwrap(),
        );
        let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
        for i in 0..100 {
            cluster
                .must_put(&key(format!("k{i:03}")), format!("v{i}").as_bytes())
                .await;
        }
        let c = cluster.clone();
        let split = tokio::spawn(async move { c.split(region.id, vec![key("k050")]).await });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        split.abort();
        let _ = split.await;
        restart_all(&cluster).await;

        // Whatever the split's fate, every key is there and every store
        // agrees about every region.
        for i in 0..100 {
            assert_eq!(
                cluster.must_get(&key(format!("k{i:03}"))).await,
                Some(format!("v{i}").into_bytes()),
                "key {i} after a restart {delay_ms} ms into a split"
            );
        }
        cluster.must_put(&key("k100"), b"after").await;
        cluster.assert_consistent(Duration::from_secs(30)).await;
        let regions = cluster.node(1).unwrap().regions().await.unwrap().len();
        assert!(regions == 1 || regions == 2, "{regions} regions");
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_store_during_a_snapshot_converges() {
    for delay_ms in [0u64, 10, 40] {
        let mut opts = ClusterOptions::new(3).engine(EngineKind::Rocks);
        opts.node.raft = RaftConfig {
            log_gc_tick_interval: 5,
            log_gc_threshold: 10,
            log_gc_count_limit: 100,
            ..opts.node.raft
        };
        let cluster = Cluster::start(opts).await.unwrap();
        let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
        let leader = cluster.leader_of(region.id).await.unwrap();
        let lagging = cluster
            .store_ids()
            .into_iter()
            .find(|s| *s != leader)
            .unwrap();
        cluster.isolate(lagging);
        for i in 0..400 {
            cluster
                .must_put(&key(format!("k{i:03}")), &[b'v'; 200])
                .await;
        }
        // The log moved past the lagging store: it needs a snapshot, which
        // starts as soon as the network heals. Restart everything while it
        // is on its way or being applied.
        cluster.heal();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        restart_all(&cluster).await;
        cluster.assert_consistent(Duration::from_secs(30)).await;
        let data = cluster.region_data(lagging, &cluster.regions()[0]);
        assert_eq!(
            data.len(),
            400,
            "the lagging store has every key ({delay_ms} ms)"
        );
        cluster.shutdown().await;
    }
}
