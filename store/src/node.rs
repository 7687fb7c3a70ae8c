//! A running store: the engine, the poller thread that drives every region,
//! and the Kv API on top.
//!
//! The node does not own sockets: the caller picks the transport (gRPC in
//! the binary, the in-memory network in tests) and serves the gRPC services
//! it wants. Stopping a node stops its poller; its engine may be reopened by
//! a new node (a restart).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_multiraft::engine::Engine;
use tessera_multiraft::local_read::LocalReaders;
use tessera_multiraft::mailbox::{PollerMsg, RegionInfo};
use tessera_multiraft::poller::{self, PollerSpec};
use tessera_multiraft::snapshot::SnapManager;
use tessera_multiraft::{Mailbox, Poller, PollerHandle, PollerStats, RaftConfig, Transport};
use tessera_proto::metapb::Region;

use crate::admin::AdminApi;
use crate::directory_client::DirectoryClient;
use crate::kv::{KvApi, KvConfig, KvOutput, KvStateMachine};
use crate::split_check::SplitCheckConfig;
use crate::stale_peer;
use crate::{Error, Result};

/// Settings of a store node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub raft: RaftConfig,
    pub kv: KvConfig,
    /// Messages the poller's mailbox holds before callers are told the
    /// store is busy.
    pub mailbox_capacity: usize,
    pub split_check: SplitCheckConfig,
    /// How long an admin operation (split, membership change, transfer)
    /// may take.
    pub admin_timeout: Duration,
    /// How often the removal checker asks the directory about the regions
    /// this store does not lead (`stale_peer`).
    pub stale_peer_check: Duration,
    /// How long a merging source waits for all its peers to have its
    /// PrepareMerge before it gives up and rolls back (`merge`).
    pub merge_catch_up_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            raft: RaftConfig::default(),
            kv: KvConfig::default(),
            mailbox_capacity: 64 * 1024,
            split_check: SplitCheckConfig::default(),
            admin_timeout: Duration::from_secs(20),
            stale_peer_check: Duration::from_secs(10),
            merge_catch_up_timeout: crate::merge::CATCH_UP_TIMEOUT,
        }
    }
}

