//! TLS and the access policy on a real cluster (separate processes, TLS
//! by default in the harness): what a caller without a certificate, with
//! another cluster's CA, or with the wrong kind of identity gets from each
//! process, and that the refused requests changed nothing.

use std::time::Duration;

use tessera_client::Client;
use tessera_e2e::{make_certs, E2eCluster, Options};
use tessera_proto::directorypb::directory_client::DirectoryClient;
use tessera_proto::directorypb::{GetStoreRequest, PutStoreRequest};
use tessera_proto::metapb::Store;
use tessera_proto::raft_serverpb::raft_client::RaftClient;
use tessera_proto::raft_serverpb::RaftMessageBatch;
use tessera_proto::routerpb::router_client::RouterClient;
use tessera_security::{Channel, Kind, Security, TlsSettings};
use tonic::transport::Endpoint;
use tonic::Code;

async fn dial(security: &Security, addr: &str) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    security.connect(endpoint).await
}

/// An SDK client of the cluster's routers, connecting as `security`.
async fn sdk(c: &E2eCluster, security: Security, timeout: Duration) -> Client {
    Client::builder()
        .endpoints(c.router_addrs())
        .security(security)
        .timeout(timeout)
        .build()
        .await
        .unwrap()
}

fn router_identity(c: &E2eCluster) -> Security {
    let settings = TlsSettings {
        certs_dir: c.certs.clone(),
        ..TlsSettings::default()
    };
    Security::from_settings(&settings, Kind::Router).unwrap()
}

/// The address the directory has for store 1.
async fn address_of_store_1(c: &E2eCluster, security: &Security) -> String {
    let leader = c.directory_leader().await.expect("directory leader");
    let ch = dial(security, &c.directories[&leader].addr).await.unwrap();
    DirectoryClient::new(ch)
        .get_store(GetStoreRequest { store_id: 1 })
        .await
        .unwrap()
        .into_inner()
        .store
        .expect("store 1")
        .address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_get_exactly_what_their_identity_allows_and_refusals_change_nothing() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    c.wait_settled(1).await;
    let router_addr = c.router_addrs()[0].clone();
    let store_addr = c.stores[&1].addr.clone();
    let leader = c.directory_leader().await.expect("directory leader");
    let directory_addr = c.directories[&leader].addr.clone();
    let before = address_of_store_1(&c, &c.security()).await;

    // A client identity works through the router.
    let client = sdk(&c, c.security(), Duration::from_secs(20)).await;
    client.put("k", "v1").await.unwrap();

    // No client certificate: the router's API is refused, by name.
    let anonymous = Security::client(c.certs.as_ref().unwrap(), None).unwrap();
    let ch = dial(&anonymous, &router_addr).await.unwrap();
    let refused = RouterClient::new(ch)
        .put(tessera_proto::routerpb::PutRequest {
            key: b"k".to_vec(),
            value: b"stolen".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("no client certificate"),
        "{refused:?}"
    );

    // The SDK reports both refusals as typed, final errors: nothing applied.
    for (security, unauthenticated) in [(anonymous.clone(), true), (router_identity(&c), false)] {
        let refused_sdk = sdk(&c, security, Duration::from_secs(5)).await;
        let err = refused_sdk.put("k", "stolen").await.unwrap_err();
        match err {
            tessera_client::Error::Unauthenticated(m) if unauthenticated => {
                assert!(m.contains("no client certificate"), "{m}")
            }
            tessera_client::Error::PermissionDenied(m) if !unauthenticated => {
                assert!(
                    m.contains("router/router may not call /routerpb.Router/Put"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(!refused_sdk.get("k").await.unwrap_err().is_retryable());
    }

    // A client identity may not overwrite a store's address (the attack
    // that once pointed store 1 at 127.0.0.1:1), nor can a router.
    for (who, security) in [("client", c.security()), ("router", router_identity(&c))] {
        let ch = dial(&security, &directory_addr).await.unwrap();
        let refused = DirectoryClient::new(ch)
            .put_store(PutStoreRequest {
                store: Some(Store {
                    id: 1,
                    address: "127.0.0.1:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{who}: {refused:?}");
        assert!(
            refused.message().contains("needs a node identity"),
            "{who}: {refused:?}"
        );
    }
    assert_eq!(address_of_store_1(&c, &c.security()).await, before);

    // A router identity may not speak Raft to a store.
    let ch = dial(&router_identity(&c), &store_addr).await.unwrap();
    let batch = RaftMessageBatch {
        from_store_id: 2,
        ..Default::default()
    };
    let refused = RaftClient::new(ch)
        .raft(tokio_stream::iter(vec![batch]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("router/router may not call /raft_serverpb.Raft/Raft"),
        "{refused:?}"
    );

    // A node of another cluster (its own CA) gets no connection at all, to
    // any process.
    let other = tempfile::tempdir().unwrap();
    let foreign_dir = make_certs(other.path(), &["127.0.0.1".to_string()]);
    let foreign = Security::from_settings(
        &TlsSettings {
            certs_dir: Some(foreign_dir),
            ..TlsSettings::default()
        },
        Kind::Node,
    )
    .unwrap();
    for addr in [&router_addr, &store_addr, &directory_addr] {
        let err = dial(&foreign, addr).await.map(|_| ()).unwrap_err();
        assert!(
            format!("{err:?}").contains("invalid peer certificate"),
            "{addr}: {err:?}"
        );
    }

    // Plaintext gets nothing either.
    let plain = sdk(&c, Security::insecure(), Duration::from_secs(3)).await;
    assert!(plain.put("k", "plaintext").await.is_err());

    // The CLI without --certs-dir cannot reach the directory; with it, it can.
    assert!(c.try_cli(&["store", "list"]).is_ok());
    let mut cmd = std::process::Command::new(tessera_e2e::bin_dir().join("tessera"));
    let out = cmd
        .args([
            "--directory",
            &directory_addr,
            "--timeout",
            "3",
            "store",
            "list",
        ])
        .env_remove("TESSERA_CERTS_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Nothing the refused callers sent took effect.
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(address_of_store_1(&c, &c.security()).await, before);
}
