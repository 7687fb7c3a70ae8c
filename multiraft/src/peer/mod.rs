//! One replica of a region: a raft-rs `RawNode` over [`PeerStorage`], the
//! proposals waiting for their entries to apply, the reads waiting for a
//! read index, and the leader lease.
//!
//! A `Peer` does no IO of its own: it never touches sockets, channels or
//! threads, and writes only into the write batches the poller hands it. The
//! poller decides when its Ready state is persisted, sent and applied.
//!
//! Nor does it run its callers' callbacks or read the clock: a request it
//! refuses comes back as a [`Refusal`] (a read as a [`ReadStep`]), the
//! answers to failed proposals come back as [`Deferred`] calls and those to
//! applied entries wait in the apply batch, and reads come back as
//! [`ReadAnswer`]s once servable (or failed) — the poller runs them all; the
//! time (`now`) is passed in by the poller. Only this module touches the
//! raft-rs node: the poller takes Readies, advances and reports through
//! `Peer`'s methods. Reads are in `reads.rs`, outgoing messages in
//! `messages.rs`, hibernation in `hibernate.rs`, what it reports of itself
//! in `report.rs`.
//!
//! Proposals are kept in (term, index) order. When an entry (i, t) applies,
//! the proposal at exactly (i, t) succeeds; any proposal of an older term, or
//! of the same term at a smaller index, was overwritten by another leader and
//! fails as a stale command (never applied, safe to retry).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Message,
};
use raft::{RawNode, SoftState, StateRole};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{self, Region};
use tessera_proto::raft_serverpb::ConfChangeContext;

use crate::config::RaftConfig;
use crate::engine::Engine;
use crate::mailbox::{
    ConfChangeCallback, ConfChangeItem, ConfChangeKind, EpochCheck, ProposeCallback, ReadCallback,
};
use crate::read::{Lease, ReadAnswer, ReadQueue};
use crate::storage::PeerStorage;
use crate::{logger, region, Error, RegionId, Result, StoreId};

mod guard;
mod hibernate;
mod merge;
mod messages;
mod reads;
mod report;
#[cfg(test)]
mod tests;

pub use messages::{is_initial_msg, Outgoing};

/// Who waits for a proposal.
enum Waiter<O> {
    Command(ProposeCallback<O>),
    ConfChange(ConfChangeCallback),
}

impl<O: Send + 'static> Waiter<O> {
    /// The answer that tells the waiter its proposal failed with `error`.
    fn fail(self, error: Error) -> Deferred {
        match self {
            Waiter::Command(cb) => Box::new(move || cb(Err(error))),
            Waiter::ConfChange(cb) => Box::new(move || cb(Err(error))),
        }
    }
}

/// What an applied entry produced, for its proposer.
pub enum Applied<O> {
    Command(O),
    ConfChange(Region),
    /// An empty entry (a new leader's, or a proposal raft-rs replaced).
    Nothing,
}

struct Proposal<O> {
    index: u64,
    term: u64,
    proposed_at: Instant,
    waiter: Waiter<O>,
}

/// A callback for the poller to run (after the round's write when it
/// answers an applied entry).
pub type Deferred = Box<dyn FnOnce() + Send>;

/// A request a peer did not take, and why. A `Peer` runs no callback of
/// its own: the poller answers the caller ([`Refusal::answer`]).
#[must_use = "the caller waits for this answer"]
pub struct Refusal<C> {
    pub cb: C,
    pub error: Error,
}

impl<T> Refusal<Box<dyn FnOnce(Result<T>) + Send>> {
    /// Answers the caller with the refusal.
    pub fn answer(self) {
        (self.cb)(Err(self.error))
    }
}

/// What became of a read handed to a peer.
#[must_use = "a refused or immediate read must be answered"]
pub enum ReadStep {
    /// Queued for a read index or the lease ([`Peer::flush_reads`]).
    Queued,
    /// To serve at once against the region as it is (an unsafe local read).
    ServeNow(ReadCallback),
    Refused(Refusal<ReadCallback>),
}

