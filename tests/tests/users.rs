//! Users, roles and bearer tokens on a real TLS cluster (separate
//! processes): what `tessera user create` gives out, that each token gets
//! exactly its role at the router, at the stores and at the directory,
//! that a client certificate acts as the user of its name, that a revoked
//! token stops working everywhere within 5 s, and that refused requests
//! and bad user commands change nothing.

use std::time::{Duration, Instant};

use tessera_client::{Client, Error as SdkError};
use tessera_e2e::{E2eCluster, Options};
use tessera_proto::kvpb::kv_client::KvClient;
use tessera_proto::kvpb::{
    batch_commands_request, batch_commands_response, BatchCommandsRequest, BatchCommandsResponse,
    GetRequest, PutRequest,
};
use tessera_security::certs::{self, CertsDir};
use tessera_security::identity::Identity;
use tessera_security::{secret, Kind, Security};
use tonic::transport::Endpoint;
use tonic::Code;

/// The token `tessera user create NAME --role ROLE` printed (its last line).
fn create_user(c: &E2eCluster, name: &str, role: &str) -> String {
    let out = c
        .try_cli(&["user", "create", name, "--role", role])
        .unwrap_or_else(|e| panic!("user create {name}: {e}"));
    let token = out.lines().last().expect("a token line").trim().to_string();
    secret::check_form(&token).unwrap_or_else(|e| panic!("{out}: {e}"));
    token
}

fn with_token(c: &E2eCluster, token: &str) -> Security {
    Security::with_token(c.certs.as_ref().unwrap(), token).unwrap()
}

async fn sdk(c: &E2eCluster, security: Security) -> Client {
    Client::builder()
        .endpoints(c.router_addrs())
        .security(security)
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap()
}

/// The code a store's Kv service answers a put and a get with (the access
/// check answers before the request is looked at).
async fn at_store(c: &E2eCluster, security: &Security) -> (Code, Code) {
    let endpoint = Endpoint::from_shared(format!("http://{}", c.stores[&1].addr))
        .unwrap()
        .timeout(Duration::from_secs(10));
    let mut kv = KvClient::new(security.connect(endpoint).await.unwrap());
    fn code<T>(r: Result<T, tonic::Status>) -> Code {
        r.map_or_else(|s| s.code(), |_| Code::Ok)
    }
    let put = code(
        kv.put(PutRequest {
            key: b"k".to_vec(),
            value: b"forged".to_vec(),
            ..Default::default()
        })
        .await,
    );
    let get = code(kv.get(GetRequest::default()).await);
    (put, get)
}

/// A `BatchCommands` stream to store 1, opened as `security`'s user.
struct StoreStream {
    out: tokio::sync::mpsc::UnboundedSender<BatchCommandsRequest>,
    answers: tonic::Streaming<BatchCommandsResponse>,
    next_id: u64,
}

