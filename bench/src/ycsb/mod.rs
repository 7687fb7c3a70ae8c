//! YCSB core workloads A–F against tessera or etcd (`tessera-bench ycsb`),
//! and the one-workload step ([`bench_workload`]) that `compare` and
//! `ycsb-scale` repeat.
//!
//! Modules: `gen` (the random generators), `workload` (the mixes and each
//! client's operation stream), `backend` (the systems behind one trait),
//! `runner` (load and run phases, closed and open loop), `stats`
//! (histograms, time series, results and tables), `clusters` (local
//! tessera and etcd clusters as separate processes).

pub mod backend;
pub mod clusters;
pub mod gen;
pub mod runner;
pub mod stats;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::procs::{server_procs, CpuProbe};
use backend::Backend;
use stats::PhaseResult;
use workload::{Distribution, Spec, Workload};

/// The systems `tessera-bench` can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// tessera through its routers (the SDK's proxy mode).
    Tessera,
    /// tessera with the SDK in direct mode: regions found through the
    /// directory, requests sent straight to their leaders (no router).
    #[serde(rename = "tessera-direct")]
    TesseraDirect,
    Etcd,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Tessera => "tessera",
            System::TesseraDirect => "tessera-direct",
            System::Etcd => "etcd",
        })
    }
}

/// How a benchmark's clusters run and its clients connect, the same for
/// both systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// TLS on every connection, client certificates required.
    Tls,
    /// No TLS, no identities.
    Plaintext,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Tls => "tls",
            Mode::Plaintext => "plaintext",
        })
    }
}

/// How a benchmark's clients authenticate: the tessera SDK's security,
/// and for etcd a certificates directory (`ca.crt`, `client.admin.*`) or
/// none (plaintext).
#[derive(Clone, Debug)]
pub struct Access {
    pub tessera: tessera_security::Security,
    pub etcd_certs: Option<PathBuf>,
}

impl Access {
    pub fn plaintext() -> Self {
        Access {
            tessera: tessera_security::Security::insecure(),
            etcd_certs: None,
        }
    }
}

/// The settings every YCSB command shares.
#[derive(clap::Args, Clone, Debug, Serialize)]
pub struct Params {
    /// Records loaded before the run (YCSB's recordcount).
    #[arg(long, default_value_t = 100_000)]
    pub records: i64,
    /// Operations in the run phase (YCSB's operationcount); with
    /// --duration, whichever ends first. Default: run for 30 s.
    #[arg(long)]
    pub operations: Option<u64>,
    /// Seconds the run phase lasts (YCSB's maxexecutiontime).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Concurrent clients (closed loop), in load and run.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// Concurrent clients of the load phase (default: --threads).
    #[arg(long)]
    pub load_threads: Option<usize>,
    /// Total operations per second to aim at in the run phase (open loop:
    /// latency counts from each operation's intended start).
    #[arg(long)]
    pub target: Option<f64>,
    /// Fields per record (YCSB's fieldcount).
    #[arg(long, default_value_t = 10)]
    pub fields: usize,
    /// Bytes per field (YCSB's fieldlength).
    #[arg(long, default_value_t = 100)]
    pub field_length: usize,
    /// Replaces the workload's request distribution.
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Seed of every client's generators (client i uses seed and i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Client objects (connection pools) per system, shared by the
    /// clients round-robin.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// etcd: serializable reads (a member's local state) instead of
    /// linearizable ones.
    #[arg(long)]
    pub etcd_serializable: bool,
    /// tessera: follower reads (any voter serves each read after a
    /// ReadIndex round trip to the leader; still linearizable) instead of
    /// leader reads.
    #[arg(long, conflicts_with = "tessera_stale_reads_ms")]
    pub tessera_follower_reads: bool,
    /// tessera: stale reads (any voter serves each read from its own state
    /// if that is at most this many milliseconds old; bounded staleness,
    /// not linearizable) instead of leader reads. Compare with etcd's
    /// `--etcd-serializable`.
    #[arg(long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub tessera_stale_reads_ms: Option<u64>,
    /// Deadline of one operation, retries included (seconds).
    #[arg(long, default_value_t = 10)]
    pub op_timeout: u64,
    /// tessera: a busy refusal (the cluster over its serving quotas) ends
    /// the operation at once instead of being waited out until
    /// --op-timeout (the SDK's `retry_busy(false)`).
    #[arg(long)]
    pub no_busy_retry: bool,
    /// tessera: the SDK's client-side throttle ratio
    /// (`ClientBuilder::throttle`; 0 turns it off).
    #[arg(long, default_value_t = tessera_routing::throttle::DEFAULT_RATIO)]
    pub sdk_throttle: f64,
    /// tessera: a TOML line appended to every store's configuration
    /// (repeat it for several), e.g. `--tessera-store-toml '[raft]'
    /// --tessera-store-toml 'local_reads = false'`.
    #[arg(long = "tessera-store-toml", value_name = "LINE")]
    pub tessera_store_toml: Vec<String>,
    /// tessera: send every request to the stores as its own unary RPC (the
    /// SDK in direct mode, and the router) instead of over one
    /// `BatchCommands` stream per store.
    #[arg(long)]
    pub no_batch_stream: bool,
}

