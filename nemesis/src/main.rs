//! `tessera-nemesis`: a soak of tessera under faults, checked for
//! linearizability and lost writes.
//!
//! Starts a cluster of separate processes (3 directories, 5 stores, 2
//! routers) from the binaries next to this one, runs the workload for
//! `--duration` while the chosen nemeses strike, heals, reads every key and
//! checks the history. Writes `history.jsonl`, `events.json`,
//! `report.json`, `recovery.json` (per nemesis kind: how long after the
//! heal until a write was served, and the longest stretch without one
//! while the fault held) and `logs.txt` to `--out`. Exits 1 on a violation, 2 when
//! no violation was found but some key was too large to search (raise
//! `--max-ops-per-key` or use more `--keys`). `--check FILE` checks a saved
//! history again without running anything.
//! The stores must be built with the `failpoints` feature:
//! `cargo build --release --bins --features tessera-nemesis/failpoints`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_nemesis::check::{self, CheckOptions, Report};
use tessera_nemesis::faults::Nemesis;
use tessera_nemesis::history::read_history;
use tessera_nemesis::run::{self, RunSpec};

#[derive(Parser, Debug)]
#[command(
    name = "tessera-nemesis",
    version,
    about = "Run tessera under faults and check the history for linearizability"
)]
struct Args {
    /// Seed of the workload and the fault schedule (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the faults go on, e.g. 60s, 10m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The nemeses to draw from (comma-separated; default: all but
    /// disk-full, the link cuts and clock-skew). `disk-full` puts every
    /// store on a 256 MiB tmpfs, and the link cuts (partition-links,
    /// isolate-from-directory, router-store-cut, client-router-cut) and
    /// clock-skew every process on a network host of its own (network
    /// namespaces): both need root.
    #[arg(long, value_delimiter = ',', value_enum)]
    nemesis: Vec<Nemesis>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// How long a client waits for one operation before it gives up
    /// (the outcome of a write then is indeterminate), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    op_timeout: u64,
    /// Keys the clients share.
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Directory for the history, events, report and logs
    /// (default: ./nemesis-<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Negative control: switch the stores to unsafe reads (no lease, no
    /// ReadIndex) and read from random replicas. The check must fail.
    #[arg(long)]
    negative_control: bool,
    /// The clock-skew negative control: `clock-skew` slows the region
    /// leader it cuts off to this rate (0.05–0.85), beyond the drift bound
    /// the lease relies on (at most 11% slow), and holds the cut 12 s at
    /// least. The check must fail (0.05 with --op-timeout 1000 does: the
    /// clients of the other router then read from the old leader between
    /// writes that time out).
    #[arg(long, value_name = "RATE", value_parser = unsafe_rate)]
    unsafe_clock_rate: Option<f64>,
    /// Client c uses router c mod n only, never failing over to another
    /// (with --unsafe-clock-rate: readers stay on the router that still
    /// reaches the deposed leader).
    #[arg(long)]
    pin_routers: bool,
    /// Clients use the SDK's direct mode (straight to the region leaders,
    /// regions found through the directory) instead of the routers.
    #[arg(long)]
    direct: bool,
    /// Every other client reads with the SDK's follower consistency (any
    /// replica serves, after a ReadIndex round trip; still linearizable).
    #[arg(long)]
    follower_reads: bool,
    /// Some clients read with the SDK's stale consistency at this bound in
    /// milliseconds (any replica serves from its own state if at most that
    /// old), checked for bounded staleness: no read may miss a write
    /// acknowledged longer than the bound before it was sent. The clients
    /// take turns: linearizable, follower (with --follower-reads), stale.
    #[arg(long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    stale_reads: Option<u64>,
    /// Added to every stale read's bound when checking: the clock drift
    /// between clients and stores, in milliseconds (0 on one host: every
    /// process reads the same clock).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    stale_slack: u64,
    /// Keys with more operations are not searched for linearizability
    /// (the lost-write check still covers them).
    #[arg(long, default_value_t = 1_000_000)]
    max_ops_per_key: usize,
    /// Time budget of the linearizability search per key, in seconds.
    #[arg(long, default_value_t = 120)]
    key_time_budget: u64,
    /// Check a saved history (history.jsonl) instead of running.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

fn unsafe_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|_| format!("{s:?} is not a rate"))?;
    if (0.05..=0.85).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0.05 and 0.85"))
    }
}

fn check_options(args: &Args) -> CheckOptions {
    CheckOptions {
        max_ops_per_key: args.max_ops_per_key,
        key_time_budget: Duration::from_secs(args.key_time_budget),
        stale_slack: Duration::from_millis(args.stale_slack),
        ..CheckOptions::default()
    }
}

/// Exit status for a report: 0 clean, 1 violations, 2 incomplete.
fn verdict(report: &Report) -> i32 {
    if !report.is_ok() {
        1
    } else if !report.is_complete() {
        2
    } else {
        0
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s or 10m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: the unit must be s, m or h")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = &args.check {
        let ops = read_history(path)?;
        eprintln!("checking {} operations from {}", ops.len(), path.display());
        let report = check::check(&ops, &check_options(&args))?;
        println!("{report}");
        std::process::exit(verdict(&report));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut spec = RunSpec::new(seed, args.duration);
    if !args.nemesis.is_empty() {
        spec.schedule.mix = args.nemesis.clone();
    }
    spec.workload.clients = args.clients;
    spec.workload.keys = args.keys;
    spec.workload.op_timeout = Duration::from_millis(args.op_timeout);
    spec.workload.direct = args.direct;
    spec.workload.pin_routers = args.pin_routers;
    spec.workload.follower_reads = args.follower_reads;
    spec.workload.stale_reads = args.stale_reads.map(Duration::from_millis);
    spec.unsafe_reads = args.negative_control;
    spec.schedule.unsafe_clock_rate = args.unsafe_clock_rate;
    spec.check = check_options(&args);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("nemesis-{seed}")));
    spec.out_dir = Some(out.clone());
    eprintln!(
        "seed {seed}, {:?} of {:?}, {} clients on {} keys; writing to {}",
        args.duration,
        spec.schedule.mix,
        args.clients,
        args.keys,
        out.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {msg}",
    )?);
    bar.enable_steady_tick(Duration::from_millis(200));
    let (tx, mut rx) = tokio::sync::watch::channel((String::new(), 0usize));
    let shown = bar.clone();
    let result = runtime.block_on(async move {
        let watcher = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let (phase, ops) = rx.borrow().clone();
                shown.set_message(format!("{phase} — {ops} operations"));
            }
        });
        let r = run::run(spec, Some(tx)).await;
        watcher.abort();
        r
    });
    bar.finish_and_clear();
    let result = result?;
    println!("{}", result.report);
    println!("events: {}", result.events.len());
    println!(
        "writes after each kind of fault (recovery.json):\n{}",
        tessera_nemesis::recovery::table(&result.recovery)
    );
    println!("hibernation wake-ups: {}", result.wakeups);
    println!("history, events, report and logs: {}", out.display());
    std::process::exit(verdict(&result.report));
}
