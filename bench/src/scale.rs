//! `tessera-bench ycsb-scale`: workload A against tessera with the YCSB key
//! range pre-split into 1, 16 and 256 regions — does throughput hold as
//! the number of active Raft groups grows?
//!
//! For each region count: a fresh local cluster (3 directories, 3 stores,
//! 1 router, production timing); the default keyspace's region is split
//! with one admin `SplitRegion` at the N−1 quantiles of the keys the load
//! will write (so every region holds an equal share of the records and of
//! the load), then the bench waits until the directory reports N fully
//! replicated regions and no operator for 5 s in a row (leader balancing
//! done); then load and run as `ycsb`. Results go to
//! `<out>/scale.json` and `<out>/scale.svg`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::Table;
use serde::Serialize;
use tessera_proto::directorypb::{GetRegionRequest, SplitRegionRequest};
use tessera_proto::keys;

use crate::procs::{tessera_procs, CpuProbe};
use crate::profile::{ProfileSpec, Tools};
use crate::ycsb::clusters::LocalTessera;
use crate::ycsb::{backend, bench_workload, gen, Params, System, WorkloadResult};

#[derive(clap::Args)]
pub struct Args {
    /// Region counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub regions: Vec<usize>,
    /// The workload (A by default, as the issue asks).
    #[arg(long, default_value = "A")]
    pub workload: String,
    /// Directory for scale.json and scale.svg.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Also save every process's Prometheus metrics just before and just
    /// after each workload (load and run), as
    /// `<out>/metrics/<regions>-regions/{before,after}/<process>.prom`,
    /// to see where the time goes (for example fsyncs, Raft messages and
    /// read paths per operation at 1 and at 256 regions).
    #[arg(long)]
    pub metrics: bool,
    /// Run the clients in the SDK's direct mode (straight to the stores,
    /// regions found through the directory) instead of through the router.
    #[arg(long)]
    pub direct: bool,
    /// Profile each region count's run phase with perf: flamegraphs of the
    /// first store and the client in `<out>/flamegraphs/` (needs perf and
    /// inferno: scripts/bench-tools). Sampling slows the run about a tenth
    /// at every region count alike: compare shapes, not the numbers of a
    /// profiled run with an unprofiled one.
    #[arg(long)]
    pub flamegraphs: bool,
    #[command(flatten)]
    pub params: Params,
}

#[derive(Serialize)]
struct Point {
    regions: usize,
    settle_s: f64,
    #[serde(flatten)]
    result: WorkloadResult,
}

/// The N−1 keys that cut the records' keys into N equal parts.
pub fn split_keys(records: i64, regions: usize) -> Vec<Vec<u8>> {
    let mut all: Vec<String> = (0..records).map(gen::key_name).collect();
    all.sort();
    all.dedup();
    let mut out: Vec<Vec<u8>> = (1..regions)
        .map(|i| all[i * all.len() / regions].clone().into_bytes())
        .collect();
    out.dedup();
    out
}