pub struct StoreNode {
    store_id: u64,
    engine: Arc<dyn Engine>,
    snap_mgr: SnapManager,
    poller: PollerHandle<KvOutput>,
    kv: Arc<KvApi>,
    admin: Arc<AdminApi>,
    removal_checker: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl StoreNode {
    /// Starts a store over `engine`, resuming every region it holds. The
    /// transport is built from the poller's mailbox (it needs it to report
    /// unreachable stores).
    pub fn start(
        store_id: u64,
        engine: Arc<dyn Engine>,
        snap_mgr: SnapManager,
        directory: Arc<dyn DirectoryClient>,
        cfg: &NodeConfig,
        transport: impl FnOnce(&Mailbox<KvOutput>) -> Box<dyn Transport>,
    ) -> Result<Self> {
        let (mailbox, inbox) = poller::mailbox(cfg.mailbox_capacity);
        let (reports, reported) = tokio::sync::mpsc::channel(stale_peer::REPORTS_CAPACITY);
        let local_reads = cfg.kv.local_reads.then(LocalReaders::new);
        let spec = PollerSpec {
            store_id,
            config: cfg.raft.clone(),
            engine: engine.clone(),
            snap_mgr: snap_mgr.clone(),
            state_machine: KvStateMachine::new(),
            transport: transport(&mailbox),
            inbox,
            removal_reports: Some(reports),
            local_reads: local_reads.clone(),
        };
        let poller = Poller::spawn(spec, mailbox.clone())?;
        let removal_checker = tokio::spawn(stale_peer::run(
            mailbox.clone(),
            directory.clone(),
            reported,
            cfg.stale_peer_check,
        ));
        let kv = Arc::new(KvApi::new(
            store_id,
            mailbox.clone(),
            engine.clone(),
            local_reads,
            cfg.kv.clone(),
        ));
        let admin = Arc::new(AdminApi::new(
            store_id,
            mailbox,
            engine.clone(),
            directory,
            cfg.admin_timeout,
        ));
        admin.set_merge_catch_up_timeout(cfg.merge_catch_up_timeout);
        Ok(StoreNode {
            store_id,
            engine,
            snap_mgr,
            poller,
            kv,
            admin,
            removal_checker,
            started: Instant::now(),
        })
    }

    /// The leases published for reads off the poller's thread (`None`:
    /// `[raft] local_reads = false`).
    pub fn local_reads(&self) -> Option<&LocalReaders> {
        self.kv.local_reads()
    }

    pub fn admin(&self) -> &Arc<AdminApi> {
        &self.admin
    }

    pub fn snap_mgr(&self) -> &SnapManager {
        &self.snap_mgr
    }

    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn mailbox(&self) -> &Mailbox<KvOutput> {
        self.poller.mailbox()
    }

    pub fn kv(&self) -> &Arc<KvApi> {
        &self.kv
    }

    pub fn stats(&self) -> &Arc<PollerStats> {
        self.poller.stats()
    }

    /// The disk-space flag the poller acts on (set by `disk_space.rs`).
    pub fn space(&self) -> &Arc<tessera_multiraft::poller::space::DiskSpace> {
        self.poller.space()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every region on this store, as its peer sees it now.
    pub async fn regions(&self) -> Result<Vec<RegionInfo>> {
        Ok(self.mailbox().inspect().await?)
    }

    /// The regions `filter` picks, and counts of all (periodic tasks of a
    /// store with many idle regions: see `Mailbox::inspect_where`). A
    /// periodic task hands the answer to [`turn`].
    pub async fn regions_where(
        &self,
        filter: impl Fn(&tessera_multiraft::mailbox::RegionBrief) -> bool + Send + 'static,
    ) -> Result<(Vec<RegionInfo>, tessera_multiraft::mailbox::RegionCounts)> {
        Ok(self.mailbox().inspect_where(filter).await?)
    }

    /// [`StoreNode::regions_where`] among the awake regions only: what a
    /// task that runs every second can afford on a store of 100,000 idle
    /// regions. The counts are still of all.
    pub async fn regions_awake_where(
        &self,
        filter: impl Fn(&tessera_multiraft::mailbox::RegionBrief) -> bool + Send + 'static,
    ) -> Result<(Vec<RegionInfo>, tessera_multiraft::mailbox::RegionCounts)> {
        Ok(self.mailbox().inspect_awake_where(filter).await?)
    }

    /// Creates this store's peer of a new region (bootstrap, or a test that
    /// lays out regions by hand).
    pub async fn create_region(&self, region: Region) -> Result<()> {
        Ok(self.mailbox().create_region(region).await?)
    }

    /// Hands every leadership on this store to another voter and waits up to
    /// `timeout` for them to move. Returns how many leaders remain here.
    pub async fn transfer_leaders_away(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.mailbox().send(PollerMsg::TransferAllLeaders {
                cb: Box::new(move |n| {
                    let _ = tx.send(n);
                }),
            })?;
            let started = rx.await.map_err(|_| Error::Shutdown)?;
            if started == 0 {
                let left = self.regions().await?.iter().filter(|r| r.is_leader).count();
                if left == 0 {
                    return Ok(0);
                }
            }
            if Instant::now() >= deadline {
                let left = self.regions().await?.iter().filter(|r| r.is_leader).count();
                return Ok(left);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the poller and waits for it.
    pub fn shutdown(self) {
        self.removal_checker.abort();
        self.poller.shutdown();
    }
}

/// What a periodic task does with its look at the poller this turn.
pub enum Turn<T> {
    Go(T),
    /// The poller was busy (its mailbox full, under a burst of messages):
    /// try again next turn.
    Skip,
    /// The poller is gone: the store is stopping.
    Stop,
}

/// Sorts a periodic task's inspection: only a stopped poller ends the task.
/// (A full mailbox once ended the region heartbeats — and with them the
/// store heartbeats — for good, and the directory declared a working store
/// Down.)
pub fn turn<T>(r: Result<T>, task: &'static str) -> Turn<T> {
    match r {
        Ok(v) => Turn::Go(v),
        Err(crate::Error::Shutdown) => Turn::Stop,
        Err(e) => {
            tracing::debug!(task, error = %e, "the poller is busy; trying again next turn");
            Turn::Skip
        }
    }
}

/// A periodic task that must look at hibernating regions too (the region
/// heartbeat, the removal checker) walks every region only one turn in
/// this many; in between it looks at the awake ones only (at 100,000
/// regions a walk over all costs the poller tens of milliseconds).
pub const FULL_SCAN_EVERY: u64 = 10;

/// Which hibernating regions a periodic task looks at on its turn `tick`:
/// none, unless the turn walks every region; then one slice of them (by
/// region id), so that each is looked at once every `every` turns, rounded
/// down to a multiple of [`FULL_SCAN_EVERY`].
pub fn hibernating_due(tick: u64, every: u64) -> Option<impl Fn(u64) -> bool + Send + 'static> {
    let scan_every = FULL_SCAN_EVERY.min(every).max(1);
    if !tick.is_multiple_of(scan_every) {
        return None;
    }
    let slices = (every / scan_every).max(1);
    let slot = tick / scan_every;
    Some(move |id: u64| (slot + id).is_multiple_of(slices))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often each of 50 regions is looked at over `ticks` turns, and
    /// how many turns walk every region.
    fn looks_per_region(every: u64, ticks: u64) -> (Vec<u64>, u64) {
        let mut per_region = vec![0u64; 50];
        let mut walks = 0;
        for tick in 1..=ticks {
            if let Some(due) = hibernating_due(tick, every) {
                walks += 1;
                for (id, n) in per_region.iter_mut().enumerate() {
                    *n += u64::from(due(id as u64));
                }
            }
        }
        (per_region, walks)
    }

    #[test]
    fn each_hibernating_region_is_looked_at_once_per_period_and_walks_are_rare() {
        let (per_region, walks) = looks_per_region(60, 600);
        assert!(per_region.iter().all(|&n| n == 10), "{per_region:?}");
        assert_eq!(walks, 60, "one turn in ten walks every region");
        // A period shorter than the walk spacing: a walk every period.
        let (per_region, walks) = looks_per_region(3, 30);
        assert!(per_region.iter().all(|&n| n == 10), "{per_region:?}");
        assert_eq!(walks, 10);
        let (per_region, _) = looks_per_region(1, 5);
        assert!(per_region.iter().all(|&n| n == 5), "{per_region:?}");
    }

    #[test]
    fn only_a_stopped_poller_ends_a_periodic_task() {
        let busy: Result<()> = Err(tessera_multiraft::Error::region(
            tessera_proto::errorpb::RegionError::server_is_busy("raft mailbox is full", 10),
        )
        .into());
        assert!(matches!(turn(busy, "test"), Turn::Skip));
        assert!(matches!(
            turn::<()>(Err(crate::Error::Shutdown), "test"),
            Turn::Stop
        ));
        assert!(matches!(turn(Ok(7), "test"), Turn::Go(7)));
    }
}
