//! The `tessera-store` process: everything `main` starts, in order, and
//! how it stops.
//!
//! Start: open RocksDB → serve /health, /metrics and /ready (not ready yet)
//! → find the directory and learn this store's id (retrying until it
//! answers) → start the poller with every local region → serve gRPC (Kv,
//! Raft, health) → bootstrap the cluster if nobody has → heartbeats → ready.
//!
//! Stop (SIGTERM or Ctrl-C): not ready → hand every leadership to another
//! store (up to `shutdown_grace_ms`) → stop serving → stop the poller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tessera_multiraft::engine::{Engine, RocksEngine};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::GrpcTransport;
use tessera_security::{Kind, Security};
use tokio::sync::watch;

use crate::bootstrap::{self, StoreDescriptor};
use crate::config::StoreConfig;
use crate::directory_client::{DirectoryClient, DirectoryResolver, GrpcDirectoryClient};
use crate::fault::{self, FaultHandles};
use crate::heartbeat;
use crate::service::KvService;
use crate::split_check;

/// How often peers that do not lead ask whether they are still members.
use crate::{Error, Result, StoreNode};
use tessera_common::status::{self, Readiness};

const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Retries `f` every second until it succeeds, fails for good
/// ([`Error::is_permanent`]: a refusal, another cluster) or `stop` fires.
async fn until_ok<T, F, Fut>(
    what: &str,
    readiness: &Readiness,
    stop: &mut watch::Receiver<bool>,
    mut f: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                readiness.set_not_ready(format!("{what}: {e}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return Err(Error::Shutdown),
        }
    }
}