impl Params {
    pub fn run_duration(&self) -> Option<Duration> {
        match (self.operations, self.duration) {
            (None, None) => Some(Duration::from_secs(30)),
            (_, d) => d.map(Duration::from_secs),
        }
    }

    /// How tessera's reads are served (`--tessera-follower-reads`,
    /// `--tessera-stale-reads-ms`).
    pub fn tessera_consistency(&self) -> tessera_client::ReadConsistency {
        use tessera_client::ReadConsistency as C;
        match (self.tessera_follower_reads, self.tessera_stale_reads_ms) {
            (true, _) => C::Follower,
            (false, Some(ms)) => C::Stale {
                max_age: Duration::from_millis(ms),
            },
            (false, None) => C::Linearizable,
        }
    }

    pub fn op_timeout(&self) -> Duration {
        Duration::from_secs(self.op_timeout.max(1))
    }

    pub fn describe(&self) -> String {
        let run = match (self.operations, self.run_duration()) {
            (Some(n), Some(d)) => format!("{n} operations or {} s", d.as_secs()),
            (Some(n), None) => format!("{n} operations"),
            (None, Some(d)) => format!("{} s", d.as_secs()),
            (None, None) => unreachable!(),
        };
        let lp = match self.target {
            Some(t) => format!("open loop at {t:.0} ops/s"),
            None => "closed loop".into(),
        };
        let mut reads = String::new();
        match (self.tessera_follower_reads, self.tessera_stale_reads_ms) {
            (true, _) => reads.push_str(", tessera follower reads"),
            (false, Some(ms)) => reads.push_str(&format!(", tessera stale reads (≤ {ms} ms)")),
            (false, None) => {}
        }
        if self.etcd_serializable {
            reads.push_str(", etcd serializable reads");
        }
        let stores = match self.tessera_store_toml.is_empty() {
            true => String::new(),
            false => format!(
                ", tessera stores with `{}`",
                self.tessera_store_toml.join("; ")
            ),
        };
        let unary = match self.no_batch_stream {
            true => ", tessera unary RPCs (no batch stream)",
            false => "",
        };
        format!(
            "{} threads ({lp}), {} connection(s), run: {run}, seed {}, op timeout {} s{reads}{stores}{unary}",
            self.threads, self.connections, self.seed, self.op_timeout
        )
    }
}

