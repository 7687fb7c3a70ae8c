//! Every Kv operation on a cluster with several regions, and the data
//! surviving a restart of every store (RocksDB in temporary directories).

use std::time::Duration;

use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

fn splits(points: &[&str]) -> Vec<Vec<u8>> {
    points.iter().map(key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_operations_span_regions_and_survive_restarting_every_store() {
    let cluster = Cluster::start(ClusterOptions::new(3).engine(EngineKind::Rocks))
        .await
        .unwrap();
    let regions = cluster
        .bootstrap_regions(&splits(&["g", "p"]))
        .await
        .unwrap();
    assert_eq!(regions.len(), 3);

    // put / get across the three regions
    for k in ["a", "f", "g", "h", "o", "p", "z"] {
        cluster.must_put(&key(k), format!("v-{k}").as_bytes()).await;
    }
    for k in ["a", "f", "g", "h", "o", "p", "z"] {
        assert_eq!(
            cluster.must_get(&key(k)).await,
            Some(format!("v-{k}").into_bytes())
        );
    }
    assert_eq!(cluster.must_get(&key("missing")).await, None);

    // overwrite and delete
    cluster.must_put(&key("h"), b"v-h2").await;
    cluster.must_delete(&key("o")).await;
    assert_eq!(cluster.must_get(&key("h")).await, Some(b"v-h2".to_vec()));
    assert_eq!(cluster.must_get(&key("o")).await, None);

    // scan across regions, in key order
    let all = cluster.scan(&key(""), &[]).await.unwrap();
    let names: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(
        names,
        ["a", "f", "g", "h", "p", "z"]
            .iter()
            .map(key)
            .collect::<Vec<_>>()
    );

    // compare-and-swap: absent, match, mismatch
    let r = cluster
        .compare_and_swap(&key("c"), None, b"1")
        .await
        .unwrap();
    assert!(r.succeeded && !r.previous_found);
    let r = cluster
        .compare_and_swap(&key("c"), Some(b"1"), b"2")
        .await
        .unwrap();
    assert!(r.succeeded && r.previous_value == b"1");
    let r = cluster
        .compare_and_swap(&key("c"), Some(b"1"), b"3")
        .await
        .unwrap();
    assert!(!r.succeeded && r.previous_value == b"2");
    let r = cluster
        .compare_and_swap(&key("c"), None, b"4")
        .await
        .unwrap();
    assert!(!r.succeeded, "the key exists");
    assert_eq!(cluster.must_get(&key("c")).await, Some(b"2".to_vec()));

    // delete-range across a region boundary
    cluster.delete_range(&key("f"), &key("q")).await.unwrap();
    let left: Vec<Vec<u8>> = cluster
        .scan(&key(""), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["a", "c", "z"].iter().map(key).collect::<Vec<_>>());

    // restart every store: every value is still there
    for store in cluster.store_ids() {
        cluster.restart_store(store).await.unwrap();
    }
    for r in &regions {
        cluster
            .wait_leader(r.id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    assert_eq!(cluster.must_get(&key("a")).await, Some(b"v-a".to_vec()));
    assert_eq!(cluster.must_get(&key("c")).await, Some(b"2".to_vec()));
    assert_eq!(cluster.must_get(&key("z")).await, Some(b"v-z".to_vec()));
    assert_eq!(cluster.must_get(&key("h")).await, None);
    let after: Vec<Vec<u8>> = cluster
        .scan(&key(""), &[])
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(after, left);

    // and the cluster still takes writes
    cluster.must_put(&key("after-restart"), b"yes").await;
    assert_eq!(
        cluster.must_get(&key("after-restart")).await,
        Some(b"yes".to_vec())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_scans_and_limits_stay_inside_a_region() {
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[]).await.unwrap();
    for i in 0..20 {
        cluster.must_put(&key(format!("k{i:02}")), b"v").await;
    }
    let leader = cluster.leader_of(regions[0].id).await.unwrap();
    let endpoint = cluster.endpoint(leader).unwrap();
    let region = &cluster.regions()[0];
    let ctx = tessera_proto::kvpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: tessera_multiraft::region::find_peer_on_store(region, leader).cloned(),
        follower_read: false,
    };
    let resp = endpoint
        .scan(tessera_proto::kvpb::ScanRequest {
            context: Some(ctx),
            start_key: key("k05"),
            end_key: key("k15"),
            limit: 3,
            reverse: true,
        })
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = resp.pairs.into_iter().map(|p| p.key).collect();
    assert_eq!(got, vec![key("k14"), key("k13"), key("k12")]);

    let resp = endpoint
        .batch_get(tessera_proto::kvpb::BatchGetRequest {
            context: Some(ctx),
            keys: vec![key("k01"), key("nope"), key("k19")],
        })
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = resp.pairs.into_iter().map(|p| p.key).collect();
    assert_eq!(
        got,
        vec![key("k01"), key("k19")],
        "only existing keys, in request order"
    );
    cluster.shutdown().await;
}
