//! Votes that arrive for a region a split has not created here yet.
//!
//! When a leader applies a split, the new regions' peers on its store
//! campaign at once. Their (pre-)vote requests often reach a follower store
//! in the same batch as the append that commits the split, before that
//! store has applied it: the new region's range is still held by the
//! parent, so no peer may be created for the message. Dropped, the
//! candidate would wait a whole election timeout (1–2 s) to try again, and
//! the new region would have no leader meanwhile.
//!
//! The poller keeps such requests here instead and hands them to the new
//! peer when the split creates it. Invariants: at most [`MAX_HELD`]
//! requests are kept (older ones make room); a request older than its
//! time to live is never delivered (the candidate has moved on by then).
//! Delivery goes through the normal message path, so a request for another
//! peer id or at a stale term is refused there as usual.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera_proto::raft_serverpb::RaftMessage;

use crate::RegionId;

/// Requests held at most, over all regions.
pub const MAX_HELD: usize = 1024;

pub struct EarlyVotes {
    ttl: Duration,
    held: VecDeque<(Instant, RaftMessage)>,
}

impl EarlyVotes {
    /// Requests are kept for `ttl` (an election timeout is the natural
    /// choice: a candidate then campaigns again anyway).
    pub fn new(ttl: Duration) -> Self {
        EarlyVotes {
            ttl,
            held: VecDeque::new(),
        }
    }

    /// Keeps a vote request for a region that does not exist here yet.
    pub fn hold(&mut self, msg: RaftMessage, now: Instant) {
        self.expire(now);
        if self.held.len() == MAX_HELD {
            self.held.pop_front();
        }
        self.held.push_back((now, msg));
    }

    /// The requests held for `region_id`, in arrival order, still fresh.
    pub fn take(&mut self, region_id: RegionId, now: Instant) -> Vec<RaftMessage> {
        self.expire(now);
        if self.held.is_empty() {
            return vec![];
        }
        let mut taken = vec![];
        let mut kept = VecDeque::with_capacity(self.held.len());
        for (at, msg) in self.held.drain(..) {
            if msg.region_id == region_id {
                taken.push(msg);
            } else {
                kept.push_back((at, msg));
            }
        }
        self.held = kept;
        taken
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.held.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            self.held.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(region_id: RegionId, term: u64) -> RaftMessage {
        RaftMessage {
            region_id,
            message: term.to_be_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_wait_for_their_region_and_are_delivered_once_in_order() {
        let now = Instant::now();
        let mut v = EarlyVotes::new(Duration::from_secs(1));
        v.hold(vote(7, 1), now);
        v.hold(vote(8, 1), now);
        v.hold(vote(7, 2), now);
        let got = v.take(7, now);
        assert_eq!(got, vec![vote(7, 1), vote(7, 2)]);
        assert!(v.take(7, now).is_empty(), "delivered once");
        assert_eq!(v.take(8, now), vec![vote(8, 1)]);
        assert_eq!(v.len(), 0);
    }

    #[test]
    fn stale_requests_are_never_delivered_and_the_total_is_bounded() {
        let start = Instant::now();
        let mut v = EarlyVotes::new(Duration::from_millis(500));
        v.hold(vote(7, 1), start);
        assert!(v.take(7, start + Duration::from_millis(500)).is_empty());

        for i in 0..(MAX_HELD as u64 + 10) {
            v.hold(vote(100 + i, 1), start);
        }
        assert_eq!(v.len(), MAX_HELD);
        assert!(v.take(100, start).is_empty(), "the oldest made room");
        assert_eq!(v.take(100 + MAX_HELD as u64 + 9, start).len(), 1);
    }
}
