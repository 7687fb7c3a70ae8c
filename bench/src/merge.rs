//! `tessera-bench merge`: many small regions merged down under a YCSB A
//! style load — how long one merge takes, and what a merge costs the load.
//!
//! A fresh local cluster (3 directories, 3 stores, 1 router, plaintext):
//! the default keyspace is pre-split into `--regions` regions at the
//! quantiles of the records' keys (as `ycsb-scale` does), the records are
//! loaded, and `--threads` clients run 50% reads and 50% updates on
//! uniformly chosen records through the router, counting what completes in
//! every 100 ms. After `--baseline` seconds the regions are merged down,
//! `--concurrency` merges at a time: whenever fewer run, the next pair of
//! neighbours neither of which is merging is asked to merge, the right one
//! into the left (`MergeRegion`), until one region is left. Every
//! merge's time is from its request until the directory no longer lists
//! its source (seen by scanning the regions every 100 ms). Client errors
//! are counted by kind: a merging region answers busy and a merged one
//! not found, which the SDK retries; an error reaching the client is
//! what the target says must not happen.
//!
//! Reported: merges and their time (p50, p99, max); the load's throughput
//! before (median of 1 s windows), during the merges (median and the
//! lowest 1 s window) and errors. Written to `<out>/merge.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera_proto::directorypb::{MergeRegionRequest, ScanRegionsRequest};

use crate::scale::{presplit, split_keys};
use crate::ycsb::backend::{self, Backend};
use crate::ycsb::clusters::LocalTessera;
use crate::ycsb::{gen, Params};

#[derive(clap::Args)]
pub struct Args {
    /// Regions to start from.
    #[arg(long, default_value_t = 1000)]
    pub regions: usize,
    /// Seconds of load before the first merge.
    #[arg(long, default_value_t = 10)]
    pub baseline: u64,
    /// Merges in flight at once (as an operator, or the directory's merge
    /// rule with `max_merges_in_flight`, would pace them).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Directory for merge.json.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    #[command(flatten)]
    pub params: Params,
}

#[derive(Serialize)]
struct Report {
    regions: usize,
    merges: usize,
    merge_ms_p50: f64,
    merge_ms_p99: f64,
    merge_ms_max: f64,
    concurrency: usize,
    merging_s: f64,
    baseline_ops_per_sec: f64,
    during_ops_per_sec_median: f64,
    during_ops_per_sec_min_1s: f64,
    client_errors: u64,
    client_error_kinds: BTreeMap<String, u64>,
    refused_requests: u64,
}

/// Operations completed in each 100 ms slot since the load started.
struct Timeline {
    started: Instant,
    slots: Vec<AtomicU64>,
}

