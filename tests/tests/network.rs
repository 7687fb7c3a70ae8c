//! Links cut from outside the processes: every process on a network host of
//! its own (`tessera_e2e::netns`: network namespaces joined by a routing
//! switch; needs root, as CI runs), and a link cut by the switch dropping
//! what crosses it — no fault switch inside tessera. A store cut from the
//! directory alone keeps serving and reports again once healed; a leader cut
//! from its followers but not from the directory is replaced and no
//! acknowledged write is lost; a client cut from one router carries on
//! through another (the write in flight on the cut connection reported
//! indeterminate, never resent). The network's own cuts are checked first, so a test
//! that relies on them cannot pass on a cut that drops nothing.

use std::time::{Duration, Instant};

use tessera_client::Client;
use tessera_e2e::netns::HARNESS;
use tessera_e2e::{scan_regions, E2eCluster, Options};
use tessera_proto::directorypb::TransferLeaderRequest;
use tessera_proto::metapb::StoreState;

fn key(i: usize) -> String {
    format!("net{i:04}")
}

async fn cluster(routers: usize) -> E2eCluster {
    let mut c = E2eCluster::start(Options {
        network_namespaces: true,
        ..Options::default()
    })
    .await;
    for _ in 0..routers {
        c.add_router().await;
    }
    c.wait_settled(1).await;
    c
}

/// A direct-mode client (it talks to the directory and the stores itself),
/// with the SDK's default timeouts.
async fn direct(c: &E2eCluster) -> Client {
    Client::builder()
        .directory(c.directory_addrs())
        .security(c.security())
        .build()
        .await
        .expect("direct client")
}

/// Whether a TCP connection from the harness to `addr` opens within 1 s.
async fn reachable(addr: &str) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The store `index`'s state and seconds since its last heartbeat, as the
/// directory's leader sees them.
async fn store_state(c: &E2eCluster, id: u64) -> Option<(StoreState, u64)> {
    let stores = c.list_stores().await.ok()?;
    let s = stores
        .into_iter()
        .find(|s| s.store.as_ref().is_some_and(|st| st.id == id))?;
    Some((s.store?.state(), s.seconds_since_heartbeat))
}

/// The store id of the first region's leader, as the directory knows it.
async fn first_leader(c: &E2eCluster) -> Option<u64> {
    let regions = scan_regions(&c.directory_conn()).await.ok()?;
    regions.first()?.leader.as_ref().map(|p| p.store_id)
}

