//! Region merge: two adjacent regions whose replicas live on the same
//! stores become one. The **source** gives up its range and its Raft group;
//! the **target** keeps its id and takes the source's range.
//!
//! # The process, in the order it happens
//! 1. **Align** (the coordinator): the two regions have voters on the same
//!    stores, no learner, no membership change in progress, and every
//!    source peer has replicated the source's log.
//! 2. **Prepare** (`PrepareMergeCommand`, in the source's log): each source
//!    replica checks the command against the region as it is then
//!    ([`check_prepare`]: adjacent, same stores, not merging already) and
//!    becomes *merging*: its epoch (`version` and `conf_ver`) moves, the
//!    [`MergeState`] (the target as the coordinator saw it, and the
//!    PrepareMerge entry's index and term) is written under the region's
//!    merge-state key, and from then on it takes no proposal but its own
//!    rollback, serves no read, holds no lease (its lease reads off the
//!    poller's thread end with the epoch change, before the apply batch is
//!    written) and applies no membership change. Its data is frozen at the
//!    prepare index.
//! 3. **Wait** (the coordinator): every source peer has the log up to the
//!    prepare index (the source leader's `matched`).
//! 4. **Commit** (`CommitMergeCommand`, in the target's log): the target
//!    decides ([`decide_commit`]) from its own state only — merge if its
//!    epoch is still the one the source recorded, it is not merging itself,
//!    and the regions are adjacent on the same stores; otherwise refuse.
//!    Both answers are recorded durably in the target's [`MergeRecord`]
//!    (merged sources by id, refusals by source and prepare index), so the
//!    command sent again gets the same answer ("already merged", or
//!    "refused"); a source that rolled back may prepare again.
//! 5. **Merge on each store** (`apply_commit`): before a target replica
//!    applies a merging CommitMerge, its local source replica must have
//!    applied the log up to the prepare index. If it has not, the target's
//!    committed entries from the CommitMerge on are *held* (not applied)
//!    and the source is helped: its log has the entries (step 3), so its
//!    commit index is moved to the prepare index — safe, since the target
//!    only commits a CommitMerge after the PrepareMerge committed, and by
//!    log matching a log with the same term at that index holds the same,
//!    committed, prefix. Once the source is ready, ONE apply batch widens
//!    the target, and turns the source into a tombstone (its log and Raft
//!    state deleted, its data left in place: it is now the target's).
//! 6. **Rollback** (`RollbackMergeCommand`, in the source's log): only after
//!    the target recorded a refusal for this source (which is final: the
//!    target's epoch never returns to the recorded one, and a refusal is
//!    remembered). A source whose replicas do not catch up in time asks
//!    for that refusal (a CommitMerge with `refuse`, answered "already
//!    merged" if a merge came first). The source leaves the merging state
//!    with a new epoch.
//!
//! A source can only end through its target's answer, so the target must
//! stay to give it: a target that merged away itself (a tombstone) or lost
//! its replicas answers nothing, and its merging source would stay frozen.
//! The coordinator keeps targets in place: the directory refuses any
//! operator on a region that is the target of a merge operator, or that a
//! merging source reports as its target (`RegionReport.merging_into`),
//! until that merge has ended.
//!
//! # Why nothing acknowledged is lost or applied twice
//! - A write to the source is acknowledged only once applied; everything
//!   the source applied is at or below the prepare index (it takes nothing
//!   after), and every target replica merges only once its local source
//!   has applied exactly up to there. So the target's data for the source's
//!   range is the source's acknowledged state, on every replica.
//! - The decision is taken once, in the target's log, from replicated
//!   state: every target replica takes the same one. A source rolls back
//!   only on a recorded refusal, so a source that merged anywhere never
//!   serves again anywhere: the refusal and the merge cannot both be in
//!   the target's log for one source.
//! - A crash at any point: the source's merge state, the target's record
//!   and a merge's tombstone are written in the apply batch of the entry
//!   that made them, atomically with the apply state; a restart re-applies
//!   from the Raft log. A target replica restarting between the commit and
//!   its merge finds its source replica still merging (the source's log and
//!   state are intact until the merge batch) and merges again from there;
//!   after the merge batch, the source is a tombstone and its log is gone.
//! - Routers and clients: the source answers merging requests with
//!   `ServerIsBusy` (retry later), and once gone with `RegionNotFound`,
//!   which makes them reload the range from the directory, which records
//!   the merged target (its `version` is above both regions').
//!
//! Failpoints: `merge_after_prepare` (after a prepare is written on a
//! source replica), `merge_before_commit` (before a target replica's merge
//! batch is written), `merge_before_rollback` (before a rollback batch is
//! written).

