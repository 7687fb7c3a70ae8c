//! `tessera-bench idle-regions`: what a store pays for regions nobody uses
//! once they hibernate (`multiraft/src/hibernate.rs`).
//!
//! A fresh local cluster (3 directories, 3 stores, 1 router, plaintext, the
//! binaries' own timing: 100 ms ticks, 1 s election timeout) gets
//! `--regions` regions in bulk: hash keyspaces of 4,096 regions each (the
//! directory splits each keyspace's range at its hash slices in one split),
//! every region on every store, one keyspace at a time — each split, led
//! and hibernating (the stores' `tessera_raft_hibernating_regions`) before
//! the next. Then:
//!
//! - **CPU**: each process's `utime + stime` (`/proc/PID/stat`) over
//!   `--measure` seconds, as a share of one core (target: a store under 2%);
//! - **memory**: each store's resident memory (`VmRSS`) with every region
//!   asleep, minus what it was with one region, divided by the peers it
//!   hosts — the memory per idle peer, RocksDB's share of their state
//!   included;
//! - **wake-up**: `--wakes` writes, one at a time, each to a key of a
//!   different hibernating region, timed at the client; then the same keys
//!   again, their regions now awake, for comparison. Target: a write to a
//!   hibernating region well under one election timeout.
//!
//! Output: a table (or `--json`) and `idle-regions.json` in `--out`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_e2e::{E2eCluster, Options};
use tessera_proto::directorypb::{CreateKeyspaceRequest, KeyspaceKind};

use crate::hot_range::progress as bar;

/// Regions per hash keyspace (the most a hash keyspace starts with).
const PER_KEYSPACE: u32 = 4096;

#[derive(clap::Args)]
pub struct Args {
    /// Idle regions to create (in hash keyspaces of 4,096).
    #[arg(long, default_value_t = 102_400)]
    pub regions: u32,
    /// Seconds to wait, once every region hibernates, before measuring:
    /// RocksDB compacts what the bulk creation wrote, and a store busy
    /// compacting is not an idle store.
    #[arg(long, default_value_t = 60)]
    pub settle: u64,
    /// Seconds over which CPU is measured once every region hibernates.
    #[arg(long, default_value_t = 30)]
    pub measure: u64,
    /// Writes to hibernating regions, timed one at a time.
    #[arg(long, default_value_t = 50)]
    pub wakes: usize,
    /// Give up if the regions are not all created and asleep within this
    /// many seconds.
    #[arg(long, default_value_t = 3600)]
    pub setup_timeout: u64,
    /// Directory for idle-regions.json.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct ProcCost {
    name: String,
    /// Share of one core over the measured span, in percent.
    cpu_percent: f64,
    rss_mib: f64,
}

#[derive(Serialize)]
struct Report {
    regions: u64,
    stores: usize,
    setup_s: f64,
    measure_s: u64,
    procs: Vec<ProcCost>,
    /// Per store: (RSS asleep − RSS with one region) / peers hosted.
    bytes_per_idle_peer: BTreeMap<String, f64>,
    /// Client-side latency of a write to a hibernating region, ms.
    wake_write_ms: Percentiles,
    /// The same keys once their regions are awake, ms.
    awake_write_ms: Percentiles,
    /// Writes that failed (first the wake-ups', then the awake ones').
    write_errors: Vec<String>,
    election_timeout_ms: u64,
}

#[derive(Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or(0.0),
    }
}

fn rss_bytes(pid: u32) -> f64 {
    crate::procs::status_field_kib(pid, "VmRSS:").map_or(0.0, |kib| kib as f64 * 1024.0)
}

/// The server processes: (name, pid).
fn procs(c: &E2eCluster) -> Vec<(String, u32)> {
    let mut out = vec![];
    for (i, s) in &c.stores {
        out.extend(s.proc.pid().map(|p| (format!("store {i}"), p)));
    }
    for (i, d) in &c.directories {
        out.extend(d.proc.pid().map(|p| (format!("directory {i}"), p)));
    }
    for (i, r) in &c.routers {
        out.extend(r.proc.pid().map(|p| (format!("router {i}"), p)));
    }
    out
}

