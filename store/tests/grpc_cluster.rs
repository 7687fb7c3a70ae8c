//! Stores over the real gRPC transport on 127.0.0.1, with RocksDB, and the
//! client talking to the stores' gRPC `Kv` services.

use std::time::Duration;

use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind, TransportKind};

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

/// Region operations through the `StoreAdmin` gRPC service, with snapshots
/// streamed over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operations_over_grpc_and_snapshots_over_the_network() {
    use tessera_proto::adminpb::store_admin_client::StoreAdminClient;
    use tessera_proto::adminpb::*;

    let mut opts = ClusterOptions::new(4)
        .replicas(3)
        .engine(EngineKind::Rocks)
        .transport(TransportKind::Grpc);
    opts.node.raft.log_gc_tick_interval = 5;
    opts.node.raft.log_gc_threshold = 10;
    opts.node.raft.log_gc_count_limit = 100;
    let cluster = Cluster::start(opts).await.unwrap();
    let region = cluster.bootstrap_regions(&[]).await.unwrap()[0].clone();
    for i in 0..300 {
        cluster
            .must_put(&key(format!("k{i:03}")), &[b'x'; 512])
            .await;
    }
    let leader = cluster.leader_of(region.id).await.unwrap();
    let addr = cluster.address(leader).unwrap();
    let mut admin = StoreAdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // Region info: the leader reports progress of its followers.
    let info = admin
        .region_info(RegionInfoRequest {
            region_id: region.id,
        })
        .await
        .unwrap()
        .into_inner();
    let status = &info.regions[0];
    assert!(status.is_leader);
    assert_eq!(status.progress.len(), 3);
    assert!(status.truncated_index > 5, "log compacted");

    // Add a learner on store 4: it needs a snapshot, streamed over gRPC.
    let resp = admin
        .change_peer(ChangePeerRequest {
            region_id: region.id,
            kind: ChangePeerKind::AddLearner as i32,
            store_id: 4,
            peer_id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none());
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(30))
        .await
        .unwrap();
    let r = resp.region.unwrap();
    assert_eq!(
        cluster.region_data(4, &r).len(),
        300,
        "store 4 got every key by snapshot"
    );

    // Split through the service; a split at a key outside the region is
    // refused clearly.
    let resp = admin
        .split_region(SplitRegionRequest {
            region_id: region.id,
            split_keys: vec![key("k150")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none());
    assert_eq!(resp.regions.len(), 2);
    assert_eq!(resp.regions[1].start_key, key("k150"));
    let bad = admin
        .split_region(SplitRegionRequest {
            region_id: region.id,
            split_keys: vec![key("k200")],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("not below the region's end"),
        "{}",
        bad.message()
    );

    // A follower answers NotLeader with the leader.
    let follower = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader && *s != 4)
        .unwrap();
    let mut other =
        StoreAdminClient::connect(format!("http://{}", cluster.address(follower).unwrap()))
            .await
            .unwrap();
    let resp = other
        .transfer_leader(TransferLeaderRequest {
            region_id: region.id,
            to_store_id: follower,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.unwrap().is_not_leader());
    let resp = admin
        .transfer_leader(TransferLeaderRequest {
            region_id: region.id,
            to_store_id: follower,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none());
    assert_eq!(resp.leader.unwrap().store_id, follower);
    cluster.shutdown().await;
}
