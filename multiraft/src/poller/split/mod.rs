//! The Raft side of a split, in the order it happens.
//!
//! 1. **Propose** (`tessera-store`'s `split.rs`): the leader lays out the
//!    new regions (`split_layout`, keys checked by
//!    `tessera_proto::region::check_split_keys`, ids from the directory) and
//!    proposes one admin command through the poller's mailbox.
//! 2. **Apply** ([`apply`]): on every replica, in the round's apply batch,
//!    the store's state machine re-checks the command against the region as
//!    it is then and reports `ApplyEffect::Split`; the region narrows to the
//!    range below the first key, its new epoch and state are written with
//!    the batch, and it remembers its siblings ([`record_siblings`]: its
//!    reports and an EpochNotMatch name them). A leader broadcasts the commit at once: followers would
//!    otherwise learn it with the next heartbeat, and the new regions could
//!    not elect anyone until they apply it.
//! 3. **Effects** ([`Poller::born_regions`]): in the same batch, the initial
//!    state (a fresh log at index 5) of every new region with a peer on this
//!    store — unless the region is already known here (a peer, or a
//!    tombstone): then it is not recreated.
//! 4. **New peers** ([`Poller::start_split_region`]): once the batch is
//!    written, each new peer starts; where the parent led, it campaigns at
//!    once, and vote requests held for it ([`early_votes`]: they arrived
//!    before this store applied the split, while the parent still held the
//!    range) are delivered through the normal message path. A bulk split
//!    (at least [`SPREAD_LEADERS_FROM`] new regions, as a hash keyspace's
//!    creation) spreads the first campaigns instead: new region *i*'s voter
//!    number *i mod voters* campaigns, on whichever store it lives, so the
//!    new leaders start evenly spread and the directory has no thousands
//!    of leaders to move afterwards (each move wakes a region that would
//!    otherwise hibernate untouched). If that voter's store is down, the
//!    region elects after an election timeout, as any leaderless region.
//!
//! A replica that missed the split catches up by log or, once the log is
//! gone, by a snapshot of the region *as it is now*: one taken before a
//! later split carries a wider range that a store holding the split-off
//! regions refuses, so `storage` never hands it out again.
//!
//! Failpoints: `apply_before_write` (before the batch holding the split),
//! `split_between_write_and_start` (after it, before the new peers start).

pub(super) mod early_votes;

use tessera_proto::metapb::{PeerRole, Region};
use tessera_proto::raft_serverpb::{PeerState, RegionLocalState};

use super::Poller;
use crate::apply::ApplyOutcome;
use crate::engine::{Cf, WriteBatch};
use crate::peer::Peer;
use crate::state_machine::StateMachine;
use crate::{metrics as m, region, state_keys, RegionId};

/// Step 2: `peer`'s region became `derived`; `new_regions` were split off.
pub(crate) fn apply<O: Send + 'static>(
    peer: &mut Peer<O>,
    derived: Region,
    new_regions: Vec<Region>,
    wb: &mut WriteBatch,
    outcome: &mut ApplyOutcome,
) {
    let region_id = derived.id;
    wb.put_msg(
        Cf::Meta,
        state_keys::region_state_key(region_id),
        &RegionLocalState {
            region: Some(derived.clone()),
            state: PeerState::Normal as i32,
        },
    );
    tracing::info!(
        region_id,
        new_regions = ?new_regions.iter().map(|r| r.id).collect::<Vec<_>>(),
        version = derived.region_epoch.unwrap_or_default().version,
        "region split"
    );
    metrics::counter!(m::SPLITS_TOTAL).increment(1);
    peer.storage_mut().set_region(derived);
    record_siblings(peer, new_regions.clone());
    outcome.new_regions.extend(new_regions);
    if peer.is_leader() {
        // Followers would otherwise learn this commit only with the
        // next append or heartbeat (commits are not broadcast), and
        // until they apply the split the new regions cannot elect
        // the leader that campaigns for them on this store.
        peer.broadcast_commit();
    }
}

/// The most regions split off one peer's region that it remembers: the
/// oldest are dropped first — but never one of the newest split's, however
/// many keys it split at (the directory records a split only with all of
/// them). Every split adds its regions to one parent only, so a store's
/// siblings in all stay near its number of splits.
pub const MAX_SPLIT_SIBLINGS: usize = 32;

