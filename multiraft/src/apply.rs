//! Applying committed entries of one peer to its state machine.
//!
//! All regions of a poller round share one apply batch. For each region the
//! batch receives, in order: the changes of every entry — including region
//! changes the entries asked for (a split narrows the region and creates new
//! ones, a log compaction drops entries) — and finally the region's new
//! apply state (the hard state is not needed here: see `storage`). The
//! poller writes the batch (without fsync: the Raft log already holds every
//! entry durably, and a lost apply is simply redone from it) and only then
//! runs the proposers' callbacks.
//!
//! A merge's CommitMerge may have to wait for the local source replica
//! (`crate::merge`): then it and every later entry are held in the peer
//! and applied again, first, in a later round.

use std::collections::HashMap;

use raft::eraftpb::{Entry, EntryType};
use tessera_proto::metapb::{Peer as PeerMeta, Region};
use tessera_proto::raft_serverpb::MergeState;

use crate::conf_change::{self, ConfChangeOutcome};
use crate::engine::{Engine, WriteBatch};
use crate::merge::{self, SourceReadiness};
use crate::peer::{Applied, Peer};
use crate::state_machine::{ApplyContext, ApplyEffect, StateMachine};
use crate::RegionId;

/// What one round of apply produces.
#[derive(Default)]
pub struct ApplyBatch {
    pub wb: WriteBatch,
    /// Callbacks to run after `wb` is written.
    pub deferred: Vec<crate::peer::Deferred>,
    pub entries: u64,
}

/// What applying a peer's entries changed beyond its data.
#[derive(Default, Debug)]
pub struct ApplyOutcome {
    /// Regions split off this one; their initial state still has to be
    /// written.
    pub new_regions: Vec<Region>,
    /// Peers that membership changes removed, with the region after each
    /// change (to tell them).
    pub removed_peers: Vec<(PeerMeta, Region)>,
    /// A membership change removed this peer.
    pub removed_self: bool,
    /// A merge source this (target) peer took in; the poller drops its
    /// local peer once the batch is written.
    pub merged_source: Option<Region>,
    /// This peer holds its entries from a CommitMerge on until its local
    /// source (id, and how ready it is) has caught up.
    pub(crate) merge_wait: Option<(RegionId, MergeState, SourceReadiness)>,
    /// This peer prepared a merge, or rolled one back, in this round.
    pub prepared_merge: bool,
    pub rolled_back_merge: bool,
}

/// Applies `entries` (committed, in order) of `peer` into `ab`, after the
/// entries it held. `others` are the store's other peers (a merge looks at
/// its local source).
pub fn apply_entries<S: StateMachine>(
    peer: &mut Peer<S::Output>,
    entries: Vec<Entry>,
    others: &HashMap<RegionId, Peer<S::Output>>,
    sm: &mut S,
    engine: &dyn Engine,
    ab: &mut ApplyBatch,
) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    let mut entries = entries;
    if !peer.merge.held.is_empty() {
        let mut held = std::mem::take(&mut peer.merge.held);
        held.extend(entries);
        entries = held;
    }
    if entries.is_empty() {
        return outcome;
    }
    let mut applied = peer.storage().applied_index();
    let mut entries = entries.into_iter();
    while let Some(entry) = entries.next() {
        if entry.index <= applied {
            // Already applied before a restart; raft-rs may hand it out again.
            continue;
        }
        if outcome.removed_self {
            // Nothing after our own removal concerns this replica.
            break;
        }
        match entry.get_entry_type() {
            EntryType::EntryNormal => {
                let result = if entry.data.is_empty() {
                    // The empty entry a new leader commits in its term.
                    Applied::Nothing
                } else {
                    let mut effects = vec![];
                    let output = {
                        let storage = peer.storage();
                        let state = *storage.apply_state();
                        let mut cx = ApplyContext {
                            engine,
                            batch: &mut ab.wb,
                            region: storage.region(),
                            apply_state: &state,
                            index: entry.index,
                            term: entry.term,
                            effects: &mut effects,
                            merge: &peer.merge,
                        };
                        sm.apply(&mut cx, &entry.data)
                    };
                    if let Some(wait) = merge_wait(peer.region_id(), &effects, others) {
                        // Not applied: held with everything after it, and
                        // applied again once the source is ready.
                        peer.merge.held = std::iter::once(entry).chain(entries).collect();
                        outcome.merge_wait = Some(wait);
                        break;
                    }
                    peer.applied_bytes += entry.data.len() as u64;
                    for effect in effects {
                        carry_out(peer, effect, &mut ab.wb, &mut outcome);
                    }
                    Applied::Command(output)
                };
                peer.on_entry_applied(entry.index, entry.term, result, &mut ab.deferred);
            }
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                let result = match conf_change::apply(peer, &entry, &mut ab.wb) {
                    ConfChangeOutcome::Applied {
                        region,
                        removed,
                        removed_self,
                    } => {
                        outcome.removed_self |= removed_self;
                        outcome
                            .removed_peers
                            .extend(removed.into_iter().map(|p| (p, region.clone())));
                        Applied::ConfChange(region)
                    }
                    ConfChangeOutcome::Ignored => Applied::Nothing,
                };
                peer.on_entry_applied(entry.index, entry.term, result, &mut ab.deferred);
            }
        }
        applied = entry.index;
        peer.storage_mut().set_applied_index(applied);
        ab.entries += 1;
    }
    peer.storage().write_apply_state(&mut ab.wb);
    outcome
}

/// If `effects` merge a source that is not ready here: which, and how far
/// it is.
fn merge_wait<O: Send + 'static>(
    target_id: RegionId,
    effects: &[ApplyEffect],
    others: &HashMap<RegionId, Peer<O>>,
) -> Option<(RegionId, MergeState, SourceReadiness)> {
    effects.iter().find_map(|e| match e {
        ApplyEffect::CommitMerge { source, state, .. } => {
            match merge::source_readiness(others.get(&source.id), target_id, state) {
                SourceReadiness::Ready => None,
                not_ready => Some((source.id, state.clone(), not_ready)),
            }
        }
        _ => None,
    })
}

fn carry_out<O: Send + 'static>(
    peer: &mut Peer<O>,
    effect: ApplyEffect,
    wb: &mut WriteBatch,
    outcome: &mut ApplyOutcome,
) {
    match effect {
        ApplyEffect::Split {
            derived,
            new_regions,
        } => crate::poller::split::apply(peer, derived, new_regions, wb, outcome),
        ApplyEffect::CompactLog { index, term } => {
            crate::poller::log_gc::apply(peer, index, term, wb)
        }
        ApplyEffect::PrepareMerge { region, state } => {
            merge::apply_prepare(peer, region, state, wb);
            outcome.prepared_merge = true;
        }
        ApplyEffect::CommitMerge { merged, source, .. } => {
            merge::apply_commit(peer, merged, source, wb, outcome)
        }
        ApplyEffect::RefuseMerge { refusal } => merge::apply_refusal(peer, refusal, wb),
        ApplyEffect::RollbackMerge { region } => {
            merge::apply_rollback(peer, region, wb);
            outcome.rolled_back_merge = true;
        }
    }
}
