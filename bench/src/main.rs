//! `tessera-bench`: measurements of tessera on this machine.
//!
//! - `fsync`: this machine's fsync latency (the floor under every durable
//!   write);
//! - `cluster-put`: puts through a 3-store cluster (RocksDB, gRPC between
//!   stores, in one process) with N concurrent writers over M regions;
//! - `region-ops`: split under load, snapshot throughput, region move;
//! - `repair`: separate processes; time to detect a dead store and restore
//!   3 replicas of every region it held;
//! - `router-cost`: separate processes; get latency through a router
//!   against straight to the leader;
//! - `ycsb`: YCSB core workloads A–F against tessera or etcd (`ycsb/`);
//! - `compare`: the workloads against tessera and etcd side by side, in
//!   alternating rounds (`compare.rs`);
//! - `ycsb-scale`: workload A over 1, 16 and 256 regions (`scale.rs`);
//! - `overload`: capacity, then open-loop load at multiples of it and a
//!   hostile mix, tessera and etcd in one run (`overload/`);
//! - `merge`: 1,000 regions merged down under load (`merge.rs`);
//! - `hot-range`: workload A on a zipfian hot range, what each store
//!   serves over time while the scheduler spreads it (`hot_range.rs`);
//! - `idle-regions`: ~100,000 hibernating regions per store — CPU, memory
//!   per idle peer, and the latency of a write that wakes one
//!   (`idle_regions.rs`).
//!
//! Results print as a table and, with `--json`, as one JSON object.

mod cluster_put;
mod compare;
mod fsync;
mod hot_range;
mod idle_regions;
mod merge;
mod overload;
mod plot;
mod procs;
mod profile;
mod region_ops;
mod repair;
mod report;
mod router_cost;
mod scale;
mod ycsb;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tessera-bench",
    version,
    about = "Measure tessera on this machine"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Print results as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// fsync latency of 4 KiB appends in a directory (default: a temporary one).
    Fsync(fsync::Args),
    /// Puts through an in-process 3-store cluster over gRPC and RocksDB.
    ClusterPut(cluster_put::Args),
    /// Split under load, snapshot throughput and region move time.
    RegionOps(region_ops::Args),
    /// Separate processes: kill a store holding ~1,000 regions' replicas and
    /// time detection and repair (needs `cargo build --release --bins`).
    Repair(repair::Args),
    /// Separate processes: get latency through tessera-router against
    /// straight to the leader (needs `cargo build --release --bins`).
    RouterCost(router_cost::Args),
    /// YCSB core workloads A-F against tessera or etcd: a load phase, then a
    /// run phase.
    Ycsb(ycsb::Args),
    /// YCSB workloads against tessera and etcd side by side: local
    /// clusters, alternating runs, fresh data each run, one table.
    Compare(compare::Args),
    /// Workload A against tessera with the key range pre-split into 1, 16
    /// and 256 regions.
    YcsbScale(scale::Args),
    /// Many small regions (1,000 by default) merged down to one under a
    /// read/update load: time per merge and the load's dip.
    Merge(merge::Args),
    /// YCSB A on a zipfian hot range of keys: how load-based split and
    /// hot-leader balancing spread what each store serves, over time.
    HotRange(hot_range::Args),
    /// Separate processes: ~100,000 idle regions on 3 stores, all
    /// hibernating: each process's CPU, the memory per idle peer, and the
    /// latency of a write that wakes a region.
    IdleRegions(idle_regions::Args),
    /// Overload and hostile requests, tessera and etcd in one run: the
    /// closed-loop capacity, then open-loop load at 0.8, 2, 5 and 10× of
    /// it, then a hostile mix; goodput, p99, refusals, peak RSS.
    Overload(overload::Args),
}

/// Runs `work`, or stops at Ctrl-C or SIGTERM: dropping `work` drops the
/// clusters it started, which stops their processes.
async fn interruptible<F: std::future::Future<Output = anyhow::Result<()>>>(
    work: F,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; stopped every process started")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated; stopped every process started")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = match args.command {
        Command::Fsync(a) => fsync::run(a)?,
        Command::ClusterPut(a) => runtime.block_on(cluster_put::run(a))?,
        Command::RegionOps(a) => runtime.block_on(region_ops::run(a))?,
        Command::Repair(a) => runtime.block_on(repair::run(a))?,
        Command::RouterCost(a) => runtime.block_on(router_cost::run(a))?,
        Command::Ycsb(a) => return runtime.block_on(interruptible(ycsb::run(a, args.json))),
        Command::Compare(a) => return runtime.block_on(interruptible(compare::run(a, args.json))),
        Command::YcsbScale(a) => return runtime.block_on(interruptible(scale::run(a, args.json))),
        Command::Merge(a) => return runtime.block_on(interruptible(merge::run(a, args.json))),
        Command::HotRange(a) => {
            return runtime.block_on(interruptible(hot_range::run(a, args.json)))
        }
        Command::IdleRegions(a) => {
            return runtime.block_on(interruptible(idle_regions::run(a, args.json)))
        }
        Command::Overload(a) => {
            return runtime.block_on(interruptible(overload::run(a, args.json)))
        }
    };
    report.print(args.json);
    Ok(())
}
