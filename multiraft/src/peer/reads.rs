//! A peer's reads: taking them in, turning a round's reads into one lease
//! read or one ReadIndex request, and handing back the reads whose read
//! index has applied (the queue and the lease themselves are in
//! `crate::read`), and what the poller publishes of the lease for reads off
//! its thread (`crate::local_read`).

use std::time::Instant;

use raft::StateRole;
use tessera_proto::errorpb::RegionError;

use super::{Peer, ReadStep, Refusal};
use crate::local_read::LeaseView;
use crate::mailbox::{EpochCheck, ReadCallback, ReadPolicy};
use crate::read::{Flushed, PendingRead, ReadAnswer};
use crate::{region, Error};

impl<O: Send + 'static> Peer<O> {
    /// Queues a read; it is confirmed by [`Peer::flush_reads`] later in the
    /// round. Refused, or served at once, it comes back to the poller.
    pub fn read(&mut self, epoch: EpochCheck, policy: ReadPolicy, cb: ReadCallback) -> ReadStep {
        if let Some(error) = self.merging_refusal() {
            return ReadStep::Refused(Refusal { cb, error });
        }
        if policy == ReadPolicy::Leader && !self.is_leader() {
            return ReadStep::Refused(Refusal {
                cb,
                error: self.not_leader(),
            });
        }
        if !epoch.matches(&region::epoch(self.region())) {
            return ReadStep::Refused(Refusal {
                cb,
                error: self.epoch_not_match(&epoch),
            });
        }
        if policy == ReadPolicy::UnsafeLocal {
            return ReadStep::ServeNow(cb);
        }
        self.wake();
        self.reads
            .push(PendingRead { cb, epoch }, policy == ReadPolicy::Follower);
        ReadStep::Queued
    }

    /// The read index the lease vouches for right now, if any.
    fn lease_read_index(&self, now: Instant) -> Option<u64> {
        if !self.lease.is_valid(now) {
            return None;
        }
        self.lease_holder()
            .then_some(self.raw_node.raft.raft_log.committed)
    }

    /// Whether this peer may hold a lease: it leads, hands leadership to
    /// nobody, and has committed an entry in its own term (until then its
    /// commit index may be behind what an earlier leader acknowledged).
    fn lease_holder(&self) -> bool {
        let raft = &self.raw_node.raft;
        raft.state == StateRole::Leader
            && raft.lead_transferee.is_none()
            && self.committed_in_term()
            && !self.merge.is_merging()
    }

    /// Whether the commit index is an entry of the current term. Once it
    /// is, it stays so for the term (later entries of a leader's log are of
    /// its term), so the answer is remembered: the entry's term may be
    /// read from the engine otherwise.
    fn committed_in_term(&self) -> bool {
        let raft = &self.raw_node.raft;
        if self.term_committed.get() == raft.term {
            return true;
        }
        let yes = raft.raft_log.term(raft.raft_log.committed).ok() == Some(raft.term);
        if yes {
            self.term_committed.set(raft.term);
        }
        yes
    }

    /// What the poller publishes for lease reads off its thread
    /// (`crate::local_read`): the lease only while [`Self::lease_holder`].
    pub fn lease_view(&self) -> LeaseView {
        let raft = &self.raw_node.raft;
        LeaseView {
            term: raft.term,
            lease_until: self.lease.expires().filter(|_| self.lease_holder()),
            committed: raft.raft_log.committed,
            applied_index: self.storage().applied_index(),
            safe: self.reads.safe_point(),
        }
    }

    /// Whether stepping `msg` may end this peer's leadership (a message of
    /// a higher term): the published lease must end first.
    pub fn may_step_down_on(&self, msg: &raft::eraftpb::Message) -> bool {
        self.is_leader() && msg.term > self.raw_node.raft.term
    }

    /// Turns this round's reads into one lease-served batch or one ReadIndex
    /// request (per policy); leader reads this peer can no longer take come
    /// back refused.
    pub fn flush_reads(&mut self, now: Instant) -> Flushed {
        if !self.reads.has_incoming() {
            return Flushed::default();
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

    /// The reads whose read index has been applied, for the poller to
    /// answer against [`Peer::region`].
    pub fn take_ready_reads(&mut self) -> Vec<ReadAnswer> {
        let applied = self.storage().applied_index();
        self.reads.take_ready(applied)
    }
}
