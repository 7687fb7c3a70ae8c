//! The `tessera-router` process.
//!
//! Start: serve /health, /metrics and /ready (not ready yet) → serve the
//! public Router service over gRPC (with the gRPC health service) → ready
//! while the directory answers and the cluster is bootstrapped (checked
//! every second; the router itself keeps no state).
//!
//! Stop (SIGTERM or Ctrl-C): not ready → stop accepting requests and let
//! in-flight ones finish (up to `shutdown_grace_ms`) → exit.

use std::future::Future;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tessera_common::admission::{limit_connections, Admission};
use tessera_common::status::{self, Readiness};
use tessera_proto::directorypb::IsBootstrappedRequest;
use tessera_proto::routerpb::router_server::RouterServer;
use tessera_security::{Kind, Security};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::service::RouterService;
use crate::{Error, Result, Router};

const READY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The service admission governs (`[serving]`); health is never refused.
const GOVERNED: &[&str] = &["/routerpb.Router/"];

/// Runs a router until `shutdown` completes.
pub async fn run(
    cfg: ServerConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.validate()?;
    let security = Security::from_settings(&cfg.security, Kind::Router)
        .map_err(|e| Error::Config(e.to_string()))?;
    security.spawn_reload();
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let readiness = Readiness::new("starting");
    let status_listener = tokio::net::TcpListener::bind(&cfg.status_addr)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot bind the status address {}: {e}",
                cfg.status_addr
            ))
        })?;
    let status_addr = status_listener
        .local_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut status_stop = stop.clone();
    let status_task = tokio::spawn(status::serve(
        status_listener,
        security.clone(),
        metrics,
        readiness.clone(),
        async move {
            let _ = status_stop.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(%status_addr, "serving /metrics, /health and /ready");

    let router = Router::new(cfg.router_config(security.clone()))?;
    tessera_routing::users::spawn_refresh(cfg.directory.clone(), &security)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen_addr)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot bind the listen address {}: {e}",
                cfg.listen_addr
            ))
        })?;
    let listen_addr = listener
        .local_addr()
        .map_err(|e| Error::Config(e.to_string()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut server_stop = stop.clone();
    let mut server = tokio::spawn(
        cfg.serving
            .server()
            .layer(security.guard())
            .layer(Admission::new(&cfg.serving, GOVERNED, &[]))
            .add_service(health_service)
            .add_service(RouterService::new(router.clone()).into_server())
            .serve_with_incoming_shutdown(
                limit_connections(security.incoming(listener), &cfg.serving),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            ),
    );
    tracing::info!(%listen_addr, directory = ?cfg.directory, tls = security.is_tls(), "serving the Router service");

    // Ready while the directory answers and the cluster exists.
    let mut check_stop = stop.clone();
    let check_readiness = readiness.clone();
    let checker = tokio::spawn(async move {
        loop {
            let answer = router
                .directory()
                .call("is bootstrapped", |mut c| async move {
                    c.is_bootstrapped(IsBootstrappedRequest {}).await
                })
                .await;
            let serving = match answer {
                Ok(r) if r.bootstrapped => {
                    check_readiness.set_ready();
                    true
                }
                Ok(_) => {
                    check_readiness.set_not_ready("the cluster is not bootstrapped yet");
                    false
                }
                Err(e) => {
                    check_readiness.set_not_ready(format!("the directory does not answer: {e}"));
                    false
                }
            };
            if serving {
                health.set_serving::<RouterServer<RouterService>>().await;
            } else {
                health
                    .set_not_serving::<RouterServer<RouterService>>()
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(READY_CHECK_INTERVAL) => {}
                _ = check_stop.wait_for(|s| *s) => break,
            }
        }
    });

    let mut stopped = stop.clone();
    let _ = stopped.wait_for(|s| *s).await;
    readiness.set_not_ready("shutting down");
    checker.abort();
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the gRPC server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server task failed"),
        Err(_) => {
            tracing::warn!(
                ?grace,
                "requests still running after the grace period; stopping"
            );
            server.abort();
        }
    }
    let _ = status_task.await;
    tracing::info!("router stopped");
    Ok(())
}
