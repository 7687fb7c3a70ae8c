//! Scheduling across separate processes: rebalancing onto a new store,
//! admin commands overriding the balancer and refused as busy over another
//! admin operator, rebuilding replicas of a dead
//! store, decommissioning, admin split and move, and hash keyspaces.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::*;
use tessera_proto::keys;
use tessera_routing::directory::DirectoryConn;

async fn split(conn: &DirectoryConn, region_id: u64, split_keys: Vec<Vec<u8>>) -> String {
    conn.call("split", |mut cl| {
        let req = SplitRegionRequest {
            region_id,
            split_keys: split_keys.clone(),
        };
        async move { cl.split_region(req).await }
    })
    .await
    .unwrap()
    .operator
}

/// Asks the directory to move `region_id`'s leader to store `to`; the
/// operator's id, or the directory's refusal.
async fn transfer_leader(
    conn: &DirectoryConn,
    region_id: u64,
    to: u64,
) -> Result<String, tessera_routing::Error> {
    conn.call("transfer leader", |mut cl| async move {
        cl.transfer_leader(TransferLeaderRequest {
            region_id,
            to_store_id: to,
        })
        .await
    })
    .await
    .map(|r| r.operator)
}

async fn regions(conn: &DirectoryConn) -> Vec<RegionInfo> {
    tessera_e2e::scan_regions(conn).await.unwrap()
}

/// Region and leader counts per store id, as stores report them.
async fn counts(c: &E2eCluster) -> BTreeMap<u64, (u32, u32)> {
    c.list_stores()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.store.as_ref().is_some_and(|st| st.state == 0))
        .filter_map(|s| {
            Some((
                s.store?.id,
                s.stats.map(|st| (st.region_count, st.leader_count))?,
            ))
        })
        .collect()
}