use raft::eraftpb::Entry;
use tessera_proto::metapb::{PeerRole, Region, RegionEpoch};
use tessera_proto::raft_serverpb::{
    MergeRecord, MergeState, PeerState, RefusedMerge, RegionLocalState,
};

use crate::apply::ApplyOutcome;
use crate::engine::{Cf, Engine, EngineExt, WriteBatch};
use crate::peer::Peer;
use crate::{region, state_keys, RegionId, Result};

/// How many source ids a target remembers as merged, and as refused.
pub const MAX_MERGE_RECORD: usize = 64;

/// What a peer knows of merges: as a source, its merge in progress; as a
/// target, what it decided before; and the committed entries it holds
/// until its local source replica is ready.
#[derive(Debug, Default)]
pub struct MergeView {
    pub state: Option<MergeState>,
    pub record: MergeRecord,
    pub(crate) held: Vec<Entry>,
}

impl MergeView {
    /// The merge state and record of `region_id` as written.
    pub fn load(engine: &dyn Engine, region_id: RegionId) -> Result<Self> {
        Ok(MergeView {
            state: engine.get_msg(Cf::Meta, &state_keys::merge_state_key(region_id))?,
            record: engine
                .get_msg(Cf::Meta, &state_keys::merge_record_key(region_id))?
                .unwrap_or_default(),
            held: vec![],
        })
    }

    pub fn is_merging(&self) -> bool {
        self.state.is_some()
    }
}

/// The stores of `region`'s peers, if every one is a voter.
fn voter_stores(region: &Region) -> std::result::Result<Vec<u64>, String> {
    let mut stores = vec![];
    for p in &region.peers {
        if p.role != PeerRole::Voter as i32 {
            return Err(format!(
                "region {} has a peer on store {} that is not a voter",
                region.id, p.store_id
            ));
        }
        stores.push(p.store_id);
    }
    stores.sort_unstable();
    Ok(stores)
}

/// Whether `a` ends where `b` starts.
fn adjacent(a: &Region, b: &Region) -> bool {
    !a.end_key.is_empty() && a.end_key == b.start_key
}

/// Why `source` and `target` cannot merge as they are, if they cannot:
/// they must be different, adjacent, and have voters (only) on the same
/// stores.
pub fn check_pair(source: &Region, target: &Region) -> std::result::Result<(), String> {
    if source.id == target.id {
        return Err(format!("region {} cannot merge into itself", source.id));
    }
    if !adjacent(source, target) && !adjacent(target, source) {
        return Err(format!(
            "regions {} and {} are not adjacent",
            source.id, target.id
        ));
    }
    let (s, t) = (voter_stores(source)?, voter_stores(target)?);
    if s != t {
        return Err(format!(
            "region {} has replicas on stores {s:?} and region {} on {t:?}; move them onto the same stores first",
            source.id, target.id
        ));
    }
    Ok(())
}

/// Whether the source `region` (with `view`) may prepare to merge into
/// `target` (as the proposer saw it).
pub fn check_prepare(
    region: &Region,
    view: &MergeView,
    target: &Region,
) -> std::result::Result<(), String> {
    if view.is_merging() {
        return Err(format!("region {} is already merging", region.id));
    }
    check_pair(region, target)
}

/// What a target does with a CommitMerge.
#[derive(Clone, Debug, PartialEq)]
pub enum CommitDecision {
    /// Take the source's range: the target becomes this region.
    Merge(Region),
    /// This source was merged before (the command came again).
    AlreadyMerged,
    /// Not now and never: the source may roll back.
    Refused(String),
}

