//! `tessera-bench compare`: the YCSB workloads against tessera and etcd
//! side by side on this machine.
//!
//! First this machine's fsync p50 (4 KiB append + fdatasync in the
//! temporary directory the clusters use). Then, for each round and each
//! workload: a fresh cluster of each system in `--systems` is started,
//! loaded, run and stopped in turn — tessera (3 directories, 3 stores,
//! 1 router; separate processes, production timing) once with the SDK in
//! direct mode (`tessera-direct`: straight to the region leaders) and once
//! through the router (`tessera`), then a fresh 3-member etcd cluster — so
//! the systems alternate, every run starts from empty data, and only the
//! system under test is running while it is measured. All fsync every
//! commit. Before the rounds, a single-client pass (workload A, one
//! client) on each system compares the update p50 with the fsync p50.
//!
//! Both systems run in the same security mode (`--modes`, default
//! `tls,plaintext`: every workload in both, alternating within a round):
//! `tls` is each system secured the way it is meant to run — tessera as
//! it runs by default, etcd with client-certificate auth and peer TLS —
//! and `plaintext` neither. The single-client pass runs in the first mode.
//!
//! The table gives per workload, mode and system the median over rounds
//! of the run phase's throughput and p99 (all operations), and each
//! system's ratios to the last of `--systems` (etcd by default):
//! throughput (above 1: faster) and p99 (below 1: lower). With both
//! modes, each system's TLS cost: the median over rounds of its
//! TLS/plaintext throughput ratio (closer to 1: cheaper TLS). Every run's full results go to `<out>/compare.json`, the
//! plot to `<out>/compare.svg`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use comfy_table::Table;
use serde::Serialize;

use crate::procs::{server_procs, CpuProbe};
use crate::profile::{ProfileSpec, Tools};
use crate::ycsb::{self, AnyBackend, LocalCluster, Mode, Params, System, WorkloadResult};

#[derive(clap::Args)]
pub struct Args {
    /// Rounds; each runs every workload on both systems.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Workloads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "A,B,C,D,E,F")]
    pub workloads: Vec<String>,
    /// Systems, in the order they alternate; every one is compared with
    /// the last (the baseline). `tessera` runs the clients through a
    /// router, `tessera-direct` in the SDK's direct mode (no router).
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "tessera-direct,tessera,etcd"
    )]
    pub systems: Vec<System>,
    /// Security modes, each run by both systems: `tls` (every connection,
    /// client certificates required) and `plaintext`.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "tls,plaintext"
    )]
    pub modes: Vec<Mode>,
    /// Members per cluster: tessera stores (3 directories and 1 router
    /// besides) and etcd members.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Seconds of the single-client pass (workload A, 1 client, 10,000
    /// records) run on each system before the rounds, for the update p50
    /// against the fsync p50; 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub single_client_secs: u64,
    /// Directory for compare.json and compare.svg.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// After the measured rounds, one more run of every workload, mode and
    /// system, profiled with perf and not counted: a flamegraph of the
    /// first store, the router, the first etcd member and the client (this
    /// process) each, in <out>/flamegraphs/. Needs perf and inferno
    /// (scripts/bench-tools).
    #[arg(long)]
    pub flamegraphs: bool,
    #[command(flatten)]
    pub params: Params,
}

