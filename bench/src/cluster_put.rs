//! Puts through a 3-store cluster in this process: RocksDB in temporary
//! directories, the real gRPC transport between stores on 127.0.0.1, and the
//! client calling each store's gRPC Kv service. Production Raft timing.
//!
//! Each run starts a fresh cluster with `regions` regions (3 replicas each)
//! and `writers` closed-loop writers; writer `w` writes to region
//! `w % regions`, so with as many regions as writers every writer has a
//! region of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_store::NodeConfig;
use tessera_testkit::{key, Cluster, ClusterOptions, EngineKind, TransportKind};

use crate::report::{Latency, Report, Row};

#[derive(clap::Args)]
pub struct Args {
    /// Region counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub regions: Vec<usize>,
    /// Writer counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub writers: Vec<usize>,
    /// Seconds each run measures (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
}

async fn one_run(
    regions: usize,
    writers: usize,
    seconds: u64,
    value_bytes: usize,
) -> anyhow::Result<Row> {
    let mut opts = ClusterOptions::new(3)
        .engine(EngineKind::Rocks)
        .transport(TransportKind::Grpc);
    opts.node = NodeConfig::default();
    let cluster = Arc::new(Cluster::start(opts).await?);
    let splits: Vec<Vec<u8>> = (1..regions).map(|i| key(format!("r{i:04}"))).collect();
    cluster.bootstrap_regions(&splits).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for w in 0..writers {
        let (cluster, stop, measuring, errors, done) = (
            cluster.clone(),
            stop.clone(),
            measuring.clone(),
            errors.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let value = vec![b'v'; value_bytes];
            let region = w % regions;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = if region == 0 {
                    key(format!("a-{w}-{seq}"))
                } else {
                    key(format!("r{region:04}-{w}-{seq}"))
                };
                seq += 1;
                let t = Instant::now();
                let ok = cluster.put(&k, &value).await.is_ok();
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let bar = ProgressBar::new(seconds);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} s").expect("template"),
    );
    bar.set_message(format!("{writers} writers, {regions} regions"));
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await?)?;
    }
    cluster.shutdown().await;
    Ok(Row {
        name: format!("{writers} writers / {regions} regions"),
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        latency: Latency::from_histogram(&hist),
        errors: errors.load(Ordering::Relaxed),
    })
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let fsync = crate::fsync::measure(None, 1000, false)?;
    let fsync_p50 = fsync.value_at_quantile(0.5);
    let mut rows = vec![];
    for &writers in &args.writers {
        for &regions in &args.regions {
            if writers == 1 && regions > 1 {
                continue;
            }
            rows.push(one_run(regions, writers, args.seconds, args.value_bytes).await?);
        }
    }
    let mut notes = vec![format!("fsync p50 on this machine: {fsync_p50} µs")];
    if let Some(single) = rows.iter().find(|r| r.name.starts_with("1 writers")) {
        notes.push(format!(
            "single-client put p50 / fsync p50 = {:.2}",
            single.latency.p50_us as f64 / fsync_p50.max(1) as f64
        ));
    }
    Ok(Report {
        title: format!(
            "puts of {} B values through 3 stores (RocksDB, gRPC)",
            args.value_bytes
        ),
        rows,
        notes,
    })
}
