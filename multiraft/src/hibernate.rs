//! Region hibernation: an idle region stops ticking on every replica, so a
//! store's CPU follows its load rather than its region count.
//!
//! # The process
//!
//! 1. **Asking.** A leader that has had nothing to do for
//!    `RaftConfig::hibernate_after_ticks` ticks — no proposal, no read, no
//!    membership change or leader transfer in progress, not merging, every
//!    entry committed, applied and replicated to every peer — asks each
//!    follower to hibernate: a `Hibernation::REQUEST` carrying its term and
//!    last index (it asks again every `hibernate_after_ticks` while idle).
//! 2. **Followers sleep.** A follower of that leader, at that term, whose
//!    log ends at that index with everything committed and applied and no
//!    read waiting, stops ticking and answers `ACK`.
//! 3. **The leader sleeps** once every peer of its progress set (voters and
//!    learners) has acknowledged the same request: no tick, so no heartbeat
//!    and no check-quorum. A region of one replica sleeps without asking;
//!    a region with a peer that does not answer (down, lagging, catching up
//!    by snapshot) stays awake. An asleep peer drops what it caches
//!    (`Peer::shrink`). A follower's store that dies while its region
//!    sleeps is not noticed by the leader (it sends nothing); the
//!    directory marks the store Down and its repair wakes the region.
//! 4. **Waking.** Anything addressed to an asleep peer wakes it: a
//!    proposal, a read, a membership change, a leader transfer, a
//!    campaign, any Raft message — except, for a follower, a plain
//!    heartbeat from its own leader (an awake leader may heartbeat asleep
//!    followers; they answer without ticking, which is all the leader
//!    needs). A woken peer restarts its election timer from zero and a
//!    woken leader heartbeats at once, so check-quorum counts from the
//!    wake and followers hear of it.
//! 5. **A dead leader.** Who notices: the followers' stores. A store that
//!    has asleep leaders pings the stores of their followers every
//!    `heartbeat_tick` ticks, and a store that has asleep followers pings
//!    the stores of their leaders (one message per store, not per region);
//!    any message from a store counts as hearing from it. The followers
//!    asleep under a leader on store S wake when the transport reports S
//!    unreachable (a ping that could not be delivered: S's process is
//!    gone), or when S has been silent for `store_liveness_ticks` (a
//!    partition, a hung store); they campaign an election timeout later as
//!    Raft always does. If S is heard from first, they sleep again: a
//!    store that stalled a few seconds does not wake the cluster. The bound
//!    is `RaftConfig::hibernated_failover_ticks`. A leader whose *peer*
//!    restarts while its store lives comes back awake, without a leader,
//!    and its campaign wakes the others.
//! 6. **Reports.** The store reports an asleep leader's region to the
//!    directory at a low rate (`hibernated_report_interval_ms` on the
//!    store); the directory's reply to a store heartbeat names the regions
//!    it has an operator for, and those are reported at once.
//!
//! # Why leases and check-quorum stay correct
//!
//! A lease (`crate::read::Lease`) is a span of real time counted from a
//! message a quorum answered; it expires by the clock whether or not its
//! leader ticks. It is sound because no follower campaigns, or grants a
//! vote, until an election timeout of *ticks* after it last heard from the
//! leader — and an asleep follower does not tick, so sleeping only makes
//! that wait longer in real time; waking resets its timer to zero, which
//! lengthens it again. A leader that slept keeps its leadership but not a
//! fresh lease: once its lease ran out, reads after the wake confirm it
//! with a ReadIndex heartbeat round (`read.rs`). Check-quorum only decides
//! when a leader steps down (never safety); it restarts at the wake.
//!
//! # Invariants
//!
//! - Only an awake peer ticks; the poller ticks exactly the peers in its
//!   ticking set (`poller/hibernate.rs`), so an idle store does work per
//!   awake region and per store, not per region.
//! - A peer is asleep only if, when it fell asleep, nothing was pending on
//!   it and its log was fully committed and applied.
//! - Hibernation messages never create a peer and never move a Raft state;
//!   a request or answer that does not match the receiver's state is
//!   ignored (at worst, a region stays awake).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tessera_proto::metapb;
use tessera_proto::raft_serverpb::{hibernation::Kind, Hibernation, RaftMessage};

use crate::{RegionId, StoreId};

/// Where a peer is in the hibernation process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    /// Ticking; a leader counts the ticks it had nothing to do.
    Awake {
        idle_ticks: usize,
    },
    /// A leader that asked its followers at (`term`, `index`) and waits for
    /// their answers (`acks`: peer ids), `ticks` since it asked.
    Asking {
        term: u64,
        index: u64,
        acks: Vec<u64>,
        ticks: usize,
    },
    Asleep,
}

