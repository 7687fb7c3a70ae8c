//! One nemesis run, start to verdict: start the cluster, run the workload
//! while the nemeses strike, heal, read every key once more, check the
//! history, and write the history (JSON lines), the events, the report and
//! the recovery times (`recovery.rs`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::check::{self, Report};
use crate::cluster::{ClusterSpec, NemesisCluster};
use crate::faults::{self, Event, ScheduleSpec};
use crate::history::{self, Recorder};
use crate::recovery::{self, Recovery};
use crate::workload::{self, ReadPath, WorkloadSpec};

/// The tmpfs each store gets when the mix has `disk-full` and the spec
/// names no size (mounting needs root).
pub const DISK_FULL_STORE_MIB: u64 = 256;

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub seed: u64,
    pub duration: Duration,
    pub cluster: ClusterSpec,
    pub workload: WorkloadSpec,
    pub schedule: ScheduleSpec,
    /// The negative control: reads skip lease and ReadIndex on every store
    /// and go to random replicas. The checker must report violations.
    pub unsafe_reads: bool,
    /// Where to write `history.jsonl`, `events.json` and `report.json`.
    pub out_dir: Option<PathBuf>,
    /// Limits of the linearizability search.
    pub check: check::CheckOptions,
}

impl RunSpec {
    pub fn new(seed: u64, duration: Duration) -> Self {
        RunSpec {
            seed,
            duration,
            cluster: ClusterSpec::default(),
            workload: WorkloadSpec::default(),
            schedule: ScheduleSpec::default(),
            unsafe_reads: false,
            out_dir: None,
            check: check::CheckOptions::default(),
        }
    }
}

pub struct RunResult {
    pub report: Report,
    pub events: Vec<Event>,
    /// The processes' last log lines, for a failing test's message.
    pub tails: String,
    /// How fast writes came back after each kind of fault.
    pub recovery: Vec<Recovery>,
    /// Peers that woke from hibernation during the run, summed over the
    /// stores running at its end (a restarted store counts from its
    /// restart): shows that regions slept and woke under the faults.
    pub wakeups: u64,
}

/// Progress of a run, for a progress bar: (phase, operations so far).
pub type Progress = watch::Receiver<(String, usize)>;

pub async fn run(
    spec: RunSpec,
    progress: Option<watch::Sender<(String, usize)>>,
) -> anyhow::Result<RunResult> {
    let say = |phase: &str, ops: usize| {
        if let Some(p) = &progress {
            let _ = p.send((phase.to_string(), ops));
        }
    };
    say("starting the cluster", 0);
    let mut cluster_spec = spec.cluster.clone();
    if spec.schedule.mix.contains(&faults::Nemesis::DiskFull) {
        // Filling a disk needs one of its own.
        cluster_spec
            .store_disk_mib
            .get_or_insert(DISK_FULL_STORE_MIB);
    }
    if spec.schedule.mix.iter().any(|n| n.needs_network_hosts()) {
        // Links are cut between network hosts.
        cluster_spec.network_hosts = true;
    }
    let mut cluster = NemesisCluster::start(&cluster_spec).await?;
    let mut workload_spec = spec.workload.clone();
    if spec.unsafe_reads {
        cluster.set_unsafe_reads(true)?;
        workload_spec.read_path = ReadPath::AnyReplica;
    }
    let recorder = Recorder::new();
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let routers = cluster.router_addrs();
    let directory = cluster.e2e.directory_addrs();
    let workload = tokio::spawn(workload::run(
        routers.clone(),
        directory,
        cluster.e2e.security(),
        workload_spec.clone(),
        spec.seed,
        recorder.clone(),
        stop_rx.clone(),
    ));
    let (current_tx, current_rx) = watch::channel(String::from("quiet"));
    let ticker = {
        let recorder = recorder.clone();
        let progress = progress.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Some(p) = &progress {
                    let ops = recorder.history().len();
                    let _ = p.send((format!("nemesis: {}", current_rx.borrow().clone()), ops));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        })
    };
    let (nemesis_stop_tx, nemesis_stop_rx) = watch::channel(false);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(spec.duration).await;
        let _ = nemesis_stop_tx.send(true);
    });
    let events = faults::run(
        &mut cluster,
        &spec.schedule,
        spec.seed,
        started,
        nemesis_stop_rx,
        current_tx,
    )
    .await;
    let _ = stopper.await;
    let events = match events {
        Ok(e) => e,
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e.context(cluster.tails(30)));
        }
    };
    // Healed: let the workload see the whole cluster for a moment, then stop.
    say("healed; draining the workload", recorder.history().len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    workload
        .await
        .context("the workload task panicked")?
        .context("the workload failed")?;
    if spec.unsafe_reads {
        cluster.set_unsafe_reads(false)?;
    }
    say("final reads", recorder.history().len());
    if let Err(e) = workload::final_reads(
        &routers,
        &cluster.e2e.security(),
        workload_spec.keys,
        &recorder,
        Duration::from_secs(60),
    )
    .await
    {
        return Err(e.context(cluster.tails(30)));
    }
    let wakeups = cluster.store_metric_sum("tessera_raft_region_wakeups_total") as u64;
    let ops = recorder.finish().context("recording the history")?;
    say("checking", ops.len());
    let checked = ops.clone();
    let check_options = spec.check.clone();
    let report = tokio::task::spawn_blocking(move || check::check(&checked, &check_options))
        .await
        .context("the checker panicked")?
        .context("the history is malformed")?;
    let tails = cluster.tails(20);
    let recovery = recovery::recovery(&events, &ops);
    if let Some(dir) = &spec.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        history::write_history(dir.join("history.jsonl"), &ops).context("writing the history")?;
        std::fs::write(dir.join("events.json"), serde_json::to_vec_pretty(&events)?)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
        std::fs::write(
            dir.join("recovery.json"),
            serde_json::to_vec_pretty(&recovery)?,
        )?;
        std::fs::write(dir.join("logs.txt"), &tails)?;
    }
    Ok(RunResult {
        report,
        events,
        tails,
        recovery,
        wakeups,
    })
}
