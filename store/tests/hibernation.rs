//! Hibernation on a cluster of stores (`multiraft/src/hibernate.rs`): idle
//! regions stop ticking on every replica, a request wakes them and is
//! served with the data written before, the death of a hibernating
//! region's leader is noticed through store liveness and a new leader is
//! elected, and a hibernating region is reported to the directory at a low
//! rate. (The step-by-step protocol is in
//! `multiraft/tests/scripts/hibernation*.txt`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_multiraft::RaftConfig;
use tessera_proto::metapb::Region;
use tessera_testkit::{key, Cluster, ClusterOptions};

mod common;

/// 20 ms ticks, elections after 20, heartbeats every 4; a leader asks to
/// hibernate after 10 idle ticks (200 ms); followers wake after 20 ticks
/// (400 ms) without a word from their leader's store.
fn options(stores: usize) -> ClusterOptions {
    let mut opts = ClusterOptions::new(stores);
    opts.node.raft = RaftConfig {
        hibernate_regions: true,
        hibernate_after_ticks: 10,
        store_liveness_ticks: 20,
        ..opts.node.raft.clone()
    };
    opts
}

/// Starts `stores` stores holding 8 regions, each written once.
async fn cluster_with_regions(stores: usize) -> (Arc<Cluster>, Vec<Region>) {
    let cluster = Arc::new(Cluster::start(options(stores)).await.unwrap());
    let splits: Vec<Vec<u8>> = (1..8).map(|i| key(format!("k{i}"))).collect();
    let regions = cluster.bootstrap_regions(&splits).await.unwrap();
    for r in &regions {
        cluster
            .wait_leader(r.id, Duration::from_secs(10))
            .await
            .unwrap();
    }
    for i in 0..8 {
        cluster
            .must_put(&key(format!("k{i}-x")), format!("v{i}").as_bytes())
            .await;
    }
    (cluster, regions)
}

/// Whether every replica of `region_id` on the running stores hibernates.
async fn asleep(cluster: &Cluster, region_id: u64) -> bool {
    let infos = cluster.region_infos(region_id).await;
    !infos.is_empty() && infos.iter().all(|(_, i)| i.hibernating)
}

/// Waits until every replica of every region in `regions` hibernates.
async fn wait_all_asleep(cluster: &Cluster, regions: &[Region]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = true;
        for r in regions {
            all &= asleep(cluster, r.id).await;
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "idle regions did not all hibernate: {:?}",
            cluster.region_infos(regions[0].id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Peers ticked on `store` over `window`.
async fn peer_ticks_over(cluster: &Cluster, store: u64, window: Duration) -> u64 {
    let stats = cluster.poller_stats(store).unwrap();
    let before = stats.peer_ticks.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    stats.peer_ticks.load(Ordering::Relaxed) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_regions_hibernate_and_a_request_wakes_them() {
    let (cluster, regions) = cluster_with_regions(3).await;
    wait_all_asleep(&cluster, &regions).await;

    // Asleep, no peer ticks (awake, each of the 8 would tick 50 times a
    // second).
    for store in 1..=3 {
        let ticks = peer_ticks_over(&cluster, store, Duration::from_millis(500)).await;
        assert_eq!(ticks, 0, "store {store} ticked hibernating peers");
    }

    // A write to one hibernating region wakes it and succeeds; reads of
    // every region — asleep, their leases long run out — see what was
    // written before they slept.
    cluster.must_put(&key("k3-y"), b"after").await;
    assert_eq!(
        cluster.must_get(&key("k3-y")).await.as_deref(),
        Some(&b"after"[..])
    );
    for i in 0..8 {
        assert_eq!(
            cluster.must_get(&key(format!("k{i}-x"))).await,
            Some(format!("v{i}").into_bytes()),
            "region {i} after its sleep"
        );
    }
    let woken = cluster.region_of(&key("k3-y")).unwrap().id;
    assert!(
        !asleep(&cluster, woken).await,
        "the written region is awake"
    );
    assert!(
        peer_ticks_over(&cluster, 1, Duration::from_millis(100)).await > 0,
        "awake peers tick"
    );
    // Idle again, it sleeps again.
    wait_all_asleep(&cluster, &regions).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_of_a_hibernating_region_is_replaced() {
    let (cluster, regions) = cluster_with_regions(3).await;
    // Leaders on one store, so its death leaves every region leaderless.
    for r in &regions {
        cluster.must_transfer_leader(r.id, 1).await;
    }
    wait_all_asleep(&cluster, &regions).await;

    cluster.stop_store(1).await;
    let stopped = Instant::now();
    let cfg = cluster.options().node.raft.clone();
    let bound = cfg.tick_interval * cfg.hibernated_failover_ticks() as u32;
    for r in &regions {
        let leader = loop {
            match cluster.leader_of(r.id).await {
                Some(l) if l != 1 => break l,
                _ => {}
            }
            // Far past the stated bound: only a region that never wakes
            // fails here (the measured time is printed, not asserted).
            assert!(
                stopped.elapsed() < bound * 5,
                "region {} has no new leader {:?} after its leader's store died",
                r.id,
                stopped.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_ne!(leader, 1);
    }
    println!(
        "every region had a new leader {:?} after the store died (bound {bound:?})",
        stopped.elapsed()
    );
    for i in 0..8 {
        assert_eq!(
            cluster.must_get(&key(format!("k{i}-x"))).await,
            Some(format!("v{i}").into_bytes())
        );
        cluster.must_put(&key(format!("k{i}-z")), b"after").await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernating_regions_report_at_a_low_rate() {
    let (cluster, regions) = cluster_with_regions(1).await;
    wait_all_asleep(&cluster, &regions).await;
    // One region stays busy; the others sleep.
    let busy = cluster.region_of(&key("k5-x")).unwrap().id;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = cluster.put(&key(format!("k5-w{i}")), b"w").await;
                i += 1;
            }
        })
    };
    let directory = Arc::new(common::TestDirectory::new(true));
    // Every 50 ms; a hibernating region every 100 intervals (5 s).
    let heartbeats = directory.hear_from(cluster.node(1).unwrap(), 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    heartbeats.abort();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let reports = directory.reports.lock().clone();
    let busy_reports = reports.get(&busy).copied().unwrap_or(0);
    assert!(
        busy_reports >= 10,
        "an awake region is reported every interval (about 40 in 2 s), got {busy_reports}: {reports:?}"
    );
    for r in regions.iter().filter(|r| r.id != busy) {
        let n = reports.get(&r.id).copied().unwrap_or(0);
        assert!(
            n <= 1,
            "a hibernating region is reported once in 100 intervals, region {} was {n} times in 40: {reports:?}",
            r.id
        );
    }
    cluster.shutdown().await;
}
