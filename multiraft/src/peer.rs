//! One replica of a region: a raft-rs `RawNode` over [`PeerStorage`], the
//! proposals waiting for their entries to apply, the reads waiting for a
//! read index, and the leader lease.
//!
//! A `Peer` does no IO of its own: it never touches sockets, channels or
//! threads, and writes only into the write batches the poller hands it. The
//! poller decides when its Ready state is persisted, sent and applied.
//!
//! Proposals are kept in (term, index) order. When an entry (i, t) applies,
//! the proposal at exactly (i, t) succeeds; any proposal of an older term, or
//! of the same term at a smaller index, was overwritten by another leader and
//! fails as a stale command (never applied, safe to retry).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::Message;
use raft::{RawNode, SoftState, StateRole};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{self, Region};
use tessera_proto::raft_serverpb::RaftMessage;

use crate::config::RaftConfig;
use crate::engine::Engine;
use crate::read::{Lease, PendingRead, ReadPath, ReadQueue};
use crate::router::{EpochCheck, ProposeCallback, ReadCallback, ReadPolicy, RegionInfo};
use crate::storage::PeerStorage;
use crate::{logger, region, Error, RegionId, Result, StoreId};

struct Proposal<O> {
    index: u64,
    term: u64,
    proposed_at: Instant,
    cb: ProposeCallback<O>,
}

pub struct Peer<O> {
    pub(crate) raw_node: RawNode<PeerStorage>,
    meta: metapb::Peer,
    proposals: VecDeque<Proposal<O>>,
    pub(crate) reads: ReadQueue,
    lease: Lease,
    read_index_retry_ticks: usize,
}

