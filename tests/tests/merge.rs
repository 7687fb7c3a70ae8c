//! `tessera region merge` end to end, on separate processes with TLS: the
//! source's replicas first move onto the target's stores, the merge runs
//! while a client writes, nothing is lost, the source is gone from the
//! directory and every listing, and bad or unauthorised requests are
//! refused with a clear error and change nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tessera_e2e::{E2eCluster, Options};

fn key(i: usize) -> String {
    format!("m{i:04}")
}

fn regions_json(c: &E2eCluster) -> Vec<serde_json::Value> {
    let out = c
        .try_cli(&["region", "list", "-o", "json"])
        .expect("region list");
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("json")
        .as_array()
        .expect("array")
        .clone()
}

fn stores_of(region: &serde_json::Value) -> Vec<u64> {
    let mut s: Vec<u64> = region["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["store_id"].as_u64().unwrap())
        .collect();
    s.sort();
    s
}

/// Writes keys 0..300 with `value`, then splits the one region at keys
/// 100 and 200.
async fn three_regions(c: &E2eCluster, router: &tessera_routing::Router, value: &[u8]) {
    for i in 0..300 {
        router
            .put(None, key(i).as_bytes(), value)
            .await
            .expect("put");
    }
    let first = regions_json(c)[0]["id"].to_string();
    c.try_cli(&["region", "split", &first, "--at", &key(100)])
        .expect("split");
    // Listed in key order: the new region is the second.
    let second = regions_json(c)[1]["id"].to_string();
    c.try_cli(&["region", "split", &second, "--at", &key(200)])
        .expect("split");
}

/// Waits until no operator runs and every region has three voters.
async fn settled(c: &E2eCluster) {
    c.wait_for(
        "the cluster to settle",
        std::time::Duration::from_secs(120),
        |c| async move {
            let quiet = c.status().await.is_ok_and(|s| s.operators.is_empty());
            quiet
                && regions_json(c).iter().all(|r| {
                    let peers = r["peers"].as_array().unwrap();
                    peers.len() == 3 && peers.iter().all(|p| p["role"] == "voter")
                })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_merge_aligns_merges_under_writes_and_refuses_bad_requests() {
    let c = E2eCluster::start(Options {
        stores: 4,
        ..Options::default()
    })
    .await;
    c.wait_settled(1).await;
    let router = c.router();
    three_regions(&c, &router, b"before").await;
    c.wait_for(
        "four stores",
        std::time::Duration::from_secs(60),
        |c| async move { c.list_stores().await.is_ok_and(|s| s.len() == 4) },
    )
    .await;
    settled(&c).await;
    let regions = regions_json(&c);
    assert_eq!(regions.len(), 3, "{regions:?}");
    let (a, b, d) = (&regions[0], &regions[1], &regions[2]);
    let (a_id, b_id, d_id) = (
        a["id"].to_string(),
        b["id"].to_string(),
        d["id"].to_string(),
    );

    // Unaligned on purpose: move one of the middle region's replicas to
    // the store the first region does not use.
    let a_stores = stores_of(a);
    let all: Vec<u64> = c
        .list_stores()
        .await
        .unwrap()
        .iter()
        .map(|s| s.store.as_ref().unwrap().id)
        .collect();
    let spare = *all
        .iter()
        .find(|s| !a_stores.contains(s))
        .unwrap_or_else(|| panic!("stores {all:?}, regions {regions:?}"));
    if !stores_of(b).contains(&spare) {
        let from = stores_of(b)[0].to_string();
        c.try_cli(&[
            "region",
            "move",
            &b_id,
            "--from",
            &from,
            "--to",
            &spare.to_string(),
        ])
        .expect("move");
    }
    settled(&c).await;
    assert_ne!(
        stores_of(&regions_json(&c)[1]),
        stores_of(&regions_json(&c)[0])
    );

    // Bad requests: refused, nothing changes.
    let err = c.try_cli(&["region", "merge", &a_id, &a_id]).unwrap_err();
    assert!(err.contains("cannot merge into itself"), "{err}");
    let err = c.try_cli(&["region", "merge", &a_id, &d_id]).unwrap_err();
    assert!(err.contains("not adjacent"), "{err}");
    let err = c
        .try_cli(&["region", "merge", &a_id, "999999"])
        .unwrap_err();
    assert!(err.contains("999999"), "{err}");
    let out = c
        .try_cli(&["user", "create", "writer", "--role", "readwrite"])
        .expect("user create");
    let token = out.lines().last().unwrap().trim().to_string();
    let err = c
        .try_cli(&["--token", &token, "region", "merge", &b_id, &a_id])
        .unwrap_err();
    assert!(err.contains("needs the role admin"), "{err}");
    assert_eq!(regions_json(&c).len(), 3);

    // The merge, while a client writes.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            // Per key: the last acknowledged value and every value tried
            // since (a failed put may still have applied).
            let mut allowed: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = key(i % 300);
                let v = format!("during{i}");
                let ok = router.put(None, k.as_bytes(), v.as_bytes()).await.is_ok();
                let (acked, values) = allowed.entry(k).or_default();
                if ok {
                    *acked = true;
                    values.clear();
                }
                values.push(v);
                i += 1;
            }
            allowed
        })
    };
    // `tessera operator list` shows the merge while it runs (aligning the
    // replicas takes a few seconds), and why.
    let merging = AtomicBool::new(true);
    let (out, listed) = std::thread::scope(|s| {
        let lister = s.spawn(|| {
            let mut listed = vec![];
            while merging.load(Ordering::Relaxed) {
                let out = c
                    .try_cli(&["operator", "list", "-o", "json"])
                    .expect("operator list");
                let ops: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
                listed.extend(ops.into_iter().filter(|o| o["kind"] == "merge"));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            listed
        });
        let out = c
            .try_cli(&[
                "region",
                "merge",
                &b_id,
                &a_id,
                "--wait-timeout",
                "120",
                "-o",
                "json",
            ])
            .expect("merge");
        merging.store(false, Ordering::Relaxed);
        (out, lister.join().unwrap())
    });
    assert!(!listed.is_empty(), "operator list never showed the merge");
    for op in &listed {
        assert_eq!(op["region_id"].to_string(), b_id, "{op}");
        assert_eq!(op["reason"], "asked for by an administrator", "{op}");
    }
    assert!(
        listed
            .iter()
            .any(|o| o["state"] == format!("merge into region {a_id}")
                || o["state"].as_str().unwrap().contains("learner")),
        "{listed:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let allowed = writer.await.unwrap();
    let merged: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(merged["id"].to_string(), a_id);
    assert_eq!(merged["start_key"], a["start_key"]);
    assert_eq!(merged["end_key"], d["start_key"]);
    let now = regions_json(&c);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.iter().all(|r| r["id"] != b["id"]));
    assert!(!allowed.is_empty());

    // Every key is there, with its last acknowledged value (or a later
    // one whose put failed but applied).
    for i in 0..300 {
        let k = key(i);
        let got = router.get(None, k.as_bytes()).await.expect("get");
        let got = String::from_utf8(got.expect("every key is there")).unwrap();
        let ok = match allowed.get(&k) {
            Some((acked, values)) => values.contains(&got) || (!acked && got == "before"),
            None => got == "before",
        };
        assert!(ok, "key {k} holds {got}, allowed {:?}", allowed.get(&k));
    }
    router
        .put(None, key(150).as_bytes(), b"after")
        .await
        .unwrap();
    assert_eq!(
        router
            .get(None, key(150).as_bytes())
            .await
            .unwrap()
            .as_deref(),
        Some(&b"after"[..])
    );
    let status = c.status().await.unwrap();
    assert!(status.operators.iter().all(|o| o.kind != "merge"));
}

/// The scheduler's merge rule, end to end: a keyspace split into three
/// regions is merged back once the regions have been cold for
/// `merge_quiet_for_ms` — except a region a client keeps busy, which stays
/// until it cools down. Every key survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_merges_small_cold_neighbours_but_not_busy_ones() {
    let c = E2eCluster::start(Options {
        schedule_extra: vec![
            "merge_quiet_for_ms = 3000".into(),
            "merge_max_keys_per_sec = 20".into(),
            // Only merges are under test: the busy region must not be
            // split by load either.
            "load_split_keys_per_sec = 0".into(),
        ],
        ..Options::default()
    })
    .await;
    c.wait_settled(1).await;
    let router = c.router();
    three_regions(&c, &router, b"v").await;
    let hot = regions_json(&c)[2].clone();
    assert_eq!(regions_json(&c).len(), 3);

    // Keep the last region busy: it holds keys 200..300.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = router
                    .put(None, key(200 + i % 100).as_bytes(), b"busy")
                    .await;
                i += 1;
            }
        })
    };
    c.wait_for(
        "the two cold regions to merge",
        std::time::Duration::from_secs(90),
        |c| async move { regions_json(c).len() == 2 },
    )
    .await;
    // The busy one stays on its own while it is busy (several merge rounds).
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let regions = regions_json(&c);
    assert_eq!(regions.len(), 2, "the busy region was merged: {regions:?}");
    assert_eq!(
        (&regions[1]["id"], &regions[1]["start_key"]),
        (&hot["id"], &hot["start_key"]),
        "{regions:?}"
    );
    stop.store(true, Ordering::Relaxed);
    busy.await.unwrap();

    // Cold again: it goes too.
    c.wait_for(
        "the last region to merge once cold",
        std::time::Duration::from_secs(90),
        |c| async move { regions_json(c).len() == 1 },
    )
    .await;
    for i in 0..300 {
        let got = router.get(None, key(i).as_bytes()).await.expect("get");
        let want: &[u8] = if i >= 200 { b"busy" } else { b"v" };
        assert!(
            got.as_deref() == Some(want) || (i >= 200 && got.as_deref() == Some(&b"v"[..])),
            "key {i}: {got:?}"
        );
    }
}
