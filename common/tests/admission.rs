//! Admission over real gRPC: a server with `[serving]` quotas, the gRPC
//! health service standing in for a governed service (its `Watch` holds a
//! request in flight for as long as the test likes).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tessera_common::admission::{limit_connections, Admission, ServingLimits};
use tessera_proto::limits::busy_retry_after;
use tessera_security::Security;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const HEALTH: &[&str] = &["/grpc.health.v1.Health/"];

struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _reporter: tonic_health::server::HealthReporter,
}

impl Server {
    async fn start(limits: ServingLimits) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        let (stop, mut stopped) = watch::channel(false);
        let incoming = limit_connections(Security::insecure().incoming(listener), &limits);
        let serve = limits
            .server()
            .layer(Admission::new(&limits, HEALTH, &[]))
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
        let task = tokio::spawn(async move {
            serve.await.unwrap();
        });
        Server {
            addr,
            stop,
            task,
            _reporter: reporter,
        }
    }

    async fn client(&self) -> HealthClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        HealthClient::new(channel).max_decoding_message_size(16 << 20)
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

/// Retries `f` until it succeeds or 5 s pass.
async fn eventually<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_over_the_request_quota_is_refused_at_once_and_its_place_comes_back() {
    let limits = ServingLimits {
        max_in_flight_requests: 1,
        busy_retry_after_ms: 75,
        ..ServingLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = server.client().await;
    // A Watch stays in flight until it is dropped.
    let mut watch = client.watch(check("")).await.unwrap().into_inner();
    assert!(watch.message().await.unwrap().is_some());

    let refused = client.check(check("")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(busy_retry_after(&refused), Some(Duration::from_millis(75)));
    assert!(
        refused.message().contains("serving.max_in_flight_requests")
            && refused.message().contains("nothing was applied"),
        "{}",
        refused.message()
    );

    drop(watch);
    eventually(|| {
        let mut c = client.clone();
        async move { c.check(check("")).await.is_ok() }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_request_whose_bytes_pass_the_byte_quota_is_refused_unread() {
    let limits = ServingLimits {
        max_in_flight_bytes: 1024 * 1024,
        ..ServingLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = server.client().await;
    // Under the quota: admitted, and the service answers (no such service).
    let small = client.check(check(&"s".repeat(256 * 1024))).await;
    assert_eq!(small.unwrap_err().code(), tonic::Code::NotFound);
    // Over it: refused as it arrives; the service never saw it.
    let big = client
        .check(check(&"s".repeat(2 * 1024 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    assert!(
        big.message().contains("serving.max_in_flight_bytes"),
        "{}",
        big.message()
    );
    assert!(busy_retry_after(&big).is_some());
    // The refused bytes were given back: small requests go on.
    assert!(client.check(check("")).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_silent_ones_time_out() {
    let limits = ServingLimits {
        max_connections: 1,
        keepalive_interval_ms: 100,
        keepalive_timeout_ms: 100,
        idle_timeout_ms: 500,
        ..ServingLimits::default()
    };
    let server = Server::start(limits).await;
    // A connection that never says anything takes the only place ...
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so a client's connection is closed at once.
    let refused = server.client().await.check(check("")).await.unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);
    // The silent one is closed after the idle timeout ...
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // HTTP/2 settings and pings it never answers
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // ... and its place is free again.
    eventually(|| async { server.client().await.check(check("")).await.is_ok() }).await;
    server.stop().await;
}
