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
/// 1 while the store is below its free-space threshold (NOSPACE).
pub const LOW_SPACE: &str = "tessera_store_low_space";
/// Bytes of the reserve file now held.
pub const RESERVE_BYTES: &str = "tessera_store_reserve_bytes";

/// Messages of `BatchCommands` streams, by `direction` (`in`, `out`).
pub const STREAM_MESSAGES_TOTAL: &str = "tessera_kv_stream_messages_total";
/// Requests carried in `BatchCommands` streams.
pub const STREAM_REQUESTS_TOTAL: &str = "tessera_kv_stream_requests_total";
/// Writes that shared one Raft entry with other writes of their message.
pub const MERGED_WRITES_TOTAL: &str = "tessera_kv_merged_writes_total";
/// Keys this store read or wrote for clients, by `op` (`read`, `write`):
/// the load the directory balances (`load.rs`).
pub const SERVED_KEYS_TOTAL: &str = "tessera_kv_served_keys_total";
/// Bytes of keys and values this store read or wrote for clients, by `op`.
pub const SERVED_BYTES_TOTAL: &str = "tessera_kv_served_bytes_total";

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
        "Bytes free for data on the file system holding the store's data (the reserve file counted as used)"
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
        LOW_SPACE,
        "1 while the store's free space is below disk.low_space_mib (the NOSPACE alarm): user writes are refused, reads go on"
    );
    describe_gauge!(
        RESERVE_BYTES,
        Unit::Bytes,
        "Bytes of the space-reserve file now held (released while the store is low on space)"
    );
    describe_counter!(
        STREAM_MESSAGES_TOTAL,
        "Messages of BatchCommands streams (many requests each), by direction"
    );
    describe_counter!(
        STREAM_REQUESTS_TOTAL,
        "Requests carried in BatchCommands streams"
    );
    describe_counter!(
        MERGED_WRITES_TOTAL,
        "Writes that shared one Raft entry with other writes of their stream message"
    );
    describe_counter!(
        SERVED_KEYS_TOTAL,
        "Keys read (op=read) or proposed for writing (op=write) for clients by this store"
    );
    describe_counter!(
        SERVED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of keys and values read (op=read) or proposed (op=write) for clients by this store"
    );
    describe_gauge!(
        DEGRADED,
        "1 while a poller round slower than slow_round_ms happened in the last 30 s (leaderships are handed away)"
    );
}
