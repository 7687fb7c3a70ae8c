//! `tessera-bench overload`: how tessera and etcd hold up when offered
//! more than they can do, and under hostile requests — measured in one
//! run, each system on its own local cluster of separate processes, one
//! after the other, the same schedule for both:
//!
//! 1. **capacity**: the workload's closed-loop peak (`--threads` clients,
//!    `--capacity-secs`);
//! 2. **open loop** at each `--multipliers` × capacity (default 0.8, 2, 5,
//!    10) for `--step-secs` each (`open_loop`: operations start on
//!    schedule whatever is in flight, latency from the scheduled start);
//! 3. **hostile**: ordinary load at `--hostile-load` × capacity while the
//!    attacks of `hostile` run beside it.
//!
//! Each phase reports goodput (successful operations per second, and as a
//! share of capacity), p50/p99 of the successful operations, failures by
//! reason, operations the generator could not send (`--max-outstanding`
//! in flight), the peak RSS of every server process kind during the phase
//! (`procs`) and the CPU the load generator itself used (it shares the
//! machine). At the end: which processes died (any is a failure of the
//! run), a table per system, JSON (`--results`) and an SVG plot
//! (`--plot`).
//!
//! Clients use each system's own library. Neither retries a refusal: the
//! tessera SDK runs with `retry_busy(false)` (unless `--busy-retry`), so a
//! request the cluster refuses counts as `busy` at once and the latency of
//! the successful operations is that of admitted requests; etcd-client
//! does not retry. Each client object is one HTTP/2 connection
//! (`--connections`, default 4): a server's streams-per-connection limit
//! would otherwise queue requests inside the client, where no server
//! admission can see them.

mod hostile;
mod open_loop;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use comfy_table::Table;
use serde::Serialize;

use crate::procs::{self, server_procs, CpuMeter, Peaks};
use crate::ycsb::backend::Backend;
use crate::ycsb::clusters::LocalTessera;
use crate::ycsb::runner;
use crate::ycsb::workload::{Spec, Workload};
use crate::ycsb::{AnyBackend, LocalCluster, Mode, Params, System};
use hostile::{AttackResult, HostileParams, Target};
use open_loop::{OpenLoopResult, Schedule};

#[derive(clap::Args)]
pub struct Args {
    /// Systems to measure, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "tessera,etcd")]
    pub systems: Vec<System>,
    /// How the local clusters run (both systems alike).
    #[arg(long, value_enum, default_value_t = Mode::Tls)]
    pub mode: Mode,
    /// Stores of tessera, members of etcd.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// The YCSB workload of the ordinary load.
    #[arg(long, default_value = "A")]
    pub workload: String,
    /// Records loaded first.
    #[arg(long, default_value_t = 20_000)]
    pub records: i64,
    /// Clients of the closed-loop capacity run.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// Seconds of the capacity run.
    #[arg(long, default_value_t = 15)]
    pub capacity_secs: u64,
    /// Offered load of the open-loop steps, as multiples of capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.8,2,5,10")]
    pub multipliers: Vec<f64>,
    /// Seconds of each open-loop step.
    #[arg(long, default_value_t = 15)]
    pub step_secs: u64,
    /// Seconds of quiet before each phase after the capacity run.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// Seconds of the hostile phase (0: none).
    #[arg(long, default_value_t = 20)]
    pub hostile_secs: u64,
    /// Ordinary load during the hostile phase, as a multiple of capacity.
    #[arg(long, default_value_t = 0.8)]
    pub hostile_load: f64,
    /// Operations the generator keeps in flight at most; more are not
    /// sent and are counted as dropped by the generator.
    #[arg(long, default_value_t = 50_000)]
    pub max_outstanding: usize,
    /// Deadline of one operation, retries included (seconds).
    #[arg(long, default_value_t = 2)]
    pub op_timeout: u64,
    /// Client objects (connection pools) of the ordinary load.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// tessera: wait out busy refusals until --op-timeout (the SDK's
    /// default) instead of counting them at once; the latency of the
    /// successful operations then includes those waits.
    #[arg(long)]
    pub busy_retry: bool,
    /// The tessera SDK's client-side throttle ratio
    /// (`ClientBuilder::throttle`): it holds back what the routers would
    /// refuse, counted as `throttled`; 0 turns it off.
    #[arg(long, default_value_t = tessera_routing::throttle::DEFAULT_RATIO)]
    pub sdk_throttle: f64,
    /// tessera: a `key = value` line of the stores' and routers'
    /// `[serving]` table (repeatable), e.g. `adaptive_limit = true`.
    #[arg(long, value_name = "LINE")]
    pub tessera_serving: Vec<String>,
    #[command(flatten)]
    pub hostile: HostileParams,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Write a plot (SVG) of goodput, p99 and peak RSS per phase.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// One phase of one system.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub system: System,
    pub phase: String,
    /// Offered load as a multiple of capacity (open-loop phases).
    pub multiplier: Option<f64>,
    #[serde(flatten)]
    pub outcome: OpenLoopResult,
    /// Goodput as a share of capacity.
    pub goodput_of_capacity: f64,
    /// p99 of successful operations over the first open-loop step's.
    pub p99_vs_base: Option<f64>,
    /// Peak RSS (MiB) per server process kind during the phase.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Cores the load generator used.
    pub generator_cores: f64,
}

