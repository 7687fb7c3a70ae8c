//! What the poller does when the engine fails a write: a round's Raft
//! state, its applied state, a snapshot's ingest, or the write that creates
//! or removes a peer (`regions.rs`).
//!
//! A failed write or fsync may have lost pages the kernel held for it: the
//! engine can no longer tell what is durable, and Raft must never act on
//! state it may not have persisted (a vote or an append acknowledged and
//! then forgotten can elect two leaders or lose a committed entry). So the
//! poller does not retry and does not carry on:
//! 1. nothing of the failed round is acknowledged: no persisted message
//!    (vote, append acknowledgement) leaves, nothing is applied, no
//!    proposer or reader is answered with success;
//! 2. leaders that took no part in the round hand leadership to their most
//!    up-to-date voter (`MsgTimeoutNow`, sent before the poller stops),
//!    so their regions elect at once instead of after an election timeout;
//!    the other regions elect by timeout once this store falls silent;
//! 3. everything waiting is failed as "outcome unknown", the poller stops,
//!    and [`super::PollerStats::engine_failure`] says why. The process (the
//!    store or a directory member) then stops for good with a marker in
//!    its data directory that keeps it down until an operator acts
//!    (`tessera_common::engine_failure`).

use std::collections::BTreeSet;

use super::Poller;
use crate::state_machine::StateMachine;
use crate::{metrics as m, RegionId};

impl<S: StateMachine> Poller<S> {
    /// Stops the poller for good after the engine failed: `what` says
    /// which write; `in_round` are the regions whose Ready the failed round
    /// took (their Raft state is not advanced, so they hand nothing off).
    pub(super) fn fail_engine(&mut self, what: &str, in_round: &BTreeSet<RegionId>) {
        let reason = format!("store {}: {what}", self.store_id);
        tracing::error!(
            store_id = self.store_id,
            "the storage engine failed: {reason}; stopping all Raft work, acknowledging nothing more"
        );
        metrics::counter!(m::ENGINE_FAILURES_TOTAL).increment(1);
        // Before leaderships are handed away.
        self.leases.close_all();
        let now = self.now();
        let snap_mgr = self.snap_mgr.clone();
        let mut handed = 0usize;
        for (&id, peer) in self.peers.iter_mut() {
            if in_round.contains(&id) || !peer.is_leader() {
                continue;
            }
            let Some(to) = peer.best_transferee() else {
                continue;
            };
            peer.transfer_leader(to);
            if peer.has_ready() {
                // Only the messages leave (the transfer, appends already
                // durable elsewhere); nothing is persisted or applied.
                let mut rd = peer.ready();
                let msgs = rd.take_messages();
                peer.wrap_messages(
                    msgs,
                    &|term, index| snap_mgr.gen_dir(id, term, index),
                    &mut self.outbox,
                    now,
                );
                handed += 1;
            }
        }
        self.flush_outbox();
        tracing::warn!(
            store_id = self.store_id,
            regions = handed,
            "leadership handed off where a follower was up to date"
        );
        let why = format!("the store's storage engine failed ({what}); the outcome is unknown");
        for peer in self.peers.values_mut() {
            for answer in peer.fail_pending(&why) {
                answer();
            }
        }
        let _ = self.stats.engine_failure.set(reason);
        self.stopping = true;
    }
}
