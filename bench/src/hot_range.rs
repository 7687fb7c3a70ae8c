//! `tessera-bench hot-range`: YCSB workload A (50% reads, 50% updates)
//! whose keys follow a zipfian distribution over one contiguous range —
//! does the scheduler (load-based split, hot-leader) spread the load over
//! the stores, and how fast?
//!
//! A fresh local cluster (3 directories, `--stores` stores, 1 router,
//! plaintext; the directory's own defaults unless `--schedule` lines say
//! otherwise) starts with one region. `--records` records `hot00000000`,
//! `hot00000001`, … are loaded, then `--threads` clients run workload A
//! over them for `--duration` seconds, choosing keys with YCSB's zipfian
//! (θ 0.99) *unscrambled*, so the popular keys are neighbours: one hot
//! range, as a time-ordered or sequential key pattern makes.
//!
//! Every `--sample` seconds the bench reads each store's
//! `tessera_kv_served_keys_total` and `tessera_kv_served_bytes_total`
//! (everything it read or proposed for clients, as the leader) and turns
//! them into keys/s and bytes/s per store over the sample. The spread is
//! the busiest store's rate over the least busy one's. Reported: when the
//! spread of both first stayed at or below 1.5 for three samples in a row
//! (the target: within 2 minutes), the per-store series (JSON,
//! and an SVG plot), the regions at the end, the clients' throughput and
//! their errors. CPU is shared by every process on one machine, so it is
//! not the measure; what each store serves is.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::plot::{self, LinePanel};
use crate::ycsb::backend::{self, Backend};
use crate::ycsb::clusters::LocalTessera;
use crate::ycsb::gen::Zipfian;
use crate::ycsb::Mode;

#[derive(clap::Args)]
pub struct Args {
    /// Stores in the cluster.
    #[arg(long, default_value_t = 3)]
    pub stores: usize,
    /// Seconds between per-store samples.
    #[arg(long, default_value_t = 5)]
    pub sample: u64,
    /// A `key = value` line for every directory member's `[schedule]`
    /// table (repeat it), e.g. `--schedule 'load_split_keys_per_sec = 1000'`.
    #[arg(long, value_name = "LINE")]
    pub schedule: Vec<String>,
    /// Directory for hot-range.json and hot-range.svg.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// --records are the hot range's keys, --threads the clients, each
    /// value --fields × --field-length bytes; --duration defaults to 180 s.
    #[command(flatten)]
    pub params: crate::ycsb::Params,
}

#[derive(Serialize)]
struct Sample {
    /// Seconds since the workload started (the sample's end).
    at_s: f64,
    /// Per store id: keys and bytes per second over the sample.
    keys_per_sec: BTreeMap<u64, f64>,
    bytes_per_sec: BTreeMap<u64, f64>,
    keys_spread: f64,
    bytes_spread: f64,
    regions: usize,
}

#[derive(Serialize)]
struct Report {
    stores: usize,
    records: i64,
    threads: usize,
    schedule: Vec<String>,
    /// Seconds until both spreads stayed ≤ 1.5 for three samples in a row.
    balanced_after_s: Option<f64>,
    regions_at_end: usize,
    ops_per_sec: f64,
    client_errors: u64,
    samples: Vec<Sample>,
}

/// Busiest over least busy (infinite while a store serves nothing).
fn spread(rates: &BTreeMap<u64, f64>) -> f64 {
    let max = rates.values().copied().fold(0.0, f64::max);
    let min = rates.values().copied().fold(f64::INFINITY, f64::min);
    if max == 0.0 {
        1.0
    } else {
        max / min
    }
}

