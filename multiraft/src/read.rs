//! Linearizable reads: the ReadIndex queue and the leader lease.
//!
//! A read is linearizable if it observes every write acknowledged before it
//! started. A peer serves it once its applied index reaches a *read index*
//! obtained after the read arrived:
//! - **lease** (fast path, leader only): while a quorum is known to have
//!   followed this leader within the lease, no other leader can exist, so the
//!   leader's commit index is a read index — if the leader has committed an
//!   entry in its own term;
//! - **ReadIndex** (raft-rs, `ReadOnlyOption::Safe`): the leader confirms its
//!   leadership with a heartbeat round and answers with its commit index. All
//!   reads that arrive in one poller round share one request (batching per
//!   region per round); a follower read sends it to the leader.
//!
//! raft-rs drops a ReadIndex request silently when the leader has not yet
//! committed in its term, so unanswered batches are resent after a few ticks.
//! A leader that steps down fails the batches it had not confirmed.
//!
//! The lease is renewed from the *send* time of whatever proved a quorum
//! followed the leader (a confirmed ReadIndex batch, a committed proposal),
//! and lasts a fraction of the election timeout: with check_quorum a follower
//! refuses to vote for anyone else for a full election timeout after it last
//! heard from the leader. A leader transfer bypasses that rule, so the lease
//! is dropped when one starts.
//!
//! Every answered ReadIndex request, a follower's included, is also a
//! **safe point** for stale reads (`crate::local_read`): the batch's send
//! time `t` and the index `i` it brought back. Every write acknowledged
//! before `t` was committed before the leader answered, so it is at or
//! below `i` (the answering leader has committed an entry of its term: its
//! commit index covers every earlier leader's). A replica that has applied
//! `i` holds every write acknowledged before `t`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera_proto::metapb::Region;

use crate::local_read::SafePoint;
use crate::mailbox::{EpochCheck, ReadCallback};
use crate::{region, Error};
use tessera_proto::errorpb::RegionError;

pub(crate) struct PendingRead {
    pub cb: ReadCallback,
    pub epoch: EpochCheck,
}

struct ReadBatch {
    id: u64,
    reads: Vec<PendingRead>,
    sent_at: Instant,
    ticks_waiting: usize,
    /// Set once the leader answered (or the lease vouched for it).
    index: Option<u64>,
    /// Sent while this peer was leader (a confirmation renews the lease).
    by_leader: bool,
}

/// A peer's reads waiting for a read index or for apply to catch up.
///
/// A batch's ReadIndex request carries a context unique in the region:
/// the peer's id and the batch's number. raft-rs keys the leader's pending
/// requests by context and drops a request whose context is already
/// pending, so two followers (or a follower and the leader) numbering
/// their batches alike would lose one of the two until its retry.
pub(crate) struct ReadQueue {
    /// The id of the peer whose reads these are.
    owner: u64,
    /// Arrived this round, not yet sent.
    incoming: Vec<PendingRead>,
    incoming_follower: Vec<PendingRead>,
    batches: VecDeque<ReadBatch>,
    next_id: u64,
    /// The latest-sent answered batch, as a safe point for stale reads.
    safe: Option<SafePoint>,
}

/// A read for the poller to answer: served against the region as it is
/// when answered (if the read's epoch still matches it), or failed. The
/// queue runs no callback itself.
#[must_use = "the caller waits for this answer"]
pub struct ReadAnswer {
    cb: ReadCallback,
    outcome: Outcome,
}

enum Outcome {
    Serve(EpochCheck),
    Fail(Error),
}

impl ReadAnswer {
    fn fail(read: PendingRead, error: Error) -> Self {
        ReadAnswer {
            cb: read.cb,
            outcome: Outcome::Fail(error),
        }
    }

    /// Runs the reader's callback against `region`, this replica's region
    /// right now.
    pub fn answer(self, region: &Region) {
        match self.outcome {
            Outcome::Fail(error) => (self.cb)(Err(error)),
            Outcome::Serve(epoch) => {
                let current = region::epoch(region);
                if epoch.matches(&current) {
                    (self.cb)(Ok(region));
                } else {
                    (self.cb)(Err(Error::region(RegionError::epoch_not_match(
                        format!(
                            "region {} epoch changed to {current} while reading",
                            region.id
                        ),
                        vec![region.clone()],
                    ))));
                }
            }
        }
    }
}

/// What a flush did with the round's reads.
#[derive(Default)]
pub struct Flushed {
    /// How each batch will be served, for metrics.
    pub paths: Vec<ReadPath>,
    /// Reads refused (leader reads on a peer that no longer leads).
    pub refused: Vec<ReadAnswer>,
}

/// Which path served a read batch, for metrics.
pub enum ReadPath {
    Lease,
    ReadIndex,
}

