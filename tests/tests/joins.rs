//! Cluster identity and joins on a real cluster: a new store needs the
//! join token, only a store itself may change its registration, the token
//! rotates, and a store, message or snapshot of another cluster is refused
//! with an error naming both cluster ids. Every refusal changes nothing.

use std::time::{Duration, Instant};

use tessera_e2e::{bin_dir, metric_value, E2eCluster, Options};
use tessera_proto::directorypb::directory_client::DirectoryClient;
use tessera_proto::directorypb::{PutStoreRequest, StoreHeartbeatRequest, StoreInfo, StoreStats};
use tessera_proto::metapb::Store;
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::{RaftMessageBatch, SnapshotChunk};
use tessera_security::{secret, Channel};
use tonic::transport::Endpoint;
use tonic::Code;

async fn node_channel(c: &E2eCluster, addr: &str) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10));
    c.node_security().connect(endpoint).await.unwrap()
}

async fn leader_directory(c: &E2eCluster) -> (DirectoryClient<Channel>, String) {
    let leader = c.directory_leader().await.expect("directory leader");
    let d = &c.directories[&leader];
    (
        DirectoryClient::new(node_channel(c, &d.addr).await),
        d.status.clone(),
    )
}

fn registration(id: u64, address: &str, cluster_id: u64, token: &str) -> PutStoreRequest {
    PutStoreRequest {
        store: Some(Store {
            id,
            address: address.into(),
            ..Default::default()
        }),
        cluster_id,
        store_secret: secret::generate(),
        join_token: token.into(),
    }
}

