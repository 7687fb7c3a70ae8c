//! Merging two adjacent regions: the store's half. The process, its
//! decisions and why they are safe are in `tessera_multiraft::merge`; this
//! module applies the three commands in the KV state machine and proposes
//! them on the leader that gets each step:
//!
//! - [`prepare_merge`] on the source's leader: the source freezes;
//! - [`source_caught_up`] on the source's leader: every source peer has
//!   the log up to the PrepareMerge (the target may commit now);
//! - [`commit_merge`] on the target's leader: the target merges, or
//!   refuses for good;
//! - [`rollback_merge`] on the source's leader, only after the target
//!   refused: the source serves again.
//!
//! The source's leader runs them in order ([`drive`]): the directory's
//! merge operator starts a merge with a `Merge` step (after moving the
//! source's replicas onto the target's stores), and whichever store leads a
//! merging source drives it to its end — a leader change or a directory
//! outage in the middle leaves nothing half done. Each step is safe to
//! send again.

mod drive;

pub use drive::{
    drive, resume, start, DriveEnd, GrpcTargetLeaders, TargetLeaders, CATCH_UP_TIMEOUT,
};

use tessera_multiraft::mailbox::{EpochCheck, PollerMsg, RegionInfo, WriteClass};
use tessera_multiraft::merge::{self, CommitDecision};
use tessera_multiraft::{region, ApplyContext};
use tessera_proto::errorpb::RegionError;
use tessera_proto::metapb::{Region, RegionEpoch};
use tessera_proto::raft_serverpb::{
    admin_command, CommitMergeCommand, MergeState, PrepareMergeCommand, RefusedMerge,
    RollbackMergeCommand,
};
use tokio::sync::oneshot;

use crate::admin::AdminApi;
use crate::kv::command::{self, CmdResult};
use crate::{Error, Result};

/// Applies a PrepareMerge on a source replica.
pub fn apply_prepare(
    cx: &mut ApplyContext<'_>,
    proposed: RegionEpoch,
    cmd: PrepareMergeCommand,
) -> Result<Vec<CmdResult>, RegionError> {
    let current = region::epoch(cx.region());
    if proposed != current {
        return Err(RegionError::epoch_not_match(
            format!(
                "region {} epoch is {current} at apply, merge has {proposed}",
                cx.region().id
            ),
            vec![cx.region().clone()],
        ));
    }
    let target = cmd.target.unwrap_or_default();
    if let Err(reason) = merge::check_prepare(cx.region(), cx.merge(), &target) {
        return Ok(vec![CmdResult::Refused(reason)]);
    }
    let region = merge::bumped(cx.region(), true);
    let state = MergeState {
        target: Some(target),
        prepare_index: cx.index(),
        prepare_term: cx.term(),
    };
    cx.prepare_merge(region.clone(), state.clone());
    Ok(vec![CmdResult::MergePrepared { region, state }])
}

/// Applies a CommitMerge on a target replica. It changes nothing but
/// through the merge effect: it may be held and applied again.
pub fn apply_commit(
    cx: &mut ApplyContext<'_>,
    cmd: CommitMergeCommand,
) -> Result<Vec<CmdResult>, RegionError> {
    let source = cmd.source.unwrap_or_default();
    let state = cmd.state.unwrap_or_default();
    let named_here = state.target.as_ref().map(|t| t.id) == Some(cx.region().id);
    match merge::decide_commit(cx.region(), cx.merge(), &source, &state, cmd.refuse) {
        CommitDecision::Merge(merged) => {
            cx.commit_merge(merged.clone(), source, state);
            Ok(vec![CmdResult::Merged { region: merged }])
        }
        CommitDecision::AlreadyMerged => Ok(vec![CmdResult::Merged {
            region: cx.region().clone(),
        }]),
        CommitDecision::Refused(reason) => {
            if named_here {
                // Only the target the source named can refuse it for good.
                cx.refuse_merge(source.id, state.prepare_index);
            }
            Ok(vec![CmdResult::Refused(reason)])
        }
    }
}

/// Applies a RollbackMerge on a source replica.
pub fn apply_rollback(
    cx: &mut ApplyContext<'_>,
    cmd: RollbackMergeCommand,
) -> Result<Vec<CmdResult>, RegionError> {
    match &cx.merge().state {
        Some(s) if s.prepare_index == cmd.prepare_index => {
            let region = merge::bumped(cx.region(), false);
            cx.rollback_merge(region.clone());
            Ok(vec![CmdResult::RolledBack { region }])
        }
        Some(s) => Ok(vec![CmdResult::Refused(format!(
            "region {} prepared its merge at {}, not {}",
            cx.region().id,
            s.prepare_index,
            cmd.prepare_index
        ))]),
        None => Ok(vec![CmdResult::Refused(format!(
            "region {} is not merging",
            cx.region().id
        ))]),
    }
}

/// Proposes `cmd` on `region_id` (led here) as a merge command and waits
/// for its result.
async fn propose(
    api: &AdminApi,
    region_id: u64,
    epoch: RegionEpoch,
    cmd: admin_command::Cmd,
) -> Result<CmdResult> {
    let data = command::encode_admin(region_id, epoch, cmd);
    let (tx, rx) = oneshot::channel();
    api.mailbox().send(PollerMsg::Propose {
        region_id,
        epoch: EpochCheck::all(epoch),
        data,
        class: WriteClass::Merge,
        cb: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    })?;
    let output = api.wait(rx).await?.map_err(Error::region)?;
    output
        .into_iter()
        .next()
        .ok_or_else(|| Error::InvalidArgument("a merge command returned nothing".into()))
}

