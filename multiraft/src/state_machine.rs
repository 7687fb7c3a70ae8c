//! The seam between Raft and what a log means. The store plugs in its KV
//! state machine, the directory its metadata state machine.
//!
//! Contract: `apply` is deterministic given the engine state and the entry,
//! and only writes through the [`ApplyContext`]'s batch, which the poller
//! writes atomically together with the region's new apply state. A crash
//! therefore never applies an entry twice nor skips one.

use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::{MergeState, RaftApplyState};

use crate::engine::Cf;
use crate::engine::{Engine, WriteBatch};
use crate::merge::MergeView;
use crate::state_keys;
use crate::Result;

pub trait StateMachine: Send + 'static {
    /// What a proposer learns once its entry is applied.
    type Output: Send + 'static;

    /// Applies the normal entry `data`, committed at `cx.index()`.
    fn apply(&mut self, cx: &mut ApplyContext<'_>, data: &[u8]) -> Self::Output;

    /// The entry that, once applied, calls [`ApplyContext::compact_log`]
    /// with `index` and `term`: the poller proposes it when the log of
    /// `region` has grown past its limits.
    fn compact_log_command(&self, region: &Region, index: u64, term: u64) -> Vec<u8>;

    /// Called once a snapshot of `region` replaced this replica's data in
    /// `engine`: a state machine that keeps state in memory reloads it here.
    fn on_snapshot_applied(&mut self, _engine: &dyn Engine, _region: &Region) {}
}

/// A change to the region or its log that applying an entry asked for; the
/// poller carries it out in the same apply batch.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyEffect {
    /// The region now covers only `derived`'s range; `new_regions` take the
    /// rest, with peers on the same stores.
    Split {
        derived: Region,
        new_regions: Vec<Region>,
    },
    /// The log up to `index` (of `term`) is no longer needed.
    CompactLog { index: u64, term: u64 },
    /// The region (a merge source) is now `region` and merging (`state`).
    PrepareMerge { region: Region, state: MergeState },
    /// The region (a merge target) becomes `merged`, taking `source`'s
    /// range, once its local source replica is ready (`crate::merge`).
    /// The entry must change nothing else: it may be held and applied
    /// again later.
    CommitMerge {
        merged: Region,
        source: Region,
        state: MergeState,
    },
    /// The region (a merge target) refuses this merge, for good.
    RefuseMerge {
        refusal: tessera_proto::raft_serverpb::RefusedMerge,
    },
    /// The region (a merging source) is `region` again and serves.
    RollbackMerge { region: Region },
}

/// What `apply` may see and touch.
pub struct ApplyContext<'a> {
    pub(crate) engine: &'a dyn Engine,
    pub(crate) batch: &'a mut WriteBatch,
    pub(crate) region: &'a Region,
    pub(crate) apply_state: &'a RaftApplyState,
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) effects: &'a mut Vec<ApplyEffect>,
    pub(crate) merge: &'a MergeView,
}

impl ApplyContext<'_> {
    pub fn region(&self) -> &Region {
        self.region
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The batch this entry's changes go into.
    pub fn batch(&mut self) -> &mut WriteBatch {
        self.batch
    }

    /// Reads the engine. Writes staged earlier in this round are not visible
    /// until [`ApplyContext::flush`]; a state machine that reads what it
    /// may have just written must flush first.
    pub fn engine(&self) -> &dyn Engine {
        self.engine
    }

    /// Splits the region: after this entry it covers `derived` (same id,
    /// a newer epoch) and `new_regions` exist beside it. The caller checked
    /// that the ranges partition the region's.
    pub fn split(&mut self, derived: Region, new_regions: Vec<Region>) {
        self.effects.push(ApplyEffect::Split {
            derived,
            new_regions,
        });
    }

    /// The region's merge state and record (`crate::merge`).
    pub fn merge(&self) -> &MergeView {
        self.merge
    }

    /// Makes the region a merging source: it becomes `region` (the caller
    /// moved its epoch) with `state` (see `crate::merge`).
    pub fn prepare_merge(&mut self, region: Region, state: MergeState) {
        self.effects
            .push(ApplyEffect::PrepareMerge { region, state });
    }

    /// Merges `source` into the region, which becomes `merged` (decided by
    /// `crate::merge::decide_commit`). Nothing else may change with it.
    pub fn commit_merge(&mut self, merged: Region, source: Region, state: MergeState) {
        self.effects.push(ApplyEffect::CommitMerge {
            merged,
            source,
            state,
        });
    }

    /// Records that the region refused to merge `source_id` as prepared
    /// at `prepare_index`.
    pub fn refuse_merge(&mut self, source_id: u64, prepare_index: u64) {
        self.effects.push(ApplyEffect::RefuseMerge {
            refusal: tessera_proto::raft_serverpb::RefusedMerge {
                source_id,
                prepare_index,
            },
        });
    }

    /// Ends the region's merge: it becomes `region` and serves again.
    pub fn rollback_merge(&mut self, region: Region) {
        self.effects.push(ApplyEffect::RollbackMerge { region });
    }

    /// Drops the log up to `index` (of `term`), which is already applied.
    pub fn compact_log(&mut self, index: u64, term: u64) {
        self.effects.push(ApplyEffect::CompactLog { index, term });
    }

    /// Writes what is staged so far, with this region's apply state at the
    /// previous entry, so the engine state stays one that a restart can
    /// continue from.
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut state = *self.apply_state;
        state.applied_index = self.index - 1;
        self.batch.put_msg(
            Cf::Meta,
            state_keys::apply_state_key(self.region.id),
            &state,
        );
        self.engine.write(self.batch, false)?;
        self.batch.clear();
        Ok(())
    }
}
