//! The CI-sized nemesis suite: short runs on a real multi-process cluster
//! (3 directories, 5 stores, 2 routers), each with its own seed and a mix
//! of nemeses, checked for linearizability and lost writes. Between them
//! the runs cover every nemesis kind; each test asserts that every nemesis
//! of its mix actually struck and that the workload made progress, so a
//! run that silently did nothing fails. Hibernation is on, with regions
//! asleep 200 ms after their last request, and each run must have woken
//! hibernating regions.
//!
//! The negative controls switch the stores to unsafe reads, or slow a
//! cut-off leader's clock beyond the lease's drift bound, and must be
//! caught. A failing run prints the seed: `tessera-nemesis --seed N
//! --nemesis ...` replays its schedule.
#![cfg(feature = "failpoints")]

use std::collections::BTreeSet;
use std::time::Duration;

use tessera_nemesis::faults::Nemesis;
use tessera_nemesis::run::{self, RunResult, RunSpec};
use tessera_nemesis::workload::ReadPath;

fn spec(seed: u64, secs: u64, mix: &[Nemesis]) -> RunSpec {
    let mut s = RunSpec::new(seed, Duration::from_secs(secs));
    s.schedule.mix = mix.to_vec();
    s.schedule.fault_min = Duration::from_secs(2);
    s.schedule.fault_max = Duration::from_secs(4);
    s.out_dir = std::env::var_os("TESSERA_NEMESIS_OUT")
        .map(|d| std::path::PathBuf::from(d).join(format!("seed-{seed}")));
    s
}

