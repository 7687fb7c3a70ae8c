//! The peers a store hosts: loading them, creating them (by hand, or for a
//! message from a new region's leader; a split's new peers start in
//! `split`), destroying them, the index of their key ranges, and their
//! snapshots.
//!
//! Invariants: initialized peers' ranges never overlap (a message or
//! snapshot whose range overlaps another local region is dropped, except
//! that vote requests wait a while for a split to create their region); a
//! removed peer leaves a tombstone, and messages for it or from before its
//! removal are ignored (`removed.rs`).

use std::collections::BTreeSet;
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{Region, RegionEpoch};
use tessera_proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};

use super::removed::Tombstone;
use super::Poller;
use crate::engine::{Cf, Engine, EngineExt, WriteBatch};
use crate::mailbox::PollerMsg;
use crate::peer::{is_initial_msg, Peer};
use crate::snapshot::{self, apply as snap_apply};
use crate::state_machine::StateMachine;
use crate::{metrics as m, region, state_keys, Error, RegionId, Result};

/// A synced write of a peer's creation or removal (failpoint
/// `engine_peer_write_error` fails it).
fn synced_write(engine: &dyn Engine, wb: &WriteBatch) -> Result<()> {
    fail::fail_point!("engine_peer_write_error", |_| Err(Error::Engine(
        "injected write error (failpoint engine_peer_write_error)".into()
    )));
    engine.write(wb, true)
}

impl<S: StateMachine> Poller<S> {
    pub(super) fn load_regions(&mut self) -> Result<()> {
        let (start, end) = state_keys::region_meta_bounds();
        let mut states = vec![];
        self.engine
            .scan(Cf::Meta, &start, &end, false, &mut |k, v| {
                if state_keys::decode_region_state_key(k).is_some() {
                    states.push(v.to_vec());
                }
                true
            })?;
        let mut keep_snapshots = vec![];
        let mut resumed = vec![];
        for bytes in states {
            let state: RegionLocalState = prost::Message::decode(bytes.as_slice())?;
            let region = state.region.unwrap_or_default();
            if state.state == PeerState::Tombstone as i32 {
                self.tombstones
                    .insert(region.id, Tombstone::of(&region, self.store_id));
                continue;
            }
            let peer = Peer::load(
                self.store_id,
                region.clone(),
                self.engine.clone(),
                &self.cfg,
            )?;
            if state.state == PeerState::Applying as i32 {
                // Crashed while ingesting a snapshot: redo the data step.
                let apply = peer.storage().apply_state();
                let pending = snap_apply::resume(
                    &self.snap_mgr,
                    region.clone(),
                    apply.truncated_term,
                    apply.truncated_index,
                )?;
                keep_snapshots.push(pending.dir.clone());
                resumed.push(pending);
            }
            self.index_region(&region);
            self.add_peer(region.id, peer);
        }
        self.snap_mgr.clean_on_start(&keep_snapshots);
        for p in resumed {
            tracing::info!(
                region_id = p.region_id,
                "finishing a snapshot apply interrupted by a restart"
            );
            snap_apply::finish(self.engine.as_ref(), &self.snap_mgr, &p)?;
        }
        metrics::gauge!(m::REGIONS).set(self.peers.len() as f64);
        tracing::info!(
            store_id = self.store_id,
            regions = self.peers.len(),
            "regions loaded"
        );
        Ok(())
    }

    pub(super) fn index_region(&mut self, r: &Region) {
        self.ranges.insert(r.start_key.clone(), r.id);
    }

    pub(super) fn unindex_region(&mut self, r: &Region) {
        if self.ranges.get(&r.start_key) == Some(&r.id) {
            self.ranges.remove(&r.start_key);
        }
    }

