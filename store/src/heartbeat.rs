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
use tessera_multiraft::mailbox::{RegionCounts, RegionInfo};
use tessera_multiraft::state_keys as raft_keys;
use tessera_proto::directorypb::{PeerProgress, RegionLoad, RegionReport, StoreStats};

use crate::directory_client::DirectoryClient;
use crate::disk_space::Usage;
use crate::down_peers::DownPeers;
use crate::node::{hibernating_due, turn, StoreNode, Turn};
use crate::{operator, Result};

/// The store's own report, with its region `counts`; returns the regions
/// the directory wants reported at once.
pub async fn send_store_heartbeat(
    node: &StoreNode,
    directory: &dyn DirectoryClient,
    usage: Usage,
    counts: RegionCounts,
) -> Result<Vec<u64>> {
    let Usage {
        capacity_bytes,
        available_bytes,
        low,
    } = usage;
    metrics::gauge!(crate::metrics::CAPACITY_BYTES).set(capacity_bytes as f64);
    metrics::gauge!(crate::metrics::AVAILABLE_BYTES).set(available_bytes as f64);
    directory
        .store_heartbeat(StoreStats {
            store_id: node.store_id(),
            capacity_bytes,
            available_bytes,
            used_bytes: capacity_bytes.saturating_sub(available_bytes),
            region_count: counts.regions as u32,
            leader_count: counts.leaders as u32,
            uptime_seconds: node.uptime().as_secs(),
            degraded: node.stats().is_degraded(),
            low_space: low,
        })
        .await
}

/// What a leader reports about one region; `load` is what it served since
/// the last periodic report (none in a report sent right after an operator
/// step: the directory keeps the last figures); `down` says which peers
/// count as down.
pub fn region_report(
    node: &StoreNode,
    info: RegionInfo,
    load: Option<RegionLoad>,
    down: &DownPeers,
) -> RegionReport {
    let r = &info.region;
    let size = node
        .engine()
        .approximate_size(
            Cf::Default,
            &r.start_key,
            &raft_keys::data_range_end(&r.end_key),
        )
        .unwrap_or(0);
    let down_peers = down.observe(&info, std::time::Instant::now());
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
        merging_into: info
            .merge_state
            .as_ref()
            .and_then(|m| m.target.as_ref())
            .map_or(0, |t| t.id),
        region: Some(info.region),
        load,
    }
}

/// Reports every `interval` until the node's poller stops, reconnecting the
/// region heartbeat stream whenever it ends (the directory leader changed);
/// a peer is reported down after `peer_down_after` without an answer
/// ([`DownPeers`]). A hibernating region is reported once every
/// `hibernated_every` intervals (spread by region id, see
/// [`hibernating_due`]), with the load it served since its last report.
/// Errors are logged and retried: a directory outage must not stop a store
/// from serving.
///
/// The store's own heartbeat runs on a task of its own: whatever happens to
/// the region stream (a directory member that stopped reading it, say),
/// the directory keeps hearing that the store is alive, so it never
/// declares a working store Down. A region report that cannot be handed to
/// the stream within `interval` ends the stream, which is then reopened
/// towards the current leader.
pub async fn run_heartbeats(
    node: Arc<StoreNode>,
    directory: Arc<dyn DirectoryClient>,
    interval: Duration,
    peer_down_after: Duration,
    hibernated_every: u64,
    usage: impl Fn() -> Usage + Send + 'static,
) {
    let down = DownPeers::new(peer_down_after);
    let hibernated_every = hibernated_every.max(1);
    let mut ticks = 0u64;
    // Regions to report at once: those whose operator step just finished
    // (so the directory sees the new epoch and sends the next step without
    // waiting for the next interval), and those the directory has a step
    // for (a hibernating region otherwise reports only now and then).
    let (stepped_tx, mut stepped) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let _store_heartbeats = AbortOnDrop(tokio::spawn(run_store_heartbeats(
        node.clone(),
        directory.clone(),
        interval,
        usage,
        stepped_tx.clone(),
    )));
    let busy: Arc<Mutex<HashSet<u64>>> = Arc::default();
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
                    ticks += 1;
                    // The leaders to report: every awake one, and the
                    // hibernating ones whose turn it is (looking at every
                    // region only on the ticks that have any).
                    let picked = match hibernating_due(ticks, hibernated_every) {
                        Some(due) => {
                            node.regions_where(move |b| b.is_leader && (!b.hibernating || due(b.id)))
                                .await
                        }
                        None => node.regions_awake_where(|b| b.is_leader && !b.hibernating).await,
                    };
                    let regions = match turn(picked, "region heartbeats") {
                        Turn::Go((regions, _)) => regions,
                        Turn::Skip => continue,
                        Turn::Stop => return,
                    };
                    // Whoever leads a merging source drives its merge.
                    crate::merge::resume(node.admin(), &regions);
                    let sampler = node.kv().load();
                    if ticks.is_multiple_of(hibernated_every) {
                        // Once a round of hibernating reports: forget the
                        // regions no longer led here.
                        match turn(node.regions_where(|b| b.is_leader).await, "region heartbeats") {
                            Turn::Go((led, _)) => {
                                let leading: Vec<u64> = led.iter().map(|i| i.region.id).collect();
                                sampler.retain(&leading.iter().copied().collect());
                                down.retain_leading(&leading);
                            }
                            Turn::Skip => {}
                            Turn::Stop => return,
                        }
                    }
                    let reports = regions
                        .into_iter()
                        .map(|info| {
                            let load = sampler.take(info.region.id);
                            region_report(&node, info, Some(load), &down)
                        });
                    if !send_reports(&stream.reports, reports, interval).await {
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
                        && !send_reports(&stream.reports, [region_report(&node, info, None, &down)], interval).await
                    {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
    }
}

/// The store's own heartbeat every `interval`, until the node stops; the
/// regions its replies name go to `report_now`.
async fn run_store_heartbeats(
    node: Arc<StoreNode>,
    directory: Arc<dyn DirectoryClient>,
    interval: Duration,
    usage: impl Fn() -> Usage + Send + 'static,
    report_now: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A busy poller (its mailbox full) must not silence the store: the
    // heartbeat then goes with the last counts.
    let mut counts = RegionCounts::default();
    loop {
        ticker.tick().await;
        match turn(
            node.regions_awake_where(|_| false).await,
            "store heartbeats",
        ) {
            Turn::Go((_, now)) => counts = now,
            Turn::Skip => {}
            Turn::Stop => return,
        }
        match send_store_heartbeat(&node, directory.as_ref(), usage(), counts).await {
            Ok(wanted) => {
                for region_id in wanted {
                    let _ = report_now.send(region_id);
                }
            }
            Err(crate::Error::Shutdown) => return,
            Err(e) => tracing::warn!(error = %e, "store heartbeat failed"),
        }
    }
}

/// Hands `reports` to the region stream; false when the stream is closed
/// or has not taken a report within `patience` (nobody reads it).
async fn send_reports(
    tx: &tokio::sync::mpsc::Sender<RegionReport>,
    reports: impl IntoIterator<Item = RegionReport>,
    patience: Duration,
) -> bool {
    for report in reports {
        match tokio::time::timeout(patience, tx.send(report)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                tracing::info!("the region heartbeat stream stopped taking reports; reopening it");
                return false;
            }
        }
    }
    true
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