/// Everything measured of one system.
#[derive(Serialize, Clone, Debug)]
pub struct SystemResult {
    pub system: System,
    pub capacity_per_s: f64,
    pub rows: Vec<Row>,
    pub attacks: Vec<AttackResult>,
    /// Server processes no longer running at the end.
    pub dead: Vec<String>,
    /// Why the run of this system stopped early, if it did.
    pub error: Option<String>,
    pub processes: Vec<String>,
    /// Whether peak RSS was reset between phases (else: since start).
    pub rss_per_phase: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    mode: Mode,
    tessera_serving: &'a [String],
    workload: &'a str,
    records: i64,
    open_file_limit: u64,
    results: &'a [SystemResult],
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(!args.multipliers.is_empty(), "--multipliers is empty");
    anyhow::ensure!(
        args.multipliers.iter().all(|m| *m > 0.0),
        "--multipliers must be positive"
    );
    Spec::core(&args.workload)?;
    anyhow::ensure!(
        !args.systems.contains(&System::TesseraDirect),
        "the overload bench drives tessera through its routers (their admission is part of \
         what it measures): use --systems tessera,etcd"
    );
    let nofile = procs::raise_nofile();
    let mut results = vec![];
    for &system in &args.systems {
        if !json {
            eprintln!("starting a local {system} cluster ({}) ...", args.mode);
        }
        let r = match one_system(system, &args, !json).await {
            Ok(r) => r,
            // Keep what the other systems measured.
            Err(e) => SystemResult {
                system,
                capacity_per_s: 0.0,
                rows: vec![],
                attacks: vec![],
                dead: vec![],
                error: Some(format!("{e:#}")),
                processes: vec![],
                rss_per_phase: false,
            },
        };
        if !json {
            print_system(&r);
        }
        results.push(r);
    }
    let doc = serde_json::to_string_pretty(&Output {
        mode: args.mode,
        tessera_serving: &args.tessera_serving,
        workload: &args.workload,
        records: args.records,
        open_file_limit: nofile,
        results: &results,
    })?;
    if json {
        println!("{doc}");
    }
    if let Some(path) = &args.results {
        std::fs::write(path, &doc)?;
    }
    if let Some(path) = &args.plot {
        plot(path, &args, &results)?;
    }
    let dead: Vec<String> = results
        .iter()
        .flat_map(|r| r.dead.iter().map(move |d| format!("{}: {d}", r.system)))
        .collect();
    anyhow::ensure!(
        dead.is_empty(),
        "server processes died: {}",
        dead.join(", ")
    );
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.system, r.error.as_ref()?)))
        .collect();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}

async fn one_system(system: System, args: &Args, progress: bool) -> anyhow::Result<SystemResult> {
    let local = match system {
        System::Tessera | System::TesseraDirect => LocalCluster::Tessera(Box::new(
            LocalTessera::start_with(
                args.members,
                args.mode,
                &args.tessera_serving,
                &[],
                true,
                &[],
            )
            .await?,
        )),
        System::Etcd => LocalCluster::start(system, args.members, args.mode, &[], true).await?,
    };
    let endpoints = local.endpoints(system);
    let access = local.access();
    let timeout = Duration::from_secs(args.op_timeout.max(1));
    let params = Params {
        records: args.records,
        operations: None,
        duration: Some(args.capacity_secs),
        threads: args.threads,
        load_threads: None,
        target: None,
        fields: 10,
        field_length: 100,
        distribution: None,
        seed: 1,
        connections: args.connections,
        etcd_serializable: false,
        tessera_follower_reads: false,
        tessera_stale_reads_ms: None,
        op_timeout: args.op_timeout.max(1),
        no_busy_retry: !args.busy_retry,
        sdk_throttle: args.sdk_throttle,
        tessera_store_toml: vec![],
        no_batch_stream: false,
    };
    let target = match system {
        System::Tessera | System::TesseraDirect => Target::Tessera {
            routers: endpoints.clone(),
            security: access.tessera.clone(),
            timeout,
        },
        System::Etcd => Target::Etcd {
            endpoints: endpoints.clone(),
            certs: access.etcd_certs.clone(),
            timeout,
        },
    };
    let mut peaks = Peaks::new(server_procs(&local));
    let backend = AnyBackend::connect(system, &endpoints, &params, &access).await?;
    let mut r = match backend {
        AnyBackend::Tessera(b) => phases(b, system, args, &mut peaks, &target, progress).await?,
        AnyBackend::Etcd(b) => phases(b, system, args, &mut peaks, &target, progress).await?,
    };
    r.dead = peaks.dead();
    r.processes = peaks
        .procs()
        .iter()
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect();
    r.rss_per_phase = peaks.resettable;
    drop(local);
    Ok(r)
}