impl StoreStream {
    async fn open(c: &E2eCluster, security: &Security) -> StoreStream {
        let endpoint = Endpoint::from_shared(format!("http://{}", c.stores[&1].addr)).unwrap();
        let mut kv = KvClient::new(security.connect(endpoint).await.unwrap());
        let (out, rx) = tokio::sync::mpsc::unbounded_channel();
        let answers = kv
            .batch_commands(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        StoreStream {
            out,
            answers,
            next_id: 0,
        }
    }

    /// Sends a put and a get (neither names a region) in one message; the
    /// code each is answered with.
    async fn put_and_get(&mut self) -> (Code, Code) {
        use batch_commands_request::{request::Cmd, Request};
        use batch_commands_response::response::Cmd as Answer;
        let (put, get) = (self.next_id + 1, self.next_id + 2);
        self.next_id += 2;
        let requests = vec![
            Request {
                id: put,
                cmd: Some(Cmd::Put(PutRequest {
                    key: b"k".to_vec(),
                    value: b"forged".to_vec(),
                    ..Default::default()
                })),
            },
            Request {
                id: get,
                cmd: Some(Cmd::Get(GetRequest::default())),
            },
        ];
        self.out.send(BatchCommandsRequest { requests }).unwrap();
        let mut codes = std::collections::HashMap::new();
        while codes.len() < 2 {
            let message = self.answers.message().await.unwrap().expect("answers");
            for r in message.responses {
                let code = match r.cmd.unwrap() {
                    Answer::Status(s) => s.into_status().code(),
                    _ => Code::Ok,
                };
                codes.insert(r.id, code);
            }
        }
        (codes[&put], codes[&get])
    }
}

/// The user commands' CLI run with `--token`.
fn cli_as(c: &E2eCluster, token: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    c.try_cli(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_get_exactly_their_role_everywhere_until_revoked() {
    let mut c = E2eCluster::start(Options::default()).await;
    c.add_router().await;
    c.wait_settled(1).await;
    let admin = sdk(&c, c.security()).await;
    admin.put("k", "v1").await.unwrap();

    // A new user's token works at once (the router fetches the table when
    // it meets a token it does not know).
    let ro = create_user(&c, "reader", "readonly");
    let rw = create_user(&c, "writer", "readwrite");
    let reader = sdk(&c, with_token(&c, &ro)).await;
    assert_eq!(reader.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));

    // readonly: reads, but no write anywhere, and nothing changes.
    match reader.put("k", "stolen").await.unwrap_err() {
        SdkError::PermissionDenied(m) => assert!(
            m.contains("user reader (role readonly)") && m.contains("needs the role readwrite"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let (put, _) = at_store(&c, &with_token(&c, &ro)).await;
    assert_eq!(put, Code::PermissionDenied);
    // In a store's stream of requests each is checked as its own RPC: the
    // reader's put is refused, its get passes the check (and is refused as
    // bad input: it names no region), and the stream stays open.
    let mut reader_stream = StoreStream::open(&c, &with_token(&c, &ro)).await;
    for _ in 0..2 {
        assert_eq!(
            reader_stream.put_and_get().await,
            (Code::PermissionDenied, Code::InvalidArgument)
        );
    }
    assert_eq!(admin.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));

    // readwrite: writes, but no administration.
    let writer = sdk(&c, with_token(&c, &rw)).await;
    writer.put("k", "v2").await.unwrap();
    assert_eq!(reader.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    let regions: serde_json::Value =
        serde_json::from_str(&c.try_cli(&["region", "list", "-o", "json"]).unwrap()).unwrap();
    let region = regions[0]["id"].to_string();
    let split = cli_as(&c, &rw, &["region", "split", &region, "--at", "m"]).unwrap_err();
    assert!(split.contains("needs the role admin"), "{split}");
    assert_eq!(c.status().await.unwrap().regions, 1);
    let err = cli_as(&c, &rw, &["user", "create", "eve", "--role", "admin"]).unwrap_err();
    assert!(err.contains("needs the role admin"), "{err}");

    // The listing names every user and role and shows no token or hash.
    let list = c.try_cli(&["user", "list", "-o", "json"]).unwrap();
    let users: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("admin", "admin"),
            ("reader", "readonly"),
            ("writer", "readwrite")
        ]
    );
    assert!(
        !list.contains("tessera-") && !list.contains("hash"),
        "{list}"
    );
    let table = c.try_cli(&["user", "list"]).unwrap();
    assert!(
        table.contains("reader") && table.contains("readonly"),
        "{table}"
    );

    // Bad user commands are refused with a clear error and change nothing.
    for (args, says) in [
        (
            &["user", "create", "../x", "--role", "readonly"][..],
            "user name",
        ),
        (
            &["user", "create", "admin", "--role", "readonly"],
            "built in",
        ),
        (
            &["user", "create", "reader", "--role", "admin"],
            "already exists",
        ),
        (&["user", "revoke", "admin"], "built in"),
        (&["user", "revoke", "nobody"], "nobody"),
    ] {
        let err = c.try_cli(args).unwrap_err();
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(c.try_cli(&["user", "list", "-o", "json"]).unwrap(), list);

    // A token nobody issued, and a token without TLS.
    let stranger = sdk(&c, with_token(&c, &secret::generate())).await;
    match stranger.get("k").await.unwrap_err() {
        SdkError::Unauthenticated(m) => assert!(m.contains("revoked, or never issued"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut cmd = std::process::Command::new(tessera_e2e::bin_dir().join("tessera"));
    let out = cmd
        .args(["--router", &c.router_addrs()[0], "--token", &rw, "get", "k"])
        .env_remove("TESSERA_CERTS_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--token needs TLS"),
        "{stderr}"
    );
    let err = cli_as(&c, "tessera-123", &["get", "k"]).unwrap_err();
    assert!(err.contains("not a tessera secret"), "{err}");

    // A client certificate acts as the user of its name: nothing until
    // that user exists, then exactly its role.
    let dir = c.certs.clone().unwrap();
    certs::create(
        &CertsDir::new(&dir),
        &Identity::new(Kind::Client, "carol").unwrap(),
        &[],
        30,
        false,
    )
    .unwrap();
    let carol = sdk(&c, Security::client(&dir, Some("carol")).unwrap()).await;
    match carol.get("k").await.unwrap_err() {
        SdkError::PermissionDenied(m) => {
            assert!(m.contains("tessera user create carol"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    create_user(&c, "carol", "readonly");
    c.wait_for(
        "carol's certificate to read",
        Duration::from_secs(5),
        |_| {
            let carol = &carol;
            async move { carol.get("k").await.is_ok() }
        },
    )
    .await;
    assert!(matches!(
        carol.put("k", "x").await.unwrap_err(),
        SdkError::PermissionDenied(_)
    ));

    // Revoked: within 5 s the token gets nothing at the router and at the
    // stores; the other users keep working.
    let revoked_at = Instant::now();
    let out = c.try_cli(&["user", "revoke", "reader"]).unwrap();
    assert!(out.contains("revoked user reader"), "{out}");
    c.wait_for(
        "the revoked token to be refused",
        Duration::from_secs(5),
        |_| {
            let reader = &reader;
            async move { matches!(reader.get("k").await, Err(SdkError::Unauthenticated(_))) }
        },
    )
    .await;
    c.wait_for(
        "the stores to refuse the revoked token",
        Duration::from_secs(5).saturating_sub(revoked_at.elapsed()),
        |c| {
            let ro = ro.clone();
            async move { at_store(c, &with_token(c, &ro)).await.1 == Code::Unauthenticated }
        },
    )
    .await;
    // A stream the user opened before the revocation gets nothing either.
    assert_eq!(
        reader_stream.put_and_get().await,
        (Code::Unauthenticated, Code::Unauthenticated)
    );
    writer.put("k", "v3").await.unwrap();
    assert_eq!(admin.get("k").await.unwrap().as_deref(), Some(&b"v3"[..]));
}
