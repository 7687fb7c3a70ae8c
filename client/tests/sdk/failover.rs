//! Failover between routers, retries, and the unavailable/indeterminate
//! rule.

use std::time::{Duration, Instant};

use tessera_client::{Client, Error};
use tessera_proto::routerpb::error::Kind;

use crate::client;
use crate::fake::{dead_endpoint, Behaviour, FakeServer, BUSY_WAIT};
use crate::proxy::Proxy;

/// Far above any timeout used here: only there so a broken loop fails
/// instead of hanging.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[tokio::test]
async fn build_needs_endpoints_but_dials_nothing() {
    assert!(matches!(
        Client::builder().build().await,
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Client::builder()
            .endpoints(["not an address"])
            .build()
            .await,
        Err(Error::Config(_))
    ));
    // Nothing listens there, and building still works.
    assert!(Client::builder()
        .endpoints([dead_endpoint()])
        .build()
        .await
        .is_ok());
}

#[tokio::test]
async fn unreachable_first_endpoint_fails_over_to_the_second() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let c = client(
        &[dead_endpoint(), format!("http://{}", server.endpoint())],
        Duration::from_secs(10),
    )
    .await;
    c.put("k", "v").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
    // Never sent to the dead one, so a CAS fails over too.
    assert!(
        c.compare_and_swap("k", Some(b"v"), Some(b"w"))
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(server.fake.calls(), 3);
}

#[tokio::test]
async fn operations_start_with_the_endpoint_that_last_worked() {
    let refusing = FakeServer::start(Behaviour::Answer(Kind::Unavailable)).await;
    let serving = FakeServer::start(Behaviour::Serve).await;
    let c = client(
        &[refusing.endpoint(), serving.endpoint()],
        Duration::from_secs(10),
    )
    .await;
    c.put("k", "v").await.unwrap();
    assert_eq!(refusing.fake.calls(), 1);
    for _ in 0..5 {
        assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
    }
    assert_eq!(
        refusing.fake.calls(),
        1,
        "the refusing router was asked again"
    );
    assert_eq!(serving.fake.calls(), 6);
}

#[tokio::test]
async fn unavailable_answers_are_retried() {
    let server = FakeServer::start(Behaviour::UnavailableFirst(2)).await;
    let c = client(&[server.endpoint()], Duration::from_secs(10)).await;
    c.put("k", "v").await.unwrap();
    assert_eq!(server.fake.calls(), 3);
    assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));

    // UNAVAILABLE says nothing was applied, so even a CAS is retried.
    let server = FakeServer::start(Behaviour::UnavailableFirst(2)).await;
    let c = client(&[server.endpoint()], Duration::from_secs(10)).await;
    let outcome = c.compare_and_swap("k", None, Some(b"v")).await.unwrap();
    assert!(outcome.succeeded);
    assert_eq!(server.fake.calls(), 3);
}

#[tokio::test]
async fn a_router_that_never_answers() {
    let server = FakeServer::start(Behaviour::Hang).await;
    let timeout = Duration::from_millis(300);
    let c = client(&[server.endpoint()], timeout).await;

    let start = Instant::now();
    let err = c.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = c.scan::<&[u8]>(.., 0).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");

    let err = c.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    assert!(err.is_indeterminate() && !err.is_retryable());
    let err = c.delete_range::<&[u8]>(..).await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");

    let calls = server.fake.calls();
    let err = c.compare_and_swap("k", None, Some(b"v")).await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    assert_eq!(server.fake.calls(), calls + 1, "a sent CAS is never resent");
    assert!(start.elapsed() < HANG_GUARD);
}