/// Splits the only region into `n` regions and waits until all are healthy.
async fn make_regions(c: &E2eCluster, n: usize) {
    c.wait_settled(1).await;
    let conn = c.directory_conn();
    let first = regions(&conn).await[0].region.clone().unwrap();
    let split_keys = (1..n)
        .map(|i| keys::encode(0, format!("k{i:03}").as_bytes()))
        .collect();
    split(&conn, first.id, split_keys).await;
    c.wait_settled(n as u32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_store_takes_its_share_of_regions_and_leaders() {
    let mut c = E2eCluster::start(Options::default()).await;
    make_regions(&c, 12).await;
    let router = c.router();
    for i in 0..120 {
        router
            .put(None, format!("k{i:03}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    let added_at = Instant::now();
    let (_, new_id) = c.add_registered_store().await;
    // 12 regions × 3 replicas over 4 stores: 9 each; leaders 3 each.
    c.wait_for(
        "regions and leaders to spread onto the new store",
        Duration::from_secs(120),
        |c| async move {
            let counts = counts(c).await;
            let Some(&(regions, leaders)) = counts.get(&new_id) else {
                return false;
            };
            let max_r = counts.values().map(|x| x.0).max().unwrap_or(0);
            let min_r = counts.values().map(|x| x.0).min().unwrap_or(0);
            let max_l = counts.values().map(|x| x.1).max().unwrap_or(0);
            regions >= 8 && leaders >= 2 && max_r - min_r <= 2 && max_l <= 4
        },
    )
    .await;
    println!(
        "rebalanced onto a new store in {:?}: {:?}",
        added_at.elapsed(),
        counts(&c).await
    );
    for i in (0..120).step_by(13) {
        assert_eq!(
            router
                .get(None, format!("k{i:03}").as_bytes())
                .await
                .unwrap(),
            Some(b"v".to_vec())
        );
    }
}

/// An admin command on a region the balancer is moving takes the region
/// over (the balance operator is cancelled) instead of being refused, and
/// the cluster tidies up what the cancelled move left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_takes_a_region_over_from_the_balancer() {
    let mut c = E2eCluster::start(Options::default()).await;
    make_regions(&c, 12).await;
    let index = c.add_store();
    // Balance operators start moving replicas onto the new store. Freezing
    // it keeps them in progress: their learners never catch up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let balance = loop {
        let ops = c.status().await.map(|s| s.operators).unwrap_or_default();
        if let Some(op) = ops.into_iter().find(|o| o.kind == "balance-region") {
            c.stores[&index].proc.pause(true);
            break op;
        }
        assert!(Instant::now() < deadline, "no balance operator started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let new_store = c.store_id(index).await.unwrap();
    let conn = c.directory_conn();
    let info = regions(&conn)
        .await
        .into_iter()
        .find(|r| r.region.as_ref().unwrap().id == balance.region_id)
        .unwrap();
    let leader = info.leader.unwrap().store_id;
    let to = info
        .region
        .unwrap()
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|s| *s != leader && *s != new_store)
        .unwrap();
    let region_id = balance.region_id;
    let op = transfer_leader(&conn, region_id, to)
        .await
        .unwrap_or_else(|e| panic!("the admin command was refused during {}: {e}", balance.id));
    assert!(op.starts_with("transfer-leader-"), "{op}");
    let ops = c.status().await.unwrap().operators;
    assert!(
        ops.iter().all(|o| o.id != balance.id),
        "{} still runs: {ops:?}",
        balance.id
    );
    c.wait_for(
        "the admin transfer to finish",
        Duration::from_secs(30),
        |c| async move {
            regions(&c.directory_conn())
                .await
                .iter()
                .find(|r| r.region.as_ref().unwrap().id == region_id)
                .and_then(|r| r.leader.as_ref())
                .is_some_and(|l| l.store_id == to)
        },
    )
    .await;
    c.stores[&index].proc.pause(false);
    // Whatever the cancelled move left (a learner on the new store) is
    // promoted or removed: every region ends with three voters again.
    c.wait_settled(12).await;
}

/// An admin command on a region where another admin operator is in flight
/// is refused as busy — a retryable kind, not bad input — naming that
/// operator, and changes nothing; once the operator finishes the same
/// command goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_on_a_busy_region_is_refused_naming_the_operator() {
    let c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let conn = c.directory_conn();
    let info = regions(&conn).await.remove(0);
    let region = info.region.unwrap();
    let leader = info.leader.unwrap().store_id;
    let to = region
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|s| *s != leader)
        .unwrap();
    let mut index = None;
    for i in c.stores.keys() {
        if c.store_id(*i).await == Some(to) {
            index = Some(*i);
        }
    }
    let index = index.unwrap();
    // A frozen target cannot take the lead: the transfer stays in flight.
    c.stores[&index].proc.pause(true);
    let region_id = region.id;
    let op = transfer_leader(&conn, region_id, to).await.unwrap();
    let split_once = || {
        conn.call("split", move |mut cl| async move {
            cl.split_region(SplitRegionRequest {
                region_id,
                split_keys: vec![keys::encode(0, b"m")],
            })
            .await
        })
    };
    match split_once().await {
        Err(tessera_routing::Error::Directory { kind, message }) => {
            assert_eq!(kind, directory_error::Kind::Busy as i32, "{message}");
            assert!(
                message.contains(&op),
                "the refusal does not name {op}: {message}"
            );
            assert!(message.contains("retry"), "{message}");
        }
        other => panic!("a split during {op} was not refused as busy: {other:?}"),
    }
    assert_eq!(
        regions(&conn).await.len(),
        1,
        "the refused split changed something"
    );
    c.stores[&index].proc.pause(false);
    c.wait_for(
        "the transfer to finish",
        Duration::from_secs(30),
        |c| async move {
            c.status()
                .await
                .is_ok_and(|s| s.operators.iter().all(|o| o.region_id != region_id))
        },
    )
    .await;
    split_once()
        .await
        .expect("the split once the region is free");
    c.wait_settled(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_dead_store_are_rebuilt_and_a_decommissioned_store_empties() {
    let mut c = E2eCluster::start(Options {
        stores: 4,
        down_after_ms: 3000,
        ..Options::default()
    })
    .await;
    make_regions(&c, 8).await;
    let router = c.router();
    for i in 0..80 {
        router
            .put(
                None,
                format!("k{i:03}").as_bytes(),
                format!("v{i}").as_bytes(),
            )
            .await
            .unwrap();
    }
    // Someone takes every id the directory had reserved: the scheduler
    // must still find ids for the new replicas.
    let conn = c.node_directory_conn();
    conn.call("alloc ids", |mut d| async move {
        d.alloc_ids(AllocIdsRequest { count: 5000 }).await
    })
    .await
    .unwrap();
    // A leader transfer shows no peer down (the new leader has heard from
    // no follower yet, but a peer is down only after `peer_down_after_ms`,
    // 2 s in these clusters, of silence).
    let conn = c.directory_conn();
    let moved = regions(&conn).await[0].clone();
    let region_id = moved.region.as_ref().unwrap().id;
    let to = moved
        .region
        .as_ref()
        .unwrap()
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|s| Some(*s) != moved.leader.map(|l| l.store_id))
        .unwrap();
    // Refused while the scheduler still works on the region: asked again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = transfer_leader(&conn, region_id, to).await {
        assert!(Instant::now() < deadline, "transfer refused: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let watch_until = Instant::now() + Duration::from_secs(4);
    let mut transferred = false;
    while Instant::now() < watch_until {
        for r in regions(&conn).await {
            assert!(r.down_peers.is_empty(), "a healthy peer shown down: {r:?}");
            let id = r.region.as_ref().unwrap().id;
            transferred |= id == region_id && r.leader.is_some_and(|l| l.store_id == to);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(transferred, "the leader did not move to store {to}");
    // Kill a store for good.
    let victim = 1;
    let victim_id = c.store_id(victim).await.unwrap();
    c.stores.get_mut(&victim).unwrap().proc.kill();
    let killed_at = Instant::now();
    // Its peers are shown down (before the scheduler replaces them).
    c.wait_for(
        "the dead store's peers to be reported down",
        Duration::from_secs(30),
        |c| async move {
            regions(&c.directory_conn())
                .await
                .iter()
                .any(|r| r.down_peers.iter().any(|p| p.store_id == victim_id))
        },
    )
    .await;
    c.wait_for(
        "the dead store to be marked down",
        Duration::from_secs(30),
        |c| async move {
            c.status()
                .await
                .is_ok_and(|s| s.stores.get("down").copied() == Some(1))
        },
    )
    .await;
    let detected = killed_at.elapsed();
    // Every region is back to 3 healthy replicas, none on the dead store.
    c.wait_for(
        "every region back to 3 healthy replicas",
        Duration::from_secs(120),
        |c| async move {
            let Ok(s) = c.status().await else {
                return false;
            };
            if s.under_replicated_regions != 0 || !s.operators.is_empty() {
                return false;
            }
            let conn = c.directory_conn();
            regions(&conn).await.iter().all(|r| {
                r.region
                    .as_ref()
                    .unwrap()
                    .peers
                    .iter()
                    .all(|p| p.store_id != victim_id)
            })
        },
    )
    .await;
    println!(
        "dead store detected after {detected:?}, replicas restored after {:?}",
        killed_at.elapsed()
    );
    for i in 0..80 {
        let k = format!("k{i:03}");
        match router.get(None, k.as_bytes()).await {
            Ok(v) => assert_eq!(v, Some(format!("v{i}").into_bytes())),
            Err(e) => panic!(
                "get {k}: {e}\n{}",
                c.diagnose_key(&keys::encode(0, k.as_bytes())).await
            ),
        }
    }

    // Add a store, then decommission another: it ends empty and Tombstone.
    c.add_registered_store().await;
    let leaving = 2;
    let leaving_id = c.store_id(leaving).await.unwrap();
    // `tessera store remove` follows the store until it is a tombstone.
    let out = c
        .try_cli(&[
            "-o",
            "json",
            "store",
            "remove",
            &leaving_id.to_string(),
            "--wait-timeout",
            "120",
        ])
        .unwrap_or_else(|e| panic!("store remove: {e}"));
    let removed: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        removed,
        serde_json::json!({"id": leaving_id, "state": "tombstone", "replicas": 0})
    );
    let stores = c.list_stores().await.unwrap();
    assert!(stores.iter().any(|s| s.store.as_ref().is_some_and(|st| {
        st.id == leaving_id && st.state == tessera_proto::metapb::StoreState::Tombstone as i32
    })));
    // Three working stores are left (one is dead, one removed): removing
    // another would leave two for three replicas, and is refused.
    let other = c.store_id(3).await.unwrap();
    let err = c
        .try_cli(&["store", "remove", &other.to_string()])
        .unwrap_err();
    assert!(
        err.contains("would leave 2 working store(s)") && err.contains("add a store first"),
        "{err}"
    );
    assert!(c.list_stores().await.unwrap().iter().any(|s| s
        .store
        .as_ref()
        .is_some_and(
            |st| st.id == other && st.state == tessera_proto::metapb::StoreState::Up as i32
        )));
    let conn = c.directory_conn();
    for r in regions(&conn).await {
        assert!(r
            .region
            .unwrap()
            .peers
            .iter()
            .all(|p| p.store_id != leaving_id));
    }
    for i in (0..80).step_by(9) {
        assert_eq!(
            router
                .get(None, format!("k{i:03}").as_bytes())
                .await
                .unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    // A removed store cannot come back.
    let cluster_id = c.status().await.unwrap().cluster_id;
    let err = c
        .node_directory_conn()
        .call("register again", |mut cl| async move {
            cl.put_store(PutStoreRequest {
                store: Some(tessera_proto::metapb::Store {
                    id: leaving_id,
                    address: "127.0.0.1:1".into(),
                    ..Default::default()
                }),
                cluster_id,
                store_secret: tessera_security::secret::generate(),
                ..Default::default()
            })
            .await
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_split_and_move_and_hash_keyspaces() {
    let c = E2eCluster::start(Options {
        stores: 4,
        ..Options::default()
    })
    .await;
    c.wait_settled(1).await;
    let conn = c.directory_conn();
    let router = c.router();
    for i in 0..50 {
        router
            .put(None, format!("k{i:03}").as_bytes(), b"v")
            .await
            .unwrap();
    }
    // Admin split at a key.
    let first = regions(&conn).await[0].region.clone().unwrap();
    split(&conn, first.id, vec![keys::encode(0, b"k025")]).await;
    c.wait_settled(2).await;
    let rs = regions(&conn).await;
    assert!(rs
        .iter()
        .any(|r| r.region.as_ref().unwrap().start_key == keys::encode(0, b"k025")));

    // Admin move of a replica to the store that lacks it.
    let r = rs[0].region.clone().unwrap();
    let stores: Vec<u64> = counts(&c).await.keys().copied().collect();
    let to = *stores
        .iter()
        .find(|s| r.peers.iter().all(|p| p.store_id != **s))
        .unwrap();
    let from = r
        .peers
        .iter()
        .find(|p| Some(*p) != rs[0].leader.as_ref())
        .unwrap()
        .store_id;
    let op = conn
        .call("move", |mut cl| async move {
            cl.move_region(MoveRegionRequest {
                region_id: r.id,
                from_store_id: from,
                to_store_id: to,
            })
            .await
        })
        .await
        .unwrap()
        .operator;
    assert!(op.starts_with("move-"));
    c.wait_for(
        "the move to finish",
        Duration::from_secs(60),
        |c| async move {
            let conn = c.directory_conn();
            let rs = regions(&conn).await;
            let now = rs
                .iter()
                .find(|x| x.region.as_ref().unwrap().id == r.id)
                .unwrap()
                .region
                .clone()
                .unwrap();
            now.peers.iter().any(|p| p.store_id == to)
                && now.peers.iter().all(|p| p.store_id != from)
        },
    )
    .await;
    // Bad admin requests are refused clearly.
    let err = conn
        .call("bad move", |mut cl| async move {
            cl.move_region(MoveRegionRequest {
                region_id: r.id,
                from_store_id: 999,
                to_store_id: to,
            })
            .await
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no replica on store 999"), "{err}");

    // A hash keyspace with 16 regions spreads sequential keys evenly.
    let ks = conn
        .call("create keyspace", |mut cl| async move {
            cl.create_keyspace(CreateKeyspaceRequest {
                name: "events".into(),
                kind: KeyspaceKind::Hash as i32,
                regions: 16,
            })
            .await
        })
        .await
        .unwrap()
        .keyspace
        .unwrap();
    let (ks_start, ks_end) = keys::keyspace_range(ks.id);
    c.wait_for(
        "the hash keyspace's 16 regions",
        Duration::from_secs(120),
        |c| {
            let (ks_start, ks_end) = (ks_start.clone(), ks_end.clone());
            async move {
                let conn = c.directory_conn();
                let rs = regions(&conn).await;
                let inside = rs
                    .iter()
                    .filter(|r| {
                        let r = r.region.as_ref().unwrap();
                        r.start_key >= ks_start && (r.end_key <= ks_end && !r.end_key.is_empty())
                    })
                    .count();
                inside == 16
            }
        },
    )
    .await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000)
        .map(|i| (format!("user{i}").into_bytes(), b"x".to_vec()))
        .collect();
    for chunk in pairs.chunks(500) {
        router.batch_put(Some("events"), chunk).await.unwrap();
    }
    let rs = regions(&conn).await;
    let mut per_region = vec![];
    for r in rs.iter().map(|r| r.region.clone().unwrap()) {
        if r.start_key < keys::keyspace_range(ks.id).0
            || r.end_key > keys::keyspace_range(ks.id).1
            || r.end_key.is_empty()
        {
            continue;
        }
        let n = pairs
            .iter()
            .filter(|(k, _)| {
                let e = keys::encode(ks.id, k);
                e >= r.start_key && e < r.end_key
            })
            .count();
        per_region.push(n);
    }
    assert_eq!(per_region.len(), 16);
    println!("keys per region of the hash keyspace: {per_region:?}");
    for n in &per_region {
        assert!(
            (500..=750).contains(n),
            "{n} keys in one region, expected 625 ± 20%"
        );
    }
    // Every key reads back through the router.
    let got = router
        .batch_get(
            Some("events"),
            &pairs
                .iter()
                .take(1000)
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!((got.pairs.len(), got.resume_index), (1000, 0));
    let all = router
        .scan(Some("events"), tessera_routing::Scan::default())
        .await
        .unwrap();
    assert_eq!((all.pairs.len(), all.resume), (10_000, None));
}
