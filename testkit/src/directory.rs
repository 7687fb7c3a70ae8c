//! An in-process directory for tests: stores, regions and an id allocator in
//! memory. It keeps the rule the real directory keeps — a region report
//! replaces what is known only if its epoch is not older — and nothing of
//! scheduling. Never used by a binary.

use std::collections::BTreeMap;

use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use tessera_proto::directorypb::{RegionReport, StoreStats};
use tessera_proto::metapb::{Region, Store};
use tessera_proto::region::{epoch, is_newer_report};

use tessera_store::directory_client::{DirectoryClient, RegionHeartbeatStream, Registration};
use tessera_store::{Error, Result};

/// The cluster id of every in-process test cluster.
pub const TEST_CLUSTER_ID: u64 = 0x7e57;

#[derive(Default)]
struct State {
    bootstrapped: bool,
    next_id: u64,
    stores: BTreeMap<u64, Store>,
    store_stats: BTreeMap<u64, StoreStats>,
    regions: BTreeMap<u64, RegionReport>,
}

#[derive(Default)]
pub struct TestDirectory {
    state: Arc<Mutex<State>>,
}

impl TestDirectory {
    pub fn new() -> Self {
        TestDirectory {
            state: Arc::new(Mutex::new(State {
                next_id: 1000,
                ..Default::default()
            })),
        }
    }

    /// The latest report of every region.
    pub fn regions(&self) -> Vec<RegionReport> {
        self.state.lock().regions.values().cloned().collect()
    }

    /// Learns `region` as its leader's report right after a change would
    /// tell it (the test cluster runs no region heartbeats; the real
    /// directory hears of a finished change at once), unless it knows a
    /// newer epoch.
    pub fn learn(&self, region: Region) {
        let mut state = self.state.lock();
        if state
            .regions
            .get(&region.id)
            .is_some_and(|known| known.region.as_ref() == Some(&region))
        {
            return; // known already, maybe with more (a leader's report)
        }
        record(
            &mut state,
            RegionReport {
                region: Some(region),
                ..Default::default()
            },
        );
    }

    pub fn store_stats(&self, store_id: u64) -> Option<StoreStats> {
        self.state.lock().store_stats.get(&store_id).cloned()
    }

    pub fn stores(&self) -> Vec<Store> {
        self.state.lock().stores.values().cloned().collect()
    }
}

#[tonic::async_trait]
impl DirectoryClient for TestDirectory {
    async fn is_bootstrapped(&self) -> Result<bool> {
        Ok(self.state.lock().bootstrapped)
    }

    async fn bootstrap(&self, store: Store, region: Region) -> Result<()> {
        let mut s = self.state.lock();
        if s.bootstrapped {
            return Err(Error::Directory(
                "the cluster is already bootstrapped".into(),
            ));
        }
        s.bootstrapped = true;
        s.stores.insert(store.id, store);
        s.regions.insert(
            region.id,
            RegionReport {
                region: Some(region),
                ..Default::default()
            },
        );
        Ok(())
    }

    async fn alloc_ids(&self, count: u32) -> Result<Vec<u64>> {
        let mut s = self.state.lock();
        let first = s.next_id;
        s.next_id += count as u64;
        Ok((first..first + count as u64).collect())
    }

    async fn cluster_id(&self) -> Result<u64> {
        Ok(TEST_CLUSTER_ID)
    }

    /// Records the store; checks nothing (the real directory's checks are
    /// tested against the real directory).
    async fn register(&self, r: Registration) -> Result<()> {
        self.state.lock().stores.insert(r.store.id, r.store);
        Ok(())
    }

    async fn get_store(&self, store_id: u64) -> Result<Store> {
        self.state
            .lock()
            .stores
            .get(&store_id)
            .cloned()
            .ok_or_else(|| Error::Directory(format!("store {store_id} is not registered")))
    }

    async fn get_region(&self, region_id: u64) -> Result<Option<Region>> {
        Ok(self
            .state
            .lock()
            .regions
            .get(&region_id)
            .and_then(|r| r.region.clone()))
    }

    async fn store_heartbeat(&self, stats: StoreStats) -> Result<Vec<u64>> {
        self.state.lock().store_stats.insert(stats.store_id, stats);
        Ok(vec![])
    }

    async fn region_heartbeats(&self) -> Result<RegionHeartbeatStream> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RegionReport>(1024);
        let state = self.state.clone();
        // Records every report; never sends an operator.
        tokio::spawn(async move {
            while let Some(report) = rx.recv().await {
                record(&mut state.lock(), report);
            }
        });
        Ok(RegionHeartbeatStream {
            reports: tx,
            replies: futures::stream::pending().boxed(),
        })
    }
}

/// A report replaces what is known of its region unless that is newer.
fn record(s: &mut State, report: RegionReport) {
    let Some(region) = report.region.as_ref() else {
        return;
    };
    let stale = s
        .regions
        .get(&region.id)
        .and_then(|known| known.region.as_ref())
        .is_some_and(|known| !is_newer_report(&epoch(region), &epoch(known)) && known != region);
    if !stale {
        s.regions.insert(region.id, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::RegionEpoch;

    #[tokio::test]
    async fn stale_reports_do_not_replace_newer_ones() {
        let d = TestDirectory::new();
        let region = |version| Region {
            id: 1,
            region_epoch: Some(RegionEpoch::new(1, version)),
            ..Default::default()
        };
        let stream = d.region_heartbeats().await.unwrap();
        for v in [2, 1] {
            stream
                .reports
                .send(RegionReport {
                    region: Some(region(v)),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        drop(stream);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            d.regions()[0]
                .region
                .as_ref()
                .unwrap()
                .region_epoch
                .unwrap()
                .version,
            2
        );
        let ids = d.alloc_ids(3).await.unwrap();
        assert_eq!(ids.len(), 3);
        assert!(d.alloc_ids(1).await.unwrap()[0] > ids[2]);
    }
}
