//! The store's reports to the directory keep flowing when a region
//! heartbeat stream stops being read — as happens when the directory member
//! at its other end loses leadership and stops reading mid-stream.
//!
//! Regression: the store used to send its own heartbeat and its region
//! reports from one loop; a stream nobody read blocked that loop on the
//! first full buffer, the store heartbeats stopped, and the directory
//! declared a working store Down (seen in `tessera-bench repair` with
//! 1,000 regions and a directory leader change).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tessera_proto::directorypb::{RegionReport, StoreStats};
use tessera_proto::metapb::{Region, Store};
use tessera_store::directory_client::{DirectoryClient, RegionHeartbeatStream, Registration};
use tessera_store::{Error, Result};
use tessera_testkit::{Cluster, ClusterOptions};

/// A directory whose region heartbeat streams are never read: each takes
/// one report into its buffer and then nothing.
#[derive(Default)]
struct DeafDirectory {
    store_heartbeats: AtomicUsize,
    streams_opened: AtomicUsize,
    held: Mutex<Vec<tokio::sync::mpsc::Receiver<RegionReport>>>,
}

#[tonic::async_trait]
impl DirectoryClient for DeafDirectory {
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
    async fn store_heartbeat(&self, _stats: StoreStats) -> Result<()> {
        self.store_heartbeats.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn region_heartbeats(&self) -> Result<RegionHeartbeatStream> {
        self.streams_opened.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.held.lock().push(rx);
        Ok(RegionHeartbeatStream {
            reports: tx,
            replies: futures::stream::pending().boxed(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_heartbeats_continue_while_a_region_stream_is_not_read() {
    let cluster = Cluster::start(ClusterOptions::new(1)).await.unwrap();
    // Several regions led here: more reports than the stream can buffer.
    let splits: Vec<Vec<u8>> = (1..8).map(|i| format!("k{i}").into_bytes()).collect();
    let regions = cluster.bootstrap_regions(&splits).await.unwrap();
    for r in &regions {
        cluster
            .wait_leader(r.id, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let node = cluster.node(1).unwrap();
    let deaf = Arc::new(DeafDirectory::default());
    let heartbeats = tokio::spawn(tessera_store::heartbeat::run_heartbeats(
        node,
        deaf.clone(),
        Duration::from_millis(50),
        Duration::from_secs(10),
        tessera_store::disk_space::Usage::default,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    heartbeats.abort();
    let beats = deaf.store_heartbeats.load(Ordering::SeqCst);
    assert!(
        beats >= 10,
        "the store heartbeat must keep its pace (every 50 ms for 2 s), got {beats}"
    );
    assert!(
        deaf.streams_opened.load(Ordering::SeqCst) >= 2,
        "a stream that takes no reports is given up and reopened"
    );
    cluster.shutdown().await;
}
