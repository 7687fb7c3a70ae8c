//! Lease reads off the Raft thread: the per-region state the poller
//! publishes, and the check a gRPC task makes against it.
//!
//! A linearizable read on the leader needs no message to the poller while
//! the leader holds a valid lease (see `read.rs`): its commit index is a
//! read index. So the poller publishes, per region, what that decision
//! needs, and a request handler decides on its own task:
//!
//! 1. **The lease**: the instant until which it is valid (monotonic clock,
//!    the same process's), or none — not the leader, a leader transfer
//!    under way, no entry committed in the leader's term yet, or an event
//!    under way that ends it (below).
//! 2. **The commit index**, published *before* the poller sends any message
//!    carrying it: a follower (a follower read) or a client (a write's
//!    acknowledgement) can never have seen a commit index above the
//!    published one. A lease read takes the published commit index as its
//!    read index and is served once the published applied index reaches it.
//! 3. **The applied index and the region as of that applied state**
//!    (published together, after the apply batch is written): a read served
//!    at applied index `a` sees the region `a` left, so a split or a
//!    membership change committed at or below the read index has applied —
//!    and changed the region's epoch — before the read is served.
//! 4. **A generation**, bumped by every event that replaces the region or
//!    its data under a reader (a split or membership change applied, a
//!    snapshot, a reload), and a `closed` flag set before the peer's data
//!    is deleted. A handler reads the engine after its check, then checks
//!    again that the generation is the one it started with; if not, it
//!    drops what it read and asks the poller instead.
//!
//! When each event takes effect, relative to the publication:
//! - **leader transfer**: raft-rs sets the transferee before it can send
//!   `MsgTimeoutNow`, and every message leaves through the poller's outbox,
//!   flushed only after the round has published every peer that has
//!   messages in its Ready — with no lease while a transferee is set;
//! - **step-down**: a leader about to step a message of a higher term
//!   drops its lease first; a step-down on a tick (lost quorum) happens an
//!   election timeout after the last quorum contact, long after the lease
//!   (a fraction of it) expired;
//! - **split, membership change**: invalidated (generation bumped, no lease)
//!   right after the entries apply in memory, before the apply batch is
//!   written and before new regions start or a removed peer is destroyed;
//! - **snapshot** (a follower catching up): at staging, before the
//!   region's data is deleted and the snapshot's files ingested, the
//!   generation is bumped and the region marked *replacing* — no read
//!   starts and nothing is published (the storage already names the
//!   snapshot's index; the engine does not hold its data) until the data
//!   is in place, when the new state is published with another bump;
//! - **peer destroyed**: closed before its data is deleted;
//! - **engine failure**: every region closed before leaderships are handed
//!   away.
//!
//! The lease is `RaftConfig::lease_ratio` of the election timeout, counted
//! from the *send* time of what proved a quorum followed, on the process
//! clock (`tessera_common::clock`, which a test build can skew); what is
//! left of the shortest time a follower takes to vote for another leader
//! is the clock-drift bound (`RaftConfig::max_clock_drift`).
//!
//! **Stale reads** (a bound `max_age`, any replica) use the same state: a
//! replica holding the lease serves one as a lease read; any other serves
//! it at once if its latest safe point (a ReadIndex answer and when its
//! request was sent, `crate::read`) is at most `max_age` old and already
//! applied, with the same generation check afterwards. The safe point
//! stays valid across every event above (it names a log index, and a
//! replica's applied state only moves forward); a snapshot or split under
//! a reader bumps the generation like for lease reads, and no stale read
//! starts while a snapshot replaces the data (a follower is the replica
//! that takes snapshots: a soak caught stale reads reading the deleted
//! range before this rule).
//!
//! Anything this check cannot decide — a follower read, an epoch that does
//! not match, no lease — goes to the poller as before (lease or ReadIndex
//! there). Under manual ticks (the poller's logical clock) nothing is
//! published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tessera_common::clock;
use tessera_proto::metapb::Region;
use tokio::sync::watch;

use crate::mailbox::EpochCheck;
use crate::{region, RegionId};

/// What the poller publishes about one region.
#[derive(Clone, Debug)]
pub struct LeaseState {
    /// The peer's current term.
    pub term: u64,
    /// Until when a lease read may start; `None`: no lease reads.
    pub lease_until: Option<Instant>,
    /// The leader's commit index: a lease read's read index.
    pub committed: u64,
    /// What the engine holds of the region.
    pub applied_index: u64,
    /// The region as of `applied_index`.
    pub region: Arc<Region>,
    /// Bumped by every event that replaces the region or its data.
    pub generation: u64,
    /// The peer is gone (or the store stopped): no more local reads.
    pub closed: bool,
    /// The latest safe point for stale reads, if any.
    pub safe: Option<SafePoint>,
    /// A snapshot is replacing the region's data: no read may start, and
    /// nothing is published, until it is in place.
    pub replacing: bool,
}

