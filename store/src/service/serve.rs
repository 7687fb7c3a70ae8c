//! Serving the store's gRPC API: the one place that puts the services
//! together — `Raft` (messages and snapshots from other stores), `Kv`,
//! `StoreAdmin` and gRPC health — on one listener. The store process
//! (`server.rs`) and the in-process cluster harness (`tessera-testkit`)
//! both serve through [`spawn`], so tests run the server a user runs.

use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::transport::{NetFaults, RaftService};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use super::{AdminService, KvService};
use crate::StoreNode;

/// What [`spawn`] started.
pub struct GrpcServer {
    /// Marks the Kv service serving or not in gRPC health.
    pub health: HealthReporter,
    /// The server; it ends once `stop` turns true and in-flight calls end.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves `node`'s gRPC API on `listener`, secured by `security` (TLS and
/// the per-RPC access check), until `stop` turns true.
/// `net_faults` cuts Raft traffic from blocked stores (fault endpoints and
/// test harnesses only; the default blocks nothing).
pub fn spawn(
    listener: tokio::net::TcpListener,
    node: &StoreNode,
    cluster_id: u64,
    snap_mgr: SnapManager,
    net_faults: NetFaults,
    security: &tessera_security::Security,
    stop: watch::Receiver<bool>,
) -> GrpcServer {
    let (health, health_service) = tonic_health::server::health_reporter();
    let raft = RaftService::new(
        node.store_id(),
        cluster_id,
        node.mailbox().clone(),
        snap_mgr,
    )
    .with_faults(net_faults)
    .with_stop(stop.clone())
    .into_server();
    let kv = KvService::new(node.kv().clone()).into_server();
    let admin = AdminService::new(node.admin().clone()).into_server();
    let mut stop = stop;
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(security.guard())
            .add_service(health_service)
            .add_service(raft)
            .add_service(kv)
            .add_service(admin)
            .serve_with_incoming_shutdown(security.incoming(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
    );
    GrpcServer { health, task }
}