/// Adds the regions a split of `peer`'s region created to those it
/// remembers. They are kept across later splits, not replaced: the
/// directory records a split only with every region that covers the
/// parent's old range (it never leaves a gap), so when two splits apply
/// between two reports (a replica catching up after a full disk or a
/// partition applies them in one round), a report carrying only the second
/// split's regions could never be recorded, and routers would loop between
/// the directory's stale region and the stores. Regions split off one
/// parent are disjoint from each other and from the parent's current range;
/// the directory ignores the ones it already knows at that epoch or newer.
pub(crate) fn record_siblings<O: Send + 'static>(peer: &mut Peer<O>, new_regions: Vec<Region>) {
    let newest = new_regions.len();
    let siblings = &mut peer.split_siblings;
    siblings.extend(new_regions);
    let over = siblings
        .len()
        .saturating_sub(MAX_SPLIT_SIBLINGS.max(newest));
    siblings.drain(..over);
}

/// A split into at least this many new regions spreads their first
/// leaders over the stores (step 4); a smaller one keeps them where the
/// parent led, as a split by size or load wants.
pub const SPREAD_LEADERS_FROM: usize = 8;

/// Who campaigns first for a region a split created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FirstCampaign {
    /// The peer on the store whose parent peer leads.
    ParentLeader,
    /// The voter at this position (modulo the voter count) of the region's
    /// peer list: the region's place among the split's new regions.
    Spread(usize),
}

impl FirstCampaign {
    /// Whether the peer on `store_id` of `region` campaigns at once.
    fn campaigns_here(self, region: &Region, store_id: u64, parent_leads: bool) -> bool {
        match self {
            FirstCampaign::ParentLeader => parent_leads,
            FirstCampaign::Spread(i) => {
                let voters: Vec<u64> = region
                    .peers
                    .iter()
                    .filter(|p| p.role == PeerRole::Voter as i32)
                    .map(|p| p.store_id)
                    .collect();
                !voters.is_empty() && voters[i % voters.len()] == store_id
            }
        }
    }
}

impl<S: StateMachine> Poller<S> {
    /// Step 3: writes into `wb` the initial state of every region this
    /// round's splits created with a peer here; returns them with their
    /// parents, to start once `wb` is written.
    pub(super) fn born_regions(
        &self,
        outcomes: &[(RegionId, ApplyOutcome)],
        wb: &mut WriteBatch,
    ) -> Vec<(RegionId, Region, FirstCampaign)> {
        let mut born = vec![];
        for (parent, outcome) in outcomes.iter() {
            let spread = outcome.new_regions.len() >= SPREAD_LEADERS_FROM;
            for (i, r) in outcome.new_regions.iter().enumerate() {
                if self.peers.contains_key(&r.id) || self.tombstones.contains_key(&r.id) {
                    tracing::warn!(
                        region_id = r.id,
                        "split target already known on this store; not recreated"
                    );
                    continue;
                }
                if region::find_peer_on_store(r, self.store_id).is_none() {
                    continue;
                }
                region::write_initial_state(r, wb);
                let first = if spread {
                    FirstCampaign::Spread(i)
                } else {
                    FirstCampaign::ParentLeader
                };
                born.push((*parent, r.clone(), first));
            }
        }
        born
    }

    /// Starts the local peer of a region a split just created (its state is
    /// already written). The peer `first` names campaigns for it at once,
    /// so the new region does not wait an election timeout; vote requests
    /// that came before the split applied here are handed to the new peer
    /// (see `early_votes`).
    pub(super) fn start_split_region(
        &mut self,
        parent: RegionId,
        region: Region,
        first: FirstCampaign,
    ) {
        let peer = match Peer::load(
            self.store_id,
            region.clone(),
            self.engine.clone(),
            &self.cfg,
        ) {
            Ok(p) => p,
            Err(e) => panic!("region {}: cannot start after a split: {e}", region.id),
        };
        self.index_region(&region);
        self.add_peer(region.id, peer);
        let parent_leads = self.peers.get(&parent).is_some_and(|p| p.is_leader());
        if first.campaigns_here(&region, self.store_id, parent_leads) {
            if let Some(p) = self.peers.get_mut(&region.id) {
                if let Err(e) = p.campaign() {
                    tracing::warn!(region_id = region.id, error = %e, "campaign after split failed");
                }
            }
        }
        self.touched.insert(region.id);
        self.roles_changed = true;
        for vote in self.early_votes.take(region.id, self.now()) {
            tracing::debug!(region_id = region.id, "held vote request delivered");
            self.on_raft_message(vote);
        }
    }
}
