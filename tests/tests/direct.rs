//! The SDK's direct mode end to end: a client built with the directory's
//! addresses (no router anywhere) finds regions itself and talks to their
//! leaders' stores — separate processes on 127.0.0.1, TLS. It serves every
//! operation, follows a split and the loss of a leader's store, agrees with
//! a proxy-mode client on every key, and at the stores gets exactly the
//! role of its user (refusals change nothing). The CLI's `--direct` runs
//! the same path.

use std::time::Duration;

use tessera_client::{Backoff, Client, Error as SdkError};
use tessera_e2e::{E2eCluster, Options};
use tessera_security::{secret, Security};

fn key(i: usize) -> String {
    format!("user{i:04}")
}

async fn direct(c: &E2eCluster, security: Security) -> Client {
    Client::builder()
        .directory(c.directory_addrs())
        .security(security)
        .timeout(Duration::from_secs(30))
        .backoff(Backoff {
            min: Duration::from_millis(10),
            max: Duration::from_millis(300),
        })
        .build()
        .await
        .expect("direct client")
}

/// A proxy-mode client of the cluster's routers.
async fn proxy(c: &E2eCluster) -> Client {
    Client::builder()
        .routers(c.router_addrs())
        .security(c.security())
        .timeout(Duration::from_secs(30))
        .build()
        .await
        .expect("proxy client")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_serves_every_operation_through_a_split_and_a_lost_leader() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let client = direct(&c, c.security()).await;
    assert!(client.is_direct());

    for i in 0..200 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    assert_eq!(
        client.get(key(7)).await.unwrap().as_deref(),
        Some(&b"v7"[..])
    );
    assert_eq!(client.get("absent").await.unwrap(), None);

    // A split: the client's cached region goes stale, the stores' answers
    // (epoch not match) correct it, and nothing is lost.
    let region = regions_json(&c)[0]["id"].to_string();
    c.try_cli(&["region", "split", &region, "--at", &key(100)])
        .expect("split");
    for i in 200..300 {
        client.put(key(i), format!("v{i}")).await.expect("put");
    }
    let all = client.scan::<&[u8]>(.., 0).await.unwrap();
    assert_eq!(all.len(), 300);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "scan order");
    let found = client
        .batch_get([key(5), key(150), key(299), "absent".to_string()])
        .await
        .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|p| String::from_utf8(p.key.clone()).unwrap())
            .collect::<Vec<_>>(),
        [key(5), key(150), key(299)]
    );
    let back = client.scan_reverse(key(98)..key(102), 0).await.unwrap();
    assert_eq!(back.len(), 4);
    assert_eq!(back[0].key, key(101).as_bytes());

    // Compare-and-swap, delete, batch put.
    let cas = client
        .compare_and_swap(key(1), Some(b"v1"), Some(b"w1"))
        .await
        .unwrap();
    assert!(cas.succeeded);
    let cas = client
        .compare_and_swap(key(1), Some(b"v1"), Some(b"x"))
        .await
        .unwrap();
    assert!(!cas.succeeded);
    assert_eq!(cas.previous.as_deref(), Some(&b"w1"[..]));
    client.delete(key(2)).await.unwrap();
    client
        .batch_put([(key(98), "b98"), (key(102), "b102")])
        .await
        .unwrap();

    // Bad input and unknown keyspaces: clear errors, nothing sent.
    assert!(matches!(
        client.put("", "v").await,
        Err(SdkError::InvalidArgument(_))
    ));
    assert!(matches!(
        client.put("k", vec![0u8; 9 << 20]).await,
        Err(SdkError::InvalidArgument(_))
    ));
    match client.keyspace("nosuch").get("k").await {
        Err(SdkError::KeyspaceNotFound(name)) => assert_eq!(name, "nosuch"),
        other => panic!("{other:?}"),
    }

    // A proxy-mode client sees exactly what the direct one wrote.
    c.add_router().await;
    let proxy = proxy(&c).await;
    assert!(!proxy.is_direct());
    let through_router = proxy.scan::<&[u8]>(.., 0).await.unwrap();
    let direct_view = client.scan::<&[u8]>(.., 0).await.unwrap();
    assert_eq!(through_router, direct_view);
    assert_eq!(direct_view.len(), 299);

    // Lose the store leading the region of key(250): reads find the new
    // leader (the dead store's channel is dropped), then writes go on.
    let regions = regions_json(&c);
    let leader = regions
        .iter()
        .find(|r| {
            r["start_key"]
                .as_str()
                .is_some_and(|s| s.contains("user0100"))
        })
        .and_then(|r| r["leader_store"].as_u64())
        .expect("the upper region's leader");
    let mut index = None;
    for i in c.stores.keys().copied().collect::<Vec<_>>() {
        if c.store_id(i).await == Some(leader) {
            index = Some(i);
        }
    }
    let index = index.expect("the leader's store index");
    c.stores.get_mut(&index).unwrap().proc.kill();
    assert_eq!(
        client.get(key(250)).await.unwrap().as_deref(),
        Some(&b"v250"[..])
    );
    for i in 300..350 {
        client
            .put(key(i), format!("v{i}"))
            .await
            .expect("put after kill");
    }
    assert_eq!(client.scan(key(0)..key(999), 0).await.unwrap().len(), 349);

    // A range delete across both regions.
    client.delete_range(key(0)..key(999)).await.unwrap();
    assert!(client.scan::<&[u8]>(.., 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_gets_exactly_its_users_role_at_the_stores() {
    let c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let admin = direct(&c, c.security()).await;
    admin.put("k", "v1").await.unwrap();

    let out = c
        .try_cli(&["user", "create", "reader", "--role", "readonly"])
        .expect("user create");
    let token = out.lines().last().unwrap().trim().to_string();
    let certs = c.certs.as_ref().unwrap();
    let reader = direct(&c, Security::with_token(certs, &token).unwrap()).await;
    assert_eq!(reader.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    match reader.put("k", "stolen").await {
        Err(SdkError::PermissionDenied(m)) => {
            assert!(m.contains("needs the role readwrite"), "{m}")
        }
        other => panic!("a readonly user's put: {other:?}"),
    }
    assert!(matches!(
        reader.delete_range::<&[u8]>(..).await,
        Err(SdkError::PermissionDenied(_))
    ));
    assert_eq!(admin.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));

    // A token the cluster never issued: refused (by the directory, before
    // any store is asked), never retried to the deadline.
    let forged = Security::with_token(certs, &secret::generate()).unwrap();
    let stranger = direct(&c, forged).await;
    let started = std::time::Instant::now();
    match stranger.get("k").await {
        Err(SdkError::Unauthenticated(_)) => {}
        other => panic!("a forged token: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));

    // Plaintext against the TLS cluster: nothing is served.
    let err = Client::builder()
        .directory(c.directory_addrs())
        .timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
        .get("k")
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    // The CLI's --direct: the same path, no router in the cluster.
    assert!(c.routers.is_empty());
    c.try_cli(&["put", "--direct", "cli-key", "cli-value"])
        .expect("put --direct");
    let got = c.try_cli(&["get", "--direct", "cli-key"]).expect("get");
    assert_eq!(got.trim(), "cli-value");
    let json = c
        .try_cli(&["scan", "--direct", "--start", "cli", "-o", "json"])
        .expect("scan --direct");
    assert!(json.contains("cli-value"), "{json}");
    assert_eq!(
        admin.get("cli-key").await.unwrap().as_deref(),
        Some(&b"cli-value"[..])
    );
}

/// Reads a store served by `path` (`tessera_reads_total{path}`).
fn reads_by(c: &E2eCluster, index: usize, path: &str) -> f64 {
    tessera_e2e::metric_value(
        &c.stores[&index].status,
        &format!("tessera_reads_total{{path=\"{path}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The indexes of the stores that follow the (only) region's leader.
async fn followers(c: &E2eCluster) -> Vec<usize> {
    let leader = regions_json(c)[0]["leader_store"]
        .as_u64()
        .expect("a leader");
    let mut followers = vec![];
    for i in c.stores.keys().copied().collect::<Vec<_>>() {
        if c.store_id(i).await != Some(leader) {
            followers.push(i);
        }
    }
    followers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_are_served_by_followers_and_see_every_acknowledged_write() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    c.add_router().await;
    let direct = direct(&c, c.security()).await;
    let proxy = proxy(&c).await;
    let followers = followers(&c).await;
    assert_eq!(followers.len(), 2);
    let before: f64 = followers
        .iter()
        .map(|&i| reads_by(&c, i, "read_index"))
        .sum();

    // Every read follows the write acknowledged just before it, in both
    // modes, whichever replica serves it.
    for (mode, client) in [("direct", &direct), ("proxy", &proxy)] {
        let follower = client.with_consistency(tessera_client::ReadConsistency::Follower);
        assert_eq!(
            follower.consistency(),
            tessera_client::ReadConsistency::Follower
        );
        for i in 0..40 {
            let value = format!("{mode}-{i}");
            client.put("k", &value).await.unwrap();
            assert_eq!(
                follower.get("k").await.unwrap().as_deref(),
                Some(value.as_bytes()),
                "{mode}: a follower read missed the write before it"
            );
        }
        follower.put(key(1), "a").await.unwrap();
        follower.put(key(2), "b").await.unwrap();
        let pairs = follower.batch_get([key(1), key(2)]).await.unwrap();
        assert_eq!(pairs.len(), 2, "{mode}");
        let scanned = follower
            .keyspace("default")
            .scan(key(0)..key(9), 0)
            .await
            .unwrap();
        assert_eq!(scanned.len(), 2, "{mode}");
    }
    // The followers served reads (a read-index round each), not only the
    // leader.
    let after: f64 = followers
        .iter()
        .map(|&i| reads_by(&c, i, "read_index"))
        .sum();
    assert!(
        after - before >= 20.0,
        "followers served {} reads",
        after - before
    );

    // The CLI's --consistency follower, through the router and direct.
    let got = c
        .try_cli(&["get", "k", "--consistency", "follower"])
        .expect("get --consistency follower");
    assert_eq!(got.trim(), "proxy-39");
    let got = c
        .try_cli(&["get", "--direct", "k", "--consistency", "follower"])
        .expect("get --direct --consistency follower");
    assert_eq!(got.trim(), "proxy-39");
    let err = c
        .try_cli(&["get", "k", "--consistency", "eventual"])
        .unwrap_err();
    assert!(err.contains("invalid value"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_served_by_followers_without_a_round_trip_within_their_bound() {
    use tessera_client::ReadConsistency;
    let mut c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    c.add_router().await;
    let direct = direct(&c, c.security()).await;
    let proxy = proxy(&c).await;
    let followers = followers(&c).await;
    let sum = |path: &str| -> f64 { followers.iter().map(|&i| reads_by(&c, i, path)).sum() };

    // The bound holds: a write acknowledged longer than `max_age` before a
    // stale read is always seen, in both modes, whichever replica serves.
    let bound = Duration::from_millis(300);
    for (mode, client) in [("direct", &direct), ("proxy", &proxy)] {
        let stale = client.with_consistency(ReadConsistency::Stale { max_age: bound });
        for i in 0..6 {
            let value = format!("{mode}-{i}");
            client.put("s", &value).await.unwrap();
            tokio::time::sleep(bound + Duration::from_millis(50)).await;
            for _ in 0..3 {
                assert_eq!(
                    stale.get("s").await.unwrap().as_deref(),
                    Some(value.as_bytes()),
                    "{mode}: a stale read missed a write acknowledged before its bound"
                );
            }
        }
    }

    // Under steady stale reads, followers serve them from their own state:
    // far fewer ReadIndex rounds than reads.
    let (stale_before, rounds_before) = (sum("stale"), sum("read_index"));
    let stale = direct.with_consistency(ReadConsistency::Stale {
        max_age: Duration::from_secs(5),
    });
    for _ in 0..300 {
        assert!(stale.get("s").await.unwrap().is_some());
    }
    let served = sum("stale") - stale_before;
    let rounds = sum("read_index") - rounds_before;
    assert!(
        served >= 100.0 && rounds <= served / 4.0,
        "followers served {served} stale reads locally with {rounds} ReadIndex rounds"
    );
    let pairs = stale.batch_get(["s", "absent"]).await.unwrap();
    assert_eq!(pairs.len(), 1);
    let scanned = stale.keyspace("default").scan(.."t", 0).await.unwrap();
    assert!(scanned.iter().any(|p| p.key == b"s"));

    // A bound outside 1 ms to an hour is bad input, in both modes.
    for (mode, client) in [("direct", &direct), ("proxy", &proxy)] {
        for bad in [Duration::ZERO, Duration::from_secs(3601)] {
            let err = client
                .with_consistency(ReadConsistency::Stale { max_age: bad })
                .get("s")
                .await
                .unwrap_err();
            assert!(
                matches!(err, SdkError::InvalidArgument(_)),
                "{mode} {bad:?}: {err}"
            );
        }
    }

    // The CLI's --consistency stale:<ms>, through the router and direct.
    let got = c
        .try_cli(&["get", "s", "--consistency", "stale:5000"])
        .expect("get --consistency stale:5000");
    assert_eq!(got.trim(), "proxy-5");
    let got = c
        .try_cli(&["get", "--direct", "s", "--consistency", "stale:5000"])
        .expect("get --direct --consistency stale:5000");
    assert_eq!(got.trim(), "proxy-5");
    let err = c
        .try_cli(&["get", "s", "--consistency", "stale:0"])
        .unwrap_err();
    assert!(err.contains("1 to 3600000"), "{err}");
}