impl ReadQueue {
    pub fn new(owner: u64) -> Self {
        ReadQueue {
            owner,
            incoming: vec![],
            incoming_follower: vec![],
            batches: VecDeque::new(),
            next_id: 0,
            safe: None,
        }
    }

    /// The ReadIndex context of batch `id`.
    fn context(&self, id: u64) -> Vec<u8> {
        read_context(self.owner, id)
    }

    /// The batch a context names, if it is one of this queue's.
    fn batch_of(&self, ctx: &[u8]) -> Option<u64> {
        let (owner, id) = ctx.split_at_checked(8)?;
        let owner = u64::from_be_bytes(owner.try_into().ok()?);
        let id = u64::from_be_bytes(id.try_into().ok()?);
        (owner == self.owner).then_some(id)
    }

    pub fn push(&mut self, read: PendingRead, follower: bool) {
        if follower {
            self.incoming_follower.push(read);
        } else {
            self.incoming.push(read);
        }
    }

    pub fn has_incoming(&self) -> bool {
        !self.incoming.is_empty() || !self.incoming_follower.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        !self.has_incoming() && self.batches.is_empty()
    }

    /// Gives back the capacity of the (empty) queues.
    pub fn shrink(&mut self) {
        self.incoming.shrink_to_fit();
        self.incoming_follower.shrink_to_fit();
        self.batches.shrink_to_fit();
    }

