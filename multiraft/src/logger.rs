//! raft-rs logs through `slog`; tessera logs through `tracing`. This bridges
//! the first into the second, with the region and peer as fields.

use slog::o;

/// A slog logger for one peer whose records become tracing events.
pub fn peer_logger(region_id: u64, peer_id: u64) -> slog::Logger {
    slog::Logger::root(
        tracing_slog::TracingSlogDrain,
        o!("region_id" => region_id, "peer_id" => peer_id),
    )
}
