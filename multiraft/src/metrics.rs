//! Names and units of the metrics this crate records. Histograms get
//! explicit buckets from the process that installs the Prometheus exporter
//! (see [`histogram_buckets`]); none of them carries a region id label.

/// Seconds of one poller round, from draining the mailbox to the last
/// callback.
pub const POLLER_ROUND_SECONDS: &str = "tessera_poller_round_seconds";
/// Seconds of one synced engine write (the fsync of a group commit).
pub const FSYNC_SECONDS: &str = "tessera_fsync_seconds";
/// Poller rounds slower than `RaftConfig::slow_round`.
pub const SLOW_ROUNDS_TOTAL: &str = "tessera_poller_slow_rounds_total";
/// Leaderships handed away after slow rounds.
pub const SLOW_ROUND_HANDOFFS_TOTAL: &str = "tessera_poller_slow_round_handoffs_total";
/// Engine writes that failed and stopped the poller for good.
pub const ENGINE_FAILURES_TOTAL: &str = "tessera_engine_failures_total";
/// Bytes in one synced Raft write batch.
pub const WRITE_BATCH_BYTES: &str = "tessera_raft_write_batch_bytes";
/// Regions whose Ready state shared one synced Raft write batch.
pub const WRITE_BATCH_REGIONS: &str = "tessera_raft_write_batch_regions";
/// Proposals accepted by a leader.
pub const PROPOSALS_TOTAL: &str = "tessera_proposals_total";
/// Proposals refused before reaching the log (not leader, stale epoch, ...).
pub const PROPOSALS_REJECTED_TOTAL: &str = "tessera_proposals_rejected_total";
/// Committed entries applied to a state machine.
pub const APPLIED_ENTRIES_TOTAL: &str = "tessera_applied_entries_total";
/// Reads served, by path: `local` (a lease read decided on the request's
/// task, `local_read.rs`), `stale` (a stale read served from a recent safe
/// point on the request's task), `lease` (on the poller) or `read_index`.
pub const READS_TOTAL: &str = "tessera_reads_total";
/// Raft messages sent to other stores.
pub const RAFT_MESSAGES_SENT_TOTAL: &str = "tessera_raft_messages_sent_total";
/// Leader heartbeats not sent because the follower had an append within the
/// heartbeat interval.
pub const RAFT_HEARTBEATS_SKIPPED_TOTAL: &str = "tessera_raft_heartbeats_skipped_total";
/// Raft messages received from other stores.
pub const RAFT_MESSAGES_RECEIVED_TOTAL: &str = "tessera_raft_messages_received_total";
/// Raft messages dropped by the transport (peer store unreachable or slow).
pub const RAFT_MESSAGES_DROPPED_TOTAL: &str = "tessera_raft_messages_dropped_total";
/// Snapshots generated, and the seconds each took.
pub const SNAPSHOTS_GENERATED_TOTAL: &str = "tessera_snapshots_generated_total";
pub const SNAPSHOT_GENERATE_SECONDS: &str = "tessera_snapshot_generate_seconds";
/// Snapshots sent to other stores, their bytes and the seconds each took.
pub const SNAPSHOTS_SENT_TOTAL: &str = "tessera_snapshots_sent_total";
pub const SNAPSHOT_SENT_BYTES_TOTAL: &str = "tessera_snapshot_sent_bytes_total";
pub const SNAPSHOT_SEND_SECONDS: &str = "tessera_snapshot_send_seconds";
/// Snapshots received from other stores, their bytes and seconds.
pub const SNAPSHOTS_RECEIVED_TOTAL: &str = "tessera_snapshots_received_total";
pub const SNAPSHOT_RECEIVED_BYTES_TOTAL: &str = "tessera_snapshot_received_bytes_total";
pub const SNAPSHOT_RECEIVE_SECONDS: &str = "tessera_snapshot_receive_seconds";
/// Snapshots applied, and the seconds each took.
pub const SNAPSHOTS_APPLIED_TOTAL: &str = "tessera_snapshots_applied_total";
pub const SNAPSHOT_APPLY_SECONDS: &str = "tessera_snapshot_apply_seconds";
/// Membership changes applied.
pub const CONF_CHANGES_TOTAL: &str = "tessera_conf_changes_total";
/// Splits applied (one per region split, on every replica).
pub const SPLITS_TOTAL: &str = "tessera_splits_total";
/// Merges applied, by outcome (`merged` on every target replica,
/// `rolled_back` on every source replica).
pub const MERGES_TOTAL: &str = "tessera_merges_total";
/// Target replicas holding their committed entries until their local
/// merge source is ready (`crate::merge`).
pub const MERGE_HOLDS: &str = "tessera_merge_holds";
/// Raft log compactions applied, and the entries they dropped.
pub const LOG_GC_TOTAL: &str = "tessera_raft_log_gc_total";
pub const LOG_GC_ENTRIES_TOTAL: &str = "tessera_raft_log_gc_entries_total";
/// Raft log entries kept, summed over the store's regions.
pub const RAFT_LOG_ENTRIES: &str = "tessera_raft_log_entries";
/// Approximate bytes of Raft log kept, summed over the store's regions.
pub const RAFT_LOG_BYTES: &str = "tessera_raft_log_bytes";
/// Tombstone messages (a claim that a local peer was removed) by what was
/// done with them (`outcome`): `reported` to the store's removal checker,
/// `checker_busy`, `stale`, `unconfirmable`, `uninitialized_kept`.
pub const TOMBSTONE_MESSAGES_TOTAL: &str = "tessera_raft_tombstone_messages_total";
/// Messages for a peer of a region whose local peer has another id, by what
/// was done with them (`outcome`): from a newer membership, the local peer
/// was likely removed and is `reported` to the removal checker (or
/// `checker_busy`, `unconfirmable`, `uninitialized_kept`); from an older or
/// the same one, `stale` (dropped).
pub const SUPERSEDED_PEER_MESSAGES_TOTAL: &str = "tessera_raft_superseded_peer_messages_total";
/// Raft messages from other nodes refused before they reached raft-rs,
/// because stepping them would break an invariant raft-rs aborts on, or
/// because a snapshot's files did not pass their checks (`reason`).
pub const RAFT_MESSAGES_REFUSED_TOTAL: &str = "tessera_raft_messages_refused_total";
/// Every `reason` of [`RAFT_MESSAGES_REFUSED_TOTAL`] (exported at 0).
pub const REFUSAL_REASONS: &[&str] = &[
    "heartbeat_commit_past_log",
    "append_not_contiguous",
    "read_index_without_one_context",
    "append_response_past_log",
    "snapshot_invalid_configuration",
    "snapshot_undecodable",
    "snapshot_other_region",
    "snapshot_not_received",
    "snapshot_files_refused",
    "unknown_hibernation",
];
/// Peers reloaded from their durable state because raft-rs panicked on a
/// message or a received snapshot could not be staged (`reason`): the
/// region's in-memory state is dropped, as after a restart of that region
/// alone, instead of the store aborting.
pub const REGION_RELOADS_TOTAL: &str = "tessera_region_reloads_total";
/// Peers waiting for their first snapshot, created by messages from
/// regions this store held nothing of, by `outcome`: `created`, `refused`
/// (the limit was reached), `collected` (dropped after their time).
pub const UNINITIALIZED_PEERS_TOTAL: &str = "tessera_uninitialized_peers_total";
/// Peers waiting for their first snapshot now.
pub const UNINITIALIZED_PEERS: &str = "tessera_uninitialized_peers";
/// Regions hosted by this store.
pub const REGIONS: &str = "tessera_regions";
/// Regions whose leader is on this store.
pub const LEADERS: &str = "tessera_leaders";
/// Peers of this store that hibernate (`crate::hibernate`): they do not
/// tick.
pub const HIBERNATING_REGIONS: &str = "tessera_raft_hibernating_regions";
/// Peers that woke from hibernation.
pub const REGION_WAKEUPS_TOTAL: &str = "tessera_raft_region_wakeups_total";