/// The target `region` (with `view`) decides on merging `source` (as it
/// was after its prepare, with `state`). Deterministic: every replica
/// decides the same at the same log position.
pub fn decide_commit(
    region: &Region,
    view: &MergeView,
    source: &Region,
    state: &MergeState,
    refuse: bool,
) -> CommitDecision {
    if view.record.merged.contains(&source.id) {
        return CommitDecision::AlreadyMerged;
    }
    let refusal = RefusedMerge {
        source_id: source.id,
        prepare_index: state.prepare_index,
    };
    if view.record.refused.contains(&refusal) {
        return CommitDecision::Refused(format!(
            "region {} refused to merge region {} before",
            region.id, source.id
        ));
    }
    if refuse {
        return CommitDecision::Refused(format!(
            "region {} gave up waiting for its replicas to catch up",
            source.id
        ));
    }
    let expected = state.target.clone().unwrap_or_default();
    if expected.id != region.id {
        return CommitDecision::Refused(format!(
            "region {} prepared to merge into region {}, not {}",
            source.id, expected.id, region.id
        ));
    }
    if view.is_merging() {
        return CommitDecision::Refused(format!(
            "region {} is merging into another region",
            region.id
        ));
    }
    if region::epoch(region) != region::epoch(&expected) {
        return CommitDecision::Refused(format!(
            "region {} changed (epoch {}, the merge expected {})",
            region.id,
            region::epoch(region),
            region::epoch(&expected)
        ));
    }
    match check_pair(source, region) {
        Ok(()) => CommitDecision::Merge(merged_region(region, source)),
        Err(reason) => CommitDecision::Refused(reason),
    }
}

/// `target` widened by `source`'s range, with a `version` above both and
/// the larger `conf_ver`.
pub fn merged_region(target: &Region, source: &Region) -> Region {
    let (t, s) = (region::epoch(target), region::epoch(source));
    let mut merged = target.clone();
    if adjacent(source, target) {
        merged.start_key = source.start_key.clone();
    } else {
        merged.end_key = source.end_key.clone();
    }
    merged.region_epoch = Some(RegionEpoch::new(
        t.conf_ver.max(s.conf_ver),
        t.version.max(s.version) + 1,
    ));
    merged
}

/// `region` with its epoch moved for a prepare or a rollback (the version;
/// a prepare moves `conf_ver` too, so that nothing proposed before it —
/// split or membership change — applies after it).
pub fn bumped(region: &Region, conf_ver_too: bool) -> Region {
    let e = region::epoch(region);
    let mut r = region.clone();
    r.region_epoch = Some(RegionEpoch::new(
        e.conf_ver + u64::from(conf_ver_too),
        e.version + 1,
    ));
    r
}

/// Whether a target replica may merge its local source now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SourceReadiness {
    /// The local source applied the PrepareMerge this merge names.
    Ready,
    /// The local source has not applied that far yet: help it.
    CatchUp,
    /// No local source in that state, and none coming (see the module
    /// docs: the coordinator's checks make this a bug or a lost replica).
    Missing,
}

pub(crate) fn source_readiness<O: Send + 'static>(
    source: Option<&Peer<O>>,
    target_id: RegionId,
    state: &MergeState,
) -> SourceReadiness {
    let Some(source) = source else {
        return SourceReadiness::Missing;
    };
    match &source.merge.state {
        Some(s)
            if s.prepare_index == state.prepare_index
                && s.target.as_ref().map(|t| t.id) == Some(target_id) =>
        {
            SourceReadiness::Ready
        }
        _ if source.storage().applied_index() < state.prepare_index => SourceReadiness::CatchUp,
        _ => SourceReadiness::Missing,
    }
}

fn write_region(region: &Region, wb: &mut WriteBatch) {
    wb.put_msg(
        Cf::Meta,
        state_keys::region_state_key(region.id),
        &RegionLocalState {
            region: Some(region.clone()),
            state: PeerState::Normal as i32,
        },
    );
}

