//! Peers removed from this store: the tombstones they leave, and the claims,
//! carried by messages, that a local peer was removed.
//!
//! **Tombstones.** A removed peer leaves a tombstone: the region at an epoch
//! at or after its removal, and the removed peer's id. Messages for the
//! region addressed to that peer or an older one (peer ids only grow), or
//! sent at an older membership, are ignored, so a late message can never
//! recreate the removed peer (its vote is gone with its state: recreated,
//! it could vote twice in a term). A message for a newer peer of the region
//! on this store is let through: the region added a peer here again. The
//! tombstone's epoch may be the directory's, which can already list that
//! new peer; comparing epochs alone ignored the new peer's messages until
//! the membership changed again.
//!
//! **Claims.** Two kinds of message claim that a local peer was removed:
//!
//! - a **tombstone message**: a leader that removed a peer and heard from it
//!   tells it so;
//! - a message for **another peer of the region at a newer membership**: the
//!   region's peer on this store was removed and a new one added here since
//!   (a region has at most one peer per store). The removed peer may never
//!   learn it by itself: a learner or follower cut off while its removal
//!   committed is never sent the commit, and a silent learner draws no
//!   tombstone message. Until it goes, the new peer's messages are dropped,
//!   so the new peer never starts (seen as a re-added learner that never
//!   caught up).
//!
//! Neither claim is acted on here. A claim is a message, and any node could
//! send one: three forged ones would erase every replica of a region. An
//! initialized peer is destroyed only after the store confirmed with the
//! directory that it was removed: the region is handed to the store's
//! removal checker ([`PollerSpec::removal_reports`], which asks the
//! directory and sends `DestroyRegion`), or the claim is ignored where
//! nothing can confirm it (the directory's own group). An uninitialized peer
//! (no data, no range) is kept: the directory cannot speak for a peer it may
//! not know yet, destroying it would forget a vote it may have cast, and a
//! peer that never receives its snapshot is collected anyway
//! (`uninitialized.rs`).
//!
//! [`PollerSpec::removal_reports`]: super::PollerSpec::removal_reports

use tessera_proto::metapb::{Region, RegionEpoch};

use super::Poller;
use crate::state_machine::StateMachine;
use crate::{metrics as m, region, RegionId, StoreId};

/// What a removed peer leaves behind (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Tombstone {
    /// The region's epoch at or after the removal.
    pub epoch: RegionEpoch,
    /// The removed peer's id (0 if the region listed no peer on this store).
    pub peer_id: u64,
}

impl Tombstone {
    /// The tombstone of the peer `region` lists on `store_id`.
    pub fn of(region: &Region, store_id: StoreId) -> Self {
        Tombstone {
            epoch: region::epoch(region),
            peer_id: region::find_peer_on_store(region, store_id).map_or(0, |p| p.id),
        }
    }

    /// Whether a message for peer `to`, sent at `epoch`, is for the removed
    /// peer (or an older one), or from before the removal, and is ignored.
    pub fn ignores(&self, to: u64, epoch: &RegionEpoch) -> bool {
        match self.peer_id {
            // Which peer was removed is not known: the epoch alone tells.
            0 => epoch.conf_ver <= self.epoch.conf_ver,
            removed if to <= removed => true,
            // A newer peer added here: only what was sent before the
            // tombstone's membership is old.
            _ => epoch.conf_ver < self.epoch.conf_ver,
        }
    }
}

impl<S: StateMachine> Poller<S> {
    /// Someone says `peer_id` is no longer in the region (at `epoch`).
    pub(super) fn on_tombstone_message(
        &mut self,
        region_id: RegionId,
        peer_id: u64,
        epoch: RegionEpoch,
    ) {
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        if peer.peer_id() != peer_id {
            return;
        }
        if !peer.is_initialized() {
            tracing::info!(
                region_id,
                peer_id,
                "uninitialized peer told it was removed; kept"
            );
            metrics::counter!(m::TOMBSTONE_MESSAGES_TOTAL, "outcome" => "uninitialized_kept")
                .increment(1);
            return;
        }
        let local = region::epoch(peer.region());
        if epoch.conf_ver <= local.conf_ver {
            metrics::counter!(m::TOMBSTONE_MESSAGES_TOTAL, "outcome" => "stale").increment(1);
            return;
        }
        let outcome = self.report_removal_claim(region_id);
        tracing::info!(
            region_id,
            peer_id,
            conf_ver = epoch.conf_ver,
            outcome,
            "told that this peer was removed; the directory decides"
        );
        metrics::counter!(m::TOMBSTONE_MESSAGES_TOTAL, "outcome" => outcome).increment(1);
    }

    /// A message for peer `to` of a region whose local peer has another id
    /// (sent at `epoch`). It is dropped; if it comes from a newer membership
    /// than the local peer's, the local peer is reported as likely removed.
    pub(super) fn on_message_for_another_peer(
        &mut self,
        region_id: RegionId,
        to: u64,
        epoch: RegionEpoch,
    ) {
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        let local = peer.peer_id();
        let newer = epoch.conf_ver > region::epoch(peer.region()).conf_ver;
        let outcome = if !newer {
            "stale"
        } else if !peer.is_initialized() {
            "uninitialized_kept"
        } else {
            self.report_removal_claim(region_id)
        };
        tracing::debug!(
            region_id,
            to,
            local,
            conf_ver = epoch.conf_ver,
            outcome,
            "message for another peer of the region dropped"
        );
        metrics::counter!(m::SUPERSEDED_PEER_MESSAGES_TOTAL, "outcome" => outcome).increment(1);
    }

    /// Hands `region_id` to the removal checker; what became of the claim.
    fn report_removal_claim(&self, region_id: RegionId) -> &'static str {
        match &self.removal_reports {
            Some(reports) => match reports.try_send(region_id) {
                Ok(()) => "reported",
                // The checker is busy; its periodic pass covers this peer.
                Err(_) => "checker_busy",
            },
            None => "unconfirmable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::metapb::Peer;

    fn region(conf_ver: u64, peers: &[(u64, u64)]) -> Region {
        Region {
            id: 9,
            region_epoch: Some(RegionEpoch::new(conf_ver, 1)),
            peers: peers
                .iter()
                .map(|&(id, store_id)| Peer {
                    id,
                    store_id,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_tombstone_ignores_its_peer_and_older_ones_at_any_epoch() {
        let t = Tombstone::of(&region(5, &[(11, 1), (14, 4)]), 4);
        assert_eq!(t.peer_id, 14);
        for to in [12, 14] {
            for conf_ver in [3, 5, 9] {
                assert!(
                    t.ignores(to, &RegionEpoch::new(conf_ver, 1)),
                    "{to} {conf_ver}"
                );
            }
        }
    }

    #[test]
    fn a_newer_peer_added_on_the_store_is_heard_even_at_the_tombstones_epoch() {
        // The directory's epoch, already listing the new peer 15 here.
        let t = Tombstone {
            epoch: RegionEpoch::new(7, 1),
            peer_id: 14,
        };
        assert!(!t.ignores(15, &RegionEpoch::new(7, 1)));
        assert!(!t.ignores(15, &RegionEpoch::new(8, 1)));
        assert!(t.ignores(15, &RegionEpoch::new(6, 1)), "sent before it");
    }

    #[test]
    fn without_a_known_peer_the_epoch_alone_decides() {
        let t = Tombstone::of(&region(5, &[(11, 1)]), 4);
        assert_eq!(t.peer_id, 0);
        assert!(t.ignores(99, &RegionEpoch::new(5, 1)));
        assert!(!t.ignores(99, &RegionEpoch::new(6, 1)));
    }
}
