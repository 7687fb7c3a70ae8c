//! TLS end to end over real sockets: a gRPC server behind the access
//! check (only the health service is registered, so a request the check
//! lets through answers UNIMPLEMENTED and a refused one UNAUTHENTICATED or
//! PERMISSION_DENIED) and clients of each identity kind.

use std::path::Path;
use std::time::Duration;

use tessera_proto::directorypb::directory_client::DirectoryClient;
use tessera_proto::directorypb::PutStoreRequest;
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::GetRequest;
use tonic::transport::Endpoint;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::*;
use crate::certs::{self, CertsDir};
use crate::identity::Identity;

fn make_dir(path: &Path) {
    let d = CertsDir::new(path);
    certs::create_ca(&d, 30, false).unwrap();
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    certs::create(
        &d,
        &Identity::new(Kind::Node, "n1").unwrap(),
        &hosts,
        30,
        false,
    )
    .unwrap();
    certs::create(
        &d,
        &Identity::new(Kind::Router, "r1").unwrap(),
        &hosts,
        30,
        false,
    )
    .unwrap();
    certs::create(
        &d,
        &Identity::new(Kind::Client, "alice").unwrap(),
        &[],
        30,
        false,
    )
    .unwrap();
}

struct Server {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(security: Security) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(security.guard())
            .add_service(health)
            .serve_with_incoming_shutdown(security.incoming(listener), async {
                let _ = stopped.await;
            }),
    );
    Server { addr, stop }
}

async fn dial(
    client: &Security,
    addr: std::net::SocketAddr,
) -> std::result::Result<crate::Channel, tonic::transport::Error> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    client.connect(ep).await
}

/// What a PutStore (node only), a Kv get (any identity) and a health check
/// (anyone) answer over `channel`.
async fn answers(channel: crate::Channel) -> (tonic::Code, tonic::Code, tonic::Code, String) {
    let put = DirectoryClient::new(channel.clone())
        .put_store(PutStoreRequest::default())
        .await
        .unwrap_err();
    let get = KvClient::new(channel.clone())
        .get(GetRequest::default())
        .await
        .unwrap_err();
    let health = match HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    (put.code(), get.code(), health, put.message().to_string())
}

/// The security of a `kind` process whose certificates are in `dir`.
fn load(dir: &Path, kind: Kind) -> crate::Result<Security> {
    let settings = TlsSettings {
        certs_dir: Some(dir.to_path_buf()),
        ..TlsSettings::default()
    };
    Security::from_settings(&settings, kind)
}

fn node_server(dir: &Path) -> Security {
    load(dir, Kind::Node).unwrap()
}

/// Whether a plaintext client gets nothing from the server at `addr`.
async fn plaintext_refused(addr: std::net::SocketAddr) -> bool {
    match dial(&Security::insecure(), addr).await {
        Err(_) => true,
        Ok(ch) => KvClient::new(ch)
            .get(GetRequest::default())
            .await
            .is_err_and(|s| s.code() != tonic::Code::Unimplemented),
    }
}

#[tokio::test]
async fn each_identity_kind_gets_exactly_what_the_policy_gives_it() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let security = node_server(tmp.path());
    let users = security.users().clone();
    let server = serve(security).await;
    use tonic::Code::*;

    // A node passes the check (the test server has no such service).
    let node = load(tmp.path(), Kind::Node).unwrap();
    let (put, get, health, _) = answers(dial(&node, server.addr).await.unwrap()).await;
    assert_eq!((put, get, health), (Unimplemented, Unimplemented, Ok));

    // A router may use Kv, never the store-facing directory RPCs.
    let router = load(tmp.path(), Kind::Router).unwrap();
    let (put, get, _, msg) = answers(dial(&router, server.addr).await.unwrap()).await;
    assert_eq!((put, get), (PermissionDenied, Unimplemented));
    assert!(
        msg.contains("router/r1 may not call /directorypb.Directory/PutStore"),
        "{msg}"
    );
    assert!(msg.contains("needs a node identity"), "{msg}");

    // A client certificate of a name that is not a user gets nothing.
    let alice = Security::client(tmp.path(), Some("alice")).unwrap();
    let (put, get, _, _) = answers(dial(&alice, server.addr).await.unwrap()).await;
    assert_eq!((put, get), (PermissionDenied, PermissionDenied));

    // As the user alice: what her role allows, never what needs a node.
    users.set(crate::users::UserTable::new(
        1,
        [crate::users::UserEntry {
            name: "alice".into(),
            role: crate::users::Role::Readonly,
            token_hash: crate::secret::hash(&crate::secret::generate()),
        }],
    ));
    let (put, get, _, msg) = answers(dial(&alice, server.addr).await.unwrap()).await;
    assert_eq!((put, get), (PermissionDenied, Unimplemented));
    assert!(msg.contains("client/alice may not call"), "{msg}");

    // No client certificate: only health.
    let anonymous = Security::client(tmp.path(), None).unwrap();
    let (put, get, health, msg) = answers(dial(&anonymous, server.addr).await.unwrap()).await;
    assert_eq!((put, get, health), (Unauthenticated, Unauthenticated, Ok));
    assert!(msg.contains("presented no client certificate"), "{msg}");
    let _ = server.stop.send(());
}