impl<O: Send + 'static> Peer<O> {
    /// Loads the replica of `region` that lives on `store_id`.
    pub fn load(
        store_id: StoreId,
        region: Region,
        engine: Arc<dyn Engine>,
        cfg: &RaftConfig,
    ) -> Result<Self> {
        let meta = region::find_peer_on_store(&region, store_id)
            .cloned()
            .ok_or_else(|| {
                Error::corruption(
                    format!("region {}", region.id),
                    format!("has no peer on store {store_id}"),
                )
            })?;
        let storage = PeerStorage::load(engine, region, cfg.entry_cache_limit)?;
        let raft_cfg = cfg.raft_config(meta.id, storage.applied_index());
        let logger = logger::peer_logger(storage.region_id(), meta.id);
        let raw_node = RawNode::new(&raft_cfg, storage, &logger)?;
        Ok(Peer {
            raw_node,
            meta,
            proposals: VecDeque::new(),
            reads: ReadQueue::default(),
            lease: Lease::new(cfg.lease_duration()),
            read_index_retry_ticks: cfg.read_index_retry_ticks,
        })
    }

    pub fn region_id(&self) -> RegionId {
        self.storage().region_id()
    }

    pub fn region(&self) -> &Region {
        self.storage().region()
    }

    pub fn storage(&self) -> &PeerStorage {
        self.raw_node.store()
    }

    pub fn storage_mut(&mut self) -> &mut PeerStorage {
        self.raw_node.mut_store()
    }

    pub fn peer_id(&self) -> u64 {
        self.meta.id
    }

    pub fn meta(&self) -> &metapb::Peer {
        &self.meta
    }

    pub fn is_leader(&self) -> bool {
        self.raw_node.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw_node.raft.term
    }

    /// The leader this peer knows of.
    pub fn leader(&self) -> Option<metapb::Peer> {
        let id = self.raw_node.raft.leader_id;
        region::find_peer(self.region(), id).cloned()
    }

    fn not_leader(&self) -> Error {
        Error::region(RegionError::not_leader(self.region_id(), self.leader()))
    }

    fn epoch_not_match(&self, check: &EpochCheck) -> Error {
        let current = region::epoch(self.region());
        Error::region(RegionError::epoch_not_match(
            format!(
                "region {} epoch is {current}, request has {}",
                self.region_id(),
                check.epoch
            ),
            vec![self.region().clone()],
        ))
    }

    /// Proposes `data`; `cb` learns the outcome once the entry applies, or
    /// right away if the proposal is refused.
    pub fn propose(
        &mut self,
        epoch: &EpochCheck,
        data: Vec<u8>,
        cb: ProposeCallback<O>,
        now: Instant,
    ) -> bool {
        if !self.is_leader() {
            cb(Err(self.not_leader()));
            return false;
        }
        if !epoch.matches(&region::epoch(self.region())) {
            cb(Err(self.epoch_not_match(epoch)));
            return false;
        }
        let last_before = self.raw_node.raft.raft_log.last_index();
        if let Err(e) = self.raw_node.propose(vec![], data) {
            // ProposalDropped: a leader transfer is in progress.
            tracing::debug!(region_id = self.region_id(), error = %e, "proposal dropped");
            cb(Err(self.not_leader()));
            return false;
        }
        let index = self.raw_node.raft.raft_log.last_index();
        if index != last_before + 1 {
            // raft-rs accepted nothing (should not happen for a leader).
            cb(Err(self.not_leader()));
            return false;
        }
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            proposed_at: now,
            cb,
        });
        true
    }

    /// Queues a read; it is confirmed by [`Peer::flush_reads`] later in the
    /// round.
    pub fn read(&mut self, epoch: EpochCheck, policy: ReadPolicy, cb: ReadCallback) {
        if policy == ReadPolicy::Leader && !self.is_leader() {
            cb(Err(self.not_leader()));
            return;
        }
        if !epoch.matches(&region::epoch(self.region())) {
            cb(Err(self.epoch_not_match(&epoch)));
            return;
        }
        self.reads
            .push(PendingRead { cb, epoch }, policy == ReadPolicy::Follower);
    }

    /// The read index the lease vouches for right now, if any.
    fn lease_read_index(&self, now: Instant) -> Option<u64> {
        let raft = &self.raw_node.raft;
        if raft.state != StateRole::Leader
            || raft.lead_transferee.is_some()
            || !self.lease.is_valid(now)
        {
            return None;
        }
        let committed = raft.raft_log.committed;
        // Until the leader commits in its own term its commit index may be
        // behind what an earlier leader acknowledged.
        (raft.raft_log.term(committed).ok() == Some(raft.term)).then_some(committed)
    }

    /// Turns this round's reads into one lease-served batch or one ReadIndex
    /// request (per policy).
    pub fn flush_reads(&mut self, now: Instant) -> Vec<ReadPath> {
        if !self.reads.has_incoming() {
            return vec![];
        }
        let lease_index = self.lease_read_index(now);
        let is_leader = self.is_leader();
        let (region_id, leader) = (self.region_id(), self.leader());
        let raw_node = &mut self.raw_node;
        self.reads.flush(
            now,
            is_leader,
            lease_index,
            &|| Error::region(RegionError::not_leader(region_id, leader)),
            &mut |ctx| raw_node.read_index(ctx),
        )
    }

    /// Records read indexes from a Ready.
    pub fn on_read_states(&mut self, states: &[raft::ReadState]) {
        if let Some(since) = self.reads.on_read_states(states) {
            if self.is_leader() && self.raw_node.raft.lead_transferee.is_none() {
                self.lease.renew(since);
            }
        }
    }

    /// Serves the reads whose read index has been applied.
    pub fn fire_ready_reads(&mut self) -> usize {
        let applied = self.storage().applied_index();
        let region = self.raw_node.store().region();
        self.reads.fire_ready(applied, region)
    }

    pub fn tick(&mut self) -> bool {
        let raw_node = &mut self.raw_node;
        self.reads.on_tick(self.read_index_retry_ticks, &mut |ctx| {
            raw_node.read_index(ctx)
        });
        self.raw_node.tick()
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        self.raw_node.step(msg)?;
        Ok(())
    }

    pub fn campaign(&mut self) -> Result<()> {
        self.raw_node.campaign()?;
        Ok(())
    }

    /// Starts handing leadership to `to_peer`. The lease ends now: the new
    /// leader may be elected without waiting for an election timeout.
    pub fn transfer_leader(&mut self, to_peer: u64) {
        if !self.is_leader() || to_peer == self.peer_id() {
            return;
        }
        self.lease.expire();
        self.raw_node.transfer_leader(to_peer);
    }

    /// The voter that has replicated the most of the log, other than this
    /// peer: the best candidate to hand leadership to.
    pub fn best_transferee(&self) -> Option<u64> {
        let voters = self.raw_node.raft.prs().conf().voters().ids();
        self.raw_node
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.peer_id() && voters.contains(**id))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Reacts to a role change reported in a Ready.
    pub fn on_soft_state(&mut self, ss: &SoftState, was_leader: bool) {
        if was_leader && ss.raft_state != StateRole::Leader {
            self.lease.expire();
            let leader = self.leader();
            self.reads.on_step_down(self.region_id(), leader);
        }
    }

    /// Resolves proposals against the entry (index, term) that just applied.
    /// Returns the callbacks to run once the apply batch is durable.
    pub fn on_entry_applied(
        &mut self,
        index: u64,
        term: u64,
        output: Option<O>,
        deferred: &mut Vec<Box<dyn FnOnce() + Send>>,
    ) {
        let mut output = output;
        while let Some(p) = self.proposals.front() {
            if p.term > term || (p.term == term && p.index > index) {
                break;
            }
            let p = self.proposals.pop_front().expect("front exists");
            if p.term == term && p.index == index {
                if self.is_leader()
                    && term == self.term()
                    && self.raw_node.raft.lead_transferee.is_none()
                {
                    self.lease.renew(p.proposed_at);
                }
                match output.take() {
                    Some(out) => deferred.push(Box::new(move || (p.cb)(Ok(out)))),
                    None => {
                        let region_id = self.region_id();
                        deferred.push(Box::new(move || {
                            (p.cb)(Err(Error::region(RegionError::stale_command(region_id))))
                        }))
                    }
                }
            } else {
                let region_id = self.region_id();
                deferred.push(Box::new(move || {
                    (p.cb)(Err(Error::region(RegionError::stale_command(region_id))))
                }));
            }
        }
    }

    /// Fails everything waiting on this peer (it is being destroyed or the
    /// store is stopping). Proposals may still commit elsewhere, so their
    /// outcome is unknown.
    pub fn fail_pending(&mut self, reason: &str) {
        for p in self.proposals.drain(..) {
            (p.cb)(Err(Error::Indeterminate(reason.to_string())));
        }
        let region_id = self.region_id();
        self.reads
            .fail_all(|| Error::region(RegionError::region_not_found(region_id)));
    }

    /// Wraps raft-rs messages for the transport; messages to peers the
    /// region does not list are dropped.
    pub fn wrap_messages(&self, msgs: Vec<Message>, out: &mut Vec<(StoreId, RaftMessage)>) {
        let region = self.region();
        for m in msgs {
            let Some(to_peer) = region::find_peer(region, m.to) else {
                tracing::debug!(region_id = region.id, to = m.to, msg_type = ?m.get_msg_type(), "message to unknown peer dropped");
                continue;
            };
            let store_id = to_peer.store_id;
            out.push((
                store_id,
                RaftMessage {
                    region_id: region.id,
                    from_peer: Some(self.meta),
                    to_peer: Some(*to_peer),
                    region_epoch: region.region_epoch,
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                    message: m
                        .write_to_bytes()
                        .expect("encoding a raft message cannot fail"),
                    is_tombstone: false,
                },
            ));
        }
    }

    pub fn info(&self) -> RegionInfo {
        let raft = &self.raw_node.raft;
        RegionInfo {
            region: self.region().clone(),
            peer_id: self.peer_id(),
            leader: self.leader(),
            is_leader: self.is_leader(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.storage().applied_index(),
            last_index: raft.raft_log.last_index(),
        }
    }
}