/// Waits until the store process at `index` exits on its own; its log.
fn wait_exit(c: &mut E2eCluster, index: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let s = c.stores.get_mut(&index).unwrap();
    while !s.proc.has_exited() {
        assert!(
            Instant::now() < deadline,
            "store {index} kept running:\n{}",
            s.proc.tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s.proc.tail(200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_need_the_token_and_only_a_store_changes_its_own_registration() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.wait_settled(1).await;
    let cluster_id = c.status().await.unwrap().cluster_id;
    assert_ne!(cluster_id, 0);
    let store1 = c.store_id(1).await.expect("store 1's id");
    let stores_before = c.list_stores().await.unwrap();
    let address_of = |stores: &[StoreInfo], id: u64| {
        stores
            .iter()
            .filter_map(|s| s.store.as_ref())
            .find(|s| s.id == id)
            .map(|s| s.address.clone())
            .unwrap()
    };
    let (mut dir, dir_status) = leader_directory(&c).await;

    // A node identity that is not store 1, even with the join token, may
    // not re-register store 1 (the attack that pointed it at 127.0.0.1:1).
    let refused = dir
        .put_store(registration(
            store1,
            "127.0.0.1:1",
            cluster_id,
            &c.join_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("only the store itself"),
        "{refused:?}"
    );

    // A new store without the join token, or with a wrong one.
    let refused = dir
        .put_store(registration(999_999, "127.0.0.1:2", cluster_id, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("join token"), "{refused:?}");
    let refused = dir
        .put_store(registration(
            999_999,
            "127.0.0.1:2",
            cluster_id,
            &secret::generate(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Another cluster's registration and heartbeat, naming both ids.
    let other = cluster_id ^ 0xff;
    let refused = dir
        .put_store(registration(999_999, "127.0.0.1:2", other, &c.join_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(&cluster_id.to_string())
            && refused.message().contains(&other.to_string()),
        "{refused:?}"
    );
    let refused = dir
        .store_heartbeat(StoreHeartbeatRequest {
            stats: Some(StoreStats {
                store_id: store1,
                ..Default::default()
            }),
            cluster_id: other,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    for source in ["register", "heartbeat"] {
        let n = metric_value(
            &dir_status,
            &format!("tessera_cluster_id_mismatch_total{{source=\"{source}\"}}"),
        );
        assert!(n.unwrap_or(0.0) >= 1.0, "{source}: {n:?}");
    }

    // Nothing changed.
    let stores_after = c.list_stores().await.unwrap();
    assert_eq!(stores_after.len(), stores_before.len());
    assert_eq!(
        address_of(&stores_after, store1),
        address_of(&stores_before, store1)
    );

    // Store 1 restarts at a new address without the join token: it is
    // itself, so its registration follows it.
    c.stores
        .get_mut(&1)
        .unwrap()
        .proc
        .terminate(Duration::from_secs(10));
    let new_addr = c.move_store(1);
    let config = c.dir.path().join("store-1.toml");
    let text: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("join_token"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, text).unwrap();
    c.stores.get_mut(&1).unwrap().proc.start();
    let want = new_addr.clone();
    c.wait_for(
        "store 1 to register its new address",
        Duration::from_secs(30),
        move |c| {
            let want = want.clone();
            async move {
                c.list_stores()
                    .await
                    .map(|s| address_of(&s, store1) == want)
                    .unwrap_or(false)
            }
        },
    )
    .await;

    // Rotation: the old token admits no new store, the new one does.
    let out = c.try_cli(&["cluster", "rotate-join-token"]).unwrap();
    let new_token = out.lines().last().unwrap().trim().to_string();
    secret::check_form(&new_token).unwrap();
    assert_ne!(new_token, c.join_token);
    let late = c.add_store();
    let log = wait_exit(&mut c, late, Duration::from_secs(60));
    assert!(log.contains("not this cluster's current one"), "{log}");
    assert_eq!(c.list_stores().await.unwrap().len(), stores_before.len());
    c.join_token = new_token.clone();
    let admitted = c.add_store();
    let want = stores_before.len() + 1;
    c.wait_for(
        "the store with the new token to join",
        Duration::from_secs(60),
        move |c| async move {
            c.list_stores()
                .await
                .map(|s| s.len() == want)
                .unwrap_or(false)
        },
    )
    .await;
    assert!(c.stores.get_mut(&admitted).unwrap().proc.is_running());

    // A directory member is added only with the current token.
    for (token, says) in [
        ("", "join token"),
        (&secret::generate()[..], "not this cluster's current one"),
    ] {
        let err = c
            .try_cli(&[
                "cluster",
                "add-member",
                "--id",
                "9",
                "--address",
                "127.0.0.1:1",
                "--join-token",
                token,
            ])
            .unwrap_err();
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(c.status().await.unwrap().members.len(), 3);

    // The cluster still serves.
    let router = c.router();
    router.put(None, b"after", b"joins").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_message_or_snapshot_of_another_cluster_is_refused_naming_both_ids() {
    let mut a = E2eCluster::start(Options::default()).await;
    let b = E2eCluster::start(Options {
        directories: 1,
        stores: 1,
        ..Options::default()
    })
    .await;
    a.wait_settled(1).await;
    // B's one store cannot make its region fully replicated: wait for the
    // bootstrap only.
    b.wait_for(
        "cluster B to bootstrap",
        Duration::from_secs(60),
        |b| async move { b.status().await.map(|s| s.bootstrapped).unwrap_or(false) },
    )
    .await;
    let a_id = a.status().await.unwrap().cluster_id;
    let b_id = b.status().await.unwrap().cluster_id;
    assert_ne!(a_id, b_id);

    // A Raft stream and a snapshot stamped with B's id, sent to A's store 1
    // with a valid node identity.
    let store = a.stores[&1].addr.clone();
    let mut raft = RaftClient::new(node_channel(&a, &store).await);
    let refused = raft
        .raft(tokio_stream::iter(vec![RaftMessageBatch {
            from_store_id: 2,
            cluster_id: b_id,
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(&a_id.to_string())
            && refused.message().contains(&b_id.to_string()),
        "{refused:?}"
    );
    let refused = raft
        .snapshot(tokio_stream::iter(vec![SnapshotChunk {
            cluster_id: b_id,
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let status = a.stores[&1].status.clone();
    for source in ["raft", "snapshot"] {
        let n = metric_value(
            &status,
            &format!("tessera_cluster_id_mismatch_total{{source=\"{source}\"}}"),
        );
        assert_eq!(n, Some(1.0), "{source}");
    }

    // A's store 3, pointed at B's directory, refuses to start and says why.
    a.stores
        .get_mut(&3)
        .unwrap()
        .proc
        .terminate(Duration::from_secs(10));
    let out = tokio::task::spawn_blocking({
        let config = a.dir.path().join("store-3.toml");
        let certs = b.certs.clone().unwrap();
        let directory = b.directory_addrs().join(",");
        move || {
            let mut child = std::process::Command::new(bin_dir().join("tessera-store"))
                .arg("--config")
                .arg(config)
                .args(["--directory", &directory])
                .arg("--certs-dir")
                .arg(certs)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
                        .unwrap();
                    return (status, err);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("a store of another cluster kept running");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })
    .await
    .unwrap();
    assert!(!out.0.success());
    assert!(
        out.1.contains("cluster id mismatch")
            && out.1.contains(&a_id.to_string())
            && out.1.contains(&b_id.to_string()),
        "{}",
        out.1
    );
    // B did not register it, and A still serves with two stores left.
    assert_eq!(b.list_stores().await.unwrap().len(), 1);
    a.router().put(None, b"still", b"serving").await.unwrap();
}
