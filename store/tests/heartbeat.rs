//! The store's reports to the directory keep flowing when a region
//! heartbeat stream stops being read — as happens when the directory member
//! at its other end loses leadership and stops reading mid-stream.
//!
//! Regression: the store used to send its own heartbeat and its region
//! reports from one loop; a stream nobody read blocked that loop on the
//! first full buffer, the store heartbeats stopped, and the directory
//! declared a working store Down (seen in `tessera-bench repair` with
//! 1,000 regions and a directory leader change).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tessera_testkit::{Cluster, ClusterOptions};

mod common;

use common::TestDirectory;

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
    let deaf = Arc::new(TestDirectory::new(false));
    let heartbeats = deaf.hear_from(node, 60);
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