/// One workload against one system.
#[derive(Serialize, Clone, Debug)]
pub struct WorkloadResult {
    pub system: System,
    pub workload: String,
    pub mix: String,
    /// The generators as they were set up.
    pub distribution: Vec<String>,
    pub load: Option<PhaseResult>,
    pub run: PhaseResult,
    /// CPU microseconds per operation of the run phase, by kind of
    /// process (`store`: all stores together; `client`: this process),
    /// when the cluster's processes are known (a local cluster).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_us_per_op: BTreeMap<String, f64>,
    /// Flamegraphs of the run phase, when profiled (`compare
    /// --flamegraphs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flamegraphs: Vec<std::path::PathBuf>,
}

/// Loads (unless `skip_load`) and runs workload `name` on `backend`;
/// with `cpu`, measures the CPU per operation of the run phase.
pub async fn bench_workload<B: Backend>(
    backend: Arc<B>,
    system: System,
    name: &str,
    p: &Params,
    skip_load: bool,
    progress: bool,
    cpu: Option<&CpuProbe>,
) -> anyhow::Result<WorkloadResult> {
    let mut spec = Spec::core(name)?;
    if let Some(d) = p.distribution {
        spec.distribution = d;
    }
    anyhow::ensure!(p.records > 0, "--records must be positive");
    let w = Arc::new(Workload::new(
        spec.clone(),
        p.records,
        p.operations.unwrap_or(0),
        p.fields,
        p.field_length,
        p.seed,
    ));
    let load = if skip_load {
        None
    } else {
        Some(
            runner::load(
                backend.clone(),
                w.clone(),
                p.load_threads.unwrap_or(p.threads),
                progress,
                &format!("{system} {} load", spec.name),
            )
            .await,
        )
    };
    let before = cpu.map(CpuProbe::sample);
    let profile = match cpu {
        Some(cpu) => cpu.start_profile()?,
        None => None,
    };
    let run = runner::run(
        backend,
        w.clone(),
        runner::Limits {
            threads: p.threads,
            operations: p.operations,
            duration: p.run_duration(),
            target: p.target,
            progress,
        },
        &format!("{system} {} run", spec.name),
    )
    .await;
    let cpu_us_per_op = match (cpu, before) {
        (Some(cpu), Some(before)) => before.per_op_since(&cpu.sample(), run.operations),
        _ => BTreeMap::new(),
    };
    let flamegraphs = match profile {
        Some(p) => p.finish()?,
        None => vec![],
    };
    Ok(WorkloadResult {
        system,
        workload: spec.name.clone(),
        mix: spec.mix(),
        distribution: w.describe(),
        load,
        run,
        cpu_us_per_op,
        flamegraphs,
    })
}

/// A connected backend of either system.
pub enum AnyBackend {
    Tessera(Arc<backend::Tessera>),
    Etcd(Arc<backend::Etcd>),
}

impl AnyBackend {
    pub async fn connect(
        system: System,
        endpoints: &[String],
        p: &Params,
        access: &Access,
    ) -> anyhow::Result<Self> {
        Ok(match system {
            System::Tessera | System::TesseraDirect => AnyBackend::Tessera(Arc::new(
                backend::Tessera::connect(
                    endpoints,
                    system == System::TesseraDirect,
                    p,
                    &access.tessera,
                )
                .await?
                .with_consistency(p.tessera_consistency()),
            )),
            System::Etcd => AnyBackend::Etcd(Arc::new(
                backend::Etcd::connect(
                    endpoints,
                    p.connections,
                    p.op_timeout(),
                    p.etcd_serializable,
                    access.etcd_certs.as_deref(),
                )
                .await?,
            )),
        })
    }

    pub async fn bench(
        &self,
        system: System,
        name: &str,
        p: &Params,
        skip_load: bool,
        progress: bool,
        cpu: Option<&CpuProbe>,
    ) -> anyhow::Result<WorkloadResult> {
        match self {
            AnyBackend::Tessera(b) => {
                bench_workload(b.clone(), system, name, p, skip_load, progress, cpu).await
            }
            AnyBackend::Etcd(b) => {
                bench_workload(b.clone(), system, name, p, skip_load, progress, cpu).await
            }
        }
    }
}