/// Registers the help text and unit of every metric above with the
/// installed recorder (Prometheus `# HELP` lines), and exports the
/// unlabelled counters at 0 from the start so alerts and dashboards see
/// them before their first increment.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        SLOW_ROUNDS_TOTAL,
        "Poller rounds slower than the slow-round bound (a slow disk?); each degrades the store"
    );
    describe_counter!(
        SLOW_ROUND_HANDOFFS_TOTAL,
        "Leaderships handed to another voter because this store's poller rounds were slow"
    );
    describe_counter!(
        ENGINE_FAILURES_TOTAL,
        "Engine writes that failed and stopped the poller for good (the process then exits once)"
    );
    describe_histogram!(
        POLLER_ROUND_SECONDS,
        Unit::Seconds,
        "Seconds of one poller round, from draining the mailbox to the last callback"
    );
    describe_histogram!(
        FSYNC_SECONDS,
        Unit::Seconds,
        "Seconds of one synced Raft write (the fsync of a group commit)"
    );
    describe_histogram!(
        WRITE_BATCH_BYTES,
        Unit::Bytes,
        "Bytes in one synced Raft write batch"
    );
    describe_histogram!(
        WRITE_BATCH_REGIONS,
        "Regions whose Ready state shared one synced Raft write batch"
    );
    describe_counter!(PROPOSALS_TOTAL, "Proposals accepted by a leader");
    describe_counter!(
        PROPOSALS_REJECTED_TOTAL,
        "Proposals refused before reaching the log (not leader, stale epoch, busy)"
    );
    describe_counter!(
        APPLIED_ENTRIES_TOTAL,
        "Committed Raft entries applied to a state machine"
    );
    describe_counter!(
        READS_TOTAL,
        "Reads served, by path (local, stale, lease or read_index)"
    );
    describe_counter!(
        RAFT_MESSAGES_SENT_TOTAL,
        "Raft messages sent to other stores"
    );
    describe_counter!(
        RAFT_HEARTBEATS_SKIPPED_TOTAL,
        "Leader heartbeats not sent because the follower had an append within the heartbeat interval"
    );
    describe_counter!(
        RAFT_MESSAGES_RECEIVED_TOTAL,
        "Raft messages received from other stores"
    );
    describe_counter!(
        RAFT_MESSAGES_DROPPED_TOTAL,
        "Raft messages dropped by the transport (peer unreachable or slow)"
    );
    describe_counter!(SNAPSHOTS_GENERATED_TOTAL, "Region snapshots generated");
    describe_histogram!(
        SNAPSHOT_GENERATE_SECONDS,
        Unit::Seconds,
        "Seconds to generate one region snapshot"
    );
    describe_counter!(
        SNAPSHOTS_SENT_TOTAL,
        "Region snapshots sent to other stores"
    );
    describe_counter!(
        SNAPSHOT_SENT_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of region snapshots sent"
    );
    describe_histogram!(
        SNAPSHOT_SEND_SECONDS,
        Unit::Seconds,
        "Seconds to send one region snapshot"
    );
    describe_counter!(
        SNAPSHOTS_RECEIVED_TOTAL,
        "Region snapshots received from other stores"
    );
    describe_counter!(
        SNAPSHOT_RECEIVED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of region snapshots received"
    );
    describe_histogram!(
        SNAPSHOT_RECEIVE_SECONDS,
        Unit::Seconds,
        "Seconds to receive one region snapshot"
    );
    describe_counter!(SNAPSHOTS_APPLIED_TOTAL, "Region snapshots applied");
    describe_histogram!(
        SNAPSHOT_APPLY_SECONDS,
        Unit::Seconds,
        "Seconds to apply one region snapshot"
    );
    describe_counter!(CONF_CHANGES_TOTAL, "Raft membership changes applied");
    describe_counter!(
        SPLITS_TOTAL,
        "Region splits applied (one per split, on every replica)"
    );
    describe_counter!(
        MERGES_TOTAL,
        "Region merges applied, by outcome (merged on targets, rolled_back on sources)"
    );
    describe_gauge!(
        MERGE_HOLDS,
        "Target replicas waiting for their local merge source to be ready"
    );
    describe_counter!(LOG_GC_TOTAL, "Raft log compactions applied");
    describe_counter!(
        LOG_GC_ENTRIES_TOTAL,
        "Raft log entries dropped by compactions"
    );
    describe_gauge!(
        RAFT_LOG_ENTRIES,
        "Raft log entries kept, summed over the store's regions"
    );
    describe_gauge!(
        RAFT_LOG_BYTES,
        Unit::Bytes,
        "Approximate bytes of Raft log kept, summed over the store's regions"
    );
    describe_counter!(
        TOMBSTONE_MESSAGES_TOTAL,
        "Tombstone messages received, by what was done with them (a peer is destroyed only once the directory confirms)"
    );
    describe_counter!(
        SUPERSEDED_PEER_MESSAGES_TOTAL,
        "Messages for another peer of a local region, by what was done with them (one from a newer membership reports the local peer to the removal checker)"
    );
    describe_counter!(
        RAFT_MESSAGES_REFUSED_TOTAL,
        "Raft messages from other nodes refused before reaching raft-rs, by reason"
    );
    describe_counter!(
        REGION_RELOADS_TOTAL,
        "Peers reloaded from their durable state after raft-rs panicked on a message or a snapshot could not be staged"
    );
    describe_gauge!(REGIONS, "Regions with a replica on this store");
    describe_counter!(
        UNINITIALIZED_PEERS_TOTAL,
        "Peers created for messages from regions this store held nothing of, refused over the limit, or dropped after waiting too long for their snapshot"
    );
    describe_gauge!(
        UNINITIALIZED_PEERS,
        "Peers waiting for their first snapshot"
    );
    describe_gauge!(LEADERS, "Regions whose leader is on this store");
    describe_gauge!(
        HIBERNATING_REGIONS,
        "Peers of this store that hibernate (do not tick)"
    );
    describe_counter!(
        REGION_WAKEUPS_TOTAL,
        "Peers of this store that woke from hibernation"
    );
    for name in [
        PROPOSALS_TOTAL,
        PROPOSALS_REJECTED_TOTAL,
        APPLIED_ENTRIES_TOTAL,
        RAFT_MESSAGES_SENT_TOTAL,
        RAFT_HEARTBEATS_SKIPPED_TOTAL,
        RAFT_MESSAGES_RECEIVED_TOTAL,
        RAFT_MESSAGES_DROPPED_TOTAL,
        SNAPSHOTS_GENERATED_TOTAL,
        SNAPSHOTS_SENT_TOTAL,
        SNAPSHOT_SENT_BYTES_TOTAL,
        SNAPSHOTS_RECEIVED_TOTAL,
        SNAPSHOT_RECEIVED_BYTES_TOTAL,
        SNAPSHOTS_APPLIED_TOTAL,
        CONF_CHANGES_TOTAL,
        SPLITS_TOTAL,
        LOG_GC_TOTAL,
        LOG_GC_ENTRIES_TOTAL,
        REGION_WAKEUPS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
    for outcome in ["merged", "rolled_back"] {
        metrics::counter!(MERGES_TOTAL, "outcome" => outcome).increment(0);
    }
    for reason in REFUSAL_REASONS {
        metrics::counter!(RAFT_MESSAGES_REFUSED_TOTAL, "reason" => *reason).increment(0);
    }
    for reason in ["step_panicked", "snapshot_not_staged"] {
        metrics::counter!(REGION_RELOADS_TOTAL, "reason" => reason).increment(0);
    }
    for outcome in ["created", "refused", "collected"] {
        metrics::counter!(UNINITIALIZED_PEERS_TOTAL, "outcome" => outcome).increment(0);
    }
}

/// Explicit histogram buckets by metric, for the Prometheus exporter (whose
/// default is a summary).
pub fn histogram_buckets() -> Vec<(&'static str, Vec<f64>)> {
    let seconds = vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    let bytes = (0..12).map(|i| 256.0 * 4f64.powi(i)).collect::<Vec<_>>();
    let regions = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
    vec![
        (POLLER_ROUND_SECONDS, seconds.clone()),
        (FSYNC_SECONDS, seconds.clone()),
        (SNAPSHOT_GENERATE_SECONDS, seconds.clone()),
        (SNAPSHOT_SEND_SECONDS, seconds.clone()),
        (SNAPSHOT_RECEIVE_SECONDS, seconds.clone()),
        (SNAPSHOT_APPLY_SECONDS, seconds),
        (WRITE_BATCH_BYTES, bytes),
        (WRITE_BATCH_REGIONS, regions),
    ]
}