/// Step 1, on the source's leader: freezes `source_id` to merge into
/// `target` (the target as its leader or the directory last saw it).
/// Returns the source as it now is and its merge state. A source already
/// merging into `target` returns its state as it is.
pub async fn prepare_merge(
    api: &AdminApi,
    source_id: u64,
    target: Region,
) -> Result<(Region, MergeState)> {
    let info = api.leader_info(source_id).await?;
    if let Some(state) = info.merge_state {
        if state.target.as_ref().map(|t| t.id) == Some(target.id) {
            return Ok((info.region, state));
        }
        return Err(Error::InvalidArgument(format!(
            "region {source_id} is merging into another region"
        )));
    }
    merge::check_pair(&info.region, &target).map_err(Error::InvalidArgument)?;
    if let Some(lagging) = info
        .progress
        .iter()
        .filter(|p| p.peer_id != info.peer_id)
        .find(|p| !p.recent_active || p.matched < info.truncated_index)
    {
        // Frozen, the source could not send it a snapshot: it must be able
        // to catch up by log.
        return Err(Error::InvalidArgument(format!(
            "peer {} of region {source_id} does not answer or needs a snapshot (matched {}, log starts after {}); try again",
            lagging.peer_id, lagging.matched, info.truncated_index
        )));
    }
    let epoch = region::epoch(&info.region);
    let prepare = admin_command::Cmd::PrepareMerge(PrepareMergeCommand {
        target: Some(target),
    });
    match propose(api, source_id, epoch, prepare).await? {
        CmdResult::MergePrepared { region, state } => Ok((region, state)),
        CmdResult::Refused(reason) => Err(Error::InvalidArgument(reason)),
        other => Err(Error::InvalidArgument(format!(
            "unexpected prepare result {other:?}"
        ))),
    }
}

/// Step 2, on the source's leader: whether every source peer has the log
/// up to the PrepareMerge at `prepare_index`.
pub async fn source_caught_up(api: &AdminApi, source_id: u64, prepare_index: u64) -> Result<bool> {
    Ok(caught_up(&api.leader_info(source_id).await?, prepare_index))
}

/// Whether the source's leader (`info`) and every peer it replicates to
/// have the log up to `prepare_index`.
fn caught_up(info: &RegionInfo, prepare_index: u64) -> bool {
    info.applied_index >= prepare_index && info.progress.iter().all(|p| p.matched >= prepare_index)
}

/// What the target decided.
#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    /// The target, with the source's range.
    Merged(Region),
    /// For good: the source may roll back.
    Refused(String),
}

/// Step 3, on the target's leader: proposes the merge of `source` (as
/// after its prepare, with `state`) — or with `refuse`, its refusal unless
/// it merged already.
pub async fn commit_merge(
    api: &AdminApi,
    target_id: u64,
    source: Region,
    state: MergeState,
    refuse: bool,
) -> Result<CommitOutcome> {
    let info = api.leader_info(target_id).await?;
    let refused = RefusedMerge {
        source_id: source.id,
        prepare_index: state.prepare_index,
    };
    // A decision taken before is given again, whatever the source's
    // replica here has done since (rolled back, prepared again).
    let decided = info.merge_record.merged.contains(&source.id)
        || info.merge_record.refused.contains(&refused);
    if !refuse && !decided {
        check_local_source(api, target_id, &source, &state).await?;
    }
    let epoch = region::epoch(&info.region);
    let commit = admin_command::Cmd::CommitMerge(CommitMergeCommand {
        source: Some(source),
        state: Some(state),
        refuse,
    });
    match propose(api, target_id, epoch, commit).await? {
        CmdResult::Merged { region } => Ok(CommitOutcome::Merged(region)),
        CmdResult::Refused(reason) => Ok(CommitOutcome::Refused(reason)),
        other => Err(Error::InvalidArgument(format!(
            "unexpected commit result {other:?}"
        ))),
    }
}

/// Before it proposes a merge, the target's leader checks it against its
/// own replica of the source (aligned regions: it has one): a CommitMerge
/// naming a source that is not merging into this target at that prepare
/// would make every target replica wait for a source that never comes.
/// A replica that has not applied that far yet is given the benefit of
/// the doubt (it catches up once the merge commits).
async fn check_local_source(
    api: &AdminApi,
    target_id: u64,
    source: &Region,
    state: &MergeState,
) -> Result<()> {
    let info = api.region_info(source.id).await.map_err(|_| {
        Error::InvalidArgument(format!(
            "this store has no replica of region {} to merge",
            source.id
        ))
    })?;
    match &info.merge_state {
        Some(s)
            if s.prepare_index == state.prepare_index
                && s.prepare_term == state.prepare_term
                && s.target.as_ref().map(|t| t.id) == Some(target_id) =>
        {
            Ok(())
        }
        None if info.applied_index < state.prepare_index => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "region {} is not merging into region {target_id} at index {}",
            source.id, state.prepare_index
        ))),
    }
}

/// Step 4, on the source's leader, only after the target refused: ends the
/// merge prepared at `prepare_index`; the source serves again.
pub async fn rollback_merge(api: &AdminApi, source_id: u64, prepare_index: u64) -> Result<Region> {
    let info = api.leader_info(source_id).await?;
    let epoch = region::epoch(&info.region);
    let rollback = admin_command::Cmd::RollbackMerge(RollbackMergeCommand { prepare_index });
    match propose(api, source_id, epoch, rollback).await? {
        CmdResult::RolledBack { region } => Ok(region),
        CmdResult::Refused(reason) => Err(Error::InvalidArgument(reason)),
        other => Err(Error::InvalidArgument(format!(
            "unexpected rollback result {other:?}"
        ))),
    }
}
