//! What a peer does for a merge (`crate::merge`) beyond applying its
//! entries: refusing requests while it is a merging source, and, as a
//! source replica that lags, moving its commit index up to the
//! PrepareMerge its target has committed a merge for.

use tessera_proto::errorpb::RegionError;

use super::{Deferred, Peer};
use crate::Error;

/// How long a client should wait before retrying a merging region.
const MERGING_BACKOFF_MS: u64 = 100;

impl<O: Send + 'static> Peer<O> {
    /// The answer to a request (other than its own merge's commands) while
    /// this region is a merging source: retry shortly — the region either
    /// serves again (rollback) or is gone (`RegionNotFound`: reload).
    pub fn merging_refusal(&self) -> Option<Error> {
        let state = self.merge.state.as_ref()?;
        let target = state.target.as_ref().map(|t| t.id).unwrap_or_default();
        Some(Error::region(RegionError::server_is_busy(
            format!(
                "region {} is merging into region {target}",
                self.region_id()
            ),
            MERGING_BACKOFF_MS,
        )))
    }

    /// This (source) replica was merged into its target: what still waits
    /// on it is answered. A proposal after the PrepareMerge gets
    /// `RegionNotFound` (reload the range and retry): unlike a destroyed
    /// peer's proposals, it is known not to have applied anywhere — its
    /// entry carries the epoch from before the prepare, so the epoch check
    /// refuses it at apply, and no replica of the source applies anything
    /// once merged — so a write the SDK retries cannot apply twice. One at
    /// or before the prepare did apply everywhere if this replica merely
    /// lagged (its target's snapshot ended it): outcome unknown, as for
    /// any destroyed peer. (A replica that applied up to the prepare has
    /// answered all of those already.)
    pub fn end_merged_source(&mut self) -> Vec<Deferred> {
        let region_id = self.region_id();
        let prepare_index = self
            .merge
            .state
            .as_ref()
            .map_or(u64::MAX, |s| s.prepare_index);
        let mut answers: Vec<Deferred> = self
            .proposals
            .drain(..)
            .map(|p| {
                let err = if p.index > prepare_index {
                    Error::region(RegionError::region_not_found(region_id))
                } else {
                    Error::Indeterminate(format!(
                        "region {region_id} merged before this replica applied the write"
                    ))
                };
                p.waiter.fail(err)
            })
            .collect();
        for cb in self.reads.take_all() {
            answers.push(Box::new(move || {
                cb(Err(Error::region(RegionError::region_not_found(region_id))))
            }));
        }
        answers
    }

    /// A target replica merges this (source) replica once it has applied
    /// the log up to `index`: if this log holds entry `index` of `term`, it
    /// is committed (the target's log says so) and this replica may apply
    /// up to it without hearing from its leader. Returns whether the commit
    /// index now reaches `index`.
    pub fn catch_up_for_merge(&mut self, index: u64, term: u64) -> bool {
        let region_id = self.region_id();
        let log = &mut self.raw_node.raft.raft_log;
        if log.committed >= index {
            return true;
        }
        if !log.match_term(index, term) {
            return false;
        }
        tracing::info!(
            region_id,
            from = log.committed,
            to = index,
            "merge source catches up to its PrepareMerge"
        );
        log.commit_to(index);
        true
    }
}