/// A commit index a replica learned from its leader and when: every write
/// acknowledged before `at` (this process's monotonic clock) is at or
/// below `index` (`crate::read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafePoint {
    pub index: u64,
    pub at: Instant,
}

impl LeaseState {
    fn lease_valid(&self, now: Instant) -> bool {
        self.readable() && self.lease_until.is_some_and(|until| now < until)
    }

    /// The region's data is there to be read.
    fn readable(&self) -> bool {
        !self.closed && !self.replacing
    }
}

/// A peer's side of a publication (computed by the peer, which does no IO).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub term: u64,
    pub lease_until: Option<Instant>,
    pub committed: u64,
    pub applied_index: u64,
    pub safe: Option<SafePoint>,
}

/// The published state of every region of a store, shared by its poller
/// (which writes it) and its request handlers (which read it).
#[derive(Clone, Default)]
pub struct LocalReaders {
    regions: Arc<RwLock<HashMap<RegionId, watch::Sender<LeaseState>>>>,
    /// Reads served off the poller's thread.
    served: Arc<AtomicU64>,
}

impl LocalReaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `view` and `region` for `region.id`. Readers waiting for
    /// the applied index are woken when it moves (or the region changes).
    pub(crate) fn publish(&self, view: LeaseView, region: &Region) {
        {
            let map = self.regions.read();
            if let Some(tx) = map.get(&region.id) {
                tx.send_if_modified(|s| update(s, view, region));
                return;
            }
        }
        let state = LeaseState {
            term: view.term,
            lease_until: view.lease_until,
            committed: view.committed,
            applied_index: view.applied_index,
            region: Arc::new(region.clone()),
            generation: 0,
            closed: false,
            safe: view.safe,
            replacing: false,
        };
        let mut map = self.regions.write();
        match map.get(&region.id) {
            Some(tx) => {
                tx.send_if_modified(|s| update(s, view, region));
            }
            None => {
                map.insert(region.id, watch::channel(state).0);
            }
        }
    }

    /// Ends the region's lease and bumps its generation: readers that
    /// started before must not trust what they read.
    pub(crate) fn invalidate(&self, region_id: RegionId) {
        if let Some(tx) = self.regions.read().get(&region_id) {
            tx.send_modify(|s| {
                s.lease_until = None;
                s.generation += 1;
            });
        }
    }

    /// A snapshot is about to replace the region's data (its states are
    /// staged; the data step follows): ends the lease, bumps the
    /// generation and lets no read start, and publications wait, until
    /// [`Self::end_replace`].
    ///
    /// A peer that was never published (a new replica getting its first
    /// snapshot) gets an entry in that state, so that nothing is published
    /// for it before its data is there.
    pub(crate) fn begin_replace(&self, region_id: RegionId) {
        let mut map = self.regions.write();
        match map.get(&region_id) {
            Some(tx) => tx.send_modify(|s| {
                s.lease_until = None;
                s.generation += 1;
                s.replacing = true;
            }),
            None => {
                let state = LeaseState {
                    term: 0,
                    lease_until: None,
                    committed: 0,
                    applied_index: 0,
                    region: Arc::new(Region {
                        id: region_id,
                        ..Default::default()
                    }),
                    generation: 0,
                    closed: false,
                    safe: None,
                    replacing: true,
                };
                map.insert(region_id, watch::channel(state).0);
            }
        }
    }

    /// The snapshot's data is in place: publishes the peer's state as of
    /// the snapshot (bumping the generation again) and lets reads start.
    pub(crate) fn end_replace(&self, view: LeaseView, region: &Region) {
        if let Some(tx) = self.regions.read().get(&region.id) {
            tx.send_modify(|s| {
                s.replacing = false;
                s.generation += 1;
            });
        }
        self.publish(view, region);
    }

    /// Ends the region's lease without touching its generation (a step-down
    /// or transfer: what readers already read stays valid).
    pub(crate) fn end_lease(&self, region_id: RegionId) {
        if let Some(tx) = self.regions.read().get(&region_id) {
            // Silent: waiters wait for the applied index, not the lease.
            tx.send_if_modified(|s| {
                s.lease_until = None;
                false
            });
        }
    }

    /// The peer is going away (its data will be deleted): closes and forgets
    /// the region.
    pub(crate) fn remove(&self, region_id: RegionId) {
        if let Some(tx) = self.regions.write().remove(&region_id) {
            tx.send_modify(|s| {
                s.closed = true;
                s.lease_until = None;
            });
        }
    }

    /// Closes every region (the engine failed).
    pub(crate) fn close_all(&self) {
        for (_, tx) in self.regions.write().drain() {
            tx.send_modify(|s| {
                s.closed = true;
                s.lease_until = None;
            });
        }
    }

    /// Whether what `read` read may be returned: nothing replaced the
    /// region or its data since it began (counted as served if so).
    pub fn finish(&self, read: &LocalRead) -> bool {
        let kept = read.still_valid();
        if kept {
            self.served.fetch_add(1, Ordering::Relaxed);
        }
        kept
    }

    /// How many reads were served off the poller's thread.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// The published state of a region, if any (for tests and inspection).
    pub fn state(&self, region_id: RegionId) -> Option<LeaseState> {
        self.regions
            .read()
            .get(&region_id)
            .map(|tx| tx.borrow().clone())
    }

    /// Watches `region_id`'s data while a read served by the poller reads
    /// the engine: take it before asking the poller, read, then check
    /// [`LocalRead::still_valid`] — false if a snapshot replaced the data
    /// (or anything else bumped the generation) meanwhile. `None`: nothing
    /// published to watch.
    pub fn watch(&self, region_id: RegionId) -> Option<LocalRead> {
        let rx = self.regions.read().get(&region_id)?.subscribe();
        let (region, generation) = {
            let s = rx.borrow();
            (s.region.clone(), s.generation)
        };
        Some(LocalRead {
            rx,
            region,
            generation,
        })
    }

    /// Starts a lease read of `region_id` at `epoch`. `Some`: the engine
    /// may be read now (keys checked against [`LocalRead::region`]), and
    /// the result kept if [`LocalRead::still_valid`] afterwards. `None`:
    /// this check cannot decide — ask the poller. Waits (without bound: the
    /// caller's deadline bounds it) while the applied index catches up
    /// with the read index.
    pub async fn begin(&self, region_id: RegionId, epoch: &EpochCheck) -> Option<LocalRead> {
        let mut rx = self.regions.read().get(&region_id)?.subscribe();
        let (read_index, generation) = {
            let s = rx.borrow_and_update();
            if !s.lease_valid(clock::now()) || !epoch.matches(&region::epoch(&s.region)) {
                return None;
            }
            (s.committed, s.generation)
        };
        let region = {
            let s = rx
                .wait_for(|s| {
                    !s.readable() || s.generation != generation || s.applied_index >= read_index
                })
                .await
                .ok()?;
            if !s.readable() || s.generation != generation {
                return None;
            }
            s.region.clone()
        };
        Some(LocalRead {
            rx,
            region,
            generation,
        })
    }

    /// Starts a stale read of `region_id` at `epoch` whose state may be at
    /// most `max_age` old (module docs): a lease read while the lease is
    /// valid; otherwise granted at once if the safe point is recent enough
    /// and applied. `None`: serve it as a follower read instead (whose
    /// ReadIndex round makes a fresh safe point).
    pub async fn begin_stale(
        &self,
        region_id: RegionId,
        epoch: &EpochCheck,
        max_age: Duration,
    ) -> Option<LocalRead> {
        let rx = self.regions.read().get(&region_id)?.subscribe();
        // `Some`: served at once from the safe point; `None`: the lease.
        let granted = {
            let s = rx.borrow();
            let now = clock::now();
            if !s.readable() || !epoch.matches(&region::epoch(&s.region)) {
                return None;
            }
            if s.lease_valid(now) {
                None
            } else {
                let safe = s.safe?;
                if now.saturating_duration_since(safe.at) > max_age || s.applied_index < safe.index
                {
                    return None;
                }
                Some((s.region.clone(), s.generation))
            }
        };
        match granted {
            Some((region, generation)) => Some(LocalRead {
                rx,
                region,
                generation,
            }),
            None => self.begin(region_id, epoch).await,
        }
    }
}

/// Writes `view` and `region` into the published state; whether waiters
/// must look again (the applied index or the region moved).
fn update(s: &mut LeaseState, view: LeaseView, region: &Region) -> bool {
    if s.replacing {
        // The storage already describes the snapshot; the engine does not
        // hold its data yet (`end_replace` publishes it).
        return false;
    }
    s.term = view.term;
    s.lease_until = view.lease_until;
    s.committed = view.committed;
    s.safe = view.safe;
    let mut wake = false;
    if s.applied_index != view.applied_index {
        s.applied_index = view.applied_index;
        wake = true;
    }
    if *s.region != *region {
        s.region = Arc::new(region.clone());
        s.generation += 1;
        wake = true;
    }
    wake
}

/// A lease read under way: the region it was granted for, and the
/// generation to check once the engine has been read.
pub struct LocalRead {
    rx: watch::Receiver<LeaseState>,
    region: Arc<Region>,
    generation: u64,
}

impl LocalRead {
    /// The region as of the applied index the read waited for.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Whether nothing replaced the region or its data since the read
    /// began: what it read may be returned.
    pub fn still_valid(&self) -> bool {
        let s = self.rx.borrow();
        s.readable() && s.generation == self.generation
    }
}

#[cfg(test)]
mod tests;
