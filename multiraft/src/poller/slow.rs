//! A slow disk and a hung one, as the poller sees them.
//!
//! Every round publishes when its work began
//! ([`PollerStats::round_started_ms`], on [`mono_ms`]'s clock; 0 between
//! rounds), so a watchdog outside the poller thread can tell a poller stuck
//! in one round — a hung fsync, a hung disk — from an idle one
//! ([`PollerStats::stuck_for`]); the store fails `/ready` with the reason.
//!
//! A round that finishes but took longer than `RaftConfig::slow_round` is a
//! slow disk (or a starved machine): it is counted, the store is
//! *degraded* for [`DEGRADED_FOR`] after it ([`PollerStats::is_degraded`]),
//! and the poller hands leadership of every awake region it leads (not the
//! hibernating ones: they wait on no disk) to that region's most
//! up-to-date voter, at most once per [`HANDOFF_INTERVAL`],
//! between rounds — so the regions stop waiting on this disk while it
//! still answers. A hung poller hands off nothing; its leaders stop
//! heartbeating and their followers elect by timeout.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Poller, PollerStats};
use crate::metrics as m;
use crate::state_machine::StateMachine;

/// How long a store stays degraded after its last slow round.
pub const DEGRADED_FOR: Duration = Duration::from_secs(30);

/// The least time between two hand-offs after slow rounds.
pub const HANDOFF_INTERVAL: Duration = Duration::from_secs(10);

/// Milliseconds since the first call in this process, never 0: the clock of
/// [`PollerStats::round_started_ms`] (monotonic, unlike the wall clock).
pub fn mono_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl PollerStats {
    /// How long the round now running has been at work, if one is.
    pub fn stuck_for(&self) -> Option<Duration> {
        match self.round_started_ms.load(Ordering::Acquire) {
            0 => None,
            started => Some(Duration::from_millis(mono_ms().saturating_sub(started))),
        }
    }

    /// Whether a round was slow within the last [`DEGRADED_FOR`].
    pub fn is_degraded(&self) -> bool {
        match self.last_slow_round_ms.load(Ordering::Acquire) {
            0 => false,
            at => mono_ms().saturating_sub(at) < DEGRADED_FOR.as_millis() as u64,
        }
    }
}

impl<S: StateMachine> Poller<S> {
    /// Marks the start of a round's work.
    pub(super) fn round_begins(&self) {
        self.stats
            .round_started_ms
            .store(mono_ms(), Ordering::Release);
    }

    /// Marks the end of a round that took `took`; a slow one degrades the
    /// store and hands its leaderships away (those of awake regions).
    pub(super) fn round_ends(&mut self, took: Duration) {
        self.stats.round_started_ms.store(0, Ordering::Release);
        if self.cfg.manual_ticks || took < self.cfg.slow_round {
            return;
        }
        self.stats.slow_rounds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_slow_round_ms
            .store(mono_ms(), Ordering::Release);
        metrics::counter!(m::SLOW_ROUNDS_TOTAL).increment(1);
        if self
            .last_slow_handoff
            .is_some_and(|at| at.elapsed() < HANDOFF_INTERVAL)
        {
            return;
        }
        self.last_slow_handoff = Some(Instant::now());
        let mut handed = 0usize;
        for (&id, peer) in self.peers.iter_mut() {
            // A hibernating region serves nothing: waking thousands of them
            // to move their leaderships would only load a store that is
            // already slow (and wake their followers' stores).
            if !peer.is_leader() || peer.is_asleep() {
                continue;
            }
            if let Some(to) = peer.best_transferee() {
                peer.transfer_leader(to);
                self.touched.insert(id);
                handed += 1;
            }
        }
        metrics::counter!(m::SLOW_ROUND_HANDOFFS_TOTAL).increment(handed as u64);
        tracing::warn!(
            store_id = self.store_id,
            took_ms = took.as_millis() as u64,
            bound_ms = self.cfg.slow_round.as_millis() as u64,
            regions = handed,
            "a poller round was slow (a slow disk?): the store is degraded, handing its leaderships away"
        );
    }
}
