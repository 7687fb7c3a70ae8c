//! Peers waiting for their first snapshot ("uninitialized"): created when a
//! message arrives from a region this store holds nothing of yet — the
//! leader of a region that just added a replica here, heartbeating or
//! asking for votes ahead of the snapshot.
//!
//! Each costs memory, and anyone who may send Raft messages could name ever
//! new region ids; such peers were never collected. So:
//! - at most [`RaftConfig::max_uninitialized_peers`] exist at once; a
//!   message that would create one more is dropped (a real new replica's
//!   leader keeps sending, and gets its peer once the count drops);
//! - a peer still uninitialized after [`RaftConfig::uninitialized_peer_ttl`]
//!   is dropped from memory, with its pending requests failed. What it
//!   persisted — its term and vote — stays on disk, so a peer created again
//!   for the region remembers its vote: dropping one is what a restart of
//!   the store does to it, which Raft allows at any moment.
//!
//! The poller records when each was created ([`Poller::uninitialized`]),
//! forgets the ones that got their snapshot or were destroyed, and sweeps
//! every [`SWEEP_TICKS`] ticks.
//!
//! [`RaftConfig::max_uninitialized_peers`]: crate::RaftConfig::max_uninitialized_peers
//! [`RaftConfig::uninitialized_peer_ttl`]: crate::RaftConfig::uninitialized_peer_ttl
//! [`Poller::uninitialized`]: super::Poller

use crate::metrics as m;
use crate::{RegionId, StateMachine};

use super::Poller;

/// Ticks between two sweeps for peers past their time.
pub(super) const SWEEP_TICKS: u64 = 10;

impl<S: StateMachine> Poller<S> {
    /// Whether one more uninitialized peer may be created now; counts the
    /// refusal when not.
    pub(super) fn may_create_uninitialized(&mut self, region_id: RegionId) -> bool {
        if self.uninitialized.len() >= self.cfg.max_uninitialized_peers {
            self.forget_initialized();
        }
        if self.uninitialized.len() < self.cfg.max_uninitialized_peers {
            return true;
        }
        tracing::debug!(
            region_id,
            limit = self.cfg.max_uninitialized_peers,
            "not creating a peer: too many wait for their snapshot"
        );
        metrics::counter!(m::UNINITIALIZED_PEERS_TOTAL, "outcome" => "refused").increment(1);
        false
    }

    /// Records a peer just created uninitialized.
    pub(super) fn created_uninitialized(&mut self, region_id: RegionId) {
        self.uninitialized.insert(region_id, self.now());
        metrics::counter!(m::UNINITIALIZED_PEERS_TOTAL, "outcome" => "created").increment(1);
    }

    /// Forgets the records of peers that got their snapshot or are gone.
    fn forget_initialized(&mut self) {
        let peers = &self.peers;
        self.uninitialized
            .retain(|id, _| peers.get(id).is_some_and(|p| !p.is_initialized()));
    }

    /// Drops the uninitialized peers past their time from memory.
    pub(super) fn sweep_uninitialized(&mut self) {
        self.forget_initialized();
        let now = self.now();
        let ttl = self.cfg.uninitialized_peer_ttl;
        // A peer with a Ready not yet handled (its vote waits for this
        // round's write) is kept until the next sweep: what it decided
        // must reach the disk before it may be forgotten.
        let peers = &self.peers;
        let expired: Vec<RegionId> = self
            .uninitialized
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= ttl)
            .map(|(id, _)| *id)
            .filter(|id| !peers.get(id).is_some_and(|p| p.has_ready()))
            .collect();
        for region_id in expired {
            self.uninitialized.remove(&region_id);
            let Some(mut peer) = self.peers.remove(&region_id) else {
                continue;
            };
            for answer in peer.fail_pending("the peer never received its snapshot") {
                answer();
            }
            self.touched.remove(&region_id);
            self.roles_changed = true;
            tracing::info!(
                region_id,
                ttl = ?ttl,
                "dropped a peer that never received its snapshot (its vote stays on disk)"
            );
            metrics::counter!(m::UNINITIALIZED_PEERS_TOTAL, "outcome" => "collected").increment(1);
        }
        metrics::gauge!(m::UNINITIALIZED_PEERS).set(self.uninitialized.len() as f64);
    }
}