/// A local cluster of either system, stopped when dropped.
pub enum LocalCluster {
    Tessera(Box<clusters::LocalTessera>),
    Etcd(clusters::LocalEtcd),
}

impl LocalCluster {
    /// `store_toml`: lines appended to every tessera store's configuration;
    /// `batch_stream` false: the router sends one unary RPC per request.
    pub async fn start(
        system: System,
        members: usize,
        mode: Mode,
        store_toml: &[String],
        batch_stream: bool,
    ) -> anyhow::Result<LocalCluster> {
        Ok(match system {
            System::Tessera | System::TesseraDirect => LocalCluster::Tessera(Box::new(
                clusters::LocalTessera::start_with(
                    members,
                    mode,
                    &[],
                    store_toml,
                    batch_stream,
                    &[],
                )
                .await?,
            )),
            System::Etcd => LocalCluster::Etcd(clusters::LocalEtcd::start(members, mode).await?),
        })
    }

    /// How clients reach it.
    pub fn access(&self) -> Access {
        match self {
            LocalCluster::Tessera(t) => Access {
                tessera: t.security(),
                etcd_certs: None,
            },
            LocalCluster::Etcd(e) => Access {
                tessera: tessera_security::Security::insecure(),
                etcd_certs: e.certs.clone(),
            },
        }
    }