async fn phases<B: Backend>(
    backend: Arc<B>,
    system: System,
    args: &Args,
    peaks: &mut Peaks,
    target: &Target,
    progress: bool,
) -> anyhow::Result<SystemResult> {
    let w = Arc::new(Workload::new(
        Spec::core(&args.workload)?,
        args.records,
        0,
        10,
        100,
        1,
    ));
    let load = runner::load(
        backend.clone(),
        w.clone(),
        args.threads,
        progress,
        &format!("{system} load"),
    )
    .await;
    anyhow::ensure!(
        load.errors == 0,
        "{system}: the load phase failed {} times: {:?}",
        load.errors,
        load.first_errors
    );

    // Capacity: the closed-loop peak.
    peaks.reset();
    let cpu = CpuMeter::start();
    let cap = runner::run(
        backend.clone(),
        w.clone(),
        runner::Limits {
            threads: args.threads,
            operations: None,
            duration: Some(Duration::from_secs(args.capacity_secs)),
            target: None,
            progress,
        },
        &format!("{system} capacity"),
    )
    .await;
    let capacity = (cap.operations - cap.errors) as f64 / cap.elapsed_s.max(1e-9);
    anyhow::ensure!(
        capacity > 0.0,
        "{system}: nothing succeeded in the capacity run: {:?}",
        cap.first_errors
    );
    let mut failed = BTreeMap::new();
    if cap.errors > 0 {
        failed.insert("errors".into(), cap.errors);
    }
    let mut rows = vec![Row {
        system,
        phase: "capacity (closed loop)".into(),
        multiplier: None,
        outcome: OpenLoopResult {
            offered_per_s: 0.0,
            sent_per_s: cap.ops_per_sec,
            goodput_per_s: capacity,
            ok: cap.operations - cap.errors,
            failed,
            dropped_by_generator: 0,
            latency_us: cap.latency_us.clone(),
            examples: cap
                .first_errors
                .first()
                .map(|e| (open_loop::reason(e).to_string(), e.clone()))
                .into_iter()
                .collect(),
        },
        goodput_of_capacity: 1.0,
        p99_vs_base: None,
        peak_rss_mib: peaks.read(),
        generator_cores: cpu.cores(),
    }];

    let schedule = |rate: f64, secs: u64| Schedule {
        rate,
        duration: Duration::from_secs(secs),
        max_outstanding: args.max_outstanding,
        connections: args.connections,
        drain: Duration::from_secs(args.op_timeout + 5),
    };
    for (i, &m) in args.multipliers.iter().enumerate() {
        settle(args).await;
        peaks.reset();
        let cpu = CpuMeter::start();
        let label = format!("{system} {m}× capacity");
        let pb = open_loop::bar(&label, args.step_secs, !progress);
        let outcome = open_loop::run(
            backend.clone(),
            w.clone(),
            schedule(m * capacity, args.step_secs),
            i + 1,
            &pb,
        )
        .await;
        pb.finish_and_clear();
        rows.push(Row {
            system,
            phase: format!("{m}× open loop"),
            multiplier: Some(m),
            goodput_of_capacity: outcome.goodput_per_s / capacity,
            outcome,
            p99_vs_base: None,
            peak_rss_mib: peaks.read(),
            generator_cores: cpu.cores(),
        });
    }

    let mut attacks = vec![];
    if args.hostile_secs > 0 {
        settle(args).await;
        target.prepare().await?;
        peaks.reset();
        let cpu = CpuMeter::start();
        let label = format!("{system} hostile + {}×", args.hostile_load);
        let pb = open_loop::bar(&label, args.hostile_secs, !progress);
        let ordinary = open_loop::run(
            backend.clone(),
            w.clone(),
            schedule(args.hostile_load * capacity, args.hostile_secs),
            args.multipliers.len() + 1,
            &pb,
        );
        let attack = hostile::run(
            target,
            &args.hostile,
            Duration::from_secs(args.hostile_secs),
        );
        let (outcome, a) = tokio::join!(ordinary, attack);
        pb.finish_and_clear();
        attacks = a;
        rows.push(Row {
            system,
            phase: format!("hostile + {}× open loop", args.hostile_load),
            multiplier: Some(args.hostile_load),
            goodput_of_capacity: outcome.goodput_per_s / capacity,
            outcome,
            p99_vs_base: None,
            peak_rss_mib: peaks.read(),
            generator_cores: cpu.cores(),
        });
    }

    // Latency against the first open-loop step (the lightest load).
    let base = rows
        .get(1)
        .map(|r| r.outcome.latency_us.p99)
        .filter(|p| *p > 0);
    for r in rows.iter_mut().skip(2) {
        r.p99_vs_base = base.map(|b| r.outcome.latency_us.p99 as f64 / b as f64);
    }
    Ok(SystemResult {
        system,
        capacity_per_s: capacity,
        rows,
        attacks,
        dead: vec![],
        error: None,
        processes: vec![],
        rss_per_phase: true,
    })
}

