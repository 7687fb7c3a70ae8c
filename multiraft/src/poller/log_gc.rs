//! The Raft side of log GC: how a leader's log is cut, in the order it
//! happens.
//!
//! 1. **When** ([`Poller::collect_logs`]): every `log_gc_tick_interval`
//!    ticks the poller asks each awake leader (every leader, one pass in
//!    [`FULL_PASS_EVERY`], and the size of hibernating logs is measured
//!    then) for a candidate
//!    (`Peer::log_gc_candidate`): what every recently active follower has
//!    replicated, if that is at least `log_gc_threshold` entries past the
//!    last cut — or everything applied once the log is past
//!    `log_gc_count_limit` entries or `log_gc_size_limit_bytes` (a laggard
//!    then catches up by snapshot). It also publishes the log's size.
//! 2. **Propose** ([`Poller::propose_compact_log`]): the state machine
//!    encodes the command (`StateMachine::compact_log_command`; the store's
//!    is `tessera-store`'s `log_gc.rs`), proposed with no epoch check —
//!    range and membership changes do not matter to it.
//! 3. **Apply** ([`apply`]): every replica drops the same prefix of its log
//!    in the round's apply batch (`PeerStorage::compact_to`); an entry at or
//!    past the command's own index is never dropped.

use super::Poller;
use crate::engine::WriteBatch;
use crate::mailbox::EpochCheck;
use crate::peer::Peer;
use crate::state_machine::StateMachine;
use crate::{metrics as m, RegionId};

/// One log GC pass in this many looks at every leader, hibernating ones
/// included, and publishes the logs' size (every 90 s at the defaults);
/// the others look at awake leaders only.
pub const FULL_PASS_EVERY: u64 = 30;

/// Step 3: drops `peer`'s log up to `index` (of `term`).
pub(crate) fn apply<O: Send + 'static>(
    peer: &mut Peer<O>,
    index: u64,
    term: u64,
    wb: &mut WriteBatch,
) {
    let before = peer.storage().truncated_index();
    peer.storage_mut().compact_to(index, term, wb);
    let dropped = peer.storage().truncated_index() - before;
    if dropped > 0 {
        metrics::counter!(m::LOG_GC_TOTAL).increment(1);
        metrics::counter!(m::LOG_GC_ENTRIES_TOTAL).increment(dropped);
    }
}

impl<S: StateMachine> Poller<S> {
    /// Step 1: proposes a compaction for every awake leader whose log is
    /// due one. One pass in [`FULL_PASS_EVERY`] looks at every leader, the
    /// hibernating ones too (one may have fallen asleep with a log due a
    /// cut), and publishes the size of the store's logs: a store of 100,000
    /// idle regions does not walk them all every few seconds.
    pub(super) fn collect_logs(&mut self) {
        self.log_gc_passes += 1;
        let full = self.log_gc_passes.is_multiple_of(FULL_PASS_EVERY);
        let candidate = |(id, peer): (&RegionId, &Peer<S::Output>)| {
            peer.log_gc_candidate(&self.cfg)
                .map(|(index, term)| (*id, index, term))
        };
        let due: Vec<(RegionId, u64, u64)> = if full {
            self.peers.iter().filter_map(candidate).collect()
        } else {
            self.awake_peers().filter_map(candidate).collect()
        };
        for (region_id, index, term) in due {
            self.propose_compact_log(region_id, index, term);
        }
        // The logs' size: the awake peers' now, the hibernating ones' as of
        // the last full pass (a hibernating log does not grow).
        let size = |(e, b): (u64, u64), p: &Peer<S::Output>| {
            (e + p.storage().log_entries(), b + p.storage().log_bytes())
        };
        if full {
            self.asleep_logs = self
                .peers
                .values()
                .filter(|p| p.is_asleep())
                .fold((0, 0), size);
        }
        let (entries, bytes) = self
            .awake_peers()
            .map(|(_, p)| p)
            .fold(self.asleep_logs, size);
        metrics::gauge!(m::RAFT_LOG_ENTRIES).set(entries as f64);
        metrics::gauge!(m::RAFT_LOG_BYTES).set(bytes as f64);
    }

    /// Step 2: proposes dropping the log of `region_id` up to `index`.
    pub(super) fn propose_compact_log(&mut self, region_id: RegionId, index: u64, term: u64) {
        let now = self.now();
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let data = self.sm.compact_log_command(peer.region(), index, term);
        let proposed = peer.propose(
            &EpochCheck::default(),
            data,
            Box::new(move |r| {
                if let Err(e) = r {
                    tracing::debug!(region_id, error = %e, "log compaction not applied");
                }
            }),
            now,
        );
        match proposed {
            Ok(()) => tracing::debug!(region_id, index, "log compaction proposed"),
            Err(refusal) => refusal.answer(),
        }
        self.touched.insert(region_id);
    }
}