/// Runs a store until `shutdown` completes.
pub async fn run(
    cfg: StoreConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    cfg.validate()?;
    let security = Security::from_settings(&cfg.security, Kind::Node)
        .map_err(|e| Error::Config(e.to_string()))?;
    security.spawn_reload();
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::Config(format!("cannot create {}: {e}", cfg.data_dir.display())))?;
    tessera_common::engine_failure::refuse_if_failed(&cfg.data_dir)
        .map_err(|e| Error::Engine(e.to_string()))?;
    let data_dir = cfg.data_dir.clone();
    let rocks = cfg.rocks_options();
    let engine: Arc<dyn Engine> = Arc::new(
        tokio::task::spawn_blocking(move || RocksEngine::open(&data_dir, &rocks))
            .await
            .map_err(|e| Error::Engine(e.to_string()))??,
    );

    // Fault injection exists only in `failpoints` builds (see fault.rs).
    let faults = FaultHandles::default();
    fault::arm_from_env().map_err(Error::Config)?;

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
    let status_task = tokio::spawn(status::serve_with(
        status_listener,
        security.clone(),
        metrics,
        readiness.clone(),
        fault::routes(faults.clone()),
        async move {
            let _ = status_stop.wait_for(|s| *s).await;
        },
    ));
    tracing::info!(%status_addr, "serving /metrics, /health and /ready");

    let directory: Arc<dyn DirectoryClient> = Arc::new(GrpcDirectoryClient::new(
        cfg.directory.clone(),
        Duration::from_secs(5),
        security.clone(),
    )?);
    tessera_routing::users::spawn_refresh(cfg.directory.clone(), &security)
        .map_err(|e| Error::Config(e.to_string()))?;
    let me = StoreDescriptor {
        address: cfg.advertise_addr().to_string(),
        status_address: status_addr.to_string(),
        labels: cfg.labels.clone().into_iter().collect(),
    };
    readiness.set_not_ready(format!(
        "waiting for the directory at {}",
        cfg.directory.join(", ")
    ));
    let join_token = cfg.join_token()?;
    let joined = match until_ok("joining the cluster", &readiness, &mut stop, || {
        bootstrap::join(&engine, directory.as_ref(), &me, join_token.as_deref())
    })
    .await
    {
        Ok(joined) => joined,
        Err(Error::Shutdown) => {
            // Stopped before joining: nothing to hand over.
            let _ = status_task.await;
            tracing::info!("stopped before joining a cluster");
            return Ok(());
        }
        Err(e) => return Err(e),
    };

    let store_id = joined.store_id;
    let resolver: Arc<DirectoryResolver> = Arc::new(DirectoryResolver::new(directory.clone()));
    let runtime = tokio::runtime::Handle::current();
    let snap_mgr = SnapManager::new(cfg.data_dir.join("snap"))?;
    let mut node_cfg = cfg.node_config();
    node_cfg.kv.unsafe_reads = faults.unsafe_reads.clone();
    let net_faults = faults.net.clone();
    let node = Arc::new(StoreNode::start(
        store_id,
        engine.clone(),
        snap_mgr.clone(),
        directory.clone(),
        &node_cfg,
        |mailbox| {
            Box::new(
                GrpcTransport::new(
                    store_id,
                    joined.cluster_id,
                    runtime,
                    resolver.clone(),
                    security.clone(),
                    mailbox.clone(),
                )
                .with_faults(net_faults),
            )
        },
    )?);
    node.admin()
        .set_target_leaders(Arc::new(crate::merge::GrpcTargetLeaders::new(
            resolver.clone(),
            security.clone(),
        )));
    // An engine write that fails stops the poller; the process then stops
    // for good (tessera_common::engine_failure).
    let poller_stats = node.stats().clone();
    tokio::spawn(tessera_common::engine_failure::watch(
        cfg.data_dir.clone(),
        move || poller_stats.engine_failure.get().cloned(),
    ));
    // Free space: the reserve file and the NOSPACE state (disk_space.rs).
    let disk = crate::disk_space::DiskMonitor::start(
        store_id,
        &cfg.data_dir,
        &cfg.disk,
        node.space().clone(),
        readiness.clone(),
    )?;
    // A poller stuck in one round (a stalled disk) fails /ready.
    crate::watchdog::spawn(
        store_id,
        node.stats().clone(),
        readiness.clone(),
        Duration::from_millis(cfg.disk.stall_timeout_ms),
    )?;

    let listener = tokio::net::TcpListener::bind(&cfg.listen_addr)
        .await
        .map_err(|e| {
            Error::Config(format!(
                "cannot bind the listen address {}: {e}",
                cfg.listen_addr
            ))
        })?;
    let listen_addr = listener.local_addr()?;
    let crate::service::serve::GrpcServer {
        health,
        task: server,
    } = crate::service::serve::spawn(
        listener,
        &node,
        crate::service::serve::Serving {
            cluster_id: joined.cluster_id,
            snap_mgr,
            net_faults: faults.net.clone(),
            security: &security,
            limits: &cfg.serving,
        },
        stop.clone(),
    );
    tracing::info!(store_id, %listen_addr, advertise = cfg.advertise_addr(), "serving Kv and Raft");

    match until_ok("bootstrapping the cluster", &readiness, &mut stop, || {
        bootstrap::bootstrap_if_needed(&node, directory.as_ref(), &me)
    })
    .await
    {
        Ok(()) | Err(Error::Shutdown) => {}
        Err(e) => return Err(e),
    }

    let split_checker = tokio::spawn(split_check::run(
        node.admin().clone(),
        node_cfg.split_check.clone(),
    ));
    let heartbeats = tokio::spawn(heartbeat::run_heartbeats(
        node.clone(),
        directory.clone(),
        Duration::from_millis(cfg.heartbeat_interval_ms),
        Duration::from_millis(cfg.peer_down_after_ms),
        cfg.hibernated_report_interval_ms / cfg.heartbeat_interval_ms.max(1),
        move || disk.usage(),
    ));
    health
        .set_serving::<tessera_proto::kvpb::kv_server::KvServer<KvService>>()
        .await;
    readiness.set_ready();
    tracing::info!(store_id, "store is ready");

    let _ = stop.wait_for(|s| *s).await;
    readiness.set_not_ready("shutting down");
    health
        .set_not_serving::<tessera_proto::kvpb::kv_server::KvServer<KvService>>()
        .await;
    let left = node
        .transfer_leaders_away(Duration::from_millis(cfg.shutdown_grace_ms))
        .await
        .unwrap_or(usize::MAX);
    if left == 0 {
        tracing::info!("handed every leadership to another store");
    } else {
        tracing::warn!(leaders = left, "stopping while still leading some regions");
    }
    heartbeats.abort();
    split_checker.abort();
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        abort.abort();
    }
    let _ = status_task.await;
    match Arc::try_unwrap(node) {
        Ok(node) => node.shutdown(),
        Err(node) => {
            // A request still holds the node; stop the poller through it.
            let _ = node
                .mailbox()
                .send(tessera_multiraft::mailbox::PollerMsg::Shutdown);
        }
    }
    tracing::info!(store_id, "store stopped");
    Ok(())
}
