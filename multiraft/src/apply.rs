//! Applying committed entries of one peer to its state machine.
//!
//! All regions of a poller round share one apply batch. For each region the
//! batch receives, in order: its hard state if the commit index moved (so
//! the persisted commit is never below the persisted applied index), the
//! changes of every entry, and finally the region's new apply state. The
//! poller writes the batch (without fsync: the Raft log already holds every
//! entry durably, and a lost apply is simply redone from it) and only then
//! runs the proposers' callbacks.

use raft::eraftpb::{Entry, EntryType};

use crate::conf_change::ConfChangeOutcome;
use crate::engine::{Engine, WriteBatch};
use crate::peer::Peer;
use crate::state_machine::{ApplyContext, StateMachine};

/// What one round of apply produces.
#[derive(Default)]
pub struct ApplyBatch {
    pub wb: WriteBatch,
    /// Callbacks to run after `wb` is written.
    pub deferred: Vec<Box<dyn FnOnce() + Send>>,
    pub entries: u64,
}

/// Applies `entries` (committed, in order) of `peer` into `ab`. Returns
/// whether a membership change removed `peer` from its region.
pub fn apply_entries<S: StateMachine>(
    peer: &mut Peer<S::Output>,
    entries: Vec<Entry>,
    sm: &mut S,
    engine: &dyn Engine,
    ab: &mut ApplyBatch,
) -> bool {
    let mut removed_self = false;
    if entries.is_empty() {
        return removed_self;
    }
    peer.storage_mut().write_raft_state_if_dirty(&mut ab.wb);
    let mut applied = peer.storage().applied_index();
    for entry in entries {
        if entry.index <= applied {
            // Already applied before a restart; raft-rs may hand it out again.
            continue;
        }
        match entry.get_entry_type() {
            EntryType::EntryNormal => {
                let output = if entry.data.is_empty() {
                    // The empty entry a new leader commits in its term.
                    None
                } else {
                    let storage = peer.storage();
                    let mut state = *storage.apply_state();
                    state.applied_index = applied;
                    let mut cx = ApplyContext {
                        engine,
                        batch: &mut ab.wb,
                        region: storage.region(),
                        apply_state: &state,
                        index: entry.index,
                        term: entry.term,
                    };
                    Some(sm.apply(&mut cx, &entry.data))
                };
                peer.on_entry_applied(entry.index, entry.term, output, &mut ab.deferred);
            }
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                if crate::conf_change::apply(peer, &entry, &mut ab.wb)
                    == ConfChangeOutcome::RemovedSelf
                {
                    removed_self = true;
                }
                peer.on_entry_applied(entry.index, entry.term, None, &mut ab.deferred);
            }
        }
        applied = entry.index;
        ab.entries += 1;
    }
    let storage = peer.storage_mut();
    storage.set_applied_index(applied);
    storage.write_apply_state(&mut ab.wb);
    removed_self
}