async fn run_and_check(spec: RunSpec) -> RunResult {
    let seed = spec.seed;
    let mix = spec.schedule.mix.clone();
    let r = run::run(spec, None)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: the run failed: {e:#}"));
    let struck: BTreeSet<String> = r
        .events
        .iter()
        .filter_map(|e| e.nemesis.map(|n| format!("{n:?}")))
        .collect();
    for n in &mix {
        assert!(
            struck.contains(&format!("{n:?}")),
            "seed {seed}: nemesis {n:?} never struck; events: {:#?}",
            r.events
        );
    }
    r
}

/// Every one of `what` is part of some event's description.
fn assert_events_say(seed: u64, r: &RunResult, what: &[&str]) {
    for done in what {
        assert!(
            r.events.iter().any(|e| e.what.contains(done)),
            "seed {seed}: no event says {done:?}: {:#?}",
            r.events
        );
    }
}

fn assert_clean(seed: u64, r: &RunResult) {
    assert!(
        r.report.is_ok(),
        "seed {seed}: violations found:\n{}\nevents: {:#?}\n{}",
        r.report,
        r.events,
        r.tails
    );
    assert!(
        r.report.counts.ok >= 200,
        "seed {seed}: too little progress to prove anything:\n{}",
        r.report
    );
    // Hibernation is on (regions sleep 200 ms after their last request):
    // the run must have put regions to sleep and woken them.
    assert!(
        r.wakeups > 0,
        "seed {seed}: no region hibernated and woke during the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_and_pauses_lose_nothing_and_stay_linearizable() {
    let seed = 11;
    let r = run_and_check(spec(
        seed,
        30,
        &[
            Nemesis::KillStore,
            Nemesis::KillDirectory,
            Nemesis::KillRouter,
            Nemesis::Pause,
        ],
    ))
    .await;
    assert_clean(seed, &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_lose_nothing_and_stay_linearizable() {
    let seed = 22;
    let r = run_and_check(spec(
        seed,
        25,
        &[
            Nemesis::PartitionMajority,
            Nemesis::PartitionBridge,
            Nemesis::IsolateLeader,
        ],
    ))
    .await;
    assert_clean(seed, &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_storms_splits_merges_and_moves_stay_linearizable() {
    let seed = 33;
    let r = run_and_check(spec(
        seed,
        25,
        &[
            Nemesis::TransferStorm,
            Nemesis::SplitMove,
            Nemesis::Merge,
            Nemesis::MoveStore,
        ],
    ))
    .await;
    assert_clean(seed, &r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_stay_linearizable_under_partitions() {
    let seed = 44;
    let mut s = spec(
        seed,
        20,
        &[Nemesis::PartitionMajority, Nemesis::IsolateLeader],
    );
    s.workload.read_path = ReadPath::AnyReplica;
    let r = run_and_check(s).await;
    assert_clean(seed, &r);
}

/// The SDK in direct mode: no router between the clients and the stores,
/// so the clients' own region cache, leader hints and "was it sent" rule
/// face the kills, partitions, splits and leader moves. The clients take
/// turns reading from leaders, with follower consistency (any voter
/// serves; both checked for linearizability) and stale at 200 ms (checked
/// for bounded staleness).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_mode_clients_stay_linearizable_under_kills_partitions_and_splits() {
    let seed = 77;
    let mut s = spec(
        seed,
        25,
        &[
            Nemesis::KillStore,
            Nemesis::PartitionMajority,
            Nemesis::SplitMove,
            Nemesis::Merge,
            Nemesis::TransferStorm,
        ],
    );
    s.workload.direct = true;
    s.workload.follower_reads = true;
    s.workload.stale_reads = Some(Duration::from_millis(200));
    let r = run_and_check(s).await;
    assert_clean(seed, &r);
    assert!(
        r.report.counts.stale_reads >= 50,
        "seed {seed}: too few stale reads to prove anything:\n{}",
        r.report
    );
}

/// Links cut from outside the processes, every process on a network host
/// of its own (network namespaces: root, as CI runs): groups of directory
/// members, stores and routers cut apart, a store cut from the directory, a
/// router from a region leader's store, the clients from a router.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_cuts_from_outside_lose_nothing_and_stay_linearizable() {
    let seed = 88;
    let r = run_and_check(spec(
        seed,
        30,
        &[
            Nemesis::PartitionLinks,
            Nemesis::IsolateFromDirectory,
            Nemesis::RouterStoreCut,
            Nemesis::ClientRouterCut,
        ],
    ))
    .await;
    // A nemesis that could not be carried out still "struck": these are
    // the events of the cuts themselves.
    assert_events_say(
        seed,
        &r,
        &[
            "cut every link between",
            "from every directory member",
            "(a region leader's)",
            "cut the clients from",
        ],
    );
    assert_clean(seed, &r);
}

/// Direct-mode clients (leader and follower reads) under link cuts and
/// kills on network hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_mode_clients_stay_linearizable_under_link_cuts() {
    let seed = 99;
    let mut s = spec(
        seed,
        25,
        &[
            Nemesis::PartitionLinks,
            Nemesis::IsolateFromDirectory,
            Nemesis::KillStore,
        ],
    );
    s.workload.direct = true;
    s.workload.follower_reads = true;
    let r = run_and_check(s).await;
    assert_clean(seed, &r);
}

/// Slow, duplicating and reordering Raft links between stores, and
/// clocks skewed within the lease's drift bound (a leader slowed and cut
/// from its followers among them), with splits and moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_faults_and_clock_skew_lose_nothing_and_stay_linearizable() {
    let seed = 111;
    let r = run_and_check(spec(
        seed,
        30,
        &[
            Nemesis::Delay,
            Nemesis::Duplicate,
            Nemesis::Reorder,
            Nemesis::ClockSkew,
            Nemesis::SplitMove,
        ],
    ))
    .await;
    assert_events_say(
        seed,
        &r,
        &[
            "delay=",
            "duplicate=",
            "reorder=",
            "clock of",
            "(a region leader): rate=",
        ],
    );
    assert_clean(seed, &r);
}

/// Direct-mode clients with follower and stale reads (the safe points and
/// leases a skewed clock could break) under clock skew, reordering and
/// merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_mode_clients_stay_linearizable_under_clock_skew_and_reordering() {
    let seed = 122;
    let mut s = spec(
        seed,
        25,
        &[Nemesis::ClockSkew, Nemesis::Reorder, Nemesis::Merge],
    );
    s.workload.direct = true;
    s.workload.follower_reads = true;
    s.workload.stale_reads = Some(Duration::from_millis(500));
    // A replica's clock 10% slow judges a safe point 10% younger than it
    // is: a stale read's bound holds within the clocks' drift.
    s.check.stale_slack = Duration::from_millis(75);
    let r = run_and_check(s).await;
    assert_events_say(seed, &r, &["(a region leader): rate=", "reorder="]);
    assert_clean(seed, &r);
    assert!(
        r.report.stale_reads.is_empty(),
        "seed {seed}: stale reads past their bound:\n{}",
        r.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_and_stalled_disks_lose_nothing_and_stay_linearizable() {
    // disk-full puts the stores on tmpfs file systems: this needs root.
    let seed = 66;
    let r = run_and_check(spec(seed, 25, &[Nemesis::DiskFull, Nemesis::DiskStall])).await;
    assert_events_say(
        seed,
        &r,
        &[
            "fill the disks of stores",
            "free the disks of stores",
            "takes",
        ],
    );
    assert_clean(seed, &r);
}

/// The negative control: reads served by any replica from whatever it has
/// applied, while stores are partitioned away, return stale values. A
/// checker that let this pass would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_the_stale_reads_of_unsafe_read_mode() {
    let seed = 55;
    let mut s = spec(seed, 20, &[Nemesis::PartitionMajority]);
    s.unsafe_reads = true;
    let r = run_and_check(s).await;
    assert!(
        !r.report.is_ok(),
        "seed {seed}: unsafe reads under partitions went unnoticed:\n{}",
        r.report
    );
    println!("{}", r.report);
}

/// The negative control of the staleness check: with unsafe reads, a
/// stale read is served from whatever a partitioned replica has applied,
/// however old; the check must see reads past their bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_stale_reads_past_their_bound_in_unsafe_read_mode() {
    let seed = 56;
    let mut s = spec(seed, 20, &[Nemesis::PartitionMajority]);
    s.unsafe_reads = true;
    s.workload.direct = true;
    s.workload.stale_reads = Some(Duration::from_millis(50));
    let r = run_and_check(s).await;
    assert!(
        !r.report.stale_reads.is_empty(),
        "seed {seed}: stale reads past their bound went unnoticed:\n{}",
        r.report
    );
    println!("{}", r.report);
}

/// The negative control of clock skew: the leader of the clients' region,
/// its clock at a twentieth of real speed — far beyond the drift bound —
/// and cut from its followers and from one router, keeps its lease long
/// after the followers have elected another leader and that router's
/// clients write through it; the other router's clients (pinned to it,
/// their writes timing out after 1 s) read stale values from the old
/// leader. The checker must catch them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_the_stale_lease_reads_of_a_leader_whose_clock_runs_too_slow() {
    let seed = 57;
    let mut s = spec(seed, 30, &[Nemesis::ClockSkew]);
    s.schedule.unsafe_clock_rate = Some(0.05);
    s.workload.pin_routers = true;
    s.workload.op_timeout = Duration::from_secs(1);
    let r = run_and_check(s).await;
    assert_events_say(seed, &r, &["(a region leader): rate=0.05"]);
    assert!(
        !r.report.is_ok(),
        "seed {seed}: stale lease reads of a slow-clocked leader went unnoticed:\n{}",
        r.report
    );
    println!("{}", r.report);
}
