//! Maintenance from the CLI: `tessera store evict-leaders` drains a
//! store's leaderships (and keeps them away, an admin transfer there
//! included) until `restore-leaders`, after which the balancer gives it
//! leaders again. (`store remove` is in `scheduling.rs`.)

use std::time::Duration;

use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::RegionInfo;

async fn regions(c: &E2eCluster) -> Vec<RegionInfo> {
    tessera_e2e::scan_regions(&c.directory_conn())
        .await
        .unwrap_or_default()
}

async fn leaders_on(c: &E2eCluster, store_id: u64) -> usize {
    regions(c)
        .await
        .iter()
        .filter(|r| r.leader.is_some_and(|l| l.store_id == store_id))
        .count()
}

fn cli_json(c: &E2eCluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = c
        .try_cli(&all)
        .unwrap_or_else(|e| panic!("tessera {args:?}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_leaders_leave_a_store_and_come_back_once_restored() {
    let c = E2eCluster::start(Options::default()).await;
    let at: Vec<String> = (1..6).map(|i| format!("m{i}")).collect();
    c.split_first_region(&at).await;

    // The store leading the most regions is drained.
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for r in regions(&c).await {
        if let Some(l) = r.leader {
            *counts.entry(l.store_id).or_default() += 1;
        }
    }
    let (&store, _) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    let s = store.to_string();
    let drained = cli_json(&c, &["store", "evict-leaders", &s, "--wait-timeout", "60"]);
    assert_eq!(
        drained,
        serde_json::json!({"id": store, "evict_leaders": true, "leaders": 0})
    );
    let listed = cli_json(&c, &["store", "list"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == store)
        .unwrap()
        .clone();
    assert_eq!(entry["evict_leaders"], true, "{entry}");

    // It stays drained: the balancer sends nothing back, and an admin
    // transfer there is refused, naming the way out.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(leaders_on(&c, store).await, 0);
    let region = regions(&c).await[0].region.clone().unwrap();
    let err = c
        .try_cli(&[
            "region",
            "transfer-leader",
            &region.id.to_string(),
            "--to",
            &s,
        ])
        .unwrap_err();
    assert!(err.contains("restore-leaders"), "{err}");
    // Writes go on meanwhile.
    let router = c.router();
    router.put(None, b"m3x", b"v").await.unwrap();

    // Bad requests change nothing.
    let err = c.try_cli(&["store", "evict-leaders", "999"]).unwrap_err();
    assert!(err.contains("999"), "{err}");

    // Restored, it leads again (the balancer evens leaders out).
    let restored = cli_json(&c, &["store", "restore-leaders", &s]);
    assert_eq!(restored["evict_leaders"], false, "{restored}");
    c.wait_for(
        "the restored store to lead again",
        Duration::from_secs(60),
        |c| async move { leaders_on(c, store).await > 0 },
    )
    .await;
    assert_eq!(
        router.get(None, b"m3x").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