impl Default for Sleep {
    fn default() -> Self {
        Sleep::Awake { idle_ticks: 0 }
    }
}

/// What a leader's hibernation tick decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Ask these peers to hibernate at (term, index).
    Ask {
        to: Vec<metapb::Peer>,
        term: u64,
        index: u64,
    },
    /// Nobody to ask (a single replica): asleep now.
    Sleep,
}

/// A hibernation message of `kind` from `from` to `to` in `region_id`.
pub(crate) fn message(
    region_id: RegionId,
    from: metapb::Peer,
    to: metapb::Peer,
    kind: Kind,
    term: u64,
    index: u64,
) -> RaftMessage {
    RaftMessage {
        region_id,
        from_peer: Some(from),
        to_peer: Some(to),
        hibernation: Some(Hibernation {
            kind: kind as i32,
            term,
            index,
        }),
        ..Default::default()
    }
}

/// The store-level ping from `from_store` to `to_store`.
pub(crate) fn ping(from_store: StoreId, to_store: StoreId) -> RaftMessage {
    let store = |store_id| metapb::Peer {
        id: 0,
        store_id,
        role: 0,
    };
    message(0, store(from_store), store(to_store), Kind::Ping, 0, 0)
}

/// What a received message is, for hibernation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A Raft message (or a tombstone): not hibernation's.
    Raft,
    Ping,
    Request {
        term: u64,
        index: u64,
    },
    Ack {
        term: u64,
        index: u64,
    },
    /// A hibernation kind this version does not know (a newer peer):
    /// dropped, never stepped.
    Unknown,
}

pub(crate) fn received(msg: &RaftMessage) -> Received {
    let Some(h) = msg.hibernation.as_ref() else {
        return Received::Raft;
    };
    let (term, index) = (h.term, h.index);
    match Kind::try_from(h.kind) {
        Ok(Kind::None) => Received::Raft,
        Ok(Kind::Ping) => Received::Ping,
        Ok(Kind::Request) => Received::Request { term, index },
        Ok(Kind::Ack) => Received::Ack { term, index },
        Err(_) => Received::Unknown,
    }
}

/// When this store last heard from each other store, and which of them are
/// silent past the liveness timeout.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    last_heard: HashMap<StoreId, Instant>,
}

impl Liveness {
    pub fn heard_from(&mut self, store: StoreId, now: Instant) {
        if store != 0 {
            self.last_heard.insert(store, now);
        }
    }

    /// Whether `store` has been silent for `timeout` at `now`. A store never
    /// heard from counts as silent: an asleep follower heard its leader's
    /// request, so its leader's store is always known here.
    pub fn is_silent(&self, store: StoreId, now: Instant, timeout: Duration) -> bool {
        self.last_heard
            .get(&store)
            .is_none_or(|at| now.saturating_duration_since(*at) >= timeout)
    }

    /// Forgets stores not heard from since `before` (removed stores).
    pub fn forget_older_than(&mut self, before: Instant) {
        self.last_heard.retain(|_, at| *at >= before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_silent_only_after_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut l = Liveness::default();
        assert!(l.is_silent(2, t0, timeout), "never heard from");
        l.heard_from(2, t0);
        assert!(!l.is_silent(2, t0 + Duration::from_millis(1999), timeout));
        assert!(l.is_silent(2, t0 + timeout, timeout));
        l.heard_from(2, t0 + timeout);
        assert!(!l.is_silent(2, t0 + timeout, timeout), "heard again");
        l.heard_from(0, t0);
        assert!(l.is_silent(0, t0, timeout), "store 0 is nobody");
    }

    #[test]
    fn only_hibernation_kinds_are_hibernation_messages() {
        assert_eq!(received(&RaftMessage::default()), Received::Raft);
        let p = ping(1, 2);
        assert_eq!(received(&p), Received::Ping);
        assert_eq!(p.region_id, 0);
        assert_eq!(p.to_peer.unwrap().store_id, 2);
        let peer = |id| metapb::Peer {
            id,
            store_id: id,
            role: 0,
        };
        let ask = message(7, peer(1), peer(2), Kind::Request, 6, 9);
        assert_eq!(received(&ask), Received::Request { term: 6, index: 9 });
        let ack = message(7, peer(2), peer(1), Kind::Ack, 6, 9);
        assert_eq!(received(&ack), Received::Ack { term: 6, index: 9 });
        let mut unknown = p.clone();
        unknown.hibernation.as_mut().unwrap().kind = 99;
        assert_eq!(
            received(&unknown),
            Received::Unknown,
            "dropped, not stepped"
        );
        let mut none = p;
        none.hibernation.as_mut().unwrap().kind = 0;
        assert_eq!(received(&none), Received::Raft);
    }
}
