//! The store's own metrics, beside those of its Raft groups
//! (`tessera_multiraft::metrics`).

/// Bytes of the file system holding the store's data directory.
pub const CAPACITY_BYTES: &str = "tessera_store_capacity_bytes";
/// Bytes still available on that file system.
pub const AVAILABLE_BYTES: &str = "tessera_store_available_bytes";

/// 1 while the poller has been stuck in one round past the stall bound.
pub const DISK_STALLED: &str = "tessera_store_disk_stalled";
/// Stalls seen (the poller stuck past the bound).
pub const DISK_STALLS_TOTAL: &str = "tessera_store_disk_stalls_total";
/// 1 while a recent poller round was slow.
pub const DEGRADED: &str = "tessera_store_degraded";

/// Registers help text for the store's metrics and its Raft groups'.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    tessera_multiraft::metrics::describe();
    describe_gauge!(
        CAPACITY_BYTES,
        Unit::Bytes,
        "Bytes of the file system holding the store's data directory"
    );
    describe_gauge!(
        AVAILABLE_BYTES,
        Unit::Bytes,
        "Bytes still available on the file system holding the store's data"
    );
    describe_gauge!(
        DISK_STALLED,
        "1 while the poller has been stuck in one round past disk_stall_timeout_ms (a stalled disk); /ready fails meanwhile"
    );
    describe_counter!(
        DISK_STALLS_TOTAL,
        "Times the poller was seen stuck in one round past disk_stall_timeout_ms"
    );
    describe_gauge!(
        DEGRADED,
        "1 while a poller round slower than slow_round_ms happened in the last 30 s (leaderships are handed away)"
    );
}
