//! The routing library's metrics: requests, retries and region-cache
//! lookups. Their names keep the `tessera_router_` prefix they have had
//! since the router was the only user; the dashboards and alerts use them.

/// Requests by operation (label `op`) and outcome (label `outcome`).
pub const REQUESTS_TOTAL: &str = "tessera_router_requests_total";
/// Seconds per request by operation (label `op`).
pub const REQUEST_SECONDS: &str = "tessera_router_request_seconds";
/// Retries by reason (label `reason`).
pub const RETRIES_TOTAL: &str = "tessera_router_retries_total";
/// Store requests that ran out of time at the store or on the way, by
/// store (label `store_id`): a store whose writes keep timing out (a
/// stalled disk) shows here before its users give up.
pub const STORE_TIMEOUTS_TOTAL: &str = "tessera_router_store_timeouts_total";
pub const CACHE_HITS_TOTAL: &str = "tessera_router_region_cache_hits_total";
pub const CACHE_MISSES_TOTAL: &str = "tessera_router_region_cache_misses_total";

/// Registers help text for the routing metrics.
pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        REQUESTS_TOTAL,
        "Client requests by operation (label op) and outcome (label outcome)"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Seconds per client request, retries included, by operation (label op)"
    );
    describe_counter!(
        RETRIES_TOTAL,
        "Retries of store requests by reason (label reason)"
    );
    describe_counter!(
        STORE_TIMEOUTS_TOTAL,
        "Store requests that timed out, by store (label store_id): a stalled store shows here first"
    );
    describe_counter!(
        CACHE_HITS_TOTAL,
        "Region lookups answered by the region cache"
    );
    describe_counter!(
        CACHE_MISSES_TOTAL,
        "Region lookups that had to ask the directory"
    );
    for name in [CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL] {
        metrics::counter!(name).increment(0);
    }
}

pub fn histogram_buckets() -> Vec<(&'static str, Vec<f64>)> {
    vec![(
        REQUEST_SECONDS,
        vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5, 5.0,
        ],
    )]
}
