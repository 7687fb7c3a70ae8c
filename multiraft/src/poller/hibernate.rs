//! The poller's side of hibernation (`crate::hibernate`): which peers tick,
//! the asleep peers indexed by the stores their sleep depends on, the
//! hibernation messages, the store pings, and the liveness check that wakes
//! the followers of a silent store.
//!
//! The peer is the truth about whether it sleeps; the ticking set follows
//! it. A peer falls asleep only here (on a request, an acknowledgement or a
//! tick), and is woken by its own methods (a proposal, a read, a leader
//! transfer...) or here (a message, the liveness check); every round, the
//! touched peers that are awake are put back in the ticking set
//! ([`Poller::reconcile_ticking`]). The indexes by store only ever gain
//! entries between rebuilds: a stale entry costs a needless ping or a
//! needless wake of an awake peer, never a missed one, and
//! [`Poller::rebuild_sleep_index`] drops them every `REBUILD_TICKS`.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tessera_proto::raft_serverpb::{hibernation::Kind, RaftMessage};

use super::Poller;
use crate::hibernate::{self, Liveness, Received, Step};
use crate::peer::{Outgoing, Peer};
use crate::state_machine::StateMachine;
use crate::{metrics as m, RegionId, StoreId};

/// Ticks between two rebuilds of the indexes of asleep peers by store.
const REBUILD_TICKS: u64 = 600;

/// The peers that tick, and the asleep ones by the stores they depend on.
#[derive(Default)]
pub(super) struct Sleepers {
    /// Every peer but the asleep (may hold ids of removed peers until the
    /// next tick drops them).
    ticking: HashSet<RegionId>,
    /// Asleep followers by their leader's store: woken when it is silent.
    followers_of: HashMap<StoreId, HashSet<RegionId>>,
    /// Asleep leaders by their followers' stores: those stores are pinged.
    leaders_for: HashMap<StoreId, HashSet<RegionId>>,
    /// Followers woken because their leader's store went silent, by that
    /// store: if it is heard again first, they go back to sleep.
    woken_by_silence: HashMap<StoreId, Vec<RegionId>>,
    liveness: Liveness,
}

impl<S: StateMachine> Poller<S> {
    /// Adds a peer to the store, awake.
    pub(super) fn add_peer(&mut self, id: RegionId, peer: Peer<S::Output>) {
        self.peers.insert(id, peer);
        self.sleepers.ticking.insert(id);
    }

    /// Ticks every awake peer; with hibernation on, an idle leader asks its
    /// followers to hibernate, then the liveness check and pings run.
    pub(super) fn tick_awake(&mut self) {
        let now = self.now();
        let hibernate = self.cfg.hibernate_regions;
        let mut gone = vec![];
        let mut asleep = vec![];
        let mut ticked = 0u64;
        for &id in &self.sleepers.ticking {
            let Some(peer) = self.peers.get_mut(&id) else {
                gone.push(id);
                continue;
            };
            if hibernate {
                match peer.hibernation_tick(self.cfg.hibernate_after_ticks) {
                    Step::Nothing => {}
                    Step::Sleep => {
                        asleep.push(id);
                        continue;
                    }
                    Step::Ask { to, term, index } => {
                        for p in to {
                            let msg =
                                hibernate::message(id, *peer.meta(), p, Kind::Request, term, index);
                            self.outbox.push(Outgoing::Message(p.store_id, msg));
                        }
                    }
                }
            }
            let was_leader = peer.is_leader();
            peer.tick();
            ticked += 1;
            if was_leader && !peer.is_leader() {
                // Lost its quorum: long after the lease expired, but no
                // reader should see it held by a follower.
                self.leases.end_lease(id);
            }
            peer.maybe_leave_joint();
            self.touched.insert(id);
        }
        self.stats
            .peer_ticks
            .fetch_add(ticked, std::sync::atomic::Ordering::Relaxed);
        for id in gone {
            self.sleepers.ticking.remove(&id);
        }
        for id in asleep {
            self.fell_asleep(id);
        }
        let asleep = self.peers.len().saturating_sub(self.sleepers.ticking.len());
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.stats.hibernating.store(asleep as u64, relaxed);
        self.stats.regions.store(self.peers.len() as u64, relaxed);
        if !hibernate {
            return;
        }
        metrics::gauge!(m::HIBERNATING_REGIONS).set(asleep as f64);
        self.wake_followers_of_silent_stores(now);
        if self
            .ticks
            .is_multiple_of(self.cfg.heartbeat_tick.max(1) as u64)
        {
            self.send_pings();
        }
        if self.ticks.is_multiple_of(REBUILD_TICKS) {
            self.rebuild_sleep_index(now);
        }
    }

