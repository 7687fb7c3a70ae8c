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

use raft::eraftpb::{Entry, EntryType};
use tessera_proto::metapb::{Peer as PeerMeta, Region};

use crate::conf_change::{self, ConfChangeOutcome};
use crate::engine::{Engine, WriteBatch};
use crate::peer::{Applied, Peer};
use crate::state_machine::{ApplyContext, ApplyEffect, StateMachine};

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
}

/// Applies `entries` (committed, in order) of `peer` into `ab`.
pub fn apply_entries<S: StateMachine>(
    peer: &mut Peer<S::Output>,
    entries: Vec<Entry>,
    sm: &mut S,
    engine: &dyn Engine,
    ab: &mut ApplyBatch,
) -> ApplyOutcome {
    let mut outcome = ApplyOutcome::default();
    if entries.is_empty() {
        return outcome;
    }
    let mut applied = peer.storage().applied_index();
    for entry in entries {
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
                        };
                        sm.apply(&mut cx, &entry.data)
                    };
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
    }
}
