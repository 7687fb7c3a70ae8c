//! The poller's side of a merge (`crate::merge` has the process and its
//! safety argument): holding a target's entries until its local source is
//! ready, helping that source catch up, and dropping the source's peer
//! once the merge batch is written.

use tessera_proto::metapb::Region;

use super::removed::Tombstone;
use super::Poller;
use crate::apply::ApplyOutcome;
use crate::merge::SourceReadiness;
use crate::state_machine::StateMachine;
use crate::{metrics as m, RegionId};

impl<S: StateMachine> Poller<S> {
    /// Targets whose held entries are applied again this round, though
    /// raft-rs has nothing new for them (a target whose peer went away
    /// holds nothing any more).
    pub(super) fn held_targets(
        &mut self,
        in_round: &std::collections::BTreeSet<RegionId>,
    ) -> Vec<RegionId> {
        let peers = &self.peers;
        self.merge_holds.retain(|id| peers.contains_key(id));
        self.merge_holds
            .iter()
            .filter(|id| !in_round.contains(id))
            .copied()
            .collect()
    }

    /// After `target_id` applied this round: keeps holding it while its
    /// source is not ready, and helps a source that can catch up.
    pub(super) fn track_merge_wait(&mut self, target_id: RegionId, outcome: &ApplyOutcome) {
        let Some((source_id, state, readiness)) = &outcome.merge_wait else {
            self.merge_holds.remove(&target_id);
            metrics::gauge!(m::MERGE_HOLDS).set(self.merge_holds.len() as f64);
            return;
        };
        if self.merge_holds.insert(target_id) {
            tracing::info!(
                region_id = target_id,
                source = source_id,
                ?readiness,
                "merge waits for its local source"
            );
        }
        metrics::gauge!(m::MERGE_HOLDS).set(self.merge_holds.len() as f64);
        if *readiness == SourceReadiness::CatchUp {
            if let Some(source) = self.peers.get_mut(source_id) {
                if source.catch_up_for_merge(state.prepare_index, state.prepare_term) {
                    self.touched.insert(*source_id);
                } else {
                    tracing::warn!(
                        region_id = target_id,
                        source = source_id,
                        prepare_index = state.prepare_index,
                        "the local merge source lacks the PrepareMerge entry; waiting for its log"
                    );
                }
            }
        } else {
            tracing::warn!(
                region_id = target_id,
                source = source_id,
                "no local merge source in the prepared state; the merge waits"
            );
        }
    }

    /// A snapshot of `target_id` covers the range of a local region that is
    /// merging into it: the target merged it where the snapshot was taken,
    /// so the local source ends here too (its data is replaced by the
    /// snapshot's). Returns whether `source_id` was such a source and is
    /// gone.
    pub(super) fn end_source_covered_by_snapshot(
        &mut self,
        target_id: RegionId,
        source_id: RegionId,
    ) -> bool {
        let Some(source) = self.peers.get(&source_id) else {
            return false;
        };
        let into_target = source
            .merge
            .state
            .as_ref()
            .and_then(|s| s.target.as_ref())
            .is_some_and(|t| t.id == target_id);
        if !into_target {
            return false;
        }
        let region = source.region().clone();
        let mut wb = crate::engine::WriteBatch::default();
        crate::merge::write_source_tombstone(&region, &mut wb);
        if self
            .write_peer_change(&wb, "ending a merged source")
            .is_err()
        {
            return false;
        }
        tracing::info!(
            region_id = source_id,
            target = target_id,
            "merge source ended by its target's snapshot"
        );
        self.leases.remove(source_id);
        if let Some(mut peer) = self.peers.remove(&source_id) {
            for answer in peer.end_merged_source() {
                answer();
            }
            self.unindex_region(peer.region());
        }
        self.tombstones
            .insert(source_id, Tombstone::of(&region, self.store_id));
        self.roles_changed = true;
        true
    }

    /// Once the merge batch is written: the source's peer goes (its data
    /// is the target's now), the target's range is indexed anew, and
    /// whatever waited on the source is answered.
    pub(super) fn finish_merge(&mut self, target_id: RegionId, source: &Region) {
        let source_id = source.id;
        self.leases.remove(source_id);
        if let Some(mut peer) = self.peers.remove(&source_id) {
            for answer in peer.end_merged_source() {
                answer();
            }
            self.unindex_region(peer.region());
        }
        self.merge_holds.remove(&source_id);
        self.uninitialized.remove(&source_id);
        self.tombstones
            .insert(source_id, Tombstone::of(source, self.store_id));
        self.snap_mgr.remove_generated_except(source_id, None);
        self.generating.remove(&source_id);
        if let Some(target) = self.peers.get(&target_id) {
            let merged = target.region().clone();
            // The target's old start key (the source's end) when the
            // source was on its left.
            if self.ranges.get(&source.end_key) == Some(&target_id) {
                self.ranges.remove(&source.end_key);
            }
            self.index_region(&merged);
            self.leases.invalidate(target_id);
            self.touched.insert(target_id);
        }
        self.roles_changed = true;
    }
}