/// The medians of one workload on one system.
#[derive(Serialize, Clone, Debug)]
pub struct Cell {
    pub ops_per_sec: f64,
    pub p99_us: u64,
    pub errors: u64,
    pub rounds: usize,
    /// CPU µs per operation of the run phase by kind of process, median
    /// over rounds.
    pub cpu_us_per_op: BTreeMap<String, f64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct SummaryRow {
    pub workload: String,
    pub mode: Mode,
    pub mix: String,
    pub systems: Vec<(System, Cell)>,
    /// Every system but the last against the last (the baseline, etcd by
    /// default), in the order of `--systems`.
    pub ratios: Vec<Ratio>,
}

/// One system against the baseline in one row.
#[derive(Serialize, Clone, Debug)]
pub struct Ratio {
    pub system: System,
    pub baseline: System,
    /// Its throughput over the baseline's (above 1: faster).
    pub throughput: Option<f64>,
    /// Its p99 over the baseline's (below 1: lower).
    pub p99: Option<f64>,
}

#[derive(Serialize)]
struct RunRecord {
    round: usize,
    mode: Mode,
    #[serde(flatten)]
    result: WorkloadResult,
}

/// What TLS costs one system on one workload.
#[derive(Serialize, Clone, Debug)]
pub struct TlsCost {
    pub workload: String,
    pub system: System,
    /// Median over rounds of (TLS ops/s) / (plaintext ops/s).
    pub throughput_ratio: f64,
}

/// One system's single-client pass.
#[derive(Serialize, Clone, Debug)]
pub struct SingleClient {
    pub system: System,
    pub mode: Mode,
    pub read_p50_us: u64,
    pub update_p50_us: u64,
    /// Update p50 over this machine's fsync p50.
    pub update_over_fsync: f64,
    pub result: WorkloadResult,
}

#[derive(Serialize)]
struct Output<'a> {
    fsync_p50_us: u64,
    fsync_p99_us: u64,
    single_client: &'a [SingleClient],
    rounds: usize,
    members: usize,
    params: &'a Params,
    summary: &'a [SummaryRow],
    tls_cost: &'a [TlsCost],
    runs: &'a [RunRecord],
    /// From the profiling pass (`--flamegraphs`), if any.
    #[serde(skip_serializing_if = "<[PathBuf]>::is_empty")]
    flamegraphs: &'a [PathBuf],
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Starts `system`, loads and runs `workload`, stops it.
pub async fn one_run(
    system: System,
    mode: Mode,
    workload: &str,
    members: usize,
    p: &Params,
    progress: bool,
    profile: Option<ProfileSpec>,
) -> anyhow::Result<WorkloadResult> {
    let cluster = LocalCluster::start(
        system,
        members,
        mode,
        &p.tessera_store_toml,
        !p.no_batch_stream,
    )
    .await?;
    let endpoints = cluster.endpoints(system);
    let backend = AnyBackend::connect(system, &endpoints, p, &cluster.access()).await?;
    let cpu = CpuProbe::new(server_procs(&cluster)).with_profile(profile);
    let r = backend
        .bench(system, workload, p, false, progress, Some(&cpu))
        .await;
    drop(backend);
    drop(cluster);
    r
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(!args.systems.is_empty(), "no system to run");
    anyhow::ensure!(!args.modes.is_empty(), "no mode to run");
    let p = &args.params;
    // etcd is needed: install it before measuring anything.
    if args.systems.contains(&System::Etcd) {
        ycsb::clusters::ensure_etcd()?;
    }
    // The profiler's tools too: a run asked for flamegraphs has them.
    let tools = match args.flamegraphs {
        true => Some(Tools::find()?),
        false => None,
    };
    let fsync = crate::fsync::measure(None, 2000, false)?;
    let (fsync_p50, fsync_p99) = (fsync.value_at_quantile(0.5), fsync.value_at_quantile(0.99));
    if !json {
        println!("tessera-bench compare: {}", p.describe());
        println!(
            "{} round(s) of workloads {} ({}) on {}; {} records of {} × {} bytes",
            args.rounds,
            args.workloads.join(","),
            args.modes
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            args.systems
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            p.records,
            p.fields,
            p.field_length
        );
        println!("this machine's fsync (4 KiB append + fdatasync): p50 {fsync_p50} µs, p99 {fsync_p99} µs");
    }
    std::fs::create_dir_all(&args.out)?;
    let single = single_client(&args, fsync_p50, json).await?;
    let mut runs: Vec<RunRecord> = vec![];
    for round in 1..=args.rounds {
        for w in &args.workloads {
            for (&mode, &system) in args
                .modes
                .iter()
                .flat_map(|m| args.systems.iter().map(move |s| (m, s)))
            {
                let r = one_run(system, mode, w, args.members, p, !json, None).await?;
                if !json {
                    println!(
                        "round {round} workload {} {mode:>9} {system:>14}: load {:>6.0}/s, run {:>7.0} ops/s, p50 {:>6} µs, p99 {:>7} µs, CPU {:>4.0} µs/op, {} errors",
                        r.workload,
                        r.load.as_ref().map(|l| l.ops_per_sec).unwrap_or(0.0),
                        r.run.ops_per_sec,
                        r.run.latency_us.p50,
                        r.run.latency_us.p99,
                        r.cpu_us_per_op.values().sum::<f64>(),
                        r.run.errors + r.load.as_ref().map(|l| l.errors).unwrap_or(0),
                    );
                    for e in &r.run.first_errors {
                        println!("  error: {e}");
                    }
                }
                runs.push(RunRecord {
                    round,
                    mode,
                    result: r,
                });
            }
        }
    }

    // Sampling slows the sampled processes: the profiles come from a pass
    // of their own, after the measured rounds, not counted in them.
    let mut flamegraphs = vec![];
    if let Some(tools) = &tools {
        for w in &args.workloads {
            for (&mode, &system) in args
                .modes
                .iter()
                .flat_map(|m| args.systems.iter().map(move |s| (m, s)))
            {
                let spec = ProfileSpec {
                    tools: tools.clone(),
                    dir: args.out.join("flamegraphs"),
                    label: format!("{w}-{mode}-{system}"),
                };
                let r = one_run(system, mode, w, args.members, p, !json, Some(spec)).await?;
                if !json {
                    println!(
                        "profiled workload {w} {mode:>9} {system:>14} (not counted): {:>7.0} ops/s",
                        r.run.ops_per_sec
                    );
                    for f in &r.flamegraphs {
                        println!("  flamegraph: {}", f.display());
                    }
                }
                flamegraphs.extend(r.flamegraphs);
            }
        }
    }

    let summary = summarize(&args, &runs);
    let tls_cost = tls_cost(&args, &runs);
    let out = Output {
        fsync_p50_us: fsync_p50,
        fsync_p99_us: fsync_p99,
        single_client: &single,
        rounds: args.rounds,
        members: args.members,
        params: p,
        summary: &summary,
        tls_cost: &tls_cost,
        runs: &runs,
        flamegraphs: &flamegraphs,
    };
    let doc = serde_json::to_string_pretty(&out)?;
    let json_path = args.out.join("compare.json");
    std::fs::write(&json_path, &doc)?;
    let svg_path = args.out.join("compare.svg");
    plot(&svg_path, &args, &summary, fsync_p50)?;
    if json {
        println!("{doc}");
    } else {
        println!();
        println!("{}", table(&args, &summary));
        println!("{}", cpu_table(&summary));
        for c in &tls_cost {
            println!(
                "TLS cost, workload {}, {}: TLS/plaintext throughput {:.2}× (median of {} rounds)",
                c.workload, c.system, c.throughput_ratio, args.rounds
            );
        }
        for s in &single {
            println!(
                "single client, workload A, {}: update p50 {} µs = {:.2}× the fsync p50; read p50 {} µs",
                s.system, s.update_p50_us, s.update_over_fsync, s.read_p50_us
            );
        }
        println!(
            "median of {} round(s); p99 over all operations of the run phase; fsync p50 {fsync_p50} µs",
            args.rounds
        );
        println!(
            "results: {}\nplot: {}",
            json_path.display(),
            svg_path.display()
        );
    }
    Ok(())
}

/// Workload A with one client on each system: the latency of one update
/// against the fsync it has to wait for.
async fn single_client(
    args: &Args,
    fsync_p50: u64,
    json: bool,
) -> anyhow::Result<Vec<SingleClient>> {
    if args.single_client_secs == 0 {
        return Ok(vec![]);
    }
    let p = Params {
        records: args.params.records.min(10_000),
        operations: None,
        duration: Some(args.single_client_secs),
        threads: 1,
        load_threads: Some(args.params.load_threads.unwrap_or(args.params.threads)),
        target: None,
        connections: 1,
        ..args.params.clone()
    };
    let mut out = vec![];
    let mode = args.modes[0];
    for &system in &args.systems {
        let r = one_run(system, mode, "A", args.members, &p, !json, None).await?;
        let p50 = |op: &str| {
            r.run
                .ops
                .iter()
                .find(|o| o.op == op)
                .map(|o| o.latency_us.p50)
                .unwrap_or(0)
        };
        let (read, update) = (p50("READ"), p50("UPDATE"));
        let s = SingleClient {
            system,
            mode,
            read_p50_us: read,
            update_p50_us: update,
            update_over_fsync: update as f64 / fsync_p50.max(1) as f64,
            result: r,
        };
        if !json {
            println!(
                "single client, workload A, {mode}, {system:>8}: update p50 {update} µs ({:.2}× fsync p50), read p50 {read} µs, {} errors",
                s.update_over_fsync, s.result.run.errors
            );
        }
        out.push(s);
    }
    Ok(out)
}

/// Each system's median over rounds of its TLS/plaintext throughput ratio,
/// per workload (when both modes ran).
fn tls_cost(args: &Args, runs: &[RunRecord]) -> Vec<TlsCost> {
    if !(args.modes.contains(&Mode::Tls) && args.modes.contains(&Mode::Plaintext)) {
        return vec![];
    }
    let mut out = vec![];
    for w in &args.workloads {
        let w = w.to_ascii_uppercase();
        for &system in &args.systems {
            let ops = |round: usize, mode: Mode| {
                runs.iter()
                    .find(|r| {
                        r.round == round
                            && r.mode == mode
                            && r.result.system == system
                            && r.result.workload == w
                    })
                    .map(|r| r.result.run.ops_per_sec)
            };
            let ratios: Vec<f64> = (1..=args.rounds)
                .filter_map(
                    |round| match (ops(round, Mode::Tls), ops(round, Mode::Plaintext)) {
                        (Some(tls), Some(plain)) if plain > 0.0 => Some(tls / plain),
                        _ => None,
                    },
                )
                .collect();
            if !ratios.is_empty() {
                out.push(TlsCost {
                    workload: w.clone(),
                    system,
                    throughput_ratio: median(ratios),
                });
            }
        }
    }
    out
}

fn summarize(args: &Args, runs: &[RunRecord]) -> Vec<SummaryRow> {
    let mut rows = vec![];
    for (w, &mode) in args
        .workloads
        .iter()
        .flat_map(|w| args.modes.iter().map(move |m| (w, m)))
    {
        let w = w.to_ascii_uppercase();
        let mut systems = vec![];
        let mut mix = String::new();
        for &s in &args.systems {
            let mine: Vec<&WorkloadResult> = runs
                .iter()
                .filter(|r| r.mode == mode)
                .map(|r| &r.result)
                .filter(|r| r.system == s && r.workload == w)
                .collect();
            if let Some(r) = mine.first() {
                mix = r.mix.clone();
            }
            systems.push((
                s,
                Cell {
                    ops_per_sec: median(mine.iter().map(|r| r.run.ops_per_sec).collect()),
                    p99_us: median(mine.iter().map(|r| r.run.latency_us.p99 as f64).collect())
                        as u64,
                    errors: mine.iter().map(|r| r.run.errors).sum(),
                    rounds: mine.len(),
                    cpu_us_per_op: median_by_kind(&mine),
                },
            ));
        }
        let ratios = match systems.split_last() {
            Some(((baseline, b), others)) => others
                .iter()
                .map(|(system, a)| Ratio {
                    system: *system,
                    baseline: *baseline,
                    throughput: (b.ops_per_sec > 0.0).then(|| a.ops_per_sec / b.ops_per_sec),
                    p99: (b.p99_us > 0).then(|| a.p99_us as f64 / b.p99_us as f64),
                })
                .collect(),
            None => vec![],
        };
        rows.push(SummaryRow {
            workload: w,
            mode,
            mix,
            systems,
            ratios,
        });
    }
    rows
}

/// The median over runs of each kind's CPU µs per operation.
fn median_by_kind(runs: &[&WorkloadResult]) -> BTreeMap<String, f64> {
    let kinds: BTreeSet<&String> = runs.iter().flat_map(|r| r.cpu_us_per_op.keys()).collect();
    kinds
        .into_iter()
        .map(|k| {
            let v = runs
                .iter()
                .filter_map(|r| r.cpu_us_per_op.get(k).copied())
                .collect();
            (k.clone(), median(v))
        })
        .collect()
}

/// CPU µs per operation of the run phase, by kind of process: where each
/// system's CPU goes (the machine is CPU-bound, so throughput follows it).
fn cpu_table(summary: &[SummaryRow]) -> Table {
    let kinds: BTreeSet<&String> = summary
        .iter()
        .flat_map(|r| r.systems.iter().flat_map(|(_, c)| c.cpu_us_per_op.keys()))
        .collect();
    let mut t = Table::new();
    let mut header = vec!["CPU µs/op".to_string(), "system".to_string()];
    header.extend(kinds.iter().map(|k| k.to_string()));
    header.push("total".into());
    t.set_header(header);
    for r in summary {
        for (system, c) in &r.systems {
            let mut row = vec![format!("{}, {}", r.workload, r.mode), system.to_string()];
            for k in &kinds {
                row.push(
                    c.cpu_us_per_op
                        .get(*k)
                        .map(|v| format!("{v:.0}"))
                        .unwrap_or("-".into()),
                );
            }
            row.push(format!("{:.0}", c.cpu_us_per_op.values().sum::<f64>()));
            t.add_row(row);
        }
    }
    t
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn table(args: &Args, summary: &[SummaryRow]) -> Table {
    let mut t = Table::new();
    let mut header = vec!["workload".to_string()];
    for s in &args.systems {
        header.push(format!("{s} ops/s"));
        header.push(format!("{s} p99"));
    }
    if let Some((baseline, others)) = args.systems.split_last() {
        for s in others {
            header.push(format!("{s}/{baseline} ops/s"));
            header.push(format!("{s}/{baseline} p99"));
        }
    }
    header.push("errors".into());
    t.set_header(header);
    for r in summary {
        let mut row = vec![format!("{} ({}), {}", r.workload, r.mix, r.mode)];
        for (_, c) in &r.systems {
            row.push(format!("{:.0}", c.ops_per_sec));
            row.push(ms(c.p99_us));
        }
        for ratio in &r.ratios {
            let show = |x: Option<f64>| x.map(|x| format!("{x:.2}×")).unwrap_or("-".into());
            row.push(show(ratio.throughput));
            row.push(show(ratio.p99));
        }
        row.push(
            r.systems
                .iter()
                .map(|(_, c)| c.errors)
                .sum::<u64>()
                .to_string(),
        );
        t.add_row(row);
    }
    t
}

fn plot(
    path: &std::path::Path,
    args: &Args,
    summary: &[SummaryRow],
    fsync_p50: u64,
) -> anyhow::Result<()> {
    let cats: Vec<String> = summary
        .iter()
        .map(|r| format!("{} {}", r.workload, r.mode))
        .collect();
    let series = |f: &dyn Fn(&Cell) -> f64| -> Vec<(String, Vec<f64>)> {
        args.systems
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    s.to_string(),
                    summary.iter().map(|r| f(&r.systems[i].1)).collect(),
                )
            })
            .collect()
    };
    crate::plot::bars(
        path,
        &format!(
            "YCSB, {} threads, {} records, median of {} round(s); fsync p50 {fsync_p50} µs",
            args.params.threads, args.params.records, args.rounds
        ),
        &[
            crate::plot::Panel {
                title: "throughput (ops/s)".into(),
                y_label: "ops/s".into(),
                categories: cats.clone(),
                series: series(&|c| c.ops_per_sec),
            },
            crate::plot::Panel {
                title: "p99 latency (ms)".into(),
                y_label: "ms".into(),
                categories: cats,
                series: series(&|c| c.p99_us as f64 / 1000.0),
            },
        ],
    )
}
