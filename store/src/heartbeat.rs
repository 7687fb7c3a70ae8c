//! Reports to the directory: the store's own state every interval, and for
//! every region this store leads, the region's metadata, leader, size,
//! split siblings and followers' progress — on a long-lived stream whose
//! replies carry operator steps (see [`crate::operator`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tessera_multiraft::engine::Cf;
use tessera_multiraft::keys as raft_keys;
use tessera_multiraft::router::RegionInfo;
use tessera_proto::directorypb::{PeerProgress, RegionReport, StoreStats};

use crate::directory_client::DirectoryClient;
use crate::node::StoreNode;
use crate::{operator, Result};

/// The store's own report.
pub async fn send_store_heartbeat(
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
        .await
}

/// What a leader reports about one region.
pub fn region_report(node: &StoreNode, info: RegionInfo) -> RegionReport {
    let r = &info.region;
    let size = node
        .engine()
        .approximate_size(
            Cf::Default,
            &r.start_key,
            &raft_keys::data_range_end(&r.end_key),
        )
        .unwrap_or(0);
    let down_peers = info
        .progress
        .iter()
        .filter(|p| !p.recent_active)
        .filter_map(|p| r.peers.iter().find(|q| q.id == p.peer_id).copied())
        .collect();
    RegionReport {
        approximate_size_bytes: size,
        leader: info.leader,
        term: info.term,
        approximate_keys: 0,
        down_peers,
        split_siblings: info.split_siblings.clone(),
        progress: info
            .progress
            .iter()
            .map(|p| PeerProgress {
                peer_id: p.peer_id,
                matched: p.matched,
                recent_active: p.recent_active,
            })
            .collect(),
        region: Some(info.region),
    }
}

/// Reports every `interval` until the node's poller stops, reconnecting the
/// region heartbeat stream whenever it ends (the directory leader changed).
/// Errors are logged and retried: a directory outage must not stop a store
/// from serving.
pub async fn run_heartbeats(
    node: Arc<StoreNode>,
    directory: Arc<dyn DirectoryClient>,
    interval: Duration,
    capacity: impl Fn() -> (u64, u64) + Send + 'static,
) {
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::default();
    // Regions whose operator step just finished: reported at once, so the
    // directory sees the new epoch and sends the next step without waiting
    // for the next interval.
    let (stepped_tx, mut stepped) = tokio::sync::mpsc::unbounded_channel::<u64>();
    loop {
        let mut stream = match directory.region_heartbeats().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the region heartbeat stream");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = send_store_heartbeat(&node, directory.as_ref(), capacity()).await {
                        if matches!(e, crate::Error::Shutdown) {
                            return;
                        }
                        tracing::warn!(error = %e, "store heartbeat failed");
                    }
                    let Ok(regions) = node.regions().await else { return };
                    let mut broken = false;
                    for info in regions.into_iter().filter(|i| i.is_leader) {
                        if stream.reports.send(region_report(&node, info)).await.is_err() {
                            broken = true;
                            break;
                        }
                    }
                    if broken {
                        break;
                    }
                }
                reply = stream.replies.next() => match reply {
                    Some(Ok(resp)) => {
                        let region_id = resp.region_id;
                        if !busy.lock().insert(region_id) {
                            continue;
                        }
                        let (admin, busy) = (node.admin().clone(), busy.clone());
                        let stepped_tx = stepped_tx.clone();
                        tokio::spawn(async move {
                            operator::execute(&admin, resp).await;
                            busy.lock().remove(&region_id);
                            let _ = stepped_tx.send(region_id);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "region heartbeat stream ended");
                        break;
                    }
                    None => break,
                },
                Some(region_id) = stepped.recv() => {
                    // Only a leader reports; after a transfer, the new
                    // leader's store does.
                    let Ok(info) = node.admin().region_info(region_id).await else { continue };
                    if info.is_leader
                        && stream.reports.send(region_report(&node, info)).await.is_err()
                    {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
    }
}