/// The harness index of the store with id `id`.
async fn index_of(c: &E2eCluster, id: u64) -> usize {
    for &index in c.stores.keys() {
        if c.store_id(index).await == Some(id) {
            return index;
        }
    }
    panic!("no store with id {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_drops_what_a_cut_link_carries_and_heals() {
    let mut c = cluster(1).await;
    let router = c.routers[&1].addr.clone();
    let store = c.stores[&1].addr.clone();
    assert!(reachable(&router).await && reachable(&store).await);

    // One way, harness → router: the handshake never completes; the store
    // is still reachable.
    c.net().cut_one_way(HARNESS, "router-1").expect("cut");
    assert!(!reachable(&router).await, "a cut link still connects");
    assert!(reachable(&store).await, "a cut cuts other links too");
    // The other way, router → harness: the router's answers are lost, so
    // no connection opens either (TCP needs both directions).
    c.net().heal_all().expect("heal");
    c.net().cut_one_way("router-1", HARNESS).expect("cut");
    assert!(
        !reachable(&router).await,
        "a one-way cut back still connects"
    );
    c.net().heal(HARNESS, "router-1").expect("heal");
    assert!(c.net().cuts().is_empty());
    assert!(reachable(&router).await, "a healed link does not connect");
    // Cutting a host the network does not have is an error.
    let err = c.net().cut("store-1", "nobody").unwrap_err();
    assert!(err.contains("no host nobody"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_from_the_directory_alone_keeps_serving_and_reports_again_once_healed() {
    let mut c = cluster(0).await;
    let client = direct(&c).await;
    for i in 0..50 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    let id = c.store_id(1).await.expect("store 1 registered");
    let directories: Vec<String> = c
        .directories
        .keys()
        .map(|d| format!("directory-{d}"))
        .collect();
    let directories: Vec<&str> = directories.iter().map(String::as_str).collect();
    c.net()
        .cut_between(&["store-1"], &directories)
        .expect("cut");

    // The directory stops hearing from it and marks it Down ...
    c.wait_for(
        "the directory marks the cut store Down",
        Duration::from_secs(30),
        |c| async move { matches!(store_state(c, id).await, Some((StoreState::Down, _))) },
    )
    .await;
    // ... while it goes on serving with the other stores: its Raft links
    // and the client's link to it are whole.
    for i in 50..100 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    for i in 0..100 {
        assert_eq!(
            client.get(key(i)).await.expect("get").as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key {i}"
        );
    }

    c.net().heal_all().expect("heal");
    c.wait_for(
        "the healed store reports again and is Up",
        Duration::from_secs(30),
        |c| async move { matches!(store_state(c, id).await, Some((StoreState::Up, s)) if s < 2) },
    )
    .await;
    let stats = c
        .list_stores()
        .await
        .expect("stores")
        .into_iter()
        .find(|s| s.store.as_ref().is_some_and(|st| st.id == id))
        .and_then(|s| s.stats)
        .expect("the healed store's stats");
    assert!(stats.region_count >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_from_its_followers_but_not_the_directory_is_replaced_and_loses_no_write() {
    let mut c = cluster(0).await;
    let client = direct(&c).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        client.put(key(i), format!("v{i}")).await.expect("put");
        acked.push(i);
    }
    let mut old = None;
    for _ in 0..50 {
        old = first_leader(&c).await;
        if old.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = old.expect("the directory knows the first region's leader");
    let old_index = index_of(&c, old).await;
    let old_host = format!("store-{old_index}");
    let followers: Vec<String> = c
        .stores
        .keys()
        .filter(|&&i| i != old_index)
        .map(|i| format!("store-{i}"))
        .collect();
    let followers: Vec<&str> = followers.iter().map(String::as_str).collect();
    c.net().cut_between(&[&old_host], &followers).expect("cut");
    let cut_at = Instant::now();

    // Writes go on once the followers elect a leader of their own; the old
    // leader, which the client and the directory still reach, can commit
    // nothing. A write that timed out may or may not have applied: only
    // acknowledged ones are checked.
    let mut since_cut = 0;
    let mut i = 20;
    let mut first_ack = None;
    while since_cut < 20 {
        assert!(
            cut_at.elapsed() < Duration::from_secs(40),
            "no write went through within 40 s of the cut ({since_cut} did)"
        );
        let put =
            tokio::time::timeout(Duration::from_secs(3), client.put(key(i), format!("v{i}"))).await;
        if let Ok(Ok(())) = put {
            acked.push(i);
            since_cut += 1;
            first_ack.get_or_insert(cut_at.elapsed());
        }
        i += 1;
    }
    eprintln!(
        "first write acknowledged {:?} after the cut",
        first_ack.expect("a write")
    );
    c.wait_for(
        "the directory learns the new leader",
        Duration::from_secs(30),
        |c| async move { first_leader(c).await.is_some_and(|l| l != old) },
    )
    .await;

    // Healed, the old leader's store catches up: the leadership moves back
    // to it (raft-rs transfers only to a replica with the whole log) and
    // every acknowledged write reads back there.
    c.net().heal_all().expect("heal");
    let region_id = scan_regions(&c.directory_conn()).await.expect("regions")[0]
        .region
        .as_ref()
        .expect("region")
        .id;
    let deadline = Instant::now() + Duration::from_secs(30);
    while first_leader(&c).await != Some(old) {
        assert!(
            Instant::now() < deadline,
            "the leadership did not move back to the healed store"
        );
        let _ = c
            .directory_conn()
            .call("transfer leader", |mut d| async move {
                d.transfer_leader(TransferLeaderRequest {
                    region_id,
                    to_store_id: old,
                })
                .await
            })
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for i in acked {
        assert_eq!(
            client.get(key(i)).await.expect("get").as_deref(),
            Some(format!("v{i}").as_bytes()),
            "acknowledged key {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_from_one_router_carries_on_through_the_other() {
    let mut c = cluster(2).await;
    let client = Client::builder()
        .routers(c.router_addrs())
        .security(c.security())
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("proxy client");
    for i in 0..20 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    c.net().cut(HARNESS, "router-1").expect("cut");
    // A write in flight on the cut connection may or may not have applied:
    // the SDK says so (Indeterminate) and never sends it again. Every write
    // after it goes through the other router.
    let started = Instant::now();
    let mut acked: Vec<usize> = (0..20).collect();
    let mut indeterminate = vec![];
    for i in 20..60 {
        match client.put(key(i), format!("v{i}")).await {
            Ok(()) => acked.push(i),
            Err(tessera_client::Error::Indeterminate(m)) => indeterminate.push((i, m)),
            Err(e) => panic!("put {i} past a cut router: {e}"),
        }
    }
    eprintln!(
        "40 writes past the cut router took {:?}; indeterminate: {indeterminate:?}",
        started.elapsed()
    );
    assert!(
        indeterminate.len() <= 2,
        "the client kept writing to the cut router: {indeterminate:?}"
    );
    c.net().heal_all().expect("heal");
    c.net().cut(HARNESS, "router-2").expect("cut");
    for i in acked {
        assert_eq!(
            client.get(key(i)).await.expect("get").as_deref(),
            Some(format!("v{i}").as_bytes()),
            "key {i}"
        );
    }
}