impl Timeline {
    fn new(capacity: usize) -> Self {
        Timeline {
            started: Instant::now(),
            slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn tick(&self) {
        let i = (self.started.elapsed().as_millis() / 100) as usize;
        if let Some(s) = self.slots.get(i) {
            s.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn slot_of(&self, at: Instant) -> usize {
        (at.saturating_duration_since(self.started).as_millis() / 100) as usize
    }

    /// Ops/s of each full 1 s window in slots `[from, to)`.
    fn per_second(&self, from: usize, to: usize) -> Vec<f64> {
        let to = to.min(self.slots.len());
        (from..to)
            .step_by(10)
            .filter(|s| s + 10 <= to)
            .map(|s| {
                (s..s + 10)
                    .map(|i| self.slots[i].load(Ordering::Relaxed))
                    .sum::<u64>() as f64
            })
            .collect()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let p = &args.params;
    anyhow::ensure!(args.regions >= 2, "--regions must be at least 2");
    std::fs::create_dir_all(&args.out)?;
    let c = LocalTessera::start(3, crate::ycsb::Mode::Plaintext).await?;
    let settle = presplit(&c, &split_keys(p.records, args.regions)).await?;
    if !json {
        println!(
            "tessera-bench merge: {} regions settled in {:.1} s; loading {} records",
            args.regions,
            settle.as_secs_f64(),
            p.records
        );
    }
    let b = Arc::new(
        backend::Tessera::connect(
            &c.routers(),
            false,
            p,
            &tessera_security::Security::insecure(),
        )
        .await?,
    );
    let value = vec![b'v'; p.fields * p.field_length];
    backend::load_records(
        &b,
        p.records,
        gen::key_name,
        &value,
        p.threads.max(1) * 16,
        |_| {},
    )
    .await?;

    let timeline = Arc::new(Timeline::new(36_000));
    let stop = Arc::new(AtomicBool::new(false));
    // Client errors by message (the first 100 characters).
    let errors: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut clients = vec![];
    for i in 0..p.threads.max(1) {
        let (b, timeline, stop, errors, value) = (
            b.clone(),
            timeline.clone(),
            stop.clone(),
            errors.clone(),
            value.clone(),
        );
        let records = p.records;
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            while !stop.load(Ordering::Relaxed) {
                let key = gen::key_name(rng.random_range(0..records));
                let r = if rng.random_bool(0.5) {
                    b.read(i, key.as_bytes()).await
                } else {
                    b.put(i, key.as_bytes(), &value).await
                };
                match r {
                    Ok(()) => timeline.tick(),
                    Err(e) => {
                        let kind: String = e.chars().take(100).collect();
                        *errors.lock().unwrap().entry(kind).or_default() += 1;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.baseline)).await;

    let conn = c.cluster.directory_conn();
    let scan = || async {
        let regions = conn
            .call("scan regions", |mut d| async move {
                d.scan_regions(ScanRegionsRequest::default()).await
            })
            .await?
            .regions;
        anyhow::Ok(
            regions
                .into_iter()
                .filter_map(|r| r.region)
                .collect::<Vec<_>>(),
        )
    };
    let merging_from = Instant::now();
    let mut times_ms: Vec<f64> = vec![];
    let mut refused = 0u64;
    // Merges in flight: source -> (target, asked at).
    let mut pending: HashMap<u64, (u64, Instant)> = HashMap::new();
    let mut last_report = Instant::now();
    loop {
        let regions = scan().await?;
        let ids: HashSet<u64> = regions.iter().map(|r| r.id).collect();
        pending.retain(|s, (_, asked)| {
            if ids.contains(s) {
                return true;
            }
            times_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
            false
        });
        if regions.len() <= 1 && pending.is_empty() {
            break;
        }
        // Neighbours neither of which is in a merge yet: the right one goes
        // into the left, up to --concurrency at once.
        let busy: HashSet<u64> = pending.iter().flat_map(|(s, (t, _))| [*s, *t]).collect();
        let mut i = 0;
        while i + 1 < regions.len() && pending.len() < args.concurrency {
            let (target, source) = (&regions[i], &regions[i + 1]);
            if busy.contains(&target.id) || busy.contains(&source.id) {
                i += 1;
                continue;
            }
            let (s, t) = (source.id, target.id);
            let asked = Instant::now();
            let r = conn
                .call("merge regions", |mut d| async move {
                    d.merge_region(MergeRegionRequest {
                        source_region_id: s,
                        target_region_id: t,
                    })
                    .await
                })
                .await;
            match r {
                Ok(_) => {
                    pending.insert(s, (t, asked));
                }
                Err(e) => {
                    refused += 1;
                    if !json {
                        eprintln!("merge of region {s} into {t} refused: {e:#}");
                    }
                }
            }
            i += 2;
        }
        anyhow::ensure!(
            pending
                .values()
                .all(|(_, asked)| asked.elapsed() < Duration::from_secs(600)),
            "a merge did not end within 10 minutes"
        );
        if !json && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "{} regions, {} merges done, {} in flight, {:.1} s",
                regions.len(),
                times_ms.len(),
                pending.len(),
                merging_from.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let merging_to = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        let _ = t.await;
    }
    times_ms.sort_by(f64::total_cmp);
    let before = timeline.per_second(10, timeline.slot_of(merging_from));
    let during = timeline.per_second(timeline.slot_of(merging_from), timeline.slot_of(merging_to));
    let error_kinds = errors.lock().unwrap().clone();
    let report = Report {
        regions: args.regions,
        merges: times_ms.len(),
        merge_ms_p50: percentile(&times_ms, 0.5),
        merge_ms_p99: percentile(&times_ms, 0.99),
        merge_ms_max: times_ms.last().copied().unwrap_or(0.0),
        concurrency: args.concurrency,
        merging_s: (merging_to - merging_from).as_secs_f64(),
        baseline_ops_per_sec: median(before),
        during_ops_per_sec_median: median(during.clone()),
        during_ops_per_sec_min_1s: during.iter().copied().fold(f64::INFINITY, f64::min),
        client_errors: error_kinds.values().sum(),
        client_error_kinds: error_kinds,
        refused_requests: refused,
    };
    let doc = serde_json::to_string_pretty(&serde_json::json!({
        "params": p,
        "report": &report,
    }))?;
    std::fs::write(args.out.join("merge.json"), &doc)?;
    if json {
        println!("{doc}");
    } else {
        println!(
            "{} merges ({} at once) over {:.1} s: per merge p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n\
             load: {:.0} ops/s before; during the merges median {:.0} ops/s, lowest 1 s {:.0} ops/s; \
             {} client errors; {} merge requests refused",
            report.merges,
            report.concurrency,
            report.merging_s,
            report.merge_ms_p50,
            report.merge_ms_p99,
            report.merge_ms_max,
            report.baseline_ops_per_sec,
            report.during_ops_per_sec_median,
            report.during_ops_per_sec_min_1s,
            report.client_errors,
            report.refused_requests
        );
        for (kind, n) in &report.client_error_kinds {
            println!("  {n} × {kind}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_whole_seconds_only() {
        let t = Timeline::new(100);
        for i in 0..25 {
            t.slots[i].store(3, Ordering::Relaxed);
        }
        assert_eq!(t.per_second(0, 25), vec![30.0, 30.0]);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
    }
}