#[tokio::test]
async fn grpc_status_errors_after_sending() {
    let server = FakeServer::start(Behaviour::Status).await;
    let c = client(&[server.endpoint()], Duration::from_millis(300)).await;

    // Reads are retried until the deadline.
    let err = c.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(server.fake.calls() > 1, "the read was not retried");

    // A put is not resent once sent either: applied twice, it could undo
    // another client's write in between.
    for op in ["put", "batch_put", "delete"] {
        let calls = server.fake.calls();
        let err = match op {
            "put" => c.put("a", "1").await,
            "batch_put" => c.batch_put([("a", "1")]).await,
            _ => c.delete("a").await,
        }
        .unwrap_err();
        assert!(matches!(err, Error::Indeterminate(_)), "{op}: {err:?}");
        assert_eq!(server.fake.calls(), calls + 1, "{op} was sent twice");
    }

    // A CAS is not retried once sent.
    let calls = server.fake.calls();
    let err = c.compare_and_swap("k", None, Some(b"v")).await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    assert_eq!(server.fake.calls(), calls + 1);
}

#[tokio::test]
async fn indeterminate_answers_end_the_operation() {
    let server = FakeServer::start(Behaviour::Answer(Kind::Indeterminate)).await;
    let c = client(&[server.endpoint()], Duration::from_secs(10)).await;
    let err = c.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Indeterminate(_)), "{err:?}");
    assert_eq!(server.fake.calls(), 1);
}

#[tokio::test]
async fn invalid_argument_answers_are_not_retried_on_other_routers() {
    let first = FakeServer::start(Behaviour::Answer(Kind::InvalidArgument)).await;
    let second = FakeServer::start(Behaviour::Serve).await;
    let c = client(
        &[first.endpoint(), second.endpoint()],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(
        c.put("k", "v").await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!((first.fake.calls(), second.fake.calls()), (1, 0));
}

#[tokio::test]
async fn all_routers_down() {
    let timeout = Duration::from_millis(500);
    let c = client(&[dead_endpoint(), dead_endpoint()], timeout).await;
    let start = Instant::now();
    let err = c.get("k").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < HANG_GUARD);
    // Writes that never reached a router are unavailable, not indeterminate.
    let err = c.put("k", "v").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let err = c.compare_and_swap("k", None, Some(b"v")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < HANG_GUARD);
}

#[tokio::test]
async fn a_restarted_router_is_dialed_again() {
    let server = FakeServer::start(Behaviour::Serve).await;
    let addr = server.addr;
    let c = client(&[addr.to_string()], Duration::from_millis(500)).await;
    c.put("k", "v").await.unwrap();

    server.stop().await;
    // Give the client's connection time to see the close, so the next call
    // re-dials instead of writing into the closing connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The re-dial fails: the CAS was certainly not sent.
    let err = c.compare_and_swap("k", None, Some(b"v")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");

    let server = FakeServer::start_at(addr, Behaviour::Serve).await;
    c.put("k", "again").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b"again".to_vec()));
    assert_eq!(server.fake.calls(), 2);
}