pub struct Peer<O> {
    /// raft-rs' node: only this module (and its children) touch it; the
    /// poller goes through the methods below.
    raw_node: RawNode<PeerStorage>,
    meta: metapb::Peer,
    proposals: VecDeque<Proposal<O>>,
    pub(crate) reads: ReadQueue,
    lease: Lease,
    /// The last term known to have a committed entry of its own (see
    /// `reads.rs`); 0: none yet.
    term_committed: std::cell::Cell<u64>,
    read_index_retry_ticks: usize,
    /// Bytes of commands applied since this peer started.
    pub(crate) applied_bytes: u64,
    /// The regions this peer's splits created, oldest first (kept by
    /// `poller::split::record_siblings`).
    pub(crate) split_siblings: Vec<Region>,
    /// Its merge as a source or decisions as a target (`crate::merge`).
    pub(crate) merge: crate::merge::MergeView,
    /// Peers learned from incoming messages, for replying to peers the
    /// region does not list yet (an uninitialized peer knows nobody).
    peer_cache: std::collections::HashMap<u64, metapb::Peer>,
    /// When this peer (as leader) last sent each follower an append.
    last_append_to: std::collections::HashMap<u64, Instant>,
    heartbeat_interval: Duration,
    /// The role the last Ready reported: raft-rs has already changed role
    /// when the poller takes the Ready that says so, so "was leader" is
    /// this, never `is_leader()`.
    reported_role: StateRole,
    /// Where it is in hibernation (`crate::hibernate`).
    sleep: crate::hibernate::Sleep,
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
        let merge = crate::merge::MergeView::load(engine.as_ref(), region.id)?;
        let storage = PeerStorage::load(engine, region, cfg.entry_cache_limit)?;
        let raft_cfg = cfg.raft_config(meta.id, storage.applied_index());
        let logger = logger::peer_logger(storage.region_id(), meta.id);
        let raw_node = RawNode::new(&raft_cfg, storage, &logger)?;
        let mut peer = Self::with_node(raw_node, meta, cfg);
        peer.merge = merge;
        Ok(peer)
    }

    /// A peer created because another store sent it a message: it has no
    /// log or data yet and waits for a snapshot from its leader.
    pub fn uninitialized(
        region_id: RegionId,
        meta: metapb::Peer,
        engine: Arc<dyn Engine>,
        cfg: &RaftConfig,
    ) -> Result<Self> {
        let storage = PeerStorage::uninitialized(engine, region_id, cfg.entry_cache_limit)?;
        let raft_cfg = cfg.raft_config(meta.id, 0);
        let logger = logger::peer_logger(region_id, meta.id);
        let raw_node = RawNode::new(&raft_cfg, storage, &logger)?;
        Ok(Self::with_node(raw_node, meta, cfg))
    }

    fn with_node(raw_node: RawNode<PeerStorage>, meta: metapb::Peer, cfg: &RaftConfig) -> Self {
        Peer {
            raw_node,
            meta,
            proposals: VecDeque::new(),
            reads: ReadQueue::new(meta.id),
            reported_role: StateRole::Follower,
            lease: Lease::new(cfg.lease_duration()),
            term_committed: std::cell::Cell::new(0),
            read_index_retry_ticks: cfg.read_index_retry_ticks,
            applied_bytes: 0,
            split_siblings: vec![],
            merge: Default::default(),
            peer_cache: std::collections::HashMap::new(),
            last_append_to: std::collections::HashMap::new(),
            heartbeat_interval: cfg.tick_interval * cfg.heartbeat_tick as u32,
            sleep: Default::default(),
        }
    }

    pub fn is_initialized(&self) -> bool {
        self.storage().is_initialized()
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
        let mut regions = vec![self.region().clone()];
        if check.epoch.version < current.version {
            regions.extend(self.split_siblings.iter().cloned());
        }
        Error::region(RegionError::epoch_not_match(
            format!(
                "region {} epoch is {current}, request has {}",
                self.region_id(),
                check.epoch
            ),
            regions,
        ))
    }

    /// Why a proposal under `epoch` cannot be taken now: this peer does not
    /// lead, or the region's epoch moved.
    pub(crate) fn refusal_reason(&self, epoch: &EpochCheck) -> Option<Error> {
        if !self.is_leader() {
            Some(self.not_leader())
        } else if !epoch.matches(&region::epoch(self.region())) {
            Some(self.epoch_not_match(epoch))
        } else {
            None
        }
    }

    /// The index of the one entry raft-rs appended for a proposal, if it
    /// appended exactly one after `last_before` (it appends none when it
    /// drops the proposal, which should not happen for a leader).
    fn appended_after(&self, last_before: u64) -> Option<u64> {
        let index = self.raw_node.raft.raft_log.last_index();
        (index == last_before + 1).then_some(index)
    }

    /// Waits for entry `index` of this term to apply, for `waiter`.
    fn track(&mut self, index: u64, waiter: Waiter<O>, now: Instant) {
        self.proposals.push_back(Proposal {
            index,
            term: self.term(),
            proposed_at: now,
            waiter,
        });
    }

    /// Proposes `data`; `cb` learns the outcome once the entry applies. A
    /// refused proposal comes back with its callback and the reason.
    pub fn propose(
        &mut self,
        epoch: &EpochCheck,
        data: Vec<u8>,
        cb: ProposeCallback<O>,
        now: Instant,
    ) -> Result<(), Refusal<ProposeCallback<O>>> {
        if let Some(error) = self.refusal_reason(epoch) {
            return Err(Refusal { cb, error });
        }
        self.wake();
        let last_before = self.raw_node.raft.raft_log.last_index();
        if let Err(e) = self.raw_node.propose(vec![], data) {
            // ProposalDropped: a leader transfer is in progress.
            tracing::debug!(region_id = self.region_id(), error = %e, "proposal dropped");
            return Err(Refusal {
                cb,
                error: self.not_leader(),
            });
        }
        let Some(index) = self.appended_after(last_before) else {
            return Err(Refusal {
                cb,
                error: self.not_leader(),
            });
        };
        self.track(index, Waiter::Command(cb), now);
        Ok(())
    }

    /// Proposes a membership change; `cb` gets the region after it applies.
    /// One change is simple; several enter a joint configuration that
    /// raft-rs leaves on its own (or [`Peer::maybe_leave_joint`] does).
    pub fn propose_conf_change(
        &mut self,
        epoch: &EpochCheck,
        changes: Vec<ConfChangeItem>,
        cb: ConfChangeCallback,
        now: Instant,
    ) -> Result<(), Refusal<ConfChangeCallback>> {
        if let Some(error) = self.refusal_reason(epoch) {
            return Err(Refusal { cb, error });
        }
        self.wake();
        if self.raw_node.raft.has_pending_conf() {
            return Err(Refusal {
                cb,
                error: Error::InvalidArgument(format!(
                    "region {} has a membership change in progress; try again when it applies",
                    self.region_id()
                )),
            });
        }
        let mut cc = ConfChangeV2::default();
        let mut context = ConfChangeContext::default();
        for c in &changes {
            let mut single = ConfChangeSingle {
                node_id: c.peer.id,
                ..Default::default()
            };
            single.set_change_type(match c.kind {
                ConfChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
                ConfChangeKind::PromoteLearner => ConfChangeType::AddNode,
                ConfChangeKind::RemovePeer => ConfChangeType::RemoveNode,
            });
            cc.mut_changes().push(single);
            context.peers.push(c.peer);
        }
        cc.set_transition(ConfChangeTransition::Auto);
        cc.context = prost::Message::encode_to_vec(&context).into();
        let last_before = self.raw_node.raft.raft_log.last_index();
        if let Err(e) = self.raw_node.propose_conf_change(vec![], cc) {
            return Err(Refusal {
                cb,
                error: Error::InvalidArgument(format!("membership change refused: {e}")),
            });
        }
        let Some(index) = self.appended_after(last_before) else {
            return Err(Refusal {
                cb,
                error: self.not_leader(),
            });
        };
        self.track(index, Waiter::ConfChange(cb), now);
        Ok(())
    }

    /// On a leader stuck in a joint configuration (the leader that entered it
    /// did not live to leave it), proposes the empty change that leaves it.
    pub fn maybe_leave_joint(&mut self) {
        if !self.is_leader() || self.raw_node.raft.has_pending_conf() {
            return;
        }
        let cs = self.raw_node.raft.prs().conf().to_conf_state();
        if cs.voters_outgoing.is_empty() {
            return;
        }
        tracing::info!(
            region_id = self.region_id(),
            "leaving a joint configuration"
        );
        if let Err(e) = self
            .raw_node
            .propose_conf_change(vec![], ConfChangeV2::default())
        {
            tracing::warn!(region_id = self.region_id(), error = %e, "cannot leave the joint configuration");
        }
    }

    /// The index (and its term) up to which the leader may drop its log: what
    /// every recently active follower has replicated — or everything applied
    /// when the log is past its limits (laggards then get snapshots).
    pub fn log_gc_candidate(&self, cfg: &RaftConfig) -> Option<(u64, u64)> {
        if !self.is_leader() {
            return None;
        }
        let storage = self.storage();
        let applied = storage.applied_index();
        let truncated = storage.truncated_index();
        if applied <= truncated {
            return None;
        }
        let over_limit = storage.log_entries() > cfg.log_gc_count_limit
            || storage.log_bytes() > cfg.log_gc_size_limit_bytes;
        let replicated = self
            .raw_node
            .raft
            .prs()
            .iter()
            .filter(|(id, pr)| **id != self.peer_id() && pr.recent_active)
            .map(|(_, pr)| pr.matched)
            .min()
            .unwrap_or(applied);
        let index = if over_limit {
            applied
        } else {
            replicated.min(applied)
        };
        if index <= truncated || (!over_limit && index - truncated < cfg.log_gc_threshold) {
            return None;
        }
        let term = self.raw_node.raft.raft_log.term(index).ok()?;
        Some((index, term))
    }

    pub fn tick(&mut self) -> bool {
        let raw_node = &mut self.raw_node;
        self.reads.on_tick(self.read_index_retry_ticks, &mut |ctx| {
            raw_node.read_index(ctx)
        });
        self.raw_node.tick()
    }

    /// Whether raft-rs has anything for this round (entries, messages, a
    /// state change, committed entries).
    pub fn has_ready(&self) -> bool {
        self.raw_node.has_ready()
    }

    /// Takes this round's Ready; the poller persists, sends and applies it.
    pub fn ready(&mut self) -> raft::Ready {
        self.raw_node.ready()
    }

    /// The Ready's entries and state are persisted.
    pub fn advance_append(&mut self, rd: raft::Ready) -> raft::LightReady {
        self.raw_node.advance_append(rd)
    }

    /// Everything up to `applied` is applied.
    pub fn advance_apply_to(&mut self, applied: u64) {
        self.raw_node.advance_apply_to(applied)
    }

    /// Applies a committed membership change to raft-rs' configuration.
    pub fn apply_conf_change(&mut self, cc: &ConfChangeV2) -> Result<raft::eraftpb::ConfState> {
        Ok(self.raw_node.apply_conf_change(cc)?)
    }

    /// The transport could not reach the peers this region has on
    /// `store_id`: raft-rs probes them instead of streaming appends.
    pub fn report_store_unreachable(&mut self, store_id: StoreId) {
        let targets: Vec<u64> = self
            .region()
            .peers
            .iter()
            .filter(|p| p.store_id == store_id)
            .map(|p| p.id)
            .collect();
        for id in targets {
            self.raw_node.report_unreachable(id);
        }
    }

    /// Whether the snapshot sent to `to_peer` arrived.
    pub fn report_snapshot(&mut self, to_peer: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.raw_node.report_snapshot(to_peer, status);
    }

    /// A snapshot is ready to send: as leader, let raft-rs try its
    /// followers now rather than at the next heartbeat.
    pub fn on_snapshot_ready(&mut self) {
        if self.is_leader() {
            self.raw_node.ping();
        }
    }

    /// Remembers where a peer that sent us a message lives.
    pub fn learn_peer(&mut self, peer: metapb::Peer) {
        if peer.id != 0 && peer.store_id != 0 {
            self.peer_cache.insert(peer.id, peer);
        }
    }

    /// Why a message from another node must not be stepped, if it must not
    /// (see `guard.rs`).
    pub fn refusal(&self, msg: &Message) -> Option<&'static str> {
        guard::refusal(&self.raw_node.raft, msg)
    }

    pub fn step(&mut self, msg: Message) -> Result<()> {
        self.raw_node.step(msg)?;
        Ok(())
    }

    /// As leader, tells every follower the commit index now rather than
    /// with the next append or heartbeat.
    pub fn broadcast_commit(&mut self) {
        if self.is_leader() {
            self.raw_node.raft.bcast_append();
        }
    }

    pub fn campaign(&mut self) -> Result<()> {
        self.wake();
        self.raw_node.campaign()?;
        Ok(())
    }

    /// Starts handing leadership to `to_peer`. The lease ends now: the new
    /// leader may be elected without waiting for an election timeout.
    pub fn transfer_leader(&mut self, to_peer: u64) {
        if !self.is_leader() || to_peer == self.peer_id() {
            return;
        }
        self.wake();
        self.lease.expire();
        self.raw_node.transfer_leader(to_peer);
    }

    /// The voter that has replicated the most of the log, other than this
    /// peer: the best candidate to hand leadership to.
    pub fn best_transferee(&self) -> Option<u64> {
        self.best_transferee_among(|_| true)
    }

    /// [`Peer::best_transferee`] among the voters whose store passes
    /// `store_ok`.
    pub fn best_transferee_among(&self, store_ok: impl Fn(StoreId) -> bool) -> Option<u64> {
        let voters = self.raw_node.raft.prs().conf().voters().ids();
        let store_of = |peer_id: u64| {
            self.region()
                .peers
                .iter()
                .find(|p| p.id == peer_id)
                .map(|p| p.store_id)
        };
        self.raw_node
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.peer_id() && voters.contains(**id))
            .filter(|(id, _)| store_of(**id).is_some_and(&store_ok))
            .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Reacts to a role change reported in a Ready. A leader that stepped
    /// down returns the reads it can no longer confirm, failed.
    pub fn on_soft_state(&mut self, ss: &SoftState) -> Vec<ReadAnswer> {
        let was_leader = self.reported_role == StateRole::Leader;
        self.reported_role = ss.raft_state;
        if was_leader && ss.raft_state != StateRole::Leader {
            self.lease.expire();
            let leader = self.leader();
            return self.reads.on_step_down(self.region_id(), leader);
        }
        vec![]
    }

    /// Resolves proposals against the entry (index, term) that just applied.
    /// Queues the callbacks to run once the apply batch is durable.
    pub fn on_entry_applied(
        &mut self,
        index: u64,
        term: u64,
        applied: Applied<O>,
        deferred: &mut Vec<Deferred>,
    ) {
        let mut applied = Some(applied);
        let region_id = self.region_id();
        while let Some(p) = self.proposals.front() {
            if p.term > term || (p.term == term && p.index > index) {
                break;
            }
            let p = self.proposals.pop_front().expect("front exists");
            let exact = p.term == term && p.index == index;
            if exact
                && self.is_leader()
                && term == self.term()
                && self.raw_node.raft.lead_transferee.is_none()
            {
                self.lease.renew(p.proposed_at);
            }
            let outcome = if exact { applied.take() } else { None };
            let stale = move || Error::region(RegionError::stale_command(region_id));
            match (p.waiter, outcome) {
                (Waiter::Command(cb), Some(Applied::Command(out))) => deferred.push(Box::new(move || cb(Ok(out)))),
                (Waiter::ConfChange(cb), Some(Applied::ConfChange(r))) => deferred.push(Box::new(move || cb(Ok(r)))),
                (Waiter::ConfChange(cb), Some(_)) => deferred.push(Box::new(move || {
                    cb(Err(Error::InvalidArgument(format!(
                        "membership change of region {region_id} was refused (another one was in progress)"
                    ))))
                })),
                (Waiter::Command(cb), _) => deferred.push(Box::new(move || cb(Err(stale())))),
                (Waiter::ConfChange(cb), None) => deferred.push(Box::new(move || cb(Err(stale())))),
            }
        }
    }

    /// A snapshot up to `index` replaced the log: proposals at or below it
    /// may or may not have applied. Returns their answers, for the poller.
    pub fn on_snapshot_applied(&mut self, index: u64) -> Vec<Deferred> {
        let mut answers = vec![];
        while self.proposals.front().is_some_and(|p| p.index <= index) {
            let p = self.proposals.pop_front().expect("front exists");
            answers.push(p.waiter.fail(Error::Indeterminate(
                "a snapshot replaced the log before the outcome was known".into(),
            )));
        }
        answers
    }

    /// Fails everything waiting on this peer (it is being destroyed or the
    /// store is stopping). Proposals may still commit elsewhere, so their
    /// outcome is unknown. Returns the answers, for the poller.
    pub fn fail_pending(&mut self, reason: &str) -> Vec<Deferred> {
        let mut answers: Vec<Deferred> = self
            .proposals
            .drain(..)
            .map(|p| p.waiter.fail(Error::Indeterminate(reason.to_string())))
            .collect();
        let region_id = self.region_id();
        for cb in self.reads.take_all() {
            answers.push(Box::new(move || {
                cb(Err(Error::region(RegionError::region_not_found(region_id))))
            }));
        }
        answers
    }
}