#[tokio::test]
async fn certificates_of_another_ca_expired_ones_and_plaintext_are_refused_at_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
    make_dir(&ours);
    make_dir(&theirs);
    let server = serve(node_server(&ours)).await;

    // A node of another cluster's CA: its certificate is not accepted, and
    // it does not accept ours either.
    let foreign = node_server(&theirs);
    let err = dial(&foreign, server.addr).await.map(|_| ()).unwrap_err();
    assert!(
        format!("{err:?}").contains("invalid peer certificate"),
        "{err:?}"
    );

    // An expired client certificate signed by our CA.
    let d = CertsDir::new(&ours);
    let now = time::OffsetDateTime::now_utc();
    let old = Identity::new(Kind::Client, "old").unwrap();
    certs::create_valid(
        &d,
        &old,
        &[],
        (
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        ),
        false,
    )
    .unwrap();
    let expired = Security::client(&ours, Some("old")).unwrap();
    // TLS 1.3: the client learns of the refusal on its first read.
    let refused = match dial(&expired, server.addr).await {
        Err(e) => format!("{e:?}"),
        Ok(ch) => {
            let s = KvClient::new(ch)
                .get(GetRequest::default())
                .await
                .unwrap_err();
            format!("{s:?}")
        }
    };
    assert!(refused.contains("CertificateExpired"), "{refused}");

    // Plaintext to a TLS port gets nothing.
    assert!(plaintext_refused(server.addr).await);
    let _ = server.stop.send(());
}

#[tokio::test]
async fn connections_from_outside_allowed_networks_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let settings = TlsSettings {
        certs_dir: Some(tmp.path().into()),
        allowed_networks: vec!["10.0.0.0/8".into()],
        ..Default::default()
    };
    let server = serve(Security::from_settings(&settings, Kind::Node).unwrap()).await;
    let node = node_server(tmp.path());
    assert!(
        dial(&node, server.addr).await.is_err(),
        "127.0.0.1 is outside 10.0.0.0/8"
    );
    let _ = server.stop.send(());

    // The same, plaintext.
    let settings = TlsSettings {
        insecure: true,
        allowed_networks: vec!["10.0.0.0/8".into()],
        ..Default::default()
    };
    let server = serve(Security::from_settings(&settings, Kind::Node).unwrap()).await;
    assert!(plaintext_refused(server.addr).await);
    let _ = server.stop.send(());
}

#[test]
fn settings_need_a_certificates_directory_or_an_explicit_insecure() {
    let e = Security::from_settings(&TlsSettings::default(), Kind::Node)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--certs-dir") && e.contains("--insecure"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let e = load(tmp.path(), Kind::Node).unwrap_err().to_string();
    assert!(e.contains("ca.crt") && e.contains("does not exist"), "{e}");
    make_dir(tmp.path());
    // A router certificate where a node's is expected.
    std::fs::copy(tmp.path().join("router.crt"), tmp.path().join("node.crt")).unwrap();
    std::fs::copy(tmp.path().join("router.key"), tmp.path().join("node.key")).unwrap();
    let e = load(tmp.path(), Kind::Node).unwrap_err().to_string();
    assert!(
        e.contains("router/r1") && e.contains("not a node identity"),
        "{e}"
    );
}

#[tokio::test]
async fn a_changed_certificate_is_used_after_a_reload_and_a_broken_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let d = CertsDir::new(tmp.path());
    let m = Material::load_client(tmp.path(), Some("alice")).unwrap();
    let before = m.not_after().unwrap();
    assert!(!m.reload(false).unwrap(), "nothing changed");

    // Renewed for longer: picked up without a restart.
    let alice = Identity::new(Kind::Client, "alice").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    certs::create(&d, &alice, &[], 300, true).unwrap();
    assert!(m.reload(false).unwrap());
    let after = m.not_after().unwrap();
    assert!(after > before + 200 * 86_400, "{before} -> {after}");

    // A half-written key: the reload fails, the renewed set stays.
    std::fs::write(
        tmp.path().join("client.alice.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA",
    )
    .unwrap();
    assert!(m.reload(false).is_err());
    assert_eq!(m.not_after(), Some(after));
    assert_eq!(m.identity(), Some(alice));
}