fn remember<T>(list: &mut Vec<T>, item: T) {
    list.push(item);
    let over = list.len().saturating_sub(MAX_MERGE_RECORD);
    list.drain(..over);
}

/// A source replica applies its PrepareMerge: `region` is its new self.
pub(crate) fn apply_prepare<O: Send + 'static>(
    peer: &mut Peer<O>,
    region: Region,
    state: MergeState,
    wb: &mut WriteBatch,
) {
    write_region(&region, wb);
    wb.put_msg(Cf::Meta, state_keys::merge_state_key(region.id), &state);
    tracing::info!(
        region_id = region.id,
        target = state.target.as_ref().map(|t| t.id),
        prepare_index = state.prepare_index,
        "region prepared to merge"
    );
    peer.storage_mut().set_region(region);
    peer.merge.state = Some(state);
}

/// A source replica applies its rollback: `region` is its new self.
pub(crate) fn apply_rollback<O: Send + 'static>(
    peer: &mut Peer<O>,
    region: Region,
    wb: &mut WriteBatch,
) {
    write_region(&region, wb);
    wb.delete(Cf::Meta, state_keys::merge_state_key(region.id).to_vec());
    tracing::info!(region_id = region.id, "merge rolled back");
    metrics::counter!(crate::metrics::MERGES_TOTAL, "outcome" => "rolled_back").increment(1);
    peer.storage_mut().set_region(region);
    peer.merge.state = None;
}

/// A target replica refuses the merge `refusal` names, for good.
pub(crate) fn apply_refusal<O: Send + 'static>(
    peer: &mut Peer<O>,
    refusal: RefusedMerge,
    wb: &mut WriteBatch,
) {
    remember(&mut peer.merge.record.refused, refusal);
    wb.put_msg(
        Cf::Meta,
        state_keys::merge_record_key(peer.region_id()),
        &peer.merge.record,
    );
}

/// A target replica merges its (ready) local source: the target becomes
/// `merged`; the source's log and Raft state go, its data stays. The
/// poller drops the source's peer once the batch is written.
pub(crate) fn apply_commit<O: Send + 'static>(
    peer: &mut Peer<O>,
    merged: Region,
    source: Region,
    wb: &mut WriteBatch,
    outcome: &mut ApplyOutcome,
) {
    write_region(&merged, wb);
    remember(&mut peer.merge.record.merged, source.id);
    wb.put_msg(
        Cf::Meta,
        state_keys::merge_record_key(merged.id),
        &peer.merge.record,
    );
    write_source_tombstone(&source, wb);
    let id = source.id;
    tracing::info!(
        region_id = merged.id,
        source = id,
        version = region::epoch(&merged).version,
        "region merged"
    );
    metrics::counter!(crate::metrics::MERGES_TOTAL, "outcome" => "merged").increment(1);
    peer.storage_mut().set_region(merged);
    if peer.is_leader() {
        // Followers learn the commit now, and merge without waiting for
        // the next heartbeat.
        peer.broadcast_commit();
    }
    outcome.merged_source = Some(source);
}

/// A merged source's end on one store: its log and Raft state go, a
/// tombstone at its prepared epoch stays (late messages cannot revive it),
/// and its data stays — it is the target's now.
pub(crate) fn write_source_tombstone(source: &Region, wb: &mut WriteBatch) {
    let id = source.id;
    wb.delete_range(
        Cf::Raft,
        state_keys::raft_log_key(id, 0).to_vec(),
        state_keys::raft_log_key(id, u64::MAX).to_vec(),
    );
    wb.delete(Cf::Raft, state_keys::raft_log_key(id, u64::MAX).to_vec());
    for key in [
        state_keys::raft_state_key(id),
        state_keys::apply_state_key(id),
        state_keys::merge_state_key(id),
        state_keys::merge_record_key(id),
    ] {
        wb.delete(Cf::Meta, key.to_vec());
    }
    wb.put_msg(
        Cf::Meta,
        state_keys::region_state_key(id),
        &RegionLocalState {
            region: Some(source.clone()),
            state: PeerState::Tombstone as i32,
        },
    );
}

#[cfg(test)]
mod tests;
