//! The disk-stall watchdog: a thread beside the poller that tells a store
//! whose poller is stuck in one round (a hung fsync, a hung disk) from one
//! that is merely slow.
//!
//! Every [`CHECK_INTERVAL`] it reads the poller's published round start
//! (`PollerStats::stuck_for`, see `tessera_multiraft::poller::slow`):
//! - stuck longer than `disk_stall_timeout_ms`: `/ready` is held at 503
//!   with the reason (what Kubernetes and operators see; the directory
//!   sees the store's heartbeats stop, as they go through the poller),
//!   `tessera_store_disk_stalled` is 1 and the stall is logged once. Its
//!   leaders stop heartbeating, so their followers elect by timeout; the
//!   watchdog needs nothing from the stuck thread;
//! - unstuck: `/ready` is released and the recovery logged.
//!
//! `tessera_store_degraded` is 1 while the poller's last slow round is
//! recent (`PollerStats::is_degraded`); the poller itself hands its
//! leaderships away after a slow round. It runs on its own thread, not on
//! the async runtime, so a runtime blocked by the same disk cannot hide
//! the stall.

use std::sync::Arc;
use std::time::Duration;

use tessera_common::status::Readiness;
use tessera_multiraft::poller::PollerStats;

use crate::metrics as m;

/// How often the watchdog looks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Starts the watchdog over `stats` for the rest of the process's life.
pub fn spawn(
    store_id: u64,
    stats: Arc<PollerStats>,
    readiness: Arc<Readiness>,
    stall_timeout: Duration,
) -> std::io::Result<()> {
    metrics::gauge!(m::DISK_STALLED).set(0.0);
    metrics::gauge!(m::DEGRADED).set(0.0);
    std::thread::Builder::new()
        .name(format!("watchdog-{store_id}"))
        .spawn(move || {
            let mut stalled = false;
            loop {
                std::thread::sleep(CHECK_INTERVAL);
                check(store_id, &stats, &readiness, stall_timeout, &mut stalled);
            }
        })
        .map(|_| ())
}

/// One look; `stalled` is what the last one concluded.
fn check(
    store_id: u64,
    stats: &PollerStats,
    readiness: &Readiness,
    stall_timeout: Duration,
    stalled: &mut bool,
) {
    metrics::gauge!(m::DEGRADED).set(if stats.is_degraded() { 1.0 } else { 0.0 });
    match stats.stuck_for().filter(|d| *d >= stall_timeout) {
        Some(stuck) => {
            let reason = format!(
                "store {store_id}: the poller has been stuck in one round for {:.1} s \
                 (disk_stall_timeout_ms = {}): a stalled disk?",
                stuck.as_secs_f64(),
                stall_timeout.as_millis()
            );
            if !*stalled {
                metrics::counter!(m::DISK_STALLS_TOTAL).increment(1);
                tracing::error!("{reason}; /ready fails until it moves again");
            }
            *stalled = true;
            metrics::gauge!(m::DISK_STALLED).set(1.0);
            readiness.hold(reason);
        }
        None if *stalled => {
            *stalled = false;
            metrics::gauge!(m::DISK_STALLED).set(0.0);
            readiness.release();
            tracing::warn!(store_id, "the poller moves again: the stall is over");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tessera_multiraft::poller::slow::mono_ms;

    use super::*;

    #[test]
    fn a_poller_stuck_past_the_bound_fails_ready_until_it_moves() {
        let stats = PollerStats::default();
        let readiness = Readiness::new("starting");
        readiness.set_ready();
        let bound = Duration::from_millis(200);
        let mut stalled = false;
        // Between rounds: nothing to see.
        check(7, &stats, &readiness, bound, &mut stalled);
        assert!(readiness.is_ready() && !stalled);
        // A round at work for less than the bound: slow, not stalled.
        stats.round_started_ms.store(mono_ms(), Ordering::Release);
        check(7, &stats, &readiness, bound, &mut stalled);
        assert!(readiness.is_ready());
        // Past the bound: not ready, saying why.
        std::thread::sleep(Duration::from_millis(250));
        check(7, &stats, &readiness, bound, &mut stalled);
        assert!(!readiness.is_ready() && stalled);
        assert!(
            readiness.reason().contains("stuck in one round"),
            "{}",
            readiness.reason()
        );
        // The round ends: ready again.
        stats.round_started_ms.store(0, Ordering::Release);
        check(7, &stats, &readiness, bound, &mut stalled);
        assert!(readiness.is_ready() && !stalled);
    }
}
