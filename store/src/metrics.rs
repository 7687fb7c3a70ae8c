//! The store's own metrics, beside those of its Raft groups
//! (`tessera_multiraft::metrics`).

/// Bytes of the file system holding the store's data directory.
pub const CAPACITY_BYTES: &str = "tessera_store_capacity_bytes";
/// Bytes still available on that file system.
pub const AVAILABLE_BYTES: &str = "tessera_store_available_bytes";

/// Registers help text for the store's metrics and its Raft groups'.
pub fn describe() {
    use metrics::{describe_gauge, Unit};
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
}
