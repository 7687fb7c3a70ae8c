//! Driving a merge from the source's leader, from the `Merge` step to its
//! end: wait until every source peer has the PrepareMerge (or give up after
//! the catch-up timeout and ask for a refusal), ask the target's leader to
//! commit — following its leadership, on this store or another
//! ([`TargetLeaders`]) — until it answers, and roll back on a refusal.
//!
//! Whoever leads a merging source drives it: the store's heartbeat loop
//! starts a driver for every such region it leads ([`resume`]), so a merge
//! outlives a leader change, a restart and the directory. A region has at
//! most one driver per store; a driver whose store stops leading the
//! source stops (the new leader's store takes over).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_multiraft::mailbox::RegionInfo;
use tessera_multiraft::transport::AddressResolver;
use tessera_proto::adminpb::store_admin_client::StoreAdminClient;
use tessera_proto::adminpb::{CommitMergeRequest, CommitMergeResponse};
use tessera_proto::errorpb::region_error::Error as Kind;
use tessera_proto::metapb::Region;
use tessera_proto::raft_serverpb::MergeState;
use tessera_security::Security;

use super::{caught_up, commit_merge, prepare_merge, rollback_merge, CommitOutcome};
use crate::admin::AdminApi;
use crate::{Error, Result};

/// How long a merging source waits, by default, for all its peers to have
/// the PrepareMerge before it asks the target to refuse, and rolls back
/// (`NodeConfig::merge_catch_up_timeout`).
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a driver looks again (peers' progress, the target's leader).
const POLL: Duration = Duration::from_millis(50);

/// Reaches the leader of a merge's target on another store.
#[tonic::async_trait]
pub trait TargetLeaders: Send + Sync + 'static {
    async fn commit_merge(
        &self,
        store_id: u64,
        req: CommitMergeRequest,
    ) -> Result<CommitMergeResponse>;
}

/// [`TargetLeaders`] over gRPC, with the store's own identity.
pub struct GrpcTargetLeaders {
    resolver: Arc<dyn AddressResolver>,
    security: Security,
}

impl GrpcTargetLeaders {
    pub fn new(resolver: Arc<dyn AddressResolver>, security: Security) -> Self {
        GrpcTargetLeaders { resolver, security }
    }
}

#[tonic::async_trait]
impl TargetLeaders for GrpcTargetLeaders {
    async fn commit_merge(
        &self,
        store_id: u64,
        req: CommitMergeRequest,
    ) -> Result<CommitMergeResponse> {
        let addr = self
            .resolver
            .resolve(store_id)
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::InvalidArgument(format!("store {store_id} address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10));
        let channel = self
            .security
            .connect(endpoint)
            .await
            .map_err(|e| Error::Unavailable(format!("store {store_id} at {addr}: {e}")))?;
        let resp = StoreAdminClient::new(channel)
            .commit_merge(req)
            .await
            .map_err(|s| Error::Unavailable(format!("store {store_id}: {}", s.message())))?;
        Ok(resp.into_inner())
    }
}

/// The `Merge` step, on the source's leader: prepares the merge into
/// `target_id` as this store's replica of the target sees it (the regions
/// are aligned, so there is one), and starts its driver.
pub async fn start(api: &Arc<AdminApi>, source_id: u64, target_id: u64) -> Result<()> {
    let target = api.region_info(target_id).await?.region;
    prepare_merge(api, source_id, target).await?;
    spawn(api, source_id);
    Ok(())
}

/// Starts a driver for every merging region in `regions` that this store
/// leads and does not drive yet.
pub fn resume(api: &Arc<AdminApi>, regions: &[RegionInfo]) {
    for info in regions {
        if info.is_leader && info.merge_state.is_some() {
            spawn(api, info.region.id);
        }
    }
}

fn spawn(api: &Arc<AdminApi>, source_id: u64) {
    if !api.merge_drivers().lock().insert(source_id) {
        return;
    }
    let api = api.clone();
    tokio::spawn(async move {
        match drive(&api, source_id).await {
            Ok(end) => tracing::info!(region_id = source_id, ?end, "merge ended"),
            Err(e) => tracing::info!(region_id = source_id, error = %e, "merge driver stopped"),
        }
        api.merge_drivers().lock().remove(&source_id);
    });
}

/// How a merge ended, seen from its source.
#[derive(Clone, Debug, PartialEq)]
pub enum DriveEnd {
    /// The target, with the source's range.
    Merged(Region),
    /// The target refused (why); the source serves again as this region.
    RolledBack(Region, String),
}

/// Drives the merge of `source_id` (merging, led here) to its end.
pub async fn drive(api: &AdminApi, source_id: u64) -> Result<DriveEnd> {
    let info = api.leader_info(source_id).await?;
    let state = info
        .merge_state
        .ok_or_else(|| Error::InvalidArgument(format!("region {source_id} is not merging")))?;
    let source = info.region;
    let deadline = Instant::now() + api.merge_catch_up_timeout();
    let refuse = loop {
        let now = api.leader_info(source_id).await?;
        still_merging(&now, &state)?;
        if caught_up(&now, state.prepare_index) && !catch_up_stalled() {
            break false;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                region_id = source_id,
                "merge source peers did not catch up in time; asking the target to refuse"
            );
            break true;
        }
        tokio::time::sleep(POLL).await;
    };
    match ask_target(api, &source, &state, refuse).await? {
        CommitOutcome::Merged(region) => Ok(DriveEnd::Merged(region)),
        CommitOutcome::Refused(reason) => {
            let region = rollback_merge(api, source_id, state.prepare_index).await?;
            Ok(DriveEnd::RolledBack(region, reason))
        }
    }
}

/// Tests make a source peer look as if it never caught up (failpoint
/// `merge_catch_up_stall` armed with `return`), so that the merge rolls
/// back. A real lagging peer is hard to arrange: a peer that stops answering
/// makes the prepare refused, and one that falls behind the compacted log
/// catches up by snapshot.
fn catch_up_stalled() -> bool {
    fail::fail_point!("merge_catch_up_stall", |_| true);
    false
}

/// Fails once the source no longer holds the merge a driver was started
/// for: it rolled back (a driver from before a restart may find its
/// rollback already applied from the log) or prepared again, at another
/// index, which a driver of its own drives. A driver that went on would
/// ask for a commit no one can give, and hold the region's one driver slot
/// so that the new merge never got one.
fn still_merging(info: &RegionInfo, state: &MergeState) -> Result<()> {
    match &info.merge_state {
        Some(s) if s.prepare_index == state.prepare_index => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "region {}'s merge prepared at index {} ended (rolled back, or prepared again)",
            info.region.id, state.prepare_index
        ))),
    }
}

