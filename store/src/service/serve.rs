//! Serving the store's gRPC API: the one place that puts the services
//! together — `Raft` (messages and snapshots from other stores), `Kv`,
//! `StoreAdmin` and gRPC health — on one listener. The store process
//! (`server.rs`) and the in-process cluster harness (`tessera-testkit`)
//! both serve through [`spawn`], so tests run the server a user runs.
//! Admission ([`tessera_common::admission`]) governs the `Kv` service:
//! Raft, snapshots, administration and health are never refused for load.

use tessera_common::admission::{limit_connections, Admission, ServingLimits};
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

/// How [`spawn`] serves, besides the node itself.
pub struct Serving<'a> {
    pub cluster_id: u64,
    pub snap_mgr: SnapManager,
    /// Cuts Raft traffic from blocked stores (fault endpoints and test
    /// harnesses only; the default blocks nothing).
    pub net_faults: NetFaults,
    /// TLS and the per-RPC access check.
    pub security: &'a tessera_security::Security,
    /// The quotas of admission.
    pub limits: &'a ServingLimits,
}

/// The client-facing service admission governs at a store.
const GOVERNED: &[&str] = &["/kvpb.Kv/"];
/// Governed request by request inside the stream, not as one request.
const STREAMS: &[&str] = &["/kvpb.Kv/BatchCommands"];

/// Serves `node`'s gRPC API on `listener` as `serving` says, until `stop`
/// turns true.
pub fn spawn(
    listener: tokio::net::TcpListener,
    node: &StoreNode,
    serving: Serving<'_>,
    stop: watch::Receiver<bool>,
) -> GrpcServer {
    let Serving {
        cluster_id,
        snap_mgr,
        net_faults,
        security,
        limits,
    } = serving;
    let (health, health_service) = tonic_health::server::health_reporter();
    let raft = RaftService::new(
        node.store_id(),
        cluster_id,
        node.mailbox().clone(),
        snap_mgr,
    )
    .with_faults(net_faults)
    .with_space(node.space().clone())
    .with_stop(stop.clone())
    .into_server();
    let admission = Admission::new(limits, GOVERNED, STREAMS);
    let kv = KvService::new(node.kv().clone())
        .with_admission(admission.clone())
        .with_stop(stop.clone())
        .into_server();
    let admin = AdminService::new(node.admin().clone()).into_server();
    let mut stop = stop;
    let task = tokio::spawn(
        limits
            .server()
            .layer(security.guard())
            .layer(admission)
            .add_service(health_service)
            .add_service(raft)
            .add_service(kv)
            .add_service(admin)
            .serve_with_incoming_shutdown(
                limit_connections(security.incoming(listener), limits),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    );
    GrpcServer { health, task }
}
