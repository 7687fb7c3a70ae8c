//! Finding peers that were removed from their region without learning it.
//!
//! A removed peer normally hears of its removal (it applies the change, or
//! the leader sends it a tombstone message). If it was cut off at the time,
//! it lingers: it never hears from a leader again and keeps answering
//! requests with stale leader hints. Every `interval` this checker asks the
//! directory about the regions where this store's peer does not lead; a
//! peer that the directory's newer membership no longer lists is destroyed,
//! leaving a tombstone.

use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::region;
use tessera_proto::directorypb::GetRegionByIdRequest;
use tessera_routing::directory::DirectoryConn;

use crate::node::StoreNode;

/// Runs the check every `interval` until the store stops.
pub async fn run(node: Arc<StoreNode>, directory: Arc<DirectoryConn>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(infos) = node.regions().await else {
            return;
        };
        for info in infos.into_iter().filter(|i| !i.is_leader && i.initialized) {
            let region_id = info.region.id;
            let resp = directory
                .call("get region", |mut c| async move {
                    c.get_region_by_id(GetRegionByIdRequest { region_id }).await
                })
                .await;
            let Ok(resp) = resp else { continue };
            let Some(known) = resp.region.and_then(|r| r.region) else {
                continue;
            };
            let local = region::epoch(&info.region);
            let newer = region::epoch(&known);
            let still_member = known.peers.iter().any(|p| p.id == info.peer_id);
            if newer.conf_ver > local.conf_ver && !still_member {
                tracing::info!(
                    region_id,
                    peer_id = info.peer_id,
                    "this peer was removed from its region; destroying it"
                );
                if let Err(e) = node.mailbox().destroy_removed_peer(region_id, newer).await {
                    tracing::warn!(region_id, error = %e, "cannot destroy a stale peer");
                }
            }
        }
    }
}
