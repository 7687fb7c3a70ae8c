//! The peers a store hosts: loading them, creating them (by hand, or for a
//! message from a new region's leader; a split's new peers start in
//! `split`), destroying them, the index of their key ranges, and their
//! snapshots.
//!
//! Invariants: initialized peers' ranges never overlap (a message or
//! snapshot whose range overlaps another local region is dropped, except
//! that vote requests wait a while for a split to create their region); a
//! removed peer leaves a tombstone with its epoch, and messages for that
//! region at that epoch or older are ignored.

use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{Region, RegionEpoch};
use tessera_proto::raft_serverpb::{PeerState, RaftMessage, RegionLocalState};

use super::Poller;
use crate::engine::{Cf, EngineExt, WriteBatch};
use crate::mailbox::PollerMsg;
use crate::peer::{is_initial_msg, Peer};
use crate::snapshot::{self, apply as snap_apply};
use crate::state_machine::StateMachine;
use crate::{metrics as m, region, state_keys, Error, RegionId, Result};

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
                self.tombstones.insert(region.id, region::epoch(&region));
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
            self.peers.insert(region.id, peer);
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
        self.engine.write(&wb, true)?;
        let peer = Peer::load(
            self.store_id,
            region.clone(),
            self.engine.clone(),
            &self.cfg,
        )?;
        self.index_region(&region);
        self.peers.insert(region.id, peer);
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
        let Some(mut peer) = self.peers.remove(&region_id) else {
            return Err(Error::region(RegionError::region_not_found(region_id)));
        };
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
        match tombstone {
            Some(epoch) => {
                let mut r = region.clone();
                r.region_epoch = Some(epoch);
                wb.put_msg(
                    Cf::Meta,
                    state_keys::region_state_key(region_id),
                    &RegionLocalState {
                        region: Some(r),
                        state: PeerState::Tombstone as i32,
                    },
                );
                self.tombstones.insert(region_id, epoch);
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
        self.engine.write(&wb, true)?;
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

    /// Steps a received Raft message into its peer (counted as received by
    /// the caller: held vote requests come back through here).
    pub(super) fn on_raft_message(&mut self, msg: RaftMessage) {
        let region_id = msg.region_id;
        let to = msg.to_peer.unwrap_or_default();
        let epoch = msg.region_epoch.unwrap_or_default();
        if msg.is_tombstone {
            self.on_tombstone_message(region_id, to.id, epoch);
            return;
        }
        // A tombstone guards against reviving the removed peer; once a new
        // peer of the region lives here, messages are checked against it
        // (by peer id) instead — its new followers have no epoch yet.
        if let Some(t) = self.tombstones.get(&region_id) {
            if epoch.conf_ver <= t.conf_ver && !self.peers.contains_key(&region_id) {
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
        if raft_msg.get_msg_type() == MessageType::MsgSnapshot
            && !self.snapshot_fits(region_id, &raft_msg)
        {
            return;
        }
        let peer = self.peers.get_mut(&region_id).expect("peer exists");
        if to.id != peer.peer_id() {
            tracing::debug!(
                region_id,
                to = to.id,
                local = peer.peer_id(),
                "message for another peer of the region dropped"
            );
            return;
        }
        if let Some(from) = msg.from_peer {
            peer.learn_peer(from);
        }
        if let Err(e) = peer.step(raft_msg) {
            tracing::debug!(region_id, error = %e, "raft refused a message");
        }
        self.touched.insert(region_id);
    }

    /// The leader says `peer_id` is no longer in the region (at `epoch`).
    fn on_tombstone_message(&mut self, region_id: RegionId, peer_id: u64, epoch: RegionEpoch) {
        let Some(peer) = self.peers.get(&region_id) else {
            return;
        };
        if peer.peer_id() != peer_id {
            return;
        }
        let local = region::epoch(peer.region());
        let still_member = peer.is_initialized() && epoch.conf_ver <= local.conf_ver;
        if still_member {
            return;
        }
        tracing::info!(
            region_id,
            peer_id,
            "told by the leader that this peer was removed"
        );
        if let Err(e) = self.destroy_region(region_id, Some(epoch)) {
            tracing::warn!(region_id, error = %e, "cannot destroy a removed peer");
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
        match Peer::uninitialized(region_id, to, self.engine.clone(), &self.cfg) {
            Ok(peer) => {
                tracing::info!(
                    region_id,
                    peer_id = to.id,
                    "created a peer for a message from its region"
                );
                self.peers.insert(region_id, peer);
                self.roles_changed = true;
                true
            }
            Err(e) => {
                tracing::warn!(region_id, error = %e, "cannot create a peer");
                false
            }
        }
    }

    /// A snapshot may be applied only if its range is free here.
    fn snapshot_fits(&self, region_id: RegionId, msg: &Message) -> bool {
        let Ok(data) = snapshot::decode_data(msg.get_snapshot()) else {
            tracing::warn!(region_id, "snapshot without readable data dropped");
            return false;
        };
        let r = data.region.unwrap_or_default();
        match self.overlapping(&r.start_key, &r.end_key, region_id) {
            Some(other) => {
                tracing::info!(
                    region_id,
                    overlaps = other,
                    "snapshot overlaps a local region; dropped"
                );
                false
            }
            None => true,
        }
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

    /// Hands raft-rs' snapshot requests of this round to the worker.
    pub(super) fn request_snapshots(&mut self) {
        let Some(worker) = &self.snap_worker else {
            return;
        };
        for (id, peer) in &self.peers {
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