    /// An initialized local region other than `except` whose range meets
    /// `[start, end)`.
    fn overlapping(&self, start: &[u8], end: &[u8], except: RegionId) -> Option<RegionId> {
        let candidates: Box<dyn Iterator<Item = (&Vec<u8>, &RegionId)>> = if end.is_empty() {
            Box::new(self.ranges.iter().rev())
        } else {
            Box::new(
                self.ranges
                    .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(end)))
                    .rev(),
            )
        };
        for (_, id) in candidates {
            let Some(peer) = self.peers.get(id) else {
                continue;
            };
            let r = peer.region();
            if !r.end_key.is_empty() && r.end_key.as_slice() <= start {
                // Ranges are disjoint and sorted: nothing further left meets it.
                return None;
            }
            if *id != except {
                return Some(*id);
            }
        }
        None
    }

    /// Writes the initial state of `region` and starts its local peer.
    pub(super) fn create_region(&mut self, region: Region) -> Result<()> {
        if self.peers.contains_key(&region.id) {
            return Err(Error::InvalidArgument(format!(
                "region {} already exists on store {}",
                region.id, self.store_id
            )));
        }
        if let Some(other) = self.overlapping(&region.start_key, &region.end_key, region.id) {
            return Err(Error::InvalidArgument(format!(
                "region {} overlaps region {other} on store {}",
                region.id, self.store_id
            )));
        }
        if region::find_peer_on_store(&region, self.store_id).is_none() {
            return Err(Error::InvalidArgument(format!(
                "region {} has no peer on store {}",
                region.id, self.store_id
            )));
        }
        if self.tombstones.contains_key(&region.id)
            || self
                .engine
                .get_msg::<RegionLocalState>(Cf::Meta, &state_keys::region_state_key(region.id))?
                .is_some()
        {
            return Err(Error::InvalidArgument(format!(
                "region {} was on store {} before and was removed",
                region.id, self.store_id
            )));
        }
        let mut wb = WriteBatch::default();
        region::write_initial_state(&region, &mut wb);
        self.write_peer_change(&wb, "creating a peer")?;
        let peer = Peer::load(
            self.store_id,
            region.clone(),
            self.engine.clone(),
            &self.cfg,
        )?;
        self.index_region(&region);
        self.add_peer(region.id, peer);
        self.touched.insert(region.id);
        self.roles_changed = true;
        Ok(())
    }

    /// Removes the local peer of `region_id` and deletes its log, states and
    /// data in one synced write. With `tombstone`, the region state stays
    /// as a tombstone at that epoch so late messages cannot revive it.
    pub(super) fn destroy_region(
        &mut self,
        region_id: RegionId,
        tombstone: Option<RegionEpoch>,
    ) -> Result<()> {
        if self
            .peers
            .get(&region_id)
            .is_some_and(|p| p.merge.is_merging())
        {
            // Its data becomes its target's: it leaves with its merge (or
            // serves again after a rollback), never on its own.
            return Err(Error::InvalidArgument(format!(
                "region {region_id} is merging; it cannot be destroyed"
            )));
        }
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Err(Error::region(RegionError::region_not_found(region_id)));
        };
        // No reader may start on, or keep what it read of, data about to go.
        self.leases.remove(region_id);
        for answer in peer.fail_pending("the peer was removed from this store") {
            answer();
        }
        let region = peer.region().clone();
        if peer.is_initialized() {
            self.unindex_region(&region);
        }
        let mut wb = WriteBatch::default();
        wb.delete_range(
            Cf::Raft,
            state_keys::raft_log_key(region_id, 0).to_vec(),
            state_keys::raft_log_key(region_id, u64::MAX).to_vec(),
        );
        wb.delete(
            Cf::Raft,
            state_keys::raft_log_key(region_id, u64::MAX).to_vec(),
        );
        wb.delete(Cf::Meta, state_keys::raft_state_key(region_id).to_vec());
        wb.delete(Cf::Meta, state_keys::apply_state_key(region_id).to_vec());
        wb.delete(Cf::Meta, state_keys::merge_record_key(region_id).to_vec());
        match tombstone {
            Some(epoch) => {
                let mut r = region.clone();
                r.region_epoch = Some(epoch);
                let peer_id = peer.peer_id();
                self.tombstones
                    .insert(region_id, Tombstone { epoch, peer_id });
                wb.put_msg(
                    Cf::Meta,
                    state_keys::region_state_key(region_id),
                    &RegionLocalState {
                        region: Some(r),
                        state: PeerState::Tombstone as i32,
                    },
                );
            }
            None => wb.delete(Cf::Meta, state_keys::region_state_key(region_id).to_vec()),
        }
        if peer.is_initialized() {
            wb.delete_range(
                Cf::Default,
                region.start_key.clone(),
                state_keys::data_range_end(&region.end_key),
            );
        }
        self.write_peer_change(&wb, "removing a peer")?;
        self.snap_mgr.remove_generated_except(region_id, None);
        self.generating.remove(&region_id);
        self.roles_changed = true;
        tracing::info!(
            region_id,
            store_id = self.store_id,
            "peer destroyed on this store"
        );
        Ok(())
    }

    /// The synced write that creates or removes a peer outside a round: a
    /// failure stops the poller as a failed round does (`engine_failure.rs`),
    /// whatever the caller does with the error it gets back.
    pub(super) fn write_peer_change(&mut self, wb: &WriteBatch, what: &str) -> Result<()> {
        let written = synced_write(self.engine.as_ref(), wb);
        if let Err(e) = &written {
            self.fail_engine(&format!("{what} failed: {e}"), &Default::default());
        }
        written
    }

    /// Steps a received Raft message into its peer (counted as received by
    /// the caller: held vote requests come back through here).
    pub(super) fn on_raft_message(&mut self, msg: RaftMessage) {
        if !self.on_hibernation_message(&msg) {
            return;
        }
        let region_id = msg.region_id;
        let to = msg.to_peer.unwrap_or_default();
        let epoch = msg.region_epoch.unwrap_or_default();
        if msg.is_tombstone {
            self.on_tombstone_message(region_id, to.id, epoch);
            return;
        }
        // A tombstone guards against reviving the removed peer (`removed.rs`);
        // once a new peer of the region lives here, messages are checked
        // against it (by peer id) instead — its new followers have no epoch
        // yet.
        if let Some(t) = self.tombstones.get(&region_id) {
            if !self.peers.contains_key(&region_id) && t.ignores(to.id, &epoch) {
                tracing::debug!(region_id, "message for a removed peer ignored");
                return;
            }
        }
        let raft_msg = match Message::parse_from_bytes(&msg.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region_id, error = %e, "undecodable raft message dropped");
                return;
            }
        };
        if !self.peers.contains_key(&region_id) && !self.maybe_create_peer(&msg, &raft_msg) {
            return;
        }
        let local = self.peers[&region_id].peer_id();
        if to.id != local {
            self.on_message_for_another_peer(region_id, to.id, epoch);
            return;
        }
        // After the cheap checks: this one may read the snapshot's files.
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot
            && !self.snapshot_fits(region_id, &raft_msg)
        {
            return;
        }
        if self.space.on_receive(&msg, &raft_msg) {
            // This store is low on space (`space.rs`): Raft sends it again.
            metrics::counter!(m::RAFT_MESSAGES_REFUSED_TOTAL, "reason" => "low_space").increment(1);
            return;
        }
        let peer = self.peers.get_mut(&region_id).expect("peer exists");
        if let Some(reason) = peer.refusal(&raft_msg) {
            tracing::warn!(
                region_id,
                reason,
                from = ?msg.from_peer,
                "raft message refused before raft-rs"
            );
            metrics::counter!(m::RAFT_MESSAGES_REFUSED_TOTAL, "reason" => reason).increment(1);
            return;
        }
        if let Some(from) = msg.from_peer {
            peer.learn_peer(from);
        }
        if peer.is_asleep() && !peer.keeps_sleeping_on(&raft_msg) {
            peer.wake();
        }
        if peer.may_step_down_on(&raft_msg) {
            // The lease ends before the step that may end the leadership.
            self.leases.end_lease(region_id);
        }
        let stepped = tessera_common::contain(|| {
            // Tests make raft-rs "panic" here to check the containment.
            fail::fail_point!("raft_step");
            peer.step(raft_msg)
        });
        match stepped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(region_id, error = %e, "raft refused a message"),
            Err(_) => {
                tracing::error!(
                    region_id,
                    from = ?msg.from_peer,
                    "raft-rs panicked on a message; reloading the region from disk"
                );
                self.reload_peer(region_id, "step_panicked");
            }
        }
        self.touched.insert(region_id);
    }

    /// Replaces the peer of `region_id` with one loaded from its durable
    /// state, as a restart of that region alone would: what raft-rs held
    /// in memory and had not persisted is dropped (safe — Raft assumes a
    /// peer may crash at any point), proposals and reads waiting on it fail
    /// (proposals as indeterminate). Used when raft-rs panicked on a message
    /// or a received snapshot could not be staged. If even the durable state
    /// cannot be loaded, the region stays out of service until a restart.
    pub(super) fn reload_peer(&mut self, region_id: RegionId, reason: &'static str) {
        let Some(mut old) = self.peers.remove(&region_id) else {
            return;
        };
        self.leases.invalidate(region_id);
        metrics::counter!(m::REGION_RELOADS_TOTAL, "reason" => reason).increment(1);
        self.stats
            .region_reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for answer in old.fail_pending("the region was reloaded after an error") {
            answer();
        }
        let (meta, region, initialized) = (*old.meta(), old.region().clone(), old.is_initialized());
        drop(old);
        self.generating.remove(&region_id);
        self.roles_changed = true;
        let fresh = if initialized {
            Peer::load(
                self.store_id,
                region.clone(),
                self.engine.clone(),
                &self.cfg,
            )
        } else {
            Peer::uninitialized(region_id, meta, self.engine.clone(), &self.cfg)
        };
        match fresh {
            Ok(peer) => {
                self.add_peer(region_id, peer);
                self.touched.insert(region_id);
                tracing::warn!(region_id, reason, "region reloaded from its durable state");
            }
            Err(e) => {
                if initialized {
                    self.unindex_region(&region);
                }
                tracing::error!(
                    region_id,
                    reason,
                    error = %e,
                    "cannot reload the region; it is out of service until the store restarts"
                );
            }
        }
    }

    /// Creates an empty peer for a message from a region this store does not
    /// have, if the message may start one and its range is free here.
    fn maybe_create_peer(&mut self, msg: &RaftMessage, raft_msg: &Message) -> bool {
        let region_id = msg.region_id;
        let Some(to) = msg.to_peer else { return false };
        if to.store_id != self.store_id || !is_initial_msg(raft_msg) {
            return false;
        }
        if let Some(other) = self.overlapping(&msg.start_key, &msg.end_key, region_id) {
            let t = raft_msg.get_msg_type();
            if t == MessageType::MsgRequestVote || t == MessageType::MsgRequestPreVote {
                // Most likely a region split off `other` whose split is not
                // applied here yet: the new peer will take it.
                tracing::debug!(region_id, overlaps = other, "vote request held");
                self.early_votes.hold(msg.clone(), self.now());
            } else {
                tracing::debug!(
                    region_id,
                    overlaps = other,
                    "not creating a peer whose range is held here"
                );
            }
            return false;
        }
        if !self.may_create_uninitialized(region_id) {
            return false;
        }
        match Peer::uninitialized(region_id, to, self.engine.clone(), &self.cfg) {
            Ok(peer) => {
                tracing::info!(
                    region_id,
                    peer_id = to.id,
                    "created a peer for a message from its region"
                );
                self.add_peer(region_id, peer);
                self.created_uninitialized(region_id);
                self.roles_changed = true;
                true
            }
            Err(e) => {
                tracing::warn!(region_id, error = %e, "cannot create a peer");
                false
            }
        }
    }

    /// A snapshot may be stepped only if its range is free here and its
    /// files arrived whole through a snapshot stream (which wrote its
    /// description, `snapshot.meta`, after checking sizes and checksums —
    /// a `MsgSnapshot` sent in a plain message batch has none) and hold
    /// only keys inside the region the snapshot describes. A snapshot that
    /// fails is dropped with its files; the leader sends another.
    fn snapshot_fits(&mut self, region_id: RegionId, msg: &Message) -> bool {
        let Ok(data) = snapshot::decode_data(msg.get_snapshot()) else {
            self.refuse_snapshot(region_id, msg, "snapshot_undecodable", "unreadable data");
            return false;
        };
        let r = data.region.clone().unwrap_or_default();
        if r.id != region_id {
            self.refuse_snapshot(
                region_id,
                msg,
                "snapshot_other_region",
                "describes another region",
            );
            return false;
        }
        while let Some(other) = self.overlapping(&r.start_key, &r.end_key, region_id) {
            if self.end_source_covered_by_snapshot(region_id, other) {
                continue;
            }
            tracing::info!(
                region_id,
                overlaps = other,
                "snapshot overlaps a local region; dropped"
            );
            return false;
        }
        let meta = msg.get_snapshot().get_metadata();
        let dir = self.snap_mgr.recv_dir(region_id, meta.term, meta.index);
        if !dir.join(snap_apply::META_FILE).exists() {
            self.refuse_snapshot(
                region_id,
                msg,
                "snapshot_not_received",
                "its files did not arrive through a snapshot stream",
            );
            return false;
        }
        let checked = snapshot::SnapManager::received_files(&dir)
            .and_then(|files| self.engine.check_external(&files, &r.start_key, &r.end_key));
        if let Err(e) = checked {
            self.refuse_snapshot(region_id, msg, "snapshot_files_refused", &e.to_string());
            self.snap_mgr.remove(&dir);
            return false;
        }
        true
    }

    fn refuse_snapshot(&self, region_id: RegionId, msg: &Message, reason: &'static str, why: &str) {
        tracing::warn!(region_id, from = msg.from, reason, why, "snapshot refused");
        metrics::counter!(m::RAFT_MESSAGES_REFUSED_TOTAL, "reason" => reason).increment(1);
    }

    pub(super) fn start_snapshot_worker(&mut self) -> Result<()> {
        let (tx, rx) = crossbeam_channel::unbounded::<RegionId>();
        let engine = self.engine.clone();
        let mgr = self.snap_mgr.clone();
        let mailbox = self.mailbox.clone();
        let stats = self.stats.clone();
        let thread = std::thread::Builder::new()
            .name(format!("snap-gen-{}", self.store_id))
            .spawn(move || {
                for region_id in rx {
                    let started = Instant::now();
                    let result = snapshot::generate(engine.as_ref(), &mgr, region_id);
                    match &result {
                        Ok(s) => {
                            stats
                                .snapshots_generated
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            metrics::counter!(m::SNAPSHOTS_GENERATED_TOTAL).increment(1);
                            metrics::histogram!(m::SNAPSHOT_GENERATE_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                            tracing::info!(
                                region_id,
                                index = s.get_metadata().index,
                                "snapshot generated"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(region_id, error = %e, "generating a snapshot failed")
                        }
                    }
                    // The poller may be gone; nothing to do then.
                    let _ = mailbox.send(PollerMsg::SnapshotGenerated { region_id, result });
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the snapshot worker: {e}")))?;
        self.snap_worker = Some(tx);
        self.snap_worker_thread = Some(thread);
        Ok(())
    }

    /// Hands raft-rs' snapshot requests of this round to the worker. Only
    /// the round's `touched` peers can have asked (raft-rs asks while a
    /// message, a tick or a Ready moves a peer, and each of those touches
    /// it), so a store of 100,000 idle regions does not look at every peer
    /// each round; a request left unseen stays set and is seen the next
    /// time its peer is touched.
    pub(super) fn request_snapshots(&mut self, touched: &BTreeSet<RegionId>) {
        let Some(worker) = &self.snap_worker else {
            return;
        };
        for id in touched {
            let Some(peer) = self.peers.get(id) else {
                continue;
            };
            if peer.storage().take_snapshot_request() && self.generating.insert(*id) {
                let _ = worker.send(*id);
            }
        }
    }

    pub(super) fn on_snapshot_generated(
        &mut self,
        region_id: RegionId,
        result: Result<raft::eraftpb::Snapshot>,
    ) {
        self.generating.remove(&region_id);
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        if let Ok(snap) = result {
            peer.storage_mut().set_generated_snapshot(snap);
            peer.on_snapshot_ready();
            self.touched.insert(region_id);
        }
    }
}
