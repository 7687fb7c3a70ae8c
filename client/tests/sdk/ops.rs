//! Every operation against a well-behaved fake.

use std::ops::Bound;
use std::time::Duration;

use tessera_client::{CasOutcome, Error, KvPair};

use crate::client;
use crate::fake::{Behaviour, FakeServer};

const TIMEOUT: Duration = Duration::from_secs(10);

fn pair(k: &str, v: &str) -> KvPair {
    KvPair {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

fn keys(pairs: &[KvPair]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect()
}

#[tokio::test]
async fn get_put_delete() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    assert_eq!(c.get("k").await.unwrap(), None);
    c.put("k", "v1").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b"v1".to_vec()));
    c.put(b"k".to_vec(), b"v2").await.unwrap();
    assert_eq!(c.get(b"k").await.unwrap(), Some(b"v2".to_vec()));
    c.put("empty", "").await.unwrap();
    assert_eq!(c.get("empty").await.unwrap(), Some(Vec::new()));
    c.delete("k").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);
    c.delete("never-there").await.unwrap();
}

#[tokio::test]
async fn values_over_tonic_default_message_size() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let big = vec![7u8; 6 * 1024 * 1024];
    c.put("big", &big).await.unwrap();
    assert_eq!(c.get("big").await.unwrap(), Some(big));
}