    /// Turns this round's reads into batches. `lease_index` is the read index
    /// the lease vouches for, if it is valid; `send` issues a ReadIndex
    /// request with the given context.
    pub fn flush(
        &mut self,
        now: Instant,
        is_leader: bool,
        lease_index: Option<u64>,
        not_leader: &dyn Fn() -> Error,
        send: &mut dyn FnMut(Vec<u8>),
    ) -> Flushed {
        let mut flushed = Flushed::default();
        let paths = &mut flushed.paths;
        let leader_reads = std::mem::take(&mut self.incoming);
        if !leader_reads.is_empty() {
            if !is_leader {
                flushed.refused = leader_reads
                    .into_iter()
                    .map(|r| ReadAnswer::fail(r, not_leader()))
                    .collect();
            } else {
                let id = self.next_id();
                let index = lease_index;
                if index.is_none() {
                    send(self.context(id));
                    paths.push(ReadPath::ReadIndex);
                } else {
                    paths.push(ReadPath::Lease);
                }
                self.batches.push_back(ReadBatch {
                    id,
                    reads: leader_reads,
                    sent_at: now,
                    ticks_waiting: 0,
                    index,
                    by_leader: true,
                });
            }
        }
        let follower_reads = std::mem::take(&mut self.incoming_follower);
        if !follower_reads.is_empty() {
            let id = self.next_id();
            send(self.context(id));
            paths.push(ReadPath::ReadIndex);
            self.batches.push_back(ReadBatch {
                id,
                reads: follower_reads,
                sent_at: now,
                ticks_waiting: 0,
                index: None,
                by_leader: is_leader,
            });
        }
        flushed
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Records the read indexes raft-rs returned (and the latest safe
    /// point they make). Returns the send time of the latest batch
    /// confirmed by a quorum while leader (to renew the lease).
    pub fn on_read_states(&mut self, states: &[raft::ReadState]) -> Option<Instant> {
        let mut confirmed = None;
        for rs in states {
            let Some(id) = self.batch_of(&rs.request_ctx) else {
                continue;
            };
            if let Some(b) = self.batches.iter_mut().find(|b| b.id == id) {
                if b.index.is_none() {
                    b.index = Some(rs.index);
                    if b.by_leader {
                        confirmed = confirmed.max(Some(b.sent_at));
                    }
                    if self.safe.is_none_or(|s| s.at < b.sent_at) {
                        self.safe = Some(SafePoint {
                            index: rs.index,
                            at: b.sent_at,
                        });
                    }
                }
            }
        }
        confirmed
    }

    /// The latest safe point for stale reads: every write acknowledged
    /// before its `at` is at or below its `index`.
    pub fn safe_point(&self) -> Option<SafePoint> {
        self.safe
    }

    /// Takes out every read whose batch's read index has been applied; each
    /// read's epoch is checked against the region when it is answered.
    pub fn take_ready(&mut self, applied: u64) -> Vec<ReadAnswer> {
        let mut ready = vec![];
        let mut i = 0;
        while i < self.batches.len() {
            if self.batches[i].index.is_some_and(|idx| idx <= applied) {
                let batch = self.batches.remove(i).expect("index checked");
                ready.extend(batch.reads.into_iter().map(|read| ReadAnswer {
                    cb: read.cb,
                    outcome: Outcome::Serve(read.epoch),
                }));
            } else {
                i += 1;
            }
        }
        ready
    }

    /// Counts a tick; batches unanswered for `retry_ticks` are sent again.
    pub fn on_tick(&mut self, retry_ticks: usize, send: &mut dyn FnMut(Vec<u8>)) {
        let owner = self.owner;
        for b in self.batches.iter_mut().filter(|b| b.index.is_none()) {
            b.ticks_waiting += 1;
            if b.ticks_waiting >= retry_ticks {
                b.ticks_waiting = 0;
                send(read_context(owner, b.id));
            }
        }
    }

    /// This peer stopped leading: requests it sent as leader will never be
    /// answered, so their reads fail (the caller retries at the new leader).
    /// Batches already confirmed stay: their index was valid when confirmed.
    pub fn on_step_down(
        &mut self,
        region_id: u64,
        leader: Option<tessera_proto::metapb::Peer>,
    ) -> Vec<ReadAnswer> {
        let mut kept = VecDeque::new();
        let mut failed = vec![];
        for b in self.batches.drain(..) {
            if b.by_leader && b.index.is_none() {
                failed.extend(b.reads.into_iter().map(|r| {
                    ReadAnswer::fail(r, Error::region(RegionError::not_leader(region_id, leader)))
                }));
            } else {
                kept.push_back(b);
            }
        }
        self.batches = kept;
        failed
    }

    /// Takes every waiting read out (the peer is going away): the caller
    /// answers them.
    pub fn take_all(&mut self) -> Vec<ReadCallback> {
        std::mem::take(&mut self.incoming)
            .into_iter()
            .chain(std::mem::take(&mut self.incoming_follower))
            .chain(self.batches.drain(..).flat_map(|b| b.reads))
            .map(|r| r.cb)
            .collect()
    }
}

/// The ReadIndex context of `owner`'s batch `id`.
fn read_context(owner: u64, id: u64) -> Vec<u8> {
    [owner.to_be_bytes(), id.to_be_bytes()].concat()
}

/// The leader lease: until when this peer may serve reads without asking a
/// quorum.
#[derive(Debug)]
pub(crate) struct Lease {
    duration: Duration,
    expires: Option<Instant>,
}

impl Lease {
    pub fn new(duration: Duration) -> Self {
        Lease {
            duration,
            expires: None,
        }
    }

    /// A quorum followed this leader at `since` (or later).
    pub fn renew(&mut self, since: Instant) {
        let until = since + self.duration;
        if self.expires.is_none_or(|e| e < until) {
            self.expires = Some(until);
        }
    }

    pub fn expire(&mut self) {
        self.expires = None;
    }

    pub fn is_valid(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now < e)
    }

    /// Until when the lease runs (it may already have expired).
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<Result<u64, String>>>>;

    fn nl() -> Error {
        Error::region(RegionError::not_leader(1, None))
    }

    fn read(log: &Log, tag: u64) -> PendingRead {
        let log = log.clone();
        PendingRead {
            cb: Box::new(move |r: crate::Result<&Region>| {
                log.lock()
                    .unwrap()
                    .push(r.map(|_| tag).map_err(|e| e.to_string()));
            }),
            epoch: EpochCheck::default(),
        }
    }

    /// Answers every read in `answers` against `region`; returns how many.
    fn answer_all(answers: Vec<ReadAnswer>, region: &Region) -> usize {
        let n = answers.len();
        for a in answers {
            a.answer(region);
        }
        n
    }

    #[test]
    fn one_read_index_request_per_round_and_served_after_apply() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        q.push(read(&log, 1), false);
        q.push(read(&log, 2), false);
        let mut sent = vec![];
        let now = Instant::now();
        let flushed = q.flush(now, true, None, &nl, &mut |ctx| sent.push(ctx));
        assert!(flushed.refused.is_empty());
        assert_eq!(sent.len(), 1, "two reads, one ReadIndex request");

        let rs = raft::ReadState {
            index: 10,
            request_ctx: sent[0].clone(),
        };
        assert_eq!(q.on_read_states(&[rs]), Some(now));
        let region = Region::default();
        assert_eq!(
            answer_all(q.take_ready(9), &region),
            0,
            "apply has not reached the read index"
        );
        assert!(log.lock().unwrap().is_empty());
        let ready = q.take_ready(10);
        assert!(
            log.lock().unwrap().is_empty(),
            "the queue runs no callback: the poller answers"
        );
        assert_eq!(answer_all(ready, &region), 2);
        assert_eq!(*log.lock().unwrap(), vec![Ok(1), Ok(2)]);
        assert!(q.is_empty());
    }

