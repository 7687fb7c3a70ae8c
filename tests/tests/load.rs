//! Scheduling by load across separate processes: a hot range is split
//! where its load divides (load-based split), the leaderships of hot
//! regions spread over the stores although their counts are even
//! (hot-leader), and with more stores than replicas the replicas of hot
//! regions spread onto a store that held none (hot-region).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::RegionInfo;
use tessera_proto::keys;
use tessera_routing::Router;

async fn regions(c: &E2eCluster) -> Vec<RegionInfo> {
    tessera_e2e::scan_regions(&c.directory_conn())
        .await
        .unwrap_or_default()
}

/// Splits the cluster's one region into `n` at k001, k002, ... (region i
/// holds the keys k{i}/...) and waits until they settle.
async fn split_into(c: &E2eCluster, n: u32) {
    let at: Vec<String> = (1..n).map(|i| format!("k{i:03}")).collect();
    c.split_first_region(&at).await;
}

/// Writers putting `keys` round and round until the returned flag is set.
fn hammer(
    router: &Arc<Router>,
    keys: Vec<String>,
    writers: usize,
) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..writers)
        .map(|w| {
            let (router, stop, keys) = (router.clone(), stop.clone(), keys.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let _ = router
                        .put(None, keys[i % keys.len()].as_bytes(), b"hot")
                        .await;
                    i += writers;
                }
            })
        })
        .collect();
    (stop, tasks)
}

