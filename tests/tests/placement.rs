//! Hash keyspace placement across separate processes: a store added later
//! gets its share of a hash keyspace's replicas through a recorded
//! rebalance of the keyspace's ring (shown by `tessera keyspace list`),
//! and every key stays readable.

use std::time::Duration;

use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::RegionInfo;
use tessera_proto::keys;

/// The regions of keyspace `id` (strictly inside its range).
async fn keyspace_regions(c: &E2eCluster, id: u32) -> Vec<RegionInfo> {
    let (start, end) = keys::keyspace_range(id);
    tessera_e2e::scan_regions(&c.directory_conn())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            let r = r.region.as_ref().expect("region");
            r.start_key >= start && !r.end_key.is_empty() && r.end_key <= end
        })
        .collect()
}

/// Keyspace `name` as `tessera keyspace list -o json` shows it.
fn keyspace(c: &E2eCluster, name: &str) -> serde_json::Value {
    let out = c
        .try_cli(&["keyspace", "list", "-o", "json"])
        .expect("keyspace list");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    list.as_array()
        .expect("array")
        .iter()
        .find(|k| k["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// The stores keyspace `name`'s ring is built over, as the CLI shows them.
fn ring_stores(c: &E2eCluster, name: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = keyspace(c, name)["ring_stores"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_added_later_takes_its_share_of_a_hash_keyspace() {
    let mut c = E2eCluster::start(Options {
        schedule_extra: vec!["placement_rebalance_after_ms = 3000".into()],
        ..Options::default()
    })
    .await;
    c.wait_settled(1).await;
    c.try_cli(&["keyspace", "create", "events", "--hash", "--regions", "12"])
        .expect("keyspace create");
    let ks = keyspace(&c, "events");
    let id = ks["id"].as_u64().expect("id") as u32;
    let mut first: Vec<u64> = vec![];
    for i in 1..=3 {
        first.push(c.store_id(i).await.expect("store id"));
    }
    first.sort_unstable();
    c.wait_for(
        "the hash keyspace's 12 regions, placed on the three stores",
        Duration::from_secs(120),
        |c| {
            let first = first.clone();
            async move {
                keyspace_regions(c, id).await.len() == 12 && ring_stores(c, "events") == first
            }
        },
    )
    .await;
    let router = c.router();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000)
        .map(|i| (format!("user{i}").into_bytes(), b"x".to_vec()))
        .collect();
    for chunk in pairs.chunks(500) {
        router.batch_put(Some("events"), chunk).await.expect("put");
    }

    let (_, new_id) = c.add_registered_store().await;
    // The ring is rebuilt over four stores once they have been up for
    // 3 s, and replicas move to match: with three replicas on four
    // stores, most slices take the new store in.
    c.wait_for(
        "the new store to hold a share of the hash keyspace",
        Duration::from_secs(180),
        |c| async move {
            let on_new = keyspace_regions(c, id)
                .await
                .iter()
                .filter(|r| {
                    let r = r.region.as_ref().expect("region");
                    r.peers.iter().any(|p| p.store_id == new_id) && r.peers.len() == 3
                })
                .count();
            on_new >= 4 && ring_stores(c, "events").contains(&new_id)
        },
    )
    .await;
    assert_eq!(ring_stores(&c, "events").len(), 4);
    let keys: Vec<Vec<u8>> = pairs.iter().map(|(k, _)| k.clone()).collect();
    for chunk in keys.chunks(500) {
        let got = router
            .batch_get(Some("events"), chunk)
            .await
            .expect("batch get");
        assert_eq!((got.pairs.len(), got.resume_index), (chunk.len(), 0));
    }
}
