//! What a store asks of the directory, as a trait.
//!
//! The store learns the cluster's id, registers itself, allocates ids (for new regions and peers),
//! bootstraps the cluster's first region, looks up other stores' addresses
//! and reports its own and its regions' state in heartbeats.
//!
//! The store process uses [`GrpcDirectoryClient`], the gRPC client of the
//! real `tessera-directory` service; the in-process cluster harness
//! (`tessera-testkit`) brings an in-memory one for tests.

mod grpc;

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tessera_multiraft::transport::AddressResolver;
use tessera_proto::directorypb::{RegionHeartbeatResponse, RegionReport, StoreStats};
use tessera_proto::metapb::{Region, Store};

use crate::Result;
pub use grpc::GrpcDirectoryClient;

#[tonic::async_trait]
pub trait DirectoryClient: Send + Sync + 'static {
    /// Whether the cluster has its first region.
    async fn is_bootstrapped(&self) -> Result<bool>;
    /// Creates the cluster: `store` is the first store, `region` the first
    /// region (the whole key space, one peer on `store`). Fails if the
    /// cluster is already bootstrapped.
    async fn bootstrap(&self, store: Store, region: Region) -> Result<()>;
    /// `count` fresh ids, unique in the cluster (stores, regions, peers).
    async fn alloc_ids(&self, count: u32) -> Result<Vec<u64>>;
    /// The cluster's id (an error until the directory has chosen it).
    async fn cluster_id(&self) -> Result<u64>;
    /// Registers this store, or updates its address and labels; later
    /// heartbeats carry the registration's cluster id.
    async fn register(&self, registration: Registration) -> Result<()>;
    async fn get_store(&self, store_id: u64) -> Result<Store>;
    /// The directory's view of a region (`None`: it does not know it).
    async fn get_region(&self, region_id: u64) -> Result<Option<Region>>;
    /// Sends the store's heartbeat; returns the regions this store leads
    /// that the directory has an operator step for, to report at once.
    async fn store_heartbeat(&self, stats: StoreStats) -> Result<Vec<u64>>;
    /// Opens the stream of region heartbeats with the directory leader:
    /// reports go out through `reports`, operator steps come back on
    /// `replies`. The stream ends when the leader changes; open another.
    async fn region_heartbeats(&self) -> Result<RegionHeartbeatStream>;
}

/// What a store registers with (see `tessera-directory`'s join process).
#[derive(Clone, Debug)]
pub struct Registration {
    pub store: Store,
    pub cluster_id: u64,
    /// The store's own secret (`StoreIdent`).
    pub secret: String,
    /// The cluster's join token; needed for the first registration only.
    pub join_token: Option<String>,
}

/// Both ends of a region heartbeat stream.
pub struct RegionHeartbeatStream {
    pub reports: tokio::sync::mpsc::Sender<RegionReport>,
    pub replies: BoxStream<'static, Result<RegionHeartbeatResponse>>,
}

/// Resolves store addresses through the directory (for the gRPC transport).
pub struct DirectoryResolver {
    directory: Arc<dyn DirectoryClient>,
}

impl DirectoryResolver {
    pub fn new(directory: Arc<dyn DirectoryClient>) -> Self {
        DirectoryResolver { directory }
    }
}

impl AddressResolver for DirectoryResolver {
    fn resolve(&self, store_id: u64) -> BoxFuture<'static, tessera_multiraft::Result<String>> {
        let directory = self.directory.clone();
        Box::pin(async move {
            let store = directory
                .get_store(store_id)
                .await
                .map_err(|e| tessera_multiraft::Error::Transport(e.to_string()))?;
            if store.address.is_empty() {
                return Err(tessera_multiraft::Error::Transport(format!(
                    "store {store_id} has no address"
                )));
            }
            Ok(store.address)
        })
    }
}