    /// The awake peers (the ticking set), without looking at the others.
    pub(super) fn awake_peers(&self) -> impl Iterator<Item = (&RegionId, &Peer<S::Output>)> {
        self.sleepers
            .ticking
            .iter()
            .filter_map(|id| self.peers.get_key_value(id))
    }

    /// Peer `id` just fell asleep: it stops ticking, is indexed by the
    /// stores its sleep depends on, and drops its caches.
    fn fell_asleep(&mut self, id: RegionId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.shrink();
        self.sleepers.ticking.remove(&id);
        self.index_asleep(id);
    }

    fn index_asleep(&mut self, id: RegionId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let index = if peer.is_leader() {
            &mut self.sleepers.leaders_for
        } else {
            &mut self.sleepers.followers_of
        };
        for store in peer.sleep_stores() {
            index.entry(store).or_default().insert(id);
        }
    }

    /// Puts the touched peers that are awake back in the ticking set (a
    /// peer wakes itself on a proposal, a read, a transfer...).
    pub(super) fn reconcile_ticking(&mut self) {
        for id in &self.touched {
            if self.sleepers.ticking.contains(id) {
                continue;
            }
            if self.peers.get(id).is_some_and(|p| !p.is_asleep()) {
                self.sleepers.ticking.insert(*id);
                metrics::counter!(m::REGION_WAKEUPS_TOTAL).increment(1);
            }
        }
    }

