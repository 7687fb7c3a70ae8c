//! The split checker: keeps regions near a target size.
//!
//! Every `interval` it looks at the regions this store leads and that are
//! awake (a hibernating region has taken no write since it slept). A region is
//! measured when it has grown by an eighth of the split size since it was
//! last measured (by the bytes its commands carried) or, the first time,
//! when the engine's estimate says it may be large. Measuring scans the
//! region (up to twice the split size); if it holds more than the split
//! size, the region is split at its middle key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_multiraft::engine::Cf;
use tessera_multiraft::state_keys as raft_keys;

use crate::admin::AdminApi;
use crate::node::{turn, Turn};
use crate::split;
use crate::Error;

#[derive(Clone, Debug)]
pub struct SplitCheckConfig {
    /// Regions above this many bytes are split.
    pub region_split_size_bytes: u64,
    pub interval: Duration,
}

impl Default for SplitCheckConfig {
    fn default() -> Self {
        SplitCheckConfig {
            region_split_size_bytes: 96 * 1024 * 1024,
            interval: Duration::from_secs(10),
        }
    }
}

/// Every this many passes the checker forgets the regions it no longer
/// leads.
const FORGET_EVERY: u64 = 30;

/// Runs the checker until the store stops.
pub async fn run(api: Arc<AdminApi>, cfg: SplitCheckConfig) {
    let mut measured_at: HashMap<u64, u64> = HashMap::new();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let step = (cfg.region_split_size_bytes / 8).max(1);
    let mut passes = 0u64;
    loop {
        ticker.tick().await;
        // A hibernating region took no write since it fell asleep: it is
        // measured again once a write wakes it.
        let picked = api
            .mailbox()
            .inspect_awake_where(|b| b.is_leader && b.initialized && !b.hibernating)
            .await;
        let candidates = match turn(picked.map_err(crate::Error::from), "split checker") {
            Turn::Go((candidates, _)) => candidates,
            Turn::Skip => continue,
            Turn::Stop => return,
        };
        passes += 1;
        if passes.is_multiple_of(FORGET_EVERY) {
            // Forget the regions no longer led here (a hibernating one
            // keeps its measure: it is not measured again on waking).
            let led = api.mailbox().inspect_where(|b| b.is_leader).await;
            match turn(led.map_err(crate::Error::from), "split checker") {
                Turn::Go((led, _)) => {
                    let here: std::collections::HashSet<u64> =
                        led.iter().map(|i| i.region.id).collect();
                    measured_at.retain(|id, _| here.contains(id));
                }
                Turn::Skip => {}
                Turn::Stop => return,
            }
        }
        for info in candidates {
            let region = info.region;
            let due = match measured_at.get(&region.id) {
                Some(&at) => info.applied_bytes >= at + step,
                None => {
                    let estimate = api
                        .engine()
                        .approximate_size(
                            Cf::Default,
                            &region.start_key,
                            &raft_keys::data_range_end(&region.end_key),
                        )
                        .unwrap_or(0);
                    estimate >= cfg.region_split_size_bytes / 2 || info.applied_bytes >= step
                }
            };
            if !due {
                continue;
            }
            measured_at.insert(region.id, info.applied_bytes);
            let engine = api.engine().clone();
            let limit = cfg.region_split_size_bytes.saturating_mul(2);
            let r = region.clone();
            let measured = tokio::task::spawn_blocking(move || {
                split::size_and_middle_key(engine.as_ref(), &r, limit)
            })
            .await;
            let (size, middle) = match measured {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    tracing::warn!(region_id = region.id, error = %e, "measuring a region failed");
                    continue;
                }
                Err(_) => continue,
            };
            if size <= cfg.region_split_size_bytes {
                continue;
            }
            let Some(key) = middle else { continue };
            match split::split_region(&api, region.id, vec![key]).await {
                Ok(regions) => tracing::info!(
                    region_id = region.id,
                    size,
                    new_region = regions.get(1).map(|r| r.id),
                    "split a region that outgrew the split size"
                ),
                Err(Error::Region(e)) => {
                    tracing::debug!(region_id = region.id, error = %e, "size split skipped")
                }
                Err(e) => tracing::warn!(region_id = region.id, error = %e, "size split failed"),
            }
        }
    }
}
