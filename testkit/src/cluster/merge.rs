//! Merging two regions on a test cluster, coordinated as an operator
//! would (`tessera_store::merge` has the steps): prepare on the source's
//! leader, wait until every source peer has the PrepareMerge, commit on
//! the target's leader, and roll the source back only when the target
//! refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_proto::adminpb::{CommitMergeRequest, CommitMergeResponse};
use tessera_store::admin::AdminApi;

use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::MergeState;
use tessera_store::merge::{self, CommitOutcome};
use tessera_store::{Error, Result};

use super::Cluster;

/// The running stores' admin APIs.
pub(super) type Admins = Arc<Mutex<HashMap<u64, Arc<AdminApi>>>>;

/// A merge's target leader on another store of the in-memory network:
/// called in process, as the gRPC service would.
pub(super) struct LocalTargetLeaders(pub(super) Admins);

#[tonic::async_trait]
impl merge::TargetLeaders for LocalTargetLeaders {
    async fn commit_merge(
        &self,
        store_id: u64,
        req: CommitMergeRequest,
    ) -> Result<CommitMergeResponse> {
        let api = self
            .0
            .lock()
            .get(&store_id)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("store {store_id} is down")))?;
        let outcome = merge::commit_merge(
            &api,
            req.target_region_id,
            req.source.unwrap_or_default(),
            req.state.unwrap_or_default(),
            req.refuse,
        )
        .await;
        let mut resp = CommitMergeResponse::default();
        match outcome {
            Ok(CommitOutcome::Merged(r)) => resp.merged = Some(r),
            Ok(CommitOutcome::Refused(why)) => resp.refused = why,
            Err(Error::Region(e)) => resp.region_error = Some(*e),
            Err(e) => return Err(e),
        }
        Ok(resp)
    }
}

/// How a merge ended.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeEnd {
    /// The target, with the source's range.
    Merged(Region),
    /// The target refused (why); the source serves again as this region.
    RolledBack(Region, String),
}

impl Cluster {
    /// Merges `source_id` into `target_id` from start to end.
    pub async fn merge(&self, source_id: u64, target_id: u64) -> Result<MergeEnd> {
        let (source, state) = self.prepare_merge(source_id, target_id).await?;
        self.finish_merge(source, state).await
    }

    pub async fn must_merge(&self, source_id: u64, target_id: u64) -> Region {
        match self.merge(source_id, target_id).await {
            Ok(MergeEnd::Merged(r)) => r,
            other => panic!("merge of region {source_id} into {target_id}: {other:?}"),
        }
    }

    /// The first step alone: freezes `source_id` to merge into `target_id`
    /// as its leader sees it now.
    pub async fn prepare_merge(
        &self,
        source_id: u64,
        target_id: u64,
    ) -> Result<(Region, MergeState)> {
        let target = self
            .on_leader(target_id, |admin| async move {
                Ok(admin.leader_info(target_id).await?.region)
            })
            .await?;
        let (source, state) = self
            .on_leader(source_id, |admin| {
                let target = target.clone();
                async move { merge::prepare_merge(&admin, source_id, target).await }
            })
            .await?;
        self.learn_region(source.clone());
        Ok((source, state))
    }

    /// The rest, once the source is prepared: wait for its peers, commit on
    /// the target, roll back on a refusal.
    pub async fn finish_merge(&self, source: Region, state: MergeState) -> Result<MergeEnd> {
        let source_id = source.id;
        let target_id = state.target.as_ref().map(|t| t.id).unwrap_or_default();
        let prepare_index = state.prepare_index;
        let deadline = Instant::now() + self.opts.client_deadline;
        loop {
            let caught_up = self
                .on_leader(source_id, |admin| async move {
                    merge::source_caught_up(&admin, source_id, prepare_index).await
                })
                .await?;
            if caught_up {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(self.opts.client_deadline));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let outcome = self
            .on_leader(target_id, |admin| {
                let (source, state) = (source.clone(), state.clone());
                async move { merge::commit_merge(&admin, target_id, source, state, false).await }
            })
            .await?;
        match outcome {
            CommitOutcome::Merged(region) => {
                self.learn_region(region.clone());
                Ok(MergeEnd::Merged(region))
            }
            CommitOutcome::Refused(reason) => {
                let region = self
                    .on_leader(source_id, |admin| async move {
                        merge::rollback_merge(&admin, source_id, prepare_index).await
                    })
                    .await?;
                self.learn_region(region.clone());
                Ok(MergeEnd::RolledBack(region, reason))
            }
        }
    }
}