#[tokio::test]
async fn empty_keys_are_refused_locally() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    assert!(matches!(c.get("").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        c.put("", "v").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(c.delete("").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        c.batch_get(["a", ""]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.batch_put([("a", "1"), ("", "2")]).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.compare_and_swap("", None, Some(b"v")).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(server.fake.calls(), 0, "nothing may reach the router");
    // Nothing was written by the batch with a bad key.
    assert_eq!(c.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn batches() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    c.batch_put([("b", "2"), ("a", "1"), ("c", "3")])
        .await
        .unwrap();
    let got = c.batch_get(["c", "missing", "a"]).await.unwrap();
    assert_eq!(got, vec![pair("c", "3"), pair("a", "1")]);
    // Empty batches do not go to the router.
    let calls = server.fake.calls();
    assert_eq!(c.batch_get(Vec::<&str>::new()).await.unwrap(), vec![]);
    c.batch_put(Vec::<(&str, &str)>::new()).await.unwrap();
    assert_eq!(server.fake.calls(), calls);
}

/// The router answers big scans and batch gets in pages (the fake: two
/// pairs a page); the SDK follows them and returns the whole answer, each
/// key once.
#[tokio::test]
async fn pages_are_followed() {
    use futures::TryStreamExt as _;
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let ks = ["a", "b", "c", "d", "e"];
    c.batch_put(ks.map(|k| (k, k))).await.unwrap();
    let calls = server.fake.calls();
    let got = c
        .batch_get(["e", "a", "e", "missing", "c", "a", "b", "d"])
        .await
        .unwrap();
    assert_eq!(
        keys(&got),
        ["e", "a", "c", "b", "d"],
        "each key once, first mention first"
    );
    assert_eq!(
        server.fake.calls() - calls,
        3,
        "five pairs come in three pages"
    );

    let calls = server.fake.calls();
    assert_eq!(keys(&c.scan::<&[u8]>(.., 0).await.unwrap()), ks);
    assert_eq!(server.fake.calls() - calls, 3);
    assert_eq!(
        keys(&c.scan_reverse::<&[u8]>(.., 0).await.unwrap()),
        ["e", "d", "c", "b", "a"]
    );
    assert_eq!(
        keys(&c.scan::<&[u8]>(.., 3).await.unwrap()),
        ["a", "b", "c"]
    );
    let keyspace = c.keyspace("");
    let streamed: Vec<_> = keyspace.scan_stream("b"..).try_collect().await.unwrap();
    assert_eq!(keys(&streamed), ["b", "c", "d", "e"]);
}

#[tokio::test]
async fn scan_ranges_reverse_and_limit() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    c.batch_put(["a", "b", "b\0", "c", "d", "e"].map(|k| (k, k)))
        .await
        .unwrap();

    let all = ["a", "b", "b\0", "c", "d", "e"];
    assert_eq!(keys(&c.scan::<&[u8]>(.., 0).await.unwrap()), all);
    assert_eq!(keys(&c.scan("b".."d", 0).await.unwrap()), ["b", "b\0", "c"]);
    assert_eq!(
        keys(&c.scan("b"..="d", 0).await.unwrap()),
        ["b", "b\0", "c", "d"]
    );
    assert_eq!(keys(&c.scan("c".., 0).await.unwrap()), ["c", "d", "e"]);
    assert_eq!(keys(&c.scan(.."b", 0).await.unwrap()), ["a"]);
    assert_eq!(keys(&c.scan(..="b", 0).await.unwrap()), ["a", "b"]);
    let after_b = (Bound::Excluded("b"), Bound::Included("d"));
    assert_eq!(
        keys(&c.scan::<&str>(after_b, 0).await.unwrap()),
        ["b\0", "c", "d"]
    );
    let after_b_up_to_d = (Bound::Excluded("b"), Bound::Excluded("d"));
    assert_eq!(
        keys(&c.scan::<&str>(after_b_up_to_d, 0).await.unwrap()),
        ["b\0", "c"]
    );
    assert_eq!(keys(&c.scan::<&[u8]>(.., 2).await.unwrap()), ["a", "b"]);
    assert_eq!(c.scan("x".., 0).await.unwrap(), vec![]);

    assert_eq!(
        keys(&c.scan_reverse::<&[u8]>(.., 0).await.unwrap()),
        ["e", "d", "c", "b\0", "b", "a"]
    );
    assert_eq!(
        keys(&c.scan_reverse("b"..="d", 2).await.unwrap()),
        ["d", "c"]
    );
    assert_eq!(
        keys(&c.scan_reverse(.."c", 0).await.unwrap()),
        ["b\0", "b", "a"]
    );
    assert_eq!(
        c.scan_reverse("a"..="a", 0).await.unwrap(),
        vec![pair("a", "a")]
    );
}

#[tokio::test]
async fn delete_range() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    c.batch_put(["a", "b", "c", "d", "e"].map(|k| (k, k)))
        .await
        .unwrap();
    c.delete_range("b"..="c").await.unwrap();
    assert_eq!(
        keys(&c.scan::<&[u8]>(.., 0).await.unwrap()),
        ["a", "d", "e"]
    );
    c.delete_range("d"..).await.unwrap();
    assert_eq!(keys(&c.scan::<&[u8]>(.., 0).await.unwrap()), ["a"]);
    c.delete_range::<&[u8]>(..).await.unwrap();
    assert_eq!(c.scan::<&[u8]>(.., 0).await.unwrap(), vec![]);
}

#[tokio::test]
async fn compare_and_swap_outcomes() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    // Create when absent.
    assert_eq!(
        c.compare_and_swap("k", None, Some(b"1")).await.unwrap(),
        CasOutcome {
            succeeded: true,
            previous: None
        }
    );
    // Create again: fails and shows the value.
    assert_eq!(
        c.compare_and_swap("k", None, Some(b"2")).await.unwrap(),
        CasOutcome {
            succeeded: false,
            previous: Some(b"1".to_vec())
        }
    );
    // Wrong expectation.
    assert_eq!(
        c.compare_and_swap("k", Some(b"9"), Some(b"2"))
            .await
            .unwrap(),
        CasOutcome {
            succeeded: false,
            previous: Some(b"1".to_vec())
        }
    );
    // Right expectation.
    assert_eq!(
        c.compare_and_swap("k", Some(b"1"), Some(b"2"))
            .await
            .unwrap(),
        CasOutcome {
            succeeded: true,
            previous: Some(b"1".to_vec())
        }
    );
    assert_eq!(c.get("k").await.unwrap(), Some(b"2".to_vec()));
    // Swap to absent: a delete.
    assert!(
        c.compare_and_swap("k", Some(b"2"), None)
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(c.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn keyspaces_are_separate() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let users = c.keyspace("users");
    assert_eq!(users.name(), "users");
    users.put("k", "in users").await.unwrap();
    c.put("k", "in default").await.unwrap();
    assert_eq!(users.get("k").await.unwrap(), Some(b"in users".to_vec()));
    assert_eq!(c.get("k").await.unwrap(), Some(b"in default".to_vec()));
    assert_eq!(
        users.scan::<&[u8]>(.., 0).await.unwrap(),
        vec![pair("k", "in users")]
    );
    let cas = users
        .compare_and_swap("k", Some(b"in users"), None)
        .await
        .unwrap();
    assert!(cas.succeeded);
    assert_eq!(c.get("k").await.unwrap(), Some(b"in default".to_vec()));
}

#[tokio::test]
async fn unknown_keyspace_is_not_retried() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let nope = c.keyspace("nope");
    match nope.get("k").await {
        Err(Error::KeyspaceNotFound(name)) => assert_eq!(name, "nope"),
        other => panic!("expected KeyspaceNotFound, got {other:?}"),
    }
    assert_eq!(server.fake.calls(), 1);
    assert!(matches!(
        nope.put("k", "v").await,
        Err(Error::KeyspaceNotFound(_))
    ));
    assert_eq!(server.fake.calls(), 2);
}

#[tokio::test]
async fn invalid_argument_from_the_router_is_not_retried() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let huge_key = vec![b'k'; 9 * 1024];
    let err = c.put(&huge_key, "v").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(!err.is_retryable() && !err.is_indeterminate());
    assert_eq!(server.fake.calls(), 1);
    assert!(matches!(
        c.compare_and_swap(&huge_key, None, Some(b"v")).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(server.fake.calls(), 2);
}

#[tokio::test]
async fn clones_share_the_client_across_tasks() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(&[server.endpoint()], TIMEOUT).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put(format!("k{i:02}"), format!("v{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(c.scan::<&[u8]>(.., 0).await.unwrap().len(), 16);
}
