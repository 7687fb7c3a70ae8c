//! One round's Ready handling: persist everything in one synced batch, send,
//! apply (see the module above for the order and why).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use raft::Ready;
use tessera_proto::raft_serverpb::RaftMessage;

use super::Poller;
use crate::apply::{apply_entries, ApplyBatch, ApplyOutcome};
use crate::engine::WriteBatch;
use crate::peer::Outgoing;
use crate::snapshot::apply::{self as snap_apply, PendingApply};
use crate::state_machine::StateMachine;
use crate::{metrics as m, region, RegionId};

/// The error a failpoint injects in place of an engine write.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn injected(failpoint: &str) -> String {
    format!("injected write error (failpoint {failpoint})")
}

impl<S: StateMachine> Poller<S> {
    pub(super) fn handle_readies(&mut self) {
        let now = self.now();
        let touched = std::mem::take(&mut self.touched);
        let mut readies: Vec<(RegionId, Ready)> = Vec::with_capacity(touched.len());
        let mut wb = WriteBatch::default();
        let mut must_sync = false;
        let mut persisting_regions = 0u64;
        let mut snapshots: Vec<PendingApply> = vec![];
        let mut unstaged: Vec<RegionId> = vec![];

        let snap_mgr = self.snap_mgr.clone();
        for &id in &touched {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if !peer.has_ready() {
                continue;
            }
            let mut rd = peer.ready();
            if let Some(ss) = rd.ss() {
                for read in peer.on_soft_state(ss) {
                    read.answer(peer.region());
                }
                self.roles_changed = true;
            }
            let msgs = rd.take_messages();
            peer.wrap_messages(
                msgs,
                &|term, index| snap_mgr.gen_dir(id, term, index),
                &mut self.outbox,
                now,
            );
            let before = wb.len();
            if !rd.snapshot().is_empty() {
                match snap_apply::stage(peer.storage_mut(), &snap_mgr, rd.snapshot(), &mut wb) {
                    Ok(p) => {
                        // The snapshot replaces the region's data: no
                        // read off this thread until it is in place.
                        self.leases.begin_replace(id);
                        peer.merge.state = p.merge_state.clone();
                        peer.merge.record = p.merge_record.clone();
                        peer.merge.held.retain(|e| e.index > p.index);
                        snapshots.push(p)
                    }
                    // The files were checked before the snapshot was stepped;
                    // failing here means they went missing since. Nothing of
                    // this Ready is persisted: the region is reloaded from
                    // disk and its leader sends a snapshot again.
                    Err(e) => {
                        tracing::error!(region_id = id, error = %e, "cannot stage a received snapshot");
                        unstaged.push(id);
                        continue;
                    }
                }
            }
            peer.storage_mut().append(rd.entries(), &mut wb);
            if let Some(hs) = rd.hs() {
                peer.storage_mut().set_hard_state(hs);
            }
            peer.storage_mut().write_raft_state_if_dirty(&mut wb);
            if wb.len() > before {
                persisting_regions += 1;
            }
            must_sync |= rd.must_sync();
            peer.on_read_states(rd.read_states());
            // Before any of the round's messages leave: a MsgTimeoutNow
            // leaves after the lease is gone; a commit index after it is
            // published (`local_reads.rs`).
            self.leases.publish(peer);
            readies.push((id, rd));
        }
        // Leaders' appends leave before the local write: followers persist
        // in parallel.
        self.flush_outbox();
        if let Err(e) = self.persist(&wb, must_sync, persisting_regions) {
            // Nothing of this round may be acknowledged.
            let in_round = readies.iter().map(|(id, _)| *id).collect();
            self.fail_engine(&format!("writing Raft state failed: {e}"), &in_round);
            return;
        }
        for p in snapshots {
            if let Err(e) = self.finish_snapshot(p) {
                let in_round = readies.iter().map(|(id, _)| *id).collect();
                self.fail_engine(&e, &in_round);
                return;
            }
        }
        for id in unstaged {
            self.reload_peer(id, "snapshot_not_staged");
        }

        // The answers that depend on the persisted state (a follower's
        // append acknowledgement, votes) leave before anything is applied:
        // the leader is waiting for them to commit.
        let in_round: BTreeSet<RegionId> = readies.iter().map(|(id, _)| *id).collect();
        let mut to_apply = Vec::with_capacity(readies.len());
        for (id, mut rd) in readies {
            let peer = self.peers.get_mut(&id).expect("peer of a ready");
            let persisted = rd.take_persisted_messages();
            peer.wrap_messages(
                persisted,
                &|term, index| snap_mgr.gen_dir(id, term, index),
                &mut self.outbox,
                now,
            );
            let mut committed = rd.take_committed_entries();
            let mut light = peer.advance_append(rd);
            if let Some(commit) = light.commit_index() {
                peer.storage_mut().set_commit(commit);
                self.leases.publish(peer);
            }
            let msgs = light.take_messages();
            peer.wrap_messages(
                msgs,
                &|term, index| snap_mgr.gen_dir(id, term, index),
                &mut self.outbox,
                now,
            );
            committed.extend(light.take_committed_entries());
            to_apply.push((id, committed));
        }
        self.flush_outbox();
        // Merge targets holding entries try again after the round's
        // sources applied (`merge.rs`).
        for id in self.held_targets(&in_round) {
            to_apply.push((id, vec![]));
        }

        let mut ab = ApplyBatch::default();
        let mut outcomes: Vec<(RegionId, ApplyOutcome)> = vec![];
        let mut merged_away: Vec<RegionId> = vec![];
        for (id, committed) in to_apply {
            if merged_away.contains(&id) {
                // Merged into its target earlier in this batch: nothing
                // after its PrepareMerge concerns it.
                continue;
            }
            // Out of the map while it applies: a merge looks at the others.
            let Some(mut peer) = self.peers.remove(&id) else {
                continue;
            };
            let epoch_before = region::epoch(peer.region());
            let outcome = apply_entries(
                &mut peer,
                committed,
                &self.peers,
                &mut self.sm,
                self.engine.as_ref(),
                &mut ab,
            );
            if region::epoch(peer.region()) != epoch_before || outcome.removed_self {
                // A split, merge or membership change: before it is
                // written, before new regions start or this peer is
                // destroyed.
                self.leases.invalidate(id);
            }
            if let Some(source) = &outcome.merged_source {
                // The source serves nothing from now on either.
                self.leases.invalidate(source.id);
                merged_away.push(source.id);
            }
            self.peers.insert(id, peer);
            outcomes.push((id, outcome));
        }

        // Regions split off in this round are born in the same batch.
        let born = self.born_regions(&outcomes, &mut ab.wb);
        let merges = outcomes.iter().any(|(_, o)| o.merged_source.is_some());
        let rollbacks = outcomes.iter().any(|(_, o)| o.rolled_back_merge);
        if merges {
            fail::fail_point!("merge_before_commit");
        }
        if rollbacks {
            fail::fail_point!("merge_before_rollback");
        }
        if !ab.wb.is_empty() {
            fail::fail_point!("apply_before_write");
            if let Err(e) = self.write_applied(&ab.wb) {
                // The proposers' callbacks (`ab.deferred`) never run: their
                // writes are failed as "outcome unknown".
                self.fail_engine(&format!("writing applied state failed: {e}"), &in_round);
                return;
            }
        }
        if !born.is_empty() {
            // The split is durable in the parent's applied state; the new
            // regions' peers are not started yet.
            fail::fail_point!("split_between_write_and_start");
        }
        if outcomes.iter().any(|(_, o)| o.prepared_merge) {
            fail::fail_point!("merge_after_prepare");
        }
        if ab.entries > 0 {
            metrics::counter!(m::APPLIED_ENTRIES_TOTAL).increment(ab.entries);
            self.stats
                .applied_entries
                .fetch_add(ab.entries, Ordering::Relaxed);
        }
        for cb in ab.deferred {
            cb();
        }
        for (parent, r, first) in born {
            self.start_split_region(parent, r, first);
        }
        for (id, outcome) in outcomes {
            if let Some(source) = &outcome.merged_source {
                self.finish_merge(id, source);
            }
            self.track_merge_wait(id, &outcome);
            self.after_membership_change(id, &outcome);
        }
        // Tests pause here: the round's writes are acknowledged, the applied
        // state they need is not published yet.
        fail::fail_point!("local_read_before_publish");
        for &id in &touched {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            let applied = peer.storage().applied_index();
            peer.advance_apply_to(applied);
            self.leases.publish(peer);
            for read in peer.take_ready_reads() {
                read.answer(peer.region());
            }
            if peer.has_ready() {
                self.touched.insert(id);
            }
        }
        self.request_snapshots(&touched);
        self.flush_outbox();
    }

