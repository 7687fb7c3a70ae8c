//! The HTTP status server of every tessera process: `/metrics` (Prometheus text format),
//! `/health` (the process is alive: always 200) and `/ready` (it can serve:
//! 200, or 503 with the reason). Readiness never waits on a quorum; it is a
//! flag the store flips as it starts and stops.
//!
//! A process with certificates answers on its status port over TLS too
//! (its own certificate; no client certificate asked for), told apart from
//! plaintext by the connection's first byte. With `metrics_tls` set,
//! `/metrics` answers only over TLS (403 otherwise); `/health` and
//! `/ready` always answer both ways, since probes speak plain HTTP.
//!
//! A test build (feature `failpoints`) also serves `GET /fault/clock` (the
//! process clock's skew) and `PUT /fault/clock` (body `rate=R`,
//! `jump=Nms` or `normal`: skews it, see [`crate::clock`]), on every
//! process; a real build has no such route.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;
use tessera_security::tls::{Conn, Incoming};
use tessera_security::Security;
use tokio_stream::StreamExt as _;
use tonic::transport::server::Connected as _;

use crate::{Error, Result};

/// 1 while the process can serve, 0 otherwise.
pub const READY: &str = "tessera_ready";

/// Whether the process can serve, and if not, why. A watchdog may also
/// *hold* it not ready ([`Readiness::hold`]) whatever the process's own
/// state says, until it releases it.
pub struct Readiness {
    ready: AtomicBool,
    reason: RwLock<String>,
    held: RwLock<Option<String>>,
    /// Conditions an operator must see that do not stop the process from
    /// serving (a store low on disk space still serves reads): listed in
    /// `/ready`'s body, ready or not.
    alarms: RwLock<std::collections::BTreeMap<&'static str, String>>,
}

impl Readiness {
    pub fn new(reason: impl Into<String>) -> Arc<Self> {
        metrics::gauge!(READY).set(0.0);
        Arc::new(Readiness {
            ready: AtomicBool::new(false),
            reason: RwLock::new(reason.into()),
            held: RwLock::new(None),
            alarms: RwLock::default(),
        })
    }

    fn publish(&self) {
        metrics::gauge!(READY).set(if self.is_ready() { 1.0 } else { 0.0 });
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.publish();
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.write() = reason.into();
        self.ready.store(false, Ordering::SeqCst);
        self.publish();
    }

    /// Not ready for `reason`, whatever the process sets, until
    /// [`Readiness::release`].
    pub fn hold(&self, reason: impl Into<String>) {
        *self.held.write() = Some(reason.into());
        self.publish();
    }

    /// Ends a [`Readiness::hold`].
    pub fn release(&self) {
        *self.held.write() = None;
        self.publish();
    }

    /// Raises (or updates) alarm `name`, shown in `/ready` until cleared.
    pub fn raise_alarm(&self, name: &'static str, detail: impl Into<String>) {
        self.alarms.write().insert(name, detail.into());
    }

    pub fn clear_alarm(&self, name: &'static str) {
        self.alarms.write().remove(name);
    }

    /// `alarm NAME: detail` lines, one per raised alarm.
    pub fn alarm_lines(&self) -> String {
        self.alarms
            .read()
            .iter()
            .map(|(name, detail)| format!("alarm {name}: {detail}\n"))
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.held.read().is_none()
    }

    pub fn reason(&self) -> String {
        match &*self.held.read() {
            Some(held) => held.clone(),
            None => self.reason.read().clone(),
        }
    }
}

/// Installs the process-wide Prometheus recorder with explicit histogram
/// buckets for every histogram tessera records.
pub fn install_metrics_recorder(
    buckets: Vec<(&'static str, Vec<f64>)>,
) -> Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), &buckets)
            .map_err(|e| Error::Setup(format!("metric buckets for {name}: {e}")))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| Error::Setup(format!("cannot install the metrics recorder: {e}")))?;
    metrics::describe_gauge!(
        READY,
        "1 while the process can serve (its /ready answers 200), else 0"
    );
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[derive(Clone)]
struct StatusState {
    metrics: Option<PrometheusHandle>,
    /// `/metrics` answers over TLS only.
    metrics_tls: bool,
    readiness: Arc<Readiness>,
}

async fn metrics(
    State(s): State<StatusState>,
    ConnectInfo(peer): ConnectInfo<StatusPeer>,
) -> (StatusCode, String) {
    if s.metrics_tls && !peer.tls {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served over TLS only (metrics_tls): scrape https:// with the \
             cluster's ca.crt\n"
                .into(),
        );
    }
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n".into(),
        ),
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(s): State<StatusState>) -> (StatusCode, String) {
    let alarms = s.readiness.alarm_lines();
    if s.readiness.is_ready() {
        (StatusCode::OK, format!("ready\n{alarms}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n{alarms}", s.readiness.reason()),
        )
    }
}

/// `/fault/clock` in a test build; nothing in a real one.
fn clock_fault_routes() -> Router<StatusState> {
    if !crate::build_info::FAILPOINTS {
        return Router::new();
    }
    async fn show() -> String {
        format!("{}\n", crate::clock::describe())
    }
    async fn set(body: String) -> (StatusCode, String) {
        let applied = body
            .parse::<crate::clock::ClockFault>()
            .and_then(crate::clock::apply);
        match applied {
            Ok(()) => {
                let now = crate::clock::describe();
                tracing::warn!(fault = body.trim(), clock = %now, "clock skewed");
                (StatusCode::OK, format!("{now}\n"))
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }
    Router::new().route("/fault/clock", get(show).put(set))
}

/// One connection of the status port: where from, and whether TLS.
#[derive(Clone, Debug)]
pub struct StatusPeer {
    pub remote: Option<std::net::SocketAddr>,
    pub tls: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, StatusListener>>
    for StatusPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, StatusListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The status port's connections ([`Security::status_incoming`]: TLS or
/// plaintext, by what the client sends first), as an axum listener.
pub struct StatusListener {
    incoming: Incoming,
    local: std::net::SocketAddr,
}

impl axum::serve::Listener for StatusListener {
    type Io = Conn;
    type Addr = StatusPeer;

    async fn accept(&mut self) -> (Conn, StatusPeer) {
        loop {
            match self.incoming.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.connect_info();
                    let addr = StatusPeer {
                        remote: peer.remote,
                        tls: peer.tls,
                    };
                    return (conn, addr);
                }
                Some(Err(_)) => continue,
                // The accept loop ended (the runtime is shutting down).
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<StatusPeer> {
        Ok(StatusPeer {
            remote: Some(self.local),
            tls: false,
        })
    }
}

/// Serves the status endpoints on `listener` until `shutdown` completes,
/// secured as `security` says: `/metrics` over TLS only with
/// `metrics_tls`, `/health` and `/ready` plaintext and over TLS alike.
pub async fn serve(
    listener: tokio::net::TcpListener,
    security: Security,
    metrics_handle: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(
        listener,
        security,
        metrics_handle,
        readiness,
        Router::new(),
        shutdown,
    )
    .await
}

/// [`serve`], plus the process's own `extra` routes (a store's fault
/// endpoints in test builds).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    security: Security,
    metrics_handle: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let local = listener.local_addr().map_err(Error::Io)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(clock_fault_routes())
        .with_state(StatusState {
            metrics: metrics_handle,
            metrics_tls: security.metrics_tls(),
            readiness,
        })
        .merge(extra);
    let listener = StatusListener {
        incoming: security.status_incoming(listener),
        local,
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<StatusPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(Error::Io)
}
