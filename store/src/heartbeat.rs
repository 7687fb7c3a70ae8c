//! Periodic reports to the directory: the store's own state and, for every
//! region this store leads, the region's metadata and leader.

use std::sync::Arc;
use std::time::Duration;

use tessera_proto::directorypb::{RegionReport, StoreStats};

use crate::directory_client::DirectoryClient;
use crate::node::StoreNode;
use crate::Result;

/// Sends one round of heartbeats.
pub async fn send_heartbeats(
    node: &StoreNode,
    directory: &dyn DirectoryClient,
    capacity: (u64, u64),
) -> Result<()> {
    let regions = node.regions().await?;
    let leaders = regions.iter().filter(|r| r.is_leader).count();
    let (capacity_bytes, available_bytes) = capacity;
    directory
        .store_heartbeat(StoreStats {
            store_id: node.store_id(),
            capacity_bytes,
            available_bytes,
            used_bytes: capacity_bytes.saturating_sub(available_bytes),
            region_count: regions.len() as u32,
            leader_count: leaders as u32,
            uptime_seconds: node.uptime().as_secs(),
        })
        .await?;
    for info in regions.into_iter().filter(|r| r.is_leader) {
        directory
            .region_heartbeat(RegionReport {
                region: Some(info.region),
                leader: info.leader,
                term: info.term,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Sends heartbeats every `interval` until the node's poller stops. Errors
/// are logged and retried next time: a directory outage must not stop a
/// store from serving.
pub async fn run_heartbeats(
    node: Arc<StoreNode>,
    directory: Arc<dyn DirectoryClient>,
    interval: Duration,
    capacity: impl Fn() -> (u64, u64) + Send + 'static,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match send_heartbeats(&node, directory.as_ref(), capacity()).await {
            Ok(()) => {}
            Err(crate::Error::Shutdown) => return,
            Err(e) => tracing::warn!(error = %e, "heartbeat to the directory failed"),
        }
    }
}