    /// Writes the round's applied state (not synced: the log is).
    fn write_applied(&self, wb: &WriteBatch) -> Result<(), String> {
        fail::fail_point!("engine_apply_write_error", |_| Err(injected(
            "engine_apply_write_error"
        )));
        self.engine.write(wb, false).map_err(|e| e.to_string())
    }

    /// Writes the round's Raft state: one write, synced if any Ready needs
    /// it. An error is the engine failing: Raft cannot continue with state
    /// it may not have persisted.
    fn persist(&mut self, wb: &WriteBatch, must_sync: bool, regions: u64) -> Result<(), String> {
        if wb.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        fail::fail_point!("raft_before_persist");
        fail::fail_point!("engine_write_error", |_| Err(injected(
            "engine_write_error"
        )));
        self.engine
            .write(wb, must_sync)
            .map_err(|e| e.to_string())?;
        fail::fail_point!("raft_after_persist");
        if must_sync {
            metrics::histogram!(m::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::histogram!(m::WRITE_BATCH_BYTES).record(wb.data_bytes() as f64);
            metrics::histogram!(m::WRITE_BATCH_REGIONS).record(regions as f64);
            let s = &self.stats;
            s.synced_writes.fetch_add(1, Ordering::Relaxed);
            s.regions_in_synced_writes
                .fetch_add(regions, Ordering::Relaxed);
            s.max_regions_per_synced_write
                .fetch_max(regions, Ordering::Relaxed);
            if regions > 1 {
                s.multi_region_synced_writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// The data step of a snapshot apply, once its states are durable.
    fn finish_snapshot(&mut self, p: PendingApply) -> Result<(), String> {
        let started = Instant::now();
        if let Err(e) = snap_apply::finish(self.engine.as_ref(), &self.snap_mgr, &p) {
            // The files were checked (sizes, checksums, keys inside the
            // region) before the snapshot was stepped, so this is the disk
            // failing. The region is durably `Applying`: a restart finishes
            // the apply from the same files.
            return Err(format!(
                "region {}: ingesting a checked snapshot failed: {e}",
                p.region_id
            ));
        }
        if !p.old_region.peers.is_empty() {
            self.unindex_region(&p.old_region);
        }
        self.index_region(&p.region);
        self.sm.on_snapshot_applied(self.engine.as_ref(), &p.region);
        if let Some(peer) = self.peers.get_mut(&p.region_id) {
            self.leases.end_replace(peer);
            for answer in peer.on_snapshot_applied(p.index) {
                answer();
            }
        }
        self.roles_changed = true;
        self.stats.snapshots_applied.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SNAPSHOTS_APPLIED_TOTAL).increment(1);
        metrics::histogram!(m::SNAPSHOT_APPLY_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::info!(
            region_id = p.region_id,
            index = p.index,
            term = p.term,
            "snapshot applied"
        );
        Ok(())
    }

    /// Tells removed peers they are gone (if this peer leads) and destroys
    /// this peer if it was the one removed.
    fn after_membership_change(&mut self, region_id: RegionId, outcome: &ApplyOutcome) {
        if let Some(peer) = self.peers.get(&region_id) {
            if peer.is_leader() {
                for (removed, region) in &outcome.removed_peers {
                    self.outbox.push(Outgoing::Message(
                        removed.store_id,
                        RaftMessage {
                            region_id,
                            from_peer: Some(*peer.meta()),
                            to_peer: Some(*removed),
                            region_epoch: region.region_epoch,
                            start_key: region.start_key.clone(),
                            end_key: region.end_key.clone(),
                            message: vec![],
                            is_tombstone: true,
                            from_store_low_space: false, // stamped when sent (space.rs)
                            hibernation: None,
                        },
                    ));
                }
            }
        }
        if outcome.removed_self {
            let epoch = self
                .peers
                .get(&region_id)
                .map(|p| region::epoch(p.region()));
            if let Err(e) = self.destroy_region(region_id, epoch) {
                tracing::error!(region_id, error = %e, "cannot destroy a removed peer");
            }
        }
    }
}