/// The sum of `tessera_directory_operators_total` samples of `kind` over
/// every directory member.
fn operators_ended(c: &E2eCluster, kind: &str) -> f64 {
    let label = format!("kind=\"{kind}\"");
    c.metrics_pages()
        .unwrap_or_default()
        .iter()
        .filter(|(name, _)| name.starts_with("directory-"))
        .flat_map(|(_, page)| page.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.starts_with("tessera_directory_operators_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_range_is_split_where_its_load_divides() {
    let c = E2eCluster::start(Options {
        schedule_extra: vec![
            "load_split_keys_per_sec = 100".into(),
            "load_split_hot_for_ms = 2000".into(),
            "merge_max_keys_per_sec = 20".into(),
            // Only the split is under test here.
            "hot_leader_min_keys_per_sec = 0".into(),
        ],
        ..Options::default()
    })
    .await;
    c.wait_settled(1).await;
    let router = c.router();
    // Cold keys on both sides of the hot range: the split must land inside
    // the hot range, not in the middle of the data.
    for i in 0..50 {
        for prefix in ["a", "z"] {
            let k = format!("{prefix}{i:03}");
            router.put(None, k.as_bytes(), b"cold").await.expect("put");
        }
    }
    let hot: Vec<String> = (0..200).map(|i| format!("hot{i:03}")).collect();
    let (stop, writers) = hammer(&router, hot.clone(), 4);
    let (lo, hi) = (
        keys::encode(0, hot[0].as_bytes()),
        keys::encode(0, hot[199].as_bytes()),
    );
    c.wait_for(
        "the hot range to be split by load",
        Duration::from_secs(90),
        |c| {
            let (lo, hi) = (lo.clone(), hi.clone());
            async move {
                regions(c)
                    .await
                    .iter()
                    .filter_map(|r| r.region.as_ref())
                    .any(|r| r.start_key > lo && r.start_key <= hi)
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let split: Vec<_> = regions(&c)
        .await
        .into_iter()
        .filter_map(|r| r.region)
        .filter(|r| !r.start_key.is_empty())
        .map(|r| String::from_utf8_lossy(&r.start_key[4..]).into_owned())
        .collect();
    // No split between the cold keys: every boundary is in the hot range.
    assert!(
        split.iter().all(|k| k.starts_with("hot")),
        "split at {split:?}"
    );
    for i in 0..50 {
        for prefix in ["a", "z"] {
            let k = format!("{prefix}{i:03}");
            let got = router.get(None, k.as_bytes()).await.expect("get");
            assert_eq!(got.as_deref(), Some(&b"cold"[..]), "{k}");
        }
    }
    for k in &hot {
        let got = router.get(None, k.as_bytes()).await.expect("get");
        assert_eq!(got.as_deref(), Some(&b"hot"[..]), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_of_hot_regions_spread_by_load_where_counts_are_even() {
    let c = E2eCluster::start(Options {
        schedule_extra: vec![
            "load_split_keys_per_sec = 0".into(),
            "hot_leader_min_keys_per_sec = 50".into(),
            "hot_leader_ratio = 1.5".into(),
        ],
        ..Options::default()
    })
    .await;
    split_into(&c, 6).await;

    // Counts even: every store leads two of the six regions.
    let leaders_by_store = |rs: &[RegionInfo]| {
        let mut by: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut sorted: Vec<&RegionInfo> = rs.iter().collect();
        sorted.sort_by(|a, b| {
            let key = |r: &RegionInfo| r.region.as_ref().map(|r| r.start_key.clone());
            key(a).cmp(&key(b))
        });
        for (i, r) in sorted.iter().enumerate() {
            if let Some(l) = &r.leader {
                by.entry(l.store_id).or_default().push(i);
            }
        }
        by
    };
    c.wait_for(
        "every store to lead two regions",
        Duration::from_secs(60),
        |c| async move {
            let by = leaders_by_store(&regions(c).await);
            by.len() == 3 && by.values().all(|v| v.len() == 2)
        },
    )
    .await;
    let by = leaders_by_store(&regions(&c).await);
    let (&busy_store, pair) = by.iter().next().expect("a store");
    let (a, b) = (pair[0], pair[1]);
    // Region i holds the keys k{i}/...: make the two regions that store
    // leads hot, and nothing else.
    let hot: Vec<String> = [a, b]
        .iter()
        .flat_map(|i| (0..50).map(move |j| format!("k{i:03}/{j:02}")))
        .collect();
    let router = c.router();
    let (stop, writers) = hammer(&router, hot, 4);
    c.wait_for(
        "the two hot regions to be led from different stores",
        Duration::from_secs(90),
        |c| async move {
            let by = leaders_by_store(&regions(c).await);
            let of = |i: usize| by.iter().find(|(_, v)| v.contains(&i)).map(|(s, _)| *s);
            of(a).is_some() && of(b).is_some() && of(a) != of(b)
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(
        operators_ended(&c, "hot-leader") >= 1.0,
        "store {busy_store} led both hot regions; no hot-leader operator ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_hot_regions_spread_onto_a_store_that_held_none() {
    // Four stores, three replicas; count balancing and the other load
    // rules off, so only the hot-region rule can move a replica.
    let c = E2eCluster::start(Options {
        stores: 4,
        schedule_extra: vec![
            "load_split_keys_per_sec = 0".into(),
            "hot_leader_min_keys_per_sec = 0".into(),
            "balance_threshold = 100".into(),
            "hot_region_min_write_keys_per_sec = 50".into(),
            "hot_region_ratio = 1.5".into(),
        ],
        ..Options::default()
    })
    .await;
    split_into(&c, 3).await;
    // The split kept every region's replicas on the first region's three
    // stores: the fourth holds nothing.
    let stores_of = |rs: &[RegionInfo], start: &str| -> Vec<u64> {
        let start = if start.is_empty() {
            vec![]
        } else {
            keys::encode(0, start.as_bytes())
        };
        let mut stores: Vec<u64> = rs
            .iter()
            .filter_map(|r| r.region.as_ref())
            .filter(|r| r.start_key == start)
            .flat_map(|r| r.peers.iter().map(|p| p.store_id))
            .collect();
        stores.sort_unstable();
        stores
    };
    let before = regions(&c).await;
    let original = stores_of(&before, "");
    assert_eq!(original.len(), 3, "{before:?}");
    assert_eq!(stores_of(&before, "k001"), original);
    assert_eq!(stores_of(&before, "k002"), original);

    // The regions from k001 and from k002 take every write.
    let hot: Vec<String> = (1..3)
        .flat_map(|i| (0..50).map(move |j| format!("k{i:03}/{j:02}")))
        .collect();
    let router = c.router();
    let (stop, writers) = hammer(&router, hot.clone(), 4);
    c.wait_for(
        "a replica of a hot region on the store that held none",
        Duration::from_secs(90),
        |c| {
            let original = original.clone();
            async move {
                let rs = regions(c).await;
                ["k001", "k002"].iter().any(|s| {
                    let now = stores_of(&rs, s);
                    now.len() == 3 && now.iter().any(|st| !original.contains(st))
                })
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(operators_ended(&c, "hot-region") >= 1.0);
    // The cold region stayed where it was, and every hot key reads back.
    assert_eq!(stores_of(&regions(&c).await, ""), original);
    for k in &hot {
        let got = router.get(None, k.as_bytes()).await.expect("get");
        assert_eq!(got.as_deref(), Some(&b"hot"[..]), "{k}");
    }
}