    /// Wakes peer `id` (something happened to it).
    pub(super) fn wake(&mut self, id: RegionId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.wake();
            self.touched.insert(id);
        }
    }

    /// Records that a message came from its sender's store; handles a
    /// hibernation message. Returns true when `msg` is a Raft message the
    /// caller must go on with.
    pub(super) fn on_hibernation_message(&mut self, msg: &RaftMessage) -> bool {
        let now = self.now();
        if let Some(from) = &msg.from_peer {
            self.sleepers.liveness.heard_from(from.store_id, now);
            self.back_to_sleep(from.store_id);
        }
        let (term, index) = match hibernate::received(msg) {
            Received::Raft => return true,
            Received::Ping => return false,
            Received::Unknown => {
                metrics::counter!(m::RAFT_MESSAGES_REFUSED_TOTAL, "reason" => "unknown_hibernation").increment(1);
                return false;
            }
            Received::Request { term, index } | Received::Ack { term, index } => (term, index),
        };
        let region_id = msg.region_id;
        let (Some(from), Some(to)) = (msg.from_peer, msg.to_peer) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return false;
        };
        if peer.peer_id() != to.id || !self.cfg.hibernate_regions {
            return false;
        }
        match hibernate::received(msg) {
            Received::Request { .. } => {
                if peer.on_hibernate_request(from.id, term, index) {
                    let ack =
                        hibernate::message(region_id, *peer.meta(), from, Kind::Ack, term, index);
                    self.outbox.push(Outgoing::Message(from.store_id, ack));
                    self.fell_asleep(region_id);
                }
            }
            _ => {
                if peer.on_hibernate_ack(from.id, term, index) {
                    self.fell_asleep(region_id);
                }
            }
        }
        false
    }

    /// Wakes the asleep followers whose leader's store has been silent for
    /// `store_liveness_ticks` — twice that while the mailbox still holds
    /// messages, one of which may be the store's ping (a busy store is slow
    /// to notice rather than quick to wake regions whose leader lives).
    fn wake_followers_of_silent_stores(&mut self, now: Instant) {
        let mut timeout = self.cfg.tick_interval * self.cfg.store_liveness_ticks as u32;
        if !self.inbox.is_empty() {
            timeout *= 2;
        }
        let silent: Vec<StoreId> = self
            .sleepers
            .followers_of
            .keys()
            .copied()
            .filter(|s| self.sleepers.liveness.is_silent(*s, now, timeout))
            .collect();
        for store in silent {
            self.wake_followers_led_from(store, "silent");
        }
    }

    /// The transport could not reach `store` (its process is gone, or a
    /// connection to it broke): the asleep followers of its leaders wake
    /// at once, without waiting for the silence.
    pub(super) fn on_store_unreachable(&mut self, store: StoreId) {
        if self.sleepers.followers_of.contains_key(&store) {
            self.wake_followers_led_from(store, "unreachable");
        }
    }

    /// Wakes every asleep follower whose leader is on `store`, remembering
    /// them: if `store` is heard from before they elect, they sleep again.
    fn wake_followers_led_from(&mut self, store: StoreId, why: &'static str) {
        let ids = self
            .sleepers
            .followers_of
            .remove(&store)
            .unwrap_or_default();
        tracing::info!(
            store_id = self.store_id,
            leader_store = store,
            why,
            regions = ids.len(),
            "the store of hibernating leaders is silent or unreachable; waking their followers"
        );
        for &id in &ids {
            self.wake(id);
        }
        self.sleepers
            .woken_by_silence
            .entry(store)
            .or_default()
            .extend(ids);
    }

    /// `store` was heard from: the followers woken because it was silent
    /// go back to sleep, those still following its leader with nothing to
    /// do — a store that stalled a while (a slow disk, a long round) does
    /// not leave its followers campaigning against leaders that live.
    fn back_to_sleep(&mut self, store: StoreId) {
        let Some(ids) = self.sleepers.woken_by_silence.remove(&store) else {
            return;
        };
        let mut again = 0usize;
        for id in ids {
            let resumed = self.peers.get_mut(&id).is_some_and(|p| {
                p.leader().is_some_and(|l| l.store_id == store) && p.sleep_again()
            });
            if resumed {
                self.fell_asleep(id);
                again += 1;
            }
        }
        tracing::info!(
            store_id = self.store_id,
            heard_store = store,
            regions = again,
            "the store of hibernating leaders is heard again; its followers sleep again"
        );
    }

    /// Pings every store that holds followers of a leader asleep here (it
    /// tells them this store lives), and every store that holds the leader
    /// of a follower asleep here (a ping that cannot be delivered makes the
    /// transport report the store unreachable: a dead leader store is
    /// noticed at once).
    fn send_pings(&mut self) {
        let stores: std::collections::BTreeSet<StoreId> = self
            .sleepers
            .leaders_for
            .iter()
            .chain(self.sleepers.followers_of.iter())
            .filter(|(store, ids)| !ids.is_empty() && **store != self.store_id)
            .map(|(store, _)| *store)
            .collect();
        for store in stores {
            let ping = hibernate::ping(self.store_id, store);
            self.outbox.push(Outgoing::Message(store, ping));
        }
    }

    /// Rebuilds the indexes of asleep peers from the peers themselves, and
    /// forgets stores not heard from in the last rebuild period.
    fn rebuild_sleep_index(&mut self, now: Instant) {
        self.sleepers.followers_of.clear();
        self.sleepers.leaders_for.clear();
        self.sleepers.woken_by_silence.clear();
        let asleep: Vec<RegionId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.is_asleep())
            .map(|(id, _)| *id)
            .collect();
        for id in asleep {
            self.index_asleep(id);
        }
        let period = self.cfg.tick_interval * REBUILD_TICKS as u32;
        if let Some(before) = now.checked_sub(period) {
            self.sleepers.liveness.forget_older_than(before);
        }
    }
}
