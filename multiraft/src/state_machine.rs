//! The seam between Raft and what a log means. The store plugs in its KV
//! state machine, the directory its metadata state machine.
//!
//! Contract: `apply` is deterministic given the engine state and the entry,
//! and only writes through the [`ApplyContext`]'s batch, which the poller
//! writes atomically together with the region's new apply state. A crash
//! therefore never applies an entry twice nor skips one.

use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::RaftApplyState;

use crate::engine::Cf;
use crate::engine::{Engine, WriteBatch};
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