/// Per store id: (served keys, served bytes) so far, from `/metrics`.
async fn served(c: &LocalTessera) -> anyhow::Result<BTreeMap<u64, (f64, f64)>> {
    let mut out = BTreeMap::new();
    for (index, store) in &c.cluster.stores {
        let id = c
            .cluster
            .store_id(*index)
            .await
            .ok_or_else(|| anyhow::anyhow!("store {index} has no id"))?;
        let addr = store.status.clone();
        let page = tokio::task::spawn_blocking(move || tessera_e2e::http_get(&addr, "/metrics"))
            .await?
            .ok_or_else(|| anyhow::anyhow!("store {index}'s /metrics did not answer"))?
            .1;
        let sum = |name: &str| -> f64 {
            page.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        out.insert(
            id,
            (
                sum("tessera_kv_served_keys_total"),
                sum("tessera_kv_served_bytes_total"),
            ),
        );
    }
    Ok(out)
}

/// A progress bar of `len` steps, hidden with `--json`; its message
/// (`set_message`) follows the label.
pub(crate) fn progress(len: u64, what: &str, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{msg}}"))
            .expect("template"),
    );
    bar
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let p = &args.params;
    let (records, threads) = (p.records, p.threads.max(1));
    let duration = p.duration.unwrap_or(180);
    anyhow::ensure!(records >= 2, "--records must be at least 2");
    anyhow::ensure!(args.stores >= 2, "--stores must be at least 2");
    std::fs::create_dir_all(&args.out)?;
    let c = LocalTessera::start_with(args.stores, Mode::Plaintext, &[], &[], true, &args.schedule)
        .await?;
    let b = Arc::new(
        backend::Tessera::connect(
            &c.routers(),
            false,
            p,
            &tessera_security::Security::insecure(),
        )
        .await?,
    );
    let key = |n: i64| format!("hot{n:08}");
    let value = vec![b'v'; p.fields * p.field_length];
    let bar = progress(records as u64, "records loaded", json);
    backend::load_records(&b, records, key, &value, 256, |k| bar.inc(k)).await?;
    bar.finish_and_clear();

    let stop = Arc::new(AtomicBool::new(false));
    let (ops, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..threads)
        .map(|i| {
            let (b, stop, ops, errors, value) = (
                b.clone(),
                stop.clone(),
                ops.clone(),
                errors.clone(),
                value.clone(),
            );
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                let mut zipf = Zipfian::new(0, records - 1, 0.99);
                while !stop.load(Ordering::Relaxed) {
                    let k = key(zipf.next(&mut rng));
                    let r = if rng.random_bool(0.5) {
                        b.read(i, k.as_bytes()).await
                    } else {
                        b.put(i, k.as_bytes(), &value).await
                    };
                    match r {
                        Ok(()) => ops.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let started = Instant::now();
    let bar = progress(duration, "seconds of load", json);
    let mut samples: Vec<Sample> = vec![];
    let mut last = served(&c).await?;
    let mut last_at = Instant::now();
    let mut balanced_after_s = None;
    while started.elapsed() < Duration::from_secs(duration) {
        tokio::time::sleep(Duration::from_secs(args.sample.max(1))).await;
        let now = served(&c).await?;
        let secs = last_at.elapsed().as_secs_f64();
        last_at = Instant::now();
        let rate = |pick: fn(&(f64, f64)) -> f64| -> BTreeMap<u64, f64> {
            now.iter()
                .map(|(id, v)| {
                    let before = last.get(id).map(pick).unwrap_or(0.0);
                    (*id, (pick(v) - before).max(0.0) / secs)
                })
                .collect()
        };
        let (keys_per_sec, bytes_per_sec) = (rate(|v| v.0), rate(|v| v.1));
        let regions = tessera_e2e::scan_regions(&c.cluster.directory_conn())
            .await
            .map(|r| r.len())
            .unwrap_or(0);
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            keys_spread: spread(&keys_per_sec),
            bytes_spread: spread(&bytes_per_sec),
            keys_per_sec,
            bytes_per_sec,
            regions,
        };
        samples.push(sample);
        let tail = samples.len().saturating_sub(3);
        if balanced_after_s.is_none()
            && samples.len() >= 3
            && samples[tail..]
                .iter()
                .all(|s| s.keys_spread <= 1.5 && s.bytes_spread <= 1.5)
        {
            balanced_after_s = Some(samples[tail].at_s);
        }
        last = now;
        bar.set_position(started.elapsed().as_secs().min(duration));
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = Report {
        stores: args.stores,
        records,
        threads,
        schedule: args.schedule.clone(),
        balanced_after_s,
        regions_at_end: samples.last().map_or(1, |s| s.regions),
        ops_per_sec: ops.load(Ordering::Relaxed) as f64 / elapsed,
        client_errors: errors.load(Ordering::Relaxed),
        samples,
    };
    std::fs::write(
        args.out.join("hot-range.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let x: Vec<f64> = report.samples.iter().map(|s| s.at_s).collect();
    let series = |pick: fn(&Sample) -> &BTreeMap<u64, f64>| -> Vec<(String, Vec<f64>)> {
        let ids: Vec<u64> = report
            .samples
            .first()
            .map(|s| pick(s).keys().copied().collect())
            .unwrap_or_default();
        ids.iter()
            .map(|id| {
                let v = report
                    .samples
                    .iter()
                    .map(|s| pick(s).get(id).copied().unwrap_or(0.0))
                    .collect();
                (format!("store {id}"), v)
            })
            .collect()
    };
    plot::lines(
        &args.out.join("hot-range.svg"),
        "tessera-bench hot-range: what each store serves (YCSB A, zipfian hot range)",
        &[
            LinePanel {
                title: "keys per second".into(),
                y_label: "keys/s".into(),
                x: x.clone(),
                series: series(|s| &s.keys_per_sec),
            },
            LinePanel {
                title: "bytes per second".into(),
                y_label: "bytes/s".into(),
                x,
                series: series(|s| &s.bytes_per_sec),
            },
        ],
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    let ids: Vec<u64> = report
        .samples
        .first()
        .map(|s| s.keys_per_sec.keys().copied().collect())
        .unwrap_or_default();
    let mut header = vec!["t (s)".to_string(), "regions".into()];
    header.extend(ids.iter().map(|id| format!("store {id} keys/s")));
    header.extend(["keys spread".into(), "bytes spread".into()]);
    table.set_header(header);
    for s in &report.samples {
        let mut row = vec![format!("{:.0}", s.at_s), s.regions.to_string()];
        row.extend(ids.iter().map(|id| format!("{:.0}", s.keys_per_sec[id])));
        row.extend([
            format!("{:.2}", s.keys_spread),
            format!("{:.2}", s.bytes_spread),
        ]);
        table.add_row(row);
    }
    println!("{table}");
    println!(
        "balanced (spread ≤ 1.5 for 3 samples) after: {}; {} regions at the end; {:.0} ops/s; {} client errors",
        report
            .balanced_after_s
            .map_or("never".to_string(), |s| format!("{s:.0} s")),
        report.regions_at_end,
        report.ops_per_sec,
        report.client_errors
    );
    println!(
        "written: {}/hot-range.json, hot-range.svg",
        args.out.display()
    );
    Ok(())
}