    /// Where `system`'s clients connect: tessera's routers, or for its
    /// direct mode the directory; etcd's members.
    pub fn endpoints(&self, system: System) -> Vec<String> {
        match self {
            LocalCluster::Tessera(t) if system == System::TesseraDirect => t.directory(),
            LocalCluster::Tessera(t) => t.routers(),
            LocalCluster::Etcd(e) => e.endpoints.clone(),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The system to drive.
    #[arg(long, value_enum, default_value_t = System::Tessera)]
    pub system: System,
    /// Its addresses: tessera routers (host:port), tessera's directory
    /// members for `tessera-direct`, or etcd client URLs, comma-separated.
    /// Without: a local cluster of separate processes is started (tessera:
    /// 3 directories, 3 stores, 1 router; etcd: 3 members) and stopped at
    /// the end.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// With --endpoints: the cluster's certificates directory (TLS,
    /// presenting client.USER.crt — for etcd, client.admin.crt;
    /// `tessera playground` prints it). Without it the endpoints are
    /// dialed plaintext. Local clusters make their own (--mode).
    #[arg(long, env = "TESSERA_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The client certificate to present with --certs-dir.
    #[arg(long, env = "TESSERA_USER", default_value = "admin")]
    pub user: String,
    /// With --certs-dir: a user's bearer token (`tessera user create`,
    /// role readwrite or admin) instead of the client certificate.
    #[arg(
        long,
        env = "TESSERA_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Workloads to run one after the other, each loaded first.
    #[arg(long, value_delimiter = ',', default_value = "A")]
    pub workload: Vec<String>,
    /// Skip the load phase (the records are already there).
    #[arg(long)]
    pub skip_load: bool,
    /// Members of a local cluster (tessera stores or etcd members).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// How a local cluster runs: `tls` (every connection, client
    /// certificates required; etcd with client and peer TLS) or
    /// `plaintext`.
    #[arg(long, value_enum, default_value_t = Mode::Tls)]
    pub mode: Mode,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Write a plot (SVG) of throughput and p99 per workload to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Do not print the 1-second time series.
    #[arg(long)]
    pub no_series: bool,
    #[command(flatten)]
    pub params: Params,
}

#[derive(Serialize)]
struct YcsbOutput<'a> {
    params: &'a Params,
    endpoints: &'a [String],
    results: &'a [WorkloadResult],
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let p = &args.params;
    let local = if args.endpoints.is_empty() {
        eprintln!("starting a local {} cluster ...", args.system);
        Some(
            LocalCluster::start(
                args.system,
                args.members,
                args.mode,
                &p.tessera_store_toml,
                !p.no_batch_stream,
            )
            .await?,
        )
    } else {
        None
    };
    let endpoints = match &local {
        Some(l) => l.endpoints(args.system),
        None => args.endpoints.clone(),
    };
    let access = match (&local, &args.certs_dir, &args.token) {
        (Some(l), _, _) => l.access(),
        (None, Some(dir), Some(token)) => Access {
            tessera: tessera_security::Security::with_token(dir, token)?,
            etcd_certs: None,
        },
        (None, Some(dir), None) => Access {
            tessera: tessera_security::Security::client(dir, Some(&args.user))?,
            etcd_certs: Some(dir.clone()),
        },
        (None, None, Some(_)) => anyhow::bail!("--token needs --certs-dir (a token needs TLS)"),
        (None, None, None) => Access::plaintext(),
    };
    let backend = AnyBackend::connect(args.system, &endpoints, p, &access).await?;
    if !json {
        println!(
            "tessera-bench ycsb: {} at {}",
            args.system,
            endpoints.join(",")
        );
        println!("{}", p.describe());
    }
    let cpu = local.as_ref().map(|l| CpuProbe::new(server_procs(l)));
    let mut results = vec![];
    for name in &args.workload {
        let r = backend
            .bench(args.system, name, p, args.skip_load, !json, cpu.as_ref())
            .await?;
        if !json {
            print_result(&r, !args.no_series);
        }
        results.push(r);
    }
    drop(backend);
    drop(local);
    let out = YcsbOutput {
        params: p,
        endpoints: &endpoints,
        results: &results,
    };
    let doc = serde_json::to_string_pretty(&out)?;
    if json {
        println!("{doc}");
    }
    if let Some(path) = &args.results {
        std::fs::write(path, &doc)?;
        if !json {
            println!("results: {}", path.display());
        }
    }
    if let Some(path) = &args.plot {
        let cats: Vec<String> = results.iter().map(|r| r.workload.clone()).collect();
        let name = args.system.to_string();
        crate::plot::bars(
            path,
            &format!("YCSB, {}", p.describe()),
            &[
                crate::plot::Panel {
                    title: "throughput".into(),
                    y_label: "ops/s".into(),
                    categories: cats.clone(),
                    series: vec![(
                        name.clone(),
                        results.iter().map(|r| r.run.ops_per_sec).collect(),
                    )],
                },
                crate::plot::Panel {
                    title: "p99 latency".into(),
                    y_label: "ms".into(),
                    categories: cats,
                    series: vec![(
                        name,
                        results
                            .iter()
                            .map(|r| r.run.latency_us.p99 as f64 / 1000.0)
                            .collect(),
                    )],
                },
            ],
        )?;
        if !json {
            println!("plot: {}", path.display());
        }
    }
    Ok(())
}

/// Prints one workload's parameters, tables and series.
pub fn print_result(r: &WorkloadResult, series: bool) {
    println!();
    for line in &r.distribution {
        println!("{line}");
    }
    if let Some(load) = &r.load {
        println!(
            "load: {} records in {:.1} s ({:.0}/s, {} errors)",
            load.operations, load.elapsed_s, load.ops_per_sec, load.errors
        );
        println!("{}", load.table());
    }
    println!(
        "run: {} operations in {:.1} s ({:.0} ops/s, {} errors)",
        r.run.operations, r.run.elapsed_s, r.run.ops_per_sec, r.run.errors
    );
    println!("{}", r.run.table());
    if !r.cpu_us_per_op.is_empty() {
        let parts: Vec<String> = r
            .cpu_us_per_op
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect();
        println!(
            "CPU µs per operation: {} (total {:.0})",
            parts.join(", "),
            r.cpu_us_per_op.values().sum::<f64>()
        );
    }
    for e in &r.run.first_errors {
        println!("error: {e}");
    }
    if series {
        println!("1-second series (all operations):");
        for l in r.run.series_lines() {
            println!("{l}");
        }
    }
}
