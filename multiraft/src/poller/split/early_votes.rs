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
//! time to live is never delivered (the candidate has moved on by then);
//! holding and taking cost the same however many regions have requests
//! waiting.
//! Delivery goes through the normal message path, so a request for another
//! peer id or at a stale term is refused there as usual.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tessera_proto::raft_serverpb::RaftMessage;

use crate::RegionId;

/// Requests held at most, over all regions: a bulk split of 4,096 regions
/// whose leaders are spread over the stores (`split`) has thousands of
/// candidates ahead of a slower replica at once.
pub const MAX_HELD: usize = 16_384;

pub struct EarlyVotes {
    ttl: Duration,
    /// Arrival order over all regions, for expiry and making room: (arrival
    /// number, region). An entry whose request was taken stays until it
    /// reaches the front, and is skipped there.
    order: VecDeque<(u64, RegionId)>,
    /// The requests still held, by region, in arrival order.
    by_region: HashMap<RegionId, VecDeque<(u64, Instant, RaftMessage)>>,
    held: usize,
    next: u64,
}

impl EarlyVotes {
    /// Requests are kept for `ttl` (an election timeout is the natural
    /// choice: a candidate then campaigns again anyway).
    pub fn new(ttl: Duration) -> Self {
        EarlyVotes {
            ttl,
            order: VecDeque::new(),
            by_region: HashMap::new(),
            held: 0,
            next: 0,
        }
    }

    /// Keeps a vote request for a region that does not exist here yet.
    pub fn hold(&mut self, msg: RaftMessage, now: Instant) {
        self.expire(now);
        while self.held >= MAX_HELD {
            self.drop_oldest();
        }
        let n = self.next;
        self.next += 1;
        self.order.push_back((n, msg.region_id));
        self.by_region
            .entry(msg.region_id)
            .or_default()
            .push_back((n, now, msg));
        self.held += 1;
    }

    /// The requests held for `region_id`, in arrival order, still fresh.
    pub fn take(&mut self, region_id: RegionId, now: Instant) -> Vec<RaftMessage> {
        let Some(held) = self.by_region.remove(&region_id) else {
            return vec![];
        };
        self.held -= held.len();
        held.into_iter()
            .filter(|(_, at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, _, msg)| msg)
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held
    }

    /// Drops the request at the front of the arrival order, if it is still
    /// held (not taken).
    fn drop_oldest(&mut self) {
        let Some((n, region_id)) = self.order.pop_front() else {
            return;
        };
        let Some(queue) = self.by_region.get_mut(&region_id) else {
            return;
        };
        if queue.front().is_some_and(|(m, _, _)| *m == n) {
            queue.pop_front();
            self.held -= 1;
            if queue.is_empty() {
                self.by_region.remove(&region_id);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(n, region_id)) = self.order.front() {
            let at = self
                .by_region
                .get(&region_id)
                .and_then(|q| q.front())
                .filter(|(m, _, _)| *m == n)
                .map(|(_, at, _)| *at);
            match at {
                // Taken already: only the order entry is left.
                None => {
                    self.order.pop_front();
                }
                Some(at) if now.duration_since(at) >= self.ttl => {
                    self.drop_oldest();
                }
                Some(_) => break,
            }
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

    #[test]
    fn a_taken_region_makes_no_room_twice_and_others_keep_their_order() {
        let now = Instant::now();
        let mut v = EarlyVotes::new(Duration::from_secs(1));
        v.hold(vote(1, 1), now);
        v.hold(vote(2, 1), now);
        assert_eq!(v.take(1, now).len(), 1);
        // Region 1's entry is gone; filling up drops region 2's first.
        for i in 0..(MAX_HELD as u64 - 1) {
            v.hold(vote(1000 + i, 1), now);
        }
        assert_eq!(v.len(), MAX_HELD);
        assert_eq!(v.take(2, now).len(), 1, "region 2 still held at the limit");
        v.hold(vote(3, 1), now);
        v.hold(vote(4, 1), now);
        assert_eq!(v.len(), MAX_HELD);
        assert!(
            v.take(1000, now).is_empty(),
            "the oldest live request made room"
        );
        assert_eq!(v.take(4, now).len(), 1);
    }
}
