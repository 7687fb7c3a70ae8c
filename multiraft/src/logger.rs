//! raft-rs logs through `slog`; tessera logs through `tracing`. This bridges
//! the first into the second, with the region and peer as fields.
//!
//! raft-rs logs every step of every election at `info` ("starting a new
//! election", "became pre-candidate", "broadcasting vote request"...). With
//! tens of thousands of regions on a store, a burst of elections (a bulk
//! split of 100,000 regions in `tessera-bench idle-regions`) wrote millions
//! of such lines — the processes' `slog=warn` filter directive did not hold
//! them back — and the logging itself kept the stores busy. Its records
//! below `warn` are therefore dropped here unless `debug` is enabled for
//! this module (`RUST_LOG=tessera_multiraft=debug`).

use slog::o;

/// Forwards raft-rs' warnings and errors, and its other records only when
/// this module logs at `debug`.
struct RaftDrain;

impl slog::Drain for RaftDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        if record.level().is_at_least(slog::Level::Warning)
            || tracing::enabled!(tracing::Level::DEBUG)
        {
            tracing_slog::TracingSlogDrain.log(record, values)
        } else {
            Ok(())
        }
    }
}

/// A slog logger for one peer whose records become tracing events.
pub fn peer_logger(region_id: u64, peer_id: u64) -> slog::Logger {
    slog::Logger::root(
        RaftDrain,
        o!("region_id" => region_id, "peer_id" => peer_id),
    )
}