/// A pause between phases: what the servers still hold from the last one
/// (requests whose clients gave up) is not charged to the next.
async fn settle(args: &Args) {
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn print_system(r: &SystemResult) {
    if let Some(e) = &r.error {
        println!("\n{}: the run stopped: {e}", r.system);
    }
    println!(
        "\n{}: capacity {:.0} ops/s (closed loop); processes: {}",
        r.system,
        r.capacity_per_s,
        r.processes.join(", ")
    );
    let mut t = Table::new();
    t.set_header([
        "phase",
        "offered/s",
        "sent/s",
        "goodput/s",
        "% of capacity",
        "p50 ms",
        "p99 ms",
        "p99 ÷ first step",
        "failed",
        "not sent",
        "peak RSS MiB",
        "generator cores",
    ]);
    for row in &r.rows {
        let o = &row.outcome;
        t.add_row([
            row.phase.clone(),
            if o.offered_per_s > 0.0 {
                format!("{:.0}", o.offered_per_s)
            } else {
                "-".into()
            },
            format!("{:.0}", o.sent_per_s),
            format!("{:.0}", o.goodput_per_s),
            format!("{:.0}%", row.goodput_of_capacity * 100.0),
            ms(o.latency_us.p50),
            ms(o.latency_us.p99),
            row.p99_vs_base.map_or("-".into(), |x| format!("{x:.1}×")),
            counts(&o.failed),
            o.dropped_by_generator.to_string(),
            row.peak_rss_mib
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            format!("{:.2}", row.generator_cores),
        ]);
    }
    println!("{t}");
    if !r.attacks.is_empty() {
        let mut t = Table::new();
        t.set_header(["attack", "attempts", "outcomes", "example"]);
        for a in &r.attacks {
            t.add_row([
                a.attack.clone(),
                a.attempts.to_string(),
                a.summary(),
                a.examples
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ]);
        }
        println!("{t}");
    }
    for row in &r.rows {
        for (why, e) in &row.outcome.examples {
            println!("{} {why}: {e}", row.phase);
        }
    }
    if r.dead.is_empty() {
        println!("no server process died");
    } else {
        println!("DIED: {}", r.dead.join(", "));
    }
    if !r.rss_per_phase {
        println!("(peak RSS could not be reset between phases: each is since the process started)");
    }
}

fn plot(path: &std::path::Path, args: &Args, results: &[SystemResult]) -> anyhow::Result<()> {
    let Some(first) = results.iter().find(|r| !r.rows.is_empty()) else {
        return Ok(());
    };
    let cats: Vec<String> = first.rows.iter().map(|r| r.phase.clone()).collect();
    let phases = cats.len();
    let series = |f: &dyn Fn(&Row) -> f64| -> Vec<(String, Vec<f64>)> {
        results
            .iter()
            .map(|s| {
                let values = (0..phases).map(|i| s.rows.get(i).map_or(0.0, f));
                (s.system.to_string(), values.collect())
            })
            .collect()
    };
    crate::plot::bars(
        path,
        &format!(
            "overload, workload {} ({}, {} records): each system against its own capacity",
            args.workload, args.mode, args.records
        ),
        &[
            crate::plot::Panel {
                title: "goodput, % of capacity".into(),
                y_label: "%".into(),
                categories: cats.clone(),
                series: series(&|r| r.goodput_of_capacity * 100.0),
            },
            crate::plot::Panel {
                title: "p99 of successful operations".into(),
                y_label: "ms".into(),
                categories: cats.clone(),
                series: series(&|r| r.outcome.latency_us.p99 as f64 / 1000.0),
            },
            crate::plot::Panel {
                title: "largest peak RSS of a server process".into(),
                y_label: "MiB".into(),
                categories: cats,
                series: series(&|r| r.peak_rss_mib.values().cloned().fold(0.0, f64::max)),
            },
        ],
    )
}
