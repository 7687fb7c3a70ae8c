//! The directory's metrics (names and units; histograms get explicit
//! buckets from [`histogram_buckets`]).

pub const REGIONS: &str = "tessera_directory_regions";
/// Stores by lifecycle state (label `state`).
pub const STORES: &str = "tessera_directory_stores";
/// Operators by kind (label `kind`) and what became of them (label
/// `outcome`: created, finished, timed_out, cancelled).
pub const OPERATORS_TOTAL: &str = "tessera_directory_operators_total";
/// Region reports ignored because a newer Raft term was already
/// reported (a deposed leader still reporting).
pub const STALE_REPORTS_TOTAL: &str = "tessera_directory_stale_region_reports_total";
/// Seconds spent handling one region or store heartbeat.
pub const HEARTBEAT_SECONDS: &str = "tessera_directory_heartbeat_seconds";
/// Seconds from proposing a command to its apply.
pub const RAFT_COMMIT_SECONDS: &str = "tessera_directory_raft_commit_seconds";
/// Seconds one scheduler round took (it paces itself by this).
pub const SCHEDULE_ROUND_SECONDS: &str = "tessera_directory_schedule_round_seconds";
/// 1 on the member that leads the directory group.
pub const IS_LEADER: &str = "tessera_directory_is_leader";

/// Registers help text for the directory's metrics and those of its Raft
/// group (see [`tessera_multiraft::metrics::describe`]).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    tessera_multiraft::metrics::describe();
    describe_gauge!(REGIONS, "Regions in the cluster's metadata");
    describe_gauge!(STORES, "Stores by lifecycle state (label state)");
    describe_counter!(
        OPERATORS_TOTAL,
        "Scheduler operators by kind and outcome (created, finished, timed_out, cancelled)"
    );
    describe_counter!(
        STALE_REPORTS_TOTAL,
        "Region reports ignored because a newer Raft term was already reported (a deposed leader still reporting)"
    );
    describe_histogram!(
        HEARTBEAT_SECONDS,
        Unit::Seconds,
        "Seconds spent handling one region or store heartbeat"
    );
    describe_histogram!(
        RAFT_COMMIT_SECONDS,
        Unit::Seconds,
        "Seconds from proposing a directory command to its apply"
    );
    describe_histogram!(
        SCHEDULE_ROUND_SECONDS,
        Unit::Seconds,
        "Seconds one scheduler round took (rounds are spaced so they use at most a tenth of the leader's time)"
    );
    describe_gauge!(
        IS_LEADER,
        "1 on the member that leads the directory group, else 0"
    );
}

pub fn histogram_buckets() -> Vec<(&'static str, Vec<f64>)> {
    let seconds = vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    let mut all = tessera_multiraft::metrics::histogram_buckets();
    all.push((HEARTBEAT_SECONDS, seconds.clone()));
    all.push((RAFT_COMMIT_SECONDS, seconds.clone()));
    let mut round = seconds;
    round.extend([2.5, 5.0, 10.0]);
    all.push((SCHEDULE_ROUND_SECONDS, round));
    all
}
