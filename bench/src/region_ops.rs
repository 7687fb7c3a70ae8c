//! Region operations on a 4-store cluster in this process (RocksDB, gRPC
//! between stores, production Raft timing):
//! - how long a split takes while writers keep the region busy;
//! - snapshot throughput: a learner added to a region of `--region-mib` MiB
//!   whose log was compacted catches up by snapshot;
//! - how long moving that region's replica to another store takes (add
//!   learner → catch up → promote → hand leadership away → remove).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tessera_multiraft::region::find_peer_on_store;
use tessera_proto::adminpb::ChangePeerKind;
use tessera_proto::kvpb::{BatchPutRequest, KvPair};
use tessera_store::NodeConfig;
use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind, TransportKind};

use crate::report::{Report, Row};

#[derive(clap::Args)]
pub struct Args {
    /// Size of the region snapshotted and moved, in MiB.
    #[arg(long, default_value_t = 256)]
    pub region_mib: u64,
    /// Splits to time under load.
    #[arg(long, default_value_t = 10)]
    pub splits: usize,
}

async fn cluster() -> anyhow::Result<Arc<Cluster>> {
    let mut opts = ClusterOptions::new(4)
        .replicas(3)
        .engine(EngineKind::Rocks)
        .transport(TransportKind::Grpc);
    opts.node = NodeConfig::default();
    opts.node.raft.log_gc_count_limit = 1000;
    opts.client_deadline = Duration::from_secs(120);
    Ok(Arc::new(Cluster::start(opts).await?))
}

async fn time_splits(splits: usize) -> anyhow::Result<Vec<f64>> {
    let cluster = cluster().await?;
    cluster.bootstrap_regions(&[]).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..16 {
        let (c, stop) = (cluster.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c
                    .put(&key(format!("k{:05}-{w}", i % 10_000)), &[b'v'; 1024])
                    .await;
                i += 7919;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut secs = vec![];
    for s in 1..=splits {
        let split_key = key(format!("k{:05}", s * 10_000 / (splits + 1)));
        let region = cluster
            .region_of(&split_key)
            .ok_or_else(|| anyhow::anyhow!("no region"))?;
        let t = Instant::now();
        cluster.split(region.id, vec![split_key]).await?;
        secs.push(t.elapsed().as_secs_f64());
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    cluster.shutdown().await;
    Ok(secs)
}

/// Fills the region holding `prefix` with about `mib` MiB.
async fn fill(cluster: &Cluster, mib: u64) -> anyhow::Result<()> {
    const VALUE: usize = 64 * 1024;
    const BATCH: usize = 8;
    let batches = (mib * 1024 * 1024) as usize / (VALUE * BATCH);
    let bar = ProgressBar::new(batches as u64);
    bar.set_message("filling the region");
    for b in 0..batches {
        let pairs: Vec<KvPair> = (0..BATCH)
            .map(|i| KvPair {
                key: key(format!("d{:07}", b * BATCH + i)),
                // Incompressible, so the snapshot moves as many bytes as
                // the region holds.
                value: (0..VALUE)
                    .map(|j| (((b * BATCH + i) * 7919 + j * 104_729) % 251) as u8 ^ (j >> 3) as u8)
                    .collect(),
            })
            .collect();
        let first = pairs[0].key.clone();
        cluster
            .request(
                &first,
                tessera_testkit::SendPolicy::Resendable,
                |kv, ctx| {
                    let req = BatchPutRequest {
                        context: Some(ctx),
                        pairs: pairs.clone(),
                    };
                    async move { kv.batch_put(req).await }
                },
            )
            .await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let split_secs = time_splits(args.splits).await?;

    let cluster = cluster().await?;
    let region = cluster.bootstrap_regions(&[]).await?[0].clone();
    fill(&cluster, args.region_mib).await?;
    // Give log compaction a few ticks to drop the log behind the data.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let t = Instant::now();
    cluster
        .change_peer(region.id, ChangePeerKind::AddLearner, 4)
        .await?;
    cluster
        .wait_peer_caught_up(region.id, 4, Duration::from_secs(600))
        .await?;
    let snapshot_secs = t.elapsed().as_secs_f64();
    cluster
        .change_peer(region.id, ChangePeerKind::RemovePeer, 4)
        .await?;

    // A full move of the same region from store 1 to store 4.
    let from = 1;
    let r = cluster.regions()[0].clone();
    anyhow::ensure!(
        find_peer_on_store(&r, from).is_some(),
        "store {from} holds the region"
    );
    let t = Instant::now();
    cluster.move_peer(region.id, from, 4).await?;
    let move_secs = t.elapsed().as_secs_f64();
    cluster.shutdown().await;

    Ok(Report {
        title: format!(
            "region operations (4 stores, RocksDB, gRPC; {} MiB region)",
            args.region_mib
        ),
        rows: vec![
            Row::from_seconds("split under load (16 writers)", &split_secs),
            Row::from_seconds("learner catch-up by snapshot", &[snapshot_secs]),
            Row::from_seconds("move a replica", &[move_secs]),
        ],
        notes: vec![
            format!(
                "snapshot throughput: {:.1} MiB/s ({} MiB in {:.2} s)",
                args.region_mib as f64 / snapshot_secs,
                args.region_mib,
                snapshot_secs
            ),
            format!(
                "move of a {} MiB region: {:.2} s",
                args.region_mib, move_secs
            ),
        ],
    })
}
