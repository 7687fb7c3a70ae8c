//! A directory double for the store's reporting tests: it answers the
//! store's calls and either takes every region report, counting them by
//! region, or takes none (each stream holds one report and is never read
//! again, as when a directory member stops reading mid-stream).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use tessera_proto::directorypb::{RegionReport, StoreStats};
use tessera_proto::metapb::{Region, Store};
use tessera_store::directory_client::{DirectoryClient, RegionHeartbeatStream, Registration};
use tessera_store::{Error, Result};

#[derive(Default)]
pub struct TestDirectory {
    /// Take and count region reports (`false`: leave the streams unread).
    pub reads_reports: bool,
    pub store_heartbeats: AtomicUsize,
    pub streams_opened: AtomicUsize,
    /// Region reports taken, by region id.
    pub reports: Arc<Mutex<HashMap<u64, usize>>>,
    held: Mutex<Vec<tokio::sync::mpsc::Receiver<RegionReport>>>,
}

impl TestDirectory {
    /// One that takes and counts region reports (`reads_reports`), or one
    /// whose streams are never read.
    pub fn new(reads_reports: bool) -> Self {
        TestDirectory {
            reads_reports,
            ..TestDirectory::default()
        }
    }

    /// Runs `node`'s store and region heartbeats to this directory every
    /// 50 ms (a peer down after 10 s silent; a hibernating region reported
    /// every `hibernated_every` intervals) until the task is aborted.
    pub fn hear_from(
        self: &Arc<Self>,
        node: Arc<tessera_store::node::StoreNode>,
        hibernated_every: u64,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(tessera_store::heartbeat::run_heartbeats(
            node,
            self.clone(),
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(10),
            hibernated_every,
            tessera_store::disk_space::Usage::default,
        ))
    }
}

#[tonic::async_trait]
impl DirectoryClient for TestDirectory {
    async fn is_bootstrapped(&self) -> Result<bool> {
        Ok(true)
    }
    async fn bootstrap(&self, _store: Store, _region: Region) -> Result<()> {
        Err(Error::Directory("not in this test".into()))
    }
    async fn alloc_ids(&self, _count: u32) -> Result<Vec<u64>> {
        Err(Error::Directory("not in this test".into()))
    }
    async fn cluster_id(&self) -> Result<u64> {
        Ok(1)
    }
    async fn register(&self, _r: Registration) -> Result<()> {
        Ok(())
    }
    async fn get_store(&self, store_id: u64) -> Result<Store> {
        Err(Error::Directory(format!("store {store_id} is unknown")))
    }
    async fn get_region(&self, _region_id: u64) -> Result<Option<Region>> {
        Ok(None)
    }
    async fn store_heartbeat(&self, _stats: StoreStats) -> Result<Vec<u64>> {
        self.store_heartbeats.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
    async fn region_heartbeats(&self) -> Result<RegionHeartbeatStream> {
        self.streams_opened.fetch_add(1, Ordering::SeqCst);
        let capacity = if self.reads_reports { 64 } else { 1 };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RegionReport>(capacity);
        if self.reads_reports {
            let reports = self.reports.clone();
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    let id = r.region.map(|r| r.id).unwrap_or_default();
                    *reports.lock().entry(id).or_default() += 1;
                }
            });
        } else {
            self.held.lock().push(rx);
        }
        Ok(RegionHeartbeatStream {
            reports: tx,
            replies: futures::stream::pending().boxed(),
        })
    }
}
