//! The directory as separate processes: bootstrap, leader failover, a full
//! restart of every member, and what stores do meanwhile.

use std::time::{Duration, Instant};

use tessera_e2e::{E2eCluster, Options};

async fn wait_healthy(c: &E2eCluster, regions: u32) {
    c.wait_for(
        &format!("{regions} fully replicated regions"),
        Duration::from_secs(90),
        move |c| async move {
            c.status()
                .await
                .map(|s| {
                    s.regions >= regions
                        && s.under_replicated_regions == 0
                        && s.operators.is_empty()
                })
                .unwrap_or(false)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_survives_losing_its_leader_and_a_full_restart() {
    let mut c = E2eCluster::start(Options::default()).await;
    // The first store bootstrapped the cluster with one replica; the
    // scheduler brings it to three.
    wait_healthy(&c, 1).await;
    let router = c.router();
    for i in 0..100 {
        router
            .put(None, format!("k{i:03}").as_bytes(), b"v1")
            .await
            .unwrap();
    }
    let before = c.status().await.unwrap();
    assert_eq!(before.stores.get("up").copied(), Some(3));

    // SIGKILL the directory leader: another member leads within seconds.
    let leader = c.directory_leader().await.unwrap();
    c.directories.get_mut(&leader).unwrap().proc.kill();
    let killed_at = Instant::now();
    c.wait_for(
        "a new directory leader",
        Duration::from_secs(30),
        |c| async move { c.directory_leader().await.is_some_and(|l| l != leader) },
    )
    .await;
    println!(
        "new directory leader {:?} after the old one was killed",
        killed_at.elapsed()
    );
    // Metadata intact, stores still serving.
    let after = c.status().await.unwrap();
    assert_eq!(after.regions, before.regions);
    assert_eq!(after.cluster_id, before.cluster_id);
    for i in (0..100).step_by(7) {
        assert_eq!(
            router
                .get(None, format!("k{i:03}").as_bytes())
                .await
                .unwrap(),
            Some(b"v1".to_vec())
        );
    }
    router.put(None, b"during-failover", b"ok").await.unwrap();
    c.directories.get_mut(&leader).unwrap().proc.start();

    // SIGKILL every member: the data path goes on without the directory.
    for d in c.directories.values_mut() {
        d.proc.kill();
    }
    for i in (0..100).step_by(11) {
        assert_eq!(
            router
                .get(None, format!("k{i:03}").as_bytes())
                .await
                .unwrap(),
            Some(b"v1".to_vec())
        );
    }
    router
        .put(None, b"no-directory", b"still-writable")
        .await
        .unwrap();
    // Restart them all: metadata is intact.
    for d in c.directories.values_mut() {
        d.proc.start();
    }
    c.wait_for(
        "a directory leader after a full restart",
        Duration::from_secs(30),
        |c| async move { c.directory_leader().await.is_some() },
    )
    .await;
    let restarted = c.status().await.unwrap();
    assert_eq!(restarted.cluster_id, before.cluster_id);
    assert_eq!(restarted.regions, before.regions);
    c.wait_for(
        "stores reporting again",
        Duration::from_secs(30),
        |c| async move {
            c.status()
                .await
                .is_ok_and(|s| s.stores.get("up").copied() == Some(3))
        },
    )
    .await;
    // A client with an empty cache finds everything through the directory.
    let fresh = c.router();
    for i in 0..100 {
        assert_eq!(
            fresh
                .get(None, format!("k{i:03}").as_bytes())
                .await
                .unwrap(),
            Some(b"v1".to_vec())
        );
    }
    assert_eq!(
        fresh.get(None, b"no-directory").await.unwrap(),
        Some(b"still-writable".to_vec())
    );
}