    #[test]
    fn every_answered_read_index_is_a_safe_point_at_its_send_time() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        assert_eq!(q.safe_point(), None);
        let first = Instant::now();
        q.push(read(&log, 1), true);
        let mut sent = vec![];
        let _ = q.flush(first, false, None, &nl, &mut |ctx| sent.push(ctx));
        let later = first + Duration::from_millis(5);
        q.push(read(&log, 2), true);
        let _ = q.flush(later, false, None, &nl, &mut |ctx| sent.push(ctx));
        assert_eq!(sent.len(), 2);
        let answer = |ctx: &Vec<u8>, index| raft::ReadState {
            index,
            request_ctx: ctx.clone(),
        };
        // A follower's answers renew no lease but make safe points; the
        // later-sent request wins, whatever order the answers come in.
        assert_eq!(q.on_read_states(&[answer(&sent[1], 12)]), None);
        assert_eq!(
            q.safe_point(),
            Some(SafePoint {
                index: 12,
                at: later
            })
        );
        assert_eq!(q.on_read_states(&[answer(&sent[0], 11)]), None);
        assert_eq!(q.safe_point().map(|s| s.at), Some(later));
        // An answer for a batch already answered changes nothing.
        let _ = q.on_read_states(&[answer(&sent[1], 99)]);
        assert_eq!(q.safe_point().map(|s| s.index), Some(12));
    }

    #[test]
    fn lease_reads_skip_the_round_trip() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        q.push(read(&log, 1), false);
        let mut sent = vec![];
        let _ = q.flush(Instant::now(), true, Some(7), &nl, &mut |ctx| {
            sent.push(ctx)
        });
        assert!(sent.is_empty());
        assert_eq!(answer_all(q.take_ready(7), &Region::default()), 1);
    }

    #[test]
    fn unanswered_requests_are_resent_and_fail_on_step_down() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        q.push(read(&log, 1), false);
        let mut sent = vec![];
        let _ = q.flush(Instant::now(), true, None, &nl, &mut |ctx| sent.push(ctx));
        q.on_tick(2, &mut |ctx| sent.push(ctx));
        assert_eq!(sent.len(), 1);
        q.on_tick(2, &mut |ctx| sent.push(ctx));
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], sent[1], "the same batch is asked again");
        let failed = q.on_step_down(3, None);
        assert_eq!(answer_all(failed, &Region::default()), 1);
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].as_ref().unwrap_err().contains("not the leader"));
    }

    #[test]
    fn reads_on_a_follower_without_follower_read_fail() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        q.push(read(&log, 1), false);
        let flushed = q.flush(Instant::now(), false, None, &nl, &mut |_| {
            panic!("nothing to send")
        });
        assert_eq!(answer_all(flushed.refused, &Region::default()), 1);
        assert!(log.lock().unwrap()[0].is_err());
    }

    #[test]
    fn a_changed_epoch_fails_the_read() {
        let log = Log::default();
        let mut q = ReadQueue::new(1);
        let mut r = read(&log, 1);
        r.epoch = EpochCheck::version(tessera_proto::metapb::RegionEpoch::new(1, 1));
        q.push(r, false);
        let _ = q.flush(Instant::now(), true, Some(1), &nl, &mut |_| {});
        let region = Region {
            region_epoch: Some(tessera_proto::metapb::RegionEpoch::new(1, 2)),
            ..Default::default()
        };
        answer_all(q.take_ready(1), &region);
        assert!(log.lock().unwrap()[0]
            .as_ref()
            .unwrap_err()
            .contains("epoch"));
    }

    #[test]
    fn read_index_contexts_are_unique_per_peer_and_answers_go_to_their_owner() {
        let log = Log::default();
        let (mut a, mut b) = (ReadQueue::new(12), ReadQueue::new(13));
        a.push(read(&log, 1), true);
        b.push(read(&log, 2), true);
        let (mut sent_a, mut sent_b) = (vec![], vec![]);
        let _ = a.flush(Instant::now(), false, None, &nl, &mut |c| sent_a.push(c));
        let _ = b.flush(Instant::now(), false, None, &nl, &mut |c| sent_b.push(c));
        assert_ne!(
            sent_a, sent_b,
            "the leader drops a request whose context is already pending"
        );
        let for_b = raft::ReadState {
            index: 4,
            request_ctx: sent_b[0].clone(),
        };
        a.on_read_states(std::slice::from_ref(&for_b));
        assert!(a.take_ready(10).is_empty(), "not a's request");
        b.on_read_states(&[for_b]);
        assert_eq!(answer_all(b.take_ready(10), &Region::default()), 1);
    }

    #[test]
    fn lease_expires() {
        let mut lease = Lease::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(!lease.is_valid(t0));
        lease.renew(t0);
        assert!(lease.is_valid(t0 + Duration::from_millis(99)));
        assert!(!lease.is_valid(t0 + Duration::from_millis(100)));
        lease.renew(t0 - Duration::from_millis(50));
        assert!(
            lease.is_valid(t0 + Duration::from_millis(99)),
            "never shortened"
        );
        lease.expire();
        assert!(!lease.is_valid(t0));
    }
}
