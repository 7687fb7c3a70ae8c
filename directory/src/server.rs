//! The `tessera-directory` process.
//!
//! Start: serve /health, /metrics and /ready (not ready yet) → open RocksDB
//! and start this member's share of the directory group (creating the group
//! on first start, or joining) → serve gRPC (Directory, Raft, health) → run
//! the scheduler → ready once the group has a leader.
//!
//! Stop (SIGTERM or Ctrl-C): not ready → hand leadership to another member
//! (up to `shutdown_grace_ms`) → stop serving → stop the Raft group.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tessera_common::admission::{limit_connections, Admission};
use tessera_common::status::{self, Readiness};
use tessera_multiraft::transport::RaftService;
use tokio::sync::watch;

use crate::config::DirectoryConfig;
use crate::core::Core;
use crate::node::{DirectoryNode, NodeSpec};
use crate::service::DirectoryService;
use crate::{metrics as m, Error, Result};

/// The service admission governs (`[serving]`): the directory's API ...
const GOVERNED: &[&str] = &["/directorypb.Directory/"];
/// ... but for what the stores need to stay in the cluster, split and
/// reach each other (heartbeats, joins, ids, the user table, store
/// addresses), which load never refuses;
/// nor Raft between members and health, which it does not govern.
const NOT_GOVERNED: &[&str] = &[
    "/directorypb.Directory/StoreHeartbeat",
    "/directorypb.Directory/RegionHeartbeat",
    "/directorypb.Directory/PutStore",
    "/directorypb.Directory/AllocIds",
    "/directorypb.Directory/Bootstrap",
    "/directorypb.Directory/IsBootstrapped",
    "/directorypb.Directory/UserTable",
    // Stores resolve each other's addresses for Raft through it.
    "/directorypb.Directory/GetStore",
];

/// Runs a directory member until `shutdown` completes.
pub async fn run(
    cfg: DirectoryConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.validate()?;
    let security =
        tessera_security::Security::from_settings(&cfg.security, tessera_security::Kind::Node)
            .map_err(|e| Error::Config(e.to_string()))?;
    security.spawn_reload();
    let (stop_tx, mut stop) = watch::channel(false);
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
    let status_addr = status_listener.local_addr()?;
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

    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", cfg.data_dir.display())))?;
    tessera_common::engine_failure::refuse_if_failed(&cfg.data_dir)
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut members = cfg.members()?;
    members.insert(cfg.id, cfg.advertise_addr().to_string());
    let node = Arc::new(
        DirectoryNode::start(NodeSpec {
            member_id: cfg.id,
            data_dir: cfg.data_dir.clone(),
            members,
            join: cfg.join,
            raft: cfg.raft_config(),
            rocksdb: cfg.rocks_options(),
            timeout: Duration::from_millis(cfg.request_timeout_ms),
            security: security.clone(),
        })
        .await?,
    );
    // An engine write that fails stops the poller; the member then stops
    // for good (tessera_common::engine_failure).
    let watched = node.clone();
    tokio::spawn(tessera_common::engine_failure::watch(
        cfg.data_dir.clone(),
        move || watched.engine_failure(),
    ));
    let core = Core::new(
        node.clone(),
        cfg.schedule_config(),
        crate::join::JoinSettings {
            token: cfg.join_token()?,
            data_dir: cfg.data_dir.clone(),
        },
    );

    crate::users::spawn_refresh(core.clone(), security.users());

    let listener = tokio::net::TcpListener::bind(&cfg.listen_addr)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot bind the listen address {}: {e}",
                cfg.listen_addr
            ))
        })?;
    let listen_addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let raft = RaftService::new(cfg.id, 0, node.mailbox().clone(), node.snap_mgr().clone())
        .with_stop(stop.clone())
        .into_server();
    let directory = DirectoryService::new(core.clone()).into_server();
    let mut server_stop = stop.clone();
    let server = tokio::spawn(
        cfg.serving
            .server()
            .layer(security.guard())
            .layer(Admission::new(&cfg.serving, GOVERNED, NOT_GOVERNED))
            .add_service(health_service)
            .add_service(raft)
            .add_service(directory)
            .serve_with_incoming_shutdown(
                limit_connections(security.incoming(listener), &cfg.serving),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            ),
    );
    tracing::info!(member = cfg.id, %listen_addr, advertise = cfg.advertise_addr(), "serving the directory");

    // The scheduler (and readiness) follow leadership.
    let scheduler_core = core.clone();
    let scheduler_readiness = readiness.clone();
    let interval = cfg.schedule_config().interval;
    let scheduler = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let info = scheduler_core.node.raft_info().await.ok().flatten();
            let leading = info.as_ref().is_some_and(|i| i.is_leader);
            metrics::gauge!(m::IS_LEADER).set(if leading { 1.0 } else { 0.0 });
            match info.and_then(|i| i.leader) {
                Some(_) => scheduler_readiness.set_ready(),
                None => scheduler_readiness.set_not_ready("the directory group has no leader"),
            }
            if leading {
                let started = std::time::Instant::now();
                if let Err(e) = scheduler_core.schedule_once().await {
                    tracing::debug!(error = %e, "scheduling round failed");
                }
                let took = started.elapsed();
                metrics::histogram!(m::SCHEDULE_ROUND_SECONDS).record(took.as_secs_f64());
                tokio::time::sleep(crate::round::pause_after(took)).await;
            }
        }
    });
    health
        .set_serving::<tessera_proto::directorypb::directory_server::DirectoryServer<DirectoryService>>()
        .await;

    let _ = stop.wait_for(|s| *s).await;
    readiness.set_not_ready("shutting down");
    scheduler.abort();
    node.transfer_leadership_away(Duration::from_millis(cfg.shutdown_grace_ms))
        .await;
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        abort.abort();
    }
    let _ = status_task.await;
    drop(core);
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown(),
        Err(node) => {
            let _ = node
                .mailbox()
                .send(tessera_multiraft::mailbox::PollerMsg::Shutdown);
        }
    }
    tracing::info!(member = cfg.id, "directory member stopped");
    Ok(())
}
