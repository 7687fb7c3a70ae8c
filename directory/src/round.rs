//! The scheduler's round, on the leader every `schedule.interval`: make
//! sure the cluster has an id and a join token ([`crate::join`]), keep ids at hand, let the rules plan
//! ([`crate::scheduler::plan`], which is pure), export the gauges of
//! regions and store states, and propose the commands the rules decided
//! (store state changes, placements). Operators the rules create wait in
//! the leader's view for their regions' next heartbeats.
//!
//! A round looks at every region, so its cost grows with the cluster (about
//! 0.2 s at 307,000 regions on this project's 2-core test machine). Rounds
//! are paced so they take at most one part in [`ROUND_SHARE`] of the
//! leader's time ([`pause_after`]): past that size the scheduler reacts
//! more slowly (a round every few seconds) rather than taking the core that
//! region reports and client lookups need.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::Core;
use crate::ids::SCHEDULER_SPARE_IDS;
use crate::leader::state_name;
use crate::scheduler;
use crate::{metrics as m, Result};

impl Core {
    /// One round of the scheduler (leader only).
    pub async fn schedule_once(&self) -> Result<()> {
        let term = self.leading_term().await?;
        self.init_cluster().await?;
        if !self.state().meta.bootstrapped {
            return Ok(());
        }
        // Keep ids at hand so planning never waits on Raft.
        self.keep_ids_at_hand(term, SCHEDULER_SPARE_IDS).await?;
        let decisions = {
            let state = self.state();
            let mut ls = self.leader_view(term);
            // Merges recorded since the last round end their operators
            // (reports check this only when they change the records).
            crate::merge::finish_merged(&state, &mut ls);
            let mut ids = ls.ids;
            let d = scheduler::plan(&state, &mut ls, &self.schedule, &mut || {
                (ids.0 < ids.1).then(|| {
                    ids.0 += 1;
                    ids.0 - 1
                })
            });
            ls.ids = ids;
            // Gauges: regions, and stores by state.
            metrics::gauge!(m::REGIONS).set(state.regions.len() as f64);
            let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
            for s in state.stores.values() {
                *by_state
                    .entry(state_name(ls.store_state(s, &self.schedule.lifecycle)))
                    .or_default() += 1;
            }
            for name in ["up", "disconnected", "down", "offline", "tombstone"] {
                metrics::gauge!(m::STORES, "state" => name)
                    .set(by_state.get(name).copied().unwrap_or(0) as f64);
            }
            d
        };
        for kind in &decisions.created {
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind.as_str(), "outcome" => "created")
                .increment(1);
        }
        for kind in &decisions.cancelled {
            metrics::counter!(m::OPERATORS_TOTAL, "kind" => kind.as_str(), "outcome" => "cancelled")
                .increment(1);
        }
        for cmd in decisions.commands {
            if let Err(e) = self.node.propose(cmd).await {
                tracing::debug!(error = %e, "scheduler command not applied");
            }
        }
        Ok(())
    }
}

/// Scheduler rounds take at most one part in this of the leader's time.
pub const ROUND_SHARE: u32 = 10;

/// How long to pause after a round that took `took`, so that rounds take
/// at most 1/[`ROUND_SHARE`] of the time. The scheduler's ticker then
/// waits for the rest of its interval, if any is left: a quick round still
/// runs once per interval, a slow one once per `ROUND_SHARE × took`.
pub fn pause_after(took: Duration) -> Duration {
    took * (ROUND_SHARE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_round_spaces_the_next_so_rounds_take_a_tenth_of_the_time() {
        // 400 ms of work: 3.6 s of pause, a round every 4 s at most.
        assert_eq!(
            pause_after(Duration::from_millis(400)),
            Duration::from_millis(3600)
        );
        // 20 ms: a 180 ms pause, well within a 1 s interval's wait.
        assert_eq!(
            pause_after(Duration::from_millis(20)),
            Duration::from_millis(180)
        );
    }
}
