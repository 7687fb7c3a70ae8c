//! Stores over the real gRPC transport on 127.0.0.1, with RocksDB, and the
//! client talking to the stores' gRPC `Kv` services.

use std::time::Duration;

use tessera_store::testkit::{key, Cluster, ClusterOptions, EngineKind, TransportKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_replicate_over_grpc_with_rocksdb_and_survive_a_leader_restart() {
    let cluster = Cluster::start(
        ClusterOptions::new(3)
            .engine(EngineKind::Rocks)
            .transport(TransportKind::Grpc),
    )
    .await
    .unwrap();
    let regions = cluster.bootstrap_regions(&[key("m")]).await.unwrap();
    for i in 0..200 {
        cluster
            .must_put(&key(format!("k{i:03}")), format!("v{i}").as_bytes())
            .await;
    }
    assert_eq!(cluster.must_get(&key("k123")).await, Some(b"v123".to_vec()));

    // Restart the leader of the first region: the others elect a new leader
    // over gRPC, and the restarted store reconnects and catches up.
    let leader = cluster.leader_of(regions[0].id).await.unwrap();
    cluster.stop_store(leader).await;
    cluster.must_put(&key("k-during"), b"x").await;
    cluster.start_store(leader).await.unwrap();
    for r in &regions {
        cluster
            .wait_replicas_caught_up(r.id, Duration::from_secs(30))
            .await
            .unwrap();
    }
    for i in (0..200).step_by(17) {
        assert_eq!(
            cluster.must_get(&key(format!("k{i:03}"))).await,
            Some(format!("v{i}").into_bytes())
        );
    }
    assert_eq!(
        cluster.must_get(&key("k-during")).await,
        Some(b"x".to_vec())
    );
    let all = cluster.scan(&key(""), &[]).await.unwrap();
    assert_eq!(all.len(), 201);
    cluster.shutdown().await;
}