/// Asks the target's leader until it answers, as long as this store leads
/// the source (a merged source is gone from here: merged).
async fn ask_target(
    api: &AdminApi,
    source: &Region,
    state: &MergeState,
    refuse: bool,
) -> Result<CommitOutcome> {
    let target_id = state.target.as_ref().map(|t| t.id).unwrap_or_default();
    let mut hint: Option<u64> = None;
    loop {
        match api.leader_info(source.id).await {
            Ok(info) => still_merging(&info, state)?,
            Err(Error::Region(e)) if matches!(e.error, Some(Kind::RegionNotFound(_))) => {
                // Merged here while we asked: the answer was yes.
                let merged = api.region_info(target_id).await?.region;
                return Ok(CommitOutcome::Merged(merged));
            }
            Err(e) => return Err(e),
        }
        let leader = match hint.take() {
            Some(s) => Some(s),
            None => api
                .region_info(target_id)
                .await
                .ok()
                .and_then(|i| i.leader)
                .map(|p| p.store_id),
        };
        let Some(store_id) = leader else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        if store_id == api.store_id() {
            match commit_merge(api, target_id, source.clone(), state.clone(), refuse).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    tracing::debug!(region_id = source.id, error = %e, "commit on the local target leader failed; retrying")
                }
            }
        } else {
            let req = CommitMergeRequest {
                target_region_id: target_id,
                source: Some(source.clone()),
                state: Some(state.clone()),
                refuse,
            };
            match api.target_leaders() {
                Some(remote) => match remote.commit_merge(store_id, req).await {
                    Ok(resp) => {
                        if let Some(merged) = resp.merged {
                            return Ok(CommitOutcome::Merged(merged));
                        }
                        if !resp.refused.is_empty() {
                            return Ok(CommitOutcome::Refused(resp.refused));
                        }
                        if let Some(Kind::NotLeader(nl)) = resp.region_error.and_then(|e| e.error)
                        {
                            hint = nl.leader.map(|p| p.store_id);
                        }
                    }
                    Err(e) => tracing::debug!(region_id = source.id, store_id, error = %e, "cannot reach the target's leader; retrying"),
                },
                None => {
                    return Err(Error::Unavailable(format!(
                        "the target's leader is on store {store_id} and this store cannot reach other stores' admin service"
                    )))
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}