#[tokio::test]
async fn a_silent_router_is_failed_over_by_keepalive() {
    // Two routers over the same data: the first behind a proxy that will
    // go silent.
    let first = FakeServer::start(Behaviour::Serve).await;
    let second = FakeServer::start(Behaviour::Serve).await;
    let proxy = Proxy::start(first.addr).await;
    let c = client(
        &[proxy.addr.to_string(), second.endpoint()],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!((first.fake.calls(), second.fake.calls()), (1, 0));

    proxy.freeze();
    // The read goes to the silent router first; the keepalive drops that
    // connection well before the deadline and the read fails over.
    let start = Instant::now();
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!(second.fake.calls(), 1);
    assert!(start.elapsed() < HANG_GUARD);
}

/// A router over its serving quotas refuses before reading: a write too is
/// sent again after the wait it asks, on the same router, and applies once.
#[tokio::test]
async fn a_busy_router_is_waited_out_and_a_write_applies_once() {
    let busy = FakeServer::start(Behaviour::BusyFirst(3)).await;
    let c = client(
        &[format!("http://{}", busy.endpoint())],
        Duration::from_secs(10),
    )
    .await;
    let started = Instant::now();
    tokio::time::timeout(HANG_GUARD, c.put("k", "v"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= BUSY_WAIT * 3,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(busy.fake.calls(), 4);
    assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
}

/// A cluster busy until the deadline: `ResourceExhausted`, retryable, and
/// not an indeterminate write.
#[tokio::test]
async fn busy_until_the_deadline_is_resource_exhausted_not_indeterminate() {
    let busy = FakeServer::start(Behaviour::Answer(Kind::Busy)).await;
    let c = client(
        &[format!("http://{}", busy.endpoint())],
        Duration::from_millis(600),
    )
    .await;
    let e = tokio::time::timeout(HANG_GUARD, c.put("k", "v"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
    assert!(e.is_retryable() && !e.is_indeterminate());
    assert!(e.to_string().contains("nothing was applied"), "{e}");
    assert!(busy.fake.calls() > 1, "retried: {}", busy.fake.calls());
}

/// With `retry_busy(false)` a busy refusal comes back at once as
/// `ResourceExhausted` after one attempt, nothing applied.
#[tokio::test]
async fn without_busy_retries_a_refusal_returns_at_once() {
    let busy = FakeServer::start(Behaviour::BusyFirst(1)).await;
    let c = Client::builder()
        .endpoints([format!("http://{}", busy.endpoint())])
        .timeout(Duration::from_secs(10))
        .retry_busy(false)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let e = tokio::time::timeout(HANG_GUARD, c.put("k", "v"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
    assert!(e.is_retryable() && !e.is_indeterminate());
    assert!(e.to_string().contains("retry_busy"), "{e}");
    assert!(started.elapsed() < BUSY_WAIT, "{:?}", started.elapsed());
    assert_eq!(busy.fake.calls(), 1);
    // Nothing was applied; the next attempt (no longer refused) is.
    assert_eq!(c.get("k").await.unwrap(), None);
    c.put("k", "v").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
}

/// A router that refuses everything as busy: after the first refusals the
/// client holds most requests back itself (not sent, the same
/// `ResourceExhausted`), so the router sees a small share of them; once
/// the router accepts again, the client lets go within a few windows.
#[tokio::test]
async fn the_throttle_holds_back_what_a_refusing_router_would_refuse() {
    const REFUSED: usize = 30;
    let busy = FakeServer::start(Behaviour::BusyFirst(REFUSED)).await;
    let window = Duration::from_millis(300);
    let c = Client::builder()
        .endpoints([format!("http://{}", busy.endpoint())])
        .timeout(Duration::from_secs(10))
        .retry_busy(false)
        .throttle(2.0, window)
        .build()
        .await
        .unwrap();
    let mut held = 0;
    for _ in 0..300 {
        let e = c.get("k").await.unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
        assert!(e.is_retryable() && !e.is_indeterminate());
        if e.to_string()
            .contains("held back by this client's throttle")
        {
            assert!(e.to_string().contains("nothing was applied"), "{e}");
            held += 1;
        }
        if busy.fake.calls() == REFUSED {
            break;
        }
    }
    assert!(held >= 200, "held back {held}, sent {}", busy.fake.calls());
    // A write held back was never sent, so it is not indeterminate.
    let e = c.put("k", "v").await.unwrap_err();
    assert!(!e.is_indeterminate(), "{e:?}");
    // The router accepts again: after the refusals leave the window,
    // nothing is held back.
    let sent_before = busy.fake.calls();
    let started = Instant::now();
    loop {
        match c.put("k", "v").await {
            Ok(()) => break,
            Err(e) => assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}"),
        }
        assert!(started.elapsed() < HANG_GUARD);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(window * 2).await;
    for _ in 0..50 {
        assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
    }
    assert!(busy.fake.calls() >= sent_before + 51);
}

/// With the throttle off every request goes to the router, refused or not.
#[tokio::test]
async fn without_the_throttle_every_request_is_sent() {
    let busy = FakeServer::start(Behaviour::Answer(Kind::Busy)).await;
    let c = Client::builder()
        .endpoints([format!("http://{}", busy.endpoint())])
        .retry_busy(false)
        .throttle(0.0, Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    for _ in 0..100 {
        let e = c.get("k").await.unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(_)), "{e:?}");
    }
    assert_eq!(busy.fake.calls(), 100);
}
