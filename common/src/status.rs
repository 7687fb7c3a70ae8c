//! The HTTP status server of every tessera process: `/metrics` (Prometheus text format),
//! `/health` (the process is alive: always 200) and `/ready` (it can serve:
//! 200, or 503 with the reason). Readiness never waits on a quorum; it is a
//! flag the store flips as it starts and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

use crate::{Error, Result};

/// 1 while the process can serve, 0 otherwise.
pub const READY: &str = "tessera_ready";

/// Whether the process can serve, and if not, why.
pub struct Readiness {
    ready: AtomicBool,
    reason: RwLock<String>,
}

impl Readiness {
    pub fn new(reason: impl Into<String>) -> Arc<Self> {
        metrics::gauge!(READY).set(0.0);
        Arc::new(Readiness {
            ready: AtomicBool::new(false),
            reason: RwLock::new(reason.into()),
        })
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        metrics::gauge!(READY).set(1.0);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.write() = reason.into();
        self.ready.store(false, Ordering::SeqCst);
        metrics::gauge!(READY).set(0.0);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> String {
        self.reason.read().clone()
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
    readiness: Arc<Readiness>,
}

async fn metrics(State(s): State<StatusState>) -> (StatusCode, String) {
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
    if s.readiness.is_ready() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", s.readiness.reason()),
        )
    }
}

/// Serves the status endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics_handle: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, metrics_handle, readiness, Router::new(), shutdown).await
}

/// [`serve`], plus the process's own `extra` routes (a store's fault
/// endpoints in test builds).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    metrics_handle: Option<PrometheusHandle>,
    readiness: Arc<Readiness>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(StatusState {
            metrics: metrics_handle,
            readiness,
        })
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Io)
}