/// Splits the default keyspace's region at `split` (user keys) and waits
/// until the cluster has settled; returns how long that took.
pub async fn presplit(c: &LocalTessera, split: &[Vec<u8>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let want = split.len() as u32 + 1;
    if !split.is_empty() {
        let conn = c.cluster.directory_conn();
        let first = keys::encode(keys::DEFAULT_KEYSPACE_ID, &split[0]);
        let region = conn
            .call("get region", |mut d| {
                let key = first.clone();
                async move { d.get_region(GetRegionRequest { key }).await }
            })
            .await?
            .region
            .and_then(|r| r.region)
            .ok_or_else(|| anyhow::anyhow!("no region holds the first split key"))?;
        let encoded: Vec<Vec<u8>> = split
            .iter()
            .map(|k| keys::encode(keys::DEFAULT_KEYSPACE_ID, k))
            .collect();
        conn.call("split region", |mut d| {
            let split_keys = encoded.clone();
            async move {
                d.split_region(SplitRegionRequest {
                    region_id: region.id,
                    split_keys,
                })
                .await
            }
        })
        .await?;
    }
    let mut quiet_since: Option<Instant> = None;
    loop {
        let s = c.cluster.status().await?;
        if s.regions >= want && s.under_replicated_regions == 0 && s.operators.is_empty() {
            if quiet_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(5) {
                return Ok(started.elapsed());
            }
        } else {
            quiet_since = None;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{want} regions did not settle within 10 minutes: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes the `/metrics` page of every process of the cluster into `dir`.
fn save_metrics(c: &LocalTessera, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, body) in c.cluster.metrics_pages().map_err(anyhow::Error::msg)? {
        std::fs::write(dir.join(format!("{name}.prom")), body)?;
    }
    Ok(())
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let p = &args.params;
    std::fs::create_dir_all(&args.out)?;
    let tools = match args.flamegraphs {
        true => Some(Tools::find()?),
        false => None,
    };
    if !json {
        println!(
            "tessera-bench ycsb-scale: workload {} over {:?} regions; {}",
            args.workload,
            args.regions,
            p.describe()
        );
    }
    let mut points = vec![];
    for &n in &args.regions {
        anyhow::ensure!(n >= 1, "a region count must be at least 1");
        // Plaintext: what scales with regions, not the cost of TLS (compare
        // measures that).
        let c = LocalTessera::start(3, crate::ycsb::Mode::Plaintext).await?;
        let settle = presplit(&c, &split_keys(p.records, n)).await?;
        let endpoints = match args.direct {
            true => c.directory(),
            false => c.routers(),
        };
        let b = Arc::new(
            backend::Tessera::connect(
                &endpoints,
                args.direct,
                p,
                &tessera_security::Security::insecure(),
            )
            .await?,
        );
        let metrics_dir = args.out.join("metrics").join(format!("{n}-regions"));
        if args.metrics {
            save_metrics(&c, &metrics_dir.join("before"))?;
        }
        let system = match args.direct {
            true => System::TesseraDirect,
            false => System::Tessera,
        };
        let profile = tools.clone().map(|tools| ProfileSpec {
            tools,
            dir: args.out.join("flamegraphs"),
            label: format!("{}-{n}-regions", args.workload),
        });
        let cpu = CpuProbe::new(tessera_procs(&c)).with_profile(profile);
        let r = bench_workload(b, system, &args.workload, p, false, !json, Some(&cpu)).await?;
        if args.metrics {
            save_metrics(&c, &metrics_dir.join("after"))?;
        }
        drop(c);
        if !json {
            println!(
                "{n:>4} regions (settled in {:.1} s): run {:.0} ops/s, p50 {} µs, p99 {} µs, {} errors",
                settle.as_secs_f64(),
                r.run.ops_per_sec,
                r.run.latency_us.p50,
                r.run.latency_us.p99,
                r.run.errors
            );
            for f in &r.flamegraphs {
                println!("  flamegraph: {}", f.display());
            }
        }
        points.push(Point {
            regions: n,
            settle_s: settle.as_secs_f64(),
            result: r,
        });
    }
    let doc = serde_json::to_string_pretty(&serde_json::json!({
        "params": p,
        "points": &points,
    }))?;
    let json_path = args.out.join("scale.json");
    std::fs::write(&json_path, &doc)?;
    let svg_path = args.out.join("scale.svg");
    let cats: Vec<String> = points
        .iter()
        .map(|p| format!("{} regions", p.regions))
        .collect();
    crate::plot::bars(
        &svg_path,
        &format!(
            "tessera, workload {} by active regions; {} threads, {} records",
            args.workload, p.threads, p.records
        ),
        &[
            crate::plot::Panel {
                title: "throughput (ops/s)".into(),
                y_label: "ops/s".into(),
                categories: cats.clone(),
                series: vec![(
                    "tessera".into(),
                    points.iter().map(|p| p.result.run.ops_per_sec).collect(),
                )],
            },
            crate::plot::Panel {
                title: "p99 latency (ms)".into(),
                y_label: "ms".into(),
                categories: cats,
                series: vec![(
                    "tessera".into(),
                    points
                        .iter()
                        .map(|p| p.result.run.latency_us.p99 as f64 / 1000.0)
                        .collect(),
                )],
            },
        ],
    )?;
    if json {
        println!("{doc}");
        return Ok(());
    }
    let base = points
        .first()
        .map(|p| p.result.run.ops_per_sec)
        .unwrap_or(0.0);
    let mut t = Table::new();
    t.set_header([
        "regions",
        "ops/s",
        "p50",
        "p99",
        "READ p99",
        "UPDATE p99",
        "vs first",
        "errors",
    ]);
    for pt in &points {
        let r = &pt.result.run;
        let op_p99 = |name: &str| {
            r.ops
                .iter()
                .find(|o| o.op == name)
                .map(|o| format!("{} µs", o.latency_us.p99))
                .unwrap_or_else(|| "-".into())
        };
        t.add_row([
            pt.regions.to_string(),
            format!("{:.0}", r.ops_per_sec),
            format!("{} µs", r.latency_us.p50),
            format!("{} µs", r.latency_us.p99),
            op_p99("READ"),
            op_p99("UPDATE"),
            if base > 0.0 {
                format!("{:+.1}%", (r.ops_per_sec / base - 1.0) * 100.0)
            } else {
                "-".into()
            },
            r.errors.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "results: {}\nplot: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keys_cut_records_evenly() {
        let keys = split_keys(1000, 16);
        assert_eq!(keys.len(), 15);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<Vec<u8>> = (0..1000).map(|i| gen::key_name(i).into_bytes()).collect();
        all.sort();
        let mut bounds = vec![Vec::new()];
        bounds.extend(keys);
        for (i, lo) in bounds.iter().enumerate() {
            let hi = bounds.get(i + 1);
            let n = all
                .iter()
                .filter(|k| *k >= lo && hi.is_none_or(|h| *k < h))
                .count();
            assert!((62..=63).contains(&n), "region {i}: {n} keys");
        }
        assert!(split_keys(10, 1).is_empty());
    }
}
