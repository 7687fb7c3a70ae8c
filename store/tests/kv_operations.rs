//! Every Kv operation on a cluster with several regions, and the data
//! surviving a restart of every store (RocksDB in temporary directories).

use std::time::Duration;

use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind};

/// A request context for the first region, addressed to its peer on
/// store `leader`.
fn context_on(cluster: &Cluster, leader: u64) -> tessera_proto::kvpb::Context {
    let region = &cluster.regions()[0];
    tessera_proto::kvpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: tessera_multiraft::region::find_peer_on_store(region, leader).cloned(),
        follower_read: false,
        stale_max_age_ms: 0,
    }
}

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
    let ctx = context_on(&cluster, leader);
    let resp = endpoint
        .scan(tessera_proto::kvpb::ScanRequest {
            context: Some(ctx),
            start_key: key("k05"),
            end_key: key("k15"),
            limit: 3,
            reverse: true,
            max_bytes: 0,
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
    // A key named many times is read and answered once (one key holding a
    // large value named hundreds of times once cost gigabytes).
    let resp = endpoint
        .batch_get(tessera_proto::kvpb::BatchGetRequest {
            context: Some(ctx),
            keys: [vec![key("k19"); 300], vec![key("k01"), key("k19")]].concat(),
        })
        .await
        .unwrap();
    let got: Vec<Vec<u8>> = resp.pairs.into_iter().map(|p| p.key).collect();
    assert_eq!(
        got,
        vec![key("k19"), key("k01")],
        "each distinct key once, in the order of its first mention"
    );
    cluster.shutdown().await;
}

/// A scan or batch get answers one page at a time: it stops at the store's
/// response budget (4 MiB; always at least one pair) and says where to go
/// on, so a read of any size never has to fit one response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_reads_are_answered_in_pages_that_say_where_to_go_on() {
    use tessera_proto::kvpb::{BatchGetRequest, ScanRequest};
    let cluster = Cluster::start(ClusterOptions::new(3)).await.unwrap();
    let regions = cluster.bootstrap_regions(&[]).await.unwrap();
    let big = vec![1u8; 1 << 20];
    let names: Vec<Vec<u8>> = (0..6).map(|i| key(format!("big{i}"))).collect();
    for k in &names {
        cluster.must_put(k, &big).await;
    }
    let leader = cluster.leader_of(regions[0].id).await.unwrap();
    let endpoint = cluster.endpoint(leader).unwrap();
    let ctx = context_on(&cluster, leader);
    let scan = |start: Vec<u8>, end: Vec<u8>, reverse: bool, max_bytes: u64| ScanRequest {
        context: Some(ctx),
        start_key: start,
        end_key: end,
        limit: 0,
        reverse,
        max_bytes,
    };
    let keys = |pairs: &[tessera_proto::kvpb::KvPair]| {
        pairs.iter().map(|p| p.key.clone()).collect::<Vec<_>>()
    };
    // 6 MiB: three pairs fit the 4 MiB page, the fourth starts the next.
    let first = endpoint
        .scan(scan(key(""), vec![], false, 0))
        .await
        .unwrap();
    assert_eq!(keys(&first.pairs), names[..3]);
    assert_eq!(first.resume_key, names[3]);
    let rest = endpoint
        .scan(scan(first.resume_key, vec![], false, 0))
        .await
        .unwrap();
    assert_eq!(keys(&rest.pairs), names[3..]);
    assert!(rest.resume_key.is_empty(), "the last page says so");
    // Reversed, the resume key is the next page's (exclusive) end.
    let back = endpoint.scan(scan(key(""), vec![], true, 0)).await.unwrap();
    assert_eq!(
        keys(&back.pairs),
        vec![names[5].clone(), names[4].clone(), names[3].clone()]
    );
    let more = endpoint
        .scan(scan(key(""), back.resume_key, true, 0))
        .await
        .unwrap();
    assert_eq!(
        keys(&more.pairs),
        vec![names[2].clone(), names[1].clone(), names[0].clone()]
    );
    // A caller may ask for less (never more), and still gets one pair.
    let one = endpoint
        .scan(scan(key(""), vec![], false, 1))
        .await
        .unwrap();
    assert_eq!(
        (keys(&one.pairs), one.resume_key),
        (names[..1].to_vec(), names[1].clone())
    );
    // A batch get pages the same way, by key index.
    let page = endpoint
        .batch_get(BatchGetRequest {
            context: Some(ctx),
            keys: [names.clone(), names.clone()].concat(),
        })
        .await
        .unwrap();
    assert_eq!(
        (keys(&page.pairs), page.resume_index),
        (names[..3].to_vec(), 3)
    );
    // Following the pages, everything is there once.
    let all = cluster.scan(&key(""), &[]).await.unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        names
    );
    cluster.shutdown().await;
}