/// Sum over the stores of one gauge or counter.
fn store_sum(c: &E2eCluster, series: &str) -> f64 {
    c.stores
        .values()
        .filter_map(|s| tessera_e2e::metric_value(&s.status, series))
        .sum()
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.regions >= 1, "--regions must be at least 1");
    anyhow::ensure!(args.wakes >= 1, "--wakes must be at least 1");
    tessera_e2e::ensure_plain_binaries()?;
    std::fs::create_dir_all(&args.out)?;
    let stores = 3;
    let mut c = E2eCluster::start(Options {
        insecure: true,
        stores,
        default_timing: true,
        ..Options::default()
    })
    .await;
    c.add_router().await;
    c.wait_settled(1).await;
    let rss_before: BTreeMap<String, f64> = procs(&c)
        .into_iter()
        .map(|(n, pid)| (n, rss_bytes(pid)))
        .collect();

    let conn = c.directory_conn();
    let keyspaces = args.regions.div_ceil(PER_KEYSPACE);
    let total = args.regions as u64 + 2;
    let peers = total * stores as u64;
    let setup = Instant::now();
    let deadline = setup + Duration::from_secs(args.setup_timeout);
    // One keyspace at a time, each split, led and asleep before the next:
    // 100,000 regions split at once means 100,000 elections at once.
    let b = bar(peers, "peers created and hibernating", json);
    let mut names = vec![];
    let mut expected = 2u64;
    for k in 0..keyspaces {
        let regions = PER_KEYSPACE.min(args.regions - k * PER_KEYSPACE);
        let name = format!("idle{k:03}");
        let req = CreateKeyspaceRequest {
            name: name.clone(),
            kind: KeyspaceKind::Hash as i32,
            regions,
        };
        conn.call("create keyspace", |mut d| {
            let req = req.clone();
            async move { d.create_keyspace(req).await }
        })
        .await?;
        names.push(name);
        expected += regions as u64;
        loop {
            let known = tessera_e2e::scan_regions(&conn).await?.len() as u64;
            let asleep = store_sum(&c, "tessera_raft_hibernating_regions") as u64;
            b.set_position(asleep);
            b.set_message(format!("({known} regions)"));
            // 99% of the peers: the directory's scheduler may still be
            // moving a few leaders (a transfer wakes its region a while).
            let want = expected * stores as u64;
            if known >= expected && asleep >= want - want / 100 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{known} of {expected} regions, {asleep} peers hibernating, after {:?}",
                setup.elapsed()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    b.finish_and_clear();
    let setup_s = setup.elapsed().as_secs_f64();

    let wait = bar(args.settle, "seconds for the stores to settle", json);
    for _ in 0..args.settle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait.inc(1);
    }
    wait.finish_and_clear();

    // CPU over the measured span, RSS at its end.
    let ps = procs(&c);
    let cpu0: Vec<f64> = ps
        .iter()
        .map(|(_, pid)| crate::procs::cpu_seconds_of(*pid).unwrap_or(0.0))
        .collect();
    let t0 = Instant::now();
    let wait = bar(args.measure, "seconds measuring idle CPU", json);
    for _ in 0..args.measure {
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait.inc(1);
    }
    wait.finish_and_clear();
    let span = t0.elapsed().as_secs_f64();
    let mut costs = vec![];
    let mut per_peer = BTreeMap::new();
    for ((name, pid), before) in ps.iter().zip(cpu0) {
        let used = crate::procs::cpu_seconds_of(*pid).unwrap_or(before) - before;
        let rss = rss_bytes(*pid);
        if name.starts_with("store") {
            let grown = rss - rss_before.get(name).copied().unwrap_or(0.0);
            per_peer.insert(name.clone(), grown / total as f64);
        }
        costs.push(ProcCost {
            name: name.clone(),
            cpu_percent: 100.0 * used / span,
            rss_mib: rss / (1 << 20) as f64,
        });
    }

    // Wake-ups: one write at a time, each to a random key (so, with many
    // regions, to a different hibernating region), then the same keys
    // again while their regions are awake.
    let client = tessera_client::Client::builder()
        .endpoints(c.router_addrs())
        .timeout(Duration::from_secs(10))
        .build()
        .await?;
    let keys: Vec<(String, String)> = (0..args.wakes)
        .map(|i| {
            (
                names[i % names.len()].clone(),
                format!("wake-{i}-{}", rand::random::<u64>()),
            )
        })
        .collect();
    let timed = |label: &'static str| {
        let client = client.clone();
        let keys = keys.clone();
        let b = bar(keys.len() as u64, label, json);
        async move {
            let (mut ms, mut errors) = (vec![], vec![]);
            for (ks, k) in &keys {
                let started = Instant::now();
                match client.keyspace(ks.clone()).put(k, b"v").await {
                    Ok(()) => ms.push(started.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => errors.push(e.to_string()),
                }
                b.inc(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            b.finish_and_clear();
            (ms, errors)
        }
    };
    let (wake, wake_errors) = timed("writes to hibernating regions").await;
    let (awake, awake_errors) = timed("writes to the same regions, awake").await;

    let report = Report {
        regions: total,
        stores,
        setup_s,
        measure_s: args.measure,
        procs: costs,
        bytes_per_idle_peer: per_peer,
        wake_write_ms: percentiles(wake),
        awake_write_ms: percentiles(awake),
        write_errors: wake_errors.into_iter().chain(awake_errors).collect(),
        election_timeout_ms: 1000,
    };
    std::fs::write(
        args.out.join("idle-regions.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.set_header(["process", "CPU (% of one core)", "RSS (MiB)"]);
    for p in &report.procs {
        t.add_row([
            p.name.clone(),
            format!("{:.2}", p.cpu_percent),
            format!("{:.0}", p.rss_mib),
        ]);
    }
    println!(
        "{} regions ({} peers per store), all hibernating after {:.0} s; CPU over {} s:",
        report.regions, report.regions, report.setup_s, report.measure_s
    );
    println!("{t}");
    for (store, b) in &report.bytes_per_idle_peer {
        println!(
            "{store}: {:.1} KiB per idle peer (RSS growth / peers)",
            b / 1024.0
        );
    }
    let (w, a) = (&report.wake_write_ms, &report.awake_write_ms);
    println!(
        "write to a hibernating region: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (awake: p50 {:.1} ms, p99 {:.1} ms); election timeout {} ms",
        w.p50, w.p99, w.max, a.p50, a.p99, report.election_timeout_ms
    );
    if !report.write_errors.is_empty() {
        println!(
            "{} writes failed: {:?}",
            report.write_errors.len(),
            report.write_errors
        );
    }
    Ok(())
}
